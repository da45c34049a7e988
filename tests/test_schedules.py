"""Noise schedules and sampler coefficients (mixdiff_ext.schedules).

Discrete betas against diffusers' schedulers; coefficient identities (DDPM x0-form vs eps-form, DDIM
closed form, DDIM eta=1 vs the DDPM posterior) evaluated through ops.reverse_step; the VP / VE
marginals against their closed forms; and the SDE steps checked on a 1-D Gaussian with an exact
score: every Euler-Maruyama / probability-flow step must carry the marginal variance V(t) to
V(t - dt) up to O(dt^2), and a Langevin step must keep V(t) up to O(delta^2).
"""
from __future__ import annotations

import math

import pytest
import torch

from conftest import gen, make_mixture, randn, rel_err
from mixdiff_ext import _reference as ref
from mixdiff_ext import ops
from mixdiff_ext.prior import GaussianMixturePrior
from mixdiff_ext.schedules import (
    VESDE,
    VPSDE,
    DiscreteSchedule,
    cosine_betas,
    linear_betas,
    scaled_linear_betas,
)

diffusers = pytest.importorskip("diffusers")

F64 = torch.float64


def apply_step(x, eps, coefs, mix=None, labels=None, noise=None, clip=None):
    """ops.reverse_step in float64 (standard prior when mix is None) -> (prev, x0_hat)."""
    n, d = x.shape
    if mix is None:
        means, factor, ct = torch.zeros(1, d, dtype=F64), None, "identity"
        labels = torch.zeros(n, dtype=torch.int64)
    else:
        means, factor, _, ct = mix.args()
    out = ops.reverse_step(x, eps, labels, means, factor, ct, coefs, seed=0, step=0, clip=clip, noise=noise,
                           return_x0=True)
    return out.prev_sample, out.pred_original_sample


# --------------------------------------------------------------------------------------------------
# discrete betas
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,kw", [
    ("linear", {}),
    ("linear", dict(beta_start=2e-4, beta_end=0.03)),
    ("scaled_linear", dict(beta_start=0.00085, beta_end=0.012)),
    ("squaredcos_cap_v2", {}),
])
@pytest.mark.parametrize("T", [1000, 250])
def test_betas_match_diffusers(name, kw, T):
    d = diffusers.DDPMScheduler(num_train_timesteps=T, beta_schedule=name, **kw)
    s = DiscreteSchedule.from_name(name, T, **kw)
    assert s.betas.dtype == F64 and s.betas.shape == (T,) and s.num_timesteps == T == len(s)
    want = d.betas.double()
    if name == "squaredcos_cap_v2":
        # diffusers evaluates the same float64 formula and casts it to float32
        assert torch.equal(s.betas.float(), d.betas)
    else:  # float64 linspace vs diffusers' float32 linspace: float32 rounding
        assert ((s.betas - want).abs() / want).max().item() < 3e-7
    # alphas_cumprod: ours accumulates in float64, diffusers in float32
    got_abar, want_abar = s.alphas_cumprod, d.alphas_cumprod.double()
    assert ((got_abar - want_abar).abs() / want_abar).max().item() < 3e-5


def test_beta_functions():
    b = linear_betas(11, 1e-3, 2e-2)
    assert b[0].item() == pytest.approx(1e-3, rel=1e-15) and b[-1].item() == pytest.approx(2e-2, rel=1e-15)
    assert torch.allclose(b.diff(), torch.full((10,), 1.9e-3, dtype=F64), rtol=1e-12)
    sl = scaled_linear_betas(5, 0.01, 0.09)
    assert torch.allclose(sl.sqrt(), torch.linspace(0.1, 0.3, 5, dtype=F64), rtol=1e-14)
    # cosine: 1 - abar(t+1)/abar(t) for abar(u) = cos((u + s)/(1 + s) pi/2)^2, capped
    c = cosine_betas(20, s=0.02, max_beta=0.5)

    def abar(u):
        return math.cos((u + 0.02) / 1.02 * math.pi / 2) ** 2

    want = [min(1 - abar((i + 1) / 20) / abar(i / 20), 0.5) for i in range(20)]
    assert c.tolist() == pytest.approx(want, rel=1e-14)
    assert c[-1].item() == 0.5  # the cap is active at the end
    assert torch.allclose(DiscreteSchedule.cosine(20, 0.02, 0.5).betas, c)
    assert torch.equal(DiscreteSchedule.linear(11, 1e-3, 2e-2).betas, b)
    assert torch.equal(DiscreteSchedule.from_name("cosine", 20, s=0.02, max_beta=0.5).betas, c)


def test_discrete_schedule_tensors():
    s = DiscreteSchedule.linear(100, 1e-3, 0.05)
    abar = torch.cumprod(1 - s.betas, 0)
    for name in ("betas", "alphas", "alphas_cumprod", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod"):
        assert getattr(s, name).dtype == F64 and getattr(s, name).shape == (100,)
    assert torch.allclose(s.alphas, 1 - s.betas, rtol=0, atol=0)
    assert torch.allclose(s.alphas_cumprod, abar, rtol=1e-15, atol=0)
    assert torch.allclose(s.sqrt_alphas_cumprod ** 2, abar, rtol=1e-14)
    assert torch.allclose(s.sqrt_one_minus_alphas_cumprod ** 2 + abar, torch.ones(100, dtype=F64), rtol=1e-14)
    t = torch.tensor([[0, 99], [50, 7]])
    sig, ns = s.forward_coefficients(t)
    assert sig.shape == (2, 2) and sig.dtype == F64
    assert torch.equal(sig, s.sqrt_alphas_cumprod[t]) and torch.equal(ns, s.sqrt_one_minus_alphas_cumprod[t])
    # from_alphas_cumprod keeps abar exactly and recovers the betas
    r = DiscreteSchedule.from_alphas_cumprod(s.alphas_cumprod)
    assert torch.equal(r.alphas_cumprod, s.alphas_cumprod)
    assert torch.allclose(r.betas, s.betas, rtol=1e-10)


# --------------------------------------------------------------------------------------------------
# ancestral (DDPM) coefficients
# --------------------------------------------------------------------------------------------------
PAIRS = [(999, 998), (500, 480), (123, 100), (20, 0), (1, 0)]


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("t,prev", PAIRS)
def test_ancestral_fixed_small_is_eps_form(schedule, t, prev):
    """x0-form posterior mean == 1/sqrt(alpha_t) (y - beta_t / sqrt(1 - abar_t) eps), sigma^2 = beta_tilde,
    with alpha_t = abar_t / abar_prev (so skipped steps are covered); standard prior."""
    s = DiscreteSchedule.from_name(schedule, 1000)
    c = s.ancestral_coefficients(t, prev, "fixed_small")
    abar_t, abar_p = s.alphas_cumprod[t].item(), s.alphas_cumprod[prev].item()
    alpha, beta = abar_t / abar_p, 1 - abar_t / abar_p
    beta_tilde = (1 - abar_p) / (1 - abar_t) * beta
    assert c.coef_noise == pytest.approx(math.sqrt(beta_tilde), rel=1e-12)
    x, eps, z = randn(64, 6, seed=1), randn(64, 6, seed=2), randn(64, 6, seed=3)
    prev_x, x0 = apply_step(x, eps, c, noise=z)
    want = (x - beta / math.sqrt(1 - abar_t) * eps) / math.sqrt(alpha) + math.sqrt(beta_tilde) * z
    assert rel_err(prev_x, want) < 1e-12
    assert rel_err(x0, (x - math.sqrt(1 - abar_t) * eps) / math.sqrt(abar_t)) < 1e-13
    # fixed_large: same mean, sigma^2 = beta_t
    cl = s.ancestral_coefficients(t, prev, "fixed_large")
    assert cl[:5] == c[:5] and cl.coef_noise == pytest.approx(math.sqrt(beta), rel=1e-12)


def test_ancestral_mixture_is_eps_form_in_y():
    """With a mixture prior the same update acts on y = x - mu_j with A_j eps (full covariances)."""
    s = DiscreteSchedule.linear()
    mix = make_mixture(3, 5, "full", seed=4)
    labels = torch.randint(0, 3, (40,), generator=gen(5))
    x, eps, z = randn(40, 5, seed=6, scale=3.0), randn(40, 5, seed=7), randn(40, 5, seed=8)
    t, prev = 700, 650
    c = s.ancestral_coefficients(t, prev)
    got, _ = apply_step(x, eps, c, mix, labels, noise=z)
    abar_t, abar_p = s.alphas_cumprod[t].item(), s.alphas_cumprod[prev].item()
    alpha, beta = abar_t / abar_p, 1 - abar_t / abar_p
    mu = mix.means[labels]
    A = mix.cov_factor[labels]
    a_eps, a_z = torch.einsum("nij,nj->ni", A, eps), torch.einsum("nij,nj->ni", A, z)
    want = mu + (x - mu - beta / math.sqrt(1 - abar_t) * a_eps) / math.sqrt(alpha) + c.coef_noise * a_z
    assert rel_err(got, want) < 1e-12


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
def test_ancestral_last_step_returns_x0_hat(variance_type):
    s = DiscreteSchedule.cosine(200)
    for t in (0, 3, 17):  # prev_t < 0: abar_prev = 1, no noise, y' = y0_hat
        c = s.ancestral_coefficients(t, -1, variance_type)
        assert c.coef_noise == 0.0 and c.coef_x == 0.0 and c.coef_eps == 0.0
        assert c.coef_x0 == pytest.approx(1.0, rel=1e-12)


# --------------------------------------------------------------------------------------------------
# DDIM coefficients
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("t,prev", PAIRS + [(15, -5)])
def test_ddim_eta0_closed_form(t, prev):
    s = DiscreteSchedule.linear()
    c = s.ddim_coefficients(t, prev, eta=0.0)
    assert c.coef_noise == 0.0
    abar_t = s.alphas_cumprod[t].item()
    abar_p = s.alphas_cumprod[prev].item() if prev >= 0 else 1.0
    x, eps = randn(32, 4, seed=9), randn(32, 4, seed=10)
    got, x0 = apply_step(x, eps, c)
    x0_want = (x - math.sqrt(1 - abar_t) * eps) / math.sqrt(abar_t)
    want = math.sqrt(abar_p) * x0_want + math.sqrt(1 - abar_p) * eps
    assert rel_err(got, want) < 1e-12 and rel_err(x0, x0_want) < 1e-13


@pytest.mark.parametrize("t,prev", [(999, 979), (400, 380), (20, 0)])
def test_ddim_eta1_is_ddpm_posterior(t, prev):
    """eta = 1: sigma^2 equals beta_tilde and the mean equals the DDPM posterior mean."""
    s = DiscreteSchedule.cosine()
    c = s.ddim_coefficients(t, prev, eta=1.0)
    a = s.ancestral_coefficients(t, prev, "fixed_small")
    assert c.coef_noise == pytest.approx(a.coef_noise, rel=1e-10)
    assert s.ddim_sigma(t, prev, 1.0) == pytest.approx(a.coef_noise, rel=1e-10)
    assert s.ddim_sigma(t, prev, 0.3) == pytest.approx(0.3 * a.coef_noise, rel=1e-10)
    x, eps, z = randn(16, 3, seed=11), randn(16, 3, seed=12), randn(16, 3, seed=13)
    assert rel_err(apply_step(x, eps, c, noise=z)[0], apply_step(x, eps, a, noise=z)[0]) < 1e-10


@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_ddim_clipped_model_output(eta):
    s = DiscreteSchedule.linear()
    t, prev = 600, 580
    plain = s.ddim_coefficients(t, prev, eta)
    clipped = s.ddim_coefficients(t, prev, eta, use_clipped_model_output=True)
    assert clipped.coef_eps == 0.0 and clipped.coef_x != 0.0
    x, eps, z = randn(50, 4, seed=14, scale=2.0), randn(50, 4, seed=15), randn(50, 4, seed=16)
    # without clipping the recomputed eps is eps itself
    assert rel_err(apply_step(x, eps, clipped, noise=z)[0], apply_step(x, eps, plain, noise=z)[0]) < 1e-11
    # with clipping: eps' = (x - sqrt(abar_t) clip(x0_hat)) / sqrt(1 - abar_t)
    abar_t, abar_p = s.alphas_cumprod[t].item(), s.alphas_cumprod[prev].item()
    got, x0 = apply_step(x, eps, clipped, noise=z, clip=(-1.0, 1.0))
    x0_want = ((x - math.sqrt(1 - abar_t) * eps) / math.sqrt(abar_t)).clamp(-1, 1)
    assert bool((x0_want.abs() == 1).any())  # clipping is active
    eps_c = (x - math.sqrt(abar_t) * x0_want) / math.sqrt(1 - abar_t)
    sigma = s.ddim_sigma(t, prev, eta)
    want = math.sqrt(abar_p) * x0_want + math.sqrt(1 - abar_p - sigma**2) * eps_c + sigma * z
    assert rel_err(x0, x0_want) < 1e-14 and rel_err(got, want) < 1e-11
    assert rel_err(got, apply_step(x, eps, plain, noise=z, clip=(-1.0, 1.0))[0]) > 1e-3  # they differ


def test_ddim_final_alpha_cumprod():
    s = DiscreteSchedule.linear()
    abar0 = s.alphas_cumprod[0].item()
    c = s.ddim_coefficients(10, -10, eta=0.5, final_alpha_cumprod=abar0)
    assert c.coef_x0 == pytest.approx(math.sqrt(abar0), rel=1e-14)
    assert c.coef_noise > 0
    c1 = s.ddim_coefficients(10, -10, eta=0.5)
    assert c1.coef_x0 == 1.0 and c1.coef_noise == 0.0 and c1.coef_eps == 0.0


# --------------------------------------------------------------------------------------------------
# continuous time
# --------------------------------------------------------------------------------------------------
def test_vp_marginal():
    sde = VPSDE(0.1, 20.0)
    t = torch.tensor([1e-6, 1e-3, 0.1, 0.5, 1.0], dtype=F64)
    m, s = sde.marginal(t)
    m_want = torch.exp(-t**2 * 19.9 / 4 - t * 0.05)
    assert m.dtype == F64 and torch.allclose(m, m_want, rtol=1e-14, atol=0)
    assert torch.allclose(m**2 + s**2, torch.ones_like(t), rtol=1e-14, atol=0)
    # s = sqrt(1 - m^2) accurately for small t, where 1 - m^2 ~ beta_min t
    assert s[0].item() == pytest.approx(math.sqrt(0.1 * 1e-6), rel=1e-4)
    # m' = -beta m / 2 (the drift), by finite differences
    h = 1e-6
    for tt in (0.2, 0.7):
        dm = (sde.marginal(tt + h)[0] - sde.marginal(tt - h)[0]).item() / (2 * h)
        assert dm == pytest.approx(-0.5 * sde.beta(tt).item() * sde.marginal(tt)[0].item(), rel=1e-7)
    assert sde.prior_scale == 1.0 and sde.eps_t == 1e-3
    sig, ns = sde.forward_coefficients(torch.tensor([0.3, 0.8], dtype=F64))
    assert sig.tolist() == pytest.approx([math.exp(-tt**2 * 19.9 / 4 - tt * 0.05) for tt in (0.3, 0.8)], rel=1e-14)


def test_ve_marginal():
    sde = VESDE(0.01, 50.0)
    t = torch.tensor([1e-5, 0.3, 1.0], dtype=F64)
    m, s = sde.marginal(t)
    assert torch.equal(m, torch.ones(3, dtype=F64))
    assert torch.allclose(s, 0.01 * 5000.0 ** t, rtol=1e-14)
    assert s[-1].item() == pytest.approx(50.0, rel=1e-14) and sde.prior_scale == 50.0 and sde.eps_t == 1e-5


@pytest.mark.parametrize("sde", [VPSDE(), VESDE()], ids=["vp", "ve"])
def test_time_grid(sde):
    g = sde.time_grid(10)
    assert g.dtype == F64 and g.shape == (11,)
    assert g[0].item() == 1.0 and g[-1].item() == pytest.approx(sde.eps_t, rel=1e-12)
    assert torch.allclose(-g.diff(), torch.full((10,), (1 - sde.eps_t) / 10, dtype=F64), rtol=1e-10)


def gaussian_variance(sde, t, v0, a):
    """Marginal variance of y_t for y_0 ~ N(0, v0), forward factor a (1-D): m^2 v0 + s^2 a^2."""
    m, s = (v.item() for v in sde.marginal(t))
    return m * m * v0 + s * s * a * a


def linear_map(sde, coefs, t, v0, a):
    """For the exact eps_hat(y) = s a y / V(t) (score -y / V), a step is y' = k y + coef_noise a z."""
    s = sde.marginal(t)[1].item()
    V = gaussian_variance(sde, t, v0, a)
    assert coefs.coef_x0 == 0.0
    return coefs.coef_x + coefs.coef_eps * a * s * a / V


@pytest.mark.parametrize("sde", [VPSDE(), VESDE(), VPSDE(0.5, 8.0), VESDE(0.1, 20.0)],
                         ids=["vp", "ve", "vp2", "ve2"])
@pytest.mark.parametrize("t", [0.9, 0.5, 0.1, 0.01])
def test_sde_steps_transport_marginal(sde, t):
    """Finite-difference check of drift and diffusion on a 1-D Gaussian: EM and the probability flow
    must map N(0, V(t)) to N(0, V(t - dt)). Measured against the step's own movement of the variance,
    N = |k_em^2 - 1| V + coef_noise^2 a^2 = O(dt), a consistent scheme is off by O(dt) N (seen: at most
    ~6 dt N), while a wrong drift or noise term (checked: EM without its noise, the flow with EM's
    noise) misses an O(1) fraction of N (seen: >= N / 3)."""
    v0, a = 0.3, 0.7
    for dt in (1e-3, 1e-4):
        V, V_prev = gaussian_variance(sde, t, v0, a), gaussian_variance(sde, t - dt, v0, a)
        em, flow = sde.euler_maruyama_coefficients(t, dt), sde.probability_flow_coefficients(t, dt)
        assert flow.coef_noise == 0.0 and em.coef_noise > 0.0
        k_em, k_flow = linear_map(sde, em, t, v0, a), linear_map(sde, flow, t, v0, a)
        N = abs(k_em**2 - 1) * V + em.coef_noise**2 * a * a
        for err in (k_em**2 * V + em.coef_noise**2 * a * a - V_prev, k_flow**2 * V - V_prev):
            assert abs(err) < 10 * dt * N, (dt, err, N)
        for err in (k_em**2 * V - V_prev, k_flow**2 * V + em.coef_noise**2 * a * a - V_prev):
            assert abs(err) > 0.2 * N, (dt, err, N)


@pytest.mark.parametrize("sde", [VPSDE(), VESDE()], ids=["vp", "ve"])
@pytest.mark.parametrize("t", [0.8, 0.2])
def test_langevin_keeps_marginal(sde, t):
    v0, a = 0.3, 0.7
    V = gaussian_variance(sde, t, v0, a)
    for delta in (1e-4, 5e-5):
        c = sde.langevin_coefficients(t, delta)
        k = linear_map(sde, c, t, v0, a)
        assert c.coef_noise == pytest.approx(math.sqrt(2 * delta), rel=1e-14)
        err = abs(k * k * V + c.coef_noise ** 2 * a * a - V) / V
        assert err < 2 * (delta * a * a / V) ** 2 + 1e-15, err
    # snr rule: delta = 2 alpha (snr s(t))^2
    s = sde.marginal(t)[1].item()
    assert sde.langevin_step_size(t, snr=0.16) == pytest.approx(2 * (0.16 * s) ** 2, rel=1e-14)
    assert sde.langevin_step_size(t, snr=0.1, alpha=0.5) == pytest.approx((0.1 * s) ** 2, rel=1e-14)
    c = sde.langevin_coefficients(t, snr=0.1, alpha=0.5)
    assert c.coef_noise == pytest.approx(math.sqrt(2) * 0.1 * s, rel=1e-13)
    assert c.coef_eps == pytest.approx(-(0.1 * s) ** 2 / s, rel=1e-13)


@pytest.mark.parametrize("sde", [VPSDE(), VESDE()], ids=["vp", "ve"])
def test_tweedie_estimate_is_posterior_mean(sde):
    """x0_from_*: y0_hat = (y - s A eps_hat) / m is E[y0 | y_t] for the Gaussian with the exact eps."""
    v0, a, t = 0.3, 0.7, 0.4
    m, s = (v.item() for v in sde.marginal(t))
    V = gaussian_variance(sde, t, v0, a)
    for c in (sde.euler_maruyama_coefficients(t, 0.01), sde.probability_flow_coefficients(t, 0.01),
              sde.langevin_coefficients(t, 1e-3)):
        y0_per_y = c.x0_from_x + c.x0_from_out * a * s * a / V
        assert y0_per_y == pytest.approx(m * v0 / V, rel=1e-12)


def test_sde_steps_through_op_with_mixture():
    """The op applies the SDE coefficients in y = x - mu_j with A_j (diag prior), float64."""
    sde = VPSDE()
    mix = make_mixture(3, 4, "diag", seed=20)
    labels = torch.randint(0, 3, (30,), generator=gen(21))
    x, eps, z = randn(30, 4, seed=22, scale=3.0), randn(30, 4, seed=23), randn(30, 4, seed=24)
    t, dt = 0.6, 0.01
    beta = sde.beta(t).item()
    m, s = (v.item() for v in sde.marginal(t))
    mu, A = mix.means[labels], mix.cov_factor[labels]
    y = x - mu
    got, x0 = apply_step(x, eps, sde.euler_maruyama_coefficients(t, dt), mix, labels, noise=z)
    want = mu + (1 + beta * dt / 2) * y - beta * dt / s * A * eps + math.sqrt(beta * dt) * A * z
    assert rel_err(got, want) < 1e-13
    assert rel_err(x0, mu + (y - s * A * eps) / m) < 1e-13
    ve = VESDE()
    sig, sig_prev = ve.sigma(t).item(), ve.sigma(t - dt).item()
    got, _ = apply_step(x, eps, ve.probability_flow_coefficients(t, dt), mix, labels)
    want = mu + y - (sig**2 - sig_prev**2) / (2 * sig) * A * eps
    assert rel_err(got, want) < 1e-13
    # and the reference agrees with the op
    c = ve.euler_maruyama_coefficients(t, dt)
    r, _ = ref.reverse_step(x, eps, labels, mix.means, mix.cov_factor, "diag", list(c), None, None, z, 0, 0, 0)
    assert rel_err(apply_step(x, eps, c, mix, labels, noise=z)[0], r) < 1e-14


def test_standard_prior_is_ddpm():
    """K = 1, mean 0, identity: the mixture update is plain DDPM on x."""
    prior = GaussianMixturePrior.standard(6, dtype=F64)
    s = DiscreteSchedule.linear()
    c = s.ancestral_coefficients(300, 299)
    x, eps, z = randn(20, 6, seed=30), randn(20, 6, seed=31), randn(20, 6, seed=32)
    got = ops.reverse_step(x, eps, torch.zeros(20, dtype=torch.int64), prior.means, prior.cov_factor,
                           prior.covariance_type, c, seed=0, step=300, noise=z).prev_sample
    beta = s.betas[300].item()
    want = (x - beta / s.sqrt_one_minus_alphas_cumprod[300].item() * eps) / math.sqrt(1 - beta) + c.coef_noise * z
    assert rel_err(got, want) < 1e-12


# --------------------------------------------------------------------------------------------------
# bad inputs
# --------------------------------------------------------------------------------------------------
def test_bad_inputs():
    s = DiscreteSchedule.linear(100)
    with pytest.raises(ValueError, match="betas"):
        DiscreteSchedule(torch.tensor([0.1, 1.0], dtype=F64))
    with pytest.raises(ValueError, match="betas"):
        DiscreteSchedule(torch.tensor([0.0, 0.1], dtype=F64))
    with pytest.raises(TypeError, match="betas"):
        DiscreteSchedule(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="betas"):
        DiscreteSchedule(torch.zeros(2, 2) + 0.1)
    with pytest.raises(ValueError, match="T"):
        linear_betas(0)
    with pytest.raises(TypeError, match="T"):
        linear_betas(10.5)
    with pytest.raises(ValueError, match="max_beta"):
        cosine_betas(10, max_beta=1.0)
    with pytest.raises(ValueError, match="name"):
        DiscreteSchedule.from_name("sigmoid", 10)
    with pytest.raises(ValueError, match="variance_type"):
        s.ancestral_coefficients(10, 9, "learned")
    with pytest.raises(ValueError, match="prev_t"):
        s.ancestral_coefficients(10, 10)
    with pytest.raises(ValueError, match="t must lie"):
        s.ancestral_coefficients(100, 99)
    with pytest.raises(TypeError, match="t must be an integer"):
        s.ddim_coefficients(10.5, 9)
    with pytest.raises(ValueError, match="eta"):
        s.ddim_coefficients(10, 9, eta=-0.1)
    with pytest.raises(ValueError, match="final_alpha_cumprod"):
        s.ddim_coefficients(10, -1, final_alpha_cumprod=0.0)
    with pytest.raises(TypeError, match="integer dtype"):
        s.forward_coefficients(torch.tensor([1.0]))
    with pytest.raises(ValueError, match="t must lie"):
        s.forward_coefficients(torch.tensor([100]))
    vp, ve = VPSDE(), VESDE()
    with pytest.raises(ValueError, match="dt"):
        vp.euler_maruyama_coefficients(0.5, 0.0)
    with pytest.raises(ValueError, match="dt"):
        ve.probability_flow_coefficients(0.5, 0.6)
    with pytest.raises(ValueError, match="t must lie"):
        vp.euler_maruyama_coefficients(1.5, 0.1)
    with pytest.raises(ValueError, match="t must lie"):
        ve.langevin_coefficients(0.0, 0.1)
    with pytest.raises(ValueError, match="step_size"):
        vp.langevin_coefficients(0.5, -1.0)
    with pytest.raises(ValueError, match="snr"):
        vp.langevin_step_size(0.5, snr=0.0)
    with pytest.raises(ValueError, match="sigma_min"):
        VESDE(1.0, 0.5)
    with pytest.raises(ValueError, match="eps_t"):
        VPSDE(eps_t=0.0)
    with pytest.raises(ValueError, match="steps"):
        vp.time_grid(0)
    with pytest.raises(ValueError, match="t must be finite"):
        vp.probability_flow_coefficients(float("nan"), 0.1)
