"""One run's lifecycle, shared by a single run (`emergence.train.train`) and seeds stacked into one model
(`emergence.stacked.train_seeds`): the run folder and its config.yaml, status.json, the tracker, the inline probe
hook, the checkpoint payload, and the log rows with what the tracker gets of them. The two training loops differ
only in how they step; what a run writes is written here, once.
"""
from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from emergence import checkpoint as ckpt
from emergence import files
from emergence.config import run_dir
from emergence.data import save_run_tokenizer
from emergence.probe import InlineProber, rows_frame
from emergence.tracking import make_tracker


def prepare_folder(folder: Path, resolved: dict) -> None:
    """The run's folder and checkpoints folder, cleared of the temporaries a killed writer left, its resolved
    config as config.yaml, and for a data.tokenizer=bpe run its tokenizer as tokenizer.json (kept once written, so a
    resumed run reads its text exactly as before)."""
    save_run_tokenizer(folder, resolved)  # first: a corpus too small for its vocabulary leaves nothing written
    (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
    files.remove_stale_temporaries(folder, folder / "checkpoints")
    files.atomic_write_bytes(folder / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(resolved)).encode())


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
