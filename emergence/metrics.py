"""What both probe engines share: the fixed held-out probe set of a task, the edit distance, the standard errors,
and the rule that makes a row's value, standard error, n and status.

`emergence.probe` scores our models on the tasks' own token ids, `emergence.textprobe` any causal LM through its
tokenizer; both score the same examples (`probe_set`) with the same statistics, so their rows join example by
example and compare on one scale.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from emergence.tasks import get_task


@lru_cache(maxsize=64)
def probe_set(name: str, n: int, seed: int, shots: int = 0):
    """A task's fixed held-out probe examples, k-shot with `shots` = k (the same for every checkpoint, so built once
    per process)."""
    arrays = get_task(name, shots).heldout_set(n, seed)
    for a in arrays:
        a.flags.writeable = False  # shared between checkpoints: nobody may change it in place
    return arrays


def levenshtein(a: np.ndarray, la: np.ndarray, b: np.ndarray, lb: np.ndarray) -> np.ndarray:
    """Edit distances between rows a[i, :la[i]] and b[i, :lb[i]], by the Wagner-Fischer recurrence run over all rows
    at once (vectorised over examples; the loops are over positions only)."""
    n, A = a.shape
    B = b.shape[1]
    prev = np.tile(np.arange(B + 1), (n, 1))
    result = np.where(la == 0, lb, 0).astype(np.int64)
    for i in range(1, A + 1):
        cur = np.empty_like(prev)
        cur[:, 0] = i
        for j in range(1, B + 1):
            sub = prev[:, j - 1] + (a[:, i - 1] != b[:, j - 1])
            cur[:, j] = np.minimum(np.minimum(prev[:, j] + 1, cur[:, j - 1] + 1), sub)
        prev = cur
        rows = la == i
        result[rows] = prev[rows, lb[rows]]
    return result


def proportion_stderr(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 0.0) / n) if n > 0 else float("nan")


def sem(x: np.ndarray) -> float:
    return float(np.std(x, ddof=1) / math.sqrt(len(x))) if len(x) > 1 else float("nan")


def measurement(value, stderr, n) -> dict:
    """A row's value, stderr, n and status. "ok" needs a finite value and a finite standard error: the analysis
    weighs every point by its noise, and a value whose noise cannot be estimated (one example, say) cannot be
    weighed. Anything else is "not_measured", with NaN."""
    n = int(n) if n is not None and np.isfinite(n) else 0
    if value is not None and stderr is not None and math.isfinite(value) and math.isfinite(stderr) and n >= 1:
        return {"value": float(value), "stderr": float(stderr), "n": n, "status": "ok"}
    return {"value": float("nan"), "stderr": float("nan"), "n": n, "status": "not_measured"}
