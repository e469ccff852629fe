"""Train one run from a config: `train(cfg) -> summary`.

Everything a run needs to continue lives in its newest checkpoint (weights, optimizer, step, tokens, RNG state, the
tracker's run id); batches are a pure function of (seed, step), so the data position is the step. Running the same
command again therefore continues where the run stopped, and a finished run is recognised and not retrained.
Files, under `results/<sweep>/runs/<run_id>/`: `config.yaml`, `status.json`, `checkpoints/step_<N>.pt`,
`train_log.parquet`, and (from the probe engine) `probes.parquet`, `instances.parquet`, `samples.parquet`.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from emergence import checkpoint as ckpt
from emergence.config import ConfigError, gpt_config, run_dir, run_id, validate
from emergence.data import build_source
from emergence.model import GPT
from emergence.optim import FlatAdamW, model_groups


class Diverged(RuntimeError):
    pass


def lr_at(step: int, total: int, peak: float, warmup: int, min_ratio: float) -> float:
    """Linear warm-up to `peak`, then cosine decay to `min_ratio * peak` at the last step (Pythia's schedule)."""
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    if total <= warmup:
        return peak
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, betas, device_type: str) -> FlatAdamW:
    """AdamW with weight decay on matrices and embeddings only; biases and LayerNorm parameters are not decayed.

    Fused (one kernel per parameter group) on CUDA, and on CPU where torch has it (2.4 and later), over flat parameter
    buffers (`emergence.optim`): at the smallest sizes the optimizer was a fifth of a CPU training step, and fused
    AdamW over two buffers makes it a small fraction of that (`emergence bench`)."""
    return FlatAdamW(model_groups(model, weight_decay), lr, betas, device_type)


def pick_device(cfg) -> torch.device:
    want = cfg.train.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is available; use train.device=auto or cpu")
    return torch.device(want)


def autocast_for(cfg, device: torch.device):
    """bf16 autocast on CUDA; fp32 on CPU, where bf16 matrix products are about 100x slower."""
    dtype = cfg.train.dtype
    if dtype == "auto":
        dtype = "bfloat16" if device.type == "cuda" else "float32"
    if dtype == "bfloat16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def distributed() -> tuple[int, int]:
    """(rank, world size) under torchrun, else (0, 1)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def write_status(folder: Path, **fields) -> None:
    path = folder / "status.json"
    old = {}
    if path.exists():
        with contextlib.suppress(ValueError, OSError):
            old = json.loads(path.read_text())
    old.update(fields)
    ckpt.atomic_write_bytes(path, json.dumps(old, indent=1, default=str).encode())


def read_status(folder: Path) -> dict:
    try:
        return json.loads((Path(folder) / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def loss_estimate(sums, counts) -> tuple[float, float, int]:
    """The held-out loss from per-sequence loss sums and scored-token counts: (mean loss per scored token, its
    standard error, n = the sequences with at least one scored token).

    Tokens of one sequence share its context, so their losses are correlated and a standard error over tokens would
    be too small; sequences are drawn independently, so they are the unit. The loss is the ratio R = sum(s) / sum(c)
    of per-sequence sums s and counts c; its standard error (delta method, sequences as clusters) is
    sqrt(n / (n - 1) * sum((s_i - R c_i)^2)) / sum(c), which is exactly sd(per-sequence mean losses) / sqrt(n) when
    every sequence scores the same number of tokens (always so for text). NaN when n < 2 (no spread to measure).
    """
    s = np.asarray(sums, dtype=np.float64).ravel()
    c = np.asarray(counts, dtype=np.float64).ravel()
    s, c = s[c > 0], c[c > 0]
    n = len(s)
    if n == 0:
        return float("nan"), float("nan"), 0
    total = float(c.sum())
    value = float(s.sum()) / total
    if n < 2 or not math.isfinite(value):
        return value, float("nan"), n
    return value, math.sqrt(n / (n - 1) * float(np.sum((s - value * c) ** 2))) / total, n


def sequence_losses(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence sums of the token losses and counts of scored tokens (targets -100 are not scored), as
    `GPT.forward`'s mean cross-entropy computes them."""
    loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100,
                           reduction="none").view(targets.shape)
    return loss.sum(1), (targets != -100).sum(1)


@torch.no_grad()
def heldout_loss(model, source, cfg, device, amp) -> tuple[float, float, int]:
    """The loss on `eval_batches` fixed held-out batches (the same batches at every evaluation): mean loss per
    scored token, its standard error over sequences and their number (`loss_estimate`)."""
    was_training = model.training
    model.eval()
    sums, counts = [], []
    for i in range(cfg.train.eval_batches):
        x, y = source.batch(cfg.seed + 10_000, i, cfg.train.batch_size, split="heldout")
        y = y.to(device)
        with amp:
            logits, _ = model(x.to(device))
        s, c = sequence_losses(logits, y)
        sums.append(s.double().cpu())
        counts.append(c.cpu())
    model.train(was_training)
    return loss_estimate(torch.cat(sums).numpy(), torch.cat(counts).numpy())


_PEAK: dict[str, float] = {}


def matmul_peak_flops(device: torch.device) -> float:
    """A quick measure of this device's dense fp32 matmul rate (FLOP/s), cached per process: the MFU denominator.
    `emergence bench` measures it more carefully."""
    if device.type in _PEAK:
        return _PEAK[device.type]
    n = 1024
    g = torch.Generator(device).manual_seed(0)  # a private generator: the run's RNG stream must not depend on this
    a, b = torch.randn(n, n, device=device, generator=g), torch.randn(n, n, device=device, generator=g)
    a @ b
    best = 0.0
    for _ in range(3):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = max(best, 2 * n**3 / (time.perf_counter() - t))
    _PEAK[device.type] = best
    return best


class Progress:
    """One progress line: step, loss, tokens/s and ETA (rewritten in place on a terminal)."""

    def __init__(self, enabled: bool, name: str, total: int, every: int):
        self.enabled, self.name, self.total, self.every = enabled, name, total, every
        self.tty = sys.stderr.isatty()

    def update(self, step: int, loss: float, tps: float, eta_s: float) -> None:
        if not self.enabled or (not self.tty and step % self.every and step != self.total):
            return  # in a log file: one line per log interval (not also at every early checkpoint)
        line = (f"{self.name} step {step}/{self.total} loss {loss:.4f} {tps:,.0f} tok/s "
                f"ETA {time.strftime('%H:%M:%S', time.gmtime(max(0, eta_s)))}")
        print(("\r" + line + " " * 4) if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def close(self):
        if self.enabled and self.tty:
            print(file=sys.stderr, flush=True)


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
    amp = autocast_for(cfg, device)
    gc = gpt_config(cfg)
    total = derived["steps"]
    tokens_per_step = derived["tokens_per_step"]
    fpt = derived["flops_per_token"]
    ckdir = folder / "checkpoints"
    is_main = rank == 0
    resolved = OmegaConf.to_container(cfg, resolve=True) if not isinstance(cfg, dict) else dict(cfg)
    resolved.pop("hydra", None)  # what config.yaml and every checkpoint record
    if is_main:
        ckdir.mkdir(parents=True, exist_ok=True)
        ckpt.remove_stale_temporaries(folder, ckdir)
        cfg_text = OmegaConf.to_yaml(OmegaConf.create(resolved))
        ckpt.atomic_write_bytes(folder / "config.yaml", cfg_text.encode())

    torch.manual_seed(cfg.seed)
    model = GPT(gc).to(device)
    opt = make_optimizer(model, derived["lr"], cfg.train.weight_decay, (cfg.train.beta1, cfg.train.beta2), device.type)
    source = build_source(cfg)

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

    tracker = _make_tracker(cfg, rid, derived, tracker_id) if is_main else None
    probe_hook = _probe_hook(cfg, folder, tracker) if is_main else None
    ck_steps = set(ckpt.schedule(total, cfg.train.ckpt_log_until, cfg.train.ckpt_every))
    progress = Progress(cfg.train.progress and is_main, rid, total, cfg.train.log_interval)
    peak = matmul_peak_flops(device) if is_main else float("nan")
    if is_main:
        write_status(folder, state="running", run_id=rid, started=status.get("started", time.time()), error="",
                     pid=os.getpid(), steps=total)

    def save_checkpoint(step: int, wall: float, heldout: tuple[float, float, int]) -> None:
        if not is_main:
            return
        val_loss, val_stderr, val_n = heldout
        payload = {
            "model": model.state_dict(),
            "model_config": gc.to_dict(),
            "config": resolved,
            "run_id": rid,
            "step": step,
            "tokens": step * tokens_per_step,
            "flops": float(step * tokens_per_step * fpt),
            "flops_per_token": fpt,
            "n_params": derived["n_params"],
            "n_params_nonembed": derived["n_params_nonembed"],
            "seed": cfg.seed,
            "val_loss": val_loss,
            "val_loss_stderr": val_stderr,
            "val_loss_n": val_n,
            "wall_s": wall,
            "rng": {"torch": torch.get_rng_state()},
            "code_version": ckpt.code_version(),
            "format_version": ckpt.FORMAT_VERSION,
            "tracker_id": tracker.id if tracker is not None else None,
        }
        if cfg.train.ckpt_keep_optimizer:
            payload["optimizer"] = opt.state_dict()
        if log_rows:  # the log first: a kill between the two leaves rows past the checkpoint, dropped on resume
            ckpt.atomic_write_parquet(pd.DataFrame(log_rows), folder / "train_log.parquet")
        path = ckpt.save(ckdir / f"step_{step}.pt", payload)
        if probe_hook is not None:
            probe_hook(path, payload)
        if tracker is not None:
            tracker.log({"val/loss": val_loss, "tokens": step * tokens_per_step,
                         "flops": float(step * tokens_per_step * fpt)}, step=step)
            tracker.log_checkpoint(str(path), step)

    t0 = time.perf_counter()
    state_name, error = "done", ""
    last_loss, val = resumed_losses if found is not None else (float("nan"), float("nan"))
    try:
        if start_step == 0 and found is None and 0 in ck_steps:
            heldout = heldout_loss(model, source, cfg, device, amp)
            val = heldout[0]
            save_checkpoint(0, 0.0, heldout)
        if found is not None and probe_hook is not None:  # a kill can fall between writing a checkpoint and probing it
            from emergence.probe import unprobed_checkpoints

            for path in unprobed_checkpoints(folder):
                probe_hook(path)
        model.train()
        # the loop reads plain values: one attribute of an OmegaConf config costs about 20 us, and the dozen read
        # per step were 8% of the smallest sizes' step
        t = OmegaConf.to_container(cfg.train, resolve=True) if not isinstance(cfg.train, dict) else dict(cfg.train)
        seed, accum, batch_size, log_interval = int(cfg.seed), t["grad_accum"], t["batch_size"], t["log_interval"]
        clip = t["grad_clip"] if t["grad_clip"] > 0 else float("inf")
        window_t, window_tokens = time.perf_counter(), 0
        for step in range(start_step, total):
            lr = lr_at(step, total, derived["lr"], t["warmup_steps"], t["min_lr_ratio"])
            opt.set_lr(lr)
            loss_sum = torch.zeros((), device=device)
            for micro in range(accum):
                x, y = source.batch(seed, step * accum + micro, batch_size)
                if world > 1:  # each rank takes its share of the same global batch
                    x, y = x[rank::world], y[rank::world]
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                with amp:
                    _, loss = train_model(x, y)
                if step == t["nan_at_step"]:
                    loss = loss * float("nan")
                (loss / accum).backward()
                loss_sum += loss.detach()
            gnorm = opt.clip(clip)
            done_step = step + 1
            log_now = done_step % log_interval == 0 or done_step in ck_steps or done_step == total
            if log_now:  # the only host syncs of the step, and only at log points
                last_loss = float(loss_sum) / accum
                if not math.isfinite(last_loss) or not math.isfinite(float(gnorm)):
                    raise Diverged(f"loss became {last_loss} at step {done_step}")
            opt.step()
            opt.zero_grad()
            ckpt.fault_point(f"step:{done_step}")
            window_tokens += tokens_per_step
            if step == t["fail_at_step"]:
                raise RuntimeError(f"injected failure at step {step} (train.fail_at_step)")
            if log_now:
                now = time.perf_counter()
                tps = window_tokens / max(now - window_t, 1e-9)
                window_t, window_tokens = now, 0
                wall = wall_before + now - t0
                eta = (total - done_step) * tokens_per_step / max(tps, 1e-9)
                row = {"step": done_step, "tokens": done_step * tokens_per_step,
                       "flops": float(done_step * tokens_per_step * fpt), "loss": last_loss, "lr": lr,
                       "grad_norm": float(gnorm), "tokens_per_s": tps, "wall_s": wall}
                log_rows.append(row)
                progress.update(done_step, last_loss, tps, eta)
                if tracker is not None:
                    tracker.log({"train/loss": last_loss, "train/lr": lr, "train/grad_norm": float(gnorm),
                                 "train/tokens_per_s": tps, "train/mfu": tps * fpt / peak,
                                 "tokens": row["tokens"], "flops": row["flops"]}, step=done_step)
            if done_step in ck_steps or (t["eval_interval"] and done_step % t["eval_interval"] == 0):
                heldout = heldout_loss(model, source, cfg, device, amp)
                val = heldout[0]
                if done_step in ck_steps:
                    save_checkpoint(done_step, wall_before + time.perf_counter() - t0, heldout)
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
        if probe_hook is not None:
            probe_hook.flush()
        wall = wall_before + time.perf_counter() - t0
        if is_main:
            probe_s = probe_before + (probe_hook.seconds if probe_hook is not None else 0.0)
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


def _make_tracker(cfg, rid: str, derived: dict, resume_id):
    from emergence.tracking import make_tracker

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


class _ProbeHook:
    """Inline probing: score each checkpoint as it is written, so a sweep needs no second pass (rows go to the
    tracker at once and to the run's files in batches; `flush` at the end of the run)."""

    def __init__(self, cfg, folder: Path, tracker):
        from emergence.probe import InlineProber

        self.prober, self.tracker = InlineProber(folder, cfg.probe), tracker

    def __call__(self, path: Path, state: dict | None = None) -> None:
        rows = self.prober(path, state)
        if self.tracker is not None and rows:
            from emergence.probe import rows_frame

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


def _probe_hook(cfg, folder: Path, tracker) -> _ProbeHook | None:
    return _ProbeHook(cfg, folder, tracker) if cfg.probe.inline else None
