"""mixdiff::reverse_step: one fused reverse step of every sampler, centred on each row's component j:

    y = x - mu_j,  y0_hat = x0_from_x y + x0_from_eps (A_j eps_hat)   (clipped to [clip_min, clip_max] in
    x space when asked),  x' = mu_j + coef_x y + coef_x0 y0_hat + coef_eps (A_j eps_hat) + coef_noise (A_j z),

z drawn only when coef_noise != 0, from row offset + i of stream 4 | step << 4 of `seed`, unless given.
The reference (_reference.reverse_step) is evaluated in float64 on the op's inputs rounded to its compute
dtype; for float32 its z are ref.normals in float32 (the float32 layout differs from the float64 one).
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
# row or label changes x' by O(0.1) or more.
F32_TOL = 1e-5
DTYPES = [torch.float64, torch.float32]


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
}

# (K, D, N): K = 1 and D = 1; D not a multiple of the normals per block / the 16-lane vector; N past the
# parallel grain.
SHAPES = [(1, 1, 9), (3, 5, 300), (4, 37, 65)]


def _shape_id(s):
    return "K{}_D{}_N{}".format(*s)


class Case:
    """Inputs of one reverse_step call (CPU tensors in `dtype`): x drawn around the components, model
    output ~ N(0, 1), labels the true components."""

    def __init__(self, K, D, N, cov, dtype, seed, spread=3.0, scale=1.0, x_scale=1.0):
        self.mix = make_mixture(K, D, cov, seed=seed, dtype=dtype, spread=spread, scale=scale)
        x, self.labels = sample_mixture(self.mix, N, seed=seed + 1, dtype=torch.float64)
        mu = self.mix.means.double()[self.labels]
        self.x = (mu + x_scale * (x - mu)).to(dtype)
        self.eps_hat = torch.randn(N, D, generator=gen(seed + 2), dtype=torch.float64).to(dtype)
        self.cov = cov
        self.dtype = dtype

    def run(self, coefs, seed, step, offset=0, clip=None, noise=None, return_x0=False, device="cpu", **override):
        m = self.mix.to(device=device)
        args = dict(x=self.x, model_output=self.eps_hat, labels=self.labels, means=m.means, cov_factor=m.cov_factor,
                    covariance_type=self.cov, coefficients=coefs, seed=seed, step=step, offset=offset, clip=clip,
                    noise=noise, return_x0=return_x0)
        args.update(override)
        args = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in args.items()}
        return ops.reverse_step(**args)

    def reference(self, coefs, seed, step, offset=0, clip=None, noise=None):
        """(x', x0_hat) in float64 from the inputs rounded to the compute dtype."""
        cd = compute_dtype(self.dtype)
        N, D = self.x.shape
        if noise is None and coefs[5] != 0 and cd == torch.float32:
            rows = torch.arange(offset, offset + N)
            noise = ref.normals(seed, ref.step_stream(ref.STREAM_REVERSE_NOISE, step), rows, D, torch.float32)
        m = self.mix.to(dtype=cd).f64()
        lo, hi = (None, None) if clip is None else clip
        # float64 with noise None: the reference draws the float64 stream itself.
        return ref.reverse_step(self.x.to(cd).double(), self.eps_hat.to(cd).double(), self.labels, m.means,
                                m.cov_factor, self.cov, tuple(coefs), lo, hi,
                                None if noise is None else noise.to(cd).double(), seed, offset, step, return_x0=True)


def _check(out: ops.ReverseStep, case: Case, coefs, seed, step, offset=0, clip=None, noise=None, return_x0=True,
           device="cpu"):
    cd = compute_dtype(case.dtype)
    N, D = case.x.shape
    assert out.prev_sample.dtype == cd and out.prev_sample.shape == (N, D)
    assert out.prev_sample.device.type == device
    want_prev, want_x0 = case.reference(coefs, seed, step, offset, clip, noise)
    tol = tol_for(cd, F64_TOL, F32_TOL)
    assert bool(torch.isfinite(out.prev_sample).all())
    assert_rel_close(out.prev_sample, want_prev, tol, "prev_sample")
    if return_x0:
        assert out.pred_original_sample is not None
        assert out.pred_original_sample.dtype == cd and out.pred_original_sample.shape == (N, D)
        assert_rel_close(out.pred_original_sample, want_x0, tol, "pred_original_sample")
    else:
        assert out.pred_original_sample is None


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
        case.mix.cov_factor.to(device) if case.mix.cov_factor is not None
        else torch.empty(0, dtype=compute_dtype(dtype), device=device),
        cov, list(coefs), None, None, None, seed, offset, step, False)
    assert raw[1].numel() == 0, "the raw op returns an empty x0 when not asked"
    assert torch.equal(raw[0], with_x0.prev_sample)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("clip", [(-1.0, None), (None, 1.5), (-0.5, 0.75), (0.25, 0.25)],
                         ids=["min", "max", "both", "point"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_clipping(cov, dtype, clip, device):
    # x0_hat is clipped in x space to [clip_min, clip_max] (either bound optional) before it enters x'.
    # The data spread over ~[-10, 10] so that a good share of x0_hat lies beyond each bound. The op (and
    # the reference) returns x0_hat = mu + (clip(y0 + mu) - mu): a clipped entry equals its bound up to
    # the rounding of that round trip, a few ulp of max(|mu|, |bound|).
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
    # ... and it enters as coef_noise (A z): x'(z) - x'(0) = coef_noise A z.
    zero = case.run(coefs, 1, 2, noise=torch.zeros_like(noise), device=device)
    cd = compute_dtype(dtype)
    m = case.mix.to(dtype=cd).f64()
    az = coefs.coef_noise * ref.apply_factor(m.cov_factor, cov, case.labels, noise.to(cd).double())
    diff = out.prev_sample.cpu().double() - zero.prev_sample.cpu().double()
    scale = out.prev_sample.abs().max().item()
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
    for return_x0 in (False, True):
        out = ops.reverse_step(x, x, labels, mix.means, mix.cov_factor, cov, COEFFICIENTS["ancestral"], 1, 0,
                               return_x0=return_x0)
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
    out = ops.reverse_step(x, x, torch.tensor([0, 1, 1, 0], device=device), means, factor, cov,
                           COEFFICIENTS["ancestral"], 1, 0, return_x0=True)
    assert out.prev_sample.shape == (4, 0) and out.pred_original_sample.shape == (4, 0)


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_non_contiguous(cov, dtype, device):
    N, K, D = 41, 4, 6
    case = Case(K, D, N, cov, dtype, seed=4700 + COVARIANCE_TYPES.index(cov))
    noise = torch.randn(N, D, generator=gen(4710), dtype=torch.float64).to(dtype)

    def nc(t):
        if t is None:
            return None
        if t.dim() == 1:
            return torch.stack([t, t], -1)[:, 0]
        return t.mT.contiguous().mT

    coefs = COEFFICIENTS["all_terms"]
    for nz in (None, noise):
        want = case.run(coefs, 3, 7, offset=2, noise=nz, return_x0=True, device=device)
        views = dict(x=nc(case.x), model_output=nc(case.eps_hat), labels=nc(case.labels), means=nc(case.mix.means),
                     cov_factor=nc(case.mix.cov_factor), noise=nc(nz))
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


def test_thread_count_invariance():
    case = Case(5, 20, 3000, "full", torch.float32, seed=4900)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = case.run(COEFFICIENTS["ancestral"], 7, 3, return_x0=True)
        torch.set_num_threads(max(2, before))
        many = case.run(COEFFICIENTS["ancestral"], 7, 3, return_x0=True)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one.prev_sample, many.prev_sample)
    assert torch.equal(one.pred_original_sample, many.pred_original_sample)


# ---------------------------------------------------------------------------------------------------
# opcheck and bad inputs
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize(
    "cov, clip, with_noise, return_x0",
    [("identity", (None, None), False, False), ("spherical", (-1.0, None), False, True),
     ("diag", (-2.0, 2.0), True, True), ("full", (None, 0.5), False, True)],
    ids=["identity", "spherical-clip-min", "diag-clip-noise", "full-clip-max"],
)
def test_opcheck(cov, clip, with_noise, return_x0, device):
    case = Case(3, 4, 6, cov, torch.float64, seed=5000)
    m = case.mix.to(device=device)
    factor = m.cov_factor if m.cov_factor is not None else torch.empty(0, dtype=torch.float64, device=device)
    noise = torch.randn(6, 4, generator=gen(5001), dtype=torch.float64).to(device) if with_noise else None
    args = (case.x.to(device), case.eps_hat.to(device), case.labels.to(device), m.means, factor, cov,
            list(COEFFICIENTS["ancestral"]), clip[0], clip[1], noise, 2**40 + 1, 3, 11, return_x0)
    torch.library.opcheck(torch.ops.mixdiff.reverse_step.default, args)


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


BAD_CASES = {
    "coefficients_5": (dict(coefficients=(1.0, 0.0, 1.0, 0.0, 0.0)), r"coefficients must be 6 numbers .*got 5"),
    "coefficients_7": (dict(coefficients=(1.0,) * 7), r"coefficients must be 6 numbers .*got 7"),
    "coefficient_nan": (dict(coefficients=(1.0, 0.0, math.nan, 0.0, 0.0, 0.1)), r"coefficients must be finite"),
    "coefficient_inf": (dict(coefficients=(1.0, 0.0, 1.0, 0.0, 0.0, math.inf)), r"coefficients must be finite"),
    "clip_reversed": (dict(clip=(1.0, -1.0)), r"clip_min \(1\) must not exceed clip_max \(-1\)"),
    # A NaN bound clips nothing in the kernel but makes the reference's x0_hat NaN: like a NaN coefficient
    # it must be rejected, naming the bound.
    "clip_min_nan": (dict(clip=(math.nan, None)), r"clip_min"),
    "clip_max_nan": (dict(clip=(None, math.nan)), r"clip_max"),
    "clip_min_nan_with_max": (dict(clip=(math.nan, 1.0)), r"clip_min"),
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


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_inputs(case, device):
    overrides, match = BAD_CASES[case]
    kwargs = _bad_base(device)
    for name, value in overrides.items():
        kwargs[name] = value(device) if callable(value) else value
    with pytest.raises(RuntimeError, match=match):
        ops.reverse_step(**kwargs)


# ---------------------------------------------------------------------------------------------------
# CUDA against the CPU op
# ---------------------------------------------------------------------------------------------------
@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device and a CUDA build")
@pytest.mark.parametrize("name", ["ancestral", "ddim_eta0", "all_terms"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_cuda_matches_cpu(cov, dtype, name):
    # The same integers on both devices (z from the same counters); floats to rounding: 1e-5 (float32),
    # 1e-12 (float64) relative to the largest entry.
    case = Case(5, 37, 2051, cov, dtype, seed=5200 + COVARIANCE_TYPES.index(cov))
    coefs = COEFFICIENTS[name]
    tol = tol_for(compute_dtype(dtype), F64_TOL, F32_TOL)
    for seed, step, offset, clip in ((12, 0, 0, None), (-1, 2**28 - 1, 2**32 - 1000, (-2.0, 3.0))):
        cpu = case.run(coefs, seed, step, offset, clip=clip, return_x0=True)
        gpu = case.run(coefs, seed, step, offset, clip=clip, return_x0=True, device="cuda")
        assert_rel_close(gpu.prev_sample, cpu.prev_sample, tol, "CUDA vs CPU prev_sample")
        assert_rel_close(gpu.pred_original_sample, cpu.pred_original_sample, tol, "CUDA vs CPU x0_hat")
        _check(gpu, case, coefs, seed, step, offset, clip=clip, device="cuda")
