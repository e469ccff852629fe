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
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F
from omegaconf import OmegaConf

from emergence import checkpoint as ckpt
from emergence import files, run
from emergence.config import gpt_config, run_dir, run_id, validate
from emergence.data import build_source
from emergence.device import distributed
from emergence.heldout import loss_estimate
from emergence.layout import read_status
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
    with files.run_locks([run_dir(c) for c in cfgs]):
        for c in cfgs:
            folder = run_dir(c)
            started = ckpt.list_checkpoints(folder / "checkpoints")
            if read_status(folder).get("state") in ("done", "diverged") or started:
                summaries[c.seed] = train(c)  # finished: recognised and skipped; started: resumed on its own
            else:
                fresh.append(c)
        if fresh:
            out = run.drive(SeedStack(cfg, validate(cfg), fresh), make_tracker=run.make_run_tracker)
            summaries.update((c.seed, summary) for c, summary in zip(fresh, out))
    return [summaries[int(s)] for s in seeds]


class SeedStack:
    """Fresh runs of one size, one per seed, for `run.drive`: a `StackedTrainer` over their seeds, all from step 0.
    A seed whose loss or gradient norm is not finite at a log point ends as diverged; the others train on."""

    is_main = True  # one process: stacking refuses torchrun (`stackable`)
    start_step, resumed, wall_before = 0, False, 0.0  # fresh runs only: a started run resumes with train()
    log_evaluations = False

    def __init__(self, cfg, derived: dict, fresh: list):
        self.cfg, self.derived = cfg, derived
        self.device, self.amp = run.open_device(cfg, copies=len(fresh))
        self.gc = gpt_config(cfg)
        self.lanes = []
        for c in fresh:
            self.lanes.append(run.Lane(c, run_id(c), run_dir(c), run.resolved_config(c)))
            run.prepare_folder(self.lanes[-1].folder, self.lanes[-1].resolved)
        S = len(fresh)
        self.label, self.status_extra = f"{cfg.model.name} x{S} seeds", {"stacked_with": S}
        t = run.train_settings(cfg)
        self.seeds, self.accum, self.batch_size = [c.seed for c in fresh], t["grad_accum"], t["batch_size"]
        self.eval_batches = t["eval_batches"]
        self.trainer = StackedTrainer(self.gc, self.seeds, lr=derived["lr"], weight_decay=t["weight_decay"],
                                      betas=(t["beta1"], t["beta2"]), grad_clip=t["grad_clip"],
                                      total_steps=derived["steps"], warmup_steps=t["warmup_steps"],
                                      min_lr_ratio=t["min_lr_ratio"], device=self.device, amp=self.amp,
                                      compile=t["compile"])
        self.source = build_source(cfg)

    def step(self, step: int, log_now: bool):
        micro = stack_batches(self.source, self.seeds, step, self.accum, self.batch_size, self.device)
        losses, norms, lr = self.trainer.step(micro)
        files.fault_point(f"step:{step + 1}")
        return lr, lambda: (losses.tolist(), norms.tolist())  # the host sync, at log points only

    def heldout(self) -> list[tuple[float, float, int]]:
        batches = [stack_batches(self.source, [s + 10_000 for s in self.seeds], i, 1, self.batch_size, self.device,
                                 "heldout")[0] for i in range(self.eval_batches)]
        self.trainer.stack.eval()
        out = self.trainer.losses(batches)
        self.trainer.stack.train()
        return out

    def model_state(self, i: int) -> dict:
        return self.trainer.model_state(i)

    def optimizer_state(self, i: int) -> dict:
        return self.trainer.optimizer_state(i)

    def rng(self, i: int) -> torch.Tensor:
        return self.trainer.rng_after_init[i]
