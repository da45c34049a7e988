"""Attribute classifiers: trained with NGMG against a conditioner's mixture, or with BCE.

`AttributeClassifier` is a small CNN (images) or MLP (flat rows) with `out_dim` outputs. `AttributeObjective`
wraps it in the Trainer's model protocol (`sample_timesteps`, `loss(x0, ..., conditions)`), so classifiers
train with `mixdiff_ext.train(objective, images, steps, conditions=attributes)` like the diffusion models:

* ``loss="ngmg"``: the network predicts a condition vector [B, conditioner.dim]; the loss is the NGMG
  loss against the mixture of the example's attribute means (`GMMConditioner.ngmg_loss`, soft labels
  allowed); predictions are read off with `GMMConditioner.decode` (the nearer mean per attribute).
* ``loss="bce"``: one logit per attribute [B, M], binary cross-entropy; prediction: logit > 0.

A classifier trained with NGMG is what the diffusion models' auxiliary term uses (`aux_classifier`).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .conditioning import GMMConditioner

__all__ = ["AttributeClassifier", "AttributeObjective", "attribute_accuracy"]

LOSSES = ("ngmg", "bce")


class AttributeClassifier(nn.Module):
    """[B, *in_shape] -> [B, out_dim]. Images (in_shape = (C, H, W), H and W divisible by 4): two
    stride-2 3x3 convolutions (width, 2 width channels) and a hidden layer on the flattened map, which
    keeps where things are (position is an attribute); flat rows (in_shape = (D,)): an MLP with two
    hidden layers of `hidden` units. SiLU activations throughout."""

    def __init__(self, in_shape: Sequence[int], out_dim: int, width: int = 32, hidden: int = 128) -> None:
        super().__init__()
        in_shape = tuple(int(s) for s in in_shape)
        for name, value in (("out_dim", out_dim), ("width", width), ("hidden", hidden)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if len(in_shape) == 3:
            c, h, w = in_shape
            if h % 4 or w % 4:
                raise ValueError(f"in_shape: image height and width must be divisible by 4, got {in_shape}")
            self.features = nn.Sequential(
                nn.Conv2d(c, width, 3, padding=1), nn.SiLU(),
                nn.Conv2d(width, width, 3, stride=2, padding=1), nn.SiLU(),
                nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.SiLU(),
                nn.Flatten(),
            )
            flat = 2 * width * (h // 4) * (w // 4)
        elif len(in_shape) == 1 and in_shape[0] >= 1:
            self.features = nn.Sequential(nn.Linear(in_shape[0], hidden), nn.SiLU())
            flat = hidden
        else:
            raise ValueError(f"in_shape must be (C, H, W) or (D,), got {in_shape}")
        self.head = nn.Sequential(nn.Linear(flat, hidden), nn.SiLU(), nn.Linear(hidden, out_dim))
        self.in_shape = in_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or tuple(x.shape[1:]) != self.in_shape:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must have shape [B, {', '.join(map(str, self.in_shape))}], got {got}")
        return self.head(self.features(x))


class AttributeObjective(nn.Module):
    """An attribute classifier with its training loss, in the Trainer's model protocol.

    Args:
        net: the classifier (e.g. AttributeClassifier), outputs [B, conditioner.dim] for "ngmg" and
            [B, M] logits for "bce".
        conditioner: the GMMConditioner whose mixture is the NGMG target (features mode; with "bce" it
            only fixes the number of attributes).
        loss: "ngmg" or "bce".
        ngmg_sigma: the NGMG kernel width (None: the conditioner's sigma); ngmg_kind: "potential" or "log".
    """

    def __init__(self, net: nn.Module, conditioner: GMMConditioner, loss: str = "ngmg",
                 ngmg_sigma: float | None = None, ngmg_kind: str = "potential") -> None:
        super().__init__()
        if not isinstance(net, nn.Module):
            raise TypeError(f"net must be a torch.nn.Module, got {type(net).__name__}")
        if not isinstance(conditioner, GMMConditioner):
            raise TypeError(f"conditioner must be a GMMConditioner, got {type(conditioner).__name__}")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if loss == "bce" and conditioner.mode != "features":
            raise ValueError("loss='bce' needs binary attributes: a conditioner in 'features' mode")
        self.net = net
        self.conditioner = conditioner
        self.loss_kind = loss
        self.ngmg_sigma = ngmg_sigma
        self.ngmg_kind = ngmg_kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def sample_timesteps(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """The classifier sees clean inputs: every row's time is 0 (the Trainer's protocol asks for one)."""
        return torch.zeros(n, dtype=torch.int64)

    def loss(self, x0: torch.Tensor, t: torch.Tensor | None = None, seed: int | None = None, offset: int = 0,
             conditions: torch.Tensor | None = None) -> torch.Tensor:
        """The mean loss over the rows of x0 with attributes `conditions` [B, M] (0/1, or soft in [0, 1]);
        t, seed and offset are accepted for the Trainer and unused (the loss has no noise)."""
        if conditions is None:
            raise ValueError("conditions (the attributes of x0's rows) are required")
        out = self.net(x0)
        if self.loss_kind == "bce":
            target = conditions.to(out.dtype)
            if target.shape != out.shape:
                raise ValueError(f"conditions must have shape {tuple(out.shape)}, got {tuple(conditions.shape)}")
            return F.binary_cross_entropy_with_logits(out, target)
        return self.conditioner.ngmg_loss(out, conditions, sigma=self.ngmg_sigma, kind=self.ngmg_kind)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
        """The predicted attributes (int64 [B, M]) or, for a classes-mode conditioner, class ids [B]."""
        parts = []
        for chunk in torch.split(x, batch_size):
            out = self.net(chunk)
            parts.append((out > 0).to(torch.int64) if self.loss_kind == "bce" else self.conditioner.decode(out))
        if not parts:
            shape = (0, self.conditioner.num) if self.conditioner.mode == "features" else (0,)
            return torch.empty(shape, dtype=torch.int64, device=x.device)
        return torch.cat(parts)


def attribute_accuracy(predicted: torch.Tensor, target: torch.Tensor) -> dict[str, float | list[float]]:
    """Per-attribute accuracy, its mean, and "all": the fraction of rows with every attribute right (one
    minus the fraction of defective rows). predicted, target: [N, M] 0/1 tensors."""
    if predicted.shape != target.shape or predicted.dim() != 2:
        raise ValueError(f"predicted and target must both be [N, M], got {tuple(predicted.shape)} and "
                         f"{tuple(target.shape)}")
    if predicted.shape[0] == 0:
        raise ValueError("predicted and target must have at least one row")
    right = predicted.to(torch.int64) == target.to(torch.int64)
    per = right.double().mean(0)
    return {"per_attribute": per.tolist(), "mean": float(per.mean()), "all": float(right.all(1).double().mean())}
