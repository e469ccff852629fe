"""The GPU path: the Pythia shapes on one CUDA device with bf16 autocast, fused AdamW, `torch.compile` and SDPA."""
from __future__ import annotations

import time

import torch

from emergence.bench.measure import measure_stacked, measure_training
from emergence.bench.reference import H100_BF16_DENSE_PEAK
from emergence.device import matmul_peak
from emergence.bench.shapes import Shape, gpu_shapes


# ---------------------------------------------------------------------------------------------------------------------
# The GPU path.


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
