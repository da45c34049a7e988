// reverse_step: one fused reverse step of every sampler (ancestral, DDIM with eta, VP/VE Euler-Maruyama,
// probability flow, Langevin corrector), centred on each row's component j and shaped by A_j:
//   y = x - mu_j, y0_hat = a0 y + b0 (A eps_hat) (clipped in x space when asked),
//   x' = mu_j + cx y + c0 y0_hat + ce (A eps_hat) + cz (A z),
// z drawn only when cz != 0, from row offset + i of stream (reverse, step) of `seed`, unless given.
#include "common.h"
#include "common_cpu.h"
#include "reverse_step/reverse_step.h"
#include "mixdiff/cpu_random.h"

namespace mixdiff::ops {

ReverseStepArgs reverse_step_checked(const at::Tensor& x, const at::Tensor& model_output, const at::Tensor& labels,
                                     const at::Tensor& means, const at::Tensor& cov_factor,
                                     const std::string& covariance_type, const std::vector<double>& coefficients,
                                     std::optional<double> clip_min, std::optional<double> clip_max,
                                     const std::optional<at::Tensor>& noise, int64_t offset, int64_t step,
                                     bool return_x0) {
  ReverseStepArgs a;
  a.cov = parse_cov_type(covariance_type);
  TORCH_CHECK(offset >= 0, "mixdiff: offset must be >= 0, got ", offset);
  TORCH_CHECK(step >= 0 && step < kMaxStep, "mixdiff: step must be in [0, 2^28), got ", step);
  TORCH_CHECK(coefficients.size() == 6,
              "mixdiff: coefficients must be 6 numbers (x0_from_x, x0_from_eps, coef_x, coef_x0, coef_eps, "
              "coef_noise), got ", coefficients.size());
  for (double c : coefficients) TORCH_CHECK(std::isfinite(c), "mixdiff: coefficients must be finite, got ", c);
  TORCH_CHECK(!clip_min || !std::isnan(*clip_min), "mixdiff: clip_min must not be NaN");
  TORCH_CHECK(!clip_max || !std::isnan(*clip_max), "mixdiff: clip_max must not be NaN");
  TORCH_CHECK(!clip_min || !clip_max || *clip_min <= *clip_max, "mixdiff: clip_min (", clip_min.value_or(0),
              ") must not exceed clip_max (", clip_max.value_or(0), ")");
  check_data_and_means(x, means, "means");
  check_like_x(model_output, x, "model_output");
  check_factor(x, means, cov_factor, a.cov);
  check_factor_positive(cov_factor, a.cov);
  check_labels(labels, x, means.size(0));
  if (noise) check_like_x(*noise, x, "noise");
  const auto dtype = compute_dtype(x);
  a.x = prepared(x, dtype);
  a.model_output = prepared(model_output, dtype);
  a.labels = labels.contiguous();
  a.means = prepared(means, dtype);
  a.factor = prepared_factor(cov_factor, a.cov, dtype, x);
  const double inf = std::numeric_limits<double>::infinity();
  a.coefs = StepCoefficients<double>{coefficients[0], coefficients[1], coefficients[2], coefficients[3],
                                     coefficients[4], coefficients[5], clip_min.value_or(-inf),
                                     clip_max.value_or(inf), clip_min.has_value() || clip_max.has_value()};
  a.draw_noise = coefficients[5] != 0.0 && !noise;
  if (noise && coefficients[5] != 0.0) a.noise = prepared(*noise, dtype);
  a.prev = at::empty(x.sizes(), a.x.options());
  a.x0 = return_x0 ? at::empty(x.sizes(), a.x.options()) : at::empty({0}, a.x.options());
  return a;
}

namespace {

template <class T>
struct ReverseRows {
  CovType cov;
  StepCoefficients<T> c;
  const T *x, *eps_hat, *means, *factor, *noise;  // noise: null -> drawn (when cz != 0)
  const int64_t* labels;
  int64_t D;
  bool draw_noise;
  uint64_t seed, offset;
  uint32_t stream;
  T *prev, *x0;  // x0: null when not asked
};

// One row: prev = reverse_element(...) elementwise, with the clip, the x0_hat output and the noise
// fixed at compile time, so the loop has no branches and vectorises.
template <bool kClip, bool kX0, bool kNoise, class T>
MIXDIFF_INLINE void reverse_row(const StepCoefficients<T>& c, const T* mu, const T* x, const T* a_eps_hat,
                                const T* a_z, int64_t D, T* out, T* x0) {
  for (int64_t d = 0; d < D; ++d) {
    T x0_hat;
    out[d] = reverse_element_fixed_clip<kClip>(c, mu[d], x[d], a_eps_hat[d], kNoise ? a_z[d] : T(0), &x0_hat);
    if constexpr (kX0) x0[d] = x0_hat;
  }
}

// A eps_hat goes through a per-thread row buffer unless A = I; the noise of a group of rows is drawn
// into a per-thread buffer at once (so short rows share Philox vectors) and scaled by A in place.
template <bool kClip, bool kX0, bool kNoise, class Mul, class T>
void reverse_rows(const ReverseRows<T>& a, int64_t b, int64_t e) {
  const int64_t D = a.D, fs = factor_size(a.cov, D);
  const int64_t group = std::clamp<int64_t>(16384 / std::max<int64_t>(D, 1), 1, 64);
  std::vector<T> a_eps(a.cov == CovType::Identity ? 0 : D), z(kNoise ? group * D : 0);
  for (int64_t g0 = b; g0 < e; g0 += group) {
    const int64_t g1 = std::min(e, g0 + group);
    if constexpr (kNoise) {
      if (a.draw_noise) cpu::rows_normals<T, Mul>(a.seed, a.stream, a.offset + static_cast<uint64_t>(g0), g1 - g0, D, z.data());
      else std::copy(a.noise + g0 * D, a.noise + g1 * D, z.begin());
    }
    for (int64_t i = g0; i < g1; ++i) {
      const int64_t k = a.labels[i];
      const T* f = a.factor + k * fs;
      const T* eps_hat = a.eps_hat + i * D;
      T* zi = kNoise ? z.data() + (i - g0) * D : nullptr;
      if constexpr (kNoise) apply_factor(a.cov, f, D, zi);
      if (a.cov != CovType::Identity) {
        std::copy(eps_hat, eps_hat + D, a_eps.begin());
        apply_factor(a.cov, f, D, a_eps.data());
        eps_hat = a_eps.data();
      }
      reverse_row<kClip, kX0, kNoise>(a.c, a.means + k * D, a.x + i * D, eps_hat, zi, D, a.prev + i * D,
                                      kX0 ? a.x0 + i * D : nullptr);
    }
  }
}

// reverse_rows for the step's flags: clip set, x0_hat asked for, noise term present. Mul: the Philox
// product of cpu::with_philox_mul, which compiles this for the machine.
template <class Mul, class T>
void reverse_rows_dispatch(const ReverseRows<T>& a, int64_t b, int64_t e) {
  const int flags = (a.c.clip ? 4 : 0) | (a.x0 ? 2 : 0) | (a.c.cz != T(0) ? 1 : 0);
  switch (flags) {
    case 0: return reverse_rows<false, false, false, Mul>(a, b, e);
    case 1: return reverse_rows<false, false, true, Mul>(a, b, e);
    case 2: return reverse_rows<false, true, false, Mul>(a, b, e);
    case 3: return reverse_rows<false, true, true, Mul>(a, b, e);
    case 4: return reverse_rows<true, false, false, Mul>(a, b, e);
    case 5: return reverse_rows<true, false, true, Mul>(a, b, e);
    case 6: return reverse_rows<true, true, false, Mul>(a, b, e);
    default: return reverse_rows<true, true, true, Mul>(a, b, e);
  }
}

std::tuple<at::Tensor, at::Tensor> reverse_step_cpu(
    const at::Tensor& x, const at::Tensor& model_output, const at::Tensor& labels, const at::Tensor& means,
    const at::Tensor& cov_factor, const std::string& covariance_type, at::ArrayRef<double> coefficients,
    std::optional<double> clip_min, std::optional<double> clip_max, const std::optional<at::Tensor>& noise,
    int64_t seed, int64_t offset, int64_t step, bool return_x0) {
  const ReverseStepArgs a =
      reverse_step_checked(x, model_output, labels, means, cov_factor, covariance_type, coefficients.vec(), clip_min,
                           clip_max, noise, offset, step, return_x0);
  advise_huge_pages(a.prev);
  advise_huge_pages(a.x0);
  AT_DISPATCH_FLOATING_TYPES(a.prev.scalar_type(), "reverse_step_cpu", [&] {
    const int64_t D = a.means.size(1);
    const ReverseRows<scalar_t> rows{a.cov,
                                     cast_coefficients<scalar_t>(a.coefs),
                                     a.x.data_ptr<scalar_t>(),
                                     a.model_output.data_ptr<scalar_t>(),
                                     a.means.data_ptr<scalar_t>(),
                                     a.factor.data_ptr<scalar_t>(),
                                     a.noise.defined() ? a.noise.data_ptr<scalar_t>() : nullptr,
                                     a.labels.data_ptr<int64_t>(),
                                     D,
                                     a.draw_noise,
                                     static_cast<uint64_t>(seed),
                                     static_cast<uint64_t>(offset),
                                     step_stream(kStreamReverseNoise, step),
                                     a.prev.data_ptr<scalar_t>(),
                                     return_x0 ? a.x0.data_ptr<scalar_t>() : nullptr};
    const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(D, 1));
    parallel_pieces(a.prev.size(0), grain, [&](int64_t b, int64_t e) {
      cpu::with_philox_mul([&](auto mul) { reverse_rows_dispatch<decltype(mul)>(rows, b, e); });
    });
  });
  return {a.prev, a.x0};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(mixdiff, m) {
  m.def(
      "reverse_step(Tensor x, Tensor model_output, Tensor labels, Tensor means, Tensor cov_factor, "
      "str covariance_type, float[] coefficients, float? clip_min, float? clip_max, Tensor? noise, int seed, "
      "int offset, int step, bool return_x0=False) -> (Tensor prev_sample, Tensor pred_original_sample)");
}

TORCH_LIBRARY_IMPL(mixdiff, CPU, m) { m.impl("reverse_step", &reverse_step_cpu); }

}  // namespace mixdiff::ops
