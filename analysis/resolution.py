"""Infinite-resolution view: scaling of per-example answer probabilities far below what exact match can resolve.

Hu et al. 2023 ("Predicting Emergent Abilities with Infinite Resolution Evaluation", PassUntil) measure a task's
pass probability PU with as many samples as it takes, so that tiny probabilities of small models are still
measured, and find the "task scaling law"

    PU(N) = exp(-c N^(-alpha))    <=>    log(-log PU) = log c - alpha log N,

a straight line in log N. Departures from the line are what they call accelerated emergence (the curve bends so that
PU rises faster than the law predicts) or its opposite. We read PU off the model directly: every probe records the
answer's log-probability under teacher forcing (`instances.parquet`, `answer_logprob`), which is the exact
probability that sampling reproduces the answer, at any resolution.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

# Each run is read at its last checkpoint, chosen among all of its instances (every task), as the results table's
# rows are: a task not probed there gives the run no point rather than an earlier, less-trained one. Only the
# checkpoint rule applies here: an instances table has no status column, so `schema.measured` (which also drops
# runs that diverged or failed) cannot; an unmeasured answer (NaN log-probability) is left out by `_log_mean_p`.
from analysis.schema import final_checkpoints, require_columns

INSTANCE_COLUMNS = ["run_id", "step", "task", "example_id", "answer_logprob"]


def _log_mean_p(a: np.ndarray) -> float:
    """log(mean(exp(a))) over the non-NaN entries of `a`, without underflow (answer log-probabilities of small
    models are often below -745, where exp gives 0). -inf if every entry is -inf (P = 0); NaN if none is present."""
    a = np.asarray(a, dtype=float).ravel()
    a = a[~np.isnan(a)]
    if a.size == 0:
        return np.nan
    m = a.max()
    if m == -np.inf:
        return -np.inf
    return float(m + np.log(np.mean(np.exp(a - m))))


def _loglog(log_p: float) -> float:
    """y = log(-log P) from log P: +inf where P = 0, -inf where P = 1 (the transform's two poles), NaN if unknown."""
    if np.isnan(log_p):
        return np.nan
    if log_p == -np.inf:
        return np.inf
    if log_p >= 0:
        return -np.inf
    return float(np.log(-log_p))


def _task_arrays(g: pd.DataFrame, x: str):
    """For one task: sizes (sorted), example ids (sorted) and, per size, a (runs x examples) array of answer
    log-probabilities, NaN where a run did not probe an example."""
    ids = np.sort(g["example_id"].unique())
    sizes = np.sort(g[x].unique())
    arrays = []
    for xv in sizes:
        gs = g[g[x] == xv].drop_duplicates(["run_id", "example_id"], keep="last")
        piv = gs.pivot(index="run_id", columns="example_id", values="answer_logprob").reindex(columns=ids)
        arrays.append(piv.to_numpy(dtype=float))
    return sizes, ids, arrays


def _join_sizes(instances: pd.DataFrame, x: str, runs: pd.DataFrame | None) -> pd.DataFrame:
    require_columns(instances, INSTANCE_COLUMNS, "instances table",
                    f"it needs {', '.join(INSTANCE_COLUMNS)} (as in a run's instances.parquet)")
    df = instances
    if x not in df.columns:
        if runs is None or x not in getattr(runs, "columns", []) or "run_id" not in runs.columns:
            raise ValueError(f"instances table has no {x!r} column; pass runs= (a table with run_id and {x!r}, "
                             "such as runs.parquet) to join it, or add the column")
        sizes = runs[["run_id", x]].drop_duplicates("run_id")
        df = df.merge(sizes, on="run_id", how="left")
        unknown = df.loc[df[x].isna(), "run_id"].unique()
        if len(unknown):
            raise ValueError(f"runs table has no {x!r} for run(s) {', '.join(map(str, unknown[:5]))}")
    lp = pd.to_numeric(df["answer_logprob"], errors="coerce")  # NaN: not measured, left out
    if (lp > 1e-9).any():
        bad = df.loc[lp > 1e-9, "answer_logprob"].iloc[0]
        raise ValueError(f"instances: answer_logprob must be <= 0 (a log-probability), found {bad!r}")
    xv = pd.to_numeric(df[x], errors="coerce")
    if (xv <= 0).any():
        raise ValueError(f"instances: {x!r} must be positive to be placed on a log axis")
    return df.assign(answer_logprob=lp.clip(upper=0.0), **{x: xv})


def resolution_points(instances: pd.DataFrame, x: str = "n_params", *, runs: pd.DataFrame | None = None
                      ) -> pd.DataFrame:
    """Per task and size: the mean answer probability P at the final checkpoint and its transform log(-log P).

    P(x) = mean over examples and over the runs (seeds) of that size of p = exp(answer_logprob): the expected pass
    rate of one sample, Hu et al. 2023's PassUntil estimand. Where P is exactly 0 or 1 the transform is +inf or -inf
    and no line passes through it: `loglogp` is NaN there and `note` says why.
    Columns: task, <x> (the size column, named as given), n_examples, n_runs, log_p, p, loglogp (= log(-log P)),
    note.
    """
    df = final_checkpoints(_join_sizes(instances, x, runs))
    rows = []
    for task, g in df.groupby("task", sort=True):
        sizes, ids, arrays = _task_arrays(g, x)
        for xv, arr in zip(sizes, arrays):
            log_p = _log_mean_p(arr)
            y = _loglog(log_p)
            note = {np.inf: "every answer has probability 0: log(-log P) = +inf",
                    -np.inf: "every answer has probability 1: log(-log P) = -inf"}.get(y, "")
            rows.append({"task": task, x: float(xv), "n_examples": int((~np.isnan(arr)).any(axis=0).sum()),
                         "n_runs": int(arr.shape[0]), "log_p": log_p, "p": float(np.exp(log_p)),
                         "loglogp": y if np.isfinite(y) else np.nan, "note": note})
    return pd.DataFrame(rows, columns=["task", x, "n_examples", "n_runs", "log_p", "p", "loglogp", "note"])


def _fit_line_and_quadratic(t: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Slope b of y = a + b t and quadratic coefficient c2 of y = c0 + c1 t + c2 t^2, least squares, t centred."""
    tc = t - t.mean()
    return float(np.polyfit(tc, y, 1)[0]), float(np.polyfit(tc, y, 2)[0])


def resolution_curves(instances: pd.DataFrame, x: str = "n_params", *, runs: pd.DataFrame | None = None,
                      n_boot: int = 1000, level: float = 0.95, tolerance: float = 0.1, seed: int = 0
                      ) -> pd.DataFrame:
    """Fit log(-log P) against log x per task and classify its curvature with a bootstrap interval.

    Input: an instances table (run_id, step, task, example_id, answer_logprob; other columns such as `exact` are
    ignored) that either already has the size column `x` (n_params, joined from runs.parquet, with seed and model if
    wanted), or comes with `runs=` (a table with run_id and `x`, such as runs.parquet) to join it from.
    Each run is read at its final checkpoint (its largest step over all tasks, `analysis.schema.final_checkpoints`);
    runs (seeds) of one size are pooled (see `resolution_points`).

    With t = ln x and y = log(-log P):
    - the line y = a + b t is Hu et al. 2023's task scaling law PU = exp(-e^a x^b); `slope` is b (negative when the
      task improves with size; their alpha is -b).
    - the `curvature` is c2 of the quadratic y = c0 + c1 t + c2 t^2 (t centred, which leaves c2 unchanged).

    Sign convention, and why: y falls as the task improves (P -> 1 gives -log P -> 0 gives y -> -inf). If the slope
    dy/dt becomes more negative as x grows (c2 < 0: concave), each step up in size improves the task more than the
    step before: improvement accelerates beyond the straight-line law, Hu et al.'s "accelerated emergence". If the
    slope flattens (c2 > 0: convex), improvement slows relative to the law: sub-scaling.
    Classification: "concave" if the interval of c2 lies below 0, "convex" if above 0, and in both cases the bend is
    large enough to matter: the sagitta |c2| (range/2)^2 (the largest gap, in y, between the quadratic and the chord
    across the observed range of t) exceeds `tolerance` (default 0.1, i.e. about 10% in -log P). Otherwise
    "linear": the task is predictable by the task scaling law. The tolerance is needed because even when every
    example follows a power law exactly, averaging p over examples of different difficulty bends the mean curve
    slightly (Jensen's inequality); with hundreds of examples that bend is measurable but not meaningful.

    The interval is a percentile bootstrap (`n_boot` resamples, `level`): each resample draws examples with
    replacement, the same draw for every size (every size answers the same examples), and, for sizes with several
    runs, draws runs (seeds) with replacement within the size, so that training noise counts as well as the choice
    of examples. Fewer than 4 sizes with 0 < P < 1 give "inconclusive": a quadratic through 3 points has nothing
    left to judge it by.

    Returns one row per task: task, x, n_sizes, n_examples, slope, slope_lo, slope_hi, curvature (c2),
    curvature_lo, curvature_hi, sagitta, shape (linear, concave, convex or inconclusive), evidence.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level!r}")
    if n_boot < 50:
        raise ValueError(f"n_boot must be at least 50 for a percentile interval, got {n_boot!r}")
    df = final_checkpoints(_join_sizes(instances, x, runs))
    rng = np.random.default_rng(seed)
    q = (1 - level) / 2
    out = []
    for task, g in df.groupby("task", sort=True):
        sizes, ids, arrays = _task_arrays(g, x)
        y = np.array([_loglog(_log_mean_p(arr)) for arr in arrays])
        usable = np.isfinite(y)
        t = np.log(sizes.astype(float))
        dropped = len(sizes) - int(usable.sum())
        row = {"task": task, "x": x, "n_sizes": int(usable.sum()), "n_examples": int(len(ids)),
               "slope": np.nan, "slope_lo": np.nan, "slope_hi": np.nan, "curvature": np.nan,
               "curvature_lo": np.nan, "curvature_hi": np.nan, "sagitta": np.nan, "shape": "inconclusive"}
        if usable.sum() < 4:
            row["evidence"] = (f"only {int(usable.sum())} size(s) with 0 < P < 1 ({dropped} at P = 0 or 1, or "
                               "not probed); a curvature needs at least 4")
            out.append(row)
            continue
        slope, curv = _fit_line_and_quadratic(t[usable], y[usable])
        half_range = (t[usable].max() - t[usable].min()) / 2
        boots = []
        for _ in range(n_boot):
            cols = rng.integers(0, len(ids), len(ids))
            yb = np.full(len(sizes), np.nan)
            for i in np.flatnonzero(usable):
                arr = arrays[i]
                picked = arr[rng.integers(0, arr.shape[0], arr.shape[0])] if arr.shape[0] > 1 else arr
                yb[i] = _loglog(_log_mean_p(picked[:, cols]))
            ok = np.isfinite(yb)
            if ok.sum() >= 4:
                boots.append(_fit_line_and_quadratic(t[ok], yb[ok]))
        if len(boots) < n_boot // 2:
            row.update(slope=slope, curvature=curv, sagitta=abs(curv) * half_range ** 2,
                       evidence=f"only {len(boots)} of {n_boot} resamples kept 4 sizes with 0 < P < 1; no interval")
            out.append(row)
            continue
        boots = np.array(boots)
        s_lo, s_hi = np.quantile(boots[:, 0], [q, 1 - q])
        c_lo, c_hi = np.quantile(boots[:, 1], [q, 1 - q])
        sagitta = abs(curv) * half_range ** 2
        if c_hi < 0 and sagitta > tolerance:
            shape, what = "concave", "accelerated emergence: improvement speeds up beyond the task scaling law"
        elif c_lo > 0 and sagitta > tolerance:
            shape, what = "convex", "sub-scaling: improvement slows down relative to the task scaling law"
        else:
            shape, what = "linear", "predictable by the task scaling law log(-log P) = a + b ln x"
        row.update(slope=slope, slope_lo=s_lo, slope_hi=s_hi, curvature=curv, curvature_lo=c_lo, curvature_hi=c_hi,
                   sagitta=sagitta, shape=shape,
                   evidence=(f"log(-log P) against ln {x} over {int(usable.sum())} sizes"
                             + (f" ({dropped} left out at P = 0 or 1)" if dropped else "")
                             + f": slope {slope:.3g} [{s_lo:.3g}, {s_hi:.3g}], quadratic coefficient {curv:.3g} "
                             f"[{c_lo:.3g}, {c_hi:.3g}] ({level:.0%} bootstrap over {len(ids)} examples and seeds), "
                             f"sagitta {sagitta:.3g} (tolerance {tolerance:g}): {what}"))
        out.append(row)
    cols = ["task", "x", "n_sizes", "n_examples", "slope", "slope_lo", "slope_hi", "curvature", "curvature_lo",
            "curvature_hi", "sagitta", "shape", "evidence"]
    return pd.DataFrame(out, columns=cols)
