"""Sample quality against sampling time: our samplers and diffusers' schedulers on the same trained networks.

For each dataset (gmm1d, ring2d, mix16, digits) it trains DDPM (standard prior) and mixDDPM (the k-means
dispatcher prior with the demo's K; 3 for mix16) once each, with the demo's network and budget, and
samples from the EMA model:
- ours: ancestral, DDIM (eta 0), DPM-Solver++ order 2 and 3, SDE-DPM-Solver++ order 2, at each of
  --steps, plus ancestral at --reference-steps (1000), each with clip=None and with clip="auto" (x0_hat
  clipped to the per-component box the model learned from its training data);
- diffusers (the DDPM network, the same x_T): DDPMScheduler, DDIMScheduler and
  DPMSolverMultistepScheduler (dpmsolver++, solver_order 2) in a plain set_timesteps / step loop, plus
  DDPMScheduler at --reference-steps, each without and with its own option: clip_sample=True with
  clip_sample_range R (DDPM, DDIM) or thresholding=True with sample_max_value R (DPM-Solver), where R is
  the training data's max |value|. (diffusers' dynamic thresholding divides x0_hat by a per-sample
  quantile s in [1, R]: it is meant for images in [-1, 1].)

Per row: the dataset's metric against held-out data (the demo's: W1 for gmm1d, sliced W2 for ring2d and
mix16, Frechet for digits), network calls per sample, wall time (median of --repeats runs after a
warm-up run, which also gives the samples the metric scores: every run uses the same seed), samples/s,
and the fraction of far outliers (norm > 2x the training data's max norm). Training is not timed. The
"frontier" is, for each (dataset, model, method, clip), the fewest steps whose metric is within 10% of
that model's ancestral --reference-steps metric, clipped the same way (`frontier`), or "none".

mix16: three equal-weight isotropic Gaussians in 16-D, centres at radius 6 along three fixed orthonormal
directions, scales 0.6, 0.8, 1.0; the held-out reference is a draw with seed + 1, as for the demo's data.

    python bench/bench_quality.py                          # all datasets (the digits UNet takes most of it)
    python bench/bench_quality.py --datasets ring2d --train-steps 2000
    python bench/bench_quality.py --quick                  # smoke run: gmm1d, 50 steps, 200 samples
    python bench/bench_quality.py --samplers ancestral,ddim,diffusers-ddim --clip-modes none
"""
from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import re
import sys
import time
import warnings
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench_assign, when imported from elsewhere

from bench_assign import RESULTS, machine  # noqa: E402
from mixdiff_ext import ops  # noqa: E402
from mixdiff_ext.demo import DATASETS as DEMO_DATASETS, _evaluate  # noqa: E402
from mixdiff_ext.pipeline import build_model, default_config, fit_prior, load_data  # noqa: E402
from mixdiff_ext.training import train  # noqa: E402

# --- data ------------------------------------------------------------------------------------------
MIX16_DIM, MIX16_RADIUS, MIX16_SCALES = 16, 6.0, (0.6, 0.8, 1.0)
_MIX16_DIRECTIONS_SEED = 1234  # fixed: the mixture does not depend on the sample seed


def mix16_centres() -> torch.Tensor:
    """[3, 16] float64: radius 6 along three orthonormal directions (QR of a fixed Gaussian matrix)."""
    g = torch.Generator().manual_seed(_MIX16_DIRECTIONS_SEED)
    q, _ = torch.linalg.qr(torch.randn(MIX16_DIM, len(MIX16_SCALES), generator=g, dtype=torch.float64))
    return MIX16_RADIUS * q.T


def mix16(n: int, seed: int) -> torch.Tensor:
    """[n, 16] float32 draws of the equal-weight three-cluster mixture (module docstring)."""
    g = torch.Generator().manual_seed(seed)
    comp = torch.randint(0, len(MIX16_SCALES), (n,), generator=g)
    scales = torch.tensor(MIX16_SCALES, dtype=torch.float64)
    x = mix16_centres()[comp] + scales[comp, None] * torch.randn(n, MIX16_DIM, generator=g, dtype=torch.float64)
    return x.float()


# name -> (mixDDPM components, training rows (None: all), metric, most samples); the demo's where it has one
DATASETS = {
    "gmm1d": DEMO_DATASETS["gmm1d"],
    "ring2d": DEMO_DATASETS["ring2d"],
    "mix16": (3, 10_000, "sliced_w2", None),
    "digits": DEMO_DATASETS["digits"],
}


def load(name: str, n: int | None, seed: int) -> torch.Tensor:
    return mix16(n, seed) if name == "mix16" else load_data(name, n=n, seed=seed)


# --- methods ---------------------------------------------------------------------------------------
class Method(NamedTuple):
    key: str  # the name --samplers takes
    library: str  # "mixdiff_ext" or "diffusers"
    sampler: str  # our sampler name, or the diffusers scheduler class
    order: int


METHODS = (
    Method("ancestral", "mixdiff_ext", "ancestral", 1),
    Method("ddim", "mixdiff_ext", "ddim", 1),
    Method("dpmsolver++2", "mixdiff_ext", "dpmsolver++", 2),
    Method("dpmsolver++3", "mixdiff_ext", "dpmsolver++", 3),
    Method("sde-dpmsolver++2", "mixdiff_ext", "sde-dpmsolver++", 2),
    Method("diffusers-ddpm", "diffusers", "DDPMScheduler", 1),
    Method("diffusers-ddim", "diffusers", "DDIMScheduler", 1),
    Method("diffusers-dpmsolver++2", "diffusers", "DPMSolverMultistepScheduler", 2),
)
ANCESTRAL = ("ancestral", "diffusers-ddpm")  # the only methods run at --reference-steps as well
CLIP_MODES = ("none", "box")
WITHIN = 0.10  # the frontier's tolerance against the reference metric
EMA = 0.999  # the demo's (train's default)


def label(method: Method) -> str:
    return method.sampler if method.library == "diffusers" else f"{method.sampler} (order {method.order})"


def ours_sampler(model, method: Method, steps: int, clip: str, n: int, seed: int,
                 clip_margin: float | None = None) -> Callable[[], torch.Tensor]:
    kw: dict[str, Any] = dict(steps=steps, sampler=method.sampler, seed=seed, progress=False,
                              clip="auto" if clip == "box" else None)
    if clip == "box" and clip_margin is not None:
        kw["clip_margin"] = clip_margin
    if "dpmsolver" in method.sampler:
        kw["order"] = method.order
    return functools.partial(model.sample, n, **kw)


def diffusers_config(model, method: Method, clip: str, clip_range: float) -> dict[str, Any]:
    config: dict[str, Any] = dict(num_train_timesteps=model.num_timesteps,
                                  trained_betas=model.schedule.betas.numpy(), prediction_type="epsilon")
    if method.sampler == "DPMSolverMultistepScheduler":
        config.update(algorithm_type="dpmsolver++", solver_order=method.order, thresholding=clip == "box",
                      sample_max_value=clip_range)
    else:
        config.update(clip_sample=clip == "box", clip_sample_range=clip_range)
    return config


def scheduler_settings(model, method: Method, clip: str, clip_range: float) -> dict[str, Any]:
    """The scheduler's configuration as the row records it (without the betas, which are ours)."""
    import diffusers

    config = getattr(diffusers, method.sampler)(**diffusers_config(model, method, clip, clip_range)).config
    keys = ("timestep_spacing", "steps_offset", "clip_sample", "clip_sample_range", "thresholding",
            "sample_max_value", "dynamic_thresholding_ratio", "variance_type", "set_alpha_to_one", "algorithm_type",
            "solver_order", "lower_order_final", "final_sigmas_type")
    return {k: config[k] for k in keys if k in config}


def diffusers_sampler(model, method: Method, steps: int, clip: str, n: int, seed: int,
                      clip_range: float) -> Callable[[], torch.Tensor]:
    """The plain scheduler loop on the DDPM network, from our prior draw x_T (the same as our samplers')."""
    import diffusers

    cls = getattr(diffusers, method.sampler)
    config = diffusers_config(model, method, clip, clip_range)
    # [n, D, 1] for vectors: diffusers' thresholding flattens [batch, channels, *rest] and needs a rest
    shape = (n, *model.sample_shape) if len(model.sample_shape) > 1 else (n, model.sample_shape[0], 1)
    labels = torch.zeros(n, dtype=torch.int64)

    def run() -> torch.Tensor:
        sched = cls(**config)
        sched.set_timesteps(steps)
        x = ops.prior_sample(model.means, model.log_weights, model.cov_factor, model.covariance_type, n,
                             seed).x.reshape(shape)
        g = torch.Generator().manual_seed(seed)
        with torch.inference_mode():
            for t in sched.timesteps:
                eps = model.predict_noise(x.reshape(n, -1), t.expand(n), labels, model.means)
                x = sched.step(eps.reshape(shape), t, x, generator=g).prev_sample
        return x.reshape(n, *model.sample_shape)

    return run


class RowCounter:
    """Rows through the denoiser (a forward pre-hook): network calls per sample = rows / n."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.rows = 0
        self._handle = module.register_forward_pre_hook(self._count)

    def _count(self, module, args) -> None:
        self.rows += args[0].shape[0]

    def remove(self) -> None:
        self._handle.remove()


def measure(fn: Callable[[], torch.Tensor], denoiser: torch.nn.Module, repeats: int):
    """(samples of the warm-up run, its network rows, its warnings (e.g. clip="auto" on a model without learned
    boxes samples unclipped and warns), the median and all seconds of `repeats` timed runs)."""
    counter = RowCounter(denoiser)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            samples = fn()
    finally:
        counter.remove()
    messages = sorted({str(w.message) for w in caught})
    time.sleep(0.2)  # scipy / OpenMP pools spin-wait after the previous row's metric
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return samples, counter.rows, messages, float(np.median(times)), times


# --- one dataset -----------------------------------------------------------------------------------
def train_models(name: str, x: torch.Tensor, args) -> tuple[dict[str, torch.nn.Module], dict[str, Any]]:
    """DDPM and mixDDPM (EMA weights), the demo's configurations and budget, the same initialisation seed."""
    components = DATASETS[name][0]
    prior = fit_prior(x, components, seed=args.seed)
    models, info = {}, {}
    for variant, model_label in (("ddpm", "DDPM"), ("mixddpm", "mixDDPM")):
        torch.manual_seed(args.seed)
        model = build_model(default_config(variant, tuple(x.shape[1:])), prior)
        result = train(model, x, args.train_steps, batch_size=args.batch_size, lr=args.lr, ema=EMA,
                       seed=args.seed, progress=False, log_every=max(args.train_steps // 20, 1))
        models[model_label] = result.ema_model.eval()
        info[model_label] = {"components": model.n_components, "train_s": result.seconds, "train_steps": result.steps,
                             "final_loss": result.history[-1]["loss"] if result.history else None}
        print(f"  trained {model_label} (K={model.n_components}): {result.seconds:.1f} s", flush=True)
    return models, info


def score(samples: torch.Tensor, reference: torch.Tensor, metric: str, max_norm: float, seed: int) -> dict[str, Any]:
    flat = samples.reshape(samples.shape[0], -1).double()
    finite = torch.isfinite(flat).all(1)
    out: dict[str, Any] = {"nonfinite": int((~finite).sum()),
                           "far_outliers": float((~(flat.norm(dim=1) <= 2 * max_norm)).double().mean())}
    if bool(finite.all()):
        metrics = _evaluate(samples, reference, seed)
        out.update(value=metrics[metric], metrics=metrics)
    else:  # the metrics refuse NaN / inf: no value, the count says why
        out.update(value=None, metrics={})
    return out


def run_dataset(name: str, args, methods: Sequence[Method]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    components, n_train, metric, most = DATASETS[name]
    n = args.samples if most is None else min(most, args.samples)
    x = load(name, n_train, args.seed)
    # held-out reference: a fresh draw of the synthetic generators; for digits the bundled set itself
    reference = x if name == "digits" else load(name, n, args.seed + 1)
    flat = x.reshape(x.shape[0], -1)
    clip_range = float(flat.abs().max())
    max_norm = float(flat.norm(dim=1).max())
    models, train_info = train_models(name, x, args)
    info = {"training_rows": x.shape[0], "reference_rows": reference.shape[0], "samples": n, "metric": metric,
            "mixddpm_components": components, "max_abs": clip_range, "max_norm": max_norm, "models": train_info}

    rows = []
    for method in methods:
        model_labels = ("DDPM",) if method.library == "diffusers" else tuple(models)
        step_counts = list(args.steps) + ([args.reference_steps] if method.key in ANCESTRAL else [])
        for model_label in model_labels:
            model = models[model_label]
            for steps in step_counts:
                reference_row = steps == args.reference_steps and steps not in args.steps
                for clip in args.reference_clip_modes if reference_row else args.clip_modes:
                    if method.library == "diffusers":
                        fn = diffusers_sampler(model, method, steps, clip, n, args.sample_seed, clip_range)
                        settings = scheduler_settings(model, method, clip, clip_range)
                        clip_name = "none" if clip == "none" else (
                            f"thresholding {clip_range:.3g}" if "DPMSolver" in method.sampler
                            else f"clip_sample {clip_range:.3g}")
                    else:
                        fn = ours_sampler(model, method, steps, clip, n, args.sample_seed, args.clip_margin)
                        settings = {k: v for k, v in fn.keywords.items() if k not in ("steps", "seed", "progress")}
                        clip_name = "none" if clip == "none" else "auto"
                    samples, net_rows, messages, wall, times = measure(fn, model.denoiser, args.repeats)
                    row = {"dataset": name, "model": model_label, "library": method.library, "method": method.key,
                           "sampler": method.sampler, "order": method.order, "steps": steps, "clip": clip_name,
                           "metric": metric, **score(samples, reference, metric, max_norm, args.seed),
                           "network_calls": net_rows / n, "wall_s": wall, "wall_s_runs": times, "samples": n,
                           "samples_per_s": n / wall, "settings": settings,
                           "warnings": messages}
                    rows.append(row)
                    value = "n/a" if row["value"] is None else f"{row['value']:.4g}"
                    print(f"  {model_label:<8} {label(method):<28} {steps:>5} clip {clip_name:<18} {metric} {value:<9}"
                          f" {wall:8.3f} s  far {row['far_outliers']:.4f}", flush=True)
    return rows, info


# --- report ----------------------------------------------------------------------------------------
def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| dataset | model | sampler | order | steps | clip | metric | value | network calls | wall s | "
             "samples/s | far outliers |",
             "|---|---|---|---:|---:|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        value = "n/a" if r["value"] is None else f"{r['value']:.4g}"
        sampler = r["sampler"] if r["library"] == "mixdiff_ext" else f"diffusers {r['sampler']}"
        lines.append(f"| {r['dataset']} | {r['model']} | {sampler} | {r['order']} | {r['steps']} | {r['clip']} | "
                     f"{r['metric']} | {value} | {r['network_calls']:.0f} | {r['wall_s']:.3f} | "
                     f"{r['samples_per_s']:.0f} | {r['far_outliers']:.4f} |")
    return "\n".join(lines)


def frontier(rows: Sequence[dict[str, Any]], reference_steps: int) -> list[dict[str, Any]]:
    """For each (dataset, model, method, clip): the fewest steps whose metric is within WITHIN of the model's
    ancestral metric at reference_steps, clipped like the row (None when no step count gets there, or no
    reference). Like with like: bounding the samples moves the metric at every step count (on digits
    clamping ancestral-1000's own samples to the data's range costs 16% of Frechet), so an unclipped row is
    held against the unclipped reference and a clipped one (ours clip="auto", diffusers' clip_sample or
    thresholding) against ours with clip="auto", or the unclipped reference when that was not run."""
    refs = {(r["dataset"], r["model"], r["clip"] != "none"): r["value"] for r in rows
            if r["library"] == "mixdiff_ext" and r["method"] == "ancestral" and r["steps"] == reference_steps}
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["model"], r["library"], r["method"], r["clip"]), []).append(r)
    out = []
    for (dataset, model, library, method, clip), members in groups.items():
        ref = refs.get((dataset, model, clip != "none"), refs.get((dataset, model, False)))
        hits = sorted(r["steps"] for r in members
                      if ref is not None and r["value"] is not None and r["value"] <= (1 + WITHIN) * ref)
        out.append({"dataset": dataset, "model": model, "library": library, "method": method, "clip": clip,
                    "sampler": members[0]["sampler"], "order": members[0]["order"], "reference": ref,
                    "fewest_steps": hits[0] if hits else None})
    return out


def frontier_table(entries: Sequence[dict[str, Any]], reference_steps: int) -> str:
    lines = [f"| dataset | model | method | clip | ancestral-{reference_steps} metric | fewest steps within "
             f"{100 * WITHIN:.0f}% |", "|---|---|---|---|---:|---:|"]
    for e in entries:
        ref = "n/a" if e["reference"] is None else f"{e['reference']:.4g}"
        name = e["sampler"] if e["library"] == "mixdiff_ext" else f"diffusers {e['sampler']}"
        if e["library"] == "mixdiff_ext":
            name = f"{name} (order {e['order']})"
        steps = "none" if e["fewest_steps"] is None else str(e["fewest_steps"])
        lines.append(f"| {e['dataset']} | {e['model']} | {name} | {e['clip']} | {ref} | {steps} |")
    return "\n".join(lines)


def cpu_tag(info: dict[str, Any]) -> str:
    """'intel-xeon', 'amd-epyc', ...: the first two words of the CPU model, for the file name."""
    words = re.sub(r"\((r|tm)\)", "", info.get("cpu", "cpu").lower()).split()
    return "-".join(re.sub(r"[^a-z0-9]", "", w) for w in words[:2]) or "cpu"


# --- command line ----------------------------------------------------------------------------------
def _names(values: Sequence[str] | None) -> list[str] | None:
    """Comma- or space-separated lists: ["a,b", "c"] -> ["a", "b", "c"]."""
    return None if values is None else [v for value in values for v in value.split(",") if v]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", help=f"any of {', '.join(DATASETS)} (default: all)")
    p.add_argument("--train-steps", type=int, help="training steps per model (default 400; --quick 50)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--samples", type=int, help="samples per row (default 3000; digits at most 1000; --quick 200)")
    p.add_argument("--steps", nargs="+", help="sampling steps (default 5,10,20,50,100; --quick 5,10)")
    p.add_argument("--reference-steps", type=int, default=1000, help="the ancestral-only long run (default 1000)")
    p.add_argument("--samplers", nargs="+", help=f"a subset of {', '.join(m.key for m in METHODS)} (default: all)")
    p.add_argument("--clip-modes", nargs="+", help="none and/or box (box: clip='auto' for ours, the schedulers' "
                   "clip_sample / thresholding for diffusers; default both)")
    p.add_argument("--reference-clip-modes", nargs="+", default=None,
                   help="clip modes of the --reference-steps rows (default: --clip-modes; 'none' alone halves "
                        "their cost, and the frontier then holds clipped rows against the unclipped reference)")
    p.add_argument("--clip-margin", type=float, default=None,
                   help="our samplers' clip_margin under clip box (default: the library's)")
    p.add_argument("--repeats", type=int, help="timed runs per row after the warm-up (default 3; --quick 1)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0, help="data, prior, initialisation and training seed")
    p.add_argument("--sample-seed", type=int, default=0, help="the sampling seed every method uses")
    p.add_argument("--quick", action="store_true", help="smoke run: one dataset (gmm1d unless --datasets), 50 "
                   "training steps, 200 samples, steps 5,10, 1 repeat")
    p.add_argument("--out", help="JSON path (default bench/results/quality_<cpu>_<date>.json; --quick adds _quick)")
    args = p.parse_args(argv)

    defaults = dict(train_steps=50, samples=200, steps=["5", "10"], repeats=1) if args.quick else dict(
        train_steps=400, samples=3000, steps=["5", "10", "20", "50", "100"], repeats=3)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.datasets = _names(args.datasets) or (["gmm1d"] if args.quick else list(DATASETS))
    if args.quick:
        args.datasets = args.datasets[:1]
    args.steps = [int(s) for s in _names(args.steps)]
    args.samplers = _names(args.samplers) or [m.key for m in METHODS]
    args.clip_modes = _names(args.clip_modes) or list(CLIP_MODES)
    args.reference_clip_modes = _names(args.reference_clip_modes) or args.clip_modes
    for name, values, allowed in (("--datasets", args.datasets, DATASETS), ("--samplers", args.samplers,
                                  [m.key for m in METHODS]), ("--clip-modes", args.clip_modes, CLIP_MODES),
                                  ("--reference-clip-modes", args.reference_clip_modes, CLIP_MODES)):
        unknown = [v for v in values if v not in allowed]
        if unknown:
            p.error(f"{name}: unknown {', '.join(unknown)}; choose from {', '.join(allowed)}")
    for name in ("train_steps", "samples", "repeats", "threads", "reference_steps", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if any(s < 1 or s > args.reference_steps for s in args.steps):
        p.error(f"--steps must lie in [1, --reference-steps = {args.reference_steps}]")
    return args


def main(argv: Sequence[str] | None = None) -> str:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    import diffusers

    methods = [m for m in METHODS if m.key in args.samplers]
    info = {**machine(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "diffusers": diffusers.__version__, "load_average_start": list(os.getloadavg())}
    date = dt.datetime.now(dt.timezone.utc)
    config = {"datasets": args.datasets, "train_steps": args.train_steps, "batch_size": args.batch_size,
              "lr": args.lr, "ema": EMA, "samples": args.samples, "digits_samples":
              min(args.samples, DATASETS["digits"][3]), "steps": args.steps, "reference_steps": args.reference_steps,
              "samplers": args.samplers, "clip_modes": args.clip_modes,
              "reference_clip_modes": args.reference_clip_modes, "clip_margin": args.clip_margin,
              "repeats": args.repeats, "seed": args.seed, "sample_seed": args.sample_seed, "quick": args.quick,
              "within": WITHIN}
    print(f"bench_quality: {', '.join(args.datasets)}; {args.train_steps} training steps of batch {args.batch_size}, "
          f"{args.samples} samples, steps {args.steps} + ancestral {args.reference_steps}, {args.repeats} repeats, "
          f"{torch.get_num_threads()} threads", flush=True)
    t0 = time.perf_counter()
    rows, per_dataset = [], {}
    for name in args.datasets:
        print(f"\n== {name}", flush=True)
        dataset_rows, per_dataset[name] = run_dataset(name, args, methods)
        rows += dataset_rows
    entries = frontier(rows, args.reference_steps)
    info["load_average_end"] = list(os.getloadavg())
    record = {"benchmark": "bench_quality", "date": date.isoformat(timespec="seconds"), "machine": info,
              "config": config, "datasets": per_dataset, "seconds": time.perf_counter() - t0, "rows": rows,
              "frontier": entries}
    out = args.out or os.path.join(
        RESULTS, f"quality_{cpu_tag(info)}_{date.date().isoformat()}{'_quick' if args.quick else ''}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
    print(f"\n{markdown_table(rows)}\n\nfrontier (within {100 * WITHIN:.0f}% of the model's ancestral "
          f"{args.reference_steps}-step metric, clipped alike):\n\n{frontier_table(entries, args.reference_steps)}\n")
    print(f"({record['seconds']:.0f} s) wrote {out}")
    return out


if __name__ == "__main__":
    main()
