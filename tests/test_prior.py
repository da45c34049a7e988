"""GaussianMixturePrior: construction, validation, evaluation, persistence, and fits against scikit-learn."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import devices
from sklearn.cluster import KMeans
from sklearn.mixture import GaussianMixture

from mixdiff_ext import GaussianMixturePrior as Prior

# Parity with scikit-learn in float64 from the same starting point: the algorithms are the same, only the
# summation order differs, so inertia and mean log-likelihood agree far below this.
PARITY_RTOL = 1e-5


def clusters(n=3000, d=4, k=5, spread=6.0, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    centres = spread * torch.randn(k, d, generator=g, dtype=dtype)
    labels = torch.randint(k, (n,), generator=g)
    scales = 0.5 + torch.rand(k, d, generator=g, dtype=dtype)
    return centres[labels] + scales[labels] * torch.randn(n, d, generator=g, dtype=dtype)


# --- construction and validation ---------------------------------------------------------------------
def test_standard_prior():
    p = Prior.standard(3)
    assert p.n_components == 1 and p.dim == 3 and p.covariance_type == "identity"
    assert torch.equal(p.means, torch.zeros(1, 3)) and torch.equal(p.weights, torch.ones(1))
    x = torch.randn(10, 3)
    expected = -0.5 * (x**2).sum(1) - 1.5 * math.log(2 * math.pi)
    torch.testing.assert_close(p.log_prob(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(means=torch.zeros(3), weights=torch.ones(1)), ValueError, "means must be 2-D"),
        (dict(means=torch.zeros(2, 3, dtype=torch.int64), weights=torch.ones(2) / 2), TypeError, "means"),
        (dict(means=torch.zeros(2, 3), weights=torch.ones(3) / 3), ValueError, "weights must have shape"),
        (dict(means=torch.zeros(2, 3), weights=torch.tensor([1.5, -0.5])), ValueError, "non-negative"),
        (dict(means=torch.zeros(2, 3), weights=torch.tensor([0.2, 0.2])), ValueError, "sum to 1"),
        (dict(means=torch.tensor([[0.0, float("nan")]]), weights=torch.ones(1)), ValueError, "NaN"),
        (dict(means=torch.zeros(1, 2), weights=torch.ones(1), covariance_type="diag"), ValueError, "required"),
        (dict(means=torch.zeros(1, 2), weights=torch.ones(1), covariances=torch.ones(1, 2)), ValueError, "None"),
        (dict(means=torch.zeros(1, 2), weights=torch.ones(1), covariances=torch.tensor([[1.0, -1.0]]),
              covariance_type="diag"), ValueError, "positive"),
        (dict(means=torch.zeros(1, 2), weights=torch.ones(1), covariances=torch.tensor([[[1.0, 2.0], [2.0, 1.0]]]),
              covariance_type="full"), ValueError, "positive-definite"),
        (dict(means=torch.zeros(1, 2), weights=torch.ones(1), covariances=torch.ones(1, 3), covariance_type="diag"),
         ValueError, "shape"),
        (dict(means=torch.zeros(1, 2), weights=torch.ones(1), covariance_type="tied"), ValueError, "covariance_type"),
        (dict(means=[[0.0]], weights=torch.ones(1)), TypeError, "means"),
    ],
)
def test_constructor_rejects_bad_input(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        Prior(**kwargs)


def test_bad_data_is_rejected():
    p = Prior.standard(2)
    with pytest.raises(ValueError, match="2-D"):
        p.log_prob(torch.zeros(3))
    with pytest.raises(ValueError, match="dim 3"):
        p.assign(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="NaN or inf"):
        p.score(torch.tensor([[0.0, float("inf")]]))
    with pytest.raises(TypeError, match="floating-point"):
        p.assign(torch.zeros(4, 2, dtype=torch.int32))
    with pytest.raises(ValueError, match="rule"):
        p.assign(torch.zeros(4, 2), rule="closest")


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(n_components=0), ValueError, "n_components"),
        (dict(n_components=11), ValueError, "n_components"),
        (dict(n_components=2, method="gmm"), ValueError, "method"),
        (dict(n_components=2, init="farthest"), ValueError, "init"),
        (dict(n_components=2, init=torch.zeros(3, 2)), ValueError, "init means"),
        (dict(n_components=2, max_iter=0), ValueError, "max_iter"),
        (dict(n_components=2, covariance_type="tied"), ValueError, "covariance_type"),
    ],
)
def test_fit_rejects_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        Prior.fit(torch.randn(10, 2), **kwargs)


def test_numpy_input_and_float32():
    x = clusters(dtype=torch.float32).numpy()
    p = Prior.fit(x, 5, seed=1)
    assert p.dtype == torch.float32
    assert p.assign(x).shape == (x.shape[0],)
    assert np.isfinite(p.score(x))


# --- evaluation agrees with the reference and with scikit-learn ----------------------------------------
@pytest.mark.parametrize("covariance_type", ["spherical", "diag", "full"])
def test_evaluation_matches_sklearn(covariance_type):
    x = clusters()
    gm = GaussianMixture(5, covariance_type=covariance_type, random_state=0).fit(x.numpy())
    cov = torch.from_numpy(gm.covariances_)
    p = Prior(torch.from_numpy(gm.means_), torch.from_numpy(gm.weights_), cov, covariance_type)
    np.testing.assert_allclose(p.log_prob(x).numpy(), gm.score_samples(x.numpy()), rtol=1e-10)
    np.testing.assert_allclose(p.responsibilities(x).numpy(), gm.predict_proba(x.numpy()), atol=1e-10)
    assert np.array_equal(p.predict(x).numpy(), gm.predict(x.numpy()))
    assert p.score(x) == pytest.approx(gm.score(x.numpy()), rel=1e-10)
    assert p.bic(x) == pytest.approx(gm.bic(x.numpy()), rel=1e-10)


def test_covariances_round_trip():
    a = torch.randn(3, 4, 4, dtype=torch.float64)
    cov = a @ a.mT + 0.5 * torch.eye(4, dtype=torch.float64)
    p = Prior(torch.randn(3, 4, dtype=torch.float64), torch.ones(3, dtype=torch.float64) / 3, cov, "full")
    torch.testing.assert_close(p.covariances, cov)
    assert p.covariance_trace().allclose(torch.diagonal(cov, dim1=1, dim2=2).sum(1))


def test_save_load_round_trip(tmp_path):
    x = clusters()
    p = Prior.fit(x, 4, covariance_type="diag", method="em", seed=0, max_iter=5)
    path = tmp_path / "prior.pt"
    p.save(path)
    q = Prior.load(path)
    assert q.covariance_type == "diag"
    for a, b in [(p.means, q.means), (p.weights, q.weights), (p.covariances, q.covariances)]:
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(p.log_prob(x), q.log_prob(x))


def test_load_rejects_foreign_file(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.ones(2)}, path)
    with pytest.raises(ValueError, match="not a mixdiff_ext prior"):
        Prior.load(path)


# --- fitting ----------------------------------------------------------------------------------------
def test_kmeans_k1_is_data_mean():
    x = clusters()
    p = Prior.fit(x, 1, seed=0)
    torch.testing.assert_close(p.means[0], x.mean(0), rtol=1e-12, atol=1e-12)
    assert float(p.weights[0]) == 1.0


def test_kmeans_matches_sklearn_from_same_centres():
    x = clusters(n=4000, d=6, k=6, spread=3.0, seed=3)  # overlapping clusters: several Lloyd iterations
    init = x[:6].clone()
    ours = Prior.fit(x, 6, init=init, max_iter=300, tol=1e-4)
    km = KMeans(6, init=init.numpy(), n_init=1, max_iter=300, tol=1e-4, algorithm="lloyd").fit(x.numpy())
    assert ours.fit_info["n_iter"] == km.n_iter_
    labels = ours.fit_info["labels"].numpy()
    assert np.array_equal(labels, km.labels_)
    assert ours.fit_info["inertia"] == pytest.approx(km.inertia_, rel=PARITY_RTOL)
    # The dispatcher prior: centres are the means of the final clusters and weights their fractions.
    # (scikit-learn stops on its centre-shift tolerance and keeps the centres of the last update, which
    # are the cluster means of the previous labelling; ours take one more mean of the final labels.)
    xn = x.numpy()
    cluster_means = np.stack([xn[km.labels_ == j].mean(0) for j in range(6)])
    np.testing.assert_allclose(ours.means.numpy(), cluster_means, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ours.weights.numpy(), np.bincount(labels, minlength=6) / len(labels))


@pytest.mark.parametrize("covariance_type", ["spherical", "diag", "full"])
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_em_matches_sklearn_from_same_start(covariance_type):
    x = clusters(n=3000, d=4, k=4, spread=2.5, seed=5)
    start = Prior.fit(x, 4, covariance_type=covariance_type, seed=0, max_iter=3)  # hard-assignment start
    ours = Prior.fit(x, 4, covariance_type=covariance_type, method="em", init=start, max_iter=25, tol=0.0)
    precisions = {"full": lambda c: torch.linalg.inv(c), "diag": lambda c: 1 / c, "spherical": lambda c: 1 / c}
    gm = GaussianMixture(
        4, covariance_type=covariance_type, max_iter=25, tol=0.0, reg_covar=1e-6, n_init=1,
        weights_init=start.weights.numpy(), means_init=start.means.numpy(),
        precisions_init=precisions[covariance_type](start.covariances).numpy(),
    ).fit(x.numpy())
    assert ours.fit_info["n_iter"] == gm.n_iter_ == 25
    assert ours.score(x) == pytest.approx(gm.score(x.numpy()), rel=PARITY_RTOL)
    np.testing.assert_allclose(ours.means.numpy(), gm.means_, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ours.weights.numpy(), gm.weights_, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(ours.covariances.numpy(), gm.covariances_, rtol=1e-6, atol=1e-8)


def test_em_identity_increases_likelihood_and_is_seeded():
    x = clusters(n=2000, d=3, k=3, spread=2.0, seed=2)
    a = Prior.fit(x, 3, method="em", seed=7, max_iter=30)
    b = Prior.fit(x, 3, method="em", seed=7, max_iter=30)
    torch.testing.assert_close(a.means, b.means, rtol=0, atol=0)
    start = Prior.fit(x, 3, seed=7, max_iter=30)
    assert a.score(x) >= start.score(x) - 1e-12


def test_seed_none_follows_torch_manual_seed():
    x = clusters()
    torch.manual_seed(123)
    a = Prior.fit(x, 5, max_iter=1)
    torch.manual_seed(123)
    b = Prior.fit(x, 5, max_iter=1)
    torch.testing.assert_close(a.means, b.means, rtol=0, atol=0)


def test_empty_clusters_are_reseeded_without_nan():
    x = clusters(n=500, d=2, k=2, spread=5.0)
    far = torch.tensor([[1e4, 1e4], [-1e4, 1e4]], dtype=torch.float64)  # start centres no point is near
    init = torch.cat([x[:2], far])
    p = Prior.fit(x, 4, init=init, max_iter=50)
    assert torch.isfinite(p.means).all() and torch.isfinite(p.weights).all()
    assert (p.weights > 0).all()  # re-seeded at far points, every cluster owns points
    assert p.means.abs().max() < 1e3


def test_duplicate_points_more_clusters_than_distinct_values():
    x = torch.tensor([[0.0, 0.0]] * 5 + [[1.0, 1.0]] * 5, dtype=torch.float64)
    p = Prior.fit(x, 3, seed=0)
    assert torch.isfinite(p.means).all()
    assert float(p.weights.sum()) == pytest.approx(1.0)
    assert torch.isfinite(p.log_prob(x)).all()


def test_degenerate_covariance_gets_reg_covar_or_clear_error():
    x = torch.randn(200, 3, dtype=torch.float64)
    x[:, 2] = 0.0  # a flat dimension: variance 0
    p = Prior.fit(x, 2, covariance_type="diag", seed=0, reg_covar=1e-6)
    assert (p.covariances[:, 2] >= 1e-6 - 1e-15).all()
    with pytest.raises(ValueError, match="reg_covar"):
        Prior.fit(x, 2, covariance_type="full", seed=0, reg_covar=0.0)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("covariance_type, method", [("identity", "kmeans"), ("diag", "em"), ("full", "em")])
def test_fit_and_evaluate_on_each_device(device, covariance_type, method):
    x = clusters(n=2000, d=4, k=3, spread=3.0, seed=9)
    start = Prior.fit(x, 3, seed=0, max_iter=5)
    cpu = Prior.fit(x, 3, covariance_type=covariance_type, method=method, init=start.means, max_iter=15, tol=0.0)
    dev = Prior.fit(x.to(device), 3, covariance_type=covariance_type, method=method, init=start.means,
                    max_iter=15, tol=0.0)
    assert dev.means.device.type == device
    torch.testing.assert_close(dev.means.cpu(), cpu.means, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(dev.weights.cpu(), cpu.weights, rtol=1e-9, atol=1e-9)
    assert dev.to("cpu").score(x) == pytest.approx(cpu.score(x), rel=1e-10)
    assert torch.equal(dev.assign(x.to(device)).cpu(), cpu.assign(x))
