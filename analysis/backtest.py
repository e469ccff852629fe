"""Backtest: fit a law on the smaller sizes, predict the larger ones, and compare with what they measured.

The honest test of a scaling claim is a forecast made before the answer is known (as GPT-4's loss was predicted
from runs with up to 10,000x less compute; OpenAI 2023, "GPT-4 Technical Report", section 3). Holding out the k
largest sizes asks: could this capability, or its emergence, have been predicted from the smaller models?
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import schema
from analysis.fit import fit_law
from analysis.laws import get_law

COLUMNS = ["task", "metric", "law", "x", "x_value", "n_fit", "prediction", "lo", "hi", "actual", "error",
           "rel_error", "inside", "note"]


def final_by_size(df: pd.DataFrame, x: str = "n_params") -> pd.DataFrame:
    """From a results table: each run's final checkpoint per (task, metric), seeds averaged per size.

    A run's final checkpoint is its largest step among all of its rows, and only its measured rows there count
    (`analysis.schema.final_measured`): a metric left unmeasured at the last checkpoint gives the run no point
    rather than an earlier, less-trained one, and runs that diverged or failed are left out. Runs of one size
    (seeds) are averaged: `value` is their mean, `n_seeds` how many there were.
    Columns: task, metric, <x>, value, n_seeds.
    """
    df = schema.validate(df, where="backtest input")
    if x not in df.columns:
        raise ValueError(f"x={x!r} is not a results-table column; use n_params, n_params_nonembed, flops or tokens")
    fin = schema.final_measured(df)
    fin = fin[pd.to_numeric(fin[x], errors="coerce").notna()]
    if fin.empty:
        return pd.DataFrame(columns=["task", "metric", x, "value", "n_seeds"])
    out = (fin.assign(**{x: fin[x].astype(float)})
           .groupby(["task", "metric", x], as_index=False)
           .agg(value=("value", "mean"), n_seeds=("run_id", "nunique")))
    return out


def _one(points: pd.DataFrame, law: str, x: str, y: str, holdout: int, level: float, fit_options: dict
         ) -> list[dict]:
    """Backtest one curve: points with columns x and y, one row per size."""
    pts = points[[x, y]].apply(pd.to_numeric, errors="coerce").dropna().sort_values(x)
    pts = pts.groupby(x, as_index=False)[y].mean()  # one value per size
    fit_pts, held = pts.iloc[: len(pts) - holdout], pts.iloc[len(pts) - holdout:]
    base = {"law": law, "x": x, "n_fit": len(fit_pts)}
    n_par = len(get_law(law, **({"breaks": fit_options["breaks"]} if "breaks" in fit_options else {})).params)
    if len(pts) <= holdout or len(fit_pts) < n_par + 1:
        note = (f"{len(pts)} size(s): fitting {law!r} ({n_par} parameters) needs {n_par + 1} sizes besides the "
                f"{holdout} held out")
        return [{**base, "x_value": float(r[x]), "prediction": np.nan, "lo": np.nan, "hi": np.nan,
                 "actual": float(r[y]), "error": np.nan, "rel_error": np.nan, "inside": pd.NA, "note": note}
                for _, r in (held if len(pts) > holdout else pts).iterrows()]
    fit = fit_law(fit_pts, law, x, y, level=level, **fit_options)
    xs = held[x].to_numpy(float)
    pred = np.asarray(fit.predict(xs), dtype=float)
    if fit.n_boot > 0:
        lo, hi = fit.predict_interval(xs, level, kind="prediction")
    else:
        lo = hi = np.full(len(xs), np.nan)
    rows = []
    for xv, p, a, b, actual in zip(xs, pred, np.atleast_1d(lo), np.atleast_1d(hi), held[y].to_numpy(float)):
        inside = bool(a <= actual <= b) if np.isfinite(a) and np.isfinite(b) else pd.NA
        rows.append({**base, "x_value": float(xv), "prediction": float(p), "lo": float(a), "hi": float(b),
                     "actual": float(actual), "error": float(actual - p),
                     "rel_error": float((actual - p) / abs(actual)) if actual != 0 else np.nan,
                     "inside": inside, "note": ""})
    return rows


def backtest(df: pd.DataFrame, law: str, x: str = "n_params", y: str = "value", holdout: int = 1, *,
             level: float = 0.95, tasks=None, metrics=None, **fit_options) -> pd.DataFrame:
    """Fit `law` on all but the `holdout` largest sizes and predict those, with a prediction interval.

    df: a results table (schema.py): each run is read at its final checkpoint, seeds are averaged per size (see
    `final_by_size`), and every (task, metric) is backtested on its own (filter with `tasks=` / `metrics=`).
    Or a plain table with columns `x` and `y`, one curve (task and metric are then NA).
    law: any law of `analysis.laws` with one input (power, logistic, bnsl, linear_log, saturating, hinge...).
    The interval is `fit_law`'s bootstrap prediction interval at `level` (curve uncertainty plus a resampled
    residual), kept inside the metric's bounds (`analysis.schema.METRICS`; [0, 1] for an accuracy) unless
    `y_bounds` is given; `fit_options` go to `fit_law` (n_boot, loss, bounds, seed...).

    Returns one row per held-out size: task, metric, law, x, x_value, n_fit (sizes fitted), prediction, lo, hi,
    actual (measured mean), error (actual - prediction), rel_error (error / |actual|), inside (actual within
    [lo, hi]; NA without an interval), note (why a row has no prediction).
    """
    if not isinstance(holdout, (int, np.integer)) or holdout < 1:
        raise ValueError(f"holdout must be a whole number >= 1 (how many of the largest sizes to predict), "
                         f"got {holdout!r}")
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"backtest needs a pandas DataFrame, got {type(df).__name__}")
    law_obj = get_law(law, **({"breaks": fit_options["breaks"]} if "breaks" in fit_options else {}))
    if law_obj.n_inputs != 1:
        raise ValueError(f"backtest predicts along one x; law {law!r} takes {law_obj.n_inputs} inputs")
    is_results = set(schema.REQUIRED) <= set(df.columns)
    if is_results and y == "value":
        table = final_by_size(df, x)
        groups = table.groupby(["task", "metric"], sort=True)
    else:
        for c in (x, y):
            if c not in df.columns:
                raise ValueError(f"column {c!r} is not in the table; columns are: {', '.join(map(str, df.columns))}")
        table = df.assign(task=pd.NA, metric=pd.NA) if not is_results else df
        groups = [((pd.NA, pd.NA), table)]
    rows = []
    for (task, metric), g in groups:
        if tasks is not None and task not in set([tasks] if isinstance(tasks, str) else tasks):
            continue
        if metrics is not None and metric not in set([metrics] if isinstance(metrics, str) else metrics):
            continue
        opts = dict(fit_options)
        bounds = schema.metric_bounds(metric) if isinstance(metric, str) else (None, None)
        if "y_bounds" not in opts and bounds != (None, None):
            opts["y_bounds"] = bounds  # the curve and its interval stay in range
        for r in _one(g, law, x, y, holdout, level, opts):
            rows.append({"task": task, "metric": metric, **r})
    out = pd.DataFrame(rows, columns=COLUMNS)
    out["inside"] = out["inside"].astype("boolean")
    return out
