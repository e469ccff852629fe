"""Checkpoints: schedule, plain torch.load, atomic write, checksum sidecar, format 1 still read, fallback, weights_only
safety."""
import hashlib
import io
import os
import struct

import pytest
import torch

from emergence import checkpoint as ckpt


def format1_bytes(payload: dict, version: int = 1) -> bytes:
    """A checkpoint as format 1 wrote it: MAGIC, version, SHA-256 of the payload, payload."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    body = buf.getvalue()
    return ckpt.MAGIC + struct.pack("<I", version) + hashlib.sha256(body).digest() + body


def test_pythia_schedule():
    assert ckpt.schedule(3000, log_until=512, every=1000) == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 2000,
                                                              3000]
    assert ckpt.schedule(10, log_until=4, every=4) == [0, 1, 2, 4, 8, 10]
    assert ckpt.schedule(0) == [0]


def test_plain_torch_load_opens_a_fresh_checkpoint(tmp_path):
    payload = {"model": {"w": torch.arange(6.0).view(2, 3)}, "step": 3, "config": {"data": {"source": "tasks"}}}
    p = ckpt.save(tmp_path / "step_3.pt", payload)
    plain = torch.load(p, weights_only=True)
    assert torch.equal(plain["model"]["w"], torch.arange(6.0).view(2, 3))
    assert plain["step"] == 3 and plain["config"] == {"data": {"source": "tasks"}}
    side = ckpt.sidecar_path(p)
    assert side.name == "step_3.pt.sha256"
    assert side.read_text() == f"sha256 {hashlib.sha256(p.read_bytes()).hexdigest()} format 2\n"


def test_roundtrip_and_flipped_bit_refused_naming_the_file(tmp_path):
    p = ckpt.save(tmp_path / "step_1.pt", {"w": torch.arange(5.0), "step": 1, "meta": {"a": [1, 2]}})
    out = ckpt.load(p)
    assert torch.equal(out["w"], torch.arange(5.0)) and out["step"] == 1 and out["meta"] == {"a": [1, 2]}
    raw = bytearray(p.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # one flipped bit
    p.write_bytes(bytes(raw))
    with pytest.raises(ckpt.CheckpointError, match=f"^{p} failed its checksum"):
        ckpt.load(p)


def test_truncated_file_is_refused_and_fallback_warns(tmp_path):
    ckpt.save(tmp_path / "step_1.pt", {"step": 1})
    p2 = ckpt.save(tmp_path / "step_2.pt", {"step": 2})
    p2.write_bytes(p2.read_bytes()[:-7])
    with pytest.warns(UserWarning, match=r"step_2.pt failed its checksum.*falling back"):
        step, state = ckpt.latest_valid(tmp_path)
    assert step == 1 and state["step"] == 1


def test_missing_sidecar_is_refused_and_skipped(tmp_path):
    ckpt.save(tmp_path / "step_1.pt", {"step": 1})
    p2 = ckpt.save(tmp_path / "step_2.pt", {"step": 2})
    ckpt.sidecar_path(p2).unlink()
    with pytest.raises(ckpt.CheckpointError, match=f"^{p2} has no checksum file step_2.pt.sha256"):
        ckpt.load(p2)
    with pytest.warns(UserWarning, match=r"step_2.pt has no checksum file.*falling back"):
        assert ckpt.latest_valid(tmp_path)[0] == 1
    torch.save({"step": 5}, tmp_path / "step_5.pt")  # a plain torch.save file dropped in by hand is not trusted either
    with pytest.raises(ckpt.CheckpointError, match="step_5.pt has no checksum file"):
        ckpt.load(tmp_path / "step_5.pt")


def test_sidecar_of_another_file_or_malformed_is_refused(tmp_path):
    a = ckpt.save(tmp_path / "step_1.pt", {"step": 1})
    b = ckpt.save(tmp_path / "step_2.pt", {"step": 2})
    ckpt.sidecar_path(b).write_bytes(ckpt.sidecar_path(a).read_bytes())
    with pytest.raises(ckpt.CheckpointError, match=f"^{b} failed its checksum"):
        ckpt.load(b)
    ckpt.sidecar_path(b).write_text("deadbeef\n")
    with pytest.raises(ckpt.CheckpointError, match="step_2.pt: its checksum file step_2.pt.sha256 is malformed"):
        ckpt.load(b)


def test_a_crash_between_sidecar_and_checkpoint_is_noticed(tmp_path, monkeypatch):
    """The sidecar is written first: a process killed before the checkpoint's rename leaves either no checkpoint (a
    new step) or the old checkpoint with a sidecar that does not match it (refused), never an unverifiable one."""
    old = ckpt.save(tmp_path / "step_2.pt", {"v": "old"})
    real = ckpt.atomic_write_bytes
    order = []

    def killed_at_checkpoint(path, data):
        order.append(path.name)
        if path.name.endswith(".pt"):
            raise KeyboardInterrupt  # stands for SIGKILL: no cleanup runs
        real(path, data)

    monkeypatch.setattr(ckpt, "atomic_write_bytes", killed_at_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save(tmp_path / "step_4.pt", {"v": "new"})
    with pytest.raises(KeyboardInterrupt):
        ckpt.save(old, {"v": "new"})
    assert order == ["step_4.pt.sha256", "step_4.pt", "step_2.pt.sha256", "step_2.pt"]
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [2]  # the new step left only a sidecar: not listed
    with pytest.raises(ckpt.CheckpointError, match="step_2.pt failed its checksum"):
        ckpt.load(old)  # the old file under a new sidecar


def test_format_1_checkpoint_still_loads(tmp_path):
    p = tmp_path / "step_7.pt"
    p.write_bytes(format1_bytes({"w": torch.ones(3), "step": 7}))
    out = ckpt.load(p)
    assert torch.equal(out["w"], torch.ones(3)) and out["step"] == 7
    assert ckpt.latest_valid(tmp_path)[0] == 7
    raw = bytearray(p.read_bytes())
    raw[-10] ^= 0x01
    p.write_bytes(bytes(raw))
    with pytest.raises(ckpt.CheckpointError, match="step_7.pt failed its checksum"):
        ckpt.load(p)


def test_temporary_files_and_sidecars_are_never_listed(tmp_path):
    ckpt.save(tmp_path / "step_4.pt", {"step": 4})
    (tmp_path / ".step_8.pt.tmp-123").write_bytes(b"half")
    (tmp_path / ".step_8.pt.sha256.tmp-123").write_bytes(b"half")
    (tmp_path / "step_8.pt.sha256").write_text("sha256 " + "0" * 64 + " format 2\n")
    assert [(s, p.name) for s, p in ckpt.list_checkpoints(tmp_path)] == [(4, "step_4.pt")]


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickle_that_runs_code_is_refused(tmp_path):
    # checkpoints whose checksum is valid and whose payload holds a pickled callable, in both formats
    buf = io.BytesIO()
    torch.save({"x": Evil()}, buf)
    p = tmp_path / "step_0.pt"
    p.write_bytes(buf.getvalue())
    ckpt.sidecar_path(p).write_text(ckpt.sidecar_line(buf.getvalue()))
    with pytest.raises(ckpt.CheckpointError, match="could not be loaded safely"):
        ckpt.load(p)
    q = tmp_path / "step_1.pt"
    q.write_bytes(format1_bytes({"x": Evil()}))
    with pytest.raises(ckpt.CheckpointError, match="could not be loaded safely"):
        ckpt.load(q)


def test_incompatible_version_is_refused(tmp_path):
    p = ckpt.save(tmp_path / "step_0.pt", {"a": 1})
    side = ckpt.sidecar_path(p)
    side.write_text(side.read_text().replace("format 2", "format 99"))
    with pytest.raises(ckpt.CheckpointError, match="step_0.pt has checkpoint format 99, this version of emergence "
                                                   "reads formats 1 and 2"):
        ckpt.load(p)
    q = tmp_path / "step_1.pt"
    q.write_bytes(format1_bytes({"a": 1}, version=99))
    with pytest.raises(ckpt.CheckpointError, match="step_1.pt has checkpoint format 99"):
        ckpt.load(q)


def test_failed_write_leaves_previous_file(tmp_path, monkeypatch):
    p = ckpt.save(tmp_path / "step_1.pt", {"v": 1})
    before = p.read_bytes()
    real_fsync = os.fsync

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left on device; the previous checkpoint is intact"):
        ckpt.save(tmp_path / "step_2.pt", {"v": 2})
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert p.read_bytes() == before and ckpt.load(p)["v"] == 1
    assert sorted(q.name for q in tmp_path.iterdir()) == ["step_1.pt", "step_1.pt.sha256"]


def test_disk_full_at_the_checkpoint_after_its_sidecar_leaves_no_orphan_sidecar(tmp_path, monkeypatch):
    real = ckpt.atomic_write_bytes

    def full_at_checkpoint(path, data):
        if path.name.endswith(".pt"):
            raise OSError(28, "No space left on device")
        real(path, data)

    monkeypatch.setattr(ckpt, "atomic_write_bytes", full_at_checkpoint)
    with pytest.raises(OSError, match="step_2.pt: No space left on device; the previous checkpoint is intact"):
        ckpt.save(tmp_path / "step_2.pt", {"v": 2})
    assert list(tmp_path.iterdir()) == []
