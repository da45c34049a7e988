// prior_sample: n draws from sum_k w_k N(mu_k, A_k A_k^T) with their components, in one pass. Sample i
// is row offset + i of the Philox stream of `seed`: its component and noise depend only on (seed, row),
// so drawing 1000 samples at once or in batches of 7 (advancing offset) gives the same samples.
#include "common.h"
#include "prior_sample/prior_sample.h"
#include "mixdiff/sampling.h"

namespace mixdiff::ops {

PriorSampleArgs prior_sample_checked(const at::Tensor& means, const at::Tensor& log_weights,
                                     const at::Tensor& cov_factor, const std::string& covariance_type, int64_t n,
                                     int64_t offset) {
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
  a.means = prepared(means, dtype);
  a.factor = prepared_factor(cov_factor, cov, dtype, like);
  // Max-shifted so that unnormalised log weights (e.g. all 1000 or all -800) neither overflow nor vanish.
  const at::Tensor lw = log_weights.to(at::kDouble);
  const double top = lw.max().item<double>();
  TORCH_CHECK(std::isfinite(top), "mixdiff: log_weights must have a finite entry and no +inf/NaN");
  a.cdf = at::cumsum(at::exp(lw - top), 0);
  const double total = a.cdf[-1].item<double>();
  TORCH_CHECK(std::isfinite(total) && total > 0, "mixdiff: log_weights must have a finite entry and no +inf/NaN");
  a.x = at::empty({n, means.size(1)}, like.options());
  a.labels = at::empty({n}, like.options().dtype(at::kLong));
  return a;
}

namespace {

template <class T>
void sample_rows(CovType cov, const PriorSampleArgs& a, uint64_t seed, uint64_t offset) {
  const int64_t n = a.x.size(0), K = a.means.size(0), D = a.means.size(1), fs = factor_size(cov, D);
  const T* means = a.means.data_ptr<T>();
  const T* factor = a.factor.data_ptr<T>();
  const double* cdf = a.cdf.data_ptr<double>();
  T* x = a.x.data_ptr<T>();
  int64_t* labels = a.labels.data_ptr<int64_t>();
  at::parallel_for(0, n, 64, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const uint64_t row = offset + static_cast<uint64_t>(i);
      const int64_t k = prior_component(cdf, K, seed, row);
      labels[i] = k;
      prior_noise(seed, row, 0, D, x + i * D);
      affine_from_noise(cov, means + k * D, factor + k * fs, D, x + i * D);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> prior_sample_cpu(const at::Tensor& means, const at::Tensor& log_weights,
                                                    const at::Tensor& cov_factor, const std::string& covariance_type,
                                                    int64_t n, int64_t seed, int64_t offset) {
  const PriorSampleArgs a = prior_sample_checked(means, log_weights, cov_factor, covariance_type, n, offset);
  const CovType cov = parse_cov_type(covariance_type);
  AT_DISPATCH_FLOATING_TYPES(a.x.scalar_type(), "prior_sample_cpu", [&] {
    sample_rows<scalar_t>(cov, a, static_cast<uint64_t>(seed), static_cast<uint64_t>(offset));
  });
  return {a.x, a.labels};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(mixdiff, m) {
  m.def(
      "prior_sample(Tensor means, Tensor log_weights, Tensor cov_factor, str covariance_type, int n, int seed, "
      "int offset=0) -> (Tensor x, Tensor labels)");
}

TORCH_LIBRARY_IMPL(mixdiff, CPU, m) { m.impl("prior_sample", &prior_sample_cpu); }

}  // namespace mixdiff::ops
