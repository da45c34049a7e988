// reverse_step on CUDA: the CPU op's step (sampling.h: reverse_element with the coefficients cast to T;
// normal.h: z from the planar normals of stream step_stream(kStreamReverseNoise, step), row offset + i),
// drawn only when the step has noise (cz != 0) and none is given. A block takes a tile of consecutive rows
// (grid stride) and stages their labels in shared memory. Then:
//  - separable (identity, spherical, diag), memory-bound: thread items are the tile's (row, group) pairs,
//    groups of V Philox blocks (cuda_utils.cuh: PlanarGroups): each thread draws its blocks' normals (or
//    loads the given z), reads x and eps_hat where it writes x' (and x0_hat), so consecutive threads touch
//    consecutive elements of each plane, 16-byte vectors when D allows. One pass.
//  - full: the drawn z rows of the tile go to a scratch buffer first (block by block), then a thread owns
//    element (r, i): (A eps_hat)_i and (A z)_i = sum_{j <= i} L_ij v_j in increasing j like the CPU's
//    lower_matvec_inplace (the tile's rows are kThreads / D or 1).
#include <cstdint>

#include "reverse_step/reverse_step_cuda.h"
#include "mixdiff/cuda_utils.cuh"

namespace mixdiff::cuda {

namespace {

template <class T>
struct StepArgs {
  StepCoefficients<T> c;
  const T* x;
  const T* eps_hat;
  const int64_t* labels;
  const T* means;
  const T* factor;   // gaussian.h layout; null for identity
  const T* noise;    // given z (used when cz != 0 and not draw_noise), else null
  int64_t n, D;
  bool draw_noise;
  uint64_t seed, offset;
  uint32_t noise_stream;
  T* prev;
  T* x0;             // null: not asked for
  T* z_work;         // full and draw_noise: the drawn z, [n, D], re-read by the block (no non-coherent loads)
  int rows;          // rows per tile
};

template <class T>
__device__ __forceinline__ void stage_labels(const StepArgs<T>& a, int64_t base, int rows, int64_t* comp_s) {
  const int tid = threadIdx.x;
  if (tid < rows) comp_s[tid] = a.labels[base + tid];
}

template <class T, CovType C, int V>
__global__ void __launch_bounds__(kThreads) reverse_step_separable_kernel(const StepArgs<T> a) {
  constexpr int R = kNormalsPerBlock<T>;
  __shared__ int64_t comp_s[kThreads];
  const int64_t D = a.D, fs = factor_size(C, D);
  const PlanarGroups<T, V> pg(D);
  const bool with_noise = a.c.cz != T(0);  // as the CPU: no z term (nothing drawn or read) when cz is 0 in T
  const bool draw = with_noise && a.draw_noise;
  const int64_t tiles = ceil_div(a.n, a.rows);
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int64_t base = tile * a.rows;
    const int rows = static_cast<int>(a.n - base < a.rows ? a.n - base : a.rows);
    __syncthreads();  // the previous tile's readers of comp_s are done
    stage_labels(a, base, rows, comp_s);
    __syncthreads();
    for_each_tile_item(rows, pg.G, [&](int r, int64_t g) {
      const int64_t i = base + r, k = comp_s[r];
      T z[R][V];
      if (draw) group_normals<T, V>(a.seed, a.noise_stream, a.offset + static_cast<uint64_t>(i), g, z);
      const T* mu = a.means + k * D;
      const T* f = a.factor + k * fs;
      const int64_t row = i * D;
#pragma unroll
      for (int m = 0; m < R; ++m) {
        const int64_t e = pg.at(m, g);
        if (!pg.holds(e)) break;  // V = 1: the last plane is partial
        if (with_noise && !draw) load_elems<V>(a.noise + row + e, z[m]);
        T xv[V], ehv[V], muv[V], fv[V], out[V], x0v[V];
        load_elems<V>(a.x + row + e, xv);
        load_elems<V>(a.eps_hat + row + e, ehv);
        load_elems<V>(mu + e, muv);
        load_scales<C, V>(f, e, fv);
#pragma unroll
        for (int v = 0; v < V; ++v) {
          const T scale = factor_scale(C, fv, v);
          out[v] = reverse_element(a.c, muv[v], xv[v], scale * ehv[v], with_noise ? scale * z[m][v] : T(0), &x0v[v]);
        }
        store_elems<V>(a.prev + row + e, out);
        if (a.x0 != nullptr) store_elems<V>(a.x0 + row + e, x0v);
      }
    });
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads) reverse_step_full_kernel(const StepArgs<T> a) {
  __shared__ int64_t comp_s[kThreads];
  const int64_t D = a.D, DD = D * D, B = normal_blocks<T>(D);
  const bool with_noise = a.c.cz != T(0);
  const bool draw = with_noise && a.draw_noise;
  const T* zsrc = draw ? a.z_work : a.noise;
  const int64_t tiles = ceil_div(a.n, a.rows);
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int64_t base = tile * a.rows;
    const int rows = static_cast<int>(a.n - base < a.rows ? a.n - base : a.rows);
    __syncthreads();  // the previous tile's readers of comp_s are done
    stage_labels(a, base, rows, comp_s);
    if (draw) {
      for_each_tile_item(rows, B, [&](int r, int64_t j) {
        store_block_normals<T>(a.seed, a.noise_stream, a.offset + static_cast<uint64_t>(base + r), j, D,
                               a.z_work + (base + r) * D);
      });
    }
    __syncthreads();  // comp_s and the tile's drawn z rows visible to the whole block
    for_each_tile_item(rows, D, [&](int r, int64_t i) {
      const int64_t n = base + r, k = comp_s[r];
      const T* L = a.factor + k * DD + i * D;  // row i of L_k
      const T* eh = a.eps_hat + n * D;
      T ae = T(0), az = T(0);
      if (with_noise) {
        const T* z = zsrc + n * D;
        for (int64_t j = 0; j <= i; ++j) {
          ae += L[j] * eh[j];
          az += L[j] * z[j];
        }
      } else {
        for (int64_t j = 0; j <= i; ++j) ae += L[j] * eh[j];
      }
      T x0h;
      a.prev[n * D + i] = reverse_element(a.c, a.means[k * D + i], a.x[n * D + i], ae, az, &x0h);
      if (a.x0 != nullptr) a.x0[n * D + i] = x0h;
    });
  }
}

template <class T, CovType C>
cudaError_t launch_separable(StepArgs<T> a, int64_t blocks_cap, cudaStream_t stream) {
  const int V = planar_vector_width<T>(
      a.D, {a.x, a.eps_hat, a.means, C == CovType::Diag ? a.factor : nullptr, a.noise, a.prev, a.x0});
  const int64_t G = V > 1 ? PlanarGroups<T, kNormalsPerBlock<T>>(a.D).G : PlanarGroups<T, 1>(a.D).G;
  a.rows = tile_rows(G, kTileGroups);
  const unsigned blocks = grid_blocks(ceil_div(a.n, a.rows), blocks_cap);
  if (V > 1)
    reverse_step_separable_kernel<T, C, kNormalsPerBlock<T>><<<blocks, kThreads, 0, stream>>>(a);
  else
    reverse_step_separable_kernel<T, C, 1><<<blocks, kThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace

template <class T>
cudaError_t reverse_step_launch(CovType cov, const StepCoefficients<T>& c, const T* x, const T* eps_hat,
                                const int64_t* labels, const T* means, const T* factor, const T* noise,
                                bool draw_noise, int64_t n, int64_t D, uint64_t seed, uint64_t offset,
                                uint32_t noise_stream, T* prev, T* x0, T* z_work, cudaStream_t stream) {
  if (n <= 0 || D <= 0) return cudaSuccess;
  int sms = 0, optin = 0;
  MIXDIFF_CUDA_TRY(device_limits(&sms, &optin));
  const int64_t blocks_cap = int64_t(sms) * 16;
  StepArgs<T> a;
  a.c = c;
  a.x = x; a.eps_hat = eps_hat; a.labels = labels; a.means = means; a.factor = factor; a.noise = noise;
  a.n = n; a.D = D;
  a.draw_noise = draw_noise;
  a.seed = seed; a.offset = offset; a.noise_stream = noise_stream;
  a.prev = prev; a.x0 = x0; a.z_work = z_work;
  a.rows = 1;

  switch (cov) {
    case CovType::Identity: return launch_separable<T, CovType::Identity>(a, blocks_cap, stream);
    case CovType::Spherical: return launch_separable<T, CovType::Spherical>(a, blocks_cap, stream);
    case CovType::Diag: return launch_separable<T, CovType::Diag>(a, blocks_cap, stream);
    default: break;
  }
  a.rows = tile_rows(D, kThreads);
  const unsigned blocks = grid_blocks(ceil_div(n, a.rows), blocks_cap);
  reverse_step_full_kernel<T><<<blocks, kThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

template cudaError_t reverse_step_launch<float>(CovType, const StepCoefficients<float>&, const float*, const float*,
                                                const int64_t*, const float*, const float*, const float*, bool,
                                                int64_t, int64_t, uint64_t, uint64_t, uint32_t, float*, float*,
                                                float*, cudaStream_t);
template cudaError_t reverse_step_launch<double>(CovType, const StepCoefficients<double>&, const double*,
                                                 const double*, const int64_t*, const double*, const double*,
                                                 const double*, bool, int64_t, int64_t, uint64_t, uint64_t, uint32_t,
                                                 double*, double*, double*, cudaStream_t);

}  // namespace mixdiff::cuda
