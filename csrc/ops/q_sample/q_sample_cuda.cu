// q_sample on CUDA: the CPU op's forward noising (sampling.h: forward_element; normal.h: the planar normals
// of stream kStreamForwardNoise, row offset + i), x_t = mu_j + signal (x0 - mu_j) + noise_scale (A_j eps).
// A block takes a tile of consecutive rows (grid stride). Per tile:
//  1. each row's component into shared memory (and labels_out): the given label, or the nearest mean
//     (nearest_labels below: the CPU's distance arithmetic in the CPU's order, so the same labels);
//  2. separable (identity, spherical, diag), memory-bound: thread items are the tile's (row, group) pairs,
//     groups of V Philox blocks (cuda_utils.cuh: PlanarGroups): each thread draws its blocks' normals (or
//     loads the given noise) and writes eps and x_t where it read x0, so consecutive threads touch
//     consecutive elements of each plane, 16-byte vectors when D allows. One pass over x0.
//     full: the tile's eps rows go to the eps output first (drawn block by block, or copied), then a
//     thread owns element (r, i): (A eps)_i = sum_{j <= i} L_ij eps_j in increasing j like the CPU's
//     lower_matvec_inplace, reading the eps row back (the tile's rows are kThreads / D or 1).
#include <cstdint>

#include "q_sample/q_sample_cuda.h"
#include "mixdiff/cuda_utils.cuh"
#include "mixdiff/sampling.h"

namespace mixdiff::cuda {

namespace {

// The launch plan derived from the parameters.
struct Plan {
  int tile = 1;                     // rows per tile
  int near_kc = 0, near_shift = 0;  // nearest_labels: components per round, log2 of the dimension chunk
  size_t dist_at = 0;               // nearest_labels: its distances in shared memory (after the staged chunks at 0)
};

constexpr size_t kNearStage = 24 * 1024;  // shared memory bytes for nearest_labels' staged chunks
constexpr int kNearChunkMax = 1024;

// The plan for tiles of `tile` rows; returns the kernels' dynamic shared memory bytes. nearest_labels (no
// labels given): kc = kThreads / tile components per round, and the largest power-of-two dimension chunk
// (from kMaxDimChunk, no larger than D needs) whose tile + kc staged rows, padded by one element, fit in
// kNearStage bytes.
template <class T>
size_t make_plan(const QSampleParams<T>& p, int tile, Plan& plan) {
  plan.tile = tile;
  if (p.labels != nullptr) return 0;
  plan.near_kc = kThreads / tile;
  const int64_t lines = tile + (p.K < plan.near_kc ? p.K : plan.near_kc);
  int64_t dc = kMaxDimChunk<T>;
  while (dc < kNearChunkMax && dc < p.D && static_cast<size_t>(lines * (2 * dc + 1)) * sizeof(T) <= kNearStage) dc *= 2;
  plan.near_shift = 0;
  while ((int64_t(1) << plan.near_shift) < dc) ++plan.near_shift;
  SmemCarver c;
  c.take<T>(lines * (dc + 1));
  plan.dist_at = c.take<T>(kThreads);
  return c.bytes;
}

// The nearest mean of each of the tile's rows (ties -> lowest k, an all-NaN row -> 0), as the CPU op's
// nearest_range: sum_d (x_d - mu_kd)^2 from differences, accumulated one d at a time in increasing d
// (gaussian.h's mahalanobis_sq, identity): the CPU's operations in the CPU's order, so the distances and
// labels are the CPU's bit for bit where both fuse acc += t * t (nvcc; the AVX2 / AVX-512 clones). Rounds of
// kc components: thread q = r * kc + c sums row r against component k0 + c over dimension chunks staged
// in shared memory (coalesced loads; rows padded by one so that the per-thread reads hit distinct banks),
// the distances meet in shared memory, and thread r keeps row r's running ArgMin in increasing k. Writes
// comp_s[r] and labels_out; the caller's next barrier publishes comp_s.
template <class T>
__device__ void nearest_labels(const QSampleParams<T>& p, const Plan& plan, int64_t base, int rows, int64_t* comp_s) {
  const int tid = threadIdx.x, kc = plan.near_kc, shift = plan.near_shift;
  const int dc = 1 << shift, S = dc + 1;
  const int64_t K = p.K, D = p.D;
  const int r = tid / kc, c = tid - r * kc;  // this thread's pair, when r < rows
  T* xs = smem_at<T>(0);                     // [tile, S]
  T* ms = xs + plan.tile * S;                // [kc, S]
  T* dist_s = smem_at<T>(plan.dist_at);      // [kThreads]
  const T* x = p.x0 + base * D;
  ArgMin<T> best;  // row tid's nearest so far
  for (int64_t k0 = 0; k0 < K; k0 += kc) {
    const int kt = static_cast<int>(K - k0 < kc ? K - k0 : kc);
    const T* mu = p.means + k0 * D;
    T acc = T(0);
    for (int64_t d0 = 0; d0 < D; d0 += dc) {
      const int dn = static_cast<int>(D - d0 < dc ? D - d0 : dc);
      __syncthreads();  // previous readers of xs and ms are done
#pragma unroll 4
      for (int t = tid; t < rows << shift; t += kThreads) {
        const int rr = t >> shift, d = t & (dc - 1);
        if (d < dn) xs[rr * S + d] = x[rr * D + d0 + d];
      }
#pragma unroll 4
      for (int t = tid; t < kt << shift; t += kThreads) {
        const int cc = t >> shift, d = t & (dc - 1);
        if (d < dn) ms[cc * S + d] = mu[cc * D + d0 + d];
      }
      __syncthreads();
      if (r < rows && c < kt) {
        const T* xr = xs + r * S;
        const T* mr = ms + c * S;
#pragma unroll 8
        for (int d = 0; d < dn; ++d) {
          const T t = xr[d] - mr[d];
          acc += t * t;
        }
      }
    }
    __syncthreads();  // previous round's readers of dist_s are done (also when D = 0)
    if (r < rows && c < kt) dist_s[tid] = acc;
    __syncthreads();
    if (tid < rows)
      for (int cc = 0; cc < kt; ++cc) best.push(dist_s[tid * kc + cc], k0 + cc);
  }
  stage_components(base, rows, comp_s, p.labels_out, [&](int64_t) { return best.index < 0 ? int64_t(0) : best.index; });
}

// Components of the tile's rows into comp_s (and labels_out); the caller's next barrier publishes them.
template <class T>
__device__ __forceinline__ void tile_components(const QSampleParams<T>& p, const Plan& plan, int64_t base, int rows,
                                                int64_t* comp_s) {
  if (p.labels == nullptr)
    nearest_labels(p, plan, base, rows, comp_s);
  else
    stage_components(base, rows, comp_s, p.labels_out, [&](int64_t i) { return p.labels[i]; });
}

template <class T, CovType C, int V>
__global__ void __launch_bounds__(kThreads) q_sample_separable_kernel(const QSampleParams<T> p, const Plan plan) {
  constexpr int R = kNormalsPerBlock<T>;
  __shared__ int64_t comp_s[kThreads];
  const int64_t D = p.D, fs = factor_size(C, D);
  const PlanarGroups<T, V> pg(D);
  for_each_row_tile_item(
      p.n, plan.tile, pg.G, comp_s, [&](int64_t base, int rows) { tile_components(p, plan, base, rows, comp_s); },
      [&](int64_t i, int64_t k, int64_t g) {
        const T s = p.signal[i], ns = p.noise_scale[i];
        T z[R][V];
        if (p.noise == nullptr)
          group_normals<T, V>(p.seed, kStreamForwardNoise, p.offset + static_cast<uint64_t>(i), g, z);
        const T* mu = p.means + k * D;
        const T* f = p.factor + k * fs;
        const int64_t row = i * D;
#pragma unroll
        for (int m = 0; m < R; ++m) {
          const int64_t e = pg.at(m, g);
          if (!pg.holds(e)) break;  // V = 1: the last plane is partial
          if (p.noise != nullptr) load_elems<V>(p.noise + row + e, z[m]);
          T x0v[V], muv[V], fv[V], out[V];
          load_elems<V>(p.x0 + row + e, x0v);
          load_elems<V>(mu + e, muv);
          load_scales<C, V>(f, e, fv);
#pragma unroll
          for (int v = 0; v < V; ++v)
            out[v] = forward_element(muv[v], x0v[v], s, ns, factor_scale(C, fv, v) * z[m][v]);
          store_elems<V>(p.eps + row + e, z[m]);
          store_elems<V>(p.x_t + row + e, out);
        }
      });
}

template <class T>
__global__ void __launch_bounds__(kThreads) q_sample_full_kernel(const QSampleParams<T> p, const Plan plan) {
  __shared__ int64_t comp_s[kThreads];
  const int64_t D = p.D, DD = D * D, B = normal_blocks<T>(D);
  for_each_row_tile_item(
      p.n, plan.tile, D, comp_s,
      [&](int64_t base, int rows) {
        tile_components(p, plan, base, rows, comp_s);
        T* eps = p.eps + base * D;  // the tile's rows are contiguous
        if (p.noise == nullptr) {
          for_each_tile_item(rows, B, [&](int r, int64_t j) {
            store_block_normals<T>(p.seed, kStreamForwardNoise, p.offset + static_cast<uint64_t>(base + r), j, D,
                                   eps + r * D);
          });
        } else {
          for (int64_t t = threadIdx.x; t < rows * D; t += kThreads) eps[t] = p.noise[base * D + t];
        }
      },
      [&](int64_t n, int64_t k, int64_t i) {
        const T* L = p.factor + k * DD + i * D;  // row i of L_k
        const T* er = p.eps + n * D;
        T s = T(0);
        for (int64_t j = 0; j <= i; ++j) s += L[j] * er[j];
        p.x_t[n * D + i] = forward_element(p.means[k * D + i], p.x0[n * D + i], p.signal[n], p.noise_scale[n], s);
      });
}

template <class T, CovType C>
cudaError_t launch_separable(const QSampleParams<T>& p, int64_t blocks_cap, cudaStream_t stream) {
  const int V = planar_vector_width<T>(
      p.D, {p.x0, p.noise, p.means, C == CovType::Diag ? p.factor : nullptr, p.x_t, p.eps});
  const int64_t G = V > 1 ? PlanarGroups<T, kNormalsPerBlock<T>>(p.D).G : PlanarGroups<T, 1>(p.D).G;
  Plan plan;
  const size_t smem = make_plan(p, tile_rows(G, kTileGroups), plan);
  const unsigned blocks = grid_blocks(ceil_div(p.n, plan.tile), blocks_cap);
  if (V > 1)
    q_sample_separable_kernel<T, C, kNormalsPerBlock<T>><<<blocks, kThreads, smem, stream>>>(p, plan);
  else
    q_sample_separable_kernel<T, C, 1><<<blocks, kThreads, smem, stream>>>(p, plan);
  return cudaGetLastError();
}

}  // namespace

template <class T>
cudaError_t q_sample_launch(const QSampleParams<T>& p, cudaStream_t stream) {
  if (p.n <= 0) return cudaSuccess;
  int sms = 0, optin = 0;
  MIXDIFF_CUDA_TRY(device_limits(&sms, &optin));
  const int64_t blocks_cap = int64_t(sms) * 16;
  switch (p.cov) {
    case CovType::Identity: return launch_separable<T, CovType::Identity>(p, blocks_cap, stream);
    case CovType::Spherical: return launch_separable<T, CovType::Spherical>(p, blocks_cap, stream);
    case CovType::Diag: return launch_separable<T, CovType::Diag>(p, blocks_cap, stream);
    default: break;
  }
  Plan plan;
  const size_t smem = make_plan(p, tile_rows(p.D, kThreads), plan);
  const unsigned blocks = grid_blocks(ceil_div(p.n, plan.tile), blocks_cap);
  q_sample_full_kernel<T><<<blocks, kThreads, smem, stream>>>(p, plan);
  return cudaGetLastError();
}

template cudaError_t q_sample_launch<float>(const QSampleParams<float>&, cudaStream_t);
template cudaError_t q_sample_launch<double>(const QSampleParams<double>&, cudaStream_t);

}  // namespace mixdiff::cuda
