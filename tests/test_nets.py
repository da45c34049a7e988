"""Denoisers (nets.MLP, nets.UNet, nets.SinusoidalEmbedding): shapes, the time-scale rule, component and
condition embeddings, zero-initialised outputs, gradient flow, determinism and argument checks.

The output layers start at zero, so tests that need a non-trivial function first `perturb` every
parameter with seeded noise.
"""
from __future__ import annotations

import math

import pytest
import torch

from conftest import gen
from mixdiff_ext.nets import MLP, SinusoidalEmbedding, UNet


def perturb(net: torch.nn.Module, seed: int = 0, scale: float = 0.1) -> torch.nn.Module:
    g = gen(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return net


def make(kind: str, **kw) -> tuple[torch.nn.Module, torch.Tensor]:
    """A seeded net and a seeded batch of 6 inputs for it."""
    torch.manual_seed(0)
    if kind == "mlp":
        net, shape = MLP(5, hidden=32, depth=2, **kw), (6, 5)
    else:
        net, shape = UNet(1, 8, base=8, **kw), (6, 1, 8, 8)
    return net, torch.randn(shape, generator=gen(1))


T6 = torch.tensor([0, 1, 10, 100, 500, 999])
C6 = torch.tensor([0, 1, 2, 0, 1, 2])


@pytest.mark.parametrize(
    "net, shape",
    [
        (lambda: MLP(7), (4, 7)),
        (lambda: MLP(3, hidden=16, depth=1, time_embed_dim=10), (4, 3)),
        (lambda: UNet(1, 8), (4, 1, 8, 8)),
        (lambda: UNet(1, 16, base=8, channel_mults=(1, 2, 2)), (4, 1, 16, 16)),
        (lambda: UNet(3, (8, 4), base=12, channel_mults=(1, 2), num_res_blocks=2), (4, 3, 8, 4)),
        (lambda: UNet(2, 6, base=8, channel_mults=(1,)), (4, 2, 6, 6)),
    ],
)
def test_output_shape_and_zero_init(net, shape):
    net = net()
    x = torch.randn(shape, generator=gen(0))
    out = net(x, torch.arange(shape[0]) * 100)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(out, torch.zeros_like(out)), "the output layer starts at zero"
    assert perturb(net)(x, torch.arange(shape[0]) * 100).abs().max() > 0


def test_sinusoidal_embedding_matches_diffusers():
    diffusers_emb = pytest.importorskip("diffusers.models.embeddings")
    t = torch.tensor([0.0, 1.0, 17.5, 999.0])
    for dim in (8, 9, 64):
        want = diffusers_emb.get_timestep_embedding(t, dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        torch.testing.assert_close(SinusoidalEmbedding(dim)(t), want, rtol=1e-6, atol=1e-6)


def test_sinusoidal_embedding_formula():
    emb = SinusoidalEmbedding(6, max_period=100.0)(torch.tensor([3.0], dtype=torch.float64))
    freqs = [100.0 ** (-i / 3) for i in range(3)]
    want = [math.cos(3 * f) for f in freqs] + [math.sin(3 * f) for f in freqs]
    torch.testing.assert_close(emb[0], torch.tensor(want, dtype=torch.float64), rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("kind", ["mlp", "unet"])
def test_time_scale_and_t_forms(kind):
    net, x = make(kind)
    perturb(net)
    out = net(x, T6)
    # integer, float and (for a shared t) scalar timesteps mean the same thing
    torch.testing.assert_close(net(x, T6.float()), out, rtol=0, atol=0)
    torch.testing.assert_close(net(x, T6.double()), out, rtol=1e-5, atol=1e-6)
    # a shared t (a scalar, or a stride-0 view as the samplers pass it) is embedded once, by 1-row
    # matrix products that may round differently from the 6-row ones: equal to float32 rounding
    per_row = net(x, torch.full((6,), 250.0))
    torch.testing.assert_close(net(x, 250), per_row, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(net(x, torch.full((1,), 250.0).expand(6)), per_row, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(net(x, T6.flip(0)), out)
    # time_scale=1: t in [0, 1] embeds as 1000 t does with the default
    unit = MLP(5, hidden=32, depth=2, time_scale=1) if kind == "mlp" else UNet(1, 8, base=8, time_scale=1.0)
    unit.load_state_dict(net.state_dict())
    torch.testing.assert_close(unit(x, T6 / 1000.0), out, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["mlp", "unet"])
def test_component_changes_output(kind):
    net, x = make(kind, num_components=3)
    perturb(net)
    out = net(x, T6, C6)
    for other in (C6.roll(1), (C6 + 1) % 3):
        diff = (net(x, T6, other) - out).flatten(1).abs().amax(1)
        assert bool((diff > 1e-4).all()), diff
    torch.testing.assert_close(net(x, T6, C6.to(torch.int32)), out, rtol=0, atol=0)
    # a shared t with components: one embedding per component, gathered per row
    shared = net(x, torch.full((1,), 10.0).expand(6), C6)
    torch.testing.assert_close(shared, net(x, torch.full((6,), 10.0), C6), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["mlp", "unet"])
def test_cond_changes_output_and_none_is_zero(kind):
    net, x = make(kind, cond_dim=4)
    perturb(net)
    cond = torch.randn(6, 4, generator=gen(2))
    out = net(x, T6, cond=cond)
    diff = (net(x, T6, cond=cond + 1) - out).flatten(1).abs().amax(1)
    assert bool((diff > 1e-4).all()), diff
    torch.testing.assert_close(net(x, T6), net(x, T6, cond=torch.zeros(6, 4)), rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["mlp", "unet"])
def test_single_component_accepts_and_ignores_component(kind):
    net, x = make(kind)
    perturb(net)
    torch.testing.assert_close(net(x, T6, torch.zeros(6, dtype=torch.int64)), net(x, T6), rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["mlp", "unet"])
def test_gradients_reach_every_parameter(kind):
    net, x = make(kind, num_components=3, cond_dim=2)
    perturb(net)  # with the zero output layer only that layer would get a gradient
    cond = torch.randn(6, 2, generator=gen(3))
    net(x, T6, C6, cond).square().sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 0, name


@pytest.mark.parametrize("kind", ["mlp", "unet"])
def test_deterministic_under_manual_seed_and_rows_independent(kind):
    net_a, x = make(kind, num_components=3)
    net_b, _ = make(kind, num_components=3)
    for a, b in zip(net_a.state_dict().values(), net_b.state_dict().values()):
        assert torch.equal(a, b)
    perturb(net_a)
    perturb(net_b)
    out = net_a(x, T6, C6)
    assert torch.equal(out, net_b(x, T6, C6))
    # rows do not interact (no batch statistics): a split batch gives the same rows
    torch.testing.assert_close(net_a(x[2:5], T6[2:5], C6[2:5]), out[2:5], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["mlp", "unet"])
def test_float64(kind):
    net, x = make(kind, num_components=2, cond_dim=1)
    perturb(net).double()
    out = net(x.double(), T6, C6 % 2, torch.ones(6, 1, dtype=torch.float64))
    assert out.dtype == torch.float64


@pytest.mark.parametrize("kind", ["mlp", "unet"])
@pytest.mark.parametrize(
    "args, name",
    [
        (lambda x: (x[:, None], T6, C6), "x"),
        (lambda x: (x.long(), T6, C6), "x"),
        (lambda x: (x[:4], T6, C6[:4]), "t"),
        (lambda x: (x, T6[:, None], C6), "t"),
        (lambda x: (x, "1", C6), "t"),
        (lambda x: (x, T6 > 0, C6), "t"),
        (lambda x: (x, T6, None), "component"),
        (lambda x: (x, T6, C6.float()), "component"),
        (lambda x: (x, T6, C6[:5]), "component"),
        (lambda x: (x, T6, C6 + 1), "component"),
        (lambda x: (x, T6, C6 - 1), "component"),
        (lambda x: (x, T6, C6, torch.zeros(6, 3)), "cond"),
        (lambda x: (x, T6, C6, torch.zeros(6, 2, dtype=torch.int64)), "cond"),
    ],
)
def test_bad_inputs(kind, args, name):
    net, x = make(kind, num_components=3, cond_dim=2)
    with pytest.raises(ValueError, match=name):
        net(*args(x))


def test_bad_input_shapes_per_net():
    mlp, _ = make("mlp")
    with pytest.raises(ValueError, match=r"x must have shape \[B, 5\]"):
        mlp(torch.zeros(2, 4), 0)
    with pytest.raises(ValueError, match="cond"):
        mlp(torch.zeros(2, 5), 0, cond=torch.zeros(2, 1))
    unet, _ = make("unet")
    with pytest.raises(ValueError, match=r"x must have shape \[B, 1, 8, 8\]"):
        unet(torch.zeros(2, 1, 16, 16), 0)


@pytest.mark.parametrize(
    "build, name",
    [
        (lambda: MLP(0), "dim"),
        (lambda: MLP(3, hidden=0), "hidden"),
        (lambda: MLP(3, depth=0), "depth"),
        (lambda: MLP(3, num_components=0), "num_components"),
        (lambda: MLP(3, cond_dim=-1), "cond_dim"),
        (lambda: MLP(3, time_scale=0), "time_scale"),
        (lambda: MLP(3, time_embed_dim=1), "dim"),
        (lambda: UNet(1, 10, channel_mults=(1, 2, 2)), "image_size"),
        (lambda: UNet(1, (8, 6), channel_mults=(1, 2, 2)), "image_size"),
        (lambda: UNet(1, 0), "image_size"),
        (lambda: UNet(1, (8, 8, 8)), "image_size"),
        (lambda: UNet(0, 8), "channels"),
        (lambda: UNet(1, 8, channel_mults=()), "channel_mults"),
        (lambda: UNet(1, 8, channel_mults=(1, 0)), "channel_mults"),
        (lambda: UNet(1, 8, base=0), "base"),
        (lambda: UNet(1, 8, num_res_blocks=0), "num_res_blocks"),
        (lambda: SinusoidalEmbedding(1), "dim"),
        (lambda: SinusoidalEmbedding(4, max_period=1), "max_period"),
    ],
)
def test_bad_constructor_arguments(build, name):
    with pytest.raises(ValueError, match=name):
        build()
