"""The results table: one tidy row per run x checkpoint x task x metric, defined once, here.

Everything that writes results (the probe engine, the importers) and everything that reads them (fits, flags, plots,
report) goes through these definitions. A value that could not be measured is NaN with a status that says why, never
0.0: a 0.0 reads as "not yet emerged".

This module imports pandas and numpy only, so that `analysis/` runs without torch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

# column -> pandas dtype. Integers that may be missing (imported tables) use the nullable Int64.
COLUMNS: dict[str, str] = {
    "sweep": "string",
    "run_id": "string",
    "model": "string",
    "n_params": "Int64",
    "n_params_nonembed": "Int64",
    "n_layer": "Int64",
    "d_model": "Int64",
    "seed": "Int64",
    "step": "Int64",
    "tokens": "float64",
    "flops": "float64",
    "task": "string",
    "metric": "string",
    "value": "float64",
    "stderr": "float64",
    "n": "Int64",
    "status": "string",
}
REQUIRED = list(COLUMNS)

# Why a row's value is what it is. "ok" is the only status whose value is a measurement; every other one has NaN.
STATUSES = {
    "ok": "measured",
    "not_measured": "the metric could not be computed for this checkpoint (for example no examples)",
    "diverged": "the run diverged (NaN or inf loss) before this point",
    "failed": "the run raised an error",
    "corrupt_checkpoint": "the checkpoint failed its checksum and was skipped",
    "imported": "taken from another tool's results; measured there",
    "duplicate_weights": "the revision's weights are another revision's of the same model (a step name serving "
                         "another step's checkpoint); not probed",
}


@dataclass(frozen=True)
class Metric:
    """What a metric is: its direction, how per-example values aggregate, and whether it is continuous.

    `discontinuous` metrics (exact match) are all-or-nothing per example; Schaeffer et al. 2023 ("Are Emergent
    Abilities of Large Language Models a Mirage?") show such metrics can make a smooth underlying improvement look like
    a jump, so every discontinuous metric is recorded beside continuous ones of the same task.
    """

    name: str
    higher_is_better: bool
    aggregation: str  # "mean" over examples (a proportion or a mean of per-example values)
    discontinuous: bool
    description: str
    lower_bound: float | None = None
    upper_bound: float | None = None


METRICS: dict[str, Metric] = {}


def register_metric(name: str, *, higher_is_better: bool, aggregation: str = "mean", discontinuous: bool = False,
                    description: str = "", lower_bound: float | None = None,
                    upper_bound: float | None = None) -> Metric:
    """Register a metric's direction and aggregation (lm-evaluation-harness's `register_metric`, as data)."""
    m = Metric(name, higher_is_better, aggregation, discontinuous, description, lower_bound, upper_bound)
    METRICS[name] = m
    return m


register_metric("exact_match", higher_is_better=True, discontinuous=True, lower_bound=0.0, upper_bound=1.0,
                description="greedy decoding reproduces the whole answer and its end token (proportion)")
register_metric("token_accuracy", higher_is_better=True, lower_bound=0.0, upper_bound=1.0,
                description="teacher-forced argmax equals the target, per answer token (proportion)")
register_metric("answer_nll", higher_is_better=False, lower_bound=0.0,
                description="mean negative log-likelihood per answer token, nats")
register_metric("brier", higher_is_better=False, lower_bound=0.0, upper_bound=2.0,
                description="Brier score per answer token over the vocabulary: sum_v (p_v - 1[v = target])^2")
register_metric("edit_distance", higher_is_better=False, lower_bound=0.0, upper_bound=1.0,
                description="normalised Levenshtein distance between the greedy generation and the answer")
register_metric("loss", higher_is_better=False, lower_bound=0.0,
                description="held-out language-model loss, nats per token")
register_metric("icl_score", higher_is_better=False,
                description="in-context-learning score (Olsson et al. 2022): loss on a late token of a repeated "
                            "random sequence minus loss on an early one, nats; more negative = more in-context learning")
register_metric("prefix_matching", higher_is_better=True, lower_bound=0.0, upper_bound=1.0,
                description="strongest head's mean attention to the token after the previous occurrence of the "
                            "current token (Olsson et al. 2022)")
# Generic accuracy-like metrics used by imported tables (lm-evaluation-harness: acc, acc_norm, ...).
register_metric("acc", higher_is_better=True, lower_bound=0.0, upper_bound=1.0, description="accuracy (imported)")
register_metric("acc_norm", higher_is_better=True, lower_bound=0.0, upper_bound=1.0,
                description="accuracy with each choice's log-likelihood divided by its length in bytes "
                            "(lm-evaluation-harness's acc_norm; imported)")
register_metric("perplexity", higher_is_better=False, lower_bound=1.0, description="perplexity (imported)")
register_metric("char_accuracy", higher_is_better=True, lower_bound=0.0, upper_bound=1.0,
                description="share of the answer's characters the greedy generation matches position by position "
                            "(tokenizer-independent; models probed through a tokenizer)")
register_metric("answer_nll_char", higher_is_better=False, lower_bound=0.0,
                description="teacher-forced negative log-likelihood of the answer per answer character, nats "
                            "(tokenizer-independent; models probed through a tokenizer)")
register_metric("bits_per_byte", higher_is_better=False, lower_bound=0.0,
                description="language-model loss in bits per UTF-8 byte of text (imported): nats per token x tokens "
                            "per byte / ln 2, comparable across tokenizers")


# A task's headline metric where no registry declares one: the first of these the task measures, all-or-nothing
# scores first (declared here, before any data). The false-discovery-rate family of `emergent` claims is the
# headline metric of each task; every other metric is its own family (`analysis.flags.flag_emergence`).
HEADLINE_ORDER = ("exact_match", "acc", "acc_norm", "char_accuracy", "prefix_matching", "token_accuracy", "loss",
                  "bits_per_byte", "perplexity", "icl_score")


def headline_metrics(df: pd.DataFrame, declared: dict | None = None) -> dict[str, str]:
    """{task: headline metric} for every task of a results table: the metric `declared` for it (a task registry's,
    where the task measures it), else the first of `HEADLINE_ORDER` it measures, else its first metric by name."""
    declared = dict(declared or {})
    out = {}
    for task, g in df.groupby(df["task"].astype(str), sort=True):
        present = set(g["metric"].dropna().astype(str))
        if not present:
            continue
        if declared.get(task) in present:
            out[task] = declared[task]
            continue
        out[task] = next((mt for mt in HEADLINE_ORDER if mt in present), sorted(present)[0])
    return out


def higher_is_better(metric: str) -> bool:
    """Direction of a metric; unknown metrics are refused rather than guessed."""
    try:
        return METRICS[metric].higher_is_better
    except KeyError:
        raise ValueError(f"unknown metric {metric!r}: register it with analysis.schema.register_metric("
                         f"{metric!r}, higher_is_better=...) so its direction is known") from None


def coerce(df: pd.DataFrame) -> pd.DataFrame:
    """Cast a table that has every required column to the schema's dtypes (extra columns are kept)."""
    out = df.copy()
    for col, dtype in COLUMNS.items():
        if dtype in ("Int64",):
            vals = pd.to_numeric(out[col], errors="raise")
            as_float = np.asarray(vals, dtype=float)
            if np.any(np.isinf(as_float)) or np.any(np.abs(as_float[np.isfinite(as_float)]) >= 2.0**63):
                raise ValueError(f"column {col!r} must hold whole numbers, found an infinite or too large value")
            if np.any(np.isfinite(as_float) & (as_float % 1 != 0)):
                raise ValueError(f"column {col!r} must hold whole numbers")
            out[col] = vals.astype("Int64")
        elif dtype == "float64":
            out[col] = pd.to_numeric(out[col], errors="raise").astype("float64")
        else:
            out[col] = out[col].astype("string")
    return out


def require_columns(df, columns, where: str, needs: str) -> None:
    """Raise ValueError, naming what is wrong, unless `df` is a DataFrame with every one of `columns`; `needs` says
    what a valid table holds."""
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"{where}: expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{where} is missing column(s) {', '.join(repr(c) for c in missing)}; {needs}")


def validate(df: pd.DataFrame, *, where: str = "results table") -> pd.DataFrame:
    """Check a results table against the schema; return it with schema dtypes, or raise ValueError naming the column.

    Checks: every required column present; numeric columns numeric; statuses known; a value that is not "ok" is NaN
    (a failed measurement must not read as a number); sizes positive, and stderr, tokens and FLOPs not negative.
    """
    require_columns(df, REQUIRED, where, f"a results table needs: {', '.join(REQUIRED)}")
    for col, dtype in COLUMNS.items():
        if dtype in ("Int64", "float64"):
            try:
                pd.to_numeric(df[col], errors="raise")
            except (ValueError, TypeError):
                bad = df[col][pd.to_numeric(df[col], errors="coerce").isna() & df[col].notna()]
                raise ValueError(f"{where}: column {col!r} must be numeric, found {bad.iloc[0]!r}") from None
    try:
        out = coerce(df)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{where}: {e}") from None
    unknown = sorted(set(out["status"].dropna()) - set(STATUSES))
    if unknown:
        raise ValueError(f"{where}: column 'status' has unknown value(s) {unknown}; allowed: {sorted(STATUSES)}")
    if out["status"].isna().any():
        raise ValueError(f"{where}: column 'status' has missing values; every row needs one of {sorted(STATUSES)}")
    bad = out["status"].ne("ok") & out["status"].ne("imported") & out["value"].notna()
    if bad.any():
        raise ValueError(f"{where}: column 'value' holds a number on {int(bad.sum())} row(s) whose status is not "
                         "'ok'; a value that was not measured must be NaN")
    # quantities that cannot be negative (a size cannot be zero either): a wrong sign would move a verdict silently
    for col, least, what in (("n_params", 0, "positive"), ("stderr", None, "zero or more"),
                             ("tokens", None, "zero or more"), ("flops", None, "zero or more")):
        v = pd.to_numeric(out[col], errors="coerce")
        wrong = (v <= least) if least is not None else (v < 0)
        if wrong.any():
            raise ValueError(f"{where}: column {col!r} must be {what}, found {v[wrong].iloc[0]:g} on "
                             f"{int(wrong.sum())} row(s); fix the input (a missing value is left empty)")
    return out


DEDUPE = ("first", "last")
# one measurement: rows sharing it would each count (tokens too: a table may place checkpoints by tokens alone)
ROW_KEY = ["sweep", "run_id", "seed", "step", "tokens", "task", "metric"]
DEDUPE_FIX = "fix the input, or give `emergence analyze` --dedupe last (or first) to keep one row of each"


def dedupe(df: pd.DataFrame, how: str | None = None, *, where: str = "results table", fix: str = "") -> pd.DataFrame:
    """`df` with one row per measurement (`ROW_KEY`): unchanged where no two rows share one; otherwise the first or
    the last of each (`how`), or, by default, ValueError naming the rows, whether they agree, and what to do (`fix`,
    else the `--dedupe` choice). A table with every row three times would count each run three times: 6 runs per size
    become 18, and the verdict moves."""
    if how not in (None, *DEDUPE):
        raise ValueError(f"dedupe must be one of {', '.join(DEDUPE)} (or None, to refuse duplicates), got {how!r}")
    clash = df.duplicated(ROW_KEY, keep=False)
    if not clash.any():
        return df
    if how is not None:
        return df.drop_duplicates(ROW_KEY, keep=how).reset_index(drop=True)
    first = df.loc[clash].iloc[0]
    schema_columns = [c for c in COLUMNS if c in df.columns]  # what a measurement is; extra columns may differ
    exact = int((clash & df.duplicated(schema_columns, keep=False)).sum())
    other = int(clash.sum()) - exact
    agree = ("all repeat another row exactly" if not other else
             f"{exact} repeat another row exactly, {other} {'disagrees' if other == 1 else 'disagree'} with it"
             if exact else "they disagree with each other")
    raise ValueError(f"{where}: {int(clash.sum())} rows share a run, step, task and metric with another row ("
                     f"{agree}; the first: run_id {first['run_id']!r}, step {first['step']}, task {first['task']!r}, "
                     f"metric {first['metric']!r}), and each would count as a measurement of its own; "
                     f"{fix or DEDUPE_FIX}")


# ------------------------------------------------------------------------------------ measured rows, last checkpoints
MEASURED_STATUSES = ("ok", "imported")
FAILED_RUN_STATUSES = ("diverged", "failed")


def metric_bounds(metric) -> tuple[float | None, float | None]:
    """(lower, upper) bounds of a registered metric, None where unbounded or the metric is not registered."""
    m = METRICS.get(str(metric))
    return (None, None) if m is None else (m.lower_bound, m.upper_bound)


def measured(df: pd.DataFrame) -> pd.DataFrame:
    """The rows that hold a measurement: status ok or imported, a finite value, and a run that neither diverged nor
    failed (a run that broke down at some checkpoint is left out whole: its earlier values describe a run that did
    not finish). The one definition used by flags, views, fits, backtests, plots and the pipeline."""
    if not len(df):
        return df
    bad_runs = df.loc[df["status"].isin(FAILED_RUN_STATUSES), "run_id"].dropna().unique()
    value = pd.to_numeric(df["value"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    keep = df["status"].isin(MEASURED_STATUSES).to_numpy(bool) & np.isfinite(value)
    keep &= ~df["run_id"].isin(bad_runs).to_numpy(bool)
    return df[keep]


def final_checkpoints(df: pd.DataFrame) -> pd.DataFrame:
    """Each run's last checkpoint: the rows at the largest step of their run_id, chosen among all of the run's rows
    (measured or not), so that a metric that could not be measured there leaves the run without a point rather
    than falling back to an earlier, less-trained checkpoint. Rows without a step count as one checkpoint; rows
    without a run_id form one run."""
    if not len(df):
        return df
    step = pd.to_numeric(df["step"], errors="coerce").astype("Float64").fillna(-1.0)
    last = step.groupby(df["run_id"].astype("string").fillna("<NA>")).transform("max")
    return df[(step == last).to_numpy(bool)]


def final_measured(df: pd.DataFrame) -> pd.DataFrame:
    """`measured(final_checkpoints(df))`: the measured rows of each run's last checkpoint."""
    return measured(final_checkpoints(df))
