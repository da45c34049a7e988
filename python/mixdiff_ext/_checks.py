"""Argument checks shared by the Python modules (messages name the argument)."""
from __future__ import annotations

import math

import numpy as np


def check_real(value, name: str) -> float:
    """A finite Python float from a real number (bool and non-numbers raise TypeError)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value
