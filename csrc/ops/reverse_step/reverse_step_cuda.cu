// reverse_step on CUDA: the CPU op's step (sampling.h: reverse_element with the coefficients cast to T;
// normal.h: z from the planar normals of stream step_stream(kStreamReverseNoise, step), row offset + i),
// drawn only when the step has noise (cz != 0) and none is given. A block takes a tile of consecutive rows
// (grid stride) and stages their labels in shared memory. Then:
//  - separable (identity, spherical, diag), memory-bound: thread items are the tile's (row, group) pairs,
//    groups of V Philox blocks (cuda_utils.cuh: PlanarGroups): each thread draws its blocks' normals (or
//    loads the given z), reads x, the model output, the component's mean and clip box and the history
//    rows where it writes x' (and x0_hat), so consecutive threads touch consecutive elements of each
//    plane, 16-byte vectors when D allows. One pass.
//  - full: the drawn z rows of the tile go to a scratch buffer first (block by block), then a thread owns
//    element (r, i): (A out)_i (out_i itself for a sample prediction) and (A z)_i = sum_{j <= i} L_ij v_j
//    in increasing j like the CPU's lower_matvec_inplace (the tile's rows are kThreads / D or 1).
#include <cstdint>

#include "reverse_step/reverse_step_cuda.h"
#include "mixdiff/cuda_utils.cuh"

namespace mixdiff::cuda {

namespace {

template <class T>
__device__ __forceinline__ void stage_labels(const ReverseStepParams<T>& p, int64_t base, int rows, int64_t* comp_s) {
  stage_components(base, rows, comp_s, nullptr, [&](int64_t i) { return p.labels[i]; });
}

// tile: rows per tile.
template <class T, CovType C, int V>
__global__ void __launch_bounds__(kThreads) reverse_step_separable_kernel(const ReverseStepParams<T> p,
                                                                           const int tile) {
  constexpr int R = kNormalsPerBlock<T>;
  __shared__ int64_t comp_s[kThreads];
  const int64_t D = p.D, fs = factor_size(C, D);
  const PlanarGroups<T, V> pg(D);
  const bool with_noise = p.c.cz != T(0);  // as the CPU: no z term (nothing drawn or read) when cz is 0 in T
  const bool draw = with_noise && p.draw_noise;
  const bool clip = p.c.clip, factor_out = p.output_in_factor;
  const int history = p.c.history;
  for_each_row_tile_item(
      p.n, tile, pg.G, comp_s, [&](int64_t base, int rows) { stage_labels(p, base, rows, comp_s); },
      [&](int64_t i, int64_t k, int64_t g) {
        T z[R][V];
        if (draw) group_normals<T, V>(p.seed, p.noise_stream, p.offset + static_cast<uint64_t>(i), g, z);
        const T* mu = p.means + k * D;
        const T* f = p.factor + k * fs;
        const int64_t row = i * D;
#pragma unroll
        for (int m = 0; m < R; ++m) {
          const int64_t e = pg.at(m, g);
          if (!pg.holds(e)) break;  // V = 1: the last plane is partial
          if (with_noise && !draw) load_elems<V>(p.noise + row + e, z[m]);
          T xv[V], ov[V], muv[V], fv[V], res[V], x0v[V];
          T lov[V] = {}, hiv[V] = {}, h1v[V] = {}, h2v[V] = {};
          load_elems<V>(p.x + row + e, xv);
          load_elems<V>(p.out + row + e, ov);
          load_elems<V>(mu + e, muv);
          load_scales<C, V>(f, e, fv);
          if (clip) {
            load_elems<V>(p.clip_lo + k * D + e, lov);
            load_elems<V>(p.clip_hi + k * D + e, hiv);
          }
          if (history >= 1) load_elems<V>(p.history[0] + row + e, h1v);
          if (history >= 2) load_elems<V>(p.history[1] + row + e, h2v);
#pragma unroll
          for (int v = 0; v < V; ++v) {
            const T scale = factor_scale(C, fv, v);
            res[v] = reverse_element(p.c, muv[v], xv[v], factor_out ? scale * ov[v] : ov[v],
                                     with_noise ? scale * z[m][v] : T(0), lov[v], hiv[v], h1v[v], h2v[v], &x0v[v]);
          }
          store_elems<V>(p.prev + row + e, res);
          if (p.x0 != nullptr) store_elems<V>(p.x0 + row + e, x0v);
        }
      });
}

template <class T>
__global__ void __launch_bounds__(kThreads) reverse_step_full_kernel(const ReverseStepParams<T> p, const int tile) {
  __shared__ int64_t comp_s[kThreads];
  const int64_t D = p.D, DD = D * D, B = normal_blocks<T>(D);
  const bool with_noise = p.c.cz != T(0);
  const bool draw = with_noise && p.draw_noise;
  const bool clip = p.c.clip, factor_out = p.output_in_factor;
  const int history = p.c.history;
  const T* zsrc = draw ? p.z_work : p.noise;
  for_each_row_tile_item(
      p.n, tile, D, comp_s,
      [&](int64_t base, int rows) {
        stage_labels(p, base, rows, comp_s);
        if (draw) {
          for_each_tile_item(rows, B, [&](int r, int64_t j) {
            store_block_normals<T>(p.seed, p.noise_stream, p.offset + static_cast<uint64_t>(base + r), j, D,
                                   p.z_work + (base + r) * D);
          });
        }
      },
      [&](int64_t n, int64_t k, int64_t i) {
        const T* L = p.factor + k * DD + i * D;  // row i of L_k
        const T* o_row = p.out + n * D;
        const T* z = with_noise ? zsrc + n * D : nullptr;
        T o = T(0), az = T(0);
        if (factor_out && with_noise) {
          for (int64_t j = 0; j <= i; ++j) {
            o += L[j] * o_row[j];
            az += L[j] * z[j];
          }
        } else if (factor_out) {
          for (int64_t j = 0; j <= i; ++j) o += L[j] * o_row[j];
        } else {
          o = o_row[i];  // a sample prediction: A is not applied
          if (with_noise)
            for (int64_t j = 0; j <= i; ++j) az += L[j] * z[j];
        }
        const int64_t el = n * D + i, kel = k * D + i;
        T x0h;
        p.prev[el] = reverse_element(p.c, p.means[kel], p.x[el], o, az, clip ? p.clip_lo[kel] : T(0),
                                     clip ? p.clip_hi[kel] : T(0), history >= 1 ? p.history[0][el] : T(0),
                                     history >= 2 ? p.history[1][el] : T(0), &x0h);
        if (p.x0 != nullptr) p.x0[el] = x0h;
      });
}

template <class T, CovType C>
cudaError_t launch_separable(const ReverseStepParams<T>& p, int64_t blocks_cap, cudaStream_t stream) {
  const int V = planar_vector_width<T>(
      p.D, {p.x, p.out, p.means, C == CovType::Diag ? p.factor : nullptr, p.noise, p.clip_lo, p.clip_hi,
            p.history[0], p.history[1], p.prev, p.x0});
  const int64_t G = V > 1 ? PlanarGroups<T, kNormalsPerBlock<T>>(p.D).G : PlanarGroups<T, 1>(p.D).G;
  const int tile = tile_rows(G, kTileGroups);
  const unsigned blocks = grid_blocks(ceil_div(p.n, tile), blocks_cap);
  if (V > 1)
    reverse_step_separable_kernel<T, C, kNormalsPerBlock<T>><<<blocks, kThreads, 0, stream>>>(p, tile);
  else
    reverse_step_separable_kernel<T, C, 1><<<blocks, kThreads, 0, stream>>>(p, tile);
  return cudaGetLastError();
}

}  // namespace

template <class T>
cudaError_t reverse_step_launch(const ReverseStepParams<T>& p, cudaStream_t stream) {
  if (p.n <= 0 || p.D <= 0) return cudaSuccess;
  int sms = 0, optin = 0;
  MIXDIFF_CUDA_TRY(device_limits(&sms, &optin));
  const int64_t blocks_cap = int64_t(sms) * 16;
  switch (p.cov) {
    case CovType::Identity: return launch_separable<T, CovType::Identity>(p, blocks_cap, stream);
    case CovType::Spherical: return launch_separable<T, CovType::Spherical>(p, blocks_cap, stream);
    case CovType::Diag: return launch_separable<T, CovType::Diag>(p, blocks_cap, stream);
    default: break;
  }
  const int tile = tile_rows(p.D, kThreads);
  const unsigned blocks = grid_blocks(ceil_div(p.n, tile), blocks_cap);
  reverse_step_full_kernel<T><<<blocks, kThreads, 0, stream>>>(p, tile);
  return cudaGetLastError();
}

template cudaError_t reverse_step_launch<float>(const ReverseStepParams<float>&, cudaStream_t);
template cudaError_t reverse_step_launch<double>(const ReverseStepParams<double>&, cudaStream_t);

}  // namespace mixdiff::cuda
