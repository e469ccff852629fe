"""Views of training: the table of `emergence status` (once, or live with --watch), the bar of `emergence sweep`
and a run's progress.

Everything is read from the files a run writes (its status.json, checkpoints and train_log.parquet, through
`emergence.layout.load_runs`), so a view follows runs trained in this process, in a launcher's worker processes or
on other machines alike.

On an interactive terminal the views redraw in place (rich). In a log file, a pipe, CI (the environment variable CI
set) or with TERM=dumb they print plain lines instead, never a carriage return or an escape code: a run at most one
line every `PLAIN_EVERY_S` seconds (and its last step), a sweep one line per finished run, a watched table one line
per run that changed.
"""
from __future__ import annotations

import datetime
import functools
import math
import numbers
import os
import sys
import threading
import time
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from emergence.checkpoint import list_checkpoints
from emergence.layout import load_runs, read_status, require_sweep_folder

FINISHED = ("done", "failed", "diverged")  # states a run does not leave (train() skips done and diverged runs)
PLAIN_EVERY_S = 10.0
PARENT_BAR = "EMERGENCE_SWEEP_BAR"  # set while a sweep's bar owns the terminal: other processes draw nothing on it
COLUMNS = ("run", "state", "step", "loss", "tok/s", "ETA")

_sweep_bar: tuple[int, Progress] | None = None  # (pid, bar) of the sweep bar this process draws


def is_terminal(stream) -> bool:
    """Redraw in place only on an interactive terminal: not in a file or pipe, not in CI, not with TERM=dumb."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and not os.environ.get("CI") and os.environ.get("TERM") != "dumb"


# ---------------------------------------------------------------------------------------------------------------------
# Formatting.

def _finite(x) -> bool:
    return isinstance(x, numbers.Real) and math.isfinite(x)


def fmt_eta(seconds) -> str:
    return str(datetime.timedelta(seconds=round(seconds))) if _finite(seconds) and seconds >= 0 else "-"


def fmt_loss(loss) -> str:
    return f"{loss:.4f}" if _finite(loss) else "-"


def fmt_rate(tokens_per_s) -> str:
    return f"{tokens_per_s:,.0f}" if _finite(tokens_per_s) else "-"


def fmt_steps(step: int, total: int | None) -> str:
    return f"{step}/{total}" if total else str(step)


# ---------------------------------------------------------------------------------------------------------------------
# Reading the run folders.

def latest_step(run_folder: Path) -> int:
    """The step of the run's newest checkpoint (0 before the first)."""
    found = list_checkpoints(Path(run_folder) / "checkpoints")
    return found[-1][0] if found else 0


@functools.lru_cache(maxsize=1024)
def _last_log_row(path: str, mtime_ns: int) -> dict:
    try:
        log = pd.read_parquet(path, columns=["step", "tokens", "loss", "tokens_per_s"], use_threads=False)
    except (OSError, ValueError, KeyError):  # caught mid-write, or a log of another shape: read it at the next poll
        return {}
    return log.iloc[-1].to_dict() if len(log) else {}


def last_log_row(run_folder: Path) -> dict:
    """The newest row of the run's train_log.parquet (written with each checkpoint), with `age_s`: its file's age.
    Read again only when the file changed."""
    path = Path(run_folder) / "train_log.parquet"
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        return {}
    row = _last_log_row(str(path), mtime)
    return {**row, "age_s": max(0.0, time.time() - mtime / 1e9)} if row else {}


def _total_steps(run_folder: Path, run: dict) -> int | None:
    steps = run.get("max_steps")
    if not _finite(steps):  # no grid.json: the run's status.json records its steps
        steps = read_status(run_folder).get("steps")
    return int(steps) if _finite(steps) else None


def _eta_s(state: str, step: int, total: int | None, log: dict) -> float:
    """Seconds left of a running run at its last logged rate, counted down from when that rate was written."""
    if state == "done":
        return 0.0
    if state != "running" or not total or not _finite(log.get("tokens_per_s")) or not log.get("step"):
        return float("nan")
    tokens_per_step = log["tokens"] / log["step"]
    return max(0.0, (total - step) * tokens_per_step / max(log["tokens_per_s"], 1e-9) - log["age_s"])


def run_row(run_folder: Path, run: dict) -> dict:
    """One run's line of the status table; `run` is its row of `load_runs`."""
    state, step, log = str(run["status"]), latest_step(run_folder), last_log_row(run_folder)
    total = _total_steps(run_folder, run)
    final = run.get("final_loss")
    loss = final if state in FINISHED and _finite(final) else log.get("loss", float("nan"))
    return {"run_id": run["run_id"], "state": state, "step": step, "total": total, "loss": loss,
            "tokens_per_s": log.get("tokens_per_s", float("nan")), "eta_s": _eta_s(state, step, total, log),
            "error": run.get("error") or ""}


def status_rows(folder: Path) -> list[dict]:
    """One row per run of the sweep in `folder`, with the states `emergence status` shows."""
    folder = Path(folder)
    return [run_row(folder / "runs" / r["run_id"], r) for r in load_runs(folder).to_dict("records")]


def all_finished(rows: list[dict]) -> bool:
    return all(r["state"] in FINISHED for r in rows)


def unsuccessful(rows: list[dict]) -> str:
    """'1 failed, 2 diverged' (the counts that are not zero), or ''."""
    counts = ((state, sum(r["state"] == state for r in rows)) for state in FINISHED[1:])
    return ", ".join(f"{n} {state}" for state, n in counts if n)


def footer(rows: list[dict]) -> str:
    """'3 of 4 runs done', and the runs that failed or diverged."""
    done, bad = sum(r["state"] == "done" for r in rows), unsuccessful(rows)
    return f"{done} of {len(rows)} runs done" + (f", {bad}" if bad else "")


def table_cells(row: dict) -> list[str]:
    """A row of the status table as text, in the order of COLUMNS."""
    return [row["run_id"], row["state"].replace("_", " "), fmt_steps(row["step"], row["total"]),
            fmt_loss(row["loss"]), fmt_rate(row["tokens_per_s"]), fmt_eta(row["eta_s"])]


# ---------------------------------------------------------------------------------------------------------------------
# `emergence status` and `emergence status --watch`.

def render_table(rows: list[dict]) -> Table:
    table = Table(caption=footer(rows), caption_justify="left")
    for name in COLUMNS:
        table.add_column(name, justify="left" if name in ("run", "state") else "right")
    for row in rows:
        table.add_row(*table_cells(row))
    return table


class _LiveTable:
    """The table, redrawn in place."""

    def __init__(self, stream):
        self.live = Live(console=Console(file=stream), auto_refresh=False, redirect_stdout=False,
                         redirect_stderr=False)

    def __enter__(self):
        self.live.start()
        return self

    def __exit__(self, *exc):
        self.live.stop()

    def show(self, rows: list[dict]) -> None:
        self.live.update(render_table(rows), refresh=True)


class _PlainTable:
    """Plain lines: each run whose state or step changed since the last look, then the footer."""

    def __init__(self, stream):
        self.stream, self.seen = stream, {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def show(self, rows: list[dict]) -> None:
        changed = [r for r in rows if self.seen.get(r["run_id"]) != (r["state"], r["step"])]
        if not changed and self.seen:
            return
        self.seen.update({r["run_id"]: (r["state"], r["step"]) for r in rows})
        lines = ["  ".join(table_cells(r)) for r in changed]
        self.stream.write("\n".join([*lines, footer(rows)]) + "\n")
        self.stream.flush()


def print_status(folder: Path) -> int:
    """`emergence status SWEEP_DIR`: each run's state from the files alone (works from a cluster's login node). A
    folder without its runs' folders (a copied or committed sweep) is read from its runs.parquet, as aggregated."""
    recorded = not (folder / "runs").is_dir() and not (folder / "grid.json").exists() and \
        (folder / "runs.parquet").is_file()
    if not recorded:
        require_sweep_folder(folder)
    runs = pd.read_parquet(folder / "runs.parquet") if recorded else load_runs(folder)
    if recorded:
        print(f"{folder}: the runs as runs.parquet recorded them (the run folders are not here)")
    print(f"{'run_id':<28} {'model':<12} {'seed':>4} {'status':<12} {'step':>12} {'wall':>8}  error")
    for _, r in runs.iterrows():
        step = r["max_steps"] if recorded and r["status"] == "done" else "-" if recorded else \
            latest_step(folder / "runs" / r["run_id"])
        steps = r.get("max_steps")
        prog = f"{step}/{int(steps)}" if steps == steps and steps is not None else str(step)
        wall = f"{r['wall_s']:.0f}s" if r["wall_s"] == r["wall_s"] else "-"
        seed = "" if r["seed"] is None or r["seed"] != r["seed"] else int(r["seed"])
        print(f"{r['run_id']:<28} {str(r['model']):<12} {seed:>4} {r['status']:<12} {prog:>12} {wall:>8}  "
              f"{r['error'] or ''}")
    return 0


def watch(folder: Path, interval: float = 2.0, stream=None) -> int:
    """`emergence status SWEEP_DIR --watch`: show the status table every `interval` seconds until every run has
    finished (done, failed or diverged) or Ctrl-C. A folder that does not exist yet (the sweep is starting) is
    waited for."""
    stream = stream or sys.stdout
    try:
        if not folder.exists():
            print(f"waiting for {folder} to appear (the sweep writes it when it starts); Ctrl-C to stop",
                  file=stream, flush=True)
        while not folder.exists():
            time.sleep(interval)
    except KeyboardInterrupt:
        return 0
    require_sweep_folder(folder)
    view = _LiveTable(stream) if is_terminal(stream) else _PlainTable(stream)
    try:
        with view:
            while True:
                rows = status_rows(folder)
                view.show(rows)
                if all_finished(rows):
                    return 0
                time.sleep(interval)
    except KeyboardInterrupt:
        return 0


# ---------------------------------------------------------------------------------------------------------------------
# Progress of a sweep and of a run.

def progress_bar(stream) -> Progress:
    """A rich progress display on `stream` whose tasks carry three text fields: count, info and eta."""
    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[count]}"),
                    TextColumn("{task.fields[info]}"), TextColumn("ETA {task.fields[eta]}"),
                    console=Console(file=stream), refresh_per_second=2, redirect_stdout=is_terminal(sys.stdout))


def bar_owns_terminal() -> bool:
    """Whether a sweep's bar draws on this process's terminal: a job's own lines would tear it."""
    return bool(os.environ.get(PARENT_BAR)) and is_terminal(sys.stderr)


def _shared_bar() -> Progress | None:
    """The sweep bar drawn by this process, if any (a forked child inherits the variable, not the terminal)."""
    return _sweep_bar[1] if _sweep_bar is not None and _sweep_bar[0] == os.getpid() else None


class RunProgress:
    """A run's progress: step of total, loss, tokens/s and ETA. On a terminal a bar (a line under the sweep's bar when
    this process draws one; nothing when another process's sweep bar owns the terminal); elsewhere a plain line at a
    log step at most every PLAIN_EVERY_S seconds, and at the last step."""

    def __init__(self, enabled: bool, name: str, total: int, every: int, stream=None):
        self.name, self.total, self.every = name, total, every
        self.stream = stream or sys.stderr
        self.mode = "off" if not enabled else self._mode()
        self.bar, self.task, self.last_line = None, None, -math.inf

    def _mode(self) -> str:
        if not is_terminal(self.stream):
            return "plain"
        return "off" if _shared_bar() is None and os.environ.get(PARENT_BAR) else "bar"

    def update(self, step: int, loss: float, tps: float, eta_s: float) -> None:
        if self.mode == "plain":
            self._line(step, loss, tps, eta_s)
        elif self.mode == "bar":
            if self.bar is None:
                self._open()
            self.bar.update(self.task, completed=step, count=f"{step}/{self.total} steps",
                            info=f"loss {fmt_loss(loss)}  {fmt_rate(tps)} tok/s", eta=fmt_eta(eta_s))

    def _line(self, step: int, loss: float, tps: float, eta_s: float) -> None:
        now = time.monotonic()
        if step != self.total and (step % self.every or now - self.last_line < PLAIN_EVERY_S):
            return
        self.last_line = now
        self.stream.write(f"{self.name} step {step}/{self.total} loss {fmt_loss(loss)} {fmt_rate(tps)} tok/s "
                          f"ETA {fmt_eta(eta_s)}\n")
        self.stream.flush()

    def _open(self) -> None:
        self.bar = _shared_bar()
        if self.bar is None:
            self.bar = progress_bar(self.stream)
            self.bar.start()
        self.task = self.bar.add_task(self.name, total=self.total, count="", info="", eta="-")

    def close(self) -> None:
        if self.bar is None:
            return
        if self.bar is _shared_bar():
            self.bar.remove_task(self.task)
        else:
            self.bar.stop()
        self.bar = None


def outcome(row: dict) -> str:
    """A finished run's line: '[run_id] done, loss 3.0490', with the error of a run that failed or diverged."""
    return f"[{row['run_id']}] {row['state']}, loss {fmt_loss(row['loss'])}" + \
        (f": {row['error']}" if row["error"] else "")


def sweep_units(rows: list[dict]) -> float:
    """How much of the sweep is trained, in runs: 1 per finished run, step/total per other run."""
    return sum(1.0 if r["state"] in FINISHED else min(1.0, r["step"] / r["total"]) if r["total"] else 0.0
               for r in rows)


class SweepProgress:
    """`with SweepProgress(folder): launch()`: the sweep's runs finished of its grid and the ETA, read from the run
    folders by a background thread (jobs may run in this process or in others). A bar on a terminal, else one plain
    line per finished run."""

    def __init__(self, folder: Path, poll_s: float = 2.0, stream=None):
        self.folder, self.poll_s = Path(folder), poll_s
        self.stream = stream or sys.stderr
        self._stop, self._lock = threading.Event(), threading.Lock()
        self.thread = threading.Thread(target=self._loop, name="sweep-progress", daemon=True)
        self.bar, self.task = None, None
        self.origin, self.states = None, None  # at the first look: (time, units trained), and each run's state

    def __enter__(self):
        if is_terminal(self.stream):
            self._open_bar()
        self.poll()
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()
        self.poll()
        if self.bar is not None:
            self._close_bar()
        return False

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.poll()

    def poll(self) -> None:
        """Look at the run folders once and show what changed."""
        try:
            rows = status_rows(self.folder)
        except (OSError, ValueError):  # a file caught mid-write: the next look reads it
            return
        with self._lock:
            units, newly = sweep_units(rows), self._newly_finished(rows)
            if self.origin is None:
                self.origin = (time.monotonic(), units)
            eta = fmt_eta(self.eta_s(units, len(rows)))
            if self.bar is not None:
                self._draw(rows, units, newly, eta)
            elif newly:
                self.stream.write(f"sweep {self.folder.name}: {footer(rows)}, ETA {eta}\n")
                self.stream.flush()

    def _draw(self, rows: list[dict], units: float, newly: list[dict], eta: str) -> None:
        for r in newly:  # above the bar
            self.bar.console.print(outcome(r), markup=False, highlight=False)
        finished = sum(r["state"] in FINISHED for r in rows)
        self.bar.update(self.task, total=max(len(rows), 1), completed=units, count=f"{finished}/{len(rows)} runs",
                        info=unsuccessful(rows), eta=eta)

    def _newly_finished(self, rows: list[dict]) -> list[dict]:
        """The runs that finished since the last look (none at the first)."""
        before, self.states = self.states, {r["run_id"]: r["state"] for r in rows}
        if before is None:
            return []
        return [r for r in rows if r["state"] in FINISHED and before.get(r["run_id"]) not in FINISHED]

    def eta_s(self, units: float, total: int) -> float:
        """Seconds left at the rate trained since the first look (runs already done then do not count)."""
        t0, units0 = self.origin
        return (time.monotonic() - t0) * (total - units) / (units - units0) if units > units0 else float("nan")

    def _open_bar(self) -> None:
        global _sweep_bar
        self.bar = progress_bar(self.stream)
        self.task = self.bar.add_task(f"sweep {self.folder.name}", total=None, count="", info="", eta="-")
        self.bar.start()
        _sweep_bar = (os.getpid(), self.bar)
        self.env_before = os.environ.get(PARENT_BAR)
        os.environ[PARENT_BAR] = "1"

    def _close_bar(self) -> None:
        global _sweep_bar
        self.bar.stop()
        _sweep_bar = None
        if self.env_before is None:
            os.environ.pop(PARENT_BAR, None)
        else:
            os.environ[PARENT_BAR] = self.env_before
