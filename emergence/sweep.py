"""`emergence sweep`: a Hydra multirun over the grid an experiment declares, then aggregation, analysis and report
(the analysis entry points are in `emergence.analyze`).

Hydra does the launching (basic, joblib, submitit local or SLURM: `hydra/launcher=...`); each job calls `train(cfg)`,
which skips a finished run and resumes an unfinished one because a run's folder is named by the hash of its resolved
config. A multirun callback (`SweepCallback`) aggregates every run's files into `results.parquet` and `runs.parquet`
once the launcher returns, then runs the analysis and the report.
"""
from __future__ import annotations

import itertools
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from filelock import FileLock
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from emergence.analyze import finish_sweep
from emergence.checkpoint import schedule
from emergence.config import (ConfigError, compose, config_settings, gpt_config, run_dir, run_id, sweep_dir,
                              validate)
from emergence.device import check_run_memory, pick_device
from emergence.files import atomic_write_parquet, environment, pid_alive, write_json
from emergence.layout import load_runs, read_status
from emergence.live import SweepProgress, bar_owns_terminal
from emergence.model import GPT, flops_per_token
from emergence.optim import Step, make_optimizer
from emergence.run import write_status
from emergence.stacked import train_seeds
from emergence.train import train

DEFAULT_EXPERIMENT = "cpu_demo"


# ---------------------------------------------------------------------------------------------------------------------
# The grid.

SWEEPER_PARAMS = "hydra.sweeper.params."


def as_axes(overrides: list[str]) -> list[str]:
    """`hydra.sweeper.params.KEY=a,b` (quoted or not) written as the grid axis it means, `KEY=a,b`: the command
    line's axis replaces the experiment's, as Hydra's basic sweeper does, and Hydra itself never sees a comma
    list on its own config."""
    out = []
    for o in overrides:
        key, eq, value = o.partition("=")
        if eq and key.startswith(SWEEPER_PARAMS):
            value = value.strip()
            if len(value) > 1 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            o = f"{key[len(SWEEPER_PARAMS):]}={value}"
        out.append(o)
    return out


def expand_grid(overrides: list[str]) -> tuple[DictConfig, list[list[str]]]:
    """Every point of the sweep: the experiment's `hydra.sweeper.params` (or the command line's
    `hydra.sweeper.params.KEY=a,b`, which replaces that axis) and the command line's comma lists, expanded with
    Hydra's own override parser (the same expansion the basic sweeper does). Returns the first point's config,
    with its `hydra` node (the sweeper and the launcher), and the override list of each point."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    fixed, sweeps = [], []
    for o in parser.parse_overrides(as_axes(overrides)):
        (sweeps if o.is_sweep_override() else fixed).append(o)
    first = [o.input_line for o in fixed] + [f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}"
                                             for o in sweeps]
    cfg = compose(first, return_hydra_config=True)
    params = cfg.hydra.sweeper.get("params") or {}
    axes: dict[str, list[str]] = {}
    for key, value in dict(params).items():
        for o in parser.parse_overrides([f"{key}={value}"]):
            axes[o.get_key_element()] = list(o.sweep_string_iterator()) if o.is_sweep_override() \
                else [o.get_value_element_as_str()]
    for o in sweeps:  # the command line wins over the experiment's grid
        axes[o.get_key_element()] = list(o.sweep_string_iterator())
    for o in fixed:  # a single value on the command line replaces a grid axis too, as in Hydra's basic sweeper
        if o.get_key_element() in axes:
            axes[o.get_key_element()] = [o.get_value_element_as_str()]
    base = [o.input_line for o in fixed]
    base = [b for b in base if b.split("=", 1)[0].lstrip("+~") not in axes]
    points = [base + [f"{k}={v}" for k, v in zip(axes, combo)] for combo in itertools.product(*axes.values())]
    return cfg, points


# Launchers that run jobs on this machine: the grid is checked against its memory before anything starts. Any other
# (SLURM) runs them elsewhere, where each run checks its own device when it starts.
LOCAL_LAUNCHERS = ("BasicLauncher", "JoblibLauncher", "LocalLauncher")


def is_remote(launcher) -> bool:
    """Whether a Hydra launcher config (`hydra.launcher`) runs its jobs on other machines."""
    return str(launcher.get("_target_", "")).rsplit(".", 1)[-1] not in LOCAL_LAUNCHERS


def plan(overrides: list[str]) -> tuple[Path, list[dict[str, Any]]]:
    """Compose and validate every point of the grid; return the sweep folder and one record per run.

    With a local launcher each run's memory estimate is checked against this machine (its GPU for a CUDA run); with
    a remote one (SLURM) nothing is refused for this machine's memory: each record carries `warnings` that compare
    the estimate with what the launcher config asks for (`remote_warnings`)."""
    full, points = expand_grid(overrides)
    launcher = full.hydra.launcher
    remote = is_remote(launcher)
    runs, folder = [], None
    for point in points:
        cfg = compose(point)
        d = validate(cfg)
        if not remote:
            check_run_memory(cfg, pick_device(cfg))
        folder = sweep_dir(cfg)
        rid = run_id(cfg)
        st = read_status(folder / "runs" / rid)
        runs.append({"run_id": rid, "sweep": str(cfg.sweep.name), "experiment": str(cfg.experiment),
                     "model": str(cfg.model.name), "n_params": d["n_params"],
                     "n_params_nonembed": d["n_params_nonembed"], "n_layer": cfg.model.n_layer,
                     "d_model": cfg.model.d_model, "n_head": cfg.model.n_head, "seed": cfg.seed,
                     "budget": str(cfg.train.budget), "max_steps": d["steps"], "tokens": d["tokens"],
                     "flops": d["flops"], "flops_per_token": d["flops_per_token"], "lr": d["lr"],
                     "task_suite": str(cfg.task.name), "batch_size": cfg.train.batch_size,
                     "seq_len": cfg.data.seq_len, "ckpt_log_until": cfg.train.ckpt_log_until,
                     "ckpt_every": cfg.train.ckpt_every, "memory_bytes": d["memory_bytes"],
                     "precision": d["precision"], "device": str(cfg.train.device), "remote": remote,
                     "warnings": remote_warnings(cfg, d, launcher) if remote else [],
                     "launcher": launcher_ask(launcher),
                     "state": st.get("state", "not_started"), "overrides": point})
    if not runs:
        raise ConfigError("the sweep's grid is empty")
    sweeps = {r["sweep"] for r in runs}
    if len(sweeps) > 1:
        raise ConfigError(f"one sweep cannot write to several folders ({sorted(sweeps)}); fix sweep.name")
    return folder, runs


def remote_warnings(cfg, derived: dict, launcher) -> list[str]:
    """What may not fit where a remote launcher puts a run: its estimate (at the run's precision on the device it
    asks for) against the launcher's `gpus_per_node` and `mem_gb`, and against `sweep.gpu_mem_gb` where given."""
    need = derived["memory_bytes"] / 2**30
    gpus = launcher.get("gpus_per_node") or 0
    mem_gb = launcher.get("mem_gb")
    out = []
    on_gpu = cfg.train.device == "cuda" or (cfg.train.device == "auto" and gpus > 0)
    if cfg.train.device == "cuda" and not gpus:
        out.append("train.device=cuda but the launcher asks for no GPU (hydra.launcher.gpus_per_node)")
    if on_gpu and cfg.sweep.gpu_mem_gb and need > 0.8 * cfg.sweep.gpu_mem_gb:
        out.append(f"needs about {need:.1f} GiB of GPU memory, more than 80% of sweep.gpu_mem_gb="
                   f"{cfg.sweep.gpu_mem_gb:g}: lower train.batch_size (raise train.grad_accum)")
    if not on_gpu and mem_gb and need > 0.8 * mem_gb:
        out.append(f"trains on the CPU and needs about {need:.1f} GiB, more than 80% of hydra.launcher.mem_gb="
                   f"{mem_gb:g}: raise mem_gb or lower train.batch_size")
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Estimates for --dry-run.

def estimate_seconds(run: dict, calib: dict[str, float]) -> float:
    """Wall-time estimate: FLOPs / (measured model FLOP/s at this width), from a short calibration on this machine."""
    rate = calib.get(run["model"]) or calib.get("_default", 5e9)
    return run["flops"] / rate


def calibrate(runs: list[dict], seconds: float = 1.0) -> dict[str, float]:
    """Measure each distinct size's training FLOP/s for about `seconds` (a few steps of the real model and batch)."""
    import torch

    out = {}
    for run in {r["model"]: r for r in runs}.values():
        cfg = compose(run["overrides"])
        gc = gpt_config(cfg)
        torch.manual_seed(0)
        model = GPT(gc)
        step = Step(lambda x, y: model(x, y)[1], make_optimizer(model, 1e-3, 0.1, (0.9, 0.98), "cpu"),
                    lambda i: 1e-3, cfg.train.grad_clip)
        # the run's own batch shape (its sequence length, not the model's context): at the smallest sizes a step
        # is mostly fixed cost, so a step of another shape would say little about this one
        x = torch.randint(0, gc.vocab_size, (cfg.train.batch_size, min(int(cfg.data.seq_len), gc.block_size)))
        for i in range(3):  # warm-up: the first steps allocate and initialise kernels
            step(i, [(x, x)])
        times, t_start = [], time.perf_counter()
        while len(times) < 5 or (time.perf_counter() - t_start < seconds and len(times) < 50):
            t0 = time.perf_counter()
            step(len(times) + 3, [(x, x)])
            times.append(time.perf_counter() - t0)
        # the median step: one slow step (another process, a page fault) does not move it
        out[run["model"]] = flops_per_token(gc) * x.numel() / max(float(np.median(times)), 1e-9)
    return out


def print_dry_run(overrides: list[str]) -> int:
    folder, runs = plan(overrides)
    remote = runs[0]["remote"]
    # a remote launcher's machines are not this one: their speed cannot be measured here
    calib = {} if remote else calibrate(runs)
    total_s, total_disk = 0.0, 0
    print(f"sweep {folder}: {len(runs)} runs" + (" on a remote launcher (memory checked where each run starts)"
                                                 if remote else ""))
    print(f"{'run_id':<28} {'model':<12} {'params':>10} {'seed':>4} {'steps':>7} {'tokens':>11} {'FLOPs':>9} "
          f"{'memory':>13} {'est. wall':>9} {'ckpt disk':>9}  state")
    for r in runs:
        s = estimate_seconds(r, calib) if calib else float("nan")
        n_ck = len(schedule(r["max_steps"], r["ckpt_log_until"], r["ckpt_every"]))
        disk = n_ck * r["n_params"] * 12  # weights + two AdamW moments, fp32
        total_s += s if r["state"] != "done" else 0
        total_disk += disk
        wall = f"{s:>8.0f}s" if calib else f"{'n/a':>9}"
        mem = f"{r['memory_bytes'] / 2**30:.1f}GiB {r['precision']}"
        print(f"{r['run_id']:<28} {r['model']:<12} {r['n_params']:>10,} {r['seed']:>4} {r['max_steps']:>7} "
              f"{r['tokens']:>11,} {r['flops']:>9.2e} {mem:>13} {wall} {disk / 2**20:>7.1f}MB  {r['state']}")
        for w in r["warnings"]:
            print(f"  warning: {r['run_id']}: {w}")
    done = sum(r["state"] == "done" for r in runs)
    timing = "not measured (a remote launcher's machines)" if remote else f"{total_s / 60:.1f} min sequential " \
        "(probing adds a little)"
    print(f"{done} done, {len(runs) - done} to run; estimated training time {timing}, checkpoints "
          f"{total_disk / 2**20:.0f} MB")
    if remote:
        print(f"the launcher asks for {runs[0]['launcher']}; memory is the estimate at each run's precision "
              "(`config.estimate_memory`)")
    return 0


def launcher_ask(launcher) -> str:
    """The resources a launcher config asks for per job, as one phrase."""
    parts = [f"{k}={launcher.get(k)}" for k in ("partition", "gpus_per_node", "cpus_per_task", "mem_gb",
                                                 "timeout_min") if launcher.get(k) is not None]
    return ", ".join(parts) or "nothing specific"


# ---------------------------------------------------------------------------------------------------------------------
# Launching.

def run_sweep(overrides: list[str], *, dry_run: bool = False) -> int:
    """`emergence sweep [experiment=NAME] [overrides]`: the whole loop; exit status 1 if any run failed."""
    overrides = as_axes(list(overrides))
    if not any(o.split("=", 1)[0].lstrip("+") == "experiment" for o in overrides):
        overrides.insert(0, f"experiment={DEFAULT_EXPERIMENT}")
    if dry_run:
        return print_dry_run(overrides)
    folder, runs = plan(overrides)  # pre-flight: every point composes and validates before anything is trained
    for r in runs:  # a remote launcher's runs are checked where they start; say here what may not fit there
        for w in r["warnings"]:
            print(f"warning: {r['run_id']}: {w}", file=sys.stderr)
    first = compose(runs[0]["overrides"])
    if first.sweep.seeds:
        raise ConfigError("sweep.seeds is set by `emergence sweep` for stacked jobs; give seeds as a grid axis "
                          "(seed=0,1) and stack them with sweep.stack_seeds=true")
    sizes = sorted({r["model"] for r in runs})
    if len(sizes) == 1 and first.sweep.analyze:
        raise ConfigError(f"the grid has one model size ({sizes[0]}) and the analysis compares sizes: give several "
                          "(model=a,b,c) or set sweep.analyze=false to train this size alone")
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "grid.json", {"runs": runs, "overrides": overrides})
    meta_path = folder / "meta.json"
    meta = {"command": "emergence sweep " + " ".join(shlex.quote(o) for o in overrides),
            "experiment": runs[0]["experiment"], "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **environment()}
    write_json(meta_path, meta)
    todo = [r for r in runs if r["state"] not in ("done", "diverged")]  # what train() skips
    print(f"sweep {folder}: {len(runs)} runs, {len(runs) - len(todo)} already done", file=sys.stderr)
    t0 = time.time()
    FINISH_FAILURES.clear()
    with SweepProgress(folder):
        _launch(stacked_overrides(overrides, runs, int(first.sweep.stack_size)) if first.sweep.stack_seeds
                else overrides)
    summary = load_runs(folder)
    meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    meta["wall_s"] = time.time() - t0
    write_json(meta_path, meta)
    print_summary(summary, time.time() - t0, skipped=len(runs) - len(todo))
    for line in FINISH_FAILURES:
        print(f"error: {line}", file=sys.stderr)
    if FINISH_FAILURES:
        return 1
    report = folder / "report.html"
    if first.sweep.analyze and report.exists():
        print(f"report: {report}", file=sys.stderr)
    elif not first.sweep.analyze:
        print(f"analysis: `emergence analyze {folder}`, then `emergence report {folder}`", file=sys.stderr)
    return 0 if (summary["status"] == "done").all() else 1


LAUNCHER_PID = "EMERGENCE_LAUNCHER_PID"  # the sweep's own process, for jobs that run in worker processes
_watching: list[int] = []  # the launcher pid this worker process watches (one watch per process)


def watch_launcher(poll_s: float = 1.0) -> bool:
    """In a job that runs in a worker process of its own (the joblib launcher's loky workers), end the process when
    the sweep that started it is gone: a killed `emergence sweep` would otherwise leave its workers training on,
    unseen. The worker was started by the launcher, so the launcher's death shows as a new parent. Training is
    safe to stop at any moment (its checkpoints and run lock are kill-safe), and the same command resumes it.
    Returns whether a watch runs (not in the launcher's own process, nor where no launcher pid was recorded)."""
    import threading

    launcher = os.environ.get(LAUNCHER_PID, "")
    if not launcher.isdigit() or int(launcher) == os.getpid():
        return False
    if os.getppid() != int(launcher):
        if not pid_alive(launcher):  # it died between starting this worker and handing it the job
            _stop(int(launcher))
        return False  # another process's child (submitit, a scheduler): not ours to watch
    if _watching:
        return True
    _watching.append(int(launcher))

    def watch():
        while os.getppid() == _watching[0]:
            time.sleep(poll_s)
        _stop(_watching[0])

    threading.Thread(target=watch, name="watch-launcher", daemon=True).start()
    return True


def _stop(launcher: int) -> None:
    print(f"worker {os.getpid()}: the sweep that started it (pid {launcher}) is gone; stopping. The same command "
          "resumes its run from the last checkpoint", file=sys.stderr, flush=True)
    os._exit(1)


def _launch(overrides: list[str]) -> None:
    """Hand the grid to Hydra's multirun (the launcher config decides where jobs run)."""
    import hydra

    @hydra.main(config_path="pkg://sweeps", config_name="config", version_base="1.3")
    def _main(cfg: DictConfig):
        return sweep_job(cfg)

    argv = sys.argv
    sys.argv = ["emergence-sweep", "--multirun", *overrides]
    os.environ[LAUNCHER_PID] = str(os.getpid())  # worker processes inherit it (`watch_launcher`)
    try:
        _main()
    except SystemExit as e:  # Hydra exits on a composition error; the pre-flight should have caught it
        if e.code not in (0, None):
            raise ConfigError("Hydra could not launch the sweep (see the message above)") from None
    finally:
        sys.argv = argv


def stacked_overrides(overrides: list[str], runs: list[dict], stack_size: int = 0) -> list[str]:
    """The multirun overrides with the seed axis folded into each job: `seed` set to the grid's first seed and
    `sweep.seeds` to the seeds of a job, so Hydra launches one job per point of the other axes and group of at most
    `stack_size` seeds (0: all of them; `sweep_job` trains its seeds together). Run ids do not change: `sweep` is not
    part of a run's identity."""
    seeds = list(dict.fromkeys(int(r["seed"]) for r in runs))
    if len(seeds) < 2:
        return overrides
    size = stack_size if stack_size > 0 else len(seeds)
    groups = [seeds[i:i + size] for i in range(0, len(seeds), size)]
    kept = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != "seed"]
    return [*kept, f"seed={seeds[0]}", "sweep.seeds=" + ",".join(f"[{','.join(map(str, g))}]" for g in groups)]


def sweep_job(cfg: DictConfig) -> dict:
    """One job of the multirun: train and probe one run. Never raises for a failed run: the failure is recorded in
    the run's status.json (and then runs.parquet), and the other jobs go on."""
    watch_launcher()
    if cfg.train.threads == 0:
        cfg.train.threads = threads_for_launcher()
    if cfg.sweep.stack_seeds and cfg.sweep.seeds:
        return _seeds_job(cfg, [int(s) for s in cfg.sweep.seeds])
    _say(f"[run {job_position(cfg)}] {run_id(cfg)}: model {cfg.model.name}, seed {cfg.seed}")
    try:
        summary = train(cfg)
    except KeyboardInterrupt:
        raise
    except Exception as e:  # a config that failed after the pre-flight, or an error outside the training loop
        _record_failure(cfg, e)
        return {"state": "failed", "error": str(e)}
    _print_outcome(summary)
    return {k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool))}


def _record_failure(cfg: DictConfig, e: Exception) -> None:
    """Mark the run `cfg` failed with the error, unless it already finished (done or diverged)."""
    folder = run_dir(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    if read_status(folder).get("state") not in ("done", "diverged"):
        write_status(folder, state="failed", error=f"{type(e).__name__}: {e}", run_id=run_id(cfg))


def _print_outcome(summary: dict) -> None:
    msg = f"already {summary.get('state')}, skipped" if summary.get("skipped") else \
        f"{summary.get('state')} in {summary.get('wall_s', 0):.0f}s, loss {summary.get('final_loss', float('nan')):.3f}"
    _say(f"[{summary['run_id']}] {msg}")


def _say(line: str) -> None:
    """A job's line on stderr, unless the sweep's bar draws this terminal (the bar prints a line per finished run)."""
    if not bar_owns_terminal():
        print(line, file=sys.stderr, flush=True)


def _seeds_job(cfg: DictConfig, seeds: list[int]) -> dict:
    """A job of a stacked sweep: every seed of one grid point, stacked when the size is at most
    sweep.stack_max_params parameters, else one after another. Failures are recorded per run, as in `sweep_job`."""
    n = validate(cfg)["n_params"]
    stack = n <= cfg.sweep.stack_max_params
    how = "stacked" if stack else f"one after another ({n:,} parameters > sweep.stack_max_params)"
    _say(f"[job {job_position(cfg, stacked=True)}] model {cfg.model.name}, seeds {seeds} {how}")
    try:
        summaries = train_seeds(cfg, seeds, stack=stack)
    except KeyboardInterrupt:
        raise
    except Exception as e:  # outside the training loop (train_seeds records failures inside it per run)
        for s in seeds:
            _record_failure(OmegaConf.merge(cfg, {"seed": s}), e)
        return {"state": "failed", "error": str(e)}
    for summary in summaries:
        _print_outcome(summary)
    states = [str(x.get("state")) for x in summaries]
    return {"state": "done" if all(x == "done" for x in states) else ",".join(states), "runs": len(summaries)}


def job_position(cfg: DictConfig, stacked: bool = False) -> str:
    """"k/N": this job's place in the sweep (Hydra's job number over the number of jobs: the grid's runs, or for
    stacked jobs its points without the seed axis times the seed groups of `sweep.stack_size`)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        num = int(HydraConfig.get().job.num) + 1
    except (ValueError, AttributeError):
        num = 0
    grid = sweep_dir(cfg) / "grid.json"
    runs = json.loads(grid.read_text())["runs"] if grid.exists() else []
    total: int | str = len(runs) if runs else "?"
    if runs and stacked:
        seeds = len({int(r["seed"]) for r in runs})
        size = int(cfg.sweep.stack_size) or seeds
        total = len(runs) // seeds * -(-seeds // size)
    return f"{num}/{total}"


def threads_for_launcher() -> int:
    """Split the cores between parallel jobs (joblib launcher): n_jobs processes of cores // n_jobs threads each, so
    two small runs use two cores instead of fighting over both."""
    try:
        from hydra.core.hydra_config import HydraConfig

        launcher = HydraConfig.get().launcher
        n_jobs = int(launcher.get("n_jobs", 1) or 1) if "joblib" in str(launcher.get("_target_", "")) else 1
    except (ValueError, AttributeError, TypeError):
        n_jobs = 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, n_jobs)) if n_jobs > 1 else 0


class SweepCallback(Callback):
    """Aggregate, analyze and report once the launcher has run every job (also after failures)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        folder = sweep_dir(config)
        try:
            aggregate(folder)
        except Exception as e:  # Hydra would only warn: the sweep reads FINISH_FAILURES and exits non-zero
            FINISH_FAILURES.append(f"aggregation failed ({type(e).__name__}: {e}); the runs' files are kept: run "
                                   "the same command again")
            return
        if config.sweep.analyze:
            FINISH_FAILURES.extend(finish_sweep(folder, config))
        else:  # the settings still travel with the sweep: `emergence analyze` and `stability` read them
            config_settings(config.analysis).write(folder)


FINISH_FAILURES: list[str] = []  # what failed after the runs (aggregation, analysis, report), for `run_sweep`'s exit


# ---------------------------------------------------------------------------------------------------------------------
# Aggregation.

def aggregate(folder: Path) -> dict[str, int]:
    """Merge the runs' files into the sweep's tables, atomically and under a lock (two aggregations at once lose no
    rows and write no duplicates). Rows of runs that diverged or failed keep their status."""
    folder = Path(folder)
    with FileLock(str(folder / ".aggregate.lock")):
        runs = load_runs(folder)
        atomic_write_parquet(runs, folder / "runs.parquet")
        counts = {}
        for name in ("probes", "instances", "samples", "train_log"):
            parts = []
            for rid, status in zip(runs["run_id"], runs["status"]):
                p = folder / "runs" / rid / f"{name}.parquet"
                if p.exists():
                    part = pd.read_parquet(p)
                    if name == "train_log":
                        part = part.assign(run_id=rid)
                    if name == "probes" and status in ("diverged", "failed"):
                        part = part.assign(status=status, value=float("nan"))
                    parts.append(part)
            out = "results" if name == "probes" else name
            if parts:
                df = pd.concat(parts, ignore_index=True)
                atomic_write_parquet(df, folder / f"{out}.parquet")
                counts[out] = len(df)
            else:
                counts[out] = 0
        return counts


def print_summary(runs: pd.DataFrame, wall: float, skipped: int = 0) -> None:
    from collections import Counter

    counts = Counter(runs["status"])
    print(f"\nsweep finished in {wall:.0f} s: {counts.get('done', 0)} done ({skipped} skipped as finished earlier), "
          f"{counts.get('failed', 0)} failed, {counts.get('diverged', 0)} diverged, "
          f"{len(runs) - sum(counts[k] for k in ('done', 'failed', 'diverged'))} other", file=sys.stderr)
    bad = runs[runs["status"] != "done"]
    for _, r in bad.iterrows():
        print(f"  {r['run_id']}: {r['status']} {r['error'] or ''}", file=sys.stderr)
