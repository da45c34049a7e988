// prior_sample on CUDA: the CPU op's draws (sampling.h: prior_component, prior_noise, affine_from_noise),
// sample i being Philox row offset + i, so the integers are the same and the normals equal up to the
// rounding of the device's logf / cosf / sinf. Two kernels:
//  - separable (identity, spherical, diag), memory-bound: the output is the flat sequence of element pairs
//    (row i, pair p) = (i, elements 2p, 2p + 1), q = i * P + p with P = ceil(D / 2). A block takes chunks of
//    kChunkPairs consecutive pairs (grid stride); it first draws the component of every row the chunk
//    touches, once per row, into shared memory (one Philox block and a bisection over the cumulative
//    weights, staged in shared memory when K is small), then each thread draws whole pairs q = q0 + j *
//    kThreads + tid: consecutive threads write consecutive pairs, so the stores of x are coalesced (vector
//    stores of two elements when D is even). A row's label is written by the chunk that holds its first pair.
//  - full: a block takes a group of R consecutive rows (R = kThreads / D when D <= kThreads / 2, else 1);
//    the rows' components go to shared memory, their noise eps is staged in shared memory J elements at a
//    time (J = D when D is at most kMaxFullChunk), and thread t owns element (r, i) = (t / D, t % D) of the
//    group: x_i = mu_i + sum_{j <= i} L_ij eps_j summed in increasing j like the CPU, carried across
//    eps chunks in x itself (written and re-read only by its owner thread). Upper triangle of L never read.
#include <cstdint>

#include "prior_sample/prior_sample_cuda.h"
#include "mixdiff/cuda_utils.cuh"
#include "mixdiff/sampling.h"

namespace mixdiff::cuda {

namespace {

constexpr int kPairsPerThread = 8;
constexpr int64_t kChunkPairs = int64_t(kThreads) * kPairsPerThread;  // pairs per chunk (also max rows per chunk)
constexpr int64_t kCdfStageMax = 1024;     // cumulative weights staged in shared memory up to this K (8 KB)
constexpr int64_t kMaxFullChunk = 2048;    // eps elements per row staged at a time by the full kernel (even)

template <class T> struct Pair;
template <> struct Pair<float> { using type = float2; };
template <> struct Pair<double> { using type = double2; };

template <class T>
struct SampleArgs {
  const T* means;
  const T* factor;   // gaussian.h layout; null for identity
  const double* cdf;
  int64_t n, K, D;
  int64_t P;         // separable: pairs per row, max(ceil(D / 2), 1) (D = 0: one empty pair, labels only)
  uint64_t seed, offset;
  T* x;
  int64_t* labels;
  bool stage_cdf;    // separable: cdf staged in dynamic shared memory (K doubles)
};

template <class T, CovType C, bool kVec>
__global__ void __launch_bounds__(kThreads) prior_sample_separable_kernel(const SampleArgs<T> a) {
  __shared__ int64_t comp_s[kChunkPairs];  // component of row r0 + rr of the current chunk
  const int tid = threadIdx.x;
  const int64_t K = a.K, D = a.D, P = a.P, fs = factor_size(C, D);
  const double* cdf = a.cdf;
  if (a.stage_cdf) {
    double* cs = smem_at<double>(0);
    for (int64_t k = tid; k < K; k += kThreads) cs[k] = a.cdf[k];
    cdf = cs;  // published by the first barrier of the chunk loop
  }
  const int64_t total = a.n * P, chunks = ceil_div(total, kChunkPairs);
  for (int64_t c = blockIdx.x; c < chunks; c += gridDim.x) {
    const int64_t q0 = c * kChunkPairs;
    const int64_t q1 = total - q0 < kChunkPairs ? total : q0 + kChunkPairs;
    const int64_t r0 = q0 / P, nr = (q1 - 1) / P - r0 + 1;  // rows touched: nr <= kChunkPairs
    __syncthreads();  // staged cdf visible; previous chunk's readers of comp_s are done
    for (int64_t rr = tid; rr < nr; rr += kThreads) {
      const int64_t i = r0 + rr;
      const int64_t k = prior_component(cdf, K, a.seed, a.offset + static_cast<uint64_t>(i));
      comp_s[rr] = k;
      if (i * P >= q0) a.labels[i] = k;  // the row's first pair is in this chunk
    }
    __syncthreads();
    const int64_t first = r0 * P;  // q - first < kChunkPairs + P
#pragma unroll
    for (int j = 0; j < kPairsPerThread; ++j) {
      const int64_t q = q0 + j * kThreads + tid;
      if (q >= q1) break;
      const uint64_t local = static_cast<uint64_t>(q - first);
      int64_t rr, p;
      if (P <= 0x7fffffff) {  // local < 2^31 + kChunkPairs: 32-bit division
        const uint32_t l32 = static_cast<uint32_t>(local), p32 = static_cast<uint32_t>(P);
        const uint32_t r32 = l32 / p32;
        rr = r32;
        p = l32 - r32 * p32;
      } else {
        rr = static_cast<int64_t>(local / static_cast<uint64_t>(P));
        p = static_cast<int64_t>(local) - rr * P;
      }
      const int64_t i = r0 + rr, k = comp_s[rr], e = 2 * p;
      const uint64_t row = a.offset + static_cast<uint64_t>(i);
      const T* mu = a.means + k * D + e;
      const T* f = a.factor + k * fs + (C == CovType::Diag ? e : 0);
      T* dst = a.x + i * D + e;
      // The header calls with a compile-time element count (2, or 1 for the last pair of an odd D) keep
      // v in registers. D = 0: nothing to draw (the chunk only wrote labels).
      T v[2];
      if (kVec || D - e >= 2) {
        prior_noise<T>(a.seed, row, e, e + 2, v);
        affine_from_noise<T>(C, mu, f, 2, v);
        if constexpr (kVec) {
          using V = typename Pair<T>::type;
          *reinterpret_cast<V*>(dst) = V{v[0], v[1]};
        } else {
          dst[0] = v[0];
          dst[1] = v[1];
        }
      } else if (D - e == 1) {
        prior_noise<T>(a.seed, row, e, e + 1, v);
        affine_from_noise<T>(C, mu, f, 1, v);
        dst[0] = v[0];
      }
    }
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads) prior_sample_full_kernel(const SampleArgs<T> a, int R, int J,
                                                                     size_t eps_at) {
  int64_t* comp_s = smem_at<int64_t>(0);  // [R]
  T* eps_s = smem_at<T>(eps_at);          // [R, J]: eps_j of row r at r * J + (j - j0)
  const int tid = threadIdx.x;
  const int64_t n = a.n, K = a.K, D = a.D, DD = D * D;
  const int64_t half = J / 2;
  const int64_t groups = ceil_div(n, R);
  for (int64_t g = blockIdx.x; g < groups; g += gridDim.x) {
    const int64_t base = g * R;
    const int64_t rows = n - base < R ? n - base : R;
    __syncthreads();  // previous group's readers of comp_s and eps_s are done
    if (tid < rows) {
      const int64_t k = prior_component(a.cdf, K, a.seed, a.offset + static_cast<uint64_t>(base + tid));
      comp_s[tid] = k;
      a.labels[base + tid] = k;
    }
    for (int64_t j0 = 0; j0 < D; j0 += J) {
      const int64_t j1 = D - j0 < J ? D : j0 + J;
      __syncthreads();  // comp_s visible; previous chunk's readers of eps_s are done
      for (int64_t t = tid; t < rows * half; t += kThreads) {
        const int64_t r = t / half, e = j0 + 2 * (t - r * half);  // j0 is a multiple of J: e is even
        if (e < j1)
          prior_noise<T>(a.seed, a.offset + static_cast<uint64_t>(base + r), e, j1 - e < 2 ? j1 : e + 2,
                         eps_s + r * J + (e - j0));
      }
      __syncthreads();
      for (int64_t t = tid; t < rows * D; t += kThreads) {
        const int64_t r = t / D, i = t - r * D;
        if (i < j0) continue;  // finished in an earlier chunk
        const int64_t k = comp_s[r];
        const T* L = a.factor + k * DD + i * D;  // row i of L_k
        const T* eps = eps_s + r * J;
        T* xo = a.x + (base + r) * D + i;
        T s = j0 == 0 ? T(0) : *xo;  // partial sum over j < j0, left by this thread
        const int64_t jend = i + 1 < j1 ? i + 1 : j1;
        for (int64_t j = j0; j < jend; ++j) s += L[j] * eps[j - j0];
        *xo = i < j1 ? a.means[k * D + i] + s : s;
      }
    }
  }
}

template <class T, CovType C>
cudaError_t launch_separable(const SampleArgs<T>& a, bool vec, unsigned blocks, size_t smem, cudaStream_t stream) {
  if (vec)
    prior_sample_separable_kernel<T, C, true><<<blocks, kThreads, smem, stream>>>(a);
  else
    prior_sample_separable_kernel<T, C, false><<<blocks, kThreads, smem, stream>>>(a);
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
  const int64_t cap = int64_t(sms) * 16;
  SampleArgs<T> a;
  a.means = means; a.factor = factor; a.cdf = cdf;
  a.n = n; a.K = K; a.D = D;
  a.P = D > 1 ? (D + 1) / 2 : 1;
  a.seed = seed; a.offset = offset;
  a.x = x; a.labels = labels;
  a.stage_cdf = false;

  if (cov == CovType::Full) {
    const int R = D <= kThreads / 2 ? kThreads / static_cast<int>(D < 1 ? 1 : D) : 1;
    const int64_t Jd = D + (D & 1);  // even, >= D
    const int J = static_cast<int>(Jd < 2 ? 2 : Jd > kMaxFullChunk ? kMaxFullChunk : Jd);
    SmemCarver c;
    c.take<int64_t>(R);
    const size_t eps_at = c.take<T>(int64_t(R) * J);
    const unsigned blocks = grid_blocks(ceil_div(n, R), cap);
    prior_sample_full_kernel<T><<<blocks, kThreads, c.bytes, stream>>>(a, R, J, eps_at);
    return cudaGetLastError();
  }

  a.stage_cdf = K <= kCdfStageMax;
  const size_t smem = a.stage_cdf ? static_cast<size_t>(K) * sizeof(double) : 0;
  const unsigned blocks = grid_blocks(ceil_div(n * a.P, kChunkPairs), cap);
  const bool vec = D >= 2 && D % 2 == 0 && reinterpret_cast<uintptr_t>(x) % (2 * sizeof(T)) == 0;
  switch (cov) {
    case CovType::Identity: return launch_separable<T, CovType::Identity>(a, vec, blocks, smem, stream);
    case CovType::Spherical: return launch_separable<T, CovType::Spherical>(a, vec, blocks, smem, stream);
    default: return launch_separable<T, CovType::Diag>(a, vec, blocks, smem, stream);
  }
}

template cudaError_t prior_sample_launch<float>(CovType, const float*, const float*, const double*, int64_t, int64_t,
                                                int64_t, uint64_t, uint64_t, float*, int64_t*, cudaStream_t);
template cudaError_t prior_sample_launch<double>(CovType, const double*, const double*, const double*, int64_t,
                                                 int64_t, int64_t, uint64_t, uint64_t, double*, int64_t*,
                                                 cudaStream_t);

}  // namespace mixdiff::cuda
