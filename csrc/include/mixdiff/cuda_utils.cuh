#pragma once
// CUDA-only helpers shared by the ops' kernels (no torch): launch sizing, shared-memory carving, block
// reductions, and the two per-point score streamers (separable covariances and full covariance) that
// evaluate the SAME header math as the CPU (gaussian.h: mahalanobis_sq; reductions.h: accumulators).
//
// Conventions: every kernel runs kThreads threads per block, one data point per thread inside a "point
// tile" of kThreads consecutive rows; blocks walk the point tiles with a grid stride, so any N works. All
// __syncthreads() calls sit in block-uniform control flow (loop bounds depend only on kernel arguments
// and blockIdx), and threads whose point is past N still take part in loads and barriers.
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "gaussian.h"
#include "normal.h"
#include "reductions.h"

namespace mixdiff::cuda {

constexpr int kThreads = 128;  // threads per block = points per tile
constexpr int kWarps = kThreads / 32;

// Components per register tile of the separable streamer (one accumulator register each).
template <class T> constexpr int kCompTile = sizeof(T) == 4 ? 32 : 16;
// Largest dimension chunk staged in shared memory per step.
template <class T> constexpr int kMaxDimChunk = sizeof(T) == 4 ? 32 : 16;

#define MIXDIFF_CUDA_TRY(expr)                 \
  do {                                         \
    const cudaError_t mixdiff_err_ = (expr);   \
    if (mixdiff_err_ != cudaSuccess) return mixdiff_err_; \
  } while (0)

// Dimension chunk for a given D: the smallest of 8, 16, kMaxDimChunk<T> that holds D (else the largest),
// so small D does not pay for padding.
template <class T>
inline int pick_dim_chunk(int64_t D) {
  if (D <= 8) return 8;
  if (D <= 16 || kMaxDimChunk<T> == 16) return 16;
  return 32;
}

MIXDIFF_HD inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Multiprocessor count and the opt-in shared-memory limit of the current device.
inline cudaError_t device_limits(int* sms, int* smem_optin) {
  int dev = 0;
  MIXDIFF_CUDA_TRY(cudaGetDevice(&dev));
  MIXDIFF_CUDA_TRY(cudaDeviceGetAttribute(sms, cudaDevAttrMultiProcessorCount, dev));
  MIXDIFF_CUDA_TRY(cudaDeviceGetAttribute(smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  return cudaSuccess;
}

// Number of blocks for a grid-stride walk over `tiles` point tiles, at most `cap`.
inline unsigned grid_blocks(int64_t tiles, int64_t cap) {
  int64_t b = tiles < cap ? tiles : cap;
  if (b < 1) b = 1;
  return static_cast<unsigned>(b);
}

// Byte offsets of the pieces of one dynamic shared-memory buffer (16-byte aligned pieces).
struct SmemCarver {
  size_t bytes = 0;
  template <class U>
  MIXDIFF_HD size_t take(int64_t count) {
    bytes = (bytes + 15) & ~static_cast<size_t>(15);
    const size_t at = bytes;
    bytes += static_cast<size_t>(count) * sizeof(U);
    return at;
  }
};

extern __shared__ __align__(16) unsigned char mixdiff_smem[];

template <class U>
__device__ __forceinline__ U* smem_at(size_t offset) {
  return reinterpret_cast<U*>(mixdiff_smem + offset);
}

// Sum of v over the block; the result is valid in thread 0. red: kWarps doubles of shared memory that
// nothing else uses. Must be called by all threads of the block.
__device__ __forceinline__ double block_sum(double v, double* red) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) red[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < kWarps ? red[lane] : 0.0;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  }
  return v;
}

// Deterministic reductions. Cross-block float sums never use atomics (their order, hence their rounding,
// would change from run to run): blocks write partials to a workspace and these kernels add them up in a
// fixed order. Templates in an anonymous namespace: each .cu gets its own copy.
namespace {

// out[0] = sum of v[0, n), one block, fixed order.
template <class U>
__global__ void __launch_bounds__(kThreads) ordered_sum_kernel(const U* __restrict__ v, int64_t n, U* __restrict__ out) {
  __shared__ double red[kWarps];
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) s += static_cast<double>(v[i]);
  s = block_sum(s, red);
  if (threadIdx.x == 0) *out = static_cast<U>(s);
}

// out[i] = sum over slices b = 0, 1, ... of ws[b * stride + i], for i < n.
template <class U>
__global__ void __launch_bounds__(kThreads) slice_sum_kernel(const U* __restrict__ ws, int64_t slices, int64_t stride,
                                                             int64_t n, U* __restrict__ out) {
  for (int64_t i = blockIdx.x * int64_t(kThreads) + threadIdx.x; i < n; i += int64_t(gridDim.x) * kThreads) {
    U s = U(0);
    for (int64_t b = 0; b < slices; ++b) s += ws[b * stride + i];
    out[i] = s;
  }
}

template <class U>
cudaError_t ordered_sum_launch(const U* v, int64_t n, U* out, cudaStream_t stream) {
  ordered_sum_kernel<U><<<1, kThreads, 0, stream>>>(v, n, out);
  return cudaGetLastError();
}

template <class U>
cudaError_t slice_sum_launch(const U* ws, int64_t slices, int64_t stride, int64_t n, U* out, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  slice_sum_kernel<U><<<grid_blocks(ceil_div(n, kThreads), 4096), kThreads, 0, stream>>>(ws, slices, stride, n, out);
  return cudaGetLastError();
}

}  // namespace

// log w_k + log N(x; mu_k, Sigma_k) from the raw distance a streamer reports, with the CPU's expression
// (cpu_tiles.h score_rows: offset - 0.5 * sq_scale * raw, sq_scale = 1/sigma^2 for spherical, else 1).
template <class T, CovType C>
__device__ __forceinline__ T score_of(T raw, const T* __restrict__ offset, const T* __restrict__ prec, int64_t k) {
  if constexpr (C == CovType::Spherical) {
    const T p = prec[k];
    return offset[k] - T(0.5) * (p * p) * raw;
  } else {
    return offset[k] - T(0.5) * raw;
  }
}

// ---------------------------------------------------------------------------------------------------
// Separable streamer (identity, spherical, diag). For the calling thread's point it reports, for every
// component k in [kbeg, kend) in increasing k, the raw distance
//   identity / spherical: sum_d (x_d - mu_kd)^2          (spherical's 1/sigma^2 is applied by score_of)
//   diag:                 sum_d ((x_d - mu_kd) P_kd)^2    (P = 1/sigma, the precision factor)
// through fn(j, k, raw) with j = k - kbeg. Components go KT at a time into KT accumulator registers; the
// dimension is walked in chunks of DC that are staged in shared memory (x rows padded to DC + 1 so that
// the per-thread row reads hit distinct banks; component chunks are read as broadcasts), each chunk's
// partial distance being gaussian.h's mahalanobis_sq over DC values. Chunks are zero-padded past D, past
// N and past kend, which adds exact zeros. When D <= DC the x tile is loaded once per point tile.
template <class T, CovType C, int DC, int KT>
struct SeparableStreamer {
  static_assert(C != CovType::Full, "full covariance uses FullStreamer");
  static constexpr bool kDiag = C == CovType::Diag;
  static constexpr CovType kChunkCov = kDiag ? CovType::Diag : CovType::Identity;
  static constexpr int kXStride = DC + 1;
  static_assert(DC * sizeof(T) % 16 == 0, "component chunk rows must stay 16-byte aligned");

  struct Layout {
    size_t xs = 0, ms = 0, ss = 0;
  };
  static Layout carve(SmemCarver& c) {
    Layout L;
    L.xs = c.take<T>(int64_t(kThreads) * kXStride);
    L.ms = c.take<T>(int64_t(KT) * DC);
    L.ss = kDiag ? c.take<T>(int64_t(KT) * DC) : L.ms;
    return L;
  }

  T* xs;
  T* ms;
  T* ss;
  const T* __restrict__ x;
  const T* __restrict__ means;
  const T* __restrict__ scale;  // diag: [K, D] precision factors; otherwise unused
  int64_t N, D;

  __device__ SeparableStreamer(const Layout& L, const T* x_, const T* means_, const T* scale_, int64_t N_, int64_t D_)
      : xs(smem_at<T>(L.xs)), ms(smem_at<T>(L.ms)), ss(smem_at<T>(L.ss)), x(x_), means(means_), scale(scale_),
        N(N_), D(D_) {}

  // The x tile of this point tile, dimensions [d0, d0 + DC): coalesced along each row.
  __device__ __forceinline__ void load_x(int64_t base, int64_t d0) {
    for (int i = threadIdx.x; i < kThreads * DC; i += kThreads) {
      const int p = i / DC, d = i % DC;
      const int64_t n = base + p, gd = d0 + d;
      xs[p * kXStride + d] = (n < N && gd < D) ? x[n * D + gd] : T(0);
    }
  }

  __device__ __forceinline__ void load_components(int64_t k0, int kt, int64_t d0) {
    for (int i = threadIdx.x; i < KT * DC; i += kThreads) {
      const int j = i / DC, d = i % DC;
      const int64_t gd = d0 + d;
      const bool ok = j < kt && gd < D;
      const int64_t at = (k0 + j) * D + gd;
      ms[i] = ok ? means[at] : T(0);
      if constexpr (kDiag) ss[i] = ok ? scale[at] : T(0);
    }
  }

  // dst[0 .. n) = src[0 .. n), src 16-byte aligned (carver pieces are; chunk rows are 16-byte multiples).
  template <int n>
  __device__ __forceinline__ static void load_row(T (&dst)[n], const T* src) {
    if constexpr (sizeof(T) == 4) {
#pragma unroll
      for (int i = 0; i < n / 4; ++i) {
        const float4 v = reinterpret_cast<const float4*>(src)[i];
        dst[4 * i] = v.x; dst[4 * i + 1] = v.y; dst[4 * i + 2] = v.z; dst[4 * i + 3] = v.w;
      }
    } else {
#pragma unroll
      for (int i = 0; i < n / 2; ++i) {
        const double2 v = reinterpret_cast<const double2*>(src)[i];
        dst[2 * i] = v.x; dst[2 * i + 1] = v.y;
      }
    }
  }

  template <class Fn>
  __device__ __forceinline__ void run(int64_t base, int64_t kbeg, int64_t kend, Fn&& fn) {
    const T* xr = xs + threadIdx.x * kXStride;
    for (int64_t k0 = kbeg; k0 < kend; k0 += KT) {
      const int kt = static_cast<int>(kend - k0 < KT ? kend - k0 : KT);
      const bool x_resident = D <= DC && k0 != kbeg;  // single chunk already staged by the previous tile
      T acc[KT];
#pragma unroll
      for (int j = 0; j < KT; ++j) acc[j] = T(0);
      for (int64_t d0 = 0; d0 < D; d0 += DC) {
        __syncthreads();  // every thread is done reading the previous chunk
        if (!x_resident) load_x(base, d0);
        load_components(k0, kt, d0);
        __syncthreads();
        // The chunk of this thread's row and of each component go to registers (component rows with 128-bit
        // broadcast loads), then gaussian.h's mahalanobis_sq runs on them over DC values.
        T xv[DC];
#pragma unroll
        for (int d = 0; d < DC; ++d) xv[d] = xr[d];
#pragma unroll
        for (int j = 0; j < KT; ++j) {
          if (j < kt) {
            T mv[DC], sv[DC];
            load_row<DC>(mv, ms + j * DC);
            if constexpr (kDiag) load_row<DC>(sv, ss + j * DC);
            acc[j] += mahalanobis_sq<T>(kChunkCov, xv, mv, kDiag ? sv : mv, DC);
          }
        }
      }
#pragma unroll
      for (int j = 0; j < KT; ++j)
        if (j < kt) fn(static_cast<int>(k0 - kbeg) + j, k0 + j, acc[j]);
    }
  }
};

// ---------------------------------------------------------------------------------------------------
// Full-covariance streamer: raw = || P_k (x - mu_k) ||^2 by gaussian.h's mahalanobis_sq, P_k the
// lower-triangular precision factor [D, D]. The point tile's x rows are staged in shared memory when
// they fit (row stride made odd), else each thread reads its row from global memory; components are
// staged ktc at a time (means then precision factors) when at least one fits, else read from global
// memory (every thread of a warp reads the same address: broadcasts). Threads past N use a valid row and
// their results are ignored by the caller.
template <class T>
struct FullStreamer {
  struct Layout {
    size_t xf = 0, cs = 0;
    int xstride = 0;   // 0: x rows not staged
    int ktc = 0;       // 0: components not staged
  };
  // x staged when its tile needs at most x_budget bytes; components staged up to comp_budget bytes.
  static Layout carve(SmemCarver& c, int64_t D, int64_t kmax, size_t x_budget, size_t comp_budget) {
    Layout L;
    const int64_t stride = (D & 1) ? D : D + 1;
    if (static_cast<size_t>(kThreads * stride) * sizeof(T) <= x_budget) {
      L.xstride = static_cast<int>(stride);
      L.xf = c.take<T>(kThreads * stride);
    }
    const size_t per = static_cast<size_t>(D + D * D + (D == 0)) * sizeof(T);  // D = 0: avoid dividing by 0
    int64_t ktc = static_cast<int64_t>(comp_budget / per);
    if (ktc > kmax) ktc = kmax;
    if (ktc > 64) ktc = 64;
    if (ktc >= 1) {
      L.ktc = static_cast<int>(ktc);
      L.cs = c.take<T>(ktc * (D + D * D));
    }
    return L;
  }

  T* xf;
  T* cs;
  int xstride, ktc;
  const T* __restrict__ x;
  const T* __restrict__ means;
  const T* __restrict__ prec;  // [K, D, D]
  int64_t N, D;

  __device__ FullStreamer(const Layout& L, const T* x_, const T* means_, const T* prec_, int64_t N_, int64_t D_)
      : xf(smem_at<T>(L.xf)), cs(smem_at<T>(L.cs)), xstride(L.xstride), ktc(L.ktc), x(x_), means(means_),
        prec(prec_), N(N_), D(D_) {}

  template <class Fn>
  __device__ __forceinline__ void run(int64_t base, int64_t kbeg, int64_t kend, Fn&& fn) {
    const int tid = threadIdx.x;
    const int64_t n = base + tid;
    const T* xr;
    if (xstride > 0) {
      const int64_t rows = N - base < kThreads ? N - base : kThreads;
      __syncthreads();  // previous readers of xf are done
      const T* src = x + base * D;  // the tile's rows are contiguous: fully coalesced
      for (int64_t i = tid; i < rows * D; i += kThreads) {
        const int64_t p = i / D;
        xf[p * xstride + (i - p * D)] = src[i];
      }
      __syncthreads();
      xr = xf + static_cast<int64_t>(n < N ? tid : 0) * xstride;  // row 0 exists: rows >= 1
    } else {
      xr = x + (n < N ? n : N - 1) * D;
    }
    const int64_t step = ktc > 0 ? ktc : kend - kbeg;
    const int64_t DD = D * D;
    for (int64_t k0 = kbeg; k0 < kend; k0 += step) {
      const int64_t kt = kend - k0 < step ? kend - k0 : step;
      if (ktc > 0) {
        __syncthreads();  // previous readers of cs are done
        for (int64_t i = tid; i < kt * D; i += kThreads) cs[i] = means[k0 * D + i];
        T* cp = cs + static_cast<int64_t>(ktc) * D;
        for (int64_t i = tid; i < kt * DD; i += kThreads) cp[i] = prec[k0 * DD + i];
        __syncthreads();
      }
      for (int64_t j = 0; j < kt; ++j) {
        const int64_t k = k0 + j;
        const T* mu = ktc > 0 ? cs + j * D : means + k * D;
        const T* P = ktc > 0 ? cs + static_cast<int64_t>(ktc) * D + j * DD : prec + k * DD;
        fn(static_cast<int>(k - kbeg), k, mahalanobis_sq<T>(CovType::Full, xr, mu, P, D));
      }
    }
  }
};

// The streamer that scores covariance type C: separable types stream KT components per register tile in
// dimension chunks of DC; full covariance has its own.
template <class T, CovType C, int DC, int KT>
using ScoreStreamer = std::conditional_t<C == CovType::Full, FullStreamer<T>,
                                         SeparableStreamer<T, C == CovType::Full ? CovType::Identity : C, DC, KT>>;


// ---------------------------------------------------------------------------------------------------
// Noise ops (prior_sample, q_sample, reverse_step): memory-bound element-wise kernels over normal.h's
// planar layout, where element m * B + j of a row is normal m of Philox block j (B blocks, R normals
// each). A thread item is a "group" g of V consecutive blocks j = gV .. gV + V - 1, so in every plane m
// it owns the V contiguous elements from m * B + gV: consecutive threads take consecutive groups and
// every load and store is coalesced, a 16-byte vector when V > 1. V > 1 needs D to be a multiple of R V
// (then B = D / R is a multiple of V: every plane is full and every group complete) and 16-byte aligned
// arrays; V = 1 handles any D, the last plane being partial.
template <class T, int V>
struct PlanarGroups {
  static constexpr int R = kNormalsPerBlock<T>;
  int64_t D, B, G;  // elements, Philox blocks and groups per row
  MIXDIFF_HD explicit PlanarGroups(int64_t D_) : D(D_), B(normal_blocks<T>(D_)), G(ceil_div(B, V)) {}
  // First element of group g in plane m, and whether the row has it (always, when V > 1).
  MIXDIFF_HD int64_t at(int m, int64_t g) const { return m * B + g * V; }
  MIXDIFF_HD bool holds(int64_t e) const { return V > 1 || e < D; }
};

// The vector width for rows of D elements whose arrays (null ones are skipped) must be aligned for it.
template <class T>
inline int planar_vector_width(int64_t D, std::initializer_list<const void*> arrays) {
  constexpr int V = kNormalsPerBlock<T>;  // 4 floats or 2 doubles: 16 bytes
  if (D % (kNormalsPerBlock<T> * V) != 0) return 1;
  for (const void* p : arrays)
    if (reinterpret_cast<uintptr_t>(p) % (V * sizeof(T)) != 0) return 1;
  return V;
}

// z[m][v] = normal m of block gV + v of `row` (normal.h's block_normals: the CPU's numbers).
template <class T, int V>
__device__ __forceinline__ void group_normals(uint64_t seed, uint32_t stream, uint64_t row, int64_t g,
                                              T (&z)[kNormalsPerBlock<T>][V]) {
#pragma unroll
  for (int v = 0; v < V; ++v) {
    T b[kNormalsPerBlock<T>];
    block_normals(philox_words(seed, stream, row, static_cast<uint32_t>(g * V + v)), b);
#pragma unroll
    for (int m = 0; m < kNormalsPerBlock<T>; ++m) z[m][v] = b[m];
  }
}

// V consecutive elements at p (16-byte aligned when V > 1): one vector access.
template <int V, class T>
__device__ __forceinline__ void load_elems(const T* p, T (&v)[V]) {
  if constexpr (V == 1) {
    v[0] = *p;
  } else if constexpr (sizeof(T) == 4) {
    static_assert(V == 4, "float vectors are float4");
    const float4 w = *reinterpret_cast<const float4*>(p);
    v[0] = w.x; v[1] = w.y; v[2] = w.z; v[3] = w.w;
  } else {
    static_assert(V == 2, "double vectors are double2");
    const double2 w = *reinterpret_cast<const double2*>(p);
    v[0] = w.x; v[1] = w.y;
  }
}
template <int V, class T>
__device__ __forceinline__ void store_elems(T* p, const T (&v)[V]) {
  if constexpr (V == 1) {
    *p = v[0];
  } else if constexpr (sizeof(T) == 4) {
    static_assert(V == 4, "float vectors are float4");
    *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
  } else {
    static_assert(V == 2, "double vectors are double2");
    *reinterpret_cast<double2*>(p) = make_double2(v[0], v[1]);
  }
}

// What sampling.h's factor_scale(C, fv, v) reads for the V elements from e of a separable factor f (the
// component's row): diag sigma_d (fv[v]), spherical sigma (fv[0]), identity nothing.
template <CovType C, int V, class T>
__device__ __forceinline__ void load_scales(const T* f, int64_t e, T (&fv)[V]) {
  if constexpr (C == CovType::Diag) load_elems<V>(f + e, fv);
  else if constexpr (C == CovType::Spherical) fv[0] = f[0];
}

// Row tiles: a block takes `rows` consecutive rows (at most kThreads, so that per-row work is one
// thread's), sized to about `target` thread items, items_per_row items each.
inline int tile_rows(int64_t items_per_row, int64_t target) {
  const int64_t r = items_per_row > 0 ? target / items_per_row : kThreads;
  return static_cast<int>(r < 1 ? 1 : r > kThreads ? kThreads : r);
}
constexpr int64_t kTileGroups = 8 * kThreads;  // groups per tile of the element-wise noise kernels

// fn(r, c) for every item c < per_row of every row r < rows of a tile, t = r * per_row + c striding by
// kThreads: consecutive threads take consecutive items.
template <class Fn>
__device__ __forceinline__ void for_each_tile_item(int rows, int64_t per_row, Fn&& fn) {
  const int64_t total = rows * per_row;
  for (int64_t t = threadIdx.x; t < total; t += kThreads) {
    int r;
    if (total <= 0xffffffff) {
      r = static_cast<int>(static_cast<uint32_t>(t) / static_cast<uint32_t>(per_row));
    } else {
      r = static_cast<int>(t / per_row);
    }
    fn(r, t - r * per_row);
  }
}

// The row tiles of the noise kernels: block b takes tiles b, b + gridDim.x, ... of `tile` consecutive rows
// of n and calls fn(base, rows) for each (rows: the tile's row count) after a barrier (the previous tile's
// readers of shared memory are done).
template <class Fn>
__device__ __forceinline__ void for_each_row_tile(int64_t n, int tile, Fn&& fn) {
  const int64_t tiles = ceil_div(n, tile);
  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const int64_t base = t * tile;
    const int rows = static_cast<int>(n - base < tile ? n - base : tile);
    __syncthreads();
    fn(base, rows);
  }
}

// The common tile of the noise kernels: stage(base, rows) writes comp_s[r], the component of row base + r
// (and whatever else the items read), a barrier publishes it, then item(i, k, c) runs for every item
// c < per_row of every row i = base + r of the tile, k = comp_s[r] (for_each_tile_item).
template <class Stage, class Item>
__device__ __forceinline__ void for_each_row_tile_item(int64_t n, int tile, int64_t per_row, const int64_t* comp_s,
                                                       Stage&& stage, Item&& item) {
  for_each_row_tile(n, tile, [&](int64_t base, int rows) {
    stage(base, rows);
    __syncthreads();
    for_each_tile_item(rows, per_row, [&](int r, int64_t c) { item(base + r, comp_s[r], c); });
  });
}

// Thread r < rows: comp_s[r] = k_of(base + r), the component of the tile's row base + r, also stored to
// labels_out[base + r] unless labels_out is null.
template <class KOf>
__device__ __forceinline__ void stage_components(int64_t base, int rows, int64_t* comp_s, int64_t* labels_out,
                                                 KOf&& k_of) {
  const int r = threadIdx.x;
  if (r < rows) {
    const int64_t k = k_of(base + r);
    comp_s[r] = k;
    if (labels_out != nullptr) labels_out[base + r] = k;
  }
}

}  // namespace mixdiff::cuda
