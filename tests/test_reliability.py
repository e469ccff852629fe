"""Reliability, proven by injecting the faults: kill -9 at chosen moments, corrupt checkpoints, NaN losses, jobs that
raise inside a multirun, concurrent aggregation and probing, a full disk, bad input and hostile names.

Precise kills use the fault-injection hook `emergence.files.fault_point`: a subprocess started with
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
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import TINY
from emergence import checkpoint as ckpt
from emergence import files
from emergence.config import compose, run_dir
from emergence.layout import read_status
from emergence.train import train

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
    ("step:1", 0),  # after the first optimizer step: only the step-0 checkpoint exists, the log is still empty
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
        p = emergence_cli("train", *overrides, env={files.FAULT_ENV: label})
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


# ---------------------------------------------------------------------------------------------------------------------
# 2. A corrupt checkpoint is detected by its checksum: resume falls back and says so; `emergence probe` goes on.

def flip_bit(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    path.write_bytes(bytes(raw))


def test_bit_flipped_newest_checkpoint_resume_falls_back_and_says_so(reference, tmp_path, capsys):
    overrides = [*TINY, *SMALL, f"paths.results={tmp_path}"]
    assert train(compose([*overrides, "train.fail_at_step=7"]))["state"] == "failed"  # stopped after step_6.pt
    folder = run_dir(compose(overrides))
    flip_bit(folder / "checkpoints" / "step_6.pt")
    with pytest.warns(UserWarning, match=r"step_6\.pt failed its checksum.*falling back to the previous checkpoint"):
        summary = train(compose(overrides))
    assert "resuming from step 4" in capsys.readouterr().err
    assert summary["state"] == "done"
    assert_equals_reference(folder, reference)  # step_6.pt was rewritten from step 4, identical to the original


@pytest.mark.slow
def test_probe_cli_names_the_bad_checkpoint_and_probes_the_rest(reference, tmp_path):
    import shutil

    run = tmp_path / reference["folder"].name
    shutil.copytree(reference["folder"], run)
    for name in ("probes", "instances", "samples"):
        (run / f"{name}.parquet").unlink()
    bad = run / "checkpoints" / "step_4.pt"
    bad.write_bytes(bad.read_bytes()[:-100])  # truncated, as by a full disk or an interrupted copy
    p = emergence_cli("probe", run)
    assert p.returncode == 0, p.stderr
    assert f"{bad} failed its checksum" in p.stderr and "probing the rest" in p.stderr
    probes = pd.read_parquet(run / "probes.parquet")
    assert sorted(set(probes["step"])) == [0, 1, 2, 6, 12]
    ref = reference["probes"]
    ref = ref[ref["step"] != 4].reset_index(drop=True)
    cols = [*PROBE_KEYS, "value", "status"]
    pd.testing.assert_frame_equal(probes.sort_values(PROBE_KEYS, ignore_index=True)[cols], ref[cols])


@pytest.mark.parametrize("label", ["write-after-rename:instances.parquet", "write-before-rename:probes.parquet"])
def test_a_probe_killed_between_its_files_is_redone_whole(reference, tmp_path, label):
    """Killed after a checkpoint's per-example rows are written but before its probe rows (the file that says what
    was probed): the rerun probes it again and every file ends as an uninterrupted probe leaves it."""
    import shutil

    run = tmp_path / reference["folder"].name
    shutil.copytree(reference["folder"], run)
    whole = {n: pd.read_parquet(run / f"{n}.parquet") for n in ("probes", "instances", "samples")}
    for n in whole:
        (run / f"{n}.parquet").unlink()
    p = emergence_cli("probe", run, env={files.FAULT_ENV: label})
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    assert (run / "instances.parquet").exists() and not (run / "probes.parquet").exists()
    p = emergence_cli("probe", run)
    assert p.returncode == 0, p.stderr
    for n, ref in whole.items():
        keys = ["step", "task", "metric"] if n == "probes" else ["step", "task", "example_id"]
        got = pd.read_parquet(run / f"{n}.parquet")
        assert len(got) == len(ref) and not got.duplicated(keys).any(), n
        cols = [c for c in ref.columns if c not in ("value", "answer_logprob", "sweep")]
        pd.testing.assert_frame_equal(got.sort_values(keys, ignore_index=True)[cols],
                                      ref.sort_values(keys, ignore_index=True)[cols], check_dtype=False)


def test_a_probe_row_without_its_examples_counts_as_not_probed(reference, tmp_path):
    """A run damaged by an earlier version (probe rows written, per-example rows lost): `emergence probe` redoes the
    checkpoints whose examples are missing instead of saying "0 new rows"."""
    import shutil

    from emergence.probe import probed_pairs

    run = tmp_path / reference["folder"].name
    shutil.copytree(reference["folder"], run)
    inst = pd.read_parquet(run / "instances.parquet")
    n_before = len(inst)
    inst[inst["step"] != 12].to_parquet(run / "instances.parquet")
    assert (12, "copy") not in probed_pairs(run) and (6, "copy") in probed_pairs(run)
    p = emergence_cli("probe", run)
    assert p.returncode == 0 and "new rows for 1 checkpoint(s) (steps [12])" in p.stdout, p.stdout + p.stderr
    assert len(pd.read_parquet(run / "instances.parquet")) == n_before


# ---------------------------------------------------------------------------------------------------------------------
# 3 and 4. In one multirun: a job that raises and a job whose loss becomes NaN. The other jobs finish, both are recorded
# with their error, the sweep exits non-zero, the analysis leaves them out and the report lists them; a rerun retries
# only the failed and the missing runs.

def test_a_diverged_run_is_final_and_the_command_says_so(tmp_path, capsys):
    from emergence.cli import main

    overrides = [*TINY, *SMALL, f"paths.results={tmp_path}"]
    assert main(["train", *overrides, "train.nan_at_step=5"]) == 1
    folder = run_dir(compose(overrides))
    files = {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["train", *overrides]) == 1  # not retrained: from step 4 it would diverge again
    out = capsys.readouterr().out
    assert "diverged earlier (loss became nan at step 6)" in out
    assert {p: p.stat().st_mtime_ns for p in files} == files and valid_steps(folder) == [0, 1, 2, 4]


# A fault for one grid point only, from the command line: the value is read from an environment variable named after
# the point (train.fail_at_step and train.nan_at_step are not part of a run's identity, so run ids do not change).
FAULTS = ["train.fail_at_step='${oc.decode:${oc.env:EMERGENCE_TEST_FAIL_${model.name}_${seed},-1}}'",
          "train.nan_at_step='${oc.decode:${oc.env:EMERGENCE_TEST_NAN_${model.name}_${seed},-1}}'"]


def sweep_overrides(root: Path, *extra) -> list[str]:
    tiny = [o for o in TINY if not o.startswith("model=")]
    return ["experiment=smoke", "model=l1d16,l1d24", "seed=0,1", *tiny, f"paths.results={root}", *extra]


def run_ids_by_point(root: Path) -> dict[tuple[str, int], str]:
    from emergence.sweep import plan

    _, runs = plan(sweep_overrides(root))
    return {(r["model"], r["seed"]): r["run_id"] for r in runs}


@pytest.mark.slow
def test_multirun_with_a_raising_job_and_a_diverging_job(tmp_path, monkeypatch, capfd):
    from analysis.flags import flag_emergence
    from analysis.schema import measured
    from emergence.cli import main

    ids = run_ids_by_point(tmp_path)
    failing, diverging = ids[("l1d16", 1)], ids[("l1d24", 1)]
    monkeypatch.setenv("EMERGENCE_TEST_FAIL_l1d16_1", "7")
    monkeypatch.setenv("EMERGENCE_TEST_NAN_l1d24_1", "5")
    assert main(["sweep", *sweep_overrides(tmp_path, "sweep.analyze=false", *FAULTS)]) == 1  # non-zero: not all done
    err = capfd.readouterr().err
    assert "1 failed, 1 diverged" in err
    folder = tmp_path / "smoke"
    runs = pd.read_parquet(folder / "runs.parquet").set_index("run_id")
    assert dict(runs["status"]) == {ids[("l1d16", 0)]: "done", failing: "failed",
                                    ids[("l1d24", 0)]: "done", diverging: "diverged"}
    assert runs.loc[failing, "error"] == "RuntimeError: injected failure at step 7 (train.fail_at_step)"
    assert runs.loc[diverging, "error"] == "loss became nan at step 6"
    # the diverged run keeps its last good checkpoint, and nothing after the NaN
    assert valid_steps(folder / "runs" / diverging) == [0, 1, 2, 4]
    results = pd.read_parquet(folder / "results.parquet")
    assert not results.duplicated(["run_id", *PROBE_KEYS]).any()
    for rid, status in ((failing, "failed"), (diverging, "diverged")):
        rows = results[results["run_id"] == rid]
        assert len(rows) and (rows["status"] == status).all() and rows["value"].isna().all()
    kept = measured(results)
    assert set(kept["run_id"]) == {ids[("l1d16", 0)], ids[("l1d24", 0)]}
    good = results[results["run_id"].isin(kept["run_id"])]
    pd.testing.assert_frame_equal(flag_emergence(results, n_boot=20), flag_emergence(good, n_boot=20))

    # rerun without the faults, after losing one finished run entirely (a run that never started)
    monkeypatch.delenv("EMERGENCE_TEST_FAIL_l1d16_1")
    monkeypatch.delenv("EMERGENCE_TEST_NAN_l1d24_1")
    import shutil

    shutil.rmtree(folder / "runs" / ids[("l1d24", 0)])
    untouched = {p: p.stat().st_mtime_ns for rid in (ids[("l1d16", 0)], diverging)
                 for p in (folder / "runs" / rid).rglob("*") if p.is_file()}
    assert main(["sweep", *sweep_overrides(tmp_path, "sweep.analyze=true")]) == 1  # the diverged run stays diverged
    err = capfd.readouterr().err
    assert f"[{ids[('l1d16', 0)]}] already done, skipped" in err
    assert f"[{diverging}] already diverged, skipped" in err
    assert f"{failing}: resuming from step 6" in err
    assert {p: p.stat().st_mtime_ns for p in untouched} == untouched  # skipped runs were not touched
    runs = pd.read_parquet(folder / "runs.parquet").set_index("run_id")
    assert dict(runs["status"]) == {ids[("l1d16", 0)]: "done", failing: "done",
                                    ids[("l1d24", 0)]: "done", diverging: "diverged"}
    results = pd.read_parquet(folder / "results.parquet")
    per_run = sum(len(pd.read_parquet(p)) for p in folder.glob("runs/*/probes.parquet"))
    assert len(results) == per_run and not results.duplicated(["run_id", *PROBE_KEYS]).any()
    assert diverging not in set(measured(results)["run_id"])
    # the report lists the diverged run with its error (Markdown escapes the underscores of the run id)
    for name, rid in (("report.md", diverging.replace("_", r"\_")), ("report.html", diverging)):
        text = (folder / name).read_text()
        assert rid in text and "diverged" in text and "loss became nan at step 6" in text, name


# ---------------------------------------------------------------------------------------------------------------------
# 5. Two processes probing or aggregating the same sweep at once lose no rows and write no duplicates.

def probe_config(run: Path):
    from omegaconf import OmegaConf

    from emergence.config import ProbeConfig

    return OmegaConf.merge(OmegaConf.structured(ProbeConfig), OmegaConf.load(run / "config.yaml").probe)


def _probe_child(run, only, barrier):
    """Probe `only` (None: every checkpoint) of `run` on slow storage: every read of a table takes half a second,
    which widens the read-modify-write window that concurrent writers would race through."""
    from emergence.probe import probe_run

    read = pd.read_parquet

    def slow_read(*args, **kwargs):
        out = read(*args, **kwargs)
        time.sleep(0.5)
        return out

    pd.read_parquet = slow_read  # in this forked child only
    barrier.wait(timeout=120)
    probe_run(run, probe_config(run), only=only)


def _aggregate_child(folder, times, barrier):
    from emergence.sweep import aggregate

    barrier.wait(timeout=120)
    for _ in range(times):
        aggregate(folder)


def start_together(target, arg_lists, *, parties_extra=0):
    """Fork one process per argument list; they start their work at the same instant (a barrier)."""
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(len(arg_lists) + parties_extra)
    procs = [ctx.Process(target=target, args=(*args, barrier)) for args in arg_lists]
    for p in procs:
        p.start()
    return procs, barrier


def join_all(procs):
    for p in procs:
        p.join(300)
    assert [p.exitcode for p in procs] == [0] * len(procs)


def copy_unprobed(run: Path, dest: Path) -> Path:
    import shutil

    out = dest / run.name
    shutil.copytree(run, out)
    for name in ("probes", "instances", "samples"):
        (out / f"{name}.parquet").unlink()
    return out


@pytest.mark.slow
def test_concurrent_probes_of_one_run_lose_no_rows_and_write_no_duplicates(reference, tmp_path):
    run = copy_unprobed(reference["folder"], tmp_path)
    paths = [p for _, p in ckpt.list_checkpoints(run / "checkpoints")]
    cols = [*PROBE_KEYS, "value", "status"]
    n_instances = len(pd.read_parquet(reference["folder"] / "instances.parquet"))

    def check():  # every row of the uninterrupted run's probing, each once
        probes = pd.read_parquet(run / "probes.parquet")
        assert not probes.duplicated(["run_id", *PROBE_KEYS]).any()
        pd.testing.assert_frame_equal(probes.sort_values(PROBE_KEYS, ignore_index=True)[cols],
                                      reference["probes"][cols])
        instances = pd.read_parquet(run / "instances.parquet")
        assert len(instances) == n_instances
        assert not instances.duplicated(["run_id", "step", "task", "example_id"]).any()

    # three processes probe different checkpoints of the same run at the same moment
    join_all(start_together(_probe_child, [(run, paths[i::3]) for i in range(3)])[0])
    check()
    # then two processes probe everything at once: all is done already, so nothing may be added twice
    join_all(start_together(_probe_child, [(run, None), (run, None)])[0])
    check()


def fake_sweep(root: Path, n_runs: int = 3, n_steps: int = 400) -> Path:
    """A sweep folder with finished runs and their probe rows, written directly (no training)."""
    from analysis.schema import coerce

    folder = root / "fake"
    for r in range(n_runs):
        rid = f"m{r}_s0_0000000{r}"
        (folder / "runs" / rid).mkdir(parents=True)
        (folder / "runs" / rid / "status.json").write_text(json.dumps({"state": "done", "run_id": rid}))
        rows = [{"sweep": "fake", "run_id": rid, "model": f"m{r}", "n_params": 1000 * 4**r, "n_params_nonembed": 500,
                 "n_layer": 1, "d_model": 16, "seed": 0, "step": s, "tokens": 100.0 * s, "flops": 600.0 * s,
                 "task": t, "metric": "exact_match", "value": 0.5, "stderr": 0.1, "n": 16, "status": "ok"}
                for s in range(n_steps) for t in ("copy", "add2")]
        coerce(pd.DataFrame(rows)).to_parquet(folder / "runs" / rid / "probes.parquet", index=False)
    return folder


def test_concurrent_aggregations_never_expose_a_partial_or_duplicated_table(tmp_path):
    folder = fake_sweep(tmp_path)
    expected = sum(len(pd.read_parquet(p)) for p in folder.glob("runs/*/probes.parquet"))
    procs, barrier = start_together(_aggregate_child, [(folder, 15), (folder, 15)], parties_extra=1)
    barrier.wait(timeout=120)
    reads = 0
    while any(p.is_alive() for p in procs):  # a reader meanwhile always finds a whole table, or none yet
        path = folder / "results.parquet"
        if path.exists():
            df = pd.read_parquet(path)
            assert len(df) == expected and not df.duplicated(["run_id", *PROBE_KEYS]).any()
            reads += 1
    join_all(procs)
    assert reads > 0
    df = pd.read_parquet(folder / "results.parquet")
    assert len(df) == expected and not df.duplicated(["run_id", *PROBE_KEYS]).any()
    assert len(pd.read_parquet(folder / "runs.parquet")) == 3
    assert temporaries(folder) == []


def test_a_second_process_on_a_run_in_training_waits_for_it_and_does_not_train_it_again(reference, tmp_path):
    """Two sweeps on one folder: the second reaches a run the first holds, says so, waits, and then finds it done."""
    overrides = [*TINY, *SMALL, f"paths.results={tmp_path}"]
    folder = run_dir(compose(overrides))
    err = tmp_path / "second.err"
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    with files.run_locks([folder]):  # this process is the first sweep, holding the run
        with open(err, "w") as stderr:
            second = subprocess.Popen([sys.executable, "-m", "emergence", "train", *overrides], stderr=stderr,
                                      stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": path})
        deadline = time.time() + 120
        while "waiting for it" not in err.read_text() and second.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert "is being trained by another process" in err.read_text(), err.read_text()
        assert not folder.exists()  # the second process wrote nothing while it waited
        assert train(compose(overrides))["state"] == "done"  # re-entrant: this process holds the lock already
        finished = read_status(folder)["finished"]
    assert second.wait(timeout=120) == 0, err.read_text()
    status = read_status(folder)
    assert status["finished"] == finished and status["pid"] == os.getpid()  # recognised as done, not retrained
    assert_equals_reference(folder, reference)
    assert not files.lock_path(folder).exists()


def test_a_run_refused_after_taking_its_lock_leaves_nothing(tmp_path):
    from emergence.config import ConfigError

    cfg = compose([*TINY, f"paths.results={tmp_path / 'results'}", "model=pythia-1b", "data.seq_len=2048",
                   "train.batch_size=512"])
    with pytest.raises(ConfigError, match="GiB but this machine has"):
        train(cfg)  # the memory pre-flight runs on the device, after the lock is taken
    assert list(tmp_path.iterdir()) == []


def test_a_final_checkpoint_that_fails_its_checksum_is_never_reported_done(reference, tmp_path, monkeypatch):
    """Another writer (or the disk) corrupts the final checkpoint after it was written: the run ends failed, not done,
    and the same command trains it again from its last good checkpoint."""
    from emergence import run

    overrides = [*TINY, *SMALL, f"paths.results={tmp_path}"]
    folder = run_dir(compose(overrides))
    final = max(reference["checkpoints"])
    real_save = run.save_checkpoint

    def save_then_corrupt(folder_, state, *args):
        path = real_save(folder_, state, *args)
        if state["step"] == final:
            flip_bit(path)
        return path

    monkeypatch.setattr(run, "save_checkpoint", save_then_corrupt)
    summary = train(compose(overrides))
    assert summary["state"] == "failed" and "failed its checksum" in summary["error"], summary
    assert read_status(folder)["state"] == "failed"
    monkeypatch.setattr(run, "save_checkpoint", real_save)
    with pytest.warns(UserWarning, match="failed its checksum"):
        assert train(compose(overrides))["state"] == "done"
    assert_equals_reference(folder, reference)


# ---------------------------------------------------------------------------------------------------------------------
# 6. A write that fails (disk full, simulated) leaves the previous checkpoint and results intact, with a clear error.

ENOSPC = OSError(28, os.strerror(28))


def test_disk_full_during_a_checkpoint_keeps_the_previous_one_and_says_so(reference, tmp_path, monkeypatch, capsys):
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to tell which file an fsync is for")
    from emergence.cli import main

    overrides = [*TINY, *SMALL, f"paths.results={tmp_path}"]
    real_fsync = os.fsync
    full = []

    def fsync(fd):  # the disk fills up while step_6.pt is written, and stays full
        if full or ".step_6.pt.tmp" in os.readlink(f"/proc/self/fd/{fd}"):
            full.append(fd)
            raise OSError(ENOSPC.errno, ENOSPC.strerror)
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    assert main(["train", *overrides]) == 2
    err = capsys.readouterr().err
    assert "step_6.pt: No space left on device; the previous checkpoint is intact" in err
    last = err.strip().splitlines()[-1]  # the run's status could not be written either: said on one line, no traceback
    assert last.startswith("emergence train: error:") and "No space left on device" in last and "status.json" in last
    folder = run_dir(compose(overrides))
    assert valid_steps(folder) == [0, 1, 2, 4] and temporaries(folder) == []
    monkeypatch.setattr(os, "fsync", real_fsync)  # space freed: the same command resumes from step 4
    assert main(["train", *overrides]) == 0
    assert_equals_reference(folder, reference)


def test_disk_full_while_aggregating_keeps_the_previous_tables(tmp_path, monkeypatch):
    from emergence.sweep import aggregate

    folder = fake_sweep(tmp_path)
    aggregate(folder)
    before = {p.name: p.read_bytes() for p in folder.glob("*.parquet")}
    assert {"results.parquet", "runs.parquet"} <= set(before)
    (folder / "runs" / "m0_s0_00000000" / "status.json").write_text(json.dumps({"state": "failed", "error": "x"}))

    def half_written(self, path, *args, **kwargs):
        Path(path).write_bytes(b"PAR1" + bytes(64))  # the first bytes reach the disk, then it is full
        raise OSError(ENOSPC.errno, ENOSPC.strerror)

    monkeypatch.setattr(pd.DataFrame, "to_parquet", half_written)
    with pytest.raises(OSError, match=r"could not write .*runs\.parquet.*No space left on device.*previous file is "
                                      r"intact"):
        aggregate(folder)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in folder.glob("*.parquet")} == before
    assert temporaries(folder) == []


# ---------------------------------------------------------------------------------------------------------------------
# 7 and 9. Bad input and hostile names: one clear line on stderr, a non-zero exit, nothing written. Each case runs the
# real command in its own folder; the commands run concurrently to keep the test short.

def write_table(folder: Path, name: str, **change) -> None:
    """A small valid results table (4 sizes x 2 seeds), changed as asked, written as `name`."""
    from analysis.schema import coerce

    rows = [{"sweep": "t", "run_id": f"r{i}_{s}", "model": f"m{i}", "n_params": 10_000 * 4**i,
             "n_params_nonembed": 5_000 * 4**i, "n_layer": 1, "d_model": 16, "seed": s, "step": 100,
             "tokens": 1e4, "flops": 6e4 * 4**i, "task": "copy", "metric": m, "value": v, "stderr": 0.01, "n": 64,
             "status": "ok"} for i in range(4) for s in (0, 1)
            for m, v in (("exact_match", 0.2 * i), ("answer_nll", 2.0 - 0.4 * i))]
    df = coerce(pd.DataFrame(rows))
    if change.get("drop"):
        df = df.drop(columns=change["drop"])
    if change.get("all_nan"):
        df["value"], df["status"] = float("nan"), "not_measured"
    if change.get("one_size"):
        df["n_params"] = 10_000
    if change.get("text_in"):
        df = df.astype({change["text_in"]: object})
        df.loc[0, change["text_in"]] = "many"
    if change.get("times"):  # every row repeated; with "contradict", the repeats disagree on the value
        copies = [df.assign(value=df["value"] + 0.01 * k if change.get("contradict") else df["value"])
                  for k in range(change["times"])]
        df = pd.concat(copies, ignore_index=True)
    for col, value in change.get("set_first", {}).items():
        df.loc[0, col] = value
    if name.endswith(".csv"):
        df.to_csv(folder / name, index=False)
    else:
        df.to_parquet(folder / name, index=False)


def incompatible_checkpoint(folder: Path, name: str) -> None:
    p = ckpt.save(folder / name, {"model": {}, "step": 0})
    side = ckpt.sidecar_path(p)
    side.write_text(side.read_text().replace(f"format {ckpt.FORMAT_VERSION}", "format 99"))


def empty_suite(folder: Path) -> None:
    """A task suite of the user's own (on Hydra's search path) that lists no training task."""
    (folder / "conf" / "task").mkdir(parents=True)
    (folder / "conf" / "task" / "empty.yaml").write_text("name: empty\ntrain: {}\n")


BAD_INPUT = {  # case: (prepare the folder, command, what the one line must say)
    "unknown config key": (None, ["sweep", "experiment=smoke", "train.bogus=1"], "bogus"),
    "wrong type": (None, ["sweep", "experiment=smoke", "seed=abc"], "seed"),
    "d_model not divisible by heads": (None, ["sweep", "experiment=smoke", "model.n_head=3"], "not divisible"),
    "memory need beyond the machine": (None, ["train", "model=pythia-1b", "train.batch_size=100000"],
                                       "GiB but this machine has"),
    "empty task list": (empty_suite, ["train", "model=l1d16", "task=empty", "hydra.searchpath=[file://{d}/conf]"],
                        "empty training list"),
    "sweep with one size": (None, ["sweep", "experiment=smoke", "model=l1d16"], "one model size (l1d16)"),
    "table missing a column": (lambda d: write_table(d, "r.parquet", drop=["value"]), ["analyze", "{d}/r.parquet"],
                               "missing column(s) 'value'"),
    "table with a wrong type": (lambda d: write_table(d, "r.csv", text_in="n_params"), ["analyze", "{d}/r.csv"],
                                "column 'n_params' must be numeric"),
    "all-NaN curves": (lambda d: write_table(d, "r.parquet", all_nan=True), ["analyze", "{d}/r.parquet"],
                       "no measured values"),
    "results of one size": (lambda d: write_table(d, "r.parquet", one_size=True), ["analyze", "{d}/r.parquet"],
                            "nothing to compare"),
    "every row three times": (lambda d: write_table(d, "r.csv", times=3), ["analyze", "{d}/r.csv"],
                              "48 rows share a run, step, task and metric with another row (all repeat another row "
                              "exactly"),
    "contradictory duplicates": (lambda d: write_table(d, "r.csv", times=2, contradict=True),
                                 ["analyze", "{d}/r.csv"], "they disagree with each other"),
    "a size below zero": (lambda d: write_table(d, "r.csv", set_first={"n_params": -10}), ["analyze", "{d}/r.csv"],
                          "column 'n_params' must be positive, found -10 on 1 row(s)"),
    "a negative stderr": (lambda d: write_table(d, "r.csv", set_first={"stderr": -0.5}), ["analyze", "{d}/r.csv"],
                          "column 'stderr' must be zero or more, found -0.5"),
    "malformed lm-eval JSON": (lambda d: (d / "r.json").write_text('{"results": {"arc_easy": {"acc": '),
                               ["analyze", "{d}/r.json", "--from", "lm-eval"], "malformed JSON"),
    "checkpoint of another format version": (lambda d: incompatible_checkpoint(d, "step_0.pt"),
                                             ["generate", "{d}/step_0.pt", "1+1="], "format 99"),
    "'../' in sweep.name": (None, ["train", "model=l1d16", "sweep.name=../escaped"], "not a safe folder name"),
}


@pytest.fixture(scope="module")
def bad_input_results(tmp_path_factory):
    """Run every bad-input command, four at a time; return case -> (exit status, stderr, folder, files before)."""
    logs = tmp_path_factory.mktemp("logs")
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    started = {}
    for i, (case, (prepare, argv, _)) in enumerate(BAD_INPUT.items()):
        d = tmp_path_factory.mktemp("bad")
        (d / "results").mkdir()
        if prepare:
            prepare(d)
        before = sorted(p.relative_to(d) for p in d.rglob("*"))
        args = [a.replace("{d}", str(d)) for a in argv]
        if args[0] in ("train", "sweep"):
            args.append(f"paths.results={d / 'results'}")
        while sum(proc.poll() is None for proc, *_ in started.values()) >= 4:
            time.sleep(0.05)
        err = open(logs / f"{i}.err", "w+")
        proc = subprocess.Popen([sys.executable, "-m", "emergence", *args], stdout=subprocess.DEVNULL, stderr=err,
                                text=True, cwd=d, env={**os.environ, "PYTHONPATH": path})
        started[case] = (proc, err, d, before)
    results = {}
    for case, (proc, err, d, before) in started.items():
        proc.wait(timeout=300)
        err.seek(0)
        results[case] = (proc.returncode, err.read(), d, before)
        err.close()
    return results


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_gives_one_clear_line_nonzero_exit_and_writes_nothing(bad_input_results, case):
    rc, stderr, folder, before = bad_input_results[case]
    verb, expected = BAD_INPUT[case][1][0], BAD_INPUT[case][2]
    assert rc == 2, (rc, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith(f"emergence {verb}: error: ") and expected in lines[0], lines[0]
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before  # nothing half-written
    assert not (folder.parent / "escaped").exists()


@pytest.mark.parametrize("name", ["../escaped", "a/../../b", "/tmp/abs", "..", "a/b", ".hidden", "x\\..\\y", ""])
def test_sweep_and_model_names_cannot_leave_the_results_folder(tiny, name):
    from emergence.config import ConfigError, validate

    for key in ("sweep.name", "model.name"):
        with pytest.raises(ConfigError, match="not a safe folder name"):
            validate(tiny(f"{key}='{name}'"))


@pytest.mark.slow
def test_report_escapes_a_task_named_script(tmp_path):
    """A hostile task name (from an imported table, say) is shown as text, never run as markup."""
    from analysis.pipeline import run_analysis
    from analysis.report import write_report

    hostile = "<script>alert('x')</script>"
    folder = tmp_path / "sweep"
    folder.mkdir()
    write_table(folder, "results.parquet")
    df = pd.read_parquet(folder / "results.parquet")
    df["task"] = hostile
    df.to_parquet(folder / "results.parquet", index=False)
    run_analysis(df, folder, n_boot=20)
    write_report(folder)
    html = (folder / "report.html").read_text()
    assert hostile in pd.read_csv(folder / "flags.csv")["task"].tolist()  # the name reached the report's inputs
    assert "<script>alert" not in html and "&lt;script&gt;alert" in html
    assert "<script>alert" not in (folder / "report.md").read_text()


def _alive(pid: int) -> bool:
    """Whether a process runs (a zombie, dead but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads processes from /proc")
def test_killing_a_parallel_sweep_stops_its_workers(tmp_path):
    """kill -9 of `emergence sweep` with the joblib launcher: its loky workers, training, stop within seconds
    instead of training on unseen (they would hold their runs' locks for as long)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    args = [sys.executable, "-m", "emergence", "sweep", *[o for o in TINY if not o.startswith("model=")],
            "train.max_steps=1000000", "hydra/launcher=parallel", "hydra.sweeper.params.model=l1d8,l1d16",
            "sweep.analyze=false", f"paths.results={tmp_path}", "sweep.name=orphans"]
    with open(tmp_path / "sweep.err", "w") as err:
        sweep = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, "PYTHONPATH": path})
    workers = []
    try:
        deadline = time.time() + 180
        while len(workers) < 2 and time.time() < deadline and sweep.poll() is None:
            time.sleep(0.5)
            pids = {read_status(d).get("pid") for d in (tmp_path / "orphans" / "runs").glob("*")
                    if d.is_dir() and (d / "status.json").exists()}
            workers = sorted(int(p) for p in pids if p and _alive(int(p)))  # one per job: its seeds train stacked
        assert len(workers) == 2 and sweep.poll() is None, (tmp_path / "sweep.err").read_text()[-3000:]
        assert all(w != sweep.pid and _alive(w) for w in workers)
        sweep.send_signal(signal.SIGKILL)
        sweep.wait(timeout=30)
        deadline = time.time() + 30
        while any(_alive(w) for w in workers) and time.time() < deadline:
            time.sleep(0.5)
        assert not any(_alive(w) for w in workers), "workers outlived the sweep that started them"
    finally:
        for w in [sweep.pid, *workers]:
            try:
                os.kill(w, signal.SIGKILL)
            except OSError:
                pass


def test_a_worker_whose_sweep_died_before_its_job_began_stops_at_once():
    """A worker handed its job after the sweep that started it was killed (already reparented) stops before it
    trains; a process that is another's child and whose recorded launcher lives is left alone."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    code = ("import os, sys; os.environ['EMERGENCE_LAUNCHER_PID'] = sys.argv[1]; "
            "from emergence.sweep import watch_launcher; print('watching' if watch_launcher() else 'left alone')")
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    dead = subprocess.run([sys.executable, "-c", code, str(gone.pid)], capture_output=True, text=True, env=env)
    assert dead.returncode == 1 and "is gone; stopping" in dead.stderr and "left alone" not in dead.stdout
    alive = subprocess.run([sys.executable, "-c", code, "1"], capture_output=True, text=True, env=env)
    assert alive.returncode == 0 and alive.stdout.strip() == "left alone", alive.stderr
