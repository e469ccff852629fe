"""The analysis entry points: `emergence analyze`, `emergence stability`, `emergence budget`, and the analysis and
report at the end of a sweep (`finish_sweep`, skipped when its inputs have not changed: `analysis_key`). They read
a sweep folder or another tool's results (lm-evaluation-harness JSON, a CSV), which an import writes as a folder the
report reads like a sweep's (`import_folder`, `write_import`), and call `analysis`; nothing here trains.
"""
from __future__ import annotations

import hashlib
import json
import shlex
import sys
import time
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

import analysis as an  # its names load on first use (PEP 562): this costs nothing until one is used
from analysis.fmt import sentence
from analysis.options import OptionsError, Settings, for_folder
from analysis.pipeline import VIEWS, read_csv, write_csv
from analysis.schema import measured
from emergence.config import ConfigError, config_settings
from emergence.files import atomic_write_parquet, environment, write_json
from emergence.tasks import VOCAB, get_task
from emergence.tracking import make_tracker

ANALYSIS_KEY = ".analysis.key"
ANALYSIS_OUTPUTS = ("fits.csv", "flags.csv", "report.html")


def analysis_key(folder: Path, options: Settings) -> str:
    """What the sweep's analysis and report are a function of: the aggregated tables, the verdict's settings and
    the analysis code (its source files). Equal keys: the same analysis would come out again."""

    h = hashlib.sha256()
    for name in ("results.parquet", "runs.parquet", "instances.parquet"):
        p = Path(folder) / name
        h.update(name.encode() + (p.read_bytes() if p.exists() else b"missing"))
    h.update(json.dumps(options.to_json(), sort_keys=True, default=str).encode())
    root = Path(an.__file__).parent
    for src in sorted(root.rglob("*.py")):  # subpackages too (analysis/report)
        h.update(str(src.relative_to(root)).encode() + src.read_bytes())
    return h.hexdigest()


def finish_sweep(folder: Path, config: DictConfig | None = None) -> list[str]:
    """Analysis (every view), then the report, then the analysis run of the tracker; a failure here is reported but
    leaves the sweep's tables in place (`emergence analyze` / `emergence report` can redo it). Skipped when the
    results, the settings and the analysis code are those of the last complete analysis (`analysis_key`). Returns
    what failed, one line each (the sweep then exits non-zero)."""
    a = config.get("analysis") if config is not None else None
    options = config_settings(a) if a is not None else for_folder(folder)
    key_file = folder / ANALYSIS_KEY
    key = analysis_key(folder, options)
    if (key_file.exists() and key_file.read_text().strip() == key
            and all((folder / name).exists() for name in ANALYSIS_OUTPUTS)):
        print(f"analysis: results, settings and analysis code unchanged since the last analysis of {folder}; "
              "kept its flags and report (`emergence analyze` and `emergence report` redo them)", file=sys.stderr)
        return []
    key_file.unlink(missing_ok=True)
    try:
        written = analyze(folder, views="all", settings=options)
    except Exception as e:  # the tables are written; analysis can be rerun with `emergence analyze`
        return [f"analysis failed ({type(e).__name__}: {e}); the tables are written: `emergence analyze {folder}` "
                "redoes it"]
    paths: dict = {}
    failed = []
    try:
        from analysis.report import write_report  # matplotlib and scipy: seconds, paid only at the sweep's end

        paths = write_report(folder) or {}
        key_file.write_text(key + "\n")
    except Exception as e:
        failed.append(f"report failed ({type(e).__name__}: {e}); `emergence report {folder}` redoes it")
    if config is not None and config.tracker.kind != "none":
        name = str(config.sweep.name)
        t = make_tracker(config.tracker, run_id=f"{name}-analysis", group=name, job_type="analysis",
                         config={"sweep": name, "experiment": str(config.experiment)},
                         tags=[str(config.experiment), "analysis"], resume_id=None, dir=str(folder))
        images = {p.stem: p for p in sorted((folder / "plots").glob("*.png"))}
        t.log_analysis(_maybe_csv(written.get("flags")), _maybe_csv(written.get("fits")), images,
                       paths.get("html"))
        t.finish("done")
    return failed


def _maybe_csv(path):

    return read_csv(path) if path is not None and Path(path).exists() and Path(path).stat().st_size else None


def folder_settings(folder: Path, given: dict | None = None) -> Settings:
    """The verdict's settings for a folder: those it keeps (flag_options.json, else the defaults), then the values
    given on the command line (`--w0`, `--loss-w0`, `--alpha`, `--n-boot`; None: not given). ConfigError, one line,
    when one is out of range or the file is unreadable."""
    try:
        return for_folder(folder, given)
    except OptionsError as e:
        raise ConfigError(f"{e}" if str(e).startswith(str(folder)) else f"--{str(e).replace('_', '-')}") from None


IMPORT_SOURCES = ("lm-eval", "csv")  # `--from` values whose input is another tool's table, not ours


def analyze(path: Path, *, x: str = "n_params", source: str = "results", views=None, mapping=None,
            constants=None, given: dict | None = None, settings: Settings | None = None, out: Path | None = None,
            command: str | None = None, dedupe: str | None = None) -> dict[str, Path]:
    """Fit scaling laws and flag emergence; write fits.csv, flags.csv (and each view's CSV).

    Our own results (a sweep folder, or a results table) are analyzed where they are: the outputs go into the
    sweep folder, or the folder of the table. An import (`source` "lm-eval" or "csv") becomes a folder that
    `emergence report` reads as it reads a sweep: the imported table as `results.parquet`, the record of the import
    as `meta.json` (`write_import`), and the analysis beside them. That folder is `out` if given; else the folder
    imported (lm-eval results in a folder); else, for a file, a folder named after it beside it (`scores.csv` ->
    `scores/`), so that the input is never overwritten and two files of one folder never share outputs.
    `command` is the command line recorded in meta.json (default: the `emergence analyze` line equivalent to the
    arguments). The verdict's settings are `settings` (a sweep's, from its config), else the folder's own
    (flag_options.json) with the command line's values `given` over them; they are written to flag_options.json
    beside flags.csv. Rows that repeat a measurement (a run, step, task and metric) are refused unless `dedupe`
    ("first" or "last") says which to keep. Returns {"results": ..., "meta": ..., "fits": ..., "flags": ..., ...}:
    the paths written.
    """

    path = Path(path)
    if source not in ("results", *IMPORT_SOURCES):
        raise ConfigError(f"unknown source {source!r}; use one of: results, {', '.join(IMPORT_SOURCES)}")
    if out is not None and source not in IMPORT_SOURCES:
        raise ConfigError("--out is where an import (--from lm-eval or csv) is written; a sweep's own results are "
                          "analyzed in their folder")
    if source == "results":  # whatever comes out, it is not the sweep's last analysis
        (path if path.is_dir() else path.parent).joinpath(ANALYSIS_KEY).unlink(missing_ok=True)
    if source == "lm-eval" and dedupe is not None:
        raise ConfigError("--dedupe is for a results table or a CSV: an lm-evaluation-harness import keeps the last "
                          "of a model's repeated results by itself")
    if source == "lm-eval":
        df = an.import_lm_eval(path)
    elif source == "csv":
        df = an.import_csv(path, dict(mapping or {}), constants=dict(constants or {}), dedupe=dedupe)
    else:
        df = an.load_results(path, dedupe=dedupe)
    if x in df.columns:  # one value of x (one model size, say) leaves nothing to compare
        values = measured(df)[x].dropna().unique()
        if len(values) == 1:
            raise ConfigError(f"{path}: every measured row has {x}={values[0]}, so there is nothing to compare: "
                              "add sizes to the sweep (model=a,b,c) or analyze another axis (--x tokens)")
    if not len(measured(df)):
        raise ConfigError(f"{path}: the results table has no measured values (every row is NaN or from a failed run)")
    written: dict[str, Path] = {}
    if source in IMPORT_SOURCES:
        out_dir = import_folder(path, out)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / ANALYSIS_KEY).unlink(missing_ok=True)
        written.update(write_import(df, out_dir, path, source, mapping=mapping, constants=constants,
                                    command=command or analyze_command(path, x=x, source=source, views=views,
                                                                       mapping=mapping, constants=constants,
                                                                       given=given, out=out, dedupe=dedupe)))
    else:
        out_dir = path if path.is_dir() else path.parent
    settings = settings or folder_settings(out_dir, given)
    kept = keep_other_axis(out_dir / "flags.csv", x)
    if kept:
        print(kept, file=sys.stderr)
    written.update(an.run_analysis(df, out_dir, x=x, views=views, runs=_maybe_runs(out_dir),
                                   instances=_maybe(out_dir / "instances.parquet"),
                                   flag_options={**task_options(df), **settings.options.kwargs()}))
    written["flag_options"] = settings.write(out_dir)
    return written


def flags_table(flags: pd.DataFrame) -> str:
    """The printed table of `emergence analyze`: each row's verdict with its short reason, numbers to 3 significant
    digits, and a column only where some row has a value in it."""

    cols = [c for c in ("task", "metric", "verdict", "reason", "jump_at", "width", "width_lo", "width_hi", "q_value",
                        "per_run", "mirage") if c in flags and flags[c].notna().any()]
    shown = flags[cols].copy()
    for c in ("jump_at", "width", "width_lo", "width_hi", "q_value"):
        if c in shown:
            shown[c] = [sentence(v) if pd.notna(v) else "" for v in shown[c]]
    with pd.option_context("display.width", 200, "display.max_rows", 200, "display.max_colwidth", 60):
        return shown.fillna("").to_string(index=False)


def keep_other_axis(flags: Path, x: str) -> str:
    """Before flags along `x` replace `flags` (flags.csv) judged along another axis, keep that file as
    flags.<axis>.csv; returns the line that says so ("" when nothing was kept)."""
    try:
        axes = set(pd.read_csv(flags, usecols=["x"])["x"].astype(str)) if flags.exists() else set()
    except (ValueError, OSError, pd.errors.ParserError):
        return ""
    if not axes or axes == {x}:
        return ""
    name = f"flags.{'+'.join(sorted(axes))}.csv"
    flags.replace(flags.with_name(name))
    return f"kept the flags judged along {', '.join(sorted(axes))} as {flags.with_name(name)}; flags.csv is along {x}"


def keep_previous(path: Path) -> str:
    """Keep an existing `path` (stability.csv) as <stem>.previous<suffix> before it is replaced; the line saying so."""
    if not path.exists():
        return ""
    kept = path.with_name(f"{path.stem}.previous{path.suffix}")
    path.replace(kept)
    return f"kept the previous {path.name} as {kept}"


def import_folder(path: Path, out: Path | None = None) -> Path:
    """Where the import of `path` is written (see `analyze`), after checking that nothing there would be lost: the
    folder may hold an earlier import of the same input, never a sweep's results.parquet or meta.json, nor another
    input's import."""
    path = Path(path)
    folder = Path(out) if out is not None else (path if path.is_dir() else path.parent / path.stem)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder} is a file, and the import of {path} is written into a folder of that name; "
                          "give --out DIR")
    res, meta = folder / "results.parquet", folder / "meta.json"
    if path.resolve() in (res.resolve(), meta.resolve()):
        raise ConfigError(f"{path} would be overwritten by the import written into {folder}; give --out DIR")
    record = _import_record_of(meta)
    if record is None and (res.exists() or meta.exists()):
        raise ConfigError(f"{folder} already holds {'results.parquet' if res.exists() else 'meta.json'}, not written "
                          f"by an import (a sweep's?); give --out DIR to write the import of {path} elsewhere")
    if record is not None and record.get("source") not in (None, str(path.resolve())):
        raise ConfigError(f"{folder} holds the import of {record['source']}; give --out DIR to write the import of "
                          f"{path} elsewhere")
    return folder


def _import_record_of(meta: Path) -> dict | None:
    """meta.json if an import wrote it (it names an "importer"), else None."""
    try:
        record = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "importer" in record else None


def write_import(df: pd.DataFrame, folder: Path, path: Path, source: str, *, mapping=None, constants=None,
                 command: str = "") -> dict[str, Path]:
    """Write an imported table as `folder/results.parquet` and its record as `folder/meta.json`, each atomically:
    the command, the input (absolute path, and its SHA-256 for a file), the importer and its mapping, the time,
    and the code and machine that read it (as a sweep's meta.json records them)."""
    path = Path(path)
    record = {"command": command, "source": str(path.resolve()), "importer": source,
              "imported": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "rows": int(len(df)),
              "runs": int(df["run_id"].nunique()), "tasks": int(df["task"].nunique())}
    if path.is_file():
        record["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    if source == "csv":
        record["mapping"] = dict(mapping or {})
        record["constants"] = dict(constants or {})
    record.update(environment())
    atomic_write_parquet(df, folder / "results.parquet")
    write_json(folder / "meta.json", record)
    return {"results": folder / "results.parquet", "meta": folder / "meta.json"}


def analyze_command(path: Path, *, x: str = "n_params", source: str = "results", views=None, mapping=None,
                    constants=None, given: dict | None = None, out: Path | None = None,
                    dedupe: str | None = None) -> str:
    """The `emergence analyze` command line that does what these arguments do (recorded in an import's meta.json)."""

    words = ["emergence", "analyze", str(path), "--from", source]
    if x != "n_params":
        words += ["--x", x]
    for v in (VIEWS if views == "all" else views or ()):
        words += ["--view", str(v)]
    for flag, pairs in (("--map", mapping), ("--set", constants)):
        for k, v in (pairs or {}).items():
            words += [flag, f"{k}={v}"]
    for key, value in (given or {}).items():
        if value is not None:
            words += [f"--{key.replace('_', '-')}", str(value)]
    if out is not None:
        words += ["--out", str(out)]
    if dedupe is not None:
        words += ["--dedupe", dedupe]
    return shlex.join(words)


def headlines(df) -> dict[str, str]:
    """The headline metric each registered task of the results table `df` declares (`Task.headline`)."""
    out = {}
    for name in sorted(set(df["task"].astype(str))):
        try:
            out[name] = get_task(name).headline
        except ValueError:
            continue
    return out


def task_options(df) -> dict:
    """What the task registry tells the verdicts about the tasks of `df`: answer lengths and headline metrics."""
    return {"answer_lengths": answer_lengths(df), "headline": headlines(df)}


def answer_lengths(df) -> dict[str, float]:
    """Mean answer length in tokens (with the end token) of each registered task's probe set: the L of the p^L
    prediction of exact match from token accuracy (Schaeffer et al. 2023), for the tasks of the results table `df`
    that were probed in the tasks' own character vocabulary. A task probed through a tokenizer (its rows have the
    text probe's `char_accuracy`) counts its answer in that tokenizer's tokens, which the table does not record:
    it gets no L here, and `flag_emergence` fits L instead of using a wrong one."""
    texts = set(df.loc[df["metric"].astype(str) == "char_accuracy", "task"].astype(str))
    out = {}
    for name in sorted(set(df["task"].astype(str)) - texts):
        try:
            _, answers, _ = get_task(str(name)).heldout_set(64, seed=0)
        except ValueError:
            continue
        out[str(name)] = float((answers != VOCAB.pad).sum(1).mean()) if len(answers) else float("nan")
    return out


def _maybe(p: Path):
    return pd.read_parquet(p) if p.exists() else None


def _maybe_runs(folder: Path):
    return _maybe(folder / "runs.parquet")


def analyze_cli(path: Path, *, x: str = "n_params", source: str = "results", views=None, mapping=None,
                constants=None, given: dict | None = None, out: Path | None = None, dedupe: str | None = None) -> int:
    """`emergence analyze`: the analysis (and, for an import, the folder the report reads), a table of the flags,
    the files written and, for an import, the command that reports it."""
    if not path.exists():
        raise ConfigError(f"{path} does not exist; give a sweep folder or a results table")
    written = analyze(path, x=x, source=source, views=views, mapping=mapping, constants=constants,
                      given=given, out=out, dedupe=dedupe)
    flags_path = written.get("flags")
    if flags_path is not None and Path(flags_path).exists():

        print(flags_table(read_csv(flags_path)))
    for name, p in written.items():
        print(f"wrote {p}")
    if "results" in written:
        print(f"report: emergence report {shlex.quote(str(Path(written['results']).parent))}")
    return 0


def stability_cli(path: Path, *, runs_per_size: int, replicates: int | None = None, given: dict | None = None,
                  seed: int = 0) -> int:
    """`emergence stability`: stability.csv beside the input, and a table of each row's modal verdict."""
    from analysis.stability import stability  # scipy: seconds to import, and the sweep's jobs import this module

    if not path.exists():
        raise ConfigError(f"{path} does not exist; give a sweep folder or a results table")
    if runs_per_size < 1:
        raise ConfigError(f"--runs-per-size must be at least 1, got {runs_per_size}")
    df = an.load_results(path)
    settings = folder_settings(path if path.is_dir() else path.parent, given)
    print("settings: " + "; ".join(settings.describe()))
    table = stability(df, runs_per_size, replicates, seed=seed, **{**task_options(df), **settings.options.kwargs(loss_view=False)})
    out = (path if path.is_dir() else path.parent) / "stability.csv"
    kept = keep_previous(out)
    write_csv(table, out)
    if kept:
        print(kept)
    with pd.option_context("display.width", 160, "display.max_rows", 200):
        print(table[["task", "metric", "modal", "modal_share", "modal_lo", "modal_hi", "verdicts"]].to_string(
            index=False))
    print(f"wrote {out}")
    return 0


def budget_cli(base: Path, more: Path) -> int:
    """`emergence budget`: budget.csv in BASE, and its sentences."""
    from analysis.budget import BudgetOrderError, budget_shift  # scipy, as above

    for p in (base, more):
        if not p.exists():
            raise ConfigError(f"{p} does not exist; give two sweep folders or results tables")
    try:
        table = budget_shift(an.load_results(base), an.load_results(more))
    except BudgetOrderError as e:
        raise ConfigError(f"{base} and {more}: {e}") from None
    if table.empty:
        raise ConfigError(f"{base} and {more} share no size with an all-or-nothing metric (exact match) measured in "
                          "both; train some of BASE's sizes again with a larger train.tokens")
    out = (base if base.is_dir() else base.parent) / "budget.csv"
    write_csv(table, out)
    for e in table["evidence"]:
        print(e)
    print(f"wrote {out}")
    return 0
