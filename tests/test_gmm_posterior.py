"""mixdiff::gmm_posterior: MAP labels, per-point log-likelihood and responsibilities of a mixture."""
from __future__ import annotations

import math

import pytest
import torch

from conftest import (
    COVARIANCE_TYPES,
    Mixture,
    assert_labels_match,
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

# float64: the op and the reference evaluate the same log-densities with different summation orders
# and (full) a different triangular solve; both are backward stable, ~1e-14 relative, so 1e-10 is safe.
F64_TOL = 1e-10
# float32: scores are sums of D <= 130 float32 terms plus a float32 exp polynomial (< 1.2e-7 relative)
# in the log-sum-exp; typical error ~1e-6 relative, so 1e-4 is safe and still catches formula errors.
F32_TOL = 1e-4

SHAPES = [
    (1, 1, 1),
    (2, 17, 3),
    (3, 33, 130),
    (4, 65, 1),
    (5, 1, 3),
    (7, 33, 1),
    (8, 65, 3),
    (9, 17, 130),
    (300, 5, 7),
    (1100, 3, 4),
]
DTYPES = [torch.float64, torch.float32]


def _shape_id(s):
    return "N{}_K{}_D{}".format(*s)


def _run(x, mix: Mixture, device, return_resp=True):
    m = mix.to(device=device)
    return ops.gmm_posterior(x.to(device), m.means, m.cov_factor, m.log_weights, m.covariance_type, return_resp)


def _reference(x, mix: Mixture):
    m = mix.f64()
    scores = ref_log_joint(x, mix)
    labels, log_lik, resp = ref.gmm_posterior(
        x.detach().cpu().double(), m.means, m.cov_factor, m.log_weights, m.covariance_type, True
    )
    return labels, log_lik, resp, scores


def _check(out, x, mix, dtype, check_resp=True):
    tol = tol_for(dtype, F64_TOL, F32_TOL)
    labels, log_lik, resp, scores = _reference(x, mix)
    assert_labels_match(out.labels, labels, scores, largest=True, dtype=dtype)
    err = rel_err(out.log_lik, log_lik)
    assert err <= tol, f"log_lik rel err {err:.3e} > {tol:.0e}"
    if check_resp:
        err = rel_err(out.resp, resp)
        assert err <= tol, f"resp rel err {err:.3e} > {tol:.0e}"


def _problem(shape, cov, dtype, seed):
    N, K, D = shape
    mix = make_mixture(K, D, cov, seed=seed, dtype=dtype)
    x, _ = sample_mixture(mix, N, seed=seed + 1)
    return x, mix


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=_shape_id)
def test_matches_reference(shape, cov, dtype, device):
    N, K, D = shape
    x, mix = _problem(shape, cov, dtype, seed=1000 + N + 7 * K + 31 * D + COVARIANCE_TYPES.index(cov))
    out = _run(x, mix, device)
    assert out.labels.dtype == torch.int64 and out.log_lik.dtype == dtype and out.resp.dtype == dtype
    assert out.labels.shape == (N,) and out.log_lik.shape == (N,) and out.resp.shape == (N, K)
    assert out.log_lik.device.type == device
    _check(out, x, mix, dtype)
    # Without responsibilities: same labels and log-likelihood, no [N, K] output.
    lean = _run(x, mix, device, return_resp=False)
    assert lean.resp is None
    assert torch.equal(lean.labels, out.labels) and torch.equal(lean.log_lik, out.log_lik)
    if device != "cpu":
        cpu = _run(x, mix, "cpu")
        tol = tol_for(dtype, F64_TOL, F32_TOL)
        scores = ref_log_joint(x, mix)
        assert_labels_match(out.labels, cpu.labels, scores, largest=True, dtype=dtype)
        assert rel_err(out.log_lik, cpu.log_lik) <= tol
        assert rel_err(out.resp, cpu.resp) <= tol


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("return_resp", [False, True], ids=["lean", "resp"])
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_opcheck(cov, return_resp, device):
    x, mix = _problem((6, 3, 4), cov, torch.float64, seed=7)
    m = mix.to(device=device)
    factor = m.cov_factor if m.cov_factor is not None else torch.empty(0, dtype=torch.float64, device=device)
    args = (x.to(device), m.means, factor, m.log_weights, cov, return_resp)
    torch.library.opcheck(torch.ops.mixdiff.gmm_posterior.default, args)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("cov", ["identity", "full"])
def test_empty_input(cov, dtype, device):
    mix = make_mixture(3, 4, cov, seed=3, dtype=dtype)
    x = torch.empty(0, 4, dtype=dtype)
    out = _run(x, mix, device)
    want = torch.float64 if dtype == torch.float64 else torch.float32
    assert out.labels.shape == (0,) and out.labels.dtype == torch.int64
    assert out.log_lik.shape == (0,) and out.log_lik.dtype == want
    assert out.resp.shape == (0, 3) and out.resp.dtype == want


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_non_contiguous(cov, dtype, device):
    N, K, D = 29, 5, 6
    mix = make_mixture(K, D, cov, seed=4, dtype=dtype).to(device=device)
    x, _ = sample_mixture(mix, N, seed=5)
    x = x.to(device)
    # Transposed / strided copies of every argument with identical values.
    xt = x.t().contiguous().t()
    x_strided = torch.zeros(2 * N, 3 * D, dtype=dtype, device=device)
    x_strided[::2, ::3] = x
    x_strided = x_strided[::2, ::3]
    means_t = mix.means.t().contiguous().t()
    lw = torch.zeros(2 * K, dtype=dtype, device=device)
    lw[::2] = mix.log_weights
    lw = lw[::2]
    factor = mix.cov_factor
    if cov == "diag":
        factor = factor.t().contiguous().t()
    elif cov == "full":
        factor = factor.transpose(1, 2).contiguous().transpose(1, 2)
    elif cov == "spherical":
        f = torch.ones(3 * K, dtype=dtype, device=device)
        f[::3] = factor
        factor = f[::3]
    strided = Mixture(means_t, factor, lw, cov)
    want = _run(x, mix, device)
    for xv in (xt, x_strided):
        assert not xv.is_contiguous()
        got = _run(xv, strided, device)
        assert torch.equal(got.labels, want.labels)
        assert torch.equal(got.log_lik, want.log_lik)
        assert torch.equal(got.resp, want.resp)
    _check(want, x, mix, dtype)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cov", ["spherical", "diag", "full"])
def test_tight_gaussians(cov, dtype, device):
    # sigma = 1e-3 in D = 128: log densities ~ +700 at the data, exp() of them overflows float32 (and the
    # other components' ~ -1e6 underflow), so only a max-shifted log-sum-exp gets log_lik right.
    N, K, D = 40, 4, 128
    mix = make_mixture(K, D, cov, seed=11, dtype=torch.float64, scale=1e-3).to(dtype=dtype)
    x, comp = sample_mixture(mix, N, seed=12)
    scores = ref_log_joint(x, mix)
    assert naive_log_lik_overflows(scores)
    out = _run(x, mix, device)
    assert torch.isfinite(out.log_lik).all()
    assert not torch.isnan(out.resp).any()
    _check(out, x, mix, dtype)
    assert torch.equal(out.labels.cpu(), comp)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_far_outliers(cov, dtype, device):
    # Points 1e3 away from every component: every density underflows (scores ~ -1e6), yet log_lik must be
    # finite and responsibilities a distribution.
    N, K, D = 30, 4, 6
    mix = make_mixture(K, D, cov, seed=13, dtype=dtype)
    direction = torch.nn.functional.normalize(randn(N, D, seed=14), dim=1)
    x = (mix.means.double()[torch.arange(N) % K] + 1e3 * direction).to(dtype)
    scores = ref_log_joint(x, mix)
    assert (scores.max(dim=1).values < -1e4).all()
    out = _run(x, mix, device)
    assert torch.isfinite(out.log_lik).all()
    assert not torch.isnan(out.resp).any()
    assert (out.resp >= 0).all()
    sums = out.resp.double().sum(dim=1).cpu()
    assert rel_err(sums, torch.ones(N, dtype=torch.float64)) <= tol_for(dtype, F64_TOL, F32_TOL)
    _check(out, x, mix, dtype)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
@pytest.mark.parametrize("dead", [0, 2], ids=["first", "middle"])  # first: an online log-sum-exp starts at -inf
def test_zero_weight_component(cov, dtype, device, dead):
    N, K, D = 200, 5, 3
    mix = make_mixture(K, D, cov, seed=15, dtype=dtype)
    lw = mix.log_weights.clone()
    lw[dead] = -math.inf
    mix = mix._replace(log_weights=lw)
    # Half the points sit right on the dead component's mean: it would win were its weight not zero.
    x = torch.cat([sample_mixture(mix, N // 2, seed=16)[0], mix.means[dead].expand(N // 2, D)])
    out = _run(x, mix, device)
    assert torch.isfinite(out.log_lik).all()
    assert not torch.isnan(out.resp).any()
    assert (out.resp[:, dead] == 0).all()
    assert (out.labels != dead).all()
    _check(out, x, mix, dtype)
    # Same as the mixture without that component (its log weights renormalise nothing: they already sum to
    # less than one, and dropping a zero-weight term changes no sum).
    keep = [k for k in range(K) if k != dead]
    sub = Mixture(mix.means[keep], None if mix.cov_factor is None else mix.cov_factor[keep], lw[keep], cov)
    sub_out = _run(x, sub, device)
    tol = tol_for(dtype, F64_TOL, F32_TOL)
    assert rel_err(out.log_lik, sub_out.log_lik) <= tol
    assert rel_err(out.resp[:, keep], sub_out.resp) <= tol


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_ties_resolve_to_lowest_index(cov, dtype, device):
    # Duplicated components (same mean, factor and weight), including across 16/32-component blocks. All
    # components share one factor and weight, so a point on a duplicated mean has the duplicates as MAP.
    N, K, D = 120, 40, 3
    mix = make_mixture(K, D, cov, seed=17, dtype=dtype, spread=4.0)
    dup = {35: 2, 39: 2, 20: 19}  # later index -> earlier index it copies
    means = mix.means.clone()
    for later, earlier in dup.items():
        means[later] = means[earlier]
    factor = None if mix.cov_factor is None else mix.cov_factor[:1].expand_as(mix.cov_factor).clone()
    mix = Mixture(means, factor, torch.full((K,), -math.log(K), dtype=dtype), cov)
    x = torch.cat([means[[2, 19]].repeat(3, 1), sample_mixture(mix, N, seed=18)[0]])
    out = _run(x, mix, device)
    labels = out.labels.cpu()
    assert labels[:6].tolist() == [2, 19] * 3
    assert not torch.isin(labels, torch.tensor(list(dup))).any()
    for later, earlier in dup.items():
        assert torch.equal(out.resp[:, later], out.resp[:, earlier])
    # Against the reference (whose argmax also takes the first of equal scores); the float32 near-tie
    # margin is measured between distinct components only.
    want, log_lik, resp, scores = _reference(x, mix)
    distinct = [k for k in range(K) if k not in dup]
    assert_labels_match(labels, want, scores[:, distinct], largest=True, dtype=dtype)
    tol = tol_for(dtype, F64_TOL, F32_TOL)
    assert rel_err(out.log_lik, log_lik) <= tol and rel_err(out.resp, resp) <= tol


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_low_precision_computes_in_float32(cov, dtype, device):
    mix = make_mixture(4, 5, cov, seed=19, dtype=dtype)
    x, _ = sample_mixture(mix, 60, seed=20)
    out = _run(x, mix, device)
    assert out.log_lik.dtype == torch.float32 and out.resp.dtype == torch.float32
    want = _run(x.float(), mix.to(dtype=torch.float32), device)
    assert torch.equal(out.labels, want.labels)
    assert torch.equal(out.log_lik, want.log_lik)
    assert torch.equal(out.resp, want.resp)
    _check(out, x, mix, torch.float32)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_full_factor_upper_triangle_ignored(dtype, device):
    mix = make_mixture(3, 5, "full", seed=21, dtype=dtype)
    x, _ = sample_mixture(mix, 50, seed=22)
    garbage = mix.cov_factor + torch.triu(randn(3, 5, 5, seed=23, dtype=dtype), diagonal=1)
    got = _run(x, mix._replace(cov_factor=garbage), device)
    want = _run(x, mix, device)
    assert torch.equal(got.labels, want.labels) and torch.equal(got.log_lik, want.log_lik)
    _check(got, x, mix, dtype)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_k1_log_lik_is_the_gaussian_log_density(dtype, device):
    # K = 1, D = 1, identity: log_lik = -0.5 log(2 pi) - 0.5 (x - mu)^2 in closed form.
    x = randn(9, 1, seed=24, dtype=dtype)
    mix = Mixture(torch.tensor([[0.25]], dtype=dtype), None, torch.zeros(1, dtype=dtype), "identity")
    out = _run(x, mix, device)
    want = -0.5 * math.log(2 * math.pi) - 0.5 * (x.double().squeeze(1) - 0.25) ** 2
    assert out.labels.tolist() == [0] * 9
    assert torch.equal(out.resp.cpu(), torch.ones(9, 1, dtype=dtype))
    assert rel_err(out.log_lik, want) <= tol_for(dtype, F64_TOL, F32_TOL)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("K", [1, 4, 16, 17, 32, 33])
def test_nan_row_gets_label_0_and_nan(K, dtype, device):
    # A row with a NaN has NaN scores for every component. Documented (cpu_tiles.h, row_logsumexp: "NaN
    # when the row has NaN", arg-max 0 when nothing compares) and reference behaviour: label 0 -- never an
    # index outside [0, K) -- and log_lik NaN; the other rows are unaffected.
    mix = make_mixture(K, 3, "diag", seed=63, dtype=dtype)
    x, _ = sample_mixture(mix, 5, seed=64)
    clean = _run(x, mix, device)
    x[2, 1] = float("nan")
    out = _run(x, mix, device)
    want_labels, want_ll, _, _ = _reference(x, mix)
    assert want_labels[2].item() == 0 and torch.isnan(want_ll[2])
    assert out.labels[2].item() == 0, f"NaN row got label {out.labels[2].item()} (K={K})"
    assert torch.isnan(out.log_lik[2]), f"NaN row got log_lik {out.log_lik[2].item()}"
    assert torch.isnan(out.resp[2]).all()
    keep = [0, 1, 3, 4]
    assert torch.equal(out.labels[keep], clean.labels[keep]) and torch.equal(out.log_lik[keep], clean.log_lik[keep])


# ---------------------------------------------------------------------------------------------------
# Bad inputs: each must raise a RuntimeError naming the offending argument.
# ---------------------------------------------------------------------------------------------------
def _good(device, cov="diag", K=3, D=4):
    mix = make_mixture(K, D, cov, seed=25, dtype=torch.float32).to(device=device)
    return dict(
        x=torch.zeros(5, D, device=device),
        means=mix.means,
        cov_factor=mix.cov_factor,
        log_weights=mix.log_weights,
        covariance_type=cov,
    )


BAD_CASES = {
    "x_1d": (dict(x=lambda d: torch.zeros(4, device=d)), r"x must be 2-D"),
    "x_3d": (dict(x=lambda d: torch.zeros(5, 4, 1, device=d)), r"x must be 2-D"),
    "x_int": (dict(x=lambda d: torch.zeros(5, 4, dtype=torch.int64, device=d)), r"x must be a floating-point"),
    "means_1d": (dict(means=lambda d: torch.zeros(4, device=d)), r"means must be 2-D"),
    "d_mismatch": (dict(x=lambda d: torch.zeros(5, 7, device=d)), r"means has D=4 but x has D=7"),
    "k0": (
        dict(means=lambda d: torch.zeros(0, 4, device=d), cov_factor=lambda d: torch.ones(0, 4, device=d),
             log_weights=lambda d: torch.zeros(0, device=d)),
        r"means must have at least one row",
    ),
    "diag_factor_shape": (dict(cov_factor=lambda d: torch.ones(3, 5, device=d)), r"diag cov_factor must have shape \[3, 4\]"),
    "diag_factor_transposed": (dict(cov_factor=lambda d: torch.ones(4, 3, device=d)), r"diag cov_factor must have shape"),
    "spherical_factor_shape": (
        dict(covariance_type="spherical", cov_factor=lambda d: torch.ones(3, 4, device=d)),
        r"spherical cov_factor must have shape \[3\]",
    ),
    "spherical_factor_missing": (dict(covariance_type="spherical", cov_factor=None), r"spherical cov_factor must have shape"),
    "full_factor_shape": (
        dict(covariance_type="full", cov_factor=lambda d: torch.eye(4, device=d).expand(3, 4, 4)[:, :, :3]),
        r"full cov_factor must have shape \[3, 4, 4\]",
    ),
    "full_factor_2d": (
        dict(covariance_type="full", cov_factor=lambda d: torch.eye(4, device=d)),
        r"full cov_factor must have shape",
    ),
    "factor_int": (dict(cov_factor=lambda d: torch.ones(3, 4, dtype=torch.int64, device=d)), r"cov_factor must be a floating-point"),
    "unknown_covariance_type": (dict(covariance_type="tied"), r"covariance_type must be .*got 'tied'"),
    "covariance_type_case": (dict(covariance_type="Diag"), r"covariance_type must be .*got 'Diag'"),
    "spherical_zero_factor": (
        dict(covariance_type="spherical", cov_factor=lambda d: torch.tensor([1.0, 0.0, 2.0], device=d)),
        r"cov_factor.*positive",
    ),
    "diag_negative_factor": (
        dict(cov_factor=lambda d: torch.tensor([[1.0] * 4, [1.0] * 4, [1.0, 1.0, -0.5, 1.0]], device=d)),
        r"cov_factor.*positive",
    ),
    "diag_nan_factor": (
        dict(cov_factor=lambda d: torch.tensor([[1.0] * 4, [1.0, math.nan, 1.0, 1.0], [1.0] * 4], device=d)),
        r"cov_factor.*positive",
    ),
    "full_negative_diagonal": (
        dict(covariance_type="full",
             cov_factor=lambda d: torch.diag_embed(torch.tensor([[1.0] * 4, [1.0] * 4, [1.0, 1.0, 1.0, -1.0]], device=d))),
        r"cov_factor.*positive",
    ),
    "log_weights_long": (dict(log_weights=lambda d: torch.zeros(4, device=d)), r"log_weights must have shape \[3\]"),
    "log_weights_2d": (dict(log_weights=lambda d: torch.zeros(3, 1, device=d)), r"log_weights must have shape \[3\]"),
    "log_weights_int": (dict(log_weights=lambda d: torch.zeros(3, dtype=torch.int64, device=d)), r"log_weights must be a floating-point"),
}


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_inputs(case, device):
    overrides, match = BAD_CASES[case]
    cov = overrides.get("covariance_type", "diag")
    kwargs = _good(device, cov=cov if cov in COVARIANCE_TYPES else "diag")
    for name, value in overrides.items():
        kwargs[name] = value(device) if callable(value) else value
    if kwargs["covariance_type"] == "full" and "cov_factor" not in overrides:
        kwargs["cov_factor"] = torch.eye(4, device=device).expand(3, 4, 4)
    with pytest.raises(RuntimeError, match=match):
        ops.gmm_posterior(kwargs.pop("x"), **kwargs)
