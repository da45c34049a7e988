"""Sample-quality metrics: compare generated samples with reference data.

Every metric takes torch tensors or numpy arrays (converted to float64 on the CPU; NaN / inf, empty
inputs and shape mismatches raise ValueError, other types TypeError) and returns Python numbers.

One-dimensional samples, shaped [N] or [N, 1]:

* ``ks_statistic(x, y)``: two-sample Kolmogorov-Smirnov statistic sup_t |F_x(t) - F_y(t)| of the
  empirical CDFs (``scipy.stats.ks_2samp``); in [0, 1].
* ``wasserstein1(x, y)``: W1 = integral |F_x(t) - F_y(t)| dt (``scipy.stats.wasserstein_distance``).

Vectors, shaped [N, D] ([N] counts as D = 1):

* ``sliced_wasserstein(x, y, projections, seed, p)``: SW_p = (mean_theta W_p^p(theta.x, theta.y))^(1/p)
  over `projections` directions theta drawn uniformly on the unit sphere (normalised Gaussians from a
  seeded torch.Generator). Each 1-D W_p^p = integral_0^1 |Q_x(u) - Q_y(u)|^p du is computed exactly for
  the two empirical quantile functions Q (step functions with steps at i/N and j/M), so N != M needs no
  interpolation. For a pure shift y = x + v every projection gives |theta.v|, hence
  SW_2^2 = E(theta.v)^2 = |v|^2 / D.
* ``mmd_rbf(x, y, bandwidth, chunk)``: unbiased estimate of the squared maximum mean discrepancy with
  the kernel k(a, b) = exp(-|a - b|^2 / (2 bandwidth^2)):
  MMD_u^2 = sum_{i!=j} k(x_i, x_j) / (N (N-1)) + sum_{i!=j} k(y_i, y_j) / (M (M-1))
  - 2 sum_{i,j} k(x_i, y_j) / (N M). Its expectation is MMD^2 >= 0, so a single estimate can be slightly
  negative when the distributions agree. bandwidth=None takes the median heuristic: the median
  pairwise distance of (a seeded subsample of) the pooled points.

Images of sklearn digits, shaped [N, 1, 8, 8] or [N, 64], values in [-1, 1], judged through the
features of a small CNN classifier trained on the digits by this module (``digits_classifier``):

* ``frechet_distance(x, y)``: the Frechet distance between Gaussian fits (mean, covariance) of the
  classifier's penultimate-layer features (64-D), |mu_x - mu_y|^2 + tr(S_x + S_y - 2 (S_x S_y)^(1/2))
  (``gaussian_frechet_distance``); the digits' answer to FID.
* ``class_histogram(images)``: counts of the classifier's predicted classes, int64 [10].
* ``mode_coverage(images, min_fraction)``: how many of the 10 classes receive at least `min_fraction`
  of the predictions.

``evaluate(samples, reference)`` picks the metrics from the data's shape (for a CLI).
"""
from __future__ import annotations

import os
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_real

__all__ = [
    "DIGITS_CLASSIFIER_VERSION",
    "KINDS",
    "DIGITS_MIN_ACCURACY",
    "DigitsCNN",
    "class_histogram",
    "digits_classifier",
    "evaluate",
    "frechet_distance",
    "gaussian_frechet_distance",
    "ks_statistic",
    "median_bandwidth",
    "mmd_rbf",
    "mode_coverage",
    "sliced_wasserstein",
    "wasserstein1",
]

F64 = torch.float64

# Bound on the float64 elements of one chunk of projected samples in sliced_wasserstein (32 MiB).
_SW_CHUNK_ELEMENTS = 1 << 22
# Pooled points whose pairwise distances feed the median heuristic (1000 points: ~5e5 pairs, 8 MB).
_MEDIAN_SUBSAMPLE = 1000
# Images per classifier forward pass, so that feature extraction memory does not grow with N.
_FEATURE_BATCH = 2048


# --------------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------------
def _as_float64(x, name: str) -> torch.Tensor:
    """x as a float64 CPU tensor; rejects other types, bool / complex data, empty and non-finite input."""
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "iuf":
            raise TypeError(f"{name} must hold real numbers, got numpy dtype {x.dtype}")
        x = torch.from_numpy(np.asarray(x, dtype=np.float64))
    elif not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")
    if x.dtype == torch.bool or x.is_complex():
        raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")
    x = x.detach().to("cpu", F64)
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return x


def _as_1d(x, name: str) -> torch.Tensor:
    x = _as_float64(x, name)
    if x.dim() == 2 and x.shape[1] == 1:
        x = x[:, 0]
    if x.dim() != 1:
        raise ValueError(f"{name} must be shaped [N] or [N, 1], got {tuple(x.shape)}")
    return x


def _as_points(x, name: str, min_rows: int = 1) -> torch.Tensor:
    x = _as_float64(x, name)
    if x.dim() == 1:
        x = x[:, None]
    if x.dim() != 2:
        raise ValueError(f"{name} must be shaped [N, D] (or [N]), got {tuple(x.shape)}")
    if x.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows, got {x.shape[0]}")
    return x


def _same_dim(x: torch.Tensor, y: torch.Tensor, xname: str, yname: str) -> None:
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"{xname} and {yname} must have the same dimension, got {x.shape[1]} and {y.shape[1]}")


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def _seed(value, name: str = "seed") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if not 0 <= value < 2**63:
        raise ValueError(f"{name} must be in [0, 2**63), got {value}")
    return int(value)


# --------------------------------------------------------------------------------------------------
# 1-D
# --------------------------------------------------------------------------------------------------
def ks_statistic(x, y) -> float:
    """Two-sample Kolmogorov-Smirnov statistic sup_t |F_x(t) - F_y(t)|; x, y shaped [N] / [N, 1]."""
    from scipy.stats import ks_2samp

    x, y = _as_1d(x, "x"), _as_1d(y, "y")
    return float(ks_2samp(x.numpy(), y.numpy()).statistic)


def wasserstein1(x, y) -> float:
    """1-Wasserstein (earth mover's) distance between the empirical distributions of x and y."""
    from scipy.stats import wasserstein_distance

    x, y = _as_1d(x, "x"), _as_1d(y, "y")
    return float(wasserstein_distance(x.numpy(), y.numpy()))


# --------------------------------------------------------------------------------------------------
# n-D
# --------------------------------------------------------------------------------------------------
def _quantile_grid(n: int, m: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pieces on which both empirical quantile functions are constant: (index into sorted x, index into
    sorted y, piece length). Breakpoints i/n and j/m are kept as integers i*m, j*n over the common
    denominator n*m, so the indices are exact (floor of the piece midpoint times n, resp. m)."""
    if n == m:  # common case: the i-th order statistics pair up (skips a sort of n + m breakpoints)
        idx = torch.arange(n)
        return idx, idx, torch.full((n,), 1.0 / n, dtype=F64)
    ends = torch.unique(torch.cat([torch.arange(1, n + 1) * m, torch.arange(1, m + 1) * n]))  # sorted
    starts = torch.cat([ends.new_zeros(1), ends[:-1]])
    mid2 = starts + ends  # twice the midpoint, in units of 1 / (n m)
    return mid2 // (2 * m), mid2 // (2 * n), (ends - starts).to(F64) / (n * m)


def sliced_wasserstein(
    x, y, projections: int = 256, seed: int = 0, p: float = 2, *, chunk: int | None = None
) -> float:
    """Sliced p-Wasserstein distance SW_p between the point clouds x [N, D] and y [M, D].

    Directions are normalised standard normals from torch.Generator().manual_seed(seed), drawn all at
    once (so the result does not depend on `chunk`). The 1-D distances are exact for empirical
    measures of any sizes N, M (see the module docstring). Projections are processed `chunk` at a time
    (default: as many as keep one chunk of projected samples within 2**22 float64 elements), so memory
    is O((N + M) D) for the float64 copies of the inputs plus O((N + M) chunk), never O(N M).
    """
    x, y = _as_points(x, "x"), _as_points(y, "y")
    _same_dim(x, y, "x", "y")
    projections = _positive_int(projections, "projections")
    p = check_real(p, "p")
    if p < 1:
        raise ValueError(f"p must be >= 1, got {p}")
    n, m = x.shape[0], y.shape[0]
    if chunk is None:
        chunk = max(1, _SW_CHUNK_ELEMENTS // (n + m))
    chunk = min(_positive_int(chunk, "chunk"), projections)

    g = torch.Generator().manual_seed(_seed(seed))
    theta = torch.randn(projections, x.shape[1], generator=g, dtype=F64)
    theta = theta / theta.norm(dim=1, keepdim=True)
    ix, iy, w = _quantile_grid(n, m)

    total = 0.0
    for start in range(0, projections, chunk):
        t = theta[start : start + chunk]
        # [chunk, N] rows, sorted along the contiguous last dimension.
        qx = torch.sort(t @ x.T, dim=1).values
        qy = torch.sort(t @ y.T, dim=1).values
        # Gathered quantiles, differenced in place: two [chunk, <= N + M] buffers at a time.
        diff = qx[:, ix].sub_(qy[:, iy]).abs_().pow_(p)
        total += float((diff @ w).sum())
    return (total / projections) ** (1.0 / p)


def median_bandwidth(x, y, seed: int = 0) -> float:
    """Median heuristic for the RBF bandwidth: the median distance between distinct pooled points.

    With more than 1000 pooled points the median is taken over a random subsample of 1000 of them
    (torch.Generator().manual_seed(seed)). If that median is 0 (many duplicates) the median of the
    positive distances is used; if all points coincide, 1.0 (any bandwidth then gives MMD 0).
    """
    x, y = _as_points(x, "x"), _as_points(y, "y")
    _same_dim(x, y, "x", "y")
    return _median_bandwidth(x, y, _seed(seed))


def _median_bandwidth(x: torch.Tensor, y: torch.Tensor, seed: int) -> float:
    z = torch.cat([x, y])
    if z.shape[0] > _MEDIAN_SUBSAMPLE:
        g = torch.Generator().manual_seed(seed)
        z = z[torch.randperm(z.shape[0], generator=g)[:_MEDIAN_SUBSAMPLE]]
    d = torch.pdist(z)  # distinct pairs i < j
    if d.numel() == 0:
        return 1.0
    med = float(d.median())
    if med > 0:
        return med
    positive = d[d > 0]
    return float(positive.median()) if positive.numel() else 1.0


def _kernel_sum(a: torch.Tensor, b: torch.Tensor, gamma: float, chunk: int, same: bool) -> float:
    """sum_{i,j} exp(-gamma |a_i - b_j|^2), over i != j when `same` (a is b), in chunk x chunk blocks.

    For `same` only blocks on or above the diagonal are evaluated (the sum is symmetric) and the
    diagonal, whose exact kernel value is 1, is dropped rather than trusted to rounding.
    """
    a2 = (a * a).sum(dim=1)
    b2 = a2 if same else (b * b).sum(dim=1)
    total = 0.0
    for i in range(0, a.shape[0], chunk):
        ai, ai2 = a[i : i + chunk], a2[i : i + chunk]
        for j in range(i if same else 0, b.shape[0], chunk):
            # |a|^2 + |b|^2 - 2 a.b, built in one [chunk, chunk] buffer, clamped against cancellation.
            k = torch.addmm(b2[None, j : j + chunk], ai, b[j : j + chunk].T, alpha=-2.0)
            k.add_(ai2[:, None]).clamp_(min=0.0).mul_(-gamma).exp_()
            if same and i == j:
                k.diagonal().zero_()
            total += float(k.sum()) * (2.0 if same and j != i else 1.0)
    return total


def mmd_rbf(x, y, bandwidth: float | None = None, chunk: int = 4096, *, seed: int = 0) -> float:
    """Unbiased squared MMD between x [N, D] and y [M, D] (N, M >= 2) with an RBF kernel.

    k(a, b) = exp(-|a - b|^2 / (2 bandwidth^2)); bandwidth=None uses `median_bandwidth(x, y, seed)`.
    Kernel sums run over chunk x chunk blocks (peak extra memory ~ 8 chunk^2 bytes), so N = 1e5 needs
    no N^2 memory; the cost is still O((N + M)^2 D) time. The data are centred on the pooled mean
    first, which leaves distances unchanged but reduces cancellation in |a|^2 + |b|^2 - 2 a.b.
    """
    x, y = _as_points(x, "x", min_rows=2), _as_points(y, "y", min_rows=2)
    _same_dim(x, y, "x", "y")
    chunk = _positive_int(chunk, "chunk")
    if bandwidth is None:
        bandwidth = _median_bandwidth(x, y, _seed(seed))
    else:
        bandwidth = check_real(bandwidth, "bandwidth")
        if bandwidth <= 0:
            raise ValueError(f"bandwidth must be > 0, got {bandwidth}")
    gamma = 1.0 / (2.0 * bandwidth * bandwidth)
    n, m = x.shape[0], y.shape[0]
    center = (x.sum(dim=0) + y.sum(dim=0)) / (n + m)
    x, y = x - center, y - center
    kxx = _kernel_sum(x, x, gamma, chunk, same=True) / (n * (n - 1))
    kyy = _kernel_sum(y, y, gamma, chunk, same=True) / (m * (m - 1))
    kxy = _kernel_sum(x, y, gamma, chunk, same=False) / (n * m)
    return kxx + kyy - 2.0 * kxy


# --------------------------------------------------------------------------------------------------
# digits classifier
# --------------------------------------------------------------------------------------------------
# Bump when the architecture, data split or training recipe changes: it names the cache file, so old
# weights are never loaded into a different model.
DIGITS_CLASSIFIER_VERSION = "v1"
# Guaranteed accuracy on the held-out 20% split (training raises below it); v1 reaches about 0.986.
DIGITS_MIN_ACCURACY = 0.95

_SPLIT_SEED = 0
_INIT_SEED = 0
_ORDER_SEED = 1
_EPOCHS = 10
_BATCH = 64
_LR = 3e-3

_CLASSIFIER_STATES: dict[str, dict[str, torch.Tensor]] = {}  # cache file path -> CPU state_dict
_CLASSIFIER_LOCK = threading.Lock()


class DigitsCNN(nn.Module):
    """Two 3x3 conv layers (16, 32 channels), 2x2 max-pool, a 64-unit hidden layer (the features used
    by frechet_distance) and a 10-way linear head. Input [N, 1, 8, 8] in [-1, 1]."""

    feature_dim = 64

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32 * 4 * 4, self.feature_dim)
        self.head = nn.Linear(self.feature_dim, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv1(x))
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        return F.relu(self.fc(h.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _heldout_split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, held-out indices): a fixed random 20% of the n digits is held out."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(_SPLIT_SEED))
    n_test = (n + 4) // 5
    return perm[n_test:], perm[:n_test]


def _accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(images).argmax(dim=1) == labels).double().mean().item()


def _train_digits_classifier() -> tuple[dict[str, torch.Tensor], float]:
    """Train DigitsCNN on the fixed 80% split: (CPU state_dict, held-out accuracy).

    Deterministic: weights come from a forked, seeded global RNG (the caller's RNG state is untouched),
    minibatch order from a seeded generator, fixed epochs, Adam; only ops that are deterministic on the
    CPU (allowed under torch.use_deterministic_algorithms(True)). It runs on one thread (restored
    afterwards): reductions then do not depend on the machine's core count, and a network this small
    gains nothing from threads (on a loaded 2-core machine it ran ~10x faster than with 2 threads).
    About 1-2 s of CPU time; the disk cache makes later runs reuse the first result anyway.
    """
    from .data import digits

    images, labels = digits(return_labels=True)
    images, labels = images.to("cpu", torch.float32), labels.to("cpu", torch.int64)
    train, test = _heldout_split(images.shape[0])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_INIT_SEED)
        model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=_LR)
    order = torch.Generator().manual_seed(_ORDER_SEED)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model.train()
        for _ in range(_EPOCHS):
            perm = train[torch.randperm(train.numel(), generator=order)]
            for start in range(0, perm.numel(), _BATCH):
                batch = perm[start : start + _BATCH]
                loss = F.cross_entropy(model(images[batch]), labels[batch])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        model.eval()
        acc = _accuracy(model, images[test], labels[test])
    finally:
        torch.set_num_threads(threads)
    if acc < DIGITS_MIN_ACCURACY:
        raise RuntimeError(f"digits classifier: held-out accuracy {acc:.4f} < {DIGITS_MIN_ACCURACY}")
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, acc


def _from_state(state: dict[str, torch.Tensor]) -> DigitsCNN:
    """A DigitsCNN holding copies of `state`. Built on the meta device: a normal construction would
    draw a random initialisation from (and so advance) the caller's global RNG."""
    with torch.device("meta"):
        model = DigitsCNN()
    model.load_state_dict({k: v.clone() for k, v in state.items()}, assign=True)
    return model


def _default_cache_dir() -> Path:
    env = os.environ.get("MIXDIFF_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "mixdiff_ext"


def _load_cached_state(path: Path) -> dict[str, torch.Tensor] | None:
    """The state_dict saved at path, or None if there is none or it is unusable (then it is retrained)."""
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if blob.get("version") != DIGITS_CLASSIFIER_VERSION:
            raise ValueError(f"version {blob.get('version')!r} != {DIGITS_CLASSIFIER_VERSION!r}")
        state = blob["state_dict"]
        _from_state(state)  # strict load: checks every key and shape
        return state
    except Exception as err:  # any unreadable cache (truncated, foreign, old) is rebuilt, not fatal
        warnings.warn(f"ignoring digits classifier cache {path}: {err}", RuntimeWarning, stacklevel=3)
        return None


def _save_state(path: Path, state: dict[str, torch.Tensor], accuracy: float) -> None:
    """Write atomically (temporary file in the same directory, then os.replace), so concurrent
    processes never read a partial file. A failure (read-only home, full disk) only warns."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            blob = {"version": DIGITS_CLASSIFIER_VERSION, "state_dict": state, "heldout_accuracy": accuracy}
            torch.save(blob, f)
        os.replace(tmp, path)
        tmp = None
    except (OSError, RuntimeError) as err:  # torch.save reports write failures as RuntimeError
        warnings.warn(f"could not cache the digits classifier at {path}: {err}", RuntimeWarning, stacklevel=3)
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


def digits_classifier(
    cache_dir: str | os.PathLike | None = None, device: str | torch.device = "cpu"
) -> DigitsCNN:
    """A trained DigitsCNN in eval mode on `device` (a fresh module each call, safe to modify).

    The weights are trained once (see _train_digits_classifier; held-out accuracy >= DIGITS_MIN_ACCURACY
    on a fixed 20% split) and cached as <cache_dir>/digits_cnn_<DIGITS_CLASSIFIER_VERSION>.pt, where
    cache_dir defaults to $MIXDIFF_CACHE or ~/.cache/mixdiff_ext; within a process they are also kept
    in memory, keyed by that path. Loading uses torch.load(weights_only=True).
    """
    path = (Path(cache_dir) if cache_dir is not None else _default_cache_dir()).expanduser()
    path = path.resolve() / f"digits_cnn_{DIGITS_CLASSIFIER_VERSION}.pt"
    key = str(path)
    with _CLASSIFIER_LOCK:
        state = _CLASSIFIER_STATES.get(key)
        if state is None:
            state = _load_cached_state(path)
            if state is None:
                state, accuracy = _train_digits_classifier()
                _save_state(path, state, accuracy)
            _CLASSIFIER_STATES[key] = state
    return _from_state(state).to(device).eval()


# --------------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------------
def _as_images(x, name: str, min_rows: int = 1) -> torch.Tensor:
    x = _as_float64(x, name)
    if x.dim() == 2 and x.shape[1] == 64:
        x = x.reshape(-1, 1, 8, 8)
    if x.dim() != 4 or tuple(x.shape[1:]) != (1, 8, 8):
        raise ValueError(f"{name} must be shaped [N, 1, 8, 8] or [N, 64], got {tuple(x.shape)}")
    if x.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} images, got {x.shape[0]}")
    return x


def _check_classifier(classifier) -> nn.Module:
    if classifier is None:
        return digits_classifier()
    if not isinstance(classifier, nn.Module) or not callable(getattr(classifier, "features", None)):
        raise TypeError(
            f"classifier must be a torch.nn.Module with a features() method, got {type(classifier).__name__}"
        )
    return classifier


def _run(classifier: nn.Module, images: torch.Tensor, features: bool) -> torch.Tensor:
    """Penultimate features (features=True) or logits of the images, in float64 on the CPU."""
    param = next(classifier.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    fn = classifier.features if features else classifier
    out = []
    with torch.no_grad():
        for start in range(0, images.shape[0], _FEATURE_BATCH):
            batch = images[start : start + _FEATURE_BATCH].to(device, dtype)
            out.append(fn(batch).to("cpu", F64))
    return torch.cat(out)


def _symmetric_sqrt(a: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric PSD matrix by eigendecomposition; negative round-off eigenvalues -> 0."""
    evals, evecs = torch.linalg.eigh(a)
    return (evecs * evals.clamp(min=0).sqrt()) @ evecs.T


def gaussian_frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """Frechet (2-Wasserstein squared) distance between N(mu1, cov1) and N(mu2, cov2):

        |mu1 - mu2|^2 + tr(cov1) + tr(cov2) - 2 tr((cov1 cov2)^(1/2)).

    Numerics, all in float64: tr((cov1 cov2)^(1/2)) is the sum of square roots of the eigenvalues of
    the symmetric PSD matrix cov1^(1/2) cov2 cov1^(1/2) (same spectrum as cov1 cov2), so only symmetric
    eigendecompositions are needed: no complex parts to discard as with scipy.linalg.sqrtm, and
    singular covariances (fewer samples than features) are fine. Negative round-off eigenvalues are
    clipped to 0 and the result to >= 0 (its true value).
    """
    mu1, mu2 = _as_float64(mu1, "mu1"), _as_float64(mu2, "mu2")
    cov1, cov2 = _as_float64(cov1, "cov1"), _as_float64(cov2, "cov2")
    if mu1.dim() != 1 or mu2.shape != mu1.shape:
        raise ValueError(
            f"mu1 and mu2 must be vectors of the same length, got {tuple(mu1.shape)} and {tuple(mu2.shape)}"
        )
    d = mu1.shape[0]
    for name, c in (("cov1", cov1), ("cov2", cov2)):
        if c.shape != (d, d):
            raise ValueError(f"{name} must be shaped [{d}, {d}], got {tuple(c.shape)}")
    cov1, cov2 = 0.5 * (cov1 + cov1.T), 0.5 * (cov2 + cov2.T)
    s1 = _symmetric_sqrt(cov1)
    inner = s1 @ cov2 @ s1
    tr_sqrt = torch.linalg.eigvalsh(0.5 * (inner + inner.T)).clamp(min=0).sqrt().sum()
    fd = (mu1 - mu2).square().sum() + cov1.trace() + cov2.trace() - 2.0 * tr_sqrt
    return max(float(fd), 0.0)


def _gaussian_fit(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    d = features.shape[1]
    return features.mean(dim=0), torch.cov(features.T, correction=1).reshape(d, d)  # cov drops dims for d = 1


def frechet_distance(x_images, y_images, classifier: nn.Module | None = None) -> float:
    """Frechet distance between Gaussian fits (mean, unbiased covariance) of the classifier's
    penultimate-layer features of two image sets ([N, 1, 8, 8] or [N, 64], N >= 2 each).

    classifier=None uses digits_classifier(); another classifier needs a features() method and is used
    as given (in whatever train / eval mode). Features come out of the network in its dtype (float32)
    and are fitted in float64. Like FID it is biased upwards for small N: compare sets of equal size.
    """
    x = _as_images(x_images, "x_images", min_rows=2)
    y = _as_images(y_images, "y_images", min_rows=2)
    classifier = _check_classifier(classifier)
    mu1, cov1 = _gaussian_fit(_run(classifier, x, features=True))
    mu2, cov2 = _gaussian_fit(_run(classifier, y, features=True))
    return gaussian_frechet_distance(mu1, cov1, mu2, cov2)


def class_histogram(images, classifier: nn.Module | None = None) -> torch.Tensor:
    """int64 [10]: how many images the classifier assigns to each digit class (argmax of the logits)."""
    x = _as_images(images, "images")
    classifier = _check_classifier(classifier)
    pred = _run(classifier, x, features=False).argmax(dim=1)
    return torch.bincount(pred, minlength=10)


def mode_coverage(images, classifier: nn.Module | None = None, min_fraction: float = 0.05) -> int:
    """Number of digit classes (0..10) predicted for at least `min_fraction` of the images.

    The default 0.05 is half the share of a class in balanced data: a class counts as covered unless
    the sampler produces it at less than half its natural rate. min_fraction must lie in (0, 1].
    """
    min_fraction = check_real(min_fraction, "min_fraction")
    if not 0 < min_fraction <= 1:
        raise ValueError(f"min_fraction must be in (0, 1], got {min_fraction}")
    counts = class_histogram(images, classifier)
    return int((counts.double() / counts.sum() >= min_fraction).sum())


# --------------------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------------------
KINDS = ("auto", "1d", "vector", "image")


def _infer_kind(shape: tuple[int, ...]) -> str:
    if len(shape) == 1 or (len(shape) == 2 and shape[1] == 1):
        return "1d"
    if len(shape) == 4 and shape[1:] == (1, 8, 8):
        return "image"
    if len(shape) == 2:
        return "vector"
    raise ValueError(
        f"samples: cannot infer a metric kind from shape {shape}; expected [N], [N, D] or [N, 1, 8, 8]"
    )


def evaluate(
    samples, reference, kind: str = "auto", *, classifier: nn.Module | None = None, seed: int = 0
) -> dict[str, float]:
    """Metrics of samples against reference data, chosen by `kind`:

    * "1d" ([N] or [N, 1]): {"ks", "w1"}.
    * "vector" ([N, D]): {"sliced_w2", "mmd2", "mmd_bandwidth"} (256 projections; median-heuristic
      bandwidth from the pooled data; MMD costs O((N + M)^2 D) time).
    * "image" ([N, 1, 8, 8], or [N, 64] with kind="image"): {"frechet", "mode_coverage",
      "reference_mode_coverage"} (coverage with the default min_fraction, as floats).

    "auto" chooses from the samples' shape: [N] / [N, 1] -> "1d", [N, 1, 8, 8] -> "image", other
    [N, D] -> "vector" (flat [N, 64] digits are treated as vectors unless kind="image").
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind == "auto":
        kind = _infer_kind(tuple(_as_float64(samples, "samples").shape))
    if kind == "1d":
        return {"ks": ks_statistic(samples, reference), "w1": wasserstein1(samples, reference)}
    if kind == "vector":
        x, y = _as_points(samples, "samples", min_rows=2), _as_points(reference, "reference", min_rows=2)
        _same_dim(x, y, "samples", "reference")
        bandwidth = _median_bandwidth(x, y, _seed(seed))
        return {
            "sliced_w2": sliced_wasserstein(x, y, seed=seed),
            "mmd2": mmd_rbf(x, y, bandwidth=bandwidth),
            "mmd_bandwidth": bandwidth,
        }
    x, y = _as_images(samples, "samples", min_rows=2), _as_images(reference, "reference", min_rows=2)
    classifier = _check_classifier(classifier)
    return {
        "frechet": frechet_distance(x, y, classifier),
        "mode_coverage": float(mode_coverage(x, classifier)),
        "reference_mode_coverage": float(mode_coverage(y, classifier)),
    }
