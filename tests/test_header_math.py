"""Compiles and runs tests/cpp/header_math_test.cpp: the header math that only the CUDA kernels call
(streaming LogSumExp and ArgMin/ArgMax merges, scalar fast_exp, per-pair Gaussian terms) checked on the
host, so a CPU-only CI still covers the GPU's arithmetic."""
from __future__ import annotations

import os
import shutil
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_header_math(tmp_path):
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    assert cxx, "a C++ compiler is required to build the extension, and this test uses it too"
    exe = tmp_path / "header_math_test"
    src = os.path.join(ROOT, "tests", "cpp", "header_math_test.cpp")
    build = subprocess.run([cxx, "-std=c++20", "-O2", "-I", os.path.join(ROOT, "csrc", "include"), src, "-o", str(exe)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip().endswith("0 failed"), run.stdout
