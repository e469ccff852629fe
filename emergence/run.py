"""One run's lifecycle, shared by a single run (`emergence.train.train`) and seeds stacked into one model
(`emergence.stacked.train_seeds`): the run folder and its config.yaml, status.json, the tracker, the inline probe
hook, the checkpoint payload, the log rows with what the tracker gets of them, and the driver that trains (`drive`).
The driver owns the loop, the schedule of logs, evaluations and checkpoints, the progress line and each run's status;
what it trains is a `Models` part: one model (`emergence.train.OneModel`) or S seeds stacked
(`emergence.stacked.SeedStack`). What a run writes is written here, once.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import pandas as pd
import torch
from omegaconf import OmegaConf

from emergence import checkpoint as ckpt
from emergence import files
from emergence.config import run_dir
from emergence.data import save_run_tokenizer
from emergence.device import autocast_for, check_run_memory, distributed, matmul_peak_flops, pick_device
from emergence.layout import read_status
from emergence.live import RunProgress
from emergence.model import GPTConfig
from emergence.probe import InlineProber, rows_frame, unprobed_checkpoints
from emergence.tracking import make_tracker


def prepare_folder(folder: Path, resolved: dict) -> None:
    """The run's folder and checkpoints folder, cleared of the temporaries a killed writer left, its resolved
    config as config.yaml, and for a data.tokenizer=bpe run its tokenizer as tokenizer.json (kept once written, so a
    resumed run reads its text exactly as before)."""
    save_run_tokenizer(folder, resolved)  # first: a corpus too small for its vocabulary leaves nothing written
    (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
    files.remove_stale_temporaries(folder, folder / "checkpoints")
    files.atomic_write_bytes(folder / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(resolved)).encode())


def resolved_config(cfg) -> dict:
    """The config as config.yaml and every checkpoint record it: resolved, without hydra's own section."""
    resolved = OmegaConf.to_container(cfg, resolve=True) if not isinstance(cfg, dict) else dict(cfg)
    resolved.pop("hydra", None)
    return resolved


def train_settings(cfg) -> dict:
    """cfg.train as plain values: one attribute of an OmegaConf config costs about 20 us, and the dozen a training
    loop reads per step were 8% of the smallest sizes' step."""
    return OmegaConf.to_container(cfg.train, resolve=True) if not isinstance(cfg.train, dict) else dict(cfg.train)


def open_device(cfg, copies: int = 1):
    """The device a run trains on and its autocast context: torch's threads set, under torchrun the process group
    joined (on CUDA, this rank's GPU), and the memory pre-flight for `copies` models on the device."""
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    device = pick_device(cfg)
    if distributed()[1] > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
    check_run_memory(cfg, device, copies=copies)
    return device, autocast_for(cfg, device)


def leave_process_group() -> None:
    """Under torchrun, leave the process group `open_device` joined; otherwise nothing."""
    if distributed()[1] > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def write_status(folder: Path, **fields) -> None:
    path = folder / "status.json"
    old = {}
    if path.exists():
        with contextlib.suppress(ValueError, OSError):
            old = json.loads(path.read_text())
    old.update(fields)
    files.write_json(path, old)


def payload(*, model_state: dict, model_config: dict, resolved: dict, rid: str, seed: int, step: int, derived: dict,
            heldout: tuple[float, float, int], wall: float, rng, tracker, optimizer_state: dict | None) -> dict:
    """What a checkpoint holds: everything the run needs to continue, and what its rows are labelled with."""
    val_loss, val_stderr, val_n = heldout
    tokens = step * derived["tokens_per_step"]
    out = {"model": model_state, "model_config": model_config, "config": resolved, "run_id": rid, "step": step,
           "tokens": tokens, "flops": float(tokens * derived["flops_per_token"]),
           "flops_per_token": derived["flops_per_token"], "n_params": derived["n_params"],
           "n_params_nonembed": derived["n_params_nonembed"], "seed": seed, "val_loss": val_loss,
           "val_loss_stderr": val_stderr, "val_loss_n": val_n, "wall_s": wall, "rng": {"torch": rng},
           "code_version": files.code_version(), "format_version": ckpt.FORMAT_VERSION,
           "tracker_id": tracker.id if tracker is not None else None}
    if optimizer_state is not None:
        out["optimizer"] = optimizer_state
    return out


def save_checkpoint(folder: Path, state: dict, log_rows: list[dict], hook, tracker) -> Path:
    """Write the log, then the checkpoint (a kill between the two leaves log rows past the checkpoint, dropped on
    resume), probe it, and tell the tracker."""
    if log_rows:
        files.atomic_write_parquet(pd.DataFrame(log_rows), folder / "train_log.parquet")
    step = int(state["step"])
    path = ckpt.save(folder / "checkpoints" / f"step_{step}.pt", state)
    if hook is not None:
        hook(path, state)
    if tracker is not None:
        tracker.log({"val/loss": state["val_loss"], "tokens": state["tokens"], "flops": state["flops"]}, step=step)
        tracker.log_checkpoint(str(path), step)
    return path


def log_row(step: int, derived: dict, loss: float, lr: float, grad_norm: float, tokens_per_s: float,
            wall: float) -> dict:
    """One row of train_log.parquet."""
    tokens = step * derived["tokens_per_step"]
    return {"step": step, "tokens": tokens, "flops": float(tokens * derived["flops_per_token"]), "loss": loss,
            "lr": lr, "grad_norm": grad_norm, "tokens_per_s": tokens_per_s, "wall_s": wall}


def log_train(tracker, row: dict, flops_per_token: float, peak_flops: float) -> None:
    """A log row as the tracker's train/* metrics; MFU is the run's own tokens/s x FLOPs per token over the
    device's measured matmul peak (for seeds stacked in one model, each run's share of the device)."""
    if tracker is None:
        return
    tracker.log({"train/loss": row["loss"], "train/lr": row["lr"], "train/grad_norm": row["grad_norm"],
                 "train/tokens_per_s": row["tokens_per_s"], "train/mfu": row["tokens_per_s"] * flops_per_token /
                 peak_flops, "tokens": row["tokens"], "flops": row["flops"]}, step=row["step"])


def make_run_tracker(cfg, rid: str, derived: dict, resume_id):
    config = OmegaConf.to_container(cfg, resolve=True)
    config.pop("hydra", None)
    config["derived"] = {k: v for k, v in derived.items() if isinstance(v, (int, float, str))}
    tags = [str(cfg.model.name), f"seed{cfg.seed}", str(cfg.experiment)]
    t = make_tracker(cfg.tracker, run_id=rid, group=str(cfg.sweep.name), job_type="train", config=config, tags=tags,
                     resume_id=resume_id, dir=str(run_dir(cfg).parents[1]))
    t.define_axes()
    if getattr(t, "url", None):
        print(f"{rid}: W&B run {t.url}", file=sys.stderr)
    elif getattr(t, "run_dir", None):
        print(f"{rid}: W&B offline copy in {t.run_dir} (upload later: wandb sync {t.run_dir})", file=sys.stderr)
    return t


class ProbeHook:
    """Inline probing: score each checkpoint as it is written, so a sweep needs no second pass (rows go to the
    tracker at once and to the run's files in batches; `flush` at the end of the run)."""

    def __init__(self, cfg, folder: Path, tracker):
        self.prober, self.tracker = InlineProber(folder, cfg.probe), tracker

    def __call__(self, path: Path, state: dict | None = None) -> None:
        rows = self.prober(path, state)
        if self.tracker is not None and rows:
            self.tracker.log_probes(rows_frame(rows), step=int(rows[0]["step"]))

    def flush(self) -> None:
        try:
            self.prober.flush()
        except Exception as e:  # the run's outcome stands; its checkpoints can be probed again at any time
            print(f"warning: could not write the probe rows of {self.prober.run_dir} ({type(e).__name__}: {e}); "
                  f"run `emergence probe {self.prober.run_dir}` to probe its checkpoints again", file=sys.stderr)

    @property
    def seconds(self) -> float:
        return self.prober.seconds


def probe_hook(cfg, folder: Path, tracker) -> ProbeHook | None:
    return ProbeHook(cfg, folder, tracker) if cfg.probe.inline else None


# ---------------------------------------------------------------------------------------------------------------------
# The driver: one training loop for one model or seeds stacked in one model.

class Diverged(RuntimeError):
    """A run's loss or gradient norm is not finite at a log point: the run ends there, as diverged."""

    def __init__(self, loss: float, step: int):
        super().__init__(f"loss became {loss} at step {step}")
        self.loss = loss


@dataclass
class Lane:
    """One run the driver trains: what its `Models` part says of it (config, id, folder, resolved config and, for a
    resumed run, its status.json, tracker id, log rows and last losses), then what the driver keeps while it trains."""

    cfg: Any
    rid: str
    folder: Path
    resolved: dict
    prior: dict = field(default_factory=dict)  # status.json as found: its "started" and "probe_s" carry on
    tracker_id: str | None = None
    log_rows: list[dict] = field(default_factory=list)
    last_loss: float = math.nan
    val: float = math.nan
    val_est: tuple[float, float, int] = (math.nan, math.nan, 0)
    tracker: Any = None
    hook: ProbeHook | None = None
    state: str = "done"
    error: str = ""
    live: bool = True


class Models(Protocol):
    """What `drive` trains: the model (or the stacked models) of `lanes`, all at one step from `start_step`.

    `step(step, log_now)` takes one optimizer step and returns (lr, sync); at log points the driver calls `sync()`, the
    host sync, for each run's (loss, gradient norm) as two lists of floats. A run whose logged loss or norm is not
    finite ends as diverged and the others go on; a part that must not step on such a loss raises `Diverged` from
    `step` instead, which ends all its runs. `heldout()` gives each run's held-out loss (`heldout.heldout_loss`'s
    triple); `model_state(i)`, `optimizer_state(i)` and `rng(i)` are what run i's checkpoint holds."""

    cfg: Any  # the runs' shared settings (cfg.train)
    derived: dict
    gc: GPTConfig
    device: torch.device
    lanes: list[Lane]
    is_main: bool  # whether this process writes (rank 0 under torchrun)
    start_step: int
    resumed: bool
    wall_before: float  # seconds trained before this process
    label: str  # the progress line's name
    status_extra: dict  # more fields for each run's final status.json
    log_evaluations: bool  # the tracker gets val/loss at evaluations between checkpoints

    def step(self, step: int, log_now: bool) -> tuple[float, Callable[[], tuple[list[float], list[float]]]]: ...

    def heldout(self) -> list[tuple[float, float, int]]: ...

    def model_state(self, i: int) -> dict: ...

    def optimizer_state(self, i: int) -> dict: ...

    def rng(self, i: int) -> torch.Tensor: ...


def drive(models: Models, make_tracker: Callable) -> list[dict]:
    """Train `models`' runs from their start step to the end of the schedule and return one summary per run (its id,
    folder, derived values, final status.json, "skipped": False). `make_tracker(cfg, rid, derived, resume_id)` builds
    a run's tracker (`make_run_tracker`)."""
    return Driver(models, make_tracker).run()


class Driver:
    """The lifecycle of `drive`: trackers, probe hooks, the checkpoint schedule, the progress line and status.json
    around the training loop; the loop's logs, evaluations and checkpoints; each run's final status."""

    def __init__(self, models: Models, make_tracker: Callable):
        self.m = m = models
        cfg, derived = m.cfg, m.derived
        self.total, self.tokens_per_step = derived["steps"], derived["tokens_per_step"]
        for lane in m.lanes:
            lane.tracker = make_tracker(lane.cfg, lane.rid, derived, lane.tracker_id) if m.is_main else None
        for lane in m.lanes:
            lane.hook = probe_hook(lane.cfg, lane.folder, lane.tracker) if m.is_main else None
        self.ck_steps = set(ckpt.schedule(self.total, cfg.train.ckpt_log_until, cfg.train.ckpt_every))
        self.progress = RunProgress(cfg.train.progress and m.is_main, m.label, self.total, cfg.train.log_interval)
        self.peak = matmul_peak_flops(m.device) if m.is_main else float("nan")
        if m.is_main:
            now = time.time()
            for lane in m.lanes:
                write_status(lane.folder, state="running", run_id=lane.rid, started=lane.prior.get("started", now),
                             error="", pid=os.getpid(), steps=self.total)
        self.t0 = time.perf_counter()

    def run(self) -> list[dict]:
        try:
            self._start()
            self._loop()
        except Diverged as e:
            self._end_live("diverged", str(e), e.loss)
        except KeyboardInterrupt:
            self._end_live("interrupted", "stopped by the user (Ctrl-C); run the same command to resume")
            raise
        except Exception as e:
            if self.m.is_main:
                traceback.print_exc(file=sys.stderr)
            self._end_live("failed", f"{type(e).__name__}: {e}")
        finally:
            self._finish()
        return [self._summary(lane) for lane in self.m.lanes]

    def _start(self) -> None:
        """A fresh run's checkpoint at step 0; a resumed run's checkpoints that were written but never probed (a kill
        can fall between the two)."""
        if not self.m.resumed and 0 in self.ck_steps:
            self._evaluate()
            self._save(0, 0.0)
        if self.m.resumed:
            for lane in self.m.lanes:
                if lane.hook is not None:
                    for path in unprobed_checkpoints(lane.folder):
                        lane.hook(path)

    def _loop(self) -> None:
        m, total = self.m, self.total
        t = train_settings(m.cfg)
        log_interval, eval_interval = t["log_interval"], t["eval_interval"]
        window_t, window_tokens = time.perf_counter(), 0
        for step in range(m.start_step, total):
            done = step + 1
            log_now = done % log_interval == 0 or done in self.ck_steps or done == total
            lr, sync = m.step(step, log_now)
            window_tokens += self.tokens_per_step
            if log_now:
                now = time.perf_counter()
                tps = window_tokens / max(now - window_t, 1e-9)  # each run's own rate: a stack trains S at once
                window_t, window_tokens = now, 0
                losses, norms = sync()
                self._check(done, losses, norms)
            if step == t["fail_at_step"]:  # fault injection for the reliability tests (a stack refuses it)
                raise RuntimeError(f"injected failure at step {step} (train.fail_at_step)")
            if log_now:
                self._log(done, lr, losses, norms, tps, m.wall_before + now - self.t0)
                if not any(lane.live for lane in m.lanes):
                    break
            if done in self.ck_steps or (eval_interval and done % eval_interval == 0):
                self._evaluate()
                if done in self.ck_steps:
                    self._save(done, m.wall_before + time.perf_counter() - self.t0)
                elif m.log_evaluations:
                    for lane in m.lanes:
                        if lane.tracker is not None:
                            lane.tracker.log({"val/loss": lane.val, "tokens": done * self.tokens_per_step}, step=done)
                window_t = time.perf_counter()  # tokens/s measures training, not evaluation or checkpointing

    def _check(self, step: int, losses: list[float], norms: list[float]) -> None:
        """Each live run's loss at a log point; a run whose loss or gradient norm is not finite ends as diverged."""
        for lane, loss, norm in zip(self.m.lanes, losses, norms):
            if lane.live:
                lane.last_loss = loss
                if not math.isfinite(loss) or not math.isfinite(norm):
                    lane.live, lane.state, lane.error = False, "diverged", str(Diverged(loss, step))

    def _log(self, step: int, lr: float, losses: list[float], norms: list[float], tps: float, wall: float) -> None:
        """A log point: each live run's row and the tracker's train/* metrics, and the progress line (the runs' mean
        loss, their tokens/s together)."""
        derived = self.m.derived
        for lane, loss, norm in zip(self.m.lanes, losses, norms):
            if not lane.live:
                continue
            row = log_row(step, derived, loss, lr, norm, tps, wall)
            lane.log_rows.append(row)
            log_train(lane.tracker, row, derived["flops_per_token"], self.peak)
        eta = (self.total - step) * self.tokens_per_step / max(tps, 1e-9)
        self.progress.update(step, sum(losses) / len(losses), tps * len(losses), eta)

    def _evaluate(self) -> None:
        for lane, est in zip(self.m.lanes, self.m.heldout()):
            lane.val_est, lane.val = est, est[0]

    def _save(self, step: int, wall: float) -> None:
        """Each live run's checkpoint at `step`, with its log so far and its latest held-out loss."""
        m = self.m
        if not m.is_main:
            return
        for i, lane in enumerate(m.lanes):
            if not lane.live:
                continue
            state = payload(model_state=m.model_state(i), model_config=m.gc.to_dict(), resolved=lane.resolved,
                            rid=lane.rid, seed=lane.cfg.seed, step=step, derived=m.derived, heldout=lane.val_est,
                            wall=wall, rng=m.rng(i), tracker=lane.tracker,
                            optimizer_state=m.optimizer_state(i) if m.cfg.train.ckpt_keep_optimizer else None)
            save_checkpoint(lane.folder, state, lane.log_rows, lane.hook, lane.tracker)

    def _end_live(self, state: str, error: str, loss: float | None = None) -> None:
        for lane in self.m.lanes:
            if lane.live:
                lane.state, lane.error = state, error
                if loss is not None:
                    lane.last_loss = loss

    def _finish(self) -> None:
        """Each run's final status.json and tracker state, whatever ended the loop."""
        m, derived = self.m, self.m.derived
        self.progress.close()
        for lane in m.lanes:
            if lane.hook is not None:
                lane.hook.flush()
        wall = m.wall_before + time.perf_counter() - self.t0
        if m.is_main:
            for lane in m.lanes:
                if lane.state == "done":
                    self._check_final(lane)
                seconds = lane.hook.seconds if lane.hook is not None else 0.0
                probe_s = float(lane.prior.get("probe_s") or 0.0) + seconds  # summed over the run's processes
                write_status(lane.folder, state=lane.state, error=lane.error, finished=time.time(), wall_s=wall,
                             final_loss=lane.last_loss, final_val_loss=lane.val, steps=self.total,
                             tokens=self.total * self.tokens_per_step, n_params=derived["n_params"],
                             flops=derived["flops"], **m.status_extra, probe_s=probe_s)
                if lane.tracker is not None:
                    lane.tracker.finish(lane.state)
        leave_process_group()

    def _check_final(self, lane: Lane) -> None:
        """A run is done only over a final checkpoint that passes its checksum (another writer of the same run, or
        a disk that corrupted it, would leave one that fails): otherwise it ends failed, and a rerun trains again from
        its last good checkpoint."""
        try:
            ckpt.verify(lane.folder / "checkpoints" / f"step_{self.total}.pt")
        except ckpt.CheckpointError as e:
            lane.state = "failed"
            lane.error = f"{e}; rerun the same command to train again from the last good checkpoint"
            print(f"error: run {lane.rid}: {lane.error}", file=sys.stderr, flush=True)

    def _summary(self, lane: Lane) -> dict:
        status = read_status(lane.folder) if self.m.is_main else {"state": lane.state}
        return {"run_id": lane.rid, "run_dir": str(lane.folder), **self.m.derived, **status, "skipped": False}
