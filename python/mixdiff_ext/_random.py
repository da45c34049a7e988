"""Seeds and row offsets of the counter-based generator, as every Python entry point takes them."""
from __future__ import annotations

import torch


def resolve_seed(seed: int | None, generator: torch.Generator | None = None) -> int:
    """The op's int64 seed. None draws one from `generator` (torch's default generator when None too),
    so torch.manual_seed makes runs repeatable; integers in [-2**63, 2**64) keep their 64 bits."""
    if seed is None:
        return int(torch.randint(0, 2**63 - 1, (1,), generator=generator).item())
    if isinstance(seed, bool) or int(seed) != seed or not -(2**63) <= seed < 2**64:
        raise ValueError(f"seed must be an integer in [-2**63, 2**64), got {seed!r}")
    return int(seed) - 2**64 if seed >= 2**63 else int(seed)


def check_offset(name: str, value: int) -> int:
    """A row offset (the index of the first sample in the generator's rows): an integer in [0, 2**63)."""
    if isinstance(value, bool) or int(value) != value or not 0 <= value < 2**63:
        raise ValueError(f"{name} must be an integer in [0, 2**63), got {value!r}")
    return int(value)
