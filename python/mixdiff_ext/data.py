"""Built-in datasets and user-data loading (mixdiff_ext.data).

Every dataset here is generated or bundled locally; nothing is downloaded. The synthetic generators are
plain functions returning a torch tensor:

- ``gmm1d``       [n, 1]   two-component 1-D Gaussian mixture (true parameters: ``gmm1d_params``)
- ``ring2d``      [n, 2]   Gaussians evenly spaced on a circle (centres: ``ring2d_centers``)
- ``moons``       [n, 2]   two interleaving half moons
- ``anisotropic`` [n, dim] well separated mixture with full, distinct covariances (``anisotropic_params``)
- ``digits``      [1797, 1, 8, 8] scikit-learn's bundled 8x8 digits, scaled to [-1, 1]
- ``arrivals``    [n, 48]  synthetic call-centre arrival counts per half hour (``arrivals_intensity``)
- ``shapes``      [n, 1, 16, 16] a square or circle with four binary attributes (shape, size, position,
  fill), for attribute-conditioned models; ``shapes_split`` holds combinations out of training

Conventions: ``seed`` is an int in [0, 2**63); each call seeds its own ``torch.Generator`` (or numpy
``default_rng``) and never touches global RNG state, so the same arguments give the identical tensor.
The mixture parameters never depend on ``seed`` (two seeds are two samples of one distribution, e.g. a
train and a test split). Samples are drawn in float64 and cast to ``dtype`` (float32 by default). ``n = 0``
gives an empty [0, D] tensor.

User data goes through ``load_array`` (.npy / .npz / .csv / .pt files -> [N, D] or [N, C, H, W]) and,
for images, ``as_image_tensor`` (-> [N, C, H, W] scaled to [-1, 1]). ``DATASETS`` / ``get_dataset`` map
names to the built-in datasets for the command line. The exact generators are in docs/data.md.
"""
from __future__ import annotations

import csv
import functools
import math
import numbers
import os
from typing import Callable, NamedTuple

import numpy as np
import torch

__all__ = [
    "ARRIVALS_INTERVALS",
    "DATASETS",
    "GMM1D_MEANS",
    "GMM1D_STDS",
    "GMM1D_WEIGHTS",
    "SHAPES_ATTRIBUTES",
    "SHAPES_HELD_OUT",
    "SHAPES_VALUES",
    "ShapesSplit",
    "anisotropic",
    "anisotropic_params",
    "arrivals",
    "arrivals_intensity",
    "as_image_tensor",
    "digits",
    "get_dataset",
    "gmm1d",
    "gmm1d_params",
    "load_array",
    "moons",
    "ring2d",
    "ring2d_centers",
    "shapes",
    "shapes_combinations",
    "shapes_split",
]

_F64 = torch.float64


# --- argument checks ------------------------------------------------------------------------------------
def _check_int(name: str, value: object, minimum: int = 0) -> int:
    # bool is an Integral, but n=True is almost certainly a mistake.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return int(value)


def _check_seed(seed: object) -> int:
    seed = _check_int("seed", seed, 0)
    # numpy's default_rng needs a non-negative seed; torch's manual_seed a 64-bit one.
    if seed >= 2**63:
        raise ValueError(f"seed must be an int in [0, 2**63), got {seed}")
    return seed


def _check_real(name: str, value: object, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value}")
    return value


def _check_dtype(dtype: object) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    return dtype


def _check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def _draw_components(weights: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    """[n] int64 component indices with P(k) = weights[k], by inverse CDF (works for n = 0, unlike
    torch.multinomial)."""
    cdf = torch.cumsum(weights.to(_F64), 0)
    u = torch.rand(n, generator=g, dtype=_F64) * cdf[-1]
    return torch.searchsorted(cdf, u, right=True).clamp_max(len(weights) - 1)


# --- gmm1d ---------------------------------------------------------------------------------------------
GMM1D_WEIGHTS: tuple[float, float] = (0.4, 0.6)
GMM1D_MEANS: tuple[float, float] = (-3.0, 3.0)
GMM1D_STDS: tuple[float, float] = (0.6, 1.0)


def gmm1d_params() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The true density of ``gmm1d``: (weights [2], means [2], stds [2]) as float64 tensors, i.e.
    p(x) = 0.4 N(x; -3, 0.6^2) + 0.6 N(x; 3, 1.0^2)."""
    return (torch.tensor(GMM1D_WEIGHTS, dtype=_F64), torch.tensor(GMM1D_MEANS, dtype=_F64),
            torch.tensor(GMM1D_STDS, dtype=_F64))


def gmm1d(
    n: int = 10000, seed: int = 0, dtype: torch.dtype = torch.float32, return_labels: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """[n, 1] samples of a bimodal 1-D Gaussian mixture.

    Generator: component k ~ Categorical(0.4, 0.6), then x ~ N(mean_k, std_k^2) with means (-3, +3) and
    stds (0.6, 1.0) (``GMM1D_WEIGHTS``, ``GMM1D_MEANS``, ``GMM1D_STDS``; ``gmm1d_params()`` returns them as
    tensors). The modes are 5 and 3 of their own standard deviations away from the origin, so fewer than
    0.1% of points fall on the other mode's side of 0.

    With ``return_labels=True`` returns (x, component int64 [n]).
    """
    n, seed = _check_int("n", n), _check_seed(seed)
    dtype, return_labels = _check_dtype(dtype), _check_bool("return_labels", return_labels)
    weights, means, stds = gmm1d_params()
    g = torch.Generator().manual_seed(seed)
    comp = _draw_components(weights, n, g)
    x = means[comp] + stds[comp] * torch.randn(n, generator=g, dtype=_F64)
    x = x.unsqueeze(1).to(dtype)
    return (x, comp) if return_labels else x


# --- ring2d --------------------------------------------------------------------------------------------
def ring2d_centers(modes: int = 8, radius: float = 8.0) -> torch.Tensor:
    """[modes, 2] float64 centres of ``ring2d``: radius * (cos(2 pi k / modes), sin(2 pi k / modes))."""
    modes = _check_int("modes", modes, 1)
    radius = _check_real("radius", radius, positive=True)
    angle = 2 * math.pi * torch.arange(modes, dtype=_F64) / modes
    return radius * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)


def ring2d(
    n: int = 10000,
    seed: int = 0,
    radius: float = 8.0,
    std: float = 0.2,
    modes: int = 8,
    dtype: torch.dtype = torch.float32,
    return_labels: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """[n, 2] samples of an equal-weight mixture of ``modes`` isotropic Gaussians on a circle.

    Generator: mode k ~ Uniform{0, ..., modes - 1}, then x ~ N(c_k, std^2 I_2) with
    c_k = radius * (cos(2 pi k / modes), sin(2 pi k / modes)) (``ring2d_centers``). Defaults: 8 modes,
    radius 8, std 0.2, so every mode sits 40 standard deviations from the origin (a standard-normal
    prior puts almost no mass there) and neighbouring centres are 2 * 8 * sin(pi / 8) = 6.12 apart
    (30.6 std).

    With ``return_labels=True`` returns (x, mode int64 [n]).
    """
    n, seed = _check_int("n", n), _check_seed(seed)
    std = _check_real("std", std, positive=True)
    centers = ring2d_centers(modes, radius)
    dtype, return_labels = _check_dtype(dtype), _check_bool("return_labels", return_labels)
    g = torch.Generator().manual_seed(seed)
    comp = torch.randint(0, len(centers), (n,), generator=g)
    x = (centers[comp] + std * torch.randn(n, 2, generator=g, dtype=_F64)).to(dtype)
    return (x, comp) if return_labels else x


# --- moons ---------------------------------------------------------------------------------------------
def moons(
    n: int = 10000,
    seed: int = 0,
    noise: float = 0.05,
    dtype: torch.dtype = torch.float32,
    return_labels: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """[n, 2] samples of two interleaving half moons (the shape of sklearn's ``make_moons``).

    Generator: moon m ~ Uniform{0, 1} and angle t ~ Uniform(0, pi), independently per point; moon 0 is
    (cos t, sin t) (upper half of the unit circle at the origin), moon 1 is (1 - cos t, 0.5 - sin t)
    (lower half of the unit circle at (1, 0.5)); then N(0, noise^2 I_2) is added. Unlike ``make_moons``
    (evenly spaced angles, exactly n/2 per moon) the points are i.i.d., as a generative model's training
    data should be. Noise-free points span x in [-1, 2], y in [-0.5, 1].

    With ``return_labels=True`` returns (x, moon int64 [n]).
    """
    n, seed = _check_int("n", n), _check_seed(seed)
    noise = _check_real("noise", noise, positive=False)
    dtype, return_labels = _check_dtype(dtype), _check_bool("return_labels", return_labels)
    g = torch.Generator().manual_seed(seed)
    moon = torch.randint(0, 2, (n,), generator=g)
    t = math.pi * torch.rand(n, generator=g, dtype=_F64)
    upper = torch.stack([torch.cos(t), torch.sin(t)], dim=1)
    lower = torch.stack([1 - torch.cos(t), 0.5 - torch.sin(t)], dim=1)
    x = torch.where(moon.unsqueeze(1) == 0, upper, lower)
    x = (x + noise * torch.randn(n, 2, generator=g, dtype=_F64)).to(dtype)
    return (x, moon) if return_labels else x


# --- anisotropic ---------------------------------------------------------------------------------------
_ANISO_PARAM_SEED = 20240601  # fixed, so the mixture depends only on (dim, clusters), never on `seed`
_ANISO_CENTRE_DISTANCE = 10.0
_ANISO_SCALE_RANGE = (0.5, 1.5)
_ANISO_CONDITION = 16.0  # largest / smallest eigenvalue of every covariance


def _orthogonal(d: int, g: torch.Generator) -> torch.Tensor:
    """A Haar-random [d, d] orthogonal matrix (QR of a Gaussian matrix with R's diagonal made positive)."""
    q, r = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=_F64))
    return q * torch.sign(torch.diagonal(r)).unsqueeze(0)


def anisotropic_params(dim: int = 16, clusters: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The true mixture of ``anisotropic``: (weights [K], means [K, dim], covariances [K, dim, dim]),
    float64. See ``anisotropic`` for the construction."""
    dim, clusters = _check_int("dim", dim, 1), _check_int("clusters", clusters, 1)
    if clusters > 2 * dim:
        raise ValueError(f"clusters must be <= 2 * dim = {2 * dim} (centres are +-axes), got {clusters}")
    g = torch.Generator().manual_seed(_ANISO_PARAM_SEED)
    k = torch.arange(clusters, dtype=_F64)
    weights = (k + 1) / (k + 1).sum()
    basis = _orthogonal(dim, g)
    axis = torch.arange(clusters) % dim
    sign = torch.where(torch.arange(clusters) < dim, 1.0, -1.0).to(_F64)
    means = _ANISO_CENTRE_DISTANCE * sign.unsqueeze(1) * basis[:, axis].T
    lo, hi = _ANISO_SCALE_RANGE
    scale = lo * (hi / lo) ** (k / max(clusters - 1, 1))
    # Per-axis standard deviations scale * [1 .. 1/4] (log-spaced): eigenvalue ratio 16 in every cluster.
    shape = _ANISO_CONDITION ** (-0.5 * torch.arange(dim, dtype=_F64) / max(dim - 1, 1))
    covs = []
    for s in scale:
        rot = _orthogonal(dim, g)
        covs.append(rot @ torch.diag((s * shape) ** 2) @ rot.T)
    covs = torch.stack(covs)
    return weights, means, 0.5 * (covs + covs.transpose(1, 2))


def anisotropic(
    n: int = 10000,
    dim: int = 16,
    clusters: int = 4,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    return_labels: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """[n, dim] samples of a well separated, anisotropic Gaussian mixture with unequal weights.

    The mixture (``anisotropic_params(dim, clusters)``) is fixed for given (dim, clusters); ``seed``
    changes only the draws. With K = clusters (1 <= K <= 2 * dim):

    - weights w_k = (k + 1) / (K (K + 1) / 2), k = 0..K-1 (K = 4: 0.1, 0.2, 0.3, 0.4);
    - means mu_k = 10 * s_k * b_{k mod dim}, s_k = +1 for k < dim and -1 after, where b_j are the columns
      of a fixed random orthogonal matrix: the centres are vertices of a rotated cross-polytope, at
      distance 10 from the origin and 10 * sqrt(2) (or 20) from each other;
    - covariances Sigma_k = R_k diag(sigma_k^2) R_k^T with R_k a random orthogonal matrix per cluster and
      standard deviations sigma_kj = c_k * 16^(-j / (2 (dim - 1))), j = 0..dim-1 (from c_k down to c_k / 4,
      so each covariance has condition number 16), cluster scale c_k = 0.5 * 3^(k / (K - 1)) (from 0.5 to
      1.5). The largest standard deviation is 1.5, so centres are >= 9.4 of them apart.

    The random matrices come from torch.Generator().manual_seed(20240601): first the centre basis, then
    R_0, ..., R_{K-1}. Samples: k ~ Categorical(w), x = mu_k + Sigma_k^(1/2) z, z ~ N(0, I).
    With ``return_labels=True`` returns (x, cluster int64 [n]).
    """
    n, seed = _check_int("n", n), _check_seed(seed)
    weights, means, covs = anisotropic_params(dim, clusters)
    dtype, return_labels = _check_dtype(dtype), _check_bool("return_labels", return_labels)
    factors = torch.linalg.cholesky(covs)
    g = torch.Generator().manual_seed(seed)
    comp = _draw_components(weights, n, g)
    z = torch.randn(n, means.shape[1], generator=g, dtype=_F64)
    x = (means[comp] + torch.einsum("nij,nj->ni", factors[comp], z)).to(dtype)
    return (x, comp) if return_labels else x


# --- digits --------------------------------------------------------------------------------------------
def digits(
    return_labels: bool = False, dtype: torch.dtype = torch.float32
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled 8x8 handwritten digits as images [1797, 1, 8, 8] in [-1, 1].

    The pixel values 0..16 are mapped by x / 8 - 1 (0 -> -1, 16 -> +1, 17 levels in steps of 1/8). With
    ``return_labels=True`` returns (images, labels int64 [1797], classes 0..9). The data ship with
    scikit-learn (``sklearn.datasets.load_digits``); no download. Larger image sets (EMNIST, CIFAR) cannot
    be downloaded here: save them as an array and load it with ``load_array``, then scale it with
    ``as_image_tensor``.
    """
    dtype, return_labels = _check_dtype(dtype), _check_bool("return_labels", return_labels)
    from sklearn.datasets import load_digits  # lazy: importing sklearn costs about a second

    bunch = load_digits()
    images = torch.from_numpy(bunch.images).to(_F64).unsqueeze(1) / 8.0 - 1.0
    images = images.to(dtype)
    if return_labels:
        return images, torch.from_numpy(bunch.target).to(torch.int64)
    return images


# --- arrivals ------------------------------------------------------------------------------------------
ARRIVALS_INTERVALS = 48  # half hours per day
_ARRIVALS_SEASON_AMPLITUDE = 0.25
_ARRIVALS_SEASON_PEAK_DAY = 15  # 0-based day of year: 16 January
_ARRIVALS_GAMMA_SHAPE = 20.0


def _bump(t: torch.Tensor, centre: float, width: float) -> torch.Tensor:
    return torch.exp(-0.5 * ((t - centre) / width) ** 2)


def arrivals_intensity(day_of_week: torch.Tensor, day_of_year: torch.Tensor) -> torch.Tensor:
    """[n, 48] float64 expected arrivals per half hour for days with the given day_of_week (0 = Monday,
    ..., 6 = Sunday) and day_of_year (0..364) int tensors [n]: season(doy) * profile(dow), the mean of
    ``arrivals`` (whose day multiplier has mean 1). See ``arrivals`` for the formulas."""
    dow = torch.as_tensor(day_of_week)
    doy = torch.as_tensor(day_of_year)
    if dow.dtype.is_floating_point or doy.dtype.is_floating_point or dow.dtype == torch.bool:
        raise TypeError("day_of_week and day_of_year must be integer tensors")
    if dow.shape != doy.shape or dow.dim() != 1:
        raise ValueError(f"day_of_week and day_of_year must be 1-D of one length, got {tuple(dow.shape)} "
                         f"and {tuple(doy.shape)}")
    if dow.numel() and (dow.min() < 0 or dow.max() > 6 or doy.min() < 0 or doy.max() > 364):
        raise ValueError("day_of_week must be in 0..6 and day_of_year in 0..364")
    t = (torch.arange(ARRIVALS_INTERVALS, dtype=_F64) + 0.5) / 2  # interval midpoints in hours
    weekday = 1.0 + 40.0 * _bump(t, 10.0, 1.5) + 30.0 * _bump(t, 14.5, 1.5)
    weekend = 1.0 + 15.0 * _bump(t, 13.0, 3.0)
    profile = torch.where((dow >= 5).unsqueeze(1), weekend, weekday)
    season = 1.0 + _ARRIVALS_SEASON_AMPLITUDE * torch.cos(
        2 * math.pi * (doy.to(_F64) - _ARRIVALS_SEASON_PEAK_DAY) / 365)
    return season.unsqueeze(1) * profile


def arrivals(
    n: int = 2000, seed: int = 0, dtype: torch.dtype = torch.float32, return_info: bool = False
) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """[n, 48] synthetic call-centre arrival counts: one row per day, one column per half hour.

    Calendar: row d is day d of consecutive 365-day years starting on a Monday, 1 January:
    day_of_week = d mod 7 (0 = Monday, 5 and 6 = weekend), day_of_year = d mod 365 (0 = 1 January).

    Counts: N[d, i] ~ Poisson(G_d * S(doy_d) * P_{dow_d}(t_i)), independently given G_d, where
    t_i = (i + 0.5) / 2 is the midpoint of interval i in hours and

    - weekday profile P(t) = 1 + 40 exp(-(t - 10)^2 / (2 * 1.5^2)) + 30 exp(-(t - 14.5)^2 / (2 * 1.5^2))
      (two peaks, 10:00 and 14:30; about 574 calls a day), weekend profile
      P(t) = 1 + 15 exp(-(t - 13)^2 / (2 * 3^2)) (one flat midday bump; about 274 calls a day);
    - season S(doy) = 1 + 0.25 cos(2 pi (doy - 15) / 365): highest mid-January, lowest mid-July (x0.75);
    - day multiplier G_d ~ Gamma(shape 20, scale 1/20) (mean 1, sd 0.224): days are busier or quieter
      as a whole, so daily totals are overdispersed relative to Poisson.

    ``arrivals_intensity(dow, doy)`` gives the mean S * P. Draws use numpy's default_rng(seed): first the
    n multipliers, then the counts. Returns counts (whole numbers) as a float tensor; with
    ``return_info=True`` returns (counts, {"day_of_week": int64 [n], "day_of_year": int64 [n]}).
    """
    n, seed = _check_int("n", n), _check_seed(seed)
    dtype, return_info = _check_dtype(dtype), _check_bool("return_info", return_info)
    day = torch.arange(n)
    info = {"day_of_week": day % 7, "day_of_year": day % 365}
    mean = arrivals_intensity(info["day_of_week"], info["day_of_year"]).numpy()
    rng = np.random.default_rng(seed)
    multiplier = rng.gamma(_ARRIVALS_GAMMA_SHAPE, 1.0 / _ARRIVALS_GAMMA_SHAPE, size=n)
    counts = rng.poisson(mean * multiplier[:, None])
    x = torch.from_numpy(counts.astype(np.float64)).reshape(n, ARRIVALS_INTERVALS).to(dtype)
    return (x, info) if return_info else x


# --- shapes --------------------------------------------------------------------------------------------
SHAPES_ATTRIBUTES: tuple[str, str, str, str] = ("shape", "size", "position", "fill")
SHAPES_VALUES: dict[str, tuple[str, str]] = {
    "shape": ("square", "circle"),
    "size": ("small", "large"),
    "position": ("left", "right"),
    "fill": ("solid", "outline"),
}
# Held out of training by ``shapes_split``: each attribute is 0 in two rows and 1 in two, and any two rows
# differ in >= 2 attributes, so every value, value pair and value triple still occurs among the other 12.
SHAPES_HELD_OUT: tuple[tuple[int, int, int, int], ...] = (
    (0, 0, 0, 1),  # small square, left, outline
    (0, 1, 1, 0),  # large square, right, solid
    (1, 0, 1, 0),  # small circle, right, solid
    (1, 1, 0, 1),  # large circle, left, outline
)
_SHAPES_PIXELS = 16  # images are _SHAPES_PIXELS x _SHAPES_PIXELS, pixel centres at 0, 1, ..., 15
_SHAPES_HALF_WIDTH = (2.5, 4.5)  # small, large: 5 and 9 px across before jitter
_SHAPES_SIZE_JITTER = 0.1  # half-width * U(0.9, 1.1)
_SHAPES_X = (4.5, 10.5)  # left, right centre x before jitter (3 px either side of the image centre 7.5)
_SHAPES_X_JITTER = 1.0  # at most, see shapes()
_SHAPES_STROKE = 1.25  # outline width in px
_SHAPES_INTENSITY = (0.7, 1.0)  # foreground intensity k: pixel = -1 + 2 k coverage
_SHAPES_CHUNK = 4096  # images rendered at a time (keeps the float64 temporaries in cache)


def shapes_combinations() -> torch.Tensor:
    """All 16 attribute combinations, int64 [16, 4] in binary order: row i holds the bits of i,
    attribute 0 ("shape") the most significant, so i = 8 shape + 4 size + 2 position + fill."""
    return (torch.arange(16).unsqueeze(1) >> torch.arange(3, -1, -1)) & 1


def _check_attribute_rows(name: str, value: object, min_rows: int = 0, unique: bool = False) -> torch.Tensor:
    """``value`` (tensor, array or nested sequence [rows, 4] of 0/1 ints or bools) as a new int64 tensor."""
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu()
    elif isinstance(value, (np.ndarray, list, tuple)):
        try:
            arr = np.asarray(value)
        except ValueError as e:  # ragged rows
            raise ValueError(f"{name} must have shape [rows, 4], got ragged rows ({e})") from e
        if arr.size == 0 and arr.ndim == 1:
            arr = np.zeros((0, len(SHAPES_ATTRIBUTES)), dtype=np.int64)  # () and [] (as float, shape (0,))
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold integers or bools (0/1), got array dtype {arr.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float64 if arr.dtype.kind == "f" else np.int64))
    else:
        raise TypeError(f"{name} must be a tensor [rows, 4] of 0/1, got {type(value).__name__}")
    if t.dtype.is_floating_point or t.dtype.is_complex:
        raise TypeError(f"{name} must hold integers or bools (0/1), got dtype {t.dtype}")
    if t.dim() != 2 or t.shape[1] != len(SHAPES_ATTRIBUTES):
        raise ValueError(f"{name} must have shape [rows, 4] (columns: {', '.join(SHAPES_ATTRIBUTES)}), got "
                         f"{tuple(t.shape)}")
    t = t.to(torch.int64, copy=True)
    bad = (t != 0) & (t != 1)
    if bad.any():
        raise ValueError(f"{name} must hold only 0 and 1, got {t[bad][0].item()}")
    if len(t) < min_rows:
        raise ValueError(f"{name} must have at least {min_rows} row(s), got {len(t)}")
    if unique and len(torch.unique(t, dim=0)) != len(t):
        raise ValueError(f"{name} has duplicate rows")
    return t


def _render_shapes(attrs: torch.Tensor, u: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Images [n, 1, 16, 16] of ``dtype`` for attributes [n, 4] and uniforms u [n, >= 4] (float64)."""
    n = len(attrs)
    small, large = _SHAPES_HALF_WIDTH
    x_left, x_right = _SHAPES_X
    k_lo, k_hi = _SHAPES_INTENSITY
    half = torch.where(attrs[:, 1] == 1, large, small).to(_F64) * (1 + _SHAPES_SIZE_JITTER * (2 * u[:, 0] - 1))
    # Horizontal jitter shrinks for large shapes so that every shape lies inside [-0.5, 15.5]^2.
    x_amp = (x_left + 0.5 - half).clamp(max=_SHAPES_X_JITTER)
    cx = torch.where(attrs[:, 2] == 1, x_right, x_left).to(_F64) + x_amp * (2 * u[:, 1] - 1)
    cy = (half - 0.5) + u[:, 2] * (_SHAPES_PIXELS - 2 * half)
    scale = 2 * (k_lo + (k_hi - k_lo) * u[:, 3])  # 2 k
    grid = torch.arange(_SHAPES_PIXELS, dtype=_F64)
    w = _SHAPES_STROKE
    out = torch.empty(n, 1, _SHAPES_PIXELS, _SHAPES_PIXELS, dtype=dtype)
    # One pass per (shape, fill) group, in chunks that keep the float64 temporaries in cache.
    for circle in (0, 1):
        for outline in (0, 1):
            group = torch.nonzero((attrs[:, 0] == circle) & (attrs[:, 3] == outline)).squeeze(1)
            for j in torch.split(group, _SHAPES_CHUNK):
                m = len(j)
                h = half[j].view(m, 1, 1)
                ax = (grid - cx[j].unsqueeze(1)).abs_()  # |x - cx|, [m, W]
                ay = (grid - cy[j].unsqueeze(1)).abs_()  # |y - cy|, [m, H]
                # Signed distance to the edge in px (negative inside): Euclidean for circles, Chebyshev
                # for squares.
                if circle:
                    d = (ax.square().unsqueeze(1) + ay.square().unsqueeze(2)).sqrt_().sub_(h)
                else:
                    d = torch.maximum(ax.unsqueeze(1), ay.unsqueeze(2)).sub_(h)
                # Coverage clamp(0.5 - d', 0, 1), a one-pixel ramp across the edge (anti-aliasing), with
                # d' = d for solid shapes and, for outlines, d' = |d + w/2| - w/2, the distance to the band
                # of width w just inside the edge.
                cov = (0.5 + w / 2) - d.add_(w / 2).abs_() if outline else 0.5 - d
                out[j, 0] = cov.clamp_(0.0, 1.0).mul_(scale[j].view(m, 1, 1)).sub_(1.0).to(dtype)
    return out


def shapes(
    n: int | None = None,
    seed: int = 0,
    attributes: torch.Tensor | None = None,
    combinations: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
    return_attributes: bool = True,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """[n, 1, 16, 16] grey images of one square or circle, in [-1, 1], with four binary attributes.

    Attributes (columns, in ``SHAPES_ATTRIBUTES`` order; names of the values in ``SHAPES_VALUES``):
    shape 0 square / 1 circle, size 0 small / 1 large, position 0 left / 1 right, fill 0 solid /
    1 outline. Which images:

    - ``attributes`` given (tensor [n, 4] of 0/1 ints or bools): exactly those; ``n`` is taken from it
      (an ``n`` that differs is a ValueError) and ``combinations`` must be None.
    - otherwise each image's attributes are drawn uniformly from the rows of ``combinations`` (int
      [C, 4] of 0/1, distinct rows; None: all 16, ``shapes_combinations()``); ``n`` defaults to 10000.

    Rendering, with pixel centres at x (column) and y (row) = 0..15 and per image uniforms u0..u3:

    - half-width h = h0 (1 + 0.1 (2 u0 - 1)), h0 = 2.5 small / 4.5 large (5 / 9 px across, +-10%);
      square side and circle diameter are 2 h;
    - centre x = x0 + a (2 u1 - 1), x0 = 4.5 left / 10.5 right, a = min(1, 5 - h) (+-1 px, less for
      large shapes, so the shape stays inside the image); centre y ~ U(h - 0.5, 15.5 - h);
    - signed distance d (px, negative inside) to the edge: sqrt(dx^2 + dy^2) - h for circles,
      max(|dx|, |dy|) - h for (axis-aligned) squares; outlines use |d + 0.625| - 0.625 (a 1.25 px stroke
      inside the edge);
    - pixel = -1 + 2 k clamp(0.5 - d, 0, 1): background -1, foreground intensity k = 0.7 + 0.3 u3 (so
      2 k - 1 in [0.4, 1]), a one-pixel anti-aliased edge.

    Draws: u = torch.rand(n, 5) from torch.Generator().manual_seed(seed), one row per image: u0..u3 as
    above, and (without ``attributes``) u4 picks row floor(C u4) of ``combinations``. So the first m
    images for any n >= m are the images for n = m, and as u does not depend on the attributes,
    ``shapes(seed=s, attributes=a)`` with the attributes a of ``shapes(n, seed=s)`` gives the same
    images, and editing a column of a gives the same images with that attribute changed.

    Returns (images, attributes int64 [n, 4]), or the images only with ``return_attributes=False``.
    """
    seed = _check_seed(seed)
    dtype, return_attributes = _check_dtype(dtype), _check_bool("return_attributes", return_attributes)
    if n is not None:
        n = _check_int("n", n)
    if attributes is not None:
        if combinations is not None:
            raise ValueError("pass attributes or combinations, not both (combinations only restricts drawn "
                             "attributes)")
        attrs = _check_attribute_rows("attributes", attributes)
        if n is not None and n != len(attrs):
            raise ValueError(f"n = {n} does not match attributes, which has {len(attrs)} rows (n may be left "
                             f"out: it is taken from attributes)")
        n = len(attrs)
    else:
        n = 10000 if n is None else n
        combos = (shapes_combinations() if combinations is None
                  else _check_attribute_rows("combinations", combinations, min_rows=1, unique=True))
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, 5, generator=g, dtype=_F64)
    if attributes is None:
        attrs = combos[(u[:, 4] * len(combos)).long().clamp_max(len(combos) - 1)]
    images = _render_shapes(attrs, u, dtype)
    return (images, attrs) if return_attributes else images


class ShapesSplit(NamedTuple):
    """The result of ``shapes_split``."""

    train_images: torch.Tensor  # [n_train, 1, 16, 16], attributes drawn uniformly from `seen`
    train_attributes: torch.Tensor  # int64 [n_train, 4]
    test_images: torch.Tensor  # [n_test, 1, 16, 16], attributes drawn uniformly from `held_out`
    test_attributes: torch.Tensor  # int64 [n_test, 4]
    seen: torch.Tensor  # int64 [16 - H, 4], the combinations not held out, in binary order
    held_out: torch.Tensor  # int64 [H, 4], the held-out combinations, in binary order


def shapes_split(
    n_train: int,
    n_test: int,
    seed: int = 0,
    held_out: torch.Tensor | tuple[tuple[int, ...], ...] = SHAPES_HELD_OUT,
    dtype: torch.dtype = torch.float32,
) -> ShapesSplit:
    """A compositional split of ``shapes``: training images from the combinations not in ``held_out``,
    test images from the held-out ones only.

    ``held_out``: 1 to 15 distinct rows of 0/1 (default ``SHAPES_HELD_OUT``, 4 combinations whose
    complement still holds every attribute value, value pair and value triple). Train and test come from
    ``shapes(n_train, seed_train, combinations=seen)`` and ``shapes(n_test, seed_test,
    combinations=held_out)`` with seed_train, seed_test the two children of
    numpy.random.SeedSequence(seed).spawn(2) (63-bit), so they are independent streams and neither
    depends on the other's size. Returns a ``ShapesSplit`` (train_images, train_attributes, test_images,
    test_attributes, seen, held_out).
    """
    n_train, n_test, seed = _check_int("n_train", n_train), _check_int("n_test", n_test), _check_seed(seed)
    dtype = _check_dtype(dtype)
    held = _check_attribute_rows("held_out", held_out, min_rows=1, unique=True)
    if len(held) >= 16:
        raise ValueError("held_out must leave at least one combination seen, got all 16")
    combos = shapes_combinations()
    is_held = (combos.unsqueeze(1) == held.unsqueeze(0)).all(dim=2).any(dim=1)
    seen, held = combos[~is_held], combos[is_held]
    seed_train, seed_test = (int(child.generate_state(1, np.uint64)[0] >> np.uint64(1))
                             for child in np.random.SeedSequence(seed).spawn(2))
    train_images, train_attributes = shapes(n_train, seed_train, combinations=seen, dtype=dtype)
    test_images, test_attributes = shapes(n_test, seed_test, combinations=held, dtype=dtype)
    return ShapesSplit(train_images, train_attributes, test_images, test_attributes, seen, held)


# --- registry ------------------------------------------------------------------------------------------
DATASETS: dict[str, Callable[..., torch.Tensor]] = {
    "gmm1d": gmm1d,
    "ring2d": ring2d,
    "moons": moons,
    "anisotropic": anisotropic,
    "digits": digits,
    "arrivals": arrivals,
    "shapes": functools.partial(shapes, return_attributes=False),  # the images only
}


def get_dataset(name: str, **kwargs: object) -> torch.Tensor:
    """The data tensor of the built-in dataset ``name`` (a key of ``DATASETS``), called with ``kwargs``.

    Always a tensor (for "digits" and "shapes" the images only): to get labels, calendar info or
    attributes call the function itself, e.g. ``digits(return_labels=True)``, ``shapes(n)``.
    """
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a str, got {type(name).__name__}")
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(sorted(DATASETS))}")
    extras = sorted({"return_labels", "return_info", "return_attributes"} & kwargs.keys())
    if extras:
        raise ValueError(f"get_dataset returns the data tensor only; for {', '.join(extras)} call "
                         f"mixdiff_ext.data.{name}(...) directly")
    return DATASETS[name](**kwargs)


# --- user data -----------------------------------------------------------------------------------------
_SUPPORTED = (".npy", ".npz", ".csv", ".pt")


def _from_npz(path: str, npz: np.lib.npyio.NpzFile, key: str | None) -> np.ndarray:
    keys = list(npz.files)
    if key is not None:
        if key not in keys:
            raise ValueError(f"{path}: no array named {key!r}; keys: {keys}")
        return npz[key]
    if not keys:
        raise ValueError(f"{path}: empty file (the archive holds no arrays)")
    if len(keys) == 1:
        return npz[keys[0]]
    for preferred in ("x", "data"):
        if preferred in keys:
            return npz[preferred]
    raise ValueError(f"{path}: ambiguous: {len(keys)} arrays {keys} and none named 'x' or 'data'; "
                     f"pass key=")


def _parse_float(field: str) -> float | None:
    try:
        return float(field)
    except ValueError:
        return None


def _read_csv(path: str) -> np.ndarray:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            lines = [(i + 1, row) for i, row in enumerate(csv.reader(f)) if any(c.strip() for c in row)]
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: non-numeric content (not UTF-8 text: {e})") from e
    if not lines:
        raise ValueError(f"{path}: empty file (no data lines)")
    # A header is a first line with no numeric field: a data line with one typo is then reported, not
    # silently skipped as a header.
    if all(_parse_float(c) is None for c in lines[0][1]):
        lines = lines[1:]
    if not lines:
        raise ValueError(f"{path}: zero rows (only a header line)")
    width = len(lines[0][1])
    values = np.empty((len(lines), width), dtype=np.float64)
    for r, (lineno, row) in enumerate(lines):
        if len(row) != width:
            raise ValueError(f"{path}: line {lineno} has {len(row)} fields, expected {width}")
        for j, c in enumerate(row):
            v = _parse_float(c)
            if v is None:
                raise ValueError(f"{path}: non-numeric value {c.strip()!r} at line {lineno}, column {j + 1}")
            values[r, j] = v
    return values


def _read_file(path: str, ext: str, key: str | None) -> np.ndarray | torch.Tensor:
    try:
        if ext == ".csv":
            return _read_csv(path)
        if ext == ".pt":
            obj = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(obj, torch.Tensor):
                raise ValueError(f"{path}: non-numeric content: holds a {type(obj).__name__}, expected a "
                                 f"single tensor")
            return obj.detach()
        with open(path, "rb") as f:
            magic = f.read(6)
        # np.load takes anything without a numpy or zip header for a pickle: say what is wrong instead.
        if magic != b"\x93NUMPY" and not magic.startswith(b"PK"):
            raise ValueError(f"{path}: could not be read as {ext} (no .npy or .npz header)")
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                return _from_npz(path, loaded, key)
        return loaded
    except FileNotFoundError:
        raise
    except ValueError as e:
        if str(e).startswith(f"{path}:"):
            raise
        # np.load refuses object arrays ("allow_pickle=False"): those are not numeric data.
        raise ValueError(f"{path}: non-numeric or unreadable content ({e})") from e
    except Exception as e:  # corrupt files surface as many types (UnpicklingError, EOFError, BadZipFile, ...)
        raise ValueError(f"{path}: could not be read as {ext} ({type(e).__name__}: {e})") from e


def load_array(
    path: str | os.PathLike, dtype: torch.dtype = torch.float32, key: str | None = None
) -> torch.Tensor:
    """Load user data as a tensor [N, D] (vectors) or [N, C, H, W] (images).

    Formats, chosen by the (case-insensitive) extension:

    - ``.npy``: one array (no pickled objects).
    - ``.npz``: the array named ``key`` if given; else the only array; else the one named ``x``; else the
      one named ``data``; otherwise ValueError listing the keys.
    - ``.csv``: comma-separated numbers, one sample per line, giving [N, D]. The first non-blank line is a
      header (skipped) if none of its fields is a number; blank lines are skipped.
    - ``.pt``: a single tensor saved with ``torch.save``, loaded with ``torch.load(weights_only=True)``.

    Shapes: 2-D [N, D] and 4-D [N, C, H, W] are returned as they are; 3-D [N, H, W] is taken as
    single-channel images and returned as [N, 1, H, W]. Values are cast to ``dtype`` but not rescaled
    (see ``as_image_tensor`` for images).

    Raises FileNotFoundError for a missing file, and ValueError naming the file for: an unsupported
    extension, an empty file or zero rows (or any zero-size dimension), non-numeric content (text,
    strings, objects, complex numbers), NaN or infinite values (with their count and the first row that
    has one), and any other number of dimensions.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    dtype = _check_dtype(dtype)
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in _SUPPORTED:
        raise ValueError(f"{path}: unsupported extension {ext or '(none)'!r}; supported: {', '.join(_SUPPORTED)}")
    if key is not None and ext != ".npz":
        raise ValueError(f"{path}: key= applies only to .npz files")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path}: empty file")

    data = _read_file(path, ext, key)
    if isinstance(data, np.ndarray):
        if data.dtype.kind not in "biuf":
            raise ValueError(f"{path}: non-numeric content (array dtype {data.dtype})")
        # torch has every numpy float width (in native byte order); other kinds go through float64, exact
        # for bool and for integers up to 2**53.
        native = data.dtype.newbyteorder("=") if data.dtype.kind == "f" else np.float64
        data = torch.from_numpy(np.ascontiguousarray(data, dtype=native))
    elif data.dtype.is_complex or data.dtype in (torch.quint8, torch.qint8, torch.qint32):
        raise ValueError(f"{path}: non-numeric content (tensor dtype {data.dtype})")

    shape = tuple(data.shape)
    if data.dim() not in (2, 3, 4):
        raise ValueError(f"{path}: wrong number of dimensions: shape {shape} has {data.dim()}; expected "
                         f"2-D [N, D], 3-D [N, H, W] or 4-D [N, C, H, W]")
    if shape[0] == 0:
        raise ValueError(f"{path}: zero rows (shape {shape})")
    if 0 in shape:
        raise ValueError(f"{path}: empty: shape {shape} has a zero-size dimension")
    if data.is_floating_point():
        bad = ~torch.isfinite(data)
        if bad.any():
            n_nan = int(torch.isnan(data).sum())
            first = int(torch.nonzero(bad.reshape(shape[0], -1).any(dim=1))[0, 0])
            raise ValueError(f"{path}: {int(bad.sum())} non-finite values ({n_nan} NaN, "
                             f"{int(bad.sum()) - n_nan} inf); first in row {first}")
    if data.dim() == 3:
        data = data.unsqueeze(1)
    return data.to(dtype).contiguous()


def as_image_tensor(
    x: np.ndarray | torch.Tensor,
    value_range: tuple[float, float] | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Images [N, H, W] or [N, C, H, W] (array or tensor) as a float tensor [N, C, H, W] in [-1, 1].

    ``value_range=(lo, hi)`` maps lo -> -1 and hi -> +1 linearly (values outside are a ValueError, not
    clipped). Without it, uint8 data use (0, 255) and anything else must already lie in [-1, 1].
    Channels-last data [N, H, W, C] must be permuted first (``x.permute(0, 3, 1, 2)``): the layout is not
    guessed.
    """
    dtype = _check_dtype(dtype)
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "biuf":
            raise TypeError(f"images must be numeric, got array dtype {x.dtype}")
        is_uint8 = x.dtype == np.uint8
        t = torch.from_numpy(np.asarray(x, dtype=np.float64))
    elif isinstance(x, torch.Tensor):
        if x.dtype.is_complex:
            raise TypeError(f"images must be real, got tensor dtype {x.dtype}")
        is_uint8 = x.dtype == torch.uint8
        t = x.detach().to("cpu", _F64)
    else:
        raise TypeError(f"images must be a numpy array or torch tensor, got {type(x).__name__}")
    if t.dim() not in (3, 4):
        raise ValueError(f"images must be [N, H, W] or [N, C, H, W], got shape {tuple(t.shape)}")
    if t.dim() == 3:
        t = t.unsqueeze(1)
    if not bool(torch.isfinite(t).all()):
        raise ValueError("images contain NaN or inf values")
    if value_range is None:
        value_range = (0.0, 255.0) if is_uint8 else (-1.0, 1.0)
    lo, hi = (float(v) for v in value_range)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"value_range must be finite (lo, hi) with lo < hi, got {value_range}")
    if t.numel() and (t.min() < lo or t.max() > hi):
        raise ValueError(f"image values span [{t.min().item():g}, {t.max().item():g}], outside value_range "
                         f"({lo:g}, {hi:g}); pass value_range=(lo, hi)")
    return (2.0 * (t - lo) / (hi - lo) - 1.0).to(dtype)
