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
struct AssignArgs {
  typename NearestStreamer<T, DC>::Layout layout;
  const T* x;
  const T* centres;
  int64_t N, K, D;
  int64_t* labels;
  T* sqdist;
};

template <class T, int DC>
__global__ void __launch_bounds__(kThreads) assign_nearest_kernel(const AssignArgs<T, DC> a) {
  NearestStreamer<T, DC> st(a.layout, a.x, a.centres, nullptr, a.N, a.D);
  const int64_t tiles = ceil_div(a.N, kThreads);
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int64_t base = tile * kThreads, n = base + threadIdx.x;
    ArgMin<T> best;
    st.run(base, 0, a.K, [&](int, int64_t k, T d) { best.push(d, k); });
    if (n < a.N) {
      // A row whose distances are all NaN compares with nothing: label 0, distance NaN.
      a.labels[n] = best.index < 0 ? 0 : best.index;
      a.sqdist[n] = best.index < 0 ? T(NAN) : best.value;
    }
  }
}

template <class T, int DC>
cudaError_t launch(const T* x, const T* centres, int64_t N, int64_t K, int64_t D, int64_t* labels, T* sqdist,
                   cudaStream_t stream) {
  AssignArgs<T, DC> a;
  SmemCarver c;
  a.layout = NearestStreamer<T, DC>::carve(c);
  a.x = x; a.centres = centres; a.N = N; a.K = K; a.D = D; a.labels = labels; a.sqdist = sqdist;
  const unsigned blocks = grid_blocks(ceil_div(N, kThreads), int64_t(1) << 20);
  assign_nearest_kernel<T, DC><<<blocks, kThreads, c.bytes, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace

template <class T>
cudaError_t assign_nearest_launch(const T* x, const T* centres, int64_t N, int64_t K, int64_t D, int64_t* labels,
                                  T* sqdist, cudaStream_t stream) {
  if (N <= 0) return cudaSuccess;
  switch (pick_dim_chunk<T>(D)) {
    case 8: return launch<T, 8>(x, centres, N, K, D, labels, sqdist, stream);
    case 16: return launch<T, 16>(x, centres, N, K, D, labels, sqdist, stream);
    default: return launch<T, kMaxDimChunk<T>>(x, centres, N, K, D, labels, sqdist, stream);
  }
}

template cudaError_t assign_nearest_launch<float>(const float*, const float*, int64_t, int64_t, int64_t, int64_t*,
                                                  float*, cudaStream_t);
template cudaError_t assign_nearest_launch<double>(const double*, const double*, int64_t, int64_t, int64_t, int64_t*,
                                                   double*, cudaStream_t);

}  // namespace mixdiff::cuda
