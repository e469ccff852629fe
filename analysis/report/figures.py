"""The report's figures, drawn with `analysis.plots` into `plots/` (PNG and SVG), each with its caption."""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import forecast, plots, tables
from analysis.report.document import FigureFile
from analysis.report.inputs import Sweep, compute_optimal_curve
from analysis.resolution import resolution_points


# ------------------------------------------------------------------------------------------------------ figures
def _figure(key: str, title: str, caption: str, plots_dir: Path, make) -> FigureFile:
    """Draw one figure and save it as PNG and SVG; a figure that cannot be drawn is reported with its reason."""
    ff = FigureFile(key, title, caption)
    try:
        fig = make()
    except Exception as e:  # the report's one broad catch: a figure that fails costs that figure, not the report;
        # a ValueError is a figure the data do not support (its message says why), anything else is warned as a bug
        ff.error = f"{type(e).__name__}: {e}" if not isinstance(e, ValueError) else str(e)
        if not isinstance(e, ValueError):
            warnings.warn(f"figure {key!r} failed: {ff.error}", stacklevel=2)
        return ff
    png, svg = plots.save_figure(fig, plots_dir / key)
    ff.png, ff.svg = png, svg
    ff.size = _png_size(png)
    return ff


def _png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG, from its IHDR chunk (bytes 16-24; PNG specification, section 11.2.2)."""
    with open(path, "rb") as f:
        head = f.read(24)
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def fig_key(prefix: str, name: str) -> str:
    """A file stem for a figure about `name` (a task): readable slug plus a short hash, so two names never
    collide and no name can reach outside plots/."""
    digest = hashlib.sha1(str(name).encode("utf-8", "surrogatepass")).hexdigest()[:6]
    return f"{prefix}_{tables.slug(name, 30)}_{digest}"


def make_figures(sw: Sweep, plots_dir: Path, keep=None) -> dict[str, FigureFile]:
    """Draw and save the report's figures; `keep(key)`: which to draw (None: all of them)."""
    plots_dir.mkdir(parents=True, exist_ok=True)
    figs: dict[str, FigureFile] = {}

    def add(key, title, caption, folder, make):
        return _figure(key, title, caption, folder, make) if keep is None or keep(key) else None
    res, runs, flags = sw.results, sw.runs, sw.flags

    def need_results():
        if res is None:
            raise ValueError(f"results.parquet {sw.notes.get('results.parquet', 'not available')}")
        return res

    fit_labels = {}
    for x, fit in sw.scaling_fits.items():
        if hasattr(fit, "params") and "alpha" in getattr(fit, "params", {}):
            lo, hi = getattr(fit, "ci", {}).get("alpha", (np.nan, np.nan))
            var = "N" if x == "n_params" else "C"
            fit_labels[x] = (f"$E + A {var}^{{-\\alpha}}$, $\\alpha$ = {plots.fmt_num(fit.params['alpha'], 3)}"
                             + (f" [{plots.fmt_num(lo, 2)}, {plots.fmt_num(hi, 2)}]" if np.isfinite(lo) else ""))
    optimal = compute_optimal_curve(sw.chinchilla, res["flops"]) if res is not None and sw.chinchilla else None
    figs["scaling"] = add(
        "scaling", "Scaling of held-out loss",
        "(a) Final held-out LM loss of every completed run against parameters (faint: seeds; filled: mean with 95% "
        "interval) and the fitted power law with its 95% bootstrap band. (b) The loss of every run along training "
        "against training compute, with the empirical frontier (the lowest loss reached at each compute)"
        + (", the fitted law of final loss against compute" if "flops" in sw.scaling_fits else "")
        + (" and the compute-optimal frontier of the Chinchilla fit" if optimal is not None else "") + ".",
        plots_dir, lambda: plots.plot_scaling(need_results(), runs, fits=sw.scaling_fits, optimal=optimal,
                                              fit_labels=fit_labels))
    axis = flags_axis(sw)
    where = ("at the final checkpoint against parameters" if axis == "n_params" else
             f"at every checkpoint against {plots.X_LABELS.get(axis, axis)} (the axis the flags were judged along)"
             if axis in plots.TRAINING_AXES else f"at the final checkpoint against {plots.X_LABELS.get(axis, axis)}")
    figs["capability"] = add(
        "capability", "Capability against scale, every metric beside exact match",
        f"Each task's metrics {where}: faint points are seeds, filled points the "
        "mean over seeds with a 95% interval, the dashed curve a fitted law where there is one; a flagged jump is "
        "shaded over the 95% interval of its location and labelled with the 10%-90% width W of its rise in decades. "
        "The right column gives each metric's verdict and the numbers behind it. A jump in exact match with smooth "
        "continuous metrics is the signature of a metric artefact (Schaeffer et al. 2023).",
        plots_dir, lambda: plots.plot_capability(need_results(), runs=runs, flags=_flags_at(flags, axis),
                                                 fits=sw.fits, x=axis))
    for task in emergent_tasks(sw):
        x = _flag_x(sw, task)
        figs[fig_key("capability", task)] = add(
            fig_key("capability", task), f"{task} against scale",
            f"Every metric of this task against {plots.X_LABELS.get(x, x)} at the final checkpoint (faint: seeds; "
            "filled: mean with 95% interval), the flagged jump shaded over the 95% interval of its location and "
            "labelled with the width W of its rise, and the verdicts with their evidence on the right.",
            plots_dir, lambda task=task, x=x: plots.plot_capability(
                need_results(), runs=runs, flags=_flags_at(flags, x), fits=sw.fits, tasks=[task], x=x))
    heat_metric = tables.heatmap_metric(res, runs=runs) if res is not None else "exact_match"
    heat_label = plots.METRIC_LABELS.get(heat_metric, heat_metric)
    heat_label = heat_label[:1].upper() + heat_label[1:]
    figs["heatmap"] = add(
        "heatmap", f"{heat_label} by task and size",
        f"{heat_label} at the final checkpoint, mean over seeds, for every task (rows) and model size (columns).",
        plots_dir, lambda: plots.plot_heatmap(need_results(), heat_metric, runs=runs))
    figs["training"] = add(
        "training", "Training curves",
        "Held-out LM loss and each task's metrics against training tokens (log axis), one line per run, coloured by "
        "size. Dotted lines ending in a cross are runs that failed or diverged. Triangles mark phase changes "
        "flagged within a run (transitions view), with the bar over their interval.",
        plots_dir, lambda: plots.plot_training(need_results(), runs=runs, transitions=sw.views.get("transitions")))
    if sw.views.get("loss") is not None:
        figs["loss_threshold"] = add(
            "loss_threshold", "Capability against held-out loss",
            "Every checkpoint of every size, its metric against its held-out LM loss (high loss on the left), with "
            "the loss threshold \u03b7 and its 95% interval where one was found (Du et al. 2024).",
            plots_dir, lambda: plots.plot_loss_threshold(need_results(), loss_panels(sw.views["loss"]), runs=runs))
    if sw.views.get("backtest") is not None:
        figs["backtest"] = add(
            "backtest", "Backtest: predicting the largest sizes from the smaller ones",
            "Measured means over seeds (black) and, for each held-out size, the prediction of the law fitted on the "
            "smaller sizes with its 95% interval (vermillion).",
            plots_dir, lambda: plots.plot_backtest(sw.views["backtest"], res, runs=runs))
    fb = sw.forecast_backtest
    if fb is not None and {"method", "predicted", "actual", "n_params"} <= set(fb.columns) and len(fb):
        best = forecast.choose_method(fb)
        shown = fb[fb["method"].astype(str) == best].rename(columns={"method": "law"})
        figs["forecast"] = add(
            "forecast", "Forecast backtest: each size predicted from the smaller ones",
            f"Rolling-origin backtest of `emergence forecast` ({best}, the method with the smallest error): each "
            "run's measured value (black) and its prediction from the runs of every smaller size, with the 95% "
            "prediction interval of the bootstrap alone (vermillion; the text above gives how often the intervals "
            "widened by the earlier origins held).",
            plots_dir, lambda: plots.plot_backtest(shown, None))
    if sw.views.get("resolution") is not None:
        figs["resolution"] = add(
            "resolution", "Infinite-resolution view",
            "log(\u2212log P) of the mean answer probability P at the final checkpoint against parameters, per task, "
            "with the least-squares line of the task scaling law (Hu et al. 2023). A straight line is predictable; a "
            "downward bend is accelerated emergence.",
            plots_dir, lambda: plots.plot_resolution(_resolution_points(sw), sw.views["resolution"]))
    if runs is not None:
        figs["family"] = add("family", "Model family", "The model family of this sweep.", plots_dir,
                                 lambda: plots.plot_family_table(runs))
    return {k: v for k, v in figs.items() if v is not None}


IN_SECOND_PROCESS = frozenset({"training", "heatmap", "family", "resolution"})  # about half the drawing time


def _draw_from_files(folder: str, keys: frozenset) -> dict[str, FigureFile]:
    """The figures `keys` of the sweep in `folder`, drawn in a second process from the files alone."""
    from analysis.report.inputs import load_sweep

    return make_figures(load_sweep(folder), Path(folder) / "plots", keep=keys.__contains__)


def draw_figures(sw: Sweep, plots_dir: Path, workers: int = 1) -> dict[str, FigureFile]:
    """`make_figures`, with `workers` 2 drawing part of them in a second process (spawned: matplotlib and the
    tables start clean) from the sweep's files, beside this one. Each figure is drawn by the same code from the same
    tables either way, so the files are the same bytes."""
    if workers < 2:
        return make_figures(sw, plots_dir)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from concurrent.futures.process import BrokenProcessPool

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        other = pool.submit(_draw_from_files, str(sw.folder), IN_SECOND_PROCESS)
        figs = make_figures(sw, plots_dir, keep=lambda k: k not in IN_SECOND_PROCESS)
        try:
            figs.update(other.result())
        except BrokenProcessPool:  # no second process here (a main module spawn cannot import): draw them here
            figs.update(make_figures(sw, plots_dir, keep=IN_SECOND_PROCESS.__contains__))
    return figs


def _resolution_points(sw: Sweep) -> pd.DataFrame:
    if sw.instances is None:
        raise ValueError(f"instances.parquet {sw.notes.get('instances.parquet', 'not available')}: the per-example "
                         "probabilities the view needs")

    return resolution_points(sw.instances, runs=sw.runs if "n_params" not in sw.instances.columns else None)


def loss_panels(loss: pd.DataFrame, n: int = 6) -> pd.DataFrame:
    """The loss-view rows worth a panel: emergent ones, then exact match, then the rest."""
    if "verdict" not in loss.columns:
        return loss.head(n)
    order = (~loss["verdict"].astype(str).eq("emergent")).astype(int) * 2 + \
        (~loss["metric"].astype(str).eq("exact_match")).astype(int)
    return loss.assign(_o=order).sort_values("_o", kind="stable").drop(columns="_o").head(n)


def flags_axis(sw: Sweep) -> str:
    """The axis the capability figure is drawn against: the one the flags were judged along where they all share
    one the results table has (an `emergence analyze --x tokens` of one model's checkpoints), else parameters."""
    f, res = sw.flags, sw.results
    if f is None or "x" not in f.columns or res is None or not len(f):
        return "n_params"
    axes = set(f["x"].dropna().astype(str))
    if len(axes) == 1 and (x := axes.pop()) in res.columns and x in ("n_params", *plots.TRAINING_AXES):
        return x
    return "n_params"


def _flags_at(flags: pd.DataFrame | None, x: str) -> pd.DataFrame | None:
    if flags is None or "x" not in flags.columns:
        return flags
    return flags[flags["x"].astype(str) == x]


def emergent_flags(sw: Sweep) -> pd.DataFrame:
    f = sw.flags
    if f is None or not {"task", "metric", "verdict"} <= set(f.columns):
        return pd.DataFrame()
    return f[f["verdict"].astype(str) == "emergent"]


def emergent_tasks(sw: Sweep) -> list[str]:
    return list(dict.fromkeys(emergent_flags(sw)["task"].astype(str))) if len(emergent_flags(sw)) else []


def _flag_x(sw: Sweep, task: str) -> str:
    e = emergent_flags(sw)
    xs = e.loc[e["task"].astype(str) == task, "x"].astype(str) if "x" in e.columns else pd.Series(dtype=str)
    for x in xs:
        if sw.results is not None and x in sw.results.columns:
            return x
    return "n_params"
