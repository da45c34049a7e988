"""Conditioning a diffusion model on a random vector drawn from a Gaussian mixture, and its NGMG loss.

After Lu, Wu et al. 2024, "Diffusion Model Conditioning on Gaussian Mixture Model and NGMG"; the formulation
below is **our interpretation** of it. The model is conditioned on c in R^dim rather than on labels:

* feature mode: M binary attributes a in {0, 1}^M. The dim coordinates are split into M blocks of
  b = dim // M; attribute j with value v has a mean mu_{j,v} in R^b, and
  c = concat_j (mu_{j,a_j} + sigma eps_j), eps_j ~ N(0, I_b);
* class mode: K classes with means mu_k in R^dim, and c = mu_k + sigma eps, eps ~ N(0, I_dim).

Either way c ~ N(centre(a), sigma^2 I). The means are +-1 vectors by default ("sign": mu_{j,v} = (2v - 1) 1_b;
class means are distinct random +-1 vectors) or random Gaussian directions of the same norm ("random"), so sigma
has the same meaning for both. `sample` draws eps from the package's counter-based generator (row i of a
call uses row offset + i of the stream of `seed`, whatever the batch split). `decode` reads attributes or
classes back off a vector (the nearest mean), e.g. off a classifier trained to predict c, and `ngmg_loss`
is the NGMG loss (docs/method.md, "NGMG") of such predictions against the target mixture of the labels.
"""
from __future__ import annotations

import math
import os

import torch

from . import ops
from ._checks import check_real
from ._random import (SEED_CONDITION_DROPOUT, SEED_CONDITION_NOISE, check_offset, check_seed, derive_seed, is_int,
                      resolve_seed)
from .ops import NGMG_KINDS, _compute_dtype
from .prior import _check_finite

__all__ = ["GMMConditioner", "attribute_classes"]

_FORMAT_VERSION = 1
MODES = ("features", "classes")
MEANS_CHOICES = ("sign", "random")


# ------------------------------------------------------------------------------------------------
# input validation
# ------------------------------------------------------------------------------------------------
def _check_count(value, name: str) -> int:
    if not is_int(value):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if int(value) < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def _check_tensor(value, name: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def _check_device(t: torch.Tensor, device: torch.device, name: str) -> None:
    if t.device != device:
        raise ValueError(f"{name} is on {t.device} but the conditioner's means are on {device}")


def _binary(a: torch.Tensor, name: str) -> torch.Tensor:
    """int64 copy of a bool / integer / floating tensor whose values are exactly 0 or 1."""
    if a.dtype == torch.bool:
        return a.long()
    if a.is_complex():
        raise TypeError(f"{name} must be a bool, integer or floating-point tensor, got {a.dtype}")
    if a.numel() and not bool(((a == 0) | (a == 1)).all()):
        raise ValueError(f"{name} must contain only the values 0 and 1")
    return a.long()


def _integer_dtype(t: torch.Tensor) -> bool:
    return not (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool)


def _sign_rows(shape, generator: torch.Generator) -> torch.Tensor:
    """K distinct random +-1 vectors of length dim (two classes with one mean could not be told apart):
    K of the 2**dim sign patterns drawn without replacement; for dim > 24 independent draws, which
    collide with probability below K^2 / 2^25."""
    k, dim = shape
    if dim <= 24 and k <= 2**dim:
        codes = torch.randperm(2**dim, generator=generator)[:k]
        bits = (codes[:, None] >> torch.arange(dim)) & 1
    else:
        bits = torch.randint(0, 2, shape, generator=generator)
    return bits.to(torch.float64) * 2 - 1


def _random_directions(shape, generator: torch.Generator) -> torch.Tensor:
    """Gaussian directions along the last axis, scaled to norm sqrt(length) (the norm of a +-1 vector)."""
    z = torch.randn(shape, generator=generator, dtype=torch.float64)
    norm = z.norm(dim=-1, keepdim=True)
    # An all-zero draw has probability 0; guard anyway so that the means are always finite.
    z = torch.where(norm > 0, z, torch.ones_like(z))
    return z / z.norm(dim=-1, keepdim=True) * math.sqrt(shape[-1])


# ------------------------------------------------------------------------------------------------
# the conditioner
# ------------------------------------------------------------------------------------------------
class GMMConditioner(torch.nn.Module):
    """Random condition vectors c ~ N(centre(a), sigma^2 I) for attributes or classes (see the module docstring).

    Args:
        num: the number of attributes M (mode="features") or of classes K (mode="classes").
        dim: the condition vector's length; in feature mode a multiple of M (blocks of b = dim // M).
        sigma: the standard deviation of each coordinate around its mean (> 0).
        mode: "features" (binary attributes, one block each) or "classes".
        means: "sign" (features: mu_{j,v} = (2v - 1) 1_b; classes: distinct random +-1 vectors drawn with `seed`),
            "random" (Gaussian directions drawn with `seed`, normalised to the norm of the sign means, sqrt(b)
            or sqrt(dim)), or a floating tensor of shape [M, 2, b] (features) or [K, dim] (classes).
        seed: the seed of the random means (an integer; unused for feature-mode "sign" and tensor means).
        dtype: the floating dtype of the `means` buffer (tensor means are converted to it).

    The means are the buffer `means` (moved by .to(), saved in state_dict). With class-mode "sign" means,
    K > 2**dim classes necessarily share means (the sign patterns are distinct while K <= 2**dim).
    """

    means: torch.Tensor

    def __init__(self, num: int, dim: int, sigma: float = 0.5, mode: str = "features", means="sign",
                 seed: int = 0, dtype: torch.dtype = torch.float32):
        super().__init__()
        num = _check_count(num, "num")
        dim = _check_count(dim, "dim")
        sigma = check_real(sigma, "sigma")
        if not sigma > 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        if not isinstance(mode, str):
            raise TypeError(f"mode must be a str, got {type(mode).__name__}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode == "features" and dim % num:
            raise ValueError(f"dim ({dim}) must be divisible by num ({num}) in feature mode")
        seed = check_seed(seed)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
        block = dim // num if mode == "features" else dim
        shape = (num, 2, block) if mode == "features" else (num, dim)

        if isinstance(means, torch.Tensor):
            if not means.is_floating_point():
                raise TypeError(f"means must have a floating-point dtype, got {means.dtype}")
            if tuple(means.shape) != shape:
                raise ValueError(f"means must have shape {shape} for mode={mode!r}, got {tuple(means.shape)}")
            _check_finite(means, "means")
            value = means.detach().to(dtype=dtype).clone()
            kind = "tensor"
        elif isinstance(means, str):
            if means not in MEANS_CHOICES:
                raise ValueError(f"means must be one of {MEANS_CHOICES} or a tensor, got {means!r}")
            g = torch.Generator().manual_seed(seed % 2**64)
            if means == "random":
                value = _random_directions(shape, g)
            elif mode == "features":
                value = torch.tensor([-1.0, 1.0], dtype=torch.float64)[None, :, None].expand(shape).clone()
            else:
                value = _sign_rows(shape, g)
            value = value.to(dtype)
            kind = means
        else:
            raise TypeError(f"means must be 'sign', 'random' or a tensor, got {type(means).__name__}")

        self._num, self._dim, self._block, self._sigma, self._mode = num, dim, block, sigma, mode
        self._means_kind, self._seed = kind, seed
        self.register_buffer("means", value)

    # -- properties --------------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        return self._mode

    @property
    def num(self) -> int:
        """M (features) or K (classes)."""
        return self._num

    @property
    def num_attributes(self) -> int | None:
        """M in feature mode, None in class mode."""
        return self._num if self._mode == "features" else None

    @property
    def num_classes(self) -> int | None:
        """K in class mode, None in feature mode."""
        return self._num if self._mode == "classes" else None

    @property
    def num_components(self) -> int:
        """Rows of the NGMG target mixture's modes: 2M (features) or K (classes)."""
        return 2 * self._num if self._mode == "features" else self._num

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def block_dim(self) -> int:
        """b = dim // M in feature mode; dim in class mode."""
        return self._block

    @property
    def sigma(self) -> float:
        return self._sigma

    @property
    def device(self) -> torch.device:
        return self.means.device

    @property
    def dtype(self) -> torch.dtype:
        return self.means.dtype

    def extra_repr(self) -> str:
        what = "num_attributes" if self._mode == "features" else "num_classes"
        return (f"mode={self._mode!r}, {what}={self._num}, dim={self._dim}, block_dim={self._block}, "
                f"sigma={self._sigma}, means={self._means_kind!r}")

    # -- labels ------------------------------------------------------------------------------------
    def _labels(self, a, name: str = "a") -> torch.Tensor:
        """int64 hard labels: [N, M] in {0, 1} (features) or [N] in [0, K) (classes), on the means' device."""
        a = _check_tensor(a, name)
        _check_device(a, self.device, name)
        if self._mode == "features":
            if a.dim() != 2 or a.shape[1] != self._num:
                raise ValueError(f"{name} must have shape [N, {self._num}] (one column per attribute), "
                                 f"got {tuple(a.shape)}")
            return _binary(a, name)
        if not _integer_dtype(a):
            raise TypeError(f"{name} must be an integer tensor of class ids, got {a.dtype}")
        if a.dim() != 1:
            raise ValueError(f"{name} must have shape [N] (class ids), got {tuple(a.shape)}")
        if a.numel():
            lo, hi = int(a.min()), int(a.max())
            if lo < 0 or hi >= self._num:
                raise ValueError(f"{name} must lie in [0, {self._num}), got values in [{lo}, {hi}]")
        return a.long()

    def _check_vectors(self, c, name: str) -> torch.Tensor:
        c = _check_tensor(c, name)
        if not c.is_floating_point():
            raise TypeError(f"{name} must have a floating-point dtype, got {c.dtype}")
        if c.dim() != 2 or c.shape[1] != self._dim:
            raise ValueError(f"{name} must have shape [N, {self._dim}], got {tuple(c.shape)}")
        _check_device(c, self.device, name)
        return c

    # -- the mixture -------------------------------------------------------------------------------
    def centre(self, a) -> torch.Tensor:
        """[N, dim] component mean of each row: concat_j mu_{j,a_j} (features, a [N, M] of 0/1 as int, bool or
        float) or mu_{a_n} (classes, a [N] int class ids)."""
        labels = self._labels(a)
        if self._mode == "classes":
            return self.means[labels]
        rows = torch.arange(self._num, device=self.device)
        return self.means[rows, labels].reshape(labels.shape[0], self._dim)

    def sample(self, a, seed: int | None = None, offset: int = 0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """[N, dim] draws c = centre(a) + sigma eps, in the means' dtype.

        eps of row i is row offset + i of the counter-based forward-noise stream of `seed` (ops.q_sample), so
        drawing in chunks with advancing offsets gives exactly the rows of one large draw. seed=None draws a
        seed from `generator` (torch's default generator when None), so torch.manual_seed makes it
        repeatable. When the same call also draws diffusion noise with q_sample, pass a different (e.g.
        derived) seed here, or the two draws share their normals.
        """
        offset = check_offset("offset", offset)
        seed = resolve_seed(seed, generator)
        x0 = self.centre(a)
        n = x0.shape[0]
        if n == 0:
            return x0.new_empty((0, self._dim))
        compute = _compute_dtype(self.means)
        x0 = x0.to(compute)
        ones = torch.ones(n, dtype=compute, device=self.device)
        out = ops.q_sample(
            x0, ones, ones * self._sigma, torch.zeros(1, self._dim, dtype=compute, device=self.device), None,
            "identity", seed, offset, labels=torch.zeros(n, dtype=torch.int64, device=self.device),
        ).x_t
        return out.to(self.dtype)

    def log_prob(self, c, a) -> torch.Tensor:
        """[N] log N(c; centre(a), sigma^2 I) (normalised; in feature mode the sum of the blocks' log-densities),
        in the promoted dtype of c and the means; differentiable with respect to c."""
        c = self._check_vectors(c, "c")
        mu = self.centre(a)
        if mu.shape[0] != c.shape[0]:
            raise ValueError(f"c has {c.shape[0]} rows but a has {mu.shape[0]}")
        dtype = torch.promote_types(c.dtype, mu.dtype)
        diff = c.to(dtype) - mu.to(dtype)
        s2 = self._sigma**2
        return -0.5 * (diff * diff).sum(1) / s2 - 0.5 * self._dim * math.log(2 * math.pi * s2)

    def decode(self, c) -> torch.Tensor:
        """The nearest mean (Euclidean): features int64 [N, M], per block the value whose mean is nearer (ties
        to 0); classes int64 [N], the nearest class (ties to the lowest id)."""
        c = self._check_vectors(c, "c")
        with torch.no_grad():
            if self._mode == "classes":
                compute = _compute_dtype(c)
                return ops.assign_nearest(c.to(compute), self.means.to(compute)).labels
            dtype = torch.promote_types(c.dtype, self.dtype)
            blocks = c.to(dtype).reshape(c.shape[0], self._num, 1, self._block)
            sq = ((blocks - self.means.to(dtype)) ** 2).sum(-1)  # [N, M, 2]
            return (sq[..., 1] < sq[..., 0]).long()

    # -- NGMG --------------------------------------------------------------------------------------
    def _soft_features(self, a) -> torch.Tensor:
        a = _check_tensor(a, "a")
        _check_device(a, self.device, "a")
        if a.dim() != 2 or a.shape[1] != self._num:
            raise ValueError(f"a must have shape [N, {self._num}] (one column per attribute), got {tuple(a.shape)}")
        if a.is_floating_point():
            _check_finite(a, "a")
            if a.numel() and not bool(((a >= 0) & (a <= 1)).all()):
                raise ValueError("a (soft labels) must lie in [0, 1]")
            return a
        return _binary(a, "a")

    def _soft_classes(self, a) -> torch.Tensor:
        a = _check_tensor(a, "a")
        _check_device(a, self.device, "a")
        if a.is_floating_point():
            if a.dim() != 2 or a.shape[1] != self._num:
                raise ValueError(f"a (soft class weights) must have shape [N, {self._num}], got {tuple(a.shape)}")
            _check_finite(a, "a")
            if a.numel() and not bool((a >= 0).all()):
                raise ValueError("a (soft class weights) must be non-negative")
            return a
        labels = self._labels(a)
        return torch.nn.functional.one_hot(labels, self._num)

    def ngmg_loss(self, pred, a, sigma: float | None = None, kind: str = "potential", normalized: bool = False,
                  reduction: str = "mean") -> torch.Tensor:
        """NGMG loss (ops.ngmg_loss) of predictions pred [N, dim] against the target mixture of the labels a.

        Features: each block of pred is scored against its attribute's two means with weights (1 - a_nj, a_nj);
        a [N, M] holds 0/1 labels (int, bool or float) or soft labels (floats in [0, 1]); an example's loss is
        the sum over its M attributes (kind="log" with hard labels: -log_prob(pred, a)). Classes: the modes are
        the class means; a is int class ids [N] (one-hot weights) or non-negative soft weights [N, K].
        sigma=None uses self.sigma. reduction "mean" / "sum" over examples, or "none" ([N]). Differentiable
        with respect to pred only; returned in pred's compute dtype (float64, else float32).
        """
        if reduction not in ops.NGMG_REDUCTIONS:
            raise ValueError(f"reduction must be one of {ops.NGMG_REDUCTIONS}, got {reduction!r}")
        if sigma is None:
            sigma = self._sigma
        else:
            sigma = check_real(sigma, "sigma")
            if not sigma > 0:
                raise ValueError(f"sigma must be positive, got {sigma}")
        pred = self._check_vectors(pred, "pred")
        n = pred.shape[0]
        compute = _compute_dtype(pred)
        if self._mode == "features":
            m, b = self._num, self._block
            soft = self._soft_features(a)
            if soft.shape[0] != n:
                raise ValueError(f"pred has {n} rows but a has {soft.shape[0]}")
            soft = soft.to(compute)
            pair = torch.stack((1 - soft, soft), dim=-1)  # [N, M, 2]
            weights = torch.zeros(n, m, m, 2, dtype=compute, device=self.device)
            idx = torch.arange(m, device=self.device)
            weights[:, idx, idx, :] = pair
            loss = ops.ngmg_loss(pred.reshape(n * m, b), self.means.to(compute).reshape(2 * m, b),
                                 weights.reshape(n * m, 2 * m), sigma, reduction="none", normalized=normalized,
                                 kind=kind)
            loss = loss.reshape(n, m).sum(1)
        else:
            weights = self._soft_classes(a)
            if weights.shape[0] != n:
                raise ValueError(f"pred has {n} rows but a has {weights.shape[0]}")
            loss = ops.ngmg_loss(pred, self.means.to(compute), weights.to(compute), sigma, reduction="none",
                                 normalized=normalized, kind=kind)
        if reduction == "mean":
            return loss.mean()
        return loss.sum() if reduction == "sum" else loss

    # -- persistence -------------------------------------------------------------------------------
    def config(self) -> dict:
        """The constructor's arguments (the means as a tensor would be passed)."""
        return {"num": self._num, "dim": self._dim, "sigma": self._sigma, "mode": self._mode,
                "means_kind": self._means_kind, "seed": self._seed}

    def save(self, path: str | os.PathLike) -> None:
        """Writes the configuration and the means; `load` reads them back with weights_only=True."""
        state = {"format_version": _FORMAT_VERSION, "config": self.config(), "means": self.means.detach().cpu()}
        torch.save(state, os.fspath(path))

    @classmethod
    def load(cls, path: str | os.PathLike, map_location=None) -> "GMMConditioner":
        state = torch.load(os.fspath(path), map_location=map_location, weights_only=True)
        if not isinstance(state, dict) or state.get("format_version") != _FORMAT_VERSION:
            raise ValueError(f"{path} is not a mixdiff_ext conditioner file (format {_FORMAT_VERSION})")
        cfg, means = state["config"], state["means"]
        obj = cls(cfg["num"], cfg["dim"], cfg["sigma"], cfg["mode"], means=means, seed=cfg["seed"], dtype=means.dtype)
        obj._means_kind = cfg["means_kind"]
        return obj


# ------------------------------------------------------------------------------------------------
# attribute combinations as classes
# ------------------------------------------------------------------------------------------------
def attribute_classes(attributes, combinations=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Class ids of binary attribute rows, for class-mode conditioning on attribute combinations.

    attributes: [N, M] of 0/1 (int, bool or float). combinations=None: the classes are the sorted
    (lexicographic) distinct rows of `attributes`. Otherwise combinations [K, M] (distinct 0/1 rows) are the
    classes and rows of `attributes` not among them get id -1 (an unseen combination has no class).
    Returns (class ids int64 [N], combinations int64 [K, M]), on the attributes' device.
    """
    attributes = _check_tensor(attributes, "attributes")
    if attributes.dim() != 2:
        raise ValueError(f"attributes must be 2-D [N, M], got shape {tuple(attributes.shape)}")
    attrs = _binary(attributes, "attributes")
    n, m = attrs.shape
    if combinations is None:
        if n == 0:
            return attrs.new_empty((0,)), attrs.new_empty((0, m))
        combos, ids = torch.unique(attrs, dim=0, sorted=True, return_inverse=True)
        return ids, combos
    combinations = _check_tensor(combinations, "combinations")
    if combinations.dim() != 2 or combinations.shape[1] != m:
        raise ValueError(f"combinations must have shape [K, {m}], got {tuple(combinations.shape)}")
    if combinations.device != attributes.device:
        raise ValueError(f"combinations are on {combinations.device} but attributes are on {attributes.device}")
    combos = _binary(combinations, "combinations")
    k = combos.shape[0]
    if n == 0 or k == 0:
        return attrs.new_full((n,), -1), combos
    uniq, inverse = torch.unique(torch.cat((combos, attrs)), dim=0, return_inverse=True)
    if torch.unique(inverse[:k]).numel() != k:
        raise ValueError("combinations must have distinct rows")
    table = attrs.new_full((uniq.shape[0],), -1)
    table[inverse[:k]] = torch.arange(k, device=attrs.device)
    return table[inverse[k:]], combos


# --------------------------------------------------------------------------------------------------
# what a diffusion model does with a conditioner (models.py calls these)
# --------------------------------------------------------------------------------------------------
def check_conditioning(conditioner, cond_dropout, aux_classifier, aux_weight, aux_sigma, aux_kind) -> dict:
    """The models' conditioning keywords, validated (see MixDDPM)."""
    if conditioner is not None and not isinstance(conditioner, GMMConditioner):
        raise TypeError(f"conditioner must be a GMMConditioner, got {type(conditioner).__name__}")
    cond_dropout = check_real(cond_dropout, "cond_dropout")
    if not 0.0 <= cond_dropout < 1.0:
        raise ValueError(f"cond_dropout must lie in [0, 1), got {cond_dropout}")
    aux_weight = check_real(aux_weight, "aux_weight")
    if aux_weight < 0:
        raise ValueError(f"aux_weight must be >= 0, got {aux_weight}")
    if aux_classifier is not None and not isinstance(aux_classifier, torch.nn.Module):
        raise TypeError(f"aux_classifier must be a torch.nn.Module, got {type(aux_classifier).__name__}")
    if aux_weight > 0 and (aux_classifier is None or conditioner is None):
        raise ValueError("aux_weight > 0 needs an aux_classifier and a conditioner (its mixture is the target)")
    if aux_sigma is not None and not check_real(aux_sigma, "aux_sigma") > 0:
        raise ValueError(f"aux_sigma must be > 0, got {aux_sigma}")
    if aux_kind not in NGMG_KINDS:
        raise ValueError(f"aux_kind must be one of {NGMG_KINDS}, got {aux_kind!r}")
    return dict(conditioner=conditioner, cond_dropout=cond_dropout, aux_weight=aux_weight,
                aux_sigma=None if aux_sigma is None else float(aux_sigma), aux_kind=aux_kind)


def condition_vectors(conditioner: GMMConditioner | None, n: int, cond: torch.Tensor | None, conditions, seed: int,
                      offset: int) -> torch.Tensor | None:
    """The condition vectors of n rows: `cond` as given, or drawn by the conditioner for the attributes
    or class ids `conditions` (row i uses row offset + i of a seed derived from `seed`)."""
    if conditions is not None:
        if conditioner is None:
            raise ValueError("conditions were given but the model has no conditioner")
        if cond is not None:
            raise ValueError("pass either cond or conditions, not both")
        cond = conditioner.sample(conditions, seed=derive_seed(seed, SEED_CONDITION_NOISE), offset=offset)
    if cond is not None and (not isinstance(cond, torch.Tensor) or not cond.is_floating_point()
                             or cond.dim() != 2 or cond.shape[0] != n):
        raise ValueError(f"cond must be a floating-point tensor of shape [{n}, cond_dim], got "
                         f"{tuple(cond.shape) if isinstance(cond, torch.Tensor) else type(cond).__name__}")
    return cond


def kept_rows(cond_dropout: float, n: int, seed: int, offset: int, device: torch.device) -> torch.Tensor:
    """Condition dropout: 1.0 for the rows that keep their condition, 0.0 for those that get the null
    one. A counter-based categorical draw (keep with 1 - cond_dropout), so it is batch-invariant."""
    log_weights = torch.tensor([math.log1p(-cond_dropout), math.log(cond_dropout)], device=device)
    drawn = ops.prior_sample(torch.zeros(2, 1, device=device), log_weights, None, "identity", n,
                             derive_seed(seed, SEED_CONDITION_DROPOUT), offset).labels
    return (drawn == 0).to(torch.float32)


def guided(denoise, cond: torch.Tensor | None, guidance_scale: float) -> torch.Tensor:
    """denoise(cond), or with a condition and guidance_scale w != 1 classifier-free guidance
    out_null + w (out_cond - out_null), where the null condition is cond=None."""
    out = denoise(cond)
    if cond is not None and guidance_scale != 1.0:
        null = denoise(None)
        out = null + guidance_scale * (out - null)
    return out


def aux_ngmg_loss(conditioner: GMMConditioner, classifier: torch.nn.Module, x0_hat: torch.Tensor, conditions,
                  weight: torch.Tensor, kept: torch.Tensor | None, sigma: float | None, kind: str) -> torch.Tensor:
    """mean_i weight_i NGMG(classifier(x0_hat_i), conditioner mixture of conditions_i), over the rows that
    keep their condition (kept; None: all)."""
    if conditions is None:
        raise ValueError("aux_weight > 0: the loss needs `conditions` (the attributes whose mixture is the target)")
    per_row = conditioner.ngmg_loss(classifier(x0_hat), conditions, sigma=sigma, kind=kind, reduction="none")
    if kept is not None:
        weight = weight * kept.to(weight.dtype)
    return torch.mean(weight * per_row.to(weight.dtype))
