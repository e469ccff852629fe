"""`emergence bench`: how fast this machine trains and probes, measured against its own limit.

One process measures, and prints as a table and (with --out) writes as JSON:

- the dense matmul peak (GFLOP/s): the best rate of large square fp32 products, n in 512..2048 (bf16 too on CUDA).
  Every MFU figure is divided by this measured peak, not by a datasheet number, so the figures say how close the
  training step comes to what this machine can do;
- for each size of the CPU ladder (`sweeps/model/l*.yaml`, composed with the real config so the shapes, sequence
  length, batch size and task vocabulary are those a sweep trains), the training throughput (tokens/s) and MFU of
  our trainer's step (`GPT` + `make_optimizer` + gradient clipping, the loop of `train()`), and the same for a plain
  reference GPT written below in the most direct PyTorch style (nanoGPT's layout, same shapes, same AdamW settings).
  The two are timed in alternating rounds on the same batches, so machine load hits both alike;
- probe throughput (examples/s) and the share of a run's wall time spent probing;
- the time to analyse 1,000 curves, and the wall time of the `smoke` sweep (the whole loop, in a subprocess);
- the seeds of one size trained together as one stacked model (`emergence.stacked`) against the same seeds
  trained one after another.

MFU (model FLOPs utilisation, Chowdhery et al. 2022, appendix B) = tokens/s x FLOPs per token / peak FLOP/s, with
FLOPs per token from `emergence.model.flops_per_token` (6 N + 12 L d T), the one formula the project uses.

`--gpu` measures the Pythia 70M and 160M shapes on one CUDA device with bf16 autocast, fused AdamW, `torch.compile`
and SDPA (flash) attention, against the measured bf16 matmul peak and the H100/H200 dense bf16 datasheet peak.

Figures vary with machine load: the JSON records the load average before and after, and the thread count.
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
from dataclasses import asdict, dataclass, field
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
                sizes: tuple[int, ...] = (512, 1024, 1536, 2048), repeats: int = 3,
                min_seconds: float = 0.2) -> dict:
    """Dense matmul rate, GFLOP/s: for each n, the best of `repeats` timings of n x n @ n x n products (2 n^3 FLOPs
    each, repeated until `min_seconds` have passed); the peak is the best over n. Returns {"gflops", "by_n"}."""
    device = torch.device(device)
    by_n = {}
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        c = torch.empty(n, n, device=device, dtype=dtype)
        torch.mm(a, b, out=c)  # warm-up: first-call allocation and kernel selection
        _sync(device)
        best = 0.0
        for _ in range(repeats):
            count, t0 = 0, time.perf_counter()
            while True:
                torch.mm(a, b, out=c)
                count += 1
                if device.type == "cuda" and count % 10:
                    continue  # on a GPU, sync only every 10 products: a sync per product would time the launch
                _sync(device)
                dt = time.perf_counter() - t0
                if dt >= min_seconds:
                    break
            best = max(best, 2 * n**3 * count / dt / 1e9)
        by_n[n] = best
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


def ref_optimizer(model: nn.Module, lr: float, weight_decay: float, betas, device_type: str):
    """AdamW as nanoGPT configures it: decay on matrices, none on vectors; fused on CUDA, PyTorch's default elsewhere."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    extra = {"fused": True} if device_type == "cuda" else {}
    return torch.optim.AdamW(groups, lr=lr, betas=betas, **extra)


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
        self.forward = compiled or model
        self.amp = amp or contextlib.nullcontext()
        self.lr_at = lr_at
        self.step_count = 0
        self.loss_sum = None

    def step(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        s = self.shape
        lr = self.lr_at(self.step_count, self.total, s.lr, s.warmup_steps, s.min_lr_ratio)
        for group in self.opt.param_groups:
            group["lr"] = lr
        loss_sum = None
        for x, y in batches:
            with self.amp:
                _, loss = self.forward(x, y)
            (loss / len(batches)).backward()
            loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), s.grad_clip if s.grad_clip > 0 else float("inf"))
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
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
    opt = ref_optimizer(model, shape.lr, shape.weight_decay, shape.betas, device.type)
    return Trainer(model, opt, shape, 10**6, amp, torch.compile(model) if compile else None)


def time_interleaved(runners: dict, seconds: float, rounds: int = 3, warmup: int = 2,
                     device: torch.device | str = "cpu") -> dict[str, dict]:
    """Time several step functions in alternating rounds (A B A B ...), so that changes in machine load fall on all
    of them alike. `runners` maps a name to a function doing one training step and returning the tokens it trained.
    Each round runs whole steps for about seconds / (rounds x len(runners)); returns per name the best round's
    tokens/s (load only ever slows a round down, so the best round is the closest to the unloaded rate), the median
    round's, the number of steps timed, and the best tokens per second of this process's CPU time (`per_cpu_s`: with
    one thread, what the step costs regardless of other processes; with more, it also counts threads waiting)."""
    device = torch.device(device)
    per_round = seconds / max(1, rounds * len(runners))
    est = {}
    for name, fn in runners.items():
        for _ in range(warmup):
            fn()
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        est[name] = max(time.perf_counter() - t0, 1e-6)
    rates = {name: [] for name in runners}
    cpu_rates = {name: [] for name in runners}
    steps = {name: 0 for name in runners}
    for _ in range(rounds):
        for name, fn in runners.items():
            n = max(1, int(per_round / est[name]))
            tokens = 0
            _sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(n):
                tokens += fn()
            _sync(device)
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            rates[name].append(tokens / dt)
            cpu_rates[name].append(tokens / max(dc, 1e-9))
            est[name] = dt / n
            steps[name] += n
    return {name: {"best": max(r), "median": statistics.median(r), "rounds": r, "steps": steps[name],
                   "per_cpu_s": max(cpu_rates[name])} for name, r in rates.items()}


def measure_training(shape: Shape, peak_gflops: float, seconds: float = 6.0, rounds: int = 3,
                     reference: bool = True, device="cpu", amp=None, compile: bool = False) -> dict:
    """Tokens/s and MFU of our trainer's step (and the reference's, alternating), on the same pre-made batches."""
    device = torch.device(device)
    row = shape.describe()
    batches = [(x.to(device), y.to(device)) for x, y in make_batches(shape, 4 * shape.grad_accum)]
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
            tr.step(batches[i * k:(i + 1) * k])
            return tokens_per_step
        return fn

    t0 = time.perf_counter()
    timed = time_interleaved({k: runner(v) for k, v in trainers.items()}, seconds, rounds, device=device)
    for tr in trainers.values():  # a finite loss: the steps timed were real training steps
        if not math.isfinite(float(tr.loss_sum)):
            raise RuntimeError(f"{shape.name}: the loss became {float(tr.loss_sum)} while benchmarking")
    peak = peak_gflops * 1e9
    ours = timed["ours"]["best"]
    row.update({"tokens_per_s": ours, "tokens_per_s_median": timed["ours"]["median"],
                "tokens_per_cpu_s": timed["ours"]["per_cpu_s"],
                "mfu": ours * row["flops_per_token"] / peak, "steps_timed": timed["ours"]["steps"]})
    if "ref" in timed:
        ref = timed["ref"]["best"]
        row.update({"ref_tokens_per_s": ref, "ref_tokens_per_s_median": timed["ref"]["median"],
                    "ref_mfu": ref * row["flops_per_token"] / peak, "ratio": ours / ref,
                    "ratio_median": timed["ours"]["median"] / timed["ref"]["median"],
                    "ref_tokens_per_cpu_s": timed["ref"]["per_cpu_s"],
                    "ratio_cpu": timed["ours"]["per_cpu_s"] / timed["ref"]["per_cpu_s"], "ref_status": "ok"})
    else:
        row.update({"ref_tokens_per_s": None, "ref_mfu": None, "ratio": None, "ref_status": ref_status})
    row["wall_s"] = time.perf_counter() - t0
    return row
