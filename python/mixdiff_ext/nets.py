"""Denoising networks: a residual MLP for vectors and a small UNet for images.

A denoiser is called as ``denoiser(x, t, component=None, cond=None)`` and returns a tensor of x's shape:

* ``x``: the noisy sample, [B, dim] (MLP) or [B, C, H, W] (UNet);
* ``t``: [B] timesteps (or a scalar, broadcast to the batch), integer or float;
* ``component``: int64 [B] mixture-component index of each row, or None;
* ``cond``: float [B, cond_dim] condition vector, or None.

**Time scale.** Both networks take ``time_scale``, the value of t at the end of the diffusion, and embed
``1000 * t / time_scale`` with sinusoids whose frequencies are laid out for a time axis of length 1000
(diffusers' convention). The default ``time_scale=1000`` suits discrete models whose t are indices
0..999 (and continuous models that pass ``1000 * t`` themselves); a continuous model that passes
t in [0, 1] builds its denoiser with ``time_scale=1``.

**Embeddings.** The sinusoidal time embedding goes through Linear -> SiLU -> Linear to width E. With
``num_components > 1`` a learned nn.Embedding(num_components, E) of ``component`` is added to it, and
then ``component`` is required; with ``num_components == 1`` ``component`` may be None and is otherwise
checked and ignored. With ``cond_dim > 0`` a Linear(cond_dim, E) of ``cond`` is added as well;
``cond=None`` stands for the zero vector, which is the null condition of classifier-free guidance
(train with condition dropout to zeros). Every residual block adds a projection of SiLU(embedding).

**Initialisation.** The output layer is zero-initialised, so an untrained network predicts 0 -- the
mean of the noise it learns to predict -- and the loss starts near its trivial value. Gradients reach
the other parameters from the first optimiser step on.

Invalid arguments raise ValueError naming the argument. Component indices are range-checked on the
CPU only: on an accelerator the check would synchronise every call (nn.Embedding still asserts there).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MLP", "SinusoidalEmbedding", "UNet"]

_TIME_AXIS = 1000.0  # the time-axis length the sinusoid frequencies are laid out for


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _check_nonnegative_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return value


class SinusoidalEmbedding(nn.Module):
    """[B] values -> [B, dim] sinusoids, as diffusers' ``get_timestep_embedding`` with
    ``flip_sin_to_cos=True, downscale_freq_shift=0`` (UNet2DModel's settings): frequencies
    max_period ** (-i / (dim // 2)), cosines first, a zero column appended when dim is odd.
    Computed in float32, or float64 for float64 input."""

    def __init__(self, dim: int, max_period: float = 10000.0) -> None:
        super().__init__()
        self.dim = _check_positive_int(dim, "dim")
        if dim < 2:
            raise ValueError(f"dim must be at least 2, got {dim}")
        if not max_period > 1:
            raise ValueError(f"max_period must be > 1, got {max_period!r}")
        self.max_period = float(max_period)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        if t.dim() != 1:
            raise ValueError(f"t must be 1-D [B], got shape {tuple(t.shape)}")
        dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
        half = self.dim // 2
        freqs = torch.exp(-math.log(self.max_period) * torch.arange(half, dtype=dtype, device=t.device) / half)
        args = t.to(dtype)[:, None] * freqs[None, :]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
        if self.dim % 2:
            emb = F.pad(emb, (0, 1))
        return emb

    def extra_repr(self) -> str:
        return f"dim={self.dim}, max_period={self.max_period:g}"


class _Embedding:
    """Per-row embeddings as rows of `table` ([B, E], or [1, E] broadcast over the batch) or, when
    `index` is given, as table[index] for a [K, E] table. Blocks call `project`, which applies their
    projection to the table before any gathering."""

    def __init__(self, table: torch.Tensor, index: torch.Tensor | None) -> None:
        self.table, self.index = table, index

    def project(self, linear: nn.Linear) -> torch.Tensor:
        """linear(SiLU(embedding)) per row, [B, out] or [1, out] (broadcastable)."""
        out = linear(F.silu(self.table))
        return out if self.index is None else out[self.index]


class _Conditioning(nn.Module):
    """The embedding shared by the blocks: time MLP + component embedding + condition projection."""

    def __init__(self, embed_dim: int, num_components: int, cond_dim: int, time_scale: float) -> None:
        super().__init__()
        self.num_components = _check_positive_int(num_components, "num_components")
        self.cond_dim = _check_nonnegative_int(cond_dim, "cond_dim")
        if isinstance(time_scale, bool) or not isinstance(time_scale, (int, float)) or not (
            math.isfinite(time_scale) and time_scale > 0
        ):
            raise ValueError(f"time_scale must be a positive finite number, got {time_scale!r}")
        self.time_scale = float(time_scale)
        self.sinusoid = SinusoidalEmbedding(embed_dim)
        self.time_mlp = nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim))
        self.component_embed = nn.Embedding(num_components, embed_dim) if num_components > 1 else None
        self.cond_proj = nn.Linear(cond_dim, embed_dim) if cond_dim > 0 else None

    def forward(self, t, component: torch.Tensor | None, cond: torch.Tensor | None, x: torch.Tensor) -> "_Embedding":
        """The embedding of a batch like x (its size, device and parameter dtype).

        A batch-wide time (a scalar, or a stride-0 view as the samplers pass it) without a per-row
        condition has at most num_components distinct embeddings: they are computed once, as a table
        indexed by the component, and every block projects the table instead of B rows."""
        batch = x.shape[0]
        weight = self.time_mlp[0].weight
        t = self._check_t(t, batch, x.device)
        component = self._check_component(component, batch, x.device)
        if cond is not None:
            if self.cond_proj is None:
                raise ValueError("cond was given but the network was built with cond_dim=0")
            if not _is_float_tensor(cond) or cond.shape != (batch, self.cond_dim):
                raise ValueError(
                    f"cond must be a floating-point tensor of shape [{batch}, {self.cond_dim}], got {_describe(cond)}"
                )
        shared = batch > 1 and t.stride(0) == 0 and cond is None
        emb = self.time_mlp(self.sinusoid((t[:1] if shared else t) * (_TIME_AXIS / self.time_scale)).to(weight.dtype))
        if self.cond_proj is not None:
            # cond=None is the null condition: a zero vector
            zero = torch.zeros(1, self.cond_dim, dtype=weight.dtype, device=x.device)
            emb = emb + self.cond_proj(zero if cond is None else cond.to(weight.dtype))
        if self.component_embed is None:
            return _Embedding(emb, None)
        if shared:
            return _Embedding(emb + self.component_embed.weight, component)
        return _Embedding(emb + self.component_embed(component), None)

    @staticmethod
    def _check_t(t, batch: int, device: torch.device) -> torch.Tensor:
        if isinstance(t, bool) or not isinstance(t, (torch.Tensor, int, float)):
            raise ValueError(f"t must be a tensor or a number, got {type(t).__name__}")
        t = torch.as_tensor(t, device=device)
        if t.dtype == torch.bool or t.is_complex():
            raise ValueError(f"t must be integer or real, got dtype {t.dtype}")
        if t.dim() == 0:
            return t.expand(batch)
        if tuple(t.shape) != (batch,):
            raise ValueError(f"t must be a scalar or have shape [{batch}], got shape {tuple(t.shape)}")
        return t

    def _check_component(self, component, batch: int, device: torch.device) -> torch.Tensor | None:
        if component is None:
            if self.num_components > 1:
                raise ValueError(f"component is required: the network has num_components={self.num_components}")
            return None
        if (
            not isinstance(component, torch.Tensor)
            or component.dtype.is_floating_point
            or component.is_complex()
            or component.dtype == torch.bool
            or tuple(component.shape) != (batch,)
        ):
            raise ValueError(f"component must be an integer tensor of shape [{batch}], got {_describe(component)}")
        # a data-dependent check: skipped on GPUs (a sync per call) and when compiling (a graph break)
        if component.device.type == "cpu" and component.numel() and not torch.compiler.is_compiling():
            lo, hi = int(component.min()), int(component.max())
            if lo < 0 or hi >= self.num_components:
                raise ValueError(
                    f"component must lie in [0, {self.num_components}), got values in [{lo}, {hi}]"
                )
        return component.to(device=device, dtype=torch.int64)


def _is_float_tensor(value) -> bool:
    return isinstance(value, torch.Tensor) and value.is_floating_point()


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"dtype {value.dtype}, shape {tuple(value.shape)}"
    return type(value).__name__


def _check_input(x, shape: tuple[int, ...], layout: str) -> None:
    if not _is_float_tensor(x):
        raise ValueError(f"x must be a floating-point tensor, got {_describe(x)}")
    if x.dim() != len(shape) + 1 or tuple(x.shape[1:]) != shape:
        expected = ", ".join(["B", *map(str, shape)])
        raise ValueError(f"x must have shape [{expected}] ({layout}), got {tuple(x.shape)}")


# --------------------------------------------------------------------------------------------------
# MLP
# --------------------------------------------------------------------------------------------------
class _MLPBlock(nn.Module):
    """h + Linear(SiLU(Linear(LayerNorm(h)) + Linear(SiLU(emb))))."""

    def __init__(self, hidden: int, embed_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.emb = nn.Linear(embed_dim, hidden)
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, h: torch.Tensor, emb: _Embedding) -> torch.Tensor:
        return h + self.fc2(F.silu(self.fc1(self.norm(h)) + emb.project(self.emb)))


class MLP(nn.Module):
    """Residual MLP denoiser for [B, dim] samples: Linear(dim, hidden), ``depth`` residual blocks that
    each add a projection of the embedding, LayerNorm -> SiLU -> zero-initialised Linear(hidden, dim).
    The embedding width is ``time_embed_dim`` (default ``hidden``); see the module docstring for t,
    component and cond."""

    def __init__(
        self,
        dim: int,
        hidden: int = 256,
        depth: int = 3,
        num_components: int = 1,
        cond_dim: int = 0,
        time_embed_dim: int | None = None,
        time_scale: float = 1000.0,
    ) -> None:
        super().__init__()
        self.dim = _check_positive_int(dim, "dim")
        _check_positive_int(hidden, "hidden")
        _check_positive_int(depth, "depth")
        embed_dim = hidden if time_embed_dim is None else _check_positive_int(time_embed_dim, "time_embed_dim")
        self.embedding = _Conditioning(embed_dim, num_components, cond_dim, time_scale)
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(_MLPBlock(hidden, embed_dim) for _ in range(depth))
        self.out_norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(
        self, x: torch.Tensor, t, component: torch.Tensor | None = None, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        _check_input(x, (self.dim,), "[B, dim]")
        emb = self.embedding(t, component, cond, x)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(F.silu(self.out_norm(h)))


# --------------------------------------------------------------------------------------------------
# UNet
# --------------------------------------------------------------------------------------------------
def _group_norm(channels: int, groups: int) -> nn.GroupNorm:
    # gcd keeps any channel count valid (e.g. base=12 with 8 groups -> 4 groups)
    return nn.GroupNorm(math.gcd(channels, groups), channels)


class _ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv3x3, + projection of SiLU(emb) per channel, GroupNorm -> SiLU -> conv3x3,
    plus a (1x1-projected when the width changes) skip."""

    def __init__(self, in_ch: int, out_ch: int, embed_dim: int, groups: int) -> None:
        super().__init__()
        self.norm1 = _group_norm(in_ch, groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(embed_dim, out_ch)
        self.norm2 = _group_norm(out_ch, groups)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: _Embedding) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + emb.project(self.emb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class UNet(nn.Module):
    """Small UNet denoiser for [B, channels, H, W] images, lean enough to train on a CPU.

    ``len(channel_mults)`` resolution levels of width ``base * mult``. Down: ``num_res_blocks`` residual
    blocks per level, the level's output kept as its skip, a stride-2 3x3 convolution to the next level.
    Middle: one residual block. Up: a 2x2 stride-2 transposed convolution to the level's width, the skip
    concatenated, ``num_res_blocks`` residual blocks. H and W must be divisible by 2 ** (levels - 1).
    The embedding width is ``time_embed_dim`` (default 4 * base); GroupNorm uses
    gcd(channels, norm_groups) groups. See the module docstring for t, component and cond.
    """

    def __init__(
        self,
        channels: int,
        image_size: int | Sequence[int],
        base: int = 32,
        num_components: int = 1,
        cond_dim: int = 0,
        channel_mults: Sequence[int] = (1, 2),
        num_res_blocks: int = 1,
        time_embed_dim: int | None = None,
        time_scale: float = 1000.0,
        norm_groups: int = 8,
    ) -> None:
        super().__init__()
        self.channels = _check_positive_int(channels, "channels")
        self.image_size = self._check_image_size(image_size)
        _check_positive_int(base, "base")
        _check_positive_int(num_res_blocks, "num_res_blocks")
        _check_positive_int(norm_groups, "norm_groups")
        mults = tuple(channel_mults) if isinstance(channel_mults, Sequence) else ()
        if not mults or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in mults):
            raise ValueError(f"channel_mults must be a non-empty sequence of positive integers, got {channel_mults!r}")
        factor = 2 ** (len(mults) - 1)
        if any(s % factor for s in self.image_size):
            raise ValueError(
                f"image_size {self.image_size} must be divisible by 2 ** (levels - 1) = {factor} "
                f"for {len(mults)} levels (channel_mults={mults})"
            )
        embed_dim = 4 * base if time_embed_dim is None else _check_positive_int(time_embed_dim, "time_embed_dim")
        self.embedding = _Conditioning(embed_dim, num_components, cond_dim, time_scale)

        def blocks(cin: int, cout: int) -> nn.ModuleList:
            return nn.ModuleList(
                _ResBlock(cin if i == 0 else cout, cout, embed_dim, norm_groups) for i in range(num_res_blocks)
            )

        widths = [base * m for m in mults]
        self.conv_in = nn.Conv2d(channels, base, 3, padding=1)
        self.down = nn.ModuleList(blocks(cin, cout) for cin, cout in zip([base, *widths[:-1]], widths))
        self.downsample = nn.ModuleList(nn.Conv2d(w, w, 3, stride=2, padding=1) for w in widths[:-1])
        self.mid = _ResBlock(widths[-1], widths[-1], embed_dim, norm_groups)
        # up[i] / upsample[i] belong to level i; the top level has no upsampling
        self.upsample = nn.ModuleList(nn.ConvTranspose2d(wi, w, 2, stride=2) for w, wi in zip(widths[:-1], widths[1:]))
        self.up = nn.ModuleList(blocks(2 * w, w) for w in widths)
        width = widths[0]
        self.out_norm = _group_norm(width, norm_groups)
        self.conv_out = nn.Conv2d(width, channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    @staticmethod
    def _check_image_size(image_size) -> tuple[int, int]:
        size = (image_size, image_size) if isinstance(image_size, int) else image_size
        if (
            not isinstance(size, Sequence)
            or len(size) != 2
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in size)
        ):
            raise ValueError(f"image_size must be a positive integer or a pair (H, W) of them, got {image_size!r}")
        return tuple(size)

    def forward(
        self, x: torch.Tensor, t, component: torch.Tensor | None = None, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        _check_input(x, (self.channels, *self.image_size), "[B, C, H, W]")
        emb = self.embedding(t, component, cond, x)
        h = self.conv_in(x)
        skips = []
        for level, level_blocks in enumerate(self.down):
            for block in level_blocks:
                h = block(h, emb)
            skips.append(h)
            if level < len(self.downsample):
                h = self.downsample[level](h)
        h = self.mid(h, emb)
        for level in reversed(range(len(self.up))):
            if level < len(self.upsample):
                h = self.upsample[level](h)
            h = torch.cat([h, skips[level]], dim=1)
            for block in self.up[level]:
                h = block(h, emb)
        return self.conv_out(F.silu(self.out_norm(h)))
