"""Smoke test of bench/bench_quality.py: a --quick run writes rows with finite metrics for every method."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_quality.py"

pytest.importorskip("diffusers")


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_quality", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_quick_run_writes_finite_rows(tmp_path):
    bench = _load_bench()
    out = tmp_path / "quality.json"
    threads = torch.get_num_threads()
    try:  # the 1000-step reference shortened to 20: the smoke test checks the plumbing, not the numbers
        bench.main(["--quick", "--reference-steps", "20", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    record = json.loads(out.read_text())
    rows = record["rows"]
    methods = {(r["library"], r["method"], r["clip"] != "none") for r in rows}
    assert len(methods) == 2 * len(bench.METHODS), methods
    assert {r["model"] for r in rows} == {"DDPM", "mixDDPM"}
    for r in rows:
        assert r["value"] is not None and math.isfinite(r["value"]), r
        assert r["network_calls"] == r["steps"], r
        assert r["wall_s"] > 0 and 0.0 <= r["far_outliers"] <= 1.0
    assert {r["steps"] for r in rows} == {5, 10, 20}
    assert record["config"]["train_steps"] == 50 and record["machine"]["cores"] >= 1
    assert len(record["frontier"]) == len({(r["model"], r["method"], r["clip"]) for r in rows})
