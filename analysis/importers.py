"""Importers: other people's results into our results table (`analysis/schema.py`).

Two sources:
- lm-evaluation-harness results JSON (`import_lm_eval`), in both layouts the harness has written:
  the current one (v0.4 and later), where each task maps metric keys of the form "<metric>,<filter>" such as
  "acc,none" and "acc_stderr,none", beside top-level "n-shot", "n-samples", "higher_is_better" and "config" blocks;
  and the older flat one (v0.3 and before), where each task maps "acc" and "acc_stderr" and the run's settings sit in
  "config" (with "num_fewshot"). This includes the folder of Pythia's published evaluations
  (github.com/EleutherAI/pythia, `evals/pythia-v1/pythia-<size>/zero-shot/<size>_step<N>.json`), whose model size
  and checkpoint are read from the path and completed from `PYTHIA_SIZES`.
- any table with a column mapping (`import_csv`).

Every imported row has status "imported": it was measured elsewhere. A value the file gives as null or NaN is kept
as NaN with status "not_measured", never as 0.
"""
from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import schema

# The Pythia suite, Biderman et al. 2023 ("Pythia: A Suite for Analyzing Large Language Models Across Training and
# Scaling"), Table 1: layers, model dimension, heads, learning rate and non-embedding parameters. Total parameters
# (embedding and unembedding included; Pythia does not tie them) are the counts of the released checkpoints, as on
# each model card. All sizes were trained on the same 299,892,736,000 tokens of the Pile in the same order:
# 143,000 steps of 1,024 sequences x 2,048 tokens = 2,097,152 tokens per step (paper, section 2).
PYTHIA_SIZES = pd.DataFrame(
    [
        # model,        n_params,        n_params_nonembed, n_layer, d_model, n_head, lr
        ("pythia-70m", 70_426_624, 18_915_328, 6, 512, 8, 1.0e-3),
        ("pythia-160m", 162_322_944, 85_056_000, 12, 768, 12, 6.0e-4),
        ("pythia-410m", 405_334_016, 302_311_424, 24, 1024, 16, 3.0e-4),
        ("pythia-1b", 1_011_781_632, 805_736_448, 16, 2048, 8, 3.0e-4),
        ("pythia-1.4b", 1_414_647_808, 1_208_602_624, 24, 2048, 16, 2.0e-4),
        ("pythia-2.8b", 2_775_208_960, 2_517_652_480, 32, 2560, 32, 1.6e-4),
        ("pythia-6.9b", 6_857_302_016, 6_444_163_072, 32, 4096, 32, 1.2e-4),
        ("pythia-12b", 11_846_072_320, 11_327_027_200, 36, 5120, 40, 1.2e-4),
    ],
    columns=["model", "n_params", "n_params_nonembed", "n_layer", "d_model", "n_head", "lr"],
).set_index("model")
PYTHIA_TOKENS_PER_STEP = 1024 * 2048  # sequences per batch x sequence length (Biderman et al. 2023, section 2)
# Names the suite had before its renaming (Pythia v0, listed in the paper and the repository README).
PYTHIA_OLD_NAMES = {"19m": "70m", "125m": "160m", "350m": "410m", "800m": "1b", "1.3b": "1.4b", "2.7b": "2.8b",
                    "6.7b": "6.9b", "13b": "12b"}

# lm-evaluation-harness metric names that mean one of our registered metrics.
LM_EVAL_ALIASES = {"ppl": "perplexity"}
# Directions of metrics lm-evaluation-harness reports that our registry does not know, as the harness declares them
# (its `higher_is_better` for each metric: lm_eval/api/metrics.py and the task definitions, e.g. crows_pairs).
# A file's own "higher_is_better" block, where present, takes precedence.
LM_EVAL_DIRECTIONS = {
    "acc_mutual_info": True, "f1": True, "mcc": True, "bleu": True, "chrf": True, "ter": False,
    "word_perplexity": False, "byte_perplexity": False, "bits_per_byte": False, "brier_score": False,
    "likelihood_difference": False, "pct_stereotype": False, "exact_match": True,
}
# Keys inside a task's block that are not metrics.
_NOT_METRICS = {"alias", "samples", "name", "sample_len", "sample_count"}

_STEP_RE = re.compile(r"(?:^|[_\-=/])step[_\-]?(\d+)(?:$|[_\-.,/])")
_PYTHIA_FILE_RE = re.compile(r"^(?P<size>\d+(?:\.\d+)?[mb])(?P<deduped>-deduped)?(?:-(?P<shots>\d+)shot)?"
                             r"_step(?P<step>\d+)$", re.IGNORECASE)
_PYTHIA_NAME_RE = re.compile(r"pythia-(?:v\d(?:\.\d)?-)?(?P<size>\d+(?:\.\d+)?[mb])(?P<deduped>-deduped)?",
                             re.IGNORECASE)


def pythia_size(name: str) -> pd.Series | None:
    """The `PYTHIA_SIZES` row for a Pythia model name ("pythia-160m", "EleutherAI/pythia-1.4b-deduped",
    "160m", old v0 names such as "pythia-350m" included); None if the name is not a Pythia model."""
    m = _PYTHIA_NAME_RE.search(name) or re.fullmatch(r"(?P<size>\d+(?:\.\d+)?[mb])(?P<deduped>-deduped)?",
                                                        name.strip(), re.IGNORECASE)
    if m is None:
        return None
    size = m.group("size").lower()
    size = {"1.0b": "1b"}.get(size, size)
    key = f"pythia-{size}"
    if key not in PYTHIA_SIZES.index and size in PYTHIA_OLD_NAMES:
        key = f"pythia-{PYTHIA_OLD_NAMES[size]}"
    if key not in PYTHIA_SIZES.index:
        return None
    return PYTHIA_SIZES.loc[key]


def _parse_model_args(model_args) -> dict[str, str]:
    """lm-evaluation-harness's `model_args`, a "k=v,k=v" string (or already a dict), as a dict."""
    if isinstance(model_args, dict):
        return {str(k): str(v) for k, v in model_args.items()}
    out = {}
    for part in str(model_args or "").split(","):
        if "=" in part:
            k, v = part.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def _identify(path: Path, doc: dict) -> dict:
    """Model name, checkpoint step and number of shots of one results file, from its path and its config block.

    The file name wins for Pythia's published folder (`<size>[-deduped][-<k>shot]_step<N>.json`); otherwise the
    harness's own record of what it evaluated: `config.model_args` ("pretrained=...,revision=step1000"), then the
    top-level `model_name`, then the file's folder name.
    """
    cfg = doc.get("config") if isinstance(doc.get("config"), dict) else {}
    args = _parse_model_args(cfg.get("model_args"))
    shots = cfg.get("num_fewshot")
    m = _PYTHIA_FILE_RE.match(path.stem)
    if m:
        size = m.group("size").lower()
        model = f"pythia-{size}" + ("-deduped" if m.group("deduped") else "")
        step = int(m.group("step"))
        if m.group("shots"):
            shots = int(m.group("shots"))
        elif shots is None and "five-shot" in path.parts:
            shots = 5
        return {"model": model, "step": step, "shots": shots}
    model = args.get("pretrained") or doc.get("model_name") or path.parent.name
    step = None
    for text in (args.get("revision", ""), str(model), path.stem):
        hit = _STEP_RE.search(text) or re.fullmatch(r"step(\d+)", text)
        if hit:
            step = int(hit.group(1))
            break
    return {"model": str(model), "step": step, "shots": shots}


def _number(v):
    """A float from a JSON value, or None for anything that is not a number (strings such as "N/A", lists, bools)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def _metric_direction(name: str, declared: dict) -> bool | None:
    if name in schema.METRICS:
        return schema.METRICS[name].higher_is_better
    if isinstance(declared.get(name), bool):
        return declared[name]
    return LM_EVAL_DIRECTIONS.get(name)


def _rows_from_doc(path: Path, doc: dict, *, metrics, skipped: set) -> list[dict]:
    """Tidy rows (dicts) from one parsed results document."""
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: not an lm-evaluation-harness results file: the top level is a "
                         f"{type(doc).__name__}, expected an object with a 'results' mapping")
    results = doc.get("results")
    if not isinstance(results, dict):
        raise ValueError(f"{path}: not an lm-evaluation-harness results file: no 'results' mapping of task -> metrics "
                         f"(top-level keys: {sorted(doc)[:8]})")
    ident = _identify(path, doc)
    n_shot = doc.get("n-shot") if isinstance(doc.get("n-shot"), dict) else {}
    n_samples = doc.get("n-samples") if isinstance(doc.get("n-samples"), dict) else {}
    declared_all = doc.get("higher_is_better") if isinstance(doc.get("higher_is_better"), dict) else {}
    rows = []
    for task, block in results.items():
        if not isinstance(block, dict):
            raise ValueError(f"{path}: results[{task!r}] should map metric names to numbers, "
                             f"found a {type(block).__name__}")
        values: dict[tuple[str, str], float | None] = {}
        stderrs: dict[tuple[str, str], float | None] = {}
        for key, raw in block.items():
            if key in _NOT_METRICS:
                continue
            name, _, filt = str(key).partition(",")
            filt = filt or "none"
            if name.endswith("_stderr"):
                stderrs[(name[: -len("_stderr")], filt)] = _number(raw)
            elif raw is None or _number(raw) is not None:
                values[(name, filt)] = _number(raw)
            # anything else (a string, a list) is a description, not a measurement
        shots = n_shot.get(task, ident["shots"])
        try:
            shots = int(shots) if shots is not None else 0
        except (TypeError, ValueError):
            shots = 0
        ns = n_samples.get(task)
        n = None
        if isinstance(ns, dict):
            n = ns.get("effective", ns.get("original"))
        elif _number(ns) is not None:
            n = ns
        declared = declared_all.get(task) if isinstance(declared_all.get(task), dict) else {}
        for (name, filt), value in values.items():
            metric = LM_EVAL_ALIASES.get(name, name)
            if metrics is not None and metric not in metrics and name not in metrics:
                continue
            direction = _metric_direction(metric, declared)
            if direction is None:
                skipped.add(metric)
                continue
            if metric not in schema.METRICS:
                # Make the direction known to flagging; the file or the harness declared it.
                schema.register_metric(metric, higher_is_better=direction,
                                       description="imported from lm-evaluation-harness")
            # A filter other than lm-evaluation-harness's default "none" (gsm8k's "strict-match", ...) is a different
            # measurement of the same task; it becomes part of the task name so both can be kept.
            task_name = str(task) if filt == "none" else f"{task}/{filt}"
            if shots:
                task_name += f"/{shots}shot"
            ok = value is not None and math.isfinite(value)
            err = stderrs.get((name, filt))
            rows.append({
                "model": ident["model"], "step": ident["step"], "task": task_name, "metric": metric,
                "value": value if ok else np.nan,
                "stderr": err if (ok and err is not None and math.isfinite(err)) else np.nan,
                "n": int(n) if _number(n) is not None else None,
                "status": "imported" if ok else "not_measured",
                "_file": str(path),
            })
    return rows


def _load_json(path: Path):
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    try:
        # The harness writes NaN and Infinity for undefined metrics (Python's json does); accept them.
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None


def import_lm_eval(path, *, metrics=None, sweep: str | None = None, model: str | None = None,
                   n_params: int | None = None) -> pd.DataFrame:
    """Read lm-evaluation-harness results (one JSON file, or a folder searched recursively) into a results table.

    What each column gets:
    - `model`: Pythia's file name (`70m_step1000.json` under `pythia-70m/zero-shot/` -> "pythia-70m"), else the
      `pretrained` entry of `config.model_args`, else `model_name`, else the folder name; `model=` overrides it.
    - `run_id`: the model name (one run per model); `sweep`: `sweep=` or the name of the folder given.
    - `step`: from the file name (`..._step<N>`) or the `revision` model argument ("step1000"); NA if neither says.
    - `n_params`, `n_params_nonembed`, `n_layer`, `d_model`: from `PYTHIA_SIZES` for Pythia models; `n_params=`
      sets the first for other models; otherwise NA.
    - `tokens`: step x 2,097,152 for Pythia (its batch: 1,024 x 2,048 tokens); `flops`: 6 N D (the standard estimate
      of training compute, Kaplan et al. 2020 section 2.1; Hoffmann et al. 2022 use the same), with N the total
      parameters. NaN where unknown.
    - `task`: the harness's task name; a filter other than "none" is appended ("gsm8k/strict-match") and so is a
      few-shot setting ("piqa/5shot"), so that differently measured numbers never share a task name.
    - `metric`: the harness's name, "ppl" renamed "perplexity". Metrics whose direction is unknown (neither in our
      registry, nor declared by the file's `higher_is_better`, nor in `LM_EVAL_DIRECTIONS`) are skipped and listed in
      `df.attrs["skipped_metrics"]` (with a warning), because no flag can be computed without a direction.
    - `stderr`: the "<metric>_stderr" entry ("N/A" -> NaN); `n`: `n-samples` (effective) where the file has it.
    - `status`: "imported"; a null or NaN value keeps NaN with status "not_measured".

    `metrics`: an iterable of metric names to keep (default: all with a known direction).
    If the same (model, step, task, metric) appears in several files (a rerun), the last file in path order wins;
    the harness names its files results_<timestamp>.json, so that is the newest.
    Raises ValueError naming the file for malformed JSON or a file that is not a harness results file.
    """
    root = Path(path)
    if not root.exists():
        raise ValueError(f"{root}: no such file or folder; give an lm-evaluation-harness results .json file or a "
                         "folder of them")
    if root.is_dir():
        files = sorted(p for p in root.rglob("*.json") if p.is_file())
        if not files:
            raise ValueError(f"{root}: no .json files found under this folder; lm-evaluation-harness writes "
                             "results_<timestamp>.json into its --output_path")
    else:
        files = [root]
    keep = None if metrics is None else {str(m) for m in ([metrics] if isinstance(metrics, str) else metrics)}
    skipped: set[str] = set()
    rows: list[dict] = []
    for f in files:
        rows.extend(_rows_from_doc(f, _load_json(f), metrics=keep, skipped=skipped))
    if not rows:
        raise ValueError(f"{root}: no metrics with a known direction in {len(files)} file(s)"
                         + (f" (skipped: {', '.join(sorted(skipped))})" if skipped else "")
                         + "; register their direction with analysis.schema.register_metric")
    df = pd.DataFrame(rows)
    if model is not None:
        df["model"] = model
    df = df.drop_duplicates(["model", "step", "task", "metric"], keep="last")
    df["run_id"] = df["model"]
    df["sweep"] = sweep if sweep is not None else (root.name if root.is_dir() else root.parent.name)
    sizes = {m: pythia_size(m) for m in df["model"].unique()}
    for col in ("n_params", "n_params_nonembed", "n_layer", "d_model"):
        df[col] = [sizes[m][col] if sizes[m] is not None else None for m in df["model"]]
    if n_params is not None:
        df["n_params"] = int(n_params)
    is_pythia = df["model"].map(lambda m: sizes[m] is not None)
    step = pd.to_numeric(df["step"], errors="coerce")
    df["tokens"] = np.where(is_pythia, step * PYTHIA_TOKENS_PER_STEP, np.nan)
    df["flops"] = 6.0 * pd.to_numeric(df["n_params"], errors="coerce").astype(float) * df["tokens"]
    df["seed"] = None
    df = df.drop(columns=["_file"])
    out = schema.validate(df[[*schema.COLUMNS]], where=f"lm-evaluation-harness import of {root}")
    out = out.sort_values(["run_id", "step", "task", "metric"], kind="stable").reset_index(drop=True)
    out.attrs["skipped_metrics"] = sorted(skipped)
    if skipped:
        warnings.warn(f"{root}: skipped metric(s) with unknown direction: {', '.join(sorted(skipped))}; register "
                      "them with analysis.schema.register_metric(name, higher_is_better=...) to import them",
                      stacklevel=2)
    return out


def import_csv(path, mapping: dict[str, str], *, constants: dict | None = None, sep: str | None = None
               ) -> pd.DataFrame:
    """Read any table (CSV, TSV or parquet) into a results table, given which of its columns holds what.

    `mapping` is {schema column: column in the file}, e.g.
    `{"model": "Model", "n_params": "Params", "task": "Benchmark", "value": "Accuracy"}`;
    `constants` gives fixed values for schema columns the file does not have, e.g. `{"metric": "acc"}`.
    `task`, `metric` and `value` must come from one or the other. Defaults for the rest: `run_id` = model if given,
    else "n_params=<N>" when n_params is given, else the file name; `status` = "imported" (rows whose value is
    missing get "not_measured"); every other column NA. Raises ValueError naming the file and the column.
    """
    src = Path(path)
    if not src.is_file():
        raise ValueError(f"{src}: no such file; give a .csv, .tsv or .parquet table")
    if not isinstance(mapping, dict):
        raise ValueError(f"{src}: mapping must be a dict of {{schema column: column in the file}}, "
                         f"got {type(mapping).__name__}")
    constants = dict(constants or {})
    bad = sorted(set(mapping) - set(schema.COLUMNS)) + sorted(set(constants) - set(schema.COLUMNS))
    if bad:
        raise ValueError(f"{src}: {', '.join(map(repr, bad))} is not a results-table column; "
                         f"map onto: {', '.join(schema.COLUMNS)}")
    try:
        if src.suffix == ".parquet":
            table = pd.read_parquet(src)
        else:
            table = pd.read_csv(src, sep=sep if sep is not None else ("\t" if src.suffix == ".tsv" else ","))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as e:
        raise ValueError(f"{src}: could not be read as a table: {str(e).splitlines()[0]}") from None
    missing = [c for c in mapping.values() if c not in table.columns]
    if missing:
        raise ValueError(f"{src}: column(s) {', '.join(map(repr, missing))} not in the file; "
                         f"it has: {', '.join(map(str, table.columns))}")
    for need in ("task", "metric", "value"):
        if need not in mapping and need not in constants:
            raise ValueError(f"{src}: say where {need!r} comes from (mapping={{{need!r}: <column>}}) or give it in "
                             f"constants={{{need!r}: ...}}")
    out = pd.DataFrame(index=table.index)
    for col in schema.COLUMNS:
        if col in mapping:
            out[col] = table[mapping[col]].to_numpy()
        elif col in constants:
            out[col] = constants[col]
        else:
            out[col] = None
    if "run_id" not in mapping and "run_id" not in constants:
        if out["model"].notna().any():
            out["run_id"] = out["model"].astype("string")
        elif out["n_params"].notna().any():
            out["run_id"] = "n_params=" + out["n_params"].astype("string")
        else:
            out["run_id"] = src.stem
    if "sweep" not in mapping and "sweep" not in constants:
        out["sweep"] = src.stem
    value = pd.to_numeric(out["value"], errors="coerce")
    bad_vals = out["value"].notna() & value.isna()
    if bad_vals.any():
        first = out["value"][bad_vals].iloc[0]
        raise ValueError(f"{src}: column {mapping.get('value', 'value')!r} (value) must be numeric, found {first!r}")
    out["value"] = value
    if "status" not in mapping and "status" not in constants:
        out["status"] = np.where(value.notna(), "imported", "not_measured")
    return schema.validate(out, where=str(src))
