"""The house style of the sweep's figures (`analysis.plots`) and what every kind of figure shares: the palette,
axis labels with units and the direction of improvement, model-size colours, legends, log-axis ticks, fitted curves
with their bands, and writing a figure as PNG and SVG that carry no date or software stamp (reruns give the same
bytes).
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib import colormaps, ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from analysis.fmt import count as fmt_count
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


def plain_log_y(ax) -> None:
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


def panel_note(ax, text: str) -> None:
    """A grey note in the middle of a panel that has nothing to draw."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color=OKABE_ITO["grey"],
            fontsize=8, wrap=True)


def fit_curve(fit, xgrid: np.ndarray):
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
