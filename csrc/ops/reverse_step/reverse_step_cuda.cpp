// reverse_step: CUDA dispatch (torch glue, host compiler). Kernels in reverse_step_cuda.cu.
#include "common.h"
#include "reverse_step/reverse_step.h"
#include "reverse_step/reverse_step_cuda.h"

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

namespace mixdiff::ops {

namespace {

std::tuple<at::Tensor, at::Tensor> reverse_step_cuda(
    const at::Tensor& x, const at::Tensor& model_output, const at::Tensor& labels, const at::Tensor& means,
    const at::Tensor& cov_factor, const std::string& covariance_type, at::ArrayRef<double> coefficients,
    std::optional<double> clip_min, std::optional<double> clip_max, const std::optional<at::Tensor>& noise,
    int64_t seed, int64_t offset, int64_t step, bool return_x0) {
  const ReverseStepArgs a =
      reverse_step_checked(x, model_output, labels, means, cov_factor, covariance_type, coefficients.vec(), clip_min,
                           clip_max, noise, offset, step, return_x0);
  // Reached through the CUDA key when any argument is on CUDA; the checks tie the others to x's device.
  TORCH_CHECK(a.x.is_cuda(), "mixdiff: reverse_step on CUDA needs x on a CUDA device, got ", x.device());
  const c10::cuda::CUDAGuard guard(a.x.device());
  const int64_t n = a.x.size(0), D = a.x.size(1);
  if (n == 0) return {a.prev, a.x0};
  // Full covariance multiplies the drawn z by L_k: the kernel draws it into this scratch first.
  const at::Tensor z_work =
      a.cov == CovType::Full && a.draw_noise ? at::empty({n, D}, a.x.options()) : at::Tensor();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(a.prev.scalar_type(), "reverse_step_cuda", [&] {
    C10_CUDA_CHECK(cuda::reverse_step_launch<scalar_t>(
        a.cov, cast_coefficients<scalar_t>(a.coefs), a.x.data_ptr<scalar_t>(), a.model_output.data_ptr<scalar_t>(),
        a.labels.data_ptr<int64_t>(), a.means.data_ptr<scalar_t>(),
        a.cov == CovType::Identity ? nullptr : a.factor.data_ptr<scalar_t>(),
        a.noise.defined() ? a.noise.data_ptr<scalar_t>() : nullptr, a.draw_noise, n, D, static_cast<uint64_t>(seed),
        static_cast<uint64_t>(offset), step_stream(kStreamReverseNoise, step), a.prev.data_ptr<scalar_t>(),
        return_x0 ? a.x0.data_ptr<scalar_t>() : nullptr, z_work.defined() ? z_work.data_ptr<scalar_t>() : nullptr,
        stream));
  });
  return {a.prev, a.x0};
}

}  // namespace

TORCH_LIBRARY_IMPL(mixdiff, CUDA, m) { m.impl("reverse_step", &reverse_step_cuda); }

}  // namespace mixdiff::ops
