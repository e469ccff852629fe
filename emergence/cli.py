"""The `emergence` command: one console script, one verb per job. Each verb parses its arguments and calls a plain
function (train, probe_run, run_sweep, analyze, write_report, ...) that tests call directly.

A bad argument or config gives one line on stderr and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

VERBS = {  # in the order `emergence --help` lists them
    "train": "train one run from the config and overrides (resumes if it was stopped)",
    "sweep": "train, probe, aggregate, analyze and report a family of runs (default experiment: cpu_demo)",
    "probe": "probe the checkpoints of a run not yet probed, or Hugging Face models (--hf) into a sweep folder",
    "status": "show each run of a sweep: done, running, failed (with its error), not started",
    "analyze": "fit scaling laws and flag emergent abilities in a sweep folder or results table",
    "stability": "how often a verdict survives: judge disjoint sets of runs of one sweep (stability.csv)",
    "budget": "does a jump move with the token budget: compare a sweep with its sizes trained longer (budget.csv)",
    "report": "write plots, report.html and report.md for a sweep folder",
    "forecast": "predict a larger model's score on a task from a ladder of runs, with a backtested interval",
    "compare": "is checkpoint B better than A on the same examples: a paired test per task (McNemar, sign flips)",
    "export": "write a checkpoint as a Hugging Face folder (transformers' from_pretrained reads it)",
    "generate": "continue a prompt from a checkpoint (greedy or sampled)",
    "bench": "measure training and probing speed against this machine's matmul peak",
}


class UsageError(Exception):
    pass


def one_line(e: BaseException) -> str:
    """An exception as one readable line (Hydra and OmegaConf messages span several)."""
    text = str(e).strip() or type(e).__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    keep = [ln for ln in lines if not ln.startswith(("object_type", "Set the environment variable"))]
    return "; ".join(keep) if keep else lines[0]


def _expected_errors():
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from emergence.checkpoint import CheckpointError  # on an error only: the CLI starts without torch

    return (UsageError, ValueError, HydraException, OmegaConfBaseException, CheckpointError, KeyError,
            OSError)  # OSError: a missing file, a full disk, a permission (the message names the file)


def _fail(verb: str, msg: str, code: int = 2):
    print(f"emergence {verb}: error: {msg}", file=sys.stderr)
    return code


def _bytes(b: float) -> str:
    return f"{b / 2**30:.1f} GiB" if b >= 2**30 else f"{b / 2**20:.1f} MiB"


def list_experiments() -> int:
    """`--list-experiments`: each experiment of sweeps/experiment/ with the first sentence of its comment."""
    import importlib.resources

    folder = importlib.resources.files("sweeps") / "experiment"
    for f in sorted((p for p in folder.iterdir() if p.name.endswith(".yaml")), key=lambda p: p.name):
        lines = [ln[1:].strip() for ln in f.read_text().splitlines() if ln.startswith("#") and "@package" not in ln]
        about = lines[0].rstrip(",;:") if lines else ""
        print(f"{f.name[:-5]:<15} {about}")
    return 0


def show_config(overrides: list[str], grid: bool = False) -> int:
    """`--show-config`: the composed config of the overrides (`grid`: a sweep's first point), as YAML, checked."""
    from omegaconf import OmegaConf

    from emergence.config import compose, validate  # when the verb runs: the CLI starts without torch
    from emergence.sweep import expand_grid

    points = expand_grid(list(overrides))[1] if grid else [list(overrides)]
    cfg = compose(points[0])
    validate(cfg)
    if len(points) > 1:
        print(f"# the first of {len(points)} points of the grid: {' '.join(points[0])}")
    print(OmegaConf.to_yaml(cfg), end="")
    return 0


def cmd_train(args) -> int:
    from emergence.config import compose, run_dir, validate  # when the verb runs: the CLI starts without torch
    from emergence.device import check_run_memory, pick_device  # when the verb runs: the CLI starts without torch
    from emergence.train import train  # when the verb runs: the CLI starts without torch

    if args.list_experiments:
        return list_experiments()
    if args.show_config:
        return show_config(args.overrides)
    cfg = compose(args.overrides)
    derived = validate(cfg)
    if args.dry_run:
        print(f"run {run_dir(cfg)}: {derived['n_params']:,} parameters, {derived['steps']} steps, "
              f"{derived['tokens']:,} tokens, {derived['flops']:.3g} FLOPs, about {_bytes(derived['memory_bytes'])} "
              f"to train ({derived['precision']})", flush=True)
        check_run_memory(cfg, pick_device(cfg))  # the real run's pre-flight: a refusal exits 2 here too
        return 0
    summary = train(cfg)
    state = summary.get("state")
    if summary.get("skipped"):
        if state != "done":  # a diverged run is final: retraining it from its last good checkpoint diverges again
            print(f"{summary['run_id']}: {state} earlier ({summary.get('error', '')}); change the config (a new run) "
                  f"to train it again ({summary['run_dir']})")
            return 1
        print(f"{summary['run_id']}: already finished ({summary['run_dir']})")
        return 0
    print(f"{summary['run_id']}: {state} in {summary.get('wall_s', float('nan')):.1f} s, final loss "
          f"{summary.get('final_loss', float('nan')):.4f} ({summary['run_dir']})")
    return 0 if state == "done" else 1


def cmd_probe(args) -> int:
    if args.hf:
        from emergence.hf import probe_hf_cli  # when the verb runs: the CLI starts without torch

        return probe_hf_cli(args)
    if args.revision or args.out or args.tokens_per_step is not None or args.shots is not None \
            or args.keep_duplicates:
        raise UsageError("--revision, --tokens-per-step, --shots, --keep-duplicates and --out go with --hf "
                         "PATH_OR_NAME")
    if not args.run_dir:
        raise UsageError("give a run folder (results/<sweep>/runs/<run_id>) or --hf PATH_OR_NAME --out SWEEP_DIR")
    from emergence.probe import probe_cli  # when the verb runs: the CLI starts without torch

    run_dir = Path(args.run_dir)
    code = probe_cli(run_dir, args.overrides)
    sweep = run_dir.resolve().parent.parent
    if code == 0 and run_dir.resolve().parent.name == "runs" and (sweep / "grid.json").exists():
        from emergence.sweep import aggregate  # the sweep's tables hold the new rows, as a sweep's end leaves them

        rows = aggregate(sweep).get("results", 0)
        print(f"{sweep / 'results.parquet'}: rebuilt, {rows} rows; `emergence analyze {sweep}` judges them")
    return code


def cmd_sweep(args) -> int:
    from emergence.sweep import run_sweep  # when the verb runs: the CLI starts without torch

    if args.list_experiments:
        return list_experiments()
    if args.show_config:
        given = any(o.split("=", 1)[0].lstrip("+") == "experiment" for o in args.overrides)
        return show_config(args.overrides if given else ["experiment=cpu_demo", *args.overrides], grid=True)

    return run_sweep(args.overrides, dry_run=args.dry_run)


def cmd_status(args) -> int:
    from emergence.live import print_status, watch  # when the verb runs: the CLI starts without torch

    if args.interval is not None and not args.watch:
        raise UsageError("--interval sets how often --watch redraws: give --watch too")
    if args.interval is not None and not args.interval > 0:
        raise UsageError(f"--interval must be a positive number of seconds, got {args.interval}")
    if args.watch:
        return watch(Path(args.sweep_dir), args.interval or 2.0)
    return print_status(Path(args.sweep_dir))


SETTINGS_FLAGS = {  # the verdict's settings (analysis.options.FlagOptions): flag -> (type, metavar)
    "w0": (float, "DECADES"), "loss_w0": (float, "NATS"), "alpha": (float, "A"), "n_boot": (int, "B"),
}


def add_settings_flags(q) -> None:
    """--w0, --loss-w0, --alpha, --n-boot: each overrides the setting the folder keeps (flag_options.json, written
    by the sweep or the last `emergence analyze`; else the default)."""
    from analysis.options import ABOUT, DEFAULTS

    for name, (kind, metavar) in SETTINGS_FLAGS.items():
        q.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, default=None, metavar=metavar,
                       help=f"{ABOUT[name][0]} (default: the folder's flag_options.json, else "
                            f"{getattr(DEFAULTS, name):g}); choose it before looking".replace("%", "%%"))


def settings_given(args) -> dict:
    return {name: getattr(args, name) for name in SETTINGS_FLAGS}


def cmd_analyze(args) -> int:
    from emergence.analyze import analyze_cli  # when the verb runs: the CLI starts without torch

    def pairs(items, flag):
        out = {}
        for item in items:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise UsageError(f"{flag} {item!r}: write COLUMN=VALUE")
            out[key] = value
        return out

    mapping, constants = pairs(args.map, "--map"), pairs(args.set, "--set")
    if (mapping or constants) and args.source != "csv":
        raise UsageError("--map and --set describe a CSV: use them with --from csv")
    if args.out is not None and args.source == "results":
        raise UsageError("--out is where an import is written: use it with --from lm-eval or --from csv")
    return analyze_cli(Path(args.path), x=args.x, source=args.source, views=args.view,
                       mapping=mapping, constants=constants, given=settings_given(args),
                       out=Path(args.out) if args.out else None, dedupe=args.dedupe)


def cmd_stability(args) -> int:
    from emergence.analyze import stability_cli  # when the verb runs: the CLI starts without torch

    return stability_cli(Path(args.path), runs_per_size=args.runs_per_size, replicates=args.replicates,
                         given=settings_given(args), seed=args.seed)


def cmd_budget(args) -> int:
    from emergence.analyze import budget_cli  # when the verb runs: the CLI starts without torch

    return budget_cli(Path(args.base), Path(args.more))


def cmd_report(args) -> int:
    from analysis.report import write_report

    folder = Path(args.sweep_dir)
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder; give a sweep folder such as results/cpu_demo")
    paths = write_report(folder, strict=True)
    print(f"wrote {paths.get('html', folder / 'report.html')}")
    return 0


def parse_target(text: str) -> dict[str, float]:
    """`--at n_params=1.3e10,tokens=5e12[,flops=...]` as a dict of numbers."""
    out = {}
    for item in text.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep or key not in ("n_params", "tokens", "flops"):
            raise UsageError(f"--at {text!r}: write n_params=N,tokens=D (and optionally flops=C)")
        try:
            out[key] = float(value)
        except ValueError:
            raise UsageError(f"--at {text!r}: {key}={value!r} is not a number") from None
    return out


TASK_LOSSES = {"answer_nll", "bits_per_byte"}  # a task's own losses, which `forecast --via` can route through


def checkpoint_ref(text: str, flag: str) -> tuple[str, int | None]:
    """RUN@STEP (or RUN, its last checkpoint) as (run_id, step)."""
    run, _, step = text.partition("@")
    if not run or (step and not step.isdigit()):
        raise UsageError(f"{flag} {text!r}: write RUN_ID@STEP (a run folder's name and a checkpoint step), or "
                         "RUN_ID for its last checkpoint")
    return run, int(step) if step else None


def cmd_compare(args) -> int:
    import pandas as pd

    from analysis.compare import compare_checkpoints

    folder = Path(args.sweep_dir)
    a, b = checkpoint_ref(args.a, "--a"), checkpoint_ref(args.b, "--b")
    whole = folder / "instances.parquet"
    parts = [whole] if whole.is_file() else [folder / "runs" / run / "instances.parquet" for run in {a[0], b[0]}]
    if not any(p.is_file() for p in parts):
        raise UsageError(f"{folder} has no per-example results (instances.parquet): give a sweep folder whose "
                         "checkpoints were probed")
    instances = pd.concat([pd.read_parquet(p) for p in parts if p.is_file()], ignore_index=True)
    out = compare_checkpoints(instances, a, b, task=args.task, seed=args.seed)
    print(f"A = {args.a}, B = {args.b}: the difference B - A on the same examples, its paired-bootstrap 95% "
          "interval, the p-value of a paired test and the Benjamini-Hochberg q across tasks")
    with pd.option_context("display.width", 160):
        print(out.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0


def cmd_forecast(args) -> int:
    import pandas as pd

    import analysis as an
    from analysis.forecast import write_forecast
    from analysis.ladder import snr_warning

    path = Path(args.path)
    if not path.exists():
        raise UsageError(f"{path} does not exist; give a sweep folder or a results table")
    results = an.load_results(path)
    level = args.level
    if level is None:  # the folder's verdict settings: intervals at 1 - alpha
        from emergence.analyze import folder_settings

        level = 1.0 - folder_settings(path if path.is_dir() else path.parent).options.alpha
    if args.max_params is not None:
        # hold the larger models out: the ladder is every run of at most this many parameters
        results = results[pd.to_numeric(results["n_params"], errors="coerce") <= args.max_params]
        if results.empty:
            raise UsageError(f"--max-params {args.max_params:g} leaves no run in the ladder")
    out = write_forecast(results, path if path.is_dir() else path.parent,
                         [parse_target(a) for a in args.at], args.task, args.metric, via=args.via,
                         method=args.method, level=level, floor=args.floor, n_boot=args.n_boot,
                         ceiling=args.ceiling)
    with pd.option_context("display.width", 160, "display.max_colwidth", 60):
        print(out["forecast"].to_string(index=False))
        losses = sorted(set(results.loc[results["task"] == args.task, "metric"].astype(str)) & TASK_LOSSES)
        if args.via is None and losses:
            print(f"note: {args.task} also has {' and '.join(losses)} measured; --via {losses[0]} (with --ceiling 1 "
                  "when it is the answer's own loss) forecasts through the task's loss, two_step, and the backtest "
                  "then chooses between the methods")
        first = out["forecast"].iloc[0]
        print(f"method: {first['method']}; {first['chosen_by']}")
        source = {"checkpoints": "the scatter of a run's last checkpoints", "seeds": "the scatter across seeds"}
        print(f"signal-to-noise: {first['snr']:.3g} (the final score spreads {first['snr_signal']:.3g} across the "
              f"ladder; noise {first['snr_noise']:.3g}, "
              f"{source.get(first['snr_noise_from'], 'not measurable')})")
        if warning := snr_warning(float(first["snr"]), args.task, float(first["snr_signal"])):
            print(f"warning: {warning}")
        if out["forecast"]["rise_unseen"].any():
            print("rise unseen: the ladder has not begun the rise (its fitted curve is not 10% of the way up), so "
                  "where it lies past the ladder is not in the data; those intervals reach the ceiling")
        cov = out["coverage"]
        for _, r in cov.iterrows():
            print(f"backtest {r['method']}: {r['coverage']:.0%} of {r['n_predicted']} runs inside their "
                  f"{r['level']:.0%} interval over {r['n_origins']} origins (mean width {r['mean_width']:.3g}), "
                  f"mean |error| {r['mae']:.3g}")
            if r["n_rise_unseen"]:
                seen = int(r["n_predicted"] - r["n_rise_unseen"])
                print(f"  {int(r['n_rise_unseen'])} lay past sizes that had not begun the rise (intervals to the "
                      f"ceiling)" + (f"; the other {seen}: {r['coverage_seen']:.0%} inside, mean width "
                                     f"{r['mean_width_seen']:.3g}" if seen else ""))
            if r["n_cal"]:
                print(f"  widened by the earlier origins' drift: {r['coverage_cal_seen']:.0%} of "
                      f"{int(r['n_cal'])} inside, mean width {r['mean_width_cal_seen']:.3g}")
        print(f"interval: {first['interval_from']}" + (
            f"; drift {first['drift']:.3g} per decade of compute past the ladder" if first["drift"] == first["drift"]
            else ""))
        if cov.empty:
            print("backtest: below its largest size the ladder has too few sizes or runs to fit; the interval is "
                  "untested")
    folder = path if path.is_dir() else path.parent
    print(f"wrote {folder / 'forecast.csv'} and {folder / 'forecast_backtest.csv'}")
    return 0


def cmd_export(args) -> int:
    from emergence.export import export_cli  # when the verb runs: the CLI starts without torch

    return export_cli(args.checkpoint, args.out_dir)


def _bench_lmeval(args) -> int:
    import importlib.util
    import json

    folder = Path(args.lm_eval)
    for module, extra in (("transformers", "hf"), ("lm_eval", "bench"), ("accelerate", "bench")):
        if importlib.util.find_spec(module) is None:
            raise UsageError(f"the lm-eval bench needs {module}: pip install 'emergence[{extra}]'")
    from emergence.bench.lmeval import describe, lmeval_bench  # when the verb runs: lm-eval is optional

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        r = lmeval_bench(folder, task=args.task, n=args.n, shots=args.shots, batch_size=args.batch_size)
    except ValueError as e:
        raise UsageError(str(e)) from None
    print(describe(r))
    if args.out:
        Path(args.out).write_text(json.dumps(r, indent=1) + "\n")
    return 0 if r["agree"] else 1


def cmd_generate(args) -> int:
    from emergence.probe import generate_text  # when the verb runs: the CLI starts without torch

    if not args.temperature >= 0:
        raise UsageError(f"--temperature must be 0 (greedy) or positive (sampled), got {args.temperature}")
    if args.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    print(generate_text(Path(args.checkpoint), args.prompt, max_new_tokens=args.max_new_tokens,
                        temperature=args.temperature, seed=args.seed))
    return 0


def cmd_bench(args) -> int:
    if args.lm_eval is not None:
        return _bench_lmeval(args)
    from emergence.bench import main as bench_main  # when the verb runs: the CLI starts without torch

    return bench_main(out=args.out, quick=args.quick, gpu=args.gpu, threads=args.threads, profile=args.profile,
                      seeds=args.seeds)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="emergence",
        description="Train a family of GPT sizes, probe every checkpoint on held-out tasks, fit scaling laws and "
                    "flag emergent abilities with their evidence.",
        epilog="Run 'emergence VERB --help' for a verb's arguments.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="verb", metavar="VERB")

    def dry(q):
        q.add_argument("--dry-run", action="store_true", help="list what would run, with estimates, and exit")
        q.add_argument("--show-config", action="store_true",
                       help="print the composed config (a sweep's first point) as YAML, and exit")
        q.add_argument("--list-experiments", action="store_true",
                       help="list the experiments (experiment=NAME) with what each is for, and exit")

    for verb, fn in (("train", cmd_train), ("sweep", cmd_sweep)):
        q = sub.add_parser(verb, help=VERBS[verb], description=VERBS[verb])
        dry(q)
        q.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=l1d32 train.max_steps=50")
        q.set_defaults(fn=fn)
    q = sub.add_parser("probe", help=VERBS["probe"], description=VERBS["probe"])
    q.add_argument("run_dir", nargs="?", help="a run folder, results/<sweep>/runs/<run_id> (not with --hf)")
    q.add_argument("overrides", nargs="*", help="probe settings, e.g. probe.tasks=[add2] probe.n=256")
    q.add_argument("--hf", action="append", default=None, metavar="PATH_OR_NAME",
                   help="probe a Hugging Face causal LM: a model folder, or a name in the local hub cache (never "
                        "downloaded); repeat for several sizes")
    q.add_argument("--revision", action="append", default=None, metavar="R1,R2",
                   help="with --hf: revisions, comma-separated (subfolders of a local model, or hub revisions)")
    q.add_argument("--tokens-per-step", type=float, default=None, metavar="N",
                   help="with --hf: training tokens per step, for revisions whose name gives no tokens "
                        "(Pythia's step<N> defaults to 2,097,152)")
    q.add_argument("--keep-duplicates", action="store_true",
                   help="with --hf: probe revisions whose weights another revision of the model has too (by default "
                        "their rows are status duplicate_weights, kept out of the analysis)")
    q.add_argument("--shots", type=int, default=None, metavar="K",
                   help="with --hf: solved training examples before each query (default 3; 0: zero-shot)")
    q.add_argument("--out", default=None, metavar="SWEEP_DIR", help="with --hf: the sweep folder to write")
    q.set_defaults(fn=cmd_probe)
    q = sub.add_parser("status", help=VERBS["status"], description=VERBS["status"])
    q.add_argument("sweep_dir", help="a sweep folder, results/<sweep> (with --watch it may not exist yet)")
    q.add_argument("--watch", action="store_true",
                   help="redraw a table of the runs (state, step, loss, tokens/s, ETA) until every run has finished")
    q.add_argument("--interval", type=float, default=None, metavar="S", help="with --watch: seconds between looks "
                                                                            "(default 2)")
    q.set_defaults(fn=cmd_status)
    q = sub.add_parser("analyze", help=VERBS["analyze"], description=VERBS["analyze"])
    q.add_argument("path", help="a sweep folder, results.parquet/.csv, an lm-evaluation-harness JSON (or folder), "
                                "or a CSV with --from csv")
    q.add_argument("--x", default="n_params", choices=["n_params", "flops", "tokens", "loss"],
                   help="the axis the jumps are judged along (default n_params: across sizes)")
    q.add_argument("--from", dest="source", default="results", choices=["results", "lm-eval", "csv"],
                   help="what PATH is (default results: a sweep folder or results table of this tool)")
    q.add_argument("--view", action="append", choices=["transitions", "loss", "resolution", "backtest"],
                   help="also write this view's CSV (repeatable)")
    q.add_argument("--map", action="append", default=[], metavar="COLUMN=SOURCE",
                   help="--from csv: a results column and the file's column that holds it, e.g. n_params=Params; "
                        "for a wide table (one column per task and metric) a column pattern, e.g. "
                        "value='eval/{task}/{metric}'")
    q.add_argument("--set", action="append", default=[], metavar="COLUMN=VALUE",
                   help="--from csv: a fixed value for a results column the file lacks, e.g. metric=acc; "
                        "tokens_per_step=N gives tokens = step x N")
    add_settings_flags(q)
    q.add_argument("--dedupe", default=None, choices=["first", "last"],
                   help="keep the first (or last) of rows that repeat a measurement (a run, step, task and metric); "
                        "by default such rows are refused")
    q.add_argument("--out", default=None, metavar="DIR",
                   help="--from lm-eval|csv: the folder the import is written to (default: the folder imported, or a "
                        "folder named after the file beside it)")
    q.set_defaults(fn=cmd_analyze)
    q = sub.add_parser("stability", help=VERBS["stability"], description=VERBS["stability"] + ". Each size's runs "
                       "are shuffled and dealt into disjoint sets (no retraining); replicate j takes the j-th set at "
                       "every size.")
    q.add_argument("path", help="a sweep folder or results table with several runs per size")
    q.add_argument("--runs-per-size", type=int, required=True, metavar="S", help="runs of each size in one set")
    q.add_argument("--replicates", type=int, default=None, metavar="K",
                   help="disjoint sets to judge (default: as many as the smallest size's pool allows)")
    add_settings_flags(q)
    q.add_argument("--seed", type=int, default=0, help="seed of the shuffle that deals the runs")
    q.set_defaults(fn=cmd_stability)
    q = sub.add_parser("budget", help=VERBS["budget"], description=VERBS["budget"] + ". For every all-or-nothing "
                       "metric and every size both hold: runs that acquired it under each budget, and Fisher's exact "
                       "test of the difference. Writes budget.csv into BASE; the report shows it.")
    q.add_argument("base", metavar="SWEEP_DIR", help="a sweep folder or results table")
    q.add_argument("more", metavar="LONGER_DIR",
                   help="the same sizes (some of them) trained on more tokens: a sweep folder or results table")
    q.set_defaults(fn=cmd_budget)
    q = sub.add_parser("report", help=VERBS["report"], description=VERBS["report"])
    q.add_argument("sweep_dir", help="a sweep folder (or the folder an import wrote), with its results.parquet")
    q.set_defaults(fn=cmd_report)
    q = sub.add_parser("forecast", help=VERBS["forecast"], description=VERBS["forecast"] + ". Writes forecast.csv "
                       "and forecast_backtest.csv beside the input (analysis/README.md, Forecast).")
    q.add_argument("path", help="a sweep folder or results table: a ladder of sizes (x budgets) with checkpoints")
    q.add_argument("--task", required=True, help="the task to predict, as the results table names it")
    q.add_argument("--metric", required=True, help="the score to predict, e.g. exact_match or acc")
    q.add_argument("--via", default=None, metavar="LOSS",
                   help="the loss of the two-step route: a metric of the task (answer_nll, bits_per_byte) or "
                        "TASK:METRIC of another task (lambada_openai:perplexity; a perplexity enters as its log)")
    q.add_argument("--at", action="append", required=True, metavar="n_params=N,tokens=D",
                   help="a model to predict (repeatable)")
    q.add_argument("--method", default="auto", choices=["auto", "two_step", "direct", "direct_log"],
                   help="two_step: through the task's loss (needs --via); direct: a sigmoid in compute; direct_log: "
                        "-log of the share of the way up as a power law in compute; auto (the default): the one "
                        "with the smallest backtest error")
    q.add_argument("--floor", type=float, default=None,
                   help="the metric's chance level (multiple choice), else fitted (direct_log: the metric's worse "
                        "bound)")
    q.add_argument("--ceiling", type=float, default=None,
                   help="the score at zero loss (two_step), else fitted (direct_log: the metric's better bound): 1 "
                        "when --via is the answer's own loss")
    q.add_argument("--level", type=float, default=None,
                   help="interval level (default 1 - alpha of the folder's verdict settings, flag_options.json: 0.95 "
                        "unless the sweep chose another alpha)")
    q.add_argument("--n-boot", type=int, default=200, help="bootstrap draws of each fit (default 200)")
    q.add_argument("--max-params", type=float, default=None, metavar="N",
                   help="fit on the runs of at most N parameters only: hold larger models out to check a forecast")
    q.set_defaults(fn=cmd_forecast)
    q = sub.add_parser("compare", help=VERBS["compare"], description=VERBS["compare"] + ", from the sweep's "
                       "per-example results (analysis/README.md, Comparing two checkpoints)")
    q.add_argument("sweep_dir", help="a sweep folder with instances.parquet (or its runs' own)")
    q.add_argument("--a", required=True, metavar="RUN@STEP", help="checkpoint A: a run id and a step (RUN alone: "
                                                                  "its last checkpoint)")
    q.add_argument("--b", required=True, metavar="RUN@STEP", help="checkpoint B, as --a")
    q.add_argument("--task", default=None, help="compare on this task only (default: every task both were probed on)")
    q.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and the sign flips")
    q.set_defaults(fn=cmd_compare)
    q = sub.add_parser("export", help=VERBS["export"], description=VERBS["export"])
    q.add_argument("checkpoint", help="a checkpoint file, .../checkpoints/step_<N>.pt")
    q.add_argument("out_dir", help="the folder to create (must not exist, or be empty)")
    q.set_defaults(fn=cmd_export)
    q = sub.add_parser("generate", help=VERBS["generate"], description=VERBS["generate"])
    q.add_argument("checkpoint", help="a checkpoint file, .../checkpoints/step_<N>.pt")
    q.add_argument("prompt", help="the text to continue, e.g. 'A:12+34=' for a task-trained model")
    q.add_argument("--max-new-tokens", type=int, default=32, help="tokens to generate at most (default 32)")
    q.add_argument("--temperature", type=float, default=0.0, help="0 (the default): greedy; above 0: sampled")
    q.add_argument("--seed", type=int, default=0, help="seed of the sampling (with --temperature above 0)")
    q.set_defaults(fn=cmd_generate)
    q = sub.add_parser("bench", help=VERBS["bench"], description=VERBS["bench"])
    q.add_argument("--out", default=None, help="write the measurements as JSON here")
    q.add_argument("--quick", action="store_true", help="matmul peak and three CPU sizes only (under 2 minutes)")
    q.add_argument("--gpu", action="store_true", help="Pythia 70M/160M shapes on one CUDA GPU: bf16, fused AdamW, "
                                                      "torch.compile, flash attention (under 5 minutes)")
    q.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice, all cores)")
    q.add_argument("--profile", default=None, metavar="SIZE",
                   help="print where the training step of one ladder size (l1d4 ... l6d384) spends its time "
                        "(torch.profiler) instead of measuring")
    q.add_argument("--seeds", type=int, default=0, help="with --profile: profile this many seeds stacked")
    q.add_argument("--lm-eval", default=None, metavar="MODEL_FOLDER",
                   help="probe a local Hugging Face model with our engine and with lm-evaluation-harness (the bench "
                        "extra) on the same items: examples per second for each and item-by-item agreement")
    q.add_argument("--task", default="add2", help="with --lm-eval: the task whose probe set is scored")
    q.add_argument("--n", type=int, default=256, help="with --lm-eval: items")
    q.add_argument("--shots", type=int, default=0, help="with --lm-eval: solved examples before each query")
    q.add_argument("--batch-size", type=int, default=16, help="with --lm-eval: batch size of both tools")
    q.set_defaults(fn=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "verb", None):
        parser.print_help()
        return 0
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        print(f"emergence {args.verb}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`emergence status ... | head`): stop quietly, as `cat` does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except _expected_errors() as e:
        return _fail(args.verb, one_line(e))


if __name__ == "__main__":
    sys.exit(main())
