"""GMMConditioner: Gaussian-mixture condition vectors (features / classes), their NGMG loss, attribute_classes."""
from __future__ import annotations

import math

import pytest
import torch

from conftest import devices, gen, rel_err, tol_for
from mixdiff_ext import ops
from mixdiff_ext.conditioning import GMMConditioner, attribute_classes

DTYPES = [torch.float64, torch.float32]
KINDS = ("potential", "log")


def _attrs(n, m, seed):
    return torch.randint(0, 2, (n, m), generator=gen(seed))


def _classes(n, k, seed):
    return torch.randint(0, k, (n,), generator=gen(seed))


def _labels(cond: GMMConditioner, n: int, seed: int) -> torch.Tensor:
    return _attrs(n, cond.num, seed) if cond.mode == "features" else _classes(n, cond.num, seed)


# ---------------------------------------------------------------------------------------------------
# means
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_sign_means_features(dtype):
    cond = GMMConditioner(3, 12, mode="features", dtype=dtype)
    assert cond.means.shape == (3, 2, 4) and cond.means.dtype == dtype
    assert (cond.means[:, 0] == -1).all() and (cond.means[:, 1] == 1).all()
    assert torch.equal(cond.means, GMMConditioner(3, 12, seed=99, dtype=dtype).means)  # no randomness


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_sign_means_classes(dtype):
    cond = GMMConditioner(7, 32, mode="classes", seed=5, dtype=dtype)
    assert cond.means.shape == (7, 32) and cond.means.dtype == dtype
    assert ((cond.means == 1) | (cond.means == -1)).all()
    assert 0.2 < (cond.means == 1).double().mean().item() < 0.8  # both signs occur (224 draws)
    assert torch.equal(cond.means, GMMConditioner(7, 32, mode="classes", seed=5, dtype=dtype).means)
    assert not torch.equal(cond.means, GMMConditioner(7, 32, mode="classes", seed=6, dtype=dtype).means)


def test_sign_class_means_are_distinct():
    # 12 classes in 8 dimensions: independent +-1 draws would collide for some seeds (seed 0 did); drawn
    # without replacement they never do. All 2**dim patterns when K = 2**dim.
    for seed in range(50):
        means = GMMConditioner(12, 8, mode="classes", seed=seed).means
        assert len(torch.unique(means, dim=0)) == 12, seed
    full = GMMConditioner(16, 4, mode="classes", seed=1).means
    assert len(torch.unique(full, dim=0)) == 16
    assert ((full == 1) | (full == -1)).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode", ["features", "classes"])
def test_random_means(mode, dtype):
    num, dim = 4, 20
    cond = GMMConditioner(num, dim, mode=mode, means="random", seed=3, dtype=dtype)
    shape, length = ((num, 2, dim // num), dim // num) if mode == "features" else ((num, dim), dim)
    assert cond.means.shape == shape and cond.means.dtype == dtype
    norms = cond.means.double().norm(dim=-1)
    assert rel_err(norms, torch.full_like(norms, math.sqrt(length))) <= tol_for(dtype, 1e-14, 1e-6)
    assert not ((cond.means == 1) | (cond.means == -1)).all()  # not the sign means
    again = GMMConditioner(num, dim, mode=mode, means="random", seed=3, dtype=dtype)
    assert torch.equal(cond.means, again.means)
    assert not torch.equal(cond.means, GMMConditioner(num, dim, mode=mode, means="random", seed=4, dtype=dtype).means)
    # drawn in float64 then rounded: the float32 and float64 means agree to float32 rounding
    other = GMMConditioner(num, dim, mode=mode, means="random", seed=3, dtype=torch.float64)
    assert rel_err(cond.means, other.means) <= tol_for(dtype, 0.0, 1e-7)


@pytest.mark.parametrize("mode", ["features", "classes"])
def test_tensor_means(mode):
    shape = (3, 2, 2) if mode == "features" else (3, 6)
    given = torch.randn(*shape, generator=gen(1), dtype=torch.float64)
    cond = GMMConditioner(3, 6, mode=mode, means=given, dtype=torch.float64)
    assert torch.equal(cond.means, given)
    given.zero_()  # the buffer is a copy
    assert cond.means.abs().sum() > 0
    c32 = GMMConditioner(3, 6, mode=mode, means=cond.means, dtype=torch.float32)
    assert c32.means.dtype == torch.float32 and torch.equal(c32.means, cond.means.float())


def test_properties_and_buffer():
    f = GMMConditioner(5, 15, sigma=0.25)
    assert (f.mode, f.num, f.num_attributes, f.num_classes, f.dim, f.block_dim, f.sigma) == \
        ("features", 5, 5, None, 15, 3, 0.25)
    assert f.num_components == 10 and f.dtype == torch.float32 and f.device.type == "cpu"
    c = GMMConditioner(4, 6, mode="classes")
    assert (c.num_attributes, c.num_classes, c.block_dim, c.num_components) == (None, 4, 6, 4)
    assert list(f.state_dict()) == ["means"] and list(dict(f.named_buffers())) == ["means"]
    assert "mode='features'" in repr(f) and "num_attributes=5" in repr(f) and "sigma=0.25" in repr(f)
    assert "num_classes=4" in repr(c)
    d = f.to(torch.float64)
    assert d.means.dtype == torch.float64 and d.dtype == torch.float64


# ---------------------------------------------------------------------------------------------------
# centre and sample
# ---------------------------------------------------------------------------------------------------
def test_centre_features():
    cond = GMMConditioner(3, 6, means="random", seed=2, dtype=torch.float64)
    a = _attrs(10, 3, seed=3)
    want = torch.cat([cond.means[j, a[:, j]] for j in range(3)], dim=1)
    got = cond.centre(a)
    assert got.shape == (10, 6) and torch.equal(got, want)
    for same in (a.bool(), a.float(), a.int(), a.to(torch.uint8)):
        assert torch.equal(cond.centre(same), want)


def test_centre_classes():
    cond = GMMConditioner(5, 4, mode="classes", means="random", seed=2, dtype=torch.float64)
    a = _classes(9, 5, seed=3)
    assert torch.equal(cond.centre(a), cond.means[a])
    assert torch.equal(cond.centre(a.int()), cond.means[a])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode", ["features", "classes"])
def test_sample_moments(mode, dtype):
    # (c - centre) / sigma should be N(0, I): N = 20000 rows, D = 6. Standard errors: mean 1/sqrt(N) = 0.0071,
    # variance sqrt(2/N) = 0.010, covariance 1/sqrt(N) = 0.0071; 0.04 / 0.06 are > 5 standard errors (a
    # chance failure has probability < 1e-5 over all 27 entries), while a wrong sigma (e.g. sigma^2 or
    # sqrt(sigma): variance 0.25 or 2 in these units) or an offset mean fails by far.
    N, sigma = 20000, 0.5
    cond = GMMConditioner(3, 6, sigma=sigma, mode=mode, means="random", seed=1, dtype=dtype)
    a = _labels(cond, N, seed=2)
    c = cond.sample(a, seed=7)
    assert c.shape == (N, 6) and c.dtype == dtype
    z = ((c - cond.centre(a)) / sigma).double()
    assert z.mean(0).abs().max().item() < 0.04
    cov = torch.cov(z.T)
    assert (cov - torch.eye(6, dtype=torch.float64)).abs().max().item() < 0.06


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode", ["features", "classes"])
def test_sample_uses_the_counter_based_stream(mode, dtype):
    # c = centre + sigma eps with eps the forward-noise normals of ops.q_sample (rows offset + i of `seed`).
    N, D, sigma, seed, offset = 50, 6, 0.3, 11, 123
    cond = GMMConditioner(2, D, sigma=sigma, mode=mode, seed=4, dtype=dtype)
    a = _labels(cond, N, seed=5)
    ones = torch.ones(N, dtype=dtype)
    eps = ops.q_sample(torch.zeros(N, D, dtype=dtype), ones, ones, torch.zeros(1, D, dtype=dtype), None, "identity",
                       seed, offset, labels=torch.zeros(N, dtype=torch.int64)).x_t
    got = cond.sample(a, seed=seed, offset=offset)
    assert rel_err(got, cond.centre(a) + sigma * eps) <= tol_for(dtype, 1e-15, 3e-7)
    assert not torch.equal(got, cond.sample(a, seed=seed + 1, offset=offset))
    assert not torch.equal(got, cond.sample(a, seed=seed, offset=offset + 1))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode", ["features", "classes"])
def test_sample_is_batch_invariant(mode, dtype):
    N, chunk, seed, offset = 1000, 7, 21, 40
    cond = GMMConditioner(4, 8, mode=mode, means="random", seed=1, dtype=dtype)
    a = _labels(cond, N, seed=3)
    whole = cond.sample(a, seed=seed, offset=offset)
    parts = torch.cat([cond.sample(a[i:i + chunk], seed=seed, offset=offset + i) for i in range(0, N, chunk)])
    assert torch.equal(whole, parts)


def test_sample_seed_none_follows_torch_manual_seed():
    cond = GMMConditioner(2, 4)
    a = _attrs(30, 2, seed=1)
    torch.manual_seed(1234)
    first = cond.sample(a)
    second = cond.sample(a)
    torch.manual_seed(1234)
    assert torch.equal(cond.sample(a), first)
    assert not torch.equal(first, second)
    # an explicit generator plays the same role
    assert torch.equal(cond.sample(a, generator=gen(5)), cond.sample(a, generator=gen(5)))
    assert not torch.equal(cond.sample(a, generator=gen(5)), cond.sample(a, generator=gen(6)))


@pytest.mark.parametrize("mode", ["features", "classes"])
def test_sample_empty(mode):
    cond = GMMConditioner(3, 6, mode=mode, dtype=torch.float64)
    a = torch.zeros(0, 3, dtype=torch.int64) if mode == "features" else torch.zeros(0, dtype=torch.int64)
    for seed in (0, None):
        c = cond.sample(a, seed=seed)
        assert c.shape == (0, 6) and c.dtype == torch.float64


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16], ids=str)
def test_sample_device_and_dtype(dtype, device):
    cond = GMMConditioner(2, 4, mode="features", dtype=dtype).to(device)
    a = _attrs(16, 2, seed=1).to(device)
    c = cond.sample(a, seed=3)
    assert c.dtype == dtype and c.device.type == device and c.shape == (16, 4)
    # float16 draws are the float32 draws rounded (float64 has its own normals); CUDA matches the CPU to rounding
    ref_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    want = GMMConditioner(2, 4, dtype=ref_dtype).sample(a.cpu(), seed=3)
    assert rel_err(c.cpu(), want) <= {torch.float64: 1e-14, torch.float32: 1e-6, torch.float16: 1e-3}[dtype]


# ---------------------------------------------------------------------------------------------------
# log_prob and decode
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["features", "classes"])
def test_log_prob(mode):
    sigma = 0.7
    cond = GMMConditioner(3, 9, sigma=sigma, mode=mode, means="random", seed=2, dtype=torch.float64)
    a = _labels(cond, 40, seed=3)
    c = torch.randn(40, 9, generator=gen(4), dtype=torch.float64) * 1.5
    got = cond.log_prob(c, a)
    assert got.shape == (40,) and got.dtype == torch.float64
    mvn = torch.distributions.MultivariateNormal(cond.centre(a), covariance_matrix=sigma**2 * torch.eye(9, dtype=torch.float64))
    assert rel_err(got, mvn.log_prob(c)) <= 1e-13
    if mode == "features":
        # the sum over attributes' blocks of their own Gaussian log-densities
        blocks = sum(
            torch.distributions.Normal(cond.means[j, a[:, j]], sigma).log_prob(c[:, 3 * j:3 * j + 3]).sum(1)
            for j in range(3))
        assert rel_err(got, blocks) <= 1e-13
    # float32 inputs
    c32 = GMMConditioner(3, 9, sigma=sigma, mode=mode, means=cond.means.float(), dtype=torch.float32)
    assert rel_err(c32.log_prob(c.float(), a), mvn.log_prob(c.float().double())) <= 1e-5


@pytest.mark.parametrize("means", ["sign", "random"])
@pytest.mark.parametrize("mode", ["features", "classes"])
def test_decode(mode, means):
    cond = GMMConditioner(5, 20, sigma=0.05, mode=mode, means=means, seed=8)
    if mode == "classes":  # the check needs distinct class means
        assert torch.cdist(cond.means, cond.means).add(torch.eye(5) * 100).min() > 1
    a = _labels(cond, 300, seed=9)
    got = cond.decode(cond.centre(a))
    assert got.dtype == torch.int64 and got.shape == a.shape and torch.equal(got, a)
    assert torch.equal(cond.decode(cond.sample(a, seed=1)), a)  # small sigma: samples stay nearest their mean


@pytest.mark.parametrize("mode", ["features", "classes"])
def test_decode_is_the_nearest_mean(mode):
    # Points anywhere (not near a mean): decode must be the brute-force nearest mean.
    cond = GMMConditioner(4, 8, mode=mode, means="random", seed=3, dtype=torch.float64)
    c = 2 * torch.randn(200, 8, generator=gen(4), dtype=torch.float64)
    got = cond.decode(c)
    if mode == "classes":
        want = torch.cdist(c, cond.means).argmin(1)
    else:
        blocks = c.reshape(200, 4, 1, 2)
        want = (blocks - cond.means).norm(dim=-1).argmin(-1)
    assert torch.equal(got, want)


# ---------------------------------------------------------------------------------------------------
# NGMG loss
# ---------------------------------------------------------------------------------------------------
def _ref_features(pred, means, soft, sigma, kind, normalized):
    """Per-example NGMG loss in float64: per attribute a two-mode mixture with weights (1 - a, a)."""
    n, m = soft.shape
    b = means.shape[-1]
    y = pred.reshape(n, m, 1, b)
    sq = ((y - means) ** 2).sum(-1)  # [N, M, 2]
    w = torch.stack((1 - soft, soft), -1)
    if kind == "potential":
        c = (2 * math.pi * sigma**2) ** (-b / 2) if normalized else 1.0
        return -(c * w * torch.exp(-sq / (2 * sigma**2))).sum(-1).sum(-1)
    dens = (2 * math.pi * sigma**2) ** (-b / 2) * torch.exp(-sq / (2 * sigma**2))
    return -torch.log((w * dens).sum(-1)).sum(-1)


def _ref_classes(pred, means, w, sigma, kind, normalized):
    sq = ((pred[:, None, :] - means) ** 2).sum(-1)  # [N, K]
    d = means.shape[1]
    c = (2 * math.pi * sigma**2) ** (-d / 2)
    if kind == "potential":
        return -((c if normalized else 1.0) * w * torch.exp(-sq / (2 * sigma**2))).sum(-1)
    return -torch.log((w * c * torch.exp(-sq / (2 * sigma**2))).sum(-1))


def _near(cond, a_hard, seed, scale=1.0):
    """Predictions around the labels' centres (so that neither the potential nor its gradient vanishes)."""
    return cond.centre(a_hard) + scale * cond.sigma * torch.randn(a_hard.shape[0], cond.dim, generator=gen(seed),
                                                                   dtype=torch.float64).to(cond.dtype)


@pytest.mark.parametrize("normalized", [False, True], ids=["unnormalized", "normalized"])
@pytest.mark.parametrize("kind", KINDS)
def test_ngmg_features_matches_reference_and_op(kind, normalized):
    N, M, D, sigma = 30, 4, 12, 0.6
    cond = GMMConditioner(M, D, sigma=sigma, means="random", seed=1, dtype=torch.float64)
    hard = _attrs(N, M, seed=2)
    soft = torch.rand(N, M, generator=gen(3), dtype=torch.float64)
    pred = _near(cond, hard, seed=4)
    for a in (hard, soft):
        got = cond.ngmg_loss(pred, a, kind=kind, normalized=normalized, reduction="none")
        assert got.shape == (N,) and got.dtype == torch.float64
        want = _ref_features(pred, cond.means, a.double(), sigma, kind, normalized)
        assert rel_err(got, want) <= 1e-12
        # the same as a hand-built call of ops.ngmg_loss over all 2M modes
        weights = torch.zeros(N, M, 2 * M, dtype=torch.float64)
        for j in range(M):
            weights[:, j, 2 * j] = 1 - a[:, j].double()
            weights[:, j, 2 * j + 1] = a[:, j].double()
        op = ops.ngmg_loss(pred.reshape(N * M, 3), cond.means.reshape(2 * M, 3), weights.reshape(N * M, 2 * M),
                           sigma, reduction="none", normalized=normalized, kind=kind)
        assert rel_err(got, op.reshape(N, M).sum(1)) <= 1e-14
    if kind == "log":  # hard labels: the per-attribute mixtures collapse to the conditional density
        assert rel_err(cond.ngmg_loss(pred, hard, kind="log", reduction="none"), -cond.log_prob(pred, hard)) <= 1e-12


@pytest.mark.parametrize("normalized", [False, True], ids=["unnormalized", "normalized"])
@pytest.mark.parametrize("kind", KINDS)
def test_ngmg_classes(kind, normalized):
    N, K, D, sigma = 25, 5, 4, 0.8
    cond = GMMConditioner(K, D, sigma=sigma, mode="classes", means="random", seed=1, dtype=torch.float64)
    ids = _classes(N, K, seed=2)
    pred = _near(cond, ids, seed=3)
    got = cond.ngmg_loss(pred, ids, kind=kind, normalized=normalized, reduction="none")
    onehot = torch.nn.functional.one_hot(ids, K).double()
    assert torch.equal(got, cond.ngmg_loss(pred, onehot, kind=kind, normalized=normalized, reduction="none"))
    assert rel_err(got, _ref_classes(pred, cond.means, onehot, sigma, kind, normalized)) <= 1e-12
    soft = 0.05 + torch.rand(N, K, generator=gen(4), dtype=torch.float64)
    got = cond.ngmg_loss(pred, soft, kind=kind, normalized=normalized, reduction="none")
    assert rel_err(got, _ref_classes(pred, cond.means, soft, sigma, kind, normalized)) <= 1e-12
    op = ops.ngmg_loss(pred, cond.means, soft, sigma, reduction="none", normalized=normalized, kind=kind)
    assert torch.equal(got, op)


@pytest.mark.parametrize("mode", ["features", "classes"])
def test_ngmg_reductions_and_sigma(mode):
    cond = GMMConditioner(3, 6, sigma=0.5, mode=mode, means="random", seed=1, dtype=torch.float64)
    a = _labels(cond, 20, seed=2)
    pred = _near(cond, a, seed=3)
    rows = cond.ngmg_loss(pred, a, reduction="none")
    assert rows.shape == (20,)
    assert torch.equal(cond.ngmg_loss(pred, a, reduction="sum"), rows.sum())
    assert torch.equal(cond.ngmg_loss(pred, a), rows.mean())  # "mean" is the default
    other = GMMConditioner(3, 6, sigma=0.3, mode=mode, means=cond.means, dtype=torch.float64)
    assert torch.equal(cond.ngmg_loss(pred, a, sigma=0.3, reduction="none"), other.ngmg_loss(pred, a, reduction="none"))
    assert not torch.equal(rows, other.ngmg_loss(pred, a, reduction="none"))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", ["features", "classes"])
def test_ngmg_gradcheck(mode, kind, reduction):
    cond = GMMConditioner(2, 4, sigma=0.7, mode=mode, means="random", seed=1, dtype=torch.float64)
    hard = _labels(cond, 5, seed=2)
    if mode == "features":
        a = torch.rand(5, 2, generator=gen(3), dtype=torch.float64)  # soft labels
    else:
        a = 0.1 + torch.rand(5, 2, generator=gen(3), dtype=torch.float64)
    pred = _near(cond, hard, seed=4).requires_grad_(True)
    for labels in (hard, a):
        assert torch.autograd.gradcheck(
            lambda p: cond.ngmg_loss(p, labels, kind=kind, normalized=True, reduction=reduction), (pred,))


@pytest.mark.parametrize("mode", ["features", "classes"])
def test_ngmg_gradient_flows_float32(mode):
    cond = GMMConditioner(3, 6, mode=mode)
    a = _labels(cond, 8, seed=1)
    pred = _near(cond, a, seed=2).requires_grad_(True)
    loss = cond.ngmg_loss(pred, a)
    assert loss.dtype == torch.float32 and loss.requires_grad
    loss.backward()
    assert pred.grad is not None and pred.grad.shape == pred.shape and pred.grad.abs().sum() > 0
    # descending the potential moves predictions towards their labels' centres
    moved = pred.detach() - 0.05 * pred.grad
    centre = cond.centre(a)
    assert ((moved - centre).norm(dim=1) < (pred.detach() - centre).norm(dim=1)).all()


# ---------------------------------------------------------------------------------------------------
# attribute_classes
# ---------------------------------------------------------------------------------------------------
def test_attribute_classes():
    attrs = torch.tensor([[1, 0, 1], [0, 0, 1], [1, 0, 1], [1, 1, 0], [0, 0, 1]])
    ids, combos = attribute_classes(attrs)
    assert torch.equal(combos, torch.tensor([[0, 0, 1], [1, 0, 1], [1, 1, 0]]))
    assert torch.equal(ids, torch.tensor([1, 0, 1, 2, 0])) and ids.dtype == torch.int64
    assert torch.equal(combos[ids], attrs)
    assert torch.equal(attribute_classes(attrs.bool())[0], ids) and torch.equal(attribute_classes(attrs.float())[0], ids)
    # given combinations: ids index into them; unseen combinations get -1
    given = torch.tensor([[1, 1, 0], [0, 0, 1]])
    ids2, combos2 = attribute_classes(attrs, given)
    assert torch.equal(ids2, torch.tensor([-1, 1, -1, 0, 1])) and torch.equal(combos2, given)
    # round trip through a larger random set
    many = _attrs(500, 4, seed=1)
    ids3, combos3 = attribute_classes(many)
    assert torch.equal(combos3[ids3], many) and combos3.shape[0] == torch.unique(many, dim=0).shape[0]
    assert torch.equal(attribute_classes(many, combos3)[0], ids3)
    # empty inputs
    ids4, combos4 = attribute_classes(torch.zeros(0, 3, dtype=torch.int64))
    assert ids4.shape == (0,) and combos4.shape == (0, 3)
    assert torch.equal(attribute_classes(attrs, torch.zeros(0, 3, dtype=torch.int64))[0], torch.full((5,), -1))


# ---------------------------------------------------------------------------------------------------
# persistence
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode", ["features", "classes"])
def test_save_load(tmp_path, mode, dtype):
    cond = GMMConditioner(3, 6, sigma=0.3, mode=mode, means="random", seed=9, dtype=dtype)
    path = tmp_path / "cond.pt"
    cond.save(path)
    back = GMMConditioner.load(path)
    assert type(back) is GMMConditioner
    assert torch.equal(back.means, cond.means) and back.means.dtype == dtype
    assert (back.mode, back.num, back.dim, back.sigma) == (cond.mode, cond.num, cond.dim, cond.sigma)
    assert back.config() == cond.config() and repr(back) == repr(cond)
    a = _labels(cond, 10, seed=1)
    assert torch.equal(back.sample(a, seed=4), cond.sample(a, seed=4))
    # state_dict round trip into a fresh conditioner
    fresh = GMMConditioner(3, 6, sigma=0.3, mode=mode, dtype=dtype)
    fresh.load_state_dict(cond.state_dict())
    assert torch.equal(fresh.means, cond.means)
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a mixdiff_ext conditioner file"):
        GMMConditioner.load(tmp_path / "other.pt")


# ---------------------------------------------------------------------------------------------------
# bad inputs: each raises naming the offending argument
# ---------------------------------------------------------------------------------------------------
CTOR_BAD = {
    "num_zero": (dict(num=0), ValueError, r"num must be >= 1"),
    "num_float": (dict(num=2.0), TypeError, r"num must be an integer"),
    "num_bool": (dict(num=True), TypeError, r"num must be an integer"),
    "dim_zero": (dict(dim=0), ValueError, r"dim must be >= 1"),
    "dim_str": (dict(dim="4"), TypeError, r"dim must be an integer"),
    "indivisible": (dict(num=3, dim=4), ValueError, r"dim \(4\) must be divisible by num \(3\)"),
    "sigma_zero": (dict(sigma=0.0), ValueError, r"sigma must be positive"),
    "sigma_negative": (dict(sigma=-1.0), ValueError, r"sigma must be positive"),
    "sigma_nan": (dict(sigma=math.nan), ValueError, r"sigma must be finite"),
    "sigma_inf": (dict(sigma=math.inf), ValueError, r"sigma must be finite"),
    "sigma_str": (dict(sigma="0.5"), TypeError, r"sigma must be a real number"),
    "mode": (dict(mode="feature"), ValueError, r"mode must be one of .*got 'feature'"),
    "mode_type": (dict(mode=1), TypeError, r"mode must be a str"),
    "means_choice": (dict(means="gaussian"), ValueError, r"means must be one of .*got 'gaussian'"),
    "means_type": (dict(means=3), TypeError, r"means must be 'sign', 'random' or a tensor"),
    "means_shape": (dict(means=torch.zeros(2, 4)), ValueError, r"means must have shape \(2, 2, 2\)"),
    "means_int": (dict(means=torch.zeros(2, 2, 2, dtype=torch.int64)), TypeError, r"means must have a floating"),
    "means_nan": (dict(means=torch.full((2, 2, 2), math.nan)), ValueError, r"means contains NaN or inf"),
    "seed_float": (dict(seed=1.5), TypeError, r"seed must be an integer"),
    "dtype_int": (dict(dtype=torch.int64), TypeError, r"dtype must be a floating-point torch.dtype"),
}


@pytest.mark.parametrize("case", list(CTOR_BAD))
def test_bad_constructor_arguments(case):
    overrides, error, match = CTOR_BAD[case]
    kwargs = dict(dict(num=2, dim=4), **overrides)
    with pytest.raises(error, match=match):
        GMMConditioner(**kwargs)


def test_bad_classes_means_shape():
    with pytest.raises(ValueError, match=r"means must have shape \(3, 4\) for mode='classes'"):
        GMMConditioner(3, 4, mode="classes", means=torch.zeros(3, 2, 2))


F = GMMConditioner(2, 4, dtype=torch.float64)
C = GMMConditioner(3, 4, mode="classes", dtype=torch.float64)
P = torch.zeros(2, 4, dtype=torch.float64)
METHOD_BAD = {
    "f_a_list": (lambda: F.centre([[0, 1]]), TypeError, r"a must be a torch.Tensor"),
    "f_a_shape": (lambda: F.centre(torch.zeros(2, 3, dtype=torch.int64)), ValueError, r"a must have shape \[N, 2\]"),
    "f_a_1d": (lambda: F.centre(torch.zeros(2, dtype=torch.int64)), ValueError, r"a must have shape \[N, 2\]"),
    "f_a_values": (lambda: F.centre(torch.tensor([[0, 2]])), ValueError, r"a must contain only the values 0 and 1"),
    "f_a_minus": (lambda: F.centre(torch.tensor([[-1, 1]])), ValueError, r"a must contain only the values 0 and 1"),
    "f_a_half": (lambda: F.centre(torch.tensor([[0.5, 1.0]])), ValueError, r"a must contain only the values 0 and 1"),
    "c_a_float": (lambda: C.centre(torch.tensor([0.0, 1.0])), TypeError, r"a must be an integer tensor"),
    "c_a_bool": (lambda: C.centre(torch.tensor([True])), TypeError, r"a must be an integer tensor"),
    "c_a_2d": (lambda: C.centre(torch.zeros(2, 1, dtype=torch.int64)), ValueError, r"a must have shape \[N\]"),
    "c_a_range": (lambda: C.centre(torch.tensor([0, 3])), ValueError, r"a must lie in \[0, 3\), got values in \[0, 3\]"),
    "c_a_negative": (lambda: C.centre(torch.tensor([-1, 0])), ValueError, r"a must lie in \[0, 3\)"),
    "offset_negative": (lambda: F.sample(torch.zeros(1, 2, dtype=torch.int64), seed=0, offset=-1), ValueError,
                        r"offset must lie in"),
    "offset_float": (lambda: F.sample(torch.zeros(1, 2, dtype=torch.int64), seed=0, offset=1.0), TypeError,
                     r"offset must be an integer"),
    "seed_str": (lambda: F.sample(torch.zeros(1, 2, dtype=torch.int64), seed="1"), TypeError, r"seed must be an integer"),
    "seed_and_generator": (lambda: F.sample(torch.zeros(1, 2, dtype=torch.int64), seed=1, generator=gen(1)), ValueError,
                           r"either seed or generator"),
    "c_int": (lambda: F.log_prob(torch.zeros(2, 4, dtype=torch.int64), torch.zeros(2, 2, dtype=torch.int64)), TypeError,
              r"c must have a floating-point dtype"),
    "c_shape": (lambda: F.decode(torch.zeros(2, 5)), ValueError, r"c must have shape \[N, 4\]"),
    "c_rows": (lambda: F.log_prob(P, torch.zeros(3, 2, dtype=torch.int64)), ValueError, r"c has 2 rows but a has 3"),
    "pred_shape": (lambda: F.ngmg_loss(torch.zeros(2, 3), torch.zeros(2, 2)), ValueError, r"pred must have shape \[N, 4\]"),
    "pred_type": (lambda: F.ngmg_loss(None, torch.zeros(2, 2)), TypeError, r"pred must be a torch.Tensor"),
    "pred_rows": (lambda: F.ngmg_loss(P, torch.zeros(3, 2)), ValueError, r"pred has 2 rows but a has 3"),
    "soft_range": (lambda: F.ngmg_loss(P, torch.tensor([[0.5, 1.5], [0.0, 0.0]])), ValueError, r"a \(soft labels\) must lie in \[0, 1\]"),
    "soft_nan": (lambda: F.ngmg_loss(P, torch.tensor([[0.5, math.nan], [0.0, 0.0]])), ValueError, r"a contains NaN"),
    "soft_shape": (lambda: F.ngmg_loss(P, torch.zeros(2, 3)), ValueError, r"a must have shape \[N, 2\]"),
    "class_soft_negative": (lambda: C.ngmg_loss(P, torch.tensor([[1.0, -0.1, 0.0], [1.0, 0.0, 0.0]])), ValueError,
                            r"a \(soft class weights\) must be non-negative"),
    "class_soft_shape": (lambda: C.ngmg_loss(P, torch.ones(2, 2)), ValueError, r"a \(soft class weights\) must have shape \[N, 3\]"),
    "class_ids_range": (lambda: C.ngmg_loss(P, torch.tensor([0, 5])), ValueError, r"a must lie in \[0, 3\)"),
    "ngmg_sigma": (lambda: F.ngmg_loss(P, torch.zeros(2, 2), sigma=0.0), ValueError, r"sigma must be positive"),
    "ngmg_sigma_type": (lambda: F.ngmg_loss(P, torch.zeros(2, 2), sigma="1"), TypeError, r"sigma must be a real number"),
    "ngmg_reduction": (lambda: F.ngmg_loss(P, torch.zeros(2, 2), reduction="avg"), ValueError,
                       r"reduction must be one of .*got 'avg'"),
    "ngmg_kind": (lambda: F.ngmg_loss(P, torch.zeros(2, 2), kind="gauss"), ValueError, r"kind must be one of"),
    "attributes_type": (lambda: attribute_classes([[0, 1]]), TypeError, r"attributes must be a torch.Tensor"),
    "attributes_1d": (lambda: attribute_classes(torch.zeros(3)), ValueError, r"attributes must be 2-D"),
    "attributes_values": (lambda: attribute_classes(torch.tensor([[0, 2]])), ValueError,
                          r"attributes must contain only the values 0 and 1"),
    "combinations_shape": (lambda: attribute_classes(torch.zeros(2, 2), torch.zeros(1, 3)), ValueError,
                           r"combinations must have shape \[K, 2\]"),
    "combinations_values": (lambda: attribute_classes(torch.zeros(2, 2), torch.tensor([[0, 3]])), ValueError,
                            r"combinations must contain only the values 0 and 1"),
    "combinations_duplicates": (lambda: attribute_classes(torch.zeros(2, 2), torch.tensor([[0, 1], [0, 1]])), ValueError,
                                r"combinations must have distinct rows"),
}


@pytest.mark.parametrize("case", list(METHOD_BAD))
def test_bad_method_arguments(case):
    call, error, match = METHOD_BAD[case]
    with pytest.raises(error, match=match):
        call()


def test_device_mismatch_names_the_argument():
    # The meta device stands in for an accelerator: the checks run before any computation.
    cond = GMMConditioner(2, 4).to("meta")
    with pytest.raises(ValueError, match=r"a is on cpu but the conditioner's means are on meta"):
        cond.centre(torch.zeros(1, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"c is on cpu but the conditioner's means are on meta"):
        cond.decode(torch.zeros(1, 4))
    with pytest.raises(ValueError, match=r"pred is on cpu"):
        cond.ngmg_loss(torch.zeros(1, 4), torch.zeros(1, 2))
    with pytest.raises(ValueError, match=r"combinations are on meta but attributes are on cpu"):
        attribute_classes(torch.zeros(1, 2), torch.zeros(1, 2, device="meta"))
