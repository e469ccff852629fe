"""The scaling figure (`plot_scaling`): held-out LM loss against parameters and against training compute, with
the fitted laws, the empirical frontier and the compute-optimal frontier.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from analysis.plot_style import (FIT_COLOR, METRIC_LABELS, OKABE_ITO, X_LABELS, figure_legend, fit_curve,
                                 new_figure, plain_log_y, size_colors, size_legend_handles, style, tidy_log_axes)
from analysis.tables import excluded_runs, final_values, frontier, need, seed_summary, sizes


def plot_scaling(results: pd.DataFrame, runs: pd.DataFrame | None = None, *, fits: dict | None = None,
                 optimal: pd.DataFrame | None = None, fit_labels: dict | None = None) -> Figure:
    """Held-out LM loss against parameters (left) and against training compute (right).

    Left: each completed run's final held-out loss (faint: seeds; filled: mean over seeds) and the fitted law of
    final loss against N with its band. Right: each run's loss along training against cumulative FLOPs (lines),
    the empirical frontier (best loss reached at each compute), the fitted law of final loss against C, and, when
    `optimal` is given (columns flops, loss: a Chinchilla fit evaluated at N*(C), D*(C); Hoffmann et al. 2022,
    approach 3), the compute-optimal frontier.

    fits: {"n_params": fit, "flops": fit}, each a FitResult (or a callable); fit_labels: legend text for each.
    """
    df = need(results, ["run_id", "n_params", "step", "flops", "task", "metric", "value"], "results")
    lm = df[(df["task"] == "lm") & (df["metric"] == "loss") & df["value"].notna()]
    if lm.empty:
        raise ValueError("results: no held-out LM loss rows (task 'lm', metric 'loss') to draw the scaling figure")
    fits = fits or {}
    fit_labels = fit_labels or {}
    size_df = sizes(lm)
    colors = size_colors(size_df["n_params"])
    final = final_values(lm, runs=runs)
    if runs is not None and {"run_id", "final_val_loss"} <= set(runs.columns):
        # runs.parquet's final held-out loss is the authority where the results table has no final row
        done = runs[runs["status"].astype(str).eq("done") & runs["final_val_loss"].notna()]
        extra = done[~done["run_id"].isin(final["run_id"])]
        if not extra.empty:
            final = pd.concat([final, extra.assign(value=extra["final_val_loss"])[
                ["run_id", "n_params", "flops", "value"]]], ignore_index=True)
    with style():
        fig = new_figure(7.2, 3.3)
        ax_n, ax_c = fig.subplots(1, 2)
        # left: final loss against parameters
        for n, g in final.groupby("n_params"):
            ax_n.scatter(g["n_params"], g["value"], s=14, color=colors[int(n)], alpha=0.35, lw=0, zorder=3)
        summ = seed_summary(final)
        for r in summ.itertuples():
            yerr = [[r.mean - r.lo], [r.hi - r.mean]] if np.isfinite(r.lo) else None
            ax_n.errorbar(r.n_params, r.mean, yerr=yerr, fmt="o", ms=6, color=colors[int(r.n_params)],
                          mec="black", mew=0.5, capsize=2, zorder=4)
        handles = []
        _draw_fit(ax_n, fits.get("n_params"), final["n_params"], handles, fit_labels.get("n_params"))
        ax_n.set_xscale("log")
        ax_n.set_xlabel(X_LABELS["n_params"])
        ax_n.set_ylabel("final " + METRIC_LABELS["loss"])
        ax_n.set_title("(a) loss against parameters", loc="left")
        if handles:
            ax_n.legend(handles=handles, loc="upper right")
        # right: loss along training against compute
        trained = lm[lm["flops"] > 0]
        bad = excluded_runs(results, runs)
        for run_id, g in trained.groupby("run_id"):
            g = g.sort_values("flops")
            ax_c.plot(g["flops"], g["value"], color=colors[int(g["n_params"].iloc[0])], lw=0.9,
                      alpha=0.35 if str(run_id) in bad else 0.7, ls=":" if str(run_id) in bad else "-")
        fin_c = final[final["flops"] > 0] if "flops" in final.columns else final.iloc[:0]
        for n, g in fin_c.groupby("n_params"):
            ax_c.scatter(g["flops"], g["value"], s=16, color=colors[int(n)], edgecolor="black", lw=0.4, zorder=4)
        handles_c = []
        fr = frontier(trained[~trained["run_id"].astype(str).isin(bad)])
        if len(fr) >= 2:
            ax_c.step(fr["flops"], fr["value"], where="post", color="black", lw=1.2, ls="--", zorder=5)
            handles_c.append(Line2D([], [], color="black", ls="--", lw=1.2, label="empirical frontier"))
        _draw_fit(ax_c, fits.get("flops"), fin_c["flops"] if not fin_c.empty else trained["flops"], handles_c,
                  fit_labels.get("flops"))
        if optimal is not None and {"flops", "loss"} <= set(optimal.columns) and len(optimal) >= 2:
            o = optimal.sort_values("flops")
            ax_c.plot(o["flops"], o["loss"], color=OKABE_ITO["blue"], lw=1.8, ls="-.", zorder=6)
            handles_c.append(Line2D([], [], color=OKABE_ITO["blue"], ls="-.", lw=1.8,
                                    label="compute-optimal (Chinchilla fit)"))
        ax_c.set_xscale("log")
        ax_c.set_xlabel(X_LABELS["flops"])
        ax_c.set_ylabel(METRIC_LABELS["loss"])
        ax_c.set_title("(b) loss along training against compute", loc="left")
        ylo = np.nanmin(final["value"]) if not final.empty else np.nanmin(trained["value"])
        yhi = np.nanpercentile(trained["value"], 98) if not trained.empty else ylo * 2
        ax_c.set_ylim(ylo * 0.92, max(yhi, ylo * 1.2))
        for ax in (ax_n, ax_c):
            plain_log_y(ax)
        if handles_c:
            ax_c.legend(handles=handles_c, loc="lower left")  # the curves fall from upper left to lower right
        figure_legend(fig, size_legend_handles(size_df, colors), title="model size (parameters)")
        tidy_log_axes(fig)
    return fig


def _draw_fit(ax, fit, xdata, handles: list, label: str | None) -> None:
    xs = pd.Series(xdata).dropna()
    xs = xs[xs > 0]
    if fit is None or xs.empty:
        return
    grid = np.logspace(np.log10(xs.min()) - 0.15, np.log10(xs.max()) + 0.15, 200)
    curve = fit_curve(fit, grid)
    if curve is None:
        return
    y, lo, hi = curve
    ax.plot(grid, y, color=FIT_COLOR, lw=1.6, zorder=5)
    handles.append(Line2D([], [], color=FIT_COLOR, lw=1.6, label=label or "fitted law"))
    if lo is not None and hi is not None:
        ax.fill_between(grid, lo, hi, color=FIT_COLOR, alpha=0.18, lw=0, zorder=2)
        handles.append(Patch(color=FIT_COLOR, alpha=0.18, label="95% band"))
