"""mixdiff::q_sample: forward noising centred on each row's mixture component, in one pass over x0:

    x_t = mu_j + signal (x0 - mu_j) + noise_scale (A_j eps),

eps from row offset + i of the forward-noise stream (3) of `seed` unless given, j given or the nearest
mean (ties to the lowest index). Returns x_t, eps (the training target) and the labels used. The
reference (_reference.q_sample) is evaluated in float64 on the op's inputs rounded to its compute dtype,
with eps from ref.normals in the compute dtype (the float32 layout differs from the float64 one).
"""
from __future__ import annotations

import pytest
import torch

from conftest import (COVARIANCE_TYPES, HAS_CUDA, assert_labels_match, assert_rel_close, compute_dtype,
                      devices, frac_equal, gen, make_mixture, rel_err, sample_mixture, standard_mixture, tol_for)
from mixdiff_ext import _reference as ref
from mixdiff_ext import ops

# float64: the op's eps are the reference's up to glibc vs torch log / cos / sin (~1e-16) and x_t is the
# same three-term expression (full: a different summation order); errors ~1e-16 relative, so 1e-12.
F64_TOL = 1e-12
# float32: the op's eps differ from the reference's by <= 4e-6 absolute (the reference's float32 theta
# rounding dominates, tests/test_normals.py), times noise_scale * |A| <= ~2, plus float32 rounding of the
# three terms (~1e-7 relative to max |x_t| >= ~3): measured <= 3e-7; 1e-5 is safe, and a wrong stream,
# row, label or coefficient changes x_t by O(1).
F32_TOL = 1e-5
F32_EPS_ABS = 4e-6
DTYPES = [torch.float64, torch.float32]

# (K, D, N): K = 1; D = 1 and D not a multiple of 4 / 16 (partial blocks and vectors); N past one
# 16-row block and not a multiple of the parallel grain.
SHAPES = [(1, 1, 5), (3, 4, 517), (5, 7, 100), (4, 33, 70)]


def _shape_id(s):
    return "K{}_D{}_N{}".format(*s)


class Case:
    """Inputs of one q_sample call (CPU tensors in `dtype`)."""

    def __init__(self, K, D, N, cov, dtype, seed, spread=3.0, scale=1.0):
        self.mix = make_mixture(K, D, cov, seed=seed, dtype=dtype, spread=spread, scale=scale)
        self.x0, self.comp = sample_mixture(self.mix, N, seed=seed + 1)
        g = gen(seed + 2)
        t = torch.rand(N, generator=g, dtype=torch.float64)  # abar in (0, 1): signal^2 + noise_scale^2 = 1
        self.signal = torch.sqrt(t).to(dtype)
        self.noise_scale = torch.sqrt(1 - t).to(dtype)
        self.cov = cov

    def run(self, seed, offset=0, labels=None, noise=None, device="cpu", **override) -> ops.ForwardSample:
        m = self.mix.to(device=device)
        args = dict(x0=self.x0, signal=self.signal, noise_scale=self.noise_scale, means=m.means,
                    cov_factor=m.cov_factor, covariance_type=self.cov, seed=seed, offset=offset, labels=labels,
                    noise=noise)
        args.update(override)
        args = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in args.items()}
        return ops.q_sample(**args)


def _reference(case: Case, seed: int, offset: int, labels: torch.Tensor, noise: torch.Tensor | None = None):
    """(x_t, eps) in float64 for the given labels, from the inputs rounded to the compute dtype."""
    cd = compute_dtype(case.x0.dtype)
    N, D = case.x0.shape
    rows = torch.arange(offset, offset + N)
    eps = ref.normals(seed, ref.STREAM_FORWARD_NOISE, rows, D, cd) if noise is None else noise.to(cd)
    m = case.mix.to(dtype=cd).f64()

    def f64(t):
        return t.to(cd).double()

    x_t, eps64, _ = ref.q_sample(f64(case.x0), labels.cpu(), f64(case.signal), f64(case.noise_scale), m.means,
                                 m.cov_factor, case.cov, eps.double(), seed, offset)
    return x_t, eps64


def _nearest_scores(x0: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    cd = compute_dtype(x0.dtype)
    x, c = x0.to(cd).double(), means.to(cd).double()
    return ((x[:, None, :] - c[None]) ** 2).sum(-1)


def _check(out: ops.ForwardSample, case: Case, seed: int, offset: int, labels=None, noise=None, device="cpu"):
    """Outputs' dtype/shape/device, labels (given, or the reference's nearest), eps and x_t vs the reference."""
    N, D = case.x0.shape
    cd = compute_dtype(case.x0.dtype)
    assert out.x_t.dtype == cd and out.eps.dtype == cd and out.labels.dtype == torch.int64
    assert out.x_t.shape == (N, D) and out.eps.shape == (N, D) and out.labels.shape == (N,)
    assert out.x_t.device.type == device and out.eps.device.type == device and out.labels.device.type == device
    got_labels = out.labels.cpu()
    if labels is not None:
        assert torch.equal(got_labels, labels.cpu()), "given labels must be returned unchanged"
    else:
        m = case.mix.to(dtype=cd).f64()
        want, _ = ref.assign_nearest(case.x0.to(cd).double(), m.means)
        assert_labels_match(got_labels, want, _nearest_scores(case.x0, case.mix.means), largest=False, dtype=cd)
    want_x_t, want_eps = _reference(case, seed, offset, got_labels, noise)
    if noise is not None:
        assert torch.equal(out.eps.cpu(), noise.to(cd).cpu()), "eps must be the given noise"
    elif cd == torch.float32:
        err = (out.eps.cpu().double() - want_eps).abs().max().item() if N else 0.0
        assert err <= F32_EPS_ABS, f"eps vs ref.normals: max abs err {err:.3e} > {F32_EPS_ABS:.0e}"
    tol = tol_for(cd, F64_TOL, F32_TOL)
    assert_rel_close(out.eps, want_eps, tol, "eps")
    assert_rel_close(out.x_t, want_x_t, tol, "x_t")


# ---------------------------------------------------------------------------------------------------
# Against the reference
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("given", [True, False], ids=["labels", "nearest"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=_shape_id)
def test_matches_reference(shape, cov, dtype, given, device):
    K, D, N = shape
    case = Case(K, D, N, cov, dtype, seed=1000 + 7 * K + 31 * D + COVARIANCE_TYPES.index(cov))
    seed, offset = 555 + D, 3 * K + 1
    labels = case.comp if given else None
    out = case.run(seed, offset, labels=labels, device=device)
    _check(out, case, seed, offset, labels=labels, device=device)
    if not given:  # the fused assignment is the op's own nearest assignment
        assert torch.equal(out.labels.cpu(), ops.assign_nearest(case.x0, case.mix.means).labels)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_explicit_noise(cov, dtype, device):
    case = Case(4, 6, 130, cov, dtype, seed=2000 + COVARIANCE_TYPES.index(cov))
    noise = torch.randn(130, 6, generator=gen(2010), dtype=torch.float64).to(dtype)
    for given in (True, False):
        labels = case.comp if given else None
        out = case.run(seed=1, labels=labels, noise=noise, device=device)
        _check(out, case, 1, 0, labels=labels, noise=noise, device=device)
        # eps is the given noise, so seed and offset do not matter.
        other = case.run(seed=999, offset=12345, labels=labels, noise=noise, device=device)
        assert torch.equal(other.x_t, out.x_t) and torch.equal(other.eps, out.eps)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_eps_is_the_noise_used(cov, dtype, device):
    # From the op's own outputs: x_t - mu_j - signal (x0 - mu_j) == noise_scale (A_j eps), in float64, to
    # the rounding of x_t and the three terms in the compute dtype (float32: a few ulp of the largest
    # term, here <= 1e-6 of max |x_t|, |mu|, |x0|; float64: 1e-14).
    case = Case(5, 9, 257, cov, dtype, seed=2100 + COVARIANCE_TYPES.index(cov))
    out = case.run(seed=77, offset=5, device=device)
    cd = compute_dtype(dtype)
    m = case.mix.to(dtype=cd).f64()
    j = out.labels.cpu()
    x0, s, n = case.x0.to(cd).double(), case.signal.to(cd).double(), case.noise_scale.to(cd).double()
    mu = m.means[j]
    lhs = out.x_t.cpu().double() - mu - s[:, None] * (x0 - mu)
    rhs = n[:, None] * ref.apply_factor(m.cov_factor, cov, j, out.eps.cpu().double())
    scale = max(out.x_t.abs().max().item(), mu.abs().max().item(), x0.abs().max().item())
    err = (lhs - rhs).abs().max().item() / scale
    assert err <= tol_for(cd, 1e-14, 1e-6), f"x_t is not mu + s (x0 - mu) + n A eps: err {err:.2e}"
    assert (rhs.abs() > 0.1).double().mean().item() > 0.5, "the noise term is not exercised"


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_standard_prior_is_ddpm(dtype, device):
    # K = 1, mean 0, identity: x_t = sqrt(abar) x0 + sqrt(1 - abar) eps (DDPM), eps the stream's normals.
    N, D, seed = 300, 10, 8
    std = standard_mixture(D, dtype, device)
    x0 = torch.randn(N, D, generator=gen(2200), dtype=torch.float64).to(dtype)
    abar = torch.linspace(0.01, 0.99, N, dtype=torch.float64)
    a, b = torch.sqrt(abar).to(dtype), torch.sqrt(1 - abar).to(dtype)
    out = ops.q_sample(x0.to(device), a.to(device), b.to(device), std.means, None, "identity", seed)
    assert torch.equal(out.labels.cpu(), torch.zeros(N, dtype=torch.int64))
    eps = ref.normals(seed, ref.STREAM_FORWARD_NOISE, torch.arange(N), D, dtype)
    assert_rel_close(out.eps, eps, tol_for(dtype, F64_TOL, F32_TOL), "eps")
    ddpm = a.double()[:, None] * x0.double() + b.double()[:, None] * out.eps.cpu().double()
    assert_rel_close(out.x_t, ddpm, tol_for(dtype, 1e-14, 1e-6), "x_t vs sqrt(abar) x0 + sqrt(1 - abar) eps")


# ---------------------------------------------------------------------------------------------------
# The fused nearest assignment
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("K", [1, 4, 17, 33])
def test_nearest_ties_and_nan_row(K, dtype, device):
    # K = 17, 33 leave padding in the 16/32-wide component blocks. Rows 0-2: exactly between two means
    # (lowest index wins); row 3: a NaN (label 0 as assign_nearest, NaN only where x0 is NaN, eps drawn
    # as usual); the rest: random. Other rows are unaffected by the NaN row.
    D, N = 3, 40
    # Dyadic values, exact in both dtypes, so that the ties below are exact.
    means = (torch.randn(K, D, generator=gen(2300 + K), dtype=torch.float64) * 12).round() / 4
    x0 = (torch.randn(N, D, generator=gen(2301), dtype=torch.float64) * 12).round() / 4
    if K > 1:  # means 0 and K-1 far from the others; rows 0-2 at squared distance exactly 1 from both
        means[0] = torch.tensor([100.0, 0.5, -0.25], dtype=torch.float64)
        means[K - 1] = means[0] + torch.tensor([2.0, 0.0, 0.0], dtype=torch.float64)
        x0[0:3] = means[0] + torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    means, x0 = means.to(dtype), x0.to(dtype)
    signal = torch.full((N,), 0.6, dtype=dtype)
    noise_scale = torch.full((N,), 0.8, dtype=dtype)

    def run(x):
        return ops.q_sample(x.to(device), signal.to(device), noise_scale.to(device), means.to(device), None,
                            "identity", 21, 2)

    clean = run(x0)
    x0[3, 1] = float("nan")
    out = run(x0)
    want, _ = ref.assign_nearest(x0.double(), means.double())
    labels = out.labels.cpu()
    assert want[3].item() == 0 and labels[3].item() == 0, f"NaN row got label {labels[3].item()}"
    if K > 1:
        assert labels[:3].tolist() == [0, 0, 0], f"ties must go to the lowest index, got {labels[:3].tolist()}"
    assert torch.equal(labels, want)
    keep = [i for i in range(N) if i != 3]
    assert torch.equal(out.x_t[keep], clean.x_t[keep]) and torch.equal(out.labels[keep], clean.labels[keep])
    assert torch.equal(out.eps, clean.eps), "eps must not depend on x0"
    row = out.x_t[3].cpu()
    assert torch.isnan(row[1]) and bool(torch.isfinite(row[[0, 2]]).all())
    # The NaN row's finite elements still follow the formula with label 0.
    mu, e = means[0].double(), out.eps[3].cpu().double()
    want_row = mu + 0.6 * (x0[3].double() - mu) + 0.8 * e
    err = (row[[0, 2]].double() - want_row[[0, 2]]).abs().max().item()
    assert err <= tol_for(dtype, 1e-12, 1e-5), f"finite elements of the NaN row: abs err {err:.2e}"


# ---------------------------------------------------------------------------------------------------
# Shapes, layouts, dtypes
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_empty_batch(cov, dtype, device):
    mix = make_mixture(3, 5, cov, seed=2400, dtype=dtype).to(device=device)
    x0 = torch.empty(0, 5, dtype=dtype, device=device)
    e = torch.empty(0, dtype=dtype, device=device)
    for labels in (None, torch.empty(0, dtype=torch.int64, device=device)):
        out = ops.q_sample(x0, e, e, mix.means, mix.cov_factor, cov, 1, labels=labels)
        cd = compute_dtype(dtype)
        assert out.x_t.shape == (0, 5) and out.eps.shape == (0, 5) and out.labels.shape == (0,)
        assert out.x_t.dtype == cd and out.eps.dtype == cd and out.labels.dtype == torch.int64
        assert out.x_t.device.type == device
    # D = 0: rows without elements; every mean is at distance 0, so the nearest is component 0.
    x0 = torch.empty(4, 0, dtype=dtype, device=device)
    s = torch.ones(4, dtype=dtype, device=device)
    means = torch.empty(2, 0, dtype=dtype, device=device)
    factor = {"identity": None, "spherical": torch.ones(2, dtype=dtype, device=device),
              "diag": torch.ones(2, 0, dtype=dtype, device=device),
              "full": torch.ones(2, 0, 0, dtype=dtype, device=device)}[cov]
    out = ops.q_sample(x0, s, s, means, factor, cov, 1)
    assert out.x_t.shape == (4, 0) and out.eps.shape == (4, 0) and out.labels.tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_non_contiguous(cov, dtype, device):
    N, K, D = 37, 4, 6
    case = Case(K, D, N, cov, dtype, seed=2500 + COVARIANCE_TYPES.index(cov))
    noise = torch.randn(N, D, generator=gen(2510), dtype=torch.float64).to(dtype)

    def nc(t):
        """A non-contiguous view with t's values."""
        if t is None:
            return None
        if t.dim() == 1:
            return torch.stack([t, t], -1)[:, 0]
        return t.mT.contiguous().mT

    for labels in (case.comp, None):
        for nz in (None, noise):
            want = case.run(seed=3, offset=1, labels=labels, noise=nz, device=device)
            views = dict(x0=nc(case.x0), signal=nc(case.signal), noise_scale=nc(case.noise_scale),
                         means=nc(case.mix.means), cov_factor=nc(case.mix.cov_factor),
                         labels=nc(labels), noise=nc(nz))
            for name, v in views.items():
                if v is not None:
                    assert not v.is_contiguous(), name
            got = case.run(seed=3, offset=1, device=device, **views)
            for k in range(3):
                assert torch.equal(got[k], want[k]), f"output {k} differs for non-contiguous inputs"
    # An expanded (stride 0) x0 and signal.
    x0 = case.x0[:1].expand(N, D)
    s = case.signal[:1].expand(N)
    got = case.run(seed=3, device=device, x0=x0, signal=s)
    want = case.run(seed=3, device=device, x0=x0.contiguous(), signal=s.contiguous())
    assert torch.equal(got.x_t, want.x_t) and torch.equal(got.labels, want.labels)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_half_inputs_return_float32(cov, dtype, device):
    case = Case(3, 5, 64, cov, dtype, seed=2600 + COVARIANCE_TYPES.index(cov))
    noise = torch.randn(64, 5, generator=gen(2610), dtype=torch.float64).to(dtype)
    for labels in (case.comp, None):
        for nz in (None, noise):
            out = case.run(seed=4, offset=3, labels=labels, noise=nz, device=device)
            assert out.x_t.dtype == torch.float32 and out.eps.dtype == torch.float32
            # Exactly the float32 op on the up-cast inputs (the casts are exact).
            up = {k: getattr(case, k).float() for k in ("x0", "signal", "noise_scale")}
            m = case.mix.to(dtype=torch.float32)
            want = case.run(seed=4, offset=3, labels=labels, noise=None if nz is None else nz.float(), device=device,
                            means=m.means, cov_factor=m.cov_factor, **up)
            for k in range(3):
                assert torch.equal(out[k], want[k])
            _check(out, case, 4, 3, labels=labels, noise=nz, device=device)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_factor_conventions(cov, device):
    case = Case(4, 5, 50, cov, torch.float64, seed=2700 + COVARIANCE_TYPES.index(cov))
    want = case.run(seed=5, labels=case.comp, device=device)
    if cov == "identity":  # identity ignores whatever factor it is given
        got = case.run(seed=5, labels=case.comp, device=device, cov_factor=torch.full((4, 5), 7.0, dtype=torch.float64))
        assert torch.equal(got.x_t, want.x_t)
    if cov == "full":  # only the lower triangle is read
        f = case.mix.cov_factor
        junk = f + torch.triu(torch.full_like(f, 3.0), diagonal=1)
        got = case.run(seed=5, labels=case.comp, device=device, cov_factor=junk)
        assert rel_err(got.x_t, want.x_t) <= F64_TOL


# ---------------------------------------------------------------------------------------------------
# Batches, threads, seeds
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_batch_invariance_nearest(cov, dtype, device):
    # labels=None: 1000 rows at once == batches of 7 with the offset advanced, bit for bit.
    N = 1000
    case = Case(6, 13, N, cov, dtype, seed=2800 + COVARIANCE_TYPES.index(cov))
    whole = case.run(seed=6, offset=11, device=device)
    parts = [case.run(seed=6, offset=11 + i, device=device, x0=case.x0[i:i + 7], signal=case.signal[i:i + 7],
                      noise_scale=case.noise_scale[i:i + 7]) for i in range(0, N, 7)]
    for k in range(3):
        assert torch.equal(whole[k], torch.cat([p[k] for p in parts])), f"output {k} differs in batches"


def test_thread_count_invariance():
    case = Case(5, 20, 3000, "full", torch.float32, seed=2900)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = case.run(seed=7, offset=3)
        torch.set_num_threads(max(2, before))
        many = case.run(seed=7, offset=3)
    finally:
        torch.set_num_threads(before)
    for k in range(3):
        assert torch.equal(one[k], many[k])


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_seeds_and_offsets(dtype, device):
    case = Case(3, 8, 200, "diag", dtype, seed=3000)
    base = case.run(seed=10, offset=0, labels=case.comp, device=device)
    assert torch.equal(case.run(seed=10, offset=0, labels=case.comp, device=device).eps, base.eps)
    for seed, offset in [(11, 0), (10 + 2**32, 0), (-1, 0), (10, 1), (10, 2**32)]:
        other = case.run(seed=seed, offset=offset, labels=case.comp, device=device)
        assert frac_equal(other.eps, base.eps) < 0.01, f"seed={seed} offset={offset}: eps repeat"
        _check(other, case, seed, offset, labels=case.comp, device=device)
    # The forward stream is not the prior's: q_sample's eps are not prior_sample's noise for the same rows.
    std = standard_mixture(8, dtype, device)
    prior_eps = ops.prior_sample(std.means, std.log_weights, None, "identity", 200, 10).x
    assert frac_equal(prior_eps, base.eps) < 0.01


# ---------------------------------------------------------------------------------------------------
# opcheck and bad inputs
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize(
    "cov, given, with_noise",
    [("identity", True, False), ("spherical", False, False), ("diag", True, True), ("full", False, True)],
    ids=["identity-labels", "spherical-nearest", "diag-labels-noise", "full-nearest-noise"],
)
def test_opcheck(cov, given, with_noise, device):
    case = Case(3, 4, 6, cov, torch.float64, seed=3100)
    m = case.mix.to(device=device)
    factor = m.cov_factor if m.cov_factor is not None else torch.empty(0, dtype=torch.float64, device=device)
    labels = case.comp.to(device) if given else None
    noise = torch.randn(6, 4, generator=gen(3101), dtype=torch.float64).to(device) if with_noise else None
    args = (case.x0.to(device), labels, case.signal.to(device), case.noise_scale.to(device), m.means, factor, cov,
            noise, 2**40 + 3, 5)
    torch.library.opcheck(torch.ops.mixdiff.q_sample.default, args)


N_BAD, K_BAD, D_BAD = 5, 3, 4


def _bad_base(device):
    case = Case(K_BAD, D_BAD, N_BAD, "diag", torch.float32, seed=3200)
    m = case.mix.to(device=device)
    return dict(x0=case.x0.to(device), signal=case.signal.to(device), noise_scale=case.noise_scale.to(device),
                means=m.means, cov_factor=m.cov_factor, covariance_type="diag", seed=1, offset=0,
                labels=case.comp.to(device), noise=None)


def _t(*shape, dtype=torch.float32, fill=1.0):
    return lambda d: torch.full(shape, fill, dtype=dtype, device=d)


BAD_CASES = {
    "signal_long": (dict(signal=_t(N_BAD + 1)), r"signal must have shape \[5\]"),
    "signal_2d": (dict(signal=_t(N_BAD, 1)), r"signal must have shape \[5\]"),
    "signal_int": (dict(signal=_t(N_BAD, dtype=torch.int64)), r"signal must be a floating-point"),
    "noise_scale_short": (dict(noise_scale=_t(N_BAD - 1)), r"noise_scale must have shape \[5\]"),
    "noise_scale_scalar": (dict(noise_scale=_t()), r"noise_scale must have shape \[5\]"),
    "labels_short": (dict(labels=_t(N_BAD - 1, dtype=torch.int64, fill=0)), r"labels must have shape \[5\]"),
    "labels_int32": (dict(labels=_t(N_BAD, dtype=torch.int32, fill=0)), r"labels must be int64"),
    "labels_float": (dict(labels=_t(N_BAD, fill=0.0)), r"labels must be int64"),
    "labels_negative": (dict(labels=_t(N_BAD, dtype=torch.int64, fill=-1)), r"labels must lie in \[0, 3\)"),
    "labels_too_large": (dict(labels=_t(N_BAD, dtype=torch.int64, fill=3)), r"labels must lie in \[0, 3\)"),
    "noise_shape": (dict(noise=_t(N_BAD, D_BAD + 1)), r"noise must have x's shape"),
    "noise_rows": (dict(noise=_t(N_BAD + 1, D_BAD)), r"noise must have x's shape"),
    "noise_int": (dict(noise=_t(N_BAD, D_BAD, dtype=torch.int64)), r"noise must be a floating-point"),
    "x0_int": (dict(x0=_t(N_BAD, D_BAD, dtype=torch.int64)), r"x0? must be a floating-point"),
    "x0_1d": (dict(x0=_t(N_BAD)), r"x0? must be 2-D"),
    "means_d_mismatch": (dict(means=_t(K_BAD, D_BAD + 1)), r"means has D=5 but x0? has D=4"),
    "means_int": (dict(means=_t(K_BAD, D_BAD, dtype=torch.int64)), r"means must be a floating-point"),
    "covariance_type": (dict(covariance_type="tied"), r"covariance_type must be .*got 'tied'"),
    "offset_negative": (dict(offset=-1), r"offset must be >= 0, got -1"),
    "factor_zero": (dict(cov_factor=_t(K_BAD, D_BAD, fill=0.0)), r"cov_factor must have a positive diagonal"),
    "factor_negative_spherical": (
        dict(covariance_type="spherical", cov_factor=_t(K_BAD, fill=-1.0)), r"cov_factor must have a positive diagonal"
    ),
    "factor_full_nonpositive": (
        dict(covariance_type="full", cov_factor=lambda d: -torch.eye(D_BAD, device=d).expand(K_BAD, D_BAD, D_BAD)),
        r"cov_factor must have a positive diagonal",
    ),
    "factor_shape": (dict(cov_factor=_t(K_BAD)), r"diag cov_factor must have shape \[3, 4\]"),
    "full_factor_shape": (dict(covariance_type="full", cov_factor=_t(K_BAD, D_BAD)),
                          r"full cov_factor must have shape \[3, 4, 4\]"),
}


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_inputs(case, device):
    overrides, match = BAD_CASES[case]
    kwargs = _bad_base(device)
    for name, value in overrides.items():
        kwargs[name] = value(device) if callable(value) else value
    with pytest.raises(RuntimeError, match=match):
        ops.q_sample(**kwargs)


# ---------------------------------------------------------------------------------------------------
# CUDA against the CPU op
# ---------------------------------------------------------------------------------------------------
@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device and a CUDA build")
@pytest.mark.parametrize("given", [True, False], ids=["labels", "nearest"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_cuda_matches_cpu(cov, dtype, given):
    # The same integers on both devices: labels equal (well-separated data: no near-ties); eps and x_t to
    # float rounding (1e-5 float32, 1e-12 float64, relative to the largest entry).
    case = Case(6, 37, 2051, cov, dtype, seed=3300 + COVARIANCE_TYPES.index(cov), spread=5.0)
    labels = case.comp if given else None
    for seed, offset in ((12, 0), (-1, 2**32 - 1000)):
        cpu = case.run(seed, offset, labels=labels)
        gpu = case.run(seed, offset, labels=labels, device="cuda")
        assert torch.equal(gpu.labels.cpu(), cpu.labels), "labels differ between CUDA and the CPU"
        tol = tol_for(compute_dtype(dtype), F64_TOL, F32_TOL)
        assert_rel_close(gpu.eps, cpu.eps, tol, "CUDA vs CPU eps")
        assert_rel_close(gpu.x_t, cpu.x_t, tol, "CUDA vs CPU x_t")
        _check(gpu, case, seed, offset, labels=labels, device="cuda")
