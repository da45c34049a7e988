"""Fitting GaussianMixturePrior: k-means++ seeding, Lloyd iterations and EM, on the fused ops."""
from __future__ import annotations

import math

import torch

from . import ops

_EPS_NK = 10 * torch.finfo(torch.float64).eps  # scikit-learn's guard against empty components in EM


def _generator(seed: int | None) -> torch.Generator:
    # seed=None draws from torch's default generator, so torch.manual_seed makes fits repeatable.
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    g = torch.Generator()
    g.manual_seed(int(seed))
    return g


def kmeans_plus_plus(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """Greedy k-means++ (Arthur & Vassilvitskii; 2 + log k local trials, as scikit-learn does)."""
    n = x.shape[0]
    trials = 2 + int(math.log(k))
    first = int(torch.randint(n, (1,), generator=gen))
    centres = [x[first]]
    closest = ops.assign_nearest(x, x[first : first + 1]).sqdist.double()
    for _ in range(1, k):
        total = float(closest.sum())
        if total <= 0:  # every point coincides with a centre: pick any rows
            cand = torch.randint(n, (trials,), generator=gen)
        else:
            # inverse-CDF draw proportional to D^2 (torch.multinomial is limited to 2^24 categories)
            u = torch.rand(trials, generator=gen, dtype=torch.float64) * total
            cdf = torch.cumsum(closest, 0)
            cand = torch.searchsorted(cdf, u.to(cdf.device)).clamp(max=n - 1).cpu()
        best, best_pot, best_d = None, math.inf, None
        for c in cand.tolist():
            d = torch.minimum(closest, ops.assign_nearest(x, x[c : c + 1]).sqdist.double())
            pot = float(d.sum())
            if pot < best_pot:
                best, best_pot, best_d = c, pot, d
        centres.append(x[best])
        closest = best_d
    return torch.stack(centres)


def _initial_means(x, k, init, gen) -> torch.Tensor:
    if isinstance(init, torch.Tensor):
        if tuple(init.shape) != (k, x.shape[1]):
            raise ValueError(f"init means must have shape ({k}, {x.shape[1]}), got {tuple(init.shape)}")
        return init.to(device=x.device, dtype=x.dtype).clone()
    if init == "k-means++":
        return kmeans_plus_plus(x, k, gen)
    if init == "random":
        return x[torch.randperm(x.shape[0], generator=gen)[:k].to(x.device)].clone()
    raise ValueError(f"init must be 'k-means++', 'random', a [K, D] tensor or a prior, got {init!r}")


def _reseed_empty(centres, counts, sqdist, x):
    """Moves empty clusters onto the points farthest from their centres (one point each)."""
    empty = torch.nonzero(counts == 0).flatten()
    if empty.numel() == 0:
        return 0
    far = torch.argsort(sqdist, descending=True)[: empty.numel()]
    centres[empty.to(centres.device)] = x[far]
    return int(empty.numel())


def lloyd(x, centres, max_iter, tol, verbose):
    """Lloyd's algorithm on kmeans_stats. Convergence as scikit-learn: labels unchanged, or the total
    squared centre shift <= tol * mean per-dimension variance of x."""
    tol_abs = tol * float(x.double().var(dim=0, unbiased=False).mean()) if x.shape[0] > 1 else 0.0
    labels_prev, converged, it = None, False, 0
    for it in range(1, max_iter + 1):
        st = ops.kmeans_stats(x, centres)
        counts = st.counts.to(torch.float64)
        step = st.sum_x / counts.clamp(min=1)[:, None]
        new = (centres.double() + step).to(x.dtype)
        reseeded = _reseed_empty(new, st.counts, st.sqdist, x)
        shift = float(((new.double() - centres.double()) ** 2).sum())
        centres = new
        if verbose:
            print(f"kmeans iter {it}: inertia {float(st.inertia):.6g} shift {shift:.3g} reseeded {reseeded}")
        if reseeded == 0 and labels_prev is not None and torch.equal(st.labels, labels_prev):
            converged = True
            break
        if reseeded == 0 and shift <= tol_abs:
            converged = True
            break
        labels_prev = st.labels
    return centres, it, converged


def _hard_moments(x, centres, covariance_type, reg_covar):
    """Final dispatcher statistics: labels, centres = cluster means, weights = fractions, within-cluster
    covariances around those means (for non-identity types)."""
    st = ops.kmeans_stats(x, centres)
    counts = st.counts.to(torch.float64)
    nonempty = counts > 0
    means = centres.double() + st.sum_x / counts.clamp(min=1)[:, None]
    means = torch.where(nonempty[:, None], means, centres.double())
    weights = counts / counts.sum()
    cov = None
    if covariance_type != "identity":
        cov = _cluster_covariances(x, st.labels, st.counts, means, covariance_type, reg_covar)
    return means, weights, cov, st


def _cluster_covariances(x, labels, counts, means, covariance_type, reg_covar):
    """Within-cluster covariances of a hard assignment (+ reg_covar), in O(N D) extra memory: rows are
    sorted by cluster and each cluster's block gives Z^T Z (full) or sum Z^2 (diag, spherical)."""
    k, d = means.shape
    order = torch.argsort(labels, stable=True)
    sizes = counts.tolist()
    nk = counts.to(torch.float64) + _EPS_NK
    full = covariance_type == "full"
    out = torch.zeros((k, d, d) if full else (k, d), dtype=torch.float64, device=x.device)
    for j, rows in enumerate(torch.split(order, sizes)):
        if rows.numel() == 0:
            continue
        z = x[rows].double() - means[j]
        out[j] = (z.T @ z) / nk[j] if full else (z * z).sum(0) / nk[j]
    if full:
        out.diagonal(dim1=1, dim2=2).add_(reg_covar)
        return out
    out += reg_covar
    return out.mean(1) if covariance_type == "spherical" else out


def _factor(cov, covariance_type):
    """Covariances (float64) -> factors; a clear error when not positive-definite."""
    if cov is None:
        return None
    if covariance_type == "full":
        chol, info = torch.linalg.cholesky_ex(cov)
        bad = torch.nonzero(info).flatten()
        if bad.numel():
            raise ValueError(f"fitted covariance of component {int(bad[0])} is not positive-definite; "
                             "increase reg_covar")
        return chol
    if bool((cov <= 0).any()):
        raise ValueError("a fitted variance is not positive; increase reg_covar")
    return cov.sqrt()


def _m_step(stats: ops.EStepStats, shift, n, covariance_type, reg_covar):
    """Parameters from the E-step statistics (float64). Moments are around `shift`, so the variance
    E[(x-s)^2] - E[x-s]^2 is a difference of small numbers even when the data sit far from 0."""
    nk = stats.nk + _EPS_NK
    delta = stats.sum_x / nk[:, None]
    means = shift.double() + delta
    weights = nk / n
    cov = None
    if covariance_type == "full":
        cov = stats.sum_xx / nk[:, None, None] - delta[:, :, None] * delta[:, None, :]
        cov = 0.5 * (cov + cov.mT)
        cov.diagonal(dim1=1, dim2=2).add_(reg_covar)
    elif covariance_type in ("diag", "spherical"):
        cov = stats.sum_xx / nk[:, None] - delta**2 + reg_covar
        if covariance_type == "spherical":
            cov = cov.mean(1)
    return means, weights / weights.sum(), cov


def em(x, means, weights, factor, covariance_type, max_iter, tol, reg_covar, verbose):
    """EM as scikit-learn runs it: E-step, M-step, stop when the mean log-likelihood changes by < tol."""
    moments = {"full": "full", "diag": "diag", "spherical": "diag"}.get(covariance_type, "none")
    n = x.shape[0]
    lower_bound, converged, it = -math.inf, False, 0
    def cast(t):  # parameters are kept in float64; the E-step runs in the data's dtype
        return None if t is None else t.to(x.dtype)

    for it in range(1, max_iter + 1):
        prev = lower_bound
        stats = ops.estep_stats(x, cast(means), cast(factor), torch.log(weights).to(x.dtype), covariance_type,
                                cast(means), moments)
        means, weights, cov = _m_step(stats, means, n, covariance_type, reg_covar)
        factor = _factor(cov, covariance_type)
        lower_bound = float(stats.log_lik_sum) / n
        if verbose:
            print(f"em iter {it}: mean log-likelihood {lower_bound:.8g}")
        if abs(lower_bound - prev) < tol:
            converged = True
            break
    return means, weights, factor, it, converged, lower_bound


def fit(cls, x, n_components, covariance_type, method, init, max_iter, tol, reg_covar, seed, verbose):
    from .prior import _check_covariance_type, _check_data

    x = _check_data(x)
    _check_covariance_type(covariance_type)
    n = x.shape[0]
    k = int(n_components)
    if k < 1 or k > n:
        raise ValueError(f"n_components must be in [1, n_samples={n}], got {n_components}")
    if method not in ("kmeans", "em"):
        raise ValueError(f"method must be 'kmeans' or 'em', got {method!r}")
    if int(max_iter) < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    if tol < 0 or reg_covar < 0:
        raise ValueError("tol and reg_covar must be non-negative")
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    gen = _generator(seed)

    if method == "em" and isinstance(init, cls):
        if init.dim != x.shape[1] or init.n_components != k or init.covariance_type != covariance_type:
            raise ValueError("init prior must match n_components, dim and covariance_type")
        means, weights, factor = init.means.double().to(x.device), init.weights.double().to(x.device), init.cov_factor
        factor = None if factor is None else factor.double().to(x.device)
        info = {}
    else:
        if isinstance(init, cls):
            init = init.means
        centres = _initial_means(x, k, init, gen)
        centres, it, converged = lloyd(x, centres, int(max_iter), tol, verbose)
        means, weights, cov, st = _hard_moments(x, centres, covariance_type, reg_covar)
        factor = _factor(cov, covariance_type)
        info = {"kmeans_n_iter": it, "kmeans_converged": converged, "inertia": float(st.inertia)}
        if method == "kmeans":
            prior = cls._from_factor(means.to(x.dtype), weights.to(x.dtype), None if factor is None else factor.to(x.dtype),
                                     covariance_type)
            prior.fit_info = {"method": "kmeans", "n_iter": it, "converged": converged, "inertia": float(st.inertia),
                              "labels": st.labels}
            return prior
        weights = weights.clamp(min=_EPS_NK)  # EM starts with every component alive
        weights = weights / weights.sum()

    means, weights, factor, it, converged, lower_bound = em(
        x, means, weights, factor, covariance_type, int(max_iter), tol, reg_covar, verbose
    )
    prior = cls._from_factor(means.to(x.dtype), weights.to(x.dtype), None if factor is None else factor.to(x.dtype),
                             covariance_type)
    prior.fit_info = {"method": "em", "n_iter": it, "converged": converged, "lower_bound": lower_bound, **info}
    return prior
