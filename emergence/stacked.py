"""Train the seeds of one size together: one stacked model with a leading seed axis.

At the smallest sizes a training step is mostly fixed cost (Python, operator dispatch, small kernels), so S seeds
trained one after another pay it S times. Here every weight of `GPT` gets a leading axis of length S, linear layers
become batched matrix products (`torch.baddbmm`), attention folds the seed axis into the batch, and one optimizer
steps all seeds at once: the same arithmetic in S-times-larger operations.

Each seed keeps what makes it its own run, as `train()` does it:
- its initialisation: seed s is built by `torch.manual_seed(s); GPT(config)`, then stacked;
- its data order: seed s reads `source.batch(s, step * grad_accum + micro, batch_size)`;
- its loss: the mean cross-entropy over its own answer tokens (the seeds' losses are summed for the backward pass,
  and since no weight is shared across seeds, seed s's gradient is exactly the gradient of its own loss);
- its gradient clipping: the global norm of seed s's gradient alone, `torch.nn.utils.clip_grad_norm_`'s formula
  (scale by max_norm / (norm + 1e-6) when that is below 1);
- its optimizer state: AdamW is elementwise, so AdamW over a stacked tensor is AdamW over each seed's slice.

The results match separate `train()` runs up to floating-point rounding (batched products sum in another order):
after 12 steps of the tiny test config the weights differ by at most 6e-6 and the losses by 2e-6
(`tests/test_stacked.py` asserts 1e-4); the random streams (initialisation, data, checkpointed RNG) are identical. `train_seeds(cfg, seeds)` writes each
seed's run folder as `train()` would (config, checkpoints on the same schedule, training log, status, inline probes),
so probing, aggregation and analysis cannot tell the two apart.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import time
import traceback
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F
from omegaconf import OmegaConf

from emergence import checkpoint as ckpt
from emergence import files, run
from emergence.config import gpt_config, run_dir, run_id, validate
from emergence.data import build_source
from emergence.device import autocast_for, check_run_memory, distributed, matmul_peak_flops, pick_device
from emergence.heldout import loss_estimate
from emergence.layout import read_status
from emergence.live import RunProgress
from emergence.model import GPT, GPTConfig, apply_rotary, rotary_tables
from emergence.optim import FlatAdamW, Step, lr_at
from emergence.train import train

# A stacked parameter is a seed-strided view of its group's (seeds, n) buffer, and so is its gradient: autograd adds each
# step's gradient into that view in place, as intended, but warns that the two are not dense. Only that warning is muted.
_LAYOUT_WARNING = "grad and param do not obey the gradient layout contract"


@contextlib.contextmanager
def _quiet_layout_warning():
    """The stacked weights' gradients come out in another memory layout than the parameters, which torch warns about
    once per backward; it costs nothing here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_LAYOUT_WARNING)
        yield


def _key(name: str) -> str:
    return name.replace(".", "__")  # module attribute names cannot hold dots


class StackedGPT(nn.Module):
    """S copies of `GPT(config)` with their weights stacked on a leading axis; `forward` returns the S losses.

    Parameter `name` of seed s is `self.get(name)[s]`, where `name` is the parameter's name in `GPT` (a tied output
    head is the token embedding, as in `GPT`)."""

    def __init__(self, models: list[GPT]):
        super().__init__()
        if not models:
            raise ValueError("StackedGPT needs at least one model")
        c = models[0].config
        if any(m.config != c for m in models):
            raise ValueError("every stacked model must have the same configuration (one size per stack)")
        self.config, self.S = c, len(models)
        self.names = [n for n, _ in models[0].named_parameters()]  # deduplicated: a tied head is not listed
        self.orig_dim = {}
        for name in self.names:
            tensors = [dict(m.named_parameters())[name].detach() for m in models]
            self.register_parameter(_key(name), nn.Parameter(torch.stack(tensors).clone()))
            self.orig_dim[name] = tensors[0].dim()
        if c.pos == "rotary":
            cos, sin = rotary_tables(c.d_model // c.n_head, c.block_size)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)

    def get(self, name: str) -> torch.Tensor:
        return getattr(self, _key(name))

    def seed_state(self, s: int) -> dict[str, torch.Tensor]:
        """Seed s's weights as a `GPT.state_dict()` (tied head included), ready for `GPT.load_state_dict`."""
        out = {n: self.get(n)[s].detach().clone() for n in self.names}
        if self.config.tie_embeddings:
            out["head.weight"] = out["tok.weight"]
        return out

    def named_stacked(self):
        """(GPT name, stacked parameter) pairs."""
        return [(n, self.get(n)) for n in self.names]

    # -- the forward pass: GPT.forward with a seed axis -------------------------------------------------------------
    def _linear(self, x, prefix: str):
        """x (S, N, in) @ weight (S, out, in)^T + bias (S, out): `nn.Linear` per seed, as one batched product."""
        w = self.get(prefix + ".weight")
        if self.config.bias:
            return torch.baddbmm(self.get(prefix + ".bias").unsqueeze(1), x, w.transpose(1, 2))
        return torch.bmm(x, w.transpose(1, 2))

    def _layer_norm(self, x, prefix: str):
        """LayerNorm without its affine part (the kernel cannot take per-seed weights), then the per-seed affine."""
        d = self.config.d_model
        y = F.layer_norm(x, (d,), eps=1e-5)
        w = self.get(prefix + ".weight").unsqueeze(1)
        if self.config.bias:
            return torch.addcmul(self.get(prefix + ".bias").unsqueeze(1), y, w)
        return y * w

    def forward(self, idx: torch.Tensor, targets: torch.Tensor, per_sequence: bool = False):
        """idx, targets: (S, B, T), targets -100 where ignored. Returns the S mean cross-entropies (S,), or with
        `per_sequence` each sequence's summed loss and scored-token count, both (S, B) (`heldout.sequence_losses`)."""
        c = self.config
        S, B, T = idx.shape
        if S != self.S:
            raise ValueError(f"got batches for {S} seeds, the stack holds {self.S}")
        if T > c.block_size:
            raise ValueError(f"sequence of {T} tokens exceeds the model's context of {c.block_size}")
        d, H = c.d_model, c.n_head
        hd, N = d // H, B * T
        tok = self.get("tok.weight")  # (S, V, d)
        offset = (torch.arange(S, device=idx.device) * c.vocab_size).view(S, 1, 1)
        x = tok.reshape(S * c.vocab_size, d).index_select(0, (idx + offset).reshape(-1)).view(S, B, T, d)
        rope = None
        if c.pos == "learned":
            x = x + self.get("pos.weight")[:, None, :T]
        else:
            rope = (self.rope_cos[:T], self.rope_sin[:T])
        x = x.reshape(S, N, d)
        for i in range(c.n_layer):
            p = f"blocks.{i}."
            h = self._layer_norm(x, p + "ln1")
            q, k, v = self._linear(h, p + "attn.qkv").view(S * B, T, 3, H, hd).permute(2, 0, 3, 1, 4)
            if rope is not None:
                q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self._linear(y.transpose(1, 2).reshape(S, N, d), p + "attn.proj")
            h = self._layer_norm(x, p + "ln2")
            x = x + self._linear(F.gelu(self._linear(h, p + "fc")), p + "out")
        x = self._layer_norm(x, "ln_f")
        head = self.get("tok.weight" if c.tie_embeddings else "head.weight")
        logits = torch.bmm(x, head.transpose(1, 2))  # (S, N, V)
        flat_t = targets.reshape(S * N)
        loss = F.cross_entropy(logits.reshape(S * N, c.vocab_size), flat_t, ignore_index=-100, reduction="none")
        valid = (flat_t != -100).view(S, N)
        if per_sequence:
            return loss.view(S, B, T).sum(2), valid.view(S, B, T).sum(2)
        # the mean over each seed's own answer tokens: F.cross_entropy's "mean" with ignore_index, per seed
        return loss.view(S, N).sum(1) / valid.sum(1)


# ---------------------------------------------------------------------------------------------------------------------
# Optimizer and clipping, per seed.

def stacked_optimizer(stack: StackedGPT, lr: float, weight_decay: float, betas, device_type: str) -> FlatAdamW:
    """`make_optimizer`'s AdamW for a stack: the same grouping (decay on what is a matrix or embedding in `GPT`,
    judged by the un-stacked dimension), the same kernel, over flat buffers with a seed axis, so each seed's
    gradient is clipped on its own (`FlatAdamW.clip`: `torch.nn.utils.clip_grad_norm_`'s rule per seed)."""
    named = stack.named_stacked()
    groups = [([p for n, p in named if stack.orig_dim[n] >= 2], weight_decay),
              ([p for n, p in named if stack.orig_dim[n] < 2], 0.0)]
    return FlatAdamW(groups, lr, betas, device_type, seeds=stack.S)


# ---------------------------------------------------------------------------------------------------------------------
# Building and stepping a stack the way train() builds and steps one run.

def build_models(gc: GPTConfig, seeds: list[int], device="cpu") -> tuple[list[GPT], list[torch.Tensor]]:
    """Each seed's GPT built exactly as `train()` builds it (`torch.manual_seed(seed)`, then `GPT(gc)`), with the
    global RNG state right after (what `train()` stores in a checkpoint)."""
    models, rng = [], []
    for s in seeds:
        torch.manual_seed(int(s))
        models.append(GPT(gc).to(device))
        rng.append(torch.get_rng_state())
    return models, rng


class StackedTrainer:
    """A stack of seeds, its optimizer and `train()`'s step: scheduled lr, forward and backward over the micro-batches
    (each seed's loss divided by grad_accum), per-seed clipping, AdamW step, gradients set to None."""

    def __init__(self, gc: GPTConfig, seeds: list[int], *, lr: float, weight_decay: float, betas, grad_clip: float,
                 total_steps: int, warmup_steps: int, min_lr_ratio: float, device="cpu", amp=None,
                 compile: bool = False):
        device = torch.device(device)
        self.seeds = [int(s) for s in seeds]
        models, self.rng_after_init = build_models(gc, self.seeds, device)
        self.stack = StackedGPT(models).to(device)
        self.opt = stacked_optimizer(self.stack, lr, weight_decay, betas, device.type)
        self.template_model = models[0]
        self.amp = amp if amp is not None else contextlib.nullcontext()
        self.forward = torch.compile(self.stack) if compile else self.stack
        self.stepper = Step(self.forward, self.opt,
                            lambda s: lr_at(s, total_steps, lr, warmup_steps, min_lr_ratio), grad_clip, self.amp,
                            backward_context=_quiet_layout_warning)
        self.step_count = 0

    def step(self, micro_batches: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor, float]:
        """One optimizer step on `micro_batches` of (x, y), each (S, B, T). Returns (S mean losses, S gradient norms
        before clipping, lr); no host sync."""
        total, norms, lr = self.stepper(self.step_count, micro_batches)
        self.step_count += 1
        return total / len(micro_batches), norms, lr

    @torch.no_grad()
    def losses(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> list[tuple[float, float, int]]:
        """Each seed's held-out loss over `batches` as `heldout.heldout_loss` gives it: (mean loss per scored token,
        its standard error over sequences, n sequences)."""
        sums, counts = [], []
        for x, y in batches:
            with self.amp:
                s, c = self.stack(x, y, per_sequence=True)
            sums.append(s.double().cpu())
            counts.append(c.cpu())
        sums, counts = torch.cat(sums, dim=1).numpy(), torch.cat(counts, dim=1).numpy()
        return [loss_estimate(sums[i], counts[i]) for i in range(len(sums))]

    def model_state(self, i: int) -> dict:
        """Seed i's `GPT.state_dict()`, in the exact form `train()` saves."""
        self.template_model.load_state_dict(self.stack.seed_state(i))
        return {k: v.detach().clone() for k, v in self.template_model.state_dict().items()}

    def optimizer_state(self, i: int) -> dict:
        """Seed i's AdamW state as the optimizer `make_optimizer` builds for one run would hold it, so `train()` can
        resume the run from this checkpoint. Parameter order is the same: both list GPT's parameters in order."""
        return self.opt.state_dict(seed=i)


def stack_batches(source, seeds: list[int], step: int, grad_accum: int, batch_size: int, device,
                  split: str = "train") -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The micro-batches of one step for every seed, (S, B, T) each: seed s reads exactly what `train()` reads."""
    out = []
    for micro in range(grad_accum):
        xs, ys = zip(*(source.batch(s, step * grad_accum + micro, batch_size, split) for s in seeds))
        out.append((torch.stack(xs).to(device, non_blocking=True), torch.stack(ys).to(device, non_blocking=True)))
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Whole runs: one folder per seed, as train() writes it.

def stackable(cfg) -> str:
    """Why `cfg` cannot be trained in a stack, or "" if it can."""
    if distributed()[1] > 1:
        return "stacked training runs in one process; under torchrun use train()"
    if cfg.train.fail_at_step >= 0 or cfg.train.nan_at_step >= 0:
        return "fault injection (train.fail_at_step / train.nan_at_step) is a train() feature"
    return ""


def train_seeds(cfg, seeds: list[int], stack: bool = True) -> list[dict]:
    """Train the runs `cfg` with seed=s for every s in `seeds`, stacked; return one summary per seed (as `train()`).

    Runs already done are recognised and skipped, and a run with checkpoints already written is resumed by `train()`
    on its own (a stack starts all its seeds at step 0). What is written is what `train()` writes for each run."""
    if not seeds:
        raise ValueError("train_seeds needs at least one seed")
    if len(set(int(s) for s in seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {list(seeds)}")
    why = stackable(cfg) if stack else "stack=False"
    cfgs = []
    for s in seeds:
        c = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
        c.seed = int(s)
        cfgs.append(c)
    if why:
        return [train(c) for c in cfgs]
    summaries: dict[int, dict] = {}
    fresh = []
    for c in cfgs:
        folder = run_dir(c)
        if read_status(folder).get("state") in ("done", "diverged") or ckpt.list_checkpoints(folder / "checkpoints"):
            summaries[c.seed] = train(c)  # finished: recognised and skipped; started: resumed on its own
        else:
            fresh.append(c)
    if not fresh:
        return [summaries[int(s)] for s in seeds]

    derived = validate(cfg)
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    device = pick_device(cfg)
    check_run_memory(cfg, device, copies=len(fresh))
    amp = autocast_for(cfg, device)
    gc = gpt_config(cfg)
    total, tokens_per_step, fpt = derived["steps"], derived["tokens_per_step"], derived["flops_per_token"]
    S = len(fresh)
    rids = [run_id(c) for c in fresh]
    folders = [run_dir(c) for c in fresh]
    resolved = []
    for c, folder in zip(fresh, folders):
        resolved.append(OmegaConf.to_container(c, resolve=True))
        resolved[-1].pop("hydra", None)
        run.prepare_folder(folder, resolved[-1])

    tr = StackedTrainer(gc, [c.seed for c in fresh], lr=derived["lr"], weight_decay=cfg.train.weight_decay,
                        betas=(cfg.train.beta1, cfg.train.beta2), grad_clip=cfg.train.grad_clip, total_steps=total,
                        warmup_steps=cfg.train.warmup_steps, min_lr_ratio=cfg.train.min_lr_ratio, device=device,
                        amp=amp, compile=cfg.train.compile)
    source = build_source(cfg)
    seeds_fresh = [c.seed for c in fresh]
    trackers = [run.make_run_tracker(c, rid, derived, None) for c, rid in zip(fresh, rids)]
    hooks = [run.probe_hook(c, folder, t) for c, folder, t in zip(fresh, folders, trackers)]
    peak = matmul_peak_flops(device)
    ck_steps = set(ckpt.schedule(total, cfg.train.ckpt_log_until, cfg.train.ckpt_every))
    progress = RunProgress(cfg.train.progress, f"{cfg.model.name} x{S} seeds", total, cfg.train.log_interval)
    started = time.time()
    for c, folder, rid in zip(fresh, folders, rids):
        run.write_status(folder, state="running", run_id=rid, started=started, error="", pid=os.getpid(), steps=total)
    log_rows: list[list[dict]] = [[] for _ in fresh]
    state = ["done"] * S
    error = [""] * S
    last_loss = [float("nan")] * S
    val = [float("nan")] * S
    val_est = [(float("nan"), float("nan"), 0)] * S
    live = [True] * S

    def heldout() -> list[tuple[float, float, int]]:
        batches = [stack_batches(source, [s + 10_000 for s in seeds_fresh], i, 1, cfg.train.batch_size, device,
                                 "heldout")[0] for i in range(cfg.train.eval_batches)]
        tr.stack.eval()
        out = tr.losses(batches)
        tr.stack.train()
        return out

    def save(step: int, wall: float) -> None:
        for i, c in enumerate(fresh):
            if not live[i]:
                continue
            state = run.payload(model_state=tr.model_state(i), model_config=gc.to_dict(), resolved=resolved[i],
                            rid=rids[i], seed=c.seed, step=step, derived=derived, heldout=val_est[i], wall=wall,
                            rng=tr.rng_after_init[i], tracker=trackers[i],
                            optimizer_state=tr.optimizer_state(i) if cfg.train.ckpt_keep_optimizer else None)
            run.save_checkpoint(folders[i], state, log_rows[i], hooks[i], trackers[i])

    t0 = time.perf_counter()
    try:
        if 0 in ck_steps:
            val_est = heldout()
            val = [e[0] for e in val_est]
            save(0, 0.0)
        window_t, window_tokens = time.perf_counter(), 0
        for step in range(total):
            micro = stack_batches(source, seeds_fresh, step, cfg.train.grad_accum, cfg.train.batch_size, device)
            losses, norms, lr = tr.step(micro)
            done_step = step + 1
            files.fault_point(f"step:{done_step}")
            window_tokens += tokens_per_step
            log_now = done_step % cfg.train.log_interval == 0 or done_step in ck_steps or done_step == total
            if log_now:  # the only host syncs, at log points, as in train()
                now = time.perf_counter()
                tps = window_tokens / max(now - window_t, 1e-9)  # each run's own rate: the stack trains S at once
                window_t, window_tokens = now, 0
                wall = now - t0
                ls, gs = losses.tolist(), norms.tolist()
                for i in range(S):
                    if not live[i]:
                        continue
                    last_loss[i] = ls[i]
                    if not math.isfinite(ls[i]) or not math.isfinite(gs[i]):
                        live[i], state[i] = False, "diverged"
                        error[i] = f"loss became {ls[i]} at step {done_step}"
                        continue
                    row = run.log_row(done_step, derived, ls[i], lr, gs[i], tps, wall)
                    log_rows[i].append(row)
                    run.log_train(trackers[i], row, fpt, peak)
                progress.update(done_step, sum(ls) / S, tps * S, (total - done_step) * tokens_per_step /
                                max(tps, 1e-9))
                if not any(live):
                    break
            if done_step in ck_steps or (cfg.train.eval_interval and done_step % cfg.train.eval_interval == 0):
                val_est = heldout()
                val = [e[0] for e in val_est]
                if done_step in ck_steps:
                    save(done_step, time.perf_counter() - t0)
                window_t = time.perf_counter()
    except KeyboardInterrupt:
        for i in range(S):
            if live[i]:
                state[i], error[i] = "interrupted", "stopped by the user (Ctrl-C); run the same command to resume"
        raise
    except Exception as e:
        traceback.print_exc(file=sys.stderr)
        for i in range(S):
            if live[i]:
                state[i], error[i] = "failed", f"{type(e).__name__}: {e}"
    finally:
        progress.close()
        for hook in hooks:
            if hook is not None:
                hook.flush()
        wall = time.perf_counter() - t0
        for i in range(S):
            run.write_status(folders[i], state=state[i], error=error[i], finished=time.time(), wall_s=wall,
                         final_loss=last_loss[i], final_val_loss=val[i], steps=total,
                         tokens=total * tokens_per_step, n_params=derived["n_params"], flops=derived["flops"],
                         stacked_with=S, probe_s=hooks[i].seconds if hooks[i] is not None else 0.0)
            if trackers[i] is not None:
                trackers[i].finish(state[i])
    for i, c in enumerate(fresh):
        summaries[c.seed] = {"run_id": rids[i], "run_dir": str(folders[i]), **derived, **read_status(folders[i]),
                             "skipped": False}
    return [summaries[int(s)] for s in seeds]
