"""mixdiff::estep_stats: fused E-step sufficient statistics (nk, sum_x, sum_xx around a shift, sum log p)."""
from __future__ import annotations

import math

import pytest
import torch

from conftest import (
    COVARIANCE_TYPES,
    Mixture,
    devices,
    make_mixture,
    naive_log_lik_overflows,
    randn,
    ref_log_joint,
    rel_err,
    sample_mixture,
    tol_for,
)
from mixdiff_ext import _reference as ref
from mixdiff_ext import ops

# float64: same sums as the reference in another order (blocked per 64 rows, per-thread partials),
# ~1e-14 relative; 1e-10 is safe and catches any formula error.
F64_TOL = 1e-10
# float32: responsibilities carry ~1e-7 relative error (float32 scores and exp polynomial) and rows are
# summed in float32 blocks of 64 before float64 accumulation (~64 * 6e-8 ~ 4e-6 worst case); 1e-4 is
# safely above that and far below the error of any wrong formula.
F32_TOL = 1e-4

MOMENTS = ("none", "diag", "full")
SHAPES = [
    (1, 1, 1),
    (2, 17, 3),
    (3, 33, 130),
    (4, 65, 1),
    (8, 65, 3),
    (9, 1, 130),
    (300, 5, 7),
    (1500, 3, 4),  # > 1024 rows: two per-thread partials merged; > 64 rows: float32 block flushes
]
DTYPES = [torch.float64, torch.float32]


def _shape_id(s):
    return "N{}_K{}_D{}".format(*s)


def _run(x, mix: Mixture, device, shift=None, moments="diag"):
    m = mix.to(device=device)
    shift = None if shift is None else shift.to(device)
    return ops.estep_stats(x.to(device), m.means, m.cov_factor, m.log_weights, m.covariance_type, shift, moments)


def _reference(x, mix: Mixture, shift=None, moments="diag"):
    m = mix.f64()
    shift = None if shift is None else shift.detach().cpu().double()
    return ref.estep_stats(x.detach().cpu().double(), m.means, m.cov_factor, m.log_weights, m.covariance_type, shift, moments)


def _check(out, want, dtype, moments):
    tol = tol_for(dtype, F64_TOL, F32_TOL)
    nk, sum_x, sum_xx, ll = want
    for name, got, ref_val in (("nk", out.nk, nk), ("sum_x", out.sum_x, sum_x), ("log_lik_sum", out.log_lik_sum, ll)):
        assert got.dtype == torch.float64, name
        err = rel_err(got, ref_val)
        assert err <= tol, f"{name} rel err {err:.3e} > {tol:.0e}"
    if moments == "none":
        assert out.sum_xx is None
    else:
        assert out.sum_xx.dtype == torch.float64
        err = rel_err(out.sum_xx, sum_xx)
        assert err <= tol, f"sum_xx rel err {err:.3e} > {tol:.0e}"


def _problem(shape, cov, dtype, seed, **kw):
    N, K, D = shape
    mix = make_mixture(K, D, cov, seed=seed, dtype=dtype, **kw)
    x, _ = sample_mixture(mix, N, seed=seed + 1)
    return x, mix


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("moments", MOMENTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=_shape_id)
def test_matches_reference(shape, cov, dtype, moments, device):
    N, K, D = shape
    x, mix = _problem(shape, cov, dtype, seed=2000 + N + 7 * K + 31 * D + COVARIANCE_TYPES.index(cov))
    out = _run(x, mix, device, moments=moments)
    assert out.nk.shape == (K,) and out.sum_x.shape == (K, D) and out.log_lik_sum.shape == ()
    assert out.nk.device.type == device
    if moments != "none":
        assert out.sum_xx.shape == ((K, D) if moments == "diag" else (K, D, D))
    _check(out, _reference(x, mix, moments=moments), dtype, moments)
    assert rel_err(out.nk.sum(), torch.tensor(float(N), dtype=torch.float64)) <= tol_for(dtype, F64_TOL, F32_TOL)
    if device != "cpu":
        cpu = _run(x, mix, "cpu", moments=moments)
        _check(out, (cpu.nk, cpu.sum_x, cpu.sum_xx, cpu.log_lik_sum), dtype, moments)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_explicit_shift_matches_reference(cov, dtype, device):
    x, mix = _problem((200, 4, 5), cov, dtype, seed=31)
    shift = randn(4, 5, seed=32, dtype=dtype, scale=2.0)
    for moments in ("diag", "full"):
        out = _run(x, mix, device, shift=shift, moments=moments)
        _check(out, _reference(x, mix, shift=shift, moments=moments), dtype, moments)


@pytest.mark.parametrize("device", devices)
def test_moment_shapes_and_consistency(device):
    x, mix = _problem((150, 3, 5), "full", torch.float64, seed=33)
    none = _run(x, mix, device, moments="none")
    diag = _run(x, mix, device, moments="diag")
    full = _run(x, mix, device, moments="full")
    assert none.sum_xx is None and diag.sum_xx.shape == (3, 5) and full.sum_xx.shape == (3, 5, 5)
    # The raw op returns an empty [0] tensor for "none".
    m = mix.to(device=device)
    raw = torch.ops.mixdiff.estep_stats(x.to(device), m.means, m.cov_factor, m.log_weights, "full", m.means, "none")
    assert raw[2].shape == (0,) and raw[2].dtype == torch.float64
    for other in (diag, full):
        assert torch.equal(other.nk, none.nk) and torch.equal(other.sum_x, none.sum_x)
        assert torch.equal(other.log_lik_sum, none.log_lik_sum)
    # full is symmetric and its diagonal is the diag moment.
    assert rel_err(torch.diagonal(full.sum_xx, dim1=1, dim2=2), diag.sum_xx) <= F64_TOL
    assert rel_err(full.sum_xx, full.sum_xx.transpose(1, 2)) <= F64_TOL


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_shift_invariance(cov, device):
    # Statistics around the means convert back to statistics around 0:
    #   sum (x - 0) = sum_x + nk * mu,   sum x x^T = S2 + mu sum_x^T + sum_x mu^T + nk mu mu^T.
    x, mix = _problem((400, 3, 4), cov, torch.float64, seed=34)
    around_means = _run(x, mix, device, moments="full")
    around_zero = _run(x, mix, device, shift=torch.zeros_like(mix.means), moments="full")
    mu = mix.means.to(device)
    nk = around_means.nk
    assert rel_err(around_means.nk, around_zero.nk) <= F64_TOL
    assert rel_err(around_means.sum_x + nk[:, None] * mu, around_zero.sum_x) <= F64_TOL
    s1 = around_means.sum_x
    second = (
        around_means.sum_xx
        + mu[:, :, None] * s1[:, None, :]
        + s1[:, :, None] * mu[:, None, :]
        + nk[:, None, None] * mu[:, :, None] * mu[:, None, :]
    )
    assert rel_err(second, around_zero.sum_xx) <= F64_TOL
    assert around_means.log_lik_sum.item() == pytest.approx(around_zero.log_lik_sum.item(), rel=F64_TOL)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("moments", ["diag", "full"])
def test_float32_far_from_origin_variance(moments, device):
    # Data ~ 1e4 + N(0, 1e-2) in float32: E[x^2] - E[x]^2 around 0 cancels every digit in float32; around
    # the shift (the means) the variance must be within 1e-3 relative of the float64 truth on the same data.
    K, D, N = 2, 4, 3000
    means64 = torch.stack([torch.full((D,), 1e4), torch.full((D,), 1e4 + 1.0)]).double()
    sigma = 1e-2
    mix64 = Mixture(means64, torch.full((K, D), sigma, dtype=torch.float64), torch.full((K,), -math.log(K), dtype=torch.float64), "diag")
    x, comp = sample_mixture(mix64, N, seed=35, dtype=torch.float32)
    mix32 = mix64.to(dtype=torch.float32)
    out = _run(x, mix32, device, moments=moments)
    nk, s1, s2, _ = _reference(x, mix32, moments=moments)
    if moments == "full":
        s2, got_s2 = torch.diagonal(s2, dim1=1, dim2=2), torch.diagonal(out.sum_xx, dim1=1, dim2=2)
    else:
        got_s2 = out.sum_xx
    var_true = s2 / nk[:, None] - (s1 / nk[:, None]) ** 2
    var_got = (got_s2 / out.nk[:, None] - (out.sum_x / out.nk[:, None]) ** 2).cpu()
    assert torch.allclose(var_true, torch.full_like(var_true, sigma**2), rtol=0.2)  # the data are what we think
    err = ((var_got - var_true).abs() / var_true).max().item()
    assert err <= 1e-3, f"variance rel err {err:.3e}"


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("moments", MOMENTS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16], ids=str)
def test_empty_input(dtype, moments, device):
    mix = make_mixture(3, 4, "diag", seed=36, dtype=dtype)
    out = _run(torch.empty(0, 4, dtype=dtype), mix, device, moments=moments)
    assert out.nk.dtype == out.sum_x.dtype == out.log_lik_sum.dtype == torch.float64
    assert out.nk.shape == (3,) and out.sum_x.shape == (3, 4) and out.log_lik_sum.shape == ()
    assert (out.nk == 0).all() and (out.sum_x == 0).all() and out.log_lik_sum.item() == 0.0
    if moments != "none":
        assert out.sum_xx.shape == ((3, 4) if moments == "diag" else (3, 4, 4))
        assert out.sum_xx.dtype == torch.float64 and (out.sum_xx == 0).all()


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_non_contiguous(cov, dtype, device):
    N, K, D = 70, 4, 5
    mix = make_mixture(K, D, cov, seed=37, dtype=dtype).to(device=device)
    x, _ = sample_mixture(mix, N, seed=38)
    x = x.to(device)
    shift = randn(K, D, seed=39, dtype=dtype).to(device)
    factor = mix.cov_factor
    if cov == "diag":
        factor = factor.t().contiguous().t()
    elif cov == "full":
        factor = factor.transpose(1, 2).contiguous().transpose(1, 2)
    elif cov == "spherical":
        factor = torch.stack([factor, factor]).t()[:, 0]
    lw = torch.stack([mix.log_weights, mix.log_weights], dim=1)[:, 0]
    strided = Mixture(mix.means.t().contiguous().t(), factor, lw, cov)
    x_strided = torch.zeros(3 * N, 2 * D, dtype=dtype, device=device)
    x_strided[::3, ::2] = x
    x_strided = x_strided[::3, ::2]
    shift_t = shift.t().contiguous().t()
    want = _run(x, mix, device, shift=shift, moments="full")
    for xv in (x.t().contiguous().t(), x_strided):
        got = _run(xv, strided, device, shift=shift_t, moments="full")
        for a, b in zip(got, want):
            assert torch.equal(a, b)
    _check(want, _reference(x, mix, shift=shift, moments="full"), dtype, "full")


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cov", ["spherical", "diag", "full"])
def test_tight_gaussians(cov, dtype, device):
    # sigma = 1e-3, D = 128: per-point log densities ~ +700 (exp overflows float32; the other components'
    # ~ -1e6 underflow): log_lik_sum must stay finite and exact.
    N, K, D = 40, 4, 128
    mix = make_mixture(K, D, cov, seed=40, dtype=torch.float64, scale=1e-3).to(dtype=dtype)
    x, comp = sample_mixture(mix, N, seed=41)
    assert naive_log_lik_overflows(ref_log_joint(x, mix))
    out = _run(x, mix, device, moments="diag")
    assert torch.isfinite(out.log_lik_sum)
    _check(out, _reference(x, mix, moments="diag"), dtype, "diag")
    assert torch.equal(out.nk.cpu(), torch.bincount(comp, minlength=K).double())


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_far_outliers(cov, dtype, device):
    N, K, D = 30, 4, 6
    mix = make_mixture(K, D, cov, seed=42, dtype=dtype)
    direction = torch.nn.functional.normalize(randn(N, D, seed=43), dim=1)
    x = (mix.means.double()[torch.arange(N) % K] + 1e3 * direction).to(dtype)
    out = _run(x, mix, device, moments="full")
    for t in out:
        assert torch.isfinite(t).all()
    assert rel_err(out.nk.sum(), torch.tensor(float(N), dtype=torch.float64)) <= tol_for(dtype, F64_TOL, F32_TOL)
    _check(out, _reference(x, mix, moments="full"), dtype, "full")


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
@pytest.mark.parametrize("dead", [0, 1], ids=["first", "middle"])  # first: an online log-sum-exp starts at -inf
def test_zero_weight_component(cov, dtype, device, dead):
    N, K, D = 200, 4, 3
    mix = make_mixture(K, D, cov, seed=44, dtype=dtype)
    lw = mix.log_weights.clone()
    lw[dead] = -math.inf
    mix = mix._replace(log_weights=lw)
    x = torch.cat([sample_mixture(mix, N // 2, seed=45)[0], mix.means[dead].expand(N // 2, D)])
    for moments in ("diag", "full"):
        out = _run(x, mix, device, moments=moments)
        for t in out:
            assert not torch.isnan(t).any()
        assert out.nk[dead].item() == 0.0
        assert (out.sum_x[dead] == 0).all() and (out.sum_xx[dead] == 0).all()
        assert torch.isfinite(out.log_lik_sum)
        _check(out, _reference(x, mix, moments=moments), dtype, moments)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_low_precision_computes_in_float32(cov, dtype, device):
    x, mix = _problem((80, 3, 4), cov, dtype, seed=46)
    shift = randn(3, 4, seed=47, dtype=dtype)
    out = _run(x, mix, device, shift=shift, moments="full")
    want = _run(x.float(), mix.to(dtype=torch.float32), device, shift=shift.float(), moments="full")
    for a, b in zip(out, want):
        assert a.dtype == torch.float64 and torch.equal(a, b)
    _check(out, _reference(x, mix, shift=shift, moments="full"), torch.float32, "full")


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_k1_statistics_are_plain_sums(dtype, device):
    # K = 1: every responsibility is 1, so nk = N and the moments are plain sums around the shift.
    x = randn(50, 3, seed=48, dtype=dtype)
    mix = make_mixture(1, 3, "diag", seed=49, dtype=dtype)
    out = _run(x, mix, device, moments="full")
    z = x.double() - mix.means.double()
    tol = tol_for(dtype, F64_TOL, F32_TOL)
    assert out.nk.item() == 50.0
    assert rel_err(out.sum_x, z.sum(0, keepdim=True)) <= tol
    assert rel_err(out.sum_xx, (z.T @ z)[None]) <= tol


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("K", [4, 32])
def test_nan_row_propagates(K, dtype, device):
    # A row with a NaN has an undefined log-likelihood: log_lik_sum must be NaN (as in the reference and as
    # row_logsumexp documents), not a finite or infinite number that looks like a valid fit.
    mix = make_mixture(K, 3, "diag", seed=65, dtype=dtype)
    x, _ = sample_mixture(mix, 5, seed=66)
    x[2, 1] = float("nan")
    out = _run(x, mix, device, moments="diag")
    want = _reference(x, mix, moments="diag")
    assert torch.isnan(want[3])
    assert torch.isnan(out.log_lik_sum), f"log_lik_sum = {out.log_lik_sum.item()} for data with a NaN row (K={K})"


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("moments", MOMENTS)
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_opcheck(cov, moments, device):
    x, mix = _problem((6, 3, 4), cov, torch.float64, seed=50)
    m = mix.to(device=device)
    factor = m.cov_factor if m.cov_factor is not None else torch.empty(0, dtype=torch.float64, device=device)
    shift = randn(3, 4, seed=51).to(device)
    args = (x.to(device), m.means, factor, m.log_weights, cov, shift, moments)
    torch.library.opcheck(torch.ops.mixdiff.estep_stats.default, args)


# ---------------------------------------------------------------------------------------------------
# Bad inputs: each must raise a RuntimeError naming the offending argument.
# ---------------------------------------------------------------------------------------------------
BAD_CASES = {
    "x_1d": (dict(x=lambda d: torch.zeros(4, device=d)), r"x must be 2-D"),
    "x_int": (dict(x=lambda d: torch.zeros(5, 4, dtype=torch.int32, device=d)), r"x must be a floating-point"),
    "d_mismatch": (dict(x=lambda d: torch.zeros(5, 3, device=d)), r"means has D=4 but x has D=3"),
    "k0": (
        dict(means=lambda d: torch.zeros(0, 4, device=d), cov_factor=lambda d: torch.ones(0, 4, device=d),
             log_weights=lambda d: torch.zeros(0, device=d), shift=lambda d: torch.zeros(0, 4, device=d)),
        r"means must have at least one row",
    ),
    "diag_factor_shape": (dict(cov_factor=lambda d: torch.ones(3, device=d)), r"diag cov_factor must have shape \[3, 4\]"),
    "spherical_factor_shape": (
        dict(covariance_type="spherical", cov_factor=lambda d: torch.ones(2, device=d)),
        r"spherical cov_factor must have shape \[3\]",
    ),
    "full_factor_shape": (
        dict(covariance_type="full", cov_factor=lambda d: torch.ones(3, 4, device=d)),
        r"full cov_factor must have shape \[3, 4, 4\]",
    ),
    "unknown_covariance_type": (dict(covariance_type="tied"), r"covariance_type must be .*got 'tied'"),
    "unknown_moments": (dict(moments="second"), r"moments must be 'none', 'diag' or 'full', got 'second'"),
    "nonpositive_factor": (
        dict(cov_factor=lambda d: torch.tensor([[1.0] * 4, [1.0, 1.0, 1.0, 0.0], [1.0] * 4], device=d)),
        r"cov_factor.*positive",
    ),
    "full_nonpositive_factor": (
        dict(covariance_type="full", cov_factor=lambda d: -torch.eye(4, device=d).expand(3, 4, 4)),
        r"cov_factor.*positive",
    ),
    "log_weights_shape": (dict(log_weights=lambda d: torch.zeros(2, device=d)), r"log_weights must have shape \[3\]"),
    "shift_shape": (dict(shift=lambda d: torch.zeros(3, 5, device=d)), r"shift must have the shape of means"),
    "shift_transposed": (dict(shift=lambda d: torch.zeros(4, 3, device=d)), r"shift must have the shape of means"),
    "shift_1d": (dict(shift=lambda d: torch.zeros(4, device=d)), r"shift must have the shape of means"),
    "shift_int": (dict(shift=lambda d: torch.zeros(3, 4, dtype=torch.int64, device=d)), r"shift must be a floating-point"),
}


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_inputs(case, device):
    overrides, match = BAD_CASES[case]
    cov = overrides.get("covariance_type", "diag")
    mix = make_mixture(3, 4, cov if cov in COVARIANCE_TYPES else "diag", seed=52, dtype=torch.float32).to(device=device)
    kwargs = dict(
        x=torch.zeros(5, 4, device=device), means=mix.means, cov_factor=mix.cov_factor, log_weights=mix.log_weights,
        covariance_type=cov, shift=None, moments="diag",
    )
    for name, value in overrides.items():
        kwargs[name] = value(device) if callable(value) else value
    with pytest.raises(RuntimeError, match=match):
        ops.estep_stats(kwargs.pop("x"), **kwargs)
