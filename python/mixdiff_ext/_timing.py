"""Wall-clock medians for the demo and bench/ (not for tests)."""
from __future__ import annotations

import time

import numpy as np


def median_time(fn, repeats: int = 5, warmup: int = 1, settle: float = 0.2) -> float:
    """Median seconds of fn() over `repeats` calls after `warmup` calls.

    `settle` sleeps first: scikit-learn's OpenMP and OpenBLAS pools spin-wait after their parallel
    regions, which would steal the 2 cores from whatever is timed right after them.
    """
    time.sleep(settle)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))
