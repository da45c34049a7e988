// gmm_posterior: per point, the MAP component, log sum_k w_k N(x; mu_k, Sigma_k) (max-shifted), and
// the responsibilities only when asked. Scores of a few rows against all components are formed in a
// small per-thread tile; no [N, K] buffer exists unless responsibilities are returned.
#include "common.h"
#include "gmm_posterior/gmm_posterior.h"
#include "mixdiff/cpu_tiles.h"

namespace mixdiff::ops {

std::tuple<at::Tensor, at::Tensor, at::Tensor> gmm_posterior_checked(const at::Tensor& x, const at::Tensor& means,
                                                                     const at::Tensor& cov_factor,
                                                                     const at::Tensor& log_weights,
                                                                     const std::string& covariance_type,
                                                                     bool return_resp) {
  const CovType cov = parse_cov_type(covariance_type);
  check_mixture(x, means, cov_factor, log_weights, cov);
  const auto opts = x.options().dtype(compute_dtype(x));
  const int64_t N = x.size(0), K = means.size(0);
  return {at::empty({N}, x.options().dtype(at::kLong)), at::empty({N}, opts),
          return_resp ? at::empty({N, K}, opts) : at::empty({0}, opts)};
}

namespace {

template <class T, int P>
MIXDIFF_INLINE void posterior_tile(const T* x, int64_t D, const cpu::ComponentTable<T>& tab, T* scratch, T* work,
                                   int64_t* labels, T* log_lik, T* resp) {
  cpu::score_rows<T, P>(x, D, tab, scratch, tab.Kp, work);
  for (int p = 0; p < P; ++p) {
    T* row = scratch + p * tab.Kp;
    cpu::pad_row(row, tab.K, tab.Kp, -infinity<T>());
    log_lik[p] = cpu::row_logsumexp(row, tab.K, tab.Kp, labels + p);
    if (resp) {
      cpu::exp_shifted_inplace(row, tab.Kp, log_lik[p]);
      std::memcpy(resp + p * tab.K, row, sizeof(T) * tab.K);
    }
  }
}

template <class T>
MIXDIFF_INLINE void posterior_range_impl(const T* x, int64_t D, const cpu::ComponentTable<T>& tab, int64_t begin,
                                         int64_t end, int64_t* labels, T* log_lik, T* resp) {
  constexpr int P = cpu::kBlockRows;
  std::vector<T> scratch(static_cast<size_t>(P * tab.Kp)), work(static_cast<size_t>(P * D));
  auto resp_at = [&](int64_t n) { return resp ? resp + n * tab.K : nullptr; };
  int64_t n = begin;
  for (; n + P <= end; n += P)
    posterior_tile<T, P>(x + n * D, D, tab, scratch.data(), work.data(), labels + n, log_lik + n, resp_at(n));
  for (; n < end; ++n)
    posterior_tile<T, 1>(x + n * D, D, tab, scratch.data(), work.data(), labels + n, log_lik + n, resp_at(n));
}

MIXDIFF_CPU_CLONES void posterior_range(const float* x, int64_t D, const cpu::ComponentTable<float>& tab,
                                        int64_t begin, int64_t end, int64_t* labels, float* log_lik, float* resp) {
  posterior_range_impl(x, D, tab, begin, end, labels, log_lik, resp);
}
MIXDIFF_CPU_CLONES void posterior_range(const double* x, int64_t D, const cpu::ComponentTable<double>& tab,
                                        int64_t begin, int64_t end, int64_t* labels, double* log_lik, double* resp) {
  posterior_range_impl(x, D, tab, begin, end, labels, log_lik, resp);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> gmm_posterior_cpu(const at::Tensor& x, const at::Tensor& means,
                                                                 const at::Tensor& cov_factor,
                                                                 const at::Tensor& log_weights,
                                                                 const std::string& covariance_type,
                                                                 bool return_resp) {
  auto [labels, log_lik, resp] = gmm_posterior_checked(x, means, cov_factor, log_weights, covariance_type, return_resp);
  const CovType cov = parse_cov_type(covariance_type);
  const auto dtype = compute_dtype(x);
  const auto [xc, mc, lw, fc] = prepare_mixture(x, means, cov_factor, log_weights, cov);
  AT_DISPATCH_FLOATING_TYPES(dtype, "gmm_posterior_cpu", [&] {
    const int64_t N = xc.size(0), D = xc.size(1), K = mc.size(0);
    cpu::ComponentTable<scalar_t> tab;
    const int64_t bad = tab.build(cov, mc.data_ptr<scalar_t>(), fc.data_ptr<scalar_t>(), lw.data_ptr<scalar_t>(), K, D);
    TORCH_CHECK(bad < 0, "mixdiff: cov_factor of component ", bad, " has a non-positive diagonal");
    const scalar_t* xp = xc.data_ptr<scalar_t>();
    scalar_t* rp = return_resp ? resp.data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, N, 256, [&](int64_t b, int64_t e) {
      posterior_range(xp, D, tab, b, e, labels.data_ptr<int64_t>(), log_lik.data_ptr<scalar_t>(), rp);
    });
  });
  return {labels, log_lik, resp};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(mixdiff, m) {
  m.def(
      "gmm_posterior(Tensor x, Tensor means, Tensor cov_factor, Tensor log_weights, str covariance_type, "
      "bool return_resp=False) -> (Tensor labels, Tensor log_lik, Tensor resp)");
}

TORCH_LIBRARY_IMPL(mixdiff, CPU, m) { m.impl("gmm_posterior", &gmm_posterior_cpu); }

}  // namespace mixdiff::ops
