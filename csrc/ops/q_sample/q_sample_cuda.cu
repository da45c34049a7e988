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

template <class T>
struct ForwardArgs {
  const T* x0;
  const int64_t* labels;  // null: nearest mean
  const T* signal;
  const T* noise_scale;
  const T* means;
  const T* factor;        // gaussian.h layout; null for identity
  const T* noise;         // null: drawn
  int64_t n, K, D;
  uint64_t seed, offset;
  T* x_t;
  T* eps;                 // also re-read by the full kernel: never const __restrict__ (no non-coherent loads)
  int64_t* labels_out;
  int rows;               // rows per tile
  int near_kc, near_shift;  // nearest_labels: components per round, log2 of the dimension chunk
  size_t dist_at;           // nearest_labels: its distances in shared memory (after the staged chunks at 0)
};

constexpr size_t kNearStage = 24 * 1024;  // shared memory bytes for nearest_labels' staged chunks
constexpr int kNearChunkMax = 1024;

// nearest_labels' plan for tiles of a.rows rows: kc = kThreads / rows components per round, and the
// largest power-of-two dimension chunk (from kMaxDimChunk, no larger than D needs) whose rows + kc staged
// rows, padded by one element, fit in kNearStage bytes. Returns the shared memory bytes.
template <class T>
size_t plan_nearest(ForwardArgs<T>& a) {
  a.near_kc = kThreads / a.rows;
  const int64_t lines = a.rows + (a.K < a.near_kc ? a.K : a.near_kc);
  int64_t dc = kMaxDimChunk<T>;
  while (dc < kNearChunkMax && dc < a.D && static_cast<size_t>(lines * (2 * dc + 1)) * sizeof(T) <= kNearStage) dc *= 2;
  a.near_shift = 0;
  while ((int64_t(1) << a.near_shift) < dc) ++a.near_shift;
  SmemCarver c;
  c.take<T>(lines * (dc + 1));
  a.dist_at = c.take<T>(kThreads);
  return c.bytes;
}

// The nearest mean of each of the tile's rows (ties -> lowest k, an all-NaN row -> 0), as the CPU op's
// nearest_range: sum_d (x_d - mu_kd)^2 from differences, accumulated one d at a time in increasing d
// (gaussian.h's mahalanobis_sq, identity): the CPU's operations in the CPU's order, so the distances and
// labels are the CPU's bit for bit where both fuse acc += t * t (nvcc; the AVX2 / AVX-512 clones). Rounds of
// kc components: thread p = r * kc + c sums row r against component k0 + c over dimension chunks staged
// in shared memory (coalesced loads; rows padded by one so that the per-thread reads hit distinct banks),
// the distances meet in shared memory, and thread r keeps row r's running ArgMin in increasing k. Writes
// comp_s[r] and labels_out; the caller's next barrier publishes comp_s.
template <class T>
__device__ void nearest_labels(const ForwardArgs<T>& a, int64_t base, int rows, int64_t* comp_s) {
  const int tid = threadIdx.x, kc = a.near_kc, shift = a.near_shift;
  const int dc = 1 << shift, S = dc + 1;
  const int64_t K = a.K, D = a.D;
  const int r = tid / kc, c = tid - r * kc;  // this thread's pair, when r < rows
  T* xs = smem_at<T>(0);                     // [rows, S]
  T* ms = xs + a.rows * S;                   // [kc, S]
  T* dist_s = smem_at<T>(a.dist_at);         // [kThreads]
  const T* x = a.x0 + base * D;
  ArgMin<T> best;  // row tid's nearest so far
  for (int64_t k0 = 0; k0 < K; k0 += kc) {
    const int kt = static_cast<int>(K - k0 < kc ? K - k0 : kc);
    const T* mu = a.means + k0 * D;
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
  if (tid < rows) {
    const int64_t k = best.index < 0 ? 0 : best.index;
    comp_s[tid] = k;
    a.labels_out[base + tid] = k;
  }
}

// Components of the tile's rows into comp_s (and labels_out); the caller's next barrier publishes them.
template <class T>
__device__ __forceinline__ void tile_components(const ForwardArgs<T>& a, int64_t base, int rows, int64_t* comp_s) {
  const int tid = threadIdx.x;
  if (a.labels == nullptr) {
    nearest_labels(a, base, rows, comp_s);
  } else if (tid < rows) {
    const int64_t k = a.labels[base + tid];
    comp_s[tid] = k;
    a.labels_out[base + tid] = k;
  }
}

template <class T, CovType C, int V>
__global__ void __launch_bounds__(kThreads) q_sample_separable_kernel(const ForwardArgs<T> a) {
  constexpr int R = kNormalsPerBlock<T>;
  __shared__ int64_t comp_s[kThreads];
  const int64_t D = a.D, fs = factor_size(C, D);
  const PlanarGroups<T, V> pg(D);
  const int64_t tiles = ceil_div(a.n, a.rows);
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int64_t base = tile * a.rows;
    const int rows = static_cast<int>(a.n - base < a.rows ? a.n - base : a.rows);
    __syncthreads();  // the previous tile's readers of comp_s are done
    tile_components(a, base, rows, comp_s);
    __syncthreads();
    for_each_tile_item(rows, pg.G, [&](int r, int64_t g) {
      const int64_t i = base + r, k = comp_s[r];
      const T s = a.signal[i], ns = a.noise_scale[i];
      T z[R][V];
      if (a.noise == nullptr)
        group_normals<T, V>(a.seed, kStreamForwardNoise, a.offset + static_cast<uint64_t>(i), g, z);
      const T* mu = a.means + k * D;
      const T* f = a.factor + k * fs;
      const int64_t row = i * D;
#pragma unroll
      for (int m = 0; m < R; ++m) {
        const int64_t e = pg.at(m, g);
        if (!pg.holds(e)) break;  // V = 1: the last plane is partial
        if (a.noise != nullptr) load_elems<V>(a.noise + row + e, z[m]);
        T x0v[V], muv[V], fv[V], out[V];
        load_elems<V>(a.x0 + row + e, x0v);
        load_elems<V>(mu + e, muv);
        load_scales<C, V>(f, e, fv);
#pragma unroll
        for (int v = 0; v < V; ++v) out[v] = forward_element(muv[v], x0v[v], s, ns, factor_scale(C, fv, v) * z[m][v]);
        store_elems<V>(a.eps + row + e, z[m]);
        store_elems<V>(a.x_t + row + e, out);
      }
    });
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads) q_sample_full_kernel(const ForwardArgs<T> a) {
  __shared__ int64_t comp_s[kThreads];
  const int64_t D = a.D, DD = D * D, B = normal_blocks<T>(D);
  const int64_t tiles = ceil_div(a.n, a.rows);
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int64_t base = tile * a.rows;
    const int rows = static_cast<int>(a.n - base < a.rows ? a.n - base : a.rows);
    __syncthreads();  // the previous tile's readers of comp_s are done
    tile_components(a, base, rows, comp_s);
    T* eps = a.eps + base * D;  // the tile's rows are contiguous
    if (a.noise == nullptr) {
      for_each_tile_item(rows, B, [&](int r, int64_t j) {
        store_block_normals<T>(a.seed, kStreamForwardNoise, a.offset + static_cast<uint64_t>(base + r), j, D,
                               eps + r * D);
      });
    } else {
      for (int64_t t = threadIdx.x; t < rows * D; t += kThreads) eps[t] = a.noise[base * D + t];
    }
    __syncthreads();  // comp_s and the tile's eps rows visible to the whole block
    for_each_tile_item(rows, D, [&](int r, int64_t i) {
      const int64_t n = base + r, k = comp_s[r];
      const T* L = a.factor + k * DD + i * D;  // row i of L_k
      const T* er = eps + r * D;
      T s = T(0);
      for (int64_t j = 0; j <= i; ++j) s += L[j] * er[j];
      a.x_t[n * D + i] = forward_element(a.means[k * D + i], a.x0[n * D + i], a.signal[n], a.noise_scale[n], s);
    });
  }
}

template <class T, CovType C>
cudaError_t launch_separable(ForwardArgs<T> a, int64_t blocks_cap, cudaStream_t stream) {
  const int V = planar_vector_width<T>(
      a.D, {a.x0, a.noise, a.means, C == CovType::Diag ? a.factor : nullptr, a.x_t, a.eps});
  const int64_t G = V > 1 ? PlanarGroups<T, kNormalsPerBlock<T>>(a.D).G : PlanarGroups<T, 1>(a.D).G;
  a.rows = tile_rows(G, kTileGroups);
  const size_t smem = a.labels == nullptr ? plan_nearest(a) : 0;
  const unsigned blocks = grid_blocks(ceil_div(a.n, a.rows), blocks_cap);
  if (V > 1)
    q_sample_separable_kernel<T, C, kNormalsPerBlock<T>><<<blocks, kThreads, smem, stream>>>(a);
  else
    q_sample_separable_kernel<T, C, 1><<<blocks, kThreads, smem, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace

template <class T>
cudaError_t q_sample_launch(CovType cov, const T* x0, const int64_t* labels, const T* signal, const T* noise_scale,
                            const T* means, const T* factor, const T* noise, int64_t n, int64_t K, int64_t D,
                            uint64_t seed, uint64_t offset, T* x_t, T* eps, int64_t* labels_out,
                            cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  int sms = 0, optin = 0;
  MIXDIFF_CUDA_TRY(device_limits(&sms, &optin));
  const int64_t blocks_cap = int64_t(sms) * 16;
  ForwardArgs<T> a;
  a.x0 = x0; a.labels = labels; a.signal = signal; a.noise_scale = noise_scale;
  a.means = means; a.factor = factor; a.noise = noise;
  a.n = n; a.K = K; a.D = D;
  a.seed = seed; a.offset = offset;
  a.x_t = x_t; a.eps = eps; a.labels_out = labels_out;
  a.rows = 1;
  a.near_kc = a.near_shift = 0;
  a.dist_at = 0;

  switch (cov) {
    case CovType::Identity: return launch_separable<T, CovType::Identity>(a, blocks_cap, stream);
    case CovType::Spherical: return launch_separable<T, CovType::Spherical>(a, blocks_cap, stream);
    case CovType::Diag: return launch_separable<T, CovType::Diag>(a, blocks_cap, stream);
    default: break;
  }
  a.rows = tile_rows(D, kThreads);
  const size_t smem = labels == nullptr ? plan_nearest(a) : 0;
  const unsigned blocks = grid_blocks(ceil_div(n, a.rows), blocks_cap);
  q_sample_full_kernel<T><<<blocks, kThreads, smem, stream>>>(a);
  return cudaGetLastError();
}

template cudaError_t q_sample_launch<float>(CovType, const float*, const int64_t*, const float*, const float*,
                                            const float*, const float*, const float*, int64_t, int64_t, int64_t,
                                            uint64_t, uint64_t, float*, float*, int64_t*, cudaStream_t);
template cudaError_t q_sample_launch<double>(CovType, const double*, const int64_t*, const double*, const double*,
                                             const double*, const double*, const double*, int64_t, int64_t, int64_t,
                                             uint64_t, uint64_t, double*, double*, int64_t*, cudaStream_t);

}  // namespace mixdiff::cuda
