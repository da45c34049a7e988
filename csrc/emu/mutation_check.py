#!/usr/bin/env python3
"""`make emu-mutation-check`: injects known GPU bugs, one at a time, into a copy of the CUDA sources, rebuilds
the emulated backend (csrc/emu) incrementally and runs the emulated `cuda` tests of the mutated op. Every
mutation must make them fail; the table says what caught each one. Exit status 1 if any mutation survives
(or if a snippet no longer matches the sources: update it with the kernel).

Each mutation is an exact snippet of one source file and its replacement. Mutations of .cu files come first:
a mutation of a shared header rebuilds every kernel, so those run last, one rebuild each.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / "build" / "emu-mutants"
SRC, BUILD = WORK / "src", WORK / "build"
COPIED = ("CMakeLists.txt", "cmake", "csrc")


@dataclass(frozen=True)
class Mutation:
    name: str
    bug: str  # what a GPU would do with it
    path: str  # relative to the repository root
    old: str
    new: str
    tests: tuple[str, ...]  # pytest arguments (files, -k) that must fail


MUTATIONS = (
    Mutation("kmeans-shared-histogram-not-atomic", "lost updates of the block's shared histogram (racing +=)",
             "csrc/ops/kmeans_stats/kmeans_stats_cuda.cu",
             "      atomicAdd(counts + label, 1ull);  // integer: order-independent\n",
             "      counts[label] += 1ull;\n",
             ("tests/test_kmeans_stats.py", "-k", "matches_reference")),
    Mutation("kmeans-grid-stride-stops-early", "blocks stop after their first tile: rows past the grid unassigned",
             "csrc/ops/kmeans_stats/kmeans_stats_cuda.cu",
             "  double inertia = 0.0;\n  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {\n",
             "  double inertia = 0.0;\n  for (int64_t tile = blockIdx.x; tile < tiles && tile < gridDim.x; tile += gridDim.x) {\n",
             ("tests/test_kmeans_stats.py",)),
    Mutation("assign-launch-smem-short", "the launch gives half the shared memory the kernel carves",
             "csrc/ops/assign_nearest/assign_nearest_cuda.cu",
             "<<<blocks, kThreads, c.bytes, stream>>>",
             "<<<blocks, kThreads, c.bytes / 2, stream>>>",
             ("tests/test_assign_nearest.py", "-k", "matches_reference")),
    Mutation("estep-war-barrier-missing", "the next tile's scores overwrite gs while other threads still read it",
             "csrc/ops/estep_stats/estep_stats_cuda.cu",
             "      __syncthreads();  // the previous tile's passes are done reading gs, xd, xe, shd, she\n",
             "",
             ("tests/test_estep_stats.py", "-k", "matches_reference")),
    Mutation("estep-discarded-overread", "the last tile reads log_lik past its end (the value is discarded)",
             "csrc/ops/estep_stats/estep_stats_cuda.cu",
             "      const T ll_n = n < N ? params.log_lik[n] : T(0);\n",
             "      const T ll_n = params.log_lik[n];\n",
             ("tests/test_estep_stats.py", "-k", "matches_reference")),
    Mutation("estep-no-smem-opt-in", "more than 48 KB of dynamic shared memory without cudaFuncSetAttribute",
             "csrc/ops/estep_stats/estep_stats_cuda.cu",
             "  if (bytes > 48 * 1024)\n    MIXDIFF_CUDA_TRY(",
             "  if (false)\n    MIXDIFF_CUDA_TRY(",
             ("tests/test_estep_stats.py",)),
    Mutation("posterior-divergent-barrier", "a barrier inside a branch only the tile's valid rows take",
             "csrc/ops/gmm_posterior/gmm_posterior_cuda.cu",
             "    if (p.resp != nullptr) {  // block-uniform\n",
             "    if (p.resp != nullptr && n < N) {\n",
             ("tests/test_gmm_posterior.py", "-k", "matches_reference")),
    Mutation("q-sample-raw-barrier-missing", "rows read the nearest-mean distances before all are written",
             "csrc/ops/q_sample/q_sample_cuda.cu",
             "    if (r < rows && c < kt) dist_s[tid] = acc;\n    __syncthreads();\n",
             "    if (r < rows && c < kt) dist_s[tid] = acc;\n",
             ("tests/test_q_sample.py",)),
    Mutation("prior-sample-store-past-row", "V = 1 rows also store the missing elements of the last plane",
             "csrc/ops/prior_sample/prior_sample_cuda.cu",
             "          if (!pg.holds(e)) break;  // V = 1: the last plane is partial\n",
             "",
             ("tests/test_prior_sample.py",)),
    Mutation("reverse-step-reads-absent-history", "a one-step history also reads the second history pointer",
             "csrc/ops/reverse_step/reverse_step_cuda.cu",
             "          if (history >= 2) load_elems<V>(p.history[1] + row + e, h2v);\n",
             "          if (history >= 1) load_elems<V>(p.history[1] + row + e, h2v);\n",
             ("tests/test_reverse_step.py",)),
    Mutation("ngmg-row-bound-off-by-one", "the grid-stride loop runs one row past N",
             "csrc/ops/ngmg/ngmg_cuda.cu",
             "  for (int64_t n = blockIdx.x * int64_t(kThreads) + threadIdx.x; n < N;",
             "  for (int64_t n = blockIdx.x * int64_t(kThreads) + threadIdx.x; n <= N;",
             ("tests/test_ngmg.py",)),
    # Shared headers: every kernel rebuilds.
    Mutation("streamer-raw-barrier-missing", "threads read the staged chunk before the block has written it",
             "csrc/include/mixdiff/cuda_utils.cuh",
             "        load_components(k0, kt, d0);\n        __syncthreads();\n",
             "        load_components(k0, kt, d0);\n",
             ("tests/test_assign_nearest.py", "-k", "matches_reference")),
    Mutation("streamer-tail-not-zero-padded", "component chunks past K or D keep stale shared memory",
             "csrc/include/mixdiff/cuda_utils.cuh",
             "      ms[i] = ok ? means[at] : T(0);\n",
             "      if (ok) ms[i] = means[at];\n",
             ("tests/test_assign_nearest.py", "-k", "matches_reference")),
    Mutation("block-sum-shuffle-in-partial-warp", "a full-mask shuffle executed by 4 lanes of a warp",
             "csrc/include/mixdiff/cuda_utils.cuh",
             "  if (warp == 0) {\n    v = lane < kWarps ? red[lane] : 0.0;\n",
             "  if (warp == 0 && lane < kWarps) {\n    v = red[lane];\n",
             ("tests/test_kmeans_stats.py", "-k", "matches_reference")),
    Mutation("full-streamer-overread-last-tile", "the last tile stages one row past N (its result is discarded)",
             "csrc/include/mixdiff/cuda_utils.cuh",
             "      for (int64_t i = tid; i < rows * D; i += kThreads) {\n",
             "      for (int64_t i = tid; i < (rows + (rows < kThreads)) * D; i += kThreads) {\n",
             ("tests/test_gmm_posterior.py", "-k", "matches_reference and full")),
)


def run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, text=True, capture_output=True, **kw)


def run_or_exit(what: str, cmd) -> None:
    r = run(cmd)
    if r.returncode != 0:
        sys.exit(f"emu-mutation-check: {what} failed\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")


def build() -> None:
    run_or_exit("build", ["cmake", "--build", str(BUILD), "--target", "mixdiff_emu", "mixdiff_emu_device", "-j2"])


def emulated_tests(args) -> subprocess.CompletedProcess:
    env = dict(os.environ, MIXDIFF_TEST_EMU="1", MIXDIFF_EMU_BUILD=str(BUILD),
               LD_PRELOAD=str(BUILD / "libmixdiff_emu_device.so"))
    return run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m", "cuda and not dynamo",
                *args], env=env, timeout=900)


def first_error(out: str) -> str:
    for line in out.splitlines():
        if line.startswith("E ") and ("Error" in line or "Mismatch" in line or "assert" in line):
            return line[1:].strip()[:150]
    return out.strip().splitlines()[-1][:150] if out.strip() else "?"


def main() -> int:
    start = time.monotonic()
    shutil.rmtree(SRC, ignore_errors=True)
    SRC.mkdir(parents=True)
    for name in COPIED:
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, SRC / name)
    run_or_exit("configure", ["cmake", "-S", str(SRC), "-B", str(BUILD), "-DMIXDIFF_CUDA=OFF", "-DMIXDIFF_CUDA_EMU=ON",
                              f"-DPython_EXECUTABLE={sys.executable}"])
    build()
    # The unmutated copy passes the selected tests, so that each failure below is its mutation's.
    selected = sorted({a for m in MUTATIONS for a in m.tests if a.startswith("tests/")})
    base = emulated_tests(selected)
    if base.returncode != 0:
        sys.exit(f"emu-mutation-check: the unmutated sources fail their emulated tests\n{base.stdout[-3000:]}")

    rows, survivors = [], []
    for m in MUTATIONS:
        path = SRC / m.path
        text = path.read_text()
        if text.count(m.old) != 1:
            sys.exit(f"emu-mutation-check: {m.name}: its snippet occurs {text.count(m.old)} times in {m.path}")
        path.write_text(text.replace(m.old, m.new))
        t0 = time.monotonic()
        try:
            build()
            res = emulated_tests(m.tests)
        finally:
            path.write_text(text)
        caught = res.returncode != 0
        if not caught:
            survivors.append(m.name)
        rows.append((m.name, Path(m.path).name, "caught" if caught else "SURVIVED",
                     first_error(res.stdout) if caught else m.bug, time.monotonic() - t0))
        print(f"{m.name}: {'caught' if caught else 'SURVIVED'} ({time.monotonic() - t0:.0f} s)", flush=True)

    print(f"\n{'mutation':38} {'file':26} {'result':9} first failure (or the bug)")
    for name, file, result, what, _ in rows:
        print(f"{name:38} {file:26} {result:9} {what}")
    ops = {Path(m.path).parent.name for m in MUTATIONS}
    print(f"\n{len(MUTATIONS)} mutations in {len(ops)} places, {len(MUTATIONS) - len(survivors)} caught, "
          f"{time.monotonic() - start:.0f} s")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
