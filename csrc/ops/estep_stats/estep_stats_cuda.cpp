// estep_stats: CUDA dispatch (torch glue, host compiler). Pass 1 is gmm_posterior's kernel (per-point
// log-likelihoods into a [N] workspace, per-block float64 sums of them); pass 2 is estep_stats_cuda.cu
// (sufficient statistics, recomputing responsibilities tile by tile, then fixed-order sums).
#include "common.h"
#include "estep_stats/estep_stats.h"
#include "estep_stats/estep_stats_cuda.h"
#include "gmm_posterior/gmm_posterior_cuda.h"

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

namespace mixdiff::ops {

namespace {

// moments was validated by estep_stats_checked.
cuda::EstepMoments moments_of(const std::string& s) {
  if (s == "full") return cuda::EstepMoments::Full;
  if (s == "diag") return cuda::EstepMoments::Diag;
  return cuda::EstepMoments::None;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> estep_stats_cuda(
    const at::Tensor& x, const at::Tensor& means, const at::Tensor& cov_factor, const at::Tensor& log_weights,
    const std::string& covariance_type, const at::Tensor& shift, const std::string& moments) {
  auto [nk, sum_x, sum_xx, ll] = estep_stats_checked(x, means, cov_factor, log_weights, covariance_type, shift, moments);
  const CovType cov = parse_cov_type(covariance_type);
  const c10::cuda::CUDAGuard guard(x.device());
  check_factor_positive(cov_factor, cov);  // like the CPU op, also when N = 0
  const int64_t N = x.size(0), D = x.size(1), K = means.size(0);
  if (N == 0) return {nk, sum_x, sum_xx, ll};
  const cuda::EstepMoments mom = moments_of(moments);
  const auto dtype = compute_dtype(x);
  const auto [xc, mc, lw, fc] = prepare_mixture(x, means, cov_factor, log_weights, cov);
  const at::Tensor sc = prepared(shift, dtype);
  const int64_t fs = factor_size(cov, D);
  // Workspaces: precision factors [K, fs], log offsets [K] and per-point log-likelihoods [N] in the compute
  // dtype; per-block log-likelihood sums and the statistics' per-block slices in float64.
  const at::Tensor ws = at::empty({K * fs + K + N}, xc.options());
  const int64_t n_block_ll = cuda::gmm_posterior_blocks(N);
  int64_t n_stats_ws = 0;
  C10_CUDA_CHECK(cuda::estep_stats_workspace(N, K, D, mom, &n_stats_ws));
  const at::Tensor ws64 = at::empty({n_block_ll + n_stats_ws}, x.options().dtype(at::kDouble));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(dtype, "estep_stats_cuda", [&] {
    scalar_t* prec = ws.data_ptr<scalar_t>();
    scalar_t* offset = prec + K * fs;
    scalar_t* log_lik = offset + K;
    double* block_ll = ws64.data_ptr<double>();
    C10_CUDA_CHECK(cuda::gmm_prepare_launch<scalar_t>(
        cov, cov == CovType::Identity ? nullptr : fc.data_ptr<scalar_t>(), lw.data_ptr<scalar_t>(), K, D, prec, offset,
        stream));
    C10_CUDA_CHECK(cuda::gmm_posterior_launch<scalar_t>(cov, xc.data_ptr<scalar_t>(), mc.data_ptr<scalar_t>(), prec,
                                                        offset, N, K, D, nullptr, log_lik, nullptr, block_ll, stream));
    C10_CUDA_CHECK(cuda::estep_stats_launch<scalar_t>(
        cov, mom, xc.data_ptr<scalar_t>(), mc.data_ptr<scalar_t>(), prec, offset, sc.data_ptr<scalar_t>(), log_lik,
        block_ll, n_block_ll, N, K, D, nk.data_ptr<double>(), sum_x.data_ptr<double>(),
        mom == cuda::EstepMoments::None ? nullptr : sum_xx.data_ptr<double>(), ll.data_ptr<double>(),
        block_ll + n_block_ll, n_stats_ws, stream));
  });
  return {nk, sum_x, sum_xx, ll};
}

}  // namespace

TORCH_LIBRARY_IMPL(mixdiff, CUDA, m) { m.impl("estep_stats", &estep_stats_cuda); }

}  // namespace mixdiff::ops
