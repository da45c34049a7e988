"""The main job on built-in data: fit a mixture prior, report its components, the reverse-effort
reduction and the speed of the fused kernels against scikit-learn. `python -m mixdiff_ext.demo`."""
from __future__ import annotations

import argparse
import time
import warnings

import torch

from ._timing import median_time
from .prior import GaussianMixturePrior, effort


def synthetic_clusters(n: int = 200_000, dim: int = 64, k: int = 32, spread: float = 6.0, seed: int = 0) -> torch.Tensor:
    """Built-in data: k anisotropic Gaussian clusters with centres ~ N(0, spread^2 I) and unequal sizes."""
    g = torch.Generator().manual_seed(seed)
    centres = spread * torch.randn(k, dim, generator=g)
    probs = torch.rand(k, generator=g) + 0.5
    labels = torch.multinomial(probs / probs.sum(), n, replacement=True, generator=g)
    scales = 0.5 + torch.rand(k, dim, generator=g)
    return centres[labels] + scales[labels] * torch.randn(n, dim, generator=g)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--components", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    x = synthetic_clusters(args.n, args.dim, args.components, seed=args.seed)
    print(f"data: {args.n} x {args.dim}, {args.components} clusters (built-in synthetic)")
    t0 = time.perf_counter()
    prior = GaussianMixturePrior.fit(x, args.components, seed=args.seed)
    t_fit = time.perf_counter() - t0
    print(f"\nk-means dispatcher prior fitted in {t_fit:.3f} s ({prior.fit_info['n_iter']} iterations)")
    print(f"{'k':>3} {'weight':>8} {'|centre|':>9}")
    for k in range(prior.n_components):
        print(f"{k:>3} {float(prior.weights[k]):8.4f} {float(prior.means[k].norm()):9.3f}")

    standard = GaussianMixturePrior.standard(args.dim)
    e_std, e_mix = effort(standard, x), effort(prior, x)
    identity = float((prior.weights.double() * (prior.means.double() ** 2).sum(1)).sum())
    print(f"\nreverse effort: standard prior {e_std:.3f}, mixture prior {e_mix:.3f}")
    print(f"reduction {e_std - e_mix:.3f} (sum_i p_i ||c_i||^2 = {identity:.3f})")

    em = GaussianMixturePrior.fit(x, args.components, covariance_type="diag", method="em", seed=args.seed)
    print(f"EM (diag) mean log-likelihood {em.score(x):.4f} after {em.fit_info['n_iter']} iterations")

    try:
        from sklearn.cluster import KMeans
        from sklearn.mixture import GaussianMixture
    except ImportError:
        print("\nscikit-learn not installed: speed comparison skipped")
        return
    xn = x.numpy()
    with warnings.catch_warnings():  # one-iteration fits only set up the estimators; we then set their parameters
        warnings.simplefilter("ignore")
        km = KMeans(args.components, init=prior.means.numpy(), n_init=1, max_iter=1).fit(xn)
        gm = GaussianMixture(args.components, covariance_type="diag", max_iter=1, means_init=em.means.numpy()).fit(xn)
    km.cluster_centers_ = prior.means.numpy()
    gm.means_, gm.weights_ = em.means.double().numpy(), em.weights.double().numpy()
    gm.covariances_ = em.covariances.double().numpy()
    gm.precisions_cholesky_ = 1.0 / em.cov_factor.double().numpy()
    rows = [
        ("nearest assignment", lambda: prior.assign(x), lambda: km.predict(xn)),
        ("diag posterior", lambda: em.log_prob(x), lambda: gm.predict_proba(xn)),
    ]
    print(f"\n{'op':<20} {'mixdiff ms':>11} {'sklearn ms':>11} {'speed-up':>9}")
    for name, ours, theirs in rows:
        a, b = median_time(ours), median_time(theirs)
        print(f"{name:<20} {a * 1e3:11.2f} {b * 1e3:11.2f} {b / a:8.1f}x")


if __name__ == "__main__":
    main()
