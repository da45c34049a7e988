// estep_stats on CUDA, pass 2 (pass 1 is the posterior kernel of gmm_posterior_cuda.cu, which writes the
// per-point log-likelihoods to a [N] workspace and per-block sums that pass 3 adds in a fixed order).
//
// Grid: blockIdx.y walks component tiles of ks components, blockIdx.x walks point tiles of kThreads
// points with a grid stride. Per point tile a block
//   1. recomputes the scores of its ks components for its points with the same streamers as the
//      posterior (gaussian.h math) and stores g = exp(score - log_lik_n) in a [kThreads, ks] shared tile
//      (exact zeros for points past N);
//   2. nk: thread j < ks sums column j of that tile (float64);
//   3. first (and diagonal second) moments: x and shift are staged in dimension chunks of DC; thread
//      e owns the entries (j, d) = (e / DC, e % DC) of a chunk and sums g (x - s) (and g (x - s)^2) over
//      the tile's points, skipping g == 0 exactly like the CPU;
//   4. full second moments: chunk pairs (d0, e0); thread q owns the entries (j, d, e) of the pair.
// Entry ownership depends only on (j, d[, e]), so the block's float64 accumulators (in shared memory
// when they fit the budget, else directly in the block's slice of the workspace) are updated without
// atomics. Block column bx owns slice bx of a float64 workspace [G, K + K*D + K*S2] (G fixed by N, K, D,
// moments and the device, not by the component tile), and a last pass adds the slices in a fixed order:
// results are run-to-run deterministic. No [N, K] buffer exists.
#include <cstdint>

#include "estep_stats/estep_stats_cuda.h"
#include "mixdiff/cuda_utils.cuh"

namespace mixdiff::cuda {

namespace {

// Components per block (scores are kept per thread in registers, g in shared memory).
template <class T> constexpr int kEstepTile = sizeof(T) == 4 ? 16 : 8;
constexpr size_t kSmemTarget = 64 * 1024;          // above 48 KB the kernel opts in (sm_80+: at least 99 KB)
constexpr int64_t kSliceBudget = int64_t(1) << 24;  // float64 entries of the slices workspace (128 MB)

template <class T, CovType C, int DC>
using EstepStreamer = ScoreStreamer<T, C, DC, kEstepTile<T>>;

// The launch plan: the shared-memory pieces (streamer, g tile, staged x and shift chunks, accumulators) and
// the tiling derived from the parameters.
template <class T, CovType C, int DC>
struct EstepPlan {
  typename EstepStreamer<T, C, DC>::Layout layout;
  size_t gs = 0, xd = 0, xe = 0, shd = 0, she = 0, acc1 = 0, acc2 = 0;
  int ks = 1, ldg = 1;
  bool smem_acc = false;
  int64_t slice_stride = 0;  // K + K*D + K*S2 doubles per slice of the workspace [gridDim.x, slice_stride]
};

// Adds a tile's partial sum to an entry owned by this thread (shared accumulator or the block's slice).
__device__ __forceinline__ void add_entry(double* acc, int64_t idx, double v) { acc[idx] += v; }

// params, not p: p is a point of the tile below.
template <class T, CovType C, int DC>
__global__ void __launch_bounds__(kThreads) estep_stats_kernel(const EstepStatsParams<T> params,
                                                               const EstepPlan<T, C, DC> plan) {
  constexpr int XS = DC + 1;  // padded row stride of the staged x chunks
  EstepStreamer<T, C, DC> st(plan.layout, params.x, params.means, params.prec, params.N, params.D);
  T* gs = smem_at<T>(plan.gs);
  T* xd = smem_at<T>(plan.xd);
  T* xe = smem_at<T>(plan.xe);
  T* shd = smem_at<T>(plan.shd);
  T* she = smem_at<T>(plan.she);
  const int tid = threadIdx.x;
  const int64_t N = params.N, K = params.K, D = params.D;
  const int ldg = plan.ldg;
  const bool diag = params.moments == EstepMoments::Diag;
  const bool full = params.moments == EstepMoments::Full;
  const int64_t tiles = ceil_div(N, kThreads), ktiles = ceil_div(K, plan.ks);

  for (int64_t kti = blockIdx.y; kti < ktiles; kti += gridDim.y) {
    const int64_t kbeg = kti * plan.ks, kend = kbeg + plan.ks < K ? kbeg + plan.ks : K;
    const int kn = static_cast<int>(kend - kbeg);
    const int64_t n1 = kn * D, n2 = full ? kn * D * D : diag ? kn * D : 0;
    // This block's slice: nk [K], then sum_x [K, D], then sum_xx [K, S2]; this component tile's part of it.
    double* slice = params.workspace + int64_t(blockIdx.x) * plan.slice_stride;
    double* g1 = slice + K + kbeg * D;
    double* g2 = n2 > 0 ? slice + K + K * D + kbeg * D * (full ? D : 1) : slice;  // unused when n2 = 0
    double* s1 = plan.smem_acc ? smem_at<double>(plan.acc1) : g1;
    double* s2 = plan.smem_acc ? smem_at<double>(plan.acc2) : g2;
    __syncthreads();  // the previous component tile's copy-out is done reading the accumulators
    for (int64_t i = tid; i < n1; i += kThreads) s1[i] = 0.0;
    for (int64_t i = tid; i < n2; i += kThreads) s2[i] = 0.0;
    // Ordered before the owners' updates by the barrier at the top of the tile loop.
    double nk_acc = 0.0;

    for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
      const int64_t base = tile * kThreads, n = base + tid;
      const int rows = static_cast<int>(N - base < kThreads ? N - base : kThreads);
      __syncthreads();  // the previous tile's passes are done reading gs, xd, xe, shd, she
      const T ll_n = n < N ? params.log_lik[n] : T(0);
      T* grow = gs + tid * ldg;
      st.run(base, kbeg, kend, [&](int j, int64_t k, T raw) {
        const T s = score_of<T, C>(raw, params.offset, params.prec, k);
        grow[j] = n < N ? fast_exp(s - ll_n) : T(0);
      });
      __syncthreads();  // gs complete

      if (tid < kn) {
        double g = 0.0;
        for (int p = 0; p < rows; ++p) g += static_cast<double>(gs[p * ldg + tid]);
        nk_acc += g;
      }

      // First moments, and diagonal second moments.
      for (int64_t d0 = 0; d0 < D; d0 += DC) {
        __syncthreads();  // previous chunk (or the streamer, whose x buffer xd may alias) is done
        for (int i = tid; i < kThreads * DC; i += kThreads) {
          const int p = i / DC, d = i % DC;
          const int64_t gd = d0 + d;
          xd[p * XS + d] = (p < rows && gd < D) ? params.x[(base + p) * D + gd] : T(0);
        }
        for (int i = tid; i < kn * DC; i += kThreads) {
          const int j = i / DC, d = i % DC;
          const int64_t gd = d0 + d;
          shd[i] = gd < D ? params.shift[(kbeg + j) * D + gd] : T(0);
        }
        __syncthreads();
        for (int e = tid; e < kn * DC; e += kThreads) {
          const int j = e / DC, d = e % DC;
          const int64_t gd = d0 + d;
          if (gd >= D) continue;
          const T sh = shd[e];
          T a1 = T(0), a2 = T(0);
          for (int p = 0; p < rows; ++p) {
            const T g = gs[p * ldg + j];
            if (g != T(0)) {
              const T z = xd[p * XS + d] - sh;
              const T gz = g * z;
              a1 += gz;
              a2 += gz * z;
            }
          }
          const int64_t idx = j * D + gd;
          add_entry(s1, idx, static_cast<double>(a1));
          if (diag) add_entry(s2, idx, static_cast<double>(a2));
        }
      }

      // Full second moments: sum g (x_d - s_d) (x_e - s_e) over chunk pairs.
      if (full) {
        for (int64_t d0 = 0; d0 < D; d0 += DC) {
          for (int64_t e0 = 0; e0 < D; e0 += DC) {
            __syncthreads();  // previous chunk pair is done
            for (int i = tid; i < kThreads * DC; i += kThreads) {
              const int p = i / DC, d = i % DC;
              const int64_t gd = d0 + d, ge = e0 + d;
              const bool ok = p < rows;
              xd[p * XS + d] = (ok && gd < D) ? params.x[(base + p) * D + gd] : T(0);
              xe[p * XS + d] = (ok && ge < D) ? params.x[(base + p) * D + ge] : T(0);
            }
            for (int i = tid; i < kn * DC; i += kThreads) {
              const int j = i / DC, d = i % DC;
              const int64_t gd = d0 + d, ge = e0 + d;
              shd[i] = gd < D ? params.shift[(kbeg + j) * D + gd] : T(0);
              she[i] = ge < D ? params.shift[(kbeg + j) * D + ge] : T(0);
            }
            __syncthreads();
            constexpr int DC2 = DC * DC;
            for (int q = tid; q < kn * DC2; q += kThreads) {
              const int j = q / DC2, r = q % DC2, d = r / DC, e = r % DC;
              const int64_t gd = d0 + d, ge = e0 + e;
              if (gd >= D || ge >= D) continue;
              const T sd = shd[j * DC + d], se = she[j * DC + e];
              T acc = T(0);
              for (int p = 0; p < rows; ++p) {
                const T g = gs[p * ldg + j];
                if (g != T(0)) acc += (g * (xd[p * XS + d] - sd)) * (xe[p * XS + e] - se);
              }
              add_entry(s2, (j * D + gd) * D + ge, static_cast<double>(acc));
            }
          }
        }
      }
    }

    if (tid < kn) slice[kbeg + tid] = nk_acc;
    if (plan.smem_acc) {
      __syncthreads();  // all owners are done updating their entries
      for (int64_t i = tid; i < n1; i += kThreads) g1[i] = s1[i];
      for (int64_t i = tid; i < n2; i += kThreads) g2[i] = s2[i];
    }
  }
}

// Number of workspace slices (blocks along x) of the statistics pass: enough blocks to fill the device,
// at most one per point tile, and a bounded workspace. Independent of the component tile.
cudaError_t estep_plan_slices(int64_t N, int64_t K, int64_t D, EstepMoments m, int64_t* slices, int64_t* stride) {
  int sms = 0, optin = 0;
  MIXDIFF_CUDA_TRY(device_limits(&sms, &optin));
  *stride = K + K * D + (m == EstepMoments::Full ? K * D * D : m == EstepMoments::Diag ? K * D : 0);
  int64_t g = kSliceBudget / *stride;
  if (g > int64_t(sms) * 4) g = int64_t(sms) * 4;
  if (g > ceil_div(N, kThreads)) g = ceil_div(N, kThreads);
  *slices = g < 1 ? 1 : g;
  return cudaSuccess;
}

template <class T, CovType C, int DC>
cudaError_t launch_estep(const EstepStatsParams<T>& p, int64_t n_slices, int64_t stride, cudaStream_t stream) {
  int sms = 0, optin = 0;
  MIXDIFF_CUDA_TRY(device_limits(&sms, &optin));
  const size_t budget = static_cast<size_t>(optin) < kSmemTarget ? static_cast<size_t>(optin) : kSmemTarget;
  constexpr int XS = DC + 1;
  const int64_t K = p.K, D = p.D;
  const EstepMoments moments = p.moments;
  const bool full_m = moments == EstepMoments::Full;

  // Shared-memory plan for ks components per block: fixed parts, then float64 accumulators if they fit.
  EstepPlan<T, C, DC> plan;
  auto carve = [&](int ks, bool with_acc) -> size_t {
    SmemCarver c;
    plan.ks = ks;
    plan.ldg = (ks & 1) ? ks : ks + 1;  // odd row stride: the per-thread writes of g hit distinct banks
    if constexpr (C != CovType::Full) {
      plan.layout = EstepStreamer<T, C, DC>::carve(c);
      plan.xd = plan.layout.xs;  // the streamer's x chunk buffer has the same shape and is free by then
    } else {
      plan.xd = c.take<T>(int64_t(kThreads) * XS);
    }
    plan.gs = c.take<T>(int64_t(kThreads) * plan.ldg);
    plan.xe = full_m ? c.take<T>(int64_t(kThreads) * XS) : plan.xd;
    plan.shd = c.take<T>(int64_t(ks) * DC);
    plan.she = full_m ? c.take<T>(int64_t(ks) * DC) : plan.shd;
    if constexpr (C == CovType::Full) {
      const size_t left = c.bytes < budget ? budget - c.bytes : 0;
      const size_t part = left / 2 > 12 * 1024 ? 12 * 1024 : left / 2;
      plan.layout = FullStreamer<T>::carve(c, D, ks, part, part);
    }
    plan.smem_acc = with_acc;
    if (with_acc) {
      const int64_t per2 = moments == EstepMoments::Full ? D * D : moments == EstepMoments::Diag ? D : 0;
      plan.acc1 = c.take<double>(int64_t(ks) * D);
      plan.acc2 = c.take<double>(int64_t(ks) * per2);
    }
    return c.bytes;
  };

  const int ks0 = static_cast<int>(K < kEstepTile<T> ? K : kEstepTile<T>);
  size_t bytes = 0;
  bool found = false;
  for (int ks = ks0; ks >= 1 && !found; ks /= 2) {  // largest tile whose accumulators fit
    bytes = carve(ks, true);
    found = bytes <= budget;
  }
  if (!found) bytes = carve(ks0, false);  // accumulate straight into the outputs
  if (bytes > budget) return cudaErrorInvalidConfiguration;  // not reached for the supported chunk sizes
  plan.slice_stride = stride;

  const int64_t ktiles = ceil_div(K, plan.ks);
  const unsigned gy = static_cast<unsigned>(ktiles < 65535 ? ktiles : 65535);
  const unsigned gx = static_cast<unsigned>(n_slices);
  if (bytes > 48 * 1024)
    MIXDIFF_CUDA_TRY(cudaFuncSetAttribute(estep_stats_kernel<T, C, DC>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(bytes)));
  estep_stats_kernel<T, C, DC><<<dim3(gx, gy), kThreads, bytes, stream>>>(p, plan);
  return cudaGetLastError();
}

template <class T, CovType C>
cudaError_t launch_dims(const EstepStatsParams<T>& p, int64_t n_slices, int64_t stride, cudaStream_t stream) {
  switch (pick_dim_chunk<T>(p.D)) {
    case 8: return launch_estep<T, C, 8>(p, n_slices, stride, stream);
    case 16: return launch_estep<T, C, 16>(p, n_slices, stride, stream);
    default: return launch_estep<T, C, kMaxDimChunk<T>>(p, n_slices, stride, stream);
  }
}

}  // namespace

cudaError_t estep_stats_workspace(int64_t N, int64_t K, int64_t D, EstepMoments moments, int64_t* doubles) {
  *doubles = 0;
  if (N <= 0) return cudaSuccess;
  int64_t slices = 0, stride = 0;
  MIXDIFF_CUDA_TRY(estep_plan_slices(N, K, D, moments, &slices, &stride));
  *doubles = slices * stride;
  return cudaSuccess;
}

template <class T>
cudaError_t estep_stats_launch(const EstepStatsParams<T>& p, cudaStream_t stream) {
  if (p.N <= 0) return cudaSuccess;
  const int64_t K = p.K, D = p.D;
  int64_t n_slices = 0, stride = 0;
  MIXDIFF_CUDA_TRY(estep_plan_slices(p.N, K, D, p.moments, &n_slices, &stride));
  if (p.workspace_size < n_slices * stride) return cudaErrorInvalidValue;
  cudaError_t err;
  switch (p.cov) {
    case CovType::Identity: err = launch_dims<T, CovType::Identity>(p, n_slices, stride, stream); break;
    case CovType::Spherical: err = launch_dims<T, CovType::Spherical>(p, n_slices, stride, stream); break;
    case CovType::Diag: err = launch_dims<T, CovType::Diag>(p, n_slices, stride, stream); break;
    default: err = launch_dims<T, CovType::Full>(p, n_slices, stride, stream);
  }
  MIXDIFF_CUDA_TRY(err);
  // Fixed-order sums of the slices and of the posterior's per-block log-likelihoods.
  MIXDIFF_CUDA_TRY(slice_sum_launch<double>(p.workspace, n_slices, stride, K, p.nk, stream));
  MIXDIFF_CUDA_TRY(slice_sum_launch<double>(p.workspace + K, n_slices, stride, K * D, p.sum_x, stream));
  if (p.moments != EstepMoments::None)
    MIXDIFF_CUDA_TRY(slice_sum_launch<double>(p.workspace + K + K * D, n_slices, stride, stride - K - K * D, p.sum_xx,
                                              stream));
  return ordered_sum_launch<double>(p.block_ll, p.n_block_ll, p.log_lik_sum, stream);
}

template cudaError_t estep_stats_launch<float>(const EstepStatsParams<float>&, cudaStream_t);
template cudaError_t estep_stats_launch<double>(const EstepStatsParams<double>&, cudaStream_t);

}  // namespace mixdiff::cuda
