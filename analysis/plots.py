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
"""
from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib import colormaps, ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from analysis.tables import (best_fit_rows, capability_tasks, excluded_runs,
                             family_display, final_values, frontier, heatmap_table, is_true, law_curve, need,
                             ordered_metrics, seed_summary, sizes, training_panels)
from analysis.fmt import count as fmt_count, number as fmt_num, number_or_inf as _num_text
from analysis import schema
from analysis.schema import METRICS

# Okabe and Ito 2008: a palette distinguishable under protanopia, deuteranopia and tritanopia.
OKABE_ITO = {"black": "#000000", "orange": "#E69F00", "sky": "#56B4E9", "green": "#009E73", "yellow": "#F0E442",
             "blue": "#0072B2", "vermillion": "#D55E00", "purple": "#CC79A7", "grey": "#999999"}
SIZE_CMAP = "viridis"
# viridis ends in a pale yellow that vanishes on white; stop short of it so the largest size stays visible.
SIZE_CMAP_RANGE = (0.0, 0.85)
JUMP_COLOR = OKABE_ITO["orange"]
FIT_COLOR = OKABE_ITO["vermillion"]
DPI = 150  # 7 inches -> about 1,050 pixels: legible at 100% zoom in a page about 1,000 pixels wide

STYLE = {
    "font.size": 9, "axes.titlesize": 9.5, "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8,
    "legend.fontsize": 8, "figure.titlesize": 10.5, "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "grid.alpha": 0.3, "grid.linewidth": 0.5, "axes.axisbelow": True, "lines.linewidth": 1.5,
    "lines.markersize": 4.5, "legend.frameon": False, "savefig.dpi": DPI, "figure.dpi": DPI,
    "svg.fonttype": "none", "svg.hashsalt": "emergence", "axes.prop_cycle": matplotlib.cycler(color=[OKABE_ITO[k] for k in (
        "blue", "orange", "green", "vermillion", "purple", "sky", "yellow", "black")]),
}

# Axis labels with units and direction; metrics not listed here (imported ones) are labelled by name.
METRIC_LABELS = {
    "exact_match": "exact match", "token_accuracy": "token accuracy", "answer_nll": "answer NLL (nats/token)",
    "brier": "Brier score", "edit_distance": "edit distance (normalised)", "loss": "held-out LM loss (nats/token)",
    "icl_score": "ICL score (nats)", "prefix_matching": "prefix-matching score", "acc": "accuracy",
    "acc_norm": "accuracy (length-normalised)", "perplexity": "perplexity", "bits_per_byte": "bits per byte",
    "char_accuracy": "character accuracy", "answer_nll_char": "answer NLL (nats/character)",
}
X_LABELS = {"n_params": "parameters N", "n_params_nonembed": "non-embedding parameters",
            "flops": "training compute C (FLOP)", "tokens": "training tokens D",
            "loss": "held-out LM loss (nats/token)"}
# Order of metrics within a task: the discontinuous one first, then its continuous companions (the mirage view).
UNIT_METRICS = {m for m, spec in METRICS.items() if spec.lower_bound == 0.0 and spec.upper_bound == 1.0}
# ----------------------------------------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def style():
    """The house style for the duration of a block (rc_context: no global change)."""
    with matplotlib.rc_context(STYLE):
        yield


def new_figure(width: float, height: float) -> Figure:
    """A Figure on an Agg canvas, constrained layout, without pyplot's global figure registry."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, stem, *, formats=("png", "svg")) -> list[Path]:
    """Write `stem.png` and `stem.svg`; the files carry no date or software stamp, so reruns give the same bytes."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    engine = fig.get_layout_engine()
    try:
        with style():
            for i, fmt in enumerate(formats):
                path = stem.with_suffix("." + fmt)
                # written beside, then renamed over the name: a kill leaves the old file or the new one, never half
                # of one, and a link at that name is replaced, not followed to a file outside the folder
                tmp = path.with_name(f".{path.name}.tmp")
                meta = {"Software": None} if fmt == "png" else {"Date": None, "Creator": None} if fmt == "svg" else {}
                try:
                    fig.savefig(tmp, format=fmt, dpi=DPI, metadata=meta)
                    if fmt == "png":
                        _palette_png(tmp)
                    os.replace(tmp, path)
                except OSError as e:  # a full disk: say which file, and leave the previous one as it was
                    tmp.unlink(missing_ok=True)
                    raise OSError(f"could not write {path}: {e.strerror or e}; the previous file is intact") from e
                out.append(path)
                if i == 0 and engine is not None:
                    # the layout is solved; keep it for the other formats instead of solving it again (the slow part)
                    fig.set_layout_engine("none")
    finally:
        if engine is not None:
            fig.set_layout_engine(engine)
    return out


def _palette_png(path: Path) -> None:
    """Rewrite a PNG with a 256-colour palette: line art loses nothing visible and the file shrinks about 3x,
    which keeps a report with every figure embedded small enough to mail."""
    try:
        from PIL import Image
    except ImportError:  # Pillow comes with matplotlib; without it the full-colour PNG stays
        return
    with Image.open(path) as im:
        q = im.convert("RGB").quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    q.save(path, format="PNG", compress_level=9)


def safe_text(s) -> str:
    """Text from data, made literal for matplotlib: a `$` would otherwise start mathtext (and can fail to parse)."""
    s = str(s)
    s = s.replace("\\", "\\\\") if "$" in s else s
    return s.replace("$", r"\$")


def short(s, n: int = 40) -> str:
    """A label from data, shortened to fit a panel title."""
    s = " ".join(str(s).split())
    return safe_text(s if len(s) <= n else s[: n - 1] + "\u2026")


def metric_label(metric: str, *, vertical: bool = True) -> str:
    """Axis label with unit and the direction of improvement (an arrow that points the better way once the label
    is rotated onto a vertical axis, where a right arrow reads as up)."""
    label = METRIC_LABELS.get(metric, safe_text(metric))
    spec = METRICS.get(metric)
    if spec is None:
        return label
    if vertical:
        return label + ("  \u2192" if spec.higher_is_better else "  \u2190")
    return label + ("  \u2191" if spec.higher_is_better else "  \u2193")


def higher_is_better(metric: str) -> bool:
    spec = METRICS.get(metric)
    return True if spec is None else spec.higher_is_better


def size_colors(n_params) -> dict:
    """Model size -> colour, sequential in log parameters (viridis, see SIZE_CMAP_RANGE)."""
    vals = sorted({int(v) for v in pd.Series(n_params).dropna()})
    cmap = colormaps[SIZE_CMAP]
    lo_c, hi_c = SIZE_CMAP_RANGE
    if len(vals) <= 1:
        return {v: cmap((lo_c + hi_c) / 2) for v in vals}
    logs = np.log10(vals)
    t = lo_c + (hi_c - lo_c) * (logs - logs[0]) / (logs[-1] - logs[0])
    return {v: cmap(float(ti)) for v, ti in zip(vals, t)}


def size_legend_handles(size_df: pd.DataFrame, colors: dict) -> list:
    return [Line2D([], [], color=colors[int(r.n_params)], marker="o", lw=1.5,
                   label=f"{short(r.model, 18)} ({fmt_count(r.n_params)})") for r in size_df.itertuples()]


def figure_legend(fig: Figure, handles: list, *, title: str | None = None) -> None:
    """A legend under the figure, with as many columns as fit its width (about 1.7 inches per entry)."""
    width = fig.get_figwidth()
    ncols = max(1, min(len(handles), int(width // 1.7)))
    fig.legend(handles=handles, loc="outside lower center", ncols=ncols, title=title)


def _plain_log_y(ax) -> None:
    """A log y-axis over a narrow range (losses): label the minor ticks in plain numbers so the axis reads."""
    ax.set_yscale("log")
    lo, hi = ax.get_ylim()
    if hi / max(lo, 1e-12) < 30:
        ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 1.5, 2, 3, 4, 5, 6, 7, 8)))
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())


def tidy_log_axes(fig: Figure) -> None:
    """Readable ticks on every log x-axis: over less than two decades, label 1, 2 and 5 times each power of ten as
    counts (600, 1k, 2k); over more, label the powers of ten only. Minor ticks stay, unlabelled (matplotlib would
    otherwise label them over a short range, and the labels overrun each other)."""
    for ax in fig.axes:
        if not ax.axison or ax.get_xscale() != "log":
            continue
        lo, hi = sorted(ax.get_xlim())
        if lo <= 0 or hi <= 0:
            continue
        if np.log10(hi / lo) < 2:
            subs = (1.0, 2.0, 5.0)
            decades = 10.0 ** np.arange(np.floor(np.log10(lo)), np.ceil(np.log10(hi)) + 1)
            if sum(lo <= d * k <= hi for d in decades for k in subs) < 3:
                # a narrow range: a few round values, evenly spaced in x (as a linear axis would place them)
                ax.xaxis.set_major_locator(ticker.MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10]))
            else:
                ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=subs))
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: fmt_count(v)))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())


def _note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color=OKABE_ITO["grey"],
            fontsize=8, wrap=True)


def _fit_curve(fit, xgrid: np.ndarray):
    """(y, lo, hi) of a fitted law over xgrid; lo/hi are None where the fit offers no prediction interval.

    Accepts a FitResult from `analysis.fit` (its `predict`, and a prediction band where it provides one) or a
    callable. The band, when drawn, is the fit's own (bootstrap) interval: nothing is refitted here.
    """
    if fit is None:
        return None
    try:
        if callable(fit) and not hasattr(fit, "predict"):
            return np.asarray(fit(xgrid), float), None, None
        y = np.asarray(fit.predict(xgrid), float)
    except Exception:  # a fit that cannot predict on this grid is not drawn
        return None
    lo = hi = None
    f = getattr(fit, "predict_interval", None)
    if callable(f):
        # the band of the fitted curve itself (bootstrap over the fit's resamples), not of a new measurement
        for kwargs in ({"kind": "confidence"}, {}):
            try:
                band = f(xgrid, **kwargs)
                lo, hi = np.asarray(band[0], float), np.asarray(band[1], float)
                break
            except TypeError:
                continue
            except Exception:  # a fit without a bootstrap has no band: draw the curve alone
                break
    return y, lo, hi


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


# ------------------------------------------------------------------------------------------------------------ scaling
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
            _plain_log_y(ax)
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
    curve = _fit_curve(fit, grid)
    if curve is None:
        return
    y, lo, hi = curve
    ax.plot(grid, y, color=FIT_COLOR, lw=1.6, zorder=5)
    handles.append(Line2D([], [], color=FIT_COLOR, lw=1.6, label=label or "fitted law"))
    if lo is not None and hi is not None:
        ax.fill_between(grid, lo, hi, color=FIT_COLOR, alpha=0.18, lw=0, zorder=2)
        handles.append(Patch(color=FIT_COLOR, alpha=0.18, label="95% band"))


# ---------------------------------------------------------------------------------------------- capability vs scale
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
        _note(ax, "no completed run measured this")
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
    drawn = _fit_curve(fitted, grid) if fitted is not None else None
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


# ------------------------------------------------------------------------------------------------- training curves
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
                _plain_log_y(ax)
            elif metric in UNIT_METRICS:
                ax.set_ylim(-0.04, 1.04)
            if sub.empty:
                _note(ax, "no measured checkpoint")
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


# ---------------------------------------------------------------------------------------------------- views
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
                _note(ax, "no checkpoint with both values")
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


# --------------------------------------------------------------------------------------------- heatmap and family
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


