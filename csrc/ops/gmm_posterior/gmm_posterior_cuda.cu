// gmm_posterior on CUDA. A prologue kernel (one thread per component) turns the covariance factors into
// precision factors and per-component log offsets with gaussian.h's precision_factor and
// log_gaussian_offset. The posterior kernel runs one thread per point: component scores are streamed
// through shared-memory tiles (SeparableStreamer for identity / spherical / diag, FullStreamer for full;
// both evaluate gaussian.h's mahalanobis_sq) into reductions.h's LogSumExp (online, max-shifted) and
// ArgMax. Responsibilities, when asked for, are written as raw scores on the fly and normalised by a
// coalesced pass over the tile's contiguous [rows, K] block of resp once the tile's log-likelihoods are
// known. No [N, K] buffer otherwise.

#include "gmm_posterior/gmm_posterior_cuda.h"
#include "mixdiff/cuda_utils.cuh"

namespace mixdiff::cuda {

int64_t gmm_posterior_blocks(int64_t N) { return N <= 0 ? 0 : grid_blocks(ceil_div(N, kThreads), int64_t(1) << 20); }

namespace {

template <class T>
__global__ void __launch_bounds__(kThreads) gmm_prepare_kernel(CovType cov, const T* __restrict__ factor,
                                                               const T* __restrict__ log_weights, int64_t K, int64_t D,
                                                               T* __restrict__ prec, T* __restrict__ offset) {
  const int64_t fs = factor_size(cov, D);
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < K; k += int64_t(gridDim.x) * blockDim.x) {
    // A non-positive diagonal is rejected by the glue (check_factor_positive) before this runs.
    T* pk = prec + k * fs;
    precision_factor<T>(cov, factor + k * fs, pk, D);
    offset[k] = log_gaussian_offset<T>(cov, log_weights[k], pk, D);
  }
}

template <class T, CovType C, int DC>
using PosteriorStreamer = ScoreStreamer<T, C, DC, kCompTile<T>>;

// The posterior kernel's shared memory: the streamer's pieces, per-tile log-likelihoods [kThreads] (resp
// only) and the block-sum scratch.
template <class T, CovType C, int DC>
struct PosteriorSmem {
  typename PosteriorStreamer<T, C, DC>::Layout layout;
  size_t ll_s = 0, red = 0;
};

template <class T, CovType C, int DC>
__global__ void __launch_bounds__(kThreads) gmm_posterior_kernel(const GmmPosteriorParams<T> p,
                                                                 const PosteriorSmem<T, C, DC> sm) {
  PosteriorStreamer<T, C, DC> st(sm.layout, p.x, p.means, p.prec, p.N, p.D);
  T* ll_s = smem_at<T>(sm.ll_s);
  const int tid = threadIdx.x;
  const int64_t N = p.N, K = p.K;
  const int64_t tiles = ceil_div(N, kThreads);
  double ll_acc = 0.0;
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int64_t base = tile * kThreads, n = base + tid;
    T* resp_row = (p.resp != nullptr && n < N) ? p.resp + n * K : nullptr;
    LogSumExp<T> lse;
    ArgMax<T> best;
    st.run(base, 0, K, [&](int, int64_t k, T raw) {
      const T s = score_of<T, C>(raw, p.offset, p.prec, k);
      lse.push(s);
      best.push(s, k);
      if (resp_row) resp_row[k] = s;
    });
    T ll = lse.value();
    if (lse.sum != lse.sum) ll = T(NAN);  // NaN scores (all of them NaN included) give a NaN log-likelihood
    if (n < N) {
      if (p.labels) p.labels[n] = best.index < 0 ? 0 : best.index;
      p.log_lik[n] = ll;
      ll_acc += static_cast<double>(ll);
    }
    if (p.resp != nullptr) {  // block-uniform
      __syncthreads();        // previous tile's normalisation pass is done with ll_s
      ll_s[tid] = ll;
      __syncthreads();        // ll_s and this tile's raw scores in resp are visible to the whole block
      const int64_t rows = N - base < kThreads ? N - base : kThreads;
      T* block_resp = p.resp + base * K;  // rows base .. base + rows - 1 are contiguous
      if (rows * K <= INT32_MAX) {  // 32-bit index arithmetic (64-bit division is a slow subroutine)
        const uint32_t total = static_cast<uint32_t>(rows * K), k32 = static_cast<uint32_t>(K);
        for (uint32_t i = tid; i < total; i += kThreads) block_resp[i] = fast_exp(block_resp[i] - ll_s[i / k32]);
      } else {
        for (int64_t i = tid; i < rows * K; i += kThreads) block_resp[i] = fast_exp(block_resp[i] - ll_s[i / K]);
      }
    }
  }
  if (p.block_ll != nullptr) {  // block-uniform
    const double s = block_sum(ll_acc, smem_at<double>(sm.red));
    if (tid == 0) p.block_ll[blockIdx.x] = s;
  }
}

template <class T, CovType C, int DC>
cudaError_t launch_posterior(const GmmPosteriorParams<T>& p, cudaStream_t stream) {
  PosteriorSmem<T, C, DC> sm;
  SmemCarver c;
  if constexpr (C == CovType::Full) {
    sm.layout = FullStreamer<T>::carve(c, p.D, p.K, 16 * 1024, 16 * 1024);
  } else {
    sm.layout = PosteriorStreamer<T, C, DC>::carve(c);
  }
  sm.ll_s = c.take<T>(kThreads);
  sm.red = c.take<double>(kWarps);
  const unsigned blocks = static_cast<unsigned>(gmm_posterior_blocks(p.N));
  gmm_posterior_kernel<T, C, DC><<<blocks, kThreads, c.bytes, stream>>>(p, sm);
  return cudaGetLastError();
}

template <class T, CovType C>
cudaError_t launch_dims(const GmmPosteriorParams<T>& p, cudaStream_t stream) {
  switch (pick_dim_chunk<T>(p.D)) {
    case 8: return launch_posterior<T, C, 8>(p, stream);
    case 16: return launch_posterior<T, C, 16>(p, stream);
    default: return launch_posterior<T, C, kMaxDimChunk<T>>(p, stream);
  }
}

}  // namespace

template <class T>
cudaError_t gmm_prepare_launch(const GmmPosteriorParams<T>& p, cudaStream_t stream) {
  if (p.K <= 0) return cudaSuccess;
  const unsigned blocks = grid_blocks(ceil_div(p.K, kThreads), int64_t(1) << 16);
  gmm_prepare_kernel<T><<<blocks, kThreads, 0, stream>>>(p.cov, p.factor, p.log_weights, p.K, p.D, p.prec, p.offset);
  return cudaGetLastError();
}

template <class T>
cudaError_t gmm_posterior_launch(const GmmPosteriorParams<T>& p, cudaStream_t stream) {
  if (p.N <= 0) return cudaSuccess;
  switch (p.cov) {
    case CovType::Identity: return launch_dims<T, CovType::Identity>(p, stream);
    case CovType::Spherical: return launch_dims<T, CovType::Spherical>(p, stream);
    case CovType::Diag: return launch_dims<T, CovType::Diag>(p, stream);
    default:  // the dimension chunk is unused by the full streamer: one instantiation
      return launch_posterior<T, CovType::Full, 8>(p, stream);
  }
}

#define MIXDIFF_INSTANTIATE(T)                                                            \
  template cudaError_t gmm_prepare_launch<T>(const GmmPosteriorParams<T>&, cudaStream_t); \
  template cudaError_t gmm_posterior_launch<T>(const GmmPosteriorParams<T>&, cudaStream_t);
MIXDIFF_INSTANTIATE(float)
MIXDIFF_INSTANTIATE(double)
#undef MIXDIFF_INSTANTIATE

}  // namespace mixdiff::cuda
