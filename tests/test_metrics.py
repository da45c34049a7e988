"""Sample-quality metrics (mixdiff_ext.metrics).

Each metric is checked on distributions with a known answer: identical samples give ~0; a unit shift
between 1-D Gaussians gives W1 = 1 and KS = 2 Phi(0.5) - 1, within tolerances derived from the sample
size; a shift by v gives SW2 = |v| / sqrt(D) up to the Monte Carlo error over directions; MMD against
a brute-force evaluation of its formula; the Gaussian Frechet distance against closed forms and
scipy.linalg.sqrtm. The digits classifier is trained once per module into a temporary MIXDIFF_CACHE.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import gen
from mixdiff_ext import metrics as M

scipy_stats = pytest.importorskip("scipy.stats")
pytest.importorskip("sklearn")

F64 = torch.float64


@pytest.fixture(scope="module")
def clf(tmp_path_factory):
    """The default classifier, trained once into a module-wide temporary cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MIXDIFF_CACHE", str(tmp_path_factory.mktemp("cache")))
        M._CLASSIFIER_STATES.clear()
        yield M.digits_classifier()
    M._CLASSIFIER_STATES.clear()


@pytest.fixture(scope="module")
def digits_xy():
    from mixdiff_ext.data import digits

    return digits(return_labels=True)


@pytest.fixture
def train_counter(monkeypatch):
    """Counts calls of the training function (wrapping, not replacing, it)."""
    calls = []
    original = M._train_digits_classifier

    def counted():
        calls.append(1)
        return original()

    monkeypatch.setattr(M, "_train_digits_classifier", counted)
    return calls


def dkw_tol(n: int, delta: float = 1e-6) -> float:
    """Sup-norm deviation of an empirical CDF of n points exceeded with probability <= delta (DKW)."""
    return math.sqrt(math.log(2 / delta) / (2 * n))


# --------------------------------------------------------------------------------------------------
# 1-D
# --------------------------------------------------------------------------------------------------
def test_1d_identical_and_exact_shift():
    x = torch.randn(1000, generator=gen(0), dtype=F64)
    assert M.ks_statistic(x, x) == 0.0
    assert M.wasserstein1(x, x) == 0.0
    # A shift of every point by 1 moves all mass by exactly 1; a shift past the range separates the CDFs.
    assert abs(M.wasserstein1(x, x + 1) - 1.0) < 1e-12
    assert M.ks_statistic(x, x + 100) == 1.0
    # [N, 1], numpy and float32 inputs are the same samples.
    y = torch.randn(700, generator=gen(1), dtype=F64) + 0.3
    ref = M.ks_statistic(x, y), M.wasserstein1(x, y)
    assert (M.ks_statistic(x[:, None], y.numpy()), M.wasserstein1(x.numpy(), y[:, None])) == ref
    assert abs(M.wasserstein1(x.float(), y.float()) - ref[1]) < 1e-6


def test_1d_gaussian_shift():
    n = 20000
    x = torch.randn(n, generator=gen(2), dtype=F64)
    y = torch.randn(n, generator=gen(3), dtype=F64) + 1.0
    # KS: sup |Phi(t) - Phi(t - 1)| = 2 Phi(0.5) - 1, attained at t = 1/2; each empirical CDF is within
    # dkw_tol of its own. W1 = integral |F_x - F_y|: while F_x > F_y everywhere (true here up to tiny
    # tails) that is integral (F_x - F_y) = mean(y) - mean(x), with standard deviation sqrt(2 / n); 5 sigma.
    ks_true = 2 * scipy_stats.norm.cdf(0.5) - 1
    assert abs(M.ks_statistic(x, y) - ks_true) < 2 * dkw_tol(n)
    assert abs(M.wasserstein1(x, y) - 1.0) < 5 * math.sqrt(2 / n)
    assert abs(ks_true - 0.3829) < 1e-4


# --------------------------------------------------------------------------------------------------
# sliced Wasserstein
# --------------------------------------------------------------------------------------------------
def test_sliced_w2_shift_closed_form():
    D, P = 8, 2000
    x = torch.randn(1000, D, generator=gen(4), dtype=F64)
    v = torch.randn(D, generator=gen(5), dtype=F64)
    assert M.sliced_wasserstein(x, x) == 0.0
    sw = M.sliced_wasserstein(x, x + v, projections=P)
    # A pure shift gives |theta.v| per direction, so SW2^2 is the mean of (theta.v)^2 over P uniform
    # directions: expectation |v|^2 / D, relative std sqrt(2 (D - 1) / (D + 2) / P) (theta_1^2 ~ Beta(1/2,
    # (D-1)/2)); SW2 has half that relative error. 5 sigma.
    rel_sd = 0.5 * math.sqrt(2 * (D - 1) / (D + 2) / P)
    want = v.norm().item() / math.sqrt(D)
    assert abs(sw / want - 1) < 5 * rel_sd, (sw, want)
    # The same with independent samples on both sides (sample noise adds O(1/sqrt(n)) per direction).
    y = torch.randn(1500, D, generator=gen(6), dtype=F64) + v
    assert abs(M.sliced_wasserstein(x, y, projections=P) / want - 1) < 0.1


def test_sliced_unequal_sizes_exact_in_1d():
    # In 1-D the only directions are +-1, so SW_p is the 1-D W_p of the empirical measures.
    x = torch.randn(37, 1, generator=gen(7), dtype=F64)
    y = 0.5 + 2 * torch.randn(53, 1, generator=gen(8), dtype=F64)
    w1 = scipy_stats.wasserstein_distance(x[:, 0].numpy(), y[:, 0].numpy())
    assert abs(M.sliced_wasserstein(x, y, projections=3, p=1) - w1) < 1e-12
    # W2 from the quantile functions evaluated at the midpoints of a grid of n*m cells: exact, since both
    # quantile functions are constant on every cell (independent of the merged-breakpoint code).
    x, y = x[:6, 0].numpy(), y[:4, 0].numpy()
    u = (np.arange(24) + 0.5) / 24
    qx, qy = np.quantile(x, u, method="inverted_cdf"), np.quantile(y, u, method="inverted_cdf")
    w2 = math.sqrt(np.mean((qx - qy) ** 2))
    assert abs(M.sliced_wasserstein(x[:, None], y[:, None], projections=2) - w2) < 1e-12
    assert abs(M.sliced_wasserstein(x, y, projections=2, p=3) - np.mean(np.abs(qx - qy) ** 3) ** (1 / 3)) < 1e-12


def test_sliced_chunking_and_seed():
    x = torch.randn(300, 5, generator=gen(9), dtype=F64)
    y = torch.randn(211, 5, generator=gen(10), dtype=F64) * 1.5
    ref = M.sliced_wasserstein(x, y, projections=50, seed=3)
    for chunk in (1, 7, 50, 1000):
        assert abs(M.sliced_wasserstein(x, y, projections=50, seed=3, chunk=chunk) - ref) < 1e-12
    assert M.sliced_wasserstein(x, y, projections=50, seed=4) != ref
    assert M.sliced_wasserstein(x.float().numpy(), y.float(), projections=50, seed=3) == pytest.approx(ref, rel=1e-5)


def test_sliced_large_input():
    # 1e5 points: the default chunk keeps each [chunk, N + M] block at <= 2**22 elements (20 projections).
    n, D, P = 100_000, 16, 24
    x = torch.randn(n, D, generator=gen(11))
    y = torch.randn(n, D, generator=gen(12))
    assert M.sliced_wasserstein(x, y, projections=P) < 0.02  # sample noise ~ 1/sqrt(n) per direction
    # Pure shift: exactly sqrt(mean (theta.v)^2) over the documented directions (seed 0).
    v = torch.linspace(-1, 1, D, dtype=F64)
    theta = torch.randn(P, D, generator=gen(0), dtype=F64)
    want = (theta @ v / theta.norm(dim=1)).square().mean().sqrt().item()
    assert abs(M.sliced_wasserstein(x.double(), x.double() + v, projections=P) / want - 1) < 1e-9


# --------------------------------------------------------------------------------------------------
# MMD
# --------------------------------------------------------------------------------------------------
def brute_mmd(x: torch.Tensor, y: torch.Tensor, bandwidth: float) -> float:
    k = lambda a, b: torch.exp(-torch.cdist(a, b).square() / (2 * bandwidth**2))  # noqa: E731
    n, m = len(x), len(y)
    kxx, kyy = k(x, x), k(y, y)
    return (
        (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
        + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
        - 2 * k(x, y).mean()
    ).item()


def test_mmd_matches_formula_and_chunking():
    x = torch.randn(40, 3, generator=gen(13), dtype=F64)
    y = torch.randn(33, 3, generator=gen(14), dtype=F64) + 0.4
    for bw in (0.3, 1.7):
        want = brute_mmd(x, y, bw)
        for chunk in (7, 10**6):
            assert abs(M.mmd_rbf(x, y, bandwidth=bw, chunk=chunk) - want) < 1e-10
    # Median heuristic: all pooled points (< 1000) -> the median of all pairwise distances.
    z = torch.cat([x, y])
    assert M.median_bandwidth(x, y) == pytest.approx(torch.pdist(z).median().item(), rel=1e-12)
    assert M.mmd_rbf(x, y) == pytest.approx(brute_mmd(x, y, M.median_bandwidth(x, y)), abs=1e-10)


def test_mmd_same_vs_shifted():
    n, D = 500, 5
    x = torch.randn(n, D, generator=gen(15), dtype=F64)
    y = torch.randn(n, D, generator=gen(16), dtype=F64)
    same = M.mmd_rbf(x, y)
    shifted = M.mmd_rbf(x, y + 0.5)
    # Unbiased estimate of 0: its standard deviation is O(1/n) (~0.002 here).
    assert abs(same) < 0.01
    assert shifted > 0.03 and shifted > 10 * abs(same)
    # Identical samples: the unbiased estimate is exactly -2 (n^2 - S) / (n^2 (n - 1)) with S the full
    # kernel sum, small and negative, bounded by 2 / (n - 1).
    bw = M.median_bandwidth(x, x)
    s = torch.exp(-torch.cdist(x, x).square() / (2 * bw**2)).sum().item()
    self_mmd = M.mmd_rbf(x, x, bandwidth=bw)
    assert self_mmd == pytest.approx(-2 * (n * n - s) / (n * n * (n - 1)), abs=1e-12)
    assert -2 / (n - 1) < self_mmd <= 0


def test_median_bandwidth_subsample_seeded():
    x = torch.randn(900, 2, generator=gen(17), dtype=F64)
    y = torch.randn(800, 2, generator=gen(18), dtype=F64) * 2
    a, b, c = M.median_bandwidth(x, y, seed=1), M.median_bandwidth(x, y, seed=1), M.median_bandwidth(x, y, seed=2)
    assert a == b and a != c
    full = torch.pdist(torch.cat([x, y])).median().item()
    assert abs(a / full - 1) < 0.05  # 1000 of 1700 points estimate the pooled median closely
    # Duplicated points: median 0 -> the median of the positive distances; all equal -> 1.0.
    dup = torch.zeros(10, 2, dtype=F64)
    assert M.median_bandwidth(dup, torch.ones(2, 2, dtype=F64)) == pytest.approx(math.sqrt(2))
    assert M.median_bandwidth(dup, dup) == 1.0


# --------------------------------------------------------------------------------------------------
# Gaussian Frechet distance
# --------------------------------------------------------------------------------------------------
def test_gaussian_frechet_closed_forms():
    g = gen(19)
    mu1, mu2 = torch.randn(6, generator=g, dtype=F64), torch.randn(6, generator=g, dtype=F64)
    a, b = torch.rand(6, generator=g, dtype=F64) + 0.1, 3 * torch.rand(6, generator=g, dtype=F64)
    want = (mu1 - mu2).square().sum() + (a.sqrt() - b.sqrt()).square().sum()
    got = M.gaussian_frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b))
    assert abs(got - want.item()) < 1e-12 * want.item()
    # Non-commuting full covariances against scipy.linalg.sqrtm of the product.
    from scipy.linalg import sqrtm

    q = torch.randn(6, 6, generator=g, dtype=F64)
    r = torch.randn(6, 9, generator=g, dtype=F64)
    c1, c2 = q @ q.T + 0.1 * torch.eye(6, dtype=F64), r @ r.T / 9
    tr_sqrt = np.real(np.trace(sqrtm(c1.numpy() @ c2.numpy())))
    want = ((mu1 - mu2).square().sum() + c1.trace() + c2.trace()).item() - 2 * tr_sqrt
    assert abs(M.gaussian_frechet_distance(mu1, c1, mu2, c2) - want) < 1e-9 * want
    # Singular (rank 2) covariance against itself; 1-D: (m1 - m2)^2 + (s1 - s2)^2.
    low = r[:, :2] @ r[:, :2].T
    assert M.gaussian_frechet_distance(mu1, low, mu1, low) < 1e-10 * low.trace().item()
    one = M.gaussian_frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([-1.0]), np.array([[9.0]]))
    assert one == pytest.approx(4.0 + 1.0, abs=1e-12)


# --------------------------------------------------------------------------------------------------
# digits classifier
# --------------------------------------------------------------------------------------------------
def test_classifier_accuracy(clf, digits_xy):
    images, labels = digits_xy
    assert not clf.training
    _, test = M._heldout_split(len(labels))
    assert len(test) == 360  # 20% of 1797
    acc = M._accuracy(clf, images[test], labels[test])
    assert acc >= M.DIGITS_MIN_ACCURACY, acc


def test_classifier_deterministic_and_cached(clf, tmp_path, train_counter):
    cache = tmp_path / "fresh"
    rng = torch.get_rng_state()
    threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    try:
        fresh = M.digits_classifier(cache_dir=cache)
    finally:
        torch.use_deterministic_algorithms(False)
    assert len(train_counter) == 1
    assert torch.equal(torch.get_rng_state(), rng) and torch.get_num_threads() == threads
    # An independent training (empty cache, other process state) gives bit-identical weights.
    for k, v in clf.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    path = cache / f"digits_cnn_{M.DIGITS_CLASSIFIER_VERSION}.pt"
    assert path.is_file() and [p.name for p in cache.iterdir()] == [path.name]  # no temporary left
    blob = torch.load(path, weights_only=True)
    assert blob["version"] == M.DIGITS_CLASSIFIER_VERSION and blob["heldout_accuracy"] >= M.DIGITS_MIN_ACCURACY
    mtime = path.stat().st_mtime_ns
    # A new process (empty memory cache) loads from disk without retraining or rewriting.
    M._CLASSIFIER_STATES.pop(str(path.resolve()))
    again = M.digits_classifier(cache_dir=cache)
    assert len(train_counter) == 1 and path.stat().st_mtime_ns == mtime
    assert all(torch.equal(again.state_dict()[k], v) for k, v in clf.state_dict().items())
    # Within the process the memory cache answers: the file is not even read.
    path.unlink()
    M.digits_classifier(cache_dir=cache)
    assert len(train_counter) == 1 and not path.exists()
    # Each call returns its own module.
    assert again is not fresh and again.fc.weight.data_ptr() != fresh.fc.weight.data_ptr()


def test_classifier_env_cache_and_corrupt_file(tmp_path, monkeypatch, train_counter):
    monkeypatch.setenv("MIXDIFF_CACHE", str(tmp_path))
    path = tmp_path / f"digits_cnn_{M.DIGITS_CLASSIFIER_VERSION}.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.warns(RuntimeWarning, match="ignoring digits classifier cache"):
        M.digits_classifier()
    assert len(train_counter) == 1
    assert torch.load(path, weights_only=True)["version"] == M.DIGITS_CLASSIFIER_VERSION  # rebuilt
    M._CLASSIFIER_STATES.pop(str(path.resolve()))


# --------------------------------------------------------------------------------------------------
# image metrics
# --------------------------------------------------------------------------------------------------
def test_frechet_digits(clf, digits_xy):
    images, _ = digits_xy
    perm = torch.randperm(len(images), generator=gen(20))
    half_a, half_b = images[perm[:898]], images[perm[898:1796]]
    noise = 2 * torch.rand(898, 1, 8, 8, generator=gen(21)) - 1
    self_fd = M.frechet_distance(images, images, clf)
    halves = M.frechet_distance(half_a, half_b, clf)
    vs_noise = M.frechet_distance(half_a, noise, clf)
    assert self_fd < 1e-6 * max(halves, 1.0)
    assert vs_noise > 20 * halves, (halves, vs_noise)
    # [N, 64], numpy input, and the default classifier (the module's cached one) agree.
    flat = half_b.reshape(-1, 64).numpy()
    assert M.frechet_distance(half_a, flat) == pytest.approx(halves, rel=1e-9)


def test_histogram_and_coverage(clf, digits_xy):
    images, labels = digits_xy
    hist = M.class_histogram(images, clf)
    assert hist.dtype == torch.int64 and hist.shape == (10,) and hist.sum().item() == len(images)
    true = torch.bincount(labels, minlength=10)
    assert (hist - true).abs().max().item() <= 10  # ~1% errors on data mostly seen in training
    assert hist.min().item() > 0.8 * len(images) / 10 and hist.max().item() < 1.2 * len(images) / 10
    assert M.mode_coverage(images, clf) == 10
    zeros = images[labels == 0]
    assert M.mode_coverage(zeros, clf) == 1
    # Mixing in 2% of ones: covered at min_fraction 0.01, not at the default 0.05.
    mixed = torch.cat([zeros, images[labels == 1][:4]])
    assert M.mode_coverage(mixed, clf, min_fraction=0.01) == 2
    assert M.mode_coverage(mixed, clf) == 1


# --------------------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------------------
def test_evaluate_dispatch(clf, digits_xy):
    x = torch.randn(300, generator=gen(22), dtype=F64)
    y = torch.randn(200, 1, generator=gen(23), dtype=F64)
    assert M.evaluate(x, y) == {"ks": M.ks_statistic(x, y), "w1": M.wasserstein1(x, y)}
    v, w = torch.randn(200, 3, generator=gen(24)), torch.randn(150, 3, generator=gen(25))
    out = M.evaluate(v, w)
    assert out == {
        "sliced_w2": M.sliced_wasserstein(v, w),
        "mmd2": M.mmd_rbf(v, w),
        "mmd_bandwidth": M.median_bandwidth(v, w),
    }
    images, _ = digits_xy
    out = M.evaluate(images[:500], images[500:1000])
    assert set(out) == {"frechet", "mode_coverage", "reference_mode_coverage"}
    assert out["mode_coverage"] == 10.0 and all(isinstance(val, float) for val in out.values())
    assert M.evaluate(images[:500].reshape(500, 64), images[500:1000], kind="image") == out
    assert set(M.evaluate(images[:500].reshape(500, 64), images[500:1000].reshape(500, 64))) == set(
        ["sliced_w2", "mmd2", "mmd_bandwidth"]
    )


# --------------------------------------------------------------------------------------------------
# bad inputs
# --------------------------------------------------------------------------------------------------
_X = torch.randn(20, 3, generator=gen(26))
_IMG = torch.zeros(4, 1, 8, 8)
_NAN = _X.clone()
_NAN[3, 1] = float("nan")


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: M.ks_statistic(torch.tensor([]), _X[:, 0]), ValueError, "x must not be empty"),
        (lambda: M.wasserstein1(_X[:, 0], _X), ValueError, r"y must be shaped \[N\]"),
        (lambda: M.ks_statistic([1.0, 2.0], _X[:, 0]), TypeError, "x must be a torch.Tensor"),
        (lambda: M.wasserstein1(_X[:, 0], np.array(["a", "b"])), TypeError, "y must hold real numbers"),
        (lambda: M.ks_statistic(_X[:, 0] > 0, _X[:, 0]), TypeError, "x must hold real numbers"),
        (lambda: M.wasserstein1(_NAN[:, 1], _X[:, 0]), ValueError, "x contains NaN"),
        (lambda: M.sliced_wasserstein(_X, _X[:, :2]), ValueError, "same dimension"),
        (lambda: M.sliced_wasserstein(_X, _IMG), ValueError, r"y must be shaped \[N, D\]"),
        (lambda: M.sliced_wasserstein(_X, _NAN), ValueError, "y contains NaN"),
        (lambda: M.sliced_wasserstein(_X, _X, projections=0), ValueError, "projections must be >= 1"),
        (lambda: M.sliced_wasserstein(_X, _X, projections=2.0), TypeError, "projections must be an integer"),
        (lambda: M.sliced_wasserstein(_X, _X, p=0.5), ValueError, "p must be >= 1"),
        (lambda: M.sliced_wasserstein(_X, _X, seed=-1), ValueError, "seed must be in"),
        (lambda: M.sliced_wasserstein(_X, _X, chunk=0), ValueError, "chunk must be >= 1"),
        (lambda: M.mmd_rbf(_X, _X[:1]), ValueError, "y needs at least 2 rows"),
        (lambda: M.mmd_rbf(_X, _X[:, :1]), ValueError, "same dimension"),
        (lambda: M.mmd_rbf(_X, _X, bandwidth=0.0), ValueError, "bandwidth must be > 0"),
        (lambda: M.mmd_rbf(_X, _X, bandwidth=float("nan")), ValueError, "bandwidth must be finite"),
        (lambda: M.mmd_rbf(_X, _X, chunk=0), ValueError, "chunk must be >= 1"),
        (lambda: M.gaussian_frechet_distance(_X[0], torch.eye(3), _X[1], torch.eye(2)), ValueError, "cov2"),
        (lambda: M.gaussian_frechet_distance(_X[0], torch.eye(3), _X[1, :2], torch.eye(3)), ValueError, "mu1 and mu2"),
        (lambda: M.frechet_distance(_IMG[:1], _IMG), ValueError, "x_images needs at least 2"),
        (lambda: M.frechet_distance(_IMG, torch.zeros(4, 1, 8, 7)), ValueError, r"y_images must be shaped"),
        (lambda: M.frechet_distance(_IMG, _IMG, classifier=object()), TypeError, "classifier must be"),
        (lambda: M.class_histogram(torch.zeros(0, 64)), ValueError, "images must not be empty"),
        (lambda: M.mode_coverage(_IMG, min_fraction=0.0), ValueError, "min_fraction must be in"),
        (lambda: M.evaluate(_X, _X, kind="pixels"), ValueError, "kind must be one of"),
        (lambda: M.evaluate(torch.zeros(3, 2, 2), _X), ValueError, "cannot infer"),
        (lambda: M.evaluate(_X, _X[:, :2]), ValueError, "samples and reference must have the same dimension"),
        (lambda: M.evaluate(_IMG, _X, kind="image"), ValueError, "reference must be shaped"),
    ],
)
def test_bad_inputs(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_cache_dir_default(monkeypatch, tmp_path):
    monkeypatch.setenv("MIXDIFF_CACHE", str(tmp_path / "env"))
    assert M._default_cache_dir() == tmp_path / "env"
    monkeypatch.delenv("MIXDIFF_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert M._default_cache_dir() == tmp_path / ".cache" / "mixdiff_ext"
