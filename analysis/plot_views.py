"""Figures of the other views of emergence: a metric against held-out loss with its threshold
(`plot_loss_threshold`), predictions from the smaller sizes against the truth (`plot_backtest`), and the
infinite-resolution view (`plot_resolution`).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from analysis.fmt import number as fmt_num
from analysis.plot_style import (FIT_COLOR, JUMP_COLOR, OKABE_ITO, UNIT_METRICS, X_LABELS, figure_legend,
                                 metric_label, new_figure, panel_note, safe_text, short, size_colors,
                                 size_legend_handles, style, tidy_log_axes)
from analysis.tables import excluded_runs, final_values, need, seed_summary, sizes


def _text_box(ax, text: str, *, edge=None, fontsize: float = 6.5, loc: str = "best") -> None:
    """Text in the emptiest corner of a panel: a legend without handles, so matplotlib's "best" placement keeps
    it off the data."""
    handle = Line2D([], [], color="none")
    leg = ax.legend([handle], [text], loc=loc, handlelength=0, handletextpad=0, fontsize=fontsize,
                    frameon=edge is not None, borderpad=0.4, labelcolor="#222222" if edge else "#555555")
    if edge is not None:
        leg.get_frame().set_edgecolor(edge)
        leg.get_frame().set_alpha(0.92)
    leg.set_zorder(7)


def _join_loss(results: pd.DataFrame, task: str, metric: str, runs=None) -> pd.DataFrame:
    """Each checkpoint's metric beside its held-out LM loss (the x of Du et al. 2024)."""
    df = results[results["value"].notna() & ~results["run_id"].astype(str).isin(excluded_runs(results, runs))]
    lm = df[(df["task"] == "lm") & (df["metric"] == "loss")][["run_id", "step", "value"]]
    m = df[(df["task"].astype(str) == task) & (df["metric"].astype(str) == metric)]
    return m.merge(lm.rename(columns={"value": "lm_loss"}), on=["run_id", "step"])


def _threshold_cols(row: pd.Series) -> tuple:
    """(eta, lo, hi) from a loss-view row, whichever names the view used."""
    for a, b, c in (("eta", "eta_lo", "eta_hi"), ("threshold", "threshold_lo", "threshold_hi"),
                    ("jump_at", "jump_lo", "jump_hi")):
        if a in row.index and pd.notna(row[a]):
            return float(row[a]), float(row.get(b, np.nan)), float(row.get(c, np.nan))
    return np.nan, np.nan, np.nan


def plot_loss_threshold(results: pd.DataFrame, loss_flags: pd.DataFrame, *, runs=None, max_panels: int = 9) -> Figure:
    """Metric against held-out LM loss, every checkpoint of every size pooled, with the threshold eta.

    Du et al. 2024 ("Understanding Emergent Abilities of Language Models from the Loss Perspective"): an ability is
    emergent in loss if it is absent above a loss threshold eta and present below it. The x-axis runs from high loss
    to low, so that improvement reads left to right as in the scale figures.
    """
    need(loss_flags, ["task", "metric"], "loss view")
    df = need(results, ["run_id", "step", "task", "metric", "value", "n_params"], "results")
    flags = loss_flags.copy()
    if "verdict" in flags.columns:  # emergent ones first
        flags = flags.assign(_o=flags["verdict"].astype(str).ne("emergent")).sort_values("_o", kind="stable")
    flags = flags.head(max_panels)
    size_df = sizes(df)
    colors = size_colors(size_df["n_params"])
    n = len(flags)
    if n == 0:
        raise ValueError("loss view: no rows")
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    with style():
        fig = new_figure(max(2.5 * ncols, 4.2), 2.4 * nrows + 0.6)
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
        for ax, (_, row) in zip(axes, flags.iterrows()):
            task, metric = str(row["task"]), str(row["metric"])
            j = _join_loss(df, task, metric, runs)
            j = j.sort_values("n_params")
            ax.scatter(j["lm_loss"], j["value"], s=9, c=[colors.get(int(v), "grey") for v in j["n_params"]],
                       alpha=0.75, lw=0)
            eta, lo, hi = _threshold_cols(row)
            verdict = str(row.get("verdict", ""))
            if verdict == "emergent" and np.isfinite(eta):
                # the threshold is drawn only where the view found the ability to appear below it
                if np.isfinite(lo) and np.isfinite(hi):
                    ax.axvspan(lo, hi, color=JUMP_COLOR, alpha=0.3, lw=0)
                ax.axvline(eta, color=JUMP_COLOR, lw=1.2)
                txt = f"\u03b7 = {fmt_num(eta)}"
                if np.isfinite(lo) and np.isfinite(hi):
                    txt += f" [{fmt_num(lo)}, {fmt_num(hi)}]"
                _text_box(ax, f"emergent\n{txt}", edge=JUMP_COLOR, fontsize=7)
            elif verdict:
                _text_box(ax, safe_text(verdict), fontsize=7)
            if j.empty:
                panel_note(ax, "no checkpoint with both values")
            else:
                ax.set_xlim(np.nanmax(j["lm_loss"]) * 1.03, np.nanmin(j["lm_loss"]) * 0.97)  # high loss -> low
            ax.set_xlabel(X_LABELS["loss"])
            ax.set_ylabel(metric_label(metric))
            ax.set_title(short(task, 34), loc="left")
            if metric in UNIT_METRICS:
                ax.set_ylim(-0.04, 1.04)
        for ax in axes[n:]:
            ax.set_axis_off()
        figure_legend(fig, size_legend_handles(size_df, colors))
    return fig


def _col(df: pd.DataFrame, *names):
    for n in names:
        if n in df.columns:
            return n
    return None


def plot_backtest(backtest: pd.DataFrame, results: pd.DataFrame | None = None, *, runs=None,
                  max_panels: int = 9) -> Figure:
    """Prediction from the smaller sizes against the truth: could each capability have been forecast?

    Each panel is one (task, metric): the measured means of every size (black) and, for each held-out size, the law
    fitted on the smaller ones predicts a value with an interval (vermillion). A prediction whose interval misses
    the measured point is a capability the smaller models did not foretell.
    """
    bt = need(backtest, ["task", "metric"], "backtest view")
    xcol = _col(bt, "holdout_x", "x_value", "n_params", "size")
    pcol = _col(bt, "predicted", "prediction", "pred")
    acol = _col(bt, "actual", "observed", "truth")
    if xcol is None or pcol is None:
        raise ValueError("backtest view: need a held-out size column (holdout_x) and a prediction column (predicted)")
    xname = "n_params"
    if "x" in bt.columns and bt["x"].notna().any() and bt["x"].dtype == object:
        xname = str(bt["x"].dropna().iloc[0])
    lo_c, hi_c = _col(bt, "lo", "pred_lo", "predicted_lo"), _col(bt, "hi", "pred_hi", "predicted_hi")
    keys = list(dict.fromkeys(zip(bt["task"].astype(str), bt["metric"].astype(str))))[:max_panels]
    ncols = min(3, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    with style():
        fig = new_figure(max(2.5 * ncols, 4.2), 2.4 * nrows + 0.5)
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
        for ax, (task, metric) in zip(axes, keys):
            b = bt[(bt["task"].astype(str) == task) & (bt["metric"].astype(str) == metric)]
            if results is not None and xname in results.columns:
                fin = final_values(results, task, metric, runs=runs)
                if not fin.empty:
                    s = seed_summary(fin, x=xname)
                    ax.errorbar(s[xname], s["mean"], yerr=[s["mean"] - s["lo"], s["hi"] - s["mean"]], fmt="o-",
                                color="black", ms=4, lw=0.9, capsize=2, label="measured (mean, 95% CI)")
            elif acol is not None:
                ax.plot(b[xcol], b[acol], "o", color="black", label="measured")
            yerr = None
            if lo_c and hi_c:
                yerr = [np.clip(b[pcol] - b[lo_c], 0, None), np.clip(b[hi_c] - b[pcol], 0, None)]
            ax.errorbar(b[xcol], b[pcol], yerr=yerr, fmt="D", color=FIT_COLOR, ms=5, capsize=3,
                        label="predicted from smaller sizes", zorder=5)
            if len(b):
                ax.axvspan(b[xcol].min() / 1.4, b[xcol].max() * 1.4, color=OKABE_ITO["grey"], alpha=0.12, lw=0)
            ax.set_xscale("log")
            ax.set_xlabel(X_LABELS.get(xname, safe_text(xname)))
            ax.set_ylabel(metric_label(metric))
            law = f" ({short(b['law'].iloc[0], 14)})" if "law" in b.columns and len(b) else ""
            ax.set_title(short(task, 28) + law, loc="left")
            if metric in UNIT_METRICS:
                ax.set_ylim(-0.04, 1.04)
        for ax in axes[len(keys):]:
            ax.set_axis_off()
        handles = [Line2D([], [], color="black", marker="o", label="measured (mean, 95% CI)"),
                   Line2D([], [], color=FIT_COLOR, marker="D", ls="", label="predicted from smaller sizes"),
                   Patch(color=OKABE_ITO["grey"], alpha=0.25, label="held out")]
        figure_legend(fig, handles)
        tidy_log_axes(fig)
    return fig


def plot_resolution(points: pd.DataFrame, summary: pd.DataFrame | None = None, *, max_panels: int = 9) -> Figure:
    """Infinite-resolution view: log(-log P) of the mean answer probability against model size, per task.

    Hu et al. 2023 ("Predicting Emergent Abilities with Infinite Resolution Evaluation"): the task scaling law
    P = exp(-c N^-alpha) is the straight line log(-log P) = log c - alpha ln N. `points` are
    `analysis.resolution.resolution_points` (task, n_params, loglogp = log(-log P)); `summary` is
    `resolution_curves` (per task: slope, curvature with its interval, shape). The least-squares line through the
    points passes through their centroid with the reported slope, which is how it is drawn. A concave bend
    (downwards) is accelerated emergence, a convex one sub-scaling. Lower y is better: P -> 1 sends y to -inf.
    """
    pts = need(points, ["task"], "resolution points")
    xcol, ycol = _col(pts, "n_params", "x", "flops", "tokens"), _col(pts, "loglogp", "y")
    if xcol is None or ycol is None:
        raise ValueError("resolution points: need a size column (n_params or x) and log(-log P) (loglogp or y)")
    pts = pts.assign(x=pd.to_numeric(pts[xcol], errors="coerce"), y=pd.to_numeric(pts[ycol], errors="coerce"))
    pts = pts[np.isfinite(pts["y"]) & (pts["x"] > 0)]
    tasks = list(dict.fromkeys(pts["task"].astype(str)))[:max_panels]
    if not tasks:
        raise ValueError("resolution points: no task with a finite log(-log P) (every P is 0 or 1)")
    ncols = min(3, len(tasks))
    nrows = math.ceil(len(tasks) / ncols)
    colors = size_colors(pts["x"])
    with style():
        fig = new_figure(max(2.5 * ncols, 4.2), 2.3 * nrows + 0.3)
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
        for ax, task in zip(axes, tasks):
            g = pts[pts["task"].astype(str) == task].sort_values("x")
            ax.plot(g["x"], g["y"], color="black", lw=0.8, zorder=3)
            ax.scatter(g["x"], g["y"], s=28, c=[colors.get(int(v), "grey") for v in g["x"]], edgecolor="black",
                       lw=0.5, zorder=4)
            text = ""
            s_ = summary[summary["task"].astype(str) == task] if summary is not None and "task" in summary else None
            if s_ is not None and len(s_):
                r = s_.iloc[0]
                slope = float(r.get("slope", np.nan))
                if np.isfinite(slope) and len(g) >= 2:
                    t = np.log(g["x"].to_numpy(float))
                    grid = np.linspace(t.min(), t.max(), 50)
                    ax.plot(np.exp(grid), g["y"].mean() + slope * (grid - t.mean()), ls="--", color=FIT_COLOR,
                            lw=1.2, zorder=2)
                text = safe_text(r.get("shape", ""))
                if pd.notna(r.get("curvature", np.nan)):
                    text += f"\ncurvature {fmt_num(r['curvature'], 2)}"
                    if pd.notna(r.get("curvature_lo", np.nan)) and pd.notna(r.get("curvature_hi", np.nan)):
                        text += f" [{fmt_num(r['curvature_lo'], 2)}, {fmt_num(r['curvature_hi'], 2)}]"
                if np.isfinite(slope):
                    text += f"\nslope {fmt_num(slope, 2)}"
            if text:
                # a falling line leaves the lower left empty, a rising one the upper left
                falling = len(g) < 2 or g["y"].iloc[-1] <= g["y"].iloc[0]
                _text_box(ax, text, edge=OKABE_ITO["grey"], fontsize=7, loc="lower left" if falling else "upper left")
            ax.set_xscale("log")
            ax.set_xlabel(X_LABELS.get(xcol, "size x"))
            ax.set_ylabel("log(\u2212log P)  \u2190")
            ax.set_title(short(task, 34), loc="left")
        for ax in axes[len(tasks):]:
            ax.set_axis_off()
        figure_legend(fig, [Line2D([], [], color="black", marker="o", label="mean answer probability P"),
                            Line2D([], [], color=FIT_COLOR, ls="--", label="task scaling law (least squares)")])
        tidy_log_axes(fig)
    return fig
