"""`mixdiff`: fit a mixture prior, train DDPM / mixDDPM / SGM / mixSGM, sample, evaluate, run the demo.

    mixdiff fit-prior --data ring2d --components 8 --out runs/prior
    mixdiff train --data ring2d --model mixddpm --components 8 --steps 2000 --out runs/ring
    mixdiff sample --run runs/ring --n 10000 --steps 20 --out runs/ring/samples.npy
    mixdiff evaluate --samples runs/ring/samples.npy --reference ring2d
    mixdiff info
    mixdiff demo [--full]
    mixdiff conditioning-demo [--full]

--data takes a built-in dataset (gmm1d, ring2d, moons, anisotropic, digits, arrivals, shapes) or a .npy / .npz /
.csv / .pt file of [N, D] vectors or [N, C, H, W] images. Every command that writes an output directory
writes its configuration to config.json there.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time

import numpy as np
import torch

from . import metrics, sampling
from .pipeline import (MODEL_KINDS, build_model, default_config, fit_prior, load_data, load_run, plot_samples,
                       save_json, save_run)
from .prior import GaussianMixturePrior
from .schedules import DEFAULT_SAMPLER, DEFAULT_SOLVER_STEPS


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="built-in dataset name or a .npy/.npz/.csv/.pt file")
    p.add_argument("--n", type=int, default=None, help="rows to generate for a built-in synthetic dataset")
    p.add_argument("--seed", type=int, default=0, help="seed of the data, the fit and the training")


def _prior_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--components", type=int, default=8, help="number of mixture components K")
    p.add_argument("--covariance-type", default="identity", choices=("identity", "spherical", "diag", "full"))
    p.add_argument("--method", default="kmeans", choices=("kmeans", "em"), help="k-means dispatcher or EM")


def _args_config(args, command: str) -> dict:
    """The command's arguments, for config.json."""
    return {"command": command, **{k: v for k, v in vars(args).items() if k != "func"}}


def _fit(args) -> tuple[torch.Tensor, GaussianMixturePrior]:
    x = load_data(args.data, args.n, args.seed)
    return x, fit_prior(x, args.components, args.covariance_type, args.method, args.seed)


def cmd_fit_prior(args) -> None:
    x, prior = _fit(args)
    os.makedirs(args.out, exist_ok=True)
    prior.save(os.path.join(args.out, "prior.pt"))
    save_json(os.path.join(args.out, "config.json"), _args_config(args, "fit-prior"))
    print(f"fitted {prior.n_components} components ({args.method}, {args.covariance_type}) to {tuple(x.shape)} "
          f"from {args.data}; weights {[round(w, 4) for w in prior.weights.tolist()]}")
    print(f"wrote {os.path.join(args.out, 'prior.pt')}")


def cmd_train(args) -> None:
    from .training import train

    if args.prior is not None:
        x = load_data(args.data, args.n, args.seed)
        prior = GaussianMixturePrior.load(args.prior)
    else:
        x, prior = _fit(args)
    config = default_config(args.model, tuple(x.shape[1:]), component_input=args.component_input,
                            centre_input=args.centre_input, schedule=args.schedule, timesteps=args.timesteps,
                            prediction_type=args.prediction_type, sde=args.sde, net=args.net, hidden=args.hidden, depth=args.depth, base=args.base)
    if args.model.endswith("sgm") and args.sde == "ve":
        from .models import ve_sigma_max

        rule_prior = prior if args.model == "mixsgm" else GaussianMixturePrior.standard(prior.dim)
        config["sigma_max"] = (args.sigma_max if args.sigma_max is not None
                               else ve_sigma_max(rule_prior, x.reshape(x.shape[0], -1).float()))
    torch.manual_seed(args.seed)
    model = build_model(config, prior)
    os.makedirs(args.out, exist_ok=True)
    save_json(os.path.join(args.out, "train_config.json"), _args_config(args, "train"))
    result = train(model, x, args.steps, batch_size=args.batch_size, lr=args.lr, ema=args.ema, seed=args.seed,
                   device=args.device, checkpoint_dir=args.out, checkpoint_every=args.checkpoint_every,
                   log_every=args.log_every, progress=not args.no_progress)
    save_run(args.out, result.ema_model.cpu(), config, result.ema_model.prior.to("cpu"))
    print(f"trained {args.model} for {result.steps} steps ({result.steps_per_second:.1f} steps/s); "
          f"final loss {result.history[-1]['loss']:.4g}" if result.history else "no steps run")
    print(f"wrote {args.out}")


def _save_samples(path: str, x: torch.Tensor) -> None:
    ext = os.path.splitext(path)[1]
    if ext == ".npy":
        np.save(path, x.cpu().numpy())
    elif ext == ".pt":
        torch.save(x.cpu(), path)
    else:
        raise ValueError(f"--out must end in .npy or .pt, got {path!r}")


def cmd_sample(args) -> None:
    model, config = load_run(args.run)
    model = model.to(args.device)
    kw = dict(steps=args.steps, seed=args.seed, batch_size=args.batch_size, progress=not args.no_progress,
              order=args.order, clip=None if args.clip == "none" else "auto", clip_margin=args.clip_margin)
    if config["model"].endswith("sgm"):
        # DPM-Solver++ needs the VP SDE; VE keeps the reverse SDE
        vp = config["sde"] == "vp"
        sampler = args.sampler or (DEFAULT_SAMPLER if vp else "euler_maruyama")
        kw.update(sampler=sampler,
                  steps=args.steps or (DEFAULT_SOLVER_STEPS if sampler.endswith("dpmsolver++") else 1000))
    else:
        kw.update(sampler=args.sampler or DEFAULT_SAMPLER, eta=args.eta)
    t0 = time.perf_counter()
    x = model.sample(args.n, **kw)
    seconds = time.perf_counter() - t0
    out = args.out or os.path.join(args.run, "samples.npy")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    _save_samples(out, x)
    save_json(os.path.splitext(out)[0] + ".config.json", _args_config(args, "sample"))
    print(f"{args.n} samples in {seconds:.2f} s ({args.n / max(seconds, 1e-9):.0f} samples/s) -> {out}")
    if x.dim() == 4 or x.shape[1] <= 2:
        png = os.path.splitext(out)[0] + ".png"
        plot_samples(png, {"samples": x})
        print(f"plot -> {png}")


def cmd_evaluate(args) -> None:
    samples = load_data(args.samples)
    reference = load_data(args.reference, args.n, args.seed)
    result = metrics.evaluate(samples, reference, seed=args.seed)
    print(json.dumps(result, indent=2))
    if args.out:
        save_json(args.out, {"samples": args.samples, "reference": args.reference, **result})


def cmd_info(args) -> None:
    from . import build_info

    print(json.dumps(build_info(), indent=2, default=str))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mixdiff", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    p = sub.add_parser("fit-prior", help="fit the mixture prior (k-means dispatcher or EM) to data")
    _data_args(p)
    _prior_args(p)
    p.add_argument("--out", required=True, help="output directory (prior.pt, config.json)")
    p.set_defaults(func=cmd_fit_prior)

    p = sub.add_parser("train", help="train a DDPM / mixDDPM / SGM / mixSGM model")
    _data_args(p)
    _prior_args(p)
    p.add_argument("--prior", default=None, help="a prior.pt from fit-prior (default: fit one here)")
    p.add_argument("--model", default="mixddpm", choices=MODEL_KINDS)
    p.add_argument("--component-input", default=None, choices=("embedding", "none"),
                   help="give the network the component (default: embedding for mix models)")
    p.add_argument("--centre-input", default=None, action=argparse.BooleanOptionalAction,
                   help="feed x_t - mu_j (default: on for mix models)")
    p.add_argument("--schedule", default="linear", choices=("linear", "scaled_linear", "cosine"))
    p.add_argument("--timesteps", type=int, default=1000)
    p.add_argument("--prediction-type", default="epsilon", choices=("epsilon", "sample", "v_prediction"),
                   help="what the network predicts (diffusers' names, in x - mu_j)")
    p.add_argument("--sde", default="vp", choices=("vp", "ve"), help="for sgm / mixsgm")
    p.add_argument("--sigma-max", type=float, default=None,
                   help="VE sigma_max (default: the within-component rule of models.ve_sigma_max)")
    p.add_argument("--net", default=None, choices=("mlp", "unet"), help="default: unet for images, else mlp")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--base", type=int, default=32)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--device", default="cpu")
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", required=True, help="run directory (resumes from its checkpoint if present)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="sample from a trained run")
    p.add_argument("--run", required=True, help="run directory written by train")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--sampler", default=None,
                   help="sde-dpmsolver++ (default) | dpmsolver++ | ancestral | ddim (ddpm models); sde-dpmsolver++ "
                        "(default for VP) | dpmsolver++ | euler_maruyama (default for VE) | pc | ode (sgm models)")
    p.add_argument("--steps", type=int, default=None,
                   help="default: 20 for DPM-Solver++, all T for ancestral / ddim, 1000 for the SDE samplers")
    p.add_argument("--order", type=int, default=2, choices=(1, 2, 3), help="DPM-Solver++ order")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM eta")
    p.add_argument("--clip", default="auto", choices=("auto", "none"),
                   help="auto: clip x0_hat to each component's training-data box (default); none: no clipping")
    p.add_argument("--clip-margin", type=float, default=sampling.DEFAULT_CLIP_MARGIN,
                   help="relative margin of the boxes on all steps but the last (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=None, help="chunk size; the result does not depend on it")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", default=None, help=".npy or .pt file (default: RUN/samples.npy); a PNG is written "
                                               "beside it for 1-D, 2-D and image data")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("evaluate", help="compare samples with reference data (metrics.evaluate)")
    p.add_argument("--samples", required=True, help=".npy/.npz/.csv/.pt samples")
    p.add_argument("--reference", required=True, help="built-in dataset name or file")
    p.add_argument("--n", type=int, default=None, help="rows of a built-in synthetic reference")
    p.add_argument("--seed", type=int, default=1, help="seed of a built-in reference (1: a held-out draw)")
    p.add_argument("--out", default=None, help="write the metrics as JSON here")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("info", help="build information (CUDA, torch versions, threads)")
    p.set_defaults(func=cmd_info)

    sub.add_parser("demo", help="the headline comparison on built-in data (see `mixdiff demo --help`)",
                   add_help=False)
    sub.add_parser("conditioning-demo", add_help=False,
                   help="feature vs class conditioning, NGMG vs BCE, the auxiliary NGMG term on the shapes data "
                        "(see `mixdiff conditioning-demo --help`)")
    return parser


# subcommands that parse their own options: name -> module with main(argv)
SELF_PARSING = {"demo": "demo", "conditioning-demo": "conditioning_demo"}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if argv and argv[0] in SELF_PARSING:
        importlib.import_module(f".{SELF_PARSING[argv[0]]}", __package__).main(argv[1:])
        return 0
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"mixdiff {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
