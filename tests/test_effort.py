"""The reverse-effort diagnostic (our reading of the paper's Proposition 1)."""
from __future__ import annotations

import pytest
import torch

from mixdiff_ext import GaussianMixturePrior as Prior
from mixdiff_ext import effort


def data(n=4000, d=5, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = 8.0 * torch.randn(k, d, generator=g, dtype=torch.float64)
    return centres[torch.randint(k, (n,), generator=g)] + torch.randn(n, d, generator=g, dtype=torch.float64)


def test_standard_prior_effort_is_second_moment_plus_dim():
    x = data()
    assert effort(Prior.standard(5, dtype=torch.float64), x) == pytest.approx(float((x**2).sum(1).mean()) + 5, rel=1e-12)


def test_reduction_equals_weighted_centre_norms_at_kmeans_fixed_point():
    x = data()
    p = Prior.fit(x, 4, seed=0)
    assert p.fit_info["converged"]
    reduction = effort(Prior.standard(5, dtype=torch.float64), x) - effort(p, x)
    expected = float((p.weights * (p.means**2).sum(1)).sum())
    assert reduction == pytest.approx(expected, rel=1e-10)
    assert reduction > 0


def test_effort_uses_covariance_trace():
    x = data(d=3)
    means = torch.zeros(1, 3, dtype=torch.float64)
    p = Prior(means, torch.ones(1, dtype=torch.float64), torch.tensor([[1.0, 4.0, 9.0]], dtype=torch.float64), "diag")
    assert effort(p, x) == pytest.approx(float((x**2).sum(1).mean()) + 14.0, rel=1e-12)


def test_non_mean_centres_do_not_satisfy_identity():
    # The identity needs centres = cluster means: shifting them breaks it (the test can fail).
    x = data()
    p = Prior.fit(x, 4, seed=0)
    shifted = Prior(p.means + 0.5, p.weights)
    reduction = effort(Prior.standard(5, dtype=torch.float64), x) - effort(shifted, x)
    expected = float((shifted.weights * (shifted.means**2).sum(1)).sum())
    assert abs(reduction - expected) > 1e-3


def test_effort_rejects_empty_data():
    with pytest.raises(ValueError, match="at least one row"):
        effort(Prior.standard(2), torch.zeros(0, 2))
