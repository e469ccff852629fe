"""A forecast's ladder, read from a results table: one row per run at its final checkpoint, its checkpoints, the
compute of each, and the task's signal-to-noise ratio on it (Heineman et al. 2025). `analysis.forecast` fits on it.

This module imports numpy and pandas only.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import schema

# --------------------------------------------------------------------------------------------------- the ladder
def check_targets(at) -> pd.DataFrame:
    """The target models: a DataFrame (or list of dicts) with positive, finite `n_params` and `tokens` (and `flops`
    where given). Raises ValueError with one line otherwise."""
    at = pd.DataFrame(at)
    if at.empty:
        raise ValueError("no target given: name at least one model to predict, e.g. n_params=1.3e10,tokens=5e12")
    missing = [c for c in ("n_params", "tokens") if c not in at.columns]
    if missing:
        raise ValueError(f"a forecast target needs {' and '.join(missing)}: give each as n_params=...,tokens=...")
    for c in [c for c in ("n_params", "tokens", "flops") if c in at.columns]:
        v = pd.to_numeric(at[c], errors="coerce")
        if not (np.isfinite(v) & (v > 0)).all():
            raise ValueError(f"forecast target {c} must be a positive number, got {list(at[c])}")
        at[c] = v.astype(float)
    return at.reset_index(drop=True)


def split_via(via: str, task: str) -> tuple[str, str]:
    """`via` as (task, metric): "answer_nll" is the forecast task's own loss; "lambada_openai:perplexity" is a loss
    measured on another task of the same runs (a general language-modelling loss, as Gadre et al. 2024 use the C4
    validation loss), joined to the task's scores run by run and checkpoint by checkpoint."""
    if ":" not in via:
        return task, via
    via_task, via_metric = via.rsplit(":", 1)
    if not via_task or not via_metric:
        raise ValueError(f"via {via!r}: give a metric of the task (answer_nll) or TASK:METRIC "
                         "(lambada_openai:perplexity)")
    return via_task, via_metric


def is_perplexity(metric: str) -> bool:
    """A perplexity (`perplexity`, `word_perplexity`, ...): a two-step `via` reads it as its natural log, the loss
    (nats per token, word or byte) whose power law step 1 fits and whose inverse step 2's sigmoid takes."""
    return metric.split(":")[-1].endswith("perplexity")


def _rows_of(df: pd.DataFrame, task: str, metrics: list[str]) -> pd.DataFrame:
    rows = df[df["task"].astype(str) == task]
    if rows.empty:
        known = ", ".join(sorted(df["task"].astype(str).unique())[:12])
        raise ValueError(f"no measured rows for task {task!r}; the table's tasks: {known}")
    for m in metrics:
        if not (rows["metric"].astype(str) == m).any():
            raise ValueError(f"task {task!r} has no measured metric {m!r}; it has "
                             f"{', '.join(sorted(rows['metric'].astype(str).unique()))}")
    return rows[rows["metric"].astype(str).isin(metrics)]


def ladder(results: pd.DataFrame, task: str, metric: str, via: str | None = None
           ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The runs of a ladder for one task: `final` (one row per run at its last checkpoint: run_id, seed, n_params,
    tokens, flops, value and, with `via`, the loss) and `points` (one row per run and checkpoint where both the
    metric and `via` were measured). `via` is a metric of the task or TASK:METRIC of another task (`split_via`); a
    perplexity enters as its log (`is_perplexity`). Raises ValueError with one line when the table has neither."""
    valid = schema.validate(results, where="forecast input")
    df = schema.measured(valid)
    via_task, via_metric = split_via(via, task) if via else (task, None)
    rows = _rows_of(df, task, [metric] + ([via_metric] if via and via_task == task else []))
    if via and via_task != task:
        rows = pd.concat([rows, _rows_of(df, via_task, [via_metric]).assign(task=task, metric=via)])
    keys = ["run_id", "step"]
    wide = rows.pivot_table(index=keys, columns="metric", values="value", aggfunc="mean")
    info = rows.groupby(keys)[["seed", "n_params", "tokens", "flops"]].first()
    examples = rows[rows["metric"].astype(str) == metric].groupby(keys)["n"].first().rename("n_examples")
    wide = wide.join(info).join(examples).reset_index()
    via_column = via_metric if via_task == task else via
    wide = wide.rename(columns={metric: "value", **({via_column: "via"} if via else {})})
    if via and is_perplexity(via_metric):
        wide["via"] = np.log(wide["via"].astype(float))
    wide = wide[np.isfinite(wide["value"].astype(float))]
    # a run's final checkpoint is its last one (`schema.final_checkpoints`): where the metric was not measured
    # there, the run has no final point rather than an earlier, less-trained one
    ends = schema.final_checkpoints(valid)[["run_id", "step"]].drop_duplicates()
    last = wide.merge(ends, on=["run_id", "step"])
    final = last[["run_id", "seed", "n_params", "tokens", "flops", "value", "n_examples"] + (["via"] if via else [])]
    points = wide[np.isfinite(wide["via"].astype(float)) & (wide["via"] > 0)] if via else wide.iloc[:0]
    return final.reset_index(drop=True), points.reset_index(drop=True)


def compute(frame: pd.DataFrame, use_flops: bool) -> np.ndarray:
    """Training compute, on one convention for the ladder and its targets: the `flops` column (`use_flops`: where
    every target gives it; a table's own count may include attention or leave out embeddings), else 6 N D (Kaplan
    et al. 2020) with N all parameters."""
    six_nd = 6.0 * frame["n_params"].to_numpy(float) * frame["tokens"].to_numpy(float)
    if use_flops:
        f = pd.to_numeric(frame["flops"], errors="coerce").to_numpy(float) if "flops" in frame.columns else None
        if f is None or not (np.isfinite(f) & (f > 0)).all():
            raise ValueError("compute from the flops column needs it on every run of the ladder; leave flops out of "
                             "the targets to use 6 N D for both")
        return f
    return six_nd


# ----------------------------------------------------------------------------------------------- signal and noise
SNR_LAST = 5  # a run's last checkpoints, whose scatter is its noise (Heineman et al. 2025: the final few)
SNR_LOW = 5.0  # below it the ladder's whole spread is within 5 noise SDs: neighbouring sizes differ by about one


def task_snr(results: pd.DataFrame, task: str, metric: str, last: int = SNR_LAST) -> dict:
    """The task's signal-to-noise ratio on this ladder (Heineman et al. 2025, "Signal and Noise"): `signal`, the
    spread of the final score across the ladder's models (max - min of each (n_params, tokens) model's mean over its
    runs); `noise`, the larger of two pooled standard deviations (each the root of a mean variance, so that runs
    still on a floor of 0 do not call the noise 0): of each run's last `last` checkpoints (at least 3 of them), and
    of the final scores across each model's runs (models with 2 runs or more). `noise_from` says which was larger:
    "checkpoints" or "seeds", or "none" when neither can be measured, and then `snr` is NaN, never 0. A task that a
    few seeds of a size learn and the others do not has its noise in the seeds, not in a run's last checkpoints.
    Both are in the metric's units, not divided by a mean score as the paper's relative versions are: a mean at a
    floor of 0 (exact match before the rise) would make those undefined."""
    final, _ = ladder(results, task, metric)
    models = final.groupby(["n_params", "tokens"])["value"]
    means = models.mean()
    signal = float(means.max() - means.min()) if len(means) > 1 else float("nan")
    rows = schema.measured(schema.validate(results, where="forecast input"))
    rows = rows[(rows["task"].astype(str) == task) & (rows["metric"].astype(str) == metric) & rows["step"].notna()]
    ends = [g.sort_values("step")["value"].to_numpy(float)[-last:] for _, g in rows.groupby("run_id")]
    within = [float(np.var(v, ddof=1)) for v in ends if len(v) >= 3]
    across = [float(g.var(ddof=1)) for _, g in models if len(g) >= 2]
    found = {name: float(np.sqrt(np.mean(v))) for name, v in (("checkpoints", within), ("seeds", across)) if v}
    source = max(found, key=found.get) if found else "none"
    noise = found.get(source, float("nan"))
    snr = float("nan")
    if np.isfinite(signal) and noise > 0:
        snr = signal / noise
    elif np.isfinite(signal) and noise == 0 and signal > 0:  # every run flat at its end: all signal
        snr = float("inf")
    return {"snr": snr, "signal": signal, "noise": noise, "noise_from": source}


def snr_warning(snr: float, task: str, signal: float = float("nan")) -> str:
    """A sentence for a forecast whose task's SNR is below `SNR_LOW` (or unmeasured); "" otherwise. `signal`
    tells a task flat across the whole ladder (no spread, no noise) from one whose noise could not be measured."""
    if snr == float("inf") or (np.isfinite(snr) and snr >= SNR_LOW):
        return ""
    if not np.isfinite(snr) and signal == 0:
        return (f"{task}: its final score is the same at every size of the ladder and does not move between "
                "checkpoints or seeds: there is no trend to forecast from")
    if not np.isfinite(snr):
        return (f"{task}: its signal-to-noise ratio could not be measured (no run has 3 checkpoints, no model 2 "
                "runs): how much of the ladder's trend is noise is unknown")
    return (f"{task}: signal-to-noise ratio {snr:.1f}, below {SNR_LOW:g}: the final scores across the whole ladder "
            f"spread over fewer than {SNR_LOW:g} times their noise (the scatter of a run's last checkpoints, or of "
            "one size's seeds), so the fitted trend is largely noise and the forecast unreliable (Heineman et al. "
            "2025)")
