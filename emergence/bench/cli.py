"""`emergence bench`: every measurement in one process, printed and written as JSON."""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from emergence.bench.gpu import run_gpu
from emergence.bench.measure import (measure_analysis, measure_probe, measure_probe_share, measure_smoke_sweep,
                                     measure_stacked, measure_stacked_runs, measure_training, profile_step)
from emergence.bench.report import STACK_UNDER, json_safe, machine, print_report, targets
from emergence.bench.shapes import Shape, default_base, ladder, ladder_names, quick_pick
from emergence.config import compose
from emergence.device import matmul_peak
from emergence.model import n_params
from emergence.sweep import expand_grid


def run(quick: bool = False, gpu: bool = False, seconds: float | None = None, base: list[str] | None = None,
        names: list[str] | None = None, log=print) -> dict:
    """Every measurement; returns the result dictionary that `main` prints and writes."""
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
        Path(out).write_text(json.dumps(json_safe(result), indent=1, default=str, allow_nan=False) + "\n")
        print(f"wrote {out}")
    return 0
