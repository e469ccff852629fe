"""Importers: other people's results into our results table (`analysis/schema.py`).

Two sources:
- lm-evaluation-harness results JSON (`import_lm_eval`), in both layouts the harness has written:
  the current one (v0.4 and later), where each task maps metric keys of the form "<metric>,<filter>" such as
  "acc,none" and "acc_stderr,none", beside top-level "n-shot", "n-samples", "higher_is_better" and "config" blocks;
  and the older flat one (v0.3 and before), where each task maps "acc" and "acc_stderr" and the run's settings sit in
  "config" (with "num_fewshot"). This includes the folder of Pythia's published evaluations
  (github.com/EleutherAI/pythia, `evals/pythia-v1/pythia-<size>/zero-shot/<size>_step<N>.json`), whose model size
  and checkpoint are read from the path and completed from `PYTHIA_SIZES`.
- any table with a column mapping (`import_csv`): a long table (one row per measurement) or a wide one (one row per
  step, one column per task and metric, as W&B exports and model-ladder repositories publish them), whose column
  names are matched against a pattern such as "eval/{task}/{metric}".

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

from analysis import options, schema

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

# Other tools' names for our registered metrics (lm-evaluation-harness's "ppl"; "bpb", as training codebases such as
# OLMo log bits per byte). Applied to every imported metric name; the harness's "acc_norm" and "bits_per_byte" are
# registered under those names.
METRIC_ALIASES = {"ppl": "perplexity", "bpb": "bits_per_byte"}
# Directions of metrics lm-evaluation-harness reports that our registry does not know, as the harness declares them
# (its `higher_is_better` for each metric: lm_eval/api/metrics.py and the task definitions, e.g. crows_pairs).
# A file's own "higher_is_better" block, where present, takes precedence.
LM_EVAL_DIRECTIONS = {
    "acc_mutual_info": True, "f1": True, "mcc": True, "bleu": True, "chrf": True, "ter": False,
    "word_perplexity": False, "byte_perplexity": False, "brier_score": False,
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
            metric = METRIC_ALIASES.get(name, name)
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
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deeply to read (no lm-evaluation-harness file is); give the "
                         "harness's results file") from None


IMPORT_RECORD = "meta.json"  # what an import writes beside its results.parquet: the source, the command, the time


def _is_import_record(path: Path, root: Path, doc) -> bool:
    """Whether `path` is what an earlier import and analysis of the folder `root` wrote at its top (meta.json
    naming an "importer", or the verdict's settings, flag_options.json), rather than a results file."""
    if path.parent != root or not isinstance(doc, dict) or "results" in doc:
        return False
    return ((path.name == IMPORT_RECORD and "importer" in doc)
            or (path.name == options.FILE and set(doc) == {"options", "sources"}))


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
    - `metric`: the harness's name, renamed by `METRIC_ALIASES` ("ppl" -> "perplexity"). Metrics whose direction is
      unknown (neither in our registry, nor declared by the file's `higher_is_better`, nor in `LM_EVAL_DIRECTIONS`)
      are skipped and listed in `df.attrs["skipped_metrics"]` (with a warning), because no flag can be computed
      without a direction.
    - `stderr`: the "<metric>_stderr" entry ("N/A" -> NaN); `n`: `n-samples` (effective) where the file has it.
    - `status`: "imported"; a null or NaN value keeps NaN with status "not_measured".

    `metrics`: an iterable of metric names to keep (default: all with a known direction).
    In a folder, a `meta.json` at its top that names an importer (what `emergence analyze --from lm-eval` writes
    beside the imported results.parquet), and the analysis's `flag_options.json`, are not results files and are
    passed over, so a folder can be imported again.
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
        doc = _load_json(f)
        if root.is_dir() and _is_import_record(f, root, doc):
            continue
        rows.extend(_rows_from_doc(f, doc, metrics=keep, skipped=skipped))
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


# A column pattern names the columns of a wide table: "{name}" stands for any text without a slash, "{name:REGEX}"
# for text matching REGEX; the text each column name has there becomes that results column of its rows.
_FIELD_RE = re.compile(r"\{(\w+)(?::([^{}]*))?\}")
_NOT_FIELDS = ("value", "stderr", "n", "status")  # what a cell holds, never what its column's name says
_PER_COLUMN = ("stderr", "n")  # mapping entries that may follow the value's pattern, one column per value column


def _column_pattern(src: Path, role: str, text: str) -> tuple[re.Pattern, list[str]]:
    """The regular expression of a column pattern such as "eval/{task}/{metric}", and the results columns its
    placeholders fill, in order."""
    fillable = [c for c in schema.COLUMNS if c not in _NOT_FIELDS]
    parts, fields, last = [], [], 0
    for m in _FIELD_RE.finditer(text):
        name, rx = m.group(1), m.group(2)
        if name not in fillable:
            raise ValueError(f"{src}: {role}={text!r}: {{{name}}} is not a results column a column name can give; "
                             f"use one of {', '.join('{' + c + '}' for c in fillable)}")
        if name in fields:
            raise ValueError(f"{src}: {role}={text!r}: {{{name}}} appears twice; name each part of the column once")
        parts += [re.escape(text[last:m.start()]), f"(?P<{name}>{rx or '[^/]+'})"]
        fields.append(name)
        last = m.end()
    parts.append(re.escape(text[last:]))
    try:
        return re.compile("".join(parts)), fields
    except re.error as e:
        raise ValueError(f"{src}: {role}={text!r} is not a valid column pattern ({e}); write {{name}} for any text "
                         "without a slash, or {name:REGEX}") from None


def _wide_cells(src: Path, table: pd.DataFrame, pattern: str, per_column: dict[str, str]) -> pd.DataFrame:
    """The cells of a wide table's columns whose names match `pattern`: one row per non-empty cell, with `_row`
    (its row in the table), `value`, the results columns the pattern's placeholders fill, and `stderr` / `n` from
    the columns their own patterns name for that column (NaN where there is none)."""
    regex, fields = _column_pattern(src, "value", pattern)
    for role, text in per_column.items():
        extra = [f for f in _column_pattern(src, role, text)[1] if f not in fields]
        if extra:
            raise ValueError(f"{src}: {role}={text!r} uses {', '.join('{' + f + '}' for f in extra)}, which "
                             f"value={pattern!r} does not; a {role} column is named from its value column's parts")
    matched = [(c, m) for c in table.columns if (m := regex.fullmatch(str(c)))]
    companions = {_FIELD_RE.sub(lambda g, m=m: m.group(g.group(1)), text) for _, m in matched
                  for text in per_column.values()}
    matched = [(c, m) for c, m in matched if str(c) not in companions]  # "eval/piqa/acc_stderr" is not a value
    if not matched:
        shown = ", ".join(map(str, table.columns[:10])) + (", ..." if len(table.columns) > 10 else "")
        raise ValueError(f"{src}: no column matches value={pattern!r} (the file's columns: {shown}); write the parts "
                         "of the column names that vary as {task} and {metric}, the rest as it is")
    parts, seen = [], {}
    for col, m in matched:
        named = {f: (METRIC_ALIASES.get(m.group(f), m.group(f)) if f == "metric" else m.group(f)) for f in fields}
        key = tuple(named.items())
        if key in seen:
            raise ValueError(f"{src}: columns {seen[key]!r} and {col!r} both give "
                             f"{', '.join(f'{k} {v!r}' for k, v in key)}; narrow value={pattern!r} to one of them "
                             "({metric:acc|acc_norm})")
        seen[key] = col
        raw = table[col]
        value = pd.to_numeric(raw, errors="coerce")
        bad = raw.notna() & value.isna()
        if bad.any():
            raise ValueError(f"{src}: column {col!r} must be numeric, found {raw[bad].iloc[0]!r}")
        keep = value.notna().to_numpy()
        part = pd.DataFrame({"_row": np.flatnonzero(keep), "value": value.to_numpy(dtype=float)[keep]})
        for f, v in named.items():
            part[f] = v
        for role, text in per_column.items():
            name = _FIELD_RE.sub(lambda g: m.group(g.group(1)), text)
            part[role] = table[name].to_numpy()[keep] if name in table.columns else np.nan
        parts.append(part)
    cells = pd.concat(parts, ignore_index=True)
    if cells.empty:
        names = ", ".join(repr(c) for c, _ in matched[:5]) + (", ..." if len(matched) > 5 else "")
        raise ValueError(f"{src}: the {len(matched)} column(s) matching value={pattern!r} ({names}) hold no values")
    return cells


def import_csv(path, mapping: dict[str, str], *, constants: dict | None = None, sep: str | None = None,
               dedupe: str | None = None) -> pd.DataFrame:
    """Read any table (CSV, TSV or parquet) into a results table, given which of its columns holds what.

    `mapping` is {schema column: column in the file}, e.g.
    `{"model": "Model", "n_params": "Params", "task": "Benchmark", "value": "Accuracy"}`;
    `constants` gives fixed values for schema columns the file does not have, e.g. `{"metric": "acc"}`.
    `task`, `metric` and `value` must come from one or the other.

    A wide table (one row per step, one column per task and metric, as W&B exports it) is read by giving `value` a
    column pattern: `{"value": "eval/{task}/{metric}", "step": "_step"}` reads column "eval/arc_easy/acc" as task
    "arc_easy", metric "acc", one row per step. `{name}` stands for any text without a slash, `{name:REGEX}` for
    text matching REGEX, a regular expression without braces (`"{task}_{metric:acc|acc_norm}"`); each placeholder
    fills that results column (any but value, stderr, n and status). `stderr` and `n` may be patterns too, naming
    each value column's companion (`"eval/{task}/{metric}_stderr"`; NaN where it is absent). An empty cell is a step
    at which that column was not logged and gives no row; metrics whose direction is unknown (not in
    `analysis.schema.METRICS`) are skipped with a warning and listed in `df.attrs["skipped_metrics"]`; two columns
    that name the same task and metric are refused; a step logged twice keeps its last row.
    Other rows that share a run, step, task and metric are refused, unless `dedupe` ("first" or "last") says which
    to keep (`analysis.schema.dedupe`).

    `constants` may also give `tokens_per_step`: tokens = step x tokens_per_step (instead of a tokens column).
    Defaults for the rest: `run_id` = model if given, else "n_params=<N>" when n_params is given, else the file
    name; `sweep` = the file name; `flops` = 6 N D with N = n_params and D = tokens where both are known (Kaplan et
    al. 2020, as for lm-evaluation-harness imports); `status` = "imported" (rows whose value is missing get
    "not_measured"); every other column NA. Metric names are renamed by `METRIC_ALIASES` ("bpb" ->
    "bits_per_byte"). Raises ValueError naming the file and the column.
    """
    src = Path(path)
    if src.is_dir():
        raise ValueError(f"{src} is a folder; give one .csv, .tsv or .parquet table")
    if not src.is_file():
        raise ValueError(f"{src}: no such file; give a .csv, .tsv or .parquet table")
    if not isinstance(mapping, dict):
        raise ValueError(f"{src}: mapping must be a dict of {{schema column: column in the file}}, "
                         f"got {type(mapping).__name__}")
    constants = dict(constants or {})
    tokens_per_step = constants.pop("tokens_per_step", None)
    wide, per_column, fields = _value_patterns(src, mapping, constants)
    wide_value = mapping.get("value")
    plain = {k: v for k, v in mapping.items() if not (wide and (k == "value" or k in per_column))}
    table = _read_table(src, sep)
    # a column already named as the results table names it is read as that column, unless mapped or given otherwise
    taken = set(mapping) | set(constants) | set(fields) | set(per_column)
    plain.update({c: c for c in schema.COLUMNS if c in table.columns and c not in taken})
    _check_sources(src, table, plain, constants, fields, wide)
    if wide:
        cells = _wide_cells(src, table, wide_value, per_column)
        base = table.iloc[cells["_row"].to_numpy()].reset_index(drop=True)
    else:
        cells, base = pd.DataFrame(), table.reset_index(drop=True)
    out = _results_columns(src, cells, base, mapping, constants, plain, fields)
    value = pd.to_numeric(out["value"], errors="coerce")
    bad_vals = out["value"].notna() & value.isna()
    if bad_vals.any():
        first = out["value"][bad_vals].iloc[0]
        raise ValueError(f"{src}: column {mapping.get('value', 'value')!r} (value) must be numeric, found {first!r}")
    out["value"] = value
    if tokens_per_step is not None:
        out["tokens"] = _tokens_from_steps(src, out["step"], tokens_per_step,
                                           given="tokens" in mapping or "tokens" in constants)
    if "flops" not in mapping and "flops" not in constants:
        n = pd.to_numeric(out["n_params"], errors="coerce").astype(float)
        out["flops"] = 6.0 * n * pd.to_numeric(out["tokens"], errors="coerce").astype(float)
    out["metric"] = out["metric"].map(lambda m: METRIC_ALIASES.get(m, m) if isinstance(m, str) else m)
    skipped: list[str] = []
    if wide:
        out, skipped = _known_metrics(src, out, wide_value)
    if "status" not in mapping and "status" not in constants:
        out["status"] = np.where(out["value"].notna(), "imported", "not_measured")
    out = schema.validate(out, where=str(src))
    logged_twice = wide and "step" in plain  # a W&B export logs a step twice after a resume: its last row counts
    out = schema.dedupe(out, "last" if logged_twice and dedupe is None else dedupe, where=str(src),
                        fix="map the column that tells the models apart (--map model=COLUMN or --map n_params=COLUMN; "
                            "run_id, seed and step likewise), or, if the rows repeat one measurement, give --dedupe "
                            "last (or first) to keep one row of each")
    if wide:
        out = (out.sort_values(["run_id", "step", "task", "metric"], kind="stable").reset_index(drop=True))
        out.attrs["skipped_metrics"] = skipped
        if skipped:
            warnings.warn(f"{src}: skipped column(s) of metric(s) with unknown direction: {', '.join(skipped)}; "
                          "register them with analysis.schema.register_metric(name, higher_is_better=...) to import "
                          "them", stacklevel=2)
    return out


def _value_patterns(src: Path, mapping: dict[str, str], constants: dict) -> tuple[bool, dict[str, str], list[str]]:
    """Check import_csv's mapping and constants name results columns, and read its column patterns: whether the
    table is wide (value is a pattern), the patterns of stderr and n ({role: pattern}), and the results columns the
    value's placeholders fill."""
    bad = sorted(set(mapping) - set(schema.COLUMNS)) + sorted(set(constants) - set(schema.COLUMNS))
    if bad:
        raise ValueError(f"{src}: {', '.join(map(repr, bad))} is not a results-table column; "
                         f"map onto: {', '.join(schema.COLUMNS)} (or give constants tokens_per_step)")
    wide_value = mapping.get("value")
    wide = isinstance(wide_value, str) and _FIELD_RE.search(wide_value) is not None
    per_column = {k: mapping[k] for k in _PER_COLUMN
                  if isinstance(mapping.get(k), str) and _FIELD_RE.search(mapping[k]) is not None}
    if per_column and not wide:
        k = next(iter(per_column))
        raise ValueError(f"{src}: {k}={mapping[k]!r} is a column pattern, but value is not; give value a pattern "
                         "too (value=eval/{task}/{metric}) or name one column")
    fields = _column_pattern(src, "value", wide_value)[1] if wide else []
    clash = [f for f in fields if f in mapping or f in constants]
    if clash:
        raise ValueError(f"{src}: {', '.join(map(repr, clash))} comes both from value={wide_value!r} and from "
                         "the mapping or constants; give it once")
    return wide, per_column, fields


def _read_table(src: Path, sep: str | None) -> pd.DataFrame:
    """A .parquet file, or a CSV (a TSV for .tsv unless `sep` says otherwise)."""
    try:
        if src.suffix == ".parquet":
            return pd.read_parquet(src)
        return pd.read_csv(src, sep=sep if sep is not None else ("\t" if src.suffix == ".tsv" else ","))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as e:
        raise ValueError(f"{src}: could not be read as a table: {str(e).splitlines()[0]}") from None


def _check_sources(src: Path, table: pd.DataFrame, plain: dict[str, str], constants: dict, fields: list[str],
                   wide: bool) -> None:
    """Every mapped column is in the file, and task, metric and value each come from somewhere."""
    missing = [c for c in plain.values() if c not in table.columns]
    if missing:
        raise ValueError(f"{src}: column(s) {', '.join(map(repr, missing))} not in the file; "
                         f"it has: {', '.join(map(str, table.columns))}")
    for need in ("task", "metric", "value"):
        if need not in plain and need not in constants and need not in fields and not (need == "value" and wide):
            raise ValueError(f"{src}: the file has no {need!r} column; map one onto it (--map {need}=COLUMN; "
                             f"mapping={{{need!r}: COLUMN}}) or give one value for every row (--set {need}=VALUE; "
                             f"constants={{{need!r}: VALUE}})")


def _results_columns(src: Path, cells: pd.DataFrame, base: pd.DataFrame, mapping: dict[str, str], constants: dict,
                     plain: dict[str, str], fields: list[str]) -> pd.DataFrame:
    """The results table's columns, one row per row of `base` (the file's rows, or the row of each wide cell): from
    the cells, the mapped columns or the constants, NA otherwise; run_id and sweep by default as import_csv says."""
    out = pd.DataFrame(index=base.index)
    for col in schema.COLUMNS:
        if col in cells.columns:
            out[col] = cells[col].to_numpy()
        elif col in plain:
            out[col] = base[plain[col]].to_numpy()
        elif col in constants:
            out[col] = constants[col]
        else:
            out[col] = None
    if "run_id" not in mapping and "run_id" not in constants and "run_id" not in fields:
        if out["model"].notna().any():
            out["run_id"] = out["model"].astype("string")
        elif out["n_params"].notna().any():
            out["run_id"] = "n_params=" + out["n_params"].astype("string")
        else:
            out["run_id"] = src.stem
    if "sweep" not in mapping and "sweep" not in constants and "sweep" not in fields:
        out["sweep"] = src.stem
    return out


def _known_metrics(src: Path, out: pd.DataFrame, wide_value: str) -> tuple[pd.DataFrame, list[str]]:
    """A wide table's rows whose metric has a known direction, and the sorted names of the others (skipped)."""
    known = out["metric"].map(lambda m: isinstance(m, str) and m in schema.METRICS).to_numpy(bool)
    skipped = sorted(set(out.loc[~known, "metric"].astype(str)))
    if not known.any():
        raise ValueError(f"{src}: no metric of known direction among the columns matching value={wide_value!r} "
                         f"(found: {', '.join(skipped[:8])}); register one with "
                         "analysis.schema.register_metric(name, higher_is_better=...) or narrow the pattern "
                         "({metric:acc|acc_norm})")
    return out[known].reset_index(drop=True), skipped


def _tokens_from_steps(src: Path, step: pd.Series, tokens_per_step, *, given: bool) -> np.ndarray:
    """tokens = step x tokens_per_step, for a table that gives steps but not tokens."""
    if given:
        raise ValueError(f"{src}: tokens comes from a column or constant and from tokens_per_step; give one")
    try:
        per = float(tokens_per_step)
    except (TypeError, ValueError):
        per = float("nan")
    if not (math.isfinite(per) and per > 0):
        raise ValueError(f"{src}: tokens_per_step must be a positive number (sequences x sequence length), "
                         f"got {tokens_per_step!r}")
    steps = pd.to_numeric(step, errors="coerce").astype(float)
    if steps.isna().all():
        raise ValueError(f"{src}: tokens_per_step needs each row's step: map the step column (step=_step)")
    return steps.to_numpy() * per
