"""Self-describing, checksummed, atomically written checkpoints.

A file is `MAGIC` (8 bytes), the format version (4 bytes, little endian), the SHA-256 of the payload (32 bytes), then
the payload: a `torch.save` of plain containers and tensors, which `torch.load(weights_only=True)` reads without
running any pickled code. It is written to a temporary file in the same folder, fsynced, then renamed over the final
name (rename is atomic on POSIX), so a reader never sees half a checkpoint. Pythia's schedule decides the steps.
"""
from __future__ import annotations

import hashlib
import io
import re
import struct
import warnings
from pathlib import Path

import torch

from emergence.files import atomic_write_bytes

MAGIC = b"EMRGCKPT"
FORMAT_VERSION = 1
HEADER = len(MAGIC) + 4 + 32
STEP_FILE = re.compile(r"^step_(\d+)\.pt$")


class CheckpointError(ValueError):
    """A checkpoint that must not be used; the message names the file and what is wrong with it."""


def schedule(total_steps: int, log_until: int = 512, every: int = 1000) -> list[int]:
    """Steps that get a checkpoint: 0, 1, 2, 4, ... (powers of two) up to `log_until`, then every `every` steps, and
    the final step (Biderman et al. 2023, Pythia: log-spaced early checkpoints, then every 1000 steps)."""
    steps = {0, total_steps}
    p = 1
    while p <= min(log_until, total_steps):
        steps.add(p)
        p *= 2
    steps.update(range(every, total_steps + 1, every) if every > 0 else [])
    return sorted(s for s in steps if 0 <= s <= total_steps)


def save(path: Path, payload: dict) -> Path:
    """Serialise `payload` with a checksum header and write it atomically."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    body = buf.getvalue()
    header = MAGIC + struct.pack("<I", FORMAT_VERSION) + hashlib.sha256(body).digest()
    try:
        atomic_write_bytes(path, header + body)
    except OSError as e:
        raise OSError(f"could not write checkpoint {path}: {e.strerror or e}; the previous checkpoint is intact") from e
    return Path(path)


def load(path: Path, map_location="cpu") -> dict:
    """Read and verify a checkpoint; refuse one that is truncated, altered, foreign or of another format version."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    if len(raw) < HEADER or raw[:len(MAGIC)] != MAGIC:
        raise CheckpointError(f"{path} is not an emergence checkpoint (bad header or truncated)")
    (version,) = struct.unpack("<I", raw[len(MAGIC):len(MAGIC) + 4])
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {version}, this version of emergence reads format "
                              f"{FORMAT_VERSION}: probe it with the version that wrote it")
    body = raw[HEADER:]
    if hashlib.sha256(body).digest() != raw[len(MAGIC) + 4:HEADER]:
        raise CheckpointError(f"{path} failed its checksum (truncated or corrupted); it will not be used")
    try:
        return torch.load(io.BytesIO(body), map_location=map_location, weights_only=True)
    except Exception as e:  # weights_only refuses pickled code: a checksum-valid but unsafe file lands here
        raise CheckpointError(f"{path} could not be loaded safely: {str(e).splitlines()[0]}") from None


def step_of(path: Path) -> int:
    """The step a checkpoint file is named for (`step_<N>.pt`)."""
    m = STEP_FILE.match(Path(path).name)
    if m is None:
        raise ValueError(f"{path}: not a checkpoint file name (step_<N>.pt)")
    return int(m.group(1))


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint file in `folder`, oldest first (temporary files are ignored)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := STEP_FILE.match(p.name))]
    return sorted(found)


def latest_valid(folder: Path, map_location="cpu") -> tuple[int, dict] | None:
    """The newest checkpoint that passes its checksum; each one that fails is named in a warning and skipped."""
    for step, path in reversed(list_checkpoints(folder)):
        try:
            return step, load(path, map_location)
        except CheckpointError as e:
            warnings.warn(f"{e}; falling back to the previous checkpoint", stacklevel=2)
    return None
