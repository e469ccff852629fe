"""The report's closing sections: the stability of the verdicts, capacity or budget, the runs that failed, the
verdict's settings, and what reproduces the report."""
from __future__ import annotations

import hashlib
from pathlib import Path

from analysis.fmt import cell as _fmt
from analysis.report.cells import has_column, missing_note, oneline, rows_other_than
from analysis.report.document import Code, Heading, Note, Para, Strong, Table
from analysis.report.inputs import STATUS_DONE, Sweep


def section_stability(sw: Sweep) -> list:
    """How often each row's verdict survives disjoint sets of runs (`emergence stability`, stability.csv)."""
    blocks: list = [Heading(2, "Stability of the verdicts", "stability")]
    st = sw.stability
    if not has_column(st, "modal"):
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
        rows.append([oneline(r["task"], 300), oneline(r["metric"], 300), oneline(r["modal"], 100), share,
                     oneline(str(r["verdicts"]).replace(";", ", "), 500)])
    blocks.append(Table(["task", "metric", "modal verdict", "share [95%]", "verdict of each set"], rows))
    return blocks


def section_budget(sw: Sweep) -> list:
    """Whether the transition moves with the token budget (`emergence budget`, budget.csv)."""
    blocks: list = [Heading(2, "Capacity or budget?", "budget")]
    b = sw.budget
    if not has_column(b, "evidence"):
        return blocks + [Note("No budget.csv: train some sizes of the transition again with a larger train.tokens "
                              "and run `emergence budget SWEEP_DIR LONGER_SWEEP_DIR` to see whether the jump moves "
                              "with the token budget (a jump that only marks the end of the budget is not one in "
                              "capacity).")]
    blocks.append(Para(["The same sizes trained on more tokens: the runs whose last checkpoint acquired the ability "
                        "under each budget, with Fisher's exact test of the difference."]))
    blocks.extend(Para([oneline(e, 600)]) for e in b["evidence"])
    return blocks


def section_failures(sw: Sweep) -> list:
    blocks: list = [Heading(2, "Runs that failed or diverged", "failures")]
    runs = sw.runs
    n = 0 if runs is None else len(runs)
    bad, why = rows_other_than(sw, runs, "runs.parquet", "status", STATUS_DONE, f"All {n} runs finished.")
    if bad is None:
        return blocks + why
    blocks.append(Para([f"{len(bad)} of {len(runs)} runs did not finish. Their values are left out of every fit "
                        "and figure of final results (their training curves are dotted)."]))
    cols = [c for c in ("run_id", "model", "seed", "status", "wall_s", "error") if c in bad.columns]
    rows = [[oneline(r[c], 500) if c in ("run_id", "model", "status", "error") else _fmt(r[c]) for c in cols]
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
        blocks.append(missing_note(sw, "meta.json"))
    else:
        rows = []
        for k, label in (("command", "command"), ("experiment", "experiment"), ("source", "source"),
                         ("importer", "importer"), ("imported", "imported"), ("git_rev", "git revision"),
                         ("machine", "machine"), ("python", "python"), ("started", "started"),
                         ("finished", "finished"), ("wall_s", "wall time (s)")):
            if k in m and m[k] not in (None, ""):
                rows.append([label, _fmt(m[k]) if isinstance(m[k], (int, float)) else oneline(m[k], 500)])
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
