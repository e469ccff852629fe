"""The report of a sweep: figures in `plots/` (PNG and SVG), one self-contained `report.html`, and `report.md`.

`write_report(sweep_dir)` reads what the sweep and its analysis wrote (results.parquet, runs.parquet, fits.csv,
flags.csv, the views' CSVs, samples.parquet, instances, meta.json), draws the figures with `analysis.plots`, and
writes one document in two renderings. A file that is missing or unreadable is said so in its section; nothing is
invented to fill the gap.

Safety: the document is built as a list of blocks whose text is plain strings, and each renderer escapes every
string it writes (HTML: `html.escape`; Markdown: backslash escapes, entities for `<`, `>` and `&`, code spans and
fences longer than any backtick run inside). No string from data or config is ever emitted as markup, so a task
named `<script>` is shown, not run. The HTML also carries a Content-Security-Policy that allows no script and no
network at all: images come from data URIs, styles are inline.
"""
from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import jumps, plots

VIEW_FILES = {"transitions": "transitions.csv", "loss": "loss.csv", "resolution": "resolution.csv",
              "backtest": "backtest.csv"}
STATUS_DONE = "done"
SAMPLE_EXAMPLES = 4  # held-out prompts shown per emergent task
SCALING_XS = ("n_params", "flops")
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


# ------------------------------------------------------------------------------------------------- document model
@dataclass
class Code:
    text: str


@dataclass
class Strong:
    text: str


@dataclass
class Heading:
    level: int
    text: str
    anchor: str = ""


@dataclass
class Para:
    parts: list  # str | Code | Strong


@dataclass
class Note:
    text: str


@dataclass
class Pre:
    text: str


@dataclass
class Bullets:
    items: list  # each a list of parts


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    caption: str = ""
    numeric: set = field(default_factory=set)  # column indices aligned right


@dataclass
class FigureRef:
    key: str


@dataclass
class FigureFile:
    key: str
    title: str
    caption: str
    png: Path | None = None
    svg: Path | None = None
    error: str = ""
    size: tuple[int, int] = (0, 0)


# ------------------------------------------------------------------------------------------------------ loading
@dataclass
class Sweep:
    folder: Path
    results: pd.DataFrame | None = None
    runs: pd.DataFrame | None = None
    fits: pd.DataFrame | None = None
    flags: pd.DataFrame | None = None
    views: dict = field(default_factory=dict)
    samples: pd.DataFrame | None = None
    instances: pd.DataFrame | None = None
    meta: dict = field(default_factory=dict)
    notes: dict = field(default_factory=dict)  # file -> why it is not used
    inputs: list = field(default_factory=list)  # files read, for the reproducibility section
    scaling_fits: dict = field(default_factory=dict)  # x -> FitResult (or callable)
    scaling_notes: list = field(default_factory=list)
    chinchilla: Any = None
    stability: pd.DataFrame | None = None
    budget: pd.DataFrame | None = None


def _read(sw: Sweep, name: str, reader):
    path = sw.folder / name
    if not path.exists():
        sw.notes[name] = "not found"
        return None
    try:
        out = reader(path)
    except Exception as e:  # an unreadable file is reported in its section, not fatal
        sw.notes[name] = f"could not be read ({type(e).__name__}: {e})"
        return None
    sw.inputs.append(path)
    return out


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, keep_default_na=True)
    except pd.errors.EmptyDataError:  # a view with nothing to say writes an empty file
        return pd.DataFrame()


def load_sweep(folder, analyses: dict | None = None) -> Sweep:
    """Everything the report shows, read from a sweep folder (and `analyses`, which take precedence)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder; give a sweep folder such as results/cpu_demo")
    known = ["results.parquet", "runs.parquet", "flags.csv", "fits.csv"]
    if analyses is None and not any((folder / k).exists() for k in known):
        raise ValueError(f"{folder} holds none of {', '.join(known)}: it is not a sweep folder (run `emergence "
                         "sweep` or `emergence analyze` first, or give the folder they wrote)")
    analyses = dict(analyses or {})
    sw = Sweep(folder)
    from analysis import schema

    res = _read(sw, "results.parquet", pd.read_parquet)
    if res is not None:
        try:
            sw.results = schema.validate(res, where="results.parquet")
        except ValueError as e:
            sw.notes["results.parquet"] = f"is not a valid results table: {e}"
    sw.runs = _read(sw, "runs.parquet", pd.read_parquet)
    sw.fits = _frame(analyses.get("fits"), "fits") if analyses.get("fits") is not None else _read(sw, "fits.csv",
                                                                                                 _read_csv)
    sw.flags = (_frame(analyses.get("flags"), "flags") if analyses.get("flags") is not None
                else _read(sw, "flags.csv", _read_csv))
    for key, name in VIEW_FILES.items():
        given = analyses.get(key)
        view = _frame(given, key) if given is not None else _read(sw, name, _read_csv)
        if view is not None and view.empty:  # a view that found nothing to compute (too few sizes, no instances)
            sw.notes[name] = "has no rows (the view had nothing it could compute on this sweep)"
            view = None
        sw.views[key] = view
    if (folder / "stability.csv").exists():  # written by `emergence stability`, on demand
        sw.stability = _read(sw, "stability.csv", _read_csv)
    if (folder / "budget.csv").exists():  # written by `emergence budget`, on demand
        sw.budget = _read(sw, "budget.csv", _read_csv)
    sw.samples = _read(sw, "samples.parquet", pd.read_parquet)
    meta = _read(sw, "meta.json", lambda p: json.loads(p.read_text()))
    sw.meta = meta if isinstance(meta, dict) else {}
    if meta is not None and not isinstance(meta, dict):
        sw.notes["meta.json"] = "is not a JSON object"
    sw.instances = _load_instances(sw)
    if sw.fits is not None:
        sw.fits = fits_long(sw.fits)
    _scaling_fits(sw, analyses)
    return sw


def _frame(obj, what: str) -> pd.DataFrame:
    if not isinstance(obj, pd.DataFrame):
        raise ValueError(f"analyses[{what!r}] must be a pandas DataFrame, got {type(obj).__name__}")
    return obj


def _load_instances(sw: Sweep) -> pd.DataFrame | None:
    """Per-example answer log-probabilities: the sweep's instances.parquet, else each run's."""
    path = sw.folder / "instances.parquet"
    paths = [path] if path.exists() else sorted(sw.folder.glob("runs/*/instances.parquet"))
    if not paths:
        sw.notes["instances.parquet"] = "not found"
        return None
    try:
        df = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    except Exception as e:
        sw.notes["instances.parquet"] = f"could not be read ({type(e).__name__}: {e})"
        return None
    sw.inputs += paths if len(paths) == 1 else [sw.folder / "runs" / "*" / "instances.parquet"]
    return df


def fits_long(fits: pd.DataFrame) -> pd.DataFrame:
    """fits.csv in long form (one row per law parameter: param, value, stderr, lo, hi), from either layout.

    The wide layout (`FitResult.to_row`: a column per parameter, with `<p>_stderr`, `<p>_ci_low`, `<p>_ci_high`)
    is unfolded; the long one is returned with its interval columns named lo and hi.
    """
    f = fits.copy()
    if {"param", "value"} <= set(f.columns):
        return f.rename(columns={"ci_low": "lo", "ci_high": "hi"})
    if "law" not in f.columns:
        return f
    keep = [c for c in ("task", "metric", "x", "y", "law", "loss", "n", "aic", "aicc", "bic", "rmse", "n_boot")
            if c in f.columns]
    rows = []
    for _, r in f.iterrows():
        names = [c[: -len("_stderr")] for c in f.columns if c.endswith("_stderr") and c[: -len("_stderr")] in f]
        for p in names:
            if pd.isna(r.get(p)):
                continue
            rows.append({**{k: r[k] for k in keep}, "param": p, "value": r[p], "stderr": r.get(f"{p}_stderr"),
                         "lo": r.get(f"{p}_ci_low"), "hi": r.get(f"{p}_ci_high")})
    return pd.DataFrame(rows)


def _lm_loss_fits(fits: pd.DataFrame | None) -> pd.DataFrame:
    if fits is None or "law" not in fits.columns:
        return pd.DataFrame()
    f = fits
    if "task" in f.columns:
        f = f[f["task"].astype(str).eq("lm")]
    if "metric" in f.columns:
        f = f[f["metric"].astype(str).eq("loss")]
    return f


def _scaling_fits(sw: Sweep, analyses: dict) -> None:
    """Fitted laws of final held-out loss against N and C (with bootstrap bands), and a Chinchilla fit if any.

    Taken from `analyses` (FitResults) when given; otherwise fitted here with `analysis.fit.fit_law` (law
    "power", y = E + A x^-alpha; Kaplan et al. 2020), falling back to the parameters in fits.csv (curve only, no
    band) when fitting is not possible.
    """
    given = [v for v in analyses.values() if hasattr(v, "law") and hasattr(v, "predict")]
    for v in analyses.values():
        if isinstance(v, dict):
            given += [u for u in v.values() if hasattr(u, "law") and hasattr(u, "predict")]
    for fit in given:
        if not _predicts(fit):
            sw.scaling_notes.append(f"a given {getattr(fit, 'law', '?')} fit cannot predict; it is not drawn")
            continue
        if fit.law == "chinchilla":
            sw.chinchilla = fit
        elif isinstance(getattr(fit, "x", None), str) and fit.x in SCALING_XS:
            sw.scaling_fits.setdefault(fit.x, fit)
    table = _final_loss_table(sw)
    for x in SCALING_XS:
        if x in sw.scaling_fits:
            continue
        fit, why = _fit_power(table, x)
        if fit is not None and not _predicts(fit):
            fit, why = None, "the fitted power law cannot predict (analysis.fit raised an error)"
        if fit is not None:
            sw.scaling_fits[x] = fit
            continue
        rows = _lm_loss_fits(sw.fits)
        rows = rows[(rows["law"].astype(str) == "power") & (rows["x"].astype(str) == x)] if len(rows) else rows
        curve = plots._law_from_rows(rows) if len(rows) else None
        if curve is not None:
            sw.scaling_fits[x] = curve
            sw.scaling_notes.append(f"loss against {x}: {why}; the curve is drawn from fits.csv, without a band")
        else:
            sw.scaling_notes.append(f"loss against {x}: {why}; points only")
    if sw.chinchilla is None:
        sw.chinchilla = _chinchilla_from_csv(sw.fits)


def _predicts(fit) -> bool:
    """Whether a fit evaluates on a test grid (a chinchilla fit takes (N, D) pairs)."""
    try:
        x = np.array([[1e6, 1e7], [1e8, 1e9]]) if getattr(fit, "law", "") == "chinchilla" else np.array([1e6, 1e7])
        return bool(np.all(np.isfinite(np.asarray(fit.predict(x), float))))
    except Exception:
        return False


def _final_loss_table(sw: Sweep) -> pd.DataFrame:
    """One row per completed run: n_params, flops, seed and its final held-out loss.

    The probe's held-out LM loss at the run's last checkpoint (the points the scaling figure draws, and what
    `emergence analyze` fits), else runs.parquet's final_val_loss."""
    if sw.results is not None:
        fin = plots.final_values(sw.results, "lm", "loss", runs=sw.runs)
        if len(fin):
            return fin[["run_id", "seed", "n_params", "flops"]].assign(final_val_loss=fin["value"].astype(float))
    if sw.runs is not None and {"run_id", "status", "final_val_loss", "n_params"} <= set(sw.runs.columns):
        r = sw.runs[sw.runs["status"].astype(str).eq(STATUS_DONE)]
        r = r[pd.to_numeric(r["final_val_loss"], errors="coerce").notna()]
        if len(r):
            cols = [c for c in ("run_id", "seed", "n_params", "flops") if c in r.columns]
            return r[cols].assign(final_val_loss=pd.to_numeric(r["final_val_loss"]).astype(float))
    return pd.DataFrame(columns=["run_id", "seed", "n_params", "flops", "final_val_loss"])


def _fit_power(table: pd.DataFrame, x: str):
    """(FitResult, "") or (None, why)."""
    if table.empty or x not in table.columns:
        return None, "no completed run with a final held-out loss"
    try:
        from analysis.fit import fit_law
    except ImportError as e:
        return None, f"analysis.fit is not available ({e})"
    t = table.copy()
    t[x] = pd.to_numeric(t[x], errors="coerce").astype(float)
    if "seed" in t.columns:
        t["seed"] = pd.to_numeric(t["seed"], errors="coerce")
    try:
        return fit_law(t, "power", x, "final_val_loss", n_boot=200, seed=0), ""
    except Exception as e:  # too few points, or a fit that does not converge: say so, draw the points
        return None, f"no power law fitted ({type(e).__name__}: {e})"


def _chinchilla_from_csv(fits: pd.DataFrame | None):
    """A FitResult rebuilt from fits.csv's Chinchilla parameters (E, A, B, alpha, beta), or None."""
    rows = _lm_loss_fits(fits)
    if rows.empty:
        return None
    rows = rows[rows["law"].astype(str) == "chinchilla"]
    params = {str(p): float(v) for p, v in zip(rows.get("param", []), rows.get("value", [])) if pd.notna(v)}
    if not {"E", "A", "B", "alpha", "beta"} <= set(params):
        return None
    try:
        from analysis.fit import FitResult
    except ImportError:
        return None
    nan = float("nan")
    return FitResult(law="chinchilla", params=params, stderr={}, ci={}, aic=nan, aicc=nan, bic=nan, rmse=nan, n=0,
                     x=("n_params", "tokens"), y="loss", loss="huber")


def compute_optimal_curve(fit, flops: pd.Series) -> pd.DataFrame | None:
    """Loss along the compute-optimal frontier of a Chinchilla fit: L(N*(C), D*(C)) over the sweep's compute
    range, with N*, D* from `analysis.fit.compute_optimal` (Hoffmann et al. 2022, eq. 4)."""
    if fit is None:
        return None
    f = pd.to_numeric(flops, errors="coerce")
    f = f[f > 0]
    if f.empty:
        return None
    try:
        from analysis.fit import compute_optimal
        C = np.logspace(np.log10(f.min()), np.log10(f.max()), 60)
        N, D = compute_optimal(fit, C)
        L = fit.predict(np.stack([N, D]))
    except Exception as e:
        warnings.warn(f"compute-optimal frontier not drawn: {e}", stacklevel=2)
        return None
    return pd.DataFrame({"flops": C, "n_params": N, "tokens": D, "loss": L})


# ------------------------------------------------------------------------------------------------------ figures
def _figure(key: str, title: str, caption: str, plots_dir: Path, make) -> FigureFile:
    """Draw one figure and save it as PNG and SVG; a figure that cannot be drawn is reported with its reason."""
    ff = FigureFile(key, title, caption)
    try:
        fig = make()
    except Exception as e:
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


def _fig_key(prefix: str, name: str) -> str:
    """A file stem for a figure about `name` (a task): readable slug plus a short hash, so two names never
    collide and no name can reach outside plots/."""
    digest = hashlib.sha1(str(name).encode("utf-8", "surrogatepass")).hexdigest()[:6]
    return f"{prefix}_{plots.slug(name, 30)}_{digest}"


def make_figures(sw: Sweep, plots_dir: Path) -> dict[str, FigureFile]:
    plots_dir.mkdir(parents=True, exist_ok=True)
    figs: dict[str, FigureFile] = {}
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
    curves = capability_curves(sw)
    figs["scaling"] = _figure(
        "scaling", "Scaling of held-out loss",
        "(a) Final held-out LM loss of every completed run against parameters (faint: seeds; filled: mean with 95% "
        "interval) and the fitted power law with its 95% bootstrap band. (b) The loss of every run along training "
        "against training compute, with the empirical frontier (the lowest loss reached at each compute)"
        + (", the fitted law of final loss against compute" if "flops" in sw.scaling_fits else "")
        + (" and the compute-optimal frontier of the Chinchilla fit" if optimal is not None else "") + ".",
        plots_dir, lambda: plots.plot_scaling(need_results(), runs, fits=sw.scaling_fits, optimal=optimal,
                                              fit_labels=fit_labels))
    figs["capability"] = _figure(
        "capability", "Capability against scale, every metric beside exact match",
        "Each task's metrics at the final checkpoint against parameters: faint points are seeds, filled points the "
        "mean over seeds with a 95% interval, the dashed curve a fitted law where there is one; a flagged jump is "
        "shaded over the 95% interval of its location and labelled with the 10%-90% width W of its rise in decades. "
        "The right column gives each metric's verdict and the numbers behind it. A jump in exact match with smooth "
        "continuous metrics is the signature of a metric artefact (Schaeffer et al. 2023).",
        plots_dir, lambda: plots.plot_capability(need_results(), runs=runs, flags=_flags_at(flags, "n_params"),
                                                 fits=sw.fits, curves=curves))
    for task in _emergent_tasks(sw):
        x = _flag_x(sw, task)
        figs[_fig_key("capability", task)] = _figure(
            _fig_key("capability", task), f"{task} against scale",
            f"Every metric of this task against {plots.X_LABELS.get(x, x)} at the final checkpoint (faint: seeds; "
            "filled: mean with 95% interval), the flagged jump shaded over the 95% interval of its location and "
            "labelled with the width W of its rise, and the verdicts with their evidence on the right.",
            plots_dir, lambda task=task, x=x: plots.plot_capability(
                need_results(), runs=runs, flags=_flags_at(flags, x), fits=sw.fits, tasks=[task], x=x,
                curves=curves if x == "n_params" else capability_curves(sw, x)))
    figs["heatmap"] = _figure(
        "heatmap", "Exact match by task and size",
        "Exact match at the final checkpoint, mean over seeds, for every task (rows) and model size (columns).",
        plots_dir, lambda: plots.plot_heatmap(need_results(), runs=runs))
    figs["training"] = _figure(
        "training", "Training curves",
        "Held-out LM loss and each task's metrics against training tokens (log axis), one line per run, coloured by "
        "size. Dotted lines ending in a cross are runs that failed or diverged. Triangles mark phase changes "
        "flagged within a run (transitions view), with the bar over their interval.",
        plots_dir, lambda: plots.plot_training(need_results(), runs=runs, transitions=sw.views.get("transitions")))
    if sw.views.get("loss") is not None:
        figs["loss_threshold"] = _figure(
            "loss_threshold", "Capability against held-out loss",
            "Every checkpoint of every size, its metric against its held-out LM loss (high loss on the left), with "
            "the loss threshold \u03b7 and its 95% interval where one was found (Du et al. 2024).",
            plots_dir, lambda: plots.plot_loss_threshold(need_results(), _loss_panels(sw.views["loss"]), runs=runs))
    if sw.views.get("backtest") is not None:
        figs["backtest"] = _figure(
            "backtest", "Backtest: predicting the largest sizes from the smaller ones",
            "Measured means over seeds (black) and, for each held-out size, the prediction of the law fitted on the "
            "smaller sizes with its 95% interval (vermillion).",
            plots_dir, lambda: plots.plot_backtest(sw.views["backtest"], res, runs=runs))
    if sw.views.get("resolution") is not None:
        figs["resolution"] = _figure(
            "resolution", "Infinite-resolution view",
            "log(\u2212log P) of the mean answer probability P at the final checkpoint against parameters, per task, "
            "with the least-squares line of the task scaling law (Hu et al. 2023). A straight line is predictable; a "
            "downward bend is accelerated emergence.",
            plots_dir, lambda: plots.plot_resolution(_resolution_points(sw), sw.views["resolution"]))
    if runs is not None:
        figs["family"] = _figure("family", "Model family", "The model family of this sweep.", plots_dir,
                                 lambda: plots.plot_family_table(runs))
    return figs


def capability_curves(sw: Sweep, x: str = "n_params") -> dict:
    """The curve of each flagged (task, metric) whose flag names a law (`jump_model` for an emergent verdict,
    `smooth_model` for a smooth one; a flags table without these columns gives no curves), fitted with
    `analysis.fit.fit_law` to every completed run's final value (n_boot=0: the curve only; its evidence is in the
    flag). Skipped where fits.csv already has the task's fits, and wherever the law cannot be fitted."""
    f, res = _flags_at(sw.flags, x), sw.results
    if f is None or res is None or not {"task", "metric", "verdict"} <= set(f.columns) or x not in res.columns:
        return {}
    try:
        from analysis.fit import fit_law
    except ImportError:
        return {}
    have = set()
    if sw.fits is not None and {"task", "metric"} <= set(sw.fits.columns):
        have = set(zip(sw.fits["task"].astype(str), sw.fits["metric"].astype(str)))
    curves = {}
    for _, r in f.iterrows():
        key = (str(r["task"]), str(r["metric"]))
        column = {"emergent": "jump_model", "smooth": "smooth_model"}.get(str(r["verdict"]))
        if key in have or column is None or column not in r.index or pd.isna(r[column]):
            continue
        fin = plots.final_values(res, key[0], key[1], runs=sw.runs)
        if fin.empty:
            continue
        table = fin.assign(**{x: pd.to_numeric(fin[x], errors="coerce").astype(float)})
        try:
            fit = fit_law(table, str(r[column]), x, "value", n_boot=0)
        except Exception:  # too few sizes for the law, or an unknown law name: the panel shows the data only
            continue
        if _predicts(fit):
            curves[key] = fit
    return curves


def _resolution_points(sw: Sweep) -> pd.DataFrame:
    if sw.instances is None:
        raise ValueError(f"instances.parquet {sw.notes.get('instances.parquet', 'not available')}: the per-example "
                         "probabilities the view needs")
    from analysis.resolution import resolution_points

    return resolution_points(sw.instances, runs=sw.runs if "n_params" not in sw.instances.columns else None)


def _loss_panels(loss: pd.DataFrame, n: int = 6) -> pd.DataFrame:
    """The loss-view rows worth a panel: emergent ones, then exact match, then the rest."""
    if "verdict" not in loss.columns:
        return loss.head(n)
    order = (~loss["verdict"].astype(str).eq("emergent")).astype(int) * 2 + \
        (~loss["metric"].astype(str).eq("exact_match")).astype(int)
    return loss.assign(_o=order).sort_values("_o", kind="stable").drop(columns="_o").head(n)


def _flags_at(flags: pd.DataFrame | None, x: str) -> pd.DataFrame | None:
    if flags is None or "x" not in flags.columns:
        return flags
    return flags[flags["x"].astype(str) == x]


def _emergent(sw: Sweep) -> pd.DataFrame:
    f = sw.flags
    if f is None or not {"task", "metric", "verdict"} <= set(f.columns):
        return pd.DataFrame()
    return f[f["verdict"].astype(str) == "emergent"]


def _emergent_tasks(sw: Sweep) -> list[str]:
    return list(dict.fromkeys(_emergent(sw)["task"].astype(str))) if len(_emergent(sw)) else []


def _flag_x(sw: Sweep, task: str) -> str:
    e = _emergent(sw)
    xs = e.loc[e["task"].astype(str) == task, "x"].astype(str) if "x" in e.columns else pd.Series(dtype=str)
    for x in xs:
        if sw.results is not None and x in sw.results.columns:
            return x
    return "n_params"


# ----------------------------------------------------------------------------------------------------- sections
def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return "n/a"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        if np.isinf(v):  # breakthroughness and an unbounded interval end can be infinite: say so, not "n/a"
            return "\u221e" if v > 0 else "-\u221e"
        return plots.fmt_num(v, digits)
    return str(v)


def _num(v) -> float:
    """A cell as a float (NaN where it is missing or not a number), for the optional flag columns."""
    if isinstance(v, (bool, np.bool_)):
        return float("nan")
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _with_interval(r: pd.Series, col: str, lo: str, hi: str, fmt) -> str:
    """`value [lo, hi]`, or the value alone where the interval was not computed."""
    text = fmt(r.get(col, np.nan))
    a, b = _num(r.get(lo, np.nan)), _num(r.get(hi, np.nan))
    if not (np.isnan(a) or np.isnan(b)):
        text += f" [{fmt(a)}, {fmt(b)}]"
    return text


def _x_value(v, x: str) -> str:
    """A location on an x axis: counts as 1.8M, losses as plain numbers."""
    try:
        v = float(v)
    except (TypeError, ValueError):
        return "n/a"
    if not np.isfinite(v):
        return "n/a"
    return plots.fmt_num(v) if x == "loss" else plots.fmt_count(v)


def _missing(sw: Sweep, name: str) -> Note:
    return Note(f"{name} {sw.notes.get(name, 'is not available')}.")


def section_overview(sw: Sweep) -> list:
    blocks: list = []
    m = sw.meta
    name = sw.folder.name
    blocks.append(Heading(1, f"Sweep report: {name}"))
    facts = []
    if sw.runs is not None and "status" in sw.runs.columns:
        st = sw.runs["status"].astype(str).value_counts()
        facts.append([f"{len(sw.runs)} runs: " + ", ".join(f"{v} {k}" for k, v in st.items())])
    if sw.runs is not None and "model" in sw.runs.columns:
        n_sizes = sw.runs["model"].nunique()
        seeds = sw.runs["seed"].nunique() if "seed" in sw.runs.columns else 1
        facts.append([f"{n_sizes} model sizes x {seeds} seed(s)"])
    e = _emergent(sw)
    if sw.flags is not None and "verdict" in sw.flags.columns:
        counts = sw.flags["verdict"].astype(str).value_counts()
        facts.append([f"{len(sw.flags)} flags: " + ", ".join(f"{v} {k}" for k, v in counts.items())])
        for _, r in e.iterrows():
            x = str(r.get("x", "n_params"))
            width = (f", rising over {_with_interval(r, 'width', 'width_lo', 'width_hi', _fmt)} decades"
                     if np.isfinite(_num(r.get("width", np.nan))) else "")
            facts.append(["emergent: ", Strong(f"{r['task']} / {r['metric']}"),
                          f" at {_x_value(r.get('jump_at'), x)} ({x}){width}"])
    fit = sw.scaling_fits.get("n_params")
    if fit is not None and hasattr(fit, "params") and "alpha" in fit.params:
        lo, hi = fit.ci.get("alpha", (np.nan, np.nan))
        facts.append([f"final loss against parameters: alpha = {_fmt(fit.params['alpha'])} "
                      f"[{_fmt(lo)}, {_fmt(hi)}], E = {_fmt(fit.params['E'])} nats/token"])
    if m.get("finished"):
        facts.append([f"sweep finished {m['finished']}"])
    blocks.append(Bullets(facts) if facts else Note("No summary: neither runs.parquet nor flags.csv was readable."))
    return blocks


def section_run(sw: Sweep) -> list:
    blocks: list = [Heading(2, "What was run", "what-was-run")]
    m = sw.meta
    if m:
        if m.get("command"):
            blocks.append(Para(["Command:"]))
            blocks.append(Pre(str(m["command"])))
        if m.get("experiment"):
            blocks.append(Para(["Experiment: ", Code(str(m["experiment"])), "."]))
    else:
        blocks.append(_missing(sw, "meta.json"))
    runs = sw.runs
    if runs is None:
        blocks.append(_missing(sw, "runs.parquet"))
        return blocks
    try:
        fam = plots.family_display(runs)
        blocks.append(Table(list(fam.columns), fam.astype(str).values.tolist(), caption="The model family.",
                            numeric=set(range(1, len(fam.columns)))))
    except ValueError as e:
        blocks.append(Note(f"Family table not available: {e}"))
    budget_cols = [c for c in ("model", "budget", "max_steps", "tokens", "flops", "lr") if c in runs.columns]
    if "model" in budget_cols and len(budget_cols) > 1:
        b = runs.sort_values("n_params" if "n_params" in runs.columns else "model").drop_duplicates("model")
        rows = []
        for _, r in b[budget_cols].iterrows():
            rows.append([str(r["model"])] + [
                plots.fmt_count(r[c]) if c in ("tokens", "flops") and pd.notna(r[c]) else _fmt(r[c])
                for c in budget_cols[1:]])
        header = ["model"] + [{"max_steps": "steps", "tokens": "tokens", "flops": "training FLOPs",
                               "lr": "peak lr", "budget": "budget rule"}.get(c, c) for c in budget_cols[1:]]
        blocks.append(Table(header, rows, caption="Budgets per size (first seed's run).",
                            numeric=set(range(1, len(header)))))
    if "seed" in runs.columns:
        seeds = sorted(pd.to_numeric(runs["seed"], errors="coerce").dropna().astype(int).unique())
        blocks.append(Para(["Seeds: ", ", ".join(map(str, seeds)) + "."]))
    if sw.results is not None:
        tasks = plots.capability_tasks(sw.results)
        metrics = sorted(sw.results.loc[sw.results["task"].astype(str) != "lm", "metric"].astype(str).unique())
        blocks.append(Para(["Tasks probed: "] + _join_codes(tasks) + ["; metrics: "] + _join_codes(metrics) + ["."]))
    else:
        blocks.append(_missing(sw, "results.parquet"))
    return blocks


def _join_codes(items) -> list:
    out: list = []
    for i, t in enumerate(items):
        if i:
            out.append(", ")
        out.append(Code(str(t)))
    return out or ["none"]


def section_scaling(sw: Sweep) -> list:
    blocks: list = [Heading(2, "Scaling laws found", "scaling")]
    rows = []
    for x in SCALING_XS:
        fit = sw.scaling_fits.get(x)
        if fit is None or not hasattr(fit, "params"):
            continue
        for p, v in fit.params.items():
            lo, hi = fit.ci.get(p, (np.nan, np.nan)) if hasattr(fit, "ci") else (np.nan, np.nan)
            rows.append([f"final loss vs {x}", f"{fit.law}", p, _fmt(v, 4), f"[{_fmt(lo)}, {_fmt(hi)}]",
                         _fmt(fit.stderr.get(p, np.nan)) if hasattr(fit, "stderr") else "n/a",
                         _fmt(getattr(fit, "n", np.nan)), _fmt(getattr(fit, "rmse", np.nan))])
    csv_rows = _lm_loss_fits(sw.fits)
    if len(csv_rows) and "param" in csv_rows.columns:
        shown = {(r[0].replace("final loss vs ", ""), r[1]) for r in rows}
        for _, r in csv_rows.iterrows():
            key = (str(r.get("x", "")), str(r["law"]))
            if key in shown:
                continue
            rows.append([f"loss vs {r.get('x', '?')} (fits.csv)", str(r["law"]), str(r["param"]),
                         _fmt(r.get("value"), 4), f"[{_fmt(r.get('lo'))}, {_fmt(r.get('hi'))}]",
                         _fmt(r.get("stderr")), _fmt(r.get("n", np.nan)), _fmt(r.get("rmse", np.nan))])
    if rows:
        blocks.append(Para(["Power law y = E + A x^(-alpha) (Kaplan et al. 2020) of each completed run's final "
                            "held-out loss (nats/token); Chinchilla L = E + A/N^alpha + B/D^beta (Hoffmann et al. "
                            "2022) where fitted. Intervals are 95% bootstrap intervals (seeds resampled where "
                            "there are several)."]))
        blocks.append(Table(["fit", "law", "parameter", "value", "95% interval", "stderr", "points", "rmse"], rows,
                            numeric={3, 4, 5, 6, 7}))
    else:
        blocks.append(Note("No scaling law was fitted."))
    for n in sw.scaling_notes:
        blocks.append(Note(n))
    if sw.chinchilla is not None:
        blocks.append(Para(["The compute-optimal frontier in panel (b) uses the Chinchilla fit: N*(C), D*(C) from "
                            "Hoffmann et al. 2022, eq. 4."]))
    blocks.append(FigureRef("scaling"))
    return blocks


def _w0_values(flags: pd.DataFrame | None) -> list[float]:
    """The distinct W0 the flags were computed with (their `w0` column), most common first."""
    if flags is None or "w0" not in flags.columns:
        return []
    w = pd.to_numeric(flags["w0"], errors="coerce")
    return [float(v) for v in w[np.isfinite(w)].value_counts(sort=True).index]


def flag_w0(flags: pd.DataFrame | None) -> float:
    """W0 of a flags table: its `w0` column where it has one, else the analysis default."""
    w = _w0_values(flags)
    return w[0] if w else float(jumps.W0)


def definition_blocks(flags: pd.DataFrame | None) -> list:
    """The definition of a jump the verdicts apply, with the W0 they used."""
    w0s = _w0_values(flags)
    w0 = w0s[0] if w0s else float(jumps.W0)
    blocks: list = [Para([Strong("What counts as a jump."), " ", jumps.DEFINITION.format(w0=w0)])]
    if len(w0s) > 1:
        blocks.append(Note("The flags were not all computed with the same W0 ("
                           + ", ".join(_fmt(v) for v in w0s) + "); each row's own W0 is given with its width."))
    return blocks


def _row_w0(r: pd.Series, default: float) -> float:
    w = _num(r.get("w0", np.nan))
    return w if np.isfinite(w) else default


def _width_text(r: pd.Series, w0: float, unit: str = "decades") -> str | None:
    """The 10-90% width of the rise with its one-sided 95% bounds, and where they lie against W0."""
    if "width" not in r.index:
        return None
    text = _with_interval(r, "width", "width_lo", "width_hi", _fmt)
    if unit:
        text += f" {unit}"
    lo, hi = _num(r.get("width_lo", np.nan)), _num(r.get("width_hi", np.nan))
    if np.isnan(lo) or np.isnan(hi):
        return f"{text} (W0 = {_fmt(w0)})"
    where = "below" if hi < w0 else "above" if lo > w0 else "straddles"
    return f"{text}: the interval {'lies ' if where != 'straddles' else ''}{where} W0 = {_fmt(w0)}"


def _per_run_text(r: pd.Series) -> str | None:
    """Whether single runs acquire the ability abruptly, with the share of runs that did, size by size."""
    if not {"per_run", "share_by_size"} & set(r.index):
        return None
    word = r.get("per_run", np.nan)
    text = "n/a" if pd.isna(word) or str(word).strip() == "" else str(word)
    share = r.get("share_by_size", np.nan)
    details = []
    if pd.notna(share) and str(share).strip():
        details.append(f"share of runs that acquired it, by size: {share}")
    if np.isfinite(_num(r.get("share_width", np.nan))):
        details.append(f"rising over {_fmt(r['share_width'])} decades")
    if np.isfinite(_num(r.get("per_run_p", np.nan))):
        details.append(f"p = {_fmt(r['per_run_p'])}")
    return text + (f" ({'; '.join(details)})" if details else "")


def _step_text(r: pd.Series) -> str | None:
    """The model-free cross-check: the steepest rise between adjacent sizes against what a W0-wide rise allows."""
    if "step_max" not in r.index:
        return None
    text = f"{_fmt(r.get('step_max'))} of the amplitude"
    if np.isfinite(_num(r.get("step_allowed", np.nan))):
        text += f"; a rise W0 wide allows at most {_fmt(r['step_allowed'])}"
    if np.isfinite(_num(r.get("step_p", np.nan))):
        text += f" (p = {_fmt(r['step_p'])})"
    return text


def _loss_text(r: pd.Series) -> str | None:
    if "loss_at_jump" not in r.index and "loss_separates" not in r.index:
        return None
    v = _num(r.get("loss_at_jump", np.nan))
    sep = r.get("loss_separates", pd.NA)
    if np.isfinite(v):
        return f"{_fmt(v)} nats/token separates the runs that acquired the ability from those that did not"
    if pd.notna(sep) and str(sep).strip() != "" and not plots._is_true(sep):
        return "n/a: no held-out loss separates the runs that acquired the ability from those that did not"
    return "n/a"


def _plain(col: str):
    def get(r: pd.Series, x: str, w0: float):
        if col not in r.index:
            return None
        v = r[col]
        return _fmt(int(v)) if col in ("n_sizes", "n_runs") and np.isfinite(_num(v)) else _fmt(v)
    return get


def _location_text(r: pd.Series, x: str, w0: float) -> str | None:
    if "jump_at" not in r.index:
        return None
    return _with_interval(r, "jump_at", "jump_lo", "jump_hi", lambda v: _x_value(v, x)) + f" ({x})"


def _floor_ceiling(r: pd.Series, x: str, w0: float) -> str | None:
    if "floor" not in r.index and "ceiling" not in r.index:
        return None
    return f"{_fmt(r.get('floor', np.nan))} to {_fmt(r.get('ceiling', np.nan))}"


# The evidence table of a flag: (label, text of a flags row or None where its columns are absent).
FLAG_NUMBERS = [
    ("rise at (its midpoint, 95% interval)", _location_text),
    ("width of the rise, 10% to 90% (one-sided 95% bounds)", lambda r, x, w0: _width_text(r, _row_w0(r, w0),
                                                                                 f"decades of {x}")),
    ("p, H0: width \u2265 W0", _plain("p_value")),
    ("q (Benjamini-Hochberg)", _plain("q_value")),
    ("p, H0: width \u2264 W0", _plain("p_smooth")),
    ("p, H0: no rise beyond noise", _plain("p_flat")),
    ("floor to ceiling (fitted)", _floor_ceiling),
    ("steepest step between adjacent sizes", lambda r, x, w0: _step_text(r)),
    ("individual runs", lambda r, x, w0: _per_run_text(r)),
    ("breakthroughness", _plain("breakthroughness")),
    ("mirage", lambda r, x, w0: _mirage_word(r["mirage"]) if "mirage" in r.index else None),
    ("held-out loss at the jump", lambda r, x, w0: _loss_text(r)),
    ("sizes", _plain("n_sizes")),
    ("runs", _plain("n_runs")),
    ("noise model", _plain("noise")),
]


def _flag_numbers(r: pd.Series, w0: float | None = None) -> Table:
    x = str(r.get("x", "n_params"))
    w0 = float(jumps.W0) if w0 is None else w0
    rows = []
    for label, get in FLAG_NUMBERS:
        text = get(r, x, w0)
        if text is not None:
            rows.append([label, text])
    return Table(["evidence", "value"], rows)


def _mirage_word(v) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) or str(v).strip() in ("", "nan", "<NA>"):
        return "n/a (no continuous metric to compare)"
    return ("yes: the continuous metrics are smooth, the jump is likely an artefact of the metric"
            if plots._is_true(v) else "no: the jump survives the continuous metrics")


def sample_table(samples: pd.DataFrame, task: str, n_examples: int = SAMPLE_EXAMPLES) -> Table | None:
    """A few held-out prompts of a task and what each size answered at its final checkpoint (first seed), with
    how many seeds of that size got it right."""
    need = {"task", "example_id", "prompt", "target", "output", "n_params"}
    if samples is None or not need <= set(samples.columns):
        return None
    s = samples[samples["task"].astype(str) == task]
    if s.empty:
        return None
    if "step" in s.columns and "run_id" in s.columns:
        s = s[s["step"] == s.groupby("run_id")["step"].transform("max")]
    ids = sorted(s["example_id"].unique(), key=lambda v: (str(type(v)), v))[:n_examples]
    sizes = plots.sizes(s)
    header = ["prompt", "target"] + [f"{r.model} ({plots.fmt_count(r.n_params)})" for r in sizes.itertuples()]
    rows = []
    for ex in ids:
        e = s[s["example_id"] == ex]
        first = e.iloc[0]
        row = [_oneline(first["prompt"]), _oneline(first["target"])]
        for r in sizes.itertuples():
            g = e[e["n_params"] == r.n_params]
            if g.empty:
                row.append("n/a")
                continue
            if "seed" in g.columns:
                g = g.sort_values("seed")
            out = _oneline(g["output"].iloc[0])
            if "correct" in g.columns:
                ok = g["correct"].map(plots._is_true)
                mark = "\u2713" if ok.iloc[0] else "\u2717"
                out = f"{out} {mark}" + (f" ({int(ok.sum())}/{len(ok)} seeds)" if len(ok) > 1 else "")
            row.append(out)
        rows.append(row)
    return Table(header, rows, caption=f"Held-out prompts of {task} and each size's greedy answer at its final "
                                       "checkpoint (first seed; \u2713 correct, \u2717 wrong).")


def _oneline(v, limit: int = 80) -> str:
    s = "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
    s = s.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")
    return s if len(s) <= limit else s[: limit - 1] + "\u2026"


def section_emergent(sw: Sweep) -> list:
    blocks: list = [Heading(2, "Emergent abilities", "emergent")]
    blocks += definition_blocks(sw.flags)
    if sw.flags is None:
        blocks.append(_missing(sw, "flags.csv"))
        blocks.append(Para(["Run ", Code("emergence analyze " + str(sw.folder)), " to flag them."]))
        blocks += [FigureRef("capability"), FigureRef("heatmap")]
        return blocks
    e = _emergent(sw)
    if e.empty:
        blocks.append(Para(["No ability was flagged emergent: no curve rises narrower than W0 by its 95% upper bound "
                            "(see the next sections for the verdicts)."]))
    else:
        blocks.append(Para([f"{len(e)} flag(s) in {e['task'].nunique()} task(s). Each rises from floor to ceiling "
                            "in fewer than W0 decades by its 95% upper bound; the tables give the width, where the rise "
                            "is, its p- and q-values, and how single runs behave."]))
    w0 = flag_w0(sw.flags)
    for task in _emergent_tasks(sw):
        blocks.append(Heading(3, f"Task {task}", _anchor("task", task)))
        for _, r in e[e["task"].astype(str) == task].iterrows():
            blocks.append(Para([Strong(f"{r['metric']} against {r.get('x', 'n_params')}:"), " ",
                                _oneline(r.get("evidence", ""), 2000) or "no evidence sentence recorded"]))
            blocks.append(_flag_numbers(r, w0))
        blocks.append(FigureRef(_fig_key("capability", task)))
        t = sample_table(sw.samples, task)
        if t is not None:
            blocks.append(Para([Strong("Sample answers."), " What each size answers on held-out prompts:"]))
            blocks.append(t)
        elif sw.samples is None:
            blocks.append(_missing(sw, "samples.parquet"))
        else:
            blocks.append(Note(f"samples.parquet has no answers for task {task}."))
    blocks.append(Heading(3, "All tasks", "all-tasks"))
    blocks += [FigureRef("capability"), FigureRef("heatmap")]
    return blocks


def section_smooth(sw: Sweep) -> list:
    blocks: list = [Heading(2, "Smooth and flat abilities", "smooth")]
    f = sw.flags
    if f is None or "verdict" not in f.columns:
        blocks.append(_missing(sw, "flags.csv") if f is None else Note("flags.csv has no 'verdict' column."))
        return blocks
    rest = f[~f["verdict"].astype(str).eq("emergent")].copy()
    if rest.empty:
        blocks.append(Para(["Every flagged curve is emergent."]))
        return blocks
    order = {"smooth": 0, "flat": 1, "inconclusive": 2}
    rest["_o"] = rest["verdict"].astype(str).map(order).fillna(3)
    rest = rest.sort_values(["_o", "task", "metric"], kind="stable")
    w0 = flag_w0(f)
    cols = [c for c in SMOOTH_COLUMNS if c[1] is None or set(c[1]) & set(rest.columns)]
    rows = [[str(r["task"]), str(r["metric"]), str(r.get("x", "")), str(r["verdict"])]
            + [get(r, _row_w0(r, w0)) for _, _, get in cols] + [_oneline(r.get("evidence", ""), 400)]
            for _, r in rest.iterrows()]
    counts = rest["verdict"].astype(str).value_counts()
    blocks.append(Para([", ".join(f"{v} {k}" for k, v in counts.items()) + f". Smooth: the rise is wider than "
                        f"W0 = {_fmt(w0)} decades by its 95% lower bound; flat: no change beyond noise; inconclusive: "
                        "the data cannot decide (the evidence says why). Widths are 10% to 90% of the rise, in "
                        "decades of x, with their one-sided 95% bounds."]))
    header = ["task", "metric", "x", "verdict"] + [h for h, _, _ in cols] + ["evidence"]
    blocks.append(Table(header, rows, numeric={4 + i for i, c in enumerate(cols) if c[0] != "single runs"}))
    return blocks


# Columns of the table of smooth, flat and inconclusive rows: (header, flag columns it needs (None: always), cell).
SMOOTH_COLUMNS = [
    ("width, decades (95% bounds)", ("width",),
     lambda r, w0: _with_interval(r, "width", "width_lo", "width_hi", _fmt)),
    ("rise at (95% interval)", ("jump_at",),
     lambda r, w0: _with_interval(r, "jump_at", "jump_lo", "jump_hi", lambda v: _x_value(v, str(r.get("x", ""))))),
    ("p, H0: W \u2265 W0", ("p_value",), lambda r, w0: _fmt(r.get("p_value", np.nan))),
    ("q", ("q_value",), lambda r, w0: _fmt(r.get("q_value", np.nan))),
    ("p, H0: W \u2264 W0", ("p_smooth",), lambda r, w0: _fmt(r.get("p_smooth", np.nan))),
    ("single runs", ("per_run", "share_by_size"), lambda r, w0: _per_run_short(r)),
]


def _per_run_short(r: pd.Series) -> str:
    word = r.get("per_run", np.nan)
    text = "n/a" if pd.isna(word) or str(word).strip() == "" else str(word)
    share = r.get("share_by_size", np.nan)
    return text + (f" ({share})" if pd.notna(share) and str(share).strip() else "")


CONTINUOUS = ("token_accuracy", "answer_nll", "edit_distance", "brier")
# Extra flag columns of the mirage analysis: exact match measured at the largest size beside its prediction from
# token accuracy p as p^L for answers of L tokens (Schaeffer et al. 2023: a per-token accuracy that rises smoothly
# makes exact match over L tokens rise sharply).
MIRAGE_EXTRA = {"em_measured": "EM measured", "em_predicted": "EM predicted p^L", "answer_length": "answer length L"}


def section_mirage(sw: Sweep) -> list:
    blocks: list = [Heading(2, "The mirage analysis", "mirage")]
    blocks.append(Para(["Schaeffer et al. 2023 show that a discontinuous metric such as exact match can turn a "
                        "smooth improvement into an apparent jump. For every task flagged on exact match, the same "
                        "task's continuous metrics are checked: if they are smooth, the jump is likely an artefact "
                        "of the metric (a mirage); if they jump too, it survives."]))
    f = sw.flags
    if f is None or not {"task", "metric", "verdict"} <= set(f.columns):
        blocks.append(_missing(sw, "flags.csv") if f is None else Note("flags.csv lacks task/metric/verdict."))
        return blocks
    em = f[f["metric"].astype(str) == "exact_match"]
    if em.empty:
        blocks.append(Note("No exact-match flags to examine."))
        return blocks
    extra = [c for c in MIRAGE_EXTRA if c in f.columns and f[c].notna().any()]
    present = set(f["metric"].astype(str))
    continuous = [m for m in CONTINUOUS if m in present]
    header = (["task", "x", "exact match"] + [m.replace("_", " ") for m in continuous] + ["mirage"]
              + [MIRAGE_EXTRA[c] for c in extra])
    rows = []
    for _, r in em.iterrows():
        same = f[(f["task"].astype(str) == str(r["task"]))]
        if "x" in f.columns:
            same = same[same["x"].astype(str) == str(r.get("x"))]
        row = [str(r["task"]), str(r.get("x", "")), _verdict_with_width(r)]
        for m in continuous:
            v = same[same["metric"].astype(str) == m]
            row.append(_verdict_with_width(v.iloc[0]) if len(v) else "-")
        row.append(_mirage_word(r.get("mirage")) if str(r["verdict"]) == "emergent" else "-")
        row += [_fmt(r.get(c)) for c in extra]
        rows.append(row)
    blocks.append(Table(header, rows, numeric=set(range(len(header) - len(extra), len(header)))))
    blocks.append(Para(["Each verdict is given with the 10%-90% width of its rise in decades (W). The figure "
                        "\u201ccapability against scale\u201d above puts each metric beside exact match."]))
    return blocks


def _verdict_with_width(r: pd.Series) -> str:
    """A verdict with the width of its rise, so that a narrow exact match can be read against its companions."""
    w = _num(r.get("width", np.nan))
    return str(r.get("verdict", "")) + (f" (W {_fmt(w)})" if not np.isnan(w) else "")


def _view_note(sw: Sweep, key: str, consequence: str = "") -> Note:
    """Why a view is not shown, and how to get it when its file was never written."""
    name = VIEW_FILES[key]
    why = sw.notes.get(name, "is not available")
    hint = f" (run `emergence analyze {sw.folder} --view {key}`)" if why == "not found" else ""
    return Note(f"{name} {why}{consequence}{hint}.")


def _cell(col: str, fmt=None):
    return lambda r: (fmt or _fmt)(r.get(col, np.nan))


# Columns of the phase-change table: (header, the column that must be present, cell).
TRANSITION_COLUMNS = [
    ("run id", "run_id", lambda r: _oneline(r.get("run_id", ""), 300)),
    ("task", "task", lambda r: _oneline(r.get("task", ""), 300)),
    ("metric", "metric", lambda r: _oneline(r.get("metric", ""), 300)),
    ("rise at (tokens)", "jump_at", lambda r: _with_interval(r, "jump_at", "jump_lo", "jump_hi",
                                                            lambda v: _x_value(v, "tokens"))),
    ("width, decades", "width", lambda r: _with_interval(r, "width", "width_lo", "width_hi", _fmt)),
    ("p", "p_value", _cell("p_value")),
    ("q", "q_value", _cell("q_value")),
    ("coincides with induction", "coincides_with_induction", _cell("coincides_with_induction")),
    ("evidence", "evidence", lambda r: _oneline(r.get("evidence", ""), 300)),
]
TRANSITION_NUMERIC = {"jump_at", "width", "p_value", "q_value"}
# Columns of the loss-view table: the threshold eta of Du et al., the rise's width against loss, and the size test.
LOSS_COLUMNS = [
    ("task", "task", lambda r: str(r["task"])),
    ("metric", "metric", lambda r: str(r["metric"])),
    ("verdict", "verdict", lambda r: str(r["verdict"])),
    ("eta", "eta", _cell("eta")),
    ("eta lo", "eta_lo", _cell("eta_lo")),
    ("eta hi", "eta_hi", _cell("eta_hi")),
    ("rise at (loss)", "jump_at", lambda r: _with_interval(r, "jump_at", "jump_lo", "jump_hi",
                                                          lambda v: _x_value(v, "loss"))),
    ("width, nats of loss", "width", lambda r: _with_interval(r, "width", "width_lo", "width_hi", _fmt)),
    ("q", "q_value", _cell("q_value")),
    ("size still matters", "size_still_matters", _cell("size_still_matters")),
    ("size explains p", "size_explains_p", _cell("size_explains_p")),
]


def section_views(sw: Sweep) -> list:
    blocks: list = [Heading(2, "Along training, against loss, at full resolution, and predicted ahead", "views")]
    # training and transitions
    blocks.append(Heading(3, "Training curves and phase changes", "training"))
    tr = sw.views.get("transitions")
    if tr is None:
        blocks.append(_view_note(sw, "transitions", ": no phase changes are marked"))
    elif "verdict" in tr.columns:
        jumps = tr[tr["verdict"].astype(str) == "emergent"]
        blocks.append(Para([f"{len(jumps)} of {len(tr)} run x task x metric curves change abruptly during training."]))
        if len(jumps):
            cols = [c for c in TRANSITION_COLUMNS if c[1] in jumps.columns]
            rows = [[get(r) for _, _, get in cols] for _, r in jumps.head(30).iterrows()]
            blocks.append(Table([h for h, _, _ in cols], rows,
                                caption="Phase changes (first 30); x = training tokens, widths in decades of "
                                        "tokens, intervals 95%.",
                                numeric={i for i, c in enumerate(cols) if c[1] in TRANSITION_NUMERIC}))
    blocks.append(FigureRef("training"))
    # loss view
    blocks.append(Heading(3, "Against held-out loss", "loss-view"))
    lv = sw.views.get("loss")
    if lv is None:
        blocks.append(_view_note(sw, "loss"))
    else:
        cols = [c for c in LOSS_COLUMNS if c[1] in lv.columns]
        rows = [[get(r) for _, _, get in cols] for _, r in _loss_panels(lv, n=len(lv)).iterrows()]
        blocks.append(Para(["Du et al. 2024: an ability is emergent in loss if it is absent above a loss threshold "
                            "\u03b7 and appears below it; \u201csize still matters\u201d tests whether model size "
                            "explains the metric once the loss is known."]))
        blocks.append(Table([h for h, _, _ in cols], rows,
                            numeric={i for i, c in enumerate(cols) if c[1] not in ("task", "metric", "verdict")}))
        blocks.append(FigureRef("loss_threshold"))
    # backtest
    blocks.append(Heading(3, "Backtest", "backtest"))
    bt = sw.views.get("backtest")
    if bt is None:
        blocks.append(_view_note(sw, "backtest"))
    else:
        cols = [c for c in ("task", "metric", "law", "x_value", "n_fit", "prediction", "lo", "hi", "actual",
                            "error", "inside") if c in bt.columns]
        rows = [[plots.fmt_count(r[c]) if c == "x_value" else str(r[c]) if c in ("task", "metric", "law")
                 else _fmt(r[c]) for c in cols] for _, r in bt.iterrows()]
        blocks.append(Para(["Each law is fitted on all but the largest sizes and predicts them: an interval that "
                            "misses the measured value marks a capability the smaller models did not foretell."]))
        blocks.append(Table([{"x_value": "held-out size", "n_fit": "sizes fitted", "inside": "inside interval"}
                             .get(c, c) for c in cols], rows,
                            numeric={i for i, c in enumerate(cols) if c not in ("task", "metric", "law")}))
        blocks.append(FigureRef("backtest"))
    # resolution
    blocks.append(Heading(3, "Infinite resolution", "resolution"))
    rv = sw.views.get("resolution")
    if rv is None:
        blocks.append(_view_note(sw, "resolution"))
    else:
        cols = [c for c in ("task", "shape", "slope", "curvature", "curvature_lo", "curvature_hi", "n_sizes",
                            "evidence") if c in rv.columns]
        rows = [[_oneline(r[c], 400) if c in ("task", "shape", "evidence") else _fmt(r[c]) for c in cols]
                for _, r in rv.iterrows()]
        blocks.append(Table([c.replace("_", " ") for c in cols], rows,
                            numeric={i for i, c in enumerate(cols) if c not in ("task", "shape", "evidence")}))
        blocks.append(FigureRef("resolution"))
    return blocks


def section_stability(sw: Sweep) -> list:
    """How often each row's verdict survives disjoint sets of runs (`emergence stability`, stability.csv)."""
    blocks: list = [Heading(2, "Stability of the verdicts", "stability")]
    st = sw.stability
    if st is None or st.empty or "modal" not in st.columns:
        blocks.append(Note("No stability.csv: `emergence stability SWEEP_DIR --runs-per-size S` judges disjoint "
                           "sets of S runs per size and counts how often each verdict comes out."))
        return blocks
    k = int(st["replicates"].max()) if "replicates" in st.columns else len(str(st["verdicts"].iloc[0]).split(";"))
    s_ = int(st["runs_per_size"].max()) if "runs_per_size" in st.columns else 0
    blocks.append(Para([f"Each row judged on {k} disjoint sets of {s_} runs per size (dealt at random within each "
                        "size, no retraining): its modal verdict, the share of sets that gave it with a Wilson 95% "
                        "interval, and every set's verdict."]))
    rows = []
    for _, r in st.iterrows():
        share = f"{_fmt(r['modal_share'])} [{_fmt(r['modal_lo'])}, {_fmt(r['modal_hi'])}]"
        rows.append([_oneline(r["task"], 300), _oneline(r["metric"], 300), _oneline(r["modal"], 100), share,
                     _oneline(str(r["verdicts"]).replace(";", ", "), 500)])
    blocks.append(Table(["task", "metric", "modal verdict", "share [95%]", "verdict of each set"], rows))
    return blocks


def section_budget(sw: Sweep) -> list:
    """Whether the transition moves with the token budget (`emergence budget`, budget.csv)."""
    blocks: list = [Heading(2, "Capacity or budget?", "budget")]
    b = sw.budget
    if b is None or b.empty or "evidence" not in b.columns:
        blocks.append(Note("No budget.csv: train some sizes of the transition again with a larger train.tokens and "
                           "run `emergence budget SWEEP_DIR LONGER_SWEEP_DIR` to see whether the jump moves with the "
                           "token budget (a jump that only marks the end of the budget is not one in capacity)."))
        return blocks
    blocks.append(Para(["The same sizes trained on more tokens: the runs whose last checkpoint acquired the ability "
                        "under each budget, with Fisher's exact test of the difference."]))
    blocks.extend(Para([_oneline(e, 600)]) for e in b["evidence"])
    return blocks


def section_failures(sw: Sweep) -> list:
    blocks: list = [Heading(2, "Runs that failed or diverged", "failures")]
    runs = sw.runs
    if runs is None or "status" not in runs.columns:
        blocks.append(_missing(sw, "runs.parquet") if runs is None else Note("runs.parquet has no 'status'."))
        return blocks
    bad = runs[~runs["status"].astype(str).eq(STATUS_DONE)]
    if bad.empty:
        blocks.append(Para([f"All {len(runs)} runs finished."]))
        return blocks
    blocks.append(Para([f"{len(bad)} of {len(runs)} runs did not finish. Their values are left out of every fit "
                        "and figure of final results (their training curves are dotted)."]))
    cols = [c for c in ("run_id", "model", "seed", "status", "wall_s", "error") if c in bad.columns]
    rows = [[_oneline(r[c], 500) if c in ("run_id", "model", "status", "error") else _fmt(r[c]) for c in cols]
            for _, r in bad.iterrows()]
    blocks.append(Table([{"wall_s": "wall (s)", "error": "why"}.get(c, c) for c in cols], rows))
    return blocks


def section_repro(sw: Sweep) -> list:
    blocks: list = [Heading(2, "Reproducibility", "reproducibility")]
    m = sw.meta
    if not m:
        blocks.append(_missing(sw, "meta.json"))
    else:
        rows = []
        for k, label in (("command", "command"), ("experiment", "experiment"), ("git_rev", "git revision"),
                         ("machine", "machine"), ("python", "python"), ("started", "started"),
                         ("finished", "finished"), ("wall_s", "wall time (s)")):
            if k in m and m[k] not in (None, ""):
                rows.append([label, _fmt(m[k]) if isinstance(m[k], (int, float)) else _oneline(m[k], 500)])
        blocks.append(Table(["", ""], rows))
        versions = m.get("versions")
        if isinstance(versions, dict) and versions:
            blocks.append(Table(["package", "version"], [[str(k), str(v)] for k, v in sorted(versions.items())],
                                caption="Package versions."))
    files = []
    for p in sw.inputs:
        if p.exists():
            files.append([str(p.relative_to(sw.folder)) if p.is_relative_to(sw.folder) else str(p),
                          f"{p.stat().st_size:,}", _sha256(p)[:16]])
        else:
            files.append([str(p.relative_to(sw.folder)), "", ""])
    if files:
        blocks.append(Table(["input file", "bytes", "sha256 (first 16)"], files, numeric={1},
                            caption="The files this report was made from."))
    blocks.append(Para(["Regenerate this report with ", Code(f"emergence report {sw.folder}"), "; vector versions "
                        "of every figure are in ", Code("plots/"), " beside it."]))
    return blocks


def _sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _anchor(prefix: str, name: str) -> str:
    return _fig_key(prefix, name)


def build_document(sw: Sweep) -> list:
    return (section_overview(sw) + section_run(sw) + section_scaling(sw) + section_emergent(sw) + section_smooth(sw)
            + section_mirage(sw) + section_stability(sw) + section_budget(sw) + section_views(sw) + section_failures(sw)
            + section_repro(sw))


# ----------------------------------------------------------------------------------------------------- HTML
STYLE = """
:root { --fg: #1b1b1b; --muted: #5a5a5a; --rule: #d9d9d9; --accent: #0072b2; --note: #fff6e0; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; text-size-adjust: 100%; }
body { margin: 0 auto; padding: 1rem; max-width: 74rem; color: var(--fg); background: #fff;
  font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
h1 { font-size: 1.6rem; margin: .5rem 0 1rem; overflow-wrap: anywhere; }
h2 { font-size: 1.3rem; margin: 2.2rem 0 .6rem; padding-top: .4rem; border-top: 1px solid var(--rule); }
h3 { font-size: 1.1rem; margin: 1.6rem 0 .5rem; overflow-wrap: anywhere; }
p, li { max-width: 48rem; overflow-wrap: anywhere; }
nav { font-size: .95rem; margin-bottom: 1rem; }
nav a { color: var(--accent); text-decoration: none; margin-right: .9rem; display: inline-block; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: .88em; }
code { background: #f3f3f3; padding: 0 .2em; border-radius: 3px; overflow-wrap: anywhere; }
pre { background: #f6f6f6; padding: .6rem .8rem; overflow-x: auto; white-space: pre-wrap; overflow-wrap: anywhere;
  border-radius: 4px; max-width: 100%; }
.note { background: var(--note); border-left: 4px solid #e69f00; padding: .4rem .7rem; max-width: 48rem; }
.table-wrap { overflow-x: auto; max-width: 100%; margin: .6rem 0 1rem; -webkit-overflow-scrolling: touch; }
table { border-collapse: collapse; font-size: .9rem; }
caption { caption-side: top; text-align: left; color: var(--muted); font-size: .88rem; padding-bottom: .3rem; }
th, td { border-bottom: 1px solid var(--rule); padding: .3rem .6rem; text-align: left; vertical-align: top;
  max-width: 32rem; overflow-wrap: break-word; }
th { background: #f3f3f3; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
figure { margin: 1rem 0 1.6rem; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: var(--muted); font-size: .9rem; max-width: 52rem; margin-top: .4rem; }
figcaption b { color: var(--fg); }
.missing { color: #8a4b00; }
footer { color: var(--muted); font-size: .85rem; margin-top: 3rem; border-top: 1px solid var(--rule);
  padding-top: .6rem; }
@media (max-width: 640px) { body { padding: .6rem; font-size: 15px; } th, td { padding: .25rem .4rem; } }
"""


def _h(s) -> str:
    return html.escape(str(s), quote=True)


def _parts_html(parts) -> str:
    out = []
    for p in parts:
        if isinstance(p, Code):
            out.append(f"<code>{_h(p.text)}</code>")
        elif isinstance(p, Strong):
            out.append(f"<strong>{_h(p.text)}</strong>")
        else:
            out.append(_h(p))
    return "".join(out)


def _table_html(t: Table) -> str:
    cap = f"<caption>{_h(t.caption)}</caption>" if t.caption else ""
    num = ' class="num"'

    def cls(i):
        return num if i in t.numeric else ""

    head = "".join(f'<th{cls(i)} scope="col">{_h(c)}</th>' for i, c in enumerate(t.header))
    body = "".join("<tr>" + "".join(f"<td{cls(i)}>{_h(c)}</td>" for i, c in enumerate(row)) + "</tr>"
                   for row in t.rows)
    return f'<div class="table-wrap"><table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _figure_html(ff: FigureFile | None, key: str) -> str:
    if ff is None:
        return ""
    if ff.error or ff.png is None:
        return (f'<figure id="fig-{_h(key)}"><p class="note missing">Figure \u201c{_h(ff.title)}\u201d not drawn: '
                f"{_h(ff.error)}</p></figure>")
    data = base64.b64encode(ff.png.read_bytes()).decode("ascii")
    w, h = ff.size
    return (f'<figure id="fig-{_h(key)}"><img src="data:image/png;base64,{data}" width="{w}" height="{h}" '
            f'alt="{_h(ff.title)}"><figcaption><b>{_h(ff.title)}.</b> {_h(ff.caption)}</figcaption></figure>')


def render_html(doc: list, figs: dict[str, FigureFile], title: str) -> str:
    body = []
    toc = [(b.anchor, b.text) for b in doc if isinstance(b, Heading) and b.level == 2 and b.anchor]
    placed = set()
    for b in doc:
        if isinstance(b, Heading):
            anchor = f' id="{_h(b.anchor)}"' if b.anchor else ""
            body.append(f"<h{b.level}{anchor}>{_h(b.text)}</h{b.level}>")
            if b.level == 1 and toc:
                body.append("<nav>" + "".join(f'<a href="#{_h(a)}">{_h(t)}</a>' for a, t in toc) + "</nav>")
        elif isinstance(b, Para):
            body.append(f"<p>{_parts_html(b.parts)}</p>")
        elif isinstance(b, Note):
            body.append(f'<p class="note">{_h(b.text)}</p>')
        elif isinstance(b, Pre):
            body.append(f"<pre>{_h(b.text)}</pre>")
        elif isinstance(b, Bullets):
            body.append("<ul>" + "".join(f"<li>{_parts_html(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            body.append(_table_html(b))
        elif isinstance(b, FigureRef):
            if b.key in figs and b.key not in placed:
                placed.add(b.key)
                body.append(_figure_html(figs[b.key], b.key))
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f'<meta http-equiv="Content-Security-Policy" content="{_h(CSP)}">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            '<meta name="referrer" content="no-referrer">\n'
            f"<title>{_h(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(body)
            + "\n<footer>Written by <code>analysis.report</code> of emergence. Self-contained: no script, no "
              "network; every figure is embedded.</footer>\n</body>\n</html>\n")


# ------------------------------------------------------------------------------------------------- Markdown
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


def md_escape(s) -> str:
    """Plain text for Markdown: no emphasis, link, image, table cell break, heading, list or HTML can come out of it.

    `&`, `<` and `>` become entities (so no raw HTML and no entity from data survives); CommonMark's inline
    punctuation that could open markup (backslash, backtick, `*`, `_`, `[`, `]`, `~`) and the table separator `|`
    are backslash-escaped; a leading `#`, a leading list marker (`-`, `+`, `=`, `1.`) is escaped too. Line breaks
    become spaces (a cell or a paragraph stays one line); leading and trailing spaces are kept, so that segments
    join as written."""
    s = re.sub(r"\s+", " ", str(s))
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    s = _MD_SPECIAL.sub(r"\\\1", s)
    s = re.sub(r"^(\s*)([#+=-])", r"\1\\\2", s)
    s = re.sub(r"^(\s*\d{1,9})([.)])(?=\s|$)", r"\1\\\2", s)
    return s


def md_code(s) -> str:
    """An inline code span that holds `s` literally (a fence longer than any backtick run inside)."""
    s = " ".join(str(s).split())
    run = max((len(m) for m in re.findall(r"`+", s)), default=0)
    fence = "`" * (run + 1)
    pad = " " if s.startswith("`") or s.endswith("`") or not s.strip() else ""
    return f"{fence}{pad}{s}{pad}{fence}"


def _parts_md(parts) -> str:
    out = []
    for p in parts:
        if isinstance(p, Code):
            out.append(md_code(p.text))
        elif isinstance(p, Strong):
            out.append(f"**{md_escape(p.text)}**")
        else:
            out.append(md_escape(p))
    return "".join(out)


def _table_md(t: Table) -> str:
    lines = []
    if t.caption:
        lines.append(f"*{md_escape(t.caption)}*\n")
    header = [md_escape(c).strip() or " " for c in t.header]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---:" if i in t.numeric else "---" for i in range(len(header))) + "|")
    for row in t.rows:
        lines.append("| " + " | ".join(md_escape(c).strip() for c in row) + " |")
    return "\n".join(lines)


def render_md(doc: list, figs: dict[str, FigureFile]) -> str:
    out = []
    placed = set()
    for b in doc:
        if isinstance(b, Heading):
            out.append("#" * b.level + " " + md_escape(b.text))
        elif isinstance(b, Para):
            out.append(_parts_md(b.parts))
        elif isinstance(b, Note):
            out.append("> " + md_escape(b.text))
        elif isinstance(b, Pre):
            run = max((len(m) for m in re.findall(r"`{3,}", b.text)), default=2)
            fence = "`" * max(3, run + 1)
            out.append(f"{fence}\n{b.text}\n{fence}")
        elif isinstance(b, Bullets):
            out.append("\n".join("- " + _parts_md(i) for i in b.items))
        elif isinstance(b, Table):
            out.append(_table_md(b))
        elif isinstance(b, FigureRef):
            ff = figs.get(b.key)
            if ff is None or b.key in placed:
                continue
            placed.add(b.key)
            if ff.error or ff.png is None:
                out.append("> " + md_escape(f"Figure \u201c{ff.title}\u201d not drawn: {ff.error}"))
            else:
                # figure keys are slugs (letters, digits, _ . -): safe inside a link target
                out.append(f"![{md_escape(ff.title)}](plots/{ff.png.name})\n\n"
                           f"*{md_escape(ff.title)}.* {md_escape(ff.caption)} ([vector](plots/{ff.svg.name}))")
    return "\n\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------------------ entry
def write_report(sweep_dir, *, analyses: dict | None = None) -> dict[str, Path]:
    """Write `plots/*.png` and `plots/*.svg`, `report.html` (self-contained) and `report.md` into `sweep_dir`.

    analyses: optional results already computed, which take precedence over the files: {"flags": DataFrame,
    "fits": DataFrame, "transitions" | "loss" | "resolution" | "backtest": DataFrame, "scaling_fit": FitResult
    (or a dict of them; a FitResult's x says whether it is against n_params or flops; a "chinchilla" one draws
    the compute-optimal frontier)}.
    Returns {"html": path, "md": path, "plots/<name>.png": path, "plots/<name>.svg": path, ...}.
    """
    sw = load_sweep(sweep_dir, analyses)
    plots_dir = sw.folder / "plots"
    figs = make_figures(sw, plots_dir)
    doc = build_document(sw)
    title = f"Sweep report: {sw.folder.name}"
    html_text = render_html(doc, figs, title)
    md_text = render_md(doc, figs)
    out: dict[str, Path] = {}
    (sw.folder / "report.html").write_text(html_text, encoding="utf-8")
    (sw.folder / "report.md").write_text(md_text, encoding="utf-8")
    out["html"] = sw.folder / "report.html"
    out["md"] = sw.folder / "report.md"
    for ff in figs.values():
        for p in (ff.png, ff.svg):
            if p is not None:
                out[f"plots/{p.name}"] = p
    return out
