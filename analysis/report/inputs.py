"""What the report reads: the sweep folder's tables, the analysis's fits and flags (and its fitted curves, never
refitted here), the views, samples, instances and meta.json; a missing or unreadable file is noted, not invented."""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import options, schema, tables
from analysis.fit import FitResult, compute_optimal


VIEW_FILES = {"transitions": "transitions.csv", "loss": "loss.csv", "resolution": "resolution.csv",
              "backtest": "backtest.csv"}
STATUS_DONE = "done"
SCALING_XS = ("n_params", "flops")


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
    fit_bands: pd.DataFrame | None = None
    scaling_fits: dict = field(default_factory=dict)  # x -> FitResult, FittedCurve (or callable)
    scaling_notes: list = field(default_factory=list)
    chinchilla: Any = None
    stability: pd.DataFrame | None = None
    budget: pd.DataFrame | None = None
    forecast: pd.DataFrame | None = None  # forecast.csv and forecast_backtest.csv (`emergence forecast`, on demand)
    forecast_backtest: pd.DataFrame | None = None
    settings: Any = None  # analysis.options.Settings of flag_options.json: the verdict's settings and their sources


# what reading a damaged or foreign file raises: OSError (unreadable), ValueError (pandas' and pyarrow's parse errors,
# JSON and Unicode decoding), TypeError and KeyError (a file of another shape)
READ_ERRORS = (OSError, ValueError, TypeError, KeyError)


def _read(sw: Sweep, name: str, reader):
    path = sw.folder / name
    if not path.exists():
        sw.notes[name] = "not found"
        return None
    try:
        out = reader(path)
    except READ_ERRORS as e:  # an unreadable file is reported in its section, not fatal
        sw.notes[name] = f"could not be read ({type(e).__name__}: {e})"
        return None
    sw.inputs.append(path)
    return out


def _read_csv(path: Path) -> pd.DataFrame:
    from analysis.pipeline import csv_plain

    try:
        return csv_plain(pd.read_csv(path, keep_default_na=True))
    except pd.errors.EmptyDataError:  # a view with nothing to say writes an empty file
        return pd.DataFrame()


def refuse_broken(sw: Sweep) -> None:
    """ValueError naming the first file the report cannot stand on: results.parquet missing, or any file damaged."""
    for name, why in sw.notes.items():
        if why.startswith(("could not be read", "is not a valid")) or (name == "results.parquet" and
                                                                      why == "not found"):
            raise ValueError(f"{sw.folder / name} {why.split(' (')[0] if why.startswith('could') else why}; "
                             "rerun the step that writes it (`emergence sweep` resumes and rebuilds the tables, "
                             "`emergence analyze` the flags) and then the report")


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
    res = _read(sw, "results.parquet", pd.read_parquet)
    if res is not None:
        try:
            sw.results = schema.validate(res, where="results.parquet")
        except ValueError as e:
            sw.notes["results.parquet"] = f"is not a valid results table: {e}"
    sw.runs = _read(sw, "runs.parquet", pd.read_parquet)
    sw.fit_bands = _read(sw, "fit_bands.csv", _read_csv)
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
    for name in ("forecast", "forecast_backtest"):  # written by `emergence forecast`, on demand
        if (folder / f"{name}.csv").exists():
            setattr(sw, name, _read(sw, f"{name}.csv", _read_csv))
    if (folder / "stability.csv").exists():  # written by `emergence stability`, on demand
        sw.stability = _read(sw, "stability.csv", _read_csv)
    if (folder / "budget.csv").exists():  # written by `emergence budget`, on demand
        sw.budget = _read(sw, "budget.csv", _read_csv)
    if (folder / options.FILE).exists():  # written by the analysis beside flags.csv
        sw.settings = _read(sw, options.FILE, lambda p: options.read(p.parent))
    sw.samples = _read(sw, "samples.parquet", pd.read_parquet)
    meta = _read(sw, "meta.json", lambda p: json.loads(p.read_text()))
    sw.meta = meta if isinstance(meta, dict) else {}
    if meta is not None and not isinstance(meta, dict):
        sw.notes["meta.json"] = "is not a JSON object"
    sw.instances = _load_instances(sw)
    if sw.fits is not None:
        _check_fits(sw)
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
    except READ_ERRORS as e:
        sw.notes["instances.parquet"] = f"could not be read ({type(e).__name__}: {e})"
        return None
    sw.inputs += paths if len(paths) == 1 else [sw.folder / "runs" / "*" / "instances.parquet"]
    return df


# the columns of fits.csv the report reads (`analysis.pipeline.FIT_COLUMNS`: one row per law parameter)
FITS_READ = ("law", "param", "value", "lo", "hi")


def _check_fits(sw: Sweep) -> None:
    """Keep fits.csv only if it has the layout `analysis.pipeline` writes; otherwise say so where it is used."""
    lacking = [c for c in FITS_READ if c not in sw.fits.columns]
    if lacking:
        sw.notes["fits.csv"] = (f"has no {', '.join(repr(c) for c in lacking)} column (the layout `emergence "
                                "analyze` writes has one row per law parameter: rerun it)")
        sw.fits = None


def lm_loss_fits(fits: pd.DataFrame | None) -> pd.DataFrame:
    if fits is None or "law" not in fits.columns:
        return pd.DataFrame()
    f = fits
    if "task" in f.columns:
        f = f[f["task"].astype(str).eq("lm")]
    if "metric" in f.columns:
        f = f[f["metric"].astype(str).eq("loss")]
    return f


@dataclass
class FittedCurve:
    """A law the analysis fitted, as the report draws and tabulates it: its parameters from fits.csv, its curve and
    95% band from fit_bands.csv (interpolated in log x between the grid's points). Nothing is refitted here."""

    law: str
    x: str
    params: dict
    ci: dict
    stderr: dict
    n: float
    rmse: float
    grid: np.ndarray
    y: np.ndarray
    lo: np.ndarray
    hi: np.ndarray

    def _at(self, values: np.ndarray, x) -> np.ndarray:
        return np.interp(np.log10(np.asarray(x, float)), np.log10(self.grid), values)

    def predict(self, x) -> np.ndarray:
        return self._at(self.y, x)

    def predict_interval(self, x, kind: str = "confidence") -> tuple[np.ndarray, np.ndarray]:
        if kind != "confidence" or not (np.isfinite(self.lo).all() and np.isfinite(self.hi).all()):
            raise ValueError("fit_bands.csv has the band of the curve only, where the fit had a bootstrap")
        return self._at(self.lo, x), self._at(self.hi, x)


def _fitted_curve(rows: pd.DataFrame, band: pd.DataFrame, x: str) -> FittedCurve:
    num = lambda c: pd.to_numeric(rows[c], errors="coerce") if c in rows.columns else pd.Series(np.nan, rows.index)  # noqa: E731
    band = band.sort_values("x_value")
    first = lambda c: float(num(c).iloc[0])  # noqa: E731
    return FittedCurve(law=str(rows["law"].iloc[0]), x=x,
                       params=dict(zip(rows["param"].astype(str), num("value"))),
                       ci={p: (lo, hi) for p, lo, hi in zip(rows["param"].astype(str), num("lo"), num("hi"))},
                       stderr=dict(zip(rows["param"].astype(str), num("stderr"))), n=first("n"), rmse=first("rmse"),
                       grid=band["x_value"].to_numpy(float), y=band["predicted"].to_numpy(float),
                       lo=band["lo"].to_numpy(float), hi=band["hi"].to_numpy(float))


def _scaling_fits(sw: Sweep, analyses: dict) -> None:
    """Fitted laws of final held-out loss against N and C (with bootstrap bands), and a Chinchilla fit if any.

    Taken from `analyses` (FitResults) when given; otherwise read: the power law's parameters from fits.csv and its
    curve with the 95% band from fit_bands.csv (`FittedCurve`), both written by the analysis; the curve alone from
    fits.csv's parameters where fit_bands.csv lacks it. The report never fits.
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
    lm_rows = lm_loss_fits(sw.fits)
    bands = lm_loss_fits(sw.fit_bands) if sw.fit_bands is not None else pd.DataFrame()
    for x in SCALING_XS:
        if x in sw.scaling_fits:
            continue
        pick = lambda f: f[(f["law"].astype(str) == "power") & (f["x"].astype(str) == x)] if len(f) else f  # noqa: E731
        rows, band = pick(lm_rows), pick(bands)
        if len(rows) and len(band) >= 2:
            sw.scaling_fits[x] = _fitted_curve(rows, band, x)
            continue
        curve = tables.law_curve(rows) if len(rows) else None
        if curve is not None:
            why = sw.notes.get("fit_bands.csv", "has no curve for it")
            sw.scaling_fits[x] = curve
            sw.scaling_notes.append(f"loss against {x}: fit_bands.csv {why}; the curve is drawn from fits.csv's "
                                    "parameters, without a band")
        else:
            sw.scaling_notes.append(f"loss against {x}: fits.csv has no power law; points only")
    if sw.chinchilla is None:
        sw.chinchilla = _chinchilla_from_csv(sw.fits)


def _predicts(fit) -> bool:
    """Whether a fit evaluates on a test grid (a chinchilla fit takes (N, D) pairs)."""
    try:
        x = np.array([[1e6, 1e7], [1e8, 1e9]]) if getattr(fit, "law", "") == "chinchilla" else np.array([1e6, 1e7])
        return bool(np.all(np.isfinite(np.asarray(fit.predict(x), float))))
    except (ValueError, TypeError, KeyError, ArithmeticError):
        return False


def _chinchilla_from_csv(fits: pd.DataFrame | None):
    """A FitResult rebuilt from fits.csv's Chinchilla parameters (E, A, B, alpha, beta), or None."""
    rows = lm_loss_fits(fits)
    if rows.empty:
        return None
    rows = rows[rows["law"].astype(str) == "chinchilla"]
    params = {str(p): float(v) for p, v in zip(rows.get("param", []), rows.get("value", [])) if pd.notna(v)}
    if not {"E", "A", "B", "alpha", "beta"} <= set(params):
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
        C = np.logspace(np.log10(f.min()), np.log10(f.max()), 60)
        N, D = compute_optimal(fit, C)
        L = fit.predict(np.stack([N, D]))
    except (ValueError, TypeError, KeyError, ArithmeticError) as e:
        warnings.warn(f"compute-optimal frontier not drawn: {e}", stacklevel=2)
        return None
    return pd.DataFrame({"flops": C, "n_params": N, "tokens": D, "loss": L})
