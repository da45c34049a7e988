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
//  - full: a block takes a tile of consecutive rows (kThreads / D of them when D <= kThreads / 2, else 1,
//    grid stride); the rows' components go to shared memory, their noise eps is staged in shared memory J
//    elements at a time (J = D up to kMaxFullChunk), and a thread owns element (r, i) of the tile:
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

// The components of the tile's rows into comp_s and labels: one Philox block and a bisection over cdf each.
template <class T>
__device__ __forceinline__ void draw_components(const PriorSampleParams<T>& p, const double* cdf, int64_t base,
                                                int rows, int64_t* comp_s) {
  stage_components(base, rows, comp_s, p.labels, [&](int64_t i) {
    return prior_component(cdf, p.K, p.seed, p.offset + static_cast<uint64_t>(i));
  });
}

// tile: rows per tile; stage_cdf: cdf staged in dynamic shared memory (K doubles).
template <class T, CovType C, int V>
__global__ void __launch_bounds__(kThreads) prior_sample_separable_kernel(const PriorSampleParams<T> p, const int tile,
                                                                          const bool stage_cdf) {
  constexpr int R = kNormalsPerBlock<T>;
  __shared__ int64_t comp_s[kThreads];  // component of row base + r of the current tile
  const int tid = threadIdx.x;
  const int64_t K = p.K, D = p.D, fs = factor_size(C, D);
  const PlanarGroups<T, V> pg(D);
  const double* cdf = p.cdf;
  if (stage_cdf) {
    double* cs = smem_at<double>(0);
    for (int64_t k = tid; k < K; k += kThreads) cs[k] = p.cdf[k];
    cdf = cs;  // published by the first barrier of the tile loop
  }
  for_each_row_tile_item(
      p.n, tile, pg.G, comp_s, [&](int64_t base, int rows) { draw_components(p, cdf, base, rows, comp_s); },
      [&](int64_t i, int64_t k, int64_t g) {
        T z[R][V];
        group_normals<T, V>(p.seed, kStreamPriorNoise, p.offset + static_cast<uint64_t>(i), g, z);
        const T* mu = p.means + k * D;
        const T* f = p.factor + k * fs;
        T* xr = p.x + i * D;
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

// tile: rows per tile; J: eps elements per row staged at a time, at eps_at in dynamic shared memory.
template <class T>
__global__ void __launch_bounds__(kThreads) prior_sample_full_kernel(const PriorSampleParams<T> p, const int tile,
                                                                     const int J, const size_t eps_at) {
  constexpr int R = kNormalsPerBlock<T>;
  int64_t* comp_s = smem_at<int64_t>(0);  // [tile]
  T* eps_s = smem_at<T>(eps_at);          // [tile, J]: eps_j of row r at r * J + (j - j0)
  const int64_t D = p.D, DD = D * D, B = normal_blocks<T>(D);
  for_each_row_tile(p.n, tile, [&](int64_t base, int rows) {
    draw_components(p, p.cdf, base, rows, comp_s);
    for (int64_t j0 = 0; j0 < D; j0 += J) {
      const int64_t j1 = D - j0 < J ? D : j0 + J;
      __syncthreads();  // previous chunk's readers of eps_s are done
      // eps_{j0 .. j1-1} in normal.h's layout (element m * B + j is normal m of block j): every block of
      // the row is drawn and its normals inside the chunk kept. One chunk unless D > kMaxFullChunk, where
      // redrawing the blocks per chunk costs little next to the D^2 / 2 products.
      for_each_tile_item(rows, B, [&](int r, int64_t j) {
        T z[R];
        block_normals(philox_words(p.seed, kStreamPriorNoise, p.offset + static_cast<uint64_t>(base + r),
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
        const T* L = p.factor + k * DD + i * D;  // row i of L_k
        const T* eps = eps_s + r * J;
        T* xo = p.x + (base + r) * D + i;
        T s = j0 == 0 ? T(0) : *xo;  // partial sum over j < j0, left by this thread
        const int64_t jend = i + 1 < j1 ? i + 1 : j1;
        for (int64_t j = j0; j < jend; ++j) s += L[j] * eps[j - j0];
        *xo = i < j1 ? p.means[k * D + i] + s : s;
      });
    }
  });
}

template <class T, CovType C>
cudaError_t launch_separable(const PriorSampleParams<T>& p, unsigned sms, cudaStream_t stream) {
  const int V = planar_vector_width<T>(p.D, {p.means, C == CovType::Diag ? p.factor : nullptr, p.x});
  const int64_t G = V > 1 ? PlanarGroups<T, kNormalsPerBlock<T>>(p.D).G : PlanarGroups<T, 1>(p.D).G;
  const int tile = tile_rows(G, kTileGroups);
  const bool stage_cdf = p.K <= kCdfStageMax;
  const size_t smem = stage_cdf ? static_cast<size_t>(p.K) * sizeof(double) : 0;
  const unsigned blocks = grid_blocks(ceil_div(p.n, tile), int64_t(sms) * 16);
  if (V > 1)
    prior_sample_separable_kernel<T, C, kNormalsPerBlock<T>><<<blocks, kThreads, smem, stream>>>(p, tile, stage_cdf);
  else
    prior_sample_separable_kernel<T, C, 1><<<blocks, kThreads, smem, stream>>>(p, tile, stage_cdf);
  return cudaGetLastError();
}

}  // namespace

template <class T>
cudaError_t prior_sample_launch(const PriorSampleParams<T>& p, cudaStream_t stream) {
  if (p.n <= 0) return cudaSuccess;
  int sms = 0, optin = 0;
  MIXDIFF_CUDA_TRY(device_limits(&sms, &optin));
  switch (p.cov) {
    case CovType::Identity: return launch_separable<T, CovType::Identity>(p, sms, stream);
    case CovType::Spherical: return launch_separable<T, CovType::Spherical>(p, sms, stream);
    case CovType::Diag: return launch_separable<T, CovType::Diag>(p, sms, stream);
    default: break;
  }
  const int tile = tile_rows(p.D, kThreads);
  const int J = static_cast<int>(p.D < 1 ? 1 : p.D > kMaxFullChunk ? kMaxFullChunk : p.D);
  SmemCarver c;
  c.take<int64_t>(tile);
  const size_t eps_at = c.take<T>(int64_t(tile) * J);
  const unsigned blocks = grid_blocks(ceil_div(p.n, tile), int64_t(sms) * 16);
  prior_sample_full_kernel<T><<<blocks, kThreads, c.bytes, stream>>>(p, tile, J, eps_at);
  return cudaGetLastError();
}

template cudaError_t prior_sample_launch<float>(const PriorSampleParams<float>&, cudaStream_t);
template cudaError_t prior_sample_launch<double>(const PriorSampleParams<double>&, cudaStream_t);

}  // namespace mixdiff::cuda
