"""Benchmarks of the noise kernels against the torch eager composition (multinomial/randn/gather/affine).

Cases (issue 3): normal generation vs torch.randn; prior_sample N=1M D=64 K=64 diag; q_sample B=256 D=3072
K=10 (noise draw and nearest-centre assignment included); reverse_step B=256 D=3072 (ancestral with noise,
and DDIM eta=0). On a GPU the batch is 4096. Medians after a warm-up, ratios against baselines measured in
the same run, achieved bandwidth (bytes the op must read and write / time) next to this machine's measured
copy bandwidth, the physical limit of these memory-bound ops. Writes JSON with the machine and date to
bench/results/.

    python bench/bench_noise.py [--device cuda]
"""
from __future__ import annotations

import math

import torch

from mixdiff_ext import ops
from mixdiff_ext._timing import median_time

from bench_assign import cli, cuda_time, report, row


def copy_bandwidth(device: str, timer) -> float:
    """Bytes read + written per second by a large tensor copy on `device`."""
    src = torch.rand(1 << 26, device=device)
    dst = torch.empty_like(src)
    return 2 * src.numel() * 4 / timer(lambda: dst.copy_(src))


def mixture(k: int, d: int, device: str):
    g = torch.Generator().manual_seed(0)
    means = torch.randn(k, d, generator=g).to(device)
    sigma = (0.5 + torch.rand(k, d, generator=g)).to(device)
    log_w = torch.log_softmax(torch.randn(k, generator=g), 0).to(device)
    return means, sigma, log_w


def bench_normals(device: str, timer, bw: float) -> list[dict]:
    """Normals into fresh outputs (what a call allocates) and into reused buffers (out=, generation only).

    A fresh CPU output of this size is new memory: its first-touch page faults and the kernel's zero-fill
    cost both sides the same fixed time (first_touch_ms: a fresh zero-fill minus one into a reused
    buffer), a floor that bounds the ratio of fresh draws however fast the normals are.
    """
    n, d = (4_000_000 if device == "cuda" else 1_000_000), 64
    zero, one = torch.zeros(1, d, device=device), torch.zeros(1, device=device)
    x, labels = torch.empty(n, d, device=device), torch.empty(n, dtype=torch.int64, device=device)
    t_fresh = timer(lambda: ops.prior_sample(zero, one, None, "identity", n, 0))
    t_randn_fresh = timer(lambda: torch.randn(n, d, device=device))
    t_reused = timer(lambda: ops.prior_sample(zero, one, None, "identity", n, 0, out=(x, labels)))
    t_randn_reused = timer(lambda: torch.randn(n, d, device=device, out=x))
    first_touch = timer(lambda: torch.empty(n, d, device=device).zero_()) - timer(lambda: x.zero_())
    written = n * d * 4 + n * 8
    name = f"standard normals n={n}x{d} f32 (prior_sample K=1 identity)"
    return [row(f"{name}, fresh outputs", t_fresh, {"torch_randn": t_randn_fresh}, GBps=written / t_fresh / 1e9,
                copy_GBps=bw / 1e9, Gnormals_per_s=n * d / t_fresh / 1e9, first_touch_ms=first_touch * 1e3,
                goal=">= 5x torch.randn (issue 3): a call against a call, each allocating its output"),
            row(f"{name}, reused outputs (out=)", t_reused, {"torch_randn": t_randn_reused},
                GBps=written / t_reused / 1e9, copy_GBps=bw / 1e9, Gnormals_per_s=n * d / t_reused / 1e9,
                goal=">= 5x torch.randn (issue 3): generation only, both into reused buffers")]


def bench_prior_sample(device: str, timer, bw: float) -> list[dict]:
    n, d, k = (4_000_000 if device == "cuda" else 1_000_000), 64, 64
    means, sigma, log_w = mixture(k, d, device)

    def eager():
        labels = torch.multinomial(log_w.exp(), n, replacement=True)
        return means[labels] + sigma[labels] * torch.randn(n, d, device=device), labels

    t_ours = timer(lambda: ops.prior_sample(means, log_w, sigma, "diag", n, 0))
    t_eager = timer(eager)
    written = n * d * 4 + n * 8
    return [row(f"prior_sample diag N={n} D={d} K={k} f32", t_ours, {"torch_eager": t_eager},
                GBps=written / t_ours / 1e9, copy_GBps=bw / 1e9, goal=">= 5x eager (issue 3)")]


def bench_q_sample(device: str, timer, bw: float) -> list[dict]:
    b, d, k, T = (4096 if device == "cuda" else 256), 3072, 10, 1000
    means, sigma, _ = mixture(k, d, device)
    g = torch.Generator().manual_seed(1)
    x0 = (means[torch.randint(k, (b,), generator=g).to(device)] + torch.randn(b, d, generator=g).to(device))
    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, T, dtype=torch.float64), 0).to(device)
    sqrt_abar, sqrt_1m = abar.sqrt().float(), (1 - abar).sqrt().float()
    t = torch.randint(T, (b,), generator=g).to(device)

    def ours(labels):
        return ops.q_sample(x0, sqrt_abar[t], sqrt_1m[t], means, sigma, "diag", 0, labels=labels)

    def eager(labels):
        if labels is None:
            labels = torch.cdist(x0, means).argmin(1)
        eps = torch.randn(b, d, device=device)
        mu = means[labels]
        return mu + sqrt_abar[t, None] * (x0 - mu) + sqrt_1m[t, None] * sigma[labels] * eps, eps, labels

    labels = torch.cdist(x0, means).argmin(1)
    rows = []
    for name, lab in (("labels assigned in the op", None), ("labels given", labels)):
        t_ours, t_eager = timer(lambda: ours(lab)), timer(lambda: eager(lab))
        moved = 3 * b * d * 4  # read x0, write x_t and eps
        rows.append(row(f"q_sample diag B={b} D={d} K={k} f32, {name}", t_ours, {"torch_eager": t_eager},
                        GBps=moved / t_ours / 1e9, copy_GBps=bw / 1e9, goal=">= 5x eager (issue 3)"))
    return rows


def bench_reverse_step(device: str, timer, bw: float) -> list[dict]:
    b, d, k = (4096 if device == "cuda" else 256), 3072, 10
    means, sigma, _ = mixture(k, d, device)
    g = torch.Generator().manual_seed(2)
    labels = torch.randint(k, (b,), generator=g).to(device)
    x = torch.randn(b, d, generator=g).to(device)
    eps_hat = torch.randn(b, d, generator=g).to(device)
    # DDPM step t = 500 -> 499 of the linear schedule, posterior (x0) form, fixed_small variance.
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)
    at, ap = abar[500].item(), abar[499].item()
    alpha, beta = at / ap, 1 - at / ap
    var = (1 - ap) / (1 - at) * beta
    ancestral = ops.StepCoefficients(1 / math.sqrt(at), -math.sqrt(1 - at) / math.sqrt(at),
                                     math.sqrt(alpha) * (1 - ap) / (1 - at), math.sqrt(ap) * beta / (1 - at), 0.0,
                                     math.sqrt(var))
    ddim = ops.StepCoefficients(1 / math.sqrt(at), -math.sqrt(1 - at) / math.sqrt(at), 0.0, math.sqrt(ap),
                                math.sqrt(1 - ap), 0.0)

    def eager(c):
        mu = means[labels]
        y = x - mu
        a_eps = sigma[labels] * eps_hat
        y0 = c.x0_from_x * y + c.x0_from_out * a_eps
        out = c.coef_x * y + c.coef_x0 * y0 + c.coef_eps * a_eps
        if c.coef_noise:
            out = out + c.coef_noise * sigma[labels] * torch.randn(b, d, device=device)
        return mu + out

    rows = []
    for name, c, moved in (("ancestral (noise drawn)", ancestral, 3 * b * d * 4), ("DDIM eta=0", ddim, 3 * b * d * 4)):
        t_ours = timer(lambda: ops.reverse_step(x, eps_hat, labels, means, sigma, "diag", c, seed=0, step=500))
        t_eager = timer(lambda: eager(c))
        rows.append(row(f"reverse_step diag B={b} D={d} K={k} f32, {name}", t_ours, {"torch_eager": t_eager},
                        GBps=moved / t_ours / 1e9, copy_GBps=bw / 1e9, launches_per_step=1,
                        goal=">= 3x eager (issue 3)"))
    return rows


def bench(device: str, repeats: int) -> list[dict]:
    timer = (lambda f: cuda_time(f, repeats)) if device == "cuda" else (lambda f: median_time(f, repeats))
    bw = copy_bandwidth(device, timer)
    return (bench_normals(device, timer, bw) + bench_prior_sample(device, timer, bw) + bench_q_sample(device, timer, bw)
            + bench_reverse_step(device, timer, bw))


def main() -> None:
    args = cli(__doc__, default_repeats=9)
    report("noise", args, bench(args.device, args.repeats), extra_keys=("GBps", "copy_GBps", "first_touch_ms"))


if __name__ == "__main__":
    main()
