"""Benchmark of the jump test: how often it finds real jumps, how often it calls smooth rises emergent, and how fast.

Synthetic families with binomial noise (n = 256 examples per measurement), 6 runs per size, sizes 0.2 decades apart
(14 sizes), each curve drawn from its own seed:

1. `two_level_sharp`: runs at two levels (a run either stays on the floor or lands at the ceiling), the share of
   runs that make it rising within 0.1-0.3 decades (10-90%). E[y | N] is a jump: the test should say emergent.
2. `two_level_wide`: the same, the share rising over 1.2-2 decades: E[y | N] is not a jump (emergent is a false
   positive), but single runs are abrupt (`per_run` should say abrupt).
3. `one_level_smooth`: every run on the same smooth curve (a logistic 1.2-3 decades wide, a power law towards a
   ceiling, or a line in log N): neither emergent nor abrupt per run.
4. `training_jumps`: along training, 6 runs of one size, 30 checkpoints log-spaced over 2 decades of tokens; each run
   jumps within 0.05-0.2 decades, at a location that varies between runs by up to 0.3 decades: one row per run,
   each should be emergent.

Targets (README, "The emergence verdict"): recall >= 0.9 on families 1 and 4; false emergent <= 0.05 on families 2
and 3; per_run abrupt on family 2 and never abrupt on family 3, >= 0.9 each; 1,000 curves in under 60 s on 2 cores
(a family-4 curve is one run's row).

    python -m analysis.bench_analysis [--curves 1000] [--workers 2] [--boot 500]

Workers are separate processes with single-threaded BLAS (one per core).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

FAMILIES = ("two_level_sharp", "two_level_wide", "one_level_smooth", "training_jumps")
N_EXAMPLES = 256
RUNS = 6
SIZES_T = 3.0 + 0.2 * np.arange(14)
TRAIN_T = np.linspace(8.0, 10.0, 30)
LN9X2 = 2 * np.log(9.0)


def _s(t, t0, w):
    return 1.0 / (1.0 + np.exp(-LN9X2 * (t - t0) / w))


def synthetic(family: str, i: int) -> dict:
    """Curve number i of a family (deterministic). Returns the inputs of flag_curve (families 1-3) or flag_along
    (family 4), and the truth."""
    rng = np.random.default_rng(1_000_003 * (FAMILIES.index(family) + 1) + i)
    lo, hi = rng.uniform(0.0, 0.05), rng.uniform(0.6, 0.95)
    if family == "training_jumps":
        centre = rng.uniform(8.6, 9.4)
        runs = []
        for r in range(RUNS):
            w = rng.uniform(0.05, 0.2)
            t0 = centre + rng.uniform(-0.15, 0.15)
            p = lo + (hi - lo) * _s(TRAIN_T, t0, w)
            y = rng.binomial(N_EXAMPLES, p) / N_EXAMPLES
            runs.append({"x": 10 ** TRAIN_T, "y": y, "n": np.full(y.size, N_EXAMPLES), "t0": t0})
        return {"runs": runs}
    t = np.repeat(SIZES_T, RUNS)
    if family in ("two_level_sharp", "two_level_wide"):
        w = rng.uniform(0.1, 0.3) if family == "two_level_sharp" else rng.uniform(1.2, 2.0)
        t0 = rng.uniform(3.8, 5.0) if family == "two_level_sharp" else rng.uniform(4.0, 4.8)
        made = rng.random(t.size) < _s(t, t0, w)
        p = np.where(made, hi, lo)
    else:
        kind = i % 3
        if kind == 0:
            p = lo + (hi - lo) * _s(t, rng.uniform(3.5, 5.5), rng.uniform(1.2, 3.0))
        elif kind == 1:
            p = hi - (hi - lo) * (10 ** (t - t[0])) ** -rng.uniform(0.15, 0.6)
        else:
            p = lo + (hi - lo) * (t - t[0]) / np.ptp(t)
    y = rng.binomial(N_EXAMPLES, np.clip(p, 0, 1)) / N_EXAMPLES
    runs = np.array([f"{a}-{b}" for a in range(SIZES_T.size) for b in range(RUNS)], dtype=object)
    truth = w if family in ("two_level_sharp", "two_level_wide") else np.nan
    return {"x": 10 ** t, "y": y, "seeds": runs, "n": np.full(y.size, N_EXAMPLES), "w": truth}


def _work(args) -> list[dict]:
    from analysis.flags import flag_along, flag_curve

    family, start, stop, n_boot = args
    out = []
    for i in range(start, stop):
        d = synthetic(family, i)
        t0 = time.perf_counter()
        if family == "training_jumps":
            rows = flag_along(d["runs"], higher_is_better=True, bounds=(0, 1), n_boot=n_boot, seed=i)
            el = (time.perf_counter() - t0) / len(rows)
            for r, run in zip(rows, d["runs"]):
                inside = bool(r["jump_lo"] <= 10 ** run["t0"] <= r["jump_hi"])
                out.append({"family": family, "verdict": r["verdict"], "per_run": r["per_run"], "s": el,
                            "located": inside})
        else:
            r = flag_curve(d["x"], d["y"], higher_is_better=True, seeds=d["seeds"], n=d["n"], bounds=(0, 1),
                           x_name="n_params", n_boot=n_boot, seed=i)
            out.append({"family": family, "verdict": r["verdict"], "per_run": r["per_run"],
                        "s": time.perf_counter() - t0, "located": None, "w": d["w"]})
    return out


def bench_analysis(n_curves: int = 1000, workers: int = 2, n_boot: int = 500) -> dict:
    """Judge n_curves synthetic curves, a quarter from each family (family 4 in groups of 6 runs); return the rates
    against the targets, the wall time and the settings."""
    if n_curves < 4 or workers < 1 or n_boot < 20:
        raise ValueError("need at least 4 curves, 1 worker and 20 bootstrap draws")
    per = n_curves // 4
    tasks = []
    for fam in FAMILIES:
        count = int(np.ceil(per / RUNS)) if fam == "training_jumps" else per
        for c in np.array_split(np.arange(count), max(1, workers * 4)):
            if c.size:
                tasks.append((fam, int(c[0]), int(c[-1]) + 1, n_boot))
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
    rows = [r for part in results for r in part]
    fams = {}
    for fam in FAMILIES:
        rs = [r for r in rows if r["family"] == fam]
        v = [r["verdict"] for r in rs]
        pr = [r["per_run"] for r in rs]
        entry = {"n": len(rs), "verdicts": {k: v.count(k) for k in sorted(set(v))},
                 "emergent": v.count("emergent") / max(len(v), 1),
                 "per_run": {k: pr.count(k) for k in sorted(set(pr))},
                 "abrupt": pr.count("abrupt") / max(len(pr), 1)}
        loc = [r["located"] for r in rs if r["located"] is not None and r["verdict"] == "emergent"]
        if loc:
            entry["location_covered"] = float(np.mean(loc))
        if fam == "two_level_sharp":  # recall by the true width of the share's rise
            entry["recall_by_width"] = {
                f"{a:.2f}-{b:.2f}": float(np.mean([r["verdict"] == "emergent" for r in rs if a <= r["w"] < b]))
                for a, b in ((0.1, 0.15), (0.15, 0.2), (0.2, 0.25), (0.25, 0.3001))
                if any(a <= r["w"] < b for r in rs)}
        fams[fam] = entry
    targets = {
        "recall two_level_sharp >= 0.9": fams["two_level_sharp"]["emergent"] >= 0.9,
        "recall training_jumps >= 0.9": fams["training_jumps"]["emergent"] >= 0.9,
        "false emergent two_level_wide <= 0.05": fams["two_level_wide"]["emergent"] <= 0.05,
        "false emergent one_level_smooth <= 0.05": fams["one_level_smooth"]["emergent"] <= 0.05,
        "per_run abrupt on two_level_wide >= 0.9": fams["two_level_wide"]["abrupt"] >= 0.9,
        "per_run never abrupt on one_level_smooth >= 0.9": 1 - fams["one_level_smooth"]["abrupt"] >= 0.9,
        "1,000 curves < 60 s": wall * 1000 / len(rows) < 60,
    }
    return {"n_curves": len(rows), "workers": workers, "n_boot": n_boot, "wall_s": wall,
            "s_per_1000": wall * 1000 / len(rows), "families": fams, "targets": targets,
            "cpu_count": os.cpu_count()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.bench_analysis", description=__doc__.splitlines()[0])
    ap.add_argument("--curves", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--boot", type=int, default=500)
    ap.add_argument("--out", help="also write the result as JSON to this file")
    a = ap.parse_args(argv)
    try:
        r = bench_analysis(a.curves, a.workers, a.boot)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{r['n_curves']} curves, {r['workers']} worker(s), up to {r['n_boot']} draws: {r['wall_s']:.1f} s wall "
          f"({r['s_per_1000']:.1f} s per 1,000)")
    for fam, e in r["families"].items():
        extra = f", location covered {e['location_covered']:.2f}" if "location_covered" in e else ""
        if "recall_by_width" in e:
            extra += ", recall by width " + ", ".join(f"{k}: {v:.2f}" for k, v in e["recall_by_width"].items())
        print(f"  {fam:17s} n={e['n']:4d} emergent {e['emergent']:.3f} abrupt {e['abrupt']:.3f} "
              f"verdicts {e['verdicts']} per_run {e['per_run']}{extra}")
    for k, ok in r["targets"].items():
        print(f"  {'met    ' if ok else 'NOT met'} {k}")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(r, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
