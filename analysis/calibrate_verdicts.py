"""The calibration of the jump test: how often it finds real jumps, how often it calls smooth rises emergent, and how fast.

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

    python -m analysis.calibrate_verdicts [--curves 1000] [--workers 2] [--boot 500] [--spacing 0.2] [--runs 6]

The robustness grid (`--grid`) varies every nuisance real runs have, 200 curves per cell by default: levels shared
by every run of a curve, varying per run (floor 0-5%), or varying per run at a chance floor (20-30%), high levels
60-95%; sizes 0.1, 0.2 or 0.3 decades apart; 3, 6 or 12 runs per size, or 4-8 drawn per size (sizes missing runs);
the share at the high level rising sharply (0.1-0.3 decades), exactly W0 wide, or wide (1.2-2), and the one-level
smooth families. Each cell prints its `emergent` and `smooth` rates with Wilson 95% intervals, and for sharp
cells bounds on recall, each randomised and for tests that toss no coin (a verdict is a function of the data,
so it leaves out the outcomes likelier than 5% under the null that only a coin could reject): the mean of its
curves' Neyman-Pearson bounds, each told where its rise is (`recall_bounds`), and the cell's own, its locations
drawn as the cell draws them (`cell_bounds`). The recall target is 0.8 x the smaller. A line per finished cell goes
to stderr; `--judge` reads a grid saved by `--out` and judges it against the bounds again:

    python -m analysis.calibrate_verdicts --grid [--per-cell 200] [--shapes sharp,at_w0,wide,one_level] [--out grid.json]
    python -m analysis.calibrate_verdicts --grid --judge grid.json

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
from scipy.special import gammaln, logsumexp
from scipy.stats import binom

from analysis.stats import wilson

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


def recall_bound(d: dict, w0: float = 0.5, alpha: float = 0.05, n_sim: int = 4000, seed: int = 0,
                 least_favourable: bool = False, deterministic: bool = False) -> float:
    """See `recall_bounds`: the randomised bound, or with `deterministic` the bound for verdicts."""
    return recall_bounds(d, w0, alpha, n_sim, seed, least_favourable)[int(deterministic)]


def recall_bounds(d: dict, w0: float = 0.5, alpha: float = 0.05, n_sim: int = 4000, seed: int = 0,
                  least_favourable: bool = False) -> tuple[float, float]:
    """The power of the most powerful level-alpha test of "width w0" against the curve's true width (Neyman-Pearson,
    randomised at the critical value), for a curve `d` whose runs sit at two levels.

    The levels are far apart (floor <= 0.3, high >= 0.6, 256 examples), so whether each run made it is taken as
    observed: that is more than the data tell, so the figure stays an upper bound. With the null at the true
    location, the test knows where a rise W0 wide would sit; with `least_favourable`, the null's location is the
    one (within 0.4 decades of the truth, 0.02 apart) where that power is least: any level-alpha test of W >= W0
    must hold its level there too, so its power cannot exceed that minimum either (a tighter bound, the same
    principle). Estimated from n_sim draws. Returns (randomised, deterministic), from the same draws.

    The second bound is for tests whose verdict is a function of the data, as a verdict must be:
    no coin is tossed. Given which runs made it, the counts per size are sufficient (the rest is noise that tells
    nothing about W), so such a test rejects a set of count vectors whose null probability sums to at most alpha.
    A count vector more likely than alpha under the null can be in no such set; the bound is the randomised one
    with those vectors never rejected (a knapsack's linear relaxation, so still an upper bound). On sparse designs
    the likeliest outcome of a sharp rise, every run off below a gap and on above it, is such a vector: its
    randomised share is what no verdict can claim."""
    w, t0, _, _ = d["truth"]
    sizes, m = np.unique(np.log10(d["x"]), return_counts=True)
    cols = np.arange(sizes.size)
    sa = np.clip(_s(sizes, t0, w), 1e-300, 1 - 1e-16)
    rng = np.random.default_rng(seed)
    k_alt = rng.binomial(m, sa, (n_sim, sizes.size))  # runs that made it, per size: the counts are sufficient

    def power(t_null):
        s0 = np.clip(_s(sizes, t_null, w0), 1e-300, 1 - 1e-16)
        made_llr, miss_llr = np.log(sa / s0), np.log1p(-sa) - np.log1p(-s0)
        k_null = rng.binomial(m, s0, (n_sim, sizes.size))
        null, alt = (np.round(k @ made_llr + (m - k) @ miss_llr, 9) for k in (k_null, k_alt))
        table = binom.logpmf(np.arange(m.max() + 1)[None], m[:, None], s0[:, None])  # (sizes, counts)
        heavy = [table[cols, k].sum(1) > np.log(alpha) for k in (k_null, k_alt)]
        return (_np_power(null, alt, alpha),
                _np_power(np.where(heavy[0], -np.inf, null), np.where(heavy[1], -np.inf, alt), alpha))

    if not least_favourable:
        return power(t0)
    both = np.array([power(t0 + dt) for dt in np.arange(-0.4, 0.4001, 0.02)])
    return float(both[:, 0].min()), float(both[:, 1].min())


def _np_power(null: np.ndarray, alt: np.ndarray, alpha: float) -> float:
    """Power of the most powerful level-alpha test from draws of its log likelihood ratio under the null and the
    alternative (randomised at the critical value). -inf marks an outcome the test may never reject."""
    if np.mean(np.isfinite(null)) <= alpha:  # every outcome the test may reject fits inside alpha: reject them all
        return float(np.mean(np.isfinite(alt)))
    c = np.quantile(null, 1 - alpha)
    if not np.isfinite(c):  # the quantile falls where the outcomes it may reject begin
        c = np.min(null[np.isfinite(null)])
    above, at = np.mean(null > c), np.mean(null == c)
    gamma = float(np.clip((alpha - above) / at, 0.0, 1.0)) if at > 0 else 0.0
    return float(np.mean(alt > c) + gamma * np.mean(alt == c))


# ------------------------------------------------------------------------------------------- the robustness grid
GRID_LEVELS = ("shared", "varying", "chance")  # one floor and high per curve; per run (floor 0-5%); per run at chance
GRID_SPACINGS = (0.1, 0.2, 0.3)
GRID_RUNS = ("3", "6", "12", "4-8")
GRID_SHAPES = ("sharp", "at_w0", "wide", "one_level")

SHARP_WIDTHS, SHARP_LOCATIONS = (0.1, 0.3), (3.8, 5.0)  # the sharp cells' prior (`synthetic_cell`)
MOOT = 0.015  # a verdict bound below this: the recall target is moot (no test that decides from the data gets there)


def cell_bounds(spacing: float, runs: str, w0: float = 0.5, alpha: float = 0.05, n_sim: int = 40_000,
                seed: int = 0, widths: tuple = SHARP_WIDTHS, designs: int = 50) -> dict:
    """The most any level-alpha test can recall, on average, over a sharp cell's curves: the Neyman-Pearson test of
    the cell's own mixture of rises (the share's width uniform on 0.1-0.3 decades, its midpoint uniform on
    3.8-5.0, `SHARP_WIDTHS`, `SHARP_LOCATIONS`) against a mixture of rises exactly W0 wide.

    `recall_bounds` gives each curve a test that knows where its rise is; no test knows that, and the cell's recall
    is an average over curves whose locations are drawn. Any test that holds its level at every null curve (W = W0,
    any location) holds it under any mixture of them, so its average recall is at most the power of the
    Neyman-Pearson test of the cell's mixture against that null mixture (Lehmann & Romano, Testing Statistical
    Hypotheses, sec. 3.8), whichever mixture is chosen: the least favourable of those tried (midpoints uniform over
    the cell's range narrowed or widened by `d` decades each side) is picked on a pilot of n_sim / 4 draws, and its
    bound measured on n_sim fresh draws. As in `recall_bounds`, which runs made it is taken as observed (an upper
    bound still), and the bound for verdicts leaves out every outcome that some null curve within 0.6 decades of
    the range puts above alpha. A p-value is calibrated for the design a researcher has, so where runs per size are
    drawn (4-8) the bound is the mean over drawn designs of each design's own bound (about `designs` of them, n_sim
    / designs draws each but at least 500), every one a level-alpha test given its counts m. (A single test over the pooled draws could spend alpha
    unevenly across designs, which no calibrated p-value does, and would bound more than any of them can reach.)
    The two mixtures are sums over grids 0.01 decades apart in midpoint and 0.02 in width, drawn from the same grids,
    so each likelihood ratio is exact. `widths` sets the mixture's widths (at (w0, w0) the bound is alpha). Returns
    {"rand", "det", "d", "n_sim"}."""
    sizes = design(spacing)
    n = sizes.size
    rng = np.random.default_rng([seed, int(round(spacing * 100)), GRID_RUNS.index(runs)])
    (wa, wb), (ta, tb) = widths, SHARP_LOCATIONS
    alt = np.array([(w, t) for w in np.linspace(wa, wb, 11) for t in np.arange(ta, tb + 1e-9, 0.01)])
    null_t = np.round(np.arange(ta - 0.6, tb + 0.6001, 0.01), 9)
    S_alt = np.clip(_s(sizes[None], alt[:, 1, None], alt[:, 0, None]), 1e-12, 1 - 1e-12)  # (G, n)
    S_null = np.clip(_s(sizes[None], null_t[:, None], w0), 1e-12, 1 - 1e-12)
    drawn = runs == "4-8"

    def loglik(K, m, S):  # (B, n) counts of m runs per size -> (B, G) binomial log-likelihoods, less the coefficients
        return K @ np.log(S).T + (m - K) @ np.log1p(-S).T

    def ratios(K, m, sel):
        ln = loglik(K, m, S_null)
        lr = ((logsumexp(loglik(K, m, S_alt), axis=1) - np.log(len(alt)))
              - (logsumexp(ln[:, sel], axis=1) - np.log(sel.sum())))
        # a verdict never rejects an outcome that some null curve puts above alpha
        coef = (gammaln(m + 1) - gammaln(K + 1) - gammaln(m - K + 1)).sum(1)
        return np.round(lr, 9), ln.max(1) + coef > np.log(alpha)

    def bound_given(m, d, B):  # one design's bound: counts m per size, the null mixture widened by d
        sel = (null_t >= ta - d - 1e-9) & (null_t <= tb + d + 1e-9)
        Ka = rng.binomial(m.astype(int), S_alt[rng.integers(0, len(alt), B)]).astype(float)
        Kn = rng.binomial(m.astype(int), S_null[rng.choice(np.where(sel)[0], B)]).astype(float)
        (rn, hn), (ra, ha) = (ratios(K, m, sel) for K in (Kn, Ka))
        return np.array([_np_power(rn, ra, alpha),
                         _np_power(np.where(hn, -np.inf, rn), np.where(ha, -np.inf, ra), alpha)])

    def bound(d, B):
        if not drawn:
            return bound_given(np.full(n, float(runs)), d, B)
        per = max(B // designs, 500)
        return np.mean([bound_given(rng.integers(4, 9, n).astype(float), d, per)
                        for _ in range(max(B // per, 1))], axis=0)

    tried = (-0.2, -0.1, 0.0, 0.1, 0.2)
    pilot = [bound(d, max(n_sim // 4, 1000)) for d in tried]
    d = tried[int(np.argmin([p[0] for p in pilot]))]
    rand, det = bound(d, n_sim)
    return {"rand": float(rand), "det": float(det), "d": d, "n_sim": n_sim}


def grid_cells(levels=GRID_LEVELS, spacings=GRID_SPACINGS, runs=GRID_RUNS, shapes=GRID_SHAPES) -> list[tuple]:
    """Every (levels, spacing, runs, shape) cell of the robustness grid."""
    return [(lv, sp, r, sh) for sh in shapes for lv in levels for sp in spacings for r in runs]


def synthetic_cell(cell: tuple, i: int, w0: float = 0.5) -> dict:
    """Curve number i of a grid cell (deterministic): the inputs of flag_curve and the truth.

    levels: "shared" (one floor 0-5% and one high level 60-95% per curve), "varying" (each run its own floor 0-5% and
    high 60-95%) or "chance" (each run its own floor at a chance level of 20-30%, high 60-95%). runs: per size, a
    number, or "4-8" (each size its own count, drawn from 4-8: unbalanced, sizes missing runs). shape: "sharp" (runs
    at two levels, the share at the high one rising within 0.1-0.3 decades), "at_w0" (exactly W0), "wide" (1.2-2),
    "one_level" (every run on one smooth curve, its own levels where they vary: a logistic 1.2-3 decades wide, a
    power law, a line in log N). Sizes from 1e3, 2.6 decades, `spacing` apart; binomial noise, n = 256."""
    levels, spacing, runs, shape = cell
    key = (GRID_LEVELS.index(levels) * 97 + GRID_SPACINGS.index(spacing) * 31 + GRID_RUNS.index(runs) * 7
           + GRID_SHAPES.index(shape))
    rng = np.random.default_rng([20_261_207, key, i])
    sizes = design(spacing)
    m = (rng.integers(4, 9, sizes.size) if runs == "4-8" else np.full(sizes.size, int(runs)))
    t = np.repeat(sizes, m)
    size_idx = np.repeat(np.arange(sizes.size), m)
    R = t.size
    if levels == "shared":
        lo, hi = np.full(R, rng.uniform(0.0, 0.05)), np.full(R, rng.uniform(0.6, 0.95))
    else:
        lo = rng.uniform(0.0, 0.05, R) if levels == "varying" else rng.uniform(0.2, 0.3, R)
        hi = rng.uniform(0.6, 0.95, R)
    w = t0 = np.nan
    if shape == "one_level":
        kind = i % 3
        if kind == 0:
            s = _s(t, rng.uniform(3.5, 5.5), rng.uniform(1.2, 3.0))
        elif kind == 1:
            s = 1.0 - (10 ** (t - t[0])) ** -rng.uniform(0.15, 0.6)
        else:
            s = (t - t[0]) / np.ptp(t)
        p = lo + (hi - lo) * s
    else:
        w = {"sharp": rng.uniform(0.1, 0.3), "at_w0": w0, "wide": rng.uniform(1.2, 2.0)}[shape]
        t0 = rng.uniform(4.0, 4.8) if shape == "wide" else rng.uniform(3.8, 5.0)
        p = np.where(rng.random(R) < _s(t, t0, w), hi, lo)
    y = rng.binomial(N_EXAMPLES, np.clip(p, 0, 1)) / N_EXAMPLES
    labels = np.array([f"{a}-{b}" for a, b in zip(size_idx, np.arange(R))], dtype=object)
    return {"x": 10 ** t, "y": y, "seeds": labels, "n": np.full(R, N_EXAMPLES), "w": w,
            "truth": (w, t0, float(np.mean(lo)), float(np.mean(hi)))}


def _work_cell(args) -> list[dict]:
    from analysis.flags import flag_curve

    cell, start, stop, n_boot = args
    out = []
    for i in range(start, stop):
        d = synthetic_cell(cell, i)
        r = flag_curve(d["x"], d["y"], higher_is_better=True, seeds=d["seeds"], n=d["n"], bounds=(0, 1),
                       x_name="n_params", n_boot=n_boot, seed=i)
        row = {"cell": cell, "verdict": r["verdict"], "per_run": r["per_run"], "w": d["w"]}
        if cell[3] == "sharp":  # the most any level-5% test could do on this curve
            row["bound"], row["bound_det"] = recall_bounds(d, seed=i, n_sim=2000, least_favourable=True)
            row["bound_known"] = recall_bound(d, seed=i, n_sim=2000)
        out.append(row)
    return out


def calibration_grid(per_cell: int = 200, workers: int = 2, n_boot: int = 500, cells=None,
                     bound_sims: int = 100_000) -> dict:
    """Judge `per_cell` curves in every cell of the robustness grid; return each cell's rates with their Wilson
    95% intervals and whether it meets its targets:
    - sharp: `smooth` (wrong) at most 5%; recall at least 0.8 x the mean Neyman-Pearson bound of its curves;
    - at_w0: `emergent` at most 5% plus Monte Carlo error (the Wilson interval reaches 0.05);
    - wide, one_level: `emergent` at most 5%."""
    cells = grid_cells() if cells is None else cells
    tasks = [(c, int(ch[0]), int(ch[-1]) + 1, n_boot) for c in cells
             for ch in np.array_split(np.arange(per_cell), max(1, min(per_cell, 4))) if ch.size]
    t0 = time.perf_counter()
    left = {c: sum(1 for t in tasks if t[0] == c) for c in cells}

    def progress(part):  # a line per finished cell, so a long run shows where it is
        if part:
            c = part[0]["cell"]
            left[c] -= 1
            if not left[c]:
                print(f"  {time.perf_counter() - t0:6.0f} s  cell {c} done", file=sys.stderr, flush=True)

    rows = [r for part in _run(tasks, workers, _work_cell, progress) for r in part]
    wall = time.perf_counter() - t0
    out = []
    for c in cells:
        rs = [r for r in rows if r["cell"] == c]
        v = [r["verdict"] for r in rs]
        n = len(v)
        e = {"levels": c[0], "spacing": c[1], "runs": c[2], "shape": c[3], "n": n,
             "verdicts": {k: v.count(k) for k in sorted(set(v))}}
        for name in ("emergent", "smooth"):
            k = v.count(name)
            e[name] = k / n
            e[name + "_ci"] = list(wilson(k, n))
        if c[3] == "sharp":
            e["bound"] = float(np.mean([r["bound"] for r in rs]))
            e["bound_known"] = float(np.mean([r["bound_known"] for r in rs]))
            e["bound_det"] = float(np.mean([r["bound_det"] for r in rs]))
        else:  # at W0 (its Wilson interval reaches 0.05) and wider: emergent at most 5%
            e["ok"] = bool(e["emergent_ci"][0] <= 0.05)
        out.append(e)
    return judge_grid({"cells": out, "per_cell": per_cell, "n_boot": n_boot, "workers": workers, "wall_s": wall},
                      n_sim=bound_sims)


def judge_grid(r: dict, n_sim: int = 100_000) -> dict:
    """Add each sharp cell's `cell_bounds` (once per design) and judge its recall against 0.8 x the tighter of the
    two bounds on the average recall: the mean of its curves' `recall_bounds` (a test told each rise's location)
    and the cell's own (a test that is not). Both bound what any level-5% test recalls, so the smaller does too.
    Works on a saved grid (`--judge FILE`) as well: the verdicts are not judged again."""
    cache = {}
    for e in r["cells"]:
        if e["shape"] != "sharp":
            continue
        key = (e["spacing"], e["runs"])
        if key not in cache:
            cache[key] = cell_bounds(e["spacing"], e["runs"], n_sim=n_sim)
        cb = cache[key]
        e["bound_cell"], e["bound_cell_det"], e["bound_cell_d"] = cb["rand"], cb["det"], cb["d"]
        e["target"] = min(e["bound"], e["bound_cell"])
        e["target_det"] = min(e["bound_det"], e["bound_cell_det"])
        not_smooth = e["smooth_ci"][0] <= 0.05
        e["ok"] = bool(not_smooth and e["emergent"] >= 0.8 * e["target"])
        e["ok_det"] = bool(not_smooth and e["emergent"] >= 0.8 * e["target_det"])
        # no verdict reaches MOOT here: 200 curves cannot tell a recall of 0.8 x the bound from none
        e["moot"] = bool(not_smooth and e["target_det"] < MOOT)
    r["all_met"] = all(e["ok"] for e in r["cells"])
    r["all_met_det"] = all(e.get("ok_det", e["ok"]) or e.get("moot", False) for e in r["cells"])
    return r


def _print_grid(r) -> None:
    print(f"{len(r['cells'])} cells x {r['per_cell']} curves, up to {r['n_boot']} draws, {r['workers']} worker(s): "
          f"{r['wall_s']:.0f} s")
    print("Bounds on recall, randomised / for verdicts (no coin tossed): 'curves' is the mean of each curve's, its "
          "location known (recall_bounds); 'cell' is the cell's own, its locations drawn (cell_bounds); the target "
          "is 0.8 x the smaller")
    print("| shape | levels | spacing | runs | emergent [95%] | smooth [95%] | bound: curves | bound: cell | "
          "x 0.8 | target | verdict bound: curves | cell | x 0.8 | target |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for e in r["cells"]:
        met = "met" if e["ok"] else "NOT met"
        if "target" in e:
            bound = (f"{e['bound']:.3f} | {e['bound_cell']:.3f} | {0.8 * e['target']:.3f} | {met} | "
                     f"{e['bound_det']:.3f} | {e['bound_cell_det']:.3f} | {0.8 * e['target_det']:.3f} | "
                     f"{'met' if e['ok_det'] else 'moot' if e['moot'] else 'NOT met'}")
        else:
            bound = f"- | - | - | {met} | - | - | - | -"
        print(f"| {e['shape']} | {e['levels']} | {e['spacing']:g} | {e['runs']} | {e['emergent']:.3f} "
              f"[{e['emergent_ci'][0]:.3f}, {e['emergent_ci'][1]:.3f}] | {e['smooth']:.3f} "
              f"[{e['smooth_ci'][0]:.3f}, {e['smooth_ci'][1]:.3f}] | {bound} |")
    print("every target met" if r["all_met"] else "some targets NOT met against the randomised bound")
    if not r["all_met"]:
        print("every target met against the verdict bound, or moot (a verdict bound below "
              f"{MOOT:g}: no test that decides from the data recalls more)" if r["all_met_det"]
              else "some targets NOT met against the verdict bound")


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


def calibrate_verdicts(n_curves: int = 1000, workers: int = 2, n_boot: int = 500, spacing: float = 0.2,
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


def _run(tasks, workers, work=None, progress=None):
    work = work or _work
    progress = progress or (lambda part: None)
    if workers == 1:
        return [progress(p) or p for p in map(work, tasks)]
    saved = {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    os.environ.update({k: "1" for k in saved})  # inherited by the spawned workers before numpy loads
    try:
        import multiprocessing as mp

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            return [progress(p) or p for p in pool.map(work, tasks)]
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
    ap = argparse.ArgumentParser(prog="python -m analysis.calibrate_verdicts", description=__doc__.splitlines()[0])
    ap.add_argument("--curves", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--boot", type=int, default=500)
    ap.add_argument("--spacing", type=float, default=0.2, help="decades between sizes (families 1-3)")
    ap.add_argument("--runs", type=int, default=RUNS, help="runs per size (families 1-3)")
    ap.add_argument("--size", type=int, default=0,
                    help="also judge this many curves whose share rises exactly W0 wide (untimed): the test's size")
    ap.add_argument("--out", help="also write the result as JSON to this file")
    ap.add_argument("--grid", action="store_true",
                    help="run the robustness grid instead: levels x spacing x runs per size x shape of the rise")
    ap.add_argument("--per-cell", type=int, default=200, help="curves per cell of --grid")
    ap.add_argument("--shapes", default=",".join(GRID_SHAPES), help="shapes of --grid to run (comma-separated)")
    ap.add_argument("--judge", metavar="FILE",
                    help="with --grid: judge a grid saved by --out against the bounds again, without rerunning it")
    a = ap.parse_args(argv)
    if a.grid:
        shapes = tuple(x for x in a.shapes.split(",") if x)
        if a.per_cell < 1 or not shapes or not set(shapes) <= set(GRID_SHAPES):
            print(f"error: --per-cell must be positive and --shapes a subset of {','.join(GRID_SHAPES)}",
                  file=sys.stderr)
            return 2
        if a.judge:
            try:
                with open(a.judge) as f:
                    r = judge_grid(json.load(f))
            except (OSError, ValueError, KeyError, TypeError) as e:
                print(f"error: {a.judge} is not a saved grid ({type(e).__name__}: {e}); write one with --grid "
                      "--out FILE", file=sys.stderr)
                return 2
        else:
            r = calibration_grid(a.per_cell, a.workers, a.boot, grid_cells(shapes=shapes))
        _print_grid(r)
        if a.out:
            with open(a.out, "w") as f:
                json.dump(r, f, indent=1)
        return 0
    try:
        r = calibrate_verdicts(a.curves, a.workers, a.boot, a.spacing, a.runs, a.size)
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
