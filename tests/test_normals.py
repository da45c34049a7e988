"""The counter-based standard normals (philox.h, normal.h, cpu_random.h) as users see them through the ops.

A draw is addressed by (seed, stream, row, block): row = offset + i, stream 2 for prior_sample's noise,
3 for q_sample's, 4 | step << 4 for reverse_step's. A Philox block gives R normals (4 in float32, 2 in
float64) by Box-Muller; element m * B + j of a row of D elements is normal m of block j, B = ceil(D / R).
The raw normals come out of the ops unchanged with
  prior_sample: K = 1, mean 0, identity          -> x = eps
  q_sample:     mean 0, identity, signal 0, noise_scale 1 -> x_t = eps (and eps is returned)
  reverse_step: x = 0, model_output = 0, coefficients (0, 0, 0, 0, 0, 1) -> prev = z
(all exact: the other terms are exact zeros). The header-level checks of the transforms (log / sincos /
Box-Muller against libm in ulps, the CPU's 16-lane rows against the scalar rows) are in
tests/cpp/header_math_test.cpp.

Statistical tests use fixed seeds, so every outcome is deterministic; thresholds are 5 standard errors
(or a p-value of 1e-4), which a correct generator passes by a wide margin and the controls fail.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import special, stats

from conftest import (HAS_CUDA, compute_dtype, devices, frac_equal, make_mixture, normals_per_block, rel_err,
                      sample_mixture, standard_mixture)
from mixdiff_ext import GaussianMixturePrior
from mixdiff_ext import _reference as ref
from mixdiff_ext import ops

DTYPES = [torch.float32, torch.float64]
OPS = ["prior", "forward", "reverse"]
P_MIN = 1e-4
Z_MAX = 5.0

# The ops' float32 normals against the reference's (torch float32 log / cos / sin of theta = 2 pi u rounded
# to float32, i.e. "libm"): both are a few float32 rounding steps off the exact value of the same
# uniforms; the reference's theta rounding dominates (up to ~|z| * 4e-7). Measured max 1.7e-6 here
# (1.9e-6 on other seeds) over 1e6 draws; 4e-6 absolute bounds it for every |z| (the float32 radius is at
# most sqrt(-2 ln 2^-33) = 6.76) and any wrong bit of a word, block or layout is O(1).
F32_ABS_VS_REF = 4e-6
# Against the exact Box-Muller of the same float32 uniforms (float64 math): |z - z_exact| <= 2.5 ulp of
# the radius (2.5 * 2^-23 * r, r = sqrt(-2 ln u1)); measured 1.5 ulp of r (log_poly 0.8 ulp, sincos 2 ulp
# of values just below a power of two, tests/cpp/header_math_test.cpp).
F32_RADIUS_ULPS = 2.5
# float64: glibc log / cos / sin (the op) vs torch's (the reference) on the same 53-bit uniforms; measured
# 8.9e-16 absolute.
F64_ABS_VS_REF = 1e-12


def _stream(op: str, step: int = 0) -> int:
    return {"prior": ref.STREAM_PRIOR_NOISE, "forward": ref.STREAM_FORWARD_NOISE,
            "reverse": ref.step_stream(ref.STREAM_REVERSE_NOISE, step)}[op]


def _draw(op: str, n: int, D: int, seed: int, dtype=torch.float32, offset: int = 0, step: int = 0, device="cpu",
          cov: str = "identity") -> torch.Tensor:
    """[n, D] raw standard normals as `op` draws them for rows offset .. offset + n - 1. cov="full" feeds
    the identity as a full Cholesky factor, which takes the ops' non-separable code path (same numbers:
    L = I maps eps to itself exactly)."""
    mix = standard_mixture(D, dtype, device)
    factor = None
    if cov == "full":
        factor = torch.eye(D, dtype=dtype, device=device).expand(1, D, D)
    if op == "prior":
        return ops.prior_sample(mix.means, mix.log_weights, factor, cov, n, seed, offset).x
    if op == "forward":
        x0 = torch.full((n, D), 3.0, dtype=dtype, device=device)  # multiplied by signal 0: no effect
        zeros, ones = torch.zeros(n, dtype=dtype, device=device), torch.ones(n, dtype=dtype, device=device)
        out = ops.q_sample(x0, zeros, ones, mix.means, factor, cov, seed, offset)
        assert torch.equal(out.x_t, out.eps), "x_t must be eps exactly (signal 0, noise_scale 1, mean 0, A = I)"
        return out.eps
    x = torch.zeros(n, D, dtype=dtype, device=device)
    labels = torch.zeros(n, dtype=torch.int64, device=device)
    coefs = ops.StepCoefficients(0.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    return ops.reverse_step(x, x, labels, mix.means, factor, cov, coefs, seed, step, offset).prev_sample


def _ref_normals(op: str, n: int, D: int, seed: int, dtype, offset: int = 0, step: int = 0) -> torch.Tensor:
    return ref.normals(seed, _stream(op, step), torch.arange(offset, offset + n), D, compute_dtype(dtype))


def _exact_box_muller_f32(seed: int, stream: int, rows: torch.Tensor, D: int):
    """float64 Box-Muller of the float32 uniforms the kernels use, in the planar layout: (z [n, D], r [n, D])."""
    R, B = 4, -(-D // 4)
    words = ref.philox_words(seed, stream, rows[:, None], torch.arange(B)[None, :])  # [n, B, 4]
    u = ((words.to(torch.float32) + 0.5) * 2.3283064365386963e-10).double()  # float32 rounding as the kernel
    r = [torch.sqrt(-2.0 * torch.log(u[..., i])) for i in (0, 2)]
    th = [2 * math.pi * u[..., i] for i in (1, 3)]
    z = torch.stack([r[0] * torch.cos(th[0]), r[0] * torch.sin(th[0]), r[1] * torch.cos(th[1]),
                     r[1] * torch.sin(th[1])], -1)
    rad = torch.stack([r[0], r[0], r[1], r[1]], -1)
    n = rows.shape[0]
    return (z.transpose(1, 2).reshape(n, R * B)[:, :D], rad.transpose(1, 2).reshape(n, R * B)[:, :D])


def _ks(z):
    """scipy.stats.kstest against the N(0, 1) CDF (special.ndtr: the same function as "norm", faster)."""
    return stats.kstest(np.asarray(z, dtype=np.float64).ravel(), special.ndtr)


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.flatten().double().cpu().numpy(), b.flatten().double().cpu().numpy())[0, 1])


# ---------------------------------------------------------------------------------------------------
# The ops' numbers are the documented stream, to the stated accuracy
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", OPS)
def test_matches_reference_normals(op, dtype, device):
    # D = 99: B = 25 (float32) / 50 (float64) blocks, the last one partly used; 1e6 normals for the prior,
    # 3e5 for the other streams.
    n, D, seed, offset, step = 10101 if op == "prior" else 3031, 99, 2024, 77, 5
    z = _draw(op, n, D, seed, dtype, offset, step, device).cpu()
    assert z.dtype == dtype and z.shape == (n, D)
    want = _ref_normals(op, n, D, seed, dtype, offset, step)
    err = (z.double() - want.double()).abs().max().item()
    assert want.abs().max().item() < (6.8 if dtype == torch.float32 else 8.7)
    limit = F32_ABS_VS_REF if dtype == torch.float32 else F64_ABS_VS_REF
    assert err <= limit, f"{op}: max |z - ref.normals| = {err:.3e} > {limit:.0e}"


@pytest.mark.parametrize("op", OPS)
def test_float32_normals_vs_exact_box_muller(op):
    # The CPU's polynomial log / sincos against float64 Box-Muller of the same float32 uniforms (1e6 / 3e5
    # normals).
    n, D, seed, offset, step = 10101 if op == "prior" else 3031, 99, 31, 0, 3
    z = _draw(op, n, D, seed, torch.float32, offset, step).double()
    exact, r = _exact_box_muller_f32(seed, _stream(op, step), torch.arange(offset, offset + n), D)
    ulps = ((z - exact).abs() / (r.clamp(min=1e-30) * 2.0**-23)).max().item()  # r = 0 (u1 = 1): z = 0 exactly
    assert ulps <= F32_RADIUS_ULPS, f"{op}: max |z - exact| = {ulps:.2f} ulp of the radius > {F32_RADIUS_ULPS}"


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", OPS)
def test_separable_and_full_paths_draw_the_same_normals(op, dtype, device):
    # The separable kernels combine the 16-lane normals in registers, the full-covariance ones write the
    # row first and multiply by L: with L = I both must give the same numbers, bit for bit.
    for D in (1, 5, 64, 67):
        a = _draw(op, 300, D, 9, dtype, offset=4, step=2, device=device)
        b = _draw(op, 300, D, 9, dtype, offset=4, step=2, device=device, cov="full")
        assert torch.equal(a, b), f"{op} D={D}: identity and full (L = I) paths draw different normals"


# ---------------------------------------------------------------------------------------------------
# Distribution
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", OPS)
def test_moments(op, dtype, device):
    n, D = (10_000 if op == "prior" else 4_000), 100  # 1e6 / 4e5 normals
    z = _draw(op, n, D, seed=5, dtype=dtype, step=1, device=device).cpu().double().flatten()
    N = z.numel()
    assert bool(torch.isfinite(z).all())
    # E z^k and the standard error of the sample mean of z^k: Var z^k = E z^2k - (E z^k)^2.
    for k, mean, var in ((1, 0.0, 1.0), (2, 1.0, 2.0), (3, 0.0, 15.0), (4, 3.0, 96.0)):
        got = (z**k).mean().item()
        se = math.sqrt(var / N)
        assert abs(got - mean) < Z_MAX * se, f"E z^{k} = {got:.5f}, want {mean} (se {se:.1e})"
    # Tails: P(|z| > 3) and P(|z| > 4) as binomial counts.
    for t in (3.0, 4.0):
        p = 2 * stats.norm.sf(t)
        count = (z.abs() > t).sum().item()
        assert abs(count - N * p) < Z_MAX * math.sqrt(N * p * (1 - p)), f"#(|z| > {t}) = {count}, want {N * p:.0f}"
    # The largest radius: sqrt(-2 ln u_min), u_min = 2^-33 (float32) / 2^-54 (float64).
    r_max = math.sqrt(2 * (33 if dtype == torch.float32 else 54) * math.log(2))
    assert z.abs().max().item() <= r_max * (1 + 1e-6)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_kolmogorov_smirnov(dtype, device):
    # 1e6 normals from prior_sample (seed fixed): KS against N(0, 1) passes with p > 1e-4; the same numbers
    # scaled by 1.05 (sd 5% off) must fail by far, so the test has the power to see a visibly wrong law.
    n, D = 10_000, 100
    z = _draw("prior", n, D, seed=12345, dtype=dtype, device=device).cpu().double()
    flat = z.flatten().numpy()
    ks = _ks(flat)
    assert ks.pvalue > P_MIN, f"KS against N(0, 1): D={ks.statistic:.2e}, p={ks.pvalue:.2e}"
    bad = _ks(1.05 * flat)
    assert bad.pvalue < 1e-10, f"KS did not reject 1.05 * z: p={bad.pvalue:.2e}"
    # Every slot m of the blocks (cos and sin of each Box-Muller pair) is N(0, 1) on its own.
    R, B = normals_per_block(dtype), -(-D // normals_per_block(dtype))
    for m in range(R):
        cols = torch.arange(m * B, min((m + 1) * B, D))
        ks = _ks(z[:, cols].numpy())
        assert ks.pvalue > P_MIN, f"KS of block slot m={m}: D={ks.statistic:.2e}, p={ks.pvalue:.2e}"


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_no_correlation(dtype, device):
    # 1e6 normals, D = 100: pairs of neighbouring elements, of the planar slots m and m + 1 of the same
    # block j (elements j + m B and j + (m + 1) B: the same Philox block, and for even m the two halves
    # of one Box-Muller pair), of neighbouring blocks, and of the same element in neighbouring rows.
    # The sample correlation of independent variables has standard error 1/sqrt(pairs) (1e-3 .. 2e-3 here);
    # threshold 5 standard errors. Squares catch dependence without correlation (a shared or wrong radius).
    n, D = 10_000, 100
    R = normals_per_block(dtype)
    B = -(-D // R)
    z = _draw("prior", n, D, seed=777, dtype=dtype, device=device).cpu().double()
    j = torch.arange(B)
    pairs = {
        "neighbouring elements": (z[:, :-1], z[:, 1:]),
        "neighbouring rows": (z[:-1], z[1:]),
        "neighbouring blocks": (z[:, : B - 1], z[:, 1:B]),
    }
    for m in range(R - 1):
        keep = j[(m + 1) * B + j < D]
        pairs[f"block slots {m} and {m + 1}"] = (z[:, m * B + keep], z[:, (m + 1) * B + keep])
    if R == 4:
        pairs["block slots 0 and 3"] = (z[:, j[3 * B + j < D]], z[:, 3 * B + j[3 * B + j < D]])
    for name, (a, b) in pairs.items():
        assert a.numel() >= 200_000, name
        limit = Z_MAX / math.sqrt(a.numel())
        c = _corr(a, b)
        assert abs(c) < limit, f"corr between {name} = {c:.2e} (limit {limit:.1e})"
        c2 = _corr(a * a, b * b)
        assert abs(c2) < limit, f"corr of squares between {name} = {c2:.2e} (limit {limit:.1e})"


# ---------------------------------------------------------------------------------------------------
# Addressing: batches, streams, steps, seeds
# ---------------------------------------------------------------------------------------------------
def _mixture_inputs(dtype, device, N=1000, D=37, cov="diag"):
    mix = make_mixture(5, D, cov, seed=301, dtype=dtype).to(device=device)
    x, comp = sample_mixture(mix, N, seed=302)
    g = torch.Generator().manual_seed(303)
    signal = torch.rand(N, generator=g, dtype=torch.float64)
    noise_scale = torch.sqrt(1 - signal**2)
    return mix, x.to(device), comp.to(device), signal.to(dtype).to(device), noise_scale.to(dtype).to(device)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("cov", ["diag", "full"])
def test_batch_invariance(cov, op, dtype, device):
    # 1000 rows at once == batches of 7 with the offset advanced, bit for bit (D = 37: partial blocks and a
    # partial 16-lane vector), also with rows crossing 2^32.
    N, seed, step = 1000, 4242, 17
    mix, x, comp, signal, noise_scale = _mixture_inputs(dtype, device, N, cov=cov)
    eps_hat = torch.randn(x.shape, generator=torch.Generator().manual_seed(304), dtype=torch.float64).to(x)
    coefs = ops.StepCoefficients(1.2, -0.4, 0.3, 0.5, -0.2, 0.7)

    def run(lo, hi, offset):
        if op == "prior":
            return ops.prior_sample(mix.means, mix.log_weights, mix.cov_factor, cov, hi - lo, seed, offset)[:2]
        if op == "forward":  # labels None: the fused nearest assignment too
            return ops.q_sample(x[lo:hi], signal[lo:hi], noise_scale[lo:hi], mix.means, mix.cov_factor, cov, seed,
                                offset)
        return ops.reverse_step(x[lo:hi], eps_hat[lo:hi], comp[lo:hi], mix.means, mix.cov_factor, cov, coefs, seed,
                                step, offset, return_x0=True)

    for base in (0, 2**32 - 500):
        whole = run(0, N, base)
        parts = [run(i, min(i + 7, N), base + i) for i in range(0, N, 7)]
        for k, w in enumerate(whole):
            assert torch.equal(w, torch.cat([p[k] for p in parts])), f"output {k} differs in batches (base {base})"


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_streams_steps_seeds_and_rows_differ(dtype, device):
    # Same seed and rows: prior noise, forward noise and the reverse noise of every step are different
    # numbers (each is the documented stream: test_matches_reference_normals); so are other seeds (also
    # differing only in the key's high word) and other rows (also 2^32 apart).
    n, D, seed = 500, 9, 88
    draws = {"prior": _draw("prior", n, D, seed, dtype, device=device),
             "forward": _draw("forward", n, D, seed, dtype, device=device)}
    for step in (0, 1, 2, 15, 16, 2**27, 2**28 - 1):
        draws[f"reverse step {step}"] = _draw("reverse", n, D, seed, dtype, step=step, device=device)
    for s in (89, seed + 2**32, -1):
        draws[f"prior seed {s}"] = _draw("prior", n, D, s, dtype, device=device)
    for off in (1, 2**32):
        draws[f"prior offset {off}"] = _draw("prior", n, D, seed, dtype, offset=off, device=device)
    names = list(draws)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            same = frac_equal(draws[a], draws[b])
            assert same < 0.01, f"{a} and {b}: {same:.1%} of the normals equal"
    # Reproducible: the same address gives the same numbers.
    assert torch.equal(_draw("reverse", n, D, seed, dtype, step=16, device=device), draws["reverse step 16"])
    # Offset k is row k: the draw at offset 1 is the draw at offset 0 shifted by one row.
    assert torch.equal(draws["prior offset 1"][:-1], draws["prior"][1:])


@pytest.mark.parametrize("device", devices)
def test_seed_none_follows_torch_manual_seed(device):
    # GaussianMixturePrior.sample(seed=None) takes its seed from torch's default generator.
    mix = make_mixture(3, 6, "full", seed=305).to(device=device)
    w = torch.exp(mix.log_weights)
    L = mix.cov_factor
    prior = GaussianMixturePrior(mix.means, w / w.sum(), L @ L.mT, "full")
    torch.manual_seed(2024)
    a, la = prior.sample(300, return_labels=True)
    b = prior.sample(300)  # the default generator advanced: another seed
    torch.manual_seed(2024)
    c, lc = prior.sample(300, return_labels=True)
    d = prior.sample(300)
    torch.manual_seed(2025)
    e = prior.sample(300)
    assert torch.equal(a, c) and torch.equal(la, lc) and torch.equal(b, d)
    assert frac_equal(a, b) < 0.01 and frac_equal(a, e) < 0.01
    # seed=None with an offset is still the same stream: rows 100.. of the draw after the same manual_seed.
    torch.manual_seed(2024)
    tail = prior.sample(200, generator_offset=100)
    assert torch.equal(tail, a[100:])


# ---------------------------------------------------------------------------------------------------
# Devices
# ---------------------------------------------------------------------------------------------------
@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device and a CUDA build")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", OPS)
def test_cuda_normals_match_cpu(op, dtype):
    # The same integers on both devices; the float transforms are the same expressions (float32) or libm
    # (float64), so the normals agree to a few ulp.
    n, D = 4099, 67
    cpu = _draw(op, n, D, 321, dtype, offset=2**32 - 5, step=3)
    gpu = _draw(op, n, D, 321, dtype, offset=2**32 - 5, step=3, device="cuda").cpu()
    err = (gpu.double() - cpu.double()).abs().max().item()
    limit = F32_ABS_VS_REF if dtype == torch.float32 else F64_ABS_VS_REF
    assert err <= limit, f"{op}: CUDA vs CPU normals differ by {err:.3e} > {limit:.0e}"
    assert rel_err(gpu, cpu) <= (1e-5 if dtype == torch.float32 else 1e-12)


_DRAW_ALL_OPS = """
import sys, torch
from mixdiff_ext import ops
from mixdiff_ext.schedules import DiscreteSchedule
torch.manual_seed(0)
out = {}
for dtype in (torch.float32, torch.float64):
    for D in (2, 67):  # short rows (row, block) lanes, and long rows
        means = torch.randn(5, D, dtype=dtype)
        factor = torch.rand(5, D, dtype=dtype) + 0.5
        x, labels = ops.prior_sample(means, torch.randn(5, dtype=dtype).log_softmax(0), factor, "diag", 300, 7, 11)
        q = ops.q_sample(x, torch.rand(300, dtype=dtype), torch.rand(300, dtype=dtype), means, factor, "diag", 8, 3)
        coefs = DiscreteSchedule.from_name("linear", 1000).ancestral_coefficients(500, 499, "fixed_small")
        r = ops.reverse_step(x, q.eps, labels, means, factor, "diag", coefs, seed=9, step=4, offset=2)
        out[f"{dtype}-{D}"] = (x, labels, q.x_t, q.eps, q.labels, r.prev_sample)
        # The nearest-centre tile (float32, K <= 16 on AVX-512; blocks of 16 rows from the start of each
        # thread's rows): the special rows come first, inside the tile's blocks on 1 or 2 threads. Far
        # outliers; rows on a centre; a duplicated centre (ties); a row and a centre with +inf in the same
        # coordinate (NaN distance to that centre only); NaN and inf rows.
        for K in (1, 5, 16, 17):
            c = torch.randn(K, D, dtype=dtype)
            if K > 2:
                c[1] = c[0]
                c[-1, 0] = float("inf")
            on_inf = c[0].clone()
            on_inf[0] = float("inf")
            special = torch.cat([1e4 * x[:20], c[torch.arange(5) % K], on_inf[None],
                                 torch.full((3, D), float("nan"), dtype=dtype), torch.full((2, D), float("inf"), dtype=dtype)])
            out[f"{dtype}-{D}-assign-K{K}"] = tuple(ops.assign_nearest(torch.cat([special, x]), c))
torch.save(out, sys.argv[1])
"""


def test_avx512_and_portable_kernels_agree(tmp_path):
    # On an AVX-512 machine the noise kernels run a build with vpmuludq Philox products, and the nearest-centre
    # assignment of float rows with K <= 16 a transposed tile; MIXDIFF_NO_AVX512 forces the kernels that other
    # machines run (for the assignment: the generic tile). Integers (components, labels) must be equal, the
    # normals' floats equal up to contraction (a few ulp), and the assignment's distances exactly equal (the
    # tile keeps the sums' order). Elsewhere both runs take the same path.
    import os
    import subprocess
    import sys

    script = tmp_path / "draw.py"
    script.write_text(_DRAW_ALL_OPS)
    runs = {}
    for name, extra in (("default", {}), ("portable", {"MIXDIFF_NO_AVX512": "1"})):
        env = dict(os.environ, **extra)
        subprocess.run([sys.executable, str(script), str(tmp_path / f"{name}.pt")], check=True, env=env)
        runs[name] = torch.load(tmp_path / f"{name}.pt")
    for key, tensors in runs["default"].items():
        for a, b in zip(tensors, runs["portable"][key]):
            if "assign" in key:
                torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True, msg=lambda m: f"{key}: {m}")
            elif a.is_floating_point():
                torch.testing.assert_close(a, b, rtol=4 * torch.finfo(a.dtype).eps, atol=4 * torch.finfo(a.dtype).eps,
                                           equal_nan=True, msg=lambda m: f"{key}: {m}")
            else:
                assert torch.equal(a, b), key
