// reverse_step: CUDA dispatch (torch glue, host compiler). Kernels in reverse_step_cuda.cu.
#include "dispatch.h"
#include "reverse_step/reverse_step.h"
#include "reverse_step/reverse_step_cuda.h"

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
  // Reached through the device key when any argument is on the device; the checks tie the others to x's.
  device::check_on_device("reverse_step", a.x, "x");
  device::launch("reverse_step", a.x, a.prev.scalar_type(), a.x.size(0), [&]<class T>(cudaStream_t stream) {
    const int64_t n = a.x.size(0), D = a.x.size(1);
    // Full covariance multiplies the drawn z by L_k: the kernel draws it into this scratch first.
    const at::Tensor z_work =
        a.cov == CovType::Full && a.draw_noise ? at::empty({n, D}, a.x.options()) : at::Tensor();
    cuda::ReverseStepParams<T> p;
    p.cov = a.cov;
    p.output_in_factor = a.output_in_factor;
    p.c = cast_coefficients<T>(a.coefs);
    p.x = a.x.data_ptr<T>();
    p.out = a.model_output.data_ptr<T>();
    p.labels = a.labels.data_ptr<int64_t>();
    p.means = a.means.data_ptr<T>();
    p.factor = a.cov == CovType::Identity ? nullptr : a.factor.data_ptr<T>();
    p.noise = device::ptr<T>(a.noise);
    p.clip_lo = device::ptr<T>(a.clip_lo);
    p.clip_hi = device::ptr<T>(a.clip_hi);
    p.history[0] = device::ptr<T>(a.history[0]);
    p.history[1] = device::ptr<T>(a.history[1]);
    p.draw_noise = a.draw_noise;
    p.n = n;
    p.D = D;
    p.seed = static_cast<uint64_t>(seed);
    p.offset = static_cast<uint64_t>(offset);
    p.noise_stream = step_stream(kStreamReverseNoise, step);
    p.prev = a.prev.data_ptr<T>();
    p.x0 = return_x0 ? a.x0.data_ptr<T>() : nullptr;
    p.z_work = device::ptr<T>(z_work);
    return cuda::reverse_step_launch<T>(p, stream);
  });
  return {a.prev, a.x0};
}

}  // namespace

MIXDIFF_DEVICE_LIBRARY_IMPL(m) { m.impl("reverse_step", &reverse_step_cuda); }

}  // namespace mixdiff::ops
