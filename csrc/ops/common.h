#pragma once
// Argument checks and dtype rules shared by the ops' torch glue (CPU and CUDA).
#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <string>

#include "mixdiff/gaussian.h"

namespace mixdiff::ops {

// float64 computes in float64; float32, float16 and bfloat16 compute (and return) float32.
inline at::ScalarType compute_dtype(const at::Tensor& t) {
  return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

inline void check_floating(const at::Tensor& t, const char* name) {
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), "mixdiff: ", name, " must be a floating-point tensor, got ",
              t.scalar_type());
}

// x [N, D] data and a [K, D] parameter table on the same device (x_name: the data argument's name).
inline void check_data_and_means(const at::Tensor& x, const at::Tensor& means, const char* means_name,
                                 const char* x_name = "x") {
  check_floating(x, x_name);
  check_floating(means, means_name);
  TORCH_CHECK(x.dim() == 2, "mixdiff: ", x_name, " must be 2-D [N, D], got shape ", x.sizes());
  TORCH_CHECK(means.dim() == 2, "mixdiff: ", means_name, " must be 2-D [K, D], got shape ", means.sizes());
  TORCH_CHECK(means.size(0) >= 1, "mixdiff: ", means_name, " must have at least one row (K >= 1)");
  TORCH_CHECK(means.size(1) == x.size(1), "mixdiff: ", means_name, " has D=", means.size(1), " but ", x_name,
              " has D=", x.size(1));
  TORCH_CHECK(means.device() == x.device(), "mixdiff: ", means_name, " is on ", means.device(), " but ", x_name,
              " is on ", x.device());
}

inline CovType parse_cov_type(const std::string& s) {
  if (s == "identity") return CovType::Identity;
  if (s == "spherical") return CovType::Spherical;
  if (s == "diag") return CovType::Diag;
  if (s == "full") return CovType::Full;
  TORCH_CHECK(false, "mixdiff: covariance_type must be 'identity', 'spherical', 'diag' or 'full', got '", s, "'");
}

inline void check_factor(const at::Tensor& x, const at::Tensor& means, const at::Tensor& cov_factor, CovType cov);

// cov_factor: identity -> ignored (any shape, e.g. [0]); spherical [K]; diag [K, D]; full [K, D, D]
// lower-triangular Cholesky factors. log_weights [K].
inline void check_mixture(const at::Tensor& x, const at::Tensor& means, const at::Tensor& cov_factor,
                          const at::Tensor& log_weights, CovType cov) {
  check_data_and_means(x, means, "means");
  const int64_t K = means.size(0);
  check_floating(log_weights, "log_weights");
  TORCH_CHECK(log_weights.dim() == 1 && log_weights.size(0) == K, "mixdiff: log_weights must have shape [", K,
              "], got ", log_weights.sizes());
  TORCH_CHECK(log_weights.device() == x.device(), "mixdiff: log_weights must be on ", x.device());
  check_factor(x, means, cov_factor, cov);
}

// Labels int64 [N] on x's device with values in [0, K) (one min/max reduction: a sync on CUDA).
inline void check_labels(const at::Tensor& labels, const at::Tensor& x, int64_t K) {
  TORCH_CHECK(labels.scalar_type() == at::kLong, "mixdiff: labels must be int64, got ", labels.scalar_type());
  TORCH_CHECK(labels.dim() == 1 && labels.size(0) == x.size(0), "mixdiff: labels must have shape [", x.size(0),
              "], got ", labels.sizes());
  TORCH_CHECK(labels.device() == x.device(), "mixdiff: labels are on ", labels.device(), " but x is on ", x.device());
  if (labels.numel() == 0) return;
  const auto [lo, hi] = at::aminmax(labels);
  TORCH_CHECK(lo.item<int64_t>() >= 0 && hi.item<int64_t>() < K, "mixdiff: labels must lie in [0, ", K,
              "), got values in [", lo.item<int64_t>(), ", ", hi.item<int64_t>(), "]");
}

// A [N, D] tensor that goes with x (model output, explicit noise): same shape and device, floating.
inline void check_like_x(const at::Tensor& t, const at::Tensor& x, const char* name) {
  check_floating(t, name);
  TORCH_CHECK(t.sizes() == x.sizes(), "mixdiff: ", name, " must have x's shape ", x.sizes(), ", got ", t.sizes());
  TORCH_CHECK(t.device() == x.device(), "mixdiff: ", name, " is on ", t.device(), " but x is on ", x.device());
}

// Per-row coefficients [N] on x's device.
inline void check_per_row(const at::Tensor& t, const at::Tensor& x, const char* name) {
  check_floating(t, name);
  TORCH_CHECK(t.dim() == 1 && t.size(0) == x.size(0), "mixdiff: ", name, " must have shape [", x.size(0), "], got ",
              t.sizes());
  TORCH_CHECK(t.device() == x.device(), "mixdiff: ", name, " is on ", t.device(), " but x is on ", x.device());
}

// cov_factor's shape for the covariance type (see check_mixture), on x's device.
inline void check_factor(const at::Tensor& x, const at::Tensor& means, const at::Tensor& cov_factor, CovType cov) {
  const int64_t K = means.size(0), D = means.size(1);
  if (cov == CovType::Identity) return;
  check_floating(cov_factor, "cov_factor");
  TORCH_CHECK(cov_factor.device() == x.device(), "mixdiff: cov_factor must be on ", x.device());
  if (cov == CovType::Spherical)
    TORCH_CHECK(cov_factor.dim() == 1 && cov_factor.size(0) == K,
                "mixdiff: spherical cov_factor must have shape [", K, "], got ", cov_factor.sizes());
  if (cov == CovType::Diag)
    TORCH_CHECK(cov_factor.dim() == 2 && cov_factor.size(0) == K && cov_factor.size(1) == D,
                "mixdiff: diag cov_factor must have shape [", K, ", ", D, "], got ", cov_factor.sizes());
  if (cov == CovType::Full)
    TORCH_CHECK(cov_factor.dim() == 3 && cov_factor.size(0) == K && cov_factor.size(1) == D && cov_factor.size(2) == D,
                "mixdiff: full cov_factor must have shape [", K, ", ", D, ", ", D, "], got ", cov_factor.sizes());
}

// The factor's diagonal must be positive (it is a standard deviation or a Cholesky diagonal). One small
// reduction over K*D values; on CUDA it synchronises once per call.
inline void check_factor_positive(const at::Tensor& cov_factor, CovType cov) {
  if (cov == CovType::Identity) return;
  const at::Tensor diag = cov == CovType::Full ? cov_factor.diagonal(0, 1, 2) : cov_factor;
  TORCH_CHECK(diag.numel() == 0 || diag.gt(0).all().item<bool>(),
              "mixdiff: cov_factor must have a positive diagonal (standard deviations / Cholesky factors)");
}

// Contiguous copy in the compute dtype (no copy when it already is).
inline at::Tensor prepared(const at::Tensor& t, at::ScalarType dtype) { return t.to(dtype).contiguous(); }

// Parameters as used by the kernels: identity gets an empty factor.
inline at::Tensor prepared_factor(const at::Tensor& f, CovType cov, at::ScalarType dtype, const at::Tensor& like) {
  if (cov == CovType::Identity) return at::empty({0}, like.options().dtype(dtype));
  return prepared(f, dtype);
}

// The mixture ops' inputs, contiguous in the compute dtype of x.
struct PreparedMixture {
  at::Tensor x, means, log_weights, factor;
};
inline PreparedMixture prepare_mixture(const at::Tensor& x, const at::Tensor& means, const at::Tensor& cov_factor,
                                       const at::Tensor& log_weights, CovType cov) {
  const auto dtype = compute_dtype(x);
  return {prepared(x, dtype), prepared(means, dtype), prepared(log_weights, dtype),
          prepared_factor(cov_factor, cov, dtype, x)};
}

}  // namespace mixdiff::ops
