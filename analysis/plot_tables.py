"""Figures that are tables: the task x model size heatmap of a metric (`plot_heatmap`) and the model family
(`plot_family_table`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from analysis.fmt import count as fmt_count
from analysis.plot_style import METRIC_LABELS, X_LABELS, metric_label, new_figure, safe_text, short, style
from analysis.schema import METRICS
from analysis.tables import family_display, heatmap_table, sizes


def plot_heatmap(results: pd.DataFrame, metric: str = "exact_match", *, runs=None) -> Figure:
    """Task x model size heatmap of `metric` (mean over seeds, final checkpoint), each cell labelled."""
    table = heatmap_table(results, metric, runs=runs)
    names = sizes(results).set_index("n_params")["model"]
    with style():
        nt, ns = table.shape
        fig = new_figure(max(3.6, 0.85 * ns + 2.4), max(1.8, 0.42 * nt + 1.3))
        ax = fig.subplots()
        spec = METRICS.get(metric)
        vmin, vmax = ((spec.lower_bound, spec.upper_bound) if spec and spec.lower_bound is not None
                      and spec.upper_bound is not None else (np.nanmin(table.values), np.nanmax(table.values)))
        im = ax.imshow(table.values, cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
        ax.grid(False)
        ax.set_xticks(range(ns), [f"{short(names.get(n, ''), 12)}\n{fmt_count(n)}" for n in table.columns])
        ax.set_yticks(range(nt), [short(t, 28) for t in table.index])
        ax.set_xlabel(X_LABELS["n_params"] + " (model, parameters)")
        cmap = colormaps["viridis"]
        for i in range(nt):
            for j in range(ns):
                v = table.values[i, j]
                if np.isfinite(v):
                    r, g, b, _ = cmap((v - vmin) / (vmax - vmin) if vmax > vmin else 0.5)
                    lum = 0.2126 * r + 0.7152 * g + 0.0722 * b
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7.5,
                            color="black" if lum > 0.5 else "white")
                else:
                    ax.text(j, i, "n/a", ha="center", va="center", fontsize=7, color="#777777")
        for s in ax.spines.values():
            s.set_visible(False)
        fig.colorbar(im, ax=ax, label=metric_label(metric), shrink=0.9, pad=0.02)
        ax.set_title(f"{METRIC_LABELS.get(metric, safe_text(metric))} at the final checkpoint, mean over seeds",
                     loc="left")
    return fig


def plot_family_table(runs: pd.DataFrame) -> Figure:
    """The family table as a figure (for a paper's appendix), sized to its text."""
    t = family_display(runs)
    with style():
        fig = Figure(figsize=(7.0, 0.3 * len(t) + 0.5))
        FigureCanvasAgg(fig)
        ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
        ax.set_axis_off()
        cells = [[safe_text(v) for v in row] for row in t.astype(str).values]
        tab = ax.table(cellText=cells, colLabels=[safe_text(c) for c in t.columns], loc="center",
                       cellLoc="right", colLoc="right")
        tab.auto_set_font_size(False)
        tab.set_fontsize(8)
        tab.scale(1, 1.35)
        for (i, _), cell in tab.get_celld().items():
            cell.set_edgecolor("#cccccc")
            cell.set_linewidth(0.4)
            cell.PAD = 0.08
            if i == 0:
                cell.set_text_props(fontweight="bold")
                cell.set_facecolor("#eeeeee")
        tab.auto_set_column_width(list(range(len(t.columns))))
        # measure the drawn table and fit the figure to it (column widths follow the text)
        fig.canvas.draw()
        box = tab.get_window_extent(fig.canvas.get_renderer())
        fig.set_size_inches(box.width / fig.dpi + 0.15, box.height / fig.dpi + 0.15)
    return fig
