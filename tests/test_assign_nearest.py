"""mixdiff::assign_nearest: nearest-centre labels and squared distances, autograd on sqdist."""
from __future__ import annotations

import pytest
import torch

from conftest import assert_labels_match, devices, gen, randn, rel_err, tol_for
from mixdiff_ext import _reference as ref
from mixdiff_ext import ops

# float64 computes the same sums as the reference up to summation order: ~D * eps64 ~ 1e-14 relative,
# so 1e-10 has a wide margin yet catches any formula error.
F64_TOL = 1e-10
# float32: sqdist is a sum of D <= 130 squared float32 differences (~sqrt(D) * 6e-8 typical, D * 6e-8
# worst case ~ 1e-5); 1e-4 leaves room for that and still catches a wrong or cancelling formula.
F32_TOL = 1e-4

# (N, K, D): N = 1..9 against the 4-row register block, K = 1, 17, 33, 65 against the 16/32-component
# blocks, D = 1, 3, 130; plus sizes that span several parallel_for grains / threads.
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
    (9, 65, 130),
    (257, 33, 17),
    (2100, 17, 5),
]
DTYPES = [torch.float64, torch.float32]


def _data(N, K, D, dtype, seed):
    return randn(N, D, seed=seed, dtype=dtype, scale=2.0), randn(K, D, seed=seed + 1, dtype=dtype, scale=2.0)


def _ref64(x, c):
    x64, c64 = x.detach().cpu().double(), c.detach().cpu().double()
    labels, sqdist = ref.assign_nearest(x64, c64)
    scores = ((x64[:, None, :] - c64[None]) ** 2).sum(-1)
    return labels, sqdist, scores


def _check_against(out, labels, sqdist, scores, dtype):
    tol = tol_for(dtype, F64_TOL, F32_TOL)
    assert_labels_match(out.labels, labels, scores, largest=False, dtype=dtype)
    err = rel_err(out.sqdist, sqdist)
    assert err <= tol, f"sqdist rel err {err:.3e} > {tol:.0e}"


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "N{}_K{}_D{}".format(*s))
def test_matches_reference(shape, dtype, device):
    N, K, D = shape
    x, c = _data(N, K, D, dtype, seed=100 + N + 7 * K + 31 * D)
    out = ops.assign_nearest(x.to(device), c.to(device))
    assert out.labels.dtype == torch.int64 and out.sqdist.dtype == dtype
    assert out.labels.shape == (N,) and out.sqdist.shape == (N,)
    assert out.labels.device.type == device and out.sqdist.device.type == device
    labels, sqdist, scores = _ref64(x, c)
    _check_against(out, labels, sqdist, scores, dtype)
    if device != "cpu":
        cpu = ops.assign_nearest(x, c)
        _check_against(out, cpu.labels, cpu.sqdist.double(), scores, dtype)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_far_points(dtype, device):
    # Points 1e3 away from centres of unit size: distances ~1e6, must stay exact relative to their size.
    x, c = _data(64, 5, 8, dtype, seed=3)
    x = (x.double() * 1e3).to(dtype)
    out = ops.assign_nearest(x.to(device), c.to(device))
    assert torch.isfinite(out.sqdist).all()
    labels, sqdist, scores = _ref64(x, c)
    _check_against(out, labels, sqdist, scores, dtype)


# torch.library.opcheck's test_aot_dispatch_dynamic cannot run with requires_grad inputs on this op: its
# helper sums every output into one accumulator with `sm += out.sum().abs()`, starting from the int64
# labels, and the float sqdist cannot be added in place into an int64 tensor ("result type Double can't
# be cast to the desired output type Long"; torch 2.13, torch/testing/_internal/optests/aot_autograd.py).
# So the grad case runs the other default utils, and test_compiled_backward_matches_eager does what
# test_aot_dispatch_dynamic would: trace forward + backward with AOTAutograd and dynamic shapes.
OPCHECK_GRAD_UTILS = ("test_schema", "test_autograd_registration", "test_faketensor")


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_opcheck(dtype, device):
    x, c = _data(6, 3, 4, dtype, seed=11)
    torch.library.opcheck(torch.ops.mixdiff.assign_nearest.default, (x.to(device), c.to(device)))


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_opcheck_requires_grad(dtype, device):
    x, c = _data(6, 3, 4, dtype, seed=12)
    for grad_x, grad_c in ((True, True), (True, False), (False, True)):
        args = (x.to(device).requires_grad_(grad_x), c.to(device).requires_grad_(grad_c))
        torch.library.opcheck(torch.ops.mixdiff.assign_nearest.default, args, test_utils=OPCHECK_GRAD_UTILS)


@pytest.mark.dynamo
@pytest.mark.parametrize("device", devices)
def test_compiled_backward_matches_eager(device):
    def loss(a, b):
        out = ops.assign_nearest(a, b)
        return (out.sqdist * torch.arange(1, a.shape[0] + 1, dtype=a.dtype, device=a.device)).sum()

    compiled = torch.compile(loss, backend="aot_eager", dynamic=True, fullgraph=True)
    for N, seed in ((10, 1), (23, 2)):  # two sizes: the dynamic-shape graph must not bake N in
        x, c = _separated(N, 3, 4, seed=seed)
        xs = [x.to(device).requires_grad_(True) for _ in range(2)]
        cs = [c.to(device).requires_grad_(True) for _ in range(2)]
        eager_val, compiled_val = loss(xs[0], cs[0]), compiled(xs[1], cs[1])
        eager_val.backward()
        compiled_val.backward()
        assert rel_err(compiled_val, eager_val) <= F64_TOL
        assert rel_err(xs[1].grad, xs[0].grad) <= F64_TOL
        assert rel_err(cs[1].grad, cs[0].grad) <= F64_TOL


def _separated(N, K, D, seed):
    """float64 points near well-separated centres (margin to the second-nearest centre >> gradcheck eps)."""
    g = gen(seed)
    c = 4.0 * torch.eye(K, D, dtype=torch.float64) + 0.1 * torch.randn(K, D, generator=g, dtype=torch.float64)
    comp = torch.arange(N) % K
    x = c[comp] + 0.3 * torch.randn(N, D, generator=g, dtype=torch.float64)
    return x, c


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("shape", [(1, 1, 1), (7, 3, 4), (12, 5, 5)], ids=lambda s: "N{}_K{}_D{}".format(*s))
def test_gradcheck_sqdist(shape, device):
    x, c = _separated(*shape, seed=5)
    labels, _, scores = _ref64(x, c)
    top2 = scores.topk(min(2, shape[1]), dim=1, largest=False).values
    if shape[1] > 1:
        assert (top2[:, 1] - top2[:, 0]).min() > 1.0, "test data has near-ties"
    x = x.to(device).requires_grad_(True)
    c = c.to(device).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: ops.assign_nearest(a, b).sqdist, (x, c))


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_grad_matches_reference_autograd(dtype, device):
    # Weighted sum so that every point's gradient matters; an unused centre (index K-1) gets zero gradient.
    x64, c64 = _separated(20, 4, 6, seed=8)
    c64 = torch.cat([c64, torch.full((1, 6), 50.0, dtype=torch.float64)])
    w = torch.linspace(0.5, 2.0, 20, dtype=torch.float64)
    x = x64.to(dtype).to(device).requires_grad_(True)
    c = c64.to(dtype).to(device).requires_grad_(True)
    (ops.assign_nearest(x, c).sqdist * w.to(device, dtype)).sum().backward()
    assert x.grad.dtype == dtype and c.grad.dtype == dtype
    xr = x64.to(dtype).double().requires_grad_(True)
    cr = c64.to(dtype).double().requires_grad_(True)
    (ref.assign_nearest(xr, cr)[1] * w).sum().backward()
    tol = tol_for(dtype, F64_TOL, F32_TOL)
    assert rel_err(x.grad, xr.grad) <= tol
    assert rel_err(c.grad, cr.grad) <= tol
    assert torch.equal(c.grad[-1].cpu(), torch.zeros(6, dtype=dtype))


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_empty_input(dtype, device):
    x = torch.empty(0, 5, dtype=dtype, device=device)
    c = torch.randn(3, 5, generator=gen(0)).to(device, dtype)
    out = ops.assign_nearest(x, c)
    want = torch.float64 if dtype == torch.float64 else torch.float32
    assert out.labels.shape == (0,) and out.labels.dtype == torch.int64
    assert out.sqdist.shape == (0,) and out.sqdist.dtype == want


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_non_contiguous(dtype, device):
    N, K, D = 37, 9, 6
    base_x = randn(2 * D, 2 * N, seed=21, dtype=dtype).to(device)
    base_c = randn(2 * K, 3 * D, seed=22, dtype=dtype).to(device)
    views = {
        "transposed": (base_x[:D, :N].t(), base_c[:K, :D]),
        "strided": (base_x.t()[::2, ::2], base_c[::2, ::3]),
        "expanded_x": (base_x[:1, :D].expand(N, D), base_c[:K, :D]),
    }
    for name, (x, c) in views.items():
        assert not x.is_contiguous() or not c.is_contiguous(), name
        got = ops.assign_nearest(x, c)
        want = ops.assign_nearest(x.contiguous(), c.contiguous())
        assert torch.equal(got.labels, want.labels), name
        assert torch.equal(got.sqdist, want.sqdist), name
        labels, sqdist, scores = _ref64(x, c)
        _check_against(got, labels, sqdist, scores, dtype)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_ties_resolve_to_lowest_index(dtype, device):
    # Exact ties: x = 0 is at squared distance exactly 1 from both +1 and -1, in either order.
    x = torch.zeros(3, 1, dtype=dtype, device=device)
    for centres in ([[1.0], [-1.0]], [[-1.0], [1.0]], [[2.0], [1.0], [-1.0], [1.0]]):
        c = torch.tensor(centres, dtype=dtype, device=device)
        out = ops.assign_nearest(x, c)
        want = 0 if len(centres) == 2 else 1
        assert out.labels.tolist() == [want] * 3, centres
        assert out.sqdist.tolist() == [1.0] * 3
    # Duplicate centres across register blocks (16 float64 / 32 float32 components per block): every
    # point closest to a duplicated centre gets the first copy.
    K, D = 65, 3
    c = randn(K, D, seed=31, dtype=dtype, scale=3.0)
    dup = {40: 3, 64: 3, 50: 20, 33: 32}  # later index -> earlier index it copies
    for later, earlier in dup.items():
        c[later] = c[earlier]
    x = torch.cat([c[[3, 20, 32]] + 0.01 * randn(3, D, seed=32, dtype=dtype), randn(200, D, seed=33, dtype=dtype, scale=3.0)])
    out = ops.assign_nearest(x.to(device), c.to(device))
    labels = out.labels.cpu()
    assert labels[:3].tolist() == [3, 20, 32]
    assert not torch.isin(labels, torch.tensor(list(dup))).any()
    want, sqdist, scores = _ref64(x, c)
    assert torch.equal(labels, want)
    assert rel_err(out.sqdist, sqdist) <= tol_for(dtype, F64_TOL, F32_TOL)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_low_precision_computes_in_float32(dtype, device):
    x = randn(50, 7, seed=41, dtype=dtype).to(device)
    c = randn(9, 7, seed=42, dtype=dtype).to(device)
    out = ops.assign_nearest(x, c)
    assert out.sqdist.dtype == torch.float32
    want = ops.assign_nearest(x.float(), c.float())
    assert torch.equal(out.labels, want.labels)
    assert torch.equal(out.sqdist, want.sqdist)
    labels, sqdist, scores = _ref64(x, c)
    _check_against(out, labels, sqdist, scores, torch.float32)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_k1_and_d1(dtype, device):
    x = randn(11, 1, seed=51, dtype=dtype)
    c = randn(1, 1, seed=52, dtype=dtype)
    out = ops.assign_nearest(x.to(device), c.to(device))
    assert out.labels.tolist() == [0] * 11
    want = ((x.double() - c.double()) ** 2).squeeze(1)
    assert rel_err(out.sqdist, want) <= tol_for(dtype, F64_TOL, F32_TOL)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("K", [1, 4, 16, 17, 32, 33])
def test_nan_row_gets_label_0_and_nan(K, dtype, device):
    # A row with a NaN compares with no centre. Documented (cpu_tiles.h, nearest_rows) and reference
    # (torch.min) behaviour: label 0 -- never an index outside [0, K) -- and sqdist NaN. The other rows
    # are unaffected. K = 1, 4, 17, 33 leave padding in the 16/32-wide component blocks.
    x = randn(5, 3, seed=61, dtype=dtype)
    c = randn(K, 3, seed=62, dtype=dtype)
    clean = ops.assign_nearest(x.to(device), c.to(device))
    x[2, 1] = float("nan")
    out = ops.assign_nearest(x.to(device), c.to(device))
    want_labels, want_sqdist = ref.assign_nearest(x.double(), c.double())
    assert want_labels[2].item() == 0 and torch.isnan(want_sqdist[2])
    assert out.labels[2].item() == 0, f"NaN row got label {out.labels[2].item()} (K={K})"
    assert torch.isnan(out.sqdist[2]), f"NaN row got sqdist {out.sqdist[2].item()}"
    keep = [0, 1, 3, 4]
    assert torch.equal(out.labels[keep], clean.labels[keep]) and torch.equal(out.sqdist[keep], clean.sqdist[keep])


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize(
    "x_shape, c_shape, x_dtype, match",
    [
        ((5,), (3, 5), torch.float32, r"x must be 2-D"),
        ((2, 5, 1), (3, 5), torch.float32, r"x must be 2-D"),
        ((4, 5), (3,), torch.float32, r"centres must be 2-D"),
        ((4, 5), (3, 4), torch.float32, r"centres has D=4 but x has D=5"),
        ((4, 5), (0, 5), torch.float32, r"centres must have at least one row"),
        ((4, 5), (3, 5), torch.int64, r"x must be a floating-point tensor"),
        ((4, 5), (3, 5), torch.int32, r"x must be a floating-point tensor"),
    ],
    ids=["x_1d", "x_3d", "centres_1d", "d_mismatch", "k0", "x_int64", "x_int32"],
)
def test_bad_inputs(x_shape, c_shape, x_dtype, match, device):
    x = torch.zeros(x_shape, dtype=x_dtype, device=device)
    c = torch.zeros(c_shape, dtype=torch.float32, device=device)
    with pytest.raises(RuntimeError, match=match):
        ops.assign_nearest(x, c)


@pytest.mark.parametrize("device", devices)
def test_bad_centres_dtype(device):
    with pytest.raises(RuntimeError, match=r"centres must be a floating-point tensor"):
        ops.assign_nearest(torch.zeros(4, 5, device=device), torch.zeros(3, 5, dtype=torch.int64, device=device))
