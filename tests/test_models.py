"""MixDDPM / MixSGM: the classical models written from the formulas, oracle denoisers that must give back
the prior, chunk- and split-invariance of sampling and of the loss, and bad inputs."""
from __future__ import annotations


import pytest
import torch
from torch import nn

from conftest import gen, rel_err
from mixdiff_ext import GaussianMixturePrior
from mixdiff_ext import GMMConditioner
from mixdiff_ext import _reference as ref
from mixdiff_ext import sampling
from mixdiff_ext._random import SEED_CONDITION_NOISE, derive_seed
from mixdiff_ext.models import MixDDPM, MixSGM, ve_sigma_max
from mixdiff_ext.schedules import VESDE, VPSDE, DiscreteSchedule


class SmallNet(nn.Module):
    """A tiny denoiser with a component embedding (so component inputs matter)."""

    def __init__(self, dim: int, num_components: int = 1, hidden: int = 32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim + 1, hidden), nn.SiLU(), nn.Linear(hidden, dim))
        self.embed = nn.Embedding(num_components, dim + 1)
        self.seen = {}

    def forward(self, x, t, component=None, cond=None):
        self.seen = {"x": x, "t": t, "component": component}
        h = torch.cat([x, t.to(x.dtype)[:, None] / 1000], 1)
        if component is not None:
            h = h + self.embed(component).to(x.dtype)
        return self.net(h)


class OracleVP(nn.Module):
    """The exact eps-prediction when the data equal the prior with identity covariance: for y0 ~ N(0, I),
    y_t = m y0 + s eps has E[eps | y_t] = s y_t / (m^2 + s^2). `scales(t)` gives (m, s)."""

    def __init__(self, scales):
        super().__init__()
        self.scales = scales

    def forward(self, x, t, component=None, cond=None):
        m, s = self.scales(t)
        m, s = m.to(x.dtype)[:, None], s.to(x.dtype)[:, None]
        return s * x / (m * m + s * s)


def two_clusters(n=400, seed=0, dtype=torch.float32):
    g = gen(seed)
    side = (torch.rand(n, 1, generator=g) > 0.3).to(dtype)
    return torch.randn(n, 2, generator=g, dtype=dtype) + side * torch.tensor([[10.0, 0.0]], dtype=dtype)


def mixture_prior(dtype=torch.float64):
    means = torch.tensor([[-6.0, 1.0], [5.0, -2.0], [0.0, 7.0]], dtype=dtype)
    return GaussianMixturePrior(means, torch.tensor([0.5, 0.3, 0.2], dtype=dtype))


# ----------------------------------------------------------------------------------------------------
# the classical models are the K = 1 case
# ----------------------------------------------------------------------------------------------------
def test_k1_loss_is_ddpm_from_formulas():
    torch.manual_seed(0)
    x0 = two_clusters(64, dtype=torch.float64)
    net = SmallNet(2).double()
    model = MixDDPM(net, GaussianMixturePrior.standard(2, torch.float64))
    t = torch.randint(0, 1000, (64,), generator=gen(1))
    loss = model.loss(x0, t=t, seed=11, offset=5)

    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)[t][:, None]
    eps = ref.normals(11, ref.STREAM_FORWARD_NOISE, torch.arange(5, 69), 2, torch.float64)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
    expected = ((net(x_t, t, component=torch.zeros(64, dtype=torch.int64)) - eps) ** 2).mean()
    assert rel_err(loss, expected) <= 1e-13


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
def test_k1_ancestral_sampling_is_ddpm_from_formulas(variance_type):
    torch.manual_seed(0)
    net = SmallNet(2).double()
    T = 30
    model = MixDDPM(net, GaussianMixturePrior.standard(2, torch.float64), timesteps=T, variance_type=variance_type)
    out = model.sample(50, sampler="ancestral", seed=7, progress=False, return_trajectory=True, clip=None)

    betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    alphas, abar = 1 - betas, torch.cumprod(1 - betas, 0)
    rows = torch.arange(50)
    x = ref.normals(7, ref.STREAM_PRIOR_NOISE, rows, 2, torch.float64)
    assert rel_err(out.trajectory[0], x) <= 1e-15
    for t in range(T - 1, -1, -1):
        eps_hat = net(x, torch.full((50,), float(t)), component=torch.zeros(50, dtype=torch.int64))
        mean = (x - betas[t] / (1 - abar[t]).sqrt() * eps_hat) / alphas[t].sqrt()
        if t > 0:
            var = betas[t] * (1 - abar[t - 1]) / (1 - abar[t]) if variance_type == "fixed_small" else betas[t]
            z = ref.normals(7, ref.step_stream(ref.STREAM_REVERSE_NOISE, t), rows, 2, torch.float64)
            x = mean + var.sqrt() * z
        else:
            x = mean
    assert rel_err(out.samples, x) <= 1e-10


# ----------------------------------------------------------------------------------------------------
# the mixture: an oracle denoiser turns the prior into itself, trajectory by trajectory
# ----------------------------------------------------------------------------------------------------
def _check_is_prior(samples, labels, prior, tol_mean=0.06, tol_var=0.1):
    """Component frequencies (chi-square) and per-component mean / variance. With 20000 samples the
    smallest component has ~4000: standard errors 0.016 (mean) and 0.022 (variance); the samplers'
    discretisation bias at the step counts used is below 0.03 (measured at 40000 samples)."""
    n = samples.shape[0]
    counts = torch.bincount(labels, minlength=prior.n_components).double()
    w = prior.weights.double()
    chi2 = float(((counts - n * w) ** 2 / (n * w)).sum())
    assert chi2 < 20.0  # 2 degrees of freedom: p ~ 5e-5
    for k in range(prior.n_components):
        yk = samples[labels == k].double() - prior.means[k].double()
        assert yk.mean(0).abs().max() < tol_mean, (k, yk.mean(0))
        assert (yk.var(0) - 1).abs().max() < tol_var, (k, yk.var(0))


@pytest.mark.parametrize("sampler,steps", [("ancestral", 100), ("ddim", 20)])
def test_ddpm_oracle_returns_the_prior(sampler, steps):
    prior = mixture_prior()
    sched = DiscreteSchedule.linear(100)
    abar = sched.alphas_cumprod
    oracle = OracleVP(lambda t: (abar[t.long()].sqrt(), (1 - abar[t.long()]).sqrt()))
    model = MixDDPM(oracle, prior, schedule=sched, component_input="none", centre_input=True)
    out = model.sample(20000, steps=steps, sampler=sampler, seed=3, progress=False, return_labels=True)
    _check_is_prior(out.samples, out.labels, prior)
    x_T, lab_T = prior.sample(20000, seed=3, return_labels=True)
    assert torch.equal(out.labels, lab_T)  # j drawn from the weights and fixed along the trajectory


@pytest.mark.parametrize("sampler", ["euler_maruyama", "pc", "ode"])
def test_sgm_vp_oracle_returns_the_prior(sampler):
    sde = VPSDE()
    prior = mixture_prior()
    model = MixSGM(OracleVP(sde.marginal), prior, sde=sde, component_input="none")
    out = model.sample(20000, steps=200, sampler=sampler, seed=4, progress=False, return_labels=True)
    _check_is_prior(out.samples, out.labels, prior)


def test_sgm_ve_oracle_returns_the_prior():
    sde = VESDE(sigma_min=0.01, sigma_max=20.0)
    prior = mixture_prior()
    oracle = OracleVP(lambda t: (torch.ones_like(t, dtype=torch.float64), sde.sigma(t)))
    model = MixSGM(oracle, prior, sde=sde, component_input="none")
    out = model.sample(20000, steps=1000, sampler="euler_maruyama", seed=5, progress=False, return_labels=True)
    _check_is_prior(out.samples, out.labels, prior)


# ----------------------------------------------------------------------------------------------------
# what the network sees
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("component_input,centre_input", [("embedding", True), ("embedding", False),
                                                          ("none", True), ("none", False)])
def test_network_inputs(component_input, centre_input):
    prior = mixture_prior(torch.float32)
    net = SmallNet(2, 3)
    model = MixDDPM(net, prior, component_input=component_input, centre_input=centre_input)
    x0 = prior.sample(32, seed=0)
    labels = prior.assign(x0)
    t = torch.randint(0, 1000, (32,), generator=gen(0))
    model.loss(x0, t=t, seed=1)
    signal, noise_scale = (c.float() for c in model.schedule.forward_coefficients(t))
    x_t = ref.q_sample(x0, labels, signal, noise_scale, prior.means, None, "identity", None, 1)[0]
    expected_x = x_t - prior.means[labels] if centre_input else x_t
    assert rel_err(net.seen["x"], expected_x) <= 1e-5
    assert torch.equal(net.seen["t"], t)
    if component_input == "embedding":
        assert torch.equal(net.seen["component"], labels)
    else:
        assert net.seen["component"] is None


# ----------------------------------------------------------------------------------------------------
# invariance: chunked sampling, split batches
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls,kw", [(MixDDPM, {"steps": 25, "sampler": "ancestral"}),
                                    (MixDDPM, {"steps": 25, "sampler": "ddim", "eta": 0.5}),
                                    (MixDDPM, {"steps": 12, "sampler": "dpmsolver++", "order": 3}),
                                    (MixDDPM, {"steps": 12, "sampler": "sde-dpmsolver++"}),
                                    (MixSGM, {"steps": 12, "sampler": "sde-dpmsolver++", "order": 3}),
                                    (MixSGM, {"steps": 25, "sampler": "pc"})])
def test_sampling_does_not_depend_on_batch_size(cls, kw):
    torch.manual_seed(0)
    prior = mixture_prior()
    model = cls(SmallNet(2, 3).double(), prior)
    a = model.sample(300, seed=9, progress=False, **kw)
    b = model.sample(300, seed=9, batch_size=7, progress=False, **kw)
    # the same noise; only the network's batched float rounding may differ
    assert rel_err(b, a) <= 1e-12
    c = model.sample(300, seed=10, progress=False, **kw)
    assert rel_err(c, a) > 1e-3


def test_loss_of_split_batch_equals_full_batch():
    torch.manual_seed(0)
    prior = mixture_prior()
    model = MixDDPM(SmallNet(2, 3).double(), prior)
    x0 = prior.sample(40, seed=1)
    t = model.sample_timesteps(40, gen(2))
    full = model.loss(x0, t=t, seed=3)
    halves = [model.loss(x0[i:i + 20], t=t[i:i + 20], seed=3, offset=i) for i in (0, 20)]
    assert rel_err((halves[0] + halves[1]) / 2, full) <= 1e-14


def test_trajectory_and_effort():
    torch.manual_seed(0)
    prior = mixture_prior()
    model = MixDDPM(SmallNet(2, 3).double(), prior, timesteps=20)
    out = model.sample(64, sampler="ancestral", seed=2, progress=False, return_trajectory=True)
    assert out.trajectory.shape == (21, 64, 2)
    assert torch.equal(out.trajectory[0], prior.sample(64, seed=2))
    assert torch.equal(out.initial, out.trajectory[0])
    assert torch.equal(out.trajectory[-1], out.samples)
    effort = ((out.trajectory[-1] - out.trajectory[0]) ** 2).sum(1).mean()
    assert model.reverse_effort(64, sampler="ancestral", seed=2) == pytest.approx(float(effort), rel=1e-14)


def test_image_samples_and_state_dict(tmp_path):
    prior = GaussianMixturePrior.standard(16)

    class Conv(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3, padding=1)

        def forward(self, x, t, component=None, cond=None):
            assert x.shape[1:] == (1, 4, 4)
            return self.conv(x)

    model = MixDDPM(Conv(), prior, timesteps=10, sample_shape=(1, 4, 4))
    assert model.loss(torch.randn(8, 1, 4, 4)).ndim == 0  # learns the data support
    x = model.sample(5, seed=0, progress=False)
    assert x.shape == (5, 1, 4, 4)
    torch.save(model.state_dict(), tmp_path / "m.pt")
    other = MixDDPM(Conv(), GaussianMixturePrior.standard(16), timesteps=10, sample_shape=(1, 4, 4))
    other.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
    assert torch.equal(other.sample(5, seed=0, progress=False), x)


# ----------------------------------------------------------------------------------------------------
# VE sigma_max rule
# ----------------------------------------------------------------------------------------------------
def test_ve_sigma_max_rule():
    x = two_clusters(300, dtype=torch.float64)
    whole = ve_sigma_max(GaussianMixturePrior.standard(2, torch.float64), x)
    assert whole == pytest.approx(float(torch.cdist(x, x).max()), rel=1e-12)
    prior = GaussianMixturePrior.fit(x, 2, seed=0)
    labels = prior.assign(x)
    within = max(float(torch.cdist(x[labels == k], x[labels == k]).max()) for k in range(2))
    assert ve_sigma_max(prior, x) == pytest.approx(within, rel=1e-12)
    assert within < 0.7 * whole


# ----------------------------------------------------------------------------------------------------
# bad inputs
# ----------------------------------------------------------------------------------------------------
def test_bad_inputs():
    prior = mixture_prior(torch.float32)
    net = SmallNet(2, 3)
    with pytest.raises(TypeError, match="denoiser"):
        MixDDPM(lambda x: x, prior)
    with pytest.raises(TypeError, match="prior"):
        MixDDPM(net, None)
    with pytest.raises(ValueError, match="component_input"):
        MixDDPM(net, prior, component_input="onehot")
    with pytest.raises(ValueError, match="sample_shape"):
        MixDDPM(net, prior, sample_shape=(3,))
    with pytest.raises(ValueError, match="sde"):
        MixSGM(net, prior, sde="sub-vp")
    model = MixDDPM(net, prior, timesteps=50)
    with pytest.raises(ValueError, match="x0"):
        model.loss(torch.randn(4, 3))
    with pytest.raises(ValueError, match="x0"):
        model.loss(torch.randn(0, 2))
    with pytest.raises(TypeError, match="integer timesteps"):
        model.loss(torch.randn(4, 2), t=torch.rand(4))
    with pytest.raises(ValueError, match="t must"):
        model.loss(torch.randn(4, 2), t=torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="steps"):
        model.sample(4, steps=51, progress=False)
    with pytest.raises(ValueError, match="sampler"):
        model.sample(4, sampler="euler", progress=False)
    with pytest.raises(ValueError, match="n must"):
        model.sample(-1, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        model.sample(4, batch_size=0, progress=False)
    with pytest.raises(ValueError, match="eta"):
        model.sample(4, eta=0.5, progress=False)
    assert model.sample(0, progress=False).shape == (0, 2)


# ----------------------------------------------------------------------------------------------------
# conditioning: conditions -> condition vectors, condition dropout, guidance, the auxiliary NGMG term
# ----------------------------------------------------------------------------------------------------
class CondNet(nn.Module):
    """A tiny denoiser with a condition input; records what it was called with."""

    def __init__(self, dim: int, cond_dim: int, hidden: int = 16):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim + 1 + cond_dim, hidden), nn.SiLU(), nn.Linear(hidden, dim))
        self.cond_dim = cond_dim
        self.calls = []

    def forward(self, x, t, component=None, cond=None):
        self.calls.append({"x": x, "cond": cond})
        c = torch.zeros(x.shape[0], self.cond_dim, dtype=x.dtype) if cond is None else cond.to(x.dtype)
        return self.net(torch.cat([x, t.to(x.dtype)[:, None] / 1000, c], 1))


def conditioned_model(mode="features", dtype=torch.float64, **kw):
    torch.manual_seed(0)
    conditioner = GMMConditioner(3 if mode == "features" else 5, 6, sigma=0.3, mode=mode, dtype=dtype)
    model = MixDDPM(CondNet(2, 6).to(dtype), mixture_prior(dtype), conditioner=conditioner, **kw)
    return model, conditioner


def random_attributes(n, mode="features", seed=0):
    g = gen(seed)
    return torch.randint(0, 2, (n, 3), generator=g) if mode == "features" else torch.randint(0, 5, (n,), generator=g)


@pytest.mark.parametrize("mode", ["features", "classes"])
def test_loss_conditions_are_the_conditioners_draws(mode):
    model, conditioner = conditioned_model(mode)
    x0 = mixture_prior().sample(40, seed=1)
    t = torch.randint(0, 1000, (40,), generator=gen(2))
    a = random_attributes(40, mode)
    loss = model.loss(x0, t=t, seed=5, offset=3, conditions=a)
    cond = conditioner.sample(a, seed=derive_seed(5, SEED_CONDITION_NOISE), offset=3)
    assert torch.equal(model.denoiser.calls[-1]["cond"], cond)
    assert torch.equal(loss, model.loss(x0, t=t, seed=5, offset=3, cond=cond))
    # the condition noise is not the diffusion noise of the same rows
    eps = ref.normals(5, ref.STREAM_FORWARD_NOISE, torch.arange(3, 43), 6, torch.float64)
    assert not torch.allclose((cond - conditioner.centre(a)) / 0.3, eps)


def test_loss_with_conditions_and_dropout_splits_like_one_batch():
    model, _ = conditioned_model(cond_dropout=0.3)
    x0 = mixture_prior().sample(60, seed=1)
    t = torch.randint(0, 1000, (60,), generator=gen(2))
    a = random_attributes(60)
    full = model.loss(x0, t=t, seed=9, conditions=a)
    cond_full = model.denoiser.calls[-1]["cond"]
    halves = [model.loss(x0[s:s + 30], t=t[s:s + 30], seed=9, offset=s, conditions=a[s:s + 30]) for s in (0, 30)]
    cond_halves = torch.cat([c["cond"] for c in model.denoiser.calls[-2:]])
    assert torch.equal(cond_full, cond_halves)
    assert rel_err(full, (halves[0] + halves[1]) / 2) <= 1e-14


def test_condition_dropout_rate_and_null_rows():
    p, n = 0.25, 20000
    model, conditioner = conditioned_model(cond_dropout=p)
    x0 = mixture_prior().sample(n, seed=1)
    a = random_attributes(n)
    model.loss(x0, t=torch.randint(0, 1000, (n,), generator=gen(2)), seed=4, conditions=a)
    cond = model.denoiser.calls[-1]["cond"]
    dropped = (cond == 0).all(1)
    drawn = conditioner.sample(a, seed=derive_seed(4, SEED_CONDITION_NOISE))
    assert torch.equal(cond[~dropped], drawn[~dropped])  # kept rows are untouched
    sd = (p * (1 - p) / n) ** 0.5
    assert abs(float(dropped.double().mean()) - p) < 4 * sd
    # the dropout draw is independent of the attributes
    for v in (0, 1):
        rows = a[:, 0] == v
        assert abs(float(dropped[rows].double().mean()) - p) < 4 * (p * (1 - p) / int(rows.sum())) ** 0.5


def test_classifier_free_guidance_combines_null_and_conditional():
    model, conditioner = conditioned_model()
    x = torch.randn(8, 2, dtype=torch.float64, generator=gen(0))
    labels = torch.zeros(8, dtype=torch.int64)
    t = torch.full((8,), 500)
    cond = conditioner.sample(random_attributes(8), seed=0)
    means = model.means
    with torch.no_grad():
        c = model.predict_noise(x, t, labels, means, cond)
        null = model.predict_noise(x, t, labels, means, None)
        guided = model.predict_noise(x, t, labels, means, cond, guidance_scale=3.0)
    assert not torch.allclose(c, null)
    torch.testing.assert_close(guided, null + 3.0 * (c - null), rtol=1e-12, atol=1e-12)
    model.denoiser.calls.clear()
    model.predict_noise(x, t, labels, means, cond, guidance_scale=1.0)
    assert len(model.denoiser.calls) == 1  # w = 1 is one network call


@pytest.mark.parametrize("mode", ["features", "classes"])
def test_sampling_with_conditions(mode):
    model, conditioner = conditioned_model(mode)
    a = random_attributes(50, mode, seed=3)
    kw = dict(steps=20, seed=7, progress=False, guidance_scale=2.0)
    x = model.sample(50, conditions=a, **kw)
    cond = conditioner.sample(a, seed=derive_seed(7, SEED_CONDITION_NOISE))
    assert torch.equal(x, model.sample(50, cond=cond, **kw))
    # chunks change only the network's float rounding
    torch.testing.assert_close(model.sample(50, conditions=a, batch_size=7, **kw), x, rtol=1e-10, atol=1e-10)
    assert not torch.equal(x, model.sample(50, conditions=a, **dict(kw, guidance_scale=1.0)))
    # rows drawn in two calls with their offsets would need the same condition noise: the draw is per row
    assert torch.equal(cond[20:], conditioner.sample(a[20:], seed=derive_seed(7, SEED_CONDITION_NOISE), offset=20))


class Judge(nn.Module):
    """A fixed linear 'classifier' from x [B, 2] to condition space [B, 6]; records its inputs."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 6).double()
        self.inputs = []

    def forward(self, x):
        self.inputs.append(x)
        return self.lin(x)


@pytest.mark.parametrize("covariance_type", ["identity", "diag", "full"])
def test_auxiliary_ngmg_term(covariance_type):
    means = torch.tensor([[-6.0, 1.0], [5.0, -2.0]], dtype=torch.float64)
    cov = {"identity": None, "diag": torch.tensor([[0.5, 2.0], [1.5, 0.7]], dtype=torch.float64),
           "full": torch.tensor([[[2.0, 0.3], [0.3, 0.5]], [[1.0, -0.2], [-0.2, 0.8]]], dtype=torch.float64)}
    prior = GaussianMixturePrior(means, torch.tensor([0.6, 0.4], dtype=torch.float64), cov[covariance_type],
                                 covariance_type)
    conditioner = GMMConditioner(3, 6, sigma=0.8, dtype=torch.float64)
    judge = Judge()
    torch.manual_seed(0)
    plain = MixDDPM(CondNet(2, 6).double(), prior, conditioner=conditioner)
    torch.manual_seed(0)
    aux = MixDDPM(CondNet(2, 6).double(), prior, conditioner=conditioner, aux_classifier=judge, aux_weight=0.7,
                  aux_sigma=1.5)
    x0 = prior.sample(32, seed=1)
    t = torch.randint(0, 1000, (32,), generator=gen(2))
    a = random_attributes(32)
    base = plain.loss(x0, t=t, seed=3, conditions=a)
    total = aux.loss(x0, t=t, seed=3, conditions=a)
    # rebuild the term from the network's input and output
    call = aux.denoiser.calls[-1]
    labels = prior.assign(x0)
    mu = means[labels]
    x_t = call["x"] + mu  # centre_input: the network saw x_t - mu_j
    eps_hat = aux.denoiser.net(torch.cat([call["x"], t.double()[:, None] / 1000, call["cond"]], 1))
    abar = aux.schedule.alphas_cumprod[t].double()[:, None]
    A_eps = ref.apply_factor(prior.cov_factor, covariance_type, labels, eps_hat)
    x0_hat = mu + (x_t - mu - (1 - abar).sqrt() * A_eps) / abar.sqrt()
    torch.testing.assert_close(judge.inputs[-1], x0_hat, rtol=1e-10, atol=1e-10)
    pred = judge.lin(x0_hat)
    g = torch.stack([ref.ngmg(pred[:, 2 * j:2 * j + 2], conditioner.means[j], torch.stack([1 - a[:, j], a[:, j]], 1)
                              .double(), torch.tensor(1.5, dtype=torch.float64))[0] for j in range(3)], 1).sum(1)
    expected = base + 0.7 * (abar[:, 0] * g).mean()
    assert rel_err(total, expected) <= 1e-10
    # the term's gradient reaches the denoiser, not the (frozen) judge
    total.backward()
    assert all(p.grad is None for p in judge.parameters())
    assert aux.denoiser.net[0].weight.grad.abs().sum() > 0
    aux.train()
    assert not judge.training


def test_aux_weight_zero_is_plain_training():
    conditioner = GMMConditioner(3, 6, sigma=0.8, dtype=torch.float64)
    torch.manual_seed(0)
    plain = MixDDPM(CondNet(2, 6).double(), mixture_prior(), conditioner=conditioner)
    torch.manual_seed(0)
    zero = MixDDPM(CondNet(2, 6).double(), mixture_prior(), conditioner=conditioner, aux_classifier=Judge(),
                   aux_weight=0.0)
    x0 = mixture_prior().sample(16, seed=1)
    t = torch.randint(0, 1000, (16,), generator=gen(2))
    a = random_attributes(16)
    assert torch.equal(plain.loss(x0, t=t, seed=3, conditions=a), zero.loss(x0, t=t, seed=3, conditions=a))
    assert zero.aux_classifier.inputs == []


def test_conditioning_bad_inputs():
    model, conditioner = conditioned_model()
    x0 = mixture_prior().sample(4, seed=1)
    a = random_attributes(4)
    plain = MixDDPM(CondNet(2, 6).double(), mixture_prior())
    with pytest.raises(ValueError, match="no conditioner"):
        plain.loss(x0, conditions=a)
    with pytest.raises(ValueError, match="either cond or conditions"):
        model.loss(x0, cond=torch.zeros(4, 6, dtype=torch.float64), conditions=a)
    with pytest.raises(ValueError, match="cond must be"):
        model.loss(x0, cond=torch.zeros(3, 6, dtype=torch.float64))
    with pytest.raises(ValueError, match="cond_dropout"):
        MixDDPM(CondNet(2, 6), mixture_prior(torch.float32), conditioner=conditioner, cond_dropout=1.0)
    with pytest.raises(TypeError, match="conditioner"):
        MixDDPM(CondNet(2, 6), mixture_prior(torch.float32), conditioner="features")
    with pytest.raises(ValueError, match="aux_weight > 0 needs"):
        MixDDPM(CondNet(2, 6), mixture_prior(torch.float32), conditioner=conditioner, aux_weight=1.0)
    with pytest.raises(ValueError, match="aux_weight"):
        MixDDPM(CondNet(2, 6), mixture_prior(torch.float32), aux_weight=-1.0)
    with pytest.raises(ValueError, match="aux_kind"):
        MixDDPM(CondNet(2, 6), mixture_prior(torch.float32), aux_kind="bce")
    aux = MixDDPM(CondNet(2, 6).double(), mixture_prior(), conditioner=conditioner, aux_classifier=Judge(),
                  aux_weight=1.0)
    with pytest.raises(ValueError, match="needs `conditions`"):
        aux.loss(x0, cond=conditioner.sample(a, seed=0))
    with pytest.raises(TypeError, match="guidance_scale"):
        model.sample(4, conditions=a, guidance_scale="2", progress=False)
    with pytest.raises(TypeError, match="unexpected keyword"):
        model.sample(4, guidanse_scale=2.0, progress=False)


def test_mixsgm_takes_a_conditioner():
    conditioner = GMMConditioner(3, 6, sigma=0.3, dtype=torch.float64)
    torch.manual_seed(0)
    model = MixSGM(CondNet(2, 6).double(), mixture_prior(), conditioner=conditioner, cond_dropout=0.2)
    x0 = mixture_prior().sample(30, seed=1)
    a = random_attributes(30)
    t = model.sample_timesteps(30, gen(2))
    loss = model.loss(x0, t=t, seed=3, conditions=a)
    assert torch.isfinite(loss)
    kw = dict(steps=10, sampler="ode", seed=4, progress=False, guidance_scale=1.5)
    x = model.sample(30, conditions=a, **kw)
    cond = conditioner.sample(a, seed=derive_seed(4, SEED_CONDITION_NOISE))
    assert torch.equal(x, model.sample(30, cond=cond, **kw))
    assert not torch.allclose(x, model.sample(30, conditions=1 - a, **kw))


# ----------------------------------------------------------------------------------------------------
# data-support clipping
# ----------------------------------------------------------------------------------------------------
class Wild(nn.Module):
    """A denoiser whose eps_hat is far too large: unclipped, x0_hat lands far outside the data."""

    def forward(self, x, t, component=None, cond=None):
        return 50.0 * torch.ones_like(x)


def _boxes(x, labels, k):
    lo = torch.stack([x[labels == j].amin(0) for j in range(k)])
    hi = torch.stack([x[labels == j].amax(0) for j in range(k)])
    return lo, hi


def test_support_boxes_are_learned_per_component_in_training():
    prior = mixture_prior()
    model = MixDDPM(SmallNet(2, 3).double(), prior, timesteps=50)
    assert bool((model.support_lo == float("inf")).all()) and bool((model.support_hi == -float("inf")).all())
    x0 = prior.sample(300, seed=1)
    labels = prior.assign(x0)
    model.eval()
    model.loss(x0, seed=0)
    assert bool((model.support_lo == float("inf")).all())  # evaluation losses learn nothing
    model.train()
    model.loss(x0[:150], seed=0)
    bad = torch.full((1, 2), float("nan"), dtype=x0.dtype)
    model.loss(torch.cat([x0[150:], bad]), seed=1, labels=torch.cat([labels[150:], labels[:1]]))
    lo, hi = _boxes(x0, labels, 3)  # the dispatcher's labels: nearest centre, as q_sample assigns them
    assert torch.equal(model.support_lo, lo) and torch.equal(model.support_hi, hi)  # NaN row ignored
    bounds = sampling.support_bounds(model.support_lo, model.support_hi, 0.5)
    torch.testing.assert_close(bounds[0], lo - 0.5 * (hi - lo), rtol=0, atol=1e-14)
    torch.testing.assert_close(bounds[1], hi + 0.5 * (hi - lo), rtol=0, atol=1e-14)


def test_component_without_training_rows_gets_the_union_box():
    lo = torch.tensor([[0.0, 1.0], [float("inf"), float("inf")], [-2.0, 3.0]])
    hi = torch.tensor([[1.0, 2.0], [-float("inf"), -float("inf")], [-1.0, 5.0]])
    got_lo, got_hi = sampling.support_bounds(lo, hi, margin=0.0)
    assert torch.equal(got_lo[1], torch.tensor([-2.0, 1.0])) and torch.equal(got_hi[1], torch.tensor([1.0, 5.0]))
    assert torch.equal(got_lo[0], lo[0]) and torch.equal(got_hi[2], hi[2])
    wide_lo, wide_hi = sampling.support_bounds(lo, hi, margin=0.1)  # a tenth of the width each side
    assert torch.allclose(wide_lo[1], torch.tensor([-2.3, 0.6]))
    assert torch.allclose(wide_hi[2], torch.tensor([-0.9, 5.2]))
    assert sampling.support_bounds(torch.full((2, 2), float("inf")), torch.full((2, 2), -float("inf"))) is None


def _wild_model(cls=MixDDPM, **kw):
    prior = mixture_prior()
    model = cls(Wild(), prior, component_input="none", **kw)
    # disjoint boxes, one per component, around the means
    model.support_lo.copy_(prior.means - torch.tensor([1.0, 0.5], dtype=torch.float64))
    model.support_hi.copy_(prior.means + torch.tensor([0.5, 1.0], dtype=torch.float64))
    return model


@pytest.mark.parametrize("sampler", ["ancestral", "ddim", "dpmsolver++", "sde-dpmsolver++"])
def test_clip_auto_keeps_each_trajectory_in_its_component_box(sampler):
    model = _wild_model(timesteps=100)
    kw = dict(steps=10, sampler=sampler, seed=1, progress=False, return_labels=True)
    out = model.sample(400, **kw, clip_margin=0.0)
    lo, hi = model.support_lo[out.labels], model.support_hi[out.labels]
    assert bool(((out.samples >= lo) & (out.samples <= hi)).all())  # the last step returns the clipped x0_hat
    assert len(out.labels.unique()) == 3
    # a margin widens the boxes of the intermediate x0_hat only: the samples stay in the exact box, on its
    # faces (Wild's x0_hat is far off), by another path than with margin 0 (the default)
    wide = model.sample(400, **kw, clip_margin=0.1, return_trajectory=True)
    exact = model.sample(400, **kw, return_trajectory=True)
    on_face = torch.isclose(wide.samples, lo) | torch.isclose(wide.samples, hi)
    assert bool(((wide.samples >= lo) & (wide.samples <= hi)).all()) and bool(on_face.any())
    assert torch.equal(wide.labels, out.labels) and not torch.equal(wide.trajectory[1], exact.trajectory[1])
    assert torch.equal(exact.samples, out.samples) and sampling.DEFAULT_CLIP_MARGIN == 0.0
    wild = model.sample(400, **dict(kw, clip=None)).samples
    assert float(wild.abs().max()) > 30  # the boxes lie within |x| <= 8
    fixed = model.sample(400, **dict(kw, clip=(-3.0, 2.0))).samples
    assert float(fixed.min()) >= -3.0 and float(fixed.max()) <= 2.0


@pytest.mark.parametrize("sampler", ["euler_maruyama", "ode", "pc", "dpmsolver++"])
def test_clip_auto_steers_sgm_samplers_via_tweedie(sampler):
    model = _wild_model(MixSGM)
    kw = dict(steps=20, sampler=sampler, seed=1, progress=False, return_labels=True)
    out = model.sample(400, **kw)
    wild = model.sample(400, **dict(kw, clip=None)).samples
    span = (model.support_hi - model.support_lo).max()
    far = ((out.samples - model.support_lo[out.labels]).abs() > 3 * span).any(1)
    assert float(wild.abs().max()) > 100 and not bool(far.any())
    if sampler == "dpmsolver++":  # its last step goes to zero noise: the samples are the clipped x0_hat
        lo, hi = model.support_lo[out.labels], model.support_hi[out.labels]
        assert bool(((out.samples >= lo) & (out.samples <= hi)).all())


def test_untrained_model_samples_unclipped_and_warns_once():
    model = MixDDPM(Wild(), mixture_prior(), timesteps=50, component_input="none")
    kw = dict(steps=5, seed=0, progress=False)
    with pytest.warns(UserWarning, match="learned no data support"):
        a = model.sample(10, **kw)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        b = model.sample(10, **kw)
        c = model.sample(10, clip=None, **kw)
    assert torch.equal(a, b) and torch.equal(a, c)


def test_support_travels_with_state_dict_checkpoints_and_ema(tmp_path):
    from mixdiff_ext import train
    x = two_clusters(200, dtype=torch.float32)
    prior = GaussianMixturePrior.fit(x, 2, seed=0)
    kw = dict(batch_size=32, lr=1e-3, seed=0, progress=False, checkpoint_dir=tmp_path / "run", checkpoint_every=2)
    first = train(MixDDPM(SmallNet(2, 2), prior, timesteps=50), x, steps=4, **kw)
    assert bool(torch.isfinite(first.model.support_lo).all())
    assert torch.equal(first.ema_model.support_lo, first.model.support_lo)
    resumed = train(MixDDPM(SmallNet(2, 2), prior, timesteps=50), x, steps=8, **kw)
    assert bool((resumed.model.support_lo <= first.model.support_lo).all())  # resumed from the checkpoint's boxes
    assert bool((resumed.model.support_hi >= first.model.support_hi).all())
    labels = prior.assign(x)
    lo, hi = _boxes(x, labels, 2)
    assert bool((resumed.model.support_lo >= lo).all()) and bool((resumed.model.support_hi <= hi).all())
    other = MixDDPM(SmallNet(2, 2), prior, timesteps=50)
    other.load_state_dict(resumed.ema_model.state_dict())
    assert torch.equal(other.support_hi, resumed.ema_model.support_hi)
    kw = dict(steps=5, seed=0, progress=False)
    assert torch.equal(other.sample(20, **kw), resumed.ema_model.sample(20, **kw))


# ----------------------------------------------------------------------------------------------------
# prediction types and the solvers
# ----------------------------------------------------------------------------------------------------
class OraclePrediction(nn.Module):
    """OracleVP's posterior means in each prediction type (data = prior, identity covariance, VP):
    E[eps | y] = s y, E[y0 | y] = m y, E[v | y] = m E[eps] - s E[y0] = 0."""

    def __init__(self, scales, prediction_type):
        super().__init__()
        self.scales, self.prediction_type = scales, prediction_type

    def forward(self, x, t, component=None, cond=None):
        m, s = self.scales(t)
        m, s = m.to(x.dtype)[:, None], s.to(x.dtype)[:, None]
        return {"epsilon": s * x, "sample": m * x, "v_prediction": 0 * x}[self.prediction_type]


@pytest.mark.parametrize("sampler,steps", [("ancestral", 30), ("ddim", 10), ("dpmsolver++", 8),
                                           ("sde-dpmsolver++", 8)])
def test_prediction_types_give_the_same_trajectories(sampler, steps):
    prior = mixture_prior()
    sched = DiscreteSchedule.linear(100)
    abar = sched.alphas_cumprod

    def scales(t):
        return abar[t.long()].sqrt(), (1 - abar[t.long()]).sqrt()

    out = {}
    for p in ("epsilon", "sample", "v_prediction"):
        model = MixDDPM(OraclePrediction(scales, p), prior, schedule=sched, component_input="none", prediction_type=p)
        out[p] = model.sample(500, steps=steps, sampler=sampler, seed=2, progress=False, clip=None)
    assert rel_err(out["sample"], out["epsilon"]) <= 1e-10
    assert rel_err(out["v_prediction"], out["epsilon"]) <= 1e-10


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("covariance_type", ["diag", "full"])
def test_loss_targets_of_prediction_types(prediction_type, covariance_type):
    torch.manual_seed(0)
    mix = mixture_prior()
    factor = torch.tensor([[0.5, 2.0], [1.0, 1.5], [0.7, 0.3]], dtype=torch.float64)
    if covariance_type == "full":
        factor = torch.diag_embed(factor)
        factor[:, 1, 0] = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)
    prior = GaussianMixturePrior._from_factor(mix.means, mix.weights, factor, covariance_type)
    net = SmallNet(2, 3).double()
    model = MixDDPM(net, prior, prediction_type=prediction_type)
    x0 = prior.sample(40, seed=1)
    t = model.sample_timesteps(40, gen(2))
    labels = prior.assign(x0)
    loss = model.loss(x0, t=t, seed=3, labels=labels)
    m, s = (c[:, None] for c in model.schedule.forward_coefficients(t))
    mu, L = prior.means[labels], factor[labels]
    eps = ref.normals(3, ref.STREAM_FORWARD_NOISE, torch.arange(40), 2, torch.float64)
    a_eps = torch.einsum("nij,nj->ni", L, eps) if covariance_type == "full" else L * eps
    x_t = mu + m * (x0 - mu) + s * a_eps
    u0 = torch.linalg.solve(L, (x0 - mu)[..., None])[..., 0] if covariance_type == "full" else (x0 - mu) / L
    target = {"epsilon": eps, "sample": x0 - mu, "v_prediction": m * eps - s * u0}[prediction_type]
    expected = ((net(x_t - mu, t, component=labels) - target) ** 2).mean()
    assert rel_err(loss, expected) <= 1e-12


@pytest.mark.parametrize("sampler,steps", [("dpmsolver++", 20), ("sde-dpmsolver++", 60)])
def test_ddpm_solvers_oracle_returns_the_prior(sampler, steps):
    test_ddpm_oracle_returns_the_prior(sampler, steps)


@pytest.mark.parametrize("order", [2, 3])
def test_sgm_vp_dpmsolver_oracle_returns_the_prior(order):
    sde = VPSDE()
    prior = mixture_prior()
    model = MixSGM(OracleVP(sde.marginal), prior, sde=sde, component_input="none")
    out = model.sample(20000, steps=15, sampler="dpmsolver++", order=order, seed=4, progress=False,
                       return_labels=True)
    _check_is_prior(out.samples, out.labels, prior)


def test_solver_bad_inputs():
    prior = mixture_prior(torch.float32)
    ve = MixSGM(SmallNet(2, 3), prior, sde="ve")
    with pytest.raises(ValueError, match="needs the VP SDE"):
        ve.sample(4, steps=5, sampler="dpmsolver++", progress=False)
    with pytest.raises(ValueError, match="v_prediction.*VP"):
        MixSGM(SmallNet(2, 3), prior, sde="ve", prediction_type="v_prediction").sample(4, steps=5, progress=False)
    model = MixDDPM(SmallNet(2, 3), prior, timesteps=50)
    with pytest.raises(ValueError, match="order must be 1, 2 or 3"):
        model.sample(4, steps=5, order=4, progress=False)
    with pytest.raises(ValueError, match="prediction_type must be one of"):
        MixDDPM(SmallNet(2, 3), prior, prediction_type="x0")
    with pytest.raises(ValueError, match="spacing must be one of"):
        model.sample(4, steps=5, spacing="uniform", progress=False)
    with pytest.raises(ValueError, match="clip must be 'auto'"):
        model.sample(4, steps=5, clip="data", progress=False)
    with pytest.raises(TypeError, match="clip must be 'auto'"):
        model.sample(4, steps=5, clip=3.0, progress=False)
    with pytest.raises(ValueError, match="clip_margin must be >= 0"):
        model.sample(4, steps=5, clip_margin=-0.1, progress=False)
    with pytest.raises(ValueError, match="steps must be < the number of training timesteps"):
        model.sample(4, steps=50, progress=False)
