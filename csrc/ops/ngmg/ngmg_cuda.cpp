// ngmg: CUDA dispatch (torch glue, host compiler). Kernels in ngmg_cuda.cu.
#include "dispatch.h"
#include "ngmg/ngmg.h"
#include "ngmg/ngmg_cuda.h"

namespace mixdiff::ops {

namespace {

std::tuple<at::Tensor, at::Tensor> ngmg_cuda(const at::Tensor& pred, const at::Tensor& modes,
                                             const at::Tensor& weights, const at::Tensor& sigma, bool normalized,
                                             const std::string& kind) {
  const NgmgArgs a = ngmg_checked(pred, modes, weights, sigma, normalized, kind);
  // Reached through the device key when any argument is on the device; the checks tie the others to pred's.
  device::check_on_device("ngmg", a.pred, "pred");
  device::launch("ngmg", a.pred, a.grad.scalar_type(), a.pred.size(0), [&]<class T>(cudaStream_t stream) {
    const int64_t K = a.modes.size(0);
    const at::Tensor ws = at::empty({2 * K}, a.pred.options());  // offsets [K] then 1 / (2 sigma^2) [K]
    const T* w = a.weights.data_ptr<T>();
    cuda::NgmgParams<T> p;
    p.kind = a.kind;
    p.normalized = a.normalized;
    p.pred = a.pred.data_ptr<T>();
    p.modes = a.modes.data_ptr<T>();
    p.sigma = a.sigma.data_ptr<T>();
    p.shared_weights = a.row_weights ? nullptr : w;
    p.row_weights = a.row_weights ? w : nullptr;
    p.N = a.pred.size(0);
    p.K = K;
    p.D = a.pred.size(1);
    p.offset = ws.data_ptr<T>();
    p.half_prec = p.offset + K;
    p.loss = a.loss.data_ptr<T>();
    p.grad = a.grad.data_ptr<T>();
    const cudaError_t err = cuda::ngmg_prepare_launch<T>(p, stream);
    return err == cudaSuccess ? cuda::ngmg_launch<T>(p, stream) : err;
  });
  return {a.loss, a.grad};
}

}  // namespace

MIXDIFF_DEVICE_LIBRARY_IMPL(m) { m.impl("ngmg", &ngmg_cuda); }

}  // namespace mixdiff::ops
