"""Experiment tracking: Weights & Biases as a side channel, with a null tracker of the same interface.

Nothing in the framework reads back from W&B; the results table is the source of truth. So tracking must never stop a
run: any error from wandb (no network, a wrong key, an outage, an init timeout) gives one warning per process and the
run carries on, logging offline (a copy that `wandb sync` uploads later) or, if even that fails, not at all.

    tracker = make_tracker(cfg.tracker, run_id=..., group=sweep_name, job_type="train", config=resolved_cfg,
                           tags=[...], resume_id=checkpoint.get("tracker_id"), dir=sweep_dir)
    tracker.define_axes()
    tracker.log({"train/loss": 2.1, "train/lr": 3e-3, "tokens": 4096, "flops": 1.2e12}, step=10)
    tracker.log_probes(probe_rows, step=100)   # tidy rows of analysis.schema -> probe/<task>/<metric>
    tracker.finish("done")

The null tracker is `Tracker` itself (the same idea as nanochat's `DummyWandb`): every method does nothing, so the
trainer calls it unconditionally. Only the process that owns a run (rank 0 under DDP) should make a W&B tracker.

Each W&B run is created with `reinit="create_new"` and logged through its own run object, never the global
`wandb.log`, so several runs in one process (Hydra's basic launcher) never write into each other.
"""
from __future__ import annotations

import json
import logging
import math
import netrc
import os
import secrets
import string
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Mapping, Optional
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

KINDS = ("none", "wandb")
MODES = ("online", "offline", "disabled", "auto")
DEFAULT_INIT_TIMEOUT_S = 30.0  # an online init that has not connected by then falls back to offline
PROBE_TABLE_KEY = "probe_table"


@dataclass
class TrackerConfig:
    """The `tracker` config group (`sweeps/tracker/none.yaml`, `sweeps/tracker/wandb.yaml`)."""

    kind: str = "none"  # none | wandb
    project: str = "emergence"
    entity: Optional[str] = None
    mode: str = "auto"  # online | offline | disabled | auto (online if logged in / WANDB_API_KEY set, else offline)
    dir: Optional[str] = None  # where wandb/ goes; default: the sweep folder
    log_checkpoints: bool = False  # checkpoints as artifacts only when asked (they can be large)
    tags: List[str] = field(default_factory=list)


# One warning per process about W&B trouble, however many runs hit it (a sweep of 40 runs without network should
# say so once, not 40 times). After an online failure, later runs in this process go straight to offline instead
# of waiting out the init timeout again.
_warned = False
_online_failed = False
WARNING_PREFIX = "emergence: warning: "


def _warn(message: str) -> None:
    """One line: through logging when it is set up to show warnings, else printed to stderr.

    Sweeps run with Hydra's job logging disabled (root level ERROR, existing loggers disabled), which would swallow a
    logging.warning; printing as well when logging does show it would say it twice.
    """
    if log.hasHandlers() and log.isEnabledFor(logging.WARNING):
        log.warning(message)
    else:
        print(WARNING_PREFIX + message, file=sys.stderr, flush=True)


def _warn_once(message: str) -> None:
    global _warned
    if _warned:
        log.debug(message)
        return
    _warned = True
    _warn(message)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if len(text) > 200:
        text = text[:200] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Tracker:
    """The tracking interface, and its null implementation: every method accepts its arguments and does nothing."""

    id: Optional[str] = None  # the W&B run id; the trainer stores it in checkpoints so a resume continues the run
    mode: str = "disabled"

    def define_axes(self) -> None:
        """Make `tokens` and `flops` usable as x-axes for train/*, val/* and probe/* charts."""

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """Log scalars at a training step (train/loss, train/lr, ..., tokens, flops, val/loss)."""

    def log_probes(self, rows: Any, step: int) -> None:
        """Log a checkpoint's tidy probe rows as probe/<task>/<metric> values and as a table."""

    def log_checkpoint(self, path: str | os.PathLike, step: int) -> None:
        """Save a checkpoint file as a model artifact (only when `log_checkpoints` is set)."""

    def log_analysis(self, flags: Any = None, fits: Any = None, images: Optional[Mapping[str, Any]] = None,
                     report_html: Optional[str | os.PathLike] = None) -> None:
        """Log a sweep's analysis: the flags and fits tables, the report's figures, report.html as an artifact."""

    def finish(self, status: str = "done") -> None:
        """End the run; exit code 0 when `status` is "done", 1 otherwise. Safe to call twice."""


NullTracker = Tracker


def resolve_mode(mode: str) -> str:
    """The W&B mode to use: `auto` is WANDB_MODE when set, else online with credentials, else offline."""
    if mode not in MODES:
        raise ValueError(f"tracker.mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    env = {"dryrun": "offline", "run": "online"}.get(env, env)
    if env in ("online", "offline", "disabled"):
        return env
    return "online" if _has_credentials() else "offline"


def _has_credentials() -> bool:
    """True when W&B can log in without prompting: WANDB_API_KEY, or a netrc entry for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlsplit(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    path = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        auth = netrc.netrc(path).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(auth and auth[2])


def _new_run_id() -> str:
    # W&B's own id shape (8 characters of [a-z0-9]); chosen here so an online attempt and its offline retry share it.
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def make_tracker(cfg: TrackerConfig, *, run_id: str, group: str, job_type: str, config: Mapping[str, Any],
                 tags: list[str], resume_id: Optional[str] = None, dir: str | os.PathLike) -> Tracker:
    """A tracker for one run: the null tracker for `kind: none` or mode `disabled`, else a W&B run.

    run_id becomes the W&B run's name (display name), group the sweep name; resume_id (a W&B id kept in a checkpoint)
    continues that W&B run. `dir` is where `wandb/` is written unless `cfg.dir` says otherwise.
    """
    if cfg.kind not in KINDS:
        raise ValueError(f"tracker.kind must be 'none' or 'wandb', got {cfg.kind!r} "
                         "(use tracker=none or tracker=wandb)")
    mode = resolve_mode(cfg.mode)
    if cfg.kind == "none" or mode == "disabled":
        return Tracker()
    global _online_failed
    if mode == "online" and _online_failed:
        mode = "offline"
    root = Path(cfg.dir if cfg.dir else dir)
    # keep order, drop repeats and empty ones; W&B refuses tags longer than 64 characters
    all_tags = list(dict.fromkeys(str(t)[:64] for t in [*cfg.tags, *tags] if str(t)))
    kwargs = dict(project=cfg.project, entity=cfg.entity, group=group, job_type=job_type, name=run_id,
                  tags=all_tags, config=dict(config), id=resume_id or _new_run_id())
    try:
        root.mkdir(parents=True, exist_ok=True)
        return WandbTracker(cfg, _init_run(mode, root, resume_id is not None, kwargs), run_id=run_id)
    except Exception as exc:  # noqa: BLE001 - tracking must never stop a run
        if mode == "online":
            _online_failed = True
            # W&B's service keeps the failed attempt's id registered ("run ID ... is in use"), so the offline copy
            # needs a fresh id; after a resume it becomes a separate run of the same name and group.
            kwargs["id"] = _new_run_id()
            try:
                tracker = WandbTracker(cfg, _init_run("offline", root, False, kwargs), run_id=run_id)
            except Exception as exc2:  # noqa: BLE001
                _warn_once(f"W&B unavailable ({_one_line(exc)}; offline also failed: {_one_line(exc2)}); "
                           "training continues without tracking")
                return Tracker()
            _warn_once(f"W&B online failed ({_one_line(exc)}); runs of this process log offline to {root / 'wandb'}, "
                       f"upload them later with `wandb sync {root / 'wandb' / 'offline-run-*'}`")
            return tracker
        _warn_once(f"W&B unavailable ({_one_line(exc)}); training continues without tracking")
        return Tracker()


def _init_run(mode: str, root: Path, resume: bool, kwargs: dict[str, Any]) -> Any:
    import wandb  # slow import (about a second): only where a W&B run is used

    timeout = float(os.environ.get("WANDB_INIT_TIMEOUT", DEFAULT_INIT_TIMEOUT_S))
    settings = wandb.Settings(
        mode=mode,
        console="off",  # our own logging goes to Hydra's log; capturing stdout breaks with several runs per process
        silent=True,  # we print the one line that matters (where the run is, how to sync it)
        x_disable_stats=True,  # no system-metrics sampler: it competes with training on small CPU machines
        init_timeout=timeout,
    )
    return wandb.init(dir=str(root), reinit="create_new", resume="allow" if resume else None, settings=settings,
                      **kwargs)


class WandbTracker(Tracker):
    """One W&B run. Every call is guarded: the first wandb error warns (once per process) and ends tracking."""

    def __init__(self, cfg: TrackerConfig, run: Any, *, run_id: str):
        self.cfg = cfg
        self._run = run
        self.id = run.id
        self.mode = str(run.settings.mode)
        self.run_id = run_id
        self.run_dir = Path(run.dir).parent  # wandb/<offline-run-...>/, the folder `wandb sync` takes
        self.url = getattr(run, "url", None) if self.mode == "online" else None
        # W&B drops rows whose step is below the run's current step; after a resume the run may already hold steps
        # beyond the checkpoint we restarted from, so we skip those ourselves, quietly.
        self._step = int(getattr(run, "starting_step", 0) or 0)
        self._finished = False
        if self.mode == "offline":
            log.info("W&B run %s (%s) logging offline to %s; upload with `wandb sync %s`", run_id, self.id,
                     self.run_dir, self.run_dir)
        else:
            log.info("W&B run %s: %s", run_id, self.url)

    # -- guard ---------------------------------------------------------------------------------------------------

    def _fail(self, what: str, exc: BaseException) -> None:
        _warn_once(f"W&B {what} failed ({_one_line(exc)}); training continues without tracking this run")
        self._run = None

    @property
    def active(self) -> bool:
        return self._run is not None and not self._finished

    # -- interface -----------------------------------------------------------------------------------------------

    def define_axes(self) -> None:
        if not self.active:
            return
        try:
            self._run.define_metric("tokens")
            self._run.define_metric("flops")
            for prefix in ("train", "val", "probe"):
                self._run.define_metric(f"{prefix}/*", step_metric="tokens")
            # best-so-far in the runs table, besides the last value W&B keeps anyway
            self._run.define_metric("val/loss", step_metric="tokens", summary="min")
        except Exception as exc:  # noqa: BLE001
            self._fail("define_metric", exc)

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        if not self.active or step < self._step:
            return
        row = {k: _scalar(v) for k, v in metrics.items() if v is not None}
        try:
            self._run.log(row, step=int(step))
            self._step = int(step)
        except Exception as exc:  # noqa: BLE001
            self._fail("log", exc)

    def log_probes(self, rows: Any, step: int) -> None:
        if not self.active or step < self._step:
            return
        try:
            values = probe_metrics(rows)
        except ValueError as exc:  # a malformed table is a bug to see, but tracking must not stop the run
            _warn(f"W&B probe rows not logged: {exc}")
            return
        try:
            import wandb  # slow import (about a second): only where a W&B run is used

            values[PROBE_TABLE_KEY] = wandb.Table(dataframe=_table_frame(rows))
            self._run.log(values, step=int(step))
            self._step = int(step)
        except Exception as exc:  # noqa: BLE001
            self._fail("log_probes", exc)

    def log_checkpoint(self, path: str | os.PathLike, step: int) -> None:
        if not self.cfg.log_checkpoints or not self.active:
            return
        try:
            import wandb  # slow import (about a second): only where a W&B run is used

            artifact = wandb.Artifact(_artifact_name(f"checkpoint-{self.run_id}"), type="model",
                                      metadata={"step": int(step), "run_id": self.run_id})
            # "immutable": reference the file instead of copying it (checkpoints are written once, atomically, and
            # can be large); keep the file until the run is synced.
            artifact.add_file(str(path), policy="immutable")
            sidecar = Path(str(path) + ".sha256")  # its checksum: checkpoint.load refuses a .pt without it
            if sidecar.exists():
                artifact.add_file(str(sidecar), policy="immutable")
            self._run.log_artifact(artifact, aliases=[f"step_{int(step)}", "latest"])
        except Exception as exc:  # noqa: BLE001
            self._fail("log_checkpoint", exc)

    def log_analysis(self, flags: Any = None, fits: Any = None, images: Optional[Mapping[str, Any]] = None,
                     report_html: Optional[str | os.PathLike] = None) -> None:
        if not self.active:
            return
        try:
            import wandb  # slow import (about a second): only where a W&B run is used

            row: dict[str, Any] = {}
            if flags is not None:
                row["analysis/flags"] = wandb.Table(dataframe=_table_frame(flags))
                self._run.summary["analysis/n_flags"] = int(len(flags))
            if fits is not None:
                row["analysis/fits"] = wandb.Table(dataframe=_table_frame(fits))
            for name, path in (images or {}).items():
                row[f"plots/{name}"] = wandb.Image(str(path), caption=str(name))
            if report_html is not None:
                # the report inline in the dashboard, unchanged (no injected stylesheet), and as a downloadable file
                row["report"] = wandb.Html(str(report_html), inject=False)
                artifact = wandb.Artifact(_artifact_name(f"report-{self.run_id}"), type="report")
                artifact.add_file(str(report_html), name="report.html")
                self._run.log_artifact(artifact)
            if row:
                self._run.log(row, step=max(self._step, 0))
        except Exception as exc:  # noqa: BLE001
            self._fail("log_analysis", exc)

    def finish(self, status: str = "done") -> None:
        if self._finished:
            return
        self._finished = True
        if self._run is None:
            return
        run, self._run = self._run, None
        try:
            run.summary["status"] = status
            run.finish(exit_code=0 if status == "done" else 1)
        except Exception as exc:  # noqa: BLE001
            _warn_once(f"W&B finish failed ({_one_line(exc)})")


def probe_metrics(rows: Any) -> dict[str, Any]:
    """probe/<task>/<metric> -> value for a checkpoint's tidy probe rows, plus their `tokens` and `flops`.

    A value that could not be measured stays NaN (a gap in the chart), never 0. Raises ValueError when a column is
    missing or a (task, metric) pair appears twice (rows of several checkpoints or runs were mixed).
    """
    missing = [c for c in ("task", "metric", "value") if c not in rows.columns]
    if missing:
        raise ValueError(f"probe rows lack column(s) {missing}; pass the tidy rows of analysis.schema")
    duplicated = rows.duplicated(["task", "metric"])
    if duplicated.any():
        first = rows[duplicated].iloc[0]
        raise ValueError(f"probe rows hold ({first['task']}, {first['metric']}) more than once; "
                         "pass the rows of one run at one checkpoint")
    out: dict[str, Any] = {}
    for task, metric, value in zip(rows["task"], rows["metric"], rows["value"]):
        out[f"probe/{task}/{metric}"] = _scalar(value)
    for axis in ("tokens", "flops"):
        if axis in rows.columns:
            vals = rows[axis].dropna().unique()
            if len(vals) == 1:
                out[axis] = _scalar(vals[0])
    return out


def _scalar(value: Any) -> Any:
    """Plain Python numbers for W&B (numpy/torch scalars, pandas NA -> NaN)."""
    if hasattr(value, "item") and callable(value.item):
        try:
            value = value.item()
        except (ValueError, RuntimeError):  # not a one-element value: leave it to wandb
            return value
    if value is None:
        return math.nan
    pd = sys.modules.get("pandas")  # only a pandas caller can pass pd.NA; do not import pandas for the check
    if pd is not None and value is pd.NA:
        return math.nan
    return value


def _table_frame(df: Any) -> Any:
    """A copy W&B's Table accepts: missing values as None, nested values (lists, dicts) as JSON text."""
    import pandas as pd

    out = df.reset_index(drop=True).astype(object)
    out = out.where(pd.notna(out), None)
    for col in out.columns:
        out[col] = [json.dumps(v, default=str) if isinstance(v, (list, tuple, dict, set)) else v for v in out[col]]
    return out


def _artifact_name(name: str) -> str:
    # artifact names allow letters, digits, '-', '_' and '.'
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)
