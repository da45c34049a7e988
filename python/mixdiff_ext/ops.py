"""Thin typed wrappers over torch.ops.mixdiff.*, with fake kernels (torch.compile) and autograd.

Every op takes and returns tensors on one device. float64 inputs compute in float64; float32, float16
and bfloat16 inputs compute and return float32. Sufficient statistics are returned in float64.
Covariance parameters are factors A_k with Sigma_k = A_k A_k^T: nothing for "identity", sigma_k [K] for
"spherical", sigma_kd [K, D] for "diag", lower-triangular Cholesky factors [K, D, D] for "full".
"""
from __future__ import annotations

from typing import NamedTuple

import torch

COVARIANCE_TYPES = ("identity", "spherical", "diag", "full")
MOMENTS = ("none", "diag", "full")


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _empty_factor(x: torch.Tensor) -> torch.Tensor:
    return x.new_empty((0,), dtype=_compute_dtype(x))


# --------------------------------------------------------------------------------------------------
# assign_nearest
# --------------------------------------------------------------------------------------------------
class Assignment(NamedTuple):
    labels: torch.Tensor  # int64 [N]
    sqdist: torch.Tensor  # [N], differentiable with respect to x and centres


def assign_nearest(x: torch.Tensor, centres: torch.Tensor) -> Assignment:
    """Nearest-centre dispatcher: labels[n] = argmin_k ||x_n - c_k||^2 (ties to the lowest k)."""
    labels, sqdist = torch.ops.mixdiff.assign_nearest(x, centres)
    return Assignment(labels, sqdist)


@torch.library.register_fake("mixdiff::assign_nearest")
def _(x, centres):
    n = x.shape[0]
    return x.new_empty((n,), dtype=torch.int64), x.new_empty((n,), dtype=_compute_dtype(x))


def _assign_nearest_setup(ctx, inputs, output):
    x, centres = inputs
    ctx.save_for_backward(x, centres, output[0])


def _assign_nearest_backward(ctx, grad_labels, grad_sqdist):
    x, centres, labels = ctx.saved_tensors
    if grad_sqdist is None:
        return None, None
    diff = x.to(grad_sqdist.dtype) - centres.to(grad_sqdist.dtype)[labels]
    g = 2.0 * grad_sqdist.unsqueeze(1) * diff
    grad_x = g.to(x.dtype) if ctx.needs_input_grad[0] else None
    grad_c = None
    if ctx.needs_input_grad[1]:
        grad_c = torch.zeros(centres.shape, dtype=g.dtype, device=g.device).index_add_(0, labels, -g)
        grad_c = grad_c.to(centres.dtype)
    return grad_x, grad_c


torch.library.register_autograd(
    "mixdiff::assign_nearest", _assign_nearest_backward, setup_context=_assign_nearest_setup
)
