"""The report's opening sections: the overview with its first screen (each task's headline verdict), what was run,
and the scaling laws found."""
from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import jumps, plots, schema, tables
from analysis.budget import emergent_budget
from analysis.fmt import cell as _fmt
from analysis.report.cells import missing_note, num, w0_values, with_interval, x_value
from analysis.report.document import Bullets, Code, FigureRef, FirstScreen, Heading, Note, Para, Pre, Strong, Table
from analysis.report.figures import emergent_flags
from analysis.report.inputs import SCALING_XS, Sweep, lm_loss_fits


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
            width = (f", rising over {with_interval(r, 'width', 'width_lo', 'width_hi', _fmt)} decades"
                     if np.isfinite(num(r.get("width", np.nan))) else "")
            fam = r.get("q_family", np.nan)
            secondary = (" (a secondary metric: q within its own family, not a headline claim)"
                         if pd.notna(fam) and str(fam).strip() and str(fam) != "headline" else "")
            facts.append(["emergent: ", Strong(f"{r['task']} / {r['metric']}"),
                          f" at {x_value(r.get('jump_at'), x)} ({x}){width}{secondary}"])
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
    w0s = w0_values(sw.flags)
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
        where = (with_interval(r, "jump_at", "jump_lo", "jump_hi", lambda v: x_value(v, x))
                 if np.isfinite(num(r.get("jump_at", np.nan))) else "")
        width = (with_interval(r, "width", "width_lo", "width_hi", _fmt)
                 if np.isfinite(num(r.get("width", np.nan))) else "")
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
        blocks.append(missing_note(sw, "meta.json"))
    runs = sw.runs
    if runs is None:
        blocks.append(missing_note(sw, "runs.parquet"))
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
        blocks.append(missing_note(sw, "results.parquet"))
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
