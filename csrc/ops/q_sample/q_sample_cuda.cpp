// q_sample: CUDA dispatch (torch glue, host compiler). Kernels in q_sample_cuda.cu.
#include "common.h"
#include "q_sample/q_sample.h"
#include "q_sample/q_sample_cuda.h"

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

namespace mixdiff::ops {

namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> q_sample_cuda(
    const at::Tensor& x0, const std::optional<at::Tensor>& labels, const at::Tensor& signal,
    const at::Tensor& noise_scale, const at::Tensor& means, const at::Tensor& cov_factor,
    const std::string& covariance_type, const std::optional<at::Tensor>& noise, int64_t seed, int64_t offset) {
  const QSampleArgs a =
      q_sample_checked(x0, labels, signal, noise_scale, means, cov_factor, covariance_type, noise, offset);
  // Reached through the CUDA key when any argument is on CUDA; the checks tie the others to x0's device.
  TORCH_CHECK(a.x0.is_cuda(), "mixdiff: q_sample on CUDA needs x0 on a CUDA device, got ", x0.device());
  const c10::cuda::CUDAGuard guard(a.x0.device());
  const int64_t n = a.x0.size(0), K = a.means.size(0), D = a.means.size(1);
  if (n == 0) return {a.x_t, a.eps, a.labels_out};
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(a.x_t.scalar_type(), "q_sample_cuda", [&] {
    C10_CUDA_CHECK(cuda::q_sample_launch<scalar_t>(
        a.cov, a.x0.data_ptr<scalar_t>(), a.labels.defined() ? a.labels.data_ptr<int64_t>() : nullptr,
        a.signal.data_ptr<scalar_t>(), a.noise_scale.data_ptr<scalar_t>(), a.means.data_ptr<scalar_t>(),
        a.cov == CovType::Identity ? nullptr : a.factor.data_ptr<scalar_t>(),
        a.noise.defined() ? a.noise.data_ptr<scalar_t>() : nullptr, n, K, D, static_cast<uint64_t>(seed),
        static_cast<uint64_t>(offset), a.x_t.data_ptr<scalar_t>(), a.eps.data_ptr<scalar_t>(),
        a.labels_out.data_ptr<int64_t>(), stream));
  });
  return {a.x_t, a.eps, a.labels_out};
}

}  // namespace

TORCH_LIBRARY_IMPL(mixdiff, CUDA, m) { m.impl("q_sample", &q_sample_cuda); }

}  // namespace mixdiff::ops
