"""Where and how a run computes: the device, bf16 autocast on CUDA (fp32 on CPU, where bf16 products are about 100x
slower), the torchrun rank, and the dense matmul peak that every MFU figure divides by."""
from __future__ import annotations

import contextlib
import os
import time

import torch

from emergence.config import ConfigError, available_memory, check_memory


def pick_device(cfg) -> torch.device:
    want = cfg.train.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is available; use train.device=auto or cpu")
    return torch.device(want)


def device_memory(device: torch.device) -> tuple[int, str]:
    """Bytes a run can use on `device` and a name for it: free CUDA memory on a GPU, host RAM on the CPU."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free), f"GPU {device.index or 0} ({torch.cuda.get_device_name(device)})"
    return available_memory(), "this machine"


def check_run_memory(cfg, device: torch.device, copies: int = 1) -> None:
    """The memory pre-flight, where the run runs: its estimate at its own precision against its device's memory."""
    available, where = device_memory(device)
    check_memory(cfg, device.type, available, where, copies)


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


def sync(device: torch.device) -> None:
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
    g = torch.Generator(device).manual_seed(0)  # a private generator: a run's RNG stream must not depend on this
    group = 20 if device.type == "cuda" else 1
    by_n = {}
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype, generator=g)
        b = torch.randn(n, n, device=device, dtype=dtype, generator=g)
        c = torch.empty(n, n, device=device, dtype=dtype)
        torch.mm(a, b, out=c)  # warm-up: first-call allocation and kernel selection
        sync(device)
        fastest, count, t_end = float("inf"), 0, time.perf_counter() + min_seconds
        while count < min_repeats or time.perf_counter() < t_end:
            t0 = time.perf_counter()
            for _ in range(group):
                torch.mm(a, b, out=c)
            sync(device)
            fastest = min(fastest, (time.perf_counter() - t0) / group)
            count += 1
        by_n[n] = 2 * n**3 / fastest / 1e9
    return {"gflops": max(by_n.values()), "by_n": by_n, "dtype": str(dtype).replace("torch.", ""),
            "device": device.type}


_PEAK: dict[str, float] = {}


def matmul_peak_flops(device: torch.device) -> float:
    """A quick measure of this device's dense fp32 matmul rate (FLOP/s), cached per process: the MFU denominator of
    a run's log. `matmul_peak` with its defaults (`emergence bench`) measures it more carefully."""
    if device.type not in _PEAK:
        _PEAK[device.type] = matmul_peak(device, sizes=(1024,), min_seconds=0.0, min_repeats=3)["gflops"] * 1e9
    return _PEAK[device.type]
