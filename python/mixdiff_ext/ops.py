"""Thin typed wrappers over torch.ops.mixdiff.*, with fake kernels (torch.compile) and autograd.

Every op takes and returns tensors on one device. float64 inputs compute in float64; float32, float16
and bfloat16 inputs compute and return float32. Sufficient statistics are returned in float64.
Covariance parameters are factors A_k with Sigma_k = A_k A_k^T: nothing for "identity", sigma_k [K] for
"spherical", sigma_kd [K, D] for "diag", lower-triangular Cholesky factors [K, D, D] for "full".
"""
from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import torch

COVARIANCE_TYPES = ("identity", "spherical", "diag", "full")


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _factor_arg(like: torch.Tensor, cov_factor: torch.Tensor | None) -> torch.Tensor:
    """The ops take an empty factor for "identity"; the wrappers accept None."""
    return like.new_empty((0,), dtype=_compute_dtype(like)) if cov_factor is None else cov_factor


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


# --------------------------------------------------------------------------------------------------
# gmm_posterior
# --------------------------------------------------------------------------------------------------
class Posterior(NamedTuple):
    labels: torch.Tensor  # int64 [N], MAP component (ties to the lowest k)
    log_lik: torch.Tensor  # [N], log sum_k w_k N(x; mu_k, Sigma_k)
    resp: torch.Tensor | None  # [N, K] responsibilities, only when asked


def gmm_posterior(
    x: torch.Tensor,
    means: torch.Tensor,
    cov_factor: torch.Tensor | None,
    log_weights: torch.Tensor,
    covariance_type: str = "identity",
    return_resp: bool = False,
) -> Posterior:
    """MAP labels, per-point log-likelihood and (optionally) responsibilities of a Gaussian mixture."""
    labels, log_lik, resp = torch.ops.mixdiff.gmm_posterior(
        x, means, _factor_arg(x, cov_factor), log_weights, covariance_type, return_resp
    )
    return Posterior(labels, log_lik, resp if return_resp else None)


@torch.library.register_fake("mixdiff::gmm_posterior")
def _(x, means, cov_factor, log_weights, covariance_type, return_resp=False):
    n, k = x.shape[0], means.shape[0]
    dtype = _compute_dtype(x)
    resp = x.new_empty((n, k) if return_resp else (0,), dtype=dtype)
    return x.new_empty((n,), dtype=torch.int64), x.new_empty((n,), dtype=dtype), resp


# --------------------------------------------------------------------------------------------------
# estep_stats
# --------------------------------------------------------------------------------------------------
class EStepStats(NamedTuple):
    nk: torch.Tensor  # float64 [K]: sum_n g_nk
    sum_x: torch.Tensor  # float64 [K, D]: sum_n g_nk (x_n - shift_k)
    sum_xx: torch.Tensor | None  # float64 [K, D] (diag) or [K, D, D] (full) around the shift
    log_lik_sum: torch.Tensor  # float64 []: sum_n log p(x_n)


def estep_stats(
    x: torch.Tensor,
    means: torch.Tensor,
    cov_factor: torch.Tensor | None,
    log_weights: torch.Tensor,
    covariance_type: str = "identity",
    shift: torch.Tensor | None = None,
    moments: str = "diag",
) -> EStepStats:
    """Fused E-step: responsibility-weighted sufficient statistics around `shift` (default: the means)."""
    nk, sum_x, sum_xx, ll = torch.ops.mixdiff.estep_stats(
        x, means, _factor_arg(x, cov_factor), log_weights, covariance_type,
        means if shift is None else shift, moments,
    )
    return EStepStats(nk, sum_x, None if moments == "none" else sum_xx, ll)


def _second_moment_shape(moments: str, k: int, d: int) -> tuple[int, ...]:
    return {"full": (k, d, d), "diag": (k, d)}.get(moments, (0,))


@torch.library.register_fake("mixdiff::estep_stats")
def _(x, means, cov_factor, log_weights, covariance_type, shift, moments):
    k, d = means.shape
    f64 = dict(dtype=torch.float64)
    return (
        x.new_empty((k,), **f64),
        x.new_empty((k, d), **f64),
        x.new_empty(_second_moment_shape(moments, k, d), **f64),
        x.new_empty((), **f64),
    )


# --------------------------------------------------------------------------------------------------
# kmeans_stats
# --------------------------------------------------------------------------------------------------
class KMeansStats(NamedTuple):
    labels: torch.Tensor  # int64 [N]
    sqdist: torch.Tensor  # [N]
    counts: torch.Tensor  # int64 [K]
    sum_x: torch.Tensor  # float64 [K, D]: sum over cluster k of (x_n - c_k)
    inertia: torch.Tensor  # float64 []


def kmeans_stats(x: torch.Tensor, centres: torch.Tensor) -> KMeansStats:
    """One fused Lloyd step: nearest-centre labels plus per-cluster counts and sums around the centres."""
    return KMeansStats(*torch.ops.mixdiff.kmeans_stats(x, centres))


@torch.library.register_fake("mixdiff::kmeans_stats")
def _(x, centres):
    n = x.shape[0]
    k, d = centres.shape
    return (
        x.new_empty((n,), dtype=torch.int64),
        x.new_empty((n,), dtype=_compute_dtype(x)),
        x.new_empty((k,), dtype=torch.int64),
        x.new_empty((k, d), dtype=torch.float64),
        x.new_empty((), dtype=torch.float64),
    )


# --------------------------------------------------------------------------------------------------
# prior_sample
# --------------------------------------------------------------------------------------------------
class PriorSample(NamedTuple):
    x: torch.Tensor  # [n, D]
    labels: torch.Tensor  # int64 [n]: the component each sample was drawn from


def _is_tensor_pair(out) -> bool:
    """True for an (x, labels) pair of tensors, the out= of prior_sample."""
    return isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(t, torch.Tensor) for t in out)


def prior_sample(
    means: torch.Tensor,
    log_weights: torch.Tensor,
    cov_factor: torch.Tensor | None,
    covariance_type: str,
    n: int,
    seed: int,
    offset: int = 0,
    *,
    out: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> PriorSample:
    """n draws from the mixture; sample i is row offset + i of the counter-based stream of `seed`, so
    the result does not depend on how the rows are split into calls.

    out: (x, labels) to write into instead of allocating: contiguous, [n, D] in the compute dtype and
    int64 [n], on the means' device. A buffer reused across calls skips the first-touch page faults of a
    fresh large allocation (on the CPU they cost about as much as drawing the normals).
    """
    factor = _factor_arg(means, cov_factor)
    if out is None:
        return PriorSample(*torch.ops.mixdiff.prior_sample(means, log_weights, factor, covariance_type, n, seed,
                                                            offset))
    if not _is_tensor_pair(out):
        raise TypeError(f"out must be a pair of tensors (x, labels), got {type(out).__name__}")
    x, labels = out
    torch.ops.mixdiff.prior_sample.out(means, log_weights, factor, covariance_type, n, seed, offset, x=x,
                                       labels=labels)
    return PriorSample(x, labels)


@torch.library.register_fake("mixdiff::prior_sample")
def _(means, log_weights, cov_factor, covariance_type, n, seed, offset=0):
    return (
        means.new_empty((n, means.shape[1]), dtype=_compute_dtype(means)),
        means.new_empty((n,), dtype=torch.int64),
    )


@torch.library.register_fake("mixdiff::prior_sample.out")
def _(means, log_weights, cov_factor, covariance_type, n, seed, offset=0, *, x, labels):
    return None


# --------------------------------------------------------------------------------------------------
# q_sample
# --------------------------------------------------------------------------------------------------
class ForwardSample(NamedTuple):
    x_t: torch.Tensor  # [B, D]
    eps: torch.Tensor  # [B, D]: the standard normal noise used (the training target)
    labels: torch.Tensor  # int64 [B]: the component of each row (given, or assigned to the nearest centre)


def q_sample(
    x0: torch.Tensor,
    signal: torch.Tensor,
    noise_scale: torch.Tensor,
    means: torch.Tensor,
    cov_factor: torch.Tensor | None,
    covariance_type: str,
    seed: int,
    offset: int = 0,
    labels: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
) -> ForwardSample:
    """Forward noising centred on each row's component, in one pass over x0:
    x_t = mu_j + signal (x0 - mu_j) + noise_scale (A_j eps).

    signal, noise_scale: [B] per-row coefficients (sqrt(abar_t), sqrt(1 - abar_t) in discrete time;
    m(t), s(t) in continuous time). labels=None assigns each row to its nearest mean in the same pass.
    noise=None draws eps from row offset + i of the counter-based stream of `seed`; otherwise it is used
    as eps.
    """
    return ForwardSample(*torch.ops.mixdiff.q_sample(
        x0, labels, signal, noise_scale, means, _factor_arg(means, cov_factor), covariance_type, noise, seed, offset
    ))


@torch.library.register_fake("mixdiff::q_sample")
def _(x0, labels, signal, noise_scale, means, cov_factor, covariance_type, noise, seed, offset=0):
    dtype = _compute_dtype(x0)
    return x0.new_empty(x0.shape, dtype=dtype), x0.new_empty(x0.shape, dtype=dtype), \
        x0.new_empty((x0.shape[0],), dtype=torch.int64)


# --------------------------------------------------------------------------------------------------
# reverse_step
# --------------------------------------------------------------------------------------------------
class StepCoefficients(NamedTuple):
    """Coefficients of one reverse step in y = x - mu_j (docs/method.md derives them per sampler). With
    O = A_j out for an "epsilon" or "v_prediction" model output and O = out for a "sample" one (the
    network predicts y0 = x0 - mu_j; A_j is not applied):

        y0_hat = x0_from_x y + x0_from_out O          (optionally clipped to the component's box in x space)
        e      = eps_from_x y + eps_from_out O        (the step's A_j eps_hat)
        y'     = coef_x y + coef_x0 y0_hat + coef_eps e + coef_noise (A_j z)
                 + coef_x0_prev (H1 - mu_j) + coef_x0_prev2 (H2 - mu_j),

    H1, H2 the x0_history entries (earlier steps' x0_hat, for multistep solvers). The defaults of the last
    four make a six-number step of an eps prediction: e = A_j eps_hat and no history."""
    x0_from_x: float
    x0_from_out: float
    coef_x: float
    coef_x0: float
    coef_eps: float
    coef_noise: float
    eps_from_x: float = 0.0
    eps_from_out: float = 1.0
    coef_x0_prev: float = 0.0
    coef_x0_prev2: float = 0.0


PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


class ReverseStep(NamedTuple):
    prev_sample: torch.Tensor  # [B, D]
    pred_original_sample: torch.Tensor | None  # [B, D] x0_hat = mu_j + y0_hat, when asked


def _clip_bound(x: torch.Tensor, means: torch.Tensor, bound, name: str) -> torch.Tensor | None:
    """One side of clip as the op takes it: None, or a contiguous [K, D] tensor in x's compute dtype on x's
    device. A tensor that is not floating or does not broadcast to [K, D] is passed on for the op to reject."""
    if bound is None:
        return None
    shape, dtype = tuple(means.shape), _compute_dtype(x)
    if isinstance(bound, torch.Tensor):
        if not bound.is_floating_point():
            return bound
        try:
            return bound.to(device=x.device, dtype=dtype).expand(shape).contiguous()
        except RuntimeError:
            return bound
    if isinstance(bound, bool) or not isinstance(bound, numbers.Real):
        raise TypeError(f"reverse_step: {name} must be None, a number or a tensor, got {type(bound).__name__}")
    return torch.full(shape, float(bound), dtype=dtype, device=x.device)


def reverse_step(
    x: torch.Tensor,
    model_output: torch.Tensor,
    labels: torch.Tensor,
    means: torch.Tensor,
    cov_factor: torch.Tensor | None,
    covariance_type: str,
    coefficients: StepCoefficients,
    seed: int,
    step: int,
    offset: int = 0,
    clip: tuple | None = None,
    noise: torch.Tensor | None = None,
    return_x0: bool = False,
    prediction_type: str = "epsilon",
    x0_history: tuple[torch.Tensor, ...] | list[torch.Tensor] | None = (),
) -> ReverseStep:
    """One fused reverse step for every sampler (ancestral, DDIM, Euler-Maruyama, probability flow,
    Langevin corrector, multistep DPM-Solver++): see StepCoefficients. z is drawn only when coef_noise != 0,
    from row offset + i of stream (reverse, step) of `seed`, unless `noise` gives it.

    clip: None, or (lo, hi) bounding x0_hat in x space, each side None (open), a number or a tensor that
    broadcasts to [K, D] (a box per component and dimension). prediction_type: what model_output is,
    "epsilon", "v_prediction" (both enter as A_j out) or "sample" (y0 = x0 - mu_j). x0_history: 0, 1 or 2
    earlier x0_hat [B, D] (H1, H2), weighted by coef_x0_prev and coef_x0_prev2."""
    lo, hi = (None, None) if clip is None else clip
    prev, x0 = torch.ops.mixdiff.reverse_step(
        x, model_output, labels, means, _factor_arg(means, cov_factor), covariance_type,
        [float(c) for c in coefficients], _clip_bound(x, means, lo, "clip[0]"), _clip_bound(x, means, hi, "clip[1]"),
        noise, seed, offset, step, return_x0, prediction_type, list(x0_history or ()),
    )
    return ReverseStep(prev, x0 if return_x0 else None)


@torch.library.register_fake("mixdiff::reverse_step")
def _(x, model_output, labels, means, cov_factor, covariance_type, coefficients, clip_lo, clip_hi, noise,
      seed, offset, step, return_x0=False, prediction_type="epsilon", x0_history=None):
    # The checks that need no data, as the kernels make them.
    x0_history = x0_history or ()
    torch._check(len(coefficients) == 10, lambda: f"mixdiff: coefficients must be 10 numbers, got {len(coefficients)}")
    torch._check(len(x0_history) <= 2,
                 lambda: f"mixdiff: x0_history must hold at most 2 tensors, got {len(x0_history)}")
    torch._check(prediction_type in PREDICTION_TYPES, lambda: "mixdiff: prediction_type must be 'epsilon', "
                 f"'v_prediction' or 'sample', got '{prediction_type}'")
    for name, bound in (("clip_lo", clip_lo), ("clip_hi", clip_hi)):
        torch._check(bound is None or tuple(bound.shape) == tuple(means.shape),
                     lambda: f"mixdiff: {name} must have shape [K, D] = {list(means.shape)}, got {list(bound.shape)}")
    dtype = _compute_dtype(x)
    return x.new_empty(x.shape, dtype=dtype), x.new_empty(x.shape if return_x0 else (0,), dtype=dtype)


# --------------------------------------------------------------------------------------------------
# ngmg
# --------------------------------------------------------------------------------------------------
NGMG_KINDS = ("potential", "log")
NGMG_REDUCTIONS = ("mean", "sum", "none")


class NGMG(NamedTuple):
    loss: torch.Tensor  # [N]: -G(pred) ("potential") or -log sum_k w_k N(pred; m_k, sigma_k^2 I) ("log")
    grad: torch.Tensor  # [N, D]: the gradient of each row's loss with respect to its prediction


def _ngmg_sigma(pred: torch.Tensor, sigma) -> torch.Tensor:
    """sigma as the op takes it: a tensor, or a Python number made a 0-d tensor on pred's device."""
    if isinstance(sigma, torch.Tensor):
        return sigma
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real):
        raise TypeError(f"ngmg: sigma must be a float or a tensor, got {type(sigma).__name__}")
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"ngmg: sigma must be finite and positive, got {sigma}")
    return torch.tensor(float(sigma), dtype=_compute_dtype(pred), device=pred.device)


def _check_ngmg_args(pred, modes, weights, normalized, kind) -> None:
    for name, value in (("pred", pred), ("modes", modes), ("weights", weights)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"ngmg: {name} must be a tensor, got {type(value).__name__}")
    if not isinstance(normalized, bool):
        raise TypeError(f"ngmg: normalized must be a bool, got {type(normalized).__name__}")
    if not isinstance(kind, str):
        raise TypeError(f"ngmg: kind must be a str, got {type(kind).__name__}")
    if kind not in NGMG_KINDS:
        raise ValueError(f"ngmg: kind must be one of {NGMG_KINDS}, got {kind!r}")


def ngmg(
    pred: torch.Tensor,
    modes: torch.Tensor,
    weights: torch.Tensor,
    sigma: torch.Tensor | float,
    normalized: bool = False,
    kind: str = "potential",
) -> NGMG:
    """Negative Gaussian mixture gradient of each row of pred [N, D] against modes [K, D] with weights [K]
    (shared) or [N, K] (per row, >= 0) and widths sigma (a float, a one-element tensor or [K]), fused:

    kind="potential": loss = -sum_k w_k c_k exp(-||y - m_k||^2 / (2 sigma_k^2)), c_k = 1, or the normalised
    Gaussian constant (2 pi sigma_k^2)^(-D/2) with normalized=True; kind="log": loss = -log sum_k w_k
    N(y; m_k, sigma_k^2 I) (always normalised; needs a positive weight in every row). grad is the loss's
    gradient with respect to y. Max-shifted: far predictions give a -0 potential with a zero gradient, and
    a finite log loss. docs/method.md ("NGMG") has the details.
    """
    _check_ngmg_args(pred, modes, weights, normalized, kind)
    loss, grad = torch.ops.mixdiff.ngmg(pred, modes, weights, _ngmg_sigma(pred, sigma), normalized, kind)
    return NGMG(loss, grad)


def ngmg_loss(
    pred: torch.Tensor,
    modes: torch.Tensor,
    weights: torch.Tensor,
    sigma: torch.Tensor | float,
    reduction: str = "mean",
    normalized: bool = False,
    kind: str = "potential",
) -> torch.Tensor:
    """The NGMG loss of `ngmg`, reduced ("mean", "sum" or "none"), differentiable with respect to pred: its
    backward is the op's fused gradient times the incoming gradient. modes, weights and sigma are constants
    (no gradient flows to them)."""
    if reduction not in NGMG_REDUCTIONS:
        raise ValueError(f"ngmg_loss: reduction must be one of {NGMG_REDUCTIONS}, got {reduction!r}")
    loss = ngmg(pred, modes, weights, sigma, normalized, kind).loss
    if reduction == "mean":
        return loss.mean()
    return loss.sum() if reduction == "sum" else loss


@torch.library.register_fake("mixdiff::ngmg")
def _(pred, modes, weights, sigma, normalized, kind):
    n, d = pred.shape
    dtype = _compute_dtype(pred)
    return pred.new_empty((n,), dtype=dtype), pred.new_empty((n, d), dtype=dtype)


def _ngmg_setup(ctx, inputs, output):
    ctx.pred_dtype = inputs[0].dtype
    ctx.save_for_backward(output[1])
    # The gradient output is a value, not a differentiable function of pred (that would need the Hessian).
    ctx.mark_non_differentiable(output[1])


def _ngmg_backward(ctx, grad_loss, _grad_grad):
    (grad,) = ctx.saved_tensors
    grad_pred = None
    if ctx.needs_input_grad[0]:
        grad_pred = (grad_loss.to(grad.dtype).unsqueeze(1) * grad).to(ctx.pred_dtype)
    return grad_pred, None, None, None, None, None


torch.library.register_autograd("mixdiff::ngmg", _ngmg_backward, setup_context=_ngmg_setup)
