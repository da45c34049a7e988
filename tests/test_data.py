"""Built-in datasets and user-data loading (mixdiff_ext.data).

Each generator is checked against the parameters its docstring documents, with statistical bounds
(a few standard errors, chi-square / KS tests at p = 1e-3) tight enough that a wrong mean, width, weight
or profile fails; load_array is checked by round trips through every format and by every error case.
All samples come from fixed seeds, so every run sees the same numbers.
"""
from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from mixdiff_ext import data

SYNTHETIC = {  # name -> (small-n call, feature shape)
    "gmm1d": (lambda **kw: data.gmm1d(n=50, **kw), (1,)),
    "ring2d": (lambda **kw: data.ring2d(n=50, **kw), (2,)),
    "moons": (lambda **kw: data.moons(n=50, **kw), (2,)),
    "anisotropic": (lambda **kw: data.anisotropic(n=50, **kw), (16,)),
    "arrivals": (lambda **kw: data.arrivals(n=50, **kw), (48,)),
}


# --- shared behaviour ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SYNTHETIC))
def test_shape_dtype_and_seeding(name):
    fn, feat = SYNTHETIC[name]
    a = fn(seed=3)
    assert a.shape == (50, *feat) and a.dtype == torch.float32
    assert torch.equal(a, fn(seed=3))
    assert not torch.equal(a, fn(seed=4))
    assert fn(seed=3, dtype=torch.float64).dtype == torch.float64


@pytest.mark.parametrize("name", sorted(SYNTHETIC))
def test_does_not_touch_global_rng(name):
    fn, _ = SYNTHETIC[name]
    torch.manual_seed(123)
    np.random.seed(123)
    want_t, want_np = torch.rand(3), np.random.rand(3)
    torch.manual_seed(123)
    np.random.seed(123)
    fn(seed=0)
    assert torch.equal(torch.rand(3), want_t) and np.array_equal(np.random.rand(3), want_np)


@pytest.mark.parametrize("name", sorted(SYNTHETIC))
def test_empty_and_bad_arguments(name):
    fn = getattr(data, name)
    _, feat = SYNTHETIC[name]
    assert fn(n=0).shape == (0, *feat)
    with pytest.raises(ValueError, match=r"\bn must be an int >= 0"):
        fn(n=-1)
    with pytest.raises(TypeError, match=r"\bn must be an int"):
        fn(n=10.0)
    with pytest.raises(TypeError, match=r"\bn must be an int"):
        fn(n=True)
    with pytest.raises(ValueError, match="seed"):
        fn(n=5, seed=-1)
    with pytest.raises(TypeError, match="seed"):
        fn(n=5, seed="0")
    with pytest.raises(TypeError, match="dtype"):
        fn(n=5, dtype=torch.int64)


def test_other_argument_checks():
    with pytest.raises(ValueError, match="dim"):
        data.anisotropic(n=5, dim=0)
    with pytest.raises(ValueError, match="clusters"):
        data.anisotropic(n=5, dim=2, clusters=5)
    with pytest.raises(ValueError, match="clusters"):
        data.anisotropic(n=5, clusters=0)
    with pytest.raises(ValueError, match="radius"):
        data.ring2d(n=5, radius=-1.0)
    with pytest.raises(ValueError, match="std"):
        data.ring2d(n=5, std=float("nan"))
    with pytest.raises(ValueError, match="modes"):
        data.ring2d(n=5, modes=0)
    with pytest.raises(TypeError, match="modes"):
        data.ring2d(n=5, modes=2.5)
    with pytest.raises(ValueError, match="noise"):
        data.moons(n=5, noise=-0.1)
    with pytest.raises(TypeError, match="return_labels"):
        data.digits(return_labels=1)


# --- gmm1d ---------------------------------------------------------------------------------------------
def _gmm_cdf(x):
    w, m, s = (t.numpy() for t in data.gmm1d_params())
    return sum(wk * stats.norm.cdf(x, mk, sk) for wk, mk, sk in zip(w, m, s))


def _gmm_side_moments(lo: float, hi: float) -> tuple[float, float, float]:
    """(probability, mean, std) of the true gmm1d density restricted to [lo, hi]."""
    w, m, s = (t.numpy() for t in data.gmm1d_params())

    def pdf(x):
        return sum(wk * stats.norm.pdf(x, mk, sk) for wk, mk, sk in zip(w, m, s))

    p = integrate.quad(pdf, lo, hi)[0]
    mean = integrate.quad(lambda x: x * pdf(x), lo, hi)[0] / p
    var = integrate.quad(lambda x: (x - mean) ** 2 * pdf(x), lo, hi)[0] / p
    return p, mean, math.sqrt(var)


def test_gmm1d_params():
    w, m, s = data.gmm1d_params()
    assert w.tolist() == [0.4, 0.6] and m.tolist() == [-3.0, 3.0] and s.tolist() == [0.6, 1.0]
    assert (w.tolist(), m.tolist(), s.tolist()) == (list(data.GMM1D_WEIGHTS), list(data.GMM1D_MEANS),
                                                    list(data.GMM1D_STDS))


def test_gmm1d_matches_documented_density():
    n = 40000
    x, comp = data.gmm1d(n=n, seed=1, dtype=torch.float64, return_labels=True)
    x = x[:, 0].numpy()
    assert stats.kstest(x, _gmm_cdf).pvalue > 1e-3
    # Power check: the same test rejects a sample whose modes are off by 0.1.
    assert stats.kstest(x + np.where(x < 0, -0.1, 0.1), _gmm_cdf).pvalue < 1e-6
    for side, (lo, hi) in ((x < 0, (-np.inf, 0.0)), (x >= 0, (0.0, np.inf))):
        p, mean, std = _gmm_side_moments(lo, hi)
        k = side.sum()
        assert abs(k - n * p) < 4 * math.sqrt(n * p * (1 - p))
        assert abs(x[side].mean() - mean) < 4 * std / math.sqrt(k)
        assert abs(x[side].std() - std) < 4 * std / math.sqrt(2 * k)
    # Labels are the components: each one's draws have its documented mean and std.
    for k_, (mu, sd) in enumerate(zip(data.GMM1D_MEANS, data.GMM1D_STDS)):
        xs = x[comp.numpy() == k_]
        assert abs(xs.mean() - mu) < 4 * sd / math.sqrt(len(xs))
        assert abs(xs.std() - sd) < 4 * sd / math.sqrt(2 * len(xs))


# --- ring2d --------------------------------------------------------------------------------------------
def test_ring2d_geometry_and_mode_balance():
    n, radius, std = 16000, 8.0, 0.2
    x, mode = data.ring2d(n=n, seed=2, dtype=torch.float64, return_labels=True)
    centers = data.ring2d_centers(8, radius)
    assert torch.allclose(centers.norm(dim=1), torch.full((8,), radius, dtype=torch.float64))
    r = x.norm(dim=1)
    assert (r - radius).abs().max() < 6 * std
    assert abs(r.mean().item() - radius) < 4 * std / math.sqrt(n) + std**2 / (2 * radius)
    # Each point's nearest centre is its mode (they are 30 std apart), and the modes are equally likely.
    assert torch.equal(torch.cdist(x, centers).argmin(dim=1), mode)
    counts = torch.bincount(mode, minlength=8).numpy()
    assert stats.chisquare(counts).pvalue > 1e-3
    resid = x - centers[mode]
    assert resid.mean(dim=0).abs().max() < 4 * std / math.sqrt(n / 8)
    assert torch.allclose(resid.std(dim=0), torch.full((2,), std, dtype=torch.float64), rtol=0.03)


def test_ring2d_other_modes():
    x, mode = data.ring2d(n=3000, seed=0, radius=5.0, std=0.1, modes=3, return_labels=True)
    assert set(mode.tolist()) == {0, 1, 2}
    assert (x.norm(dim=1) - 5.0).abs().max() < 0.6


# --- moons ---------------------------------------------------------------------------------------------
def test_moons_noise_free_points_lie_on_the_arcs():
    x, moon = data.moons(n=2000, seed=0, noise=0.0, dtype=torch.float64, return_labels=True)
    up, lo = x[moon == 0], x[moon == 1]
    assert torch.allclose(up.norm(dim=1), torch.ones(len(up), dtype=torch.float64))
    assert (up[:, 1] >= 0).all()
    shifted = lo - torch.tensor([1.0, 0.5], dtype=torch.float64)
    assert torch.allclose(shifted.norm(dim=1), torch.ones(len(lo), dtype=torch.float64))
    assert (lo[:, 1] <= 0.5).all()
    # Angles are uniform on [0, pi].
    assert stats.kstest(torch.atan2(up[:, 1], up[:, 0]).numpy(), stats.uniform(0, math.pi).cdf).pvalue > 1e-3


def test_moons_noise_and_balance():
    n, noise = 20000, 0.05
    x, moon = data.moons(n=n, seed=5, noise=noise, dtype=torch.float64, return_labels=True)
    assert abs(moon.sum().item() - n / 2) < 4 * math.sqrt(n / 4)
    # With noise << 1 the distance to the moon's circle is ~ N(0, noise^2) (its radial component).
    centre = torch.where((moon == 0).unsqueeze(1), torch.zeros(2, dtype=torch.float64),
                         torch.tensor([1.0, 0.5], dtype=torch.float64))
    d = (x - centre).norm(dim=1) - 1.0
    assert abs(d.mean().item()) < 4 * noise / math.sqrt(n) + noise**2
    assert abs(d.std().item() / noise - 1) < 0.03


# --- anisotropic ---------------------------------------------------------------------------------------
def test_anisotropic_params_documented():
    w, means, covs = data.anisotropic_params(16, 4)
    assert torch.allclose(w, torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64))
    assert torch.allclose(means.norm(dim=1), torch.full((4,), 10.0, dtype=torch.float64))
    dist = torch.cdist(means, means)[~torch.eye(4, dtype=torch.bool)]
    assert torch.allclose(dist, torch.full_like(dist, 10 * math.sqrt(2)))
    eig = torch.linalg.eigvalsh(covs)  # ascending
    scale = 0.5 * 3.0 ** (torch.arange(4, dtype=torch.float64) / 3)
    assert torch.allclose(eig[:, -1], scale**2) and torch.allclose(eig[:, 0], (scale / 4) ** 2)
    # Distinct covariances: not only in scale but in orientation.
    unit = covs / covs.diagonal(dim1=1, dim2=2).sum(-1)[:, None, None]
    for i in range(4):
        for j in range(i):
            assert (unit[i] - unit[j]).norm() > 0.5 * unit[i].norm()
    # 2 * dim clusters use both signs of each axis.
    _, m8, _ = data.anisotropic_params(4, 8)
    assert torch.allclose(m8[:4], -m8[4:])


def test_anisotropic_samples_match_params():
    n = 24000
    x, comp = data.anisotropic(n=n, seed=7, dtype=torch.float64, return_labels=True)
    w, means, covs = data.anisotropic_params(16, 4)
    counts = torch.bincount(comp, minlength=4).numpy()
    assert stats.chisquare(counts, n * w.numpy()).pvalue > 1e-3
    # Well separated: every point's nearest centre is its own.
    assert torch.equal(torch.cdist(x, means).argmin(dim=1), comp)
    for k in range(4):
        xs = x[comp == k]
        emp = torch.cov(xs.T)
        # With n_k >= 2400 draws the sample covariance is within a few percent (Frobenius, relative) of
        # the truth: 0.1 is loose, yet far below the distance to any other cluster's covariance.
        errs = [((emp - covs[j]).norm() / covs[j].norm()).item() for j in range(4)]
        assert errs[k] < 0.1 and min(e for j, e in enumerate(errs) if j != k) > 0.5
        assert (xs.mean(0) - means[k]).norm() < 6 * math.sqrt(covs[k].trace().item() / len(xs))


# --- digits --------------------------------------------------------------------------------------------
def test_digits():
    images, labels = data.digits(return_labels=True)
    assert images.shape == (1797, 1, 8, 8) and images.dtype == torch.float32
    assert labels.shape == (1797,) and labels.dtype == torch.int64
    assert images.min().item() == -1.0 and images.max().item() == 1.0
    # 17 levels in steps of 1/8 (the 0..16 counts of the original).
    assert torch.equal(images * 8, torch.round(images * 8))
    assert sorted(labels.unique().tolist()) == list(range(10))
    assert torch.bincount(labels).min() >= 170
    assert torch.equal(data.digits(), images)
    assert data.digits(dtype=torch.float64).dtype == torch.float64


# --- arrivals ------------------------------------------------------------------------------------------
def test_arrivals_structure():
    n = 2000
    x, info = data.arrivals(n=n, seed=0, dtype=torch.float64, return_info=True)
    dow, doy = info["day_of_week"], info["day_of_year"]
    assert dow.dtype == doy.dtype == torch.int64
    assert dow[:8].tolist() == [0, 1, 2, 3, 4, 5, 6, 0] and doy[364:367].tolist() == [364, 0, 1]
    assert (x >= 0).all() and torch.equal(x, x.round())

    mean = data.arrivals_intensity(dow, doy)
    season = 1 + 0.25 * torch.cos(2 * math.pi * (doy.double() - 15) / 365)
    weekend = dow >= 5
    # Deseasonalised daily totals: weekdays ~574, weekends ~274 (documented), weekdays busier.
    level = x.sum(1) / season
    wd, we = level[~weekend].mean().item(), level[weekend].mean().item()
    assert abs(wd / 574 - 1) < 0.03 and abs(we / 274 - 1) < 0.03 and wd > 1.8 * we

    # Intraday shape: weekdays peak at 10:00 (intervals 19/20) and 14:30 (28/29) with a dip between;
    # weekends have one peak around 13:00 (interval 25/26) and no morning peak.
    wd_curve = (x[~weekend] / season[~weekend, None]).mean(0)
    we_curve = (x[weekend] / season[weekend, None]).mean(0)
    assert wd_curve.argmax().item() in (19, 20)
    assert wd_curve[26:32].argmax().item() + 26 in (28, 29)
    assert wd_curve[24] < 0.85 * min(wd_curve[19:21].max(), wd_curve[28:30].max())
    assert we_curve.argmax().item() in range(23, 29)
    assert we_curve[19:21].max() < wd_curve[19:21].max() / 2
    # ... and both match the documented profiles (mean over ~1400 / ~570 days: errors of a few percent).
    zero = torch.zeros(1, dtype=torch.int64)
    for curve, day in ((wd_curve, 0), (we_curve, 6)):
        profile = data.arrivals_intensity(zero + day, zero + 15)[0] / 1.25  # season(15) = 1.25
        busy = profile > 5
        assert ((curve[busy] - profile[busy]).abs() / profile[busy]).max() < 0.06

    # Season: regressing normalised totals on cos(2 pi (doy - 15) / 365) recovers the amplitude 0.25,
    # and January days are busier than July days.
    ratio = x.sum(1) / mean.sum(1)
    c = torch.cos(2 * math.pi * (doy.double() - 15) / 365)
    slope = ((c - c.mean()) * (ratio * season)).sum() / ((c - c.mean()) ** 2).sum()
    assert abs(slope.item() - 0.25) < 0.03
    jan, jul = (doy < 31) & ~weekend, (doy >= 181) & (doy < 212) & ~weekend
    assert x[jan].sum(1).mean() > 1.4 * x[jul].sum(1).mean()

    # Overdispersion: Var(total / mean) ~ Var(G) + 1/mean = 1/20 + ~0.003; Poisson alone would give ~0.003.
    assert abs(ratio.mean().item() - 1) < 0.02
    assert 0.04 < ratio.var().item() < 0.065


def test_arrivals_intensity_checks():
    with pytest.raises(ValueError, match="day_of_week"):
        data.arrivals_intensity(torch.tensor([7]), torch.tensor([0]))
    with pytest.raises(TypeError, match="integer"):
        data.arrivals_intensity(torch.tensor([0.0]), torch.tensor([0]))


# --- shapes --------------------------------------------------------------------------------------------
def _binary_index(attrs: torch.Tensor) -> torch.Tensor:
    """Row index into shapes_combinations(): 8 shape + 4 size + 2 position + fill."""
    return attrs @ torch.tensor([8, 4, 2, 1])


def _shape_stats(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image statistics of shapes images [n, 1, 16, 16] that read each attribute off the pixels."""
    x = x[:, 0].double()
    m = (x + 1) / 2  # k * coverage, 0 on the background
    total = m.sum((1, 2))
    grid = torch.arange(16, dtype=torch.float64)
    cx, cy = (m.sum(1) * grid).sum(1) / total, (m.sum(2) * grid).sum(1) / total
    dx, dy = grid.view(1, 1, 16) - cx.view(-1, 1, 1), grid.view(1, 16, 1) - cy.view(-1, 1, 1)

    def mean(f):
        return (m * f).sum((1, 2)) / total

    m2 = (mean(dx**2) + mean(dy**2)) / 2
    # Fourth moments along the diagonals minus along the axes, over m2^2: 0 for anything rotation
    # invariant (a circle), 0.6 for a solid square (sum of two uniforms vs one uniform).
    anisotropy = ((mean((dx + dy) ** 4) + mean((dx - dy) ** 4)) / 8 - (mean(dx**4) + mean(dy**4)) / 2) / m2**2
    return {
        "area": total / m.amax((1, 2)),  # foreground area in px (coverage summed, intensity divided out)
        "cx": cx,
        "cy": cy,
        "anisotropy": anisotropy,
        "centre": x[torch.arange(len(x)), cy.round().long(), cx.round().long()],  # pixel nearest the centroid
        "peak": x.amax((1, 2)),
    }


def test_shapes_output_and_seeding():
    x, a = data.shapes(n=300, seed=3)
    assert x.shape == (300, 1, 16, 16) and x.dtype == torch.float32
    assert a.shape == (300, 4) and a.dtype == torch.int64 and set(a.unique().tolist()) == {0, 1}
    assert x.min().item() == -1.0 and x.max().item() <= 1.0
    # The background is exactly -1 and covers most of every image: a shape (at most 9.9 px across, with a
    # half-pixel anti-aliased rim) touches at most 11 x 11 pixels.
    assert ((x == -1).sum((1, 2, 3)) >= 256 - 121).all()
    x2, a2 = data.shapes(n=300, seed=3)
    assert torch.equal(x, x2) and torch.equal(a, a2)
    x3, a3 = data.shapes(n=300, seed=4)
    assert not torch.equal(x, x3) and not torch.equal(a, a3)
    assert torch.equal(data.shapes(n=300, seed=3, return_attributes=False), x)
    # One row of draws per image: the first m of n images are the images for n = m.
    x4, a4 = data.shapes(n=100, seed=3)
    assert torch.equal(x4, x[:100]) and torch.equal(a4, a[:100])
    x64, a64 = data.shapes(n=300, seed=3, dtype=torch.float64)
    assert x64.dtype == torch.float64 and torch.equal(a64, a) and torch.equal(x64.float(), x)
    assert data.shapes(seed=0, return_attributes=False).shape == (10000, 1, 16, 16)  # default n


def test_shapes_empty_and_global_rng():
    x, a = data.shapes(n=0)
    assert x.shape == (0, 1, 16, 16) and a.shape == (0, 4) and a.dtype == torch.int64
    x, a = data.shapes(attributes=torch.zeros(0, 4, dtype=torch.int64))
    assert x.shape == (0, 1, 16, 16) and a.shape == (0, 4)
    torch.manual_seed(123)
    want = torch.rand(3)
    torch.manual_seed(123)
    data.shapes(n=50, seed=0)
    data.shapes_split(20, 10, seed=0)
    assert torch.equal(torch.rand(3), want)


def test_shapes_argument_errors():
    with pytest.raises(ValueError, match=r"\bn must be an int >= 0"):
        data.shapes(n=-1)
    with pytest.raises(TypeError, match=r"\bn must be an int"):
        data.shapes(n=10.0)
    with pytest.raises(TypeError, match=r"\bn must be an int"):
        data.shapes(n=True)
    with pytest.raises(ValueError, match="seed"):
        data.shapes(n=5, seed=-1)
    with pytest.raises(ValueError, match="seed"):
        data.shapes(n=5, seed=2**63)
    with pytest.raises(TypeError, match="seed"):
        data.shapes(n=5, seed="0")
    with pytest.raises(TypeError, match="dtype"):
        data.shapes(n=5, dtype=torch.int64)
    with pytest.raises(TypeError, match="return_attributes"):
        data.shapes(n=5, return_attributes=1)
    with pytest.raises(TypeError, match="attributes must hold integers or bools"):
        data.shapes(attributes=torch.zeros(2, 4))
    with pytest.raises(TypeError, match="attributes must be a tensor"):
        data.shapes(attributes="0101")
    with pytest.raises(ValueError, match=r"attributes must have shape \[rows, 4\].*got \(2, 3\)"):
        data.shapes(attributes=torch.zeros(2, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"attributes must have shape \[rows, 4\].*got \(4,\)"):
        data.shapes(attributes=torch.zeros(4, dtype=torch.int64))
    with pytest.raises(ValueError, match="attributes must hold only 0 and 1, got 2"):
        data.shapes(attributes=torch.tensor([[0, 1, 0, 1], [0, 2, 0, 0]]))
    with pytest.raises(ValueError, match="attributes must hold only 0 and 1, got -1"):
        data.shapes(attributes=[[0, 1, 0, -1]])
    with pytest.raises(ValueError, match="n = 5 does not match attributes, which has 2 rows"):
        data.shapes(n=5, attributes=torch.zeros(2, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="attributes or combinations, not both"):
        data.shapes(attributes=torch.zeros(2, 4, dtype=torch.int64), combinations=data.shapes_combinations())
    with pytest.raises(ValueError, match=r"combinations must have at least 1 row"):
        data.shapes(n=5, combinations=torch.zeros(0, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="combinations has duplicate rows"):
        data.shapes(n=5, combinations=[[0, 1, 0, 1], [1, 1, 0, 0], [0, 1, 0, 1]])
    with pytest.raises(ValueError, match="combinations must hold only 0 and 1"):
        data.shapes(n=5, combinations=[[0, 1, 0, 3]])
    with pytest.raises(ValueError, match=r"combinations must have shape \[rows, 4\]"):
        data.shapes(n=5, combinations=[[0, 1, 0]])
    with pytest.raises(TypeError, match="combinations must hold integers"):
        data.shapes(n=5, combinations=[[0.0, 1.0, 0.0, 1.0]])


def test_shapes_rendering_does_not_depend_on_chunking(monkeypatch):
    x, a = data.shapes(n=300, seed=9, dtype=torch.float64)
    monkeypatch.setattr(data, "_SHAPES_CHUNK", 7)
    x7, a7 = data.shapes(n=300, seed=9, dtype=torch.float64)
    assert torch.equal(x7, x) and torch.equal(a7, a)


def test_shapes_attributes_as_given():
    # Bools, lists and numpy arrays are accepted; the attributes come back as a new int64 tensor.
    b = torch.tensor([[True, False, True, False], [False, True, False, True]])
    x, a = data.shapes(attributes=b, seed=1)
    assert x.shape == (2, 1, 16, 16) and a.dtype == torch.int64 and torch.equal(a, b.long())
    assert torch.equal(data.shapes(attributes=b.long().tolist(), seed=1)[0], x)
    assert torch.equal(data.shapes(n=2, attributes=b.long().numpy(), seed=1)[0], x)
    given = torch.tensor([[1, 1, 1, 1]])
    assert data.shapes(attributes=given)[1] is not given


def test_shapes_render_every_attribute():
    combos = data.shapes_combinations()
    per = 250
    x, a = data.shapes(attributes=combos.repeat_interleave(per, dim=0), seed=5, dtype=torch.float64)
    s = _shape_stats(x)
    group = {tuple(c.tolist()): slice(per * i, per * (i + 1)) for i, c in enumerate(combos)}
    for (shape, size, position, fill), g in group.items():
        assert torch.equal(a[g], torch.tensor([[shape, size, position, fill]]).expand(per, 4))
        # Position: the centroid lies in the documented range (4.5 or 10.5, +-1 px) for the side.
        cx = s["cx"][g]
        assert ((cx > 3.4) & (cx < 5.6)).all() if position == 0 else ((cx > 9.4) & (cx < 11.6)).all()
        # Fill: the pixel nearest the centre is lit (>= 2 * 0.7 - 1) for solid shapes, dark in outlines.
        assert (s["centre"][g] >= 0.39).all() if fill == 0 else (s["centre"][g] < -0.6).all()
        # Shape: squares are anisotropic (documented 0.6 for a solid square), circles are not.
        assert (s["anisotropy"][g] > 0.4).all() if shape == 0 else (s["anisotropy"][g].abs() < 0.25).all()
        # Intensity: solid shapes reach 2 k - 1 with k ~ U(0.7, 1), over the whole range.
        if fill == 0:
            peak = s["peak"][g]
            assert peak.min() > 0.39 and peak.min() < 0.45 and peak.max() > 0.95
    # Size: for every (shape, position, fill), every large shape has a larger area than every small one.
    for shape in (0, 1):
        for position in (0, 1):
            for fill in (0, 1):
                small = s["area"][group[(shape, 0, position, fill)]]
                large = s["area"][group[(shape, 1, position, fill)]]
                assert large.min() > 1.15 * small.max()
    # Solid areas match the documented geometry: (2 h)^2 for squares, pi h^2 for circles, h = 2.5 / 4.5
    # on average (the +-10% jitter averages out to within 1%).
    for shape, size, want in ((0, 0, 25.0), (0, 1, 81.0), (1, 0, math.pi * 2.5**2), (1, 1, math.pi * 4.5**2)):
        area = s["area"][group[(shape, size, 0, 0)]]
        assert abs(area.mean().item() / want - 1) < 0.03
    # Vertical position varies over most of the image (more for small shapes).
    cy_small = s["cy"][a[:, 1] == 0]
    assert cy_small.min() < 3 and cy_small.max() > 12


def test_shapes_counterfactual_attributes():
    # The nuisance draws come first and do not depend on the attributes: re-rendering the drawn
    # attributes with the same seed gives the same images, and flipping "position" moves the shape
    # sideways only.
    x, a = data.shapes(n=200, seed=8, dtype=torch.float64)
    assert torch.equal(data.shapes(attributes=a, seed=8, dtype=torch.float64)[0], x)
    flipped = a.clone()
    flipped[:, 2] = 1 - flipped[:, 2]
    xf, _ = data.shapes(attributes=flipped, seed=8, dtype=torch.float64)
    s, sf = _shape_stats(x), _shape_stats(xf)
    shift = (sf["cx"] - s["cx"]) * torch.where(a[:, 2] == 0, 1.0, -1.0).double()
    assert ((shift > 3.5) & (shift < 8.5)).all()
    assert (sf["cy"] - s["cy"]).abs().max() < 0.1
    solid = a[:, 3] == 0
    assert torch.allclose(sf["peak"][solid], s["peak"][solid])  # same intensity


def test_shapes_attributes_uniform_over_combinations():
    n = 16000
    _, a = data.shapes(n=n, seed=11)
    counts = torch.bincount(_binary_index(a), minlength=16).numpy()
    assert len(counts) == 16 and stats.chisquare(counts).pvalue > 1e-3
    # Power check: the same test rejects counts with one combination 20% over (about 5 standard errors).
    skewed = counts.astype(float)
    skewed[0] *= 1.2
    assert stats.chisquare(skewed, np.full(16, skewed.sum() / 16)).pvalue < 1e-3
    # A restricted set: only its rows, each equally often.
    allowed = torch.tensor([[1, 0, 0, 1], [0, 1, 1, 0], [1, 1, 1, 1]])
    _, a = data.shapes(n=6000, seed=12, combinations=allowed)
    idx = _binary_index(a)
    assert set(idx.unique().tolist()) == set(_binary_index(allowed).tolist())
    assert stats.chisquare(torch.bincount(idx, minlength=16)[_binary_index(allowed)].numpy()).pvalue > 1e-3
    _, a = data.shapes(n=50, seed=13, combinations=[[0, 1, 1, 0]])
    assert torch.equal(a, torch.tensor([[0, 1, 1, 0]]).expand(50, 4))


def test_shapes_combinations_and_constants():
    combos = data.shapes_combinations()
    assert combos.shape == (16, 4) and combos.dtype == torch.int64
    assert torch.equal(_binary_index(combos), torch.arange(16))
    assert data.SHAPES_ATTRIBUTES == ("shape", "size", "position", "fill")
    assert data.SHAPES_VALUES == {"shape": ("square", "circle"), "size": ("small", "large"),
                                  "position": ("left", "right"), "fill": ("solid", "outline")}
    assert list(data.SHAPES_VALUES) == list(data.SHAPES_ATTRIBUTES)


def test_shapes_held_out_keeps_every_value_and_pair():
    held = torch.tensor(data.SHAPES_HELD_OUT)
    assert held.shape == (4, 4) and len(torch.unique(held, dim=0)) == 4
    combos = data.shapes_combinations()
    seen = combos[~(combos.unsqueeze(1) == held.unsqueeze(0)).all(2).any(1)]
    assert len(seen) == 12
    # Every value of every attribute, every value pair of two attributes and every triple of three
    # still occurs among the seen combinations (only the full 4-way combinations are new).
    for r in (1, 2, 3):
        for cols in itertools.combinations(range(4), r):
            got = {tuple(row) for row in seen[:, list(cols)].tolist()}
            assert len(got) == 2**r, (cols, got)
    # ... which a careless choice would break: holding out all four combinations with shape = square,
    # size = small loses that pair.
    bad = combos[(combos[:, 0] == 0) & (combos[:, 1] == 0)]
    rest = combos[~((combos[:, 0] == 0) & (combos[:, 1] == 0))]
    assert len(bad) == 4 and (0, 0) not in {tuple(r) for r in rest[:, :2].tolist()}


def test_shapes_split():
    split = data.shapes_split(1200, 400, seed=1)
    assert isinstance(split, data.ShapesSplit)
    held = torch.tensor(data.SHAPES_HELD_OUT)
    held_idx = set(_binary_index(held).tolist())
    assert set(_binary_index(split.held_out).tolist()) == held_idx and len(split.held_out) == 4
    assert set(_binary_index(split.seen).tolist()) == set(range(16)) - held_idx
    assert torch.equal(_binary_index(split.seen), _binary_index(split.seen).sort().values)  # binary order
    assert split.train_images.shape == (1200, 1, 16, 16) and split.train_attributes.shape == (1200, 4)
    assert split.test_images.shape == (400, 1, 16, 16) and split.test_attributes.shape == (400, 4)
    train_idx, test_idx = _binary_index(split.train_attributes), _binary_index(split.test_attributes)
    assert not held_idx & set(train_idx.tolist())
    assert set(test_idx.tolist()) == held_idx  # only held-out ones, all of them
    assert set(train_idx.tolist()) == set(range(16)) - held_idx
    # The images render their attributes (position, as a spot check).
    for images, attrs in ((split.train_images, split.train_attributes),
                          (split.test_images, split.test_attributes)):
        assert torch.equal(_shape_stats(images)["cx"] > 7.5, attrs[:, 2] == 1)
    # Deterministic; each part independent of the other's size (and the first m of n images are the
    # images for m); the seed changes both.
    again = data.shapes_split(50, 400, seed=1)
    assert torch.equal(again.test_images, split.test_images)
    assert torch.equal(again.train_images, split.train_images[:50])
    assert torch.equal(again.train_attributes, split.train_attributes[:50])
    other = data.shapes_split(50, 400, seed=2)
    assert not torch.equal(other.test_images, split.test_images)
    assert not torch.equal(other.train_images, split.train_images[:50])
    # Train and test are different streams: the same position draws would give equal centroids.
    cy_train, cy_test = (_shape_stats(images[:20])["cy"] for images in (split.train_images, split.test_images))
    assert not torch.allclose(cy_train, cy_test, atol=0.5)
    assert split.train_images.dtype == torch.float32
    assert data.shapes_split(3, 2, dtype=torch.float64).test_images.dtype == torch.float64
    # A custom held-out set.
    custom = data.shapes_split(300, 30, seed=0, held_out=[[1, 1, 1, 1]])
    assert len(custom.seen) == 15 and custom.held_out.tolist() == [[1, 1, 1, 1]]
    assert (custom.test_attributes == 1).all() and not (custom.train_attributes == 1).all(1).any()


def test_shapes_split_argument_errors():
    with pytest.raises(ValueError, match="n_train must be an int >= 0"):
        data.shapes_split(-1, 10)
    with pytest.raises(TypeError, match="n_test must be an int"):
        data.shapes_split(10, 2.0)
    with pytest.raises(ValueError, match="seed"):
        data.shapes_split(10, 10, seed=-3)
    with pytest.raises(ValueError, match="held_out must leave at least one combination seen"):
        data.shapes_split(10, 10, held_out=data.shapes_combinations())
    with pytest.raises(ValueError, match="held_out must have at least 1 row"):
        data.shapes_split(10, 10, held_out=())
    with pytest.raises(ValueError, match="held_out has duplicate rows"):
        data.shapes_split(10, 10, held_out=[[0, 0, 0, 1], [0, 0, 0, 1]])
    with pytest.raises(ValueError, match="held_out must hold only 0 and 1"):
        data.shapes_split(10, 10, held_out=[[0, 0, 0, 5]])


def test_shapes_registry():
    assert torch.equal(data.get_dataset("shapes", n=20, seed=1), data.shapes(n=20, seed=1)[0])
    assert data.get_dataset("shapes", n=0).shape == (0, 1, 16, 16)
    with pytest.raises(ValueError, match="return_attributes"):
        data.get_dataset("shapes", n=5, return_attributes=True)


# --- registry ------------------------------------------------------------------------------------------
def test_registry():
    assert set(data.DATASETS) == {"gmm1d", "ring2d", "moons", "anisotropic", "digits", "arrivals", "shapes"}
    assert torch.equal(data.get_dataset("ring2d", n=20, seed=1), data.ring2d(n=20, seed=1))
    assert data.get_dataset("digits").shape == (1797, 1, 8, 8)
    with pytest.raises(ValueError, match=r"unknown dataset 'cifar10'; valid names: anisotropic, arrivals"):
        data.get_dataset("cifar10")
    with pytest.raises(ValueError, match="return_labels"):
        data.get_dataset("digits", return_labels=True)
    with pytest.raises(TypeError, match="name"):
        data.get_dataset(3)


# --- load_array: round trips ---------------------------------------------------------------------------
def _arr(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape)


def test_load_npy_2d_3d_4d(tmp_path):
    for shape, want in (((5, 3), (5, 3)), ((4, 6, 7), (4, 1, 6, 7)), ((2, 3, 4, 4), (2, 3, 4, 4))):
        a = _arr(*shape)
        p = tmp_path / f"a{len(shape)}.npy"
        np.save(p, a)
        t = data.load_array(p)
        assert t.shape == want and t.dtype == torch.float32
        assert torch.equal(t.reshape(shape), torch.from_numpy(a).float())
    # Integers and big-endian floats load too; float64 keeps full precision.
    np.save(tmp_path / "i.npy", np.arange(6, dtype=np.int32).reshape(3, 2))
    assert data.load_array(tmp_path / "i.npy").tolist() == [[0, 1], [2, 3], [4, 5]]
    np.save(tmp_path / "be.npy", _arr(3, 2).astype(">f8"))
    assert torch.equal(data.load_array(str(tmp_path / "be.npy"), dtype=torch.float64),
                       torch.from_numpy(_arr(3, 2)))


def test_load_npz_key_rule(tmp_path):
    a, b = _arr(4, 2, seed=1), _arr(4, 2, seed=2)
    np.savez(tmp_path / "one.npz", whatever=a)
    assert torch.equal(data.load_array(tmp_path / "one.npz", torch.float64), torch.from_numpy(a))
    np.savez(tmp_path / "x.npz", labels=b, x=a, data=b)
    assert torch.equal(data.load_array(tmp_path / "x.npz", torch.float64), torch.from_numpy(a))
    np.savez(tmp_path / "data.npz", labels=b, data=a)
    assert torch.equal(data.load_array(tmp_path / "data.npz", torch.float64), torch.from_numpy(a))
    np.savez(tmp_path / "two.npz", u=a, v=b)
    assert torch.equal(data.load_array(tmp_path / "two.npz", torch.float64, key="v"), torch.from_numpy(b))
    path = re.escape(str(tmp_path / "two.npz"))
    with pytest.raises(ValueError, match=path + r".*ambiguous.*\['u', 'v'\]"):
        data.load_array(tmp_path / "two.npz")
    with pytest.raises(ValueError, match=path + r".*no array named 'w'.*\['u', 'v'\]"):
        data.load_array(tmp_path / "two.npz", key="w")


def test_load_csv(tmp_path):
    p = tmp_path / "h.csv"
    p.write_text("feat_a, feat_b,feat_c\n1, 2.5, -3\n4e-1,5,6\n\n")
    assert data.load_array(p, torch.float64).tolist() == [[1.0, 2.5, -3.0], [0.4, 5.0, 6.0]]
    p = tmp_path / "n.csv"
    p.write_text("1,2\n3,4\n")
    assert data.load_array(p).tolist() == [[1.0, 2.0], [3.0, 4.0]]
    p = tmp_path / "col.csv"
    p.write_text("x\n1\n2\n3\n")
    assert data.load_array(p).shape == (3, 1)


def test_load_pt(tmp_path):
    t = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.save(t, tmp_path / "t.pt")
    assert torch.equal(data.load_array(tmp_path / "t.pt", torch.float64), t)
    torch.save(torch.zeros(2, 5, 5, dtype=torch.uint8), tmp_path / "img.PT")
    out = data.load_array(tmp_path / "img.PT")
    assert out.shape == (2, 1, 5, 5) and out.dtype == torch.float32


# --- load_array: errors --------------------------------------------------------------------------------
def _raises(exc, path, problem):
    return pytest.raises(exc, match=re.escape(str(path)) + ".*" + problem)


def test_load_errors_file_and_format(tmp_path):
    with _raises(FileNotFoundError, tmp_path / "missing.npy", "no such file"):
        data.load_array(tmp_path / "missing.npy")
    (tmp_path / "a.txt").write_text("1,2\n")
    with _raises(ValueError, tmp_path / "a.txt", r"unsupported extension '\.txt'; supported: \.npy"):
        data.load_array(tmp_path / "a.txt")
    for name in ("e.npy", "e.csv", "e.pt", "e.npz"):
        (tmp_path / name).write_bytes(b"")
        with _raises(ValueError, tmp_path / name, "empty file"):
            data.load_array(tmp_path / name)
    (tmp_path / "blank.csv").write_text("\n  \n")
    with _raises(ValueError, tmp_path / "blank.csv", "empty file"):
        data.load_array(tmp_path / "blank.csv")
    (tmp_path / "bad.npy").write_bytes(b"not an npy file")
    with _raises(ValueError, tmp_path / "bad.npy", "could not be read"):
        data.load_array(tmp_path / "bad.npy")
    with pytest.raises(TypeError, match="path"):
        data.load_array(3)
    np.save(tmp_path / "k.npy", _arr(2, 2))
    with _raises(ValueError, tmp_path / "k.npy", "key= applies only to .npz"):
        data.load_array(tmp_path / "k.npy", key="x")


def test_load_errors_zero_rows(tmp_path):
    (tmp_path / "h.csv").write_text("a,b\n")
    with _raises(ValueError, tmp_path / "h.csv", "zero rows"):
        data.load_array(tmp_path / "h.csv")
    np.save(tmp_path / "z.npy", np.zeros((0, 3)))
    with _raises(ValueError, tmp_path / "z.npy", r"zero rows \(shape \(0, 3\)\)"):
        data.load_array(tmp_path / "z.npy")
    np.save(tmp_path / "zc.npy", np.zeros((4, 0)))
    with _raises(ValueError, tmp_path / "zc.npy", "zero-size dimension"):
        data.load_array(tmp_path / "zc.npy")


def test_load_errors_non_finite(tmp_path):
    a = _arr(6, 3)
    a[2, 1] = np.nan
    a[4, 0] = np.inf
    a[4, 2] = np.nan
    np.save(tmp_path / "nan.npy", a)
    with _raises(ValueError, tmp_path / "nan.npy", r"3 non-finite values \(2 NaN, 1 inf\); first in row 2"):
        data.load_array(tmp_path / "nan.npy")
    (tmp_path / "inf.csv").write_text("x,y\n1,2\n3,4\n5,-inf\n")
    with _raises(ValueError, tmp_path / "inf.csv", r"1 non-finite values \(0 NaN, 1 inf\); first in row 2"):
        data.load_array(tmp_path / "inf.csv")
    imgs = torch.zeros(3, 2, 2)
    imgs[1, 0, 1] = float("nan")
    torch.save(imgs, tmp_path / "nan.pt")
    with _raises(ValueError, tmp_path / "nan.pt", "first in row 1"):
        data.load_array(tmp_path / "nan.pt")


def test_load_errors_dimensions(tmp_path):
    np.save(tmp_path / "v.npy", np.arange(5.0))
    with _raises(ValueError, tmp_path / "v.npy", r"wrong number of dimensions: shape \(5,\) has 1"):
        data.load_array(tmp_path / "v.npy")
    torch.save(torch.zeros(1, 1, 1, 1, 1), tmp_path / "5d.pt")
    with _raises(ValueError, tmp_path / "5d.pt", "wrong number of dimensions.*has 5"):
        data.load_array(tmp_path / "5d.pt")
    np.save(tmp_path / "s.npy", np.float64(3.0))
    with _raises(ValueError, tmp_path / "s.npy", "wrong number of dimensions"):
        data.load_array(tmp_path / "s.npy")


def test_load_errors_non_numeric(tmp_path):
    (tmp_path / "t.csv").write_text("a,b\n1,2\n3,abc\n")
    with _raises(ValueError, tmp_path / "t.csv", "non-numeric value 'abc' at line 3, column 2"):
        data.load_array(tmp_path / "t.csv")
    # A first line with some numbers is data, so its typo is reported rather than skipped as a header.
    (tmp_path / "typo.csv").write_text("1,2x\n3,4\n")
    with _raises(ValueError, tmp_path / "typo.csv", "non-numeric value '2x' at line 1"):
        data.load_array(tmp_path / "typo.csv")
    (tmp_path / "r.csv").write_text("1,2\n3\n")
    with _raises(ValueError, tmp_path / "r.csv", "line 2 has 1 fields, expected 2"):
        data.load_array(tmp_path / "r.csv")
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00\x81")
    with _raises(ValueError, tmp_path / "bin.csv", "non-numeric"):
        data.load_array(tmp_path / "bin.csv")
    np.save(tmp_path / "str.npy", np.array([["a", "b"], ["c", "d"]]))
    with _raises(ValueError, tmp_path / "str.npy", "non-numeric content"):
        data.load_array(tmp_path / "str.npy")
    np.save(tmp_path / "obj.npy", np.array([[1, None]], dtype=object), allow_pickle=True)
    with _raises(ValueError, tmp_path / "obj.npy", "non-numeric"):
        data.load_array(tmp_path / "obj.npy")
    torch.save({"x": torch.zeros(2, 2)}, tmp_path / "d.pt")
    with _raises(ValueError, tmp_path / "d.pt", "holds a dict, expected a single tensor"):
        data.load_array(tmp_path / "d.pt")
    torch.save(torch.zeros(2, 2, dtype=torch.complex64), tmp_path / "c.pt")
    with _raises(ValueError, tmp_path / "c.pt", "non-numeric content"):
        data.load_array(tmp_path / "c.pt")


# --- as_image_tensor -----------------------------------------------------------------------------------
def test_as_image_tensor():
    u8 = np.array([[[0, 255], [51, 102]]], dtype=np.uint8)
    out = data.as_image_tensor(u8)
    assert out.shape == (1, 1, 2, 2) and out.dtype == torch.float32
    assert torch.allclose(out.flatten(), torch.tensor([-1.0, 1.0, -0.6, -0.2]))
    x = torch.tensor([[[[0.0, 4.0]]]])
    assert data.as_image_tensor(x, value_range=(0, 4)).flatten().tolist() == [-1.0, 1.0]
    assert torch.equal(data.as_image_tensor(data.digits()), data.digits())
    with pytest.raises(ValueError, match=r"outside value_range \(-1, 1\); pass value_range"):
        data.as_image_tensor(x)
    with pytest.raises(ValueError, match=r"\[N, H, W\] or \[N, C, H, W\]"):
        data.as_image_tensor(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="NaN"):
        data.as_image_tensor(np.full((1, 2, 2), np.nan))
    with pytest.raises(TypeError, match="numpy array or torch tensor"):
        data.as_image_tensor([[[0.0]]])
