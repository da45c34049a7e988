// prior_sample: CUDA dispatch (torch glue, host compiler). Kernels in prior_sample_cuda.cu.
#include "common.h"
#include "prior_sample/prior_sample.h"
#include "prior_sample/prior_sample_cuda.h"

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

namespace mixdiff::ops {

namespace {

void prior_sample_fill_cuda(const PriorSampleArgs& a, int64_t seed, int64_t offset) {
  // Reached through the CUDA key when any argument is on CUDA; the outputs follow the means.
  TORCH_CHECK(a.x.is_cuda(), "mixdiff: prior_sample on CUDA needs means on a CUDA device, got ", a.means.device());
  const c10::cuda::CUDAGuard guard(a.x.device());
  const int64_t n = a.x.size(0);
  if (n == 0) return;
  const int64_t K = a.means.size(0), D = a.means.size(1);
  const at::Tensor cdf = a.cdf.contiguous();  // already is (fresh cumsum): no copy
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(a.x.scalar_type(), "prior_sample_cuda", [&] {
    C10_CUDA_CHECK(cuda::prior_sample_launch<scalar_t>(
        a.cov, a.means.data_ptr<scalar_t>(), a.cov == CovType::Identity ? nullptr : a.factor.data_ptr<scalar_t>(),
        cdf.data_ptr<double>(), n, K, D, static_cast<uint64_t>(seed), static_cast<uint64_t>(offset),
        a.x.data_ptr<scalar_t>(), a.labels.data_ptr<int64_t>(), stream));
  });
}

std::tuple<at::Tensor, at::Tensor> prior_sample_cuda(const at::Tensor& means, const at::Tensor& log_weights,
                                                     const at::Tensor& cov_factor, const std::string& covariance_type,
                                                     int64_t n, int64_t seed, int64_t offset) {
  const PriorSampleArgs a = prior_sample_checked(means, log_weights, cov_factor, covariance_type, n, offset);
  prior_sample_fill_cuda(a, seed, offset);
  return {a.x, a.labels};
}

void prior_sample_out_cuda(const at::Tensor& means, const at::Tensor& log_weights, const at::Tensor& cov_factor,
                           const std::string& covariance_type, int64_t n, int64_t seed, int64_t offset,
                           const at::Tensor& x, const at::Tensor& labels) {
  prior_sample_fill_cuda(prior_sample_checked(means, log_weights, cov_factor, covariance_type, n, offset, &x, &labels),
                         seed, offset);
}

}  // namespace

TORCH_LIBRARY_IMPL(mixdiff, CUDA, m) {
  m.impl("prior_sample", &prior_sample_cuda);
  m.impl("prior_sample.out", &prior_sample_out_cuda);
}

}  // namespace mixdiff::ops
