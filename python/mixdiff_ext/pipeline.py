"""The steps the command line and the demo share: load data, fit a prior, build a model from a plain
configuration, save and load a trained run, and plot samples and loss curves.

A run directory holds `config.json` (everything needed to rebuild the model), `prior.pt`, `model.pt`
(the EMA weights, which sampling uses), and the trainer's `checkpoint.pt` and `metrics.jsonl`.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Sequence

import torch

from . import data as datasets
from .models import MixDDPM, MixSGM
from .nets import MLP, UNet
from .prior import GaussianMixturePrior

__all__ = ["MODEL_KINDS", "build_model", "default_config", "fit_prior", "load_data", "load_run", "plot_losses",
           "plot_samples", "save_json", "save_run", "write_results"]

MODEL_KINDS = ("ddpm", "mixddpm", "sgm", "mixsgm")
CONFIG_NAME, PRIOR_NAME, MODEL_NAME = "config.json", "prior.pt", "model.pt"


def save_json(path: str | os.PathLike, obj: Any) -> None:
    """Writes JSON atomically (temporary file, then rename)."""
    path = os.fspath(path)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def write_results(out: str | os.PathLike, title: str, table: str, results: Any, seconds: float) -> None:
    """A demo's results.md (title and Markdown table) and results.json in `out`; prints the table and
    where the outputs are."""
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(f"# {title}\n\n{table}\n")
    save_json(os.path.join(out, "results.json"), results)
    print(f"\n{table}\n\nfinished in {seconds:.0f} s; results, plots and config in {os.path.abspath(out)}")


def load_data(spec: str, n: int | None = None, seed: int = 0) -> torch.Tensor:
    """A built-in dataset by name (`n` rows from generator `seed`; digits ignores both) or a user file
    (.npy, .npz, .csv, .pt; see data.load_array)."""
    if spec in datasets.DATASETS:
        if spec == "digits":
            return datasets.digits()
        return datasets.get_dataset(spec, seed=seed, **({} if n is None else {"n": n}))
    if not os.path.splitext(spec)[1]:
        raise ValueError(f"data must be a built-in dataset ({', '.join(sorted(datasets.DATASETS))}) or a file "
                         f"path ending in .npy, .npz, .csv or .pt, got {spec!r}")
    return datasets.load_array(spec)


def fit_prior(x: torch.Tensor, components: int, covariance_type: str = "identity", method: str = "kmeans",
              seed: int = 0) -> GaussianMixturePrior:
    """The dispatcher prior of flattened samples (images become vectors of C * H * W)."""
    return GaussianMixturePrior.fit(x.reshape(x.shape[0], -1).float(), components, covariance_type=covariance_type,
                                    method=method, seed=seed)


def default_config(model: str, sample_shape: Sequence[int], **overrides) -> dict[str, Any]:
    """A complete model configuration: the classical models ("ddpm", "sgm") use the standard prior and see
    (x_t, t) only; the mixture models default to component_input="embedding", centre_input=True."""
    if model not in MODEL_KINDS:
        raise ValueError(f"model must be one of {MODEL_KINDS}, got {model!r}")
    mixture = model.startswith("mix")
    image = len(sample_shape) == 3
    config = {
        "model": model,
        "sample_shape": list(sample_shape),
        "component_input": "embedding" if mixture else "none",
        "centre_input": mixture,
        "schedule": "linear",
        "timesteps": 1000,
        "prediction_type": "epsilon",
        "sde": "vp",
        "sigma_max": None,
        "net": "unet" if image else "mlp",
        "hidden": 128,
        "depth": 3,
        "base": 32,
    }
    unknown = set(overrides) - set(config)
    if unknown:
        raise ValueError(f"unknown configuration keys: {sorted(unknown)}")
    config.update({k: v for k, v in overrides.items() if v is not None})
    return config


def build_model(config: dict[str, Any], prior: GaussianMixturePrior) -> MixDDPM | MixSGM:
    """The model a configuration describes, around `prior` (ignored, standard prior used, for "ddpm"/"sgm")."""
    shape = tuple(config["sample_shape"])
    if not config["model"].startswith("mix"):
        prior = GaussianMixturePrior.standard(math.prod(shape))
    k = prior.n_components if config["component_input"] == "embedding" else 1
    continuous = config["model"].endswith("sgm")
    time_scale = 1.0 if continuous else float(config["timesteps"])
    if config["net"] == "unet":
        if len(shape) != 3 or shape[1] != shape[2]:
            raise ValueError(f"net='unet' needs square images [C, H, H], got sample_shape {shape}")
        net = UNet(shape[0], shape[1], base=config["base"], num_components=k, time_scale=time_scale)
    elif config["net"] == "mlp":
        net = MLP(math.prod(shape), hidden=config["hidden"], depth=config["depth"], num_components=k,
                  time_scale=time_scale)
    else:
        raise ValueError(f"net must be 'mlp' or 'unet', got {config['net']!r}")
    common = dict(component_input=config["component_input"], centre_input=config["centre_input"],
                  sample_shape=shape, prediction_type=config.get("prediction_type", "epsilon"))
    prior = prior.to(dtype=torch.float32)
    if continuous:
        sde_kw = {} if config["sigma_max"] is None else {"sigma_max": config["sigma_max"]}
        return MixSGM(net, prior, sde=config["sde"], **sde_kw, **common)
    return MixDDPM(net, prior, schedule=config["schedule"], timesteps=config["timesteps"], **common)


def save_run(directory: str | os.PathLike, model: MixDDPM | MixSGM, config: dict[str, Any],
             prior: GaussianMixturePrior) -> None:
    """config.json, prior.pt and model.pt (the given model's weights: pass the EMA model)."""
    os.makedirs(directory, exist_ok=True)
    prior.save(os.path.join(directory, PRIOR_NAME))
    tmp = os.path.join(directory, MODEL_NAME + ".tmp")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, os.path.join(directory, MODEL_NAME))
    save_json(os.path.join(directory, CONFIG_NAME), config)


def load_run(directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[MixDDPM | MixSGM,
                                                                                             dict[str, Any]]:
    """The trained model (EMA weights, eval mode) and the configuration of a run directory."""
    directory = os.fspath(directory)
    paths = [os.path.join(directory, name) for name in (CONFIG_NAME, PRIOR_NAME, MODEL_NAME)]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise FileNotFoundError(f"{directory} is not a trained run directory: missing {', '.join(missing)}")
    with open(paths[0]) as f:
        config = json.load(f)
    model = build_model(config, GaussianMixturePrior.load(paths[1]))
    model.load_state_dict(torch.load(paths[2], map_location=map_location, weights_only=True))
    return model.eval(), config


# --------------------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _draw(ax, x: torch.Tensor, title: str, ref: torch.Tensor | None = None, limits=None) -> None:
    x = x.detach().float().cpu()
    if x.dim() == 4:  # an 8 x 8 grid of the first images
        k = int(min(8, math.isqrt(x.shape[0])))
        grid = x[: k * k, 0].reshape(k, k, *x.shape[2:]).permute(0, 2, 1, 3).reshape(k * x.shape[2], -1)
        ax.imshow(grid.clamp(-1, 1), cmap="gray", vmin=-1, vmax=1)
        ax.axis("off")
    elif x.shape[1] == 1:
        bins = torch.histogram(torch.cat([x, ref.float()]) if ref is not None else x, 80).bin_edges
        if ref is not None:
            ax.hist(ref[:, 0].float().numpy(), bins=bins.numpy(), density=True, alpha=0.4, label="data")
        ax.hist(x[:, 0].numpy(), bins=bins.numpy(), density=True, alpha=0.6, label="samples")
        ax.legend(fontsize=7)
    else:
        ax.scatter(x[:, 0].numpy(), x[:, 1].numpy(), s=1, alpha=0.4)
        if limits is not None:  # far outliers would otherwise shrink the data to a dot
            lo, hi = torch.tensor(limits[0]), torch.tensor(limits[1])
            outside = int(((x[:, :2] < lo) | (x[:, :2] > hi)).any(1).sum())
            ax.set_xlim(limits[0][0], limits[1][0])
            ax.set_ylim(limits[0][1], limits[1][1])
            if outside:
                title = f"{title}\n({outside} of {x.shape[0]} outside)"
        ax.set_aspect("equal", adjustable="box")
    ax.set_title(title, fontsize=9)


def plot_samples(path: str | os.PathLike, panels: dict[str, torch.Tensor], reference: torch.Tensor | None = None) -> None:
    """One panel per entry, side by side: 1-D histograms (over the reference's), 2-D scatter plots (the
    first two coordinates of vectors, on the first panel's range) or image grids."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), squeeze=False)
    limits = None
    first = next(iter(panels.values()))
    if first.dim() == 2 and first.shape[1] >= 2:
        lo, hi = first[:, :2].float().amin(0), first[:, :2].float().amax(0)
        pad = 0.15 * (hi - lo).max()
        limits = ((lo - pad).tolist(), (hi + pad).tolist())
    for ax, (title, x) in zip(axes[0], panels.items()):
        _draw(ax, x, title, reference if reference is not None and x.dim() == 2 and x.shape[1] == 1 else None,
              limits)
    fig.tight_layout()
    fig.savefig(os.fspath(path), dpi=110)
    plt.close(fig)


def plot_losses(path: str | os.PathLike, histories: dict[str, list[dict[str, float]]]) -> None:
    """Training loss against step, one line per run; a log scale when every loss is positive."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for name, history in histories.items():
        ax.plot([h["step"] for h in history], [h["loss"] for h in history], label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if all(h["loss"] > 0 for history in histories.values() for h in history):
        ax.set_yscale("log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.fspath(path), dpi=110)
    plt.close(fig)
