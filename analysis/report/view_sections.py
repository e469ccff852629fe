"""The report's section on the other views of emergence: phase changes along training, the threshold against
held-out loss, the backtest, infinite resolution, and the forecast with how often its intervals held."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis import compare, forecast, ladder, plots
from analysis.fmt import cell as _fmt
from analysis.report.cells import has_column, oneline, unusable_note, with_interval, x_value
from analysis.report.document import FigureRef, Heading, Note, Para, Table
from analysis.report.figures import loss_panels
from analysis.report.inputs import Sweep, VIEW_FILES


def _view_note(sw: Sweep, key: str, consequence: str = "") -> Note:
    """Why a view is not shown, and how to get it when its file was never written."""
    name = VIEW_FILES[key]
    why = sw.notes.get(name, "is not available")
    hint = f" (run `emergence analyze {sw.folder} --view {key}`)" if why == "not found" else ""
    return Note(f"{name} {why}{consequence}{hint}.")


def _cell(col: str, fmt=None):
    return lambda r: (fmt or _fmt)(r.get(col, np.nan))


def _rise_columns(x: str, width_header: str) -> list:
    """The table columns of a rise: where it is (in x's units) and how wide, each with its 95% interval."""
    return [(f"rise at ({x})", "jump_at",
             lambda r: with_interval(r, "jump_at", "jump_lo", "jump_hi", lambda v: x_value(v, x))),
            (width_header, "width", lambda r: with_interval(r, "width", "width_lo", "width_hi", _fmt))]


# Columns of the phase-change table: (header, the column that must be present, cell).
TRANSITION_COLUMNS = [
    ("run id", "run_id", lambda r: oneline(r.get("run_id", ""), 300)),
    ("task", "task", lambda r: oneline(r.get("task", ""), 300)),
    ("metric", "metric", lambda r: oneline(r.get("metric", ""), 300)),
    *_rise_columns("tokens", "width, decades"),
    ("p", "p_value", _cell("p_value")),
    ("q", "q_value", _cell("q_value")),
    ("coincides with induction", "coincides_with_induction", _cell("coincides_with_induction")),
    ("evidence", "evidence", lambda r: oneline(r.get("evidence", ""), 2000)),
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
    *_rise_columns("loss", "width, nats of loss"),
    ("q", "q_value", _cell("q_value")),
    ("size still matters", "size_still_matters", _cell("size_still_matters")),
    ("size explains p", "size_explains_p", _cell("size_explains_p")),
]


def _numeric_except(cols, text) -> set[int]:
    """Indices of the table columns shown right-aligned: all but the text ones."""
    return {i for i, c in enumerate(cols) if c not in text}


def _transitions_body(tr: pd.DataFrame) -> list:
    if "verdict" not in tr.columns:
        return []
    jumps = tr[tr["verdict"].astype(str) == "emergent"]
    blocks: list = [Para([f"{len(jumps)} of {len(tr)} run x task x metric curves change abruptly during training."])]
    if len(jumps):
        cols = [c for c in TRANSITION_COLUMNS if c[1] in jumps.columns]
        rows = [[get(r) for _, _, get in cols] for _, r in jumps.head(30).iterrows()]
        blocks.append(Table([h for h, _, _ in cols], rows,
                            caption="Phase changes (first 30); x = training tokens, widths in decades of tokens, "
                                    "intervals 95%.",
                            numeric={i for i, c in enumerate(cols) if c[1] in TRANSITION_NUMERIC},
                            detail="evidence"))
    return blocks


def _consecutive_blocks(sw: Sweep) -> list:
    """Which consecutive checkpoints changed exact match beyond chance, each pair of a run tested on the same
    examples (`analysis.compare.consecutive_changes`), with the BH family of every pair in the sweep."""
    if sw.instances is None or not len(sw.instances):
        return []
    try:
        ch = compare.consecutive_changes(sw.instances)
    except ValueError as e:
        return [Note(f"Consecutive checkpoints could not be compared: {e}.")]
    if ch.empty:
        return []
    sig = ch[ch["q_value"] <= 0.05]
    rises, falls = sig[sig["diff"] > 0], sig[sig["diff"] < 0]
    blocks: list = [Para([f"Consecutive checkpoints, paired: of {len(ch)} pairs of a run's consecutive checkpoints "
                          f"(each task), {len(rises)} raised exact match and {len(falls)} lowered it beyond chance "
                          "(McNemar's exact test on the same examples, Benjamini-Hochberg q ≤ 0.05 across every "
                          "pair; `emergence compare` tests any two)."])]
    rows = []
    for task, g in ch.groupby("task", sort=True):
        up = rises[rises["task"] == task]
        busiest = (up.groupby(["step_a", "step_b"]).size().sort_values(ascending=False, kind="stable")
                   if len(up) else None)
        where = (f"{plots.fmt_count(busiest.index[0][0])} → {plots.fmt_count(busiest.index[0][1])} "
                 f"({int(busiest.iloc[0])} run{'s' if busiest.iloc[0] > 1 else ''})" if busiest is not None else "none")
        rows.append([str(task), str(len(g)), str(len(up)), str(int((falls["task"] == task).sum())),
                     f"{up['run_id'].nunique()} of {g['run_id'].nunique()}", where])
    blocks.append(Table(["task", "pairs", "rises", "falls", "runs with a rise", "most rises between steps"], rows,
                        numeric={1, 2, 3}))
    return blocks


def _loss_body(lv: pd.DataFrame) -> list:
    cols = [c for c in LOSS_COLUMNS if c[1] in lv.columns]
    rows = [[get(r) for _, _, get in cols] for _, r in loss_panels(lv, n=len(lv)).iterrows()]
    return [Para(["Du et al. 2024: an ability is emergent in loss if it is absent above a loss threshold \u03b7 and "
                  "appears below it; \u201csize still matters\u201d tests whether model size explains the metric "
                  "once the loss is known."]),
            Table([h for h, _, _ in cols], rows, numeric=_numeric_except([c[1] for c in cols],
                                                                        ("task", "metric", "verdict")))]


def _backtest_body(bt: pd.DataFrame) -> list:
    cols = [c for c in ("task", "metric", "law", "x_value", "n_fit", "prediction", "lo", "hi", "actual", "error",
                        "inside") if c in bt.columns]
    rows = [[plots.fmt_count(r[c]) if c == "x_value" else str(r[c]) if c in ("task", "metric", "law")
             else _fmt(r[c]) for c in cols] for _, r in bt.iterrows()]
    names = {"x_value": "held-out size", "n_fit": "sizes fitted", "inside": "inside interval"}
    return [Para(["Each law is fitted on all but the largest sizes and predicts them: an interval that misses the "
                  "measured value marks a capability the smaller models did not foretell."]),
            Table([names.get(c, c) for c in cols], rows, numeric=_numeric_except(cols, ("task", "metric", "law")))]


def _resolution_body(rv: pd.DataFrame) -> list:
    text = ("task", "shape", "evidence")
    cols = [c for c in ("task", "shape", "slope", "curvature", "curvature_lo", "curvature_hi", "n_sizes",
                        "evidence") if c in rv.columns]
    rows = [[oneline(r[c], 400) if c in text else _fmt(r[c]) for c in cols] for _, r in rv.iterrows()]
    return [Table([c.replace("_", " ") for c in cols], rows, numeric=_numeric_except(cols, text), detail="evidence")]


# the views' subsections: (view, title, anchor, body from its table, figure, what a missing table means)
VIEW_SUBSECTIONS = [
    ("transitions", "Training curves and phase changes", "training", _transitions_body, "training",
     ": no phase changes are marked"),
    ("loss", "Against held-out loss", "loss-view", _loss_body, "loss_threshold", ""),
    ("backtest", "Backtest", "backtest", _backtest_body, "backtest", ""),
    ("resolution", "Infinite resolution", "resolution", _resolution_body, "resolution", ""),
]


def section_views(sw: Sweep) -> list:
    blocks: list = [Heading(2, "Along training, against loss, at full resolution, and predicted ahead", "views")]
    for key, title, anchor, body, figure, consequence in VIEW_SUBSECTIONS:
        blocks.append(Heading(3, title, anchor))
        frame = sw.views.get(key)
        if frame is None:
            blocks.append(_view_note(sw, key, consequence))
        else:
            blocks += body(frame)
        if key == "transitions":
            blocks += _consecutive_blocks(sw)
        if frame is not None or key == "transitions":  # the training curves are drawn without transitions too
            blocks.append(FigureRef(figure))
    return blocks + _forecast_blocks(sw)


def _forecast_blocks(sw: Sweep) -> list:
    """`emergence forecast`'s predictions and how often its intervals held on this ladder (its backtest)."""
    blocks: list = [Heading(3, "Forecast", "forecast")]
    bt, pred = sw.forecast_backtest, sw.forecast
    if bt is None:
        return blocks + [Note("No forecast_backtest.csv: `emergence forecast SWEEP_DIR --task T --metric M --via "
                              "answer_nll --at n_params=N,tokens=D` predicts a larger model and backtests the "
                              "prediction on this ladder.")]
    if (note := unusable_note(sw, bt, "forecast_backtest.csv", ("method", "inside", "origin", "error"))) is not None:
        return blocks + [note]
    cov = forecast.coverage(bt)
    if cov.empty:
        blocks.append(Para(["Below its largest size the ladder has too few sizes or runs to fit: the forecast's "
                            "interval is untested."]))
    for _, r in cov.iterrows():
        unseen, n = int(r["n_rise_unseen"]), int(r["n_predicted"])
        # a 95% interval should hold 95% of the runs; fewer than its binomial 2-sigma lower limit is a warning,
        # judged on the intervals of a ladder that had seen the rise (the others hold by spanning the range)
        share, n_seen = (r["coverage_seen"], n - unseen) if n > unseen else (r["coverage"], n)
        low = 0.95 - 2 * math.sqrt(0.95 * 0.05 / max(n_seen, 1))
        warn = (" These intervals held far less often than 95% on this ladder: they are too narrow here, and a "
                "forecast from it is more certain than it should be." if share < low else "")
        split = (f" {unseen} of them lay past sizes that had not begun the rise: their intervals reach the ceiling. "
                 f"Of the other {n - unseen}, {_fmt(100 * r['coverage_seen'])}% held, "
                 f"{_fmt(r['mean_width_seen'])} wide on average." if 0 < unseen < n else
                 " Every one lay past sizes that had not begun the rise: their intervals reach the ceiling, and "
                 "say only that." if unseen == n else "")
        cal = (f" Widened by the drift of the origins before each (as emergence forecast widens its own), "
               f"{_fmt(100 * r['coverage_cal_seen'])}% of those {int(r['n_cal'])} held, "
               f"{_fmt(r['mean_width_cal_seen'])} wide." if r.get("n_cal", 0) else "")
        blocks.append(Para([f"{r['task']} {r['metric']}, {r['method']}: {_fmt(100 * r['coverage'])}% of "
                            f"{n} runs inside their 95% prediction interval over {r['n_origins']} "
                            f"origins (each size predicted from every smaller one), the intervals "
                            f"{_fmt(r['mean_width'])} wide on average; mean absolute error {_fmt(r['mae'])}.{split}"
                            f"{cal}{warn}"]))
    if has_column(pred, "predicted"):
        cols = [c for c in ("task", "metric", "n_params", "tokens", "predicted", "lo", "hi", "via_predicted",
                            "rise_unseen", "method", "interval_from", "snr") if c in pred.columns]
        text = ("task", "metric", "method", "rise_unseen", "interval_from")
        rows = [[oneline(r[c], 200) if c in text else _fmt(r[c]) for c in cols] for _, r in pred.iterrows()]
        blocks.append(Table([{"via_predicted": "loss predicted", "rise_unseen": "rise unseen",
                              "interval_from": "interval from", "snr": "signal-to-noise"}.get(c, c) for c in cols], rows,
                            numeric=_numeric_except(cols, text)))
        if has_column(pred, "chosen_by"):  # forecasts of earlier versions say nothing of the choice
            for (task, metric, method, why), _ in pred.groupby(["task", "metric", "method", "chosen_by"], sort=True):
                blocks.append(Para([f"Method for {task} {metric}: {oneline(method, 200)}; {oneline(why, 300)}."]))
        if {"snr", "snr_signal", "snr_noise_from"} <= set(pred.columns):
            measured = pred[pred["snr_noise_from"].notna()]  # rows a forecast of an earlier version wrote have none
            for (task, metric), g in measured.groupby(["task", "metric"], sort=True):
                snr, signal = (float(pd.to_numeric(g[c]).iloc[0]) for c in ("snr", "snr_signal"))
                if warning := ladder.snr_warning(snr, str(task), signal):
                    blocks.append(Para([f"Warning ({metric}): {warning}."]))
    blocks.append(FigureRef("forecast"))
    return blocks
