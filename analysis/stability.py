"""How stable is a verdict? Judge disjoint sets of runs of the same sweep and count how often each verdict comes out.

`split_runs(df, runs_per_size, replicates)` deals each size's runs into disjoint sets without retraining: at every
size the runs are shuffled (seeded) and dealt `runs_per_size` at a time, and replicate j takes the j-th set at
every size. A pool of 30 runs per size measures the stability of a 6-run verdict in 5 replicates. Every run is its
own training run (a seed index means nothing across sizes), so the sets are formed per size, never by seed index.

`stability(df, runs_per_size, ...)` judges every replicate with `analysis.flags.flag_emergence` and writes one row
per (task, metric): each replicate's verdict, the modal verdict, and its share with a Wilson 95% interval (Wilson
1927, "Probable inference, the law of succession, and statistical inference", JASA 22:209).

This module imports numpy and pandas only (and the analysis package).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import schema
from analysis.flags import SIZE_AXES, flag_emergence
from analysis.stats import wilson

VERDICT_ORDER = ("emergent", "smooth", "flat", "inconclusive")  # breaks ties of the modal verdict, in this order
COLUMNS = ["task", "metric", "replicates", "runs_per_size", "verdicts", "modal", "modal_share", "modal_lo",
           "modal_hi", "n_emergent", "n_smooth", "n_flat", "n_inconclusive"]


def split_runs(df: pd.DataFrame, runs_per_size: int, replicates: int | None = None, *, x: str = "n_params",
               seed: int = 0) -> list[list[str]]:
    """Disjoint sets of run ids, one per replicate, each with `runs_per_size` runs of every size.

    replicates: how many sets (default: as many as the smallest size's runs allow). Runs that failed or diverged,
    or have no measured row, take no part. Raises ValueError when fewer than 2 replicates fit.
    """
    if not isinstance(runs_per_size, (int, np.integer)) or runs_per_size < 1:
        raise ValueError(f"runs_per_size must be a whole number >= 1, got {runs_per_size!r}")
    if x not in SIZE_AXES:
        raise ValueError(f"stability splits the runs of each size: x must be one of {', '.join(SIZE_AXES)}")
    rows = schema.measured(schema.validate(df, where="stability input"))
    runs = rows[["run_id", x]].dropna().drop_duplicates("run_id")
    if runs.empty:
        raise ValueError("the results table has no measured runs to split")
    per_size = runs.groupby(x)["run_id"].apply(lambda s: sorted(s.astype(str)))
    fewest = int(per_size.map(len).min())
    most = fewest // runs_per_size
    k = most if replicates is None else int(replicates)
    if k < 2 or k > most:
        raise ValueError(f"{runs_per_size} runs per size in {k if replicates else 'at least 2'} disjoint sets needs "
                         f"{runs_per_size * max(k, 2)} runs at every size, but the smallest pool has {fewest} "
                         f"(at {x}={per_size.map(len).idxmin()}); train more seeds or ask for fewer runs per size")
    rng = np.random.default_rng(seed)
    sets: list[list[str]] = [[] for _ in range(k)]
    for size in sorted(per_size.index):
        ids = list(per_size[size])
        order = rng.permutation(len(ids))
        for j in range(k):
            sets[j] += [ids[i] for i in order[j * runs_per_size:(j + 1) * runs_per_size]]
    return sets


def modal(verdicts) -> tuple[str, float, float, float]:
    """The most frequent verdict (ties broken in VERDICT_ORDER), its share, and the share's Wilson 95% interval."""
    v = [str(s) for s in verdicts]
    if not v:
        return "", np.nan, np.nan, np.nan
    counts = {k: v.count(k) for k in VERDICT_ORDER}
    for other in sorted(set(v) - set(counts)):
        counts[other] = v.count(other)
    best = max(counts, key=lambda k: (counts[k], -list(counts).index(k)))
    lo, hi = wilson(counts[best], len(v))
    return best, counts[best] / len(v), lo, hi


def stability(df: pd.DataFrame, runs_per_size: int, replicates: int | None = None, *, x: str = "n_params",
              seed: int = 0, **flag_options) -> pd.DataFrame:
    """Judge each replicate of `split_runs` and summarise every (task, metric): the stability table (COLUMNS).

    `verdicts` lists each replicate's verdict in order, separated by ";". flag_options go to `flag_emergence`.
    """
    sets = split_runs(df, runs_per_size, replicates, x=x, seed=seed)
    per_rep = []
    for j, ids in enumerate(sets):
        sub = df[df["run_id"].astype(str).isin(ids)]
        f = flag_emergence(sub, x=x, **flag_options)[["task", "metric", "verdict"]]
        per_rep.append(f.assign(replicate=j))
    allv = pd.concat(per_rep, ignore_index=True)
    rows = []
    for (task, metric), g in allv.groupby(["task", "metric"], sort=True):
        v = list(g.sort_values("replicate")["verdict"])
        m, share, lo, hi = modal(v)
        rows.append({"task": task, "metric": metric, "replicates": len(sets), "runs_per_size": runs_per_size,
                     "verdicts": ";".join(v), "modal": m, "modal_share": share, "modal_lo": lo, "modal_hi": hi,
                     **{f"n_{k}": v.count(k) for k in VERDICT_ORDER}})
    return pd.DataFrame(rows, columns=COLUMNS)
