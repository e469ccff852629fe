"""The targets (in one place), the printed tables, the machine's description and the JSON clean-up."""
from __future__ import annotations

import math
import os
import platform
import sys
from pathlib import Path

import torch

from analysis.fmt import with_spec as _fmt
from emergence.config import SweepConfig


# ---------------------------------------------------------------------------------------------------------------------
# Targets, the table and the command.

# stacked seeds are meant for the sizes a sweep stacks: the default of sweep.stack_max_params
STACK_UNDER = SweepConfig.stack_max_params


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


def json_safe(obj):
    """JSON-safe: a float that is NaN or infinite becomes null (JSON has no NaN; a missing figure is never 0)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
