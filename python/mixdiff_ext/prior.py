"""The Gaussian-mixture prior of mixDDPM / mixSGM, its dispatcher, and fitting by k-means or EM.

pi = sum_k w_k N(mu_k, Sigma_k), Sigma_k = A_k A_k^T. The dispatcher D(x) sends a data point to its
nearest centre. Fitting uses the fused ops in ops.py (kmeans_stats, estep_stats); see docs/method.md.
"""
from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch

from . import ops
from ._random import check_offset, resolve_seed
from .ops import COVARIANCE_TYPES

__all__ = ["GaussianMixturePrior", "effort"]

_FORMAT_VERSION = 1


# ------------------------------------------------------------------------------------------------
# input validation
# ------------------------------------------------------------------------------------------------
def _as_tensor(value: Any, name: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(value).__name__}")
    return value


def _check_float(t: torch.Tensor, name: str) -> None:
    if not t.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype, got {t.dtype}")


def _check_finite(t: torch.Tensor, name: str) -> None:
    # The sum is one fast reduction and is NaN/inf whenever an element is; only then (or when the sum
    # overflows) is the element-wise check, which allocates a mask as large as t, needed.
    if t.numel() and not math.isfinite(float(t.sum())):
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or inf")


def _check_data(x: Any, dim: int | None = None, name: str = "x") -> torch.Tensor:
    x = _as_tensor(x, name)
    _check_float(x, name)
    if x.dim() != 2:
        raise ValueError(f"{name} must be 2-D [n_samples, dim], got shape {tuple(x.shape)}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name} has dim {x.shape[1]} but the prior has dim {dim}")
    _check_finite(x, name)
    return x


def _check_covariance_type(covariance_type: str) -> None:
    if covariance_type not in COVARIANCE_TYPES:
        raise ValueError(f"covariance_type must be one of {COVARIANCE_TYPES}, got {covariance_type!r}")


def _factor_from_covariances(cov: torch.Tensor | None, covariance_type: str, k: int, d: int) -> torch.Tensor | None:
    """Covariances in scikit-learn's layout -> factors A_k (sigma, or lower Cholesky)."""
    if covariance_type == "identity":
        if cov is not None:
            raise ValueError("covariances must be None for covariance_type='identity'")
        return None
    if cov is None:
        raise ValueError(f"covariances are required for covariance_type={covariance_type!r}")
    expected = {"spherical": (k,), "diag": (k, d), "full": (k, d, d)}[covariance_type]
    if tuple(cov.shape) != expected:
        raise ValueError(f"covariances for {covariance_type!r} must have shape {expected}, got {tuple(cov.shape)}")
    _check_finite(cov, "covariances")
    if covariance_type == "full":
        if not torch.allclose(cov, cov.mT, rtol=1e-5, atol=1e-8 * float(cov.abs().max())):
            raise ValueError("covariances must be symmetric")
        chol, info = torch.linalg.cholesky_ex(cov)
        bad = torch.nonzero(info).flatten()
        if bad.numel():
            raise ValueError(f"covariance of component {int(bad[0])} is not positive-definite")
        return chol
    if bool((cov <= 0).any()):
        raise ValueError("covariances (variances) must be positive")
    return cov.sqrt()


# ------------------------------------------------------------------------------------------------
# the prior
# ------------------------------------------------------------------------------------------------
class GaussianMixturePrior:
    """A Gaussian mixture sum_k w_k N(mu_k, Sigma_k) used as a diffusion prior.

    Args:
        means: [K, D] component means (the dispatcher's centres).
        weights: [K] non-negative, summing to 1.
        covariances: scikit-learn layout: None for "identity", [K] variances for "spherical", [K, D]
            variances for "diag", [K, D, D] covariance matrices for "full".
        covariance_type: "identity" (Sigma_k = I, the mixDDPM default), "spherical", "diag" or "full".
    """

    def __init__(self, means, weights, covariances=None, covariance_type: str = "identity"):
        _check_covariance_type(covariance_type)
        means = _as_tensor(means, "means")
        weights = _as_tensor(weights, "weights")
        _check_float(means, "means")
        if means.dim() != 2 or means.shape[0] < 1 or means.shape[1] < 1:
            raise ValueError(f"means must be 2-D [n_components >= 1, dim >= 1], got shape {tuple(means.shape)}")
        _check_finite(means, "means")
        k, d = means.shape
        weights = weights.to(device=means.device, dtype=means.dtype)
        if weights.shape != (k,):
            raise ValueError(f"weights must have shape ({k},), got {tuple(weights.shape)}")
        _check_finite(weights, "weights")
        if bool((weights < 0).any()):
            raise ValueError("weights must be non-negative")
        if abs(float(weights.sum()) - 1.0) > 1e-4:
            raise ValueError(f"weights must sum to 1, got {float(weights.sum()):.6g}")
        cov = None if covariances is None else _as_tensor(covariances, "covariances")
        if cov is not None:
            _check_float(cov, "covariances")
            cov = cov.to(device=means.device, dtype=means.dtype)
        self._factor = _factor_from_covariances(cov, covariance_type, k, d)
        self._means = means
        self._weights = weights / weights.sum()
        self.covariance_type = covariance_type
        self.fit_info: dict[str, Any] = {}

    @classmethod
    def _from_factor(cls, means, weights, factor, covariance_type) -> "GaussianMixturePrior":
        prior = cls.__new__(cls)
        prior._means, prior._weights, prior._factor = means, weights, factor
        prior.covariance_type = covariance_type
        prior.fit_info = {}
        return prior

    @classmethod
    def standard(cls, dim: int, dtype: torch.dtype = torch.float32, device=None) -> "GaussianMixturePrior":
        """N(0, I) as a one-component mixture: the plain DDPM / SGM prior."""
        if int(dim) < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        return cls(torch.zeros(1, int(dim), dtype=dtype, device=device), torch.ones(1, dtype=dtype, device=device))

    # -- parameters --------------------------------------------------------------------------------
    @property
    def means(self) -> torch.Tensor:
        return self._means

    @property
    def weights(self) -> torch.Tensor:
        return self._weights

    @property
    def log_weights(self) -> torch.Tensor:
        return torch.log(self._weights)

    @property
    def cov_factor(self) -> torch.Tensor | None:
        """A_k with Sigma_k = A_k A_k^T: None, sigma [K], sigma [K, D] or lower Cholesky [K, D, D]."""
        return self._factor

    @property
    def covariances(self) -> torch.Tensor | None:
        """Covariances in scikit-learn's layout (None for identity)."""
        f = self._factor
        if f is None:
            return None
        return f @ f.mT if self.covariance_type == "full" else f * f

    @property
    def n_components(self) -> int:
        return self._means.shape[0]

    @property
    def dim(self) -> int:
        return self._means.shape[1]

    @property
    def device(self) -> torch.device:
        return self._means.device

    @property
    def dtype(self) -> torch.dtype:
        return self._means.dtype

    def covariance_trace(self) -> torch.Tensor:
        """[K] trace(Sigma_k)."""
        f, d = self._factor, self.dim
        if f is None:
            return torch.full((self.n_components,), float(d), dtype=self.dtype, device=self.device)
        if self.covariance_type == "spherical":
            return d * f * f
        return (f * f).flatten(1).sum(1)

    def to(self, device=None, dtype: torch.dtype | None = None) -> "GaussianMixturePrior":
        def conv(t):
            return None if t is None else t.to(device=device, dtype=dtype)

        return GaussianMixturePrior._from_factor(
            conv(self._means), conv(self._weights), conv(self._factor), self.covariance_type
        )

    def __repr__(self) -> str:
        return (f"GaussianMixturePrior(n_components={self.n_components}, dim={self.dim}, "
                f"covariance_type={self.covariance_type!r}, dtype={self.dtype}, device={self.device})")

    # -- evaluation --------------------------------------------------------------------------------
    def _prepare(self, x) -> torch.Tensor:
        x = _check_data(x, self.dim)
        return x.to(self.device)

    def _posterior(self, x, return_resp: bool = False) -> ops.Posterior:
        x = self._prepare(x)
        return ops.gmm_posterior(x, self._means.to(x.dtype), self._cast_factor(x), self.log_weights.to(x.dtype),
                                 self.covariance_type, return_resp)

    def _cast_factor(self, x: torch.Tensor) -> torch.Tensor | None:
        return None if self._factor is None else self._factor.to(x.dtype)

    def assign(self, x, rule: str = "nearest") -> torch.Tensor:
        """Component of each row: "nearest" centre (the mixDDPM dispatcher) or MAP "posterior"."""
        if rule == "nearest":
            x = self._prepare(x)
            return ops.assign_nearest(x, self._means.to(x.dtype)).labels
        if rule == "posterior":
            return self._posterior(x).labels
        raise ValueError(f"rule must be 'nearest' or 'posterior', got {rule!r}")

    def responsibilities(self, x) -> torch.Tensor:
        """[N, K] posterior probabilities of the components."""
        return self._posterior(x, return_resp=True).resp

    def log_prob(self, x) -> torch.Tensor:
        """[N] log density of the mixture."""
        return self._posterior(x).log_lik

    def score(self, x) -> float:
        """Mean log-likelihood per sample (scikit-learn's `score`)."""
        return float(self.log_prob(x).double().mean())

    def n_parameters(self) -> int:
        k, d = self.n_components, self.dim
        cov = {"identity": 0, "spherical": k, "diag": k * d, "full": k * d * (d + 1) // 2}[self.covariance_type]
        return cov + k * d + k - 1

    def bic(self, x) -> float:
        """Bayesian information criterion (lower is better)."""
        x = self._prepare(x)
        return -2.0 * self.score(x) * x.shape[0] + self.n_parameters() * math.log(x.shape[0])

    # scikit-learn names (GaussianMixture semantics: predict is the MAP component)
    def predict(self, x) -> torch.Tensor:
        return self.assign(x, rule="posterior")

    predict_proba = responsibilities
    score_samples = log_prob

    # -- sampling ----------------------------------------------------------------------------------
    def sample(self, n: int, seed: int | None = None, generator_offset: int = 0, return_labels: bool = False,
               out: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = None):
        """n draws from the prior (and their components if return_labels).

        Sample i is row generator_offset + i of the counter-based stream of `seed`: drawing in batches
        with advancing offsets gives exactly the samples of one large draw. seed=None draws a seed from
        torch's default generator, so torch.manual_seed makes it repeatable. out: a contiguous [n, D]
        tensor in the prior's compute dtype on its device (or an (x, labels) pair with int64 labels [n])
        to write into; reusing one buffer across calls avoids a fresh allocation's page faults (with a
        tensor alone, the labels, 8 bytes a row, are still allocated).
        """
        if int(n) != n or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n}")
        generator_offset = check_offset("generator_offset", generator_offset)
        seed = resolve_seed(seed)
        if out is not None:
            out = self._sample_out(out, int(n))
        x, labels = ops.prior_sample(self._means, self.log_weights, self._factor, self.covariance_type, int(n),
                                     int(seed), int(generator_offset), out=out)
        return (x, labels) if return_labels else x

    def _sample_out(self, out, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """sample()'s out, checked: x [n, D] (and labels [n], allocated when not given)."""
        pair = ops._is_tensor_pair(out)
        if not (isinstance(out, torch.Tensor) or pair):
            raise TypeError(f"out must be a tensor or an (x, labels) pair of tensors, got {type(out).__name__}")
        x, labels = out if pair else (out, torch.empty(n, dtype=torch.int64, device=out.device))
        device = self._means.device
        for t, name, shape, dtype in ((x, "out", (n, self.dim), ops._compute_dtype(self._means)),
                                      (labels, "out labels", (n,), torch.int64)):
            if tuple(t.shape) != shape or t.dtype != dtype or t.device != device:
                raise ValueError(f"{name} must be {dtype} of shape {shape} on {device}, got {t.dtype} of shape "
                                 f"{tuple(t.shape)} on {t.device}")
            if not t.is_contiguous() or t.requires_grad:
                raise ValueError(f"{name} must be contiguous and must not require grad")
        return x, labels

    # -- persistence -------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Writes tensors and plain metadata; `load` reads it back with weights_only=True (no pickle code)."""
        state = {
            "format_version": _FORMAT_VERSION,
            "covariance_type": self.covariance_type,
            "means": self._means.detach().cpu(),
            "weights": self._weights.detach().cpu(),
            "cov_factor": None if self._factor is None else self._factor.detach().cpu(),
        }
        torch.save(state, os.fspath(path))

    @classmethod
    def load(cls, path: str | os.PathLike, map_location=None) -> "GaussianMixturePrior":
        state = torch.load(os.fspath(path), map_location=map_location, weights_only=True)
        if not isinstance(state, dict) or state.get("format_version") != _FORMAT_VERSION:
            raise ValueError(f"{path} is not a mixdiff_ext prior file (format {_FORMAT_VERSION})")
        factor = state["cov_factor"]
        cov = None
        if factor is not None:
            cov = factor @ factor.mT if state["covariance_type"] == "full" else factor * factor
        return cls(state["means"], state["weights"], cov, state["covariance_type"])

    # -- fitting -----------------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        x,
        n_components: int,
        covariance_type: str = "identity",
        method: str = "kmeans",
        init: str | torch.Tensor | "GaussianMixturePrior" = "k-means++",
        max_iter: int = 100,
        tol: float = 1e-4,
        reg_covar: float = 1e-6,
        seed: int | None = None,
        verbose: bool = False,
    ) -> "GaussianMixturePrior":
        """Fits a prior to data x [N, D].

        method="kmeans" is the mixDDPM dispatcher prior: Lloyd's algorithm; centres are the cluster means,
        weights the cluster fractions, covariances (if not identity) the within-cluster covariances.
        method="em" fits a Gaussian mixture by expectation-maximisation, started from k-means.
        init: "k-means++", "random" (K distinct rows), initial means [K, D], or a prior (EM: all its
        parameters are the starting point). Empty clusters are re-seeded at the points farthest from
        their centres. See docs/method.md.
        """
        from . import _fit

        return _fit.fit(cls, x, n_components, covariance_type, method, init, max_iter, tol, reg_covar, seed, verbose)


def effort(prior: GaussianMixturePrior, x) -> float:
    """Reverse effort: mean over x of ||x - c_D(x)||^2 + trace(Sigma_D(x)), D the nearest-centre dispatcher.

    The expected squared distance between a data point and its prior draw under the forward coupling.
    With the standard prior it is E||x||^2 + d; with identity covariances and centres equal to the cluster
    means the reduction is sum_i p_i ||c_i||^2.
    """
    x = prior._prepare(x)
    if x.shape[0] == 0:
        raise ValueError("x must contain at least one row")
    labels, sqdist = ops.assign_nearest(x, prior.means.to(x.dtype))
    return float((sqdist.double() + prior.covariance_trace().double()[labels]).mean())
