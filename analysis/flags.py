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

from analysis import schema
from analysis.jumps import ALPHA, EXTRA_COLUMNS, FLAG_COLUMNS
from analysis.stats import breakthroughness
from analysis.fmt import sentence as fmt
from analysis.verdicts import (CONTINUOUS_FOR_MIRAGE, DECADE_TOL, LOSS_METRIC, LOSS_TASK, SIZE_AXES, apply_fdr,
                               flag_along, flag_curve)
from analysis.views import loss_view

__all__ = ["flag_curve", "flag_along", "flag_emergence", "apply_fdr", "breakthroughness", "FLAG_COLUMNS",
           "EXTRA_COLUMNS", "SIZE_AXES", "CONTINUOUS_FOR_MIRAGE"]

# ------------------------------------------------------------------------------------------------ flag_emergence
def _run_loss(rows: pd.DataFrame) -> pd.Series:
    """Held-out LM loss of each run's last checkpoint, by run_id."""
    lm = rows[(rows["task"] == LOSS_TASK) & (rows["metric"] == LOSS_METRIC)]
    return lm.groupby("run_id")["value"].mean()


def _same_transition(a, b) -> bool:
    """Whether two rows' rises are one transition: their spans (`_transition`, from the last size on the floor to
    the first on the ceiling around the steepest step) share at least one pair of adjacent sizes, or their jump
    intervals overlap."""
    ta, tb = a.get("_transition"), b.get("_transition")
    if isinstance(ta, np.ndarray) and isinstance(tb, np.ndarray) and ta.size == 2 and tb.size == 2:
        if min(ta[1], tb[1]) - max(ta[0], tb[0]) > DECADE_TOL:
            return True
    lo = max(float(a.get("jump_lo", np.nan)), float(b.get("jump_lo", np.nan)))
    hi = min(float(a.get("jump_hi", np.nan)), float(b.get("jump_hi", np.nan)))
    return bool(np.isfinite(lo) and np.isfinite(hi) and lo <= hi)


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
            at = [c for c in common if isinstance(trans, np.ndarray) and trans.size == 2
                  and trans[0] - DECADE_TOL <= np.log10(c) <= trans[1] + DECADE_TOL]
            at = at or list(common)
            # L as the rows measured it (a tokenizer's answer tokens), else the registry's, else fitted below
            length = None
            if lengths_col is not None:
                vals = pd.to_numeric(lengths_col.get(r["task"]), errors="coerce")
                length = float(vals) if vals is not None and np.isfinite(vals) else None
            if length is None and answer_lengths and r["task"] in answer_lengths:
                length = float(answer_lengths[r["task"]])
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
        at_transition = np.array([_same_transition(r, c) for _, c in same.iterrows()], dtype=bool)
        jumps_too = same[((same["verdict"] == "emergent") | (same["per_run"] == "abrupt")) & at_transition]
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
                   headline: dict | None = None, **options) -> pd.DataFrame:
    """Flag emergent jumps in a results table: one row per (task, metric), columns FLAG_COLUMNS + EXTRA_COLUMNS.

    df: a results table (analysis.schema). x: the axis, a numeric column of df. Along a size or compute axis
    (`SIZE_AXES`) each run is one point, its last checkpoint (`schema.final_checkpoints`); along any other column
    every checkpoint is a point. With x="loss" and no "loss" column this is the loss view
    (`analysis.views.loss_view`). Only measured rows count (`schema.measured`). Each metric's direction and bounds
    come from the metric registry. q_value: Benjamini-Hochberg within the row's family (`q_family`): the headline
    metric of every task (`headline` {task: metric}, a task registry's declaration, else
    `schema.headline_metrics`'s rule) is one family, each other metric its own; an emergent verdict needs
    q <= alpha in its family, so secondary metrics never dilute the headline claims. mirage: see `_mirage`. loss_at_jump: the held-out loss (task "lm", metric "loss") of each run's last
    checkpoint that separates runs that acquired the ability from those that did not. L of the exact match vs
    token_accuracy^L comparison: the rows' own `answer_length` column where they carry one (the answer tokens of
    the tokenizer that scored them), else answer_lengths {task: L}, else fitted.
    options go to `flag_curve` (w0, alpha, n_boot, seed, min_sizes, min_side).
    """
    if not isinstance(x, str):
        raise ValueError(f"x must be a column name, got {x!r}")
    if x == "loss" and isinstance(df, pd.DataFrame) and "loss" not in df.columns:
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
    heads = schema.headline_metrics(rows if len(rows) else df, headline)
    flags["q_family"] = [("headline" if heads.get(str(t)) == str(mt) else str(mt))
                         for t, mt in zip(flags["task"], flags["metric"])]
    flags = apply_fdr(flags, alpha, families=flags["q_family"])
    flags["mirage"] = pd.Series([pd.NA] * len(flags), dtype="boolean")
    flags = _mirage(flags, rows, x, answer_lengths, lengths_col)
    flags["loss_separates"] = flags["loss_separates"].astype("boolean")
    flags["n_sizes"] = flags["n_sizes"].astype(int)
    flags["n_runs"] = flags["n_runs"].astype(int)
    return flags[cols].reset_index(drop=True)
