// q_sample: CUDA dispatch (torch glue, host compiler). Kernels in q_sample_cuda.cu.
#include "dispatch.h"
#include "q_sample/q_sample.h"
#include "q_sample/q_sample_cuda.h"

namespace mixdiff::ops {

namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> q_sample_cuda(
    const at::Tensor& x0, const std::optional<at::Tensor>& labels, const at::Tensor& signal,
    const at::Tensor& noise_scale, const at::Tensor& means, const at::Tensor& cov_factor,
    const std::string& covariance_type, const std::optional<at::Tensor>& noise, int64_t seed, int64_t offset) {
  const QSampleArgs a =
      q_sample_checked(x0, labels, signal, noise_scale, means, cov_factor, covariance_type, noise, offset);
  // Reached through the device key when any argument is on the device; the checks tie the others to x0's.
  device::check_on_device("q_sample", a.x0, "x0");
  device::launch("q_sample", a.x0, a.x_t.scalar_type(), a.x0.size(0), [&]<class T>(cudaStream_t stream) {
    cuda::QSampleParams<T> p;
    p.cov = a.cov;
    p.x0 = a.x0.data_ptr<T>();
    p.labels = device::ptr<int64_t>(a.labels);
    p.signal = a.signal.data_ptr<T>();
    p.noise_scale = a.noise_scale.data_ptr<T>();
    p.means = a.means.data_ptr<T>();
    p.factor = a.cov == CovType::Identity ? nullptr : a.factor.data_ptr<T>();
    p.noise = device::ptr<T>(a.noise);
    p.n = a.x0.size(0);
    p.K = a.means.size(0);
    p.D = a.means.size(1);
    p.seed = static_cast<uint64_t>(seed);
    p.offset = static_cast<uint64_t>(offset);
    p.x_t = a.x_t.data_ptr<T>();
    p.eps = a.eps.data_ptr<T>();
    p.labels_out = a.labels_out.data_ptr<int64_t>();
    return cuda::q_sample_launch<T>(p, stream);
  });
  return {a.x_t, a.eps, a.labels_out};
}

}  // namespace

MIXDIFF_DEVICE_LIBRARY_IMPL(m) { m.impl("q_sample", &q_sample_cuda); }

}  // namespace mixdiff::ops
