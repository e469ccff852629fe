"""The report's document (`build_document`) and its sections on the verdicts: emergent abilities with their
evidence and sample answers, the smooth and flat ones, and the mirage analysis. The other sections are in
`overview` (overview, what was run, scaling laws), `view_sections` (the views and the forecast) and `records`
(stability, budget, failures, reproducibility); every section is importable from here too."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis import jumps, plots, tables
from analysis.budget import emergent_budget
from analysis.fmt import cell as _fmt
from analysis.report.cells import (missing_note, num, oneline, rows_other_than, unusable_note, w0_values,
                                   with_interval, x_value)
from analysis.report.document import Code, FigureRef, Heading, Note, Para, Strong, Table
from analysis.report.figures import emergent_flags, emergent_tasks, fig_key
from analysis.report.inputs import Sweep
from analysis.report.overview import FIRST_SCREEN_ROWS, first_screen, section_overview, section_run, section_scaling
from analysis.report.records import section_budget, section_failures, section_repro, section_stability, settings_para
from analysis.report.view_sections import (LOSS_COLUMNS, TRANSITION_COLUMNS, TRANSITION_NUMERIC, VIEW_SUBSECTIONS,
                                           section_views)

__all__ = ["SAMPLE_EXAMPLES", "FIRST_SCREEN_ROWS", "FLAG_NUMBERS", "SMOOTH_COLUMNS", "CONTINUOUS", "MIRAGE_EXTRA",
           "TRANSITION_COLUMNS", "TRANSITION_NUMERIC", "LOSS_COLUMNS", "VIEW_SUBSECTIONS", "build_document",
           "definition_blocks", "first_screen", "flag_w0", "sample_table", "section_budget", "section_emergent",
           "section_failures", "section_mirage", "section_overview", "section_repro", "section_run",
           "section_scaling", "section_smooth", "section_stability", "section_views", "settings_para"]

SAMPLE_EXAMPLES = 4  # held-out prompts shown per emergent task


def flag_w0(flags: pd.DataFrame | None) -> float:
    """W0 of a flags table: its `w0` column where it has one, else the analysis default."""
    w = w0_values(flags)
    return w[0] if w else float(jumps.W0)


def definition_blocks(flags: pd.DataFrame | None) -> list:
    """The definition of a jump the verdicts apply, with the W0 they used."""
    w0s = w0_values(flags)
    w0 = w0s[0] if w0s else float(jumps.W0)
    blocks: list = [Para([Strong("What counts as a jump."), " ", jumps.DEFINITION.format(w0=w0)])]
    if len(w0s) > 1:
        blocks.append(Note("The flags were not all computed with the same W0 ("
                           + ", ".join(_fmt(v) for v in w0s) + "); each row's own W0 is given with its width."))
    return blocks


def _row_w0(r: pd.Series, default: float) -> float:
    w = num(r.get("w0", np.nan))
    return w if np.isfinite(w) else default


def _width_text(r: pd.Series, w0: float, unit: str = "decades") -> str | None:
    """The 10-90% width of the rise with its one-sided 95% bounds, and where they lie against W0."""
    if "width" not in r.index:
        return None
    text = with_interval(r, "width", "width_lo", "width_hi", _fmt)
    if unit:
        text += f" {unit}"
    lo, hi = num(r.get("width_lo", np.nan)), num(r.get("width_hi", np.nan))
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
    if np.isfinite(num(r.get("share_width", np.nan))):
        details.append(f"rising over {_fmt(r['share_width'])} decades")
    if np.isfinite(num(r.get("per_run_p", np.nan))):
        details.append(f"p = {_fmt(r['per_run_p'])}")
    return text + (f" ({'; '.join(details)})" if details else "")


def _step_text(r: pd.Series) -> str | None:
    """The model-free cross-check: the steepest rise between adjacent sizes against what a W0-wide rise allows."""
    if "step_max" not in r.index:
        return None
    text = f"{_fmt(r.get('step_max'))} of the amplitude"
    if np.isfinite(num(r.get("step_allowed", np.nan))):
        text += f"; a rise W0 wide allows at most {_fmt(r['step_allowed'])}"
    if np.isfinite(num(r.get("step_p", np.nan))):
        text += f" (p = {_fmt(r['step_p'])})"
    return text


def _loss_text(r: pd.Series) -> str | None:
    if "loss_at_jump" not in r.index and "loss_separates" not in r.index:
        return None
    v = num(r.get("loss_at_jump", np.nan))
    sep = r.get("loss_separates", pd.NA)
    if np.isfinite(v):
        return f"{_fmt(v)} nats/token separates the runs that acquired the ability from those that did not"
    if pd.notna(sep) and str(sep).strip() != "" and not tables.is_true(sep):
        return "n/a: no held-out loss separates the runs that acquired the ability from those that did not"
    return "n/a"


def _plain(col: str):
    def get(r: pd.Series, x: str, w0: float):
        if col not in r.index:
            return None
        v = r[col]
        return _fmt(int(v)) if col in ("n_sizes", "n_runs") and np.isfinite(num(v)) else _fmt(v)
    return get


def _location_text(r: pd.Series, x: str, w0: float) -> str | None:
    if "jump_at" not in r.index:
        return None
    return with_interval(r, "jump_at", "jump_lo", "jump_hi", lambda v: x_value(v, x)) + f" ({x})"


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
    ("q (Benjamini-Hochberg)", lambda r, x, w0: _q_text(r)),
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
            if tables.is_true(v) else "no: the jump survives the continuous metrics")


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
    sizes = tables.sizes(s)
    header = ["prompt", "target"] + [f"{r.model} ({plots.fmt_count(r.n_params)})" for r in sizes.itertuples()]
    rows = []
    for ex in ids:
        e = s[s["example_id"] == ex]
        first = e.iloc[0]
        row = [oneline(first["prompt"]), oneline(first["target"])]
        for r in sizes.itertuples():
            g = e[e["n_params"] == r.n_params]
            if g.empty:
                row.append("n/a")
                continue
            if "seed" in g.columns:
                g = g.sort_values("seed")
            out = oneline(g["output"].iloc[0])
            if "correct" in g.columns:
                ok = g["correct"].map(tables.is_true)
                mark = "\u2713" if ok.iloc[0] else "\u2717"
                out = f"{out} {mark}" + (f" ({int(ok.sum())}/{len(ok)} seeds)" if len(ok) > 1 else "")
            row.append(out)
        rows.append(row)
    return Table(header, rows, caption=f"Held-out prompts of {task} and each size's greedy answer at its final "
                                       "checkpoint (first seed; \u2713 correct, \u2717 wrong).")


def section_emergent(sw: Sweep) -> list:
    blocks: list = [Heading(2, "Emergent abilities", "emergent")]
    blocks += definition_blocks(sw.flags)
    blocks.append(settings_para(sw))
    if sw.flags is None:
        blocks.append(missing_note(sw, "flags.csv"))
        blocks.append(Para(["Run ", Code("emergence analyze " + str(sw.folder)), " to flag them."]))
        blocks += [FigureRef("capability"), FigureRef("heatmap")]
        return blocks
    e = emergent_flags(sw)
    if e.empty:
        blocks.append(Para(["No ability was flagged emergent: no curve rises narrower than W0 by its 95% upper bound "
                            "(see the next sections for the verdicts)."]))
    else:
        blocks.append(Para([f"{len(e)} flag(s) in {e['task'].nunique()} task(s). Each rises from floor to ceiling "
                            "in fewer than W0 decades by its 95% upper bound; the tables give the width, where the rise "
                            "is, its p- and q-values, and how single runs behave."]))
    w0 = flag_w0(sw.flags)
    for task in emergent_tasks(sw):
        blocks.append(Heading(3, f"Task {task}", _anchor("task", task)))
        for _, r in e[e["task"].astype(str) == task].iterrows():
            fam = r.get("q_family", np.nan)
            secondary = (" (a secondary metric: q within its own family; it serves the mirage and loss views, not "
                         "a headline claim)" if pd.notna(fam) and str(fam).strip() and str(fam) != "headline" else "")
            blocks.append(Para([Strong(f"{r['metric']} against {r.get('x', 'n_params')}{secondary}:"), " ",
                                oneline(r.get("evidence", ""), 2000) or "no evidence sentence recorded"]))
            blocks.append(_flag_numbers(r, w0))
            said = emergent_budget(sw.budget, r["task"], r["metric"])
            hint = ("" if said != "not checked" else
                    " (`emergence budget` counts runs on all-or-nothing metrics only: see this task's exact match)"
                    if sw.budget is not None else
                    " (train the sizes of the transition again with more tokens and run `emergence budget`: a jump "
                    "that only marks the end of the budget is not one in capacity)")
            blocks.append(Para([Strong("Capacity or budget:"), f" {oneline(said, 600)}{hint}."]))
        blocks.append(FigureRef(fig_key("capability", task)))
        t = sample_table(sw.samples, task)
        if t is not None:
            blocks.append(Para([Strong("Sample answers."), " What each size answers on held-out prompts:"]))
            blocks.append(t)
        elif sw.samples is None:
            blocks.append(missing_note(sw, "samples.parquet"))
        else:
            blocks.append(Note(f"samples.parquet has no answers for task {task}."))
    blocks.append(Heading(3, "All tasks", "all-tasks"))
    blocks.append(Para(["Every task's metrics against size are the figure at the top of the report; below, each "
                        "task's final value per size as a heat map."]))
    blocks += [FigureRef("capability"), FigureRef("heatmap")]
    return blocks


def section_smooth(sw: Sweep) -> list:
    blocks: list = [Heading(2, "Smooth and flat abilities", "smooth")]
    f = sw.flags
    rest, why = rows_other_than(sw, f, "flags.csv", "verdict", "emergent", "Every flagged curve is emergent.")
    if rest is None:
        return blocks + why
    order = {"smooth": 0, "flat": 1, "inconclusive": 2}
    rest["_o"] = rest["verdict"].astype(str).map(order).fillna(3)
    rest = rest.sort_values(["_o", "task", "metric"], kind="stable")
    w0 = flag_w0(f)
    cols = [c for c in SMOOTH_COLUMNS if c[1] is None or set(c[1]) & set(rest.columns)]
    rows = [[str(r["task"]), str(r["metric"]), str(r.get("x", "")), str(r["verdict"])]
            + [get(r, _row_w0(r, w0)) for _, _, get in cols] + [oneline(r.get("evidence", ""), 2000)]
            for _, r in rest.iterrows()]
    counts = rest["verdict"].astype(str).value_counts()
    blocks.append(Para([", ".join(f"{v} {k}" for k, v in counts.items()) + f". Smooth: the rise is wider than "
                        f"W0 = {_fmt(w0)} decades by its 95% lower bound; flat: no change beyond noise; inconclusive: "
                        "the data cannot decide (the evidence says why). Widths are 10% to 90% of the rise, in "
                        "decades of x, with their one-sided 95% bounds."]))
    header = ["task", "metric", "x", "verdict"] + [h for h, _, _ in cols] + ["evidence"]
    blocks.append(Table(header, rows, numeric={4 + i for i, c in enumerate(cols) if c[0] != "single runs"},
                        detail="evidence"))
    return blocks


# Columns of the table of smooth, flat and inconclusive rows: (header, flag columns it needs (None: always), cell).
SMOOTH_COLUMNS = [
    ("width, decades (95% bounds)", ("width",),
     lambda r, w0: with_interval(r, "width", "width_lo", "width_hi", _fmt)),
    ("rise at (95% interval)", ("jump_at",),
     lambda r, w0: with_interval(r, "jump_at", "jump_lo", "jump_hi", lambda v: x_value(v, str(r.get("x", ""))))),
    ("p, H0: W \u2265 W0", ("p_value",), lambda r, w0: _fmt(r.get("p_value", np.nan))),
    ("q (family)", ("q_value",), lambda r, w0: _q_text(r)),
    ("p, H0: W \u2264 W0", ("p_smooth",), lambda r, w0: _fmt(r.get("p_smooth", np.nan))),
    ("single runs", ("per_run", "share_by_size"), lambda r, w0: _per_run_short(r)),
]


def _q_text(r: pd.Series) -> str | None:
    """A q-value with the family it was computed in: the headline metric of every task, or the metric's own."""
    if "q_value" not in r.index:
        return None
    fam = r.get("q_family", np.nan)
    if pd.isna(fam) or not str(fam).strip():
        return _fmt(r.get("q_value", np.nan))
    word = "headline" if str(fam) == "headline" else f"{fam} only"
    return f"{_fmt(r.get('q_value', np.nan))} ({word})"


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
    if (note := unusable_note(sw, f, "flags.csv", ("task", "metric", "verdict"))) is not None:
        return blocks + [note]
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
    w = num(r.get("width", np.nan))
    return str(r.get("verdict", "")) + (f" (W {_fmt(w)})" if not np.isnan(w) else "")


def _anchor(prefix: str, name: str) -> str:
    return fig_key(prefix, name)


def build_document(sw: Sweep) -> list:
    return (section_overview(sw) + section_run(sw) + section_scaling(sw) + section_emergent(sw) + section_smooth(sw)
            + section_mirage(sw) + section_stability(sw) + section_budget(sw) + section_views(sw) + section_failures(sw)
            + section_repro(sw))
