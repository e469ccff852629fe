"""Self-describing, checksummed, atomically written checkpoints.

A checkpoint `step_<N>.pt` is a plain `torch.save` of a dict of plain containers and tensors (nanoGPT's habit), so
`torch.load(path, weights_only=True)` opens it with no emergence code and without running any pickled code. Its
integrity check lives beside it, in a sidecar `step_<N>.pt.sha256` holding one line, `sha256 <hex digest of the .pt
file's bytes> format 2`. The checksum is kept out of the file rather than embedded in it so that the file stays exactly
what `torch.save` writes: any other tool reads it, and nothing inside has to be skipped when it is hashed.

Writing order: the sidecar first, then the checkpoint, each atomically (temporary file in the same folder, fsync,
rename, fsync of the folder). A crash between the two leaves a sidecar whose checkpoint is missing (a new step: nothing
is listed, nothing is lost) or whose checkpoint is the older file it replaces (the digests differ and the loader
refuses it). A checkpoint is never in place before its sidecar, so a reader never meets a whole new checkpoint it
cannot verify, nor a half-written one. `load` refuses a checkpoint whose sidecar is missing, malformed or does not
match, naming the file; `latest_valid` skips such files with a warning.

Format 1 (before sidecars: `MAGIC`, the format version as 4 bytes little endian, the SHA-256 of the payload, then the
`torch.save` payload) is still read by `load`. Pythia's schedule decides the steps.
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

FORMAT_VERSION = 2
READS = (1, 2)  # the formats `load` reads
MAGIC = b"EMRGCKPT"  # format 1's header
HEADER = len(MAGIC) + 4 + 32
STEP_FILE = re.compile(r"^step_(\d+)\.pt$")
SIDECAR_SUFFIX = ".sha256"
SIDECAR_LINE = re.compile(r"^sha256 ([0-9a-f]{64}) format (\d+)$")


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


def sidecar_path(path: Path) -> Path:
    """The checksum file that belongs to checkpoint `path` (`step_<N>.pt.sha256`); copy and delete the two together."""
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def sidecar_line(data: bytes, version: int = FORMAT_VERSION) -> str:
    """The sidecar's one line for checkpoint bytes `data`."""
    return f"sha256 {hashlib.sha256(data).hexdigest()} format {version}\n"


def save(path: Path, payload: dict) -> Path:
    """Write `payload` as a plain `torch.save` file with its checksum sidecar, both atomically, sidecar first."""
    path = Path(path)
    buf = io.BytesIO()
    torch.save(payload, buf)
    body = buf.getvalue()
    side = sidecar_path(path)
    try:
        atomic_write_bytes(side, sidecar_line(body).encode())
        atomic_write_bytes(path, body)
    except OSError as e:
        if not path.exists():  # a new step: leave no sidecar without its checkpoint
            try:
                side.unlink(missing_ok=True)
            except OSError:
                pass
        raise OSError(f"could not write checkpoint {path}: {e.strerror or e}; the previous checkpoint is intact") from e
    return path


def _verified_body(path: Path, raw: bytes) -> bytes:
    """The `torch.save` bytes of a checkpoint file whose checksum holds; CheckpointError naming the file otherwise."""
    if raw[:len(MAGIC)] == MAGIC:  # format 1: the checksum is in the header
        if len(raw) < HEADER:
            raise CheckpointError(f"{path} is not an emergence checkpoint (bad header or truncated)")
        (version,) = struct.unpack("<I", raw[len(MAGIC):len(MAGIC) + 4])
        if version != 1:
            raise CheckpointError(f"{path} has checkpoint format {version}, this version of emergence reads formats "
                                  f"{' and '.join(map(str, READS))}: probe it with the version that wrote it")
        body = raw[HEADER:]
        if hashlib.sha256(body).digest() != raw[len(MAGIC) + 4:HEADER]:
            raise CheckpointError(f"{path} failed its checksum (truncated or corrupted); it will not be used")
        return body
    side = sidecar_path(path)
    try:
        text = side.read_text(encoding="ascii", errors="replace").strip()
    except FileNotFoundError:
        raise CheckpointError(f"{path} has no checksum file {side.name} beside it (not an emergence checkpoint, or "
                              f"copied without it); it will not be used") from None
    except OSError as e:
        raise CheckpointError(f"cannot read {side}, the checksum of {path}: {e.strerror or e}") from None
    m = SIDECAR_LINE.match(text)
    if m is None:
        raise CheckpointError(f"{path}: its checksum file {side.name} is malformed (expected 'sha256 <64 hex digits> "
                              f"format {FORMAT_VERSION}'); it will not be used")
    version = int(m.group(2))
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {version}, this version of emergence reads formats "
                              f"{' and '.join(map(str, READS))}: probe it with the version that wrote it")
    if hashlib.sha256(raw).hexdigest() != m.group(1):
        raise CheckpointError(f"{path} failed its checksum (truncated or corrupted, or {side.name} is not its "
                              f"sidecar); it will not be used")
    return raw


def verify(path: Path) -> None:
    """Raise CheckpointError (naming the file) unless checkpoint `path` is readable and passes its checksum."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    _verified_body(path, raw)


def load(path: Path, map_location="cpu") -> dict:
    """Read and verify a checkpoint; refuse one that is truncated, altered, foreign, without its checksum file or of
    another format version."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    body = _verified_body(path, raw)
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
    """(step, path) of every checkpoint file in `folder`, oldest first (sidecars and temporary files are ignored)."""
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
