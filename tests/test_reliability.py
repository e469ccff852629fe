"""Reliability, proven by injecting the faults: kill -9 at chosen moments, corrupt checkpoints, NaN losses, jobs that
raise inside a multirun, concurrent aggregation and probing, a full disk, bad input and hostile names.

Precise kills use the fault-injection hook `emergence.checkpoint.fault_point`: a subprocess started with
EMERGENCE_FAULT=<label> SIGKILLs itself at that point (half-way through writing a file, after an optimizer step, ...),
exactly as a preemption would, with no `finally` and no cleanup. Already covered in test_checkpoint.py and not repeated
here: the checksum refusing a flipped bit, a truncated file falling back with a warning, a pickle that runs code refused
by `weights_only=True`, an incompatible format version refused, and `checkpoint.save` on a full disk.
"""
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import TINY
from emergence import checkpoint as ckpt
from emergence.config import compose, run_dir
from emergence.train import read_status, train

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["model=l1d16"]  # the smallest ladder size: every run here takes a second or two


def emergence_cli(*args, env=None, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    """Run the `emergence` command in a fresh interpreter, as a user (or a cluster scheduler) would."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    full_env = {**os.environ, "PYTHONPATH": path, **(env or {})}
    return subprocess.run([sys.executable, "-m", "emergence", *map(str, args)], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=timeout)


def valid_steps(folder: Path) -> list[int]:
    """Steps of the checkpoint files a reader can see; each one must load and pass its checksum."""
    found = ckpt.list_checkpoints(folder / "checkpoints")
    for _, path in found:
        ckpt.load(path)  # raises CheckpointError on a half-written or corrupt file
    return [s for s, _ in found]


def temporaries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob(".*") if ".tmp" in p.name)


def assert_same_tensors(a, b, where=""):
    """Bit-for-bit equality of two (nested) containers of tensors."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            assert_same_tensors(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tensors(x, y, f"{where}[{i}]")
    else:
        assert a == b or (a != a and b != b), where


PROBE_KEYS = ["step", "task", "metric"]
LOG_COLUMNS = ["step", "tokens", "loss", "lr", "grad_norm"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One run of the tiny config that was never interrupted: every interrupted run must end equal to it."""
    root = tmp_path_factory.mktemp("reference")
    cfg = compose([*TINY, *SMALL, f"paths.results={root}"])
    assert train(cfg)["state"] == "done"
    folder = run_dir(cfg)
    return {
        "folder": folder,
        "checkpoints": {s: ckpt.load(p) for s, p in ckpt.list_checkpoints(folder / "checkpoints")},
        "log": pd.read_parquet(folder / "train_log.parquet"),
        "probes": pd.read_parquet(folder / "probes.parquet").sort_values(PROBE_KEYS, ignore_index=True),
        "status": read_status(folder),
    }


def assert_equals_reference(folder: Path, reference: dict) -> None:
    """Same checkpoints (weights, optimizer, RNG, counters), same training log, same probe rows, same final loss."""
    got = {s: ckpt.load(p) for s, p in ckpt.list_checkpoints(folder / "checkpoints")}
    assert sorted(got) == sorted(reference["checkpoints"])
    for step, state in reference["checkpoints"].items():
        for key in ("model", "optimizer", "rng", "step", "tokens", "flops", "val_loss"):
            assert_same_tensors(state[key], got[step][key], f"step {step} {key}")
    log = pd.read_parquet(folder / "train_log.parquet")
    pd.testing.assert_frame_equal(log[LOG_COLUMNS].reset_index(drop=True), reference["log"][LOG_COLUMNS])
    probes = pd.read_parquet(folder / "probes.parquet")
    assert not probes.duplicated(["run_id", *PROBE_KEYS]).any()
    probes = probes.sort_values(PROBE_KEYS, ignore_index=True)
    cols = [*PROBE_KEYS, "value", "n", "status"]
    pd.testing.assert_frame_equal(probes[cols], reference["probes"][cols])
    status = read_status(folder)
    assert status["state"] == "done"
    for key in ("final_loss", "final_val_loss"):
        assert status[key] == reference["status"][key], key
    assert temporaries(folder) == []


# ---------------------------------------------------------------------------------------------------------------------
# 1. kill -9 at six moments; the same command, rerun each time, ends bit-identical to a run never interrupted.

KILLS = [  # (where the process dies, the newest checkpoint it leaves behind)
    ("write-half:config.yaml", None),  # at start-up, half-way through writing the resolved config
    ("write-half:step_2.pt", 1),  # half-way through writing a checkpoint's temporary file
    ("step:3", 2),  # between two checkpoints, right after an optimizer step
    ("write-before-rename:step_4.pt", 2),  # a checkpoint complete and fsynced, not yet renamed into place
    ("write-after-rename:step_6.pt", 6),  # a checkpoint in place; training log and probes not yet updated
    ("write-after-rename:step_12.pt", 12),  # the final checkpoint in place; the run not yet marked done
]


@pytest.mark.slow
def test_kill_9_at_six_moments_and_rerun_ends_bit_identical(reference, tmp_path):
    overrides = [*TINY, *SMALL, f"paths.results={tmp_path}"]
    folder = run_dir(compose(overrides))
    resumes_from = None
    for label, newest in KILLS:
        p = emergence_cli("train", *overrides, env={ckpt.FAULT_ENV: label})
        assert p.returncode == -signal.SIGKILL, f"{label}: exit {p.returncode}\n{p.stderr[-3000:]}"
        # no half-written checkpoint was ever offered to the loader (the fallback would have warned)
        assert "checksum" not in p.stderr, p.stderr
        if resumes_from:
            assert f"resuming from step {resumes_from}" in p.stderr, p.stderr
        # every checkpoint a reader can see is whole; the file being written when the process died is not among them
        steps = valid_steps(folder)
        assert (max(steps) if steps else None) == newest, (label, steps)
        if label.startswith("write-half:"):  # the half-written temporary file is really there, and ignored
            name = label.split(":", 1)[1]
            assert any(t.name.startswith(f".{name}.tmp") for t in temporaries(folder)), label
        resumes_from = newest
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a checksum fallback would warn: none may happen
        summary = train(compose(overrides))
    assert summary["state"] == "done" and not summary["skipped"]
    assert_equals_reference(folder, reference)
