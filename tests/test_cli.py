"""The `mixdiff` command line on tiny data: every command, its outputs and config.json, and clear errors."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from mixdiff_ext import GaussianMixturePrior, cli
from mixdiff_ext.pipeline import load_run


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MIXDIFF_CACHE", str(tmp_path / "cache"))


def run(*argv) -> int:
    return cli.main([str(a) for a in argv])


def test_fit_prior(tmp_path, capsys):
    assert run("fit-prior", "--data", "ring2d", "--n", 800, "--components", 8, "--out", tmp_path / "p") == 0
    prior = GaussianMixturePrior.load(tmp_path / "p" / "prior.pt")
    assert prior.n_components == 8
    # the 8 fitted centres are the ring's modes, radius 8
    assert torch.allclose(prior.means.norm(dim=1), torch.full((8,), 8.0), atol=0.1)
    config = json.loads((tmp_path / "p" / "config.json").read_text())
    assert config["command"] == "fit-prior" and config["components"] == 8
    assert "fitted 8 components" in capsys.readouterr().out


def test_train_sample_evaluate(tmp_path, capsys):
    out = tmp_path / "run"
    assert run("train", "--data", "ring2d", "--n", 1000, "--components", 8, "--steps", 30, "--batch-size", 64,
               "--hidden", 32, "--timesteps", 100, "--no-progress", "--out", out) == 0
    for name in ("config.json", "prior.pt", "model.pt", "checkpoint.pt", "metrics.jsonl", "train_config.json"):
        assert (out / name).exists(), name
    model, config = load_run(out)
    assert config["model"] == "mixddpm" and config["component_input"] == "embedding" and config["centre_input"]
    assert model.n_components == 8

    samples = tmp_path / "s.npy"
    assert run("sample", "--run", out, "--n", 300, "--sampler", "ddim", "--steps", 10, "--batch-size", 128,
               "--no-progress", "--out", samples) == 0
    x = np.load(samples)
    assert x.shape == (300, 2) and np.isfinite(x).all()
    assert (tmp_path / "s.png").exists() and (tmp_path / "s.config.json").exists()
    # the same seed in one batch gives the same samples (counter-based noise)
    assert run("sample", "--run", out, "--n", 300, "--sampler", "ddim", "--steps", 10, "--no-progress",
               "--out", tmp_path / "s2.pt") == 0
    np.testing.assert_allclose(torch.load(tmp_path / "s2.pt").numpy(), x, rtol=1e-5, atol=1e-5)

    capsys.readouterr()
    assert run("evaluate", "--samples", samples, "--reference", "ring2d", "--n", 500, "--out", tmp_path / "m.json") == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) >= {"sliced_w2", "mmd2"}
    assert json.loads((tmp_path / "m.json").read_text())["sliced_w2"] == printed["sliced_w2"]


@pytest.mark.parametrize("model,sde", [("ddpm", "vp"), ("mixsgm", "ve")])
def test_train_other_models_on_user_file(tmp_path, model, sde):
    data = tmp_path / "data.npy"
    g = torch.Generator().manual_seed(0)
    np.save(data, (torch.randn(400, 3, generator=g) + 6 * (torch.rand(400, 1, generator=g) > 0.5)).numpy())
    out = tmp_path / model
    assert run("train", "--data", data, "--model", model, "--sde", sde, "--components", 2, "--steps", 5,
               "--batch-size", 32, "--hidden", 16, "--no-progress", "--out", out) == 0
    trained, config = load_run(out)
    if model == "mixsgm":
        assert config["sigma_max"] > 0 and trained.sde.sigma_max == pytest.approx(config["sigma_max"])
    else:
        assert trained.n_components == 1 and config["component_input"] == "none"
    assert run("sample", "--run", out, "--n", 10, "--steps", 5, "--no-progress", "--out", tmp_path / "x.npy") == 0
    assert np.load(tmp_path / "x.npy").shape == (10, 3)


def test_errors_are_reported_with_the_cause(tmp_path, capsys):
    bad = tmp_path / "bad.npy"
    arr = np.ones((10, 2))
    arr[3, 1] = np.nan
    np.save(bad, arr)
    assert run("fit-prior", "--data", bad, "--components", 2, "--out", tmp_path / "p") == 2
    err = capsys.readouterr().err
    assert "bad.npy" in err and "NaN" in err
    assert run("fit-prior", "--data", "no-such-dataset", "--out", tmp_path / "p") == 2
    assert "built-in dataset" in capsys.readouterr().err
    assert run("sample", "--run", tmp_path / "missing", "--out", tmp_path / "x.npy") == 2
    assert "not a trained run directory" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run("train", "--data", "ring2d", "--model", "gan", "--out", tmp_path / "r")


def test_info_and_module_entry_point(capsys):
    assert run("info") == 0
    assert "torch_runtime_version" in json.loads(capsys.readouterr().out)
    help_text = subprocess.run([sys.executable, "-m", "mixdiff_ext.cli", "--help"], capture_output=True, text=True,
                               check=True).stdout
    for command in ("fit-prior", "train", "sample", "evaluate", "info", "demo", "conditioning-demo"):
        assert command in help_text


def test_demo_tiny(tmp_path, capsys):
    out = tmp_path / "demo"
    assert run("demo", "--datasets", "gmm1d", "--steps", 20, "--out", out, "--no-progress") == 0
    rows = json.loads((out / "results.json").read_text())
    assert [r["model"] for r in rows] == ["DDPM", "mixDDPM", "mixDDPM (x_t, t only)"]
    for r in rows:
        assert np.isfinite(r["w1"]) and r["train_steps"] == 20
    # the reverse effort of the fitted 2-component prior is below the standard prior's
    assert rows[1]["effort"] < rows[0]["effort"]
    for name in ("results.md", "config.json", "samples_gmm1d.png", "losses_gmm1d.png"):
        assert (out / name).exists(), name
    assert str(out) in capsys.readouterr().out


def test_demo_full_models_on_arrivals(tmp_path):
    out = tmp_path / "full"
    assert run("demo", "--full", "--datasets", "arrivals", "--steps", 5, "--out", out, "--no-progress") == 0
    rows = json.loads((out / "results.json").read_text())
    assert [r["model"] for r in rows] == ["DDPM", "mixDDPM", "mixDDPM (x_t, t only)", "SGM (VP)", "mixSGM (VP)"]
    assert all(np.isfinite(r["sliced_w2"]) for r in rows)
    assert all(r["sampler"] == "sde-dpmsolver++2-20, clip auto" for r in rows)  # every model, the SGMs (VP) too


def test_conditioning_demo_tiny(tmp_path, capsys):
    out = tmp_path / "cond"
    assert run("conditioning-demo", "--steps", 4, "--classifier-steps", 4, "--samples-per-combination", 2,
               "--n-train", 256, "--seeds", 3, 4, "--out", out, "--no-progress") == 0
    results = json.loads((out / "results.json").read_text())
    assert 0.0 <= results["judge"]["all"] <= 1.0
    assert [(r["loss"], r["label_noise"]) for r in results["classifiers"]] == [
        ("ngmg", 0.0), ("ngmg", 0.2), ("bce", 0.0), ("bce", 0.2)]
    assert all(r["seeds"] == [3, 4] and np.isfinite(r["loss_std_across_seeds"]) for r in results["classifiers"])
    modes = [(r["mode"], r["seed"]) for r in results["conditioning"]]
    assert modes == [("features", 3), ("features", 4), ("classes", 3)]
    features, classes = results["conditioning"][0], results["conditioning"][2]
    assert features["held_out"] is not None and classes["held_out"] is None  # held-out combinations have no class
    assert [r["aux_weight"] for r in results["auxiliary"]] == [0.0, 0.1]
    assert all(np.isfinite(r["eval_loss"]) and np.isfinite(r["eval_loss_std"]) for r in results["auxiliary"])
    config = json.loads((out / "config.json").read_text())
    assert config["diffusion_steps"] == 4 and config["seeds"] == [3, 4]
    for name in ("results.md", "samples_shapes.png", "losses_classifiers_ngmg.png", "losses_classifiers_bce.png",
                 "losses_diffusion.png"):
        assert (out / name).exists(), name
    assert "held out" in (out / "results.md").read_text()
    assert str(out) in capsys.readouterr().out
