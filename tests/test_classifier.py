"""Attribute classifiers: the NGMG and BCE objectives match their formulas, both learn a separable
task through the Trainer, predictions decode to attributes, and accuracy is counted right."""
from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from conftest import gen
from mixdiff_ext import AttributeClassifier, AttributeObjective, GMMConditioner, train
from mixdiff_ext.classifier import attribute_accuracy


def separable(n, seed=0):
    """x in R^6: attribute j moves coordinates 2j, 2j + 1 to -1 or +1, plus noise 0.3."""
    g = gen(seed)
    a = torch.randint(0, 2, (n, 3), generator=g)
    x = (2 * a - 1).repeat_interleave(2, 1).float() + 0.3 * torch.randn(n, 6, generator=g)
    return x, a


def test_classifier_shapes():
    torch.manual_seed(0)
    assert AttributeClassifier((1, 16, 16), 8)(torch.randn(5, 1, 16, 16)).shape == (5, 8)
    assert AttributeClassifier((6,), 3)(torch.randn(5, 6)).shape == (5, 3)
    with pytest.raises(ValueError, match="divisible by 4"):
        AttributeClassifier((1, 10, 10), 8)
    with pytest.raises(ValueError, match="in_shape"):
        AttributeClassifier((1, 16), 8)
    with pytest.raises(ValueError, match="out_dim"):
        AttributeClassifier((6,), 0)
    with pytest.raises(ValueError, match="x must have shape"):
        AttributeClassifier((6,), 3)(torch.randn(5, 7))


def test_objectives_are_their_formulas():
    torch.manual_seed(0)
    conditioner = GMMConditioner(3, 6, sigma=0.7)
    x, a = separable(32)
    net = AttributeClassifier((6,), 6)
    ngmg = AttributeObjective(net, conditioner, "ngmg", ngmg_sigma=1.3, ngmg_kind="log")
    assert torch.equal(ngmg.loss(x, conditions=a), conditioner.ngmg_loss(net(x), a, sigma=1.3, kind="log"))
    logits = AttributeClassifier((6,), 3)
    bce = AttributeObjective(logits, conditioner, "bce")
    assert torch.equal(bce.loss(x, conditions=a), F.binary_cross_entropy_with_logits(logits(x), a.float()))
    assert torch.equal(bce.predict(x), (logits(x) > 0).long())
    assert torch.equal(ngmg.predict(x), conditioner.decode(net(x)))
    assert ngmg.predict(x[:0]).shape == (0, 3)
    assert torch.equal(ngmg.sample_timesteps(4), torch.zeros(4, dtype=torch.int64))


@pytest.mark.parametrize("loss", ["ngmg", "bce"])
def test_both_objectives_learn_a_separable_task(loss):
    conditioner = GMMConditioner(3, 6, sigma=0.5)
    x, a = separable(2000)
    torch.manual_seed(0)
    objective = AttributeObjective(AttributeClassifier((6,), 6 if loss == "ngmg" else 3, hidden=32), conditioner,
                                   loss, ngmg_sigma=1.0)
    x_test, a_test = separable(1000, seed=1)
    before = attribute_accuracy(objective.predict(x_test), a_test)["all"]
    result = train(objective, x, steps=150, batch_size=64, lr=3e-3, ema=None, conditions=a, progress=False)
    after = attribute_accuracy(result.model.predict(x_test), a_test)
    assert before < 0.5  # chance is 1/8
    assert after["all"] > 0.97 and min(after["per_attribute"]) > 0.98
    assert result.history[-1]["loss"] < result.history[0]["loss"]


def test_objective_bad_inputs():
    conditioner = GMMConditioner(3, 6)
    net = AttributeClassifier((6,), 3)
    with pytest.raises(ValueError, match="loss must be one of"):
        AttributeObjective(net, conditioner, "mse")
    with pytest.raises(ValueError, match="features"):
        AttributeObjective(net, GMMConditioner(4, 6, mode="classes"), "bce")
    with pytest.raises(TypeError, match="conditioner"):
        AttributeObjective(net, None)
    objective = AttributeObjective(net, conditioner, "bce")
    with pytest.raises(ValueError, match="conditions .* required"):
        objective.loss(torch.zeros(2, 6))
    with pytest.raises(ValueError, match="conditions must have shape"):
        objective.loss(torch.zeros(2, 6), conditions=torch.zeros(2, 2))


def test_attribute_accuracy():
    target = torch.tensor([[0, 1], [1, 1], [0, 0], [1, 0]])
    predicted = torch.tensor([[0, 1], [1, 0], [0, 0], [0, 1]])
    acc = attribute_accuracy(predicted, target)
    assert acc["per_attribute"] == [0.75, 0.5]
    assert acc["mean"] == 0.625 and acc["all"] == 0.5
    with pytest.raises(ValueError, match="both be"):
        attribute_accuracy(predicted, target[:, :1])
    with pytest.raises(ValueError, match="at least one row"):
        attribute_accuracy(predicted[:0], target[:0])
