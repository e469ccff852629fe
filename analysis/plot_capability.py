"""Capability against scale (`plot_capability`): each task's metrics at the final checkpoint against model size
(or every checkpoint against a training axis), with fitted laws, flagged jumps and every metric's verdict in words.
"""
from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from analysis import schema
from analysis.fmt import count as fmt_count, number as fmt_num, number_or_inf as _num_text
from analysis.plot_style import (FIT_COLOR, JUMP_COLOR, METRIC_LABELS, UNIT_METRICS, X_LABELS, figure_legend,
                                 fit_curve, higher_is_better, metric_label, new_figure, panel_note, safe_text, short,
                                 size_colors, size_legend_handles, style, tidy_log_axes)
from analysis.tables import (best_fit_rows, capability_tasks, excluded_runs, final_values, is_true, law_curve, need,
                             ordered_metrics, seed_summary, sizes)


def _flag_row(flags: pd.DataFrame | None, task: str, metric: str, x: str) -> pd.Series | None:
    if flags is None or not {"task", "metric"} <= set(flags.columns):
        return None
    f = flags[(flags["task"].astype(str) == task) & (flags["metric"].astype(str) == metric)]
    if "x" in f.columns:
        f = f[f["x"].astype(str) == x]
    return None if f.empty else f.iloc[0]


def _finite(v) -> bool:
    try:
        return bool(np.isfinite(float(v)))
    except (TypeError, ValueError):
        return False


def width_text(flag: pd.Series, digits: int = 2) -> str:
    """`W 0.31 [0.18, 0.44] dec`: the 10-90% width of a flag's rise in decades of x, with its 95% interval; ""
    where the flag has no width."""
    g = flag.get
    if not _finite(g("width", np.nan)):
        return ""
    text = f"W {_num_text(g('width'), digits)}"
    lo, hi = g("width_lo", np.nan), g("width_hi", np.nan)
    if pd.notna(lo) and pd.notna(hi):
        text += f" [{_num_text(lo, digits)}, {_num_text(hi, digits)}]"
    return text + " dec"


def flag_annotation(flag: pd.Series) -> str:
    """The evidence numbers of a flag, one per line, for a figure."""
    lines = []
    g = flag.get
    if pd.notna(g("jump_at", np.nan)):
        where = f"jump at {fmt_count(g('jump_at'))}"
        if pd.notna(g("jump_lo", np.nan)) and pd.notna(g("jump_hi", np.nan)):
            where += f" [{fmt_count(g('jump_lo'))}, {fmt_count(g('jump_hi'))}]"
        lines.append(where)
    width = width_text(flag)
    if width:
        if _finite(g("w0", np.nan)):
            width += f" (W0 {fmt_num(g('w0'), 2)})"
        lines.append(width)
    stats_ = []
    if pd.notna(g("p_value", np.nan)):
        stats_.append(f"p={fmt_num(g('p_value'), 2)}")
    if pd.notna(g("q_value", np.nan)):
        stats_.append(f"q={fmt_num(g('q_value'), 2)}")
    if stats_:
        lines.append(", ".join(stats_))
    per_run = g("per_run", np.nan)
    if pd.notna(per_run) and str(per_run).strip():
        s = f"runs: {per_run}"
        share = g("share_by_size", np.nan)
        if pd.notna(share) and str(share).strip():
            s += f" ({share})"
        lines.append(s)
    if pd.notna(g("breakthroughness", np.nan)):
        lines.append(f"breakthroughness {_num_text(g('breakthroughness'), 3)}")
    if _finite(g("loss_at_jump", np.nan)):
        lines.append(f"loss at jump {fmt_num(g('loss_at_jump'), 3)}")
    return "\n".join(lines)


def plot_capability(results: pd.DataFrame, *, runs: pd.DataFrame | None = None, flags: pd.DataFrame | None = None,
                    fits: pd.DataFrame | None = None, curves: dict | None = None, tasks=None, metrics=None,
                    x: str = "n_params") -> Figure:
    """Each task's metrics against model size at the final checkpoint: one row per task, exact match first.

    Seeds are faint points; the mean over seeds carries its 95% interval; a fitted law is drawn where there is one
    (`curves[(task, metric)]`: a FitResult or callable; else the law with the lowest AICc in `fits`); a flagged
    jump (verdict "emergent" in `flags`) is shaded over [jump_lo, jump_hi], the 95% interval of its location, and
    labelled with the 10%-90% width W of its rise in decades of x; the last column of each row states
    every metric's verdict with its evidence numbers. Putting the discontinuous metric beside the continuous ones
    of the same task is the test of Schaeffer et al. 2023 ("Are Emergent Abilities of Large Language Models a
    Mirage?").
    """
    df = need(results, ["run_id", "n_params", "step", "task", "metric", "value", x], "results")
    tasks = [str(t) for t in (tasks if tasks is not None else capability_tasks(df))]
    if not tasks:
        raise ValueError("results: no probed task (other than 'lm') to draw capability against scale")
    curves = curves or {}
    size_df = sizes(df[df["task"].astype(str) != "lm"])
    colors = size_colors(size_df["n_params"])
    rows_metrics = []
    for t in tasks:
        present = df.loc[(df["task"].astype(str) == t) & df["value"].notna(), "metric"].astype(str)
        ms = ordered_metrics(present)
        if metrics is not None:
            ms = [m for m in ms if m in metrics]
        rows_metrics.append((t, ms))
    rows_metrics = [(t, ms) for t, ms in rows_metrics if ms]
    if not rows_metrics:
        raise ValueError(f"results: no measured values for task(s) {', '.join(map(repr, tasks))}")
    ncols = max(len(ms) for _, ms in rows_metrics)
    panel_w = 1.8 if ncols >= 4 else 2.2
    text_w = 2.0
    with style():
        fig = new_figure(panel_w * ncols + text_w, 2.25 * len(rows_metrics) + 0.55)
        grid = fig.subplots(len(rows_metrics), ncols + 1, squeeze=False, width_ratios=[panel_w] * ncols + [text_w])
        for axes, (task, ms) in zip(grid, rows_metrics):
            for ax, metric in zip(axes, ms):
                _capability_panel(ax, df, task, metric, x, colors, runs, flags, fits, curves.get((task, metric)))
            for ax in axes[len(ms):]:
                ax.set_axis_off()
            axes[0].set_title(f"task: {short(task, 40)}", loc="left", fontweight="bold", fontsize=9.5, pad=8)
            axes[-1].text(0.04, 1.0, "verdicts", transform=axes[-1].transAxes, va="top", ha="left",
                          fontsize=7.5, fontweight="bold")
            axes[-1].text(0.04, 0.9, verdict_text(flags, task, ms, x), transform=axes[-1].transAxes, va="top",
                          ha="left", fontsize=6.8, linespacing=1.35)
        handles = size_legend_handles(size_df, colors) + [
            Line2D([], [], color="black", marker="o", ls="-", label="mean over seeds, 95% CI")]
        if any(ln.get_color() == FIT_COLOR for ax in fig.axes for ln in ax.lines):
            handles.append(Line2D([], [], color=FIT_COLOR, ls="--", label="fitted law"))
        if any(p.get_facecolor()[:3] == matplotlib.colors.to_rgb(JUMP_COLOR) for ax in fig.axes for p in ax.patches):
            handles.append(Patch(color=JUMP_COLOR, alpha=0.3, label="flagged jump (95% CI of location)"))
        figure_legend(fig, handles)
        tidy_log_axes(fig)
    return fig


def verdict_text(flags: pd.DataFrame | None, task: str, metrics, x: str = "n_params", width: int = 36) -> str:
    """Each metric's verdict for a task, with the numbers behind a jump, wrapped for a text column."""
    import textwrap

    lines = []
    any_flag = False
    # a label's short form, unless two of these metrics share it (acc and acc_norm are both "accuracy")
    brief = {m: METRIC_LABELS.get(m, m).split(" (")[0] for m in metrics}
    shared = {v for v in brief.values() if list(brief.values()).count(v) > 1}
    for m in metrics:
        f = _flag_row(flags, task, m, x)
        if f is None:
            continue
        any_flag = True
        verdict = str(f.get("verdict", "?"))
        name = METRIC_LABELS.get(m, m) if brief[m] in shared else brief[m]
        lines.append(safe_text(f"{name}: {verdict.upper() if verdict == 'emergent' else verdict}"))
        if verdict == "emergent":
            detail = flag_annotation(f).replace("\n", "; ")
            if "mirage" in f.index and pd.notna(f["mirage"]) and str(f["mirage"]) != "":
                detail += "; mirage: " + ("yes, smooth in a continuous metric" if is_true(f["mirage"])
                                          else "no, it survives continuous metrics")
            lines += textwrap.wrap(safe_text(detail), width=width, initial_indent="  ", subsequent_indent="  ")
        elif width_text(f):  # a smooth or inconclusive rise: its width says how far from a jump it is
            lines += textwrap.wrap(safe_text(width_text(f)), width=width, initial_indent="  ",
                                   subsequent_indent="  ")
    if not any_flag:
        lines.append("no flags computed for this task" if flags is not None else "flags not computed")
    return "\n".join(lines)


TRAINING_AXES = ("tokens", "step", "flops")  # along training: every checkpoint is a point, not only the last


def capability_points(df, task, metric, x, runs=None) -> pd.DataFrame:
    """The points of one capability panel: each completed run's last checkpoint against a size axis, or every
    measured checkpoint against a training axis (tokens, step, FLOPs), where x is positive."""
    if x in TRAINING_AXES:
        rows = df[(df["task"] == task) & (df["metric"] == metric)]
        rows = rows[~rows["run_id"].astype(str).isin(excluded_runs(df, runs))]
        pts = schema.measured(rows) if {"status", "stderr"} <= set(rows.columns) else rows[rows["value"].notna()]
    else:
        pts = final_values(df, task, metric, runs=runs)
    return pts[pts[x].notna() & (pd.to_numeric(pts[x], errors="coerce") > 0)] if not pts.empty else pts


def _capability_panel(ax, df, task, metric, x, colors, runs, flags, fits, curve) -> None:
    final = capability_points(df, task, metric, x, runs)
    ax.set_xscale("log")
    ax.set_xlabel(X_LABELS.get(x, safe_text(x)))
    ax.set_ylabel(metric_label(metric))
    if final.empty:
        panel_note(ax, "no completed run measured this")
        return
    ax.scatter(final[x], final["value"], s=12, c=[colors.get(int(n), "grey") for n in final["n_params"]],
               alpha=0.4, lw=0, zorder=3)
    summ = seed_summary(final, x=x)
    ax.plot(summ[x], summ["mean"], color="black", lw=1.0, zorder=4)
    for r in summ.itertuples():
        xv, m, lo, hi = getattr(r, x), r.mean, r.lo, r.hi
        col = colors.get(int(final.loc[final[x] == xv, "n_params"].iloc[0]), "grey")
        ax.errorbar(xv, m, yerr=[[m - lo], [hi - m]] if np.isfinite(lo) else None, fmt="o", ms=5, color=col,
                    mec="black", mew=0.5, ecolor="black", elinewidth=0.8, capsize=2, zorder=5)
    xs = final[x].to_numpy(float)
    grid = np.logspace(np.log10(xs.min()) - 0.1, np.log10(xs.max()) + 0.1, 200)
    fitted = curve if curve is not None else law_curve(best_fit_rows(fits, task, metric, x))
    drawn = fit_curve(fitted, grid) if fitted is not None else None
    if drawn is not None:
        y, lo, hi = drawn
        ax.plot(grid, y, color=FIT_COLOR, ls="--", lw=1.3, zorder=4)
        if lo is not None:
            ax.fill_between(grid, lo, hi, color=FIT_COLOR, alpha=0.12, lw=0)
    if metric in UNIT_METRICS:
        ax.set_ylim(-0.04, 1.04)
    flag = _flag_row(flags, task, metric, x)
    if flag is not None:
        verdict = str(flag.get("verdict", ""))
        if verdict == "emergent":
            lo_, hi_ = flag.get("jump_lo", np.nan), flag.get("jump_hi", np.nan)
            if pd.notna(lo_) and pd.notna(hi_):
                ax.axvspan(float(lo_), float(hi_), color=JUMP_COLOR, alpha=0.3, lw=0, zorder=1)
            if pd.notna(flag.get("jump_at", np.nan)):
                ax.axvline(float(flag["jump_at"]), color=JUMP_COLOR, lw=1.2, zorder=2)
                # label the jump inside the panel, on the side its curve leaves empty (below a rise, above a fall)
                low = higher_is_better(metric)
                label = f"jump {fmt_count(flag['jump_at'])}"
                if _finite(flag.get("width", np.nan)):
                    label += f"\nW {fmt_num(flag['width'], 2)} dec"
                ax.annotate(label, (float(flag["jump_at"]), 0.03 if low else 0.97),
                            xycoords=("data", "axes fraction"), xytext=(3, 0), textcoords="offset points",
                            ha="left", va="bottom" if low else "top", fontsize=7, color="#8a5400",
                            fontweight="bold", zorder=7)
