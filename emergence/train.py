"""Train one run from a config: `train(cfg) -> summary`.

Everything a run needs to continue lives in its newest checkpoint (weights, optimizer, step, tokens, RNG state, the
tracker's run id); batches are a pure function of (seed, step), so the data position is the step. Running the same
command again therefore continues where the run stopped, and a finished run is recognised and not retrained.
Files, under `results/<sweep>/runs/<run_id>/`: `config.yaml`, `status.json`, `checkpoints/step_<N>.pt`,
`train_log.parquet`, and (from the probe engine) `probes.parquet`, `instances.parquet`, `samples.parquet`.
"""
from __future__ import annotations

import math
import sys

import pandas as pd
import torch

from emergence import checkpoint as ckpt
from emergence import files
from emergence.config import gpt_config, run_dir, run_id, validate
from emergence.data import build_source
from emergence.device import distributed
from emergence.heldout import heldout_loss
from emergence.layout import read_status
from emergence.model import GPT
from emergence.optim import Step, lr_at, make_optimizer
from emergence.run import (Diverged, Lane, drive, make_run_tracker, open_device, prepare_folder, resolved_config,
                           train_settings)


def train(cfg) -> dict:
    """Train (or resume, or recognise as finished) the run that `cfg` describes; return its summary."""
    derived = validate(cfg)
    rid = run_id(cfg)
    folder = run_dir(cfg)
    rank, world = distributed()
    # one process per run: under torchrun the ranks would first have to agree whether to wait, so none locks
    with files.run_locks([folder] if world == 1 else []):
        status = read_status(folder)
        if status.get("state") in ("done", "diverged"):  # from its last good checkpoint a diverged run diverges again
            return {"run_id": rid, "run_dir": str(folder), **derived, **status, "skipped": True}
        return drive(OneModel(cfg, derived, rid, folder, status, rank, world), make_tracker=make_run_tracker)[0]


def _poison(loss):
    """train.nan_at_step's fault: the step's loss becomes NaN."""
    return loss * float("nan")


class OneModel:
    """One run's model for `run.drive`: a GPT and its optimizer, resumed from the run's newest valid checkpoint; under
    torchrun each rank trains on its share of every batch (DDP) and rank 0 writes. A step whose loss or gradient norm
    is not finite at a log point is not taken: the run ends as diverged, its last checkpoint its last good state."""

    status_extra: dict = {}
    log_evaluations = True

    def __init__(self, cfg, derived: dict, rid: str, folder, status: dict, rank: int, world: int):
        self.cfg, self.derived, self.label = cfg, derived, rid
        self.rank, self.world, self.is_main = rank, world, rank == 0
        self.device, self.amp = open_device(cfg)
        self.gc = gpt_config(cfg)
        lane = Lane(cfg, rid, folder, resolved_config(cfg), prior=status)
        self.lanes = [lane]
        # before anything is written: a corpus it cannot use leaves no folder behind
        self.source = build_source(cfg, lane.folder)
        if self.is_main:
            prepare_folder(lane.folder, lane.resolved)
        torch.manual_seed(cfg.seed)
        self.model = GPT(self.gc).to(self.device)
        self.opt = make_optimizer(self.model, derived["lr"], cfg.train.weight_decay, (cfg.train.beta1, cfg.train.beta2),
                                  self.device.type)
        self.start_step, self.wall_before, self.resumed = 0, 0.0, False
        self._resume(lane)
        train_model = torch.compile(self.model) if cfg.train.compile else self.model
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            train_model = DDP(train_model)
        self.model.train()
        t = train_settings(cfg)
        self.seed, self.accum, self.batch_size = int(cfg.seed), t["grad_accum"], t["batch_size"]
        self.nan_at_step = t["nan_at_step"]
        self.stepper = Step(lambda x, y: train_model(x, y)[1], self.opt,
                            lambda s: lr_at(s, derived["steps"], derived["lr"], t["warmup_steps"], t["min_lr_ratio"]),
                            t["grad_clip"], self.amp)

    def _resume(self, lane: Lane) -> None:
        """Continue from the newest valid checkpoint, if any: weights, optimizer, RNG, time so far, the tracker's run,
        the log up to it and its losses."""
        found = ckpt.latest_valid(lane.folder / "checkpoints")
        if found is None:
            return
        self.resumed = True
        self.start_step, state = found
        self.model.load_state_dict(state["model"])
        if "optimizer" in state:
            self.opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"]["torch"])
        self.wall_before = float(state.get("wall_s", 0.0))
        lane.tracker_id = state.get("tracker_id")
        if (lane.folder / "train_log.parquet").exists():
            old = pd.read_parquet(lane.folder / "train_log.parquet")
            lane.log_rows = old[old["step"] <= self.start_step].to_dict("records")
        lane.last_loss = lane.log_rows[-1]["loss"] if lane.log_rows else float("nan")
        lane.val = state.get("val_loss", float("nan"))
        if self.is_main and self.start_step > 0:
            print(f"{lane.rid}: resuming from step {self.start_step}", file=sys.stderr)

    def _micro_batch(self, i: int):
        x, y = self.source.batch(self.seed, i, self.batch_size)
        if self.world > 1:  # each rank takes its share of the same global batch
            x, y = x[self.rank::self.world], y[self.rank::self.world]
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def step(self, step: int, log_now: bool):
        lr = self.stepper.set_lr(step)
        loss_sum = self.stepper.backward([self._micro_batch(step * self.accum + m) for m in range(self.accum)],
                                         _poison if step == self.nan_at_step else None)
        gnorm = self.stepper.clip()
        loss = norm = float("nan")
        if log_now:  # the only host syncs of the step, and only at log points
            loss = float(loss_sum) / self.accum
            if not math.isfinite(loss) or not math.isfinite(float(gnorm)):
                raise Diverged(loss, step + 1)
            norm = float(gnorm)
        self.stepper.apply()
        files.fault_point(f"step:{step + 1}")
        return lr, lambda: ([loss], [norm])

    def heldout(self) -> list[tuple[float, float, int]]:
        return [heldout_loss(self.model, self.source, self.cfg, self.device, self.amp)]

    def model_state(self, i: int) -> dict:
        return self.model.state_dict()

    def optimizer_state(self, i: int) -> dict:
        return self.opt.state_dict()

    def rng(self, i: int) -> torch.Tensor:
        return torch.get_rng_state()
