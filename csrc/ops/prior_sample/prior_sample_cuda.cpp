// prior_sample: CUDA dispatch (torch glue, host compiler). Kernels in prior_sample_cuda.cu.
#include "dispatch.h"
#include "prior_sample/prior_sample.h"
#include "prior_sample/prior_sample_cuda.h"

namespace mixdiff::ops {

namespace {

void prior_sample_fill_cuda(const PriorSampleArgs& a, int64_t seed, int64_t offset) {
  // Reached through the device key when any argument is on the device; the outputs follow the means.
  device::check_on_device("prior_sample", a.means, "means");
  device::launch("prior_sample", a.means, a.x.scalar_type(), a.x.size(0), [&]<class T>(cudaStream_t stream) {
    const at::Tensor cdf = a.cdf.contiguous();  // already is (fresh cumsum): no copy
    cuda::PriorSampleParams<T> p;
    p.cov = a.cov;
    p.means = a.means.data_ptr<T>();
    p.factor = a.cov == CovType::Identity ? nullptr : a.factor.data_ptr<T>();
    p.cdf = cdf.data_ptr<double>();
    p.n = a.x.size(0);
    p.K = a.means.size(0);
    p.D = a.means.size(1);
    p.seed = static_cast<uint64_t>(seed);
    p.offset = static_cast<uint64_t>(offset);
    p.x = a.x.data_ptr<T>();
    p.labels = a.labels.data_ptr<int64_t>();
    return cuda::prior_sample_launch<T>(p, stream);
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

MIXDIFF_DEVICE_LIBRARY_IMPL(m) {
  m.impl("prior_sample", &prior_sample_cuda);
  m.impl("prior_sample.out", &prior_sample_out_cuda);
}

}  // namespace mixdiff::ops
