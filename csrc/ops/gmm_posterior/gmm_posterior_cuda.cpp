// gmm_posterior: CUDA dispatch (torch glue, host compiler). Kernels in gmm_posterior_cuda.cu.
#include "common.h"
#include "gmm_posterior/gmm_posterior.h"
#include "gmm_posterior/gmm_posterior_cuda.h"

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

namespace mixdiff::ops {

namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> gmm_posterior_cuda(const at::Tensor& x, const at::Tensor& means,
                                                                  const at::Tensor& cov_factor,
                                                                  const at::Tensor& log_weights,
                                                                  const std::string& covariance_type,
                                                                  bool return_resp) {
  auto [labels, log_lik, resp] = gmm_posterior_checked(x, means, cov_factor, log_weights, covariance_type, return_resp);
  const CovType cov = parse_cov_type(covariance_type);
  const c10::cuda::CUDAGuard guard(x.device());
  check_factor_positive(cov_factor, cov);  // like the CPU op, also when N = 0
  const int64_t N = x.size(0), D = x.size(1), K = means.size(0);
  if (N == 0) return {labels, log_lik, resp};
  const auto dtype = compute_dtype(x);
  const auto [xc, mc, lw, fc] = prepare_mixture(x, means, cov_factor, log_weights, cov);
  const int64_t fs = factor_size(cov, D);
  // Workspace: precision factors [K, fs] then per-component log offsets [K].
  const at::Tensor ws = at::empty({K * fs + K}, xc.options());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(dtype, "gmm_posterior_cuda", [&] {
    scalar_t* prec = ws.data_ptr<scalar_t>();
    scalar_t* offset = prec + K * fs;
    C10_CUDA_CHECK(cuda::gmm_prepare_launch<scalar_t>(
        cov, cov == CovType::Identity ? nullptr : fc.data_ptr<scalar_t>(), lw.data_ptr<scalar_t>(), K, D, prec, offset,
        stream));
    C10_CUDA_CHECK(cuda::gmm_posterior_launch<scalar_t>(
        cov, xc.data_ptr<scalar_t>(), mc.data_ptr<scalar_t>(), prec, offset, N, K, D, labels.data_ptr<int64_t>(),
        log_lik.data_ptr<scalar_t>(), return_resp ? resp.data_ptr<scalar_t>() : nullptr, nullptr, stream));
  });
  return {labels, log_lik, resp};
}

}  // namespace

TORCH_LIBRARY_IMPL(mixdiff, CUDA, m) { m.impl("gmm_posterior", &gmm_posterior_cuda); }

}  // namespace mixdiff::ops
