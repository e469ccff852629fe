"""Tables prepared from the results for figures and the report alike: each run's final values (failed and diverged
runs left out), means over seeds, the sizes and tasks of a sweep, the model family, the heatmap, the empirical
frontier, the law a fits.csv row set describes. Pure pandas; nothing here draws.
"""
from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from analysis import laws, schema
from analysis.fmt import count as fmt_count
from analysis.schema import METRICS


METRIC_ORDER = ["exact_match", "token_accuracy", "answer_nll", "edit_distance", "brier", "acc", "acc_norm",
                "prefix_matching", "icl_score"]


def need(df: pd.DataFrame | None, cols, what: str) -> pd.DataFrame:
    if df is None or not isinstance(df, pd.DataFrame):
        raise ValueError(f"{what}: no table given")
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: the table lacks column(s) {', '.join(map(repr, missing))}")
    return df


def ordered_metrics(metrics) -> list[str]:
    ms = list(dict.fromkeys(metrics))
    return sorted(ms, key=lambda m: (METRIC_ORDER.index(m) if m in METRIC_ORDER else len(METRIC_ORDER), m))


STOP_STATUSES = {"failed", "diverged"}


FAMILY_COLUMNS = {"model": "model", "n_layer": "layers", "d_model": "width", "n_head": "heads",
                  "n_params": "parameters", "n_params_nonembed": "non-embedding", "flops_per_token": "FLOPs/token",
                  "tokens": "tokens trained", "seeds": "seeds", "done": "runs done"}


_SLUG = re.compile(r"[^A-Za-z0-9_.-]+")


def excluded_runs(results: pd.DataFrame, runs: pd.DataFrame | None = None) -> set:
    """Runs whose values do not describe a trained size: failed or diverged (from runs.parquet or row statuses)."""
    bad = set()
    if runs is not None and {"run_id", "status"} <= set(runs.columns):
        bad |= set(runs.loc[runs["status"].astype(str).ne("done"), "run_id"].astype(str))
    if "status" in results.columns and "run_id" in results.columns:
        bad |= set(results.loc[results["status"].astype(str).isin(STOP_STATUSES), "run_id"].astype(str))
    return bad


def final_values(results: pd.DataFrame, task: str | None = None, metric: str | None = None, *,
                 runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Each completed run's value at its last checkpoint (`analysis.schema.final_checkpoints`), for one task and
    metric (or all): a metric not measured there leaves the run without a point."""
    df = need(results, ["run_id", "n_params", "step", "task", "metric", "value"], "results")
    df = df[~df["run_id"].astype(str).isin(excluded_runs(results, runs))]
    if {"status", "stderr"} <= set(df.columns):  # a results table: the schema's one definition
        df = schema.final_measured(df)
    else:
        df = schema.final_checkpoints(df)
        df = df[df["value"].notna()]
    if task is not None:
        df = df[df["task"] == task]
    if metric is not None:
        df = df[df["metric"] == metric]
    return df.reset_index(drop=True)


def seed_summary(final: pd.DataFrame, x: str = "n_params") -> pd.DataFrame:
    """Mean over seeds per size with a 95% interval: Student t over seeds; one seed: +-1.96 x its stderr; clipped
    to the metric's bounds when the rows name a registered metric."""
    from scipy import stats

    rows = []
    for xv, g in final.groupby(x, sort=True):
        v = g["value"].to_numpy(float)
        n = len(v)
        mean = float(np.mean(v))
        if n >= 2:
            half = float(stats.t.ppf(0.975, n - 1) * np.std(v, ddof=1) / math.sqrt(n))
        else:
            se = float(g["stderr"].iloc[0]) if "stderr" in g.columns and pd.notna(g["stderr"].iloc[0]) else np.nan
            half = 1.96 * se
        lo, hi = mean - half, mean + half
        spec = METRICS.get(str(g["metric"].iloc[0])) if "metric" in g.columns and len(g) else None
        if spec is not None:  # an interval never leaves its metric's bounds (an accuracy stays in [0, 1])
            lo = lo if spec.lower_bound is None else max(lo, spec.lower_bound)
            hi = hi if spec.upper_bound is None else min(hi, spec.upper_bound)
        rows.append({x: xv, "mean": mean, "lo": lo, "hi": hi, "n_seeds": n})
    return pd.DataFrame(rows, columns=[x, "mean", "lo", "hi", "n_seeds"])


def sizes(df: pd.DataFrame) -> pd.DataFrame:
    """Unique (model, n_params) of a table, smallest first."""
    cols = [c for c in ("model", "n_params") if c in df.columns]
    out = df[cols].dropna(subset=["n_params"]).drop_duplicates("n_params").sort_values("n_params")
    if "model" not in out.columns:
        out["model"] = out["n_params"].map(fmt_count)
    return out.reset_index(drop=True)


def capability_tasks(results: pd.DataFrame) -> list[str]:
    """Probed tasks (everything except the held-out LM loss), in order of first appearance."""
    t = results.loc[results["task"].astype(str) != "lm", "task"].astype(str)
    return list(dict.fromkeys(t))


def heatmap_metric(results: pd.DataFrame, *, runs=None) -> str:
    """The metric of the task x size heatmap: exact match where the results have it (our probes), else the
    proportion (bounded by 0 and 1, higher is better) measured on the most tasks at the final checkpoint, accuracy
    first among equals (an imported table: lm-evaluation-harness's acc)."""
    fin = final_values(results, runs=runs)
    fin = fin[fin["task"].astype(str) != "lm"]
    tasks = fin.groupby(fin["metric"].astype(str))["task"].nunique()
    unit = [m for m in tasks.index if (spec := METRICS.get(m)) is not None and spec.higher_is_better
            and spec.lower_bound == 0.0 and spec.upper_bound == 1.0]
    if "exact_match" in tasks.index or not unit:
        return "exact_match"
    return max(unit, key=lambda m: (tasks[m], m == "acc"))


def heatmap_table(results: pd.DataFrame, metric: str = "exact_match", *, runs=None) -> pd.DataFrame:
    """Task x size table of the mean over seeds of `metric` at the final checkpoint (sizes smallest first)."""
    fin = final_values(results, metric=metric, runs=runs)
    fin = fin[fin["task"].astype(str) != "lm"]
    if fin.empty:
        raise ValueError(f"results: no final values of metric {metric!r} to tabulate")
    return fin.pivot_table(index="task", columns="n_params", values="value", aggfunc="mean").sort_index(axis=1)


def family_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per model size: shape, parameters, FLOPs per token, tokens trained, seeds and completed runs."""
    r = need(runs, ["model", "n_params"], "runs")
    agg = {c: "first" for c in ("n_layer", "d_model", "n_head", "n_params", "n_params_nonembed", "flops_per_token")
           if c in r.columns}
    if "tokens" in r.columns:
        agg["tokens"] = "max"
    g = r.groupby("model", sort=False)
    out = g.agg(agg)
    out["seeds"] = g["seed"].nunique() if "seed" in r.columns else g.size()
    out["done"] = (g["status"].agg(lambda s: int((s.astype(str) == "done").sum())).astype(str) + "/"
                   + g.size().astype(str)) if "status" in r.columns else g.size().astype(str)
    out = out.reset_index().sort_values("n_params").reset_index(drop=True)
    return out[[c for c in FAMILY_COLUMNS if c in out.columns]]


def family_display(runs: pd.DataFrame) -> pd.DataFrame:
    """The family table with readable numbers and column names, as the report prints it."""
    t = family_table(runs)
    for c in ("n_params", "n_params_nonembed", "flops_per_token", "tokens"):
        if c in t.columns:
            t[c] = t[c].map(fmt_count)
    for c in ("n_layer", "d_model", "n_head"):
        if c in t.columns:
            t[c] = t[c].map(lambda v: "n/a" if pd.isna(v) else str(int(v)))
    return t.rename(columns=FAMILY_COLUMNS)


def law_curve(rows: pd.DataFrame):
    """A callable curve from the fits.csv rows of one law (param -> value), through `analysis.laws`."""
    if rows is None or rows.empty or not {"law", "param", "value"} <= set(rows.columns):
        return None
    name = str(rows["law"].iloc[0])
    params = {str(p): float(v) for p, v in zip(rows["param"], rows["value"]) if pd.notna(v)}
    try:
        m = re.fullmatch(r"bnsl(\d+)", name)
        law = laws.bnsl_law(int(m.group(1))) if m else laws.get_law(name)
        if law.n_inputs != 1 or not set(law.params) <= set(params):
            return None
        values = [params[p] for p in law.params]
    except (ValueError, AttributeError):
        return None
    return lambda x: law.func(np.asarray(x, float), *values)


def best_fit_rows(fits: pd.DataFrame | None, task: str, metric: str, x: str = "n_params") -> pd.DataFrame | None:
    """fits.csv rows of the law with the lowest AICc for (task, metric, x), or None."""
    if fits is None or not {"task", "metric", "law", "param", "value"} <= set(fits.columns):
        return None
    f = fits[(fits["task"].astype(str) == task) & (fits["metric"].astype(str) == metric)]
    if "x" in f.columns:
        f = f[f["x"].astype(str) == x]
    if f.empty:
        return None
    if "aicc" in f.columns and f["aicc"].notna().any():
        law = f.loc[f["aicc"].idxmin(), "law"]
    else:
        law = f["law"].iloc[0]
    return f[f["law"] == law]


def frontier(points: pd.DataFrame, x: str = "flops", y: str = "value") -> pd.DataFrame:
    """The empirical compute frontier: the lowest loss reached at or below each compute (a running minimum)."""
    p = points[[x, y]].dropna()
    p = p[p[x] > 0].sort_values(x)
    p = p.assign(best=p[y].cummin())
    keep = p["best"].ne(p["best"].shift())
    return p.loc[keep, [x, "best"]].rename(columns={"best": y}).reset_index(drop=True)


def is_true(v) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("true", "1", "yes")
    try:
        return bool(v) and not pd.isna(v)
    except (TypeError, ValueError):
        return False


def slug(s, max_len: int = 40) -> str:
    """A file-name-safe form of a task name (never a path: no separators, no leading dot)."""
    out = _SLUG.sub("_", str(s)).strip("._") or "x"
    return out[:max_len]


def training_panels(results: pd.DataFrame, tasks=None) -> list[tuple[str, str]]:
    """(task, metric) panels of the training figure: LM loss, then per task exact match and one continuous metric."""
    panels = []
    df = results[results["value"].notna()]
    if ((df["task"] == "lm") & (df["metric"] == "loss")).any():
        panels.append(("lm", "loss"))
    for t in (tasks if tasks is not None else capability_tasks(df)):
        ms = ordered_metrics(df.loc[df["task"].astype(str) == t, "metric"].astype(str))
        if "exact_match" in ms:
            cont = [m for m in ms if m != "exact_match" and not (METRICS.get(m) and METRICS[m].discontinuous)]
            ms = ["exact_match"] + cont[:1]
        panels += [(t, m) for m in ms[:2]]
    return panels
