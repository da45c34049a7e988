// estep_stats: CUDA dispatch (torch glue, host compiler). Pass 1 is gmm_posterior's kernel (per-point
// log-likelihoods into a [N] workspace, per-block float64 sums of them); pass 2 is estep_stats_cuda.cu
// (sufficient statistics, recomputing responsibilities tile by tile, then fixed-order sums).
#include "dispatch.h"
#include "estep_stats/estep_stats.h"
#include "estep_stats/estep_stats_cuda.h"
#include "gmm_posterior/gmm_posterior_glue.h"

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
  // Reached through the device key when any argument is on the device; the checks tie the others to x's.
  device::check_on_device("estep_stats", x, "x");
  check_factor_positive(cov_factor, cov);  // like the CPU op, also when N = 0
  const auto dtype = compute_dtype(x);
  device::launch("estep_stats", x, dtype, x.size(0), [&]<class T>(cudaStream_t stream) {
    const int64_t N = x.size(0), D = x.size(1), K = means.size(0);
    const cuda::EstepMoments mom = moments_of(moments);
    const PreparedMixture m = prepare_mixture(x, means, cov_factor, log_weights, cov);
    const at::Tensor sc = prepared(shift, dtype);
    const int64_t fs = factor_size(cov, D);
    // Workspaces: precision factors [K, fs], log offsets [K] and per-point log-likelihoods [N] in the compute
    // dtype; per-block log-likelihood sums and the statistics' per-block slices in float64.
    const at::Tensor ws = at::empty({K * fs + K + N}, m.x.options());
    const int64_t n_block_ll = cuda::gmm_posterior_blocks(N);
    int64_t n_stats_ws = 0;
    cudaError_t err = cuda::estep_stats_workspace(N, K, D, mom, &n_stats_ws);
    if (err != cudaSuccess) return err;
    const at::Tensor ws64 = at::empty({n_block_ll + n_stats_ws}, x.options().dtype(at::kDouble));
    cuda::EstepStatsParams<T> p;
    fill_mixture_params(p, m, cov, ws);
    p.labels = nullptr;
    p.log_lik = p.offset + K;
    p.resp = nullptr;
    p.block_ll = ws64.data_ptr<double>();
    p.moments = mom;
    p.shift = sc.data_ptr<T>();
    p.n_block_ll = n_block_ll;
    p.nk = nk.data_ptr<double>();
    p.sum_x = sum_x.data_ptr<double>();
    p.sum_xx = mom == cuda::EstepMoments::None ? nullptr : sum_xx.data_ptr<double>();
    p.log_lik_sum = ll.data_ptr<double>();
    p.workspace = p.block_ll + n_block_ll;
    p.workspace_size = n_stats_ws;
    err = cuda::gmm_prepare_launch<T>(p, stream);
    if (err == cudaSuccess) err = cuda::gmm_posterior_launch<T>(p, stream);
    if (err == cudaSuccess) err = cuda::estep_stats_launch<T>(p, stream);
    return err;
  });
  return {nk, sum_x, sum_xx, ll};
}

}  // namespace

MIXDIFF_DEVICE_LIBRARY_IMPL(m) { m.impl("estep_stats", &estep_stats_cuda); }

}  // namespace mixdiff::ops
