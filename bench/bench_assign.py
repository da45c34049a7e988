"""Benchmarks of the assignment ops and mixture fitting against scikit-learn and torch eager.

Medians over repeats after a warm-up; every ratio is against a baseline measured in the same run.
Writes a JSON record (machine, date, threads, figures) to bench/results/ and prints a table.

    python bench/bench_assign.py                 # CPU, 2 threads, the issue's sizes
    python bench/bench_assign.py --device cuda   # GPU sizes (N=1M, D=128, K=1024), CUDA events
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import time

import torch

import mixdiff_ext
from mixdiff_ext import GaussianMixturePrior, ops
from mixdiff_ext._timing import median_time

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def synthetic_clusters(n: int = 200_000, dim: int = 64, k: int = 32, spread: float = 6.0, seed: int = 0) -> torch.Tensor:
    """Benchmark data: k anisotropic Gaussian clusters with centres ~ N(0, spread^2 I) and unequal sizes."""
    g = torch.Generator().manual_seed(seed)
    centres = spread * torch.randn(k, dim, generator=g)
    probs = torch.rand(k, generator=g) + 0.5
    labels = torch.multinomial(probs / probs.sum(), n, replacement=True, generator=g)
    scales = 0.5 + torch.rand(k, dim, generator=g)
    return centres[labels] + scales[labels] * torch.randn(n, dim, generator=g)


# --- torch eager baselines -------------------------------------------------------------------------
def eager_nearest(x, c):
    return torch.cdist(x, c).argmin(1)


def eager_diag_loglik(x, means, sigma, log_w, chunk=4096):
    """Broadcasting log-density, chunked over rows so the [n, K, D] temporary fits in memory."""
    out_l, out_ll = [], []
    logdet = torch.log(sigma).sum(1)
    const = -0.5 * x.shape[1] * math.log(2 * math.pi)
    for xb in x.split(chunk):
        z = (xb[:, None, :] - means[None]) / sigma[None]
        joint = log_w + const - logdet - 0.5 * (z * z).sum(-1)
        out_l.append(joint.argmax(1))
        out_ll.append(torch.logsumexp(joint, 1))
    return torch.cat(out_l), torch.cat(out_ll)


def machine() -> dict:
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "mixdiff_build": mixdiff_ext.build_info()}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def row(name, ours, baselines, **extra):
    r = {"case": name, "ours_ms": ours * 1e3}
    for key, t in baselines.items():
        r[f"{key}_ms"] = t * 1e3
        r[f"speedup_vs_{key}"] = t / ours
    r.update(extra)
    return r


# --- CPU --------------------------------------------------------------------------------------------
def bench_cpu(repeats: int) -> list[dict]:
    from sklearn.cluster import KMeans
    from sklearn.mixture import GaussianMixture

    rows = []
    n, d, k = 200_000, 64, 64
    x = synthetic_clusters(n, d, k, seed=0)
    xn = x.numpy()
    start = GaussianMixturePrior.fit(x, k, covariance_type="diag", seed=0, max_iter=5)
    centres = start.means.contiguous()

    # nearest assignment
    km = KMeans(k, init=centres.numpy(), n_init=1, max_iter=1).fit(xn[:5000])
    km.cluster_centers_ = centres.numpy()
    assert torch.equal(ops.assign_nearest(x, centres).labels, torch.from_numpy(km.predict(xn)).long())
    t_ours = median_time(lambda: ops.assign_nearest(x, centres), repeats)
    t_km = median_time(lambda: km.predict(xn), repeats)
    t_eager = median_time(lambda: eager_nearest(x, centres), repeats)
    rows.append(row("nearest N=200k D=64 K=64 f32", t_ours, {"sklearn_KMeans.predict": t_km, "torch_eager": t_eager},
                    goal="ours <= KMeans.predict and >= 3x eager"))

    # diag posterior (labels + log-likelihood)
    gm = GaussianMixture(k, covariance_type="diag", max_iter=1, means_init=centres.numpy()).fit(xn[:20000])
    gm.means_, gm.weights_ = centres.numpy().astype("float64"), start.weights.numpy().astype("float64")
    gm.covariances_ = start.covariances.numpy().astype("float64")
    gm.precisions_cholesky_ = 1 / start.cov_factor.numpy().astype("float64")
    sigma, log_w = start.cov_factor, start.log_weights
    t_ours = median_time(lambda: ops.gmm_posterior(x, centres, sigma, log_w, "diag"), repeats)
    t_skl = median_time(lambda: gm.predict_proba(xn), repeats)
    t_eager = median_time(lambda: eager_diag_loglik(x, centres, sigma, log_w), repeats)
    rows.append(row("diag posterior N=200k D=64 K=64 f32", t_ours,
                    {"sklearn_GaussianMixture.predict_proba": t_skl, "torch_eager": t_eager}, goal=">= 3x predict_proba"))

    # full covariance posterior, K=16
    kf = 16
    full = GaussianMixturePrior.fit(x[:50_000], kf, covariance_type="full", seed=0, max_iter=5)
    gmf = GaussianMixture(kf, covariance_type="full", max_iter=1, means_init=full.means.numpy()).fit(xn[:20000])
    gmf.means_, gmf.weights_ = full.means.double().numpy(), full.weights.double().numpy()
    cov64 = full.covariances.double()
    gmf.covariances_ = cov64.numpy()
    gmf.precisions_cholesky_ = torch.linalg.inv(torch.linalg.cholesky(cov64)).mT.numpy()
    t_ours = median_time(lambda: ops.gmm_posterior(x, full.means, full.cov_factor, full.log_weights, "full"), repeats)
    t_skl = median_time(lambda: gmf.predict_proba(xn), max(1, repeats // 2))
    rows.append(row("full posterior N=200k D=64 K=16 f32", t_ours, {"sklearn_GaussianMixture.predict_proba": t_skl},
                    goal=">= 3x predict_proba"))

    # EM fit, diag, 20 iterations, tol=0, same start
    def fit_ours():
        return GaussianMixturePrior.fit(x, k, covariance_type="diag", method="em", init=start, max_iter=20, tol=0.0)

    def fit_sklearn():
        return GaussianMixture(k, covariance_type="diag", max_iter=20, tol=0.0, n_init=1, reg_covar=1e-6,
                               weights_init=start.weights.double().numpy(), means_init=start.means.double().numpy(),
                               precisions_init=(1 / start.covariances.double()).numpy()).fit(xn)

    t0 = time.perf_counter(); ours_fit = fit_ours(); t_ours = time.perf_counter() - t0
    time.sleep(0.2)
    t0 = time.perf_counter(); skl_fit = fit_sklearn(); t_skl = time.perf_counter() - t0
    ll_ours, ll_skl = ours_fit.score(x.double()), float(skl_fit.score(xn.astype("float64")))
    rows.append(row("EM fit diag 20 iter N=200k D=64 K=64 f32", t_ours, {"sklearn_GaussianMixture.fit": t_skl},
                    mean_loglik_ours=ll_ours, mean_loglik_sklearn=ll_skl, loglik_abs_diff=abs(ll_ours - ll_skl),
                    goal=">= 3x GaussianMixture.fit, same final log-likelihood within 1e-3"))
    return rows


# --- GPU --------------------------------------------------------------------------------------------
def cuda_time(fn, repeats: int) -> float:
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    times.sort()
    return times[len(times) // 2]


def device_peaks() -> dict:
    n = 1 << 28  # 1 GiB of float32
    src = torch.empty(n, device="cuda").uniform_()
    dst = torch.empty_like(src)
    t = cuda_time(lambda: dst.copy_(src), 10)
    a = torch.randn(8192, 8192, device="cuda")
    tf = cuda_time(lambda: a @ a, 5)
    return {"copy_GBps": 2 * n * 4 / t / 1e9, "fp32_matmul_TFLOPs": 2 * 8192**3 / tf / 1e12}


def bench_gpu(repeats: int) -> list[dict]:
    rows = []
    n, d, k = 1_000_000, 128, 1024
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(n, d, device="cuda", generator=g)
    centres = torch.randn(k, d, device="cuda", generator=g)
    sigma = 0.5 + torch.rand(k, d, device="cuda", generator=g)
    log_w = torch.log_softmax(torch.randn(k, device="cuda", generator=g), 0)
    peaks = device_peaks()
    bytes_moved = n * d * 4 + n * 12
    t = cuda_time(lambda: ops.assign_nearest(x, centres), repeats)
    te = cuda_time(lambda: eager_nearest(x, centres), repeats)
    rows.append(row("GPU nearest N=1M D=128 K=1024 f32", t, {"torch_eager": te},
                    TFLOPs=3 * n * k * d / t / 1e12, GBps=bytes_moved / t / 1e9, **peaks))
    t = cuda_time(lambda: ops.gmm_posterior(x, centres, sigma, log_w, "diag"), repeats)
    te = cuda_time(lambda: eager_diag_loglik(x, centres, sigma, log_w, chunk=16384), max(1, repeats // 2))
    rows.append(row("GPU diag posterior N=1M D=128 K=1024 f32", t, {"torch_eager": te},
                    TFLOPs=4 * n * k * d / t / 1e12, GBps=bytes_moved / t / 1e9, **peaks))
    return rows


def cli(doc: str, default_repeats: int) -> argparse.Namespace:
    """The benchmarks' shared command line; sets the CPU thread count."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=default_repeats)
    p.add_argument("--out", help="JSON path (default bench/results/<name>_<device>_<date>.json)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    return args


def report(name: str, args: argparse.Namespace, rows: list[dict], extra_keys=("TFLOPs", "GBps", "copy_GBps")) -> None:
    """Writes the JSON record (machine, date, rows) and prints one line per row."""
    record = {"benchmark": f"bench_{name}", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": machine(), "rows": rows}
    out = args.out or os.path.join(RESULTS, f"{name}_{args.device}_{dt.date.today().isoformat()}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(record, f, indent=2)
    for r in rows:
        base = ", ".join(f"{k[len('speedup_vs_'):]} {v:.2f}x" for k, v in r.items() if k.startswith("speedup_vs_"))
        extra = ", ".join(f"{k} {v:.3g}" for k, v in r.items() if k in extra_keys)
        print(f"{r['case']:<44} {r['ours_ms']:9.2f} ms   {base}   {extra}")
    print(f"wrote {out}")


def main() -> None:
    args = cli(__doc__, default_repeats=7)
    rows = bench_gpu(args.repeats) if args.device == "cuda" else bench_cpu(args.repeats)
    report("assign", args, rows, extra_keys=("TFLOPs", "GBps", "loglik_abs_diff"))


if __name__ == "__main__":
    main()
