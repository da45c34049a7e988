"""End-to-end sampling throughput and training step rate (issue 4).

Sampling: N = 100k 2-D samples from an MLP denoiser (hidden 64, depth 3), DDPM ancestral with all 1000
steps and DDIM with 100 steps, standard prior (DDPM). Three loops run the same network:
- ours: MixDDPM.sample (fused reverse_step, counter-based noise, chunk-major trajectories, a batch-wide t
  embedded once), and with compile=True (the network call through torch.compile; its one-off
  compilation is timed separately and excluded);
- eager: the same sampler written from the formulas with torch ops (one 100k batch, torch.randn);
- diffusers: DDPMScheduler / DDIMScheduler step loop (one 100k batch), when diffusers is installed.
Also mixDDPM (K = 8, component embedding, centred input) with our sampler.
Training: steps/s of mixDDPM (K = 8, assignment fused in q_sample) vs DDPM (K = 1), batch 256, AdamW.

Medians after a warm-up; ratios against baselines measured in the same run; machine and date in
bench/results/sampling_<device>_<date>.json.

    python bench/bench_sampling.py [--device cuda]
"""
from __future__ import annotations

import time

import numpy as np
import torch

from mixdiff_ext import GaussianMixturePrior
from mixdiff_ext._timing import median_time
from mixdiff_ext.data import ring2d
from mixdiff_ext.models import MixDDPM
from mixdiff_ext.nets import MLP

from bench_assign import cli, report, row

HIDDEN, DEPTH = 64, 3


def eager_sample(net, n: int, timesteps: list[int], abar: torch.Tensor, ddim: bool, device: str) -> torch.Tensor:
    """DDPM ancestral (fixed_small) / DDIM (eta = 0) from the formulas, one batch."""
    x = torch.randn(n, 2, device=device)
    with torch.inference_mode():
        for i, t in enumerate(timesteps):
            prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
            a_t, a_p = abar[t], (abar[prev] if prev >= 0 else torch.ones((), dtype=abar.dtype))
            eps = net(x, torch.full((n,), float(t), device=device))
            x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
            if ddim:
                x = a_p.sqrt() * x0 + (1 - a_p).sqrt() * eps
                continue
            beta = 1 - a_t / a_p
            x = a_p.sqrt() * beta / (1 - a_t) * x0 + (1 - beta).sqrt() * (1 - a_p) / (1 - a_t) * x
            if prev >= 0:
                x = x + (beta * (1 - a_p) / (1 - a_t)).sqrt() * torch.randn_like(x)
    return x


def diffusers_sample(net, n: int, steps: int, ddim: bool, device: str) -> torch.Tensor:
    from diffusers import DDIMScheduler, DDPMScheduler

    sched = (DDIMScheduler if ddim else DDPMScheduler)(num_train_timesteps=1000, beta_schedule="linear",
                                                     clip_sample=False)
    sched.set_timesteps(steps)
    g = torch.Generator(device).manual_seed(0)
    x = torch.randn(n, 2, generator=g, device=device)
    with torch.inference_mode():
        for t in sched.timesteps:
            eps = net(x, t.expand(n).to(device))
            x = sched.step(eps, t, x, generator=g).prev_sample
    return x


def bench_sampling(device: str, n: int, repeats: int, long_steps: int) -> list[dict]:
    torch.manual_seed(0)
    ddpm = MixDDPM(MLP(2, hidden=HIDDEN, depth=DEPTH), GaussianMixturePrior.standard(2)).to(device).eval()
    data = ring2d(20_000)
    mix_prior = GaussianMixturePrior.fit(data, 8, seed=0)
    mix = MixDDPM(MLP(2, hidden=HIDDEN, depth=DEPTH, num_components=8), mix_prior).to(device).eval()
    abar = ddpm.schedule.alphas_cumprod.to(device)
    try:
        import diffusers  # noqa: F401
        have_diffusers = True
    except ImportError:
        have_diffusers = False
    rows = []
    for sampler, steps in (("ancestral", long_steps), ("ddim", 100)):
        ddim = sampler == "ddim"
        reps = repeats if steps <= 100 else 1
        kw = dict(steps=steps, sampler=sampler, seed=0, progress=False)
        t_ours = median_time(lambda: ddpm.sample(n, **kw), repeats=reps, warmup=1 if steps <= 100 else 0)
        t0 = time.perf_counter()
        ddpm.sample(5000, compile=True, **dict(kw, steps=2))  # compiles (both chunk sizes: 4096 and 904)
        t_compile = time.perf_counter() - t0
        t_compiled = median_time(lambda: ddpm.sample(n, compile=True, **kw), repeats=reps, warmup=0)
        baselines = {"torch_eager": median_time(
            lambda: eager_sample(ddpm.denoiser, n, ddpm.schedule.timesteps(steps), abar, ddim, device),
            repeats=reps, warmup=0)}
        if have_diffusers:
            baselines["diffusers"] = median_time(lambda: diffusers_sample(ddpm.denoiser, n, steps, ddim, device),
                                                 repeats=reps, warmup=0)
        t_mix = median_time(lambda: mix.sample(n, **kw), repeats=reps, warmup=0)
        rows.append(row(f"DDPM {sampler} {steps} steps N={n} MLP{HIDDEN}x{DEPTH}", t_ours, baselines,
                        samples_per_s=n / t_ours, goal=">= 1.5x the diffusers loop (issue 4)"))
        rows.append(row(f"DDPM {sampler} {steps} steps N={n}, compile=True", t_compiled, baselines,
                        samples_per_s=n / t_compiled, compile_s=t_compile, goal=">= 1.5x the diffusers loop"))
        rows.append(row(f"mixDDPM K=8 {sampler} {steps} steps N={n}", t_mix, {"ddpm_ours": t_ours},
                        samples_per_s=n / t_mix))
    return rows


def bench_training(device: str, repeats: int, steps: int = 30) -> list[dict]:
    """Seconds per training step (loss, backward, AdamW) of DDPM and mixDDPM, timed alternately so that
    both see the same machine load; medians over the repeats."""
    data = ring2d(20_000).to(device)
    prior = GaussianMixturePrior.fit(data.cpu(), 8, seed=0)
    torch.manual_seed(0)
    ddpm = MixDDPM(MLP(2, hidden=HIDDEN, depth=DEPTH), GaussianMixturePrior.standard(2)).to(device)
    torch.manual_seed(0)
    mix = MixDDPM(MLP(2, hidden=HIDDEN, depth=DEPTH, num_components=8), prior).to(device)

    def runner(model):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(0)

        def run():
            for i in range(steps):
                x0 = data[torch.randint(0, data.shape[0], (256,), generator=g).to(device)]
                loss = model.loss(x0, t=model.sample_timesteps(256, g).to(device), seed=i)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        return run

    runs = {"ddpm": runner(ddpm), "mix": runner(mix)}
    times = {name: [] for name in runs}
    for run in runs.values():  # warm-up
        run()
    for _ in range(repeats):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - t0) / steps)
    t_ddpm, t_mix = (float(np.median(times[name])) for name in ("ddpm", "mix"))
    return [row("training step mixDDPM K=8 (assignment fused) batch 256", t_mix, {"ddpm": t_ddpm},
                steps_per_s=1 / t_mix, extra_cost_pct=100 * (t_mix / t_ddpm - 1),
                goal="mixture costs < 5% more per step (issue 4)")]


def main() -> None:
    parser_doc = __doc__
    args = cli(parser_doc, default_repeats=3)
    n = 100_000
    t0 = time.perf_counter()
    rows = bench_sampling(args.device, n, args.repeats, long_steps=1000)
    rows += bench_training(args.device, repeats=15)
    print(f"({time.perf_counter() - t0:.0f} s)")
    report("sampling", args, rows, extra_keys=("samples_per_s", "steps_per_s", "extra_cost_pct", "compile_s"))


if __name__ == "__main__":
    main()
