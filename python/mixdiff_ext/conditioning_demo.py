"""Conditioning experiments on the built-in `shapes` data (Lu, Wu et al. 2024, our interpretation).

Three experiments, each over several seeds, reported as measured:

1. Feature vs class conditioning. Two conditional diffusion models are trained on the combinations
   seen in training: one is conditioned on the attributes' Gaussian-mixture features, the other on one
   class per combination. A judge checks the samples' attributes. The judge is a BCE classifier trained
   on all 16 combinations, and its accuracy is reported. Results are given separately for seen and
   held-out combinations; a held-out combination has no class, so the class model cannot be asked for it.
2. NGMG vs BCE attribute classifiers. Both are trained on the seen combinations, with and without
   flipped labels. We report clean test accuracy on all combinations, and the training loss's spread
   across seeds.
3. Feature-conditioned diffusion with and without the auxiliary NGMG term. The term is
   lambda * NGMG(f(x0_hat)), where f is the clean-label NGMG classifier of experiment 2. We report the
   samples' attribute accuracy, and the spread across seeds of the final eps-loss on a fixed evaluation
   batch and of the training loss.

The output directory gets results.md, results.json and config.json. Plots: sample grids (one row per
combination), and loss curves for the classifiers (one plot per loss) and the diffusion runs.

    mixdiff conditioning-demo [--full] [--out DIR] [--seeds 0 1 ...]   (or python -m mixdiff_ext.conditioning_demo)
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from typing import Any

import torch
from torch import nn

from . import data
from .classifier import AttributeClassifier, AttributeObjective, attribute_accuracy
from .conditioning import GMMConditioner, attribute_classes
from .models import MixDDPM
from .nets import MLP
from .pipeline import _pyplot, plot_losses, save_json, write_results
from .prior import GaussianMixturePrior
from .training import train

QUICK = {"n_train": 8000, "n_judge": 8000, "judge_steps": 600, "classifier_steps": 400, "diffusion_steps": 3000,
         "batch_size": 128, "samples_per_combination": 32, "sample_steps": 50, "seeds": (0, 1),
         "label_noise": (0.0, 0.2), "cond_dim": 8, "cond_sigma": 0.5, "ngmg_sigma": 1.0, "cond_dropout": 0.1,
         "guidance_scale": 2.0, "aux_weight": 0.1, "hidden": 512, "depth": 3, "lr": 1e-3}
FULL = dict(QUICK, diffusion_steps=8000, classifier_steps=1000, samples_per_combination=64, seeds=(0, 1, 2))
IMAGE = (1, 16, 16)
PIXELS = IMAGE[0] * IMAGE[1] * IMAGE[2]


def _conditioners(plan: dict, seen: torch.Tensor) -> dict[str, GMMConditioner]:
    return {"features": GMMConditioner(len(data.SHAPES_ATTRIBUTES), plan["cond_dim"], plan["cond_sigma"]),
            "classes": GMMConditioner(len(seen), plan["cond_dim"], plan["cond_sigma"], mode="classes")}


def _flip(attributes: torch.Tensor, rate: float, seed: int) -> torch.Tensor:
    """Each label flipped independently with probability `rate` (seeded)."""
    if rate == 0:
        return attributes
    g = torch.Generator().manual_seed(10_000 + seed)
    return attributes ^ (torch.rand(attributes.shape, generator=g) < rate).to(attributes.dtype)


def _loss_spread(histories: list[list[dict[str, float]]]) -> dict[str, float]:
    """Across-seed standard deviation of the logged training loss, averaged over the logged steps, and
    relative to the mean loss's magnitude; plus the final losses' across-seed standard deviation."""
    if len(histories) < 2:
        return {"loss_std_across_seeds": float("nan"), "relative_loss_std": float("nan"),
                "final_loss_std": float("nan")}
    curves = torch.tensor([[h["loss"] for h in hist] for hist in histories], dtype=torch.float64)
    std = curves.std(0)
    return {"loss_std_across_seeds": float(std.mean()),
            "relative_loss_std": float((std / curves.mean(0).abs().clamp_min(1e-12)).mean()),
            "final_loss_std": float(curves[:, -1].std())}


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else float("nan"))


def train_judge(plan: dict, conditioner: GMMConditioner, seed: int, progress: bool) -> tuple[AttributeObjective, dict]:
    """The attribute judge: a BCE classifier on all 16 combinations, with its accuracy on fresh images."""
    x, a = data.shapes(plan["n_judge"], seed=1000 + seed)
    torch.manual_seed(seed)
    judge = AttributeObjective(AttributeClassifier(IMAGE, a.shape[1]), conditioner, "bce")
    result = train(judge, x, plan["judge_steps"], batch_size=plan["batch_size"], lr=2e-3, ema=None, seed=seed,
                   conditions=a, progress=progress, log_every=max(plan["judge_steps"] // 20, 1))
    x_test, a_test = data.shapes(4000, seed=2000 + seed)
    return result.model.eval(), attribute_accuracy(result.model.predict(x_test), a_test)


def run_classifiers(plan, split, conditioner, seeds, progress) -> tuple[list[dict], dict, AttributeObjective]:
    """NGMG vs BCE classifiers on the seen combinations with flipped labels; returns the table rows, the
    loss histories and the clean-label NGMG classifier of the first seed (the auxiliary judge)."""
    x_test, a_test = data.shapes(4000, seed=3000)
    rows, histories, aux = [], {}, None
    for loss in ("ngmg", "bce"):
        for noise in plan["label_noise"]:
            accs, hists = [], []
            for seed in seeds:
                torch.manual_seed(seed)
                out_dim = conditioner.dim if loss == "ngmg" else conditioner.num
                objective = AttributeObjective(AttributeClassifier(IMAGE, out_dim), conditioner, loss,
                                               ngmg_sigma=plan["ngmg_sigma"])
                labels = _flip(split.train_attributes, noise, seed)
                result = train(objective, split.train_images, plan["classifier_steps"], batch_size=plan["batch_size"],
                               lr=2e-3, ema=None, seed=seed, conditions=labels, progress=progress,
                               log_every=max(plan["classifier_steps"] // 20, 1))
                model = result.model.eval()
                accs.append(attribute_accuracy(model.predict(x_test), a_test))
                hists.append(result.history)
                if loss == "ngmg" and noise == 0 and aux is None:
                    aux = model
            name = f"{loss.upper()}, {int(round(100 * noise))}% flipped"
            histories.update({f"{name}, seed {s}": h for s, h in zip(seeds, hists)})
            all_m, all_s = _mean_std([a["all"] for a in accs])
            mean_m, mean_s = _mean_std([a["mean"] for a in accs])
            rows.append({"loss": loss, "label_noise": noise, "seeds": list(seeds), "accuracy_all": all_m,
                         "accuracy_all_std": all_s, "accuracy_mean": mean_m, "accuracy_mean_std": mean_s,
                         "per_seed": accs, **_loss_spread(hists)})
    return rows, histories, aux


def _diffusion_model(plan, conditioner, aux_classifier=None, aux_weight=0.0) -> MixDDPM:
    """A conditional DDPM on flattened images. The denoiser is an MLP: at this budget it follows the
    global attributes (position, size) far better than the bundled UNet, whose condition enters as
    per-channel biases (measured while building this demo: the UNet's position and size accuracy
    stayed at chance after 1500 steps)."""
    net = MLP(PIXELS, hidden=plan["hidden"], depth=plan["depth"], cond_dim=conditioner.dim)
    if aux_classifier is not None:  # the classifier takes images
        aux_classifier = nn.Sequential(nn.Unflatten(1, IMAGE), aux_classifier)
    return MixDDPM(net, GaussianMixturePrior.standard(PIXELS), conditioner=conditioner,
                   cond_dropout=plan["cond_dropout"], aux_classifier=aux_classifier, aux_weight=aux_weight,
                   aux_sigma=plan["ngmg_sigma"])


def _conditions(conditioner: GMMConditioner, attributes: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
    """What the model is conditioned on: the attributes, or the class of each (seen) combination."""
    return attributes if conditioner.mode == "features" else attribute_classes(attributes, seen)[0]


def _eval_loss(model: MixDDPM, seen: torch.Tensor, n: int = 1024) -> float:
    """The eps-regression loss on a fixed batch of fresh seen-combination images, fixed timesteps and
    noise, without condition dropout or auxiliary term."""
    x, a = data.shapes(n, seed=4000, combinations=seen)
    plain = copy.deepcopy(model)
    plain.aux_weight, plain.cond_dropout = 0.0, 0.0
    t = torch.randint(0, plain.num_timesteps, (n,), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return float(plain.loss(x.flatten(1), t=t, seed=0, conditions=_conditions(plain.conditioner, a, seen)))


def train_diffusion(plan, split, conditioner, seed, progress, aux_classifier=None, aux_weight=0.0):
    """A conditional DDPM on the seen combinations; conditions are attributes or class ids."""
    conditions = _conditions(conditioner, split.train_attributes, split.seen)
    torch.manual_seed(seed)
    model = _diffusion_model(plan, conditioner, aux_classifier, aux_weight)
    result = train(model, split.train_images.flatten(1), plan["diffusion_steps"], batch_size=plan["batch_size"],
                   lr=plan["lr"], seed=seed, conditions=conditions, progress=progress,
                   log_every=max(plan["diffusion_steps"] // 30, 1))
    return result, _eval_loss(result.ema_model, split.seen)


def sample_combinations(plan, model: MixDDPM, judge: AttributeObjective, split, seed: int, progress: bool):
    """samples_per_combination samples of every combination the model can be asked for, judged; returns
    the accuracies on seen and held-out combinations and the samples per combination (None: no class)."""
    combos = data.shapes_combinations()
    per = plan["samples_per_combination"]
    ids, _ = attribute_classes(combos, split.seen)
    askable = ids >= 0 if model.conditioner.mode == "classes" else torch.ones(len(combos), dtype=torch.bool)
    wanted = combos[askable].repeat_interleave(per, 0)
    conditions = ids[askable].repeat_interleave(per, 0) if model.conditioner.mode == "classes" else wanted
    t0 = time.perf_counter()
    x = model.sample(len(wanted), steps=plan["sample_steps"], sampler="ddim", seed=seed, conditions=conditions,
                     guidance_scale=plan["guidance_scale"], clip=(-1.0, 1.0), progress=progress).reshape(-1, *IMAGE)
    seconds = time.perf_counter() - t0
    predicted = judge.predict(x)
    held = attribute_classes(wanted, split.held_out)[0] >= 0
    result = {"sample_s": seconds}
    for name, rows in (("seen", ~held), ("held_out", held)):
        result[name] = attribute_accuracy(predicted[rows], wanted[rows]) if bool(rows.any()) else None
    grids, it = [], iter(x.split(per))
    for ok in askable.tolist():
        grids.append(next(it) if ok else None)
    return result, grids


def plot_grids(path: str, panels: dict[str, list], held_out: torch.Tensor, columns: int = 8) -> None:
    """One panel per model: a row of samples per attribute combination (held-out rows marked *)."""
    plt = _pyplot()
    combos = data.shapes_combinations()
    held = (attribute_classes(combos, held_out)[0] >= 0).tolist()
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels) + 1.6, 6.2), squeeze=False)
    for p, (ax, (title, grids)) in enumerate(zip(axes[0], panels.items())):
        rows = []
        for g in grids:
            row = torch.full((16, 16 * columns), 0.0) if g is None else \
                torch.cat([g[i, 0] if i < len(g) else torch.full((16, 16), 0.0) for i in range(columns)], 1)
            rows.append(row.clamp(-1, 1))
        ax.imshow(torch.cat(rows, 0).numpy(), cmap="gray", vmin=-1, vmax=1, aspect="equal")
        ax.set_xticks([])
        ax.set_yticks([16 * i + 8 for i in range(len(combos))])
        names = ["/".join(data.SHAPES_VALUES[k][v][:2] for k, v in zip(data.SHAPES_ATTRIBUTES, c.tolist()))
                 + (" *" if h else "") for c, h in zip(combos, held)]
        ax.set_yticklabels(names if p == 0 else [""] * len(names), fontsize=6)
        ax.set_title(title, fontsize=8)
    fig.suptitle("one row per combination (shape/size/position/fill); * held out of training; grey: no class",
                 fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _fmt(value: float | None, std: float | None = None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if std is None or std != std else f"{value:.3f} ± {std:.3f}"


def markdown(results: dict[str, Any]) -> str:
    out = [f"Judge (BCE classifier on all 16 combinations): all-attributes accuracy "
           f"{results['judge']['all']:.4f} on fresh images.", "",
           "### Feature vs class conditioning (accuracy = fraction of samples with every attribute right)", "",
           "| conditioning | seed | seen: all | seen: per attribute | held out: all | held out: per attribute |",
           "|---|---:|---:|---:|---:|---:|"]
    for r in results["conditioning"]:
        seen, held = r["seen"], r["held_out"]
        out.append(f"| {r['mode']} | {r['seed']} | {_fmt(seen['all'])} | {_fmt(seen['mean'])} | "
                   f"{_fmt(held and held['all'])} | {_fmt(held and held['mean'])} |")
    out += ["", "### NGMG vs BCE classifiers (clean test accuracy on all combinations; mean ± std over seeds)", "",
            "| loss | labels flipped | accuracy: all | accuracy: per attribute | loss std across seeds | "
            "relative | final loss std |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results["classifiers"]:
        out.append(f"| {r['loss'].upper()} | {100 * r['label_noise']:.0f}% | "
                   f"{_fmt(r['accuracy_all'], r['accuracy_all_std'])} | "
                   f"{_fmt(r['accuracy_mean'], r['accuracy_mean_std'])} | {r['loss_std_across_seeds']:.4g} | "
                   f"{r['relative_loss_std']:.3g} | {r['final_loss_std']:.3g} |")
    out += ["", "### Diffusion with and without the auxiliary NGMG term (feature conditioning; mean ± std over seeds)",
            "", "| lambda | seen: all | held out: all | eval eps-loss | eval loss std across seeds | "
            "training loss std across seeds (relative) |", "|---:|---:|---:|---:|---:|---:|"]
    for r in results["auxiliary"]:
        out.append(f"| {r['aux_weight']:g} | {_fmt(r['seen_all'], r['seen_all_std'])} | "
                   f"{_fmt(r['held_out_all'], r['held_out_all_std'])} | {_fmt(r['eval_loss'], r['eval_loss_std'])} | "
                   f"{r['eval_loss_std']:.3g} | {r['relative_loss_std']:.3g} |")
    return "\n".join(out)


def run(plan: dict, out: str, progress: bool) -> dict[str, Any]:
    seeds = tuple(plan["seeds"])
    split = data.shapes_split(plan["n_train"], 2000, seed=seeds[0])
    conditioners = _conditioners(plan, split.seen)
    features = conditioners["features"]
    judge, judge_acc = train_judge(plan, features, seeds[0], progress)
    print(f"judge accuracy (all attributes): {judge_acc['all']:.4f}", flush=True)

    classifier_rows, classifier_histories, aux = run_classifiers(plan, split, features, seeds, progress)
    for loss in ("ngmg", "bce"):  # separate plots: the NGMG potential is negative, BCE positive
        plot_losses(os.path.join(out, f"losses_classifiers_{loss}.png"),
                    {k: v for k, v in classifier_histories.items() if k.startswith(loss.upper())})

    conditioning_rows, grids, diffusion_histories, runs = [], {}, {}, {}
    for mode in ("features", "classes"):
        for seed in seeds if mode == "features" else seeds[:1]:
            result, eval_loss = train_diffusion(plan, split, conditioners[mode], seed, progress)
            accuracy, grid = sample_combinations(plan, result.ema_model, judge, split, seed, progress)
            conditioning_rows.append({"mode": mode, "seed": seed, **accuracy, "eval_loss": eval_loss,
                                      "train_s": result.seconds})
            runs[(mode, 0.0, seed)] = (result, eval_loss, accuracy)
            diffusion_histories[f"{mode}, seed {seed}"] = result.history
            if seed == seeds[0]:
                grids[f"{mode} conditioning"] = grid
    for seed in seeds:
        result, eval_loss = train_diffusion(plan, split, features, seed, progress, aux.net, plan["aux_weight"])
        accuracy, grid = sample_combinations(plan, result.ema_model, judge, split, seed, progress)
        runs[("features", plan["aux_weight"], seed)] = (result, eval_loss, accuracy)
        diffusion_histories[f"features + NGMG aux, seed {seed}"] = result.history
        if seed == seeds[0]:
            grids[f"features + NGMG aux (lambda {plan['aux_weight']:g})"] = grid
    auxiliary_rows = []
    for weight in (0.0, plan["aux_weight"]):
        mine = [runs[("features", weight, s)] for s in seeds]
        seen_m, seen_s = _mean_std([acc["seen"]["all"] for _, _, acc in mine])
        held_m, held_s = _mean_std([acc["held_out"]["all"] for _, _, acc in mine])
        loss_m, loss_s = _mean_std([loss for _, loss, _ in mine])
        auxiliary_rows.append({"aux_weight": weight, "seeds": list(seeds), "seen_all": seen_m, "seen_all_std": seen_s,
                               "held_out_all": held_m, "held_out_all_std": held_s, "eval_loss": loss_m,
                               "eval_loss_std": loss_s, **_loss_spread([r.history for r, _, _ in mine])})
    plot_grids(os.path.join(out, "samples_shapes.png"), grids, split.held_out)
    plot_losses(os.path.join(out, "losses_diffusion.png"), diffusion_histories)
    return {"judge": judge_acc, "classifiers": classifier_rows, "conditioning": conditioning_rows,
            "auxiliary": auxiliary_rows}


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(prog="mixdiff conditioning-demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="longer training, more samples, three seeds")
    parser.add_argument("--out", default=None, help="output directory (default: ./mixdiff-conditioning-<time>)")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds (at least two for the spreads)")
    parser.add_argument("--steps", type=int, help="diffusion training steps per model (overrides the budget)")
    parser.add_argument("--classifier-steps", type=int, help="classifier and judge training steps")
    parser.add_argument("--samples-per-combination", type=int, help="samples drawn per attribute combination")
    parser.add_argument("--n-train", type=int, help="training images")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)

    plan = dict(FULL if args.full else QUICK)
    for key, value in (("seeds", args.seeds), ("diffusion_steps", args.steps),
                       ("classifier_steps", args.classifier_steps), ("judge_steps", args.classifier_steps),
                       ("samples_per_combination", args.samples_per_combination), ("n_train", args.n_train)):
        if value is not None:
            plan[key] = value
    for key in ("diffusion_steps", "classifier_steps", "samples_per_combination", "n_train"):
        if plan[key] < 1:
            parser.error(f"--{key.replace('_', '-')} must be >= 1")
    if len(set(plan["seeds"])) != len(plan["seeds"]):
        parser.error("--seeds must be distinct")
    plan["seeds"] = list(plan["seeds"])
    plan["label_noise"] = list(plan["label_noise"])
    out = args.out or f"mixdiff-conditioning-{time.strftime('%Y%m%d-%H%M%S')}"
    os.makedirs(out, exist_ok=True)
    save_json(os.path.join(out, "config.json"), {"command": "conditioning-demo", **plan})
    print(f"mixdiff conditioning-demo ({'full' if args.full else 'quick'}): seeds {plan['seeds']}, "
          f"{plan['diffusion_steps']} diffusion steps, {plan['classifier_steps']} classifier steps, "
          f"threads={torch.get_num_threads()}", flush=True)
    t0 = time.perf_counter()
    results = run(plan, out, progress=not args.no_progress)
    results["seconds"] = time.perf_counter() - t0
    write_results(out, f"mixdiff conditioning-demo ({'full' if args.full else 'quick'}), seeds {plan['seeds']}",
                  markdown(results), results, results["seconds"])
    return out


if __name__ == "__main__":
    main()
