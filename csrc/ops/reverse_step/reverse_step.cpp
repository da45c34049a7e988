// reverse_step: one fused reverse step of every sampler (ancestral, DDIM with eta, VP/VE Euler-Maruyama,
// probability flow, Langevin corrector, multistep DPM-Solver++), centred on each row's component j and
// shaped by A_j, from an eps, v or x0 prediction (sampling.h has the formulas):
//   y = x - mu_j, O = A out (epsilon, v_prediction) or out (sample), y0_hat = a0 y + b0 O (clipped to the
//   component's box in x space when asked), e = ex y + eo O,
//   x' = mu_j + cx y + c0 y0_hat + ce e + cz (A z) + h1 (H1 - mu_j) + h2 (H2 - mu_j),
// z drawn only when cz != 0, from row offset + i of stream (reverse, step) of `seed`, unless given.
#include "common.h"
#include "common_cpu.h"
#include "reverse_step/reverse_step.h"
#include "mixdiff/cpu_random.h"

#include <type_traits>

namespace mixdiff::ops {

namespace {

// "sample": the network predicts y0 = x0 - mu_j itself, so A is not applied to it.
bool parse_output_in_factor(const std::string& s) {
  if (s == "epsilon" || s == "v_prediction") return true;
  if (s == "sample") return false;
  TORCH_CHECK(false, "mixdiff: prediction_type must be 'epsilon', 'v_prediction' or 'sample', got '", s, "'");
}

// A clip bound: floating [K, D] on x's device.
void check_bound(const at::Tensor& t, const at::Tensor& x, const at::Tensor& means, const char* name) {
  check_floating(t, name);
  TORCH_CHECK(t.dim() == 2 && t.size(0) == means.size(0) && t.size(1) == means.size(1), "mixdiff: ", name,
              " must have shape [K, D] = [", means.size(0), ", ", means.size(1), "] (one box per component), got ",
              t.sizes());
  TORCH_CHECK(t.device() == x.device(), "mixdiff: ", name, " is on ", t.device(), " but x is on ", x.device());
}

// The box [lo, hi] of every component (contiguous, one dtype): no NaN, lo <= hi (an open side is +-inf,
// never in the way). On the CPU one pass over the values (a chain of small ATen reductions cost more than
// the step's clipping itself); on CUDA one transfer of three flags (a sync).
void check_bound_values(const at::Tensor& lo, const at::Tensor& hi) {
  bool nan_lo = false, nan_hi = false, reversed = false;
  if (lo.is_cpu()) {
    AT_DISPATCH_FLOATING_TYPES(lo.scalar_type(), "reverse_step_bounds", [&] {
      const scalar_t *l = lo.data_ptr<scalar_t>(), *h = hi.data_ptr<scalar_t>();
      int any_nan_lo = 0, any_nan_hi = 0, any_reversed = 0;  // int flags and v != v: the loop vectorises
      for (int64_t i = 0, n = lo.numel(); i < n; ++i) {
        const scalar_t a = l[i], b = h[i];
        any_nan_lo |= a != a;
        any_nan_hi |= b != b;
        any_reversed |= a > b;
      }
      nan_lo = any_nan_lo, nan_hi = any_nan_hi, reversed = any_reversed;
    });
  } else {
    const at::Tensor flags = at::stack({lo.isnan().any(), hi.isnan().any(), (lo > hi).any()}).cpu();
    const bool* f = flags.data_ptr<bool>();
    nan_lo = f[0], nan_hi = f[1], reversed = f[2];
  }
  TORCH_CHECK(!nan_lo, "mixdiff: clip_lo must not contain NaN (an open side is -inf)");
  TORCH_CHECK(!nan_hi, "mixdiff: clip_hi must not contain NaN (an open side is +inf)");
  if (reversed) {
    const at::Tensor where = (lo > hi).nonzero()[0].cpu();
    const int64_t k = where[0].item<int64_t>(), d = where[1].item<int64_t>();
    TORCH_CHECK(false, "mixdiff: clip_lo must not exceed clip_hi, got clip_lo[", k, ", ", d, "] = ",
                lo[k][d].item<double>(), " > clip_hi[", k, ", ", d, "] = ", hi[k][d].item<double>());
  }
}

}  // namespace

ReverseStepArgs reverse_step_checked(const at::Tensor& x, const at::Tensor& model_output, const at::Tensor& labels,
                                     const at::Tensor& means, const at::Tensor& cov_factor,
                                     const std::string& covariance_type, const std::vector<double>& coefficients,
                                     const std::optional<at::Tensor>& clip_lo, const std::optional<at::Tensor>& clip_hi,
                                     const std::optional<at::Tensor>& noise, int64_t offset, int64_t step,
                                     bool return_x0, const std::string& prediction_type,
                                     at::TensorList x0_history) {
  ReverseStepArgs a;
  a.cov = parse_cov_type(covariance_type);
  a.output_in_factor = parse_output_in_factor(prediction_type);
  TORCH_CHECK(offset >= 0, "mixdiff: offset must be >= 0, got ", offset);
  TORCH_CHECK(step >= 0 && step < kMaxStep, "mixdiff: step must be in [0, 2^28), got ", step);
  TORCH_CHECK(coefficients.size() == 10,
              "mixdiff: coefficients must be 10 numbers (x0_from_x, x0_from_out, coef_x, coef_x0, coef_eps, "
              "coef_noise, eps_from_x, eps_from_out, coef_x0_prev, coef_x0_prev2), got ", coefficients.size());
  for (double c : coefficients) TORCH_CHECK(std::isfinite(c), "mixdiff: coefficients must be finite, got ", c);
  const int64_t n_hist = static_cast<int64_t>(x0_history.size());
  TORCH_CHECK(n_hist <= 2, "mixdiff: x0_history must hold at most 2 tensors, got ", n_hist);
  TORCH_CHECK(coefficients[8] == 0.0 || n_hist >= 1, "mixdiff: coef_x0_prev is ", coefficients[8],
              " but x0_history has no first entry (it must be 0 without one)");
  TORCH_CHECK(coefficients[9] == 0.0 || n_hist >= 2, "mixdiff: coef_x0_prev2 is ", coefficients[9],
              " but x0_history has ", n_hist, " entries (it must be 0 without a second one)");
  check_data_and_means(x, means, "means");
  check_like_x(model_output, x, "model_output");
  check_factor(x, means, cov_factor, a.cov);
  for (int64_t j = 0; j < n_hist; ++j) check_like_x(x0_history[j], x, j == 0 ? "x0_history[0]" : "x0_history[1]");
  if (clip_lo) check_bound(*clip_lo, x, means, "clip_lo");
  if (clip_hi) check_bound(*clip_hi, x, means, "clip_hi");
  if (noise) check_like_x(*noise, x, "noise");
  check_factor_positive(cov_factor, a.cov);
  check_labels(labels, x, means.size(0));
  const auto dtype = compute_dtype(x);
  const bool clip = clip_lo.has_value() || clip_hi.has_value();
  if (clip) {
    const double inf = std::numeric_limits<double>::infinity();
    const auto open = [&](double v) { return at::full(means.sizes(), v, x.options().dtype(dtype)); };
    a.clip_lo = clip_lo ? prepared(*clip_lo, dtype) : open(-inf);
    a.clip_hi = clip_hi ? prepared(*clip_hi, dtype) : open(inf);
    check_bound_values(a.clip_lo, a.clip_hi);
  }
  a.x = prepared(x, dtype);
  a.model_output = prepared(model_output, dtype);
  a.labels = labels.contiguous();
  a.means = prepared(means, dtype);
  a.factor = prepared_factor(cov_factor, a.cov, dtype, x);
  a.coefs = StepCoefficients<double>{coefficients[0], coefficients[1], coefficients[2], coefficients[3],
                                     coefficients[4], coefficients[5], coefficients[6], coefficients[7],
                                     0.0, 0.0, clip, 0};
  // The history terms with nonzero coefficients, packed first.
  double* h[2] = {&a.coefs.h1, &a.coefs.h2};
  for (int64_t j = 0; j < n_hist; ++j) {
    if (coefficients[8 + j] == 0.0) continue;
    *h[a.coefs.history] = coefficients[8 + j];
    a.history[a.coefs.history++] = prepared(x0_history[j], dtype);
  }
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
  bool output_in_factor;  // O = A out; false: O = out ("sample")
  StepCoefficients<T> c;
  const T *x, *out, *means, *factor, *noise;  // noise: null -> drawn (when cz != 0)
  const T *clip_lo, *clip_hi;                 // [K, D], when c.clip
  const T *hist1, *hist2;                     // [B, D], the first c.history of them
  const int64_t* labels;
  int64_t D;
  bool draw_noise;
  uint64_t seed, offset;
  uint32_t stream;
  T *prev, *x0;  // x0: null when not asked
};

// One row: prev = reverse_element_fixed(...) elementwise, with the clip, the x0_hat output, the noise and
// the history terms fixed at compile time, so the loop has no branches and vectorises. The outputs alias
// nothing and the coefficients are a local copy: with up to nine arrays GCC would otherwise need more
// run-time alias checks than it makes and leave the loop scalar (clip with x0_hat 5x slower).
template <bool kClip, bool kX0, bool kNoise, int kHistory, class T>
MIXDIFF_INLINE void reverse_row(const StepCoefficients<T>& coefs, const T* __restrict__ mu, const T* __restrict__ x,
                                const T* __restrict__ o, const T* __restrict__ a_z, const T* __restrict__ lo,
                                const T* __restrict__ hi, const T* __restrict__ h1, const T* __restrict__ h2,
                                int64_t D, T* __restrict__ out, T* __restrict__ x0) {
  const StepCoefficients<T> c = coefs;
  for (int64_t d = 0; d < D; ++d) {
    T x0_hat;
    out[d] = reverse_element_fixed<kClip, kHistory>(c, mu[d], x[d], o[d], kNoise ? a_z[d] : T(0),
                                                    kClip ? lo[d] : T(0), kClip ? hi[d] : T(0),
                                                    kHistory >= 1 ? h1[d] : T(0), kHistory >= 2 ? h2[d] : T(0),
                                                    &x0_hat);
    if constexpr (kX0) x0[d] = x0_hat;
  }
}

// A out goes through a per-thread row buffer unless A = I or the output is a sample (O = out); the noise
// of a group of rows is drawn into a per-thread buffer at once (so short rows share Philox vectors) and
// scaled by A in place.
template <bool kClip, bool kX0, bool kNoise, int kHistory, class Mul, class T>
void reverse_rows(const ReverseRows<T>& a, int64_t b, int64_t e) {
  const int64_t D = a.D, fs = factor_size(a.cov, D);
  const int64_t group = std::clamp<int64_t>(16384 / std::max<int64_t>(D, 1), 1, 64);
  const bool factor_out = a.output_in_factor && a.cov != CovType::Identity;
  std::vector<T> a_out(factor_out ? D : 0), z(kNoise ? group * D : 0);
  for (int64_t g0 = b; g0 < e; g0 += group) {
    const int64_t g1 = std::min(e, g0 + group);
    if constexpr (kNoise) {
      if (a.draw_noise) cpu::rows_normals<T, Mul>(a.seed, a.stream, a.offset + static_cast<uint64_t>(g0), g1 - g0, D, z.data());
      else std::copy(a.noise + g0 * D, a.noise + g1 * D, z.begin());
    }
    for (int64_t i = g0; i < g1; ++i) {
      const int64_t k = a.labels[i];
      const T* f = a.factor + k * fs;
      const T* o = a.out + i * D;
      T* zi = kNoise ? z.data() + (i - g0) * D : nullptr;
      if constexpr (kNoise) apply_factor(a.cov, f, D, zi);
      if (factor_out) {
        std::copy(o, o + D, a_out.begin());
        apply_factor(a.cov, f, D, a_out.data());
        o = a_out.data();
      }
      reverse_row<kClip, kX0, kNoise, kHistory>(
          a.c, a.means + k * D, a.x + i * D, o, zi, kClip ? a.clip_lo + k * D : nullptr,
          kClip ? a.clip_hi + k * D : nullptr, kHistory >= 1 ? a.hist1 + i * D : nullptr,
          kHistory >= 2 ? a.hist2 + i * D : nullptr, D, a.prev + i * D, kX0 ? a.x0 + i * D : nullptr);
    }
  }
}

// fn(std::bool_constant<b>{}): a runtime flag made a compile-time one.
template <class Fn>
MIXDIFF_INLINE void bool_switch(bool b, Fn&& fn) {
  if (b) fn(std::true_type{});
  else fn(std::false_type{});
}

// reverse_rows for the step's flags (clip set, x0_hat asked for, noise term present, history terms read),
// each instantiation compiled for the machine by cpu::with_philox_mul (Mul: its Philox product). The flags
// are resolved first, so that every flattened copy holds one instantiation: flattening all 24 into one
// body left GCC's Philox products out of line (clip with noise 20x slower).
template <class T>
void reverse_rows_dispatch(const ReverseRows<T>& a, int64_t b, int64_t e) {
  bool_switch(a.c.clip, [&](auto clip) {
    bool_switch(a.x0 != nullptr, [&](auto x0) {
      bool_switch(a.c.cz != T(0), [&](auto noise) {
        constexpr bool kClip = decltype(clip)::value, kX0 = decltype(x0)::value, kNoise = decltype(noise)::value;
        const auto run = [&](auto history) {
          cpu::with_philox_mul([&](auto mul) {
            reverse_rows<kClip, kX0, kNoise, decltype(history)::value, decltype(mul)>(a, b, e);
          });
        };
        if (a.c.history == 0) run(std::integral_constant<int, 0>{});
        else if (a.c.history == 1) run(std::integral_constant<int, 1>{});
        else run(std::integral_constant<int, 2>{});
      });
    });
  });
}

std::tuple<at::Tensor, at::Tensor> reverse_step_cpu(
    const at::Tensor& x, const at::Tensor& model_output, const at::Tensor& labels, const at::Tensor& means,
    const at::Tensor& cov_factor, const std::string& covariance_type, at::ArrayRef<double> coefficients,
    const std::optional<at::Tensor>& clip_lo, const std::optional<at::Tensor>& clip_hi,
    const std::optional<at::Tensor>& noise, int64_t seed, int64_t offset, int64_t step, bool return_x0,
    const std::string& prediction_type, std::optional<at::TensorList> x0_history) {
  const ReverseStepArgs a =
      reverse_step_checked(x, model_output, labels, means, cov_factor, covariance_type, coefficients.vec(), clip_lo,
                           clip_hi, noise, offset, step, return_x0, prediction_type,
                           x0_history.value_or(at::TensorList()));
  advise_huge_pages(a.prev);
  advise_huge_pages(a.x0);
  AT_DISPATCH_FLOATING_TYPES(a.prev.scalar_type(), "reverse_step_cpu", [&] {
    const int64_t D = a.means.size(1);
    const auto ptr = [](const at::Tensor& t) { return t.defined() ? t.data_ptr<scalar_t>() : nullptr; };
    const ReverseRows<scalar_t> rows{a.cov,
                                     a.output_in_factor,
                                     cast_coefficients<scalar_t>(a.coefs),
                                     a.x.data_ptr<scalar_t>(),
                                     a.model_output.data_ptr<scalar_t>(),
                                     a.means.data_ptr<scalar_t>(),
                                     a.factor.data_ptr<scalar_t>(),
                                     ptr(a.noise),
                                     ptr(a.clip_lo),
                                     ptr(a.clip_hi),
                                     ptr(a.history[0]),
                                     ptr(a.history[1]),
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
      reverse_rows_dispatch(rows, b, e);
    });
  });
  return {a.prev, a.x0};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(mixdiff, m) {
  m.def(
      "reverse_step(Tensor x, Tensor model_output, Tensor labels, Tensor means, Tensor cov_factor, "
      "str covariance_type, float[] coefficients, Tensor? clip_lo, Tensor? clip_hi, Tensor? noise, int seed, "
      "int offset, int step, bool return_x0=False, str prediction_type=\"epsilon\", Tensor[]? x0_history=None) -> "
      "(Tensor prev_sample, Tensor pred_original_sample)");
}

TORCH_LIBRARY_IMPL(mixdiff, CPU, m) { m.impl("reverse_step", &reverse_step_cpu); }

}  // namespace mixdiff::ops
