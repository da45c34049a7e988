// kmeans_stats on CUDA, three kernels, deterministic (no float atomics):
//  1. assignment: per point tile the nearest centre comes from the same streamer as assign_nearest
//     (SeparableStreamer, identity metric = gaussian.h's mahalanobis_sq, reductions.h's ArgMin: ties ->
//     lowest index), so labels and sqdist match assign_nearest bit for bit. Counts: integer atomics into
//     a block-private shared histogram (when K fits) flushed with global integer atomics. Inertia: a
//     per-thread float64 sum and a fixed-tree block sum stored per block.
//  2. sums: G blocks walk the point tiles with a grid stride; a block's threads form `groups` groups of
//     `dg` threads, thread (g, d) owns dimensions d, d + dg, ... of the private slice (b, g) of a float64
//     workspace [G * groups, K, D] and adds x_n - c_label for the rows p = g, g + groups, ... of each
//     tile, in order (coalesced row reads, no atomics: each slice entry has one owner).
//  3. fixed-order sums: sum_x = sum of the slices, inertia = sum of the block partials.
#include <cstdint>

#include "kmeans_stats/kmeans_stats_cuda.h"
#include "mixdiff/cuda_utils.cuh"

namespace mixdiff::cuda {

namespace {

constexpr size_t kCountsBudget = 16 * 1024;           // shared histogram up to 2048 clusters
constexpr int64_t kSliceBudget = int64_t(1) << 24;    // float64 entries of the sums workspace (128 MB)

template <class T, int DC>
using NearestStreamer = SeparableStreamer<T, CovType::Identity, DC, kCompTile<T>>;

struct Plan {
  int64_t tiles = 0, blocks_a = 0, blocks_b = 0, groups = 1, dg = kThreads, slices = 0;
  bool smem_counts = false;
  int64_t workspace() const { return blocks_a + slices; }
};

cudaError_t make_plan(int64_t N, int64_t K, int64_t D, Plan* p) {
  int sms = 0, optin = 0;
  MIXDIFF_CUDA_TRY(device_limits(&sms, &optin));
  p->tiles = ceil_div(N, kThreads);
  p->smem_counts = static_cast<size_t>(K) * sizeof(unsigned long long) <= kCountsBudget;
  // Shared histograms are flushed once per block: a few blocks per SM; else one block per tile.
  p->blocks_a = grid_blocks(p->tiles, p->smem_counts ? int64_t(sms) * 8 : int64_t(1) << 20);
  p->dg = D < 1 ? 1 : D < kThreads ? D : kThreads;  // D = 0: nothing to sum, but keep the arithmetic valid
  p->groups = kThreads / p->dg;
  const int64_t per_block = K * D * p->groups;
  int64_t g = per_block > 0 ? kSliceBudget / per_block : p->tiles;
  if (g > int64_t(sms) * 4) g = int64_t(sms) * 4;
  if (g > p->tiles) g = p->tiles;
  p->blocks_b = g < 1 ? 1 : g;
  p->slices = p->blocks_b * p->groups * K * D;
  return cudaSuccess;
}

// The assignment kernel's shared memory: the streamer's pieces, the block-sum scratch and, when
// smem_counts, the block's histogram.
template <class T, int DC>
struct AssignSmem {
  typename NearestStreamer<T, DC>::Layout layout;
  size_t red = 0, cnt_s = 0;
  bool smem_counts = false;
};

template <class T, int DC>
__global__ void __launch_bounds__(kThreads) kmeans_assign_kernel(const KmeansStatsParams<T> p,
                                                                 const AssignSmem<T, DC> sm) {
  NearestStreamer<T, DC> st(sm.layout, p.x, p.centres, nullptr, p.N, p.D);
  const int tid = threadIdx.x;
  const int64_t N = p.N, K = p.K;
  static_assert(sizeof(unsigned long long) == sizeof(int64_t), "counts are accumulated as 64-bit unsigned");
  unsigned long long* const counts_g = reinterpret_cast<unsigned long long*>(p.counts);
  unsigned long long* counts = sm.smem_counts ? smem_at<unsigned long long>(sm.cnt_s) : counts_g;
  if (sm.smem_counts) {
    for (int64_t i = tid; i < K; i += kThreads) counts[i] = 0;
    __syncthreads();
  }
  const int64_t tiles = ceil_div(N, kThreads);
  double inertia = 0.0;
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int64_t base = tile * kThreads, n = base + tid;
    ArgMin<T> best;
    st.run(base, 0, K, [&](int, int64_t k, T d) { best.push(d, k); });
    if (n < N) {
      const int64_t label = best.index < 0 ? 0 : best.index;  // all-NaN row: label 0, distance NaN
      const T sq = best.index < 0 ? T(NAN) : best.value;
      p.labels[n] = label;
      p.sqdist[n] = sq;
      inertia += static_cast<double>(sq);
      atomicAdd(counts + label, 1ull);  // integer: order-independent
    }
  }
  const double s = block_sum(inertia, smem_at<double>(sm.red));  // contains a barrier
  if (tid == 0) p.workspace[blockIdx.x] = s;  // the block's inertia
  if (sm.smem_counts) {
    __syncthreads();  // every thread's shared atomics are done
    for (int64_t i = tid; i < K; i += kThreads)
      if (counts[i] != 0) atomicAdd(counts_g + i, counts[i]);
  }
}

// No barriers: threads outside the groups leave at once.
template <class T>
__global__ void __launch_bounds__(kThreads) kmeans_sums_kernel(const T* __restrict__ x, const T* __restrict__ centres,
                                                               const int64_t* __restrict__ labels, int64_t N, int64_t K,
                                                               int64_t D, int groups, int dg, double* __restrict__ slices) {
  const int g = threadIdx.x / dg, d0 = threadIdx.x % dg;
  if (g >= groups) return;
  double* sl = slices + (int64_t(blockIdx.x) * groups + g) * K * D;
  for (int64_t l = 0; l < K; ++l)
    for (int64_t d = d0; d < D; d += dg) sl[l * D + d] = 0.0;
  const int64_t tiles = ceil_div(N, kThreads);
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int64_t base = tile * kThreads;
    const int rows = static_cast<int>(N - base < kThreads ? N - base : kThreads);
    for (int p = g; p < rows; p += groups) {
      const int64_t n = base + p, l = labels[n];
      const T* xr = x + n * D;
      const T* cr = centres + l * D;
      double* sr = sl + l * D;
      for (int64_t d = d0; d < D; d += dg) sr[d] += static_cast<double>(xr[d] - cr[d]);
    }
  }
}

template <class T, int DC>
cudaError_t launch(const Plan& plan, const KmeansStatsParams<T>& p, cudaStream_t stream) {
  AssignSmem<T, DC> sm;
  SmemCarver c;
  sm.layout = NearestStreamer<T, DC>::carve(c);
  sm.red = c.take<double>(kWarps);
  sm.smem_counts = plan.smem_counts;
  if (plan.smem_counts) sm.cnt_s = c.take<unsigned long long>(p.K);
  kmeans_assign_kernel<T, DC><<<static_cast<unsigned>(plan.blocks_a), kThreads, c.bytes, stream>>>(p, sm);
  MIXDIFF_CUDA_TRY(cudaGetLastError());
  double* slices = p.workspace + plan.blocks_a;
  kmeans_sums_kernel<T><<<static_cast<unsigned>(plan.blocks_b), kThreads, 0, stream>>>(
      p.x, p.centres, p.labels, p.N, p.K, p.D, static_cast<int>(plan.groups), static_cast<int>(plan.dg), slices);
  MIXDIFF_CUDA_TRY(cudaGetLastError());
  const int64_t KD = p.K * p.D;
  MIXDIFF_CUDA_TRY(slice_sum_launch(slices, plan.blocks_b * plan.groups, KD, KD, p.sum_x, stream));
  return ordered_sum_launch(p.workspace, plan.blocks_a, p.inertia, stream);
}

}  // namespace

cudaError_t kmeans_stats_workspace(int64_t N, int64_t K, int64_t D, int64_t* doubles) {
  *doubles = 0;
  if (N <= 0) return cudaSuccess;
  Plan plan;
  MIXDIFF_CUDA_TRY(make_plan(N, K, D, &plan));
  *doubles = plan.workspace();
  return cudaSuccess;
}

template <class T>
cudaError_t kmeans_stats_launch(const KmeansStatsParams<T>& p, cudaStream_t stream) {
  if (p.N <= 0) return cudaSuccess;
  Plan plan;
  MIXDIFF_CUDA_TRY(make_plan(p.N, p.K, p.D, &plan));
  if (p.workspace_size < plan.workspace()) return cudaErrorInvalidValue;
  switch (pick_dim_chunk<T>(p.D)) {
    case 8: return launch<T, 8>(plan, p, stream);
    case 16: return launch<T, 16>(plan, p, stream);
    default: return launch<T, kMaxDimChunk<T>>(plan, p, stream);
  }
}

template cudaError_t kmeans_stats_launch<float>(const KmeansStatsParams<float>&, cudaStream_t);
template cudaError_t kmeans_stats_launch<double>(const KmeansStatsParams<double>&, cudaStream_t);

}  // namespace mixdiff::cuda
