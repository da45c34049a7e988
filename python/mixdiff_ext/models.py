"""mixDDPM and mixSGM: diffusion models whose prior is a Gaussian mixture, one code path for both.

The classical models are the same classes with the standard prior (`GaussianMixturePrior.standard`):
one component, mean 0, identity covariance. Every row of a batch keeps its component j for the whole
trajectory: the dispatcher's label (nearest centre) in training, a categorical draw in sampling.

Training noises with `ops.q_sample` (x_t = mu_j + signal (x0 - mu_j) + noise_scale A_j eps, the
assignment fused in when labels are not given) and regresses the network on eps. Sampling draws x_T
with `ops.prior_sample` and applies `ops.reverse_step` with one sampler's coefficients per step. All
noise is counter-based: row i of a call with `offset` uses the generator's row offset + i, so chunked
sampling (`batch_size`) and data-parallel training give the same numbers as one large batch.

What the network sees (docs/method.md, "What the network sees"): `component_input="embedding"` passes
the component j to the denoiser, `centre_input=True` feeds x_t - mu_j instead of x_t. The paper-faithful
variant is `component_input="none", centre_input=False`.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import torch
from torch import nn

from . import ops
from ._random import check_offset, resolve_seed
from .prior import GaussianMixturePrior
from .schedules import VESDE, VPSDE, DiscreteSchedule

__all__ = ["MixDDPM", "MixSGM", "Sampled", "ve_sigma_max"]

COMPONENT_INPUTS = ("embedding", "none")
# batch_size=None on the CPU: trajectories run in chunks of this many rows, one chunk through all steps
# before the next, so the network's activations stay in cache (2-3x faster than one 100k-row batch for
# the MLPs here, bench/bench_sampling.py). The counter-based noise makes the chunking invisible.
CPU_CHUNK_ROWS = 4096
DDPM_SAMPLERS = ("ancestral", "ddim")
SGM_SAMPLERS = ("euler_maruyama", "pc", "ode")


class Sampled(NamedTuple):
    """`sample(..., return_labels=True or return_trajectory=True)`."""

    samples: torch.Tensor  # [n, *sample_shape]
    labels: torch.Tensor  # int64 [n]: the component of each trajectory
    initial: torch.Tensor  # [n, *sample_shape]: the prior draws x_T the trajectories started from
    trajectory: torch.Tensor | None  # [steps + 1, n, *sample_shape] from x_T to x_0, when asked


class _Step(NamedTuple):
    """One network evaluation and fused update: the network's time input, the update's coefficients
    and the step id that addresses its noise stream."""

    net_time: float
    coefficients: ops.StepCoefficients
    step_id: int


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_choice(value, choices: Sequence[str], name: str) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


_compiled_predict_noise = None  # torch.compile of _MixtureDiffusion.predict_noise, built on first use


def _predict_noise_compiled():
    global _compiled_predict_noise
    if _compiled_predict_noise is None:
        # dynamic shapes: the last chunk of a run is shorter; one compilation serves every chunk size
        _compiled_predict_noise = torch.compile(_MixtureDiffusion.predict_noise, dynamic=True)
    return _compiled_predict_noise


class _MixtureDiffusion(nn.Module):
    """What mixDDPM and mixSGM share: the prior as buffers, the network call, the loss and the sampling
    loop. Subclasses supply the time distribution, the forward coefficients and the step plans."""

    def __init__(self, denoiser: nn.Module, prior: GaussianMixturePrior, component_input: str, centre_input: bool,
                 sample_shape: Sequence[int] | None):
        super().__init__()
        if not isinstance(denoiser, nn.Module):
            raise TypeError(f"denoiser must be a torch.nn.Module, got {type(denoiser).__name__}")
        if not isinstance(prior, GaussianMixturePrior):
            raise TypeError(f"prior must be a GaussianMixturePrior (GaussianMixturePrior.standard(dim) for the "
                            f"classical model), got {type(prior).__name__}")
        _check_choice(component_input, COMPONENT_INPUTS, "component_input")
        if not isinstance(centre_input, bool):
            raise TypeError(f"centre_input must be a bool, got {type(centre_input).__name__}")
        shape = (prior.dim,) if sample_shape is None else tuple(int(s) for s in sample_shape)
        if not shape or any(s < 1 for s in shape) or math.prod(shape) != prior.dim:
            raise ValueError(f"sample_shape {shape} must have prior.dim = {prior.dim} elements")
        self.denoiser = denoiser
        self.component_input = component_input
        self.centre_input = centre_input
        self.sample_shape = shape
        self.covariance_type = prior.covariance_type
        self.register_buffer("means", prior.means.detach().clone())
        self.register_buffer("log_weights", prior.log_weights.detach().clone())
        self.register_buffer("cov_factor", None if prior.cov_factor is None else prior.cov_factor.detach().clone())

    # -- the prior ---------------------------------------------------------------------------------
    @property
    def prior(self) -> GaussianMixturePrior:
        """The prior, rebuilt from the buffers (so it follows .to(device) and load_state_dict)."""
        return GaussianMixturePrior._from_factor(self.means, self.log_weights.exp(), self.cov_factor,
                                                 self.covariance_type)

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    def _prior_args(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None, str]:
        factor = None if self.cov_factor is None else self.cov_factor.to(dtype)
        return self.means.to(dtype), factor, self.covariance_type

    # -- the network -------------------------------------------------------------------------------
    def _flatten(self, x: torch.Tensor, name: str) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{name} must have a floating-point dtype, got {x.dtype}")
        if tuple(x.shape[1:]) != self.sample_shape:
            raise ValueError(f"{name} must have shape [B, {', '.join(map(str, self.sample_shape))}], "
                             f"got {tuple(x.shape)}")
        return x.reshape(x.shape[0], self.means.shape[1])

    def predict_noise(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, means: torch.Tensor,
                      cond: torch.Tensor | None = None) -> torch.Tensor:
        """eps_hat for flat rows x [B, D] with components `labels`: what the denoiser sees follows
        component_input and centre_input. Returns [B, D]."""
        net_x = x - means[labels] if self.centre_input else x
        component = labels if self.component_input == "embedding" else None
        out = self.denoiser(net_x.reshape(x.shape[0], *self.sample_shape), t, component=component, cond=cond)
        return out.reshape(x.shape)

    # -- training ----------------------------------------------------------------------------------
    def sample_timesteps(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def _forward_coefficients(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def loss(self, x0: torch.Tensor, t: torch.Tensor | None = None, seed: int | None = None, offset: int = 0,
             cond: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Mean squared error ||eps - eps_hat||^2 over the rows of x0 [B, *sample_shape].

        t: per-row times (None: drawn with `sample_timesteps` from torch's default generator). Noise eps
        for row i is row offset + i of the counter-based stream of `seed` (None: drawn from torch's
        default generator). labels: each row's component (None: the nearest centre, assigned inside
        q_sample)."""
        flat = self._flatten(x0, "x0")
        n = flat.shape[0]
        if n == 0:
            raise ValueError("x0 must contain at least one row")
        if t is None:
            t = self.sample_timesteps(n).to(flat.device)
        if not isinstance(t, torch.Tensor) or t.shape != (n,):
            raise ValueError(f"t must be a tensor of shape ({n},), got "
                             f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
        seed = resolve_seed(seed)
        offset = check_offset("offset", offset)
        signal, noise_scale = self._forward_coefficients(t)
        means, factor, cov_type = self._prior_args(flat.dtype)
        x_t, eps, labels = ops.q_sample(flat, signal, noise_scale, means, factor, cov_type, seed=seed,
                                        offset=offset, labels=labels)
        eps_hat = self.predict_noise(x_t, self._net_time(t), labels, means, cond)
        return torch.mean((eps_hat - eps) ** 2)

    def forward(self, x0: torch.Tensor, **kwargs) -> torch.Tensor:
        """The training loss (so DistributedDataParallel, which wraps forward, sees it)."""
        return self.loss(x0, **kwargs)

    def _net_time(self, t: torch.Tensor) -> torch.Tensor:
        return t

    # -- sampling ----------------------------------------------------------------------------------
    def _draw_prior(self, n: int, seed: int, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
        return tuple(ops.prior_sample(self.means, self.log_weights, self.cov_factor, self.covariance_type, n, seed,
                                      offset))

    def _run(self, n: int, plan: list[_Step], seed: int | None, batch_size: int | None, clip, cond, progress: bool,
             desc: str,
             on_chunk: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor] | None], None],
             keep_trajectory: bool, compile: bool = False) -> None:
        """Runs the plan on chunks of `batch_size` rows: chunk rows [start, start + m) use generator rows
        offset start + i for the prior draw and every step's noise, so the result does not depend on
        batch_size. Calls on_chunk(start, x_T, x_0, labels, trajectory) per chunk (trajectory: the list
        of states from x_T on when keep_trajectory, else None)."""
        n = _check_int(n, "n", 0)
        if batch_size is None:
            batch_size = CPU_CHUNK_ROWS if self.means.device.type == "cpu" else n
        batch_size = _check_int(batch_size, "batch_size", 1)
        seed = resolve_seed(seed)
        if cond is not None and (not isinstance(cond, torch.Tensor) or cond.shape[0] != n):
            raise ValueError(f"cond must be a tensor with n = {n} rows")
        if not isinstance(compile, bool):
            raise TypeError(f"compile must be a bool, got {type(compile).__name__}")
        predict = _predict_noise_compiled() if compile else type(self).predict_noise
        chunks = range(0, n, batch_size)
        bar = None
        if progress:  # tqdm is imported only when asked for
            from tqdm.auto import tqdm

            bar = tqdm(total=len(plan) * len(chunks), desc=desc, unit="step", leave=False)
        with torch.no_grad():
            for start in chunks:
                m = min(batch_size, n - start)
                x, labels = self._draw_prior(m, seed, start)
                means, factor, cov_type = self._prior_args(x.dtype)
                x_start, trajectory = x, ([x] if keep_trajectory else None)
                chunk_cond = None if cond is None else cond[start:start + m]
                for step in plan:
                    # one value for the whole chunk: a stride-0 view, so a denoiser may embed it once
                    t = torch.full((1,), step.net_time, dtype=torch.float32, device=x.device).expand(m)
                    eps_hat = predict(self, x, t, labels, means, chunk_cond)
                    x = ops.reverse_step(x, eps_hat.to(x.dtype), labels, means, factor, cov_type, step.coefficients,
                                         seed=seed, step=step.step_id, offset=start, clip=clip).prev_sample
                    if trajectory is not None:
                        trajectory.append(x)
                    if bar is not None:
                        bar.update(1)
                on_chunk(start, x_start, x, labels, trajectory)
        if bar is not None:
            bar.close()

    def _sample(self, n, plan, seed, batch_size, clip, cond, progress, desc, return_labels, return_trajectory,
                compile):
        shape = self.sample_shape
        n = _check_int(n, "n", 0)
        out = self.means.new_empty((n, self.means.shape[1]))
        out_initial = torch.empty_like(out)
        out_labels = torch.empty(n, dtype=torch.int64, device=self.means.device)
        traj = self.means.new_empty((len(plan) + 1, n, self.means.shape[1])) if return_trajectory else None

        def keep(start, x_T, x0, labels, trajectory):
            out[start:start + x0.shape[0]] = x0
            out_initial[start:start + x0.shape[0]] = x_T
            out_labels[start:start + x0.shape[0]] = labels
            if traj is not None:
                traj[:, start:start + x0.shape[0]] = torch.stack(trajectory)

        self._run(n, plan, seed, batch_size, clip, cond, progress, desc, keep, return_trajectory, compile)
        samples = out.reshape(n, *shape)
        if not (return_labels or return_trajectory):
            return samples
        return Sampled(samples, out_labels, out_initial.reshape(n, *shape),
                       None if traj is None else traj.reshape(len(plan) + 1, n, *shape))

    def _effort(self, n, plan, seed, batch_size, clip, cond, progress, desc) -> float:
        total = torch.zeros((), dtype=torch.float64)

        def accumulate(start, x_T, x0, labels, trajectory):
            total.add_(((x0 - x_T).double() ** 2).sum().cpu())

        self._run(n, plan, seed, batch_size, clip, cond, progress, desc, accumulate, False)
        return float(total) / max(n, 1)


class MixDDPM(_MixtureDiffusion):
    """Discrete-time mixDDPM (DDPM with `GaussianMixturePrior.standard(dim)`).

    Args:
        denoiser: an nn.Module called as denoiser(x, t, component=None, cond=None) -> eps_hat, with t the
            integer timesteps [B] (int64).
        prior: the mixture prior (its buffers are copied into the model).
        schedule: "linear" (1e-4 -> 0.02), "scaled_linear", "cosine", or a DiscreteSchedule.
        timesteps: T, when schedule is a name.
        component_input: "embedding" passes each row's component to the denoiser; "none" does not.
        centre_input: feed x_t - mu_j instead of x_t.
        variance_type: ancestral sampler's sigma_t^2: "fixed_small" (posterior variance) or "fixed_large" (beta_t).
        sample_shape: per-sample shape, e.g. (1, 8, 8) for images; default (prior.dim,).
    """

    def __init__(self, denoiser: nn.Module, prior: GaussianMixturePrior, schedule="linear", timesteps: int = 1000,
                 component_input: str = "embedding", centre_input: bool = True, variance_type: str = "fixed_small",
                 sample_shape: Sequence[int] | None = None):
        super().__init__(denoiser, prior, component_input, centre_input, sample_shape)
        if isinstance(schedule, str):
            schedule = DiscreteSchedule.from_name(schedule, _check_int(timesteps, "timesteps", 1))
        if not isinstance(schedule, DiscreteSchedule):
            raise TypeError(f"schedule must be a name or a DiscreteSchedule, got {type(schedule).__name__}")
        _check_choice(variance_type, ("fixed_small", "fixed_large"), "variance_type")
        self.schedule = schedule
        self.variance_type = variance_type

    @property
    def num_timesteps(self) -> int:
        return self.schedule.num_timesteps

    def sample_timesteps(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n timesteps uniform on {0, ..., T - 1} (int64, CPU)."""
        return torch.randint(0, self.num_timesteps, (n,), generator=generator)

    def _forward_coefficients(self, t):
        if t.is_floating_point():
            raise TypeError(f"t must hold integer timesteps for MixDDPM, got dtype {t.dtype}")
        return self.schedule.forward_coefficients(t)

    def timesteps_for(self, steps: int | None) -> list[int]:
        """Descending timesteps of a `steps`-step sampler: t_i = i (T // steps), i = steps - 1, ..., 0
        (diffusers' "leading" spacing); all T when steps is None."""
        T = self.num_timesteps
        steps = T if steps is None else _check_int(steps, "steps", 1)
        if steps > T:
            raise ValueError(f"steps must be <= the number of training timesteps {T}, got {steps}")
        return [i * (T // steps) for i in range(steps - 1, -1, -1)]

    def plan(self, steps: int | None = None, sampler: str = "ancestral", eta: float = 0.0) -> list[_Step]:
        """The (network time, coefficients, step id) of each reverse step; the step id is the timestep."""
        _check_choice(sampler, DDPM_SAMPLERS, "sampler")
        ts = self.timesteps_for(steps)
        prevs = ts[1:] + [-1]
        if sampler == "ancestral":
            if eta != 0.0:
                raise ValueError("eta applies only to sampler='ddim'")
            coefs = [self.schedule.ancestral_coefficients(t, p, self.variance_type) for t, p in zip(ts, prevs)]
        else:
            coefs = [self.schedule.ddim_coefficients(t, p, eta) for t, p in zip(ts, prevs)]
        return [_Step(float(t), c, t) for t, c in zip(ts, coefs)]

    def sample(self, n: int, steps: int | None = None, sampler: str = "ancestral", eta: float = 0.0,
               seed: int | None = None, batch_size: int | None = None, return_trajectory: bool = False,
               progress: bool = True, return_labels: bool = False, clip: tuple[float, float] | None = None,
               cond: torch.Tensor | None = None, compile: bool = False):
        """n samples [n, *sample_shape] by `steps` reverse steps (all T when None) of the ancestral
        (DDPM) or DDIM (eta) sampler, each trajectory centred on its drawn component.

        seed=None draws the seed from torch's default generator. batch_size: rows per chunk (default:
        CPU_CHUNK_ROWS on the CPU, all n on a GPU); it changes nothing but the network's float rounding. clip=(lo, hi) clips x0_hat in data space. With
        return_labels / return_trajectory returns Sampled(samples, labels, initial, trajectory).
        compile=True runs the network call through torch.compile (compiled once per process, ~10-30 s on
        a CPU; then about 2x faster for the bundled MLP, bench/bench_sampling.py)."""
        plan = self.plan(steps, sampler, eta)
        return self._sample(n, plan, seed, batch_size, clip, cond, progress, f"{sampler} sampling", return_labels,
                            return_trajectory, compile)

    def reverse_effort(self, n: int, steps: int | None = None, sampler: str = "ancestral", eta: float = 0.0,
                       seed: int | None = None, batch_size: int | None = None, progress: bool = False,
                       clip: tuple[float, float] | None = None, cond: torch.Tensor | None = None) -> float:
        """The empirical reverse effort: mean ||x_T - x_0||^2 over n sampled trajectories."""
        return self._effort(n, self.plan(steps, sampler, eta), seed, batch_size, clip, cond, progress, "effort")


def ve_sigma_max(prior: GaussianMixturePrior, x: torch.Tensor, max_rows: int = 4096, seed: int = 0) -> float:
    """sigma_max for a VE SDE centred on the components: the largest distance between two training
    points of the same component, measured in that component's whitened coordinates A_j^{-1}(x - mu_j)
    (Song & Ermon's rule, applied within components; with the standard prior it is the largest
    pairwise distance of the data). Components with more than max_rows points use a seeded subsample."""
    x = prior._prepare(x)
    labels = prior.assign(x)
    y = x - prior.means.to(x.dtype)[labels]
    factor = prior.cov_factor
    if prior.covariance_type in ("spherical", "diag"):
        f = factor.to(x.dtype)[labels]
        y = y / (f[:, None] if f.dim() == 1 else f)
    elif prior.covariance_type == "full":
        y = torch.linalg.solve_triangular(factor.to(x.dtype)[labels], y[..., None], upper=False)[..., 0]
    g = torch.Generator().manual_seed(seed)
    best = 0.0
    for k in range(prior.n_components):
        yk = y[labels == k]
        if yk.shape[0] > max_rows:
            yk = yk[torch.randperm(yk.shape[0], generator=g)[:max_rows].to(yk.device)]
        if yk.shape[0] > 1:
            best = max(best, float(torch.cdist(yk.double(), yk.double()).max()))
    return best


class MixSGM(_MixtureDiffusion):
    """Continuous-time mixSGM (score-based model with `GaussianMixturePrior.standard(dim)`).

    The network predicts eps of x_t = mu_j + m(t)(x0 - mu_j) + s(t) A_j eps (VP: the marginal of the VP
    SDE; VE: m = 1, s = sigma(t)); the score is -Sigma_j^{-1} A_j eps_hat / s(t). The loss is the
    eps-regression, i.e. denoising score matching weighted by s(t)^2.

    Args:
        score_net: an nn.Module denoiser(x, t, component=None, cond=None) -> eps_hat, with t continuous
            times [B] in (0, 1] (float32).
        prior: the mixture prior. For VE the prior is sum_k w_k N(mu_k, sigma_max^2 Sigma_k).
        sde: "vp" or "ve", or a VPSDE / VESDE.
        beta_min, beta_max (VP), sigma_min, sigma_max (VE; see `ve_sigma_max`), eps_t: the SDE's parameters
            when sde is a name (eps_t default: 1e-3 for VP, 1e-5 for VE).
    """

    def __init__(self, score_net: nn.Module, prior: GaussianMixturePrior, sde="vp", beta_min: float = 0.1,
                 beta_max: float = 20.0, sigma_min: float = 0.01, sigma_max: float = 50.0, eps_t: float | None = None,
                 component_input: str = "embedding", centre_input: bool = True,
                 sample_shape: Sequence[int] | None = None):
        super().__init__(score_net, prior, component_input, centre_input, sample_shape)
        if sde == "vp":
            sde = VPSDE(beta_min, beta_max, 1e-3 if eps_t is None else eps_t)
        elif sde == "ve":
            sde = VESDE(sigma_min, sigma_max, 1e-5 if eps_t is None else eps_t)
        elif not isinstance(sde, (VPSDE, VESDE)):
            raise ValueError(f"sde must be 'vp', 've', a VPSDE or a VESDE, got {sde!r}")
        self.sde = sde

    def sample_timesteps(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n times uniform on [eps_t, 1) (float64, CPU)."""
        eps_t = self.sde.eps_t
        return eps_t + (1.0 - eps_t) * torch.rand(n, generator=generator, dtype=torch.float64)

    def _forward_coefficients(self, t):
        if not t.is_floating_point():
            raise TypeError(f"t must hold continuous times for MixSGM, got dtype {t.dtype}")
        return self.sde.marginal(t)

    def _net_time(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(torch.float32)

    def _draw_prior(self, n: int, seed: int, offset: int):
        x, labels = super()._draw_prior(n, seed, offset)
        scale = self.sde.prior_scale
        if scale != 1.0:  # VE: x_T ~ N(mu_j, sigma_max^2 Sigma_j)
            mu = self.means[labels]
            x = mu + scale * (x - mu)
        return x, labels

    def plan(self, steps: int = 1000, sampler: str = "euler_maruyama", snr: float = 0.16,
             corrector_steps: int = 1) -> list[_Step]:
        """Steps on the grid from t = 1 to eps_t: "euler_maruyama" (reverse SDE), "ode" (probability
        flow, Euler) or "pc" (corrector_steps Langevin steps at t_i, then the Euler-Maruyama predictor).
        The last predictor step adds no noise. Step ids: predictor i -> i, corrector c at i ->
        (c + 1) steps + i, so every update has its own noise stream."""
        _check_choice(sampler, SGM_SAMPLERS, "sampler")
        steps = _check_int(steps, "steps", 1)
        corrector_steps = _check_int(corrector_steps, "corrector_steps", 0)
        grid = self.sde.time_grid(steps).tolist()
        plan = []
        for i in range(steps):
            t, dt = grid[i], grid[i] - grid[i + 1]
            if sampler == "pc":
                for c in range(corrector_steps):
                    plan.append(_Step(t, self.sde.langevin_coefficients(t, snr=snr), (c + 1) * steps + i))
            if sampler == "ode":
                coefs = self.sde.probability_flow_coefficients(t, dt)
            else:
                coefs = self.sde.euler_maruyama_coefficients(t, dt)
                if i == steps - 1:
                    coefs = coefs._replace(coef_noise=0.0)
            plan.append(_Step(t, coefs, i))
        return plan

    def sample(self, n: int, steps: int = 1000, sampler: str = "euler_maruyama", seed: int | None = None,
               batch_size: int | None = None, snr: float = 0.16, corrector_steps: int = 1,
               return_trajectory: bool = False, progress: bool = True, return_labels: bool = False,
               clip: tuple[float, float] | None = None, cond: torch.Tensor | None = None, compile: bool = False):
        """n samples by `steps` steps of the reverse SDE (Euler-Maruyama), predictor-corrector ("pc",
        Langevin corrector with signal-to-noise ratio snr) or the probability-flow ODE ("ode").
        seed, batch_size, return_*, clip, cond, compile: as MixDDPM.sample."""
        plan = self.plan(steps, sampler, snr, corrector_steps)
        return self._sample(n, plan, seed, batch_size, clip, cond, progress, f"{sampler} sampling", return_labels,
                            return_trajectory, compile)

    def reverse_effort(self, n: int, steps: int = 1000, sampler: str = "euler_maruyama", seed: int | None = None,
                       batch_size: int | None = None, snr: float = 0.16, corrector_steps: int = 1,
                       progress: bool = False, clip: tuple[float, float] | None = None,
                       cond: torch.Tensor | None = None) -> float:
        """The empirical reverse effort: mean ||x_T - x_0||^2 over n sampled trajectories."""
        return self._effort(n, self.plan(steps, sampler, snr, corrector_steps), seed, batch_size, clip, cond,
                            progress, "effort")
