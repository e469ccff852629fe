"""The measurements: training steps (ours and the reference's, timed in alternation), stacked seeds against
separate runs, probing, the analysis and the smoke sweep, and the profiler."""
from __future__ import annotations

import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

from analysis.calibrate_verdicts import calibrate_verdicts
from emergence import checkpoint as ckpt
from emergence import engine
from emergence.bench.reference import RefGPT, RefOptimizer
from emergence.bench.shapes import Shape, default_base, ladder
from emergence.config import gpt_config, run_dir
from emergence.data import TaskMixture
from emergence.device import sync
from emergence.model import GPT, n_params
from emergence.optim import Step, lr_at, make_optimizer
from emergence.probe import mechanistic_scores, probe_tasks_for, score_task, token_lists
from emergence.stacked import StackedTrainer, train_seeds
from emergence.tasks import VOCAB, get_task
from emergence.train import train


# ---------------------------------------------------------------------------------------------------------------------
# Training steps, ours and the reference's, with the loop shape of `train()`.

def make_batches(shape: Shape, count: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`count` training batches of the shape's task mixture (random tokens when the shape has no task mixture)."""
    if shape.task_weights:
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
        self.model, self.opt, self.shape, self.total = model, opt, shape, total_steps
        forward = compiled if compiled is not None else model
        s = shape
        self.stepper = Step(lambda x, y: forward(x, y)[1], opt,
                            lambda i: lr_at(i, total_steps, s.lr, s.warmup_steps, s.min_lr_ratio), s.grad_clip, amp)
        self.step_count = 0
        self.loss_sum = None

    def step(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """`emergence.optim.Step`, the step every trainer takes; returns the summed loss of the batches."""
        self.loss_sum, _, _ = self.stepper(self.step_count, batches)
        self.step_count += 1
        return self.loss_sum


def _trainer(model_cls, make_opt, shape: Shape, device, amp, compile: bool, seed: int) -> Trainer:
    device = torch.device(device)
    torch.manual_seed(seed)
    model = model_cls(shape.gpt_config()).to(device)
    opt = make_opt(model, shape.lr, shape.weight_decay, shape.betas, device.type)
    return Trainer(model, opt, shape, 10**6, amp, torch.compile(model) if compile else None)


def our_trainer(shape: Shape, device="cpu", amp=None, compile: bool = False, seed: int = 0) -> Trainer:
    """Our model and optimizer, built as `train()` builds them."""
    return _trainer(GPT, make_optimizer, shape, device, amp, compile, seed)


def ref_trainer(shape: Shape, device="cpu", amp=None, compile: bool = False, seed: int = 0) -> Trainer:
    """The reference GPT and its AdamW, with the same shapes and settings."""
    return _trainer(RefGPT, RefOptimizer, shape, device, amp, compile, seed)


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
    sync(device)
    times = {name: [] for name in runners}
    tokens = {name: 0 for name in runners}
    cpu = {name: 0.0 for name in runners}
    t_end = time.perf_counter() + seconds
    while True:
        for name, fn in runners.items():
            t0, c0 = time.perf_counter(), time.process_time()
            n = fn()
            sync(device)
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
    from omegaconf import OmegaConf

    return probe_tasks_for(OmegaConf.to_container(cfg, resolve=True), cfg.probe)


def measure_probe(cfg, device="cpu") -> dict:
    """Probe throughput of the model `cfg` describes (untrained weights: greedy generation then runs to the full
    answer length, the slowest case) on the run's probe tasks and settings: teacher-forced examples/s
    (`engine.teacher_forced`), all-metrics examples/s (`score_task`, which adds greedy decoding of `probe.generate_n`
    examples), and the seconds one checkpoint's probe takes (every task plus the mechanistic probe)."""
    import numpy as np

    device = torch.device(device)
    torch.manual_seed(0)
    model = GPT(gpt_config(cfg)).to(device).eval()
    names = probe_tasks(cfg)
    n_examples, t_forced, t_full = 0, 0.0, 0.0
    for name in names:
        prompts, answers, ids = get_task(name).heldout_set(cfg.probe.n, cfg.probe.seed)
        p_ids, a_ids = token_lists(prompts, answers, VOCAB)
        t0 = time.perf_counter()
        engine.teacher_forced(engine.GPTCausalLM(model), p_ids, a_ids, cfg.probe.batch_size, brier=True)
        t1 = time.perf_counter()
        score_task(model, name, prompts, answers, ids, cfg.probe, VOCAB)
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
    """Time to judge `n_curves` synthetic curves with the jump test, and its rates (`analysis.calibrate_verdicts`)."""
    r = calibrate_verdicts(n_curves, n_boot=n_boot)
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


def measure_stacked_runs(cfg, folder: Path, seeds: tuple[int, ...] = (0, 1)) -> dict:
    """Whole runs, as a sweep does them: `train()` for each seed in turn against `train_seeds()` for all of them
    (checkpoints, logs and status files included; inline probing off so that training alone is compared)."""
    from omegaconf import OmegaConf

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
