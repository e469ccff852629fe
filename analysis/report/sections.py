"""The report's sections, each a list of document blocks built from what `inputs` read."""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import forecast, jumps, plots, schema, tables
from analysis.budget import emergent_budget
from analysis.fmt import cell as _fmt
from analysis.report.document import Bullets, Code, FigureRef, FirstScreen, Heading, Note, Para, Pre, Strong, Table
from analysis.report.figures import emergent_flags, emergent_tasks, fig_key, loss_panels
from analysis.report.inputs import SCALING_XS, STATUS_DONE, Sweep, VIEW_FILES, lm_loss_fits


SAMPLE_EXAMPLES = 4  # held-out prompts shown per emergent task


# ----------------------------------------------------------------------------------------------------- sections
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


def _unusable(sw: Sweep, frame: pd.DataFrame | None, name: str, columns: tuple[str, ...]) -> Note | None:
    """The note for a table a section cannot use (missing, or without a column it reads); None where it can."""
    if frame is None:
        return _missing(sw, name)
    lacking = [c for c in columns if c not in frame.columns]
    return Note(f"{name} has no {', '.join(repr(c) for c in lacking)} column.") if lacking else None


def _rows_other_than(sw: Sweep, frame: pd.DataFrame | None, name: str, column: str, value: str,
                     when_none: str) -> tuple[pd.DataFrame | None, list]:
    """The rows of a table whose `column` is not `value` (a copy), or None with the block that says why there is
    nothing to show: the table is missing or lacks the column, or every row has that value (`when_none`)."""
    if (note := _unusable(sw, frame, name, (column,))) is not None:
        return None, [note]
    rest = frame[~frame[column].astype(str).eq(value)].copy()
    return (None, [Para([when_none])]) if rest.empty else (rest, [])


def section_overview(sw: Sweep) -> list:
    blocks: list = []
    m = sw.meta
    name = sw.folder.name
    blocks.append(Heading(1, f"Sweep report: {name}"))
    blocks.append(first_screen(sw))
    facts = []
    if sw.runs is not None and "status" in sw.runs.columns:
        st = sw.runs["status"].astype(str).value_counts()
        facts.append([f"{len(sw.runs)} runs: " + ", ".join(f"{v} {k}" for k, v in st.items())])
    if sw.runs is not None and "model" in sw.runs.columns:
        n_sizes = sw.runs["model"].nunique()
        seeds = pd.to_numeric(sw.runs["seed"], errors="coerce").dropna().nunique() if "seed" in sw.runs.columns else 0
        facts.append([f"{n_sizes} model size{'s' if n_sizes != 1 else ''}"
                      + (f" x {seeds} seed(s)" if seeds else " (seeds not recorded)")])
    e = emergent_flags(sw)
    if sw.flags is not None and "verdict" in sw.flags.columns:
        counts = sw.flags["verdict"].astype(str).value_counts()
        facts.append([f"{len(sw.flags)} flags: " + ", ".join(f"{v} {k}" for k, v in counts.items())])
        for _, r in e.iterrows():
            x = str(r.get("x", "n_params"))
            width = (f", rising over {_with_interval(r, 'width', 'width_lo', 'width_hi', _fmt)} decades"
                     if np.isfinite(_num(r.get("width", np.nan))) else "")
            fam = r.get("q_family", np.nan)
            secondary = (" (a secondary metric: q within its own family, not a headline claim)"
                         if pd.notna(fam) and str(fam).strip() and str(fam) != "headline" else "")
            facts.append(["emergent: ", Strong(f"{r['task']} / {r['metric']}"),
                          f" at {_x_value(r.get('jump_at'), x)} ({x}){width}{secondary}"])
    fit = sw.scaling_fits.get("n_params")
    if fit is not None and hasattr(fit, "params") and "alpha" in fit.params:
        lo, hi = fit.ci.get("alpha", (np.nan, np.nan))
        facts.append([f"final loss against parameters: alpha = {_fmt(fit.params['alpha'])} "
                      f"[{_fmt(lo)}, {_fmt(hi)}], E = {_fmt(fit.params['E'])} nats/token"])
    if m.get("finished"):
        facts.append([f"sweep finished {m['finished']}"])
    blocks.append(Bullets(facts) if facts else Note("No summary: neither runs.parquet nor flags.csv was readable."))
    return blocks


def first_screen(sw: Sweep) -> FirstScreen:
    """What a reader opens the report for, on its first screen: what the verdicts mean, each task's headline verdict
    (task, metric, verdict, width with its bounds, where the rise is), and the capability figure."""
    w0s = _w0_values(sw.flags)
    w0 = w0s[0] if w0s else float(jumps.W0)
    blocks: list = [Para([Strong("Verdicts."), f" emergent: the rise from floor to ceiling (10-90%) is narrower than "
                          f"W0 = {_fmt(w0)} decades of x by its 95% upper bound (q ≤ 5%); smooth: wider by its "
                          "95% lower bound; inconclusive: the bounds straddle W0; flat: no rise beyond noise."])]
    f = sw.flags
    if f is None or not {"task", "metric", "verdict"} <= set(f.columns):
        blocks.append(Note("No verdicts: flags.csv is missing or unreadable (see the sections below)."))
        return FirstScreen(blocks, "capability")
    if "q_family" in f.columns and f["q_family"].astype(str).eq("headline").any():
        head = f[f["q_family"].astype(str).eq("headline")]
    else:  # flags written before the headline family: each task's first metric in the headline order
        first = schema.headline_metrics(f)
        head = f[[first.get(str(t)) == str(m) for t, m in zip(f["task"], f["metric"])]]
    order = {"emergent": 0, "smooth": 1, "inconclusive": 2, "flat": 3}
    head = head.assign(_o=head["verdict"].astype(str).map(order).fillna(4)).sort_values(["_o", "task"], kind="stable")
    rest = max(len(head) - FIRST_SCREEN_ROWS, 0)
    x = str(head["x"].iloc[0]) if "x" in head.columns and len(head) else "n_params"
    rows = []
    # did an emergent row's transition move with the token budget? (budget.csv; a column only where one is emergent)
    budget_col = sw.budget is not None and head["verdict"].astype(str).eq("emergent").any()
    for _, r in head.head(FIRST_SCREEN_ROWS).iterrows():
        where = (_with_interval(r, "jump_at", "jump_lo", "jump_hi", lambda v: _x_value(v, x))
                 if np.isfinite(_num(r.get("jump_at", np.nan))) else "")
        width = (_with_interval(r, "width", "width_lo", "width_hi", _fmt)
                 if np.isfinite(_num(r.get("width", np.nan))) else "")
        row = [str(r["task"]), str(r["metric"]), str(r["verdict"]), width, where]
        if budget_col:
            row.append(emergent_budget(sw.budget, r["task"], r["metric"]).split(":")[0]
                       if str(r["verdict"]) == "emergent" else "")
        rows.append(row)
    more = (f"; {rest} more task(s), and every metric, in the sections below" if rest else
            "; every metric is in the sections below")
    header = ["task", "metric", "verdict", "W, decades (95% bounds)", f"where ({x})"]
    if budget_col:
        header.append("with more tokens")
        more += "; with more tokens: the check of `emergence budget` (Capacity or budget?)"
    blocks.append(Table(header, rows, caption=f"The headline metric of each task (its FDR family), emergent "
                        f"first{more}.", numeric={3, 4}))
    return FirstScreen(blocks, "capability")


FIRST_SCREEN_ROWS = 8  # headline rows on the first screen: 8 rows and the figure fit in 900 px at 1400 px wide


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
        fam = tables.family_display(runs)
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
        if seeds:
            blocks.append(Para(["Seeds: ", ", ".join(map(str, seeds)) + "."]))
    if sw.results is not None:
        tasks = tables.capability_tasks(sw.results)
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
    csv_rows = lm_loss_fits(sw.fits)
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
    if pd.notna(sep) and str(sep).strip() != "" and not tables.is_true(sep):
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
                ok = g["correct"].map(tables.is_true)
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
    blocks.append(settings_para(sw))
    if sw.flags is None:
        blocks.append(_missing(sw, "flags.csv"))
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
                                _oneline(r.get("evidence", ""), 2000) or "no evidence sentence recorded"]))
            blocks.append(_flag_numbers(r, w0))
            said = emergent_budget(sw.budget, r["task"], r["metric"])
            hint = ("" if said != "not checked" else
                    " (`emergence budget` counts runs on all-or-nothing metrics only: see this task's exact match)"
                    if sw.budget is not None else
                    " (train the sizes of the transition again with more tokens and run `emergence budget`: a jump "
                    "that only marks the end of the budget is not one in capacity)")
            blocks.append(Para([Strong("Capacity or budget:"), f" {_oneline(said, 600)}{hint}."]))
        blocks.append(FigureRef(fig_key("capability", task)))
        t = sample_table(sw.samples, task)
        if t is not None:
            blocks.append(Para([Strong("Sample answers."), " What each size answers on held-out prompts:"]))
            blocks.append(t)
        elif sw.samples is None:
            blocks.append(_missing(sw, "samples.parquet"))
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
    rest, why = _rows_other_than(sw, f, "flags.csv", "verdict", "emergent", "Every flagged curve is emergent.")
    if rest is None:
        return blocks + why
    order = {"smooth": 0, "flat": 1, "inconclusive": 2}
    rest["_o"] = rest["verdict"].astype(str).map(order).fillna(3)
    rest = rest.sort_values(["_o", "task", "metric"], kind="stable")
    w0 = flag_w0(f)
    cols = [c for c in SMOOTH_COLUMNS if c[1] is None or set(c[1]) & set(rest.columns)]
    rows = [[str(r["task"]), str(r["metric"]), str(r.get("x", "")), str(r["verdict"])]
            + [get(r, _row_w0(r, w0)) for _, _, get in cols] + [_oneline(r.get("evidence", ""), 2000)]
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
     lambda r, w0: _with_interval(r, "width", "width_lo", "width_hi", _fmt)),
    ("rise at (95% interval)", ("jump_at",),
     lambda r, w0: _with_interval(r, "jump_at", "jump_lo", "jump_hi", lambda v: _x_value(v, str(r.get("x", ""))))),
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
    if (note := _unusable(sw, f, "flags.csv", ("task", "metric", "verdict"))) is not None:
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


def _rise_columns(x: str, width_header: str) -> list:
    """The table columns of a rise: where it is (in x's units) and how wide, each with its 95% interval."""
    return [(f"rise at ({x})", "jump_at",
             lambda r: _with_interval(r, "jump_at", "jump_lo", "jump_hi", lambda v: _x_value(v, x))),
            (width_header, "width", lambda r: _with_interval(r, "width", "width_lo", "width_hi", _fmt))]


# Columns of the phase-change table: (header, the column that must be present, cell).
TRANSITION_COLUMNS = [
    ("run id", "run_id", lambda r: _oneline(r.get("run_id", ""), 300)),
    ("task", "task", lambda r: _oneline(r.get("task", ""), 300)),
    ("metric", "metric", lambda r: _oneline(r.get("metric", ""), 300)),
    *_rise_columns("tokens", "width, decades"),
    ("p", "p_value", _cell("p_value")),
    ("q", "q_value", _cell("q_value")),
    ("coincides with induction", "coincides_with_induction", _cell("coincides_with_induction")),
    ("evidence", "evidence", lambda r: _oneline(r.get("evidence", ""), 2000)),
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
    rows = [[_oneline(r[c], 400) if c in text else _fmt(r[c]) for c in cols] for _, r in rv.iterrows()]
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
    if (note := _unusable(sw, bt, "forecast_backtest.csv", ("method", "inside", "origin", "error"))) is not None:
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
        blocks.append(Para([f"{r['task']} {r['metric']}, {r['method']}: {_fmt(100 * r['coverage'])}% of "
                            f"{n} runs inside their 95% prediction interval over {r['n_origins']} "
                            f"origins (each size predicted from every smaller one), the intervals "
                            f"{_fmt(r['mean_width'])} wide on average; mean absolute error {_fmt(r['mae'])}.{split}"
                            f"{warn}"]))
    if _has(pred, "predicted"):
        cols = [c for c in ("task", "metric", "n_params", "tokens", "predicted", "lo", "hi", "via_predicted",
                            "rise_unseen", "method") if c in pred.columns]
        text = ("task", "metric", "method", "rise_unseen")
        rows = [[_oneline(r[c], 200) if c in text else _fmt(r[c]) for c in cols] for _, r in pred.iterrows()]
        blocks.append(Table([{"via_predicted": "loss predicted", "rise_unseen": "rise unseen"}.get(c, c)
                             for c in cols], rows, numeric=_numeric_except(cols, text)))
    blocks.append(FigureRef("forecast"))
    return blocks


def _has(frame: pd.DataFrame | None, column: str) -> bool:
    """Whether an optional table (written on demand) is there, has rows and the column a section reads."""
    return frame is not None and not frame.empty and column in frame.columns


def section_stability(sw: Sweep) -> list:
    """How often each row's verdict survives disjoint sets of runs (`emergence stability`, stability.csv)."""
    blocks: list = [Heading(2, "Stability of the verdicts", "stability")]
    st = sw.stability
    if not _has(st, "modal"):
        return blocks + [Note("No stability.csv: `emergence stability SWEEP_DIR --runs-per-size S` judges disjoint "
                              "sets of S runs per size and counts how often each verdict comes out.")]
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
    if not _has(b, "evidence"):
        return blocks + [Note("No budget.csv: train some sizes of the transition again with a larger train.tokens "
                              "and run `emergence budget SWEEP_DIR LONGER_SWEEP_DIR` to see whether the jump moves "
                              "with the token budget (a jump that only marks the end of the budget is not one in "
                              "capacity).")]
    blocks.append(Para(["The same sizes trained on more tokens: the runs whose last checkpoint acquired the ability "
                        "under each budget, with Fisher's exact test of the difference."]))
    blocks.extend(Para([_oneline(e, 600)]) for e in b["evidence"])
    return blocks


def section_failures(sw: Sweep) -> list:
    blocks: list = [Heading(2, "Runs that failed or diverged", "failures")]
    runs = sw.runs
    n = 0 if runs is None else len(runs)
    bad, why = _rows_other_than(sw, runs, "runs.parquet", "status", STATUS_DONE, f"All {n} runs finished.")
    if bad is None:
        return blocks + why
    blocks.append(Para([f"{len(bad)} of {len(runs)} runs did not finish. Their values are left out of every fit "
                        "and figure of final results (their training curves are dotted)."]))
    cols = [c for c in ("run_id", "model", "seed", "status", "wall_s", "error") if c in bad.columns]
    rows = [[_oneline(r[c], 500) if c in ("run_id", "model", "status", "error") else _fmt(r[c]) for c in cols]
            for _, r in bad.iterrows()]
    blocks.append(Table([{"wall_s": "wall (s)", "error": "why"}.get(c, c) for c in cols], rows))
    return blocks


def settings_para(sw: Sweep):
    """The verdict's settings and where each came from (flag_options.json), or why they are not known."""
    if sw.settings is None:
        why = sw.notes.get("flag_options.json", "not found")
        return Note(f"flag_options.json {why}: the settings are those in the flags table's columns (w0).")
    return Para([Strong("Settings."), " " + "; ".join(sw.settings.describe()) + "."])


def section_repro(sw: Sweep) -> list:
    blocks: list = [Heading(2, "Reproducibility", "reproducibility")]
    m = sw.meta
    if not m:
        blocks.append(_missing(sw, "meta.json"))
    else:
        rows = []
        for k, label in (("command", "command"), ("experiment", "experiment"), ("source", "source"),
                         ("importer", "importer"), ("imported", "imported"), ("git_rev", "git revision"),
                         ("machine", "machine"), ("python", "python"), ("started", "started"),
                         ("finished", "finished"), ("wall_s", "wall time (s)")):
            if k in m and m[k] not in (None, ""):
                rows.append([label, _fmt(m[k]) if isinstance(m[k], (int, float)) else _oneline(m[k], 500)])
        blocks.append(Table(["", ""], rows))
        blocks.append(settings_para(sw))
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
    return fig_key(prefix, name)


def build_document(sw: Sweep) -> list:
    return (section_overview(sw) + section_run(sw) + section_scaling(sw) + section_emergent(sw) + section_smooth(sw)
            + section_mirage(sw) + section_stability(sw) + section_budget(sw) + section_views(sw) + section_failures(sw)
            + section_repro(sw))
