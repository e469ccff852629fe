"""The design study behind `cpu_demo`: which sweep design, on 2 CPU cores, resolves a jump in about 10 minutes.

Each design is a set of overrides of `experiment=cpu_demo` (tokens per run, sizes, seeds per size, batch size and
learning rate). `run` trains a design as an ordinary sweep into `results/study/<design>/`, timed end to end (training,
probing, analysis and report), and `table` prints, for every design trained, its wall time and its headline verdicts
(each task's headline metric, `flags.csv` rows of the `headline` family), with their stability over disjoint seed
pools where a pool of that design was trained (`stability.csv`, written by `emergence stability`):

    python -m sweeps.design_study run t4m_9            # one design (minutes), into results/study/t4m_9/
    python -m sweeps.design_study table                # the table of every design trained, as Markdown

A pool is the design trained again with more seeds into its own folder (`emergence sweep ... seed=0,...,29
paths.results=results/study sweep.name=<design>_pool sweep.analyze=false`), then `emergence stability
results/study/<design>_pool --runs-per-size 6 --replicates 5`, whose `stability.csv` the table reads. Without a
`study.json` (written by `run`), a design's wall time is its sweep's `meta.json` `wall_s`. Wall times are those of the machine the
designs ran on, with whatever else it was doing: compare designs run on the same machine.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path("results") / "study"

# design -> overrides of experiment=cpu_demo. Sizes are the one-layer widths of sweeps/model/ (l1dW: width W).
DESIGNS: dict[str, list[str]] = {
    "t2m_10": ["train.tokens=2e6", "model=l1d24,l1d16,l1d14,l1d12,l1d10,l1d8,l1d7,l1d6,l1d5,l1d4"],
    "t4m_9": ["train.tokens=4e6", "model=l1d24,l1d20,l1d16,l1d14,l1d12,l1d10,l1d8,l1d7,l1d6"],
    "t4m_8_b16": ["train.tokens=4e6", "model=l1d24,l1d16,l1d14,l1d12,l1d10,l1d8,l1d7,l1d6", "train.batch_size=16"],
    "t4m_8_lr6": ["train.tokens=4e6", "model=l1d24,l1d16,l1d14,l1d12,l1d10,l1d8,l1d7,l1d6", "train.lr=6e-3"],
    "t8m_6": ["train.tokens=8e6", "model=l1d24,l1d14,l1d10,l1d8,l1d7,l1d6"],
    "t7m_6": ["train.tokens=7e6", "model=l1d24,l1d14,l1d10,l1d8,l1d7,l1d6", "train.ckpt_every=1000"],
    "t6m_6": ["train.tokens=6e6", "model=l1d24,l1d14,l1d10,l1d8,l1d7,l1d6", "train.ckpt_every=1000"],
    "t6m_6_s17": ["train.tokens=6e6", "model=l1d24,l1d14,l1d10,l1d8,l1d7,l1d6", "train.ckpt_every=1000",
                  "data.seq_len=17"],
    # two sizes below the transition (the 30-run pool of t7m_6 found one size on the floor the only thing between
    # add2 and `emergent`), without l1d24
    "t6m_6_l5": ["train.tokens=6e6", "model=l1d14,l1d10,l1d8,l1d7,l1d6,l1d5", "train.ckpt_every=1000"],
}


def folder(design: str) -> Path:
    return ROOT / design


def run(design: str, alone: bool = True) -> float:
    """Train one design as a sweep; its wall time in seconds, end to end. `alone`: whether the machine did nothing
    else meanwhile (recorded beside the time: a time measured beside other work is an upper bound)."""
    if design not in DESIGNS:
        raise SystemExit(f"unknown design {design!r}; one of: {', '.join(DESIGNS)}")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "emergence", "sweep", "experiment=cpu_demo", f"sweep.name={design}",
                    f"paths.results={ROOT}", *DESIGNS[design]], check=True)
    wall = time.perf_counter() - t0
    (folder(design) / "study.json").write_text(json.dumps({"design": design, "overrides": DESIGNS[design],
                                                           "wall_s": wall, "alone": alone}, indent=1))
    return wall


def headline(design: str) -> pd.DataFrame | None:
    """The design's headline rows (task, verdict, W and its interval), with stability where a pool was judged."""
    f = folder(design) / "flags.csv"
    if not f.exists():
        return None
    flags = pd.read_csv(f)
    head = flags[flags["q_family"].astype(str) == "headline"][["task", "metric", "verdict", "width", "width_lo",
                                                                "width_hi", "q_value"]]
    pool = ROOT / f"{design}_pool" / "stability.csv"
    if pool.exists():
        st = pd.read_csv(pool)[["task", "metric", "verdicts", "modal", "modal_share"]]
        head = head.merge(st, on=["task", "metric"], how="left")
    return head


def acquired(design: str, task: str = "add2") -> str:
    """Runs whose final exact match on `task` exceeds 0.5, per size (smallest first), as "k/m" joined by spaces."""
    res = folder(design) / "results.parquet"
    if not res.exists():
        return ""
    from analysis.schema import final_checkpoints

    fin = final_checkpoints(pd.read_parquet(res))
    em = fin[(fin["task"] == task) & (fin["metric"] == "exact_match")]
    return " ".join(f"{int((g['value'] > 0.5).sum())}/{len(g)}" for _, g in em.groupby("n_params"))


def table() -> str:
    """Markdown: design, overrides, wall time, and each task's headline verdict (with its stability)."""
    lines = ["| design | overrides | wall | add2 runs above 0.5 per size | " + " | ".join(["add2", "add3", "add4", "sort"])
             + " |", "|---|---|---|---|---|---|---|---|"]
    beside = False
    for design, overrides in DESIGNS.items():
        head = headline(design)
        if head is None:
            continue
        info, meta = folder(design) / "study.json", folder(design) / "meta.json"
        record = json.loads(info.read_text()) if info.exists() else {}
        wall = record.get("wall_s", json.loads(meta.read_text()).get("wall_s", float("nan")) if meta.exists()
                          else float("nan"))
        mark = "" if record.get("alone", True) else " *"
        beside = beside or bool(mark)
        cells = []
        for task in ("add2", "add3", "add4", "sort"):
            r = head[head["task"] == task]
            if r.empty:
                cells.append("")
                continue
            r = r.iloc[0]
            cell = f"{r['verdict']} W {r['width']:.2f} [{r['width_lo']:.2f}, {r['width_hi']:.2f}]"
            if "verdicts" in r and isinstance(r["verdicts"], str):
                v = r["verdicts"].split(";")
                cell += f"; pools: {v.count(r['verdict'])}/{len(v)} {r['verdict']}"
            cells.append(cell)
        lines.append(f"| {design} | `{' '.join(overrides)}` | {wall / 60:.1f} min{mark} | {acquired(design)} | "
                     + " | ".join(cells) + " |")
    if beside:
        lines.append("\n\\* measured with other work on the machine: an upper bound on the design's own time.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sweeps.design_study", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="verb", required=True)
    r = sub.add_parser("run", help="train one design as a sweep, timed")
    r.add_argument("design", choices=list(DESIGNS))
    r.add_argument("--beside", action="store_true", help="other work ran on the machine meanwhile (noted in the table)")
    sub.add_parser("table", help="the table of every design trained, as Markdown")
    args = p.parse_args(argv)
    if args.verb == "run":
        print(f"{args.design}: {run(args.design, alone=not args.beside):.0f} s")
    else:
        print(table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
