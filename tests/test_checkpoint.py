"""Checkpoints: schedule, atomic write, checksum refusal, fallback, weights_only safety."""
import os

import pytest
import torch

from emergence import checkpoint as ckpt


def test_pythia_schedule():
    assert ckpt.schedule(3000, log_until=512, every=1000) == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 2000,
                                                              3000]
    assert ckpt.schedule(10, log_until=4, every=4) == [0, 1, 2, 4, 8, 10]
    assert ckpt.schedule(0) == [0]


def test_roundtrip_and_checksum(tmp_path):
    p = ckpt.save(tmp_path / "step_1.pt", {"w": torch.arange(5.0), "step": 1, "meta": {"a": [1, 2]}})
    out = ckpt.load(p)
    assert torch.equal(out["w"], torch.arange(5.0)) and out["step"] == 1 and out["meta"] == {"a": [1, 2]}
    raw = bytearray(p.read_bytes())
    raw[-10] ^= 0x01  # one flipped bit
    p.write_bytes(bytes(raw))
    with pytest.raises(ckpt.CheckpointError, match="step_1.pt failed its checksum"):
        ckpt.load(p)


def test_truncated_file_is_refused_and_fallback_warns(tmp_path):
    ckpt.save(tmp_path / "step_1.pt", {"step": 1})
    p2 = ckpt.save(tmp_path / "step_2.pt", {"step": 2})
    p2.write_bytes(p2.read_bytes()[:-7])
    with pytest.warns(UserWarning, match=r"step_2.pt failed its checksum.*falling back"):
        step, state = ckpt.latest_valid(tmp_path)
    assert step == 1 and state["step"] == 1


def test_temporary_files_are_never_listed(tmp_path):
    ckpt.save(tmp_path / "step_4.pt", {"step": 4})
    (tmp_path / ".step_8.pt.tmp-123").write_bytes(b"half")
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [4]


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickle_that_runs_code_is_refused(tmp_path):
    # a checkpoint with a valid header and checksum whose payload holds a pickled callable
    import hashlib
    import io
    import struct

    buf = io.BytesIO()
    torch.save({"x": Evil()}, buf, _use_new_zipfile_serialization=True)
    body = buf.getvalue()
    p = tmp_path / "step_0.pt"
    p.write_bytes(ckpt.MAGIC + struct.pack("<I", ckpt.FORMAT_VERSION) + hashlib.sha256(body).digest() + body)
    with pytest.raises(ckpt.CheckpointError, match="could not be loaded safely"):
        ckpt.load(p)


def test_incompatible_version_is_refused(tmp_path):
    import struct

    p = ckpt.save(tmp_path / "step_0.pt", {"a": 1})
    raw = bytearray(p.read_bytes())
    raw[len(ckpt.MAGIC):len(ckpt.MAGIC) + 4] = struct.pack("<I", 99)
    p.write_bytes(bytes(raw))
    with pytest.raises(ckpt.CheckpointError, match="format 99"):
        ckpt.load(p)


def test_failed_write_leaves_previous_file(tmp_path, monkeypatch):
    p = ckpt.save(tmp_path / "step_1.pt", {"v": 1})
    before = p.read_bytes()
    real_fsync = os.fsync

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left on device; the previous checkpoint is intact"):
        ckpt.save(tmp_path / "step_1.pt", {"v": 2})
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert p.read_bytes() == before
    assert [q.name for q in tmp_path.iterdir()] == ["step_1.pt"]
