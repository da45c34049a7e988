"""Benchmark of ngmg_loss forward + backward against the torch eager autograd composition.

The baseline is the reference's loss (mixdiff_ext._reference.ngmg_loss_terms: broadcast differences,
exp, sum) differentiated by autograd, in row chunks so that its [n, K, D] temporaries fit in memory. Both
compute the mean potential loss of float32 predictions and its gradient. Medians after a warm-up; the ratio
is against the baseline measured in the same run, and the two gradients are compared. Writes JSON with the
machine and date to bench/results/.

    python bench/bench_ngmg.py                 # CPU, 2 threads: N=1M, D=16, K=10 (goal >= 5x eager)
    python bench/bench_ngmg.py --device cuda   # N=4M, D=64, K=32, GB/s and FLOP/s next to the device peaks
"""
from __future__ import annotations

import torch

from mixdiff_ext import _reference as ref
from mixdiff_ext import ngmg_loss
from mixdiff_ext._timing import median_time

from bench_assign import cli, cuda_time, device_peaks, report, row
from bench_noise import copy_bandwidth


def problem(n: int, d: int, k: int, device: str):
    g = torch.Generator().manual_seed(0)
    modes = 3.0 * torch.randn(k, d, generator=g)
    sigma = 0.5 + torch.rand(k, generator=g)
    weights = torch.softmax(torch.randn(k, generator=g), 0)
    comp = torch.randint(k, (n,), generator=g)
    pred = modes[comp] + sigma[comp, None] * torch.randn(n, d, generator=g)
    return (t.to(device) for t in (pred, modes, weights, sigma))


def bench(device: str, repeats: int) -> list[dict]:
    n, d, k, chunk = (4_000_000, 64, 32, 1 << 18) if device == "cuda" else (1_000_000, 16, 10, 1 << 17)
    pred, modes, weights, sigma = problem(n, d, k, device)
    p = pred.clone().requires_grad_(True)

    def ours():
        p.grad = None
        ngmg_loss(p, modes, weights, sigma).backward()
        return p.grad

    def eager():
        p.grad = None
        for i in range(0, n, chunk):  # one graph per chunk, freed by its backward
            (ref.ngmg_loss_terms(p[i:i + chunk], modes, weights, sigma).sum() / n).backward()
        return p.grad

    g_ours, g_eager = ours().clone(), eager().clone()
    err = ((g_ours - g_eager).abs().max() / g_eager.abs().max()).item()
    timer = (lambda f: cuda_time(f, repeats)) if device == "cuda" else (lambda f: median_time(f, repeats))
    t_ours, t_eager = timer(ours), timer(eager)
    # Op: read pred, write loss and grad; backward: read grad, write pred.grad. Per (row, component, dim):
    # the distance twice (log-sum-exp pass, gradient pass) and the gradient term, 3 flops each.
    moved = 4 * n * d * 4 + n * 4
    flops = 9 * n * k * d
    extra = device_peaks() if device == "cuda" else {"copy_GBps": copy_bandwidth(device, timer) / 1e9}
    return [row(f"ngmg_loss fwd+bwd potential N={n} D={d} K={k} f32", t_ours, {"torch_eager_autograd": t_eager},
                GBps=moved / t_ours / 1e9, GFLOPs=flops / t_ours / 1e9, grad_max_rel_err=err,
                goal=">= 5x eager (issue 5)" if device == "cpu" else "GB/s and FLOP/s vs device peaks", **extra)]


def main() -> None:
    args = cli(__doc__, default_repeats=7)
    report("ngmg", args, bench(args.device, args.repeats),
           extra_keys=("GBps", "GFLOPs", "copy_GBps", "fp32_matmul_TFLOPs", "grad_max_rel_err"))


if __name__ == "__main__":
    main()
