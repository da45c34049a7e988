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
    const std::optional<at::Tensor>& clip_lo, const std::optional<at::Tensor>& clip_hi,
    const std::optional<at::Tensor>& noise, int64_t seed, int64_t offset, int64_t step, bool return_x0,
    const std::string& prediction_type, std::optional<at::TensorList> x0_history) {
  const ReverseStepArgs a =
      reverse_step_checked(x, model_output, labels, means, cov_factor, covariance_type, coefficients.vec(), clip_lo,
                           clip_hi, noise, offset, step, return_x0, prediction_type,
                           x0_history.value_or(at::TensorList()));
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
    const auto ptr = [](const at::Tensor& t) { return t.defined() ? t.data_ptr<scalar_t>() : nullptr; };
    cuda::ReverseStepParams<scalar_t> p;
    p.cov = a.cov;
    p.output_in_factor = a.output_in_factor;
    p.c = cast_coefficients<scalar_t>(a.coefs);
    p.x = a.x.data_ptr<scalar_t>();
    p.out = a.model_output.data_ptr<scalar_t>();
    p.labels = a.labels.data_ptr<int64_t>();
    p.means = a.means.data_ptr<scalar_t>();
    p.factor = a.cov == CovType::Identity ? nullptr : a.factor.data_ptr<scalar_t>();
    p.noise = ptr(a.noise);
    p.clip_lo = ptr(a.clip_lo);
    p.clip_hi = ptr(a.clip_hi);
    p.history[0] = ptr(a.history[0]);
    p.history[1] = ptr(a.history[1]);
    p.draw_noise = a.draw_noise;
    p.n = n;
    p.D = D;
    p.seed = static_cast<uint64_t>(seed);
    p.offset = static_cast<uint64_t>(offset);
    p.noise_stream = step_stream(kStreamReverseNoise, step);
    p.prev = a.prev.data_ptr<scalar_t>();
    p.x0 = return_x0 ? a.x0.data_ptr<scalar_t>() : nullptr;
    p.z_work = ptr(z_work);
    C10_CUDA_CHECK(cuda::reverse_step_launch<scalar_t>(p, stream));
  });
  return {a.prev, a.x0};
}

}  // namespace

TORCH_LIBRARY_IMPL(mixdiff, CUDA, m) { m.impl("reverse_step", &reverse_step_cuda); }

}  // namespace mixdiff::ops
