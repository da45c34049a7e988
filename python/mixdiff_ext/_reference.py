"""Pure-torch references of every op: the test oracle. Straightforward, float64-capable, O(N K) memory.

Each function has the op's name, arguments and outputs (see ops.py), computed in the dtype of its
inputs (pass float64 for an accurate oracle).
"""
from __future__ import annotations

import math

import torch


def _sq_diff(x: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """[N, K, D] differences x_n - mu_k."""
    return x[:, None, :] - means[None, :, :]


def assign_nearest(x, centres):
    d2 = (_sq_diff(x, centres) ** 2).sum(-1)
    if d2.shape[0] == 0:
        return torch.empty(0, dtype=torch.int64), d2.new_empty(0)
    sqdist, labels = d2.min(dim=1)  # torch.min returns the first index of the minimum
    return labels, sqdist


def precision_factor(cov_factor, covariance_type, d):
    """The factor P with ||P (x - mu)||^2 the Mahalanobis distance (identity: None)."""
    if covariance_type == "identity":
        return None
    if covariance_type == "full":
        eye = torch.eye(d, dtype=cov_factor.dtype).expand_as(cov_factor)
        return torch.linalg.solve_triangular(cov_factor.tril(), eye, upper=False)
    return 1.0 / cov_factor


def log_joint(x, means, cov_factor, log_weights, covariance_type):
    """[N, K] log w_k + log N(x_n; mu_k, A_k A_k^T)."""
    n, d = x.shape
    diff = _sq_diff(x, means)
    prec = precision_factor(cov_factor, covariance_type, d)
    if covariance_type == "identity":
        maha, logdet = (diff**2).sum(-1), torch.zeros_like(log_weights)
    elif covariance_type == "spherical":
        maha, logdet = (diff**2).sum(-1) * prec**2, d * torch.log(prec)
    elif covariance_type == "diag":
        maha, logdet = ((diff * prec) ** 2).sum(-1), torch.log(prec).sum(-1)
    elif covariance_type == "full":
        y = torch.einsum("kij,nkj->nki", prec, diff)
        maha, logdet = (y**2).sum(-1), torch.log(torch.diagonal(prec, dim1=1, dim2=2)).sum(-1)
    else:
        raise ValueError(covariance_type)
    return log_weights - 0.5 * d * math.log(2 * math.pi) + logdet - 0.5 * maha


def gmm_posterior(x, means, cov_factor, log_weights, covariance_type="identity", return_resp=False):
    joint = log_joint(x, means, cov_factor, log_weights, covariance_type)
    log_lik = torch.logsumexp(joint, dim=1)
    labels = joint.argmax(dim=1) if x.shape[0] else torch.empty(0, dtype=torch.int64)
    resp = torch.exp(joint - log_lik[:, None]) if return_resp else None
    return labels, log_lik, resp


def estep_stats(x, means, cov_factor, log_weights, covariance_type="identity", shift=None, moments="diag"):
    shift = means if shift is None else shift
    joint = log_joint(x, means, cov_factor, log_weights, covariance_type)
    log_lik = torch.logsumexp(joint, dim=1)
    g = torch.exp(joint - log_lik[:, None])  # [N, K]
    z = _sq_diff(x, shift)  # [N, K, D]
    nk = g.sum(0)
    sum_x = torch.einsum("nk,nkd->kd", g, z)
    sum_xx = None
    if moments == "diag":
        sum_xx = torch.einsum("nk,nkd->kd", g, z * z)
    elif moments == "full":
        sum_xx = torch.einsum("nk,nkd,nke->kde", g, z, z)
    return nk, sum_x, sum_xx, log_lik.sum()


def kmeans_stats(x, centres):
    labels, sqdist = assign_nearest(x, centres)
    k, d = centres.shape
    counts = torch.bincount(labels, minlength=k)
    sum_x = torch.zeros(k, d, dtype=x.dtype).index_add_(0, labels, x - centres[labels])
    return labels, sqdist, counts, sum_x, sqdist.sum()


# --- counter-based random numbers (same streams as csrc/include/mixdiff/philox.h) ----------------------
_MASK32 = 0xFFFFFFFF
STREAM_COMPONENT, STREAM_PRIOR_NOISE, STREAM_FORWARD_NOISE, STREAM_REVERSE_NOISE = 1, 2, 3, 4


def step_stream(kind: int, step: int) -> int:
    """The stream word of a reverse-sampler step: kind | step << 4."""
    return kind | (step << 4)


def philox4x32_10(counter: torch.Tensor, key: tuple[int, int]) -> torch.Tensor:
    """Philox4x32-10 on int64 tensors holding uint32 words: counter [..., 4] -> [..., 4]."""
    c = [counter[..., i].to(torch.int64) & _MASK32 for i in range(4)]
    k0, k1 = key[0] & _MASK32, key[1] & _MASK32
    for _ in range(10):
        p0 = c[0] * 0xD2511F53  # < 2^64 as unsigned; int64 wraps, masks below recover the words
        p1 = c[2] * 0xCD9E8D57
        hi0, lo0 = (p0 >> 32) & _MASK32, p0 & _MASK32
        hi1, lo1 = (p1 >> 32) & _MASK32, p1 & _MASK32
        c = [hi1 ^ c[1] ^ k0, lo1, hi0 ^ c[3] ^ k1, lo0]
        k0, k1 = (k0 + 0x9E3779B9) & _MASK32, (k1 + 0xBB67AE85) & _MASK32
    return torch.stack(c, dim=-1)


def philox_words(seed: int, stream: int, rows: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Words for (seed, stream, row, index), broadcasting rows against index."""
    rows, index = torch.broadcast_tensors(rows.to(torch.int64), index.to(torch.int64))
    seed &= (1 << 64) - 1
    ctr = torch.stack([index, torch.full_like(index, stream), rows & _MASK32, (rows >> 32) & _MASK32], -1)
    return philox4x32_10(ctr, (seed & _MASK32, seed >> 32))


def uniform_open0(words: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(0, 1] uniforms: one word for float32 (evaluated in float32 as the kernel does), two for float64."""
    if dtype == torch.float64:
        bits = ((words[..., 1] << 32) | words[..., 0]) >> 11
        bits = torch.where(bits < 0, bits + (1 << 53), bits)  # the >> of a negative int64 is arithmetic
        bits = bits & ((1 << 53) - 1)
        return (bits.to(torch.float64) + 0.5) * 2.0**-53
    return (words[..., 0].to(torch.float32) + 0.5) * 2.3283064365386963e-10


def block_normals(words: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Box-Muller: [..., 4] words -> [..., R] standard normals (R = 4 for float32, 2 for float64)."""
    if dtype == torch.float64:
        pairs = [(uniform_open0(words[..., 0:2], dtype), uniform_open0(words[..., 2:4], dtype))]
    else:
        pairs = [(uniform_open0(words[..., i : i + 1], dtype), uniform_open0(words[..., i + 1 : i + 2], dtype))
                 for i in (0, 2)]
    out = []
    for u1, u2 in pairs:
        r = torch.sqrt(-2.0 * torch.log(u1))
        theta = 2 * math.pi * u2
        out += [r * torch.cos(theta), r * torch.sin(theta)]
    return torch.stack(out, -1)


def normals(seed: int, stream: int, rows: torch.Tensor, d: int, dtype: torch.dtype) -> torch.Tensor:
    """[len(rows), d] standard normals in the kernels' layout: element m * B + j is normal m of block j,
    B = ceil(d / R)."""
    per_block = 2 if dtype == torch.float64 else 4
    blocks = -(-d // per_block)
    words = philox_words(seed, stream, rows[:, None], torch.arange(blocks)[None, :])  # [n, B, 4]
    z = block_normals(words, dtype)  # [n, B, R]
    return z.transpose(1, 2).reshape(rows.shape[0], per_block * blocks)[:, :d]


def apply_factor(cov_factor, covariance_type, labels, v):
    """A_j v for each row's component j."""
    if covariance_type == "identity":
        return v
    if covariance_type == "spherical":
        return cov_factor[labels, None] * v
    if covariance_type == "diag":
        return cov_factor[labels] * v
    return torch.einsum("nij,nj->ni", cov_factor[labels].tril(), v)


def prior_sample(means, log_weights, cov_factor, covariance_type, n, seed, offset=0):
    k, d = means.shape
    dtype = means.dtype
    rows = torch.arange(offset, offset + n, dtype=torch.int64)
    lw = log_weights.to(torch.float64)
    cdf = torch.cumsum(torch.exp(lw - lw.max()), 0)
    u = uniform_open0(philox_words(seed, STREAM_COMPONENT, rows, torch.zeros(1, dtype=torch.int64)), torch.float64)
    labels = torch.searchsorted(cdf, u * cdf[-1]).clamp(max=k - 1)  # first k with u * total <= cdf[k]
    eps = normals(seed, STREAM_PRIOR_NOISE, rows, d, dtype)
    x = means[labels] + apply_factor(cov_factor, covariance_type, labels, eps)
    return x, labels


def q_sample(x0, labels, signal, noise_scale, means, cov_factor, covariance_type, noise, seed, offset=0):
    b, d = x0.shape
    if labels is None:
        labels = assign_nearest(x0, means)[0]
    rows = torch.arange(offset, offset + b, dtype=torch.int64)
    eps = normals(seed, STREAM_FORWARD_NOISE, rows, d, x0.dtype) if noise is None else noise.to(x0.dtype)
    mu = means[labels]
    x_t = mu + signal[:, None] * (x0 - mu) + noise_scale[:, None] * apply_factor(cov_factor, covariance_type, labels, eps)
    return x_t, eps, labels


def _bound_table(bound, means):
    """A clip bound as a [K, D] tensor like the means (None stays None; a number fills the table)."""
    if bound is None or isinstance(bound, torch.Tensor):
        return bound if bound is None else bound.to(means.dtype).expand(means.shape)
    return torch.full(means.shape, float(bound), dtype=means.dtype)


def reverse_step(x, model_output, labels, means, cov_factor, covariance_type, coefficients, clip_lo, clip_hi,
                 noise, seed, offset, step, return_x0=False, prediction_type="epsilon", x0_history=()):
    """The step of ops.StepCoefficients' docstring. coefficients: the 10 numbers, or the first 6 (then
    eps_from_x, eps_from_out, coef_x0_prev, coef_x0_prev2 = 0, 1, 0, 0). clip_lo / clip_hi: None, [K, D]
    tensors or numbers. History terms with a zero coefficient are not evaluated."""
    coefficients = [float(c) for c in coefficients]
    if len(coefficients) == 6:
        coefficients += [0.0, 1.0, 0.0, 0.0]
    a0, b0, cx, c0, ce, cz, ex, eo, h1, h2 = coefficients
    b, d = x.shape
    mu = means[labels]
    y = x - mu
    out = model_output.to(x.dtype)
    o = out if prediction_type == "sample" else apply_factor(cov_factor, covariance_type, labels, out)
    y0 = a0 * y + b0 * o
    e = ex * y + eo * o
    if clip_lo is not None or clip_hi is not None:
        inf = math.inf
        lo = _bound_table(-inf if clip_lo is None else clip_lo, means)[labels]
        hi = _bound_table(inf if clip_hi is None else clip_hi, means)[labels]
        y0 = torch.minimum(torch.maximum(y0 + mu, lo), hi) - mu  # both propagate NaN
    y_prev = cx * y + c0 * y0 + ce * e
    if cz != 0:
        if noise is None:
            rows = torch.arange(offset, offset + b, dtype=torch.int64)
            noise = normals(seed, step_stream(STREAM_REVERSE_NOISE, step), rows, d, x.dtype)
        y_prev = y_prev + cz * apply_factor(cov_factor, covariance_type, labels, noise.to(x.dtype))
    for h, past in zip((h1, h2), x0_history):
        if h != 0:
            y_prev = y_prev + h * (past.to(x.dtype) - mu)
    return mu + y_prev, (mu + y0) if return_x0 else x.new_empty(0)


def _ngmg_log_terms(pred, modes, weights, sigma, normalized, kind):
    """diff [N, K, D] = y - m_k, sigma_k^2 [K] and a [N, K] = log(w_k c_k) - ||y - m_k||^2 / (2 sigma_k^2)."""
    var = torch.as_tensor(sigma, dtype=pred.dtype, device=pred.device).reshape(-1).expand(modes.shape[0]) ** 2
    diff = _sq_diff(pred, modes)
    a = torch.log(weights) - (diff**2).sum(-1) / (2 * var)
    if normalized or kind == "log":
        a = a - 0.5 * pred.shape[1] * torch.log(2 * math.pi * var)
    return diff, var, a


def ngmg_loss_terms(pred, modes, weights, sigma, normalized=False, kind="potential"):
    """[N] NGMG loss from the formulas (docs/method.md, "NGMG"): -sum_k e^(a_k) or -log sum_k e^(a_k).
    Differentiable with respect to pred by autograd (the eager baseline of bench/bench_ngmg.py)."""
    _, _, a = _ngmg_log_terms(pred, modes, weights, sigma, normalized, kind)
    return -torch.logsumexp(a, dim=1) if kind == "log" else -torch.exp(a).sum(1)


def ngmg(pred, modes, weights, sigma, normalized=False, kind="potential"):
    """(loss [N], grad [N, D]), the gradient in closed form: sum_k g_k (y - m_k) / sigma_k^2 with g_k = e^(a_k)
    (potential) or the responsibilities softmax(a)_k (log)."""
    diff, var, a = _ngmg_log_terms(pred, modes, weights, sigma, normalized, kind)
    g = torch.softmax(a, dim=1) if kind == "log" else torch.exp(a)
    loss = -torch.logsumexp(a, dim=1) if kind == "log" else -g.sum(1)
    return loss, torch.einsum("nk,nkd->nd", g / var, diff)
