// prior_sample: n draws from sum_k w_k N(mu_k, A_k A_k^T) with their components, in one pass. Sample i
// is row offset + i of the Philox stream of `seed`: its component and noise depend only on (seed, row),
// so drawing 1000 samples at once or in batches of 7 (advancing offset) gives the same samples.
#include <ATen/MemoryOverlap.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <torch/csrc/autograd/variable.h>

#include <utility>

#include "common.h"
#include "common_cpu.h"
#include "prior_sample/prior_sample.h"
#include "mixdiff/cpu_random.h"
#include "mixdiff/sampling.h"

namespace mixdiff::ops {

namespace {

// An out tensor must be exactly what the op would allocate: the kernels write contiguous rows.
void check_out(const at::Tensor& t, const char* name, at::IntArrayRef shape, const at::TensorOptions& expected) {
  TORCH_CHECK(t.sizes() == shape, "mixdiff: out tensor ", name, " must have shape ", shape, ", got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == expected.dtype().toScalarType(), "mixdiff: out tensor ", name, " must be ",
              expected.dtype().toScalarType(), ", got ", t.scalar_type());
  TORCH_CHECK(t.device() == expected.device(), "mixdiff: out tensor ", name, " must be on the means' device ",
              expected.device(), ", got ", t.device());
  TORCH_CHECK(t.is_contiguous(), "mixdiff: out tensor ", name, " must be contiguous");
  TORCH_CHECK(!t.requires_grad(), "mixdiff: out tensor ", name, " must not require grad (sampling is not differentiable)");
}

// Writing into an argument that is still being read, or into the other output, would corrupt both.
void check_no_overlap(const at::Tensor& out, const char* out_name, const at::Tensor& other, const char* other_name) {
  const at::MemOverlapStatus status = at::get_overlap_status(out, other);
  TORCH_CHECK(status != at::MemOverlapStatus::Full && status != at::MemOverlapStatus::Partial,
              "mixdiff: out tensor ", out_name, " shares memory with ", other_name);
}

}  // namespace

PriorSampleArgs prior_sample_checked(const at::Tensor& means, const at::Tensor& log_weights,
                                     const at::Tensor& cov_factor, const std::string& covariance_type, int64_t n,
                                     int64_t offset, const at::Tensor* x_out, const at::Tensor* labels_out) {
  const CovType cov = parse_cov_type(covariance_type);
  TORCH_CHECK(n >= 0, "mixdiff: n must be >= 0, got ", n);
  TORCH_CHECK(offset >= 0, "mixdiff: offset must be >= 0, got ", offset);
  // The data-shaped checks need an x: a [0, D] tensor on the means' device stands in for it.
  check_floating(means, "means");
  TORCH_CHECK(means.dim() == 2, "mixdiff: means must be 2-D [K, D], got shape ", means.sizes());
  const auto dtype = compute_dtype(means);
  const at::Tensor like = at::empty({0, means.size(1)}, means.options().dtype(dtype));
  check_mixture(like, means, cov_factor, log_weights, cov);
  check_factor_positive(cov_factor, cov);
  PriorSampleArgs a;
  a.cov = cov;
  a.means = prepared(means, dtype);
  a.factor = prepared_factor(cov_factor, cov, dtype, like);
  // Max-shifted so that unnormalised log weights (e.g. all 1000 or all -800) neither overflow nor vanish.
  const at::Tensor lw = log_weights.to(at::kDouble);
  const double top = lw.max().item<double>();
  TORCH_CHECK(std::isfinite(top), "mixdiff: log_weights must have a finite entry and no +inf/NaN");
  a.cdf = at::cumsum(at::exp(lw - top), 0);
  const double total = a.cdf[-1].item<double>();
  TORCH_CHECK(std::isfinite(total) && total > 0, "mixdiff: log_weights must have a finite entry and no +inf/NaN");
  if (!x_out) {
    a.x = at::empty({n, means.size(1)}, like.options());
    a.labels = at::empty({n}, like.options().dtype(at::kLong));
    return a;
  }
  check_out(*x_out, "x", {n, means.size(1)}, like.options());
  check_out(*labels_out, "labels", {n}, like.options().dtype(at::kLong));
  const std::pair<const at::Tensor*, const char*> inputs[] = {
      {&means, "means"}, {&log_weights, "log_weights"}, {&cov_factor, "cov_factor"}};
  for (const auto& [input, name] : inputs) {
    check_no_overlap(*x_out, "x", *input, name);
    check_no_overlap(*labels_out, "labels", *input, name);
  }
  check_no_overlap(*x_out, "x", *labels_out, "out tensor labels");
  a.x = *x_out;
  a.labels = *labels_out;
  return a;
}

namespace {

// Components of rows row0 .. row0 + count - 1 (count <= 16): the uniforms of 16 rows from one vector
// Philox call (lane l: counter (0, kStreamComponent, row0 + l)), then the shared bisection.
template <class Mul>
MIXDIFF_INLINE void draw_components(const double* cdf, int64_t K, uint64_t seed, uint64_t row0, int64_t count,
                                    int64_t* labels) {
  if (K == 1) {  // the draw can only give 0
    std::fill(labels, labels + count, int64_t(0));
    return;
  }
  VecU32 lo, hi;
  for (int l = 0; l < cpu::kLanes<float>; ++l) {
    lo[l] = static_cast<uint32_t>(row0 + l);
    hi[l] = static_cast<uint32_t>((row0 + l) >> 32);
  }
  const Philox4<VecU32> w = philox4x32_10<VecU32, Mul>(
      Philox4<VecU32>{{VecU32{}, VecU32{} + static_cast<uint32_t>(kStreamComponent), lo, hi}},
      static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  for (int64_t l = 0; l < count; ++l)
    labels[l] = categorical_inverse_cdf(cdf, K, uniform_open0(w.v[0][l], w.v[1][l]));
}

// Mul: the Philox product of cpu::with_philox_mul, which compiles this for the machine.
template <class Mul, class T>
void sample_rows(CovType cov, const T* means, const T* factor, const double* cdf, int64_t K, int64_t D,
                 uint64_t seed, uint64_t offset, int64_t b, int64_t e, T* x, int64_t* labels) {
  using V = typename cpu::Vec<T>::type;
  constexpr int64_t kRows = cpu::kLanes<float>;
  const int64_t fs = factor_size(cov, D);
  for (int64_t r0 = b; r0 < e; r0 += kRows) {
    const int64_t rows = std::min(kRows, e - r0);
    const uint64_t row0 = offset + static_cast<uint64_t>(r0);
    draw_components<Mul>(cdf, K, seed, row0, rows, labels + r0);
    if (cov == CovType::Full || cpu::short_rows<T>(D)) {
      // full covariances and short rows: the block's noise in one batched draw, transformed in place
      cpu::rows_normals<T, Mul>(seed, kStreamPriorNoise, row0, rows, D, x + r0 * D);
      for (int64_t i = r0; i < r0 + rows; ++i)
        affine_from_noise(cov, means + labels[i] * D, factor + labels[i] * fs, D, x + i * D);
      continue;
    }
    // Separable: x = mu + A z while z is in registers.
    cpu::each_row_normals<T, Mul>(seed, kStreamPriorNoise, row0, r0, r0 + rows, D,
                                  [&](int64_t i, int64_t e0, int64_t count, const V& z) {
      const int64_t k = labels[i];
      cpu::store_partial(
          x + i * D + e0, cpu::add_scaled_noise(cov, cpu::load_partial(means + k * D + e0, count), factor + k * fs, e0, count, z),
          count);
    });
  }
}

void prior_sample_fill_cpu(const PriorSampleArgs& a, int64_t seed, int64_t offset) {
  const int64_t K = a.means.size(0), D = a.means.size(1);
  AT_DISPATCH_FLOATING_TYPES(a.x.scalar_type(), "prior_sample_cpu", [&] {
    parallel_pieces(a.x.size(0), 64, [&](int64_t b, int64_t e) {
      cpu::with_philox_mul([&](auto mul) {
        sample_rows<decltype(mul)>(a.cov, a.means.data_ptr<scalar_t>(), a.factor.data_ptr<scalar_t>(),
                                   a.cdf.data_ptr<double>(), K, D, static_cast<uint64_t>(seed),
                                   static_cast<uint64_t>(offset), b, e, a.x.data_ptr<scalar_t>(),
                                   a.labels.data_ptr<int64_t>());
      });
    });
  });
}

std::tuple<at::Tensor, at::Tensor> prior_sample_cpu(const at::Tensor& means, const at::Tensor& log_weights,
                                                    const at::Tensor& cov_factor, const std::string& covariance_type,
                                                    int64_t n, int64_t seed, int64_t offset) {
  const PriorSampleArgs a = prior_sample_checked(means, log_weights, cov_factor, covariance_type, n, offset);
  advise_huge_pages(a.x);  // fresh memory only: a caller's buffer keeps the pages it has
  prior_sample_fill_cpu(a, seed, offset);
  return {a.x, a.labels};
}

void prior_sample_out_cpu(const at::Tensor& means, const at::Tensor& log_weights, const at::Tensor& cov_factor,
                          const std::string& covariance_type, int64_t n, int64_t seed, int64_t offset,
                          const at::Tensor& x, const at::Tensor& labels) {
  prior_sample_fill_cpu(prior_sample_checked(means, log_weights, cov_factor, covariance_type, n, offset, &x, &labels),
                        seed, offset);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(mixdiff, m) {
  m.def(
      "prior_sample(Tensor means, Tensor log_weights, Tensor cov_factor, str covariance_type, int n, int seed, "
      "int offset=0) -> (Tensor x, Tensor labels)");
  // The same draws into caller-owned tensors: a buffer reused across calls skips a fresh allocation's
  // first-touch page faults, which cost about as much as generating the normals (bench/bench_noise.py).
  m.def(
      "prior_sample.out(Tensor means, Tensor log_weights, Tensor cov_factor, str covariance_type, int n, int seed, "
      "int offset=0, *, Tensor(a!) x, Tensor(b!) labels) -> ()");
}

TORCH_LIBRARY_IMPL(mixdiff, CPU, m) {
  m.impl("prior_sample", &prior_sample_cpu);
  m.impl("prior_sample.out", &prior_sample_out_cpu);
}

namespace {

// The out tensors' version counters are bumped after the write, as ATen's in-place kernels do, so that
// autograd notices a tensor it saved for backward being overwritten (check_out rejects out tensors that
// require grad). torch's boxed fallback for this key bumps only returned tensors; this op returns none.
void prior_sample_out_inplace_or_view(c10::DispatchKeySet keys, const at::Tensor& means, const at::Tensor& log_weights,
                                      const at::Tensor& cov_factor, const std::string& covariance_type, int64_t n,
                                      int64_t seed, int64_t offset, const at::Tensor& x, const at::Tensor& labels) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("mixdiff::prior_sample", "out")
                             .typed<void(const at::Tensor&, const at::Tensor&, const at::Tensor&, const std::string&,
                                         int64_t, int64_t, int64_t, const at::Tensor&, const at::Tensor&)>();
  {
    const at::AutoDispatchBelowADInplaceOrView guard;
    op.redispatch(keys & c10::after_ADInplaceOrView_keyset, means, log_weights, cov_factor, covariance_type, n, seed,
                  offset, x, labels);
  }
  torch::autograd::impl::bump_version(x);
  torch::autograd::impl::bump_version(labels);
}

}  // namespace

TORCH_LIBRARY_IMPL(mixdiff, ADInplaceOrView, m) {
  m.impl("prior_sample.out", TORCH_FN(prior_sample_out_inplace_or_view));
}

}  // namespace mixdiff::ops
