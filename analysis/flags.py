"""Emergence flags: is a capability's rise a jump narrower than W0 decades, and does the evidence hold up?

`flag_curve(x, y, ...)` judges one curve; `flag_emergence(df)` judges every (task, metric) of a results table, one
row each, with the numbers that made the verdict and a sentence generated from them. The definition, the noise model
and the calibrated test live in `analysis.jumps`; this module arranges a results table for it and adds what needs
the whole table: false-discovery-rate control across rows (Benjamini & Hochberg 1995), the mirage check against the
same task's continuous metrics (Schaeffer et al. 2023) and the loss at which runs acquire the ability (Du et al.
2024).

Across sizes (x one of `SIZE_AXES`), every run is one point, its last checkpoint; every (size, seed) is its own
training run, and no curve is ever formed by joining seed indices across sizes. Along any other column every
checkpoint is a point of one curve.

This module imports numpy, scipy and pandas only.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import jumps, schema
from analysis.jumps import (ALPHA, EXTRA_COLUMNS, FLAG_COLUMNS, MIN_SIDE, MIN_SIZES, N_BOOT, W0, Curves,
                            breakthroughness, benjamini_hochberg, loss_alignment, measurement_variance)

CONTINUOUS_FOR_MIRAGE = ("answer_nll", "token_accuracy", "edit_distance")
# Axes along which a run is one point (its final checkpoint); along any other axis every checkpoint is a point.
SIZE_AXES = ("n_params", "n_params_nonembed", "n_layer", "d_model", "flops", "tokens")
LOSS_TASK, LOSS_METRIC = "lm", "loss"

__all__ = ["flag_curve", "flag_along", "flag_emergence", "breakthroughness", "FLAG_COLUMNS", "EXTRA_COLUMNS", "SIZE_AXES",
           "CONTINUOUS_FOR_MIRAGE"]


def fmt(v, digits: int = 3) -> str:
    """A number for a sentence: `digits` significant figures, k/M/B suffixes for counts, "n/a" when unknown."""
    try:
        v = float(v)
    except (TypeError, ValueError):
        return "n/a"
    if np.isnan(v):
        return "n/a"
    if np.isinf(v):
        return "inf" if v > 0 else "-inf"
    a = abs(v)
    for div, suf in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if a >= div and a >= 1e4:
            return f"{v / div:.{digits}g}{suf}"
    if a != 0 and a < 1e-3:
        return f"{v:.{max(digits - 1, 1)}e}"
    return f"{v:.{digits}g}"


def _blank(x_name, verdict, evidence, n_sizes=0, n_runs=0, w0=W0) -> dict:
    row = {c: np.nan for c in FLAG_COLUMNS + EXTRA_COLUMNS if c not in ("task", "metric")}
    row.update(x=x_name, verdict=verdict, evidence=evidence, n_sizes=int(n_sizes), n_runs=int(n_runs),
               per_run="undetermined", mirage=pd.NA, loss_separates=pd.NA, share_by_size="", noise="", w0=w0)
    return row


def _bounds(bounds, hib: bool) -> tuple[float, float]:
    lo, hi = bounds if bounds is not None else (None, None)
    lo = -np.inf if lo is None else float(lo)
    hi = np.inf if hi is None else float(hi)
    return (lo, hi) if hib else (-hi, -lo)


# ---------------------------------------------------------------------------------------------------- flag_curve
def flag_curve(x, y, *, higher_is_better: bool, seeds=None, stderr=None, n=None, bounds=None, loss=None,
               x_name: str = "x", w0: float = W0, alpha: float = ALPHA, n_boot: int = N_BOOT, seed: int = 0,
               min_sizes: int = MIN_SIZES, min_side: int = MIN_SIDE) -> dict:
    """Judge one curve: emergent, smooth, inconclusive or flat (see `analysis.jumps`).

    x, y: one value per measurement. With `seeds` (a label per measurement) and several measurements at some x,
    every measurement is one run and the curve judged is the mean of the runs at each x (across sizes); otherwise
    every measurement is a point of one curve. stderr, n: per-measurement standard error and number of examples
    (for a proportion, the binomial variance from n is a floor under stderr^2). bounds: (lo, hi) of the metric, in
    its own units (None for unbounded); fitted floors and ceilings stay inside. loss: optional held-out loss per
    measurement (run), for the loss at which runs acquire the ability. Returns a dict of the flag columns (without
    task and metric; `q_value` equals `p_value` for a single curve). Points with non-finite x or y, or x <= 0, are
    left out, and the evidence says how many.
    """
    if not isinstance(n_boot, (int, np.integer)) or n_boot < 20:
        raise ValueError(f"n_boot must be a whole number >= 20, got {n_boot!r}")
    if not (0 < alpha < 1):
        raise ValueError(f"alpha must be between 0 and 1, got {alpha!r}")
    if not (np.isfinite(w0) and w0 > 0):
        raise ValueError(f"the jump width W0 must be a positive number of decades, got {w0!r}")
    if min_sizes < 3:
        raise ValueError(f"min_sizes must be at least 3, got {min_sizes!r}")
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {x.size} and {y.size}")

    def per_point(a, name):
        if a is None:
            return None
        a = np.asarray(a, dtype=object if name == "seeds" else float).ravel()
        if a.shape != x.shape:
            raise ValueError(f"{name} must have one value per point, got {a.size} for {x.size} points")
        return a

    se, nn, sd, ls = per_point(stderr, "stderr"), per_point(n, "n"), per_point(seeds, "seeds"), per_point(loss, "loss")
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0)
    dropped = int(x.size - ok.sum())
    note = f" ({dropped} point(s) with missing values or x <= 0 left out)" if dropped else ""
    x, y = x[ok], y[ok]
    se = None if se is None else se[ok]
    nn = None if nn is None else nn[ok]
    sd = None if sd is None else sd[ok]
    ls = None if ls is None else ls[ok]
    hib = bool(higher_is_better)
    lb, ub = _bounds(bounds, hib)
    raw_lo, raw_hi = (bounds if bounds is not None else (None, None))
    bounded01 = raw_lo is not None and raw_hi is not None and raw_lo == 0 and raw_hi == 1
    yo = y if hib else -y
    vm = measurement_variance(y, se, nn, bounded01)
    t = np.log10(x)
    ux, inv = np.unique(t, return_inverse=True)
    n_sizes = int(ux.size)
    if n_sizes < min_sizes:
        return _blank(x_name, "inconclusive", f"{n_sizes} distinct {x_name} value(s): at least {min_sizes} are "
                      f"needed to judge a rise{note}", n_sizes, x.size, w0)
    if np.ptp(y) == 0:
        r = _blank(x_name, "flat", f"all {y.size} values are identical ({fmt(y[0])}){note}", n_sizes, x.size, w0)
        r["breakthroughness"] = 0.0
        return r
    m = np.bincount(inv).astype(float)
    runs_mode = sd is not None and np.any(m > 1)
    measured = bool(np.any(vm > 0))
    if runs_mode:
        if not measured:
            vm = np.zeros_like(vm)
        curves = Curves("runs", [ux], lb, ub, size_of_run=inv, run_y=yo, run_vm=vm, m=m)
    else:
        order = np.argsort(t, kind="stable")
        curves = Curves("single", [t[order]], lb, ub, y=[yo[order]], vm=[vm[order]], measured=measured)
    res = jumps.width_test(curves, w0=w0, n_boot=n_boot, seed=seed)

    # ---- the curve and its checks, in the metric's own units
    if runs_mode:
        ybar, var_mean = res.ybar, res.var_mean
    else:
        ybar = np.bincount(inv, weights=yo) / m
        var_mean = res.dispersion * (np.bincount(inv, weights=vm) / m ** 2 if measured else np.ones(n_sizes) / m)
    s_size = 1.0 / (1.0 + np.exp(-jumps.LN9X2 * (ux - res.t0[0]) / res.width))
    n_low, n_high, gap = jumps.plateaus_and_gap(ux, s_size, w0)
    F, C = float(res.floor[0]), float(res.ceiling[0])
    floor_u, ceil_u = (F, C) if hib else (-F, -C)
    step, allowed, step_p = jumps.steepest_step(ux, ybar, var_mean, F, C, w0)
    bt = float(breakthroughness(ybar))
    share, share_w, per = "", np.nan, {"per_run": "undetermined", "per_run_p": np.nan, "why": "one run per size"}
    align = {"loss_at_jump": np.nan, "loss_separates": None}
    if runs_mode:
        per = jumps.per_run_test(inv, yo, vm, ybar, F, C, seed=seed)
        share = " ".join(f"{int(k)}/{int(mm)}" for k, mm in zip(per["k"], per["m"]))
        share_w = jumps.share_width(ux, per["k"], per["m"])
        if ls is not None and np.isfinite(ls).any():
            align = loss_alignment(per["acquired"], ls)

    # ---- verdict
    p_flat = res.p_flat
    W, Wlo, Whi = res.width, res.width_lo, res.width_hi
    jump_at, jlo, jhi = 10 ** res.t0[0], 10 ** res.t0_lo[0], 10 ** res.t0_hi[0]
    noise = ("runs per size: binomial per run + between-run variance at each size, moderated "
             f"(phi {fmt(res.phi, 2)})" if runs_mode else
             ("one point per x: measurement error x residual dispersion" if measured
              else "one point per x: residual variance (no measurement error given)"))
    if res.dispersion > 1.5:
        noise += f"; dispersion {fmt(res.dispersion, 3)}"
    size_word = "sizes" if x_name in SIZE_AXES else "points"
    runs_text = (f"{n_sizes} {size_word} x {fmt(np.median(m), 2)} runs" if runs_mode
                 else f"{n_sizes} {size_word}")
    width_text = (f"W = {fmt(W, 2)} decades [{fmt(Wlo, 2)}, {fmt(Whi, 2)}] against W0 = {fmt(w0, 2)} "
                  f"(p = {fmt(res.p_value, 2)} for W < W0, {fmt(res.p_smooth, 2)} for W > W0; parametric bootstrap, "
                  f"{res.n_boot} draws at W = W0)")
    rise_text = (f"rises from {fmt(floor_u)} to {fmt(ceil_u)} around {x_name} = {fmt(jump_at)} "
                 f"[{fmt(jlo)}, {fmt(jhi)}]")
    narrow = Whi < w0 and res.p_value <= alpha
    if p_flat > alpha:
        verdict = "flat"
        why = (f"nothing rises beyond noise: the best curve beats a constant with p = {fmt(p_flat, 2)} "
               f"(range {fmt(np.ptp(y))})")
    elif narrow and n_low >= min_side and n_high >= min_side and gap <= w0 / 2:
        verdict = "emergent"
        why = f"a jump: {rise_text}; {width_text}"
    elif narrow:
        verdict = "inconclusive"
        if n_low < min_side or n_high < min_side:
            side = "floor" if n_low < min_side else "ceiling"
            why = (f"narrower than W0, but the {side} is not observed ({n_low} point(s) on the floor, {n_high} on "
                   f"the ceiling; {min_side} each are needed): {rise_text}; {width_text}")
        else:
            why = (f"narrower than W0, but the {size_word} around the rise are {fmt(gap, 2)} decades apart, more "
                   f"than W0/2 = {fmt(w0 / 2, 2)}: a rise as wide as W0 would look the same; {rise_text}; "
                   f"{width_text}")
    elif Wlo > w0 and res.p_smooth <= alpha:
        verdict = "smooth"
        why = f"a gradual rise: {rise_text}; {width_text}"
    else:
        verdict = "inconclusive"
        why = f"the interval of W straddles W0: {rise_text}; {width_text}"
    evidence = f"{verdict}: {why}; {runs_text}"
    if np.isfinite(step):
        evidence += (f"; steepest step {fmt(step, 2)} of the amplitude where W0 allows {fmt(allowed, 2)} "
                     f"(p = {fmt(step_p, 2)})")
    if runs_mode:
        evidence += f"; per run: {per['per_run']}"
        if np.isfinite(per.get("per_run_p", np.nan)):
            evidence += f" (two levels vs one: p = {fmt(per['per_run_p'], 2)}, reverse p = {fmt(per['p_gradual'], 2)})"
        elif per.get("why"):
            evidence += f" ({per['why']})"
        evidence += f"; runs that acquired it per size: {share}"
        if np.isfinite(share_w):
            evidence += f", rising over {fmt(share_w, 2)} decades"
    if align["loss_separates"] is not None:
        if align["loss_separates"]:
            evidence += (f"; held-out loss {fmt(align['loss_at_jump'])} separates the runs that acquired it from "
                         f"those that did not ({align['n']} runs)")
        else:
            evidence += (f"; no single held-out loss separates the runs that acquired it (the best, "
                         f"{fmt(align['loss_at_jump'])}, misplaces {align['errors']} of {align['n']})")
    evidence += note
    return {"x": x_name, "verdict": verdict, "jump_at": jump_at, "jump_lo": jlo, "jump_hi": jhi, "width": W,
            "width_lo": Wlo, "width_hi": Whi, "n_sizes": n_sizes, "n_runs": int(x.size), "per_run": per["per_run"],
            "p_value": res.p_value, "q_value": res.p_value, "breakthroughness": bt, "mirage": pd.NA,
            "loss_at_jump": align["loss_at_jump"], "evidence": evidence, "w0": w0, "floor": floor_u,
            "ceiling": ceil_u, "p_smooth": res.p_smooth, "p_flat": p_flat, "step_max": step,
            "step_allowed": allowed, "step_p": step_p, "share_by_size": share, "share_width": share_w,
            "per_run_p": per.get("per_run_p", np.nan),
            "loss_separates": pd.NA if align["loss_separates"] is None else bool(align["loss_separates"]),
            "em_measured": np.nan, "em_predicted": np.nan, "answer_length": np.nan, "noise": noise,
            "_transition": _transition_sizes(ux, ybar, F, C)}


def flag_along(runs: list[dict], *, higher_is_better: bool, bounds=None, x_name: str = "tokens", w0: float = W0,
               alpha: float = ALPHA, n_boot: int = N_BOOT, seed: int = 0, min_sizes: int = MIN_SIZES,
               min_side: int = MIN_SIDE) -> list[dict]:
    """Judge the curves of several runs along training together: they share one width W (the runs of one model
    size learn at the same sharpness) and each keeps its own floor, ceiling and location (a seed moves when a run
    acquires the ability, not how abruptly). One result per run, in the order given.

    runs: dicts with "x" (checkpoints' tokens, steps or FLOPs) and "y", and optionally "stderr" and "n". A run with
    fewer than `min_sizes` checkpoints with x > 0 is judged `inconclusive` on its own and left out of the fit.
    The width's bounds and p-values are those of the joint fit; the verdict of each run also needs its own floor and
    ceiling observed and its own checkpoints around its rise no more than W0/2 apart.
    """
    hib = bool(higher_is_better)
    lb, ub = _bounds(bounds, hib)
    raw_lo, raw_hi = (bounds if bounds is not None else (None, None))
    bounded01 = raw_lo is not None and raw_hi is not None and raw_lo == 0 and raw_hi == 1
    out: list[dict | None] = [None] * len(runs)
    ts, ys, vms, idx = [], [], [], []
    for k, r in enumerate(runs):
        x = np.asarray(r["x"], float)
        y = np.asarray(r["y"], float)
        se = r.get("stderr")
        nn = r.get("n")
        ok = np.isfinite(x) & np.isfinite(y) & (x > 0)
        n_pts = int(np.unique(x[ok]).size)
        if n_pts < min_sizes:
            out[k] = _blank(x_name, "inconclusive", f"{n_pts} checkpoint(s) with {x_name} > 0: at least "
                            f"{min_sizes} are needed to judge a rise", n_pts, n_pts, w0)
            continue
        order = np.argsort(x[ok], kind="stable")
        vm = measurement_variance(y[ok], None if se is None else np.asarray(se, float)[ok],
                                  None if nn is None else np.asarray(nn, float)[ok], bounded01)
        ts.append(np.log10(x[ok][order]))
        ys.append((y[ok] if hib else -y[ok])[order])
        vms.append(vm[order])
        idx.append(k)
    if not idx:
        return out
    if all(np.ptp(y) == 0 for y in ys):
        for k in idx:
            out[k] = _blank(x_name, "flat", "every value of every run is the same", len(runs[k]["x"]), 1, w0)
        return out
    measured = all(np.any(v > 0) for v in vms)
    curves = Curves("single", ts, lb, ub, y=ys, vm=vms, measured=measured)
    res = jumps.width_test(curves, w0=w0, n_boot=n_boot, seed=seed)
    narrow = res.width_hi < w0 and res.p_value <= alpha
    width_text = (f"W = {fmt(res.width, 2)} decades [{fmt(res.width_lo, 2)}, {fmt(res.width_hi, 2)}], shared by "
                  f"{len(idx)} run(s), against W0 = {fmt(w0, 2)} (p = {fmt(res.p_value, 2)} for W < W0, "
                  f"{fmt(res.p_smooth, 2)} for W > W0; parametric bootstrap, {res.n_boot} draws at W = W0)")
    for j, k in enumerate(idx):
        t, y = ts[j], ys[j]
        s_fit = 1.0 / (1.0 + np.exp(-jumps.LN9X2 * (t - res.t0[j]) / res.width))
        n_low, n_high, gap = jumps.plateaus_and_gap(t, s_fit, w0)
        F, C = float(res.floor[j]), float(res.ceiling[j])
        floor_u, ceil_u = (F, C) if hib else (-F, -C)
        at, lo, hi = 10 ** res.t0[j], 10 ** res.t0_lo[j], 10 ** res.t0_hi[j]
        rise = (f"rises from {fmt(floor_u)} to {fmt(ceil_u)} around {x_name} = {fmt(at)} [{fmt(lo)}, {fmt(hi)}]")
        if res.p_flat > alpha:
            verdict, why = "flat", f"nothing rises beyond noise (p = {fmt(res.p_flat, 2)} against a constant)"
        elif narrow and n_low >= min_side and n_high >= min_side and gap <= w0 / 2:
            verdict, why = "emergent", f"a jump: {rise}; {width_text}"
        elif narrow and (n_low < min_side or n_high < min_side):
            side = "floor" if n_low < min_side else "ceiling"
            verdict, why = "inconclusive", (f"narrower than W0, but this run's {side} is not observed ({n_low} "
                                            f"checkpoint(s) on the floor, {n_high} on the ceiling): {rise}; {width_text}")
        elif narrow:
            verdict, why = "inconclusive", (f"narrower than W0, but this run's checkpoints around the rise are "
                                            f"{fmt(gap, 2)} decades apart, more than W0/2: {rise}; {width_text}")
        elif res.width_lo > w0 and res.p_smooth <= alpha:
            verdict, why = "smooth", f"a gradual rise: {rise}; {width_text}"
        else:
            verdict, why = "inconclusive", f"the interval of W straddles W0: {rise}; {width_text}"
        out[k] = {"x": x_name, "verdict": verdict, "jump_at": at, "jump_lo": lo, "jump_hi": hi, "width": res.width,
                  "width_lo": res.width_lo, "width_hi": res.width_hi, "n_sizes": int(t.size), "n_runs": 1,
                  "per_run": "undetermined", "p_value": res.p_value, "q_value": res.p_value,
                  "breakthroughness": float(breakthroughness(y)), "mirage": pd.NA, "loss_at_jump": np.nan,
                  "evidence": f"{verdict}: {why}; {t.size} checkpoints", "w0": w0, "floor": floor_u,
                  "ceiling": ceil_u, "p_smooth": res.p_smooth, "p_flat": res.p_flat, "step_max": np.nan,
                  "step_allowed": np.nan, "step_p": np.nan, "share_by_size": "", "share_width": np.nan,
                  "per_run_p": np.nan, "loss_separates": pd.NA, "em_measured": np.nan, "em_predicted": np.nan,
                  "answer_length": np.nan,
                  "noise": ("measurement error x residual dispersion" if measured else "residual variance")
                  + (f"; dispersion {fmt(res.dispersion, 3)}" if res.dispersion > 1.5 else "")}
    return out


def _transition_sizes(t, ybar, F, C) -> np.ndarray:
    """x values (log10) whose mean lies between 10% and 90% of the rise; else the two around the largest step."""
    if not C > F:
        return np.array([])
    u = (ybar - F) / (C - F)
    mid = t[(u > 0.1) & (u < 0.9)]
    if mid.size:
        return mid
    j = int(np.argmax(np.diff(ybar))) if t.size > 1 else 0
    return t[j: j + 2]


def apply_fdr(rows: pd.DataFrame, alpha: float = ALPHA, groups=None) -> pd.DataFrame:
    """q-values across the rows (each group of rows counts as one test when `groups` is given), and an emergent
    verdict that does not survive them becomes inconclusive, with the reason in its evidence."""
    if not len(rows):
        rows["q_value"] = pd.Series(dtype=float)
        return rows
    if groups is None:
        q = benjamini_hochberg(rows["p_value"].to_numpy(float))
    else:
        first = ~pd.Series(groups).duplicated().to_numpy()
        qg = benjamini_hochberg(rows["p_value"].to_numpy(float)[first])
        lookup = dict(zip(pd.Series(groups)[first], qg))
        q = np.array([lookup[g] for g in groups], dtype=float)
    rows = rows.copy()
    rows["q_value"] = q
    lost = (rows["verdict"] == "emergent") & ~(rows["q_value"] <= alpha)
    n_tests = int(np.isfinite(rows["p_value"].to_numpy(float)).sum()) if groups is None else int(
        pd.Series(groups)[np.isfinite(rows["p_value"].to_numpy(float))].nunique())
    for i in rows.index[lost]:
        rows.loc[i, "verdict"] = "inconclusive"
        rows.loc[i, "evidence"] = ("inconclusive: " + str(rows.loc[i, "evidence"]).split(": ", 1)[-1]
                                   + f"; not significant across the table's {n_tests} tests (q = "
                                   f"{fmt(rows.loc[i, 'q_value'], 2)} > {fmt(alpha, 2)}, Benjamini-Hochberg)")
    return rows


# ------------------------------------------------------------------------------------------------ flag_emergence
def _run_loss(rows: pd.DataFrame) -> pd.Series:
    """Held-out LM loss of each run's last checkpoint, by run_id."""
    lm = rows[(rows["task"] == LOSS_TASK) & (rows["metric"] == LOSS_METRIC)]
    return lm.groupby("run_id")["value"].mean()


def _mirage(flags: pd.DataFrame, rows: pd.DataFrame, x: str, answer_lengths, lengths_col) -> pd.DataFrame:
    """Schaeffer et al. 2023 at the transition: for each all-or-nothing metric, do the same task's continuous
    metrics jump or split there too (mirage False), rise smoothly with no split (True), or lack the power to tell
    (NA; never True for lack of power)? Also exact match against token_accuracy^L at the transition sizes."""
    for i, r in flags.iterrows():
        spec = schema.METRICS.get(str(r["metric"]))
        if spec is None or not spec.discontinuous:
            continue
        trans = r.get("_transition")
        tok = rows[(rows["task"] == r["task"]) & (rows["metric"] == "token_accuracy")]
        em = rows[(rows["task"] == r["task"]) & (rows["metric"] == r["metric"])]
        if len(tok) and len(em):
            a = em.groupby(x)["value"].mean()
            b = tok.groupby(x)["value"].mean().clip(0.0, 1.0)
            common = a.index.intersection(b.index)
            at = [c for c in common if isinstance(trans, np.ndarray) and np.any(np.isclose(np.log10(c), trans))]
            at = at or list(common)
            length = None
            if answer_lengths and r["task"] in answer_lengths:
                length = float(answer_lengths[r["task"]])
            elif lengths_col is not None:
                vals = pd.to_numeric(lengths_col.get(r["task"]), errors="coerce")
                length = float(vals) if vals is not None and np.isfinite(vals) else None
            if length is None and len(common) >= 2:
                Ls = np.linspace(0.25, 64, 512)
                aa, bb = a.loc[common].to_numpy(), b.loc[common].to_numpy()
                length = float(Ls[int(np.argmin([np.sum((aa - bb ** L) ** 2) for L in Ls]))])
            if length is not None and at:
                flags.loc[i, ["em_measured", "em_predicted", "answer_length"]] = [
                    float(a.loc[at].mean()), float((b.loc[at] ** length).mean()), length]
        if r["verdict"] != "emergent":
            continue
        same = flags[(flags["task"] == r["task"]) & flags["metric"].isin(CONTINUOUS_FOR_MIRAGE)]
        jumps_too = same[(same["verdict"] == "emergent") | (same["per_run"] == "abrupt")]
        smooth = same[(same["verdict"] == "smooth") & (same["per_run"] != "abrupt")]
        if len(jumps_too):
            flags.loc[i, "mirage"] = False
            note = (f"; not a mirage: {', '.join(jumps_too['metric'])} jump(s) or split into two levels at the "
                    "same sizes")
        elif len(same) and len(smooth) == len(same):
            flags.loc[i, "mirage"] = True
            note = (f"; likely a mirage: {', '.join(smooth['metric'])} rise smoothly (W > W0) with no split "
                    "(Schaeffer et al. 2023)")
        else:
            note = ("; mirage undetermined: " + ("no continuous metric of this task" if not len(same) else
                    "the continuous metrics lack the power to tell (" +
                    ", ".join(f"{m} {v}" for m, v in zip(same["metric"], same["verdict"])) + ")"))
        if np.isfinite(flags.loc[i, "em_predicted"]):
            note += (f"; at the transition exact match is {fmt(flags.loc[i, 'em_measured'], 2)} where token "
                     f"accuracy^L predicts {fmt(flags.loc[i, 'em_predicted'], 2)} (L = "
                     f"{fmt(flags.loc[i, 'answer_length'], 2)})")
        flags.loc[i, "evidence"] = str(flags.loc[i, "evidence"]) + note
    return flags


def flag_emergence(df: pd.DataFrame, x: str = "n_params", *, answer_lengths: dict | None = None,
                   **options) -> pd.DataFrame:
    """Flag emergent jumps in a results table: one row per (task, metric), columns FLAG_COLUMNS + EXTRA_COLUMNS.

    df: a results table (analysis.schema). x: the axis, a numeric column of df. Along a size or compute axis
    (`SIZE_AXES`) each run is one point, its last checkpoint (`schema.final_checkpoints`); along any other column
    every checkpoint is a point. With x="loss" and no "loss" column this is the loss view
    (`analysis.views.loss_view`). Only measured rows count (`schema.measured`). Each metric's direction and bounds
    come from the metric registry. q_value: Benjamini-Hochberg across the rows; an emergent verdict needs
    q <= alpha. mirage: see `_mirage`. loss_at_jump: the held-out loss (task "lm", metric "loss") of each run's last
    checkpoint that separates runs that acquired the ability from those that did not. answer_lengths {task: L} (or
    an `answer_length` column) gives L for the exact match vs token_accuracy^L comparison; else L is fitted.
    options go to `flag_curve` (w0, alpha, n_boot, seed, min_sizes, min_side).
    """
    if not isinstance(x, str):
        raise ValueError(f"x must be a column name, got {x!r}")
    if x == "loss" and isinstance(df, pd.DataFrame) and "loss" not in df.columns:
        from analysis.views import loss_view

        return loss_view(df, **options)
    df_in = df
    df = schema.validate(df, where="flag_emergence input")
    if x not in df.columns:
        raise ValueError(f"x={x!r} is not a column of the results table; use one of {', '.join(SIZE_AXES)}, "
                         "'loss', or add the column")
    lengths_col = None
    if isinstance(df_in, pd.DataFrame) and "answer_length" in df_in.columns:
        lengths_col = pd.to_numeric(df_in["answer_length"], errors="coerce").groupby(df_in["task"]).median()
    xv = pd.to_numeric(df[x], errors="coerce")
    if df[x].notna().sum() and xv.notna().sum() < df[x].notna().sum():
        raise ValueError(f"column {x!r} must be numeric to serve as x")
    df = df.assign(**{x: xv.astype(float)})
    rows = schema.final_measured(df) if x in SIZE_AXES else schema.measured(df)
    rows = rows[np.isfinite(rows[x].to_numpy(float))]
    run_loss = _run_loss(rows) if x in SIZE_AXES else pd.Series(dtype=float)
    alpha = options.get("alpha", ALPHA)
    out = []
    keys = df[["task", "metric"]].dropna().drop_duplicates().sort_values(["task", "metric"])
    for task, metric in keys.itertuples(index=False):
        if x == "loss" and (task, metric) == (LOSS_TASK, LOSS_METRIC):
            continue
        hib = schema.higher_is_better(metric)
        spec = schema.METRICS[metric]
        g = rows[(rows["task"] == task) & (rows["metric"] == metric)]
        seeds = None
        if x in SIZE_AXES:  # every run is its own point: label by run, never by seed index across sizes
            seeds = g["run_id"].fillna(g["seed"].astype("string")).fillna("<run>").to_numpy(object)
        loss = g["run_id"].map(run_loss).to_numpy(float) if len(run_loss) and (task, metric) != (
            LOSS_TASK, LOSS_METRIC) else None
        res = flag_curve(g[x].to_numpy(float), g["value"].to_numpy(float), higher_is_better=hib, seeds=seeds,
                         stderr=g["stderr"].to_numpy(float), n=g["n"].astype("Float64").to_numpy(float, na_value=np.nan),
                         bounds=(spec.lower_bound, spec.upper_bound), loss=loss, x_name=x, **options)
        res.update({"task": task, "metric": metric})
        out.append(res)
    cols = FLAG_COLUMNS + EXTRA_COLUMNS
    flags = pd.DataFrame(out, columns=cols + ["_transition"])
    flags = apply_fdr(flags, alpha)
    flags["mirage"] = pd.Series([pd.NA] * len(flags), dtype="boolean")
    flags = _mirage(flags, rows, x, answer_lengths, lengths_col)
    flags["loss_separates"] = flags["loss_separates"].astype("boolean")
    flags["n_sizes"] = flags["n_sizes"].astype(int)
    flags["n_runs"] = flags["n_runs"].astype(int)
    return flags[cols].reset_index(drop=True)
