// assign_nearest on CUDA: one thread per point, centres streamed through shared memory in register tiles
// (SeparableStreamer, identity metric = gaussian.h's mahalanobis_sq over dimension chunks), nearest kept in
// reductions.h's ArgMin (ties -> lowest index, like the CPU). No [N, K] buffer.
#include "assign_nearest/assign_nearest_cuda.h"
#include "mixdiff/cuda_utils.cuh"

namespace mixdiff::cuda {

namespace {

template <class T, int DC>
using NearestStreamer = SeparableStreamer<T, CovType::Identity, DC, kCompTile<T>>;

template <class T, int DC>
__global__ void __launch_bounds__(kThreads) assign_nearest_kernel(
    const AssignNearestParams<T> p, const typename NearestStreamer<T, DC>::Layout layout) {
  NearestStreamer<T, DC> st(layout, p.x, p.centres, nullptr, p.N, p.D);
  const int64_t tiles = ceil_div(p.N, kThreads);
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int64_t base = tile * kThreads, n = base + threadIdx.x;
    ArgMin<T> best;
    st.run(base, 0, p.K, [&](int, int64_t k, T d) { best.push(d, k); });
    if (n < p.N) {
      // A row whose distances are all NaN compares with nothing: label 0, distance NaN.
      p.labels[n] = best.index < 0 ? 0 : best.index;
      p.sqdist[n] = best.index < 0 ? T(NAN) : best.value;
    }
  }
}

template <class T, int DC>
cudaError_t launch(const AssignNearestParams<T>& p, cudaStream_t stream) {
  SmemCarver c;
  const auto layout = NearestStreamer<T, DC>::carve(c);
  const unsigned blocks = grid_blocks(ceil_div(p.N, kThreads), int64_t(1) << 20);
  assign_nearest_kernel<T, DC><<<blocks, kThreads, c.bytes, stream>>>(p, layout);
  return cudaGetLastError();
}

}  // namespace

template <class T>
cudaError_t assign_nearest_launch(const AssignNearestParams<T>& p, cudaStream_t stream) {
  if (p.N <= 0) return cudaSuccess;
  switch (pick_dim_chunk<T>(p.D)) {
    case 8: return launch<T, 8>(p, stream);
    case 16: return launch<T, 16>(p, stream);
    default: return launch<T, kMaxDimChunk<T>>(p, stream);
  }
}

template cudaError_t assign_nearest_launch<float>(const AssignNearestParams<float>&, cudaStream_t);
template cudaError_t assign_nearest_launch<double>(const AssignNearestParams<double>&, cudaStream_t);

}  // namespace mixdiff::cuda
