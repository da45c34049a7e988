"""Benchmarks of the noise kernels against the torch eager composition (multinomial/randn/gather/affine).

So far: prior_sample. Medians after a warm-up, ratios against baselines measured in the same run, and the
achieved bandwidth next to this machine's measured copy bandwidth (these ops are memory-bound at best).
Writes JSON with the machine and date to bench/results/.

    python bench/bench_noise.py [--device cuda]
"""
from __future__ import annotations

import torch

from mixdiff_ext import ops
from mixdiff_ext._timing import median_time

from bench_assign import cli, cuda_time, report, row


def copy_bandwidth(device: str, timer) -> float:
    """Bytes read + written per second by a large tensor copy on `device`."""
    src = torch.rand(1 << 26, device=device)
    dst = torch.empty_like(src)
    return 2 * src.numel() * 4 / timer(lambda: dst.copy_(src))


def bench(device: str, repeats: int) -> list[dict]:
    timer = (lambda f: cuda_time(f, repeats)) if device == "cuda" else (lambda f: median_time(f, repeats))
    n, d, k = (4_000_000 if device == "cuda" else 1_000_000), 64, 64
    g = torch.Generator().manual_seed(0)
    means = torch.randn(k, d, generator=g).to(device)
    sigma = (0.5 + torch.rand(k, d, generator=g)).to(device)
    log_w = torch.log_softmax(torch.randn(k, generator=g), 0).to(device)

    def eager():
        labels = torch.multinomial(log_w.exp(), n, replacement=True)
        return means[labels] + sigma[labels] * torch.randn(n, d, device=device), labels

    bw = copy_bandwidth(device, timer)
    t_ours = timer(lambda: ops.prior_sample(means, log_w, sigma, "diag", n, 0))
    t_eager = timer(eager)
    t_randn = timer(lambda: torch.randn(n, d, device=device))
    written = n * d * 4 + n * 8
    return [row(f"prior_sample diag N={n} D={d} K={k} f32", t_ours, {"torch_eager": t_eager, "torch_randn_only": t_randn},
                GBps=written / t_ours / 1e9, copy_GBps=bw / 1e9, goal=">= 5x eager (issue 3)")]


def main() -> None:
    args = cli(__doc__, default_repeats=5)
    report("noise", args, bench(args.device, args.repeats))


if __name__ == "__main__":
    main()
