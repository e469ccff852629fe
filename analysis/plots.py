"""Figures of a sweep: functions that take DataFrames (and fitted laws) and return matplotlib Figures.

Nothing here fits or flags: the numbers drawn come from the results table and from what `analysis.fit`,
`analysis.flags` and the views computed. Figures are built without pyplot (a `Figure` with an Agg canvas), so they
hold no global state and can be made in threads, tests and notebooks alike; `save_figure` writes a PNG and an SVG.

Conventions, the same in every figure:
- scale on the x-axis (parameters, compute, tokens) is drawn on a log axis, with units in the label;
- model sizes are coloured by one sequential map (viridis, in log parameters), smallest dark, largest light;
- everything else uses the Okabe-Ito palette, which stays distinct under the common colour-vision deficiencies
  (Okabe and Ito 2008, "Color Universal Design");
- seeds are faint points, the mean over seeds is drawn with its 95% interval (Student t over seeds; with one seed,
  1.96 x the probe's own standard error).

The figures live in one module per kind, all re-exported here: `analysis.plot_style` (the house style and the
helpers every figure shares), `analysis.plot_scaling` (loss against parameters and compute),
`analysis.plot_capability` (capability against scale, with each metric's verdict), `analysis.plot_training`
(training curves), `analysis.plot_views` (loss threshold, backtest, infinite resolution) and `analysis.plot_tables`
(the heatmap and the family table).
"""
from __future__ import annotations

from analysis.fmt import count as fmt_count, number as fmt_num
from analysis.plot_capability import (TRAINING_AXES, capability_points, flag_annotation, plot_capability,
                                      verdict_text, width_text)
from analysis.plot_scaling import plot_scaling
from analysis.plot_style import (DPI, FIT_COLOR, JUMP_COLOR, METRIC_LABELS, OKABE_ITO, SIZE_CMAP, SIZE_CMAP_RANGE,
                                 STYLE, UNIT_METRICS, X_LABELS, figure_legend, higher_is_better, metric_label,
                                 new_figure, safe_text, save_figure, short, size_colors, size_legend_handles, style,
                                 tidy_log_axes)
from analysis.plot_tables import plot_family_table, plot_heatmap
from analysis.plot_training import plot_training
from analysis.plot_views import plot_backtest, plot_loss_threshold, plot_resolution

__all__ = [
    "DPI", "FIT_COLOR", "JUMP_COLOR", "METRIC_LABELS", "OKABE_ITO", "SIZE_CMAP", "SIZE_CMAP_RANGE", "STYLE",
    "TRAINING_AXES", "UNIT_METRICS", "X_LABELS", "capability_points", "figure_legend", "flag_annotation", "fmt_count",
    "fmt_num", "higher_is_better", "metric_label", "new_figure", "plot_backtest", "plot_capability",
    "plot_family_table", "plot_heatmap", "plot_loss_threshold", "plot_resolution", "plot_scaling", "plot_training",
    "safe_text", "save_figure", "short", "size_colors", "size_legend_handles", "style", "tidy_log_axes",
    "verdict_text", "width_text",
]
