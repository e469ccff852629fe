"""Benchmark: fit and flag many synthetic capability curves, as a sweep's analysis does.

Each curve: 8 model sizes over 3 decades, 3 seeds, binomial noise from 512 examples; a fifth each of sigmoid jumps,
power laws rising to a ceiling, hyperbolic saturations, lines in log x and flat curves. Per curve, `fit_law` fits
the logistic in log x with `n_boot` bootstrap resamples (seeds resampled within each size) and `flag_curve` judges
it with `n_boot` simulated curves (model comparison, likelihood-ratio test, breakthroughness, jump interval).

    python -m analysis.bench_analysis [--curves 1000] [--boot 200] [--workers 2]

Workers are separate processes with single-threaded BLAS (one per core: the small matrix products here are slower,
not faster, when BLAS threads compete for the same cores).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd

SIZES = np.logspace(4, 7, 8)
SEEDS = 3
N_EXAMPLES = 512


def synthetic_curve(i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Curve number i (deterministic): x, y, stderr, seed per measurement."""
    from analysis.laws import linear_log, logistic, saturating

    rng = np.random.default_rng(i)
    kind = i % 5
    x = SIZES
    if kind == 0:
        p = logistic(x, rng.uniform(0, 0.1), rng.uniform(0.5, 0.95), rng.uniform(3, 30), 10 ** rng.uniform(4.8, 6.2))
    elif kind == 1:
        p = rng.uniform(0.6, 0.95) - rng.uniform(0.3, 0.5) * (x / x[0]) ** -rng.uniform(0.1, 0.5)
    elif kind == 2:
        p = saturating(x, rng.uniform(0, 0.1), rng.uniform(0.4, 0.85), 10 ** rng.uniform(4, 7))
    elif kind == 3:
        p = linear_log(x / x[0], rng.uniform(0, 0.3), rng.uniform(0.05, 0.2))
    else:
        p = np.full(x.size, rng.uniform(0.05, 0.9))
    X = np.repeat(x, SEEDS)
    y = rng.binomial(N_EXAMPLES, np.clip(np.repeat(p, SEEDS), 0, 1)) / N_EXAMPLES
    return X, y, np.sqrt(y * (1 - y) / N_EXAMPLES), np.tile(np.arange(SEEDS), x.size)


def _work(args: tuple[int, int, int]) -> tuple[float, float, dict]:
    """Fit and flag curves [start, stop); returns (fit seconds, flag seconds, verdict counts)."""
    from analysis.fit import fit_law
    from analysis.flags import flag_curve

    start, stop, n_boot = args
    t_fit = t_flag = 0.0
    verdicts: dict[str, int] = {}
    for i in range(start, stop):
        X, y, se, sd = synthetic_curve(i)
        t0 = time.perf_counter()
        fit_law(pd.DataFrame({"n_params": X, "value": y, "seed": sd}), "logistic", "n_params", "value",
                n_boot=n_boot, seed=i)
        t1 = time.perf_counter()
        r = flag_curve(X, y, higher_is_better=True, seeds=sd, stderr=se, n_boot=n_boot, seed=i)
        t2 = time.perf_counter()
        t_fit += t1 - t0
        t_flag += t2 - t1
        verdicts[r["verdict"]] = verdicts.get(r["verdict"], 0) + 1
    return t_fit, t_flag, verdicts


def bench_analysis(n_curves: int = 1000, n_boot: int = 200, workers: int = 2) -> dict:
    """Time fitting + flagging of `n_curves` synthetic curves with `n_boot` resamples on `workers` processes.

    Returns wall seconds, curves per second, CPU seconds spent fitting and flagging (summed over workers), the
    verdict counts (a fifth of the curves are jumps) and the settings.
    """
    if n_curves < 1 or n_boot < 1 or workers < 1:
        raise ValueError("n_curves, n_boot and workers must be at least 1")
    chunks = np.array_split(np.arange(n_curves), max(workers * 8, 1))
    tasks = [(int(c[0]), int(c[-1]) + 1, n_boot) for c in chunks if c.size]
    t0 = time.perf_counter()
    if workers == 1:
        results = [_work(t) for t in tasks]
    else:
        saved = {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        os.environ.update({k: "1" for k in saved})  # inherited by the spawned workers before numpy loads
        try:
            import multiprocessing as mp

            with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
                results = list(pool.map(_work, tasks))
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    wall = time.perf_counter() - t0
    verdicts: dict[str, int] = {}
    for _, _, v in results:
        for k, c in v.items():
            verdicts[k] = verdicts.get(k, 0) + c
    return {"n_curves": n_curves, "n_boot": n_boot, "workers": workers, "wall_s": wall,
            "curves_per_s": n_curves / wall, "fit_cpu_s": sum(r[0] for r in results),
            "flag_cpu_s": sum(r[1] for r in results), "verdicts": verdicts, "cpu_count": os.cpu_count()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.bench_analysis", description=__doc__.splitlines()[0])
    ap.add_argument("--curves", type=int, default=1000)
    ap.add_argument("--boot", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args(argv)
    try:
        r = bench_analysis(a.curves, a.boot, a.workers)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{r['n_curves']} curves, {r['n_boot']} resamples, {r['workers']} worker(s): {r['wall_s']:.1f} s wall "
          f"({r['curves_per_s']:.1f} curves/s); CPU: fitting {r['fit_cpu_s']:.1f} s, flagging {r['flag_cpu_s']:.1f} s; "
          f"verdicts {r['verdicts']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
