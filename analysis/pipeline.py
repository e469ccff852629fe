"""The analysis of one results table, end to end: scaling-law fits, emergence flags and the views, written as CSVs.

`emergence analyze` and the end of `emergence sweep` call `run_analysis`; notebooks can too. Pure pandas: the input
is the tidy results table (from this framework or an importer), the output a dict of written files.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.schema import final_measured, measured, validate

VIEWS = ("transitions", "loss", "resolution", "backtest")
FIT_COLUMNS = ["task", "metric", "x", "law", "param", "value", "stderr", "lo", "hi", "aicc", "bic", "rmse", "n"]
# fit_bands.csv: each fitted curve of one input on a grid, with the 95% bootstrap band of the curve itself
BAND_COLUMNS = ["task", "metric", "x", "law", "x_value", "predicted", "lo", "hi"]
BAND_MARGIN = 0.15  # decades beyond the data on each side (the range the report's figure draws)
BAND_POINTS = 200


def fit_rows(fit, task: str, metric: str, x: str) -> list[dict]:
    return [{"task": task, "metric": metric, "x": x, "law": fit.law, "param": name, "value": value,
             "stderr": fit.stderr.get(name, np.nan), "lo": fit.ci.get(name, (np.nan, np.nan))[0],
             "hi": fit.ci.get(name, (np.nan, np.nan))[1], "aicc": fit.aicc, "bic": fit.bic, "rmse": fit.rmse,
             "n": fit.n} for name, value in fit.params.items()]


def band_rows(fit, xdata, task: str, metric: str, x: str) -> list[dict]:
    """The fitted curve of one input over the data's range (BAND_MARGIN decades beyond each end, BAND_POINTS
    log-spaced points) with the 95% band of the curve (`FitResult.predict_interval(kind="confidence")`); lo and hi
    are NaN where the fit has no bootstrap."""
    xs = np.asarray(xdata, float)
    xs = xs[np.isfinite(xs) & (xs > 0)]
    if not xs.size:
        return []
    grid = np.logspace(np.log10(xs.min()) - BAND_MARGIN, np.log10(xs.max()) + BAND_MARGIN, BAND_POINTS)
    y = np.asarray(fit.predict(grid), float)
    try:
        lo, hi = (np.asarray(b, float) for b in fit.predict_interval(grid, kind="confidence"))
    except ValueError:  # no bootstrap (n_boot = 0): the curve alone
        lo = hi = np.full(grid.size, np.nan)
    return [{"task": task, "metric": metric, "x": x, "law": fit.law, "x_value": g, "predicted": a, "lo": b, "hi": c}
            for g, a, b, c in zip(grid, y, lo, hi)]


def scaling_fits(df: pd.DataFrame, *, n_boot: int = 200) -> pd.DataFrame:
    """Fits of the held-out LM loss: L(N) and L(C) power laws (final checkpoints, Kaplan et al. 2020), and
    L(N, D) (Hoffmann et al. 2022) when the table has several token budgets per size (an IsoFLOP grid).

    df: the whole results table; each run is read at its last checkpoint (`analysis.schema.final_measured`)."""
    return scaling_fits_and_bands(df, n_boot=n_boot)[0]


def scaling_fits_and_bands(df: pd.DataFrame, *, n_boot: int = 200) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`scaling_fits`, and the power laws' curves with their bands (`band_rows`): what the report draws, so that
    it never fits."""
    from analysis.fit import fit_law

    fin = final_measured(df)
    lm = fin[(fin["task"] == "lm") & (fin["metric"] == "loss")]
    rows: list[dict] = []
    bands: list[dict] = []
    if lm["n_params"].nunique() >= 3:
        for x in ("n_params", "flops"):
            try:
                fit = fit_law(lm.astype({x: float}), "power", x, "value", n_boot=n_boot)
                rows += fit_rows(fit, "lm", "loss", x)
                bands += band_rows(fit, lm[x], "lm", "loss", x)
            except ValueError as e:
                warnings.warn(f"power-law fit of loss against {x} failed: {e}")
        per_size = lm.groupby("n_params")["tokens"].nunique()
        if (per_size >= 2).sum() >= 3:
            try:
                fit = fit_law(lm.astype({"n_params": float, "tokens": float}), "chinchilla", ("n_params", "tokens"),
                              "value", n_boot=n_boot)
                rows += fit_rows(fit, "lm", "loss", "n_params,tokens")
            except ValueError as e:
                warnings.warn(f"Chinchilla fit failed: {e}")
    return pd.DataFrame(rows, columns=FIT_COLUMNS), pd.DataFrame(bands, columns=BAND_COLUMNS)


class ProgressLines:
    """`progress(done, total)` for a long view: a line on stderr every `every` seconds (never for a view that ends
    sooner), with the share done and the time left at the rate so far, and one at the end if any was printed."""

    def __init__(self, label: str, every: float = 15.0, file=None):
        self.label, self.every, self.file = label, every, file or sys.stderr
        self.t0 = self.last = time.perf_counter()
        self.printed = False

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if now - self.last < self.every and not (done == total and self.printed):
            return
        self.last, self.printed = now, True
        spent = now - self.t0
        left = "" if done >= total else f", about {spent / max(done, 1) * (total - done):.0f} s left"
        print(f"{self.label}: {done} of {total} groups judged in {spent:.0f} s{left}", file=self.file, flush=True)


def _transitions_view(df: pd.DataFrame, along: dict) -> pd.DataFrame:
    from analysis.views import flag_transitions

    return flag_transitions(df, progress=ProgressLines("transitions view"), **along)


def _loss_view(df: pd.DataFrame, loss_opts: dict) -> pd.DataFrame:
    from analysis.flags import flag_emergence

    return flag_emergence(df, x="loss", **loss_opts)


def run_analysis(df: pd.DataFrame, out_dir: Path, *, x: str = "n_params", views=None, runs: pd.DataFrame | None = None,
                 instances: pd.DataFrame | None = None, n_boot: int = 200,
                 flag_options: dict | None = None, workers: int | None = None) -> dict[str, Path]:
    """Write fits.csv (with fit_bands.csv, the fitted curves the report draws), flags.csv and, for each requested
    view ("all" for every one), its CSV into `out_dir`.

    The two dearest views (transitions along training and the loss view) are computed in `workers` processes
    beside the flags (default: up to 2, as the cores allow; 1: all in this process). Each is a function of the
    table and the settings alone, so the files are the same either way."""
    from analysis.flags import flag_emergence  # flags imports the views; loaded when an analysis runs

    df = validate(df)
    if not len(measured(df)):
        raise ValueError("the results table has no measured values (every row is NaN or from a failed run)")
    out_dir = Path(out_dir)
    written: dict[str, Path] = {}

    flag_options = dict(flag_options or {})
    loss_w0 = flag_options.pop("loss_w0", None)  # the loss view's W0, in nats
    chosen = VIEWS if views == "all" else tuple(views or ())
    side: dict[str, tuple] = {}  # view -> (function, its argument): the dear views, run beside the flags
    if "transitions" in chosen:
        side["transitions"] = (_transitions_view,
                               {k: v for k, v in flag_options.items() if k in ("w0", "alpha", "n_boot", "seed")})
    if "loss" in chosen and {"lm"} <= set(df["task"]):
        # against loss the width is in nats, with its own W0 (`loss_w0`, analysis.loss_w0; else
        # analysis.views.LOSS_W0), not the decades of x
        loss_opts = {k: v for k, v in flag_options.items() if k in ("alpha", "n_boot", "seed")}
        if loss_w0 is not None:
            loss_opts["w0"] = loss_w0
        side["loss"] = (_loss_view, loss_opts)
    workers = min(2, os.cpu_count() or 1) if workers is None else int(workers)
    pool = None
    if workers > 1 and side:
        # spawned, not forked: the caller may hold thread pools (torch, BLAS) that a fork would copy mid-flight
        pool = ProcessPoolExecutor(max_workers=min(workers, len(side)), mp_context=mp.get_context("spawn"))
    try:
        pending = {name: pool.submit(fn, df, arg) for name, (fn, arg) in side.items()} if pool else {}
        fits, bands = scaling_fits_and_bands(df, n_boot=n_boot)
        written["fits"] = write_csv(fits, out_dir / "fits.csv")
        written["fit_bands"] = write_csv(bands, out_dir / "fit_bands.csv")
        flags = flag_emergence(df, x=x, **flag_options)
        written["flags"] = write_csv(flags, out_dir / "flags.csv")
        for name, (fn, arg) in side.items():
            table = pending[name].result() if pool else fn(df, arg)
            written[name] = write_csv(table, out_dir / f"{name}.csv")
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    if "resolution" in chosen and instances is not None and len(instances):
        from analysis.resolution import resolution_curves

        written["resolution"] = write_csv(resolution_curves(instances, x="n_params", runs=runs),
                                           out_dir / "resolution.csv")
    if "backtest" in chosen:
        written["backtest"] = write_csv(backtests(df), out_dir / "backtest.csv")
    return written


def backtests(df: pd.DataFrame, holdout: int = 1) -> pd.DataFrame:
    """Predict the largest size from the smaller ones: the LM loss with a power law, each task's exact match with a
    logistic in log N (where there are enough sizes: a law needs more points than parameters).

    df: the whole results table. Each run's last checkpoint is chosen among all of its rows before the curves are
    picked out, so that a metric left unmeasured there leaves the run out of that curve (`analysis.schema`)."""
    from analysis.backtest import backtest

    parts = []
    fin = final_measured(df)
    sizes = fin["n_params"].nunique()
    for (task, metric), law, need in ((("lm", "loss"), "power", 4), ((None, "exact_match"), "logistic", 6)):
        sub = fin[(fin["metric"] == metric) & ((fin["task"] == task) if task else fin["task"].ne("lm"))]
        if sizes - holdout < need or not len(sub):
            continue
        try:
            parts.append(backtest(sub, law, "n_params", holdout=holdout))
        except ValueError as e:
            warnings.warn(f"backtest of {metric} with {law} failed: {e}")
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


# a cell a spreadsheet would run as a formula (OWASP, CSV injection): written with a leading apostrophe, which a
# spreadsheet shows as text; a cell that already starts with one gets another, so reading back is exact
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with every text cell that starts like a formula (or with an apostrophe) prefixed with an apostrophe."""
    return _map_text(df, lambda v: "'" + v if isinstance(v, str) and v.startswith((*FORMULA_START, "'")) else v)


def _map_text(df: pd.DataFrame, fn) -> pd.DataFrame:
    """`fn` applied to every cell of the text columns (by position: a table may repeat a column name)."""
    out = df.copy()
    for i in range(out.shape[1]):
        col = out.iloc[:, i]
        if col.dtype == object or pd.api.types.is_string_dtype(col):
            out.isetitem(i, col.map(fn))
    return out


def csv_plain(df: pd.DataFrame) -> pd.DataFrame:
    """The inverse of `csv_safe`, for a table read back from a CSV this package wrote."""
    return _map_text(df, lambda v: v[1:] if isinstance(v, str) and len(v) > 1 and v[0] == "'" and
                     v[1] in (*FORMULA_START, "'") else v)


def read_csv(path) -> pd.DataFrame:
    """A CSV this package wrote (`write_csv`), its text cells as they were."""
    return csv_plain(pd.read_csv(path))


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    csv_safe(df).to_csv(tmp, index=False)
    tmp.replace(path)
    return path
