"""`emergence sweep` end to end: the smoke experiment, skip/resume, launchers, status, dry run, DDP."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from analysis.schema import validate
from emergence import checkpoint as ckpt
from emergence.config import compose
from emergence.sweep import expand_grid, plan, stacked_overrides

ROOT = Path(__file__).resolve().parents[1]


def emergence(*args, cwd=None, timeout=900):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "emergence", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout)


def test_grid_expands_experiment_and_command_line():
    _, points = expand_grid(["experiment=smoke"])
    assert len(points) == 4 and all("seed=0" in p for p in points)
    _, points = expand_grid(["experiment=smoke", "seed=0,1,2"])
    assert len(points) == 12
    _, points = expand_grid(["experiment=smoke", "model=l1d8"])
    assert len(points) == 1 and "model=l1d8" in points[0]


def test_a_plan_lists_each_run_once_and_reads_a_sweeper_params_override_as_a_list(tmp_path):
    """The default experiment stacks its 6 seeds per size: the plan still has one record per (size, seed); and the
    grid axis given as `hydra.sweeper.params.model=a,b` is two sizes, not one named "a,b"."""
    _, runs = plan(["experiment=cpu_demo", "model=l1d6,l1d7,l1d8", f"paths.results={tmp_path}"])
    assert len(runs) == 18 and len({r["run_id"] for r in runs}) == 18
    assert sorted({(r["model"], r["seed"]) for r in runs}) == [(m, s) for m in ("l1d6", "l1d7", "l1d8")
                                                                for s in range(6)]
    _, runs = plan(["experiment=cpu_demo", "hydra.sweeper.params.model=l1d6,l1d7", f"paths.results={tmp_path}"])
    assert sorted({r["model"] for r in runs}) == ["l1d6", "l1d7"] and len(runs) == 12
    _, points = expand_grid(["experiment=cpu_demo", "hydra.sweeper.params.model='l1d6,l1d7'", "seed=0"])
    assert points == [["experiment=cpu_demo", "model=l1d6", "seed=0"], ["experiment=cpu_demo", "model=l1d7", "seed=0"]]


@pytest.mark.slow
def test_smoke_sweep_end_to_end_then_skip(tmp_path):
    p = emergence("sweep", "experiment=smoke", f"paths.results={tmp_path}")
    assert p.returncode == 0, p.stderr[-3000:]
    folder = tmp_path / "smoke"
    assert f"report: {folder / 'report.html'}" in p.stderr  # the last line says where to look
    runs = pd.read_parquet(folder / "runs.parquet")
    assert len(runs) == 4 and (runs["status"] == "done").all()
    assert runs["n_params"].is_monotonic_increasing or runs["n_params"].nunique() == 4
    res = validate(pd.read_parquet(folder / "results.parquet"))
    steps = ckpt.schedule(60, 8, 30)
    # every checkpoint of every run probed on every metric, no duplicates
    em = res[(res["task"] == "copy") & (res["metric"] == "exact_match")]
    assert len(em) == 4 * len(steps) and not em.duplicated(["run_id", "step"]).any()
    assert set(res["task"]) == {"lm", "copy", "mechanistic"}
    assert {"exact_match", "token_accuracy", "answer_nll", "brier", "edit_distance"} <= set(res["metric"])
    lm = res[res["task"] == "lm"].sort_values("step")
    first, last = lm.groupby("run_id")["value"].first(), lm.groupby("run_id")["value"].last()
    assert (last < first).all()  # every size's held-out loss fell
    for name in ("fits.csv", "flags.csv", "report.html", "report.md", "meta.json", "grid.json"):
        assert (folder / name).exists(), name
    flags = pd.read_csv(folder / "flags.csv")
    assert {"task", "metric", "verdict", "evidence"} <= set(flags.columns) and len(flags)
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["command"].startswith("emergence sweep") and "torch" in meta["versions"]
    # a second run of the same command trains nothing, and analyses nothing: its inputs have not changed
    before = {p: p.stat().st_mtime_ns for p in folder.glob("runs/*/checkpoints/*.pt")}
    analysed = {n: (folder / n).stat().st_mtime_ns for n in ("flags.csv", "fits.csv", "report.html")}
    p = emergence("sweep", "experiment=smoke", f"paths.results={tmp_path}")
    assert p.returncode == 0
    assert "4 already done" in p.stderr and "unchanged since the last analysis" in p.stderr
    assert {p: p.stat().st_mtime_ns for p in folder.glob("runs/*/checkpoints/*.pt")} == before
    assert {n: (folder / n).stat().st_mtime_ns for n in analysed} == analysed
    # status from files alone
    s = emergence("status", str(folder))
    assert s.returncode == 0 and s.stdout.count(" done ") == 4
    # a sweep folder copied without its run folders (as results/example is committed): read from runs.parquet
    copy = tmp_path / "copied"
    copy.mkdir()
    shutil.copy(folder / "runs.parquet", copy / "runs.parquet")
    s = emergence("status", str(copy))
    assert s.returncode == 0 and s.stdout.count(" done ") == 4 and "as runs.parquet recorded them" in s.stdout
    # a failure after the runs (here aggregation: runs.parquet cannot be replaced) is an error, not a warning
    (folder / "runs.parquet").unlink()
    (folder / "runs.parquet").mkdir()
    p = emergence("sweep", "experiment=smoke", f"paths.results={tmp_path}")
    assert p.returncode == 1 and "error: aggregation failed (OSError: could not write" in p.stderr, p.stderr[-2000:]


TINY_GRID = ["experiment=smoke", "train.max_steps=8", "train.ckpt_log_until=2", "train.ckpt_every=4",
             "probe.n=8", "probe.generate_n=2", "probe.mechanistic=false", "sweep.analyze=false",
             "model=l1d8,l1d12"]


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["parallel", "local_submitit"])
def test_launchers_run_the_grid(tmp_path, launcher):
    p = emergence("sweep", *TINY_GRID, f"hydra/launcher={launcher}", f"paths.results={tmp_path}")
    assert p.returncode == 0, p.stderr[-3000:]
    runs = pd.read_parquet(tmp_path / "smoke" / "runs.parquet")
    assert list(runs["status"]) == ["done", "done"]
    res = pd.read_parquet(tmp_path / "smoke" / "results.parquet")
    assert set(res["run_id"]) == set(runs["run_id"])


@pytest.mark.slow
def test_changed_config_is_a_new_run_and_interrupted_run_resumes(tmp_path):
    base = [*TINY_GRID[:-1], "model=l1d8", f"paths.results={tmp_path}"]
    p = emergence("sweep", *base, "train.fail_at_step=5")
    assert p.returncode == 1 and "failed" in p.stderr
    runs = pd.read_parquet(tmp_path / "smoke" / "runs.parquet")
    assert runs["status"].tolist() == ["failed"] and "injected failure" in runs["error"].iloc[0]
    p = emergence("sweep", *base)  # same run id (fault key is not identity): resumes from step 4
    assert p.returncode == 0, p.stderr[-2000:]
    assert "resuming from step 4" in p.stderr
    p = emergence("sweep", *base, "train.lr=0.001")  # a changed config is a new run
    assert p.returncode == 0
    assert len(list((tmp_path / "smoke" / "runs").iterdir())) == 2


def test_dry_run_lists_runs_without_training(tmp_path):
    p = emergence("sweep", "experiment=smoke", f"paths.results={tmp_path}", "--dry-run")
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("not_started") == 4 and "est. wall" in p.stdout
    assert not (tmp_path / "smoke").exists()


def test_plan_refuses_bad_points(tmp_path):
    with pytest.raises(Exception, match="not divisible"):
        plan(["experiment=smoke", f"paths.results={tmp_path}", "model.n_head=5"])


@pytest.mark.slow
def test_ddp_two_cpu_processes_match_one(tmp_path, text_file):
    common = ["model=l1d16", "data=text", f"data.text_path={text_file}", "data.seq_len=32", "train.max_steps=6",
              "train.batch_size=8", "train.ckpt_log_until=0", "train.ckpt_every=100", "probe.inline=false",
              "train.progress=false", "train.threads=1", "train.warmup_steps=1"]
    one = emergence("train", *common, f"paths.results={tmp_path / 'one'}")
    assert one.returncode == 0, one.stderr
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          "29517", "-m", "emergence", "train", *common, f"paths.results={tmp_path / 'two'}"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    a = ckpt.load(next((tmp_path / "one").glob("*/runs/*/checkpoints/step_6.pt")))["model"]
    b = ckpt.load(next((tmp_path / "two").glob("*/runs/*/checkpoints/step_6.pt")))["model"]
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), k
    assert any(not torch.equal(a[k], ckpt.load(next((tmp_path / "one").glob("*/runs/*/checkpoints/step_0.pt")))
                               ["model"][k]) for k in a)


@pytest.mark.slow
def test_stacked_sweep_trains_the_seeds_of_a_size_in_one_job(tmp_path):
    grid = [*TINY_GRID, "seed=0,1,2", f"paths.results={tmp_path}"]
    # l1d8 (1,840 parameters) is stacked, its seeds in groups of at most 2 (sweep.stack_size): jobs [0, 1] and [2];
    # l1d12 (above the limit) trains its seeds one after another in its jobs
    p = emergence("sweep", *grid, "sweep.stack_seeds=true", "sweep.stack_max_params=2000", "sweep.stack_size=2")
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stderr.count("[job ") == 4 and "[job 4/4]" in p.stderr
    assert "seeds [0, 1] stacked" in p.stderr and "seeds [2] stacked" in p.stderr and "one after another" in p.stderr
    runs = pd.read_parquet(tmp_path / "smoke" / "runs.parquet")
    _, planned = plan(grid)
    assert sorted(runs["run_id"]) == sorted(r["run_id"] for r in planned)  # the same runs as without stacking
    assert list(runs["status"]) == ["done"] * 6
    for _, r in runs.iterrows():
        st = json.loads((tmp_path / "smoke" / "runs" / r["run_id"] / "status.json").read_text())
        want = None if r["model"] != "l1d8" else 2 if r["seed"] < 2 else 1
        assert st.get("stacked_with") == want, (r["run_id"], st.get("stacked_with"))
    res = pd.read_parquet(tmp_path / "smoke" / "results.parquet")
    assert set(res["run_id"]) == set(runs["run_id"]) and set(res["seed"]) == {0, 1, 2}
    p = emergence("sweep", *grid, "sweep.seeds=[0,1]")
    assert p.returncode == 2 and "sweep.seeds is set by `emergence sweep`" in p.stderr
    p = emergence("sweep", *grid, "sweep.stack_seeds=true", "sweep.stack_size=-1")
    assert p.returncode == 2 and "sweep.stack_size must be 0" in p.stderr


def test_stacked_overrides_fold_the_seed_axis_into_groups_of_stack_size():
    runs = [{"seed": s} for s in (0, 1, 2, 3, 4)]
    assert stacked_overrides(["model=a,b", "seed=0,1,2,3,4"], runs) == ["model=a,b", "seed=0", "sweep.seeds=[0,1,2,3,4]"]
    assert stacked_overrides(["model=a,b", "seed=0,1,2,3,4"], runs, 2)[-1] == "sweep.seeds=[0,1],[2,3],[4]"
    assert stacked_overrides(["model=a"], [{"seed": 0}], 2) == ["model=a"]  # one seed: nothing to fold


def test_the_default_demo_is_the_design_the_study_chose_with_six_stacked_seeds():
    """cpu_demo (sweeps/design_study.py): 6 one-layer sizes, steps of at most 0.15 decades through 2.5k parameters
    (where the additions are acquired), 6M tokens per run, 6 seeds each, the seeds of a size
    stacked in one job, the largest job first, and an even number of jobs (no worker idle in the last round)."""
    _, points = expand_grid(["experiment=cpu_demo"])
    _, planned = plan(["experiment=cpu_demo"])
    models = sorted({r["model"] for r in planned}, key=lambda m: int(m[3:]))
    assert models == ["l1d6", "l1d7", "l1d8", "l1d10", "l1d14", "l1d24"]
    assert len(points) == len(planned) == 36 and "model=l1d24" in points[0]
    seeds = {m: sorted(r["seed"] for r in planned if r["model"] == m) for m in models}
    assert all(s == [0, 1, 2, 3, 4, 5] for s in seeds.values())
    n = sorted({r["n_params"] for r in planned})
    steps = np.diff(np.log10(n))
    assert 1_200 < n[0] < 1_300 and n[-1] > 10_000
    assert steps[np.array(n[1:]) <= 2_600].max() <= 0.15
    cfg = compose(points[0])
    assert cfg.sweep.stack_seeds and max(n) <= cfg.sweep.stack_max_params  # every size is one stacked job
    assert cfg.train.tokens == 6e6 and len(models) % 2 == 0


@pytest.mark.slow
def test_a_shrunk_demo_runs_one_stacked_job_per_size(tmp_path):
    """The demo's configuration end to end with 12 steps per run and 3 of its sizes: every size one job, its 6 seeds
    stacked, 18 runs in the results, and the flags written."""
    grid = ["experiment=cpu_demo", "model=l1d4,l1d8,l1d16", "train.budget=steps", "train.max_steps=12",
            "train.warmup_steps=2", "train.ckpt_log_until=4", "train.ckpt_every=12", "probe.n=32",
            "probe.generate_n=8", "analysis.n_boot=20", "analysis.w0=0.3", f"paths.results={tmp_path}"]
    p = emergence("sweep", *grid)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stderr.count("[job ") == 3 and p.stderr.count("seeds [0, 1, 2, 3, 4, 5] stacked") == 3
    runs = pd.read_parquet(tmp_path / "cpu_demo" / "runs.parquet")
    assert len(runs) == 18 and (runs["status"] == "done").all()
    assert sorted(runs.groupby("model")["seed"].apply(sorted).tolist()) == [[0, 1, 2, 3, 4, 5]] * 3
    for _, r in runs.iterrows():
        st = json.loads((tmp_path / "cpu_demo" / "runs" / r["run_id"] / "status.json").read_text())
        assert st.get("stacked_with") == 6
    flags = pd.read_csv(tmp_path / "cpu_demo" / "flags.csv")
    assert len(flags) and set(flags["verdict"]) <= {"emergent", "smooth", "inconclusive", "flat"}
    assert (flags["w0"] == 0.3).all()
    # the verdict's settings travel with the sweep: kept beside flags.csv, read back by `emergence analyze`
    kept = json.loads((tmp_path / "cpu_demo" / "flag_options.json").read_text())
    assert kept["options"]["w0"] == 0.3 and kept["options"]["n_boot"] == 20
    assert set(kept["sources"].values()) == {"sweep config"}
    p = emergence("analyze", str(tmp_path / "cpu_demo"))
    assert p.returncode == 0, p.stderr[-2000:]
    assert (pd.read_csv(tmp_path / "cpu_demo" / "flags.csv")["w0"] == 0.3).all()
    html = (tmp_path / "cpu_demo" / "report.html").read_text()
    assert "w0 = 0.3 decades (sweep config)" in html


def test_the_analysis_key_follows_the_tables_and_the_settings(tmp_path):
    """A rerun skips the analysis only when the tables, the verdict's settings and the analysis code are the same;
    an analysis written by hand (`emergence analyze`) makes the sweep's own analysis run again."""
    from emergence.analyze import ANALYSIS_KEY, analysis_key

    pd.DataFrame({"a": [1, 2]}).to_parquet(tmp_path / "results.parquet")
    pd.DataFrame({"run_id": ["r"]}).to_parquet(tmp_path / "runs.parquet")
    from analysis.options import Settings

    def at(w0):
        return Settings().override({"w0": w0}, "sweep config")

    k = analysis_key(tmp_path, at(0.5))
    assert k == analysis_key(tmp_path, at(0.5)) and len(k) == 64
    assert k != analysis_key(tmp_path, at(0.4))
    pd.DataFrame({"a": [1, 3]}).to_parquet(tmp_path / "results.parquet")
    assert k != analysis_key(tmp_path, at(0.5))
    (tmp_path / ANALYSIS_KEY).write_text(k)
    from emergence.analyze import analyze

    with pytest.raises(Exception):  # not a results table: the analysis fails, but the key is gone first
        analyze(tmp_path)
    assert not (tmp_path / ANALYSIS_KEY).exists()



def test_the_dry_run_times_the_runs_own_batch_shape_by_its_median_step(monkeypatch):
    """The wall estimate comes from steps of the run's batch (its data.seq_len, not the model's context) after a
    warm-up, by the median step: a first slow step or one slow outlier does not move it."""
    import emergence.sweep as sw

    shapes, calls = [], []

    class FakeStep:
        def __init__(self, *a, **k):
            pass

        def __call__(self, i, batches):
            shapes.append(tuple(batches[0][0].shape))
            calls.append(i)

    monkeypatch.setattr(sw, "Step", FakeStep)
    ticks = iter(range(10_000))
    monkeypatch.setattr(sw.time, "perf_counter", lambda: float(next(ticks)))
    _, runs = plan(["experiment=smoke", "model=l1d8", "data.seq_len=12"])
    rate = sw.calibrate(runs, seconds=1.0)["l1d8"]
    from emergence.config import gpt_config
    from emergence.model import flops_per_token

    cfg = compose(runs[0]["overrides"])
    assert set(shapes) == {(cfg.train.batch_size, 12)}
    assert calls[:3] == [0, 1, 2] and len(calls) == 3 + 5  # warm-up, then at least 5 timed steps
    # each timed step took one tick: the rate is one step's FLOPs per second
    assert rate == pytest.approx(flops_per_token(gpt_config(cfg)) * cfg.train.batch_size * 12)
