"""Storage in one place: atomic writes (a reader sees the old file or the new one, never half of one), the
clean-up of what a killed writer left behind, the fault points the reliability tests kill a process at, and the
code version and environment every run and sweep records.
"""
from __future__ import annotations

import contextlib
import os
import platform
import re
import signal
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

from emergence import __version__


@lru_cache(maxsize=1)
def code_version() -> str:
    """The package version and, when run from a git checkout, the commit (with '+dirty' for local changes)."""
    root = Path(__file__).resolve().parents[1]
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        if rev.returncode == 0:
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            return f"{__version__}+g{rev.stdout.strip()}{'.dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        pass
    return __version__


def environment() -> dict[str, Any]:
    """What a reader needs to reproduce the sweep: code revision, package versions, machine."""
    import importlib.metadata as md  # slow import (tens of ms): here only, not for every importer of files

    versions = {}
    for pkg in ("emergence", "torch", "hydra-core", "omegaconf", "numpy", "pandas", "scipy", "matplotlib", "wandb"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"git_rev": code_version(), "versions": versions, "python": platform.python_version(),
            "machine": f"{platform.system()} {platform.machine()}, {cores} cores, {platform.processor() or ''}".strip()}


FAULT_ENV = "EMERGENCE_FAULT"


def fault_point(label: str, file=None) -> None:
    """Fault injection for the reliability tests: if the environment variable EMERGENCE_FAULT equals `label`, this
    process kills itself with SIGKILL here, as a preemption or the OOM killer would (no cleanup, no `finally`).

    Labels: `write-half:<file name>` (half the bytes are in the temporary file), `write-before-rename:<file name>`,
    `write-after-rename:<file name>` (in `atomic_write_bytes`; the last two in `atomic_write_parquet` too) and
    `step:<N>` (the training loop, right after optimizer step N). Unset, as outside the tests, it costs one
    dictionary lookup.
    """
    if os.environ.get(FAULT_ENV) == label:
        if file is not None:
            file.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically: temporary file, fsync, rename, fsync of the folder.

    On any error (a full disk, say) the temporary file is removed and the previous file at `path` is untouched.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            view = memoryview(data)
            f.write(view[:len(view) // 2])
            fault_point(f"write-half:{path.name}", f)
            f.write(view[len(view) // 2:])
            f.flush()
            os.fsync(f.fileno())
        fault_point(f"write-before-rename:{path.name}")
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno is not None and not e.filename:  # fsync's error names no file
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    fault_point(f"write-after-rename:{path.name}")
    try:
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def atomic_write_parquet(df, path: Path) -> None:
    """Write a DataFrame as parquet to a temporary file, then rename it over `path`: readers see the old table or
    the new one, never half of one. On an error (a full disk) the previous file is intact and the message says so."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        df.to_parquet(tmp, index=False)
        fault_point(f"write-before-rename:{path.name}")
        os.replace(tmp, path)
        fault_point(f"write-after-rename:{path.name}")
    except OSError as e:
        raise OSError(f"could not write {path}: {e}; the previous file is intact") from e
    finally:
        tmp.unlink(missing_ok=True)


TEMPORARY = re.compile(r"^\..+\.tmp-(\d+)$")


def remove_stale_temporaries(*folders: Path) -> list[Path]:
    """Delete the temporary files (`.<name>.tmp-<pid>`) that a killed writer left behind: a half-written checkpoint
    of a large model is gigabytes. A file whose writer is still alive is kept. Returns the deleted paths."""
    removed = []
    for folder in folders:
        for p in Path(folder).glob(".*.tmp-*"):
            m = TEMPORARY.match(p.name)
            if m and int(m.group(1)) != os.getpid() and not pid_alive(int(m.group(1))):
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def pid_alive(pid) -> bool:
    """Whether a process with this id exists (one that belongs to another user counts); False for no id."""
    try:
        pid = int(pid)
    except (TypeError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to someone else
        return True
    return True


def write_json(path: Path, obj) -> None:
    """`obj` as indented JSON, written atomically (anything not JSON-native as its str)."""
    import json

    atomic_write_bytes(Path(path), json.dumps(obj, indent=1, default=str).encode())


_HELD_LOCKS: dict[Path, int] = {}  # lock path -> how many nested `run_locks` of this process hold it


def lock_path(folder: Path) -> Path:
    """The lock file of run folder `folder`: beside it, `.<run id>.lock`, so that taking it writes nothing inside."""
    folder = Path(folder).resolve()  # one spelling per folder: two would sort apart and lock twice
    return folder.with_name(f".{folder.name}.lock")


def _lock_file(path: Path, say) -> int:
    """An open descriptor of lock file `path`, holding its exclusive flock (waiting for another holder, said once)."""
    import fcntl

    said = False
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # a refused run's release removed the empty folder meanwhile
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                if not said:
                    say(f"run {path.name[1:-5]} is being trained by another process (pid {holder}); waiting for it")
                    said = True
                fcntl.flock(fd, fcntl.LOCK_EX)
            if os.path.exists(path) and os.stat(path).st_ino == os.fstat(fd).st_ino:
                with contextlib.suppress(OSError):  # the holder's pid, for the message of the next waiter
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, str(os.getpid()).encode(), 0)
                return fd
        except BaseException:
            os.close(fd)  # never leave a descriptor holding the lock behind
            raise
        os.close(fd)  # a holder that released the file removed it meanwhile: open the new one


@contextlib.contextmanager
def run_locks(folders, say=None):
    """Hold one exclusive lock per run folder while the body trains them: a second process that reaches a run held
    by another waits for it (saying so once through `say`, by default on stderr), then finds it as the first left
    it, done or resumable.

    Locks are `flock`s, released by the kernel when the holder dies (kill -9 included); they are taken in sorted order
    (no two processes deadlock) and are re-entrant within a process (a stack resumes a started seed by `train()`).
    Each lock file is removed on release, with any folder this call created for it, so a run refused before it wrote
    anything leaves nothing behind."""
    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    taken: list[tuple[Path, int]] = []
    created: list[Path] = []
    try:
        for path in sorted({lock_path(f) for f in folders}):
            if _HELD_LOCKS.get(path):
                _HELD_LOCKS[path] += 1
                taken.append((path, -1))
                continue
            created.extend(p for p in [path.parent, *path.parent.parents] if not p.exists())  # deepest first
            fd = _lock_file(path, say)
            _HELD_LOCKS[path] = 1
            taken.append((path, fd))
        yield
    finally:
        for path, fd in reversed(taken):
            _HELD_LOCKS[path] -= 1
            if fd < 0:
                continue
            del _HELD_LOCKS[path]
            with contextlib.suppress(OSError):
                path.unlink()  # before the unlock: a waiter that wakes on this file sees it gone and opens afresh
            os.close(fd)
        for d in created:
            with contextlib.suppress(OSError):
                d.rmdir()  # only if still empty
