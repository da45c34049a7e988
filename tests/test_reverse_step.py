"""mixdiff::reverse_step: one fused reverse step of every sampler, centred on each row's component j:

    y = x - mu_j,  O = A_j out ("epsilon", "v_prediction") or out ("sample": the network predicts y0),
    y0_hat = x0_from_x y + x0_from_out O   (clipped to the box [clip_lo[j], clip_hi[j]] in x space when asked),
    e = eps_from_x y + eps_from_out O,
    x' = mu_j + coef_x y + coef_x0 y0_hat + coef_eps e + coef_noise (A_j z)
         + coef_x0_prev (H1 - mu_j) + coef_x0_prev2 (H2 - mu_j),

z drawn only when coef_noise != 0, from row offset + i of stream 4 | step << 4 of `seed`, unless given;
H1, H2 the x0_history entries. The reference (_reference.reverse_step) is evaluated in float64 on the op's
inputs (bounds and history included) rounded to its compute dtype; for float32 its z are ref.normals in
float32 (the float32 layout differs from the float64 one).
"""
from __future__ import annotations

import math

import pytest
import torch

from conftest import (COVARIANCE_TYPES, HAS_CUDA, assert_rel_close, compute_dtype, devices, frac_equal, gen,
                      make_mixture, rel_err, sample_mixture, tol_for)
from mixdiff_ext import _reference as ref
from mixdiff_ext import ops

# float64: the op's z are the reference's up to glibc vs torch log / cos / sin (~1e-16); the step is the
# same few products and sums (full: A v in another summation order); errors ~1e-16 relative, so 1e-12.
F64_TOL = 1e-12
# float32: a few float32 roundings of terms up to ~|coefficient| * |y| (~1e-7 relative to max |x'|,
# which includes |mu| ~ 3-10), plus the op's z vs the reference's (<= 4e-6 absolute, tests/test_normals.py)
# times coef_noise |A| <= ~1: measured <= 1e-6; 1e-5 is safe, while a wrong coefficient, stream, step,
# row or label changes x' by O(0.1) or more. The same two tolerances hold for every prediction type and
# for the history terms (coefficients <= 1, H ~ x: the same few roundings).
F32_TOL = 1e-5
DTYPES = [torch.float64, torch.float32]
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def _ddpm(abar_t: float, abar_prev: float, noise: bool) -> ops.StepCoefficients:
    """Ancestral DDPM (noise=True: posterior mean + sqrt(beta_tilde) z) or DDIM with eta = 0."""
    a0, b0 = 1 / math.sqrt(abar_t), -math.sqrt(1 - abar_t) / math.sqrt(abar_t)
    if not noise:
        return ops.StepCoefficients(a0, b0, 0.0, math.sqrt(abar_prev), math.sqrt(1 - abar_prev), 0.0)
    alpha = abar_t / abar_prev
    beta = 1 - alpha
    return ops.StepCoefficients(a0, b0, math.sqrt(alpha) * (1 - abar_prev) / (1 - abar_t),
                                math.sqrt(abar_prev) * beta / (1 - abar_t), 0.0,
                                math.sqrt((1 - abar_prev) / (1 - abar_t) * beta))


COEFFICIENTS = {
    "ancestral": _ddpm(0.5, 0.6, noise=True),
    "ddim_eta0": _ddpm(0.5, 0.6, noise=False),
    "langevin": ops.StepCoefficients(1.0, 0.0, 1.0, 0.0, -0.05, math.sqrt(0.1)),
    "all_terms": ops.StepCoefficients(1.3, -0.7, 0.4, 0.6, -0.25, 0.5),  # distinct values: a swap shows
    "probability_flow": ops.StepCoefficients(1.2, -0.5, 0.9, 0.1, 0.2, 0.0),
    # every coefficient distinct and e != A out (a swap of any two shows)
    "all_ten": ops.StepCoefficients(1.3, -0.7, 0.4, 0.6, -0.25, 0.5, 0.35, 0.8),
}
# Steps with x0_history terms (DPM-Solver++-like multistep updates, with and without noise).
HISTORY_COEFFICIENTS = {
    "one": ops.StepCoefficients(1.3, -0.7, 0.4, 0.6, -0.25, 0.0, 0.35, 0.8, coef_x0_prev=0.45),
    "two": ops.StepCoefficients(1.3, -0.7, 0.4, 0.6, -0.25, 0.0, 0.35, 0.8, coef_x0_prev=0.45, coef_x0_prev2=-0.3),
    "two_noise": ops.StepCoefficients(1.1, -0.6, 0.2, 0.5, 0.3, 0.4, -0.2, 0.9, coef_x0_prev=-0.35, coef_x0_prev2=0.2),
}

# (K, D, N): K = 1 and D = 1; D not a multiple of the normals per block / the 16-lane vector; N past the
# parallel grain.
SHAPES = [(1, 1, 9), (3, 5, 300), (4, 37, 65)]


def _shape_id(s):
    return "K{}_D{}_N{}".format(*s)



def _on(v, device):
    """v on `device`: tensors, and the tensors of tuples / lists (clip, x0_history)."""
    if isinstance(v, torch.Tensor):
        return v.to(device)
    if isinstance(v, (tuple, list)) and not hasattr(v, "_fields"):
        return type(v)(_on(t, device) for t in v)
    return v


def _ref_bound(bound, cd):
    """A clip side as the op uses it: rounded to the compute dtype, then float64 (None stays None)."""
    if bound is None:
        return None
    return torch.as_tensor(bound, dtype=torch.float64).to(cd).double()


class Case:
    """Inputs of one reverse_step call (CPU tensors in `dtype`): x drawn around the components, model
    output ~ N(0, 1), labels the true components, and two history rows x0_history drawn like x."""

    def __init__(self, K, D, N, cov, dtype, seed, spread=3.0, scale=1.0, x_scale=1.0):
        self.mix = make_mixture(K, D, cov, seed=seed, dtype=dtype, spread=spread, scale=scale)
        x, self.labels = sample_mixture(self.mix, N, seed=seed + 1, dtype=torch.float64)
        mu = self.mix.means.double()[self.labels]
        self.x = (mu + x_scale * (x - mu)).to(dtype)
        self.eps_hat = torch.randn(N, D, generator=gen(seed + 2), dtype=torch.float64).to(dtype)
        g = gen(seed + 3)
        self.history = tuple((mu + torch.randn(N, D, generator=g, dtype=torch.float64)).to(dtype) for _ in range(2))
        self.cov = cov
        self.dtype = dtype

    def run(self, coefs, seed, step, offset=0, clip=None, noise=None, return_x0=False, device="cpu",
            prediction_type="epsilon", x0_history=(), **override):
        m = self.mix.to(device=device)
        args = dict(x=self.x, model_output=self.eps_hat, labels=self.labels, means=m.means, cov_factor=m.cov_factor,
                    covariance_type=self.cov, coefficients=coefs, seed=seed, step=step, offset=offset, clip=clip,
                    noise=noise, return_x0=return_x0, prediction_type=prediction_type, x0_history=x0_history)
        args.update(override)
        return ops.reverse_step(**{k: _on(v, device) for k, v in args.items()})

    def reference(self, coefs, seed, step, offset=0, clip=None, noise=None, prediction_type="epsilon",
                  x0_history=()):
        """(x', x0_hat) in float64 from the inputs rounded to the compute dtype."""
        cd = compute_dtype(self.dtype)
        N, D = self.x.shape
        if noise is None and coefs[5] != 0 and cd == torch.float32:
            rows = torch.arange(offset, offset + N)
            noise = ref.normals(seed, ref.step_stream(ref.STREAM_REVERSE_NOISE, step), rows, D, torch.float32)
        m = self.mix.to(dtype=cd).f64()
        lo, hi = (None, None) if clip is None else (_ref_bound(b, cd) for b in clip)
        history = tuple(h.cpu().to(cd).double() for h in x0_history)
        # float64 with noise None: the reference draws the float64 stream itself.
        return ref.reverse_step(self.x.to(cd).double(), self.eps_hat.to(cd).double(), self.labels, m.means,
                                m.cov_factor, self.cov, tuple(coefs), lo, hi,
                                None if noise is None else noise.to(cd).double(), seed, offset, step, return_x0=True,
                                prediction_type=prediction_type, x0_history=history)


def _check(out: ops.ReverseStep, case: Case, coefs, seed, step, offset=0, clip=None, noise=None, return_x0=True,
           device="cpu", prediction_type="epsilon", x0_history=()):
    cd = compute_dtype(case.dtype)
    N, D = case.x.shape
    assert out.prev_sample.dtype == cd and out.prev_sample.shape == (N, D)
    assert out.prev_sample.device.type == device
    want_prev, want_x0 = case.reference(coefs, seed, step, offset, clip, noise, prediction_type, x0_history)
    tol = tol_for(cd, F64_TOL, F32_TOL)
    assert bool(torch.isfinite(out.prev_sample).all())
    assert_rel_close(out.prev_sample, want_prev, tol, "prev_sample")
    if return_x0:
        assert out.pred_original_sample is not None
        assert out.pred_original_sample.dtype == cd and out.pred_original_sample.shape == (N, D)
        assert_rel_close(out.pred_original_sample, want_x0, tol, "pred_original_sample")
    else:
        assert out.pred_original_sample is None


def _factor_arg(case: Case, device="cpu"):
    f = case.mix.cov_factor
    return f.to(device) if f is not None else torch.empty(0, dtype=compute_dtype(case.dtype), device=device)


def _random_boxes(case: Case, seed: int):
    """Per-component, per-dimension boxes around the means (float64 [K, D] lo, hi) that clip a good share
    of x0_hat in every dimension they bound: dim 0 and the last finite on both sides, dim 1 open below,
    dim 2 open above, dim 3 a single point per component, dim 4 open on both sides (+-inf)."""
    K, D = case.mix.means.shape
    assert D >= 6
    g = gen(seed)
    mu = case.mix.means.double()
    lo = mu - (0.2 + 1.3 * torch.rand(K, D, generator=g, dtype=torch.float64))
    hi = mu + (0.2 + 1.3 * torch.rand(K, D, generator=g, dtype=torch.float64))
    lo[:, 1] = -math.inf
    hi[:, 2] = math.inf
    lo[:, 3] = hi[:, 3] = mu[:, 3] + 0.25 * torch.randn(K, generator=g, dtype=torch.float64)
    lo[:, 4], hi[:, 4] = -math.inf, math.inf
    return lo, hi


# ---------------------------------------------------------------------------------------------------
# Against the reference
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("name", list(COEFFICIENTS))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=_shape_id)
def test_matches_reference(shape, cov, dtype, name, device):
    K, D, N = shape
    case = Case(K, D, N, cov, dtype, seed=4000 + 7 * K + 31 * D + COVARIANCE_TYPES.index(cov))
    coefs = COEFFICIENTS[name]
    seed, step, offset = 321 + D, 17, 2 * K + 1
    with_x0 = case.run(coefs, seed, step, offset, return_x0=True, device=device)
    _check(with_x0, case, coefs, seed, step, offset, return_x0=True, device=device)
    without = case.run(coefs, seed, step, offset, return_x0=False, device=device)
    _check(without, case, coefs, seed, step, offset, return_x0=False, device=device)
    assert torch.equal(without.prev_sample, with_x0.prev_sample), "return_x0 must not change prev_sample"
    raw = torch.ops.mixdiff.reverse_step(
        case.x.to(device), case.eps_hat.to(device), case.labels.to(device), case.mix.means.to(device),
        _factor_arg(case, device), cov, list(coefs), None, None, None, seed, offset, step, False)
    assert raw[1].numel() == 0, "the raw op returns an empty x0 when not asked"
    assert torch.equal(raw[0], with_x0.prev_sample)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("prediction_type", ["v_prediction", "sample"])
@pytest.mark.parametrize("name", ["ancestral", "all_ten", "probability_flow"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
@pytest.mark.parametrize("shape", SHAPES[1:], ids=_shape_id)
def test_prediction_types_match_reference(shape, cov, dtype, name, prediction_type, device):
    # F64_TOL / F32_TOL as for eps outputs: "sample" skips A (fewer roundings), "v_prediction" is the eps
    # path with other coefficients.
    K, D, N = shape
    case = Case(K, D, N, cov, dtype, seed=4050 + 7 * K + 31 * D + COVARIANCE_TYPES.index(cov))
    coefs = COEFFICIENTS[name]
    out = case.run(coefs, 44, 9, 3, return_x0=True, device=device, prediction_type=prediction_type)
    _check(out, case, coefs, 44, 9, 3, device=device, prediction_type=prediction_type)
    eps = case.run(coefs, 44, 9, 3, return_x0=True, device=device)
    if prediction_type == "v_prediction":
        assert torch.equal(out.prev_sample, eps.prev_sample), "v_prediction is the eps arithmetic"
    elif cov != "identity":
        assert frac_equal(out.pred_original_sample, eps.pred_original_sample) < 0.5, "sample must skip A"


def _inverse_factor(cov, factor, labels, v):
    """A_j^{-1} v per row (float64)."""
    if cov == "identity":
        return v
    if cov == "spherical":
        return v / factor[labels, None]
    if cov == "diag":
        return v / factor[labels]
    return torch.linalg.solve_triangular(factor[labels].tril(), v.unsqueeze(-1), upper=False).squeeze(-1)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_prediction_semantics(cov, dtype, device):
    # y = m y0 + s A eps (VP: m^2 + s^2 = 1) for a known y0 and eps. A "sample" output y0 and a
    # v = m eps - s A^{-1} y0 output both recover x0 = mu + y0 with the textbook coefficients, and the
    # step's e recovers A eps: x0_hat with (x0_from_x, x0_from_out) = (0, 1) resp. (m, -s); e with
    # (1/s, -m/s) resp. (s, m). coef_eps = 1 makes x' = mu + e.
    N, K, D = 200, 3, 6
    case = Case(K, D, N, cov, torch.float64, seed=4060 + COVARIANCE_TYPES.index(cov))
    cd = compute_dtype(dtype)
    m64 = case.mix.f64()
    mu = m64.means[case.labels]
    g = gen(4070)
    y0 = 2.0 * torch.randn(N, D, generator=g, dtype=torch.float64)
    eps = torch.randn(N, D, generator=g, dtype=torch.float64)
    m, s = 0.6, 0.8
    a_eps = ref.apply_factor(m64.cov_factor, cov, case.labels, eps)
    x = mu + m * y0 + s * a_eps
    v = m * eps - s * _inverse_factor(cov, m64.cov_factor, case.labels, y0)
    factor = None if m64.cov_factor is None else m64.cov_factor.to(dtype)
    tol = tol_for(cd, 1e-12, 1e-5)
    for prediction_type, out, coefs in (
            ("sample", y0, ops.StepCoefficients(0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1 / s, -m / s)),
            ("v_prediction", v, ops.StepCoefficients(m, -s, 0.0, 0.0, 1.0, 0.0, s, m))):
        got = ops.reverse_step(*_on((x.to(dtype), out.to(dtype), case.labels, m64.means.to(dtype), factor), device),
                               cov, coefs, 0, 0, return_x0=True, prediction_type=prediction_type)
        assert_rel_close(got.pred_original_sample, mu + y0, tol, f"{prediction_type}: x0_hat = mu + y0")
        assert_rel_close(got.prev_sample, mu + a_eps, tol, f"{prediction_type}: e = A eps")


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
@pytest.mark.parametrize("name", list(HISTORY_COEFFICIENTS))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_history_terms(cov, dtype, name, prediction_type, device):
    case = Case(4, 7, 150, cov, dtype, seed=4080 + COVARIANCE_TYPES.index(cov))
    coefs = HISTORY_COEFFICIENTS[name]
    history = case.history[:2 if coefs.coef_x0_prev2 else 1]
    kw = dict(return_x0=True, device=device, prediction_type=prediction_type)
    out = case.run(coefs, 6, 12, 1, x0_history=history, **kw)
    _check(out, case, coefs, 6, 12, 1, device=device, prediction_type=prediction_type, x0_history=history)
    # They enter as coef_x0_prev (H1 - mu) + coef_x0_prev2 (H2 - mu), and x0_hat does not see them.
    free = case.run(coefs._replace(coef_x0_prev=0.0, coef_x0_prev2=0.0), 6, 12, 1, **kw)
    assert torch.equal(out.pred_original_sample, free.pred_original_sample)
    cd = compute_dtype(dtype)
    mu = case.mix.means.to(cd).double()[case.labels]
    want = sum(h * (past.to(cd).double() - mu) for h, past in zip(coefs[8:], history))
    diff = out.prev_sample.cpu().double() - free.prev_sample.cpu().double()
    assert (diff - want).abs().max().item() <= tol_for(cd, 1e-13, 1e-5) * out.prev_sample.abs().max().item()
    # Entries whose coefficient is 0 change nothing (bit for bit) and are not read: NaN there stays out.
    nan = torch.full_like(case.history[0], math.nan)
    zero_coef = case.run(coefs._replace(coef_x0_prev=0.0, coef_x0_prev2=0.0), 6, 12, 1, x0_history=(nan, nan), **kw)
    assert torch.equal(zero_coef.prev_sample, free.prev_sample)
    if len(history) == 2:
        only_second = coefs._replace(coef_x0_prev=0.0)
        got = case.run(only_second, 6, 12, 1, x0_history=(nan, history[1]), **kw)
        _check(got, case, only_second, 6, 12, 1, device=device, prediction_type=prediction_type,
               x0_history=(nan, history[1]))


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("clip", [(-1.0, None), (None, 1.5), (-0.5, 0.75), (0.25, 0.25)],
                         ids=["min", "max", "both", "point"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_clipping(cov, dtype, clip, device):
    # x0_hat is clipped in x space to [lo, hi] (either bound optional; numbers apply to every component and
    # dimension) before it enters x'. The data spread over ~[-10, 10] so that a good share of x0_hat lies
    # beyond each bound. The op (and the reference) returns x0_hat = mu + (clip(y0 + mu) - mu): a clipped
    # entry equals its bound up to the rounding of that round trip, a few ulp of max(|mu|, |bound|).
    case = Case(4, 6, 400, cov, dtype, seed=4100 + COVARIANCE_TYPES.index(cov))
    cd = compute_dtype(dtype)
    mu = case.mix.means.to(cd).double()[case.labels]
    lo, hi = clip
    for name in ("ancestral", "all_terms"):
        coefs = COEFFICIENTS[name]
        out = case.run(coefs, 5, 3, clip=clip, return_x0=True, device=device)
        _check(out, case, coefs, 5, 3, clip=clip, device=device)
        x0 = out.pred_original_sample.cpu().double()
        unclipped = case.run(coefs, 5, 3, return_x0=True, device=device).pred_original_sample.cpu().double()
        below = unclipped < lo if lo is not None else torch.zeros_like(x0, dtype=torch.bool)
        above = unclipped > hi if hi is not None else torch.zeros_like(x0, dtype=torch.bool)
        for mask, bound in ((below, lo), (above, hi)):
            if bound is None:
                continue
            slack = 4 * torch.finfo(cd).eps * torch.clamp(mu.abs(), min=abs(bound))
            if mask.any():
                off = ((x0 - bound).abs() - slack)[mask].max().item()
                assert off <= 0, f"{name}: a clipped x0_hat is {off:.2e} further from {bound} than rounding"
            side = (x0 - bound) if bound is lo else (bound - x0)
            assert bool((side >= -slack).all()), f"{name}: x0_hat beyond {bound} by more than rounding"
        clipped = below | above
        share = clipped.double().mean().item()
        if lo == hi:
            assert share > 0.99
        else:
            assert 0.05 < share < 0.95, f"{share:.0%} of x0_hat clipped: not a real test"
            # Unclipped entries keep their value (up to the rounding of (y0 + mu) - mu).
            keep = ~clipped
            assert rel_err(x0[keep], unclipped[keep]) <= tol_for(dtype, 1e-14, 1e-6)
        # The clipped x0_hat is what enters x': x' with clipping - x' without = coef_x0 (x0_hat - x0_hat').
        prev_clip = out.prev_sample.cpu().double()
        prev_free = case.run(coefs, 5, 3, device=device).prev_sample.cpu().double()
        want = coefs.coef_x0 * (x0 - unclipped)
        err = (prev_clip - prev_free - want).abs().max().item() / prev_free.abs().max().item()
        assert err <= tol_for(dtype, 1e-14, 1e-6), f"{name}: clipping enters x' wrongly ({err:.2e})"
        # A number is the [K, D] table filled with it; so is a broadcast tensor.
        table = tuple(None if b is None else torch.full((4, 6), b, dtype=torch.float64) for b in clip)
        row = tuple(None if b is None else torch.tensor([b] * 6) for b in clip)
        for other in (table, row):
            got = case.run(coefs, 5, 3, clip=other, return_x0=True, device=device)
            assert torch.equal(got.prev_sample, out.prev_sample) and torch.equal(got.pred_original_sample.cpu(), x0.to(cd))


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("prediction_type", ["epsilon", "sample"])
@pytest.mark.parametrize("sides", ["both", "lo", "hi"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_clipping_per_component(cov, dtype, sides, prediction_type, device):
    # A box per component and dimension (_random_boxes: finite, open below, open above, a single point,
    # +-inf on both sides), one side alone or both: x0_hat of a row of component j lies in j's box (a
    # clipped entry equals its bound up to the rounding of (y0 + mu) - mu), unclipped entries keep their
    # value, and the reference agrees on x' and x0_hat.
    case = Case(3, 8, 600, cov, dtype, seed=4150 + COVARIANCE_TYPES.index(cov))
    cd = compute_dtype(dtype)
    lo, hi = _random_boxes(case, 4160)
    clip = (lo if sides != "hi" else None, hi if sides != "lo" else None)
    coefs = COEFFICIENTS["all_ten"]
    kw = dict(return_x0=True, device=device, prediction_type=prediction_type)
    out = case.run(coefs, 5, 3, clip=clip, **kw)
    _check(out, case, coefs, 5, 3, clip=clip, device=device, prediction_type=prediction_type)
    x0 = out.pred_original_sample.cpu().double()
    unclipped = case.run(coefs, 5, 3, **kw).pred_original_sample.cpu().double()
    mu = case.mix.means.to(cd).double()[case.labels]
    lo_r = _ref_bound(lo if clip[0] is not None else torch.full_like(lo, -math.inf), cd)[case.labels]
    hi_r = _ref_bound(hi if clip[1] is not None else torch.full_like(hi, math.inf), cd)[case.labels]
    finite = lambda t: torch.where(torch.isfinite(t), t, torch.zeros_like(t)).abs()  # noqa: E731
    slack = 4 * torch.finfo(cd).eps * torch.maximum(mu.abs(), torch.maximum(finite(lo_r), finite(hi_r)))
    below, above = unclipped < lo_r, unclipped > hi_r
    assert bool(((x0 - lo_r) >= -slack).all()) and bool(((hi_r - x0) >= -slack).all()), "x0_hat outside its box"
    assert bool(((x0 - lo_r).abs() <= slack)[below].all()), "clipped below, not at the lower bound"
    assert bool(((x0 - hi_r).abs() <= slack)[above].all()), "clipped above, not at the upper bound"
    keep = ~(below | above)
    assert rel_err(x0[keep], unclipped[keep]) <= tol_for(dtype, 1e-14, 1e-6)
    assert not bool((below | above)[:, 4].any()), "dim 4 is open on both sides"
    # Dims 1 and 2 are open below / above: bounded only by the other side.
    for d in {"both": (0, 1, 2, 7), "lo": (0, 2, 7), "hi": (0, 1, 7)}[sides]:
        share = (below | above)[:, d].double().mean().item()
        assert 0.05 < share < 0.95, f"dim {d}: {share:.0%} clipped, not a real test"
    if sides == "both":
        assert bool(((x0[:, 3] - lo_r[:, 3]).abs() <= slack[:, 3]).all()), "a point box pins x0_hat"
    # Different boxes per component: the same values under component 0's box everywhere differ.
    same_box = tuple(None if b is None else b[:1].expand_as(b) for b in clip)
    other = case.run(coefs, 5, 3, clip=same_box, **kw)
    assert not torch.equal(other.pred_original_sample, out.pred_original_sample)


# ---------------------------------------------------------------------------------------------------
# Noise
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_explicit_noise(cov, dtype, device):
    case = Case(3, 7, 120, cov, dtype, seed=4200 + COVARIANCE_TYPES.index(cov))
    noise = torch.randn(120, 7, generator=gen(4210), dtype=torch.float64).to(dtype)
    coefs = COEFFICIENTS["all_terms"]
    out = case.run(coefs, 1, 2, noise=noise, return_x0=True, device=device)
    _check(out, case, coefs, 1, 2, noise=noise, device=device)
    # The given z replaces the stream: seed, step and offset do not matter.
    other = case.run(coefs, 99, 1000, offset=77, noise=noise, return_x0=True, device=device)
    assert torch.equal(other.prev_sample, out.prev_sample)
    # ... and it enters as coef_noise (A z): x'(z) - x'(0) = coef_noise A z, also for a sample prediction.
    cd = compute_dtype(dtype)
    m = case.mix.to(dtype=cd).f64()
    az = coefs.coef_noise * ref.apply_factor(m.cov_factor, cov, case.labels, noise.to(cd).double())
    for prediction_type in ("epsilon", "sample"):
        with_z = case.run(coefs, 1, 2, noise=noise, device=device, prediction_type=prediction_type)
        zero = case.run(coefs, 1, 2, noise=torch.zeros_like(noise), device=device, prediction_type=prediction_type)
        diff = with_z.prev_sample.cpu().double() - zero.prev_sample.cpu().double()
        scale = with_z.prev_sample.abs().max().item()
        assert (diff - az).abs().max().item() <= tol_for(cd, 1e-14, 1e-6) * scale
    # With coef_noise = 0 a given noise is ignored.
    flow = COEFFICIENTS["probability_flow"]
    a = case.run(flow, 1, 2, noise=noise, device=device)
    b = case.run(flow, 1, 2, device=device)
    assert torch.equal(a.prev_sample, b.prev_sample)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_noise_drawn_iff_coef_noise_nonzero(cov, dtype, device):
    # coef_noise = 0 (DDIM eta = 0, probability flow): no z is drawn, the result does not depend on seed,
    # step or offset, bit for bit. coef_noise != 0: each of them changes z (the step through the stream
    # word kind | step << 4, up to the largest step 2^28 - 1).
    case = Case(3, 9, 200, cov, dtype, seed=4300 + COVARIANCE_TYPES.index(cov))
    addresses = [(1, 0, 0), (2, 0, 0), (1 + 2**32, 0, 0), (-1, 0, 0), (1, 1, 0), (1, 16, 0), (1, 2**28 - 1, 0),
                 (1, 0, 1), (1, 0, 2**32)]
    for name in ("ddim_eta0", "probability_flow"):
        coefs = COEFFICIENTS[name]
        base = case.run(coefs, *addresses[0][:2], offset=0, return_x0=True, device=device)
        _check(base, case, coefs, 1, 0, device=device)
        for seed, step, offset in addresses[1:]:
            other = case.run(coefs, seed, step, offset=offset, return_x0=True, device=device)
            assert torch.equal(other.prev_sample, base.prev_sample), f"{name}: depends on ({seed}, {step}, {offset})"
            assert torch.equal(other.pred_original_sample, base.pred_original_sample)
    for name in ("ancestral", "langevin"):
        coefs = COEFFICIENTS[name]
        outs = {a: case.run(coefs, a[0], a[1], offset=a[2], device=device).prev_sample for a in addresses}
        for i, a in enumerate(addresses):
            for b in addresses[i + 1:]:
                same = frac_equal(outs[a], outs[b])
                assert same < 0.01, f"{name}: addresses {a} and {b} give {same:.0%} equal entries"
        for a in (addresses[0], addresses[4], addresses[6], addresses[8]):
            _check(case.run(coefs, a[0], a[1], offset=a[2], return_x0=True, device=device), case, coefs, a[0], a[1],
                   offset=a[2], device=device)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cov", ["spherical", "diag", "full"])
def test_tight_components(cov, dtype, device):
    # Factors 1e-6 (standard deviations / Cholesky factors): x within ~1e-6 of the means.
    case = Case(4, 6, 200, cov, dtype, seed=4400 + COVARIANCE_TYPES.index(cov), scale=1e-6)
    for name in ("ancestral", "all_terms"):
        coefs = COEFFICIENTS[name]
        out = case.run(coefs, 8, 4, return_x0=True, device=device)
        _check(out, case, coefs, 8, 4, device=device)
        if dtype == torch.float64:
            # The 1e-6-sized steps around mu are computed in y = x - mu: exact relative to their own size
            # (float64 rounding of mu + y' is ~1e-16 * |mu|, i.e. ~1e-9 of y').
            mu = case.mix.means[case.labels]
            want, _ = case.reference(coefs, 8, 4)
            assert_rel_close(out.prev_sample.cpu() - mu, want - mu, 1e-8, "y' of tight components")


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_far_outliers(cov, dtype, device):
    # x ~ 1e6 away from the means (and model outputs ~ 1): finite, and the reference to the same relative
    # accuracy.
    case = Case(3, 5, 150, cov, dtype, seed=4500 + COVARIANCE_TYPES.index(cov), x_scale=1e6)
    assert case.x.abs().max().item() > 1e6
    for name in ("ancestral", "all_terms", "ddim_eta0"):
        coefs = COEFFICIENTS[name]
        out = case.run(coefs, 9, 5, return_x0=True, clip=(-3e6, None) if name == "all_terms" else None,
                       device=device)
        _check(out, case, coefs, 9, 5, clip=(-3e6, None) if name == "all_terms" else None, device=device)
        assert bool(torch.isfinite(out.pred_original_sample).all())


def test_nan_x0_hat_stays_nan():
    # The clip keeps a NaN x0_hat NaN (both comparisons are false), as the reference's maximum / minimum.
    case = Case(2, 6, 20, "diag", torch.float64, seed=4550)
    x = case.x.clone()
    x[3, 2] = math.nan
    lo, hi = _random_boxes(case, 4551)
    coefs = COEFFICIENTS["all_ten"]
    out = case.run(coefs, 1, 0, clip=(lo, hi), return_x0=True, x=x)
    assert math.isnan(out.pred_original_sample[3, 2].item()) and math.isnan(out.prev_sample[3, 2].item())
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[3, 2] = False
    assert bool(torch.isfinite(out.pred_original_sample[mask]).all())


# ---------------------------------------------------------------------------------------------------
# Shapes, layouts, dtypes
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_empty_batch(cov, dtype, device):
    mix = make_mixture(3, 5, cov, seed=4600, dtype=dtype).to(device=device)
    x = torch.empty(0, 5, dtype=dtype, device=device)
    labels = torch.empty(0, dtype=torch.int64, device=device)
    cd = compute_dtype(dtype)
    box = (torch.full((3, 5), -1.0, dtype=dtype, device=device), torch.ones(3, 5, dtype=dtype, device=device))
    for return_x0 in (False, True):
        for kw in ({}, dict(clip=box, x0_history=(x, x), prediction_type="sample",
                            coefficients=HISTORY_COEFFICIENTS["two_noise"])):
            kw = dict(dict(coefficients=COEFFICIENTS["ancestral"]), **kw)
            out = ops.reverse_step(x, x, labels, mix.means, mix.cov_factor, cov, seed=1, step=0, return_x0=return_x0,
                                   **kw)
            assert out.prev_sample.shape == (0, 5) and out.prev_sample.dtype == cd
            assert out.prev_sample.device.type == device
            if return_x0:
                assert out.pred_original_sample.shape == (0, 5) and out.pred_original_sample.dtype == cd
    # D = 0: rows without elements.
    x = torch.empty(4, 0, dtype=dtype, device=device)
    means = torch.empty(2, 0, dtype=dtype, device=device)
    factor = {"identity": None, "spherical": torch.ones(2, dtype=dtype, device=device),
              "diag": torch.ones(2, 0, dtype=dtype, device=device),
              "full": torch.ones(2, 0, 0, dtype=dtype, device=device)}[cov]
    for kw in ({}, dict(clip=(-1.0, 1.0), x0_history=(x,), coefficients=HISTORY_COEFFICIENTS["one"])):
        kw = dict(dict(coefficients=COEFFICIENTS["ancestral"]), **kw)
        out = ops.reverse_step(x, x, torch.tensor([0, 1, 1, 0], device=device), means, factor, cov, seed=1, step=0,
                               return_x0=True, **kw)
        assert out.prev_sample.shape == (4, 0) and out.pred_original_sample.shape == (4, 0)


def _nc(t):
    """A non-contiguous view of t with t's values."""
    if t is None:
        return None
    if t.dim() == 1:
        return torch.stack([t, t], -1)[:, 0]
    return t.mT.contiguous().mT


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_non_contiguous(cov, dtype, device):
    N, K, D = 41, 4, 6
    case = Case(K, D, N, cov, dtype, seed=4700 + COVARIANCE_TYPES.index(cov))
    noise = torch.randn(N, D, generator=gen(4710), dtype=torch.float64).to(dtype)

    coefs = COEFFICIENTS["all_terms"]
    for nz in (None, noise):
        want = case.run(coefs, 3, 7, offset=2, noise=nz, return_x0=True, device=device)
        views = dict(x=_nc(case.x), model_output=_nc(case.eps_hat), labels=_nc(case.labels),
                     means=_nc(case.mix.means), cov_factor=_nc(case.mix.cov_factor), noise=_nc(nz))
        for name, v in views.items():
            if v is not None:
                assert not v.is_contiguous(), name
        got = case.run(coefs, 3, 7, offset=2, return_x0=True, device=device, **views)
        assert torch.equal(got.prev_sample, want.prev_sample) and torch.equal(got.pred_original_sample,
                                                                              want.pred_original_sample)
    # Expanded (stride 0) model output, as from a broadcast.
    eh = case.eps_hat[:1].expand(N, D)
    got = case.run(coefs, 3, 7, model_output=eh, device=device)
    want = case.run(coefs, 3, 7, model_output=eh.contiguous(), device=device)
    assert torch.equal(got.prev_sample, want.prev_sample)
    # Clip bounds and history rows as non-contiguous views, through the raw op (the wrapper would make the
    # bounds contiguous); a stride-0 bound table too.
    K, D = case.mix.means.shape
    lo, hi = (t.to(dtype) for t in _random_boxes(Case(K, 8, 2, cov, dtype, seed=4720), 4721))
    lo, hi = lo[:, :D].contiguous(), hi[:, :D].contiguous()
    coefs = HISTORY_COEFFICIENTS["two_noise"]
    d = lambda t: _on(t, device)  # noqa: E731
    base = (d(case.x), d(case.eps_hat), d(case.labels), d(case.mix.means), _factor_arg(case, device), cov,
            list(coefs))
    tail = (None, 3, 2, 7, True, "sample")
    want = torch.ops.mixdiff.reverse_step(*base, d(lo), d(hi), *tail, [d(h) for h in case.history])
    views = (d(_nc(lo)), d(_nc(hi)))
    assert not any(v.is_contiguous() for v in views)
    got = torch.ops.mixdiff.reverse_step(*base, *views, *tail, [d(_nc(h)) for h in case.history])
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    row_lo = d(lo[:1].expand(K, D))
    got = torch.ops.mixdiff.reverse_step(*base, row_lo, None, *tail, [d(h) for h in case.history])
    want = torch.ops.mixdiff.reverse_step(*base, row_lo.contiguous(), None, *tail, [d(h) for h in case.history])
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_half_inputs_return_float32(cov, dtype, device):
    case = Case(3, 5, 64, cov, dtype, seed=4800 + COVARIANCE_TYPES.index(cov))
    coefs = COEFFICIENTS["all_terms"]
    out = case.run(coefs, 4, 2, return_x0=True, device=device)
    assert out.prev_sample.dtype == torch.float32 and out.pred_original_sample.dtype == torch.float32
    m = case.mix.to(dtype=torch.float32)
    want = case.run(coefs, 4, 2, return_x0=True, device=device, x=case.x.float(), model_output=case.eps_hat.float(),
                    means=m.means, cov_factor=m.cov_factor)
    assert torch.equal(out.prev_sample, want.prev_sample)
    assert torch.equal(out.pred_original_sample, want.pred_original_sample)
    _check(out, case, coefs, 4, 2, device=device)
    # Half bounds and history are computed in float32 too.
    coefs = HISTORY_COEFFICIENTS["two"]
    box = (torch.full((3, 5), -1.5, dtype=dtype), torch.full((3, 5), 2.0, dtype=dtype))
    out = case.run(coefs, 4, 2, clip=box, x0_history=case.history, return_x0=True, device=device)
    want = case.run(coefs, 4, 2, clip=tuple(b.float() for b in box), x0_history=tuple(h.float() for h in case.history),
                    return_x0=True, device=device, x=case.x.float(), model_output=case.eps_hat.float(),
                    means=m.means, cov_factor=m.cov_factor)
    assert torch.equal(out.prev_sample, want.prev_sample)
    assert torch.equal(out.pred_original_sample, want.pred_original_sample)


@pytest.mark.parametrize("variant", ["eps", "clip_history_sample"])
def test_thread_count_invariance(variant):
    case = Case(5, 20, 3000, "full", torch.float32, seed=4900)
    if variant == "eps":
        coefs, kw = COEFFICIENTS["ancestral"], {}
    else:
        lo, hi = _random_boxes(case, 4901)
        coefs = HISTORY_COEFFICIENTS["two_noise"]
        kw = dict(clip=(lo, hi), x0_history=case.history, prediction_type="sample")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = case.run(coefs, 7, 3, return_x0=True, **kw)
        torch.set_num_threads(max(2, before))
        many = case.run(coefs, 7, 3, return_x0=True, **kw)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one.prev_sample, many.prev_sample)
    assert torch.equal(one.pred_original_sample, many.pred_original_sample)


# ---------------------------------------------------------------------------------------------------
# opcheck and bad inputs
# ---------------------------------------------------------------------------------------------------
OPCHECK_CASES = {
    # name: (cov, coefficients, clip sides ("lo" / "hi" / both), noise given, return_x0, prediction_type, history)
    "identity": ("identity", "ancestral", "", False, False, "epsilon", 0),
    "spherical-clip-lo": ("spherical", "ancestral", "lo", False, True, "epsilon", 0),
    "diag-clip-noise-v": ("diag", "all_ten", "lo hi", True, True, "v_prediction", 0),
    "full-clip-hi-sample": ("full", "all_ten", "hi", False, True, "sample", 0),
    "diag-history1": ("diag", "one", "", False, True, "epsilon", 1),
    "full-history2-clip-noise": ("full", "two_noise", "lo hi", True, True, "sample", 2),
    "identity-history2-x0-off": ("identity", "two", "lo", False, False, "v_prediction", 2),
}


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("name", list(OPCHECK_CASES))
def test_opcheck(name, device):
    cov, coefs, sides, with_noise, return_x0, prediction_type, n_hist = OPCHECK_CASES[name]
    coefs = {**COEFFICIENTS, **HISTORY_COEFFICIENTS}[coefs]
    case = Case(3, 6, 6, cov, torch.float64, seed=5000)
    lo, hi = _random_boxes(case, 5002)
    d = lambda t: _on(t, device)  # noqa: E731
    noise = d(torch.randn(6, 6, generator=gen(5001), dtype=torch.float64)) if with_noise else None
    args = (d(case.x), d(case.eps_hat), d(case.labels), d(case.mix.means), _factor_arg(case, device), cov,
            list(coefs), d(lo) if "lo" in sides else None, d(hi) if "hi" in sides else None, noise, 2**40 + 1, 3, 11,
            return_x0, prediction_type, [d(h) for h in case.history[:n_hist]])
    torch.library.opcheck(torch.ops.mixdiff.reverse_step.default, args)


def test_fake_kernel_checks():
    # The fake kernel (torch.compile, export) rejects what needs no data, as the kernels do.
    from torch._subclasses.fake_tensor import FakeTensorMode

    case = Case(3, 4, 5, "diag", torch.float32, seed=5050)
    with FakeTensorMode() as mode:
        f = lambda t: mode.from_tensor(t)  # noqa: E731
        base = (f(case.x), f(case.eps_hat), f(case.labels), f(case.mix.means), f(case.mix.cov_factor), "diag")
        ok = torch.ops.mixdiff.reverse_step(*base, list(COEFFICIENTS["all_ten"]), None, None, None, 0, 0, 0, True)
        assert ok[0].shape == (5, 4) and ok[1].shape == (5, 4)
        bad = [
            ((list(COEFFICIENTS["all_ten"])[:6], None, None), {}, r"coefficients must be 10 numbers"),
            ((list(COEFFICIENTS["all_ten"]), None, None), dict(prediction_type="x0"), r"prediction_type"),
            ((list(COEFFICIENTS["all_ten"]), None, None), dict(x0_history=[f(case.x)] * 3), r"at most 2"),
            ((list(COEFFICIENTS["all_ten"]), f(case.x), None), {}, r"clip_lo must have shape \[K, D\]"),
            ((list(COEFFICIENTS["all_ten"]), None, f(case.x)), {}, r"clip_hi must have shape \[K, D\]"),
        ]
        for (coefs, lo, hi), kw, match in bad:
            with pytest.raises(RuntimeError, match=match):
                torch.ops.mixdiff.reverse_step(*base, coefs, lo, hi, None, 0, 0, 0, False, **kw)


N_BAD, K_BAD, D_BAD = 5, 3, 4


def _bad_base(device):
    case = Case(K_BAD, D_BAD, N_BAD, "diag", torch.float32, seed=5100)
    m = case.mix.to(device=device)
    return dict(x=case.x.to(device), model_output=case.eps_hat.to(device), labels=case.labels.to(device),
                means=m.means, cov_factor=m.cov_factor, covariance_type="diag",
                coefficients=COEFFICIENTS["ancestral"], seed=1, step=0, offset=0, clip=None, noise=None,
                return_x0=False)


def _t(*shape, dtype=torch.float32, fill=1.0):
    return lambda d: torch.full(shape, fill, dtype=dtype, device=d)


def _box(lo, hi):
    """A clip pair of [K_BAD, D_BAD] tables whose entry (1, 2) is (lo, hi), the rest (-1, 1)."""
    def make(d):
        lo_t, hi_t = torch.full((K_BAD, D_BAD), -1.0, device=d), torch.full((K_BAD, D_BAD), 1.0, device=d)
        lo_t[1, 2], hi_t[1, 2] = lo, hi
        return lo_t, hi_t
    return make


_STEP = COEFFICIENTS["ancestral"]
BAD_CASES = {
    # name: (overrides, match[, exception type, RuntimeError by default])
    "coefficients_5": (dict(coefficients=(1.0, 0.0, 1.0, 0.0, 0.0)), r"coefficients must be 10 numbers .*got 5"),
    "coefficients_6": (dict(coefficients=(1.0,) * 6), r"coefficients must be 10 numbers .*got 6"),
    "coefficients_11": (dict(coefficients=(1.0,) * 11), r"coefficients must be 10 numbers .*got 11"),
    "coefficient_nan": (dict(coefficients=_STEP._replace(coef_x=math.nan)), r"coefficients must be finite"),
    "coefficient_inf": (dict(coefficients=_STEP._replace(coef_noise=math.inf)), r"coefficients must be finite"),
    "eps_coefficient_nan": (dict(coefficients=_STEP._replace(eps_from_out=math.nan)), r"coefficients must be finite"),
    "clip_reversed": (dict(clip=(1.0, -1.0)), r"clip_lo must not exceed clip_hi, got clip_lo\[0, 0\] = 1 > "
                                              r"clip_hi\[0, 0\] = -1"),
    "clip_reversed_one_entry": (dict(clip=_box(0.5, 0.25)), r"clip_lo must not exceed clip_hi, got clip_lo\[1, 2\] = "
                                                            r"0.5 > clip_hi\[1, 2\] = 0.25"),
    "clip_reversed_infinities": (dict(clip=_box(math.inf, -math.inf)),
                                 r"clip_lo\[1, 2\] = inf > clip_hi\[1, 2\] = -inf"),
    # A NaN bound clips nothing in the kernel but makes the reference's x0_hat NaN: like a NaN coefficient
    # it must be rejected, naming the bound.
    "clip_lo_nan": (dict(clip=(math.nan, None)), r"clip_lo must not contain NaN"),
    "clip_hi_nan": (dict(clip=(None, math.nan)), r"clip_hi must not contain NaN"),
    "clip_lo_nan_with_hi": (dict(clip=(math.nan, 1.0)), r"clip_lo must not contain NaN"),
    "clip_hi_nan_entry": (dict(clip=_box(0.0, math.nan)), r"clip_hi must not contain NaN"),
    "clip_lo_shape": (dict(clip=(_t(K_BAD + 1, D_BAD), None)),
                      r"clip_lo must have shape \[K, D\] = \[3, 4\] .*got \[4, 4\]"),
    "clip_hi_shape": (dict(clip=(None, _t(K_BAD, D_BAD, 2))), r"clip_hi must have shape \[K, D\] = \[3, 4\]"),
    "clip_lo_int": (dict(clip=(_t(K_BAD, D_BAD, dtype=torch.int64, fill=0), None)),
                    r"clip_lo must be a floating-point tensor, got Long"),
    "clip_hi_bool": (dict(clip=(None, _t(K_BAD, D_BAD, dtype=torch.bool, fill=1))),
                     r"clip_hi must be a floating-point tensor, got Bool"),
    "clip_str": (dict(clip=("-1", None)), r"clip\[0\] must be None, a number or a tensor, got str", TypeError),
    "clip_bool": (dict(clip=(None, True)), r"clip\[1\] must be None, a number or a tensor, got bool", TypeError),
    "prediction_type": (dict(prediction_type="x0"), r"prediction_type must be 'epsilon', 'v_prediction' or 'sample', "
                                                    r"got 'x0'"),
    "history_3": (dict(x0_history=[_t(N_BAD, D_BAD)] * 3), r"x0_history must hold at most 2 tensors, got 3"),
    "history_coef_absent": (dict(coefficients=_STEP._replace(coef_x0_prev=0.5)),
                            r"coef_x0_prev is 0.5 but x0_history has no first entry"),
    "history2_coef_absent": (dict(coefficients=_STEP._replace(coef_x0_prev=0.5, coef_x0_prev2=-0.25),
                                  x0_history=[_t(N_BAD, D_BAD)]),
                             r"coef_x0_prev2 is -0.25 but x0_history has 1 entries"),
    "history_shape": (dict(x0_history=[_t(N_BAD, D_BAD + 1)], coefficients=_STEP._replace(coef_x0_prev=0.5)),
                      r"x0_history\[0\] must have x's shape"),
    "history2_rows": (dict(x0_history=[_t(N_BAD, D_BAD), _t(N_BAD - 1, D_BAD)]),
                      r"x0_history\[1\] must have x's shape"),
    "history_int": (dict(x0_history=[_t(N_BAD, D_BAD, dtype=torch.int64)]), r"x0_history\[0\] must be a floating"),
    "step_negative": (dict(step=-1), r"step must be in \[0, 2\^28\), got -1"),
    "step_too_large": (dict(step=2**28), r"step must be in \[0, 2\^28\), got 268435456"),
    "offset_negative": (dict(offset=-3), r"offset must be >= 0, got -3"),
    "labels_negative": (dict(labels=_t(N_BAD, dtype=torch.int64, fill=-1)), r"labels must lie in \[0, 3\)"),
    "labels_too_large": (dict(labels=_t(N_BAD, dtype=torch.int64, fill=3)), r"labels must lie in \[0, 3\)"),
    "labels_int32": (dict(labels=_t(N_BAD, dtype=torch.int32, fill=0)), r"labels must be int64"),
    "labels_shape": (dict(labels=_t(N_BAD + 1, dtype=torch.int64, fill=0)), r"labels must have shape \[5\]"),
    "model_output_shape": (dict(model_output=_t(N_BAD, D_BAD + 1)), r"model_output must have x's shape"),
    "model_output_rows": (dict(model_output=_t(N_BAD - 1, D_BAD)), r"model_output must have x's shape"),
    "model_output_int": (dict(model_output=_t(N_BAD, D_BAD, dtype=torch.int64)), r"model_output must be a floating"),
    "noise_shape": (dict(noise=_t(N_BAD, D_BAD - 1)), r"noise must have x's shape"),
    "x_int": (dict(x=_t(N_BAD, D_BAD, dtype=torch.int64)), r"x must be a floating-point"),
    "x_1d": (dict(x=_t(N_BAD)), r"x must be 2-D"),
    "means_d_mismatch": (dict(means=_t(K_BAD, D_BAD + 2)), r"means has D=6 but x has D=4"),
    "covariance_type": (dict(covariance_type="tied"), r"covariance_type must be .*got 'tied'"),
    "factor_zero": (dict(cov_factor=_t(K_BAD, D_BAD, fill=0.0)), r"cov_factor must have a positive diagonal"),
    "factor_shape": (dict(cov_factor=_t(K_BAD, D_BAD + 1)), r"diag cov_factor must have shape \[3, 4\]"),
    "full_factor_nonpositive": (
        dict(covariance_type="full", cov_factor=lambda d: -torch.eye(D_BAD, device=d).expand(K_BAD, D_BAD, D_BAD)),
        r"cov_factor must have a positive diagonal",
    ),
}


def _materialise(value, device):
    if callable(value):
        return value(device)
    if isinstance(value, (tuple, list)) and not hasattr(value, "_fields"):
        return type(value)(_materialise(v, device) for v in value)
    return value


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_inputs(case, device):
    overrides, match, *kind = BAD_CASES[case]
    kwargs = _bad_base(device)
    for name, value in overrides.items():
        kwargs[name] = _materialise(value, device)
    with pytest.raises(kind[0] if kind else RuntimeError, match=match):
        ops.reverse_step(**kwargs)


# ---------------------------------------------------------------------------------------------------
# CUDA against the CPU op
# ---------------------------------------------------------------------------------------------------
CUDA_FEATURES = {
    # name: (clip: none / scalar / boxes, prediction_type, history entries, noise given)
    "plain": ("none", "epsilon", 0, False),
    "scalar_clip": ("scalar", "epsilon", 0, False),
    "boxes_sample": ("boxes", "sample", 0, False),
    "boxes_v_history2": ("boxes", "v_prediction", 2, False),
    "sample_history1_noise": ("none", "sample", 1, True),
    "boxes_sample_history2_noise": ("boxes", "sample", 2, True),
}


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device and a CUDA build")
@pytest.mark.parametrize("feature", list(CUDA_FEATURES))
@pytest.mark.parametrize("name", ["ancestral", "ddim_eta0", "all_ten", "two_noise"])
@pytest.mark.parametrize("D", [37, 64], ids=["D37", "D64"])  # 64: the 16-byte vector path of every array
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_cuda_matches_cpu(cov, dtype, D, name, feature):
    # The same integers on both devices (z from the same counters); floats to rounding: 1e-5 (float32),
    # 1e-12 (float64) relative to the largest entry.
    clip_kind, prediction_type, n_hist, noise_given = CUDA_FEATURES[feature]
    case = Case(5, D, 2051, cov, dtype, seed=5200 + COVARIANCE_TYPES.index(cov))
    coefs = {**COEFFICIENTS, **HISTORY_COEFFICIENTS}[name]
    if n_hist < 2:
        coefs = coefs._replace(coef_x0_prev2=0.0)
    if n_hist < 1:
        coefs = coefs._replace(coef_x0_prev=0.0)
    elif coefs.coef_x0_prev == 0.0:
        coefs = coefs._replace(coef_x0_prev=0.3)
    history = case.history[:n_hist]
    clip = {"none": None, "scalar": (-2.0, 3.0), "boxes": _random_boxes(case, 5210)}[clip_kind]
    noise = torch.randn(2051, D, generator=gen(5211), dtype=torch.float64).to(dtype) if noise_given else None
    tol = tol_for(compute_dtype(dtype), F64_TOL, F32_TOL)
    kw = dict(clip=clip, noise=noise, return_x0=True, prediction_type=prediction_type, x0_history=history)
    for seed, step, offset in ((12, 0, 0), (-1, 2**28 - 1, 2**32 - 1000)):
        cpu = case.run(coefs, seed, step, offset, **kw)
        gpu = case.run(coefs, seed, step, offset, device="cuda", **kw)
        assert_rel_close(gpu.prev_sample, cpu.prev_sample, tol, "CUDA vs CPU prev_sample")
        assert_rel_close(gpu.pred_original_sample, cpu.pred_original_sample, tol, "CUDA vs CPU x0_hat")
        _check(gpu, case, coefs, seed, step, offset, clip=clip, noise=noise, device="cuda",
               prediction_type=prediction_type, x0_history=history)
