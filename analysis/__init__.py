"""analysis: scaling-law fits, emergence flags, views, importers, plots and the report, over a tidy results table.

Pure pandas / numpy / scipy / matplotlib: it never imports torch or `emergence`, so it runs on a laptop on results
from this framework or from anywhere else (lm-evaluation-harness JSON, a CSV of published numbers).

    import analysis as an
    df = an.load_results("results/example")
    final = an.schema.final_measured(df[(df.task == "lm") & (df.metric == "loss")])  # last checkpoint per run
    fit = an.fit_law(final, "power", "n_params", "value")
    flags = an.flag_emergence(df)                 # one row per (task, metric), with its evidence
"""
from analysis.backtest import backtest
from analysis.fit import FitResult, compute_optimal, fit_law
from analysis.flags import flag_curve, flag_emergence
from analysis.importers import PYTHIA_SIZES, import_csv, import_lm_eval
from analysis.io import load_results
from analysis.laws import LAWS
from analysis.pipeline import run_analysis
from analysis.resolution import resolution_curves
from analysis.schema import COLUMNS, METRICS, register_metric, validate
from analysis.views import flag_transitions

__all__ = ["load_results", "fit_law", "FitResult", "compute_optimal", "flag_emergence", "flag_curve", "LAWS",
           "flag_transitions", "resolution_curves", "backtest", "import_lm_eval", "import_csv", "PYTHIA_SIZES",
           "run_analysis", "COLUMNS", "METRICS", "register_metric", "validate"]
