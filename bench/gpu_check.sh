#!/usr/bin/env bash
# GPU check, run from the repository root on a CUDA machine (torch with CUDA 13, nvcc, cmake,
# scikit-build-core, pytest; no internet) with $OUT set: CUDA build, CUDA op tests, GPU benchmark.
# The benchmark runs even when tests fail; the script then exits with the tests' status.
set -euo pipefail
: "${OUT:?set OUT to a folder for the logs}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}  # the interpreter that holds the CUDA torch

nvidia-smi
"$PY" -m pip install --no-build-isolation --no-deps --no-index -e . -C cmake.define.MIXDIFF_CUDA=ON 2>&1 | tee "$OUT/build.log"
"$PY" -c "import mixdiff_ext; print(mixdiff_ext.build_info())"
tests_rc=0
"$PY" -m pytest -m cuda -q tests 2>&1 | tee "$OUT/cuda_tests.log" || tests_rc=$?
"$PY" bench/bench_assign.py --device cuda --out "$OUT/bench_assign_gpu.json" 2>&1 | tee "$OUT/bench_gpu.log"
"$PY" bench/bench_noise.py --device cuda --out "$OUT/bench_noise_gpu.json" 2>&1 | tee -a "$OUT/bench_gpu.log"
"$PY" bench/bench_sampling.py --device cuda --out "$OUT/bench_sampling_gpu.json" 2>&1 | tee -a "$OUT/bench_gpu.log"
"$PY" bench/bench_ngmg.py --device cuda --out "$OUT/bench_ngmg_gpu.json" 2>&1 | tee -a "$OUT/bench_gpu.log"
exit "$tests_rc"
