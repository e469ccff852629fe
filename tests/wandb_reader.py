"""Read what an offline W&B run wrote, so tests can assert on it.

A run's transaction log, `wandb/offline-run-<time>-<id>/run-<id>.wandb`, is what `wandb sync` uploads. Its format is
LevelDB's log format (github.com/google/leveldb, doc/log_format.md) with W&B's own file header:

    file   := header block*
    header := ident ":W&B" (4 bytes) | magic 0xBEE1 (uint16 LE) | version 0 (uint8)       -- 7 bytes
    block  := record* zero-padding          -- 32 KiB each; the file header counts towards the first block
    record := checksum (uint32 LE) | length (uint16 LE) | type (uint8: 1 full, 2 first, 3 middle, 4 last) | data

A record header never straddles a block: when fewer than 7 bytes are left in a block they are zeros and the next
record starts at the next block. A payload too long for the rest of a block is split into first/middle/last pieces.
The reassembled payload is one serialized `wandb.proto.wandb_internal_pb2.Record`.

The checksum: LevelDB specifies CRC-32C, but W&B computes the ordinary zlib CRC-32 of the type byte and then of the
data (the running checksum starts at crc32(type)); we verify that, so a misread block fails loudly instead of
yielding garbage. (Checked against files written by wandb 0.31.)
"""
from __future__ import annotations

import json
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from wandb.proto import wandb_internal_pb2 as pb

HEADER = struct.Struct("<4sHB")  # ident, magic, version
RECORD_HEADER = struct.Struct("<IHB")  # checksum, length, type
HEADER_LEN = 7
BLOCK_LEN = 32 * 1024
IDENT, MAGIC, VERSION = b":W&B", 0xBEE1, 0
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


class CorruptFile(ValueError):
    """The file is not a W&B transaction log, or a record fails its checksum."""


def iter_payloads(path: str | Path) -> Iterator[bytes]:
    """Yield each record's reassembled payload, checking the header, every checksum and the block structure."""
    buf = Path(path).read_bytes()
    if len(buf) < HEADER_LEN:
        raise CorruptFile(f"{path}: {len(buf)} bytes, shorter than the 7-byte header")
    ident, magic, version = HEADER.unpack_from(buf, 0)
    if (ident, magic, version) != (IDENT, MAGIC, VERSION):
        raise CorruptFile(f"{path}: header {ident!r}/{magic:#x}/{version} is not a W&B log (:W&B/0xbee1/0)")
    pos, pending = HEADER_LEN, None
    while pos < len(buf):
        left_in_block = BLOCK_LEN - pos % BLOCK_LEN
        if left_in_block < HEADER_LEN:  # trailer: zero bytes, then the next block
            if buf[pos:pos + left_in_block].strip(b"\0"):
                raise CorruptFile(f"{path}: non-zero block trailer at byte {pos}")
            pos += left_in_block
            continue
        if pos + HEADER_LEN > len(buf):
            raise CorruptFile(f"{path}: truncated record header at byte {pos}")
        checksum, length, kind = RECORD_HEADER.unpack_from(buf, pos)
        if length + HEADER_LEN > left_in_block:
            raise CorruptFile(f"{path}: record at byte {pos} runs past its block")
        data = buf[pos + HEADER_LEN:pos + HEADER_LEN + length]
        if len(data) != length:
            raise CorruptFile(f"{path}: truncated record at byte {pos}")
        if zlib.crc32(data, zlib.crc32(bytes([kind]))) != checksum:
            raise CorruptFile(f"{path}: checksum mismatch in record at byte {pos}")
        pos += HEADER_LEN + length
        if kind == FULL and pending is None:
            yield data
        elif kind == FIRST and pending is None:
            pending = bytearray(data)
        elif kind == MIDDLE and pending is not None:
            pending += data
        elif kind == LAST and pending is not None:
            yield bytes(pending + data)
            pending = None
        else:
            raise CorruptFile(f"{path}: record type {kind} out of order at byte {pos - HEADER_LEN - length}")
    if pending is not None:
        raise CorruptFile(f"{path}: file ends inside a split record")


def iter_records(path: str | Path) -> Iterator[pb.Record]:
    """Yield each `Record` protobuf of a `.wandb` file in order."""
    for payload in iter_payloads(path):
        record = pb.Record()
        record.ParseFromString(payload)
        yield record


def _key(item: Any) -> str:
    """A history/config/summary item's key: nested keys (a logged dict) join with '.'."""
    return item.key if item.key else ".".join(item.nested_key)


def _value(item: pb.HistoryItem) -> Any:
    if item.value_json:
        return json.loads(item.value_json)
    kind = item.WhichOneof("value")
    if kind is None or kind == "none":
        return None
    if kind == "json":
        return json.loads(item.json)
    return getattr(item, kind)


@dataclass
class OfflineRun:
    """What one `.wandb` file says about its run."""

    path: Path
    run_id: str = ""
    project: str = ""
    entity: str = ""
    group: str = ""
    job_type: str = ""
    name: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)  # top-level keys, without W&B's own `_wandb`
    history: list[dict[str, Any]] = field(default_factory=list)  # one dict per committed row, `_step` included
    metrics: list[dict[str, Any]] = field(default_factory=list)  # define_metric records
    artifacts: list[pb.ArtifactRecord] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # paths saved with the run (media, tables), relative to files/
    exit_code: int | None = None  # None: the run never finished

    @property
    def files_dir(self) -> Path:
        return self.path.parent / "files"

    def steps(self, key: str) -> list[int]:
        """The `_step` of every row that has `key`."""
        return [row["_step"] for row in self.history if key in row]

    def values(self, key: str) -> dict[int, Any]:
        """step -> value of `key`."""
        return {row["_step"]: row[key] for row in self.history if key in row}

    def table(self, key: str, step: int | None = None) -> dict[str, Any]:
        """The JSON of a logged `wandb.Table` ({"columns": [...], "data": [[...], ...]}), at `step` or the last one."""
        rows = [row for row in self.history if f"{key}.path" in row and (step is None or row["_step"] == step)]
        if not rows:
            raise KeyError(f"no table {key!r} logged" + ("" if step is None else f" at step {step}"))
        return json.loads((self.files_dir / rows[-1][f"{key}.path"]).read_text())


def read_run(path: str | Path) -> OfflineRun:
    """Parse a `run-<id>.wandb` file into an `OfflineRun`."""
    run = OfflineRun(Path(path))
    for record in iter_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.run_id, run.project, run.entity = r.run_id, r.project, r.entity
            run.group, run.job_type, run.name, run.tags = r.run_group, r.job_type, r.display_name, list(r.tags)
            _apply_config(run.config, r.config)
        elif kind == "config":
            _apply_config(run.config, record.config)
        elif kind == "history":
            run.history.append({_key(item): _value(item) for item in record.history.item})
        elif kind == "metric":
            m = record.metric
            run.metrics.append({"name": m.name, "glob_name": m.glob_name, "step_metric": m.step_metric,
                                "step_sync": m.options.step_sync, "hidden": m.options.hidden})
        elif kind == "artifact":
            run.artifacts.append(record.artifact)
        elif kind == "files":
            run.files.extend(f.path for f in record.files.files)
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    return run


def _apply_config(config: dict[str, Any], record: pb.ConfigRecord) -> None:
    for item in record.update:
        key = _key(item)
        if key != "_wandb":
            config[key] = json.loads(item.value_json)
    for item in record.remove:
        config.pop(_key(item), None)


def find_runs(root: str | Path, prefix: str = "") -> list[Path]:
    """Every `.wandb` file under `root` whose folder name starts with `prefix` ("offline-run" for offline runs only),
    sorted by folder name (which holds the start time, to the second)."""
    paths = [p for p in Path(root).rglob("run-*.wandb") if p.parent.name.startswith(prefix)]
    return sorted(paths, key=lambda p: p.parent.name)


def wait_for_runs(root: str | Path, count: int, prefix: str = "", timeout: float = 30.0) -> list[OfflineRun]:
    """The `count` finished runs under `root`, once each file holds its exit record.

    `run.finish()` returns before W&B's service has flushed the file (it writes through a buffer and closes the
    stream asynchronously; a file read at once may still hold only its header), so tests wait for the exit record.
    """
    deadline = time.monotonic() + timeout
    while True:
        runs, problem = [], ""
        paths = find_runs(root, prefix)
        if len(paths) != count:
            problem = f"{len(paths)} .wandb files under {root}, expected {count}"
        for path in paths:
            try:
                run = read_run(path)
            except CorruptFile as exc:  # a record still being written
                problem = str(exc)
                break
            if run.exit_code is None:
                problem = f"{path} has no exit record yet"
                break
            runs.append(run)
        if not problem:
            return runs
        if time.monotonic() > deadline:
            raise TimeoutError(f"after {timeout:.0f} s: {problem}")
        time.sleep(0.05)
