// ngmg: CUDA dispatch (torch glue, host compiler). Kernels in ngmg_cuda.cu.
#include "common.h"
#include "ngmg/ngmg.h"
#include "ngmg/ngmg_cuda.h"

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

namespace mixdiff::ops {

namespace {

std::tuple<at::Tensor, at::Tensor> ngmg_cuda(const at::Tensor& pred, const at::Tensor& modes,
                                             const at::Tensor& weights, const at::Tensor& sigma, bool normalized,
                                             const std::string& kind) {
  const NgmgArgs a = ngmg_checked(pred, modes, weights, sigma, normalized, kind);
  // Reached through the CUDA key when any argument is on CUDA; the checks tie the others to pred's device.
  TORCH_CHECK(a.pred.is_cuda(), "mixdiff: ngmg on CUDA needs pred on a CUDA device, got ", pred.device());
  const c10::cuda::CUDAGuard guard(a.pred.device());
  const int64_t N = a.pred.size(0), D = a.pred.size(1), K = a.modes.size(0);
  if (N == 0) return {a.loss, a.grad};
  const at::Tensor ws = at::empty({2 * K}, a.pred.options());  // offsets [K] then 1 / (2 sigma^2) [K]
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(a.grad.scalar_type(), "ngmg_cuda", [&] {
    scalar_t* offset = ws.data_ptr<scalar_t>();
    scalar_t* half_prec = offset + K;
    const scalar_t* w = a.weights.data_ptr<scalar_t>();
    C10_CUDA_CHECK(cuda::ngmg_prepare_launch<scalar_t>(a.sigma.data_ptr<scalar_t>(), a.row_weights ? nullptr : w,
                                                       a.normalized, K, D, offset, half_prec, stream));
    C10_CUDA_CHECK(cuda::ngmg_launch<scalar_t>(a.kind, a.pred.data_ptr<scalar_t>(), a.modes.data_ptr<scalar_t>(),
                                               offset, half_prec, a.row_weights ? w : nullptr, N, K, D,
                                               a.loss.data_ptr<scalar_t>(), a.grad.data_ptr<scalar_t>(), stream));
  });
  return {a.loss, a.grad};
}

}  // namespace

TORCH_LIBRARY_IMPL(mixdiff, CUDA, m) { m.impl("ngmg", &ngmg_cuda); }

}  // namespace mixdiff::ops
