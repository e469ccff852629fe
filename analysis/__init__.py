"""analysis: scaling-law fits, emergence flags, views, importers, plots and the report, over a tidy results table.

Pure pandas / numpy / scipy / matplotlib: it never imports torch or `emergence`, so it runs on a laptop on results
from this framework or from anywhere else (lm-evaluation-harness JSON, a CSV of published numbers).

    import analysis as an
    df = an.load_results("results/example")
    final = an.schema.final_measured(df[(df.task == "lm") & (df.metric == "loss")])  # last checkpoint per run
    fit = an.fit_law(final, "power", "n_params", "value")
    flags = an.flag_emergence(df)                 # one row per (task, metric), with its evidence

Its names load on first use (PEP 562), so importing a small module of it (`analysis.options`, `analysis.schema`)
costs no scipy or matplotlib.
"""
from __future__ import annotations

import importlib

_WHERE = {  # public name -> the module that defines it
    "backtest": "backtest", "FitResult": "fit", "compute_optimal": "fit", "fit_law": "fit",
    "flag_curve": "flags", "flag_emergence": "flags", "PYTHIA_SIZES": "importers", "import_csv": "importers",
    "import_lm_eval": "importers", "load_results": "io", "LAWS": "laws", "run_analysis": "pipeline",
    "resolution_curves": "resolution", "COLUMNS": "schema", "METRICS": "schema", "register_metric": "schema",
    "validate": "schema", "flag_transitions": "views",
}

__all__ = ["load_results", "fit_law", "FitResult", "compute_optimal", "flag_emergence", "flag_curve", "LAWS",
           "flag_transitions", "resolution_curves", "backtest", "import_lm_eval", "import_csv", "PYTHIA_SIZES",
           "run_analysis", "COLUMNS", "METRICS", "register_metric", "validate"]


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(f"analysis.{_WHERE[name]}"), name)
    else:  # a submodule, as `an.schema`
        try:
            value = importlib.import_module(f"analysis.{name}")
        except ModuleNotFoundError:
            raise AttributeError(f"module 'analysis' has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
