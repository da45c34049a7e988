"""mixdiff::kmeans_stats: one fused Lloyd step (labels, sqdist, counts, sums around the centres, inertia)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import assert_labels_match, child_prelude, devices, gen, randn, rel_err, tol_for
from mixdiff_ext import _reference as ref
from mixdiff_ext import ops

# float64: same sums as the reference in another order, ~1e-14 relative; 1e-10 is safe.
F64_TOL = 1e-10
# float32: squared distances are float32 sums of D <= 130 terms and the per-cluster sums are float32
# blocks of 64 rows flushed into float64 (~64 * 6e-8 ~ 4e-6 worst case); 1e-4 is safe.
F32_TOL = 1e-4
# inertia is the float64 sum of the returned sqdist values: only the summation order differs.
INERTIA_TOL = 1e-12

SHAPES = [
    (1, 1, 1),
    (2, 17, 3),
    (3, 33, 130),
    (4, 65, 1),
    (5, 1, 3),
    (6, 17, 130),
    (7, 33, 1),
    (8, 65, 3),
    (9, 1, 130),
    (257, 33, 17),
    (2100, 17, 5),  # > 1024 rows: two per-thread partials; > 64 rows: float32 block flushes
]
DTYPES = [torch.float64, torch.float32]


def _shape_id(s):
    return "N{}_K{}_D{}".format(*s)


def _data(N, K, D, dtype, seed):
    return randn(N, D, seed=seed, dtype=dtype, scale=2.0), randn(K, D, seed=seed + 1, dtype=dtype, scale=2.0)


def _check(out, x, c, dtype):
    """Against the float64 reference on the same (upcast) inputs. Per-cluster sums are also checked
    against the op's own labels, so that a near-tie label flip in float32 cannot hide a sum error."""
    tol = tol_for(dtype, F64_TOL, F32_TOL)
    N, K = x.shape[0], c.shape[0]
    x64, c64 = x.detach().cpu().double(), c.detach().cpu().double()
    labels, sqdist, counts, sum_x, inertia = ref.kmeans_stats(x64, c64)
    scores = ((x64[:, None, :] - c64[None]) ** 2).sum(-1)
    assert_labels_match(out.labels, labels, scores, largest=False, dtype=dtype)
    assert rel_err(out.sqdist, sqdist) <= tol
    got_labels = out.labels.cpu()
    assert torch.equal(out.counts.cpu(), torch.bincount(got_labels, minlength=K))
    assert out.counts.sum().item() == N
    own_sum = torch.zeros(K, x.shape[1], dtype=torch.float64).index_add_(0, got_labels, x64 - c64[got_labels])
    assert rel_err(out.sum_x, own_sum) <= tol
    if torch.equal(got_labels, labels):
        assert torch.equal(out.counts.cpu(), counts)
        assert rel_err(out.sum_x, sum_x) <= tol
        assert rel_err(out.inertia, inertia) <= tol
    assert rel_err(out.inertia, out.sqdist.double().sum()) <= INERTIA_TOL


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=_shape_id)
def test_matches_reference(shape, dtype, device):
    N, K, D = shape
    x, c = _data(N, K, D, dtype, seed=3000 + N + 7 * K + 31 * D)
    out = ops.kmeans_stats(x.to(device), c.to(device))
    assert out.labels.dtype == torch.int64 and out.counts.dtype == torch.int64
    assert out.sqdist.dtype == dtype and out.sum_x.dtype == out.inertia.dtype == torch.float64
    assert out.labels.shape == (N,) and out.sqdist.shape == (N,) and out.counts.shape == (K,)
    assert out.sum_x.shape == (K, D) and out.inertia.shape == ()
    assert out.sum_x.device.type == device
    _check(out, x, c, dtype)
    if dtype == torch.float64:
        # All labels match in float64, so the reference counts and sums are checked unconditionally.
        assert torch.equal(out.labels.cpu(), ref.kmeans_stats(x, c)[0])
    # Same assignment as assign_nearest (bit for bit: the same tiles).
    a = ops.assign_nearest(x.to(device), c.to(device))
    assert torch.equal(a.labels, out.labels) and torch.equal(a.sqdist, out.sqdist)
    if device != "cpu":
        cpu = ops.kmeans_stats(x, c)
        tol = tol_for(dtype, F64_TOL, F32_TOL)
        if torch.equal(out.labels.cpu(), cpu.labels):
            assert torch.equal(out.counts.cpu(), cpu.counts)
            assert rel_err(out.sum_x, cpu.sum_x) <= tol
        assert rel_err(out.sqdist, cpu.sqdist) <= tol and rel_err(out.inertia, cpu.inertia) <= tol


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_opcheck(dtype, device):
    x, c = _data(7, 3, 4, dtype, seed=11)
    torch.library.opcheck(torch.ops.mixdiff.kmeans_stats.default, (x.to(device), c.to(device)))


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_empty_input(dtype, device):
    c = randn(3, 5, seed=12, dtype=dtype).to(device)
    out = ops.kmeans_stats(torch.empty(0, 5, dtype=dtype, device=device), c)
    want = torch.float64 if dtype == torch.float64 else torch.float32
    assert out.labels.shape == (0,) and out.labels.dtype == torch.int64
    assert out.sqdist.shape == (0,) and out.sqdist.dtype == want
    assert out.counts.shape == (3,) and out.counts.dtype == torch.int64 and (out.counts == 0).all()
    assert out.sum_x.shape == (3, 5) and out.sum_x.dtype == torch.float64 and (out.sum_x == 0).all()
    assert out.inertia.shape == () and out.inertia.dtype == torch.float64 and out.inertia.item() == 0.0


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_empty_clusters(dtype, device):
    # Centres 1 and 3 are far from all data: count 0 and an exactly zero sum row.
    x = randn(500, 4, seed=13, dtype=dtype)
    c = torch.cat([randn(1, 4, seed=14, dtype=dtype), torch.full((1, 4), 1e3, dtype=dtype),
                   randn(1, 4, seed=15, dtype=dtype), torch.full((1, 4), -1e3, dtype=dtype)])
    out = ops.kmeans_stats(x.to(device), c.to(device))
    assert out.counts[1].item() == 0 and out.counts[3].item() == 0
    assert (out.sum_x[1] == 0).all() and (out.sum_x[3] == 0).all()
    assert out.counts.sum().item() == 500 and out.counts[0].item() > 0 and out.counts[2].item() > 0
    _check(out, x, c, dtype)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_ties_resolve_to_lowest_index(dtype, device):
    # Exact tie: x = 0 is at squared distance 1 from both +1 and -1.
    x = torch.zeros(5, 1, dtype=dtype, device=device)
    out = ops.kmeans_stats(x, torch.tensor([[1.0], [-1.0]], dtype=dtype, device=device))
    assert out.labels.tolist() == [0] * 5 and out.counts.tolist() == [5, 0]
    assert out.sum_x.tolist() == [[-5.0], [0.0]] and out.inertia.item() == 5.0
    # Duplicated centres, also across 16/32-component blocks: the first copy gets every point.
    K, D = 50, 3
    c = randn(K, D, seed=16, dtype=dtype, scale=3.0)
    dup = {45: 4, 20: 4, 34: 33}
    for later, earlier in dup.items():
        c[later] = c[earlier]
    x = torch.cat([c[[4, 33]].repeat(4, 1) + 0.01 * randn(8, D, seed=17, dtype=dtype), randn(300, D, seed=18, dtype=dtype, scale=3.0)])
    out = ops.kmeans_stats(x.to(device), c.to(device))
    assert out.labels[:8].tolist() == [4, 33] * 4
    assert all(out.counts[later].item() == 0 for later in dup)
    assert all((out.sum_x[later] == 0).all() for later in dup)
    _check(out, x, c, dtype)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_non_contiguous(dtype, device):
    N, K, D = 300, 7, 5
    base_x = randn(2 * D, 3 * N, seed=19, dtype=dtype).to(device)
    base_c = randn(3 * K, 2 * D, seed=20, dtype=dtype).to(device)
    views = {
        "transposed": (base_x[:D, :N].t(), base_c[:K, :D].t().contiguous().t()),
        "strided": (base_x.t()[::3, ::2], base_c[::3, ::2]),
    }
    for name, (x, c) in views.items():
        assert not x.is_contiguous() and not c.is_contiguous(), name
        got = ops.kmeans_stats(x, c)
        want = ops.kmeans_stats(x.contiguous(), c.contiguous())
        for a, b in zip(got, want):
            assert torch.equal(a, b), name
        _check(got, x, c, dtype)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_low_precision_computes_in_float32(dtype, device):
    x = randn(200, 6, seed=21, dtype=dtype).to(device)
    c = randn(5, 6, seed=22, dtype=dtype).to(device)
    out = ops.kmeans_stats(x, c)
    assert out.sqdist.dtype == torch.float32 and out.sum_x.dtype == torch.float64
    want = ops.kmeans_stats(x.float(), c.float())
    for a, b in zip(out, want):
        assert torch.equal(a, b)
    _check(out, x, c, torch.float32)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_k1(dtype, device):
    # K = 1: one cluster with every point; sum_x = sum (x - c), inertia = sum ||x - c||^2.
    x = randn(1500, 3, seed=23, dtype=dtype)
    c = randn(1, 3, seed=24, dtype=dtype)
    out = ops.kmeans_stats(x.to(device), c.to(device))
    z = x.double() - c.double()
    tol = tol_for(dtype, F64_TOL, F32_TOL)
    assert (out.labels == 0).all() and out.counts.tolist() == [1500]
    assert rel_err(out.sum_x, z.sum(0, keepdim=True)) <= tol
    assert rel_err(out.inertia, (z**2).sum()) <= tol


@pytest.mark.parametrize("device", devices)
def test_lloyd_update_from_stats(device):
    # The documented use: c_k + sum_x_k / count_k is the mean of cluster k (float64, well separated).
    g = gen(25)
    c = 5.0 * torch.eye(4, 3, dtype=torch.float64)
    comp = torch.arange(400) % 4
    x = c[comp] + 0.5 * torch.randn(400, 3, generator=g, dtype=torch.float64)
    out = ops.kmeans_stats(x.to(device), c.to(device))
    assert torch.equal(out.labels.cpu(), comp)
    new_c = c + out.sum_x.cpu() / out.counts.cpu()[:, None]
    want = torch.stack([x[comp == k].mean(0) for k in range(4)])
    assert rel_err(new_c, want) <= F64_TOL


@pytest.mark.parametrize("device", devices)
def test_nan_row_in_a_subprocess(device):
    # A row with a NaN compares with no centre: documented (cpu_tiles.h, nearest_rows) behaviour is label 0
    # and sqdist NaN, so counts still sum to N and the statistics stay in bounds. Run in a child process:
    # an out-of-range label would index the per-thread accumulators out of bounds and can abort the
    # interpreter, which must fail this test rather than kill the test session.
    code = textwrap.dedent(
        f"""
        import torch
        from mixdiff_ext import ops
        for dtype in (torch.float64, torch.float32):
            for K in (4, 17, 32):
                x = torch.randn(6, 2, generator=torch.Generator().manual_seed(K), dtype=dtype)
                x[1, 0] = float("nan")
                c = torch.arange(2 * K, dtype=dtype).reshape(K, 2)
                o = ops.kmeans_stats(x.to("{device}"), c.to("{device}"))
                print(dtype, K, o.labels.tolist(), int(o.counts.sum()), bool(torch.isnan(o.sqdist[1])), flush=True)
        """
    )
    proc = subprocess.run([sys.executable, "-c", child_prelude() + code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"child exited with {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-2000:]}"
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 6
    for line in lines:
        dtype, K, rest = line.split(" ", 2)
        labels, count, nan = rest.rsplit(" ", 2)
        labels = json.loads(labels)
        assert labels[1] == 0 and all(0 <= lab < int(K) for lab in labels), line
        assert int(count) == 6, line
        assert nan == "True", line


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize(
    "x_shape, c_shape, x_dtype, c_dtype, match",
    [
        ((5,), (3, 5), torch.float32, torch.float32, r"x must be 2-D"),
        ((2, 5, 1), (3, 5), torch.float32, torch.float32, r"x must be 2-D"),
        ((4, 5), (3, 5, 1), torch.float32, torch.float32, r"centres must be 2-D"),
        ((4, 5), (3, 6), torch.float32, torch.float32, r"centres has D=6 but x has D=5"),
        ((4, 5), (0, 5), torch.float32, torch.float32, r"centres must have at least one row"),
        ((4, 5), (3, 5), torch.int64, torch.float32, r"x must be a floating-point tensor"),
        ((4, 5), (3, 5), torch.float32, torch.int32, r"centres must be a floating-point tensor"),
    ],
    ids=["x_1d", "x_3d", "centres_3d", "d_mismatch", "k0", "x_int", "centres_int"],
)
def test_bad_inputs(x_shape, c_shape, x_dtype, c_dtype, match, device):
    x = torch.zeros(x_shape, dtype=x_dtype, device=device)
    c = torch.zeros(c_shape, dtype=c_dtype, device=device)
    with pytest.raises(RuntimeError, match=match):
        ops.kmeans_stats(x, c)
