"""Seeds and row offsets of the counter-based generator, as every Python entry point takes them."""
from __future__ import annotations

import numpy as np
import torch


def is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_seed(seed) -> int:
    """The op's int64 seed from an integer in [-2**63, 2**64) (the same 64 bits)."""
    if not is_int(seed):
        raise TypeError(f"seed must be an integer, got {type(seed).__name__}")
    seed = int(seed)
    if not -(2**63) <= seed < 2**64:
        raise ValueError(f"seed must lie in [-2**63, 2**64), got {seed}")
    return seed - 2**64 if seed >= 2**63 else seed


def resolve_seed(seed: int | None, generator: torch.Generator | None = None) -> int:
    """An explicit seed, or (seed=None) one drawn from `generator` (torch's default generator when None
    too), so torch.manual_seed makes runs repeatable."""
    if seed is not None:
        if generator is not None:
            raise ValueError("pass either seed or generator, not both")
        return check_seed(seed)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    device = generator.device if generator is not None else "cpu"
    return int(torch.randint(0, 2**63 - 1, (1,), generator=generator, device=device).item())


def check_offset(name: str, value) -> int:
    """A row offset (the index of the first sample in the generator's rows): an integer in [0, 2**63)."""
    if not is_int(value):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if not 0 <= int(value) < 2**63:
        raise ValueError(f"{name} must lie in [0, 2**63), got {value}")
    return int(value)


# Purposes of seeds derived from one call's seed, so that draws made for different purposes with the same
# row offsets are independent (e.g. a training step's diffusion noise and its condition noise).
SEED_CONDITION_NOISE = 1
SEED_CONDITION_DROPOUT = 2


def derive_seed(seed: int, purpose: int) -> int:
    """An int64 seed for `purpose` derived from `seed` by SplitMix64's finaliser (a bijection of 64-bit
    words, so different (seed, purpose) pairs almost never collide and the result looks unrelated)."""
    mask = 2**64 - 1
    z = (check_seed(seed) + purpose * 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return check_seed(z ^ (z >> 31))
