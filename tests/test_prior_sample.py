"""mixdiff::prior_sample: n draws from a Gaussian mixture with their components (counter-based Philox).

Sample i is row offset + i of the Philox4x32-10 stream of `seed`: its component is drawn by inverse CDF
of a float64 uniform (stream 1) and its noise by Box-Muller (stream 2; a block gives R = 4 float32 or
R = 2 float64 normals, element m * B + j of a row is normal m of block j, B = ceil(D / R)), then
x = mu_j + A_j eps. The pure-torch reference in _reference.py reads the same stream, so the op must
reproduce it: labels exactly, x up to the rounding of log / cos / sin.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from conftest import COVARIANCE_TYPES, HAS_CUDA, Mixture, devices, make_mixture, rel_err, standard_mixture, tol_for
from mixdiff_ext import GaussianMixturePrior
from mixdiff_ext import _reference as ref
from mixdiff_ext import ops

# float64: the op draws the same 53-bit uniforms as the reference and applies glibc log/cos/sin where the
# reference applies torch's (both within ~1 ulp), then x = mu + A eps with a different summation order
# (full); differences are ~1e-16 relative, so 1e-12 is safe and still catches any wrong bit of the stream.
F64_TOL = 1e-12
# float32: the op's normals come from polynomial log / sin / cos (normal.h, ~1-2 ulp), the reference's from
# torch's float32 log / cos / sin of theta = 2 pi u rounded to float32 (the larger error: up to ~2e-6
# absolute on |eps| <= 6.8, measured 1.9e-6); relative to max |x| (>= ~4 for a few hundred draws) that is
# < 1e-6, so 1e-5 is safe; a wrong word, stream, row or layout changes x by O(1).
F32_TOL = 1e-5

DTYPES = [torch.float64, torch.float32]

# (K, D): K = 1, D = 1 and odd D (an unpaired last Box-Muller normal), and a D spanning several blocks.
SHAPES = [(1, 1), (3, 1), (1, 4), (4, 3), (5, 7), (3, 16)]

# Statistical tests: fixed seeds, so each outcome is deterministic; thresholds are ~5 standard errors
# (or p > 1e-4) so that a correct sampler passes by a wide margin while a wrong distribution fails.
P_MIN = 1e-4
Z_MAX = 5.0


def _shape_id(s):
    return "K{}_D{}".format(*s)


def _cdtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _run(mix: Mixture, n: int, seed: int, offset: int = 0, device="cpu") -> ops.PriorSample:
    m = mix.to(device=device)
    return ops.prior_sample(m.means, m.log_weights, m.cov_factor, m.covariance_type, n, seed, offset)


def _reference(mix: Mixture, n: int, seed: int, offset: int = 0):
    """Reference in the op's compute dtype (float32 for float32 and lower), on the CPU."""
    m = mix.to(dtype=_cdtype(mix.means.dtype), device="cpu")
    return ref.prior_sample(m.means, m.log_weights, m.cov_factor, m.covariance_type, n, seed, offset)


def _check_reference(out: ops.PriorSample, mix: Mixture, n: int, seed: int, offset: int = 0) -> None:
    want_x, want_labels = _reference(mix, n, seed, offset)
    labels = out.labels.cpu()
    bad = torch.nonzero(labels != want_labels).flatten()
    assert bad.numel() == 0, (
        f"{bad.numel()} label mismatches (seed={seed}, offset={offset}), first rows {bad[:5].tolist()}: "
        f"got {labels[bad[:5]].tolist()}, want {want_labels[bad[:5]].tolist()}"
    )
    tol = tol_for(want_x.dtype, F64_TOL, F32_TOL)
    err = rel_err(out.x, want_x)
    assert err <= tol, f"x rel err {err:.3e} > {tol:.0e} (seed={seed}, offset={offset})"


def _check_against_cpu(out: ops.PriorSample, mix: Mixture, n: int, seed: int, offset: int = 0) -> None:
    """On an accelerator: the same integers (labels) as the CPU op, x up to float rounding."""
    cpu = _run(mix, n, seed, offset, "cpu")
    assert torch.equal(out.labels.cpu(), cpu.labels), "labels differ between the device and the CPU op"
    tol = tol_for(cpu.x.dtype, F64_TOL, F32_TOL)
    err = rel_err(out.x, cpu.x)
    assert err <= tol, f"device vs CPU x rel err {err:.3e} > {tol:.0e}"


def _prior(mix: Mixture) -> GaussianMixturePrior:
    """The public prior with the mixture's parameters (covariances in scikit-learn's layout)."""
    dtype = mix.means.dtype
    w = torch.exp(mix.log_weights.double())
    w = (w / w.sum()).to(dtype)
    f = None if mix.cov_factor is None else mix.cov_factor.double()
    cov = None if f is None else (f @ f.mT if mix.covariance_type == "full" else f * f).to(dtype)
    return GaussianMixturePrior(mix.means, w, cov, mix.covariance_type)


def _covariances(mix: Mixture) -> torch.Tensor:
    """[K, D, D] float64 Sigma_k = A_k A_k^T."""
    m = mix.f64()
    K, D = m.means.shape
    if m.covariance_type == "identity":
        return torch.eye(D, dtype=torch.float64).expand(K, D, D)
    if m.covariance_type == "spherical":
        return (m.cov_factor**2)[:, None, None] * torch.eye(D, dtype=torch.float64)
    if m.covariance_type == "diag":
        return torch.diag_embed(m.cov_factor**2)
    L = m.cov_factor.tril()
    return L @ L.mT


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.flatten().double().numpy(), b.flatten().double().numpy())[0, 1])


# ---------------------------------------------------------------------------------------------------
# The op against the reference stream
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=_shape_id)
def test_matches_reference(shape, cov, dtype, device):
    K, D = shape
    mix = make_mixture(K, D, cov, seed=100 + 7 * K + 31 * D + COVARIANCE_TYPES.index(cov), dtype=dtype)
    n, seed, offset = 517, 20240 + K + D, 3 * K + D  # n not a multiple of the CPU grain (64)
    out = _run(mix, n, seed, offset, device)
    assert out.x.dtype == dtype and out.labels.dtype == torch.int64
    assert out.x.shape == (n, D) and out.labels.shape == (n,)
    assert out.x.device.type == device and out.labels.device.type == device
    assert bool(torch.isfinite(out.x).all())
    assert int(out.labels.min()) >= 0 and int(out.labels.max()) < K
    _check_reference(out, mix, n, seed, offset)
    if device != "cpu":
        _check_against_cpu(out, mix, n, seed, offset)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "seed, offset",
    [
        (-1, 0),  # key words 0xFFFFFFFF, 0xFFFFFFFF
        (2**62 + 3, 17),  # high key word in use
        (-(2**63), 5),
        (2**63 - 1, 2**32 - 100),  # rows cross 2^32: the row's high word goes from 0 to 1
        (12345, 2**32 + 7),
        (-1, 2**40 + 3),
        (2**62 + 3, 2**62),
    ],
    ids=["seed-1", "seed2^62+3", "seed-2^63", "row-carry", "row2^32", "row2^40", "row2^62"],
)
@pytest.mark.parametrize("cov", ["identity", "full"])
def test_large_seeds_and_offsets(cov, seed, offset, dtype, device):
    mix = make_mixture(3, 5, cov, seed=7, dtype=dtype)
    out = _run(mix, 200, seed, offset, device)
    _check_reference(out, mix, 200, seed, offset)
    if device != "cpu":
        _check_against_cpu(out, mix, 200, seed, offset)


@pytest.mark.parametrize("device", devices)
def test_high_words_of_seed_and_row_are_used(device):
    # Seeds equal in their low 32 bits, and rows 2^32 apart, must give different samples.
    mix = make_mixture(3, 4, "diag", seed=8).to(device=device)
    a = _run(mix, 300, 5, 0, device)
    for seed, offset in [(5 + 2**32, 0), (5 + 2**40, 0), (5, 2**32), (5, 2**48)]:
        b = _run(mix, 300, seed, offset, device)
        same = (a.x == b.x).double().mean().item()
        assert same < 0.01, f"seed={seed} offset={offset}: {same:.1%} of x equal to seed=5 offset=0"


# ---------------------------------------------------------------------------------------------------
# Batch, thread and seed behaviour
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_batch_invariance(cov, dtype, device):
    mix = make_mixture(4, 5, cov, seed=21, dtype=dtype).to(device=device)
    n, seed = 1000, 99
    for base in (0, 2**32 - 500):
        whole = _run(mix, n, seed, base, device)
        parts = [_run(mix, min(7, n - i), seed, base + i, device) for i in range(0, n, 7)]
        assert torch.equal(whole.x, torch.cat([p.x for p in parts])), f"x differs in batches (base {base})"
        assert torch.equal(whole.labels, torch.cat([p.labels for p in parts])), f"labels differ (base {base})"
    # The same through the public API, with generator_offset.
    prior = _prior(mix)
    x, labels = prior.sample(n, seed=seed, return_labels=True)
    direct = ops.prior_sample(prior.means, prior.log_weights, prior.cov_factor, cov, n, seed, 0)
    assert torch.equal(x, direct.x) and torch.equal(labels, direct.labels)
    batched = [prior.sample(min(7, n - i), seed=seed, generator_offset=i, return_labels=True) for i in range(0, n, 7)]
    assert torch.equal(x, torch.cat([b[0] for b in batched]))
    assert torch.equal(labels, torch.cat([b[1] for b in batched]))
    tail = prior.sample(300, seed=seed, generator_offset=700)
    assert torch.equal(tail, x[700:])


# ---------------------------------------------------------------------------------------------------
# Distribution
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_component_frequencies_and_moments(cov, dtype, device):
    K, D, n = 4, 3, 200_000
    mix = make_mixture(K, D, cov, seed=31, dtype=dtype, spread=2.0)
    out = _run(mix, n, seed=2024, device=device)
    x, labels = out.x.cpu().double(), out.labels.cpu()
    w = torch.exp(mix.log_weights.double())
    w = w / w.sum()
    counts = torch.bincount(labels, minlength=K)
    assert counts.numel() == K
    chi = stats.chisquare(counts.numpy(), f_exp=(n * w).numpy())
    assert chi.pvalue > P_MIN, f"component counts {counts.tolist()} vs expected {(n * w).tolist()}: p={chi.pvalue:.2e}"

    mu, sigma = mix.f64().means, _covariances(mix)
    for k in range(K):
        xk = x[labels == k]
        nk = xk.shape[0]
        assert nk > 1000, f"component {k} drawn only {nk} times"
        var = torch.diagonal(sigma[k])
        z_mean = (xk.mean(0) - mu[k]).abs() / torch.sqrt(var / nk)
        assert z_mean.max().item() < Z_MAX, f"component {k}: mean off by {z_mean.max().item():.1f} standard errors"
        s = torch.cov(xk.T).reshape(D, D)
        se = torch.sqrt((var[:, None] * var[None, :] + sigma[k] ** 2) / nk)
        z_cov = (s - sigma[k]).abs() / se
        assert z_cov.max().item() < Z_MAX, (
            f"component {k}: covariance off by {z_cov.max().item():.1f} standard errors\n{s}\nvs\n{sigma[k]}"
        )


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_noise_is_independent_standard_normal(dtype, device):
    # Identity prior: x - mu_label is the raw noise eps. 250k rows x D = 5 -> 1.25e6 normals, 1e6
    # neighbouring pairs within rows and 1.25e6 pairs of the same element in consecutive samples; the
    # standard error of a correlation is ~1e-3. In the planar layout (normal.h) the two normals of a
    # Box-Muller pair (normals 2p and 2p + 1 of block j) are elements 2p * B + j and (2p + 1) * B + j.
    K, D, n = 3, 5, 250_000
    R = 4 if dtype == torch.float32 else 2
    B = -(-D // R)
    first = [m * B + j for m in range(0, R, 2) for j in range(B) if (m + 1) * B + j < D]
    second = [e + B for e in first]
    assert len(first) >= 2
    mix = make_mixture(K, D, "identity", seed=41, dtype=dtype, spread=1.0)
    out = _run(mix, n, seed=777, device=device)
    x, labels = out.x.cpu().double(), out.labels.cpu()
    z = x - mix.f64().means[labels]
    ks = stats.kstest(z.flatten().numpy(), "norm")
    assert ks.pvalue > P_MIN, f"KS against N(0, 1): D={ks.statistic:.2e}, p={ks.pvalue:.2e}"
    pairs = {
        "neighbouring elements": (z[:, :-1], z[:, 1:]),
        "first and second of a Box-Muller pair": (z[:, first], z[:, second]),
        "consecutive samples": (z[:-1], z[1:]),
    }
    for name, (a, b) in pairs.items():
        c = _corr(a, b)
        assert abs(c) < 5e-3, f"corr between {name} = {c:.2e}"
        c2 = _corr(a * a, b * b)  # uncorrelated but dependent pairs (e.g. a shared radius) show here
        assert abs(c2) < 5e-3 * math.sqrt(2), f"corr of squares between {name} = {c2:.2e}"
    # The component stream is independent of the noise stream and of the previous sample's component.
    onehot = torch.nn.functional.one_hot(labels, K).double()
    for k in range(K):
        c = _corr(onehot[:-1, k], onehot[1:, k])
        assert abs(c) < 1e-2, f"corr of component {k} between consecutive samples = {c:.2e}"
        for j in (0, B):  # both normals of the first Box-Muller pair, and their squares (the radius)
            c = _corr(onehot[:, k], z[:, j])
            assert abs(c) < 1e-2, f"corr between component {k} and noise element {j} = {c:.2e}"
            c = _corr(onehot[:, k], z[:, j] ** 2)
            assert abs(c) < 1e-2, f"corr between component {k} and squared noise element {j} = {c:.2e}"


# ---------------------------------------------------------------------------------------------------
# Edge cases
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_zero_weight_components_never_drawn(cov, dtype, device):
    mix = make_mixture(6, 3, cov, seed=51, dtype=dtype)
    lw = torch.log(torch.tensor([0.0, 0.3, 0.0, 0.0, 0.7, 0.0], dtype=torch.float64)).to(dtype)
    mix = mix._replace(log_weights=lw)
    n = 20_000
    out = _run(mix, n, seed=52, device=device)
    counts = torch.bincount(out.labels.cpu(), minlength=6)
    assert counts[[0, 2, 3, 5]].sum().item() == 0, f"zero-weight components drawn: counts {counts.tolist()}"
    assert counts[1].item() > 0 and counts[4].item() > 0
    assert abs(counts[1].item() / n - 0.3) < Z_MAX * math.sqrt(0.3 * 0.7 / n)
    _check_reference(out, mix, n, 52)
    if device != "cpu":
        _check_against_cpu(out, mix, n, 52)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("shift", [3.0, -1000.0, 1000.0])
def test_log_weights_need_not_be_normalised(shift, device):
    # The op draws by u * W <= cdf_k with W the total weight (docs/method.md), so log_weights + c is the
    # same mixture: every finite c must give the same draws (up to a label exactly at a CDF boundary,
    # probability ~1e-16 per sample). exp(log_weights) under- or overflows for |c| ~ 1000 unless the
    # maximum is subtracted first, and the op must not then reject finite log weights.
    mix = make_mixture(4, 3, "diag", seed=55)
    want = _run(mix, 2000, seed=56, device=device)
    shifted = mix._replace(log_weights=mix.log_weights + shift)
    got = _run(shifted, 2000, seed=56, device=device)
    assert torch.equal(got.labels, want.labels) and torch.equal(got.x, want.x)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_single_component(cov, dtype, device):
    mix = make_mixture(1, 3, cov, seed=53, dtype=dtype)
    out = _run(mix, 1000, seed=54, device=device)
    assert torch.equal(out.labels.cpu(), torch.zeros(1000, dtype=torch.int64))
    _check_reference(out, mix, 1000, 54)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_noise_layout_is_planar(dtype, device):
    # The standard prior's draws are the raw noise. docs (normal.h): a Philox block gives R normals (4 in float32, 2 in float64); a row of D elements uses
    # blocks j < B = ceil(D / R) and element m * B + j is normal m of block j.
    R = 4 if dtype == torch.float32 else 2
    n, seed, offset = 1031, 61, 9
    rows = torch.arange(offset, offset + n)
    # A row of D = R * B elements is the [R, B] array of the B blocks' normals, row-major: against the
    # reference, built from the block normals directly (not through ref.normals' own layout code).
    B = 5
    x = _run(standard_mixture(R * B, dtype), n, seed, offset, device).x.cpu()
    words = ref.philox_words(seed, ref.STREAM_PRIOR_NOISE, rows[:, None], torch.arange(B)[None, :])  # [n, B, 4]
    blocks = ref.block_normals(words, dtype)  # [n, B, R]: normal m of block j at [:, j, m]
    tol = tol_for(dtype, F64_TOL, F32_TOL)
    for m in range(R):
        err = rel_err(x[:, m * B : (m + 1) * B], blocks[:, :, m])
        assert err <= tol, f"elements {m}B..{m}B+B-1 are not normal {m} of blocks 0..B-1: rel err {err:.2e}"
    # For every D, element m * B(D) + j is the same number (bit for bit: the same block's same normal) as
    # element m * B' + j of a wider row; in particular the first B(D) elements are the blocks' first
    # normals. Odd remainders (D not a multiple of R) must write nothing past D.
    wide_B = 48  # >= B(D) of every D below
    wide = _run(standard_mixture(R * wide_B, dtype), n, seed, offset, device).x
    for D in (1, 2, 3, 4, 5, 7, 8, 9, 13, 16, 17, 33, 63, 64, 65, 80):
        x = _run(standard_mixture(D, dtype), n, seed, offset, device).x
        assert x.shape == (n, D)
        Bd = -(-D // R)
        e = torch.arange(D)
        m, j = e // Bd, e % Bd
        assert torch.equal(x[:, :Bd], wide[:, :Bd]), f"D={D}: the first B={Bd} elements are not the first normals"
        assert torch.equal(x, wide[:, m * wide_B + j]), f"D={D}: element m*B+j is not normal m of block j"
        want = ref.normals(seed, ref.STREAM_PRIOR_NOISE, rows, D, dtype)
        err = rel_err(x, want)
        assert err <= tol, f"D={D}: rel err {err:.2e} vs ref.normals > {tol:.0e}"


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_empty_draw(cov, dtype, device):
    mix = make_mixture(3, 5, cov, seed=62, dtype=dtype)
    out = _run(mix, 0, seed=1, device=device)
    assert out.x.shape == (0, 5) and out.x.dtype == _cdtype(dtype) and out.x.device.type == device
    assert out.labels.shape == (0,) and out.labels.dtype == torch.int64 and out.labels.device.type == device
    x = _prior(make_mixture(3, 5, cov, seed=62, dtype=torch.float64).to(device=device)).sample(0, seed=1)
    assert x.shape == (0, 5) and x.dtype == torch.float64


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_half_inputs_compute_in_float32(cov, dtype, device):
    mix = make_mixture(3, 5, cov, seed=63, dtype=dtype)
    out = _run(mix, 300, seed=64, offset=2, device=device)
    assert out.x.dtype == torch.float32 and out.labels.dtype == torch.int64
    # Exactly the float32 op on the up-cast parameters (the cast is exact), and the float32 reference.
    want = _run(mix.to(dtype=torch.float32), 300, seed=64, offset=2, device=device)
    assert torch.equal(out.x, want.x) and torch.equal(out.labels, want.labels)
    _check_reference(out, mix, 300, 64, 2)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_layout_and_factor_conventions(cov, device):
    mix = make_mixture(4, 6, cov, seed=65).to(device=device)
    want = _run(mix, 200, seed=66, device=device)
    # Non-contiguous parameters give the same draws.
    means_nc = mix.means.T.contiguous().T
    lw_nc = torch.stack([mix.log_weights, mix.log_weights], 1)[:, 0]
    f = mix.cov_factor
    f_nc = None if f is None else (f.mT.contiguous().mT if cov == "full" else torch.stack([f, f], -1)[..., 0])
    assert not means_nc.is_contiguous() and not lw_nc.is_contiguous()
    got = ops.prior_sample(means_nc, lw_nc, f_nc, cov, 200, 66)
    assert torch.equal(got.x, want.x) and torch.equal(got.labels, want.labels)
    if cov == "identity":
        # Identity ignores whatever factor it is given.
        got = ops.prior_sample(mix.means, mix.log_weights, torch.full((4, 6), 5.0, dtype=torch.float64, device=device),
                               cov, 200, 66)
        assert torch.equal(got.x, want.x)
    if cov == "full":
        # Only the lower triangle of a full factor is read.
        junk = f + torch.triu(torch.full_like(f, 3.0), diagonal=1)
        got = ops.prior_sample(mix.means, mix.log_weights, junk, cov, 200, 66)
        assert torch.equal(got.labels, want.labels)
        assert rel_err(got.x, want.x) <= F64_TOL


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_opcheck(cov, device):
    mix = make_mixture(3, 4, cov, seed=71).to(device=device)
    factor = mix.cov_factor if mix.cov_factor is not None else torch.empty(0, dtype=torch.float64, device=device)
    args = (mix.means, mix.log_weights, factor, cov, 6, 2**40 + 5, 3)
    torch.library.opcheck(torch.ops.mixdiff.prior_sample.default, args)


# ---------------------------------------------------------------------------------------------------
# prior_sample.out: the same draws written into caller-owned tensors.
# ---------------------------------------------------------------------------------------------------
def _out_buffers(mix: Mixture, n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Buffers filled with junk, so that an element the op fails to write shows."""
    x = torch.full((n, mix.means.shape[1]), math.nan, dtype=_cdtype(mix.means.dtype), device=device)
    return x, torch.full((n,), -7, dtype=torch.int64, device=device)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_out_equals_allocating_op(cov, dtype, device):
    mix = make_mixture(5, 7, cov, seed=75, dtype=dtype).to(device=device)
    x, labels = _out_buffers(mix, 300, device)
    for seed, offset in ((76, 0), (77, 1000)):  # the same buffers twice: reuse overwrites every element
        want = _run(mix, 300, seed, offset, device=device)
        got = ops.prior_sample(mix.means, mix.log_weights, mix.cov_factor, cov, 300, seed, offset, out=(x, labels))
        assert got.x is x and got.labels is labels
        assert torch.equal(x, want.x) and torch.equal(labels, want.labels)


@pytest.mark.parametrize("device", devices)
def test_out_with_no_rows(device):
    mix = make_mixture(3, 4, "diag", seed=78).to(device=device)
    x, labels = _out_buffers(mix, 0, device)
    got = ops.prior_sample(mix.means, mix.log_weights, mix.cov_factor, "diag", 0, 1, out=(x, labels))
    assert got.x.shape == (0, 4) and got.labels.shape == (0,)


@pytest.mark.parametrize("device", devices)
def test_prior_sample_method_out(device):
    prior = _prior(make_mixture(4, 3, "full", seed=79)).to(device)
    want_x, want_labels = prior.sample(50, seed=80, generator_offset=9, return_labels=True)
    x = torch.empty(50, 3, dtype=torch.float64, device=device)
    assert prior.sample(50, seed=80, generator_offset=9, out=x) is x
    assert torch.equal(x, want_x)
    labels = torch.empty(50, dtype=torch.int64, device=device)
    got_x, got_labels = prior.sample(50, seed=80, generator_offset=9, return_labels=True, out=(x, labels))
    assert got_x is x and got_labels is labels and torch.equal(labels, want_labels)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("cov", ["identity", "full"])
def test_opcheck_out(cov, device):
    mix = make_mixture(3, 4, cov, seed=81).to(device=device)
    factor = mix.cov_factor if mix.cov_factor is not None else torch.empty(0, dtype=torch.float64, device=device)
    x, labels = _out_buffers(mix, 6, device)
    torch.library.opcheck(torch.ops.mixdiff.prior_sample.out, (mix.means, mix.log_weights, factor, cov, 6, 2**40 + 5, 3),
                          {"x": x, "labels": labels})


BAD_OUTS = {
    "x_shape": (lambda x, lab: (x[:-1], lab), r"out tensor x must have shape \[10, 4\], got \[9, 4\]"),
    "x_width": (lambda x, lab: (x[:, :3], lab), r"out tensor x must have shape \[10, 4\]"),
    "x_dtype": (lambda x, lab: (x.double(), lab), r"out tensor x must be Float, got Double"),
    "x_noncontiguous": (lambda x, lab: (x.T.contiguous().T, lab), r"out tensor x must be contiguous"),
    "labels_shape": (lambda x, lab: (x, lab[:, None]), r"out tensor labels must have shape \[10\]"),
    "labels_dtype": (lambda x, lab: (x, lab.int()), r"out tensor labels must be Long, got Int"),
    "labels_noncontiguous": (lambda x, lab: (x, torch.stack([lab, lab], 1)[:, 0]), r"out tensor labels must be contiguous"),
}


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("case", list(BAD_OUTS))
def test_bad_outs(case, device):
    make, match = BAD_OUTS[case]
    mix = make_mixture(3, 4, "diag", seed=82, dtype=torch.float32).to(device=device)
    out = make(*_out_buffers(mix, 10, device))
    with pytest.raises(RuntimeError, match=match):
        ops.prior_sample(mix.means, mix.log_weights, mix.cov_factor, "diag", 10, 1, out=out)


def test_out_must_not_overlap_the_inputs():
    mix = make_mixture(3, 4, "diag", seed=83, dtype=torch.float32)
    storage = torch.zeros(13, 4)
    means = storage[:3].copy_(mix.means)
    with pytest.raises(RuntimeError, match=r"out tensor x shares memory with means"):
        ops.prior_sample(means, mix.log_weights, mix.cov_factor, "diag", 10, 1,
                         out=(storage[2:12], torch.empty(10, dtype=torch.int64)))


def test_out_is_not_differentiable():
    mix = make_mixture(3, 4, "diag", seed=88, dtype=torch.float32)
    x, labels = _out_buffers(mix, 10, "cpu")
    with pytest.raises(RuntimeError, match=r"out tensor x must not require grad"):
        ops.prior_sample(mix.means, mix.log_weights, mix.cov_factor, "diag", 10, 1, out=(x.requires_grad_(), labels))
    # A tensor that autograd saved and out= then overwrote is caught at backward, not silently used.
    w = torch.ones(10, 4, requires_grad=True)
    x = torch.zeros(10, 4)
    y = (w * x).sum()  # saves x for the gradient of w
    ops.prior_sample(mix.means, mix.log_weights, mix.cov_factor, "diag", 10, 1, out=(x, labels))
    with pytest.raises(RuntimeError, match=r"modified by an inplace operation"):
        y.backward()


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device and a CUDA build")
def test_out_on_another_device():
    mix = make_mixture(3, 4, "diag", seed=84, dtype=torch.float32).to(device="cuda")
    x, labels = _out_buffers(mix, 10, "cpu")
    with pytest.raises(RuntimeError, match=r"out tensor x must be on the means' device cuda"):
        ops.prior_sample(mix.means, mix.log_weights, mix.cov_factor, "diag", 10, 1, out=(x, labels))


@pytest.mark.parametrize("out", [torch.empty(10, 4), (torch.empty(10, 4),), [torch.empty(10, 4), None]])
def test_out_must_be_a_pair_of_tensors(out):
    mix = make_mixture(3, 4, "diag", seed=85, dtype=torch.float32)
    with pytest.raises(TypeError, match=r"out must be a pair of tensors \(x, labels\)"):
        ops.prior_sample(mix.means, mix.log_weights, mix.cov_factor, "diag", 10, 1, out=out)


# ---------------------------------------------------------------------------------------------------
# Bad inputs: the op raises a RuntimeError naming the offending argument; the Python API a ValueError.
# ---------------------------------------------------------------------------------------------------
BAD_CASES = {
    "n_negative": (dict(n=-1), r"n must be >= 0, got -1"),
    "offset_negative": (dict(offset=-5), r"offset must be >= 0, got -5"),
    "means_1d": (dict(means=lambda d: torch.zeros(4, device=d)), r"means must be 2-D"),
    "means_3d": (dict(means=lambda d: torch.zeros(3, 4, 1, device=d)), r"means must be 2-D"),
    "means_int": (dict(means=lambda d: torch.zeros(3, 4, dtype=torch.int64, device=d)), r"means must be a floating-point"),
    "k0": (
        dict(means=lambda d: torch.zeros(0, 4, device=d), cov_factor=lambda d: torch.ones(0, 4, device=d),
             log_weights=lambda d: torch.zeros(0, device=d)),
        r"means must have at least one row",
    ),
    "diag_factor_shape": (dict(cov_factor=lambda d: torch.ones(3, device=d)), r"diag cov_factor must have shape \[3, 4\]"),
    "diag_factor_transposed": (dict(cov_factor=lambda d: torch.ones(4, 3, device=d)), r"diag cov_factor must have shape"),
    "spherical_factor_shape": (
        dict(covariance_type="spherical", cov_factor=lambda d: torch.ones(2, device=d)),
        r"spherical cov_factor must have shape \[3\]",
    ),
    "full_factor_shape": (
        dict(covariance_type="full", cov_factor=lambda d: torch.ones(3, 4, device=d)),
        r"full cov_factor must have shape \[3, 4, 4\]",
    ),
    "nonpositive_factor": (
        dict(cov_factor=lambda d: torch.tensor([[1.0] * 4, [1.0, 1.0, 1.0, 0.0], [1.0] * 4], device=d)),
        r"cov_factor must have a positive diagonal",
    ),
    "spherical_negative_factor": (
        dict(covariance_type="spherical", cov_factor=lambda d: torch.tensor([1.0, -1.0, 1.0], device=d)),
        r"cov_factor must have a positive diagonal",
    ),
    "full_nonpositive_factor": (
        dict(covariance_type="full", cov_factor=lambda d: -torch.eye(4, device=d).expand(3, 4, 4)),
        r"cov_factor must have a positive diagonal",
    ),
    "unknown_covariance_type": (dict(covariance_type="tied"), r"covariance_type must be .*got 'tied'"),
    "log_weights_all_neg_inf": (
        dict(log_weights=lambda d: torch.full((3,), -math.inf, device=d)), r"log_weights must have a finite entry"
    ),
    "log_weights_nan": (
        dict(log_weights=lambda d: torch.tensor([0.0, math.nan, 0.0], device=d)), r"log_weights must have a finite entry"
    ),
    "log_weights_pos_inf": (
        dict(log_weights=lambda d: torch.tensor([0.0, math.inf, 0.0], device=d)), r"log_weights must have a finite entry"
    ),
    "log_weights_shape": (dict(log_weights=lambda d: torch.zeros(2, device=d)), r"log_weights must have shape \[3\]"),
    "log_weights_2d": (dict(log_weights=lambda d: torch.zeros(3, 1, device=d)), r"log_weights must have shape \[3\]"),
    "log_weights_int": (
        dict(log_weights=lambda d: torch.zeros(3, dtype=torch.int64, device=d)), r"log_weights must be a floating-point"
    ),
}


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_inputs(case, device):
    overrides, match = BAD_CASES[case]
    cov = overrides.get("covariance_type", "diag")
    mix = make_mixture(3, 4, cov if cov in COVARIANCE_TYPES else "diag", seed=72, dtype=torch.float32)
    mix = mix.to(device=device)
    kwargs = dict(means=mix.means, log_weights=mix.log_weights, cov_factor=mix.cov_factor, covariance_type=cov,
                  n=10, seed=1, offset=0)
    for name, value in overrides.items():
        kwargs[name] = value(device) if callable(value) else value
    with pytest.raises(RuntimeError, match=match):
        ops.prior_sample(**kwargs)


@pytest.mark.parametrize(
    "out, error, match",
    [
        (torch.empty(4, 3), ValueError, r"out must be torch.float32 of shape \(4, 2\) on cpu, got torch.float32 of shape \(4, 3\)"),
        (torch.empty(4, 2, dtype=torch.float64), ValueError, r"out must be torch.float32 of shape \(4, 2\)"),
        (torch.empty(2, 4).T, ValueError, r"out must be contiguous and must not require grad"),
        (torch.empty(4, 2, requires_grad=True), ValueError, r"out must be contiguous and must not require grad"),
        ((torch.empty(4, 2), torch.empty(4)), ValueError, r"out labels must be torch.int64 of shape \(4,\)"),
        ([torch.empty(4, 2)], TypeError, r"out must be a tensor or an \(x, labels\) pair of tensors, got list"),
        (np.empty((4, 2), dtype=np.float32), TypeError, r"out must be a tensor .* got ndarray"),
    ],
)
def test_prior_sample_rejects_bad_out(out, error, match):
    prior = _prior(make_mixture(3, 2, "diag", seed=89, dtype=torch.float32))
    with pytest.raises(error, match=match):
        prior.sample(4, seed=0, out=out)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(n=-1), ValueError, r"n must be a non-negative integer"),
        (dict(n=2.5), ValueError, r"n must be a non-negative integer"),
        (dict(n=4, generator_offset=-1), ValueError, r"generator_offset must lie in \[0, 2\*\*63\), got -1"),
        (dict(n=4, generator_offset=1.5), TypeError, r"generator_offset must be an integer, got float"),
        (dict(n=4, generator_offset=2**63), ValueError, r"generator_offset must lie in \[0, 2\*\*63\)"),
        (dict(n=4, generator_offset=True), TypeError, r"generator_offset must be an integer, got bool"),
        (dict(n=4, seed=True), TypeError, r"seed must be an integer, got bool"),
        (dict(n=4, seed=1.5), TypeError, r"seed must be an integer, got float"),
        (dict(n=4, seed=2**64), ValueError, r"seed must lie in \[-2\*\*63, 2\*\*64\)"),
        (dict(n=4, seed=-(2**63) - 1), ValueError, r"seed must lie in \[-2\*\*63, 2\*\*64\)"),
    ],
)
def test_prior_sample_rejects_bad_arguments(kwargs, error, match):
    prior = _prior(make_mixture(3, 2, "diag", seed=73))
    with pytest.raises(error, match=match):
        prior.sample(**kwargs)


def test_seed_is_taken_modulo_2_64():
    prior = _prior(make_mixture(3, 2, "diag", seed=74))
    assert torch.equal(prior.sample(5, seed=2**64 - 1), prior.sample(5, seed=-1))
