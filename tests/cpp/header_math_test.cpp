// Checks of the header-only math in csrc/include/mixdiff that the CUDA kernels use but the vectorised
// CPU kernels do not (streaming LogSumExp, ArgMin/ArgMax merges, scalar fast_exp, per-pair Gaussian
// terms), compiled for the host by tests/test_header_math.py. Prints one line per failed check and
// "N passed, M failed" last; exits non-zero on any failure.
#include <cmath>
#include <cstdio>
#include <vector>

#include "mixdiff/gaussian.h"
#include "mixdiff/philox.h"
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

int main() {
  check_philox();
  check_logsumexp<float>(2e-6);
  check_logsumexp<double>(1e-13);
  check_argbest();
  check_fast_exp();
  check_gaussian();
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
