// Checks of the header-only math in csrc/include/mixdiff that the CUDA kernels use but the vectorised
// CPU kernels do not (streaming LogSumExp, ArgMin/ArgMax merges, scalar fast_exp, per-pair Gaussian
// terms, the scalar float normal transforms of normal.h), plus the CPU's 16-lane normals against the
// scalar ones, compiled for the host by tests/test_header_math.py (g++ -std=c++20 -O2, no -march: the
// vector code uses GCC vector extensions only). Prints one line per failed check, the measured errors
// of the normal transforms, and "N passed, M failed" last; exits non-zero on any failure.
#include <cmath>
#include <cstdio>
#include <vector>

// cpu_random.h passes 64-byte vectors by value; without -mavx512f GCC notes that their ABI differs
// from an AVX-512 build. Harmless here (everything is inlined, one translation unit).
#pragma GCC diagnostic ignored "-Wpsabi"
#include "mixdiff/cpu_random.h"
#include "mixdiff/gaussian.h"
#include "mixdiff/normal.h"
#include "mixdiff/reductions.h"

using namespace mixdiff;

static int passed = 0, failed = 0;
#define CHECK(cond, ...)                                 \
  do {                                                   \
    if (cond) {                                          \
      ++passed;                                          \
    } else {                                             \
      ++failed;                                          \
      std::printf("FAILED line %d: %s | ", __LINE__, #cond); \
      std::printf(__VA_ARGS__);                          \
      std::printf("\n");                                 \
    }                                                    \
  } while (0)

template <class T>
static T lse_of(const std::vector<T>& v) {
  LogSumExp<T> acc;
  for (T x : v) acc.push(x);
  return acc.value();
}

template <class T>
static void check_logsumexp(double tol) {
  const T inf = INFINITY;
  const std::vector<std::vector<T>> rows = {
      {T(-1), T(-2), T(-3)}, {-inf, T(-1), T(-2)}, {T(-1), -inf, T(-2)}, {T(-1000), T(-1001)},
      {T(700), T(-5)},       {T(0.5)},             {-inf, -inf, T(3)}};
  for (const auto& row : rows) {
    double m = -INFINITY, s = 0;
    for (T x : row) m = std::fmax(m, double(x));
    for (T x : row) s += std::exp(double(x) - m);
    const double want = m + std::log(s);
    const double got = double(lse_of(row));
    CHECK(std::fabs(got - want) <= tol * std::fmax(1.0, std::fabs(want)), "got %.17g want %.17g", got, want);
    // Any split into two accumulators merged gives the same value.
    for (size_t cut = 0; cut <= row.size(); ++cut) {
      LogSumExp<T> a, b;
      for (size_t i = 0; i < row.size(); ++i) (i < cut ? a : b).push(row[i]);
      a.merge(b);
      CHECK(std::fabs(double(a.value()) - want) <= tol * std::fmax(1.0, std::fabs(want)), "cut %zu got %.17g",
            cut, double(a.value()));
    }
  }
  CHECK(lse_of<T>({-inf, -inf}) == -inf, "all -inf must give -inf");
  CHECK(std::isnan(double(lse_of<T>({T(1), T(NAN)}))), "NaN must propagate");
  CHECK(std::isnan(double(lse_of<T>({T(NAN), T(1)}))), "leading NaN must propagate");
}

static void check_argbest() {
  ArgMin<double> a;
  for (int k : {3, 1, 2}) a.push(k == 1 ? 5.0 : 7.0, k);
  CHECK(a.index == 1 && a.value == 5.0, "index %lld", (long long)a.index);
  ArgMin<double> tie;
  tie.push(2.0, 4);
  tie.push(2.0, 1);
  tie.push(2.0, 3);
  CHECK(tie.index == 1, "ties go to the lowest index, got %lld", (long long)tie.index);
  ArgMax<float> hi, lo;
  hi.push(1.f, 5);
  lo.push(1.f, 2);
  hi.merge(lo);
  CHECK(hi.index == 2, "merge keeps the lowest index on ties, got %lld", (long long)hi.index);
  ArgMin<float> nan_only;
  nan_only.push(NAN, 0);
  CHECK(nan_only.index == -1, "NaN never wins");
}

static void check_fast_exp() {
  double worst = 0;
  for (double x = -87.0; x <= 88.0; x += 0.0137) {
    const double got = double(fast_exp(float(x))), want = std::exp(double(float(x)));
    worst = std::fmax(worst, std::fabs(got - want) / want);
  }
  CHECK(worst < 4e-7, "fast_exp relative error %.3g", worst);
  CHECK(fast_exp(-INFINITY) == 0.0f && fast_exp(-100.0f) == 0.0f, "underflow must be exactly 0");
  CHECK(std::isinf(fast_exp(100.0f)) && std::isnan(fast_exp(NAN)), "overflow inf, NaN stays NaN");
}

static void check_gaussian() {
  // Full covariance L = [[2, 0], [1, 3]]: P = L^{-1} = [[1/2, 0], [-1/6, 1/3]].
  const double L[4] = {2, 0, 1, 3};
  double P[4];
  CHECK(precision_factor(CovType::Full, L, P, 2), "positive diagonal");
  CHECK(std::fabs(P[0] - 0.5) < 1e-15 && P[1] == 0 && std::fabs(P[2] + 1.0 / 6) < 1e-15 &&
            std::fabs(P[3] - 1.0 / 3) < 1e-15,
        "P = %g %g %g %g", P[0], P[1], P[2], P[3]);
  const double x[2] = {1, 2}, mu[2] = {0, 0};
  // y = P x = (0.5, -1/6 + 2/3 = 0.5): ||y||^2 = 0.5
  CHECK(std::fabs(mahalanobis_sq(CovType::Full, x, mu, P, 2) - 0.5) < 1e-15, "full mahalanobis");
  const double s[2] = {2, 4};
  CHECK(std::fabs(mahalanobis_sq(CovType::Diag, x, mu, s, 2) - (4.0 + 64.0)) < 1e-12, "diag mahalanobis");
  const double sp = 0.5;
  CHECK(std::fabs(mahalanobis_sq(CovType::Spherical, x, mu, &sp, 2) - 1.25) < 1e-15, "spherical mahalanobis");
  // offset: log w - D/2 log 2pi + log det P
  const double off = log_gaussian_offset(CovType::Full, std::log(0.25), P, 2);
  CHECK(std::fabs(off - (std::log(0.25) - kLog2Pi + std::log(0.5 / 3))) < 1e-14, "offset %.17g", off);
  const double bad[4] = {1, 0, 0, -1};
  CHECK(!precision_factor(CovType::Full, bad, P, 2), "non-positive diagonal is reported");
}

static void check_philox() {
  // Random123 known-answer vectors (tests/kat_vectors, philox4x32 10).
  struct Kat { uint32_t c[4], k[2], out[4]; };
  const Kat kats[] = {
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}},
      {{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}, {0xffffffffu, 0xffffffffu},
       {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}},
      {{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}, {0xa4093822u, 0x299f31d0u},
       {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}},
  };
  for (const Kat& t : kats) {
    const Philox4x32 r = philox4x32_10(Philox4x32{{t.c[0], t.c[1], t.c[2], t.c[3]}}, t.k[0], t.k[1]);
    CHECK(r.v[0] == t.out[0] && r.v[1] == t.out[1] && r.v[2] == t.out[2] && r.v[3] == t.out[3],
          "got %08x %08x %08x %08x", r.v[0], r.v[1], r.v[2], r.v[3]);
  }
  CHECK(uniform_open0(0u) > 0.0f && uniform_open0(0xffffffffu) <= 1.0f, "float uniform in (0, 1]");
  CHECK(uniform_open0(0u, 0u) > 0.0 && uniform_open0(0xffffffffu, 0xffffffffu) <= 1.0, "double uniform in (0, 1]");
}

// ---------------------------------------------------------------------------------------------------
// Normals (normal.h, cpu_random.h)
// ---------------------------------------------------------------------------------------------------

// One ulp of float at |v| (v a double): the spacing of floats in v's binade (subnormal spacing below).
static double float_ulp(double v) {
  const double a = std::fabs(v);
  if (a < 0x1p-126) return 0x1p-149;
  return std::ldexp(1.0, std::ilogb(a) - 23);
}
static double double_ulp(double v) {
  const double a = std::fabs(v);
  if (a < 0x1p-1022) return 0x1p-1074;
  return std::ldexp(1.0, std::ilogb(a) - 52);
}

// The uniform grid: every word below 2^16 (u from 2^-33 up, where -log u is largest), every 4093rd word
// across the range, every word of the top 2^16 (u up to 1, where log u -> 0), and both extremes:
// w = 0 gives u = 2^-33, w = 2^32 - 1 gives u = 1.
static std::vector<uint32_t> uniform_word_grid() {
  std::vector<uint32_t> w;
  for (uint32_t i = 0; i < (1u << 16); ++i) w.push_back(i);
  for (uint64_t i = 1u << 16; i < (uint64_t(1) << 32) - (1u << 16); i += 4093) w.push_back(static_cast<uint32_t>(i));
  for (uint64_t i = (uint64_t(1) << 32) - (1u << 16); i < (uint64_t(1) << 32); ++i) w.push_back(static_cast<uint32_t>(i));
  return w;
}

// cos(2 pi u), sin(2 pi u) in double for a float u, exact at the multiples of 1/4 (where the double
// product 2 pi u would leave ~1e-16 instead of an exact 0): 4u = q + r exactly, |r| <= 1/2, then the
// quarter-turn identities sin(pi/2 (q + r)) = sin, cos, -sin, -cos of (pi/2) r for q mod 4 = 0..3.
static void cos_sin_2pi_ref(double u, double* c, double* s) {
  const double t = 4.0 * u, q = std::nearbyint(t), x = (t - q) * 1.5707963267948966;
  const double sx = std::sin(x), cx = std::cos(x);
  switch (static_cast<int>(q) & 3) {
    case 0: *s = sx; *c = cx; break;
    case 1: *s = cx; *c = -sx; break;
    case 2: *s = -sx; *c = -cx; break;
    default: *s = -cx; *c = sx; break;
  }
}

// Error of a float result in ulps of the exact value; an exact 0 must be produced exactly (either sign).
static double ulps_off(float got, double want) {
  if (want == 0.0) return got == 0.0f ? 0.0 : INFINITY;
  return std::fabs(double(got) - want) / float_ulp(want);
}

static void check_normal_transforms() {
  const std::vector<uint32_t> words = uniform_word_grid();
  CHECK(uniform_open0(0u) == 0x1p-33f, "u(0) = %.9g, want 2^-33", double(uniform_open0(0u)));
  CHECK(uniform_open0(0xffffffffu) == 1.0f, "u(2^32 - 1) = %.9g, want 1", double(uniform_open0(0xffffffffu)));

  // log_poly against libm's double log of the same float uniform.
  double log_ulps = 0, log_worst_u = 0;
  bool log_nan = false;
  for (uint32_t w : words) {
    const float u = uniform_open0(w);
    const double e = ulps_off(log_poly<ScalarFloatOps>(u), std::log(double(u)));
    log_nan |= std::isnan(e);
    if (e > log_ulps) { log_ulps = e; log_worst_u = u; }
  }
  CHECK(!log_nan, "log_poly gave NaN");
  CHECK(log_ulps <= 1.5, "log_poly max error %.3g ulp at u = %.9g", log_ulps, log_worst_u);
  CHECK(log_poly<ScalarFloatOps>(1.0f) == 0.0f, "log(1) must be exactly 0");
  CHECK(ulps_off(log_poly<ScalarFloatOps>(0x1p-33f), -33.0 * std::log(2.0)) <= 1.0, "log(2^-33) = %.9g",
        double(log_poly<ScalarFloatOps>(0x1p-33f)));

  // sincos_2pi against the double quarter-turn reference, which itself must match libm's
  // cos / sin of 2 pi u to double rounding.
  double cos_ulps = 0, sin_ulps = 0, ref_abs = 0, sincos_worst_u = 0;
  bool sincos_nan = false;
  for (uint32_t w : words) {
    const float u = uniform_open0(w);
    double c, s;
    cos_sin_2pi_ref(u, &c, &s);
    ref_abs = std::fmax(ref_abs, std::fmax(std::fabs(c - std::cos(2 * M_PI * double(u))),
                                           std::fabs(s - std::sin(2 * M_PI * double(u)))));
    float gc, gs;
    sincos_2pi<ScalarFloatOps>(u, &gc, &gs);
    const double ec = ulps_off(gc, c), es = ulps_off(gs, s);
    sincos_nan |= std::isnan(ec) || std::isnan(es);
    if (ec > cos_ulps || es > sin_ulps) sincos_worst_u = u;
    cos_ulps = std::fmax(cos_ulps, ec);
    sin_ulps = std::fmax(sin_ulps, es);
  }
  CHECK(!sincos_nan, "sincos_2pi gave NaN");
  CHECK(ref_abs < 1e-15, "the double reference is off libm by %.3g", ref_abs);
  CHECK(cos_ulps <= 2.5 && sin_ulps <= 2.5, "sincos_2pi max error cos %.3g, sin %.3g ulp (last worst u = %.9g)",
        cos_ulps, sin_ulps, sincos_worst_u);
  float c1, s1;
  sincos_2pi<ScalarFloatOps>(1.0f, &c1, &s1);
  CHECK(c1 == 1.0f && s1 == 0.0f, "u = 1: cos %.9g sin %.9g", double(c1), double(s1));
  sincos_2pi<ScalarFloatOps>(0.5f, &c1, &s1);
  CHECK(c1 == -1.0f && s1 == 0.0f, "u = 1/2: cos %.9g sin %.9g", double(c1), double(s1));

  // box_muller against double Box-Muller of the same two float uniforms: z in ulps of itself, and the
  // absolute error in ulps of the radius r (the scale of the error of r cos / r sin near their zeros).
  double z_ulps = 0, z_r_ulps = 0;
  uint32_t worst_w0 = 0;
  bool z_nan = false;
  for (uint32_t w0 : words) {
    const uint32_t w1 = w0 * 2654435761u + 12345u;  // a second word spread over the range
    float z0, z1;
    box_muller<ScalarFloatOps>(w0, w1, &z0, &z1);
    const double r = std::sqrt(-2.0 * std::log(double(uniform_open0(w0))));
    double c, s;
    cos_sin_2pi_ref(uniform_open0(w1), &c, &s);
    const double e0 = ulps_off(z0, r * c), e1 = ulps_off(z1, r * s);
    z_nan |= std::isnan(e0) || std::isnan(e1);
    if (std::fmax(e0, e1) > z_ulps) { z_ulps = std::fmax(e0, e1); worst_w0 = w0; }
    if (r > 0) {
      const double er = std::fmax(std::fabs(z0 - r * c), std::fabs(z1 - r * s)) / float_ulp(r);
      z_r_ulps = std::fmax(z_r_ulps, er);
    }
  }
  CHECK(!z_nan, "box_muller gave NaN");
  CHECK(z_ulps <= 4.5, "box_muller max error %.3g ulp (w0 = %u)", z_ulps, worst_w0);
  CHECK(z_r_ulps <= 3.0, "box_muller max error %.3g ulp of the radius", z_r_ulps);
  float z0, z1;
  box_muller<ScalarFloatOps>(0u, 0u, &z0, &z1);  // u1 = 2^-33: the largest radius, sqrt(66 ln 2)
  CHECK(std::fabs(z0 - std::sqrt(66.0 * std::log(2.0))) <= 2 * float_ulp(6.7) && std::fabs(z1) < 1e-8,
        "largest radius: z = %.9g, %.9g", double(z0), double(z1));
  box_muller<ScalarFloatOps>(0xffffffffu, 0x12345678u, &z0, &z1);  // u1 = 1: radius exactly 0
  CHECK(z0 == 0.0f && z1 == 0.0f, "u1 = 1 must give exactly 0, got %.9g, %.9g", double(z0), double(z1));
  std::printf("normal transforms vs libm (double), max error: log_poly %.2f ulp, cos_2pi %.2f ulp, sin_2pi %.2f ulp, "
              "box_muller %.2f ulp of z, %.2f ulp of r\n", log_ulps, cos_ulps, sin_ulps, z_ulps, z_r_ulps);
}

// The layout of normal.h: element m * B + j of a row is normal m of Philox block j (scalar path), and the
// CPU's 16-lane cpu::rows_normals writes the same numbers (within 2 ulp: they differ at most by floating
// contraction) to exactly the D elements of each row. Three rows: a pair drawn together and a single one.
template <class T>
static void check_row_normals(double* worst_ulps) {
  constexpr int R = kNormalsPerBlock<T>;
  constexpr int64_t kRows = 3;
  const int64_t dims[] = {1, 3, 4, 5, 16, 17, 63, 64, 65, 3072};
  const uint64_t seeds[] = {0, 42, 0xfedcba9876543210ull};
  // 2^32 - 2 and 2^32 - 1 start pairs below and across the carry into the row's high word
  const uint64_t rows[] = {0, 7, (uint64_t(1) << 32) - 2, (uint64_t(1) << 32) - 1, uint64_t(1) << 32,
                           (uint64_t(1) << 40) + 3};
  const uint32_t streams[] = {kStreamPriorNoise, kStreamForwardNoise, step_stream(kStreamReverseNoise, 999)};
  const T sentinel = T(-12345.0);
  bool layout_ok = true, guard_ok = true, finite_ok = true;
  for (int64_t D : dims) {
    const int64_t B = normal_blocks<T>(D);
    CHECK(B == (D + R - 1) / R, "B(%lld) = %lld", (long long)D, (long long)B);
    for (uint64_t seed : seeds)
      for (uint64_t row0 : rows)
        for (uint32_t stream : streams) {
          std::vector<T> vec(kRows * D + 32, sentinel);
          cpu::rows_normals<T>(seed, stream, row0, kRows, D, vec.data());
          for (int64_t e = kRows * D; e < kRows * D + 32; ++e)
            if (vec[e] != sentinel) guard_ok = false;
          for (int64_t r = 0; r < kRows; ++r) {
            const uint64_t row = row0 + static_cast<uint64_t>(r);
            std::vector<T> scalar(D + 32, sentinel);
            row_normals<T>(seed, stream, row, D, scalar.data());
            for (int64_t j = 0; j < B; ++j) {
              T z[R];
              block_normals(philox_words(seed, stream, row, static_cast<uint32_t>(j)), z);
              for (int m = 0; m < R; ++m)
                if (m * B + j < D && std::memcmp(&scalar[m * B + j], &z[m], sizeof(T)) != 0) layout_ok = false;
            }
            for (int64_t e = 0; e < D; ++e) {
              const T v = vec[r * D + e];
              if (!std::isfinite(double(v)) || !std::isfinite(double(scalar[e]))) finite_ok = false;
              const double u = sizeof(T) == 4 ? float_ulp(scalar[e]) : double_ulp(scalar[e]);
              const double d = std::fabs(double(v) - double(scalar[e]));
              *worst_ulps = std::fmax(*worst_ulps, v == scalar[e] ? 0.0 : d / u);
            }
            for (int64_t e = D; e < D + 32; ++e)
              if (scalar[e] != sentinel) guard_ok = false;
          }
        }
  }
  CHECK(layout_ok, "scalar row_normals<%s> is not block_normals in the m * B + j layout", R == 4 ? "float" : "double");
  CHECK(guard_ok, "row_normals<%s> wrote past its rows", R == 4 ? "float" : "double");
  CHECK(finite_ok, "row_normals<%s> gave a non-finite normal", R == 4 ? "float" : "double");
  CHECK(*worst_ulps <= 2.0, "cpu::rows_normals<%s> vs scalar: %.3g ulp", R == 4 ? "float" : "double", *worst_ulps);
}

static void check_normals() {
  check_normal_transforms();
  double f_ulps = 0, d_ulps = 0;
  check_row_normals<float>(&f_ulps);
  check_row_normals<double>(&d_ulps);
  std::printf("cpu::rows_normals (16 lanes) vs scalar row_normals, max difference: float %.2f ulp, double %.2f ulp\n",
              f_ulps, d_ulps);
}

int main() {
  check_philox();
  check_logsumexp<float>(2e-6);
  check_logsumexp<double>(1e-13);
  check_argbest();
  check_fast_exp();
  check_gaussian();
  check_normals();
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
