"""Noise schedules and the per-step coefficients of every sampler, for Gaussian-mixture priors.

All samplers act on y = x - mu_j, the offset from the row's component mean, with the component's
covariance factor A_j (Sigma_j = A_j A_j^T). The forward process is

    x_t = mu_j + signal(t) (x0 - mu_j) + noise_scale(t) A_j eps,      eps ~ N(0, I),

with (signal, noise_scale) = (sqrt(abar_t), sqrt(1 - abar_t)) in discrete time, (m(t), s(t)) for the VP
SDE and (1, sigma(t)) for the VE SDE. A network predicts eps, y0 or v (`prediction_coefficients`); one
reverse step is the linear map of `ops.StepCoefficients` (O = A_j out, or out for a y0 prediction):

    y0_hat = x0_from_x y + x0_from_out O                         (optionally clipped in x space)
    A eps_hat = eps_from_x y + eps_from_out O
    y'     = coef_x y + coef_x0 y0_hat + coef_eps (A eps_hat) + coef_noise (A z)
             + coef_x0_prev (x0_hat' - mu_j) + coef_x0_prev2 (x0_hat'' - mu_j),   z ~ N(0, I),

evaluated by `ops.reverse_step` (x0_hat', x0_hat'': the previous steps' predictions, for multistep
DPM-Solver++). Every coefficient is a plain Python float computed in float64. Each process
(`DiscreteSchedule`, `VPSDE`, `VESDE`) owns its time grid and builds a sampler's `plan`: the PlanSteps
every sampling loop runs (sampling.run_plan). docs/method.md ("Schedules and samplers") lists each
sampler's coefficients.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np
import torch

from .ops import PREDICTION_TYPES, StepCoefficients

__all__ = [
    "DiscreteSchedule",
    "PlanStep",
    "VESDE",
    "VPSDE",
    "cosine_betas",
    "linear_betas",
    "scaled_linear_betas",
]

VARIANCE_TYPES = ("fixed_small", "fixed_large")
DDPM_SAMPLERS = ("ancestral", "ddim", "dpmsolver++", "sde-dpmsolver++")
SGM_SAMPLERS = ("euler_maruyama", "pc", "ode", "dpmsolver++", "sde-dpmsolver++")
DEFAULT_SOLVER_STEPS = 20  # steps=None for the DPM-Solver++ samplers (bench/bench_quality.py)
# MixDDPM's, the demo's and the CLI's sampler: at 20 steps the stochastic variant is within 10% of
# ancestral-1000 (clipped alike) where the deterministic one stalls at 4x on mix16 (README, 2026-12-04)
DEFAULT_SAMPLER = "sde-dpmsolver++"
_BETA_TILDE_MIN = 1e-20  # the posterior variance is clamped here (as diffusers' DDPMScheduler does)


# --------------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------------
def _positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) and not (
        isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point()
    ):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _finite_float(value, name: str) -> float:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a real number, got bool")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}") from None
    if not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {out}")
    return out


def _timestep(value, name: str) -> int:
    """A Python int from an int / 0-d or 1-element integer tensor."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a single timestep, got a tensor of shape {tuple(value.shape)}")
        if value.dtype == torch.bool or value.is_complex():
            raise TypeError(f"{name} must be an integer timestep, got dtype {value.dtype}")
        if value.is_floating_point() and not float(value).is_integer():
            raise TypeError(f"{name} must be an integer timestep, got {float(value)}")
        return int(value.item())
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer timestep, got bool")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    try:
        import numpy as np

        if isinstance(value, np.integer):
            return int(value)
    except ImportError:  # pragma: no cover
        pass
    raise TypeError(f"{name} must be an integer timestep, got {value!r}")


# --------------------------------------------------------------------------------------------------
# discrete beta schedules (float64)
# --------------------------------------------------------------------------------------------------
def linear_betas(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                 dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """[T] betas evenly spaced from beta_start to beta_end (diffusers' "linear"), computed in `dtype`
    (diffusers' schedulers use float32)."""
    T = _positive_int(T, "T")
    beta_start, beta_end = _finite_float(beta_start, "beta_start"), _finite_float(beta_end, "beta_end")
    return torch.linspace(beta_start, beta_end, T, dtype=dtype)


def scaled_linear_betas(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                        dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """[T] betas whose square roots are evenly spaced (diffusers' "scaled_linear"), computed in `dtype`."""
    T = _positive_int(T, "T")
    beta_start, beta_end = _finite_float(beta_start, "beta_start"), _finite_float(beta_end, "beta_end")
    if beta_start < 0 or beta_end < 0:
        raise ValueError(f"beta_start and beta_end must be >= 0, got {beta_start}, {beta_end}")
    return torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=dtype) ** 2


def cosine_betas(T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """[T] betas of the cosine schedule abar(u) = cos((u + s) / (1 + s) pi / 2)^2, u = t / T:
    beta_t = min(1 - abar((t + 1) / T) / abar(t / T), max_beta), float64. With the defaults these are
    diffusers' "squaredcos_cap_v2" betas before its cast to float32."""
    T = _positive_int(T, "T")
    s, max_beta = _finite_float(s, "s"), _finite_float(max_beta, "max_beta")
    if s < 0:
        raise ValueError(f"s must be >= 0, got {s}")
    if not 0 < max_beta < 1:
        raise ValueError(f"max_beta must be in (0, 1), got {max_beta}")

    def abar(u: float) -> float:
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    return torch.tensor([min(1 - abar((i + 1) / T) / abar(i / T), max_beta) for i in range(T)], dtype=torch.float64)


_NAMED = {
    "linear": linear_betas,
    "scaled_linear": scaled_linear_betas,
    "cosine": cosine_betas,
    "squaredcos_cap_v2": cosine_betas,
}


SPACINGS = ("leading", "trailing", "linspace")
SOLVER_TYPES = ("midpoint", "heun")


def check_prediction_type(prediction_type) -> str:
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
    return prediction_type


def prediction_coefficients(signal: float, noise_scale: float, prediction_type: str = "epsilon") -> dict:
    """How y0_hat and A eps_hat follow from y = x - mu_j and the network output at a time with marginal
    y = signal y0 + noise_scale A eps (diffusers' prediction types, in centred coordinates):

        "epsilon":      out = eps,                 y0 = (y - s A out) / m,   A eps = A out
        "sample":       out = y0 = x0 - mu_j,      y0 = out,                 A eps = (y - m out) / s
        "v_prediction": out = m eps - s A^-1 y0,   y0 = m y - s A out,       A eps = s y + m A out

    (v needs m^2 + s^2 = 1: DDPM and the VP SDE.) Returns StepCoefficients' x0_from_x, x0_from_out,
    eps_from_x, eps_from_out as a dict."""
    m, s = float(signal), float(noise_scale)
    check_prediction_type(prediction_type)
    if prediction_type == "epsilon":
        return dict(x0_from_x=1.0 / m, x0_from_out=-s / m, eps_from_x=0.0, eps_from_out=1.0)
    if prediction_type == "sample":
        if s == 0.0:
            raise ValueError("prediction_type='sample' needs a noise scale > 0 at every network call")
        return dict(x0_from_x=0.0, x0_from_out=1.0, eps_from_x=1.0 / s, eps_from_out=-m / s)
    if abs(m * m + s * s - 1.0) > 1e-6:
        raise ValueError("prediction_type='v_prediction' needs a variance-preserving process (signal^2 + "
                         f"noise_scale^2 = 1), got {m}^2 + {s}^2")
    return dict(x0_from_x=m, x0_from_out=-s, eps_from_x=s, eps_from_out=m)


def step_coefficients(signal: float, noise_scale: float, prediction_type: str, coef_x: float, coef_x0: float,
                      coef_eps: float, coef_noise: float, coef_x0_prev: float = 0.0,
                      coef_x0_prev2: float = 0.0) -> StepCoefficients:
    """StepCoefficients of an update y' = coef_x y + coef_x0 y0_hat + coef_eps A eps_hat + coef_noise A z
    (+ the multistep terms) at a time with marginal (signal, noise_scale)."""
    p = prediction_coefficients(signal, noise_scale, prediction_type)
    return StepCoefficients(p["x0_from_x"], p["x0_from_out"], coef_x, coef_x0, coef_eps, coef_noise,
                            p["eps_from_x"], p["eps_from_out"], coef_x0_prev, coef_x0_prev2)


class PlanStep(NamedTuple):
    """One network evaluation and fused update of a sampler's plan.

    net_time: the network's time input; coefficients: the update (ops.StepCoefficients); step_id: addresses
    the step's noise stream; signal, noise_scale: the marginal at net_time (y = signal y0 + noise_scale A eps),
    which re-derives A eps_hat from a clipped y0_hat (`clipped_direction`)."""

    net_time: float
    coefficients: StepCoefficients
    step_id: int
    signal: float
    noise_scale: float


def clipped_direction(step: PlanStep) -> PlanStep:
    """The same step with A eps_hat re-derived from the (clipped) y0_hat, A eps = (y - m y0_hat) / s, so that a
    clipped x0_hat also steers samplers whose update uses eps_hat (DDIM, Euler-Maruyama, probability flow,
    Langevin); diffusers' use_clipped_model_output. Unchanged when coef_eps = 0 or s = 0."""
    c, m, s = step.coefficients, step.signal, step.noise_scale
    if c.coef_eps == 0.0 or s == 0.0:
        return step
    return step._replace(coefficients=c._replace(coef_x=c.coef_x + c.coef_eps / s,
                                                 coef_x0=c.coef_x0 - c.coef_eps * m / s, coef_eps=0.0))


def dpmsolver_orders(steps: int, order: int, lower_order_final: bool = True) -> list[int]:
    """The order DPM-Solver++ uses at each of `steps` steps, as diffusers' DPMSolverMultistepScheduler
    chooses it: warm-up (step i uses at most order i + 1), first order on the last step (which goes to
    zero noise), second order on the one before when lower_order_final and steps < 15."""
    order = _positive_int(order, "order")
    if order > 3:
        raise ValueError(f"order must be 1, 2 or 3, got {order}")
    orders = []
    for i in range(steps):
        lower_second = lower_order_final and steps < 15 and i == steps - 2
        if order == 1 or i < 1 or i == steps - 1:
            orders.append(1)
        elif order == 2 or i < 2 or lower_second:
            orders.append(2)
        else:
            orders.append(3)
    return orders


def dpmsolver_update(alphas: Sequence[float], sigmas: Sequence[float], i: int, order: int, sde: bool = False,
                     solver_type: str = "midpoint") -> tuple[float, float, float, float, float]:
    """DPM-Solver++ (Lu et al. 2022; data prediction, multistep) from grid point i to i + 1, as linear
    coefficients (coef_x, coef_x0, coef_x0_prev, coef_x0_prev2, coef_noise) on y, y0_hat_i, y0_hat_{i-1},
    y0_hat_{i-2} and A z. alphas / sigmas: the marginal y = alpha y0 + sigma A eps at the grid points;
    sigma = 0 at the end gives y' = alpha y0_hat. sde: the SDE variant ("sde-dpmsolver++"). Expanded from
    diffusers' first / second / third order updates (D0, D1, D2 written out in the model outputs)."""
    if solver_type not in SOLVER_TYPES:
        raise ValueError(f"solver_type must be one of {SOLVER_TYPES}, got {solver_type!r}")
    a_t, s_t, s_0 = alphas[i + 1], sigmas[i + 1], sigmas[i]
    if s_t == 0.0:  # lambda_t = inf: every order reduces to the data prediction
        return 0.0, a_t, 0.0, 0.0, 0.0

    def lam(j: int) -> float:
        return math.log(alphas[j]) - math.log(sigmas[j])

    h = lam(i + 1) - lam(i)
    if sde:
        cx = s_t / s_0 * math.exp(-h)
        a0 = a_t * -math.expm1(-2.0 * h)
        cz = s_t * math.sqrt(-math.expm1(-2.0 * h))
    else:
        cx = s_t / s_0
        a0 = a_t * -math.expm1(-h)
        cz = 0.0
    if order == 1:
        return cx, a0, 0.0, 0.0, cz
    r0 = (lam(i) - lam(i - 1)) / h
    if order == 2:
        if solver_type == "midpoint":
            a1 = 0.5 * a0
        elif sde:
            a1 = a_t * (-math.expm1(-2.0 * h) / (-2.0 * h) + 1.0)
        else:
            a1 = a_t * (math.expm1(-h) / h + 1.0)
        # a0 D0 + a1 D1, D0 = m0, D1 = (m0 - m1) / r0
        return cx, a0 + a1 / r0, -a1 / r0, 0.0, cz
    r1 = (lam(i - 1) - lam(i - 2)) / h
    if sde:
        a1 = a_t * (-math.expm1(-2.0 * h) / (-2.0 * h) + 1.0)
        a2 = a_t * ((-math.expm1(-2.0 * h) - 2.0 * h) / (2.0 * h) ** 2 - 0.5)
    else:
        a1 = a_t * (math.expm1(-h) / h + 1.0)
        a2 = -a_t * ((math.expm1(-h) + h) / h**2 - 0.5)
    # a0 D0 + a1 D1 + a2 D2 with D1 = D1_0 + r0 / (r0 + r1) u, D2 = u / (r0 + r1), u = D1_0 - D1_1,
    # D1_0 = (m0 - m1) / r0, D1_1 = (m1 - m2) / r1; b is the coefficient of u
    b = a1 * r0 / (r0 + r1) + a2 / (r0 + r1)
    return cx, a0 + (a1 + b) / r0, -(a1 + b) / r0 - b / r1, b / r1, cz


def dpmsolver_plan(net_times: Sequence[float], step_ids: Sequence[int], alphas: Sequence[float],
                   sigmas: Sequence[float], order: int = 2, sde: bool = False, solver_type: str = "midpoint",
                   lower_order_final: bool = True, prediction_type: str = "epsilon") -> list[PlanStep]:
    """The PlanSteps of multistep DPM-Solver++ over grid points 0..n (alphas, sigmas: n + 1 values, the network
    evaluated at points 0..n-1 with times net_times): the process supplies its grid, this is the solver."""
    n = len(net_times)
    plan = []
    for i, o in enumerate(dpmsolver_orders(n, order, lower_order_final)):
        cx, c0, c1, c2, cz = dpmsolver_update(alphas, sigmas, i, o, sde, solver_type)
        coefs = step_coefficients(alphas[i], sigmas[i], prediction_type, cx, c0, 0.0, cz, c1, c2)
        plan.append(PlanStep(float(net_times[i]), coefs, int(step_ids[i]), float(alphas[i]), float(sigmas[i])))
    return plan


def spaced_timesteps(T: int, steps: int, spacing: str = "leading", steps_offset: int = 0) -> list[int]:
    """`steps` descending timesteps in [0, T) by diffusers' spacing rules (DDPMScheduler / DDIMScheduler):
    "leading": arange(steps) * (T // steps) reversed, plus steps_offset; "trailing": round(arange(T, 0,
    -T / steps)) - 1; "linspace": round(linspace(0, T - 1, steps)) reversed."""
    steps = _positive_int(steps, "steps")
    if steps > T:
        raise ValueError(f"steps must be <= the number of training timesteps {T}, got {steps}")
    if spacing not in SPACINGS:
        raise ValueError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
    if spacing == "linspace":
        ts = np.linspace(0, T - 1, steps).round()[::-1].astype(np.int64)
    elif spacing == "leading":
        ts = (np.arange(0, steps) * (T // steps)).round()[::-1].astype(np.int64) + steps_offset
    else:
        ts = np.round(np.arange(T, 0, -T / steps)).astype(np.int64) - 1
    if ts.max() >= T:
        raise ValueError(f"steps_offset={steps_offset} puts timestep {int(ts.max())} past the {T} training timesteps")
    return [int(t) for t in ts]


def solver_timesteps(T: int, steps: int, spacing: str = "linspace", steps_offset: int = 0) -> list[int]:
    """The network timesteps of a multistep solver whose last step goes to zero noise (diffusers'
    DPMSolverMultistepScheduler): steps + 1 points by `spacing_timesteps` with the last (t ~ 0) dropped;
    "trailing" is already n points ending near T / steps."""
    if spacing == "trailing":
        return spaced_timesteps(T, steps, spacing)
    if _positive_int(steps, "steps") >= T:
        raise ValueError(f"steps must be < the number of training timesteps {T} for a solver, got {steps}")
    if spacing == "leading":  # diffusers: step ratio T // (steps + 1), the offset added after dropping
        ratio = T // (steps + 1)
        return [i * ratio + steps_offset for i in range(steps, 0, -1)]
    return spaced_timesteps(T, steps + 1, spacing)[:-1]


class DiscreteSchedule:
    """A discrete-time (DDPM) noise schedule: betas [T] and the derived float64 tensors.

    abar_t = prod_{i <= t} (1 - beta_i); timestep t in [0, T) indexes them (t = 0 the least noisy).
    The coefficient methods use only alphas_cumprod (as diffusers' schedulers do): between two
    timesteps t > prev_t the step's alpha_t = abar_t / abar_prev and beta_t = 1 - alpha_t, with
    abar_prev = 1 (or `final_alpha_cumprod` for DDIM) when prev_t < 0.
    """

    def __init__(self, betas, alphas_cumprod=None):
        betas = torch.as_tensor(betas)
        if not betas.is_floating_point():
            raise TypeError(f"betas must have a floating-point dtype, got {betas.dtype}")
        betas = betas.detach().to("cpu", torch.float64)
        if betas.dim() != 1 or betas.numel() < 1:
            raise ValueError(f"betas must be 1-D and non-empty, got shape {tuple(betas.shape)}")
        if not bool(torch.isfinite(betas).all()):
            raise ValueError("betas contains NaN or inf")
        if bool((betas <= 0).any()) or bool((betas >= 1).any()):
            raise ValueError("betas must lie in (0, 1)")
        self.betas = betas
        self.alphas = 1.0 - betas
        if alphas_cumprod is None:
            abar = torch.cumprod(self.alphas, 0)
        else:
            abar = torch.as_tensor(alphas_cumprod).detach().to("cpu", torch.float64)
            if abar.shape != betas.shape:
                raise ValueError(f"alphas_cumprod must have shape {tuple(betas.shape)}, got {tuple(abar.shape)}")
            if not bool(((abar > 0) & (abar < 1)).all()):
                raise ValueError("alphas_cumprod must lie in (0, 1)")
        self.alphas_cumprod = abar
        self.sqrt_alphas_cumprod = abar.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - abar).sqrt()
        self._abar = abar.tolist()  # Python floats for the coefficient methods

    # -- constructors ------------------------------------------------------------------------------
    @classmethod
    def linear(cls, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> "DiscreteSchedule":
        return cls(linear_betas(T, beta_start, beta_end))

    @classmethod
    def cosine(cls, T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> "DiscreteSchedule":
        return cls(cosine_betas(T, s, max_beta))

    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod) -> "DiscreteSchedule":
        """The schedule with exactly these abar_t (float64 copies), betas_t = 1 - abar_t / abar_{t-1}."""
        abar = torch.as_tensor(alphas_cumprod)
        if not abar.is_floating_point():
            raise TypeError(f"alphas_cumprod must have a floating-point dtype, got {abar.dtype}")
        abar = abar.detach().to("cpu", torch.float64)
        if abar.dim() != 1 or abar.numel() < 1:
            raise ValueError(f"alphas_cumprod must be 1-D and non-empty, got shape {tuple(abar.shape)}")
        prev = torch.cat([abar.new_ones(1), abar[:-1]])
        return cls(1.0 - abar / prev, alphas_cumprod=abar)

    @classmethod
    def from_name(cls, name: str, T: int = 1000, **kw) -> "DiscreteSchedule":
        """"linear" / "scaled_linear" (kw: beta_start, beta_end) or "cosine" / "squaredcos_cap_v2"
        (kw: s, max_beta), as diffusers names them."""
        if name not in _NAMED:
            raise ValueError(f"name must be one of {tuple(_NAMED)}, got {name!r}")
        return cls(_NAMED[name](T, **kw))

    # -- basics ------------------------------------------------------------------------------------
    @property
    def num_timesteps(self) -> int:
        return self.betas.numel()

    def __len__(self) -> int:
        return self.num_timesteps

    def __repr__(self) -> str:
        return f"DiscreteSchedule(num_timesteps={self.num_timesteps})"

    def _check_t(self, t, name: str = "t") -> int:
        t = _timestep(t, name)
        if not 0 <= t < self.num_timesteps:
            raise ValueError(f"{name} must lie in [0, {self.num_timesteps}), got {t}")
        return t

    def _check_pair(self, t, prev_t) -> tuple[int, int]:
        t = self._check_t(t)
        prev_t = _timestep(prev_t, "prev_t")
        if prev_t >= t:
            raise ValueError(f"prev_t must be smaller than t, got t={t}, prev_t={prev_t}")
        return t, prev_t

    def forward_coefficients(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(signal, noise_scale) = (sqrt(abar_t), sqrt(1 - abar_t)) for an integer timestep tensor,
        float64 tensors of t's shape on t's device."""
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"t must be an integer torch.Tensor, got {type(t).__name__}")
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"t must have an integer dtype, got {t.dtype}")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.num_timesteps):
            raise ValueError(f"t must lie in [0, {self.num_timesteps}), got values in [{int(t.min())}, {int(t.max())}]")
        idx = t.detach().to("cpu", torch.int64)
        return (self.sqrt_alphas_cumprod[idx].to(t.device), self.sqrt_one_minus_alphas_cumprod[idx].to(t.device))

    # -- reverse steps -----------------------------------------------------------------------------
    def ancestral_coefficients(self, t, prev_t, variance_type: str = "fixed_small",
                               prediction_type: str = "epsilon") -> StepCoefficients:
        """DDPM ancestral step from t to prev_t (prev_t < 0: the last step, abar_prev = 1), x0-form:

            y0_hat = (y - sqrt(1 - abar_t) A eps_hat) / sqrt(abar_t)
            y' = sqrt(abar_prev) beta_t / (1 - abar_t) y0_hat + sqrt(alpha_t) (1 - abar_prev) / (1 - abar_t) y
                 + sigma A z,
            alpha_t = abar_t / abar_prev, beta_t = 1 - alpha_t,
            sigma^2 = max((1 - abar_prev) / (1 - abar_t) beta_t, 1e-20) ("fixed_small") or beta_t
            ("fixed_large"); sigma = 0 on the last step (prev_t < 0).

        prediction_type changes only how y0_hat is formed (`prediction_coefficients`).
        """
        t, prev_t = self._check_pair(t, prev_t)
        if variance_type not in VARIANCE_TYPES:
            raise ValueError(f"variance_type must be one of {VARIANCE_TYPES}, got {variance_type!r}")
        abar_t = self._abar[t]
        abar_prev = self._abar[prev_t] if prev_t >= 0 else 1.0
        alpha_t = abar_t / abar_prev
        beta_t = 1.0 - alpha_t
        one_m_t, one_m_prev = 1.0 - abar_t, 1.0 - abar_prev
        if prev_t < 0:
            sigma = 0.0
        elif variance_type == "fixed_small":
            sigma = math.sqrt(max(one_m_prev / one_m_t * beta_t, _BETA_TILDE_MIN))
        else:
            sigma = math.sqrt(beta_t)
        return step_coefficients(math.sqrt(abar_t), math.sqrt(one_m_t), prediction_type,
                                 coef_x=math.sqrt(alpha_t) * one_m_prev / one_m_t,
                                 coef_x0=math.sqrt(abar_prev) * beta_t / one_m_t, coef_eps=0.0, coef_noise=sigma)

    def ddim_sigma(self, t, prev_t, eta: float = 0.0, final_alpha_cumprod: float = 1.0) -> float:
        """eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev)."""
        t, prev_t = self._check_pair(t, prev_t)
        abar_t, abar_prev = self._ddim_abars(t, prev_t, final_alpha_cumprod)
        return _finite_float(eta, "eta") * math.sqrt((1.0 - abar_prev) / (1.0 - abar_t) * (1.0 - abar_t / abar_prev))

    def _ddim_abars(self, t: int, prev_t: int, final_alpha_cumprod) -> tuple[float, float]:
        final = _finite_float(final_alpha_cumprod, "final_alpha_cumprod")
        if not 0 < final <= 1:
            raise ValueError(f"final_alpha_cumprod must lie in (0, 1], got {final}")
        return self._abar[t], (self._abar[prev_t] if prev_t >= 0 else final)

    def ddim_coefficients(self, t, prev_t, eta: float = 0.0, use_clipped_model_output: bool = False,
                          final_alpha_cumprod: float = 1.0, prediction_type: str = "epsilon") -> StepCoefficients:
        """DDIM step from t to prev_t (prev_t < 0: abar_prev = final_alpha_cumprod):

            y0_hat = (y - sqrt(1 - abar_t) A eps_hat) / sqrt(abar_t)
            y' = sqrt(abar_prev) y0_hat + sqrt(1 - abar_prev - sigma^2) A eps_hat + sigma A z,
            sigma = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev).

        use_clipped_model_output re-derives the direction from the (possibly clipped) y0_hat,
        A eps' = (y - sqrt(abar_t) y0_hat) / sqrt(1 - abar_t), which moves the direction term into
        coef_x and coef_x0. 1 - abar_prev - sigma^2 is clamped at 0 (it is negative only for eta > 1).
        """
        t, prev_t = self._check_pair(t, prev_t)
        eta = _finite_float(eta, "eta")
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        abar_t, abar_prev = self._ddim_abars(t, prev_t, final_alpha_cumprod)
        sigma = eta * math.sqrt((1.0 - abar_prev) / (1.0 - abar_t) * (1.0 - abar_t / abar_prev))
        direction = math.sqrt(max(1.0 - abar_prev - sigma * sigma, 0.0))
        m, s = math.sqrt(abar_t), math.sqrt(1.0 - abar_t)
        if use_clipped_model_output:
            return step_coefficients(m, s, prediction_type, coef_x=direction / s,
                                     coef_x0=math.sqrt(abar_prev) - direction * m / s, coef_eps=0.0, coef_noise=sigma)
        return step_coefficients(m, s, prediction_type, coef_x=0.0, coef_x0=math.sqrt(abar_prev), coef_eps=direction,
                                 coef_noise=sigma)

    # -- plans -------------------------------------------------------------------------------------
    def timesteps(self, steps: int | None = None, spacing: str = "leading", steps_offset: int = 0) -> list[int]:
        """Descending network timesteps of a `steps`-step ancestral / DDIM sampler (`spaced_timesteps`);
        all T when steps is None."""
        T = self.num_timesteps
        return spaced_timesteps(T, T if steps is None else steps, spacing, steps_offset)

    def plan(self, steps: int | None = None, sampler: str = "ancestral", *, eta: float = 0.0,
             variance_type: str = "fixed_small", spacing: str | None = None, order: int = 2,
             prediction_type: str = "epsilon") -> list[PlanStep]:
        """The steps of a sampler, from pure noise to data; the step id (noise stream) is the timestep.

        "ancestral" (DDPM, variance_type) and "ddim" (eta) step from each timestep to the next and from the
        last to abar = 1; `steps` timesteps by `spacing` (default "leading"), all T when steps is None.
        "dpmsolver++" / "sde-dpmsolver++": multistep DPM-Solver++ of `order` 1-3 over `solver_timesteps`
        (default spacing "linspace"), the last step to zero noise, lower-order final steps as diffusers;
        steps=None: DEFAULT_SOLVER_STEPS (at most T - 1)."""
        check_prediction_type(prediction_type)
        if sampler not in DDPM_SAMPLERS:
            raise ValueError(f"sampler must be one of {DDPM_SAMPLERS}, got {sampler!r}")
        if sampler != "ddim" and eta != 0.0:
            raise ValueError("eta applies only to sampler='ddim'")
        if sampler in ("ancestral", "ddim"):
            ts = self.timesteps(steps, spacing or "leading")
            plan = []
            for t, p in zip(ts, ts[1:] + [-1]):
                if sampler == "ancestral":
                    c = self.ancestral_coefficients(t, p, variance_type, prediction_type)
                else:
                    c = self.ddim_coefficients(t, p, eta, prediction_type=prediction_type)
                plan.append(PlanStep(float(t), c, t, math.sqrt(self._abar[t]), math.sqrt(1.0 - self._abar[t])))
            return plan
        if steps is None:
            steps = min(DEFAULT_SOLVER_STEPS, self.num_timesteps - 1)
        ts = solver_timesteps(self.num_timesteps, steps, spacing or "linspace")
        alphas = [math.sqrt(self._abar[t]) for t in ts] + [1.0]
        sigmas = [math.sqrt(1.0 - self._abar[t]) for t in ts] + [0.0]
        return dpmsolver_plan([float(t) for t in ts], ts, alphas, sigmas, order, sampler.startswith("sde"),
                              prediction_type=prediction_type)


# --------------------------------------------------------------------------------------------------
# continuous-time SDEs
# --------------------------------------------------------------------------------------------------
def _as_time(t) -> torch.Tensor:
    if isinstance(t, torch.Tensor):
        if not t.is_floating_point():
            t = t.to(torch.float64)
        return t.to(torch.float64)
    return torch.as_tensor(_finite_float(t, "t"), dtype=torch.float64)


class _SDE:
    """Shared parts of VPSDE / VESDE; t runs from eps_t (data) to T = 1 (prior)."""

    T = 1.0
    prior_scale: float

    def __init__(self, eps_t: float):
        eps_t = _finite_float(eps_t, "eps_t")
        if not 0 < eps_t < 1:
            raise ValueError(f"eps_t must lie in (0, 1), got {eps_t}")
        self.eps_t = eps_t

    # subclasses: marginal(t) -> (m, s) tensors; _m_s(t) -> floats; _step_terms(t, dt)
    def forward_coefficients(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        """(signal, noise_scale) for ops.q_sample: the marginal (m(t), s(t))."""
        return self.marginal(t)

    def time_grid(self, steps: int) -> torch.Tensor:
        """steps + 1 float64 times from T = 1 down to eps_t, evenly spaced: step i goes from
        grid[i] to grid[i + 1] with dt = grid[i] - grid[i + 1] = (1 - eps_t) / steps."""
        steps = _positive_int(steps, "steps")
        return torch.linspace(self.T, self.eps_t, steps + 1, dtype=torch.float64)

    def _check_t(self, t) -> float:
        t = _finite_float(t, "t")
        if not 0 < t <= self.T:
            raise ValueError(f"t must lie in (0, {self.T}], got {t}")
        return t

    def _check_dt(self, t: float, dt) -> float:
        dt = _finite_float(dt, "dt")
        if not 0 < dt <= t:
            raise ValueError(f"dt must lie in (0, t] = (0, {t}], got {dt}")
        return dt

    def _sm(self, t: float) -> float:
        return self._m_s(t)[1]

    def _coefficients(self, t: float, prediction_type: str, coef_x: float, coef_eps: float,
                      coef_noise: float) -> StepCoefficients:
        """An update in (y, A eps_hat); y0_hat is Tweedie's estimate for the prediction type."""
        m, s = self._m_s(t)
        if prediction_type == "v_prediction" and isinstance(self, VESDE):
            raise ValueError("prediction_type='v_prediction' needs the VP SDE")
        return step_coefficients(m, s, prediction_type, coef_x, 0.0, coef_eps, coef_noise)

    def euler_maruyama_coefficients(self, t, dt, prediction_type: str = "epsilon") -> StepCoefficients:
        """One Euler-Maruyama step of the reverse SDE from t to t - dt (see the subclass)."""
        t = self._check_t(t)
        dt = self._check_dt(t, dt)
        cx, ce, var = self._step_terms(t, dt)
        return self._coefficients(t, prediction_type, cx, -ce, math.sqrt(var))

    def probability_flow_coefficients(self, t, dt, prediction_type: str = "epsilon") -> StepCoefficients:
        """One Euler step of the probability-flow ODE from t to t - dt: the Euler-Maruyama drift with
        half the score term and no noise."""
        t = self._check_t(t)
        dt = self._check_dt(t, dt)
        cx, ce, _ = self._step_terms(t, dt)
        return self._coefficients(t, prediction_type, cx, -0.5 * ce, 0.0)

    def langevin_step_size(self, t, snr: float = 0.16, alpha: float = 1.0) -> float:
        """delta = 2 alpha (snr s(t))^2.

        In whitened coordinates u = A_j^{-1} y the preconditioned score is -eps_hat / s(t), whose norm
        is about sqrt(D) / s(t) for a well-trained eps model, and the noise z has norm about sqrt(D).
        The signal-to-noise rule delta = 2 alpha (snr ||z|| / ||score||)^2 (as score_sde's corrector
        uses it, with per-batch norms) then becomes the data-independent delta = 2 alpha (snr s)^2.
        """
        t = self._check_t(t)
        snr, alpha = _finite_float(snr, "snr"), _finite_float(alpha, "alpha")
        if snr <= 0:
            raise ValueError(f"snr must be > 0, got {snr}")
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        return 2.0 * alpha * (snr * self._sm(t)) ** 2

    def langevin_coefficients(self, t, step_size: float | None = None, *, snr: float = 0.16,
                              alpha: float = 1.0, prediction_type: str = "epsilon") -> StepCoefficients:
        """One Langevin corrector step at fixed t, preconditioned by Sigma_j:

            y' = y + delta Sigma_j score + sqrt(2 delta) A z = y - (delta / s(t)) A eps_hat + sqrt(2 delta) A z,

        with delta = step_size, or delta = langevin_step_size(t, snr, alpha) = 2 alpha (snr s(t))^2
        when step_size is None."""
        t = self._check_t(t)
        if step_size is None:
            delta = self.langevin_step_size(t, snr, alpha)
        else:
            delta = _finite_float(step_size, "step_size")
            if delta <= 0:
                raise ValueError(f"step_size must be > 0, got {delta}")
        return self._coefficients(t, prediction_type, 1.0, -delta / self._sm(t), math.sqrt(2.0 * delta))

    def plan(self, steps: int = 1000, sampler: str = "euler_maruyama", *, snr: float = 0.16,
             corrector_steps: int = 1, order: int = 2, prediction_type: str = "epsilon") -> list[PlanStep]:
        """Steps on the grid from t = 1 to eps_t: "euler_maruyama" (reverse SDE), "ode" (probability
        flow, Euler) or "pc" (corrector_steps Langevin steps at t_i, then the Euler-Maruyama predictor);
        the last predictor step adds no noise. Step ids: predictor i -> i, corrector c at i ->
        (c + 1) steps + i, so every update has its own noise stream. "dpmsolver++" / "sde-dpmsolver++"
        (VP only): multistep DPM-Solver++ of `order` with the network at the first `steps` grid times and
        the last step to zero noise."""
        if sampler not in SGM_SAMPLERS:
            raise ValueError(f"sampler must be one of {SGM_SAMPLERS}, got {sampler!r}")
        steps = _positive_int(steps, "steps")
        corrector_steps = _positive_int(corrector_steps, "corrector_steps", 0)
        check_prediction_type(prediction_type)
        grid = self.time_grid(steps).tolist()
        if sampler.endswith("dpmsolver++"):
            if not isinstance(self, VPSDE):
                raise ValueError(f"sampler={sampler!r} needs the VP SDE (DPM-Solver++ solves a variance-preserving "
                                 "process)")
            ms = [self._m_s(t) for t in grid[:-1]]
            return dpmsolver_plan(grid[:-1], range(steps), [m for m, _ in ms] + [1.0], [s for _, s in ms] + [0.0],
                                  order, sampler.startswith("sde"), prediction_type=prediction_type)
        plan = []
        for i in range(steps):
            t, dt = grid[i], grid[i] - grid[i + 1]
            m, s = self._m_s(t)
            if sampler == "pc":
                for c in range(corrector_steps):
                    coefs = self.langevin_coefficients(t, snr=snr, prediction_type=prediction_type)
                    plan.append(PlanStep(t, coefs, (c + 1) * steps + i, m, s))
            if sampler == "ode":
                coefs = self.probability_flow_coefficients(t, dt, prediction_type)
            else:
                coefs = self.euler_maruyama_coefficients(t, dt, prediction_type)
                if i == steps - 1:
                    coefs = coefs._replace(coef_noise=0.0)
            plan.append(PlanStep(t, coefs, i, m, s))
        return plan


class VPSDE(_SDE):
    """Variance-preserving SDE dy = -1/2 beta(t) y dt + sqrt(beta(t)) A_j dW, beta(t) = beta_min +
    t (beta_max - beta_min), so that x_1 is close to N(mu_j, Sigma_j) (prior scale 1).

    Marginal: y_t = m(t) y_0 + s(t) A_j eps, m(t) = exp(-t^2 (beta_max - beta_min) / 4 - t beta_min / 2),
    s(t) = sqrt(1 - m(t)^2). Tweedie's estimate y0_hat = (y - s A eps_hat) / m."""

    prior_scale = 1.0

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, eps_t: float = 1e-3):
        super().__init__(eps_t)
        self.beta_min = _finite_float(beta_min, "beta_min")
        self.beta_max = _finite_float(beta_max, "beta_max")
        if not 0 <= self.beta_min <= self.beta_max or self.beta_max <= 0:
            raise ValueError(f"need 0 <= beta_min <= beta_max, beta_max > 0; got {beta_min}, {beta_max}")

    def __repr__(self) -> str:
        return f"VPSDE(beta_min={self.beta_min}, beta_max={self.beta_max}, eps_t={self.eps_t})"

    def _log_m(self, t):
        return -0.25 * t * t * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def beta(self, t) -> torch.Tensor:
        t = _as_time(t)
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def marginal(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        """(m(t), s(t)) as float64 tensors of t's shape (s from -expm1, accurate for small t)."""
        t = _as_time(t)
        log_m = self._log_m(t)
        return torch.exp(log_m), torch.sqrt(-torch.expm1(2.0 * log_m))

    def _m_s(self, t: float) -> tuple[float, float]:
        log_m = self._log_m(t)
        return math.exp(log_m), math.sqrt(-math.expm1(2.0 * log_m))

    def _step_terms(self, t: float, dt: float) -> tuple[float, float, float]:
        """EM from t to t - dt: y' = (1 + beta dt / 2) y - (beta dt / s) A eps_hat + sqrt(beta dt) A z."""
        beta = self.beta_min + t * (self.beta_max - self.beta_min)
        return 1.0 + 0.5 * beta * dt, beta * dt / self._sm(t), beta * dt


class VESDE(_SDE):
    """Variance-exploding SDE dy = sqrt(d sigma^2 / dt) A_j dW, sigma(t) = sigma_min
    (sigma_max / sigma_min)^t; marginal y_t = y_0 + sigma(t) A_j eps, so the prior is
    N(mu_k, sigma_max^2 Sigma_k) (prior_scale = sigma_max). Tweedie: y0_hat = y - sigma A eps_hat."""

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, eps_t: float = 1e-5):
        super().__init__(eps_t)
        self.sigma_min = _finite_float(sigma_min, "sigma_min")
        self.sigma_max = _finite_float(sigma_max, "sigma_max")
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")

    def __repr__(self) -> str:
        return f"VESDE(sigma_min={self.sigma_min}, sigma_max={self.sigma_max}, eps_t={self.eps_t})"

    @property
    def prior_scale(self) -> float:
        return self.sigma_max

    def sigma(self, t) -> torch.Tensor:
        t = _as_time(t)
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def marginal(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        """(1, sigma(t)) as float64 tensors of t's shape."""
        sigma = self.sigma(t)
        return torch.ones_like(sigma), sigma

    def _sigma(self, t: float) -> float:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def _m_s(self, t: float) -> tuple[float, float]:
        return 1.0, self._sigma(t)

    def _step_terms(self, t: float, dt: float) -> tuple[float, float, float]:
        """EM from t to t - dt, dsig2 = sigma(t)^2 - sigma(t - dt)^2:
        y' = y - (dsig2 / sigma(t)) A eps_hat + sqrt(dsig2) A z."""
        sig = self._sigma(t)
        dsig2 = sig * sig - self._sigma(t - dt) ** 2
        return 1.0, dsig2 / sig, dsig2

