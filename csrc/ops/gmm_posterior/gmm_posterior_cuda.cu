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

template <class T, CovType C, int DC>
struct PosteriorArgs {
  typename PosteriorStreamer<T, C, DC>::Layout layout;
  size_t ll_s = 0, red = 0;  // shared: per-tile log-likelihoods [kThreads] (resp only), block-sum scratch
  const T* x;
  const T* means;
  const T* prec;
  const T* offset;
  int64_t N, K, D;
  int64_t* labels;
  T* log_lik;
  T* resp;
  double* block_ll;
};

template <class T, CovType C, int DC>
__global__ void __launch_bounds__(kThreads) gmm_posterior_kernel(const PosteriorArgs<T, C, DC> a) {
  PosteriorStreamer<T, C, DC> st(a.layout, a.x, a.means, a.prec, a.N, a.D);
  T* ll_s = smem_at<T>(a.ll_s);
  const int tid = threadIdx.x;
  const int64_t N = a.N, K = a.K;
  const int64_t tiles = ceil_div(N, kThreads);
  double ll_acc = 0.0;
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int64_t base = tile * kThreads, n = base + tid;
    T* resp_row = (a.resp != nullptr && n < N) ? a.resp + n * K : nullptr;
    LogSumExp<T> lse;
    ArgMax<T> best;
    st.run(base, 0, K, [&](int, int64_t k, T raw) {
      const T s = score_of<T, C>(raw, a.offset, a.prec, k);
      lse.push(s);
      best.push(s, k);
      if (resp_row) resp_row[k] = s;
    });
    T ll = lse.value();
    if (lse.sum != lse.sum) ll = T(NAN);  // NaN scores (all of them NaN included) give a NaN log-likelihood
    if (n < N) {
      if (a.labels) a.labels[n] = best.index < 0 ? 0 : best.index;
      a.log_lik[n] = ll;
      ll_acc += static_cast<double>(ll);
    }
    if (a.resp != nullptr) {  // block-uniform
      __syncthreads();        // previous tile's normalisation pass is done with ll_s
      ll_s[tid] = ll;
      __syncthreads();        // ll_s and this tile's raw scores in resp are visible to the whole block
      const int64_t rows = N - base < kThreads ? N - base : kThreads;
      T* block_resp = a.resp + base * K;  // rows base .. base + rows - 1 are contiguous
      if (rows * K <= INT32_MAX) {  // 32-bit index arithmetic (64-bit division is a slow subroutine)
        const uint32_t total = static_cast<uint32_t>(rows * K), k32 = static_cast<uint32_t>(K);
        for (uint32_t i = tid; i < total; i += kThreads) block_resp[i] = fast_exp(block_resp[i] - ll_s[i / k32]);
      } else {
        for (int64_t i = tid; i < rows * K; i += kThreads) block_resp[i] = fast_exp(block_resp[i] - ll_s[i / K]);
      }
    }
  }
  if (a.block_ll != nullptr) {  // block-uniform
    const double s = block_sum(ll_acc, smem_at<double>(a.red));
    if (tid == 0) a.block_ll[blockIdx.x] = s;
  }
}

template <class T, CovType C, int DC>
cudaError_t launch_posterior(const T* x, const T* means, const T* prec, const T* offset, int64_t N, int64_t K,
                             int64_t D, int64_t* labels, T* log_lik, T* resp, double* block_ll,
                             cudaStream_t stream) {
  PosteriorArgs<T, C, DC> a;
  SmemCarver c;
  if constexpr (C == CovType::Full) {
    a.layout = FullStreamer<T>::carve(c, D, K, 16 * 1024, 16 * 1024);
  } else {
    a.layout = PosteriorStreamer<T, C, DC>::carve(c);
  }
  a.ll_s = c.take<T>(kThreads);
  a.red = c.take<double>(kWarps);
  a.x = x; a.means = means; a.prec = prec; a.offset = offset;
  a.N = N; a.K = K; a.D = D;
  a.labels = labels; a.log_lik = log_lik; a.resp = resp; a.block_ll = block_ll;
  const unsigned blocks = static_cast<unsigned>(gmm_posterior_blocks(N));
  gmm_posterior_kernel<T, C, DC><<<blocks, kThreads, c.bytes, stream>>>(a);
  return cudaGetLastError();
}

template <class T, CovType C>
cudaError_t launch_dims(const T* x, const T* means, const T* prec, const T* offset, int64_t N, int64_t K, int64_t D,
                        int64_t* labels, T* log_lik, T* resp, double* block_ll, cudaStream_t stream) {
  switch (pick_dim_chunk<T>(D)) {
    case 8: return launch_posterior<T, C, 8>(x, means, prec, offset, N, K, D, labels, log_lik, resp, block_ll, stream);
    case 16: return launch_posterior<T, C, 16>(x, means, prec, offset, N, K, D, labels, log_lik, resp, block_ll, stream);
    default:
      return launch_posterior<T, C, kMaxDimChunk<T>>(x, means, prec, offset, N, K, D, labels, log_lik, resp,
                                                     block_ll, stream);
  }
}

}  // namespace

template <class T>
cudaError_t gmm_prepare_launch(CovType cov, const T* factor, const T* log_weights, int64_t K, int64_t D, T* prec,
                               T* offset, cudaStream_t stream) {
  if (K <= 0) return cudaSuccess;
  const unsigned blocks = grid_blocks(ceil_div(K, kThreads), int64_t(1) << 16);
  gmm_prepare_kernel<T><<<blocks, kThreads, 0, stream>>>(cov, factor, log_weights, K, D, prec, offset);
  return cudaGetLastError();
}

template <class T>
cudaError_t gmm_posterior_launch(CovType cov, const T* x, const T* means, const T* prec, const T* offset, int64_t N,
                                 int64_t K, int64_t D, int64_t* labels, T* log_lik, T* resp, double* block_ll,
                                 cudaStream_t stream) {
  if (N <= 0) return cudaSuccess;
  switch (cov) {
    case CovType::Identity:
      return launch_dims<T, CovType::Identity>(x, means, prec, offset, N, K, D, labels, log_lik, resp, block_ll, stream);
    case CovType::Spherical:
      return launch_dims<T, CovType::Spherical>(x, means, prec, offset, N, K, D, labels, log_lik, resp, block_ll, stream);
    case CovType::Diag:
      return launch_dims<T, CovType::Diag>(x, means, prec, offset, N, K, D, labels, log_lik, resp, block_ll, stream);
    default:  // the dimension chunk is unused by the full streamer: one instantiation
      return launch_posterior<T, CovType::Full, 8>(x, means, prec, offset, N, K, D, labels, log_lik, resp, block_ll,
                                                   stream);
  }
}

#define MIXDIFF_INSTANTIATE(T)                                                                                   \
  template cudaError_t gmm_prepare_launch<T>(CovType, const T*, const T*, int64_t, int64_t, T*, T*, cudaStream_t); \
  template cudaError_t gmm_posterior_launch<T>(CovType, const T*, const T*, const T*, const T*, int64_t, int64_t,  \
                                               int64_t, int64_t*, T*, T*, double*, cudaStream_t);
MIXDIFF_INSTANTIATE(float)
MIXDIFF_INSTANTIATE(double)
#undef MIXDIFF_INSTANTIATE

}  // namespace mixdiff::cuda
