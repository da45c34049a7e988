// prior_sample on CUDA: the CPU op's draws (sampling.h: prior_component, affine_from_noise; normal.h: the
// planar normals), sample i being Philox row offset + i, so the integers are the same and the normals equal
// up to contraction (float: the same polynomial transforms) or the device's log / cos / sin (double).
// Two kernels:
//  - separable (identity, spherical, diag), memory-bound: a block takes a tile of consecutive rows (grid
//    stride), draws each row's component once into shared memory (one Philox block and a bisection over
//    the cumulative weights, staged in shared memory when K is small) and writes the labels; then thread
//    items are the tile's (row, group) pairs, groups of V Philox blocks (cuda_utils.cuh: PlanarGroups),
//    so consecutive threads write consecutive elements m * B + j of each plane m, as 16-byte vectors when
//    D allows. One pass: x is written once and nothing is read but the parameters.
//  - full: a block takes a group of `rows` consecutive rows (kThreads / D of them when D <= kThreads / 2,
//    else 1); the rows' components go to shared memory, their noise eps is staged in shared memory J
//    elements at a time (J = D up to kMaxFullChunk), and a thread owns element (r, i) of the group:
//    x_i = mu_i + sum_{j <= i} L_ij eps_j summed in increasing j like the CPU, carried across eps chunks
//    in x itself (written and re-read only by its owner thread). Upper triangle of L never read.
#include <cstdint>

#include "prior_sample/prior_sample_cuda.h"
#include "mixdiff/cuda_utils.cuh"
#include "mixdiff/sampling.h"

namespace mixdiff::cuda {

namespace {

constexpr int64_t kCdfStageMax = 1024;   // cumulative weights staged in shared memory up to this K (8 KB)
constexpr int64_t kMaxFullChunk = 2048;  // eps elements per row staged at a time by the full kernel

template <class T>
struct SampleArgs {
  const T* means;
  const T* factor;   // gaussian.h layout; null for identity
  const double* cdf;
  int64_t n, K, D;
  uint64_t seed, offset;
  T* x;
  int64_t* labels;
  int rows;          // rows per tile (separable) or per group (full)
  bool stage_cdf;    // separable: cdf staged in dynamic shared memory (K doubles)
};

template <class T, CovType C, int V>
__global__ void __launch_bounds__(kThreads) prior_sample_separable_kernel(const SampleArgs<T> a) {
  constexpr int R = kNormalsPerBlock<T>;
  __shared__ int64_t comp_s[kThreads];  // component of row base + r of the current tile
  const int tid = threadIdx.x;
  const int64_t K = a.K, D = a.D, fs = factor_size(C, D);
  const PlanarGroups<T, V> pg(D);
  const double* cdf = a.cdf;
  if (a.stage_cdf) {
    double* cs = smem_at<double>(0);
    for (int64_t k = tid; k < K; k += kThreads) cs[k] = a.cdf[k];
    cdf = cs;  // published by the first barrier of the tile loop
  }
  const int64_t tiles = ceil_div(a.n, a.rows);
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int64_t base = tile * a.rows;
    const int rows = static_cast<int>(a.n - base < a.rows ? a.n - base : a.rows);
    __syncthreads();  // staged cdf visible; the previous tile's readers of comp_s are done
    if (tid < rows) {
      const int64_t k = prior_component(cdf, K, a.seed, a.offset + static_cast<uint64_t>(base + tid));
      comp_s[tid] = k;
      a.labels[base + tid] = k;
    }
    __syncthreads();
    for_each_tile_item(rows, pg.G, [&](int r, int64_t g) {
      const int64_t i = base + r, k = comp_s[r];
      T z[R][V];
      group_normals<T, V>(a.seed, kStreamPriorNoise, a.offset + static_cast<uint64_t>(i), g, z);
      const T* mu = a.means + k * D;
      const T* f = a.factor + k * fs;
      T* xr = a.x + i * D;
#pragma unroll
      for (int m = 0; m < R; ++m) {
        const int64_t e = pg.at(m, g);
        if (!pg.holds(e)) break;  // V = 1: the last plane is partial
        T muv[V], fv[V];
        load_elems<V>(mu + e, muv);
        load_scales<C, V>(f, e, fv);
        affine_from_noise<T>(C, muv, fv, V, z[m]);
        store_elems<V>(xr + e, z[m]);
      }
    });
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads) prior_sample_full_kernel(const SampleArgs<T> a, int J, size_t eps_at) {
  constexpr int R = kNormalsPerBlock<T>;
  int64_t* comp_s = smem_at<int64_t>(0);  // [rows]
  T* eps_s = smem_at<T>(eps_at);          // [rows, J]: eps_j of row r at r * J + (j - j0)
  const int tid = threadIdx.x;
  const int64_t n = a.n, K = a.K, D = a.D, DD = D * D, B = normal_blocks<T>(D);
  const int64_t groups = ceil_div(n, a.rows);
  for (int64_t grp = blockIdx.x; grp < groups; grp += gridDim.x) {
    const int64_t base = grp * a.rows;
    const int rows = static_cast<int>(n - base < a.rows ? n - base : a.rows);
    __syncthreads();  // previous group's readers of comp_s and eps_s are done
    if (tid < rows) {
      const int64_t k = prior_component(a.cdf, K, a.seed, a.offset + static_cast<uint64_t>(base + tid));
      comp_s[tid] = k;
      a.labels[base + tid] = k;
    }
    for (int64_t j0 = 0; j0 < D; j0 += J) {
      const int64_t j1 = D - j0 < J ? D : j0 + J;
      __syncthreads();  // previous chunk's readers of eps_s are done
      // eps_{j0 .. j1-1} in normal.h's layout (element m * B + j is normal m of block j): every block of
      // the row is drawn and its normals inside the chunk kept. One chunk unless D > kMaxFullChunk, where
      // redrawing the blocks per chunk costs little next to the D^2 / 2 products.
      for_each_tile_item(rows, B, [&](int r, int64_t j) {
        T z[R];
        block_normals(philox_words(a.seed, kStreamPriorNoise, a.offset + static_cast<uint64_t>(base + r),
                                   static_cast<uint32_t>(j)),
                      z);
#pragma unroll
        for (int m = 0; m < R; ++m) {
          const int64_t e = m * B + j;
          if (e >= j0 && e < j1) eps_s[r * J + (e - j0)] = z[m];
        }
      });
      __syncthreads();
      for_each_tile_item(rows, D, [&](int r, int64_t i) {
        if (i < j0) return;  // finished in an earlier chunk
        const int64_t k = comp_s[r];
        const T* L = a.factor + k * DD + i * D;  // row i of L_k
        const T* eps = eps_s + r * J;
        T* xo = a.x + (base + r) * D + i;
        T s = j0 == 0 ? T(0) : *xo;  // partial sum over j < j0, left by this thread
        const int64_t jend = i + 1 < j1 ? i + 1 : j1;
        for (int64_t j = j0; j < jend; ++j) s += L[j] * eps[j - j0];
        *xo = i < j1 ? a.means[k * D + i] + s : s;
      });
    }
  }
}

template <class T, CovType C>
cudaError_t launch_separable(SampleArgs<T> a, unsigned sms, cudaStream_t stream) {
  const int V = planar_vector_width<T>(a.D, {a.means, C == CovType::Diag ? a.factor : nullptr, a.x});
  const int64_t G = V > 1 ? PlanarGroups<T, kNormalsPerBlock<T>>(a.D).G : PlanarGroups<T, 1>(a.D).G;
  a.rows = tile_rows(G, kTileGroups);
  a.stage_cdf = a.K <= kCdfStageMax;
  const size_t smem = a.stage_cdf ? static_cast<size_t>(a.K) * sizeof(double) : 0;
  const unsigned blocks = grid_blocks(ceil_div(a.n, a.rows), int64_t(sms) * 16);
  if (V > 1)
    prior_sample_separable_kernel<T, C, kNormalsPerBlock<T>><<<blocks, kThreads, smem, stream>>>(a);
  else
    prior_sample_separable_kernel<T, C, 1><<<blocks, kThreads, smem, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace

template <class T>
cudaError_t prior_sample_launch(CovType cov, const T* means, const T* factor, const double* cdf, int64_t n, int64_t K,
                                int64_t D, uint64_t seed, uint64_t offset, T* x, int64_t* labels,
                                cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  int sms = 0, optin = 0;
  MIXDIFF_CUDA_TRY(device_limits(&sms, &optin));
  SampleArgs<T> a;
  a.means = means; a.factor = factor; a.cdf = cdf;
  a.n = n; a.K = K; a.D = D;
  a.seed = seed; a.offset = offset;
  a.x = x; a.labels = labels;
  a.rows = 1;
  a.stage_cdf = false;

  switch (cov) {
    case CovType::Identity: return launch_separable<T, CovType::Identity>(a, sms, stream);
    case CovType::Spherical: return launch_separable<T, CovType::Spherical>(a, sms, stream);
    case CovType::Diag: return launch_separable<T, CovType::Diag>(a, sms, stream);
    default: break;
  }
  a.rows = tile_rows(D, kThreads);
  const int J = static_cast<int>(D < 1 ? 1 : D > kMaxFullChunk ? kMaxFullChunk : D);
  SmemCarver c;
  c.take<int64_t>(a.rows);
  const size_t eps_at = c.take<T>(int64_t(a.rows) * J);
  const unsigned blocks = grid_blocks(ceil_div(n, a.rows), int64_t(sms) * 16);
  prior_sample_full_kernel<T><<<blocks, kThreads, c.bytes, stream>>>(a, J, eps_at);
  return cudaGetLastError();
}

template cudaError_t prior_sample_launch<float>(CovType, const float*, const float*, const double*, int64_t, int64_t,
                                                int64_t, uint64_t, uint64_t, float*, int64_t*, cudaStream_t);
template cudaError_t prior_sample_launch<double>(CovType, const double*, const double*, const double*, int64_t,
                                                 int64_t, int64_t, uint64_t, uint64_t, double*, int64_t*,
                                                 cudaStream_t);

}  // namespace mixdiff::cuda
