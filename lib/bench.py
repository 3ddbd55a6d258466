"""Benchmark of the certificates: ``python -m lib.bench [--json bench.json]`` (or ``make bench``).

Times the label-flip certification of an MNIST-1/7-shaped problem (n = 13007 training points,
k = 50 features, m = 2163 test points; random features with a planted linear signal), split
into its stages, against a plain ridge prediction of the same points; and the Monte Carlo
throughput of Gaussian CERTIFY on CPU (and CUDA when present). Prints a table and, with
``--json``, writes it.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable

import numpy as np
import torch

from .chernoff import chernoff_bound
from .gaussian import Smooth
from .labelflip import radius_from_log_tail
from .least_squares import add_intercept, kernel_weights, ridge_fit_predict, ridge_lambda_label_free
from .neyman_pearson import threshold_table


def _timed(fn: Callable[[], object], repeat: int = 1) -> tuple[float, object]:
    best, out = np.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def refit_vs_inner_product(
    X: np.ndarray,
    y: np.ndarray,
    Xt: np.ndarray,
    lam: float,
    q: float,
    sizes,
    rng: np.random.Generator,
    draws: int = 50,
    refits: int = 20,
    dots: int = 2000,
):
    """Seconds per noisy labelling to get one test prediction, for the first n training points
    of each n in ``sizes``: refitting ridge on the labelling (:func:`ridge_fit_predict`) against
    one inner product with the precomputed kernel weights (eq. 12). ``draws`` noisy labellings
    per size are drawn from ``rng`` (:func:`lib.labelflip.flip_labels`) and cycled; the mean
    over ``refits`` refits and ``dots`` inner products. A table with columns n, refit (s) and
    alpha^T y (s)."""
    import pandas as pd

    from .labelflip import flip_labels

    rows = []
    for n in sizes:
        Xn, yn = X[: min(n, len(y))], y[: min(n, len(y))]
        a = kernel_weights(Xn, Xt[:1], lam)[:, 0]
        flips = flip_labels(yn, q, 2, rng, draws)
        start = time.perf_counter()
        for i in range(refits):
            ridge_fit_predict(Xn, flips[i % draws], Xt[:1], lam)
        refit = (time.perf_counter() - start) / refits
        start = time.perf_counter()
        for i in range(dots):
            a @ flips[i % draws]
        rows.append(
            {"n": Xn.shape[0], "refit (s)": refit, "alpha^T y (s)": (time.perf_counter() - start) / dots}
        )
    return pd.DataFrame(rows)


def labelflip_problem(n: int = 13007, k: int = 50, m: int = 2163, seed: int = 0):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=k)
    X = rng.normal(size=(n, k))
    y = (X @ w + 2.0 * rng.normal(size=n) > 0).astype(np.int64)
    Xt = rng.normal(size=(m, k))
    return add_intercept(X), y, add_intercept(Xt)


def bench_labelflip(q: float, n: int, k: int, m: int) -> dict[str, float]:
    X, y, Xt = labelflip_problem(n, k, m)
    t_lam, lam = _timed(lambda: ridge_lambda_label_free(X, q))
    t_ridge, _ = _timed(lambda: ridge_fit_predict(X, y, Xt, lam), repeat=3)
    t_kw, alpha = _timed(lambda: kernel_weights(X, Xt, lam))
    t_newton, res = _timed(lambda: chernoff_bound(alpha, y, q))
    threshold_table(q, 2)  # the table is cached per (q, K): time its first build separately
    t_table, radii = _timed(lambda: radius_from_log_tail(res.log_tail, q, max_radius=n))
    t_radii, radii = _timed(lambda: radius_from_log_tail(res.log_tail, q, max_radius=n), repeat=3)
    return {
        "q": q,
        "lambda_rule_s": t_lam,
        "kernel_weights_s": t_kw,
        "newton_s": t_newton,
        "newton_iterations": int(res.iterations.max()),
        "tight_radii_first_s": t_table,
        "tight_radii_cached_s": t_radii,
        "total_s": t_lam + t_kw + t_newton + t_table,
        "ridge_predict_s": t_ridge,
        "median_radius": float(np.median(radii)),
    }


def bench_gaussian(device: str, n: int = 20_000, batch: int = 1000) -> dict[str, float]:
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)
    ).to(device)
    smooth = Smooth(model, 10, 0.25, seed=0)
    x = torch.rand(1, 28, 28, device=device)
    smooth.certify(x, 100, batch, 0.001, batch)  # warm-up
    t, _ = _timed(lambda: smooth.certify(x, 100, n, 0.001, batch))
    return {"device": device, "samples": n + 100, "seconds": t, "samples_per_s": (n + 100) / t}


def bench_certify_mnist(device: str, n: int = 100_000, cnn_n: int = 10_000, batch: int = 4096) -> list[dict]:
    """CERTIFY's votes per second at chapter 2's sizes, per base classifier and sampling path:
    the small CNN (noise on the image, timed on ``cnn_n`` draws), and the projected network of
    chapter 2 (k = 64, h = 1024) with noise on the image, in the k projected dimensions, and from
    a noise bank drawn once (:mod:`lib.projected`). The ratio is to the small CNN, measured in
    the same run. Weights do not change the cost, so untrained networks are timed."""
    from .projected import ProjectedMLP, pca_basis
    from .training import SmallCNN

    rng = np.random.default_rng(0)
    mean, basis = pca_basis(rng.random((1000, 784)), 64)
    mlp = ProjectedMLP(mean, basis, 1024).to(device).eval()
    cnn = SmallCNN(10).to(device).eval()
    x = torch.rand(784, device=device)
    cases = [
        ("small CNN, noise on the image", Smooth(cnn, 10, 0.5), cnn_n, False),  # it reshapes to 28 x 28
        ("projected MLP, noise on the image", Smooth(mlp, 10, 0.5, use_projection=False), cnn_n, False),
        ("projected MLP, noise in k dimensions", Smooth(mlp, 10, 0.5), n, False),
        ("projected MLP, noise bank", Smooth(mlp, 10, 0.5), n, True),
    ]
    rows = []
    for name, smooth, num, use_bank in cases:
        banks = (smooth.noise_bank(100), smooth.noise_bank(num)) if use_bank else None
        smooth.certify(
            x,
            100,
            min(num, batch),
            0.001,
            batch,
            banks=None if banks is None else (banks[0], smooth.noise_bank(min(num, batch))),
        )  # warm-up
        t, _ = _timed(lambda sm=smooth, m=num, b=banks: sm.certify(x, 100, m, 0.001, batch, banks=b))
        rows.append(
            {
                "device": device,
                "path": name,
                "samples": num + 100,
                "seconds": t,
                "samples_per_s": (num + 100) / t,
            }
        )
    for r in rows:
        r["ratio_to_small_cnn"] = r["samples_per_s"] / rows[0]["samples_per_s"]
    return rows


def bench_chernoff_paths(
    n_binary: int = 12500, n_multi: int = 60000, m: int = 200, k: int = 10
) -> list[dict]:
    """The Chernoff bounds' float64 pass at chapter 8's and chapter 9's sizes: the fused
    one-pass kernels (:mod:`lib.fused`) against the array forms they replace, at the same t, in
    the same run; the whole multi-class bound with and without the binned warm start; and the
    exact attack on the undefended K-class model, one sort per rival against the rivals' shared
    groups (:func:`lib.attacks.min_flips_multiclass`)."""
    import torch as _torch

    from . import chernoff, fused

    rng = np.random.default_rng(0)
    rows = []
    X, y, Xt = labelflip_problem(n_binary, 50, m)
    alpha = kernel_weights(X, Xt, 1.0)
    t = rng.normal(size=m) * 50.0
    log_a, c = chernoff._binary_coefficients(y, 0.05)
    t_old, _ = _timed(lambda: chernoff._exact_f_and_newton_step(t, alpha, c, log_a))
    fused.binary_log_bound(alpha[:, :2], y, t[:2], 0.05, with_step=True)  # compile (cached on disk)
    t_new, _ = _timed(lambda: fused.binary_log_bound(alpha, y, t, 0.05, with_step=True))
    rows.append({"path": f"binary bound + step, n = {n_binary}", "array_s": t_old, "fused_s": t_new})
    Xm = add_intercept(rng.normal(size=(n_multi, 50)))
    ym = np.argmax(Xm[:, 1:11] + rng.normal(size=(n_multi, 10)), axis=1)
    am = kernel_weights(Xm, add_intercept(rng.normal(size=(m // 4, 50))), 1.0)
    pred = np.argmax(am.T @ np.eye(k)[ym], axis=1)
    cols = np.repeat(np.arange(am.shape[1]), k - 1)
    rivals = np.array([[r for r in range(k) if r != p] for p in pred]).reshape(-1)
    tm = np.full(cols.size, 50.0) / np.abs(am).max(axis=0)[cols]
    terms = chernoff._pair_terms(np.ascontiguousarray(am[:, cols]), ym, pred[cols], rivals, 0.05, k)
    t_old, _ = _timed(lambda: chernoff._pair_log_bound(_torch.from_numpy(tm), terms, with_step=True))
    pc = pred[cols]
    fused.pair_log_bound(am, ym, cols[:2], pc[:2], rivals[:2], tm[:2], 0.05, k, with_step=True)
    t_new, _ = _timed(lambda: fused.pair_log_bound(am, ym, cols, pc, rivals, tm, 0.05, k, with_step=True))
    rows.append({"path": f"K = {k} pair bound + step, n = {n_multi}", "array_s": t_old, "fused_s": t_new})
    t_old, _ = _timed(lambda: chernoff_bound(am, ym, 0.05, k, warm_start=False))
    t_new, _ = _timed(lambda: chernoff_bound(am, ym, 0.05, k))
    rows.append({"path": f"K = {k} whole bound, n = {n_multi}", "array_s": t_old, "fused_s": t_new})
    # the undefended K-class attack: one sort per (test point, rival) against the shared groups
    from .attacks import _min_flips_multiclass_sorted, min_flips_multiclass

    min_flips_multiclass(am[:, :2], ym, k)  # compile (cached on disk)
    t_old, _ = _timed(lambda: _min_flips_multiclass_sorted(am, ym, k))
    t_new, _ = _timed(lambda: min_flips_multiclass(am, ym, k))
    rows.append({"path": f"K = {k} undefended attack, n = {n_multi}", "array_s": t_old, "fused_s": t_new})
    for r in rows:
        r["speed_up"] = r["array_s"] / r["fused_s"]
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--n", type=int, default=13007)
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--m", type=int, default=2163)
    args = ap.parse_args(argv)
    rows = [bench_labelflip(q, args.n, args.k, args.m) for q in (0.01, 0.1, 0.3)]
    print(
        f"label-flip certification, n={args.n}, k={args.k}, m={args.m} "
        f"(torch threads {torch.get_num_threads()}, {platform.processor() or platform.machine()})"
    )
    head = (
        "q",
        "kernel_weights_s",
        "newton_s",
        "newton_iterations",
        "tight_radii_first_s",
        "tight_radii_cached_s",
        "total_s",
        "ridge_predict_s",
        "median_radius",
    )
    print(" ".join(f"{h:>20}" for h in head))
    for r in rows:
        print(" ".join(f"{r[h]:>20.4g}" for h in head))
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    gauss = [bench_gaussian(d) for d in devices]
    for g in gauss:
        print(
            f"Smooth.certify on {g['device']}: {g['samples_per_s']:.0f} samples/s "
            f"({g['samples']} samples in {g['seconds']:.2f} s, MLP 784-256-10, batch 1000)"
        )
    mnist = [r for d in devices for r in bench_certify_mnist(d)]
    print("CERTIFY at n = 100,000 (chapter 2), votes per second; ratio to the small CNN in the same run")
    for r in mnist:
        rate, ratio = r["samples_per_s"], r["ratio_to_small_cnn"]
        print(f"  {r['device']:>4} {r['path']:<38} {rate:>12,.0f}/s  x{ratio:.1f}")
    paths = bench_chernoff_paths()
    print("Chernoff bounds: the fused float64 kernels against the array forms, same inputs, same run")
    for r in paths:
        print(
            f"  {r['path']:<40} array {r['array_s']:8.3f} s   fused {r['fused_s']:8.3f} s"
            f"   x{r['speed_up']:.1f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"labelflip": rows, "gaussian": gauss, "certify_mnist": mnist, "chernoff_paths": paths},
                f,
                indent=2,
            )
        print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
