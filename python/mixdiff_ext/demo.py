"""The project's main job: the headline comparison of Jia, Zhu, Liu & Zheng (2024) on built-in data.

For each dataset it fits the k-means dispatcher prior, trains DDPM and mixDDPM with the same small budget
and network, samples with the default sampler (SDE-DPM-Solver++ 2M, 20 steps, clip="auto"), and reports a
sample-quality metric against held-out data, the reverse effort (analytic, and measured on the sampled
trajectories), training and sampling time. mixDDPM appears twice: the default (the network sees the
component and the centred input) and the paper-faithful variant whose network sees (x_t, t) only.
`--full` trains longer, adds mixSGM vs SGM (VP) and the `arrivals` data. Writes results.md, results.json,
sample and loss plots and config.json to the output directory it prints at the end. Whatever the
numbers are, they are reported as measured.

    mixdiff demo [--full] [--out DIR] [--seed S]      (or python -m mixdiff_ext.demo)
"""
from __future__ import annotations

import argparse
import os
import time
from typing import Any

import torch

from . import metrics
from .pipeline import (build_model, default_config, fit_prior, load_data, plot_losses, plot_samples, save_json,
                       write_results)
from .prior import effort
from .schedules import DEFAULT_SAMPLER
from .training import train

# dataset -> (components, training rows, metric reported first, most samples drawn: the UNet is slow)
DATASETS = {
    "gmm1d": (2, 10_000, "w1", None),
    "ring2d": (8, 10_000, "sliced_w2", None),
    "digits": (10, None, "frechet", 1000),
    "arrivals": (4, 2_000, "sliced_w2", None),
}
# sampling: the library's default, SDE-DPM-Solver++ (2M) with data-support clipping (clip="auto"), 20 steps
# (schedules.DEFAULT_SAMPLER says why)
SAMPLER = {"sampler": DEFAULT_SAMPLER, "order": 2, "clip": "auto"}
QUICK = {"datasets": ("gmm1d", "ring2d", "digits"), "steps": 300, "batch_size": 256, "sample_n": 2000,
         "sample_steps": 20, "models": ("ddpm", "mixddpm", "mixddpm-paper")}
FULL = {"datasets": ("gmm1d", "ring2d", "digits", "arrivals"), "steps": 2000, "batch_size": 256, "sample_n": 5000,
        "sample_steps": 20, "models": ("ddpm", "mixddpm", "mixddpm-paper", "sgm", "mixsgm")}
LABELS = {"ddpm": "DDPM", "mixddpm": "mixDDPM", "mixddpm-paper": "mixDDPM (x_t, t only)", "sgm": "SGM (VP)",
          "mixsgm": "mixSGM (VP)"}


def _model_config(variant: str, sample_shape) -> dict[str, Any]:
    if variant == "mixddpm-paper":
        return default_config("mixddpm", sample_shape, component_input="none", centre_input=False)
    return default_config(variant, sample_shape)


def _evaluate(samples: torch.Tensor, reference: torch.Tensor, seed: int) -> dict[str, float]:
    if samples.dim() == 4:
        return {"frechet": metrics.frechet_distance(samples, reference),
                "modes": float(metrics.mode_coverage(samples))}
    if samples.shape[1] == 1:
        return {"w1": metrics.wasserstein1(samples, reference), "ks": metrics.ks_statistic(samples, reference)}
    return {"sliced_w2": metrics.sliced_wasserstein(samples, reference, seed=seed),
            "mmd": metrics.mmd_rbf(samples, reference, seed=seed)}


def run_dataset(name: str, plan: dict, seed: int, out: str, progress: bool) -> list[dict[str, Any]]:
    components, n, _, most = DATASETS[name]
    sample_n = plan["sample_n"] if most is None else min(most, plan["sample_n"])
    x = load_data(name, n=n, seed=seed)
    # held-out reference: a fresh draw of the synthetic generators; for digits the bundled set itself
    reference = x if name == "digits" else load_data(name, n=sample_n, seed=seed + 1)
    if name == "arrivals":  # counts: model them on a log scale, report on it too
        x, reference = torch.log1p(x), torch.log1p(reference)
    prior = fit_prior(x, components, seed=seed)
    rows, panels, histories = [], {"data": reference[:sample_n]}, {}
    for variant in plan["models"]:
        config = _model_config(variant, tuple(x.shape[1:]))
        torch.manual_seed(seed)  # the same network initialisation for every variant of equal shape
        model = build_model(config, prior)
        result = train(model, x, plan["steps"], batch_size=plan["batch_size"], lr=1e-3, seed=seed, progress=progress,
                       log_every=max(plan["steps"] // 30, 1))
        t0 = time.perf_counter()
        out_s = result.ema_model.sample(sample_n, steps=plan["sample_steps"], seed=seed, progress=progress,
                                        return_labels=True, **SAMPLER)
        t_sample = time.perf_counter() - t0
        samples = out_s.samples
        flat = samples.reshape(samples.shape[0], -1)
        row = {
            "dataset": name, "model": LABELS[variant], "components": result.ema_model.n_components,
            **_evaluate(samples, reference, seed),
            "effort": effort(result.ema_model.prior, x.reshape(x.shape[0], -1)),
            "sampled_effort": float(((flat - out_s.initial.reshape(flat.shape)) ** 2).sum(1).mean()),
            "train_s": result.seconds, "train_steps": result.steps, "sample_s": t_sample,
            "samples": sample_n, "samples_per_s": sample_n / t_sample,
            "sampler": f"{SAMPLER['sampler']}{SAMPLER['order']}-{plan['sample_steps']}, clip {SAMPLER['clip']}",
        }
        rows.append(row)
        panels[LABELS[variant]] = samples
        histories[LABELS[variant]] = result.history
    plot_samples(os.path.join(out, f"samples_{name}.png"), panels, reference if reference.dim() == 2 else None)
    plot_losses(os.path.join(out, f"losses_{name}.png"), histories)
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| dataset | model | metric | value | effort | sampled effort | train s | sample s |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        metric = DATASETS[r["dataset"]][2]
        extra = {"w1": "ks", "sliced_w2": "mmd", "frechet": "modes"}[metric]
        value = f"{r[metric]:.4g} ({extra} {r[extra]:.3g})"
        lines.append(f"| {r['dataset']} | {r['model']} | {metric} (lower is better) | {value} | {r['effort']:.4g} | "
                     f"{r['sampled_effort']:.4g} | {r['train_s']:.1f} | {r['sample_s']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(prog="mixdiff demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="larger budget, adds mixSGM vs SGM and arrivals")
    parser.add_argument("--out", default=None, help="output directory (default: ./mixdiff-demo-<time>)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), help="a subset of the datasets")
    parser.add_argument("--steps", type=int, help="training steps per model (overrides the budget)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)

    plan = dict(FULL if args.full else QUICK)
    if args.datasets:
        plan["datasets"] = tuple(args.datasets)
    if args.steps is not None:
        if args.steps < 1:
            parser.error("--steps must be >= 1")
        plan["steps"] = args.steps
    out = args.out or f"mixdiff-demo-{time.strftime('%Y%m%d-%H%M%S')}"
    os.makedirs(out, exist_ok=True)
    save_json(os.path.join(out, "config.json"), {"command": "demo", "seed": args.seed, **plan, **SAMPLER})
    print(f"mixdiff demo ({'full' if args.full else 'quick'}): {plan['steps']} training steps of batch "
          f"{plan['batch_size']} per model, {SAMPLER['sampler']} (order {SAMPLER['order']}) {plan['sample_steps']} "
          f"steps (clipped to the data support), {plan['sample_n']} samples (digits 1000); "
          f"threads={torch.get_num_threads()}")
    t0 = time.perf_counter()
    rows = []
    for name in plan["datasets"]:
        print(f"\n== {name}")
        rows += run_dataset(name, plan, args.seed, out, progress=not args.no_progress)
        print(markdown_table([r for r in rows if r["dataset"] == name]))
    write_results(out, f"mixdiff demo ({'full' if args.full else 'quick'}), seed {args.seed}", markdown_table(rows),
                  rows, time.perf_counter() - t0)
    return out


if __name__ == "__main__":
    main()
