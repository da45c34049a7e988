"""mixdiff::ngmg: the negative Gaussian mixture gradient (loss and gradient, fused) and ngmg_loss's autograd."""
from __future__ import annotations

import math

import pytest
import torch

from conftest import devices, gen, randn, rel_err, tol_for
import mixdiff_ext
from mixdiff_ext import _reference as ref
from mixdiff_ext import ops

# float64: the op and the reference evaluate the same terms in different orders (and the op max-shifts);
# both are accurate to ~1e-15 relative for the moderate exponents used here, so 1e-12 is safe.
F64_TOL = 1e-12
# float32: squared distances of D <= 33 float32 terms (~D * 6e-8 relative), exponents a_k up to ~50 in size
# (an absolute error of |a| * 1e-7 becomes that relative error of e^a) and the float32 exp polynomial
# (< 1.2e-7): typical errors ~1e-6, so 1e-4 is safe and still catches a formula error.
F32_TOL = 1e-4
KINDS = ("potential", "log")
DTYPES = [torch.float64, torch.float32]


def _problem(N, K, D, dtype, seed, row_weights=True, sigma_per_k=True, scale=1.0):
    """Modes ~ 3 N(0, I); predictions within about one width of a random mode; weights in (0.1, 1.1)."""
    g = gen(seed)
    f64 = dict(generator=g, dtype=torch.float64)
    modes = 3.0 * torch.randn(K, D, **f64)
    sigma = scale * (0.5 + torch.rand(K, **f64)) if sigma_per_k else torch.tensor(0.8 * scale, dtype=torch.float64)
    weights = 0.1 + torch.rand(*((N, K) if row_weights else (K,)), **f64)
    comp = torch.randint(0, K, (N,), generator=g)
    width = sigma[comp, None] if sigma_per_k else sigma
    pred = modes[comp] + width * torch.randn(N, D, **f64)
    return tuple(t.to(dtype) for t in (pred, modes, weights, sigma))


def _ref64(pred, modes, weights, sigma, normalized, kind):
    return ref.ngmg(*(t.detach().cpu().double() for t in (pred, modes, weights, sigma)), normalized, kind)


def _check(out, args, normalized, kind, dtype):
    tol = tol_for(dtype, F64_TOL, F32_TOL)
    loss, grad = _ref64(*args, normalized, kind)
    err = rel_err(out.loss, loss)
    assert err <= tol, f"loss rel err {err:.3e} > {tol:.0e}"
    err = rel_err(out.grad, grad)
    assert err <= tol, f"grad rel err {err:.3e} > {tol:.0e}"


def _run(args, device, normalized=False, kind="potential"):
    return ops.ngmg(*(t.to(device) for t in args), normalized=normalized, kind=kind)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("sigma_per_k", [False, True], ids=["sigma_scalar", "sigma_K"])
@pytest.mark.parametrize("row_weights", [False, True], ids=["weights_K", "weights_NK"])
@pytest.mark.parametrize("normalized", [False, True], ids=["unnormalized", "normalized"])
@pytest.mark.parametrize("kind", KINDS)
def test_matches_reference(kind, normalized, row_weights, sigma_per_k, dtype, device):
    N, K, D = 300, 17, 16  # K = 17: two of the gradient pass's component chunks
    args = _problem(N, K, D, dtype, seed=1 + row_weights + 2 * sigma_per_k, row_weights=row_weights,
                    sigma_per_k=sigma_per_k)
    out = _run(args, device, normalized, kind)
    assert out.loss.shape == (N,) and out.grad.shape == (N, D)
    assert out.loss.dtype == dtype and out.grad.dtype == dtype and out.loss.device.type == device
    _check(out, args, normalized, kind, dtype)
    if device != "cpu":
        cpu = _run(args, "cpu", normalized, kind)
        tol = tol_for(dtype, F64_TOL, F32_TOL)
        assert rel_err(out.loss, cpu.loss) <= tol and rel_err(out.grad, cpu.grad) <= tol


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [(1, 1, 1), (5, 16, 2), (9, 33, 5), (2100, 3, 33)], ids=lambda s: "N{}_K{}_D{}".format(*s))
def test_shapes(shape, kind, device):
    args = _problem(*shape, torch.float64, seed=sum(shape))
    _check(_run(args, device, True, kind), args, True, kind, torch.float64)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_low_precision_computes_in_float32(dtype, device):
    args = _problem(40, 4, 5, dtype, seed=3)
    for kind in KINDS:
        out = _run(args, device, kind=kind)
        want = _run(tuple(t.float() for t in args), device, kind=kind)
        assert out.loss.dtype == torch.float32 and out.grad.dtype == torch.float32
        assert torch.equal(out.loss, want.loss) and torch.equal(out.grad, want.grad)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("reduction", ["sum", "none"])
@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck(kind, reduction, device):
    pred, modes, weights, sigma = (t.to(device) for t in _problem(6, 4, 3, torch.float64, seed=4))
    pred.requires_grad_(True)
    for w in (weights, weights[0]):  # per row and shared
        assert torch.autograd.gradcheck(
            lambda p: ops.ngmg_loss(p, modes, w, sigma, reduction=reduction, normalized=True, kind=kind), (pred,))


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("kind", KINDS)
def test_loss_reductions_and_backward(kind, device):
    pred, modes, weights, sigma = (t.to(device) for t in _problem(50, 3, 4, torch.float64, seed=5))
    out = ops.ngmg(pred, modes, weights, sigma, kind=kind)
    assert not out.grad.requires_grad
    for reduction, want, scale in (("mean", out.loss.mean(), 1 / 50), ("sum", out.loss.sum(), 1.0)):
        p = pred.clone().requires_grad_(True)
        loss = mixdiff_ext.ngmg_loss(p, modes, weights, sigma, reduction=reduction, kind=kind)
        assert torch.equal(loss, want)
        loss.backward()
        assert torch.equal(p.grad, scale * out.grad)
    p = pred.clone().requires_grad_(True)
    rows = ops.ngmg(p, modes, weights, sigma, kind=kind)
    assert rows.loss.requires_grad and not rows.grad.requires_grad  # the gradient output is a plain value
    upstream = torch.arange(50, dtype=torch.float64, device=device)
    rows.loss.backward(upstream)
    assert torch.equal(p.grad, upstream[:, None] * out.grad)
    # float16 predictions receive a float16 gradient of the float32 computation
    h = pred.half().requires_grad_(True)
    mixdiff_ext.ngmg_loss(h, modes, weights, sigma, reduction="sum", kind=kind).backward()
    assert h.grad.dtype == torch.float16


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("kind", KINDS)
def test_opcheck(kind, device):
    pred, modes, weights, sigma = (t.to(device) for t in _problem(6, 3, 4, torch.float64, seed=6))
    for p, w in ((pred, weights), (pred.clone().requires_grad_(True), weights[0])):
        torch.library.opcheck(torch.ops.mixdiff.ngmg.default, (p, modes, w, sigma, False, kind))


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("kind", KINDS)
def test_empty_input(kind, device):
    _, modes, weights, sigma = (t.to(device) for t in _problem(1, 3, 4, torch.float32, seed=7))
    pred = torch.empty(0, 4, device=device, requires_grad=True)
    for w in (weights[0], torch.empty(0, 3, device=device)):
        out = ops.ngmg(pred, modes, w, sigma, kind=kind)
        assert out.loss.shape == (0,) and out.grad.shape == (0, 4) and out.loss.dtype == torch.float32
        ops.ngmg_loss(pred, modes, w, sigma, reduction="sum", kind=kind).backward()
        assert pred.grad.shape == (0, 4)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("kind", KINDS)
def test_non_contiguous(kind, device):
    N, K, D = 29, 5, 6
    pred, modes, weights, sigma = (t.to(device) for t in _problem(N, K, D, torch.float64, seed=8))
    want = ops.ngmg(pred, modes, weights, sigma, kind=kind)
    strided = torch.zeros(2 * N, 3 * D, dtype=pred.dtype, device=device)
    strided[::2, ::3] = pred
    s = torch.ones(2 * K, dtype=sigma.dtype, device=device)
    s[::2] = sigma
    for p in (pred.t().contiguous().t(), strided[::2, ::3]):
        assert not p.is_contiguous()
        got = ops.ngmg(p, modes.t().contiguous().t(), weights.t().contiguous().t(), s[::2], kind=kind)
        assert torch.equal(got.loss, want.loss) and torch.equal(got.grad, want.grad)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", KINDS)
def test_tiny_sigma(kind, dtype, device):
    # sigma = 1e-3: the log kind's normalised densities are ~e^+100 at the modes and ~e^-1e6 between them,
    # which only a max-shifted sum gets right.
    args = _problem(64, 6, 16, torch.float64, seed=9, scale=1e-3)
    args = tuple(t.to(dtype) for t in args)
    out = _run(args, device, kind=kind)
    assert torch.isfinite(out.loss).all() and torch.isfinite(out.grad).all()
    _check(out, args, False, kind, dtype)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("normalized", [False, True], ids=["unnormalized", "normalized"])
def test_far_predictions(normalized, dtype, device):
    # 1e6 away from every mode: the potential underflows to exactly 0 with a zero gradient (robust to
    # outliers); the log loss and its gradient stay finite, the gradient growing linearly with the distance.
    N, K, D = 20, 4, 5
    _, modes, weights, sigma = _problem(N, K, D, dtype, seed=10)
    direction = torch.nn.functional.normalize(randn(N, D, seed=11), dim=1)
    pred = (modes.double()[torch.arange(N) % K] + 1e6 * direction).to(dtype)
    args = (pred, modes, weights, sigma)
    pot = _run(args, device, normalized, "potential")
    assert (pot.loss == 0).all() and (pot.grad == 0).all()
    log = _run(args, device, normalized, "log")
    assert torch.isfinite(log.loss).all() and torch.isfinite(log.grad).all()
    assert (log.grad.double().norm(dim=1) > 1e5).all()
    _check(log, args, normalized, "log", dtype)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dead", [0, 2], ids=["first", "middle"])  # first: the online log-sum-exp starts at -inf
def test_zero_weight_component(dead, kind, dtype, device):
    N, K, D = 40, 5, 3
    pred, modes, weights, sigma = _problem(N, K, D, dtype, seed=12)
    weights[:, dead] = 0
    pred[: N // 2] = modes[dead]  # rows on the dead mode: it would dominate were its weight not zero
    args = (pred, modes, weights, sigma)
    out = _run(args, device, kind=kind)
    assert torch.isfinite(out.loss).all() and torch.isfinite(out.grad).all()
    _check(out, args, False, kind, dtype)
    keep = [k for k in range(K) if k != dead]
    sub = _run((pred, modes[keep], weights[:, keep], sigma[keep]), device, kind=kind)
    tol = tol_for(dtype, F64_TOL, F32_TOL)
    assert rel_err(out.loss, sub.loss) <= tol and rel_err(out.grad, sub.grad) <= tol


@pytest.mark.parametrize("device", devices)
def test_all_zero_weights(device):
    # A row without mass has G = 0: potential loss 0 and gradient 0; the log kind refuses it (-log 0 = +inf).
    pred, modes, weights, sigma = (t.to(device) for t in _problem(6, 3, 2, torch.float64, seed=13))
    weights[2] = 0
    out = ops.ngmg(pred, modes, weights, sigma)
    assert out.loss[2] == 0 and (out.grad[2] == 0).all()
    assert (out.loss[[0, 1, 3, 4, 5]] < 0).all()
    for w in (weights, torch.zeros(3, dtype=torch.float64, device=device)):
        with pytest.raises(RuntimeError, match=r"weights must not be all zero in any row for kind='log'"):
            ops.ngmg(pred, modes, w, sigma, kind="log")


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_single_component_closed_form(dtype, device):
    N, D, w, s = 9, 3, 0.7, 0.6
    pred = randn(N, D, seed=14, dtype=dtype)
    mode = torch.tensor([[0.25, -0.5, 1.0]], dtype=dtype)
    args = (pred, mode, torch.tensor([w], dtype=dtype), torch.tensor(s, dtype=dtype))
    diff = pred.double() - mode.double()
    r2 = (diff**2).sum(1)
    tol = tol_for(dtype, F64_TOL, F32_TOL)
    pot = _run(args, device)
    assert rel_err(pot.loss, -w * torch.exp(-r2 / (2 * s * s))) <= tol
    assert rel_err(pot.grad, w * torch.exp(-r2 / (2 * s * s))[:, None] * diff / s**2) <= tol
    log = _run(args, device, kind="log")
    assert rel_err(log.loss, 0.5 * D * math.log(2 * math.pi * s * s) + r2 / (2 * s * s) - math.log(w)) <= tol
    assert rel_err(log.grad, diff / s**2) <= tol  # one component: the log kind is the squared error / sigma^2


@pytest.mark.parametrize("device", devices)
def test_small_error_gradient_is_proportional_to_the_w2_gradient(device):
    # One component, small error: grad L = e^(-r^2 / (2 sigma^2)) (y - m) / sigma^2, parallel to
    # grad_y 1/2 W2^2(delta_y, delta_m) = y - m, with a ratio that tends to 1 / sigma^2 (off by ~r^2 / (2 sigma^2)).
    sigma, D = 0.7, 8
    mode = randn(1, D, seed=15)
    u = torch.nn.functional.normalize(randn(1, D, seed=16), dim=1)
    gaps = []
    for r in (1e-1, 1e-2, 1e-3):
        pred = mode + r * sigma * u
        out = ops.ngmg(pred.to(device), mode.to(device), torch.ones(1, dtype=torch.float64, device=device), sigma)
        w2_grad = (pred - mode)[0]  # 1/2 grad_y ||y - m||^2
        g = out.grad[0].cpu()
        cosine = torch.dot(g, w2_grad) / (g.norm() * w2_grad.norm())
        assert abs(cosine.item() - 1) < 1e-12
        ratio = (g.norm() / w2_grad.norm()).item()
        gaps.append(abs(ratio * sigma**2 - 1))
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[2] < 1e-6


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("normalized", [False, True], ids=["unnormalized", "normalized"])
def test_potential_is_bounded(normalized, device):
    # 0 <= G(y) <= sum_k w_k c_k for every prediction, near the modes, between them and far away.
    N, K, D = 400, 6, 4
    pred, modes, weights, sigma = _problem(N, K, D, torch.float64, seed=17)
    pred = pred * torch.logspace(-2, 3, N, dtype=torch.float64)[:, None]
    out = ops.ngmg(pred.to(device), modes.to(device), weights.to(device), sigma.to(device), normalized=normalized)
    c = (2 * math.pi * sigma**2) ** (-D / 2) if normalized else torch.ones(K, dtype=torch.float64)
    G = -out.loss.cpu()
    assert (G >= 0).all() and (G <= (weights * c).sum(1) * (1 + 1e-12)).all()


# ---------------------------------------------------------------------------------------------------
# Bad inputs: each raises naming the offending argument.
# ---------------------------------------------------------------------------------------------------
def _good(device):
    return dict(pred=torch.zeros(5, 4, device=device), modes=torch.zeros(3, 4, device=device),
                weights=torch.ones(3, device=device), sigma=torch.ones(3, device=device))


OP_BAD_CASES = {  # through torch.ops: RuntimeError from the C++ checks
    "pred_1d": (dict(pred=lambda d: torch.zeros(4, device=d)), r"pred must be 2-D"),
    "pred_int": (dict(pred=lambda d: torch.zeros(5, 4, dtype=torch.int64, device=d)), r"pred must be a floating-point"),
    "modes_1d": (dict(modes=lambda d: torch.zeros(4, device=d)), r"modes must be 2-D"),
    "d_mismatch": (dict(pred=lambda d: torch.zeros(5, 7, device=d)), r"modes has D=4 but pred has D=7"),
    "k0": (dict(modes=lambda d: torch.zeros(0, 4, device=d)), r"modes must have at least one row"),
    "weights_long": (dict(weights=lambda d: torch.ones(4, device=d)), r"weights must have shape \[3\] or \[5, 3\]"),
    "weights_rows": (dict(weights=lambda d: torch.ones(4, 3, device=d)), r"weights must have shape \[3\] or \[5, 3\]"),
    "weights_int": (dict(weights=lambda d: torch.ones(3, dtype=torch.int64, device=d)), r"weights must be a floating"),
    "weights_negative": (dict(weights=lambda d: torch.tensor([1.0, -0.1, 1.0], device=d)), r"weights must be finite and non-negative"),
    "weights_nan": (dict(weights=lambda d: torch.tensor([1.0, math.nan, 1.0], device=d)), r"weights must be finite and non-negative"),
    "weights_inf": (dict(weights=lambda d: torch.tensor([1.0, math.inf, 1.0], device=d)), r"weights must be finite and non-negative"),
    "sigma_shape": (dict(sigma=lambda d: torch.ones(4, device=d)), r"sigma must be a single value or have shape \[3\]"),
    "sigma_zero": (dict(sigma=lambda d: torch.tensor([1.0, 0.0, 1.0], device=d)), r"sigma must be finite and positive"),
    "sigma_negative": (dict(sigma=lambda d: torch.tensor(-1.0, device=d)), r"sigma must be finite and positive"),
    "sigma_inf": (dict(sigma=lambda d: torch.tensor([math.inf], device=d)), r"sigma must be finite and positive"),
    "sigma_int": (dict(sigma=lambda d: torch.ones(3, dtype=torch.int64, device=d)), r"sigma must be a floating"),
    "kind": (dict(kind="Log"), r"kind must be 'potential' or 'log', got 'Log'"),
}


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("case", list(OP_BAD_CASES))
def test_bad_inputs(case, device):
    overrides, match = OP_BAD_CASES[case]
    kwargs = dict(_good(device), normalized=False, kind="potential")
    for name, value in overrides.items():
        kwargs[name] = value(device) if callable(value) else value
    with pytest.raises(RuntimeError, match=match):
        torch.ops.mixdiff.ngmg(*kwargs.values())


WRAPPER_BAD_CASES = {  # through ops.ngmg / ngmg_loss: ValueError / TypeError from Python
    "sigma_zero_float": (dict(sigma=0.0), ValueError, r"sigma must be finite and positive, got 0.0"),
    "sigma_nan_float": (dict(sigma=math.nan), ValueError, r"sigma must be finite and positive"),
    "sigma_str": (dict(sigma="1"), TypeError, r"sigma must be a float or a tensor"),
    "sigma_bool": (dict(sigma=True), TypeError, r"sigma must be a float or a tensor"),
    "pred_list": (dict(pred=[[0.0] * 4]), TypeError, r"pred must be a tensor"),
    "weights_none": (dict(weights=None), TypeError, r"weights must be a tensor"),
    "kind": (dict(kind="gaussian"), ValueError, r"kind must be one of .*got 'gaussian'"),
    "kind_type": (dict(kind=1), TypeError, r"kind must be a str"),
    "normalized_int": (dict(normalized=1), TypeError, r"normalized must be a bool"),
    "reduction": (dict(reduction="avg"), ValueError, r"reduction must be one of .*got 'avg'"),
}


@pytest.mark.parametrize("case", list(WRAPPER_BAD_CASES))
def test_bad_wrapper_arguments(case):
    overrides, error, match = WRAPPER_BAD_CASES[case]
    kwargs = dict(_good("cpu"), **overrides)
    with pytest.raises(error, match=match):
        ops.ngmg_loss(**kwargs)


def test_python_float_sigma_equals_tensor_sigma():
    pred, modes, weights, _ = _problem(10, 3, 2, torch.float32, seed=18)
    for kind in KINDS:
        a = ops.ngmg(pred, modes, weights, 0.8, kind=kind)
        b = ops.ngmg(pred, modes, weights, torch.tensor([0.8, 0.8, 0.8]), kind=kind)
        assert torch.equal(a.loss, b.loss) and torch.equal(a.grad, b.grad)
