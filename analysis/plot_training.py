"""Training curves (`plot_training`): held-out LM loss and each task's metrics along training, one line per run,
with the phase changes flagged within runs.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from analysis.plot_style import (UNIT_METRICS, X_LABELS, figure_legend, metric_label, new_figure, panel_note,
                                 plain_log_y, safe_text, short, size_colors, size_legend_handles, style, tidy_log_axes)
from analysis.tables import excluded_runs, need, sizes, training_panels


def plot_training(results: pd.DataFrame, *, runs: pd.DataFrame | None = None,
                  transitions: pd.DataFrame | None = None, tasks=None, x: str = "tokens") -> Figure:
    """Held-out LM loss and each task's metrics against training tokens, one line per run coloured by size.

    Runs that failed or diverged are dotted and end in a cross. A transition flagged within a run (verdict
    "emergent" in `transitions`: a phase change such as induction-head formation, Olsson et al. 2022) is marked
    with a triangle at its location and a bar over its interval.
    """
    df = need(results, ["run_id", "n_params", "step", "task", "metric", "value", x], "results")
    panels = training_panels(df, tasks)
    if not panels:
        raise ValueError("results: nothing measured along training to draw")
    size_df = sizes(df)
    colors = size_colors(size_df["n_params"])
    bad = excluded_runs(df, runs)
    ncols = 2 if len(panels) <= 4 else 3
    nrows = math.ceil(len(panels) / ncols)
    marks = None
    if transitions is not None and {"run_id", "task", "metric", "jump_at"} <= set(transitions.columns):
        marks = transitions[transitions.get("verdict", pd.Series("emergent", index=transitions.index))
                            .astype(str).eq("emergent") & transitions["jump_at"].notna()]
    with style():
        fig = new_figure(7.2 if ncols == 2 else 7.6, 2.3 * nrows + 0.7)
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
        for ax, (task, metric) in zip(axes, panels):
            sub = df[(df["task"].astype(str) == task) & (df["metric"].astype(str) == metric) & df["value"].notna()
                     & (df[x] > 0)]
            for run_id, g in sub.groupby("run_id"):
                g = g.sort_values(x)
                col = colors.get(int(g["n_params"].iloc[0]), "grey")
                is_bad = str(run_id) in bad
                ax.plot(g[x], g["value"], color=col, lw=1.0, alpha=0.5 if is_bad else 0.85,
                        ls=":" if is_bad else "-")
                if is_bad:
                    ax.plot(g[x].iloc[-1], g["value"].iloc[-1], marker="x", color=col, ms=5, mew=1.3)
                if marks is not None:
                    m = marks[(marks["run_id"].astype(str) == str(run_id)) & (marks["task"].astype(str) == task)
                              & (marks["metric"].astype(str) == metric)]
                    for mr in m.itertuples():
                        yv = float(np.interp(np.log10(mr.jump_at), np.log10(g[x]), g["value"]))
                        lo_, hi_ = getattr(mr, "jump_lo", np.nan), getattr(mr, "jump_hi", np.nan)
                        if pd.notna(lo_) and pd.notna(hi_):
                            ax.plot([lo_, hi_], [yv, yv], color="black", lw=2.2, alpha=0.6, zorder=6,
                                    solid_capstyle="butt")
                        ax.plot(mr.jump_at, yv, marker="v", ms=7, color=col, mec="black", mew=0.8, zorder=7)
            ax.set_xscale("log")
            ax.set_xlabel(X_LABELS.get(x, safe_text(x)))
            ax.set_ylabel(metric_label(metric))
            ax.set_title("held-out LM loss" if task == "lm" else short(task, 34), loc="left")
            if metric == "loss":
                ylo = np.nanmin(sub["value"]) if not sub.empty else 1
                ax.set_ylim(ylo * 0.95, np.nanpercentile(sub["value"], 99.5) * 1.05 if not sub.empty else 2)
                plain_log_y(ax)
            elif metric in UNIT_METRICS:
                ax.set_ylim(-0.04, 1.04)
            if sub.empty:
                panel_note(ax, "no measured checkpoint")
        for ax in axes[len(panels):]:
            ax.set_axis_off()
        drawn_bad = any(ln.get_linestyle() == ":" for ax in axes for ln in ax.lines)
        extra = [Line2D([], [], color="grey", ls=":", marker="x", label="failed or diverged run")] if drawn_bad else []
        if marks is not None and not marks.empty:
            extra.append(Line2D([], [], color="white", marker="v", mec="black", ms=7,
                                label="phase change (interval)"))
        figure_legend(fig, size_legend_handles(size_df, colors) + extra)
        tidy_log_axes(fig)
    return fig
