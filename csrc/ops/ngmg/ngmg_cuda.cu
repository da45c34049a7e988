// ngmg on CUDA. A prologue kernel (one thread per component) forms ngmg_component's offsets and
// 1 / (2 sigma^2); the main kernel runs one thread per row over a grid stride and calls mixdiff/ngmg.h's
// ngmg_row, the CPU's arithmetic: the log-sum-exp pass, then the gradient pass in register chunks of
// kCompChunk components (one store per gradient element when K <= kCompChunk), each pass evaluating the
// distances with ngmg_sq_dist. Every thread of a warp reads the same mode element at a time (broadcast
// loads); its own row is re-read from L1.

#include "ngmg/ngmg_cuda.h"
#include "mixdiff/cuda_utils.cuh"

namespace mixdiff::cuda {

namespace {

template <class T> constexpr int kCompChunk = sizeof(T) == 4 ? 16 : 8;  // registers per thread

template <class T>
__global__ void __launch_bounds__(kThreads) ngmg_prepare_kernel(const T* __restrict__ sigma,
                                                                const T* __restrict__ shared_weights,
                                                                bool normalized, int64_t K, int64_t D,
                                                                T* __restrict__ offset, T* __restrict__ half_prec) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < K; k += int64_t(gridDim.x) * blockDim.x)
    ngmg_component<T>(sigma[k], shared_weights ? log(shared_weights[k]) : T(0), normalized, D, offset + k,
                      half_prec + k);
}

template <class T>
__global__ void __launch_bounds__(kThreads) ngmg_kernel(NgmgKind kind, NgmgMixture<T> mix, const T* __restrict__ pred,
                                                        const T* __restrict__ row_weights, int64_t N,
                                                        T* __restrict__ loss, T* __restrict__ grad) {
  const int64_t K = mix.K, D = mix.D;
  for (int64_t n = blockIdx.x * int64_t(kThreads) + threadIdx.x; n < N; n += int64_t(gridDim.x) * kThreads) {
    const T* y = pred + n * D;
    loss[n] = ngmg_row<T, kCompChunk<T>>(kind, mix, y, row_weights ? row_weights + n * K : nullptr,
                                         [&](int64_t k) { return ngmg_sq_dist(mix, y, k); }, grad + n * D);
  }
}

}  // namespace

template <class T>
cudaError_t ngmg_prepare_launch(const NgmgParams<T>& p, cudaStream_t stream) {
  if (p.K <= 0) return cudaSuccess;
  const unsigned blocks = grid_blocks(ceil_div(p.K, kThreads), int64_t(1) << 16);
  ngmg_prepare_kernel<T><<<blocks, kThreads, 0, stream>>>(p.sigma, p.shared_weights, p.normalized, p.K, p.D, p.offset,
                                                          p.half_prec);
  return cudaGetLastError();
}

template <class T>
cudaError_t ngmg_launch(const NgmgParams<T>& p, cudaStream_t stream) {
  if (p.N <= 0) return cudaSuccess;
  const NgmgMixture<T> mix{p.modes, p.offset, p.half_prec, p.K, p.D};
  const unsigned blocks = grid_blocks(ceil_div(p.N, kThreads), int64_t(1) << 20);
  ngmg_kernel<T><<<blocks, kThreads, 0, stream>>>(p.kind, mix, p.pred, p.row_weights, p.N, p.loss, p.grad);
  return cudaGetLastError();
}

#define MIXDIFF_INSTANTIATE(T)                                                     \
  template cudaError_t ngmg_prepare_launch<T>(const NgmgParams<T>&, cudaStream_t); \
  template cudaError_t ngmg_launch<T>(const NgmgParams<T>&, cudaStream_t);
MIXDIFF_INSTANTIATE(float)
MIXDIFF_INSTANTIATE(double)
#undef MIXDIFF_INSTANTIATE

}  // namespace mixdiff::cuda
