"""Train one run from a config: `train(cfg) -> summary`.

Everything a run needs to continue lives in its newest checkpoint (weights, optimizer, step, tokens, RNG state, the
tracker's run id); batches are a pure function of (seed, step), so the data position is the step. Running the same
command again therefore continues where the run stopped, and a finished run is recognised and not retrained.
Files, under `results/<sweep>/runs/<run_id>/`: `config.yaml`, `status.json`, `checkpoints/step_<N>.pt`,
`train_log.parquet`, and (from the probe engine) `probes.parquet`, `instances.parquet`, `samples.parquet`.
"""
from __future__ import annotations

import math
import os
import sys
import time
import traceback

import pandas as pd
import torch
from omegaconf import OmegaConf

from emergence import checkpoint as ckpt
from emergence import files
from emergence.config import gpt_config, run_dir, run_id, validate
from emergence.data import build_source
from emergence.device import autocast_for, check_run_memory, distributed, matmul_peak_flops, pick_device
from emergence.heldout import heldout_loss
from emergence.layout import read_status
from emergence.live import RunProgress
from emergence.model import GPT
from emergence.optim import Step, lr_at, make_optimizer
from emergence.probe import unprobed_checkpoints
from emergence.run import (log_row, log_train, make_run_tracker, payload, prepare_folder, probe_hook, save_checkpoint,
                           write_status)


class Diverged(RuntimeError):
    pass


def train(cfg) -> dict:
    """Train (or resume, or recognise as finished) the run that `cfg` describes; return its summary."""
    derived = validate(cfg)
    rid = run_id(cfg)
    folder = run_dir(cfg)
    rank, world = distributed()
    summary = {"run_id": rid, "run_dir": str(folder), **derived}
    status = read_status(folder)
    if status.get("state") in ("done", "diverged"):  # from its last good checkpoint a diverged run diverges again
        return {**summary, **status, "skipped": True}

    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    device = pick_device(cfg)
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
    check_run_memory(cfg, device)
    amp = autocast_for(cfg, device)
    gc = gpt_config(cfg)
    total = derived["steps"]
    tokens_per_step = derived["tokens_per_step"]
    fpt = derived["flops_per_token"]
    ckdir = folder / "checkpoints"
    is_main = rank == 0
    resolved = OmegaConf.to_container(cfg, resolve=True) if not isinstance(cfg, dict) else dict(cfg)
    resolved.pop("hydra", None)  # what config.yaml and every checkpoint record
    source = build_source(cfg, folder)  # before anything is written: a corpus it cannot use leaves no folder behind
    if is_main:
        prepare_folder(folder, resolved)

    torch.manual_seed(cfg.seed)
    model = GPT(gc).to(device)
    opt = make_optimizer(model, derived["lr"], cfg.train.weight_decay, (cfg.train.beta1, cfg.train.beta2), device.type)

    start_step, wall_before, tracker_id, log_rows = 0, 0.0, None, []
    probe_before = float(status.get("probe_s") or 0.0)  # seconds spent probing, summed over the run's processes
    found = ckpt.latest_valid(ckdir)
    if found is not None:
        start_step, state = found
        model.load_state_dict(state["model"])
        if "optimizer" in state:
            opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"]["torch"])
        wall_before = float(state.get("wall_s", 0.0))
        tracker_id = state.get("tracker_id")
        if (folder / "train_log.parquet").exists():
            old = pd.read_parquet(folder / "train_log.parquet")
            log_rows = old[old["step"] <= start_step].to_dict("records")
        resumed_losses = (log_rows[-1]["loss"] if log_rows else float("nan"), state.get("val_loss", float("nan")))
        if is_main and start_step > 0:
            print(f"{rid}: resuming from step {start_step}", file=sys.stderr)

    train_model = model
    if cfg.train.compile:
        train_model = torch.compile(model)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        train_model = DDP(train_model)

    tracker = make_run_tracker(cfg, rid, derived, tracker_id) if is_main else None
    hook = probe_hook(cfg, folder, tracker) if is_main else None
    ck_steps = set(ckpt.schedule(total, cfg.train.ckpt_log_until, cfg.train.ckpt_every))
    progress = RunProgress(cfg.train.progress and is_main, rid, total, cfg.train.log_interval)
    peak = matmul_peak_flops(device) if is_main else float("nan")
    if is_main:
        write_status(folder, state="running", run_id=rid, started=status.get("started", time.time()), error="",
                     pid=os.getpid(), steps=total)

    def save(step: int, wall: float, heldout: tuple[float, float, int]) -> None:
        if not is_main:
            return
        state = payload(model_state=model.state_dict(), model_config=gc.to_dict(), resolved=resolved, rid=rid,
                        seed=cfg.seed, step=step, derived=derived, heldout=heldout, wall=wall,
                        rng=torch.get_rng_state(), tracker=tracker,
                        optimizer_state=opt.state_dict() if cfg.train.ckpt_keep_optimizer else None)
        save_checkpoint(folder, state, log_rows, hook, tracker)

    t0 = time.perf_counter()
    state_name, error = "done", ""
    last_loss, val = resumed_losses if found is not None else (float("nan"), float("nan"))
    try:
        if start_step == 0 and found is None and 0 in ck_steps:
            heldout = heldout_loss(model, source, cfg, device, amp)
            val = heldout[0]
            save(0, 0.0, heldout)
        if found is not None and hook is not None:  # a kill can fall between writing a checkpoint and probing it
            for path in unprobed_checkpoints(folder):
                hook(path)
        model.train()
        # the loop reads plain values: one attribute of an OmegaConf config costs about 20 us, and the dozen read
        # per step were 8% of the smallest sizes' step
        t = OmegaConf.to_container(cfg.train, resolve=True) if not isinstance(cfg.train, dict) else dict(cfg.train)
        seed, accum, batch_size, log_interval = int(cfg.seed), t["grad_accum"], t["batch_size"], t["log_interval"]
        stepper = Step(lambda x, y: train_model(x, y)[1], opt,
                       lambda s: lr_at(s, total, derived["lr"], t["warmup_steps"], t["min_lr_ratio"]),
                       t["grad_clip"], amp)

        def micro_batch(i: int):
            x, y = source.batch(seed, i, batch_size)
            if world > 1:  # each rank takes its share of the same global batch
                x, y = x[rank::world], y[rank::world]
            return x.to(device, non_blocking=True), y.to(device, non_blocking=True)

        window_t, window_tokens = time.perf_counter(), 0
        for step in range(start_step, total):
            lr = stepper.set_lr(step)
            loss_sum = stepper.backward([micro_batch(step * accum + m) for m in range(accum)],
                                        (lambda loss: loss * float("nan")) if step == t["nan_at_step"] else None)
            gnorm = stepper.clip()
            done_step = step + 1
            log_now = done_step % log_interval == 0 or done_step in ck_steps or done_step == total
            if log_now:  # the only host syncs of the step, and only at log points
                last_loss = float(loss_sum) / accum
                if not math.isfinite(last_loss) or not math.isfinite(float(gnorm)):
                    raise Diverged(f"loss became {last_loss} at step {done_step}")
            stepper.apply()
            files.fault_point(f"step:{done_step}")
            window_tokens += tokens_per_step
            if step == t["fail_at_step"]:
                raise RuntimeError(f"injected failure at step {step} (train.fail_at_step)")
            if log_now:
                now = time.perf_counter()
                tps = window_tokens / max(now - window_t, 1e-9)
                window_t, window_tokens = now, 0
                wall = wall_before + now - t0
                eta = (total - done_step) * tokens_per_step / max(tps, 1e-9)
                row = log_row(done_step, derived, last_loss, lr, float(gnorm), tps, wall)
                log_rows.append(row)
                progress.update(done_step, last_loss, tps, eta)
                log_train(tracker, row, fpt, peak)
            if done_step in ck_steps or (t["eval_interval"] and done_step % t["eval_interval"] == 0):
                heldout = heldout_loss(model, source, cfg, device, amp)
                val = heldout[0]
                if done_step in ck_steps:
                    save(done_step, wall_before + time.perf_counter() - t0, heldout)
                elif tracker is not None:
                    tracker.log({"val/loss": val, "tokens": done_step * tokens_per_step}, step=done_step)
                window_t = time.perf_counter()  # tokens/s measures training, not evaluation or checkpointing
    except Diverged as e:
        state_name, error = "diverged", str(e)
    except KeyboardInterrupt:
        state_name, error = "interrupted", "stopped by the user (Ctrl-C); run the same command to resume"
        raise
    except Exception as e:
        state_name, error = "failed", f"{type(e).__name__}: {e}"
        if is_main:
            traceback.print_exc(file=sys.stderr)
    finally:
        progress.close()
        if hook is not None:
            hook.flush()
        wall = wall_before + time.perf_counter() - t0
        if is_main:
            probe_s = probe_before + (hook.seconds if hook is not None else 0.0)
            write_status(folder, state=state_name, error=error, finished=time.time(), wall_s=wall,
                         final_loss=last_loss, final_val_loss=val, steps=total, tokens=total * tokens_per_step,
                         n_params=derived["n_params"], flops=derived["flops"], probe_s=probe_s)
            if tracker is not None:
                tracker.finish(state_name)
        if world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
    summary.update(read_status(folder) if is_main else {"state": state_name})
    summary["skipped"] = False
    return summary


