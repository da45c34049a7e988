"""Shared helpers for the op tests: devices, error metric, seeded random mixtures and label margins.

The helpers are plain functions (tests import them with `from conftest import ...`); every random
tensor comes from a seeded torch.Generator so that each test sees the same data on every run.
"""
from __future__ import annotations

import os
from typing import NamedTuple

import pytest
import torch

import mixdiff_ext
from mixdiff_ext import _reference as ref

# MIXDIFF_TEST_EMU=1 (`make emu-test`): "cuda" is the emulated CUDA backend (tests/emulated_cuda.py).
EMULATED_CUDA = os.environ.get("MIXDIFF_TEST_EMU") == "1"
if EMULATED_CUDA:
    import emulated_cuda

    emulated_cuda.load()
HAS_CUDA = EMULATED_CUDA or bool(torch.cuda.is_available() and mixdiff_ext.build_info()["cuda"])

# Every op test is parametrised over these; the CUDA entry exists only with a device and a CUDA build
# (or the emulated one).
devices = ["cpu"] + ([pytest.param("cuda", marks=pytest.mark.cuda)] if HAS_CUDA else [])


def child_prelude() -> str:
    """Code a test's child Python process runs first so that its "cuda" is the parent's (the emulated
    device when the parent has it; LD_PRELOAD and MIXDIFF_TEST_EMU are inherited)."""
    if not EMULATED_CUDA:
        return ""
    return (f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); import emulated_cuda; "
            "emulated_cuda.load(); emulated_cuda.EmulatedCuda().__enter__()\n")


@pytest.fixture(autouse=True)
def _emulated_cuda_device():
    if not EMULATED_CUDA:
        yield
        return
    with emulated_cuda.EmulatedCuda():
        yield


COVARIANCE_TYPES = ("identity", "spherical", "diag", "full")
TINY = torch.finfo(torch.float64).tiny


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rel_err(a, b) -> float:
    """max |a - b| / max(max |b|, tiny), in float64 on the CPU.

    Entries that compare equal (including equal infinities) count as zero error; a NaN anywhere in a
    (or a NaN/inf mismatch) makes the result NaN, which fails every `<= tol` assertion.
    """
    a = torch.as_tensor(a).detach().to("cpu", torch.float64)
    b = torch.as_tensor(b).detach().to("cpu", torch.float64)
    assert a.shape == b.shape, f"shape mismatch: {tuple(a.shape)} vs {tuple(b.shape)}"
    if b.numel() == 0:
        return 0.0
    diff = torch.where(a == b, torch.zeros_like(a), (a - b).abs())
    finite_b = b[torch.isfinite(b)]
    scale = max(finite_b.abs().max().item() if finite_b.numel() else 0.0, TINY)
    return diff.max().item() / scale


def random_spd_cholesky(K: int, D: int, g: torch.Generator, lo: float = 0.25, hi: float = 2.25) -> torch.Tensor:
    """[K, D, D] lower Cholesky factors of SPD matrices Q diag(eig) Q^T with eig in [lo, hi] (condition
    number <= hi / lo), in float64."""
    q, _ = torch.linalg.qr(torch.randn(K, D, D, generator=g, dtype=torch.float64))
    eig = lo + (hi - lo) * torch.rand(K, D, generator=g, dtype=torch.float64)
    spd = q @ torch.diag_embed(eig) @ q.transpose(1, 2)
    spd = 0.5 * (spd + spd.transpose(1, 2))
    return torch.linalg.cholesky(spd)


class Mixture(NamedTuple):
    means: torch.Tensor  # [K, D]
    cov_factor: torch.Tensor | None  # None / [K] / [K, D] / [K, D, D] (lower Cholesky)
    log_weights: torch.Tensor  # [K]
    covariance_type: str

    def to(self, dtype=None, device=None) -> "Mixture":
        def cv(t):
            return None if t is None else t.to(device=device, dtype=dtype)

        return Mixture(cv(self.means), cv(self.cov_factor), cv(self.log_weights), self.covariance_type)

    def f64(self) -> "Mixture":
        """Exact float64 copy on the CPU (for the reference)."""
        return self.to(dtype=torch.float64, device="cpu")

    def args(self):
        """(means, cov_factor, log_weights, covariance_type) for ops.* and the reference."""
        return self.means, self.cov_factor, self.log_weights, self.covariance_type


def make_mixture(
    K: int,
    D: int,
    covariance_type: str,
    seed: int,
    dtype: torch.dtype = torch.float64,
    spread: float = 3.0,
    scale: float = 1.0,
) -> Mixture:
    """Random mixture: means ~ spread * N(0, I); factors with standard deviations scale * [0.5, 1.5]
    (spherical / diag) or scale * a well-conditioned Cholesky factor (full); random log weights
    (log-softmax of N(0, 1)). Generated in float64, then cast to dtype (so float32 / float64 cases share
    parameters up to rounding)."""
    g = gen(seed)
    f64 = dict(generator=g, dtype=torch.float64)
    means = spread * torch.randn(K, D, **f64)
    if covariance_type == "identity":
        factor = None
    elif covariance_type == "spherical":
        factor = scale * (0.5 + torch.rand(K, **f64))
    elif covariance_type == "diag":
        factor = scale * (0.5 + torch.rand(K, D, **f64))
    elif covariance_type == "full":
        factor = scale * random_spd_cholesky(K, D, g)
    else:
        raise ValueError(covariance_type)
    log_weights = torch.log_softmax(torch.randn(K, **f64), dim=0)
    return Mixture(means, factor, log_weights, covariance_type).to(dtype=dtype)


def sample_mixture(mix: Mixture, N: int, seed: int, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """N points drawn from the mixture's components (uniform component choice): (x [N, D], component [N])."""
    g = gen(seed)
    m = mix.f64()
    K, D = m.means.shape
    comp = torch.randint(0, K, (N,), generator=g)
    z = torch.randn(N, D, generator=g, dtype=torch.float64)
    mu = m.means[comp]
    if m.covariance_type == "identity":
        x = mu + z
    elif m.covariance_type == "spherical":
        x = mu + m.cov_factor[comp, None] * z
    elif m.covariance_type == "diag":
        x = mu + m.cov_factor[comp] * z
    else:
        x = mu + torch.einsum("nij,nj->ni", m.cov_factor[comp], z)
    return x.to(dtype or mix.means.dtype), comp


def randn(*shape, seed: int, dtype=torch.float64, scale: float = 1.0) -> torch.Tensor:
    return (scale * torch.randn(*shape, generator=gen(seed), dtype=torch.float64)).to(dtype)


def ref_log_joint(x: torch.Tensor, mix: Mixture) -> torch.Tensor:
    """Reference [N, K] log w_k + log N(x_n; k) in float64 on the CPU."""
    m = mix.f64()
    return ref.log_joint(x.detach().to("cpu", torch.float64), m.means, m.cov_factor, m.log_weights, m.covariance_type)


def confident_rows(scores: torch.Tensor, largest: bool, rel: float) -> torch.Tensor:
    """[N] bool: rows of reference scores [N, K] whose best and second-best entries differ by more than
    rel * max(|best|, |second|, 1) -- i.e. the label is not a tie up to rounding of the op's dtype."""
    n, k = scores.shape
    if k == 1 or n == 0:
        return torch.ones(n, dtype=torch.bool)
    top2 = scores.topk(2, dim=1, largest=largest).values
    gap = (top2[:, 0] - top2[:, 1]).abs()
    scale = torch.maximum(top2.abs().nan_to_num(posinf=0.0).max(dim=1).values, torch.ones(n, dtype=scores.dtype))
    return torch.where(torch.isinf(top2[:, 1]), torch.ones_like(gap, dtype=torch.bool), gap > rel * scale)


def assert_labels_match(got: torch.Tensor, want: torch.Tensor, scores: torch.Tensor, largest: bool, dtype) -> None:
    """Labels must match the reference exactly in float64; in float32 (and lower) only where the
    reference margin exceeds 1e-6 relative (rows within rounding of a tie may go either way), and most
    rows must be compared so that the check is not vacuous."""
    got = got.to("cpu")
    assert got.dtype == torch.int64
    assert got.shape == want.shape
    if dtype == torch.float64:
        mask = torch.ones_like(want, dtype=torch.bool)
    else:
        mask = confident_rows(scores, largest, 1e-6)
        if mask.numel():
            assert mask.float().mean().item() >= 0.9, "too many near-ties: the label check would be vacuous"
    bad = torch.nonzero(mask & (got != want)).flatten()
    assert bad.numel() == 0, (
        f"{bad.numel()} label mismatches, first rows {bad[:5].tolist()}: got {got[bad[:5]].tolist()}, "
        f"want {want[bad[:5]].tolist()}"
    )


def tol_for(dtype: torch.dtype, f64_tol: float, f32_tol: float) -> float:
    return f64_tol if dtype == torch.float64 else f32_tol


def naive_log_lik_overflows(scores: torch.Tensor) -> bool:
    """Whether log(sum_k exp(score)) evaluated without the max shift, in float32, is not finite."""
    with torch.no_grad():
        naive = torch.log(torch.exp(scores.float()).sum(dim=1))
    return not bool(torch.isfinite(naive).all())


# --- noise ops (prior_sample, q_sample, reverse_step) ----------------------------------------------------
def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The ops' compute (and output) dtype for inputs of `dtype`: float64 stays, the rest compute in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def normals_per_block(dtype: torch.dtype) -> int:
    """R: standard normals per Philox block in the compute dtype of `dtype` (normal.h)."""
    return 2 if compute_dtype(dtype) == torch.float64 else 4


def standard_mixture(D: int, dtype: torch.dtype = torch.float64, device="cpu") -> Mixture:
    """K = 1, mean 0, identity covariance: the standard normal prior (its draws are the raw noise)."""
    return Mixture(torch.zeros(1, D, dtype=dtype, device=device), None, torch.zeros(1, dtype=dtype, device=device),
                   "identity")


def assert_rel_close(got, want, tol: float, what: str = "") -> float:
    """rel_err(got, want) <= tol, with the measured error in the message; returns the error."""
    err = rel_err(got, want)
    assert err <= tol, f"{what}: rel err {err:.3e} > {tol:.0e}"
    return err


def frac_equal(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fraction of entries of a and b that are equal (for "different streams give different numbers")."""
    return (a == b).double().mean().item()


__all__ = [
    "COVARIANCE_TYPES",
    "HAS_CUDA",
    "Mixture",
    "assert_labels_match",
    "assert_rel_close",
    "compute_dtype",
    "confident_rows",
    "devices",
    "frac_equal",
    "gen",
    "make_mixture",
    "naive_log_lik_overflows",
    "normals_per_block",
    "randn",
    "ref_log_joint",
    "rel_err",
    "sample_mixture",
    "standard_mixture",
    "tol_for",
]
