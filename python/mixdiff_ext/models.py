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

Conditioning (docs/method.md, "Conditioning"): with a `GMMConditioner`, `loss(..., conditions=a)` and
`sample(..., conditions=a)` turn attributes or class ids into condition vectors c drawn from the
conditioner's mixture, with counter-based noise of a seed derived from the call's seed. `cond_dropout`
replaces c by the null condition (zeros) for that fraction of training rows, and `guidance_scale` w
mixes eps_null + w (eps_c - eps_null) at sampling (classifier-free guidance). `aux_classifier` with
`aux_weight` lambda > 0 adds lambda * mean_i signal_i^2 NGMG(f(x0_hat_i), mixture of a_i) to the loss.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import torch
from torch import nn

from . import ops, sampling
from ._checks import check_real
from ._random import check_offset, resolve_seed
from ._reference import apply_factor  # pure-torch, differentiable A_j v (x0_hat for the auxiliary term)
from .conditioning import GMMConditioner, aux_ngmg_loss, check_conditioning, condition_vectors, guided, kept_rows
from .prior import GaussianMixturePrior
from .schedules import DEFAULT_SAMPLER, VESDE, VPSDE, DiscreteSchedule, PlanStep, check_prediction_type

__all__ = ["MixDDPM", "MixSGM", "Sampled", "ve_sigma_max"]

COMPONENT_INPUTS = ("embedding", "none")
# batch_size=None on the CPU: trajectories run in chunks of this many rows, one chunk through all steps
# before the next, so the network's activations stay in cache (2-3x faster than one 100k-row batch for
# the MLPs here, bench/bench_sampling.py). The counter-based noise makes the chunking invisible.
CPU_CHUNK_ROWS = 4096


class Sampled(NamedTuple):
    """`sample(..., return_labels=True or return_trajectory=True)`."""

    samples: torch.Tensor  # [n, *sample_shape]
    labels: torch.Tensor  # int64 [n]: the component of each trajectory
    initial: torch.Tensor  # [n, *sample_shape]: the prior draws x_T the trajectories started from
    trajectory: torch.Tensor | None  # [steps + 1, n, *sample_shape] from x_T to x_0, when asked


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
                 sample_shape: Sequence[int] | None, prediction_type: str = "epsilon", *,
                 conditioner: GMMConditioner | None = None,
                 cond_dropout: float = 0.0, aux_classifier: nn.Module | None = None, aux_weight: float = 0.0,
                 aux_sigma: float | None = None, aux_kind: str = "potential"):
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
        self.prediction_type = check_prediction_type(prediction_type)
        # the data support: each component's bounding box of the training rows dispatched to it (empty:
        # lo = +inf > hi = -inf), widened by every training loss; clip="auto" clips x0_hat to it
        self.register_buffer("support_lo", torch.full_like(self.means, math.inf))
        self.register_buffer("support_hi", torch.full_like(self.means, -math.inf))
        self._init_conditioning(conditioner, cond_dropout, aux_classifier, aux_weight, aux_sigma, aux_kind)

    def _init_conditioning(self, conditioner, cond_dropout, aux_classifier, aux_weight, aux_sigma, aux_kind) -> None:
        c = check_conditioning(conditioner, cond_dropout, aux_classifier, aux_weight, aux_sigma, aux_kind)
        self.conditioner, self.cond_dropout = c["conditioner"], c["cond_dropout"]
        # the classifier is a fixed judge: frozen here and kept in eval mode by train()
        self.aux_classifier = None if aux_classifier is None else aux_classifier.requires_grad_(False).eval()
        self.aux_weight, self.aux_sigma, self.aux_kind = c["aux_weight"], c["aux_sigma"], c["aux_kind"]

    def train(self, mode: bool = True):
        super().train(mode)
        if self.aux_classifier is not None:
            self.aux_classifier.eval()
        return self

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

    def synchronize_support(self) -> None:
        """In a distributed run: every rank's data-support boxes become the union of all ranks' (each rank's
        loss saw only its share of the batch), so that they equal a single process's."""
        torch.distributed.all_reduce(self.support_lo, op=torch.distributed.ReduceOp.MIN)
        torch.distributed.all_reduce(self.support_hi, op=torch.distributed.ReduceOp.MAX)

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
                      cond: torch.Tensor | None = None, guidance_scale: float = 1.0) -> torch.Tensor:
        """The network output (eps_hat, y0_hat or v_hat by prediction_type) for flat rows x [B, D] with
        components `labels`: what the denoiser sees follows
        component_input and centre_input. With a condition and guidance_scale w != 1, classifier-free
        guidance eps_null + w (eps_cond - eps_null), where the null condition is cond=None. Returns [B, D]."""
        net_x = (x - means[labels] if self.centre_input else x).reshape(x.shape[0], *self.sample_shape)
        component = labels if self.component_input == "embedding" else None
        out = guided(lambda c: self.denoiser(net_x, t, component=component, cond=c), cond, guidance_scale)
        return out.reshape(x.shape)

    def _aux_loss(self, x_t, out, signal, noise_scale, labels, means, factor, cov_type, conditions,
                  kept) -> torch.Tensor:
        """mean_i signal_i^2 NGMG(f(x0_hat_i), mixture of conditions_i) over the rows that keep their
        condition, with x0_hat = mu_j + y0_hat of the network output (schedules.prediction_coefficients;
        for eps: (x_t - mu_j - s A_j eps_hat) / m). The weight signal^2 keeps the gradient through x0_hat
        (which carries 1 / signal) bounded at high noise."""
        m, s = signal.to(x_t.dtype)[:, None], noise_scale.to(x_t.dtype)[:, None]
        mu = means[labels]
        y = x_t - mu
        if self.prediction_type == "sample":
            y0_hat = out
        elif self.prediction_type == "epsilon":
            y0_hat = (y - s * apply_factor(factor, cov_type, labels, out)) / m
        else:
            y0_hat = m * y - s * apply_factor(factor, cov_type, labels, out)
        x0_hat = (mu + y0_hat).reshape(x_t.shape[0], *self.sample_shape)
        return aux_ngmg_loss(self.conditioner, self.aux_classifier, x0_hat, conditions, m[:, 0] ** 2, kept,
                             self.aux_sigma, self.aux_kind)

    # -- training ----------------------------------------------------------------------------------
    def sample_timesteps(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def _forward_coefficients(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def loss(self, x0: torch.Tensor, t: torch.Tensor | None = None, seed: int | None = None, offset: int = 0,
             cond: torch.Tensor | None = None, labels: torch.Tensor | None = None, conditions=None) -> torch.Tensor:
        """Mean squared error ||eps - eps_hat||^2 over the rows of x0 [B, *sample_shape], plus
        aux_weight times the auxiliary NGMG term when the model has one.

        t: per-row times (None: drawn with `sample_timesteps` from torch's default generator). Noise eps
        for row i is row offset + i of the counter-based stream of `seed` (None: drawn from torch's
        default generator). labels: each row's component (None: the nearest centre, assigned inside
        q_sample). cond: condition vectors [B, cond_dim]; or conditions: attributes [B, M] / class ids [B]
        that the conditioner turns into condition vectors. cond_dropout applies to either."""
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
        cond = condition_vectors(self.conditioner, n, cond, conditions, seed, offset)
        kept = None
        if cond is not None and self.cond_dropout > 0:
            kept = kept_rows(self.cond_dropout, n, seed, offset, cond.device)
            cond = cond * kept[:, None].to(cond.dtype)
        signal, noise_scale = self._forward_coefficients(t)
        means, factor, cov_type = self._prior_args(flat.dtype)
        x_t, eps, labels = ops.q_sample(flat, signal, noise_scale, means, factor, cov_type, seed=seed,
                                        offset=offset, labels=labels)
        if self.training:
            sampling.update_support(self.support_lo, self.support_hi, flat, labels)
        out = self.predict_noise(x_t, self._net_time(t), labels, means, cond)
        loss = torch.mean((out - self._target(flat, eps, signal, noise_scale, labels, means)) ** 2)
        if self.aux_weight > 0:
            loss = loss + self.aux_weight * self._aux_loss(x_t, out, signal, noise_scale, labels, means, factor,
                                                           cov_type, conditions, kept)
        return loss

    def _target(self, x0, eps, signal, noise_scale, labels, means) -> torch.Tensor:
        """The network's regression target: eps, y0 = x0 - mu_j, or v = m eps - s A_j^{-1} y0."""
        if self.prediction_type == "epsilon":
            return eps
        y0 = x0 - means[labels]
        if self.prediction_type == "sample":
            return y0
        m, s = signal.to(x0.dtype)[:, None], noise_scale.to(x0.dtype)[:, None]
        return m * eps - s * whiten(self.cov_factor, self.covariance_type, labels, y0)

    def forward(self, x0: torch.Tensor, **kwargs) -> torch.Tensor:
        """The training loss (so DistributedDataParallel, which wraps forward, sees it)."""
        return self.loss(x0, **kwargs)

    def _net_time(self, t: torch.Tensor) -> torch.Tensor:
        return t

    # -- sampling ----------------------------------------------------------------------------------
    def _draw_prior(self, n: int, seed: int, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
        return tuple(ops.prior_sample(self.means, self.log_weights, self.cov_factor, self.covariance_type, n, seed,
                                      offset))

    def _run(self, n: int, plan: list[PlanStep], options: dict, desc: str,
             on_chunk: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor] | None], None],
             keep_trajectory: bool = False) -> None:
        """Runs the plan (sampling.run_plan) on chunks of `batch_size` rows: chunk rows [start, start + m) use
        generator rows offset start + i for the prior draw, the condition noise and every step's noise, so
        the result does not depend on batch_size. `options`: the sampling options every sampler shares
        (seed, batch_size, clip, clip_margin, cond, conditions, guidance_scale, progress, compile). Calls
        on_chunk(start, x_T, x_0, labels, trajectory) per chunk (trajectory: the states from x_T on when
        keep_trajectory)."""
        n = _check_int(n, "n", 0)
        batch_size = options["batch_size"]
        if batch_size is None:
            batch_size = CPU_CHUNK_ROWS if self.means.device.type == "cpu" else n
        batch_size = _check_int(batch_size, "batch_size", 1)
        seed = resolve_seed(options["seed"])
        cond = condition_vectors(self.conditioner, n, options["cond"], options["conditions"], seed, 0)
        guidance_scale = check_real(options["guidance_scale"], "guidance_scale")
        clip = sampling.resolve_clip(options["clip"], options["clip_margin"], self.support_lo, self.support_hi, self)
        compile = options["compile"]
        if not isinstance(compile, bool):
            raise TypeError(f"compile must be a bool, got {type(compile).__name__}")
        predict = _predict_noise_compiled() if compile else type(self).predict_noise
        chunks = range(0, n, batch_size)
        bar = None
        if options["progress"]:  # tqdm is imported only when asked for
            from tqdm.auto import tqdm

            bar = tqdm(total=len(plan) * len(chunks), desc=desc, unit="step", leave=False)
        with torch.no_grad():
            for start in chunks:
                m = min(batch_size, n - start)
                x_start, labels = self._draw_prior(m, seed, start)
                means, factor, cov_type = self._prior_args(x_start.dtype)
                trajectory = [x_start] if keep_trajectory else None
                chunk_cond = None if cond is None else cond[start:start + m]

                def network(x, net_time):
                    # one value for the whole chunk: a stride-0 view, so a denoiser may embed it once
                    t = torch.full((1,), net_time, dtype=torch.float32, device=x.device).expand(x.shape[0])
                    return predict(self, x, t, labels, means, chunk_cond, guidance_scale)

                def on_step(x):
                    if trajectory is not None:
                        trajectory.append(x)
                    if bar is not None:
                        bar.update(1)

                x = sampling.run_plan(network, x_start, labels, plan, means, factor, cov_type, seed=seed, offset=start,
                                      prediction_type=self.prediction_type, clip=clip, on_step=on_step)
                on_chunk(start, x_start, x, labels, trajectory)
        if bar is not None:
            bar.close()

    def _sample(self, n, plan, options, desc, return_labels, return_trajectory):
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

        self._run(n, plan, options, desc, keep, return_trajectory)
        samples = out.reshape(n, *shape)
        if not (return_labels or return_trajectory):
            return samples
        return Sampled(samples, out_labels, out_initial.reshape(n, *shape),
                       None if traj is None else traj.reshape(len(plan) + 1, n, *shape))

    def _effort(self, n, plan, options) -> float:
        total = torch.zeros((), dtype=torch.float64)

        def accumulate(start, x_T, x0, labels, trajectory):
            total.add_(((x0 - x_T).double() ** 2).sum().cpu())

        self._run(n, plan, options, "effort", accumulate)
        return float(total) / max(n, 1)


def _sampling_options(seed=None, batch_size=None, clip="auto", clip_margin=sampling.DEFAULT_CLIP_MARGIN,
                      cond=None, conditions=None, guidance_scale=1.0, progress=True, compile=False) -> dict:
    """The options every sampler of both models takes (MixDDPM.sample documents them)."""
    return dict(seed=seed, batch_size=batch_size, clip=clip, clip_margin=clip_margin, cond=cond, conditions=conditions,
                guidance_scale=guidance_scale, progress=progress, compile=compile)


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
        prediction_type: what the denoiser predicts, diffusers' names in the centred coordinates
            y = x - mu_j: "epsilon" (the noise eps), "sample" (y0 = x0 - mu_j) or "v_prediction"
            (v = m eps - s A_j^{-1} y0); training regresses on it and every sampler converts it.
        conditioner: a GMMConditioner: `loss` and `sample` then take `conditions` (attributes / class ids).
        cond_dropout: fraction of training rows whose condition is replaced by the null one (zeros), for
            classifier-free guidance (`sample(..., guidance_scale=w)`).
        aux_classifier, aux_weight, aux_sigma, aux_kind: the auxiliary term aux_weight * mean_i signal_i^2
            NGMG(aux_classifier(x0_hat_i), conditioner mixture of conditions_i), NGMG kernel width aux_sigma
            (None: the conditioner's sigma) and kind "potential" or "log"; the classifier is frozen.
    """

    def __init__(self, denoiser: nn.Module, prior: GaussianMixturePrior, schedule="linear", timesteps: int = 1000,
                 component_input: str = "embedding", centre_input: bool = True, variance_type: str = "fixed_small",
                 sample_shape: Sequence[int] | None = None, prediction_type: str = "epsilon", **conditioning):
        super().__init__(denoiser, prior, component_input, centre_input, sample_shape, prediction_type, **conditioning)
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

    def plan(self, steps: int | None = None, sampler: str = DEFAULT_SAMPLER, eta: float = 0.0, order: int = 2,
             spacing: str | None = None) -> list[PlanStep]:
        """The steps of a sampler (DiscreteSchedule.plan with the model's variance_type and prediction_type)."""
        return self.schedule.plan(steps, sampler, eta=eta, variance_type=self.variance_type, spacing=spacing,
                                  order=order, prediction_type=self.prediction_type)

    def sample(self, n: int, steps: int | None = None, sampler: str = DEFAULT_SAMPLER, eta: float = 0.0,
               order: int = 2, spacing: str | None = None, return_trajectory: bool = False,
               return_labels: bool = False, **options):
        """n samples [n, *sample_shape] by `steps` reverse steps, each trajectory centred on its drawn
        component. With return_labels / return_trajectory returns Sampled(samples, labels, initial, trajectory).

        sampler: "sde-dpmsolver++" (default: multistep SDE-DPM-Solver++ of `order` 2 or 3, 20 steps when
        steps is None), "dpmsolver++" (its deterministic variant, as many steps), "ancestral" (DDPM) or
        "ddim" (eta); the last two take all T steps when steps is None. spacing: the timesteps' spacing, "leading",
        "trailing" or "linspace" (default: "leading" for ancestral / DDIM, "linspace" for the solvers, as
        diffusers' schedulers); DiscreteSchedule.plan has the details.

        Options (keywords; MixSGM.sample takes the same):
            seed: the counter-based generator's seed (None: drawn from torch's default generator).
            batch_size: rows per chunk (default: CPU_CHUNK_ROWS on the CPU, all n on a GPU); it changes
                nothing but the network's float rounding.
            clip: "auto" (default) clips x0_hat to the trajectory's component box learned from the training
                data: widened by clip_margin times its width on every step but the last, the box itself on
                the last, so samples stay in it (MixSGM's euler_maruyama, ode and pc: within one Euler
                step of it; an untrained model samples unclipped and warns once);
                None: no clipping; (lo, hi): fixed bounds in data space (numbers or tensors
                broadcastable to [K, D]). With clipping, every sampler's eps_hat is re-derived from the
                clipped x0_hat (docs/method.md, "Sampling").
            clip_margin: relative margin of the learned boxes for the intermediate x0_hat (default
                sampling.DEFAULT_CLIP_MARGIN = 0).
            cond: condition vectors [n, cond_dim]; or conditions: attributes [n, M] / class ids [n] that
                the model's conditioner turns into condition vectors (drawn, batch-invariantly).
            guidance_scale: classifier-free guidance weight w (1: plain conditional sampling).
            progress: a tqdm bar (default True).
            compile: run the network call through torch.compile (compiled once per process, ~10-30 s
                on a CPU; then about 2x faster for the bundled MLP, bench/bench_sampling.py)."""
        plan = self.plan(steps, sampler, eta, order, spacing)
        return self._sample(n, plan, _sampling_options(**options), f"{sampler} sampling", return_labels,
                            return_trajectory)

    def reverse_effort(self, n: int, steps: int | None = None, sampler: str = DEFAULT_SAMPLER, eta: float = 0.0,
                       order: int = 2, spacing: str | None = None, progress: bool = False, **options) -> float:
        """The empirical reverse effort: mean ||x_T - x_0||^2 over n sampled trajectories (arguments and
        options as for sample)."""
        return self._effort(n, self.plan(steps, sampler, eta, order, spacing),
                            _sampling_options(progress=progress, **options))


def whiten(cov_factor: torch.Tensor | None, covariance_type: str, labels: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A_j^{-1} y for each row's component j (differentiable)."""
    if covariance_type == "identity":
        return y
    f = cov_factor.to(y.dtype)[labels]
    if covariance_type == "full":
        return torch.linalg.solve_triangular(f, y[..., None], upper=False)[..., 0]
    return y / (f[:, None] if f.dim() == 1 else f)


def ve_sigma_max(prior: GaussianMixturePrior, x: torch.Tensor, max_rows: int = 4096, seed: int = 0) -> float:
    """sigma_max for a VE SDE centred on the components: the largest distance between two training
    points of the same component, measured in that component's whitened coordinates A_j^{-1}(x - mu_j)
    (Song & Ermon's rule, applied within components; with the standard prior it is the largest
    pairwise distance of the data). Components with more than max_rows points use a seeded subsample."""
    x = prior._prepare(x)
    labels = prior.assign(x)
    y = whiten(prior.cov_factor, prior.covariance_type, labels, x - prior.means.to(x.dtype)[labels])
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
        component_input, centre_input, sample_shape, prediction_type ("v_prediction" needs VP), and the
            conditioning keywords (conditioner, cond_dropout, aux_classifier, aux_weight, aux_sigma, aux_kind):
            as MixDDPM.
    """

    def __init__(self, score_net: nn.Module, prior: GaussianMixturePrior, sde="vp", beta_min: float = 0.1,
                 beta_max: float = 20.0, sigma_min: float = 0.01, sigma_max: float = 50.0, eps_t: float | None = None,
                 component_input: str = "embedding", centre_input: bool = True,
                 sample_shape: Sequence[int] | None = None, prediction_type: str = "epsilon", **conditioning):
        super().__init__(score_net, prior, component_input, centre_input, sample_shape, prediction_type, **conditioning)
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
             corrector_steps: int = 1, order: int = 2) -> list[PlanStep]:
        """The steps of a sampler (VPSDE.plan / VESDE.plan with the model's prediction_type)."""
        return self.sde.plan(steps, sampler, snr=snr, corrector_steps=corrector_steps, order=order,
                             prediction_type=self.prediction_type)

    def sample(self, n: int, steps: int = 1000, sampler: str = "euler_maruyama", snr: float = 0.16,
               corrector_steps: int = 1, order: int = 2, return_trajectory: bool = False, return_labels: bool = False,
               **options):
        """n samples by `steps` steps of the reverse SDE (Euler-Maruyama), predictor-corrector ("pc",
        Langevin corrector with signal-to-noise ratio snr), the probability-flow ODE ("ode"), or, for the VP
        SDE, multistep DPM-Solver++ ("dpmsolver++", "sde-dpmsolver++", `order` 2 or 3).
        return_*, and the options (seed, batch_size, clip, clip_margin, cond, conditions, guidance_scale,
        progress, compile): as MixDDPM.sample."""
        plan = self.plan(steps, sampler, snr, corrector_steps, order)
        return self._sample(n, plan, _sampling_options(**options), f"{sampler} sampling", return_labels,
                            return_trajectory)

    def reverse_effort(self, n: int, steps: int = 1000, sampler: str = "euler_maruyama", snr: float = 0.16,
                       corrector_steps: int = 1, order: int = 2, progress: bool = False, **options) -> float:
        """The empirical reverse effort: mean ||x_T - x_0||^2 over n sampled trajectories (options as
        for MixDDPM.sample)."""
        return self._effort(n, self.plan(steps, sampler, snr, corrector_steps, order),
                            _sampling_options(progress=progress, **options))
