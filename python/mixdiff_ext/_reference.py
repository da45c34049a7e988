"""Pure-torch references of every op: the test oracle. Straightforward, float64-capable, O(N K) memory.

Each function has the op's name, arguments and outputs (see ops.py), computed in the dtype of its
inputs (pass float64 for an accurate oracle).
"""
from __future__ import annotations

import math

import torch


def _sq_diff(x: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """[N, K, D] differences x_n - mu_k."""
    return x[:, None, :] - means[None, :, :]


def assign_nearest(x, centres):
    d2 = (_sq_diff(x, centres) ** 2).sum(-1)
    if d2.shape[0] == 0:
        return torch.empty(0, dtype=torch.int64), d2.new_empty(0)
    sqdist, labels = d2.min(dim=1)  # torch.min returns the first index of the minimum
    return labels, sqdist


def precision_factor(cov_factor, covariance_type, d):
    """The factor P with ||P (x - mu)||^2 the Mahalanobis distance (identity: None)."""
    if covariance_type == "identity":
        return None
    if covariance_type == "full":
        eye = torch.eye(d, dtype=cov_factor.dtype).expand_as(cov_factor)
        return torch.linalg.solve_triangular(cov_factor.tril(), eye, upper=False)
    return 1.0 / cov_factor


def log_joint(x, means, cov_factor, log_weights, covariance_type):
    """[N, K] log w_k + log N(x_n; mu_k, A_k A_k^T)."""
    n, d = x.shape
    diff = _sq_diff(x, means)
    prec = precision_factor(cov_factor, covariance_type, d)
    if covariance_type == "identity":
        maha, logdet = (diff**2).sum(-1), torch.zeros_like(log_weights)
    elif covariance_type == "spherical":
        maha, logdet = (diff**2).sum(-1) * prec**2, d * torch.log(prec)
    elif covariance_type == "diag":
        maha, logdet = ((diff * prec) ** 2).sum(-1), torch.log(prec).sum(-1)
    elif covariance_type == "full":
        y = torch.einsum("kij,nkj->nki", prec, diff)
        maha, logdet = (y**2).sum(-1), torch.log(torch.diagonal(prec, dim1=1, dim2=2)).sum(-1)
    else:
        raise ValueError(covariance_type)
    return log_weights - 0.5 * d * math.log(2 * math.pi) + logdet - 0.5 * maha


def gmm_posterior(x, means, cov_factor, log_weights, covariance_type="identity", return_resp=False):
    joint = log_joint(x, means, cov_factor, log_weights, covariance_type)
    log_lik = torch.logsumexp(joint, dim=1)
    labels = joint.argmax(dim=1) if x.shape[0] else torch.empty(0, dtype=torch.int64)
    resp = torch.exp(joint - log_lik[:, None]) if return_resp else None
    return labels, log_lik, resp


def estep_stats(x, means, cov_factor, log_weights, covariance_type="identity", shift=None, moments="diag"):
    shift = means if shift is None else shift
    joint = log_joint(x, means, cov_factor, log_weights, covariance_type)
    log_lik = torch.logsumexp(joint, dim=1)
    g = torch.exp(joint - log_lik[:, None])  # [N, K]
    z = _sq_diff(x, shift)  # [N, K, D]
    nk = g.sum(0)
    sum_x = torch.einsum("nk,nkd->kd", g, z)
    sum_xx = None
    if moments == "diag":
        sum_xx = torch.einsum("nk,nkd->kd", g, z * z)
    elif moments == "full":
        sum_xx = torch.einsum("nk,nkd,nke->kde", g, z, z)
    return nk, sum_x, sum_xx, log_lik.sum()


def kmeans_stats(x, centres):
    labels, sqdist = assign_nearest(x, centres)
    k, d = centres.shape
    counts = torch.bincount(labels, minlength=k)
    sum_x = torch.zeros(k, d, dtype=x.dtype).index_add_(0, labels, x - centres[labels])
    return labels, sqdist, counts, sum_x, sqdist.sum()
