"""A diffusers-style noise scheduler for Gaussian-mixture priors, backed by ops.q_sample / ops.reverse_step.

`MixtureNoiseScheduler` uses diffusers' names (`set_timesteps`, `timesteps`, `scale_model_input`,
`add_noise`, `step(...).prev_sample`, `init_noise_sigma`, `config`), so it drops into a diffusers-style
sampling loop. With the standard prior (K = 1, mean 0, identity covariance) it reproduces diffusers'
DDPMScheduler (sampler="ddpm") and DDIMScheduler (sampler="ddim") for epsilon prediction, given the
same noise; with a mixture prior every row is noised and denoised around its own component (see
docs/method.md, "Schedules and samplers").

Components ("labels") are part of the state of a trajectory: `sample_prior` and
`add_noise_with_labels` return them, and `step` needs them back unless the prior has one component.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from . import ops, sampling
from ._checks import check_real
from ._random import check_offset, check_seed, is_int, resolve_seed
from .prior import GaussianMixturePrior
from .schedules import (SOLVER_TYPES, VARIANCE_TYPES, DiscreteSchedule, PlanStep, check_prediction_type,
                        cosine_betas, dpmsolver_plan, linear_betas, scaled_linear_betas, solver_timesteps,
                        spaced_timesteps)

__all__ = ["MixtureNoiseScheduler", "MixtureSchedulerOutput"]

SAMPLERS = ("ddpm", "ddim", "dpmsolver++", "sde-dpmsolver++")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "cosine")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")
# diffusers' default spacing of each sampler's scheduler (DDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler)
DEFAULT_SPACING = {"ddpm": "leading", "ddim": "leading", "dpmsolver++": "linspace", "sde-dpmsolver++": "linspace"}


class MixtureSchedulerOutput(NamedTuple):
    """`step`'s result: attributes as diffusers' DDPMSchedulerOutput, and a tuple."""

    prev_sample: torch.Tensor  # x_{prev}, the sample's shape and dtype
    pred_original_sample: torch.Tensor  # x0_hat = mu_j + y0_hat (clipped when clip_sample)


class _Config(dict):
    """Read-only mapping with attribute access, like diffusers' FrozenDict."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setitem__(self, key, value):
        raise TypeError("the scheduler config is read-only; create a new scheduler instead")


# --------------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------------
def _check_bool(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return bool(value)


def _check_choice(value, choices, name: str) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def _check_sample(t, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype, got {t.dtype}")
    if t.dim() < 2:
        raise ValueError(f"{name} must have a batch dimension and features ([B, D] or [B, C, H, W]), "
                         f"got shape {tuple(t.shape)}")
    return t


def _same_layout(t, like: torch.Tensor, name: str, like_name: str = "sample") -> torch.Tensor:
    t = _check_sample(t, name)
    if t.shape != like.shape:
        raise ValueError(f"{name} must have {like_name}'s shape {tuple(like.shape)}, got {tuple(t.shape)}")
    if t.device != like.device:
        raise ValueError(f"{name} is on {t.device} but {like_name} is on {like.device}")
    return t


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


# --------------------------------------------------------------------------------------------------
# the scheduler
# --------------------------------------------------------------------------------------------------
class MixtureNoiseScheduler:
    """DDPM / DDIM / DPM-Solver++ scheduler whose prior is a Gaussian mixture, with diffusers' interface.

    Args:
        prior: a GaussianMixturePrior, or None for the standard prior N(0, I) (K = 1, mean 0, identity),
            built lazily with the dimension of each call's samples (C * H * W for images). With
            prior=None `sample_prior` needs `shape`.
        num_train_timesteps, beta_schedule ("linear", "scaled_linear", "squaredcos_cap_v2" or its alias
            "cosine"), beta_start, beta_end, trained_betas: the training schedule, as diffusers
            builds it (float32 betas, float32 cumulative product).
        variance_type: "fixed_small" (posterior variance) or "fixed_large" (beta_t); sampler="ddpm".
        clip_sample: "auto" (default) clips x0_hat to each row's component box: `support` when given, else
            the boxes learned from the rows passed to `add_noise_with_labels` (unclipped, with one warning,
            while there are none); True clips to [-clip_sample_range, clip_sample_range] (diffusers); False
            never clips. All samplers.
        support: (lo, hi) bounds broadcastable to [K, D] for clip_sample="auto" (e.g. a trained model's
            support_lo / support_hi).
        clip_margin: clip_sample="auto" widens the boxes by this fraction of their width on each side on
            every step but the trajectory's last (default sampling.DEFAULT_CLIP_MARGIN = 0, the models'
            default); the last step (to timestep < 0, or the solver plan's end) clips to the boxes.
        sampler: "ddpm" (ancestral, diffusers' DDPMScheduler), "ddim" (DDIMScheduler), "dpmsolver++" or
            "sde-dpmsolver++" (DPMSolverMultistepScheduler with that algorithm_type).
        prediction_type: "epsilon", "sample" or "v_prediction" (diffusers' meanings, in y = x - mu_j).
        eta: DDIM's noise level (0 = deterministic); `step(eta=...)` overrides it.
        solver_order (1-3), solver_type ("midpoint", "heun"), lower_order_final: DPM-Solver++'s options, as
            diffusers' (its final step goes to zero noise, final_sigmas_type="zero").
        timestep_spacing ("leading", "trailing", "linspace"; None: diffusers' default of the sampler's
            scheduler, "linspace" for DPM-Solver++, else "leading"), steps_offset: diffusers' spacing rules.
        set_alpha_to_one: DDIM's abar for the step past t = 0 (1, or abar_0 when False).

    The network predicts, for x_t = mu_j + sqrt(abar_t) (x0 - mu_j) + sqrt(1 - abar_t) A_j eps, the
    standard-normal eps, y0 = x0 - mu_j or v (schedules.prediction_coefficients).
    """

    order = 1  # diffusers' network calls per step: 1 for every sampler here

    def __init__(
        self,
        prior: GaussianMixturePrior | None = None,
        num_train_timesteps: int = 1000,
        beta_schedule: str = "linear",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        trained_betas=None,
        variance_type: str = "fixed_small",
        clip_sample: bool | str = "auto",
        clip_sample_range: float = 1.0,
        sampler: str = "ddpm",
        eta: float = 0.0,
        timestep_spacing: str | None = None,
        steps_offset: int = 0,
        set_alpha_to_one: bool = True,
        prediction_type: str = "epsilon",
        solver_order: int = 2,
        solver_type: str = "midpoint",
        lower_order_final: bool = True,
        support=None,
        clip_margin: float = sampling.DEFAULT_CLIP_MARGIN,
    ):
        if prior is not None and not isinstance(prior, GaussianMixturePrior):
            raise TypeError(f"prior must be a GaussianMixturePrior or None, got {type(prior).__name__}")
        if not is_int(num_train_timesteps):
            raise TypeError(f"num_train_timesteps must be an integer, got {type(num_train_timesteps).__name__}")
        T = int(num_train_timesteps)
        if not 1 <= T < 2**28:
            raise ValueError(f"num_train_timesteps must lie in [1, 2**28), got {T}")
        _check_choice(variance_type, VARIANCE_TYPES, "variance_type")
        _check_choice(sampler, SAMPLERS, "sampler")
        timestep_spacing = DEFAULT_SPACING[sampler] if timestep_spacing is None else timestep_spacing
        _check_choice(timestep_spacing, TIMESTEP_SPACINGS, "timestep_spacing")
        if isinstance(clip_sample, str):
            if clip_sample != "auto":
                raise ValueError(f"clip_sample must be 'auto', True or False, got {clip_sample!r}")
        else:
            clip_sample = _check_bool(clip_sample, "clip_sample")
        set_alpha_to_one = _check_bool(set_alpha_to_one, "set_alpha_to_one")
        check_prediction_type(prediction_type)
        if not is_int(solver_order) or not 1 <= int(solver_order) <= 3:
            raise ValueError(f"solver_order must be 1, 2 or 3, got {solver_order!r}")
        _check_choice(solver_type, SOLVER_TYPES, "solver_type")
        lower_order_final = _check_bool(lower_order_final, "lower_order_final")
        if support is not None and (not isinstance(support, (tuple, list)) or len(support) != 2):
            raise TypeError(f"support must be a (lo, hi) pair of tensors, got {type(support).__name__}")
        clip_margin = sampling.check_clip_margin(clip_margin)
        clip_sample_range = check_real(clip_sample_range, "clip_sample_range")
        if clip_sample_range <= 0:
            raise ValueError(f"clip_sample_range must be > 0, got {clip_sample_range}")
        eta = check_real(eta, "eta")
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        if not is_int(steps_offset):
            raise TypeError(f"steps_offset must be an integer, got {type(steps_offset).__name__}")
        if not 0 <= int(steps_offset) < T:
            raise ValueError(f"steps_offset must lie in [0, num_train_timesteps), got {steps_offset}")
        beta_start = check_real(beta_start, "beta_start")
        beta_end = check_real(beta_end, "beta_end")

        # betas exactly as diffusers builds them (float32), so alphas_cumprod equals diffusers' bit for bit
        if trained_betas is not None:
            betas = torch.as_tensor(np.asarray(trained_betas, dtype=np.float64)).to(torch.float32)
            if betas.dim() != 1 or betas.numel() != T:
                raise ValueError(f"trained_betas must have shape ({T},), got {tuple(betas.shape)}")
        else:
            _check_choice(beta_schedule, BETA_SCHEDULES, "beta_schedule")
            if beta_schedule == "linear":
                betas = linear_betas(T, beta_start, beta_end, dtype=torch.float32)
            elif beta_schedule == "scaled_linear":
                betas = scaled_linear_betas(T, beta_start, beta_end, dtype=torch.float32)
            else:
                betas = cosine_betas(T).to(torch.float32)
        if not bool(torch.isfinite(betas).all()) or bool((betas <= 0).any()) or bool((betas >= 1).any()):
            raise ValueError("betas must lie in (0, 1): check beta_start, beta_end or trained_betas")
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.final_alpha_cumprod = torch.tensor(1.0) if set_alpha_to_one else self.alphas_cumprod[0].clone()
        # the coefficients are evaluated in float64 from these float32 abar values
        self.schedule = DiscreteSchedule.from_alphas_cumprod(self.alphas_cumprod)

        self.prior = prior
        self.config = _Config(
            num_train_timesteps=T, beta_schedule=beta_schedule, beta_start=beta_start, beta_end=beta_end,
            trained_betas=None if trained_betas is None else betas.tolist(), variance_type=variance_type,
            clip_sample=clip_sample, clip_sample_range=clip_sample_range, sampler=sampler, eta=eta,
            timestep_spacing=timestep_spacing, steps_offset=int(steps_offset), set_alpha_to_one=set_alpha_to_one,
            prediction_type=prediction_type, solver_order=int(solver_order), solver_type=solver_type,
            lower_order_final=lower_order_final, clip_margin=clip_margin,
        )
        self._support_given = support
        self._support: tuple[torch.Tensor, torch.Tensor] | None = None  # [K, D] boxes, made on first use
        self._plan: list[PlanStep] | None = None  # DPM-Solver++: the steps set by set_timesteps
        self._step_index: int | None = None
        self._x0_history: list[torch.Tensor] = []
        self.variance_type = variance_type
        self.init_noise_sigma = 1.0
        self.num_inference_steps: int | None = None
        self.timesteps = torch.arange(T - 1, -1, -1, dtype=torch.int64)
        self._priors: dict = {}

    def __len__(self) -> int:
        return self.config.num_train_timesteps

    def __repr__(self) -> str:
        prior = "standard" if self.prior is None else repr(self.prior)
        return (f"MixtureNoiseScheduler(sampler={self.config.sampler!r}, num_train_timesteps="
                f"{self.config.num_train_timesteps}, num_inference_steps={self.num_inference_steps}, prior={prior})")

    # -- timesteps ---------------------------------------------------------------------------------
    def set_timesteps(self, num_inference_steps: int, device=None) -> None:
        """Descending int64 timesteps with diffusers' spacing rules:
        "leading": arange(n) * (T // n) reversed, plus steps_offset; "trailing": round(arange(T, 0, -T / n)) - 1;
        "linspace": round(linspace(0, T - 1, n)) reversed."""
        if not is_int(num_inference_steps):
            raise TypeError(f"num_inference_steps must be an integer, got {type(num_inference_steps).__name__}")
        n, T = int(num_inference_steps), self.config.num_train_timesteps
        if not 1 <= n <= T:
            raise ValueError(f"num_inference_steps must lie in [1, num_train_timesteps={T}], got {n}")
        spacing = self.config.timestep_spacing
        if self._is_solver:
            ts = solver_timesteps(T, n, spacing, self.config.steps_offset)
            self._plan = self._solver_plan(ts)
        else:
            ts = spaced_timesteps(T, n, spacing, self.config.steps_offset)
        self._step_index, self._x0_history = None, []
        self.num_inference_steps = n
        self.timesteps = torch.tensor(ts, dtype=torch.int64, device=device)

    @property
    def _is_solver(self) -> bool:
        return self.config.sampler.endswith("dpmsolver++")

    def _solver_plan(self, ts: list[int]) -> list[PlanStep]:
        """DPM-Solver++ over timesteps ts with diffusers' grid: sigma_t = sqrt((1 - abar_t) / abar_t) from the
        float32 abar in float32, alpha = 1 / sqrt(sigma^2 + 1), sigma_t alpha, and zero noise at the end."""
        abar = self.alphas_cumprod
        sigma = (((1 - abar) / abar) ** 0.5)[torch.tensor(ts)].double()
        alphas = (1.0 / (sigma**2 + 1) ** 0.5).tolist() + [1.0]
        sigmas = (sigma / (sigma**2 + 1) ** 0.5).tolist() + [0.0]
        c = self.config
        return dpmsolver_plan([float(t) for t in ts], ts, alphas, sigmas, c.solver_order,
                              c.sampler.startswith("sde"), c.solver_type, c.lower_order_final, c.prediction_type)

    def _check_timestep(self, timestep) -> int:
        if isinstance(timestep, torch.Tensor):
            if timestep.numel() != 1:
                raise ValueError(f"timestep must be a single timestep, got a tensor of shape {tuple(timestep.shape)}")
            if timestep.is_floating_point() or timestep.is_complex() or timestep.dtype == torch.bool:
                raise TypeError(f"timestep must be an integer, got dtype {timestep.dtype}")
            timestep = int(timestep.item())
        elif not is_int(timestep):
            raise TypeError(f"timestep must be an integer, got {type(timestep).__name__}")
        t = int(timestep)
        if not 0 <= t < self.config.num_train_timesteps:
            raise ValueError(f"timestep must lie in [0, {self.config.num_train_timesteps}), got {t}")
        return t

    def previous_timestep(self, timestep) -> int:
        """The timestep the step from `timestep` goes to (< 0: past the data end), as diffusers does:
        "ddpm": the next entry of `timesteps` after set_timesteps (-1 after the last one);
        "ddim": timestep - num_train_timesteps // num_inference_steps; before set_timesteps, t - 1.
        DPM-Solver++ as "ddpm" (its last step goes to zero noise)."""
        t = self._check_timestep(timestep)
        if self.num_inference_steps is None:
            if self._is_solver:
                raise ValueError(f"sampler={self.config.sampler!r} needs set_timesteps before stepping")
            return t - 1
        if self.config.sampler == "ddim":
            return t - self.config.num_train_timesteps // self.num_inference_steps
        hits = (self.timesteps.cpu() == t).nonzero(as_tuple=True)[0]
        if hits.numel() == 0:
            raise ValueError(f"timestep {t} is not one of the timesteps set by set_timesteps")
        i = int(hits[0])
        return -1 if i == self.timesteps.numel() - 1 else int(self.timesteps[i + 1])

    def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
        """Identity (diffusers' interface)."""
        return sample

    # -- the prior ---------------------------------------------------------------------------------
    def _prior(self, dim: int, device: torch.device) -> tuple[GaussianMixturePrior, torch.Tensor, torch.Tensor | None]:
        """(prior, means, cov_factor) on `device`; prior=None: the standard prior of this dim."""
        key = (id(self.prior), dim, str(device))  # `prior` may be reassigned
        if key not in self._priors:
            if self.prior is None:
                prior = GaussianMixturePrior.standard(dim, device=device)
            else:
                prior = self.prior
                if prior.dim != dim:
                    raise ValueError(f"sample has {dim} features per sample but the prior has dim {prior.dim}")
            factor = None if prior.cov_factor is None else prior.cov_factor.to(device)
            self._priors[key] = (prior, prior.means.to(device), factor)
        return self._priors[key]

    def _labels(self, labels, n: int, k: int, device, required: bool) -> torch.Tensor | None:
        if labels is None:
            if not required:
                return None
            if k != 1:
                raise ValueError(
                    f"labels are required for a prior with {k} components: carry the labels returned by "
                    "sample_prior / add_noise_with_labels along the trajectory")
            return torch.zeros(n, dtype=torch.int64, device=device)
        if not isinstance(labels, torch.Tensor):
            raise TypeError(f"labels must be an integer torch.Tensor, got {type(labels).__name__}")
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise TypeError(f"labels must have an integer dtype, got {labels.dtype}")
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
        if n and (int(labels.min()) < 0 or int(labels.max()) >= k):
            raise ValueError(f"labels must lie in [0, {k}), got values in [{int(labels.min())}, {int(labels.max())}]")
        return labels.to(device=device, dtype=torch.int64)

    def sample_prior(self, n: int, seed: int | None = None, offset: int = 0, *, shape=None, generator=None):
        """(x_T, labels): n draws from the prior times init_noise_sigma, and their components.

        Row i is row offset + i of the counter-based stream of `seed` (prior.sample's generator_offset),
        so drawing in chunks with advancing offsets equals one large draw. seed=None draws the seed from
        `generator` (torch's default generator when None). shape: the per-sample shape, e.g. (C, H, W):
        x_T then has shape (n, *shape); required when prior=None (it fixes the dimension).
        """
        if not is_int(n):
            raise TypeError(f"n must be an integer, got {type(n).__name__}")
        if int(n) < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        offset = check_offset("offset", offset)
        if shape is not None:
            if isinstance(shape, (int, np.integer)):
                shape = (int(shape),)
            shape = tuple(shape)
            if not shape or not all(is_int(s) and s >= 1 for s in shape):
                raise ValueError(f"shape must be a non-empty tuple of positive integers, got {shape}")
            dim = int(np.prod(shape))
        elif self.prior is None:
            raise ValueError("sample_prior needs shape= (the per-sample shape) when the scheduler has prior=None")
        else:
            dim = self.prior.dim
        if self.prior is not None:
            prior = self.prior
            if prior.dim != dim:
                raise ValueError(f"shape {shape} has {dim} elements but the prior has dim {prior.dim}")
        else:
            prior = self._prior(dim, torch.device("cpu"))[0]
        seed = resolve_seed(seed, generator)
        x, labels = prior.sample(int(n), seed=seed, generator_offset=offset, return_labels=True)
        x = x * self.init_noise_sigma
        if shape is not None:
            x = x.reshape(int(n), *shape)
        return x, labels

    # -- forward process ---------------------------------------------------------------------------
    def _check_timesteps(self, timesteps, n: int, device) -> torch.Tensor:
        if timesteps is None:
            raise TypeError("timesteps is required")
        if is_int(timesteps):
            timesteps = torch.tensor([int(timesteps)])
        if not isinstance(timesteps, torch.Tensor):
            raise TypeError(f"timesteps must be an integer torch.Tensor, got {type(timesteps).__name__}")
        if timesteps.is_floating_point() or timesteps.is_complex() or timesteps.dtype == torch.bool:
            raise TypeError(f"timesteps must have an integer dtype, got {timesteps.dtype}")
        timesteps = timesteps.reshape(-1)
        if timesteps.numel() == 1:
            timesteps = timesteps.expand(n)
        if timesteps.numel() != n:
            raise ValueError(f"timesteps must hold 1 or {n} (the batch size) timesteps, got {timesteps.numel()}")
        T = self.config.num_train_timesteps
        if n and (int(timesteps.min()) < 0 or int(timesteps.max()) >= T):
            raise ValueError(f"timesteps must lie in [0, {T}), got values in "
                             f"[{int(timesteps.min())}, {int(timesteps.max())}]")
        return timesteps.to(device)

    def add_noise_with_labels(self, original_samples: torch.Tensor, timesteps, noise=None, labels=None,
                              seed: int | None = None, offset: int = 0, generator=None) -> ops.ForwardSample:
        """Forward noising x_t = mu_j + sqrt(abar_t) (x0 - mu_j) + sqrt(1 - abar_t) A_j eps, returned as
        ops.ForwardSample(x_t, eps, labels): x_t and eps in original_samples' shape and dtype, labels [B].

        labels=None dispatches each sample to its nearest centre. noise=None draws eps from row
        offset + i of the counter-based stream of `seed` (drawn from `generator` / torch's default
        generator when None); eps is the network's training target.
        """
        x0 = _check_sample(original_samples, "original_samples")
        flat = _flat(x0)
        n, dim = flat.shape
        prior, means, factor = self._prior(dim, x0.device)
        t = self._check_timesteps(timesteps, n, x0.device)
        labels = self._labels(labels, n, prior.n_components, x0.device, required=False)
        offset = check_offset("offset", offset)
        eps = None
        if noise is not None:
            if seed is not None or generator is not None:
                raise ValueError("pass noise, or seed / generator to draw it, not both")
            eps = _flat(_same_layout(noise, x0, "noise", "original_samples"))
            s = 0
        else:
            s = resolve_seed(seed, generator)
        signal, noise_scale = self.schedule.forward_coefficients(t)
        x_t, eps_out, labels_out = ops.q_sample(flat, signal, noise_scale, means, factor, prior.covariance_type,
                                                seed=s, offset=offset, labels=labels, noise=eps)
        if self.config.clip_sample == "auto" and self._support_given is None:
            sampling.update_support(*self._support_boxes(prior.n_components, dim, x0.device), flat, labels_out)
        return ops.ForwardSample(x_t.reshape(x0.shape).to(x0.dtype), eps_out.reshape(x0.shape).to(x0.dtype),
                                 labels_out)

    def add_noise(self, original_samples: torch.Tensor, noise=None, timesteps=None, labels=None,
                  seed: int | None = None, offset: int = 0, generator=None) -> torch.Tensor:
        """diffusers' add_noise(original_samples, noise, timesteps): the noisy samples only. With the
        standard prior this is sqrt(abar_t) x0 + sqrt(1 - abar_t) noise. See add_noise_with_labels for
        labels, seed, offset and for getting eps and labels back (needed with a mixture prior)."""
        return self.add_noise_with_labels(original_samples, timesteps, noise=noise, labels=labels, seed=seed,
                                          offset=offset, generator=generator).x_t

    # -- reverse process ---------------------------------------------------------------------------
    def _support_boxes(self, k: int, dim: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """The [K, D] boxes of clip_sample="auto": `support` as given, or the learned ones (empty at first)."""
        if self._support is None or self._support[0].shape != (k, dim):
            if self._support_given is not None:
                lo, hi = (torch.as_tensor(b, dtype=torch.float64).expand(k, dim).clone() for b in self._support_given)
                if bool(torch.isnan(lo).any() | torch.isnan(hi).any()) or bool((lo > hi).any()):
                    raise ValueError("support must hold lo <= hi without NaN")
            else:
                lo = torch.full((k, dim), float("inf"), dtype=torch.float64)
                hi = torch.full((k, dim), float("-inf"), dtype=torch.float64)
            self._support = (lo, hi)
        lo, hi = self._support
        if lo.device != torch.device(device):
            self._support = lo, hi = lo.to(device), hi.to(device)
        return lo, hi

    def _clip(self, k: int, dim: int, device) -> sampling.Clip | None:
        clip = self.config.clip_sample
        if clip == "auto":
            lo, hi = self._support_boxes(k, dim, device)
            return sampling.resolve_clip("auto", self.config.clip_margin, lo, hi, self)
        if clip:
            bound = (-self.config.clip_sample_range, self.config.clip_sample_range)
            return sampling.Clip(bound, bound)
        return None

    def step_coefficients(self, timestep, eta: float | None = None,
                          use_clipped_model_output: bool = False) -> ops.StepCoefficients:
        """The StepCoefficients `step` applies at `timestep` (to previous_timestep(timestep)); DPM-Solver++:
        those of the next step of the solver's plan."""
        return self._plan_step(timestep, eta, use_clipped_model_output)[0].coefficients

    def _plan_step(self, timestep, eta, use_clipped_model_output) -> tuple[PlanStep, int | None, bool]:
        """(PlanStep, index in the solver's plan or None, whether it is the trajectory's last step: the end
        of the solver's plan, or the step to a timestep < 0) of a step at `timestep`."""
        t = self._check_timestep(timestep)
        use_clipped_model_output = _check_bool(use_clipped_model_output, "use_clipped_model_output")
        c = self.config
        if self._is_solver or c.sampler == "ddpm":
            if eta not in (None, 0, 0.0) or use_clipped_model_output:
                raise ValueError("eta and use_clipped_model_output apply only to sampler='ddim'")
        if self._is_solver:
            if self._plan is None:
                raise ValueError(f"sampler={c.sampler!r} needs set_timesteps before stepping")
            if self._step_index is None:  # diffusers: the first step's index from its timestep
                hits = (self.timesteps.cpu() == t).nonzero(as_tuple=True)[0]
                self._step_index = int(hits[0]) if hits.numel() else len(self._plan) - 1
            i = self._step_index
            if i >= len(self._plan):
                raise ValueError("the solver's plan is finished: call set_timesteps to start a new trajectory")
            if int(self._plan[i].step_id) != t:
                raise ValueError(f"DPM-Solver++ steps through its timesteps in order: expected timestep "
                                 f"{self._plan[i].step_id}, got {t}")
            return self._plan[i], i, i == len(self._plan) - 1
        prev_t = self.previous_timestep(t)
        if c.sampler == "ddpm":
            coefs = self.schedule.ancestral_coefficients(t, prev_t, c.variance_type, c.prediction_type)
        else:
            eta = c.eta if eta is None else check_real(eta, "eta")
            if eta < 0:
                raise ValueError(f"eta must be >= 0, got {eta}")
            coefs = self.schedule.ddim_coefficients(t, prev_t, eta, use_clipped_model_output,
                                                    float(self.final_alpha_cumprod), c.prediction_type)
        abar = float(self.alphas_cumprod[t])
        return PlanStep(float(t), coefs, t, abar**0.5, (1.0 - abar) ** 0.5), None, prev_t < 0

    def step(
        self,
        model_output: torch.Tensor,
        timestep,
        sample: torch.Tensor,
        labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        noise: torch.Tensor | None = None,
        offset: int = 0,
        return_dict: bool = True,
        *,
        eta: float | None = None,
        use_clipped_model_output: bool = False,
        variance_noise: torch.Tensor | None = None,
    ):
        """One reverse step from `timestep` to previous_timestep(timestep), fused in ops.reverse_step
        (sampling.apply_step, the models' step).

        model_output: the network output (prediction_type), sample's shape. labels: the component of each
        row ([B] integers); None only for a one-component prior. Noise z (drawn only when the step adds
        noise): `noise` (alias `variance_noise`, diffusers' DDIM name) if given; else row offset + i of the
        counter-based stream (seed, step=timestep), with seed=None drawing a fresh seed from `generator`
        (torch's default generator when None). Pass a fixed seed and each batch's row offset to make
        chunked sampling equal one large batch. eta / use_clipped_model_output: DDIM only (diffusers' step
        arguments). DPM-Solver++ keeps the previous x0_hat of its trajectory, as diffusers' scheduler keeps
        its model outputs: one scheduler per trajectory batch, set_timesteps to start again. Returns
        MixtureSchedulerOutput(prev_sample, pred_original_sample), a plain tuple when return_dict=False.
        """
        x_in = _check_sample(sample, "sample")
        out_in = _same_layout(model_output, x_in, "model_output")
        x, out = _flat(x_in), _flat(out_in)
        n, dim = x.shape
        plan_step, index, last = self._plan_step(timestep, eta, use_clipped_model_output)
        prior, means, factor = self._prior(dim, x.device)
        labels = self._labels(labels, n, prior.n_components, x.device, required=True)
        offset = check_offset("offset", offset)
        if variance_noise is not None:
            if noise is not None:
                raise ValueError("pass noise or variance_noise, not both")
            noise = variance_noise
        z, s = None, 0
        if noise is not None:
            if seed is not None or generator is not None:
                raise ValueError("pass noise, or seed / generator to draw it, not both")
            z = _flat(_same_layout(noise, x_in, "noise"))
        elif plan_step.coefficients.coef_noise != 0.0:
            s = resolve_seed(seed, generator)
        elif seed is not None:
            check_seed(seed)
        history = self._x0_history if index is not None else []
        if history and history[0].shape != x.shape:
            raise ValueError(f"sample has shape {tuple(x_in.shape)} but the trajectory's earlier steps had "
                             f"{tuple(history[0].shape)} rows x features: call set_timesteps to start a new one")
        clip = self._clip(prior.n_components, dim, x.device)
        # the trajectory's last step (its x0_hat is the returned sample) clips to the boxes themselves
        prev, x0 = sampling.apply_step(x, out, labels, means, factor, prior.covariance_type, plan_step, seed=s,
                                       offset=offset, prediction_type=self.config.prediction_type,
                                       clip=None if clip is None else clip.at(last), x0_history=history, noise=z,
                                       return_x0=True)
        if index is not None:
            self._x0_history = [x0] + history[:1]
            self._step_index = index + 1
        prev = prev.reshape(x_in.shape).to(x_in.dtype)
        x0 = x0.reshape(x_in.shape).to(x_in.dtype)
        if not _check_bool(return_dict, "return_dict"):
            return prev, x0
        return MixtureSchedulerOutput(prev, x0)
