"""MixtureNoiseScheduler: parity with diffusers' DDPMScheduler / DDIMScheduler under the standard prior,
the mixture prior against the pure-torch reference, batch invariance, seeding and argument checks.

Parity loops run 50 steps of a fixed random "model" eps_hat = tanh(W x + b t / 1000) from the same
x_T and with the same noise on both sides. Without clipping such a model drives x0_hat (and so the
trajectory) to magnitudes of several hundred, so errors are relative to the largest value seen
(conftest.rel_err). Tolerances: float32 5e-5 (measured: <= 1.4e-5, the worst a deterministic DDIM run
with clipping, whose trajectory amplifies float32 rounding: diffusers' own float32 run of that case is
7.6e-6 away from float64, ours 1.5e-5), x0 predictions in float32 1e-4 (see TOL_X0), float64 1e-11
(measured: <= 4e-14; float64 runs compare against a diffusers scheduler whose float32 alphas_cumprod
was cast to float64, since stock diffusers evaluates its step coefficients in float32 even for float64
samples).
"""
from __future__ import annotations

import copy
import math

import pytest
import torch

from conftest import gen, make_mixture, randn, rel_err
from mixdiff_ext import _reference as ref
from mixdiff_ext.prior import GaussianMixturePrior
from mixdiff_ext.scheduler import MixtureNoiseScheduler, MixtureSchedulerOutput

diffusers = pytest.importorskip("diffusers")
dpm_module = pytest.importorskip("diffusers.schedulers.scheduling_dpmsolver_multistep")

F64 = torch.float64
TOL = {torch.float32: 5e-5, torch.float64: 1e-11}
# x0_hat = (x - sqrt(1 - abar_t) eps) / sqrt(abar_t) amplifies the float32 rounding of x by up to
# 1 / sqrt(abar_999) ~ 160 (linear schedule), so its float32 tolerance is looser
TOL_X0 = {torch.float32: 1e-4, torch.float64: 1e-11}
SHAPE = (4, 2, 3, 3)  # [B, C, H, W]: the scheduler flattens to [B, 18]


class LinearModel:
    """eps_hat = tanh(W x + b t / 1000), evaluated in float64, returned in x's dtype."""

    def __init__(self, d: int, seed: int = 0):
        g = gen(seed)
        self.W = torch.randn(d, d, generator=g, dtype=F64) / math.sqrt(d)
        self.b = torch.randn(d, generator=g, dtype=F64)

    def __call__(self, x, t):
        f = x.reshape(x.shape[0], -1).to(F64)
        # broadcast-and-sum rather than a BLAS matmul: tiny products through MKL were ~10 ms each on the
        # shared CI cores
        wx = (f[:, None, :] * self.W[None]).sum(-1)
        return torch.tanh(wx + self.b * (int(t) / 1000)).reshape(x.shape).to(x.dtype)


def diffusers_pair(sampler, dtype, **kw):
    """(diffusers scheduler, ours) with the same configuration; float64: diffusers' abar cast to float64."""
    kw.setdefault("clip_sample", False)  # diffusers' default is True, ours "auto"
    ours_kw = dict(kw)
    eta = ours_kw.pop("eta", 0.0)
    kw.pop("eta", None)
    if sampler == "ddpm":
        kw.pop("set_alpha_to_one", None)
        d = diffusers.DDPMScheduler(**kw)
    else:
        kw.pop("variance_type", None)
        d = diffusers.DDIMScheduler(**kw)
    ours = MixtureNoiseScheduler(sampler=sampler, eta=eta, **ours_kw)
    if dtype == F64:
        d.alphas_cumprod = d.alphas_cumprod.to(F64)
        if sampler == "ddpm":
            d.one = d.one.to(F64)
        else:
            d.final_alpha_cumprod = d.final_alpha_cumprod.to(F64)
    return d, ours


def run_parity(sampler, dtype, steps=50, eta=0.0, use_clipped_model_output=False, **kw):
    """Runs both schedulers over set_timesteps(steps); returns (rel error of the trajectories, of the
    x0 predictions, number of steps compared)."""
    d, ours = diffusers_pair(sampler, dtype, eta=eta, **kw)
    assert torch.equal(ours.alphas_cumprod, diffusers_pair(sampler, torch.float32, eta=eta, **kw)[0].alphas_cumprod)
    if steps is not None:
        d.set_timesteps(steps)
        ours.set_timesteps(steps)
    assert torch.equal(ours.timesteps, d.timesteps) and ours.timesteps.dtype == torch.int64
    model = LinearModel(math.prod(SHAPE[1:]))
    x = randn(*SHAPE, seed=1, dtype=dtype)
    x_ours = x.clone()
    got, want, got_x0, want_x0 = [], [], [], []
    last = d.timesteps[-1]
    for t in d.timesteps:
        g = torch.Generator().manual_seed(1000 + int(t))
        z = torch.randn(SHAPE, generator=copy.deepcopy(g), dtype=dtype)  # what diffusers will draw
        if sampler == "ddpm":
            out_d = d.step(model(x, t), t, x, generator=g)
            out_o = ours.step(model(x_ours, t), t, x_ours, noise=z)
            prev_d = out_d.prev_sample
            if t == last and int(t) > 0:
                # diffusers adds noise whenever t > 0, also on the last step (prev_t < 0), where the
                # posterior variance is 0 (clamped to 1e-20) for fixed_small and beta_t for fixed_large;
                # we add none there. Remove diffusers' noise term for the comparison.
                prev_d = prev_d - d._get_variance(t).to(dtype) ** 0.5 * z
        else:
            out_d = d.step(model(x, t), t, x, eta=eta, use_clipped_model_output=use_clipped_model_output,
                           variance_noise=z)
            out_o = ours.step(model(x_ours, t), t, x_ours, eta=eta,
                              use_clipped_model_output=use_clipped_model_output, noise=z)
            prev_d = out_d.prev_sample
        assert isinstance(out_o, MixtureSchedulerOutput) and out_o.prev_sample.dtype == dtype
        assert out_o.prev_sample.shape == SHAPE
        got.append(out_o.prev_sample)
        want.append(prev_d)
        got_x0.append(out_o.pred_original_sample)
        want_x0.append(out_d.pred_original_sample)
        x, x_ours = prev_d, out_o.prev_sample
    return rel_err(torch.stack(got), torch.stack(want)), rel_err(torch.stack(got_x0), torch.stack(want_x0)), len(got)


# --------------------------------------------------------------------------------------------------
# parity with diffusers (standard prior)
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("clip", [False, True], ids=["noclip", "clip"])
@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
def test_ddpm_matches_diffusers(dtype, spacing, clip, variance_type):
    e, e0, n = run_parity("ddpm", dtype, timestep_spacing=spacing, clip_sample=clip, variance_type=variance_type)
    assert n == 50
    assert e < TOL[dtype] and e0 < TOL_X0[dtype], (e, e0)


@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("clip", [False, True], ids=["noclip", "clip"])
@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_ddim_matches_diffusers(dtype, spacing, clip, eta):
    e, e0, _ = run_parity("ddim", dtype, eta=eta, timestep_spacing=spacing, clip_sample=clip)
    assert e < TOL[dtype] and e0 < TOL_X0[dtype], (e, e0)


@pytest.mark.parametrize("kw", [
    dict(sampler="ddim", eta=0.5, use_clipped_model_output=True, clip_sample=True, clip_sample_range=1.5),
    dict(sampler="ddim", eta=1.0, set_alpha_to_one=False, steps_offset=1),
    dict(sampler="ddim", beta_schedule="squaredcos_cap_v2", timestep_spacing="trailing", steps=20),
    dict(sampler="ddpm", beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1),
    dict(sampler="ddpm", beta_schedule="squaredcos_cap_v2", variance_type="fixed_large", steps=7),
    dict(sampler="ddpm", num_train_timesteps=60, steps=None),  # no set_timesteps: every timestep
], ids=["ddim-clipped-eps", "ddim-final-alpha", "ddim-cosine", "ddpm-scaled-offset", "ddpm-cosine-large",
        "ddpm-full-chain"])
@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["f32", "f64"])
def test_more_configurations_match_diffusers(kw, dtype):
    kw = dict(kw)
    sampler, steps = kw.pop("sampler"), kw.pop("steps", 50)
    eta, clipped = kw.pop("eta", 0.0), kw.pop("use_clipped_model_output", False)
    e, e0, _ = run_parity(sampler, dtype, steps=steps, eta=eta, use_clipped_model_output=clipped, **kw)
    assert e < TOL[dtype] and e0 < TOL_X0[dtype], (e, e0)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
@pytest.mark.parametrize("prediction_type", ["sample", "v_prediction"])
@pytest.mark.parametrize("clip", [False, True], ids=["noclip", "clip"])
@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["f32", "f64"])
def test_prediction_types_match_diffusers(sampler, prediction_type, clip, dtype):
    e, e0, _ = run_parity(sampler, dtype, prediction_type=prediction_type, clip_sample=clip, eta=0.0)
    assert e < TOL[dtype] and e0 < TOL_X0[dtype], (e, e0)


def dpm_pair(dtype, **kw):
    """(diffusers' DPMSolverMultistepScheduler, ours) with the same configuration."""
    algorithm = kw.pop("algorithm_type", "dpmsolver++")
    d = diffusers.DPMSolverMultistepScheduler(algorithm_type=algorithm, **kw)
    ours = MixtureNoiseScheduler(sampler=algorithm, clip_sample=False, **kw)
    return d, ours


class _TorchWithoutFloat32:
    """torch as diffusers' DPM-Solver module sees it in the float64 runs: its step casts the sample and the
    noise to float32 and its sigmas are float32, which makes stock diffusers only float32-accurate whatever
    the dtype; with float32 read as float64 (after construction, so that its float32 betas stay) and its
    sigmas cast to float64, it computes the same update in float64."""

    float32 = torch.float64

    def __getattr__(self, name):
        return getattr(torch, name)


def run_dpm_parity(dtype, steps, monkeypatch, **kw):
    """Step-for-step comparison with diffusers' DPM-Solver++ from the same states: each step starts both
    schedulers from diffusers' previous sample. Returns (rel error of the trajectories, of the x0
    predictions, steps)."""
    d, ours = dpm_pair(dtype, **kw)
    d.set_timesteps(steps)
    ours.set_timesteps(steps)
    assert torch.equal(ours.timesteps, d.timesteps)
    if dtype == F64:
        d.sigmas = d.sigmas.to(F64)
        monkeypatch.setattr(dpm_module, "torch", _TorchWithoutFloat32())
    model = LinearModel(math.prod(SHAPE[1:]))
    x = randn(*SHAPE, seed=1, dtype=dtype)
    got, want, got_x0, want_x0 = [], [], [], []
    for t in d.timesteps:
        z = randn(*SHAPE, seed=1000 + int(t), dtype=dtype)
        out = model(x, t)
        prev_d = d.step(out, t, x, variance_noise=z).prev_sample
        o = ours.step(out, t, x, noise=z)
        got.append(o.prev_sample)
        want.append(prev_d)
        got_x0.append(o.pred_original_sample)
        want_x0.append(d.model_outputs[-1])  # diffusers keeps x0_hat of the step (data prediction)
        x = prev_d
    return rel_err(torch.stack(got), torch.stack(want)), rel_err(torch.stack(got_x0), torch.stack(want_x0)), len(got)


DPM_CASES = {
    "2m": dict(solver_order=2),
    "3m": dict(solver_order=3),
    "1": dict(solver_order=1),
    "2m-heun": dict(solver_order=2, solver_type="heun"),
    "3m-no-lower-final": dict(solver_order=3, lower_order_final=False),
    "sde-2m": dict(algorithm_type="sde-dpmsolver++", solver_order=2),
    "sde-3m": dict(algorithm_type="sde-dpmsolver++", solver_order=3),
    "sde-2m-heun": dict(algorithm_type="sde-dpmsolver++", solver_order=2, solver_type="heun"),
    "3m-leading-offset": dict(solver_order=3, timestep_spacing="leading", steps_offset=1),
    "2m-trailing-cosine": dict(solver_order=2, timestep_spacing="trailing", beta_schedule="squaredcos_cap_v2"),
    "3m-sample": dict(solver_order=3, prediction_type="sample"),
    "2m-v": dict(solver_order=2, prediction_type="v_prediction"),
    "sde-3m-v": dict(algorithm_type="sde-dpmsolver++", solver_order=3, prediction_type="v_prediction"),
}


@pytest.mark.parametrize("steps", [5, 20])
@pytest.mark.parametrize("case", list(DPM_CASES))
@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["f32", "f64"])
def test_dpmsolver_matches_diffusers(case, steps, dtype, monkeypatch):
    e, e0, n = run_dpm_parity(dtype, steps, monkeypatch, **DPM_CASES[case])
    assert n == steps
    tol = {torch.float32: 1e-5, F64: 1e-10}[dtype]  # measured f64: <= 1e-14
    assert e < tol and e0 < tol, (e, e0)


def test_dpmsolver_parity_check_is_sensitive(monkeypatch):
    """Second order instead of third must fail the tolerance (the order switch is exercised)."""
    d, _ = dpm_pair(F64, solver_order=3)
    _, ours = dpm_pair(F64, solver_order=2)
    d.set_timesteps(20)
    ours.set_timesteps(20)
    d.sigmas = d.sigmas.to(F64)
    monkeypatch.setattr(dpm_module, "torch", _TorchWithoutFloat32())
    model = LinearModel(18)
    x = randn(*SHAPE, seed=1)
    errs = []
    for t in d.timesteps[:4]:
        out = model(x, t)
        a = d.step(out, t, x).prev_sample
        errs.append(rel_err(ours.step(out, t, x).prev_sample, a))
        x = a
    assert errs[0] < 1e-12 and errs[1] < 1e-12 and errs[2] > 1e-6, errs


def test_dpmsolver_state_and_bad_use():
    o = MixtureNoiseScheduler(sampler="dpmsolver++", clip_sample=False)
    x = randn(*SHAPE, seed=1)
    with pytest.raises(ValueError, match="needs set_timesteps"):
        o.step(x, 999, x)
    o.set_timesteps(5)
    ts = [int(t) for t in o.timesteps]
    assert ts == _dpm_timesteps(5)
    o.step(x, ts[0], x)
    with pytest.raises(ValueError, match="in order"):
        o.step(x, ts[0], x)
    with pytest.raises(ValueError, match="eta and use_clipped_model_output"):
        o.step(x, ts[1], x, eta=0.5)
    for t in ts[1:]:
        x = o.step(x, t, x).prev_sample
    with pytest.raises(ValueError, match="plan is finished"):
        o.step(x, ts[-1], x)
    o.set_timesteps(5)  # a new trajectory
    o.step(x, ts[0], x)


def _dpm_timesteps(n):
    d = diffusers.DPMSolverMultistepScheduler()
    d.set_timesteps(n)
    return d.timesteps.tolist()


def test_parity_check_is_sensitive():
    """A different variance type or eta must fail the parity tolerance (the loops can fail)."""
    d, _ = diffusers_pair("ddpm", F64)
    ours = MixtureNoiseScheduler(variance_type="fixed_large")
    d.set_timesteps(50)
    ours.set_timesteps(50)
    model = LinearModel(18)
    x = randn(*SHAPE, seed=1)
    t = d.timesteps[10]
    g = torch.Generator().manual_seed(0)
    z = torch.randn(SHAPE, generator=copy.deepcopy(g), dtype=F64)
    a = d.step(model(x, t), t, x, generator=g).prev_sample
    b = ours.step(model(x, t), t, x, noise=z).prev_sample
    assert rel_err(b, a) > 1e-4


@pytest.mark.parametrize("dtype", [torch.float32, F64, torch.float16], ids=["f32", "f64", "f16"])
def test_add_noise_matches_diffusers(dtype):
    d = diffusers.DDPMScheduler()
    ours = MixtureNoiseScheduler()
    x0 = randn(64, 3, 4, 4, seed=3, dtype=dtype)
    noise = randn(64, 3, 4, 4, seed=4, dtype=dtype)
    t = torch.randint(0, 1000, (64,), generator=gen(5))
    got = ours.add_noise(x0, noise, t)
    want = d.add_noise(x0, noise, t)
    assert got.dtype == dtype and got.shape == x0.shape
    tol = {torch.float32: 1e-6, F64: 1e-6, torch.float16: 2e-3}[dtype]  # diffusers' sqrt(abar) is float32-rounded
    assert rel_err(got, want) < tol
    # float64: against the exact formula with diffusers' abar (float32 values) in float64
    if dtype == F64:
        abar = d.alphas_cumprod.to(F64)[t][:, None, None, None]
        assert rel_err(got, abar.sqrt() * x0 + (1 - abar).sqrt() * noise) < 1e-14
    # a single timestep broadcasts
    assert rel_err(ours.add_noise(x0, noise, torch.tensor(500)), d.add_noise(x0, noise, torch.tensor(500))) < tol


def test_timesteps_and_previous_timestep_match_diffusers():
    for spacing in ("leading", "trailing", "linspace"):
        for offset in (0, 1):
            for n in (1, 7, 50, 333, 1000):
                if offset and spacing != "leading":
                    continue
                if offset and n == 1000:  # diffusers would return timestep 1000, past the schedule
                    with pytest.raises(ValueError, match="steps_offset"):
                        MixtureNoiseScheduler(steps_offset=1).set_timesteps(n)
                    continue
                for sampler, cls in (("ddpm", diffusers.DDPMScheduler), ("ddim", diffusers.DDIMScheduler)):
                    d = cls(timestep_spacing=spacing, steps_offset=offset)
                    o = MixtureNoiseScheduler(sampler=sampler, timestep_spacing=spacing, steps_offset=offset)
                    d.set_timesteps(n)
                    o.set_timesteps(n)
                    assert torch.equal(o.timesteps, d.timesteps), (spacing, offset, n)
                    assert o.num_inference_steps == n
                    for t in o.timesteps[:: max(1, n // 5)].tolist() + [int(o.timesteps[-1])]:
                        if sampler == "ddpm":
                            want = int(d.previous_timestep(t))
                        else:
                            want = t - 1000 // n
                        assert o.previous_timestep(t) == want
    o = MixtureNoiseScheduler()
    assert torch.equal(o.timesteps, diffusers.DDPMScheduler().timesteps) and o.previous_timestep(5) == 4


def test_diffusers_interface():
    d = diffusers.DDPMScheduler()
    o = MixtureNoiseScheduler(prior=GaussianMixturePrior.standard(5))
    assert torch.equal(o.betas, d.betas) and torch.equal(o.alphas, d.alphas)
    assert torch.equal(o.alphas_cumprod, d.alphas_cumprod)
    assert o.init_noise_sigma == 1.0 and len(o) == 1000 and o.order == 1
    assert o.config.num_train_timesteps == 1000 and o.config["sampler"] == "ddpm"
    assert o.config.prediction_type == "epsilon"
    x = torch.randn(3, 5)
    assert o.scale_model_input(x, 10) is x
    out = o.step(torch.zeros(3, 5), 10, x, seed=0, return_dict=False)
    assert isinstance(out, tuple) and len(out) == 2
    assert o.step(torch.zeros(3, 5), 10, x, seed=0)[0].shape == (3, 5)
    with pytest.raises(TypeError):
        o.config["sampler"] = "ddim"


# --------------------------------------------------------------------------------------------------
# mixture priors against the reference
# --------------------------------------------------------------------------------------------------
def mixture_prior(covariance_type, seed=0, K=3, D=6):
    m = make_mixture(K, D, covariance_type, seed=seed)
    cov = None if m.cov_factor is None else (
        m.cov_factor @ m.cov_factor.mT if covariance_type == "full" else m.cov_factor ** 2)
    return GaussianMixturePrior(m.means, torch.exp(m.log_weights), cov, covariance_type), m


def dense_factor(prior, labels):
    """[N, D, D] A_j as dense matrices, built independently of the ops."""
    d = prior.dim
    f = prior.cov_factor
    if prior.covariance_type == "identity":
        return torch.eye(d, dtype=F64).expand(labels.numel(), d, d)
    if prior.covariance_type == "spherical":
        return f[labels, None, None] * torch.eye(d, dtype=F64)
    if prior.covariance_type == "diag":
        return torch.diag_embed(f[labels])
    return f[labels].tril()


@pytest.mark.parametrize("covariance_type", ["diag", "full", "spherical"])
def test_add_noise_mixture_matches_reference(covariance_type):
    prior, _ = mixture_prior(covariance_type)
    o = MixtureNoiseScheduler(prior)
    x0 = randn(50, 6, seed=7, scale=3.0)
    t = torch.randint(0, 1000, (50,), generator=gen(8))
    eps = randn(50, 6, seed=9)
    x_t, eps_out, labels = o.add_noise_with_labels(x0, t, noise=eps)
    assert torch.equal(labels, prior.assign(x0))  # nearest-centre dispatch
    assert torch.equal(eps_out, eps)
    abar = o.alphas_cumprod.to(F64)[t]
    r = ref.q_sample(x0, labels, abar.sqrt(), (1 - abar).sqrt(), prior.means, prior.cov_factor, covariance_type, eps, 0)
    assert rel_err(x_t, r[0]) < 1e-14
    # x_t - mu_j - sqrt(abar)(x0 - mu_j) == sqrt(1 - abar) A_j eps, with A_j as a dense matrix
    mu = prior.means[labels]
    lhs = x_t - mu - abar.sqrt()[:, None] * (x0 - mu)
    rhs = (1 - abar).sqrt()[:, None] * torch.einsum("nij,nj->ni", dense_factor(prior, labels), eps)
    assert rel_err(lhs, rhs) < 1e-12
    # given labels are used as given; add_noise returns x_t only
    lab2 = torch.randint(0, 3, (50,), generator=gen(10))
    got = o.add_noise(x0, eps, t, labels=lab2)
    r2 = ref.q_sample(x0, lab2, abar.sqrt(), (1 - abar).sqrt(), prior.means, prior.cov_factor, covariance_type, eps, 0)
    assert rel_err(got, r2[0]) < 1e-14
    # drawn noise: the stream of (seed, row offset + i), as the reference draws it
    x_t3, eps3, _ = o.add_noise_with_labels(x0, t, seed=11, offset=5)
    r3 = ref.q_sample(x0, labels, abar.sqrt(), (1 - abar).sqrt(), prior.means, prior.cov_factor, covariance_type,
                      None, 11, 5)
    assert rel_err(eps3, r3[1]) < 1e-14 and rel_err(x_t3, r3[0]) < 1e-14


@pytest.mark.parametrize("covariance_type", ["diag", "full"])
@pytest.mark.parametrize("sampler,eta", [("ddpm", 0.0), ("ddim", 0.0), ("ddim", 0.6)])
@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["f32", "f64"])
def test_step_mixture_matches_reference(covariance_type, sampler, eta, dtype):
    prior, _ = mixture_prior(covariance_type)
    o = MixtureNoiseScheduler(prior, sampler=sampler, eta=eta, clip_sample=True, clip_sample_range=4.0)
    o.set_timesteps(8)
    x, labels = o.sample_prior(30, seed=3)
    x = x.to(dtype)
    model = LinearModel(6, seed=4)
    tol = 1e-12 if dtype == F64 else 2e-5
    means = prior.means.to(dtype)
    factor = prior.cov_factor.to(dtype)
    for i, t in enumerate(o.timesteps):
        t = int(t)
        eps = model(x, t)
        z = randn(30, 6, seed=100 + t, dtype=dtype)
        coefs = o.step_coefficients(t)
        out = o.step(eps, t, x, labels=labels, noise=z)
        r = ref.reverse_step(x, eps, labels, means, factor, covariance_type, list(coefs), -4.0, 4.0, z,
                             0, 0, t, True)
        assert rel_err(out.prev_sample, r[0]) < tol and rel_err(out.pred_original_sample, r[1]) < tol
        if i % 3 == 0:  # drawn noise: stream (seed, step = timestep), row offset + i
            out_s = o.step(eps, t, x, labels=labels, seed=21, offset=9)
            r_s = ref.reverse_step(x, eps, labels, means, factor, covariance_type, list(coefs), -4.0, 4.0,
                                   None, 21, 9, t)
            assert rel_err(out_s.prev_sample, r_s[0]) < tol
        x = out.prev_sample
    assert bool(torch.isfinite(x).all())


def test_mixture_ddpm_step_is_posterior_in_y():
    """One DDPM step with a full-covariance mixture, checked against the eps-form in y = x - mu_j."""
    prior, _ = mixture_prior("full", seed=2)
    o = MixtureNoiseScheduler(prior)
    o.set_timesteps(25)
    t = int(o.timesteps[3])
    prev = o.previous_timestep(t)
    x, labels = o.sample_prior(40, seed=1)
    x = x.to(F64)
    eps, z = randn(40, 6, seed=2), randn(40, 6, seed=3)
    got = o.step(eps, t, x, labels=labels, noise=z).prev_sample
    abar = o.alphas_cumprod.to(F64)
    a_t, a_p = abar[t].item(), abar[prev].item()
    alpha, beta = a_t / a_p, 1 - a_t / a_p
    A = dense_factor(prior, labels)
    mu = prior.means[labels]
    a_eps, a_z = torch.einsum("nij,nj->ni", A, eps), torch.einsum("nij,nj->ni", A, z)
    sigma = math.sqrt((1 - a_p) / (1 - a_t) * beta)
    want = mu + (x - mu - beta / math.sqrt(1 - a_t) * a_eps) / math.sqrt(alpha) + sigma * a_z
    assert rel_err(got, want) < 1e-12


def test_labels_required_for_mixture():
    prior, _ = mixture_prior("diag")
    o = MixtureNoiseScheduler(prior)
    x = torch.randn(5, 6)
    with pytest.raises(ValueError, match="labels .*carry"):
        o.step(torch.zeros(5, 6), 10, x, seed=0)
    # K = 1 (even non-standard): labels may be omitted
    one = GaussianMixturePrior(torch.ones(1, 6), torch.ones(1), torch.full((1, 6), 2.0), "diag")
    o1 = MixtureNoiseScheduler(one)
    a = o1.step(torch.zeros(5, 6), 10, x, seed=0).prev_sample
    b = o1.step(torch.zeros(5, 6), 10, x, labels=torch.zeros(5, dtype=torch.int32), seed=0).prev_sample
    assert torch.equal(a, b)


# --------------------------------------------------------------------------------------------------
# batch invariance, seeding, dtypes
# --------------------------------------------------------------------------------------------------
def sample_loop(o, n, seed, offset, model, steps_seed):
    x, labels = o.sample_prior(n, seed=seed, offset=offset)
    for t in o.timesteps:
        x = o.step(model(x, t), t, x, labels=labels, seed=steps_seed, offset=offset).prev_sample
    return x, labels


@pytest.mark.parametrize("sampler,eta", [("ddpm", 0.0), ("ddim", 0.8)])
def test_chunked_sampling_is_batch_invariant(sampler, eta):
    prior, _ = mixture_prior("full", seed=5)
    o = MixtureNoiseScheduler(prior, sampler=sampler, eta=eta)
    o.set_timesteps(15)
    model = LinearModel(6, seed=6)
    full, full_labels = sample_loop(o, 40, 123, 0, model, 77)
    parts = [sample_loop(o, min(7, 40 - start), 123, start, model, 77) for start in range(0, 40, 7)]
    assert torch.equal(torch.cat([p[0] for p in parts]), full)
    assert torch.equal(torch.cat([p[1] for p in parts]), full_labels)
    assert len(set(full_labels.tolist())) > 1
    # a different step seed gives a different trajectory
    assert not torch.allclose(sample_loop(o, 40, 123, 0, model, 78)[0], full)


def test_seed_none_is_reproducible_after_manual_seed():
    o = MixtureNoiseScheduler(sampler="ddpm", clip_sample=False)  # "auto" would learn a box from add_noise
    o.set_timesteps(6)
    model = LinearModel(8, seed=7)

    def run():
        x, _ = o.sample_prior(10, shape=(8,))
        xs = [x]
        for t in o.timesteps:
            x = o.step(model(x, t), t, x).prev_sample
            xs.append(x)
        noisy = o.add_noise(xs[-1], None, torch.full((10,), 300))
        return torch.stack(xs + [noisy])

    torch.manual_seed(0)
    a = run()
    torch.manual_seed(0)
    b = run()
    torch.manual_seed(1)
    c = run()
    assert torch.equal(a, b) and not torch.allclose(a, c)
    # a generator works the same way and leaves the default generator alone
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    x = torch.randn(10, 8)
    t = o.timesteps[0]
    state = torch.get_rng_state()
    y1 = o.step(model(x, t), t, x, generator=g1).prev_sample
    y2 = o.step(model(x, t), t, x, generator=g2).prev_sample
    assert torch.equal(y1, y2) and torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_and_image_shapes(dtype):
    o = MixtureNoiseScheduler(sampler="ddim")
    o.set_timesteps(10)
    x = torch.randn(3, 2, 4, 4).to(dtype)
    eps = torch.randn(3, 2, 4, 4, dtype=F64)  # a model may return another float dtype
    out = o.step(eps, o.timesteps[0], x)
    assert out.prev_sample.dtype == dtype and out.prev_sample.shape == (3, 2, 4, 4)
    ref32 = o.step(eps.float(), o.timesteps[0], x.float())
    tol = {torch.float16: 2e-3, torch.bfloat16: 1e-2, torch.float32: 0}[dtype]
    assert rel_err(out.prev_sample, ref32.prev_sample) <= tol


def test_sample_prior():
    prior, _ = mixture_prior("diag", seed=8)
    o = MixtureNoiseScheduler(prior)
    x, labels = o.sample_prior(12, seed=4, offset=3)
    want_x, want_l = prior.sample(12, seed=4, generator_offset=3, return_labels=True)
    assert torch.equal(x, want_x) and torch.equal(labels, want_l)
    x2, _ = o.sample_prior(12, seed=4, offset=3, shape=(2, 3))
    assert torch.equal(x2.reshape(12, 6), x)
    s = MixtureNoiseScheduler()
    z, lz = s.sample_prior(4000, seed=1, shape=(1, 2, 2))
    assert z.shape == (4000, 1, 2, 2) and bool((lz == 0).all())
    assert abs(z.mean().item()) < 0.05 and abs(z.var().item() - 1) < 0.05


# --------------------------------------------------------------------------------------------------
# bad inputs
# --------------------------------------------------------------------------------------------------
def test_bad_constructor_arguments():
    with pytest.raises(TypeError, match="prior"):
        MixtureNoiseScheduler(prior="standard")
    with pytest.raises(ValueError, match="sampler"):
        MixtureNoiseScheduler(sampler="euler")
    with pytest.raises(ValueError, match="variance_type"):
        MixtureNoiseScheduler(variance_type="learned")
    with pytest.raises(ValueError, match="timestep_spacing"):
        MixtureNoiseScheduler(timestep_spacing="uniform")
    with pytest.raises(ValueError, match="beta_schedule"):
        MixtureNoiseScheduler(beta_schedule="sigmoid")
    with pytest.raises(ValueError, match="num_train_timesteps"):
        MixtureNoiseScheduler(num_train_timesteps=0)
    with pytest.raises(ValueError, match="eta"):
        MixtureNoiseScheduler(eta=-1.0)
    with pytest.raises(ValueError, match="clip_sample_range"):
        MixtureNoiseScheduler(clip_sample_range=0.0)
    with pytest.raises(ValueError, match="clip_sample must be 'auto', True or False"):
        MixtureNoiseScheduler(clip_sample="yes")
    with pytest.raises(TypeError, match="clip_sample"):
        MixtureNoiseScheduler(clip_sample=1)
    with pytest.raises(ValueError, match="prediction_type"):
        MixtureNoiseScheduler(prediction_type="x0")
    with pytest.raises(ValueError, match="solver_order"):
        MixtureNoiseScheduler(sampler="dpmsolver++", solver_order=4)
    with pytest.raises(ValueError, match="solver_type"):
        MixtureNoiseScheduler(sampler="dpmsolver++", solver_type="bogacki")
    with pytest.raises(TypeError, match="lower_order_final"):
        MixtureNoiseScheduler(sampler="dpmsolver++", lower_order_final="yes")
    with pytest.raises(ValueError, match="trained_betas"):
        MixtureNoiseScheduler(num_train_timesteps=10, trained_betas=[0.1] * 9)
    with pytest.raises(ValueError, match="betas"):
        MixtureNoiseScheduler(num_train_timesteps=3, trained_betas=[0.1, 1.5, 0.1])


def test_bad_call_arguments():
    prior, _ = mixture_prior("diag")
    o = MixtureNoiseScheduler(prior)
    x, eps = torch.randn(4, 6), torch.randn(4, 6)
    labels = torch.zeros(4, dtype=torch.int64)
    with pytest.raises(ValueError, match="num_inference_steps"):
        o.set_timesteps(0)
    with pytest.raises(ValueError, match="num_inference_steps"):
        o.set_timesteps(1001)
    with pytest.raises(TypeError, match="num_inference_steps"):
        o.set_timesteps(2.5)
    o.set_timesteps(10)
    with pytest.raises(ValueError, match="not one of the timesteps"):
        o.step(eps, 5, x, labels=labels)
    with pytest.raises(ValueError, match="timestep must lie"):
        o.step(eps, 1000, x, labels=labels)
    with pytest.raises(TypeError, match="timestep"):
        o.step(eps, 900.0, x, labels=labels)
    with pytest.raises(ValueError, match="model_output"):
        o.step(torch.randn(4, 5), 900, x, labels=labels)
    with pytest.raises(ValueError, match="sample has 5 features"):
        o.step(torch.randn(4, 5), 900, torch.randn(4, 5), labels=labels)
    with pytest.raises(TypeError, match="sample"):
        o.step(eps, 900, x.numpy(), labels=labels)
    with pytest.raises(TypeError, match="sample"):
        o.step(eps.long(), 900, x.long(), labels=labels)
    with pytest.raises(ValueError, match="sample"):
        o.step(eps[0], 900, x[0], labels=labels)
    with pytest.raises(ValueError, match="labels must have shape"):
        o.step(eps, 900, x, labels=labels[:3])
    with pytest.raises(TypeError, match="labels"):
        o.step(eps, 900, x, labels=labels.float())
    with pytest.raises(ValueError, match="labels must lie"):
        o.step(eps, 900, x, labels=labels + 3)
    with pytest.raises(ValueError, match="noise"):
        o.step(eps, 900, x, labels=labels, noise=torch.randn(4, 6), seed=1)
    with pytest.raises(ValueError, match="noise"):
        o.step(eps, 900, x, labels=labels, noise=torch.randn(3, 6))
    with pytest.raises(ValueError, match="seed or generator"):
        o.step(eps, 900, x, labels=labels, seed=1, generator=torch.Generator())
    with pytest.raises(ValueError, match="seed"):
        o.step(eps, 900, x, labels=labels, seed=2**64)
    with pytest.raises(ValueError, match="offset"):
        o.step(eps, 900, x, labels=labels, seed=1, offset=-1)
    with pytest.raises(ValueError, match="eta"):
        o.step(eps, 900, x, labels=labels, eta=0.5)
    with pytest.raises(TypeError, match="timesteps is required"):
        o.add_noise(x, eps)
    with pytest.raises(TypeError, match="timesteps"):
        o.add_noise(x, eps, torch.tensor([1.0, 2.0, 3.0, 4.0]))
    with pytest.raises(ValueError, match="timesteps must lie"):
        o.add_noise(x, eps, torch.tensor([1, 2, 3, 1000]))
    with pytest.raises(ValueError, match="timesteps must hold"):
        o.add_noise(x, eps, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="noise"):
        o.add_noise(x, torch.randn(4, 5), torch.tensor([1, 2, 3, 4]))
    with pytest.raises(ValueError, match="shape"):
        MixtureNoiseScheduler().sample_prior(3)
    with pytest.raises(ValueError, match="prior has dim"):
        o.sample_prior(3, shape=(5,))
    with pytest.raises(ValueError, match="n must be"):
        o.sample_prior(-1)
    d = MixtureNoiseScheduler(sampler="ddim")
    d.set_timesteps(10)
    with pytest.raises(ValueError, match="noise or variance_noise"):
        d.step(eps, 900, x, noise=eps, variance_noise=eps, eta=0.5)


# --------------------------------------------------------------------------------------------------
# clip_sample="auto": the data support, per component
# --------------------------------------------------------------------------------------------------
def _wild_step(o, x, labels, t):
    """A step whose eps_hat throws x0_hat far out, at every noise level: the clip decides where it lands."""
    return o.step(torch.full_like(x, 1e4), t, x, labels=labels, noise=torch.zeros_like(x))


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmsolver++"])
def test_clip_auto_learns_boxes_from_add_noise(sampler):
    prior = GaussianMixturePrior(torch.tensor([[-5.0, 0.0], [5.0, 2.0]], dtype=F64), torch.tensor([0.5, 0.5], dtype=F64))
    o = MixtureNoiseScheduler(prior, sampler=sampler)
    o.set_timesteps(10)
    x, labels = o.sample_prior(64, seed=0)
    with pytest.warns(UserWarning, match="learned no data support"):
        unclipped = _wild_step(o, x, labels, o.timesteps[0]).pred_original_sample
    assert float(unclipped.abs().max()) > 50
    x0 = prior.sample(500, seed=1)
    for i in range(0, 500, 100):  # training batches
        o.add_noise_with_labels(x0[i:i + 100], torch.full((100,), 500), seed=i)
    fitted = prior.assign(x0)
    o.set_timesteps(10)
    got = _wild_step(o, x, labels, o.timesteps[0]).pred_original_sample
    for k in range(2):
        rows = x0[fitted == k]
        # eps_hat = +1e4 drives x0_hat far below: clipped to the lower corner of component k's own box
        assert torch.equal(got[labels == k], rows.amin(0).expand_as(got[labels == k]))


def test_clip_auto_with_given_support_and_bad_support():
    lo, hi = torch.tensor([[-1.0, -2.0]]), torch.tensor([[0.5, 3.0]])
    o = MixtureNoiseScheduler(sampler="ddim", support=(lo, hi))
    o.set_timesteps(10)
    x = randn(8, 2, seed=0)
    got = _wild_step(o, x, None, o.timesteps[0]).pred_original_sample
    assert torch.equal(got, lo.to(F64).expand(8, 2))
    for sampler in ("ddpm", "ddim", "dpmsolver++"):
        # a margin of 0.1 of the width on every step but the last, which clips to the box itself
        wide = MixtureNoiseScheduler(sampler=sampler, support=(lo, hi), clip_margin=0.1)
        wide.set_timesteps(10)
        got_x0 = [_wild_step(wide, x, None, t).pred_original_sample for t in wide.timesteps]
        for x0 in got_x0[:-1]:
            assert torch.allclose(x0, (lo - 0.1 * (hi - lo)).to(F64).expand(8, 2))
        assert torch.equal(got_x0[-1], lo.to(F64).expand(8, 2))
    o.add_noise_with_labels(randn(8, 2, seed=1) * 100, torch.full((8,), 10), seed=0)  # given boxes stay
    assert torch.equal(_wild_step(o, x, None, o.timesteps[0]).pred_original_sample, got)
    with pytest.raises(TypeError, match="support must be a"):
        MixtureNoiseScheduler(support=lo)
    for bad in ((hi, lo), (torch.tensor([[float("nan"), 0.0]]), hi)):
        o = MixtureNoiseScheduler(sampler="ddim", support=bad)
        o.set_timesteps(10)
        with pytest.raises(ValueError, match="support must hold lo <= hi"):
            _wild_step(o, x, None, o.timesteps[0])
    with pytest.raises(ValueError, match="clip_sample"):
        MixtureNoiseScheduler(clip_sample="data")
    with pytest.raises(ValueError, match="clip_margin must be >= 0"):
        MixtureNoiseScheduler(clip_margin=-0.1)
