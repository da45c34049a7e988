// gmm_posterior: CUDA dispatch (torch glue, host compiler). Kernels in gmm_posterior_cuda.cu.
#include "dispatch.h"
#include "gmm_posterior/gmm_posterior.h"
#include "gmm_posterior/gmm_posterior_cuda.h"
#include "gmm_posterior/gmm_posterior_glue.h"

namespace mixdiff::ops {

namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> gmm_posterior_cuda(const at::Tensor& x, const at::Tensor& means,
                                                                  const at::Tensor& cov_factor,
                                                                  const at::Tensor& log_weights,
                                                                  const std::string& covariance_type,
                                                                  bool return_resp) {
  auto [labels, log_lik, resp] = gmm_posterior_checked(x, means, cov_factor, log_weights, covariance_type, return_resp);
  const CovType cov = parse_cov_type(covariance_type);
  // Reached through the device key when any argument is on the device; the checks tie the others to x's.
  device::check_on_device("gmm_posterior", x, "x");
  check_factor_positive(cov_factor, cov);  // like the CPU op, also when N = 0
  device::launch("gmm_posterior", x, compute_dtype(x), x.size(0), [&]<class T>(cudaStream_t stream) {
    const PreparedMixture m = prepare_mixture(x, means, cov_factor, log_weights, cov);
    // Workspace: precision factors [K, fs] then per-component log offsets [K].
    const at::Tensor ws = at::empty({means.size(0) * (factor_size(cov, x.size(1)) + 1)}, m.x.options());
    cuda::GmmPosteriorParams<T> p;
    fill_mixture_params(p, m, cov, ws);
    p.labels = labels.data_ptr<int64_t>();
    p.log_lik = log_lik.data_ptr<T>();
    p.resp = return_resp ? resp.data_ptr<T>() : nullptr;
    p.block_ll = nullptr;
    const cudaError_t err = cuda::gmm_prepare_launch<T>(p, stream);
    return err == cudaSuccess ? cuda::gmm_posterior_launch<T>(p, stream) : err;
  });
  return {labels, log_lik, resp};
}

}  // namespace

MIXDIFF_DEVICE_LIBRARY_IMPL(m) { m.impl("gmm_posterior", &gmm_posterior_cuda); }

}  // namespace mixdiff::ops
