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
5. `two_level_at_w0` (untimed, with `--size N`): runs at two levels, the share rising exactly W0 wide. Any
   `emergent` here is a false one: the rate is the test's size at the boundary of its null.

Targets (analysis/README.md, "How well it works"): recall >= 0.9 on families 1 and 4; false emergent <= 0.05 on families 2
and 3; per_run abrupt on family 2 and never abrupt on family 3, >= 0.9 each; 1,000 curves in under 60 s on 2 cores
(a family-4 curve is one run's row).

Beside family 1's recall it prints the most any test could reach: the power of the Neyman-Pearson test that knows
each curve's truth (its location and levels) and tests W = W0 at that location against its true width, at the same
level. A test that keeps its false `emergent` rate at W0 below 5% cannot beat it on that curve. Families 1-3 can
be drawn on another design (`--spacing` decades between sizes, `--runs` per size) to see what it takes to resolve
a rise of 0.1-0.3 decades.

    python -m analysis.bench_analysis [--curves 1000] [--workers 2] [--boot 500] [--spacing 0.2] [--runs 6]

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

from analysis.jumps import wilson

FAMILIES = ("two_level_sharp", "two_level_wide", "one_level_smooth", "training_jumps", "two_level_at_w0")
N_EXAMPLES = 256
RUNS = 6
TRAIN_T = np.linspace(8.0, 10.0, 30)
LN9X2 = 2 * np.log(9.0)


def _s(t, t0, w):
    return 1.0 / (1.0 + np.exp(-LN9X2 * (t - t0) / w))


def design(spacing: float = 0.2) -> np.ndarray:
    """log10 of the sizes: from 1e3 to 10^5.6 (the default: 14 sizes 0.2 decades apart)."""
    return 3.0 + spacing * np.arange(int(round(2.6 / spacing)) + 1)


def synthetic(family: str, i: int, spacing: float = 0.2, runs: int = RUNS) -> dict:
    """Curve number i of a family (deterministic). Returns the inputs of flag_curve (families 1-3) or flag_along
    (family 4), and the truth. `spacing` and `runs` set the design of families 1-3."""
    rng = np.random.default_rng(1_000_003 * (FAMILIES.index(family) + 1) + i)
    lo, hi = rng.uniform(0.0, 0.05), rng.uniform(0.6, 0.95)
    if family == "training_jumps":
        centre = rng.uniform(8.6, 9.4)
        along = []
        for _ in range(RUNS):
            w = rng.uniform(0.05, 0.2)
            t0 = centre + rng.uniform(-0.15, 0.15)
            p = lo + (hi - lo) * _s(TRAIN_T, t0, w)
            y = rng.binomial(N_EXAMPLES, p) / N_EXAMPLES
            along.append({"x": 10 ** TRAIN_T, "y": y, "n": np.full(y.size, N_EXAMPLES), "t0": t0})
        return {"runs": along}
    sizes = design(spacing)
    t = np.repeat(sizes, runs)
    if family in ("two_level_sharp", "two_level_wide", "two_level_at_w0"):
        if family == "two_level_sharp":
            w = rng.uniform(0.1, 0.3)
        else:
            w = rng.uniform(1.2, 2.0) if family == "two_level_wide" else 0.5
        t0 = rng.uniform(4.0, 4.8) if family == "two_level_wide" else rng.uniform(3.8, 5.0)
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
    labels = np.array([f"{a}-{b}" for a in range(sizes.size) for b in range(runs)], dtype=object)
    truth = (w, t0, lo, hi) if family != "one_level_smooth" else (np.nan,) * 4
    return {"x": 10 ** t, "y": y, "seeds": labels, "n": np.full(y.size, N_EXAMPLES), "w": truth[0], "truth": truth}


def recall_bound(d: dict, w0: float = 0.5, alpha: float = 0.05, n_sim: int = 4000, seed: int = 0) -> float:
    """The power of the most powerful level-alpha test of "width w0" against the curve's true width, both at its
    true location and levels (Neyman-Pearson, randomised at the critical value), for a family-1 or 2 curve `d`.

    The levels are far apart (floor <= 0.05, ceiling >= 0.6, 256 examples), so whether each run made it is taken as
    observed: that is more than the data tell, so the figure stays an upper bound. Estimated from n_sim draws."""
    w, t0, _, _ = d["truth"]
    t = np.log10(d["x"])
    sa = np.clip(_s(t, t0, w), 1e-300, 1 - 1e-16)
    s0 = np.clip(_s(t, t0, w0), 1e-300, 1 - 1e-16)
    made_llr, miss_llr = np.log(sa / s0), np.log1p(-sa) - np.log1p(-s0)
    rng = np.random.default_rng(seed)

    def llr(s):
        made = rng.random((n_sim, t.size)) < s
        return np.round(np.where(made, made_llr, miss_llr).sum(1), 9)

    null, alt = llr(s0), llr(sa)
    c = np.quantile(null, 1 - alpha)
    above, at = np.mean(null > c), np.mean(null == c)
    gamma = (alpha - above) / at if at > 0 else 0.0
    return float(np.mean(alt > c) + gamma * np.mean(alt == c))


def _work(args) -> list[dict]:
    from analysis.flags import flag_along, flag_curve

    family, start, stop, n_boot, spacing, runs = args
    out = []
    for i in range(start, stop):
        d = synthetic(family, i, spacing, runs)
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
                        "s": time.perf_counter() - t0, "located": None, "w": d["w"], "i": i})
    return out


def bench_analysis(n_curves: int = 1000, workers: int = 2, n_boot: int = 500, spacing: float = 0.2,
                   runs: int = RUNS, size: int = 0) -> dict:
    """Judge n_curves synthetic curves, a quarter from each family (family 4 in groups of 6 runs); return the rates
    against the targets, the wall time and the settings. `spacing` (decades between sizes) and `runs` (per size)
    set the design of families 1-3. With `size` > 0, that many curves of `two_level_at_w0` (a share rising exactly
    W0 wide) are judged after the timed part: the rate at which they are called emergent is the test's size."""
    if n_curves < 4 or workers < 1 or n_boot < 20:
        raise ValueError("need at least 4 curves, 1 worker and 20 bootstrap draws")
    if not 0.01 <= spacing <= 1.0 or runs < 2:
        raise ValueError("--spacing must be within 0.01-1 decades and --runs at least 2")
    per = n_curves // 4

    def split(fam, count):
        return [(fam, int(c[0]), int(c[-1]) + 1, n_boot, spacing, runs)
                for c in np.array_split(np.arange(count), max(1, workers * 4)) if c.size]

    tasks = [t for fam in FAMILIES[:4]
             for t in split(fam, int(np.ceil(per / RUNS)) if fam == "training_jumps" else per)]
    t0 = time.perf_counter()
    results = _run(tasks, workers)
    wall = time.perf_counter() - t0
    if size > 0:
        results += _run(split("two_level_at_w0", size), workers)
    rows = [r for part in results for r in part]
    for r in rows:  # outside the timed part: what the test is measured against, not part of it
        if r["family"] == "two_level_sharp":
            r["bound"] = recall_bound(synthetic(r["family"], r["i"], spacing, runs), seed=r["i"])
    return _summary(rows, wall, workers, n_boot, spacing, runs)


def _run(tasks, workers):
    if workers == 1:
        return [_work(t) for t in tasks]
    saved = {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    os.environ.update({k: "1" for k in saved})  # inherited by the spawned workers before numpy loads
    try:
        import multiprocessing as mp

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            return list(pool.map(_work, tasks))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _summary(rows, wall, workers, n_boot, spacing, runs):
    timed = [r for r in rows if r["family"] != "two_level_at_w0"]
    fams = {}
    for fam in FAMILIES:
        rs = [r for r in rows if r["family"] == fam]
        if not rs:
            continue
        v = [r["verdict"] for r in rs]
        pr = [r["per_run"] for r in rs]
        entry = {"n": len(rs), "verdicts": {k: v.count(k) for k in sorted(set(v))},
                 "emergent": v.count("emergent") / max(len(v), 1),
                 "per_run": {k: pr.count(k) for k in sorted(set(pr))},
                 "abrupt": pr.count("abrupt") / max(len(pr), 1)}
        loc = [r["located"] for r in rs if r["located"] is not None and r["verdict"] == "emergent"]
        if loc:
            entry["location_covered"] = float(np.mean(loc))
        if fam == "two_level_sharp":  # recall by the true width of the share's rise, and the most it could be
            bands = [(a, b) for a, b in ((0.1, 0.15), (0.15, 0.2), (0.2, 0.25), (0.25, 0.3001))
                     if any(a <= r["w"] < b for r in rs)]
            entry["recall_by_width"] = {
                f"{a:.2f}-{b:.2f}": float(np.mean([r["verdict"] == "emergent" for r in rs if a <= r["w"] < b]))
                for a, b in bands}
            entry["recall_bound"] = float(np.mean([r["bound"] for r in rs]))
            entry["recall_bound_by_width"] = {
                f"{a:.2f}-{b:.2f}": float(np.mean([r["bound"] for r in rs if a <= r["w"] < b])) for a, b in bands}
        if fam == "two_level_at_w0":  # the size: how often a rise exactly W0 wide is called narrower
            k = v.count("emergent")
            entry["size_interval"] = list(wilson(k, len(v)))
        fams[fam] = entry
    targets = {
        "recall two_level_sharp >= 0.9": fams["two_level_sharp"]["emergent"] >= 0.9,
        "recall training_jumps >= 0.9": fams["training_jumps"]["emergent"] >= 0.9,
        "false emergent two_level_wide <= 0.05": fams["two_level_wide"]["emergent"] <= 0.05,
        "false emergent one_level_smooth <= 0.05": fams["one_level_smooth"]["emergent"] <= 0.05,
        "per_run abrupt on two_level_wide >= 0.9": fams["two_level_wide"]["abrupt"] >= 0.9,
        "per_run never abrupt on one_level_smooth >= 0.9": 1 - fams["one_level_smooth"]["abrupt"] >= 0.9,
        "1,000 curves < 60 s": wall * 1000 / len(timed) < 60,
    }
    if "two_level_at_w0" in fams:
        lo_size = fams["two_level_at_w0"]["size_interval"][0]
        targets["size at W0 <= 0.05 (its Wilson 95% interval reaches 0.05)"] = lo_size <= 0.05
    return {"n_curves": len(timed), "workers": workers, "n_boot": n_boot, "spacing": spacing, "runs": runs,
            "wall_s": wall, "s_per_1000": wall * 1000 / len(timed), "families": fams, "targets": targets,
            "cpu_count": os.cpu_count()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.bench_analysis", description=__doc__.splitlines()[0])
    ap.add_argument("--curves", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--boot", type=int, default=500)
    ap.add_argument("--spacing", type=float, default=0.2, help="decades between sizes (families 1-3)")
    ap.add_argument("--runs", type=int, default=RUNS, help="runs per size (families 1-3)")
    ap.add_argument("--size", type=int, default=0,
                    help="also judge this many curves whose share rises exactly W0 wide (untimed): the test's size")
    ap.add_argument("--out", help="also write the result as JSON to this file")
    a = ap.parse_args(argv)
    try:
        r = bench_analysis(a.curves, a.workers, a.boot, a.spacing, a.runs, a.size)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{r['n_curves']} curves, {r['workers']} worker(s), up to {r['n_boot']} draws, sizes {r['spacing']:g} "
          f"decades apart x {r['runs']} runs: {r['wall_s']:.1f} s wall ({r['s_per_1000']:.1f} s per 1,000)")
    for fam, e in r["families"].items():
        extra = f", location covered {e['location_covered']:.2f}" if "location_covered" in e else ""
        if "recall_by_width" in e:
            extra += ", recall by width " + ", ".join(f"{k}: {v:.2f}" for k, v in e["recall_by_width"].items())
            extra += (f"\n{'':19s}the most any calibrated test could reach: {e['recall_bound']:.2f} (by width "
                      + ", ".join(f"{k}: {v:.2f}" for k, v in e["recall_bound_by_width"].items()) + ")")
        if "size_interval" in e:
            extra += f", size {e['emergent']:.3f} (Wilson 95% {e['size_interval'][0]:.3f}-{e['size_interval'][1]:.3f})"
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
