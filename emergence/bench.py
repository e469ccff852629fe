"""`emergence bench`: how fast this machine trains and probes, measured against its own limit.

One process measures, and prints as a table and (with --out) writes as JSON:

- the dense matmul peak (GFLOP/s): the fastest large square fp32 products, n in 512..2048 (bf16 too on CUDA).
  Every MFU figure is divided by this measured peak, not by a datasheet number, so the figures say how close the
  training step comes to what this machine can do;
- for each size of the CPU ladder (`sweeps/model/l*.yaml`, composed with the real config so the shapes, sequence
  length, batch size and task vocabulary are those a sweep trains), the training throughput (tokens/s) and MFU of
  our trainer's step (`GPT` + `make_optimizer` + gradient clipping, the loop of `train()`), and the same for a plain
  reference GPT written below in the most direct PyTorch style (nanoGPT's layout, same shapes, same AdamW settings).
  The two are timed in alternation, one step each in turn, on the same batches, so machine load hits both alike;
  a rate is that of the fastest step (the `timeit` convention: load only slows a step down), the median beside it;
- probe throughput (examples/s) and the share of a run's wall time spent probing;
- the time to analyse 1,000 curves, and the wall time of the `smoke` sweep (the whole loop, in a subprocess);
- the seeds of one size trained together as one stacked model (`emergence.stacked`) against the same seeds
  trained one after another.

MFU (model FLOPs utilisation, Chowdhery et al. 2022, appendix B) = tokens/s x FLOPs per token / peak FLOP/s, with
FLOPs per token from `emergence.model.flops_per_token` (6 N + 12 L d T), the one formula the project uses.

`--gpu` measures the Pythia 70M and 160M shapes on one CUDA device with bf16 autocast, fused AdamW, `torch.compile`
and SDPA (flash) attention, against the measured bf16 matmul peak and the H100/H200 dense bf16 datasheet peak.

Figures vary with machine load: the JSON records the load average before and after, and the thread count
(`--threads N` pins it; a sweep's parallel launcher gives each job cores // jobs threads).
A measurement that could not be taken is `null` in the JSON with a `*_status` string that says why, never 0.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from emergence.model import GPT, GPTConfig, flops_per_token, n_params

# H100/H200 SXM dense bf16 tensor-core peak, FLOP/s (NVIDIA H100 datasheet, "BF16 Tensor Core" 1,979 TFLOPS is
# with 2:4 sparsity; dense is half of it). The H200 uses the same GH100 compute die, so the same peak.
H100_BF16_DENSE_PEAK = 989e12


# ---------------------------------------------------------------------------------------------------------------------
# The machine's limit.

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                sizes: tuple[int, ...] = (512, 1024, 1536, 2048), min_seconds: float = 0.3,
                min_repeats: int = 3) -> dict:
    """Dense matmul rate, GFLOP/s: n x n @ n x n products (2 n^3 FLOPs each) timed one by one for about
    `min_seconds` per n (at least `min_repeats` times); each n's rate is that of its fastest product (other processes
    only slow a product down) and the peak is the best over n. On a GPU, products are timed in groups of 20 between
    synchronisations, so the launch latency is not timed. Returns {"gflops", "by_n", "dtype", "device"}."""
    device = torch.device(device)
    group = 20 if device.type == "cuda" else 1
    by_n = {}
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        c = torch.empty(n, n, device=device, dtype=dtype)
        torch.mm(a, b, out=c)  # warm-up: first-call allocation and kernel selection
        _sync(device)
        fastest, count, t_end = float("inf"), 0, time.perf_counter() + min_seconds
        while count < min_repeats or time.perf_counter() < t_end:
            t0 = time.perf_counter()
            for _ in range(group):
                torch.mm(a, b, out=c)
            _sync(device)
            fastest = min(fastest, (time.perf_counter() - t0) / group)
            count += 1
        by_n[n] = 2 * n**3 / fastest / 1e9
    return {"gflops": max(by_n.values()), "by_n": by_n, "dtype": str(dtype).replace("torch.", ""),
            "device": device.type}


# ---------------------------------------------------------------------------------------------------------------------
# A plain reference GPT, written the most direct way (nanoGPT's layout): the yardstick for our model and trainer.

class RefAttention(nn.Module):
    def __init__(self, d_model: int, n_head: int, bias: bool):
        super().__init__()
        self.c_attn = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.c_proj = nn.Linear(d_model, d_model, bias=bias)
        self.n_head = n_head

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class RefMLP(nn.Module):
    def __init__(self, d_model: int, d_mlp: int, bias: bool):
        super().__init__()
        self.c_fc = nn.Linear(d_model, d_mlp, bias=bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(d_mlp, d_model, bias=bias)

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class RefBlock(nn.Module):
    def __init__(self, c: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(c.d_model, bias=c.bias)
        self.attn = RefAttention(c.d_model, c.n_head, c.bias)
        self.ln_2 = nn.LayerNorm(c.d_model, bias=c.bias)
        self.mlp = RefMLP(c.d_model, c.d_mlp, c.bias)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class RefGPT(nn.Module):
    """Learned positions only (the CPU ladder's choice); same parameter count as `GPT` for such a config."""

    def __init__(self, c: GPTConfig):
        super().__init__()
        if c.pos != "learned":
            raise ValueError(f"the reference GPT has learned positions only, not pos={c.pos!r}")
        self.config = c
        self.wte = nn.Embedding(c.vocab_size, c.d_model)
        self.wpe = nn.Embedding(c.block_size, c.d_model)
        self.h = nn.ModuleList([RefBlock(c) for _ in range(c.n_layer)])
        self.ln_f = nn.LayerNorm(c.d_model, bias=c.bias)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        if c.tie_embeddings:
            self.wte.weight = self.lm_head.weight
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, idx, targets=None):
        B, T = idx.size()
        pos = torch.arange(0, T, dtype=torch.long, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-100)
        return logits, loss


class RefOptimizer:
    """AdamW as nanoGPT configures and steps it: decay on matrices, none on vectors; fused on CUDA, torch's default
    elsewhere; `clip_grad_norm_` over the parameters, gradients set to None after the step. (The methods are those of
    our `FlatAdamW`, so one step function times both.)"""

    def __init__(self, model: nn.Module, lr: float, weight_decay: float, betas, device_type: str):
        self.params = [p for p in model.parameters() if p.requires_grad]
        groups = [{"params": [p for p in self.params if p.dim() >= 2], "weight_decay": weight_decay},
                  {"params": [p for p in self.params if p.dim() < 2], "weight_decay": 0.0}]
        extra = {"fused": True} if device_type == "cuda" else {}
        self.opt = torch.optim.AdamW(groups, lr=lr, betas=betas, **extra)

    def set_lr(self, lr: float) -> None:
        for group in self.opt.param_groups:
            group["lr"] = lr

    def clip(self, max_norm: float) -> torch.Tensor:
        return torch.nn.utils.clip_grad_norm_(self.params, max_norm)

    def step(self) -> None:
        self.opt.step()

    def zero_grad(self) -> None:
        self.opt.zero_grad(set_to_none=True)


# ---------------------------------------------------------------------------------------------------------------------
# Shapes: what is measured.

@dataclass
class Shape:
    """One measured configuration; the JSON lists these fields so another tool can repeat the measurement."""
    name: str
    n_layer: int
    d_model: int
    n_head: int
    seq_len: int
    batch_size: int
    vocab_size: int
    d_mlp: int = 0
    pos: str = "learned"
    tie_embeddings: bool = True
    lr: float = 3e-3
    weight_decay: float = 0.1
    betas: tuple = (0.9, 0.98)
    grad_clip: float = 1.0
    grad_accum: int = 1
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    task_weights: dict = field(default_factory=dict)

    def gpt_config(self) -> GPTConfig:
        return GPTConfig(n_layer=self.n_layer, d_model=self.d_model, n_head=self.n_head, d_mlp=self.d_mlp,
                         vocab_size=self.vocab_size, block_size=self.seq_len, pos=self.pos,
                         tie_embeddings=self.tie_embeddings)

    def describe(self) -> dict:
        c = self.gpt_config()
        return {"name": self.name, "n_layer": self.n_layer, "d_model": self.d_model, "n_head": self.n_head,
                "seq_len": self.seq_len, "batch_size": self.batch_size, "vocab_size": self.vocab_size,
                "n_params": n_params(c), "flops_per_token": flops_per_token(c, self.seq_len)}


def shape_from_config(cfg) -> Shape:
    """The shape and training settings a composed run config trains with."""
    from emergence.config import gpt_config, peak_lr

    gc = gpt_config(cfg)
    t = cfg.train
    return Shape(name=str(cfg.model.name), n_layer=gc.n_layer, d_model=gc.d_model, n_head=gc.n_head,
                 seq_len=cfg.data.seq_len, batch_size=t.batch_size, vocab_size=gc.vocab_size, d_mlp=gc.d_mlp,
                 pos=gc.pos, tie_embeddings=gc.tie_embeddings, lr=peak_lr(cfg), weight_decay=t.weight_decay,
                 betas=(t.beta1, t.beta2), grad_clip=t.grad_clip, grad_accum=t.grad_accum,
                 warmup_steps=t.warmup_steps, min_lr_ratio=t.min_lr_ratio,
                 task_weights=dict(cfg.task.train) if cfg.data.source == "tasks" else {})


def ladder_names() -> list[str]:
    """The CPU ladder: every `sweeps/model/l*.yaml`, smallest first (by parameter count at the default config)."""
    import sweeps

    folder = Path(sweeps.__file__).parent / "model"
    return sorted(p.stem for p in folder.glob("l*.yaml"))


def ladder(names: list[str] | None = None, base: list[str] | None = None) -> list[Shape]:
    """Compose the real config for each ladder size (`base` overrides first) and return the shapes, smallest first."""
    from emergence.config import compose

    shapes = [shape_from_config(compose([*(base or []), f"model={n}"])) for n in (names or ladder_names())]
    return sorted(shapes, key=lambda s: n_params(s.gpt_config()))


def quick_pick(shapes: list[Shape]) -> list[Shape]:
    """`--quick`: the smallest size, the third smallest (overhead-bound) and the smallest with d_model >= 256 (the
    MFU target's regime); fewer if the ladder is short."""
    picks = [shapes[0]] + shapes[2:3]
    wide = [s for s in shapes if s.d_model >= 256]
    if wide:
        picks.append(wide[0])
    out = []
    for s in picks:
        if s not in out:
            out.append(s)
    return out


def default_base() -> list[str]:
    """Overrides the ladder is measured under: the CPU demo experiment's when it exists (its sequence length and batch
    size are what a sweep trains), else the defaults of `sweeps/config.yaml`."""
    import sweeps

    return ["experiment=cpu_demo"] if (Path(sweeps.__file__).parent / "experiment" / "cpu_demo.yaml").exists() else []


# ---------------------------------------------------------------------------------------------------------------------
# Training steps, ours and the reference's, with the loop shape of `train()`.

def make_batches(shape: Shape, count: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`count` training batches of the shape's task mixture (random tokens when the shape has no task mixture)."""
    if shape.task_weights:
        from emergence.tasks import TaskMixture

        source = TaskMixture(shape.task_weights, shape.seq_len)
        return [source.batch(seed, i, shape.batch_size) for i in range(count)]
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        x = torch.randint(0, shape.vocab_size, (shape.batch_size, shape.seq_len + 1), generator=g)
        out.append((x[:, :-1].contiguous(), x[:, 1:].contiguous()))
    return out


class Trainer:
    """One model + optimizer and the body of `train()`'s loop: set the scheduled lr, forward, backward (with
    gradient accumulation), clip, step, zero. No host sync inside a step (train() syncs only at log points)."""

    def __init__(self, model: nn.Module, opt, shape: Shape, total_steps: int, amp=None, compiled=None):
        from emergence.train import lr_at

        self.model, self.opt, self.shape, self.total = model, opt, shape, total_steps
        self.forward = compiled if compiled is not None else model
        self.amp = amp or contextlib.nullcontext()
        self.lr_at = lr_at
        self.step_count = 0
        self.loss_sum = None

    def step(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        s = self.shape
        self.opt.set_lr(self.lr_at(self.step_count, self.total, s.lr, s.warmup_steps, s.min_lr_ratio))
        loss_sum = None
        for x, y in batches:
            with self.amp:
                _, loss = self.forward(x, y)
            (loss / len(batches)).backward()
            loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
        self.opt.clip(s.grad_clip if s.grad_clip > 0 else float("inf"))
        self.opt.step()
        self.opt.zero_grad()
        self.step_count += 1
        self.loss_sum = loss_sum
        return loss_sum


def our_trainer(shape: Shape, device="cpu", amp=None, compile: bool = False, seed: int = 0) -> Trainer:
    """Our model and optimizer, built as `train()` builds them."""
    from emergence.train import make_optimizer

    device = torch.device(device)
    torch.manual_seed(seed)
    model = GPT(shape.gpt_config()).to(device)
    opt = make_optimizer(model, shape.lr, shape.weight_decay, shape.betas, device.type)
    return Trainer(model, opt, shape, 10**6, amp, torch.compile(model) if compile else None)


def ref_trainer(shape: Shape, device="cpu", amp=None, compile: bool = False, seed: int = 0) -> Trainer:
    device = torch.device(device)
    torch.manual_seed(seed)
    model = RefGPT(shape.gpt_config()).to(device)
    opt = RefOptimizer(model, shape.lr, shape.weight_decay, shape.betas, device.type)
    return Trainer(model, opt, shape, 10**6, amp, torch.compile(model) if compile else None)


def time_interleaved(runners: dict, seconds: float, warmup: int = 2, min_samples: int = 3,
                     device: torch.device | str = "cpu") -> dict[str, dict]:
    """Time several step functions one step each in turn (A B A B ...) for about `seconds` in all, so that machine
    load falls on all of them alike. `runners` maps a name to a function doing one step and returning the tokens it
    trained. Returns per name: `rate`, the tokens/s of the fastest step (the `timeit` convention: other processes
    only ever slow a step down, so the fastest one measures this code; on an idle machine steps differ by a few
    percent), `median` (the median step's rate), `per_cpu_s` (tokens per second of this process's CPU time over all
    timed steps: with one thread, the rate with the time other processes held the core taken out) and `steps`."""
    device = torch.device(device)
    for fn in runners.values():
        for _ in range(warmup):
            fn()
    _sync(device)
    times = {name: [] for name in runners}
    tokens = {name: 0 for name in runners}
    cpu = {name: 0.0 for name in runners}
    t_end = time.perf_counter() + seconds
    while True:
        for name, fn in runners.items():
            t0, c0 = time.perf_counter(), time.process_time()
            n = fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
            cpu[name] += time.process_time() - c0
            tokens[name] = n
        if time.perf_counter() >= t_end and all(len(t) >= min_samples for t in times.values()):
            break
    return {name: {"rate": tokens[name] / min(ts), "median": tokens[name] / statistics.median(ts),
                   "per_cpu_s": tokens[name] * len(ts) / max(cpu[name], 1e-9), "steps": len(ts)}
            for name, ts in times.items()}


def measure_training(shape: Shape, peak_gflops: float, seconds: float = 6.0, reference: bool = True, device="cpu",
                     amp=None, compile: bool = False) -> dict:
    """Tokens/s and MFU of our trainer's step (and the reference's, alternating), on the same pre-made batches."""
    device = torch.device(device)
    row = shape.describe()
    # on a GPU, batches wait in pinned host memory and are copied without blocking each step, as the trainer does
    on_host = device.type == "cuda"
    batches = [(x.pin_memory(), y.pin_memory()) if on_host else (x.to(device), y.to(device))
               for x, y in make_batches(shape, 4 * shape.grad_accum)]
    tokens_per_step = shape.batch_size * shape.seq_len * shape.grad_accum
    trainers = {"ours": our_trainer(shape, device, amp, compile)}
    ref_status = "ok"
    if reference:
        try:
            trainers["ref"] = ref_trainer(shape, device, amp, compile)
        except ValueError as e:
            ref_status = f"not measured: {e}"
    else:
        ref_status = "not measured: reference not requested"

    def runner(tr: Trainer):
        k = shape.grad_accum
        state = {"i": 0}

        def fn():
            i = state["i"]
            state["i"] = (i + 1) % (len(batches) // k)
            micro = batches[i * k:(i + 1) * k]
            if on_host:
                micro = [(x.to(device, non_blocking=True), y.to(device, non_blocking=True)) for x, y in micro]
            tr.step(micro)
            return tokens_per_step
        return fn

    t0 = time.perf_counter()
    timed = time_interleaved({k: runner(v) for k, v in trainers.items()}, seconds, device=device)
    for tr in trainers.values():  # a finite loss: the steps timed were real training steps
        if not math.isfinite(float(tr.loss_sum)):
            raise RuntimeError(f"{shape.name}: the loss became {float(tr.loss_sum)} while benchmarking")
    peak = peak_gflops * 1e9
    ours = timed["ours"]["rate"]
    row.update({"tokens_per_s": ours, "tokens_per_s_median": timed["ours"]["median"],
                "tokens_per_cpu_s": timed["ours"]["per_cpu_s"],
                "mfu": ours * row["flops_per_token"] / peak, "steps_timed": timed["ours"]["steps"]})
    if "ref" in timed:
        ref = timed["ref"]["rate"]
        row.update({"ref_tokens_per_s": ref, "ref_tokens_per_s_median": timed["ref"]["median"],
                    "ref_mfu": ref * row["flops_per_token"] / peak, "ratio": ours / ref,
                    "ratio_median": timed["ours"]["median"] / timed["ref"]["median"],
                    "ref_tokens_per_cpu_s": timed["ref"]["per_cpu_s"],
                    "ratio_cpu": timed["ours"]["per_cpu_s"] / timed["ref"]["per_cpu_s"], "ref_status": "ok"})
    else:
        row.update({"ref_tokens_per_s": None, "ref_mfu": None, "ratio": None, "ref_status": ref_status})
    row["wall_s"] = time.perf_counter() - t0
    return row


# ---------------------------------------------------------------------------------------------------------------------
# Seeds stacked into one model against the same seeds trained one after another.

def stacked_trainer(shape: Shape, seeds: int, device="cpu"):
    """A `StackedTrainer` of seeds 0..seeds-1 at the shape's settings."""
    from emergence.stacked import StackedTrainer

    return StackedTrainer(shape.gpt_config(), list(range(seeds)), lr=shape.lr, weight_decay=shape.weight_decay,
                          betas=shape.betas, grad_clip=shape.grad_clip, total_steps=10**6,
                          warmup_steps=shape.warmup_steps, min_lr_ratio=shape.min_lr_ratio, device=device)


def stacked_batches(shape: Shape, seeds: int, count: int, device="cpu"):
    """Each seed's own `count` batches, and the same batches stacked on a leading seed axis."""
    per_seed = [[(x.to(device), y.to(device)) for x, y in make_batches(shape, count, seed=s)] for s in range(seeds)]
    stacked = [(torch.stack([b[i][0] for b in per_seed]), torch.stack([b[i][1] for b in per_seed]))
               for i in range(count)]
    return per_seed, stacked


def measure_stacked(shape: Shape, seeds: int = 4, seconds: float = 6.0, device="cpu") -> dict:
    """Sweep throughput (tokens trained per second across all seeds) of `seeds` seeds of one size: separate trainers
    stepping in turn (what a sequential sweep does) against one `StackedTrainer`, timed in alternation on each
    seed's own batches."""
    device = torch.device(device)
    gc = shape.gpt_config()
    k = shape.grad_accum
    per_seed, stacked = stacked_batches(shape, seeds, 2 * k, device)
    separate = [our_trainer(shape, device, seed=s) for s in range(seeds)]
    stack = stacked_trainer(shape, seeds, device)
    tokens_per_step = shape.batch_size * shape.seq_len * k
    state = {"a": 0, "b": 0}

    def run_separate():
        i = state["a"] = (state["a"] + 1) % 2
        for s, tr in enumerate(separate):
            tr.step(per_seed[s][i * k:(i + 1) * k])
        return tokens_per_step * seeds

    def run_stacked():
        i = state["b"] = (state["b"] + 1) % 2
        stack.step(stacked[i * k:(i + 1) * k])
        return tokens_per_step * seeds

    t0 = time.perf_counter()
    timed = time_interleaved({"separate": run_separate, "stacked": run_stacked}, seconds, device=device)
    return {"name": shape.name, "n_params": n_params(gc), "seeds": seeds,
            "separate_tokens_per_s": timed["separate"]["rate"], "stacked_tokens_per_s": timed["stacked"]["rate"],
            "ratio": timed["stacked"]["rate"] / timed["separate"]["rate"],
            "ratio_median": timed["stacked"]["median"] / timed["separate"]["median"],
            "ratio_cpu": timed["stacked"]["per_cpu_s"] / timed["separate"]["per_cpu_s"],
            "wall_s": time.perf_counter() - t0}


# ---------------------------------------------------------------------------------------------------------------------
# Probing.

def probe_tasks(cfg) -> list[str]:
    """The tasks a run of `cfg` is probed on (the probe engine's rule: probe.tasks, else the suite's probe list, else
    its training tasks)."""
    from emergence.probe import probe_tasks_for
    from omegaconf import OmegaConf

    return probe_tasks_for(OmegaConf.to_container(cfg, resolve=True), cfg.probe)


def measure_probe(cfg, device="cpu") -> dict:
    """Probe throughput of the model `cfg` describes (untrained weights: greedy generation then runs to the full
    answer length, the slowest case) on the run's probe tasks and settings: teacher-forced examples/s
    (`per_example_scores`), all-metrics examples/s (`score_task`, which adds greedy decoding of `probe.generate_n`
    examples), and the seconds one checkpoint's probe takes (every task plus the mechanistic probe)."""
    import numpy as np

    from emergence.config import gpt_config
    from emergence.probe import mechanistic_scores, per_example_scores, score_task
    from emergence.tasks import VOCAB, get_task
    from emergence.tasks.base import join_examples

    device = torch.device(device)
    torch.manual_seed(0)
    model = GPT(gpt_config(cfg)).to(device).eval()
    names = probe_tasks(cfg)
    n_examples, t_forced, t_full = 0, 0.0, 0.0
    for name in names:
        prompts, answers, ids = get_task(name).heldout_set(cfg.probe.n, cfg.probe.seed)
        tokens, is_answer, _ = join_examples(prompts, answers)
        t0 = time.perf_counter()
        per_example_scores(model, tokens, is_answer, device, cfg.probe.batch_size)
        t1 = time.perf_counter()
        score_task(model, name, prompts, answers, ids, cfg.probe, VOCAB, device)
        t2 = time.perf_counter()
        n_examples += len(prompts)
        t_forced += t1 - t0
        t_full += t2 - t1
    t_mech = 0.0
    if cfg.probe.mechanistic:
        vocab_ids = np.array([VOCAB.encode(c)[0] for c in VOCAB.chars], dtype=np.int64)
        t0 = time.perf_counter()
        mechanistic_scores(model, vocab_ids, device, seed=cfg.probe.seed)
        t_mech = time.perf_counter() - t0
    return {"name": str(cfg.model.name), "tasks": names, "examples": n_examples,
            "forced_examples_per_s": n_examples / max(t_forced, 1e-9),
            "examples_per_s": n_examples / max(t_full, 1e-9),
            "seconds_per_checkpoint": t_full + t_mech}


def measure_probe_share(cfg, folder: Path) -> dict:
    """Share of a real run's wall time spent probing: train the run `cfg` describes with inline probing, as a sweep
    does, and read the time its probe hook took (`probe_s` in the run's status.json, scoring and writing included)
    against the run's wall time."""
    from omegaconf import OmegaConf

    from emergence import checkpoint as ckpt
    from emergence.config import run_dir
    from emergence.train import train

    cfg = OmegaConf.merge(cfg, {"paths": {"results": str(folder)}, "probe": {"inline": True},
                                "train": {"progress": False}, "tracker": {"kind": "none"}})
    summary = train(cfg)
    if summary.get("state") != "done":
        raise RuntimeError(f"the run for the probe-share measurement ended {summary.get('state')}: "
                           f"{summary.get('error')}")
    n_ckpt = len(ckpt.list_checkpoints(run_dir(cfg) / "checkpoints"))
    wall, probe = float(summary["wall_s"]), float(summary["probe_s"])
    return {"name": str(cfg.model.name), "experiment": str(cfg.experiment), "steps": int(summary.get("steps", 0)),
            "checkpoints": n_ckpt, "train_s": wall - probe, "probe_s": probe, "share": probe / wall}


# ---------------------------------------------------------------------------------------------------------------------
# Analysis and the smoke sweep.

def measure_analysis(n_curves: int = 1000, n_boot: int = 500) -> dict:
    """Time to judge `n_curves` synthetic curves with the jump test, and its rates (`analysis.bench_analysis`)."""
    try:
        from analysis.bench_analysis import bench_analysis
    except ImportError as e:
        return {"wall_s": None, "status": f"not measured: analysis.bench_analysis is not available ({e})"}
    r = bench_analysis(n_curves, n_boot=n_boot)
    return {**r, "status": "ok"}


def measure_smoke_sweep(folder: Path, timeout_s: float = 600) -> dict:
    """Wall time of `emergence sweep experiment=smoke` (train, probe, aggregate, analyse, report) in a subprocess."""
    cmd = [sys.executable, "-m", "emergence", "sweep", "experiment=smoke", f"paths.results={folder}"]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                           cwd=str(Path(__file__).resolve().parents[1]))
    except subprocess.TimeoutExpired:
        return {"wall_s": None, "status": f"not measured: the smoke sweep did not finish in {timeout_s:.0f} s"}
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or ["(no message)"])[-1]
        return {"wall_s": None, "status": f"not measured: the smoke sweep failed (exit {p.returncode}): {last}"}
    return {"wall_s": wall, "status": "ok", "command": " ".join(cmd[1:])}


# ---------------------------------------------------------------------------------------------------------------------
# The GPU path.

PYTHIA_VOCAB = 50304  # Pythia's embedding rows (its 50,277-token BPE padded to a multiple of 128; model cards)
GPU_SEQ_LEN = 2048  # Pythia's context (Biderman et al. 2023)
GPU_BATCH = 16  # sequences per step on one GPU: 32k tokens


def gpu_shapes(names=("pythia-70m", "pythia-160m")) -> list[Shape]:
    """The Pythia shapes from `sweeps/model/` with Pythia's own vocabulary and context (so MFU is comparable with
    published figures), random tokens, `GPU_BATCH` sequences per step."""
    from emergence.config import compose

    out = []
    for n in names:
        m = compose([f"model={n}"]).model
        out.append(Shape(name=n, n_layer=m.n_layer, d_model=m.d_model, n_head=m.n_head, seq_len=GPU_SEQ_LEN,
                         batch_size=GPU_BATCH, vocab_size=PYTHIA_VOCAB, d_mlp=m.d_mlp, pos=m.pos,
                         tie_embeddings=m.tie_embeddings, lr=6e-4, warmup_steps=10))
    return out


def gpu_settings(device: torch.device) -> dict:
    """What the GPU path turns on: bf16 autocast, TF32 for the fp32 remainder, fused AdamW (make_optimizer does it on
    CUDA), torch.compile, and SDPA's flash kernel (the model calls SDPA with is_causal=True)."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    return {"amp": torch.autocast(device_type=device.type, dtype=torch.bfloat16), "compile": True}


def run_gpu(seconds: float = 20.0, shapes: list[Shape] | None = None, device="cuda", compile: bool = True,
            stacked_shape: Shape | None = None) -> dict:
    """MFU of the Pythia 70M and 160M shapes on one GPU (bf16, fused AdamW, torch.compile, flash attention), against
    the measured bf16 matmul peak and the H100/H200 datasheet's dense bf16 peak; plus several small runs packed on
    the GPU as one stacked model. `device` and `compile` exist so the logic can be exercised on a CPU in tests."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("emergence bench --gpu needs a CUDA GPU, and torch sees none (torch.cuda.is_available() is "
                         "False); run it on a GPU machine, or drop --gpu")
    settings = gpu_settings(device)
    amp = settings["amp"] if device.type == "cuda" else None
    sizes = (4096, 8192) if device.type == "cuda" else (256,)
    peak = matmul_peak(device, torch.bfloat16 if device.type == "cuda" else torch.float32, sizes=sizes)
    out = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "matmul_peak_bf16_gflops": peak["gflops"] if device.type == "cuda" else None,
           "matmul_peak": peak, "datasheet_peak_gflops": H100_BF16_DENSE_PEAK / 1e9, "sizes": []}
    for shape in shapes or gpu_shapes():
        t0 = time.perf_counter()
        row = measure_training(shape, peak["gflops"], seconds, reference=False, device=device, amp=amp,
                               compile=compile)
        row["mfu_datasheet"] = row["tokens_per_s"] * row["flops_per_token"] / H100_BF16_DENSE_PEAK
        row["wall_s"] = time.perf_counter() - t0
        out["sizes"].append(row)
    if stacked_shape is not None:
        out["stacked"] = measure_stacked(stacked_shape, seeds=8, seconds=seconds / 2, device=device)
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Targets, the table and the command.

STACK_UNDER = 100_000  # stacked seeds are meant for sizes under this many parameters


def targets(result: dict) -> list[dict]:
    """Each performance target with the measured figure and whether it is met (None: not measured)."""
    sizes = result.get("sizes", [])
    out = []
    wide = [r for r in sizes if r["d_model"] >= 256]
    if wide:
        worst = min(r["mfu"] for r in wide)
        out.append({"target": "MFU >= 0.75 x measured peak, d_model >= 256", "value": worst, "met": worst >= 0.75})
    with_ref = [r for r in sizes if r.get("ratio") is not None]
    if with_ref:
        worst = min(r["ratio"] for r in with_ref)
        out.append({"target": "tokens/s >= 1.0 x reference, every size", "value": worst, "met": worst >= 1.0})
        smallest = result.get("ladder") or [r["name"] for r in sorted(with_ref, key=lambda r: r["n_params"])]
        small = [r for r in with_ref if r["name"] in smallest[:3]]
        if small:
            worst = min(r["ratio"] for r in small)
            out.append({"target": "tokens/s >= 1.2 x reference, the three smallest sizes (measured: " +
                        ", ".join(r["name"] for r in small) + ")", "value": worst, "met": worst >= 1.2})
    stacked = [r for r in result.get("stacked", []) if r["n_params"] < STACK_UNDER]
    if stacked:
        worst = min(r["ratio"] for r in stacked)
        out.append({"target": f"stacked seeds >= 1.5 x separate runs, sizes < {STACK_UNDER:,} parameters",
                    "value": worst, "met": worst >= 1.5})
    share = result.get("probe_share") or []
    if share:
        worst = max(r["share"] for r in share)
        out.append({"target": "probing <= 10% of a run's wall time", "value": worst, "met": worst <= 0.10})
    return out


def _fmt(v, spec: str = ",.0f", none: str = "-") -> str:
    return none if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def print_report(result: dict, file=None) -> None:
    """The measurements as readable tables."""
    file = file or sys.stdout
    p = print
    m = result["machine"]
    p(f"emergence bench: {m['cpu']}, {m['threads']} torch threads, torch {m['torch']}, "
      f"load average {m['load_before'][0]:.1f} before / {m['load_after'][0]:.1f} after", file=file)
    by_n = ", ".join(f"n={n}: {g:.0f}" for n, g in result["matmul_peak"]["by_n"].items())
    runs = result.get("matmul_peak_runs") or []
    both = " and ".join(format(r["gflops"], ".0f") for r in runs)
    note = f"; {both} before and after the sizes" if len(runs) > 1 else ""
    p(f"matmul peak ({result['matmul_peak'].get('dtype', 'float32')}): {result['matmul_peak_gflops']:.1f} GFLOP/s "
      f"({by_n}{note})", file=file)
    if result.get("sizes"):
        p("\ntraining (ours = GPT + make_optimizer + clipping; ref = plain nanoGPT-style GPT, same shapes/AdamW)",
          file=file)
        p(f"{'size':<8} {'params':>10} {'L':>2} {'d':>4} {'T':>4} {'B':>4} {'ours tok/s':>11} {'MFU':>6} "
          f"{'ref tok/s':>11} {'ref MFU':>7} {'ours/ref':>8} {'median':>7}", file=file)
        for r in result["sizes"]:
            p(f"{r['name']:<8} {r['n_params']:>10,} {r['n_layer']:>2} {r['d_model']:>4} {r['seq_len']:>4} "
              f"{r['batch_size']:>4} {_fmt(r['tokens_per_s']):>11} {_fmt(r['mfu'], '.3f'):>6} "
              f"{_fmt(r.get('ref_tokens_per_s')):>11} {_fmt(r.get('ref_mfu'), '.3f'):>7} "
              f"{_fmt(r.get('ratio'), '.2f'):>8} {_fmt(r.get('ratio_median'), '.2f'):>7}", file=file)
    if result.get("stacked"):
        p("\nseeds stacked in one model vs the same seeds as separate runs (tokens/s across all seeds)", file=file)
        p(f"{'size':<8} {'params':>10} {'seeds':>5} {'separate':>11} {'stacked':>11} {'ratio':>6} {'median':>7}",
          file=file)
        for r in result["stacked"]:
            p(f"{r['name']:<8} {r['n_params']:>10,} {r['seeds']:>5} {_fmt(r['separate_tokens_per_s']):>11} "
              f"{_fmt(r['stacked_tokens_per_s']):>11} {r['ratio']:>6.2f} {r['ratio_median']:>7.2f}", file=file)
    if result.get("stacked_runs"):
        r = result["stacked_runs"]
        p(f"\nwhole runs ({r['experiment']}, {r['name']}, seeds {r['seeds']}): separate {r['separate_s']:.1f} s, "
          f"stacked {r['stacked_s']:.1f} s, ratio {r['ratio']:.2f}", file=file)
    if result.get("probe"):
        p("\nprobing (untrained weights; all-metrics rate includes greedy decoding)", file=file)
        p(f"{'size':<8} {'forced ex/s':>12} {'all ex/s':>10} {'s/checkpoint':>13}", file=file)
        for r in result["probe"]:
            p(f"{r['name']:<8} {r['forced_examples_per_s']:>12,.0f} {r['examples_per_s']:>10,.0f} "
              f"{r['seconds_per_checkpoint']:>13.2f}", file=file)
    for r in result.get("probe_share") or []:
        p(f"probe share of a run ({r['experiment']}, {r['name']}, {r['steps']} steps, {r['checkpoints']} checkpoints): "
          f"train {r['train_s']:.1f} s, probe {r['probe_s']:.1f} s = {100 * r['share']:.1f}%", file=file)
    for key, label in (("probe_share_status", "probe share"), ("stacked_runs_status", "stacked whole runs")):
        if result.get(key):
            p(f"{label}: {result[key]}", file=file)
    a = result.get("analysis")
    if a:
        p(f"\nanalysis of {a.get('n_curves', 1000)} curves: " +
          (f"{a['wall_s']:.1f} s (up to {a.get('n_boot')} bootstrap draws, {a.get('workers')} workers)"
           if a.get("wall_s") is not None else a["status"]), file=file)
    s = result.get("smoke_sweep")
    if s:
        p("smoke sweep: " + (f"{s['wall_s']:.1f} s wall" if s.get("wall_s") is not None else s["status"]), file=file)
    g = result.get("gpu")
    if g:
        p(f"\nGPU {g['device']}: bf16 matmul peak {g['matmul_peak']['gflops'] / 1e3:.0f} TFLOP/s measured, "
          f"{g['datasheet_peak_gflops'] / 1e3:.0f} datasheet", file=file)
        for r in g["sizes"]:
            p(f"  {r['name']:<12} {r['n_params']:>12,} params  {r['tokens_per_s']:>12,.0f} tok/s  MFU "
              f"{r['mfu']:.3f} of measured, {r['mfu_datasheet']:.3f} of datasheet", file=file)
        if g.get("stacked"):
            r = g["stacked"]
            p(f"  {r['name']} x{r['seeds']} seeds stacked: {r['ratio']:.2f}x the separate runs' tokens/s", file=file)
    if result.get("targets"):
        p("\ntargets", file=file)
        for t in result["targets"]:
            verdict = "not measured" if t["met"] is None else ("met" if t["met"] else "NOT met")
            p(f"  {t['target']}: {t['value']:.2f} ({verdict})", file=file)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    return {"cpu": f"{cpu_name()}, {os.cpu_count()} cores",
            "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "load_before": list(os.getloadavg())}


def run(quick: bool = False, gpu: bool = False, seconds: float | None = None, base: list[str] | None = None,
        names: list[str] | None = None, log=print) -> dict:
    """Every measurement; returns the result dictionary that `main` prints and writes."""
    from emergence.config import compose

    t_start = time.perf_counter()
    base = default_base() if base is None else base
    result: dict = {"format": 1, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "quick": quick,
                    "machine": machine(), "config_overrides": base}
    if gpu:
        log("GPU: Pythia 70M and 160M shapes ...")
        small = ladder(names, base)[0]
        result["gpu"] = run_gpu(stacked_shape=small)
        result["matmul_peak"] = result["gpu"]["matmul_peak"]
        result["matmul_peak_gflops"] = result["gpu"]["matmul_peak"]["gflops"]
        result["machine"]["load_after"] = list(os.getloadavg())
        result["wall_s"] = time.perf_counter() - t_start
        return result
    log("matmul peak ...")
    peak = matmul_peak()
    result["matmul_peak"] = peak
    result["matmul_peak_gflops"] = peak["gflops"]
    shapes = ladder(names, base)
    result["ladder"] = [s.name for s in shapes]
    if quick:
        shapes = quick_pick(shapes)
    per_size = seconds if seconds is not None else (6.0 if quick else 5.0)
    result["sizes"] = []
    for s in shapes:
        log(f"training {s.name} ...")
        result["sizes"].append(measure_training(s, peak["gflops"], per_size))
    # the peak again after the sizes: on a shared machine the core's speed drifts with its neighbours' load, and the
    # higher of the two peaks gives the lower, safer MFU
    log("matmul peak, again ...")
    again = matmul_peak()
    result["matmul_peak_runs"] = [peak, again]
    if again["gflops"] > peak["gflops"]:
        result["matmul_peak"], result["matmul_peak_gflops"] = again, again["gflops"]
        for r in result["sizes"]:
            r["mfu"] = r["tokens_per_s"] * r["flops_per_token"] / (again["gflops"] * 1e9)
            if r.get("ref_tokens_per_s") is not None:
                r["ref_mfu"] = r["ref_tokens_per_s"] * r["flops_per_token"] / (again["gflops"] * 1e9)
    if not quick:
        result["stacked"] = []
        for s in shapes:
            if n_params(s.gpt_config()) >= STACK_UNDER:
                continue
            log(f"stacked seeds {s.name} ...")
            result["stacked"].append(measure_stacked(s, seeds=4, seconds=per_size))
        result["probe"] = []
        for s in (shapes[0], shapes[-1]):
            log(f"probing {s.name} ...")
            result["probe"].append(measure_probe(compose([*base, f"model={s.name}"])))
        with tempfile.TemporaryDirectory(prefix="emergence-bench-") as tmp:
            result["probe_share"] = []
            in_sweep = sweep_sizes(base, shapes)
            try:  # the sweep's smallest and largest size: one whole run each
                for name in dict.fromkeys([in_sweep[0], in_sweep[-1]]):
                    log(f"probe share: one {name} run, trained then probed ...")
                    result["probe_share"].append(
                        measure_probe_share(compose([*base, f"model={name}"]), Path(tmp) / "share"))
            except Exception as e:  # a failed run is reported, and the other measurements go on
                result["probe_share_status"] = f"not measured: {type(e).__name__}: {e}"
            log("stacked whole runs ...")
            try:
                result["stacked_runs"] = measure_stacked_runs(compose([*base, f"model={in_sweep[0]}"]),
                                                              Path(tmp) / "stacked")
            except Exception as e:
                result["stacked_runs_status"] = f"not measured: {type(e).__name__}: {e}"
            log("analysis of 1,000 curves ...")
            result["analysis"] = measure_analysis(1000, 500)
            log("smoke sweep ...")
            result["smoke_sweep"] = measure_smoke_sweep(Path(tmp) / "smoke")
    result["targets"] = targets(result)
    result["machine"]["load_after"] = list(os.getloadavg())
    result["wall_s"] = time.perf_counter() - t_start
    return result


def sweep_sizes(base: list[str], shapes: list[Shape]) -> list[str]:
    """The model sizes of the experiment in `base` (its grid's `model` axis), smallest first; the ladder's smallest
    and largest when the experiment has no model axis."""
    from emergence.sweep import expand_grid

    try:
        _, points = expand_grid(list(base))
        names = []
        for point in points:
            for o in point:
                if o.startswith("model=") and o[6:] not in names:
                    names.append(o[6:])
    except Exception:  # no experiment grid: fall back on the ladder
        names = []
    order = {s.name: n_params(s.gpt_config()) for s in shapes}
    names = [n for n in names if n in order] or [shapes[0].name, shapes[-1].name]
    return sorted(names, key=lambda n: order[n])


def measure_stacked_runs(cfg, folder: Path, seeds: tuple[int, ...] = (0, 1)) -> dict:
    """Whole runs, as a sweep does them: `train()` for each seed in turn against `train_seeds()` for all of them
    (checkpoints, logs and status files included; inline probing off so that training alone is compared)."""
    from omegaconf import OmegaConf

    from emergence.stacked import train_seeds
    from emergence.train import train

    over = {"probe": {"inline": False}, "train": {"progress": False}, "tracker": {"kind": "none"}}
    t0 = time.perf_counter()
    for s in seeds:
        c = OmegaConf.merge(cfg, over, {"seed": s, "paths": {"results": str(folder / "separate")}})
        if train(c).get("state") != "done":
            raise RuntimeError(f"seed {s} did not finish")
    t_sep = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = train_seeds(OmegaConf.merge(cfg, over, {"paths": {"results": str(folder / "stacked")}}), list(seeds))
    t_st = time.perf_counter() - t0
    if any(o.get("state") != "done" for o in out):
        raise RuntimeError("a stacked seed did not finish")
    return {"experiment": str(cfg.experiment), "name": str(cfg.model.name), "seeds": list(seeds),
            "separate_s": t_sep, "stacked_s": t_st, "ratio": t_sep / t_st}


def profile_step(name: str, base: list[str] | None = None, steps: int = 10, rows: int = 20,
                 seeds: int = 0) -> str:
    """`emergence bench --profile NAME`: where the time of our training step at size NAME goes (the ladder's shapes,
    `cpu_demo` settings), as torch.profiler's table of operators by self CPU time over `steps` steps. With `seeds`
    > 1, the step of that many seeds stacked (`emergence.stacked`)."""
    from torch.profiler import ProfilerActivity, profile

    shape = ladder([name], default_base() if base is None else base)[0]
    if seeds > 1:
        step, batches = stacked_trainer(shape, seeds).step, stacked_batches(shape, seeds, 2)[1]
    else:
        step, batches = our_trainer(shape).step, make_batches(shape, 2)
    for i in range(3):
        step([batches[i % 2]])
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(steps):
            step([batches[i % 2]])
    what = f"{seeds} seeds stacked" if seeds > 1 else "one run"
    head = (f"{shape.name} ({n_params(shape.gpt_config()):,} parameters, batch {shape.batch_size} x seq "
            f"{shape.seq_len}, {what}, {torch.get_num_threads()} threads): {steps} steps")
    return head + "\n" + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def _clean(obj):
    """JSON-safe: a float that is NaN or infinite becomes null (JSON has no NaN; a missing figure is never 0)."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def main(out: str | None = None, quick: bool = False, gpu: bool = False, threads: int | None = None,
         profile: str | None = None, seeds: int = 0) -> int:
    """`emergence bench [--out FILE.json] [--quick] [--gpu] [--threads N] [--profile SIZE [--seeds S]]`: measure,
    print the tables, write JSON; or, with --profile, print where one size's training step spends its time."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    if profile is not None:
        if profile not in ladder_names():
            raise ValueError(f"--profile {profile}: not a size of the CPU ladder; choose one of "
                             f"{', '.join(ladder_names())}")
        print(profile_step(profile, seeds=seeds))
        return 0
    if out is not None:
        out_path = Path(out)
        if out_path.suffix.lower() != ".json":
            raise ValueError(f"--out {out}: give a .json file name")
        if not out_path.parent.exists():
            raise ValueError(f"--out {out}: the folder {out_path.parent} does not exist")
    if gpu and not torch.cuda.is_available():
        raise ValueError("emergence bench --gpu needs a CUDA GPU, and torch sees none (torch.cuda.is_available() is "
                         "False); run it on a GPU machine, or drop --gpu")
    result = run(quick=quick, gpu=gpu, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    print_report(result)
    if out is not None:
        Path(out).write_text(json.dumps(_clean(result), indent=1, default=str, allow_nan=False) + "\n")
        print(f"wrote {out}")
    return 0
