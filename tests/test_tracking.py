"""W&B tracking: what an offline run writes, read back from its `.wandb` file; resume; failures that must not stop
training. Everything runs offline with W&B's folders under tmp_path; nothing reaches the network."""
from __future__ import annotations

import logging
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

import wandb
from emergence import tracking
from emergence.tracking import Tracker, TrackerConfig, WandbTracker, make_tracker, probe_metrics, resolve_mode
from wandb_reader import BLOCK_LEN, CorruptFile, iter_payloads, wait_for_runs

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def offline_wandb(tmp_path, monkeypatch):
    """W&B offline, its folders in tmp_path, no credentials, an unreachable server, a fresh warn-once state."""
    for var in ("WANDB_API_KEY", "WANDB_DIR", "WANDB_INIT_TIMEOUT", "WANDB_ENTITY", "WANDB_PROJECT", "WANDB_RUN_ID",
                "WANDB_RESUME", "WANDB_RUN_GROUP", "WANDB_JOB_TYPE", "WANDB_TAGS", "WANDB_NAME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # closed port: any accidental call fails at once
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    for var, sub in (("WANDB_DATA_DIR", "data"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_CONFIG_DIR", "config"),
                     ("WANDB_ARTIFACT_DIR", "artifacts")):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home" / sub))
    monkeypatch.setattr(tracking, "_warned", False)
    monkeypatch.setattr(tracking, "_online_failed", False)


def make(tmp_path, *, job_type="train", run_id="l2d64-s0-abc", resume_id=None, **cfg) -> Tracker:
    cfg.setdefault("kind", "wandb")
    cfg.setdefault("mode", "offline")
    cfg.setdefault("tags", ["cpu"])
    return make_tracker(TrackerConfig(**cfg), run_id=run_id, group="smoke", job_type=job_type,
                        config={"model": {"n_layer": 2, "d_model": 64}, "seed": 0, "derived": {"n_params": 55_000}},
                        tags=["l2d64", "seed0", "cpu"], resume_id=resume_id, dir=str(tmp_path / "sweep"))


def probe_rows(step: int, tokens: float, em: float) -> pd.DataFrame:
    """Tidy rows like the probe engine writes (analysis.schema columns that matter here)."""
    return pd.DataFrame({
        "run_id": ["l2d64-s0-abc"] * 3, "step": [step] * 3, "tokens": [tokens] * 3, "flops": [tokens * 6e5] * 3,
        "task": ["add2", "add2", "recall"], "metric": ["exact_match", "answer_logprob", "exact_match"],
        "value": [em, -1.5, math.nan], "n": pd.array([200, 200, pd.NA], dtype="Int64"),
        "status": pd.array(["ok", "ok", "not_measured"], dtype="string"),
    })


def only_run(root: Path):
    [run] = wait_for_runs(root, 1)
    return run


def missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def test_none_and_disabled_give_the_null_tracker(tmp_path):
    for cfg in (TrackerConfig(kind="none"), TrackerConfig(kind="wandb", mode="disabled")):
        t = make_tracker(cfg, run_id="r", group="g", job_type="train", config={}, tags=[], dir=str(tmp_path))
        assert type(t) is Tracker and t.id is None
        t.define_axes()
        t.log({"train/loss": 1.0}, step=1)
        t.log_probes(probe_rows(1, 10.0, 0.5), step=1)
        t.log_checkpoint("missing.pt", 1)
        t.log_analysis(None, None, {}, None)
        t.finish("done")
        t.finish("done")
    assert not (tmp_path / "wandb").exists()


def test_bad_kind_or_mode_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="tracker.kind must be 'none' or 'wandb'"):
        make(tmp_path, kind="mlflow")
    with pytest.raises(ValueError, match="tracker.mode must be one of"):
        make(tmp_path, mode="sometimes")


def test_auto_mode(tmp_path, monkeypatch):
    assert resolve_mode("auto") == "offline"  # WANDB_MODE=offline from the fixture
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert resolve_mode("auto") == "offline"
    monkeypatch.delenv("WANDB_MODE")
    assert resolve_mode("auto") == "offline"  # no key, no netrc
    netrc_file = tmp_path / "netrc"
    netrc_file.write_text("machine 127.0.0.1\n  login user\n  password " + "k" * 40 + "\n")
    monkeypatch.setenv("NETRC", str(netrc_file))
    assert resolve_mode("auto") == "online"  # logged in to the configured host
    monkeypatch.setenv("WANDB_BASE_URL", "https://api.wandb.ai")
    assert resolve_mode("auto") == "offline"  # ... but not to this one
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert resolve_mode("auto") == "online"
    assert resolve_mode("offline") == "offline"  # an explicit mode wins


def test_offline_run_records_config_history_axes_and_probe_table(tmp_path):
    t = make(tmp_path, tags=["cpu", "smoke", "", "t" * 70])
    assert isinstance(t, WandbTracker) and t.mode == "offline" and t.id
    t.define_axes()
    for step in (10, 20, 30):
        t.log({"train/loss": 3.0 / step, "train/lr": 1e-3, "train/grad_norm": 0.5, "train/tokens_per_s": 1e4,
               "train/mfu": float("nan"), "tokens": step * 128, "flops": step * 128 * 6e5}, step=step)
    t.log_probes(probe_rows(30, 30 * 128, 0.25), step=30)  # same step as the last train row: merged into it
    t.log({"val/loss": 1.25, "tokens": 30 * 128}, step=30)
    t.log({"train/loss": 0.05, "tokens": 40 * 128}, step=40)
    t.finish("done")

    run = only_run(tmp_path / "sweep" / "wandb")
    assert run.run_id == t.id
    assert (run.project, run.group, run.job_type, run.name) == ("emergence", "smoke", "train", "l2d64-s0-abc")
    assert run.tags == ["cpu", "smoke", "t" * 64, "l2d64", "seed0"]  # config tags first; no repeats; W&B's limit
    assert run.config == {"model": {"n_layer": 2, "d_model": 64}, "seed": 0, "derived": {"n_params": 55_000}}
    assert run.exit_code == 0

    assert [row["_step"] for row in run.history] == [10, 20, 30, 40]
    assert run.values("train/loss") == {10: 0.3, 20: 0.15, 30: 0.1, 40: 0.05}
    assert run.values("tokens") == {10: 1280, 20: 2560, 30: 3840, 40: 5120}
    assert run.values("flops")[20] == pytest.approx(2560 * 6e5)
    assert math.isnan(run.values("train/mfu")[10])
    row30 = run.history[2]
    assert row30["val/loss"] == 1.25 and row30["train/loss"] == 0.1
    assert row30["probe/add2/exact_match"] == 0.25 and row30["probe/add2/answer_logprob"] == -1.5
    assert math.isnan(row30["probe/recall/exact_match"])  # not measured stays NaN, never 0
    assert run.steps("probe/add2/exact_match") == [30]

    axes = {(m["name"] or m["glob_name"]): m["step_metric"] for m in run.metrics}
    assert axes["tokens"] == "" and axes["flops"] == ""
    assert axes["train/*"] == axes["val/*"] == axes["probe/*"] == "tokens"

    table = run.table(tracking.PROBE_TABLE_KEY, step=30)
    assert table["columns"] == list(probe_rows(30, 0, 0).columns)
    data = {(r[4], r[5]): r for r in table["data"]}
    assert data[("add2", "exact_match")][6] == 0.25
    assert missing(data[("recall", "exact_match")][6]) and missing(data[("recall", "exact_match")][7])
    assert data[("recall", "exact_match")][8] == "not_measured"


def test_failed_status_sets_exit_code_and_finish_is_idempotent(tmp_path):
    t = make(tmp_path)
    t.log({"train/loss": 1.0}, step=1)
    t.finish("diverged")
    t.finish("done")  # second call changes nothing
    t.log({"train/loss": 2.0}, step=2)  # after finish: ignored
    run = only_run(tmp_path / "sweep" / "wandb")
    assert run.exit_code == 1
    assert run.values("train/loss") == {1: 1.0}


def test_a_lower_step_is_skipped_not_misplaced(tmp_path):
    t = make(tmp_path)
    t.log({"train/loss": 1.0}, step=5)
    t.log({"train/loss": 9.0}, step=3)
    t.log({"train/loss": 0.5}, step=6)
    t.finish("done")
    assert only_run(tmp_path / "sweep" / "wandb").values("train/loss") == {5: 1.0, 6: 0.5}


def test_runs_in_one_process_never_write_into_each_other(tmp_path):
    a = make(tmp_path, run_id="run-a")
    b = make(tmp_path, run_id="run-b")
    assert a.id != b.id
    for step in (1, 2, 3):
        a.log({"train/loss": 10.0 + step}, step=step)
        b.log({"train/loss": 20.0 + step, "only/b": step}, step=step)
    a.finish("done")
    c = make(tmp_path, run_id="run-c")  # a new run after one finished, while another is still open
    c.log({"train/loss": 30.0}, step=1)
    b.finish("failed")
    c.finish("done")
    runs = {r.name: r for r in wait_for_runs(tmp_path / "sweep" / "wandb", 3)}
    assert set(runs) == {"run-a", "run-b", "run-c"}
    assert runs["run-a"].values("train/loss") == {1: 11.0, 2: 12.0, 3: 13.0}
    assert runs["run-b"].values("train/loss") == {1: 21.0, 2: 22.0, 3: 23.0}
    assert runs["run-c"].values("train/loss") == {1: 30.0}
    assert not runs["run-a"].steps("only/b") and runs["run-b"].steps("only/b") == [1, 2, 3]
    assert [runs[n].exit_code for n in ("run-a", "run-b", "run-c")] == [0, 1, 0]
    assert len({r.run_id for r in runs.values()}) == 3


def test_resume_continues_the_same_run(tmp_path):
    first = make(tmp_path)
    first.log({"train/loss": 0.5, "tokens": 10}, step=10)
    first.finish("failed")
    second = make(tmp_path, resume_id=first.id)
    assert second.id == first.id
    second.log({"train/loss": 0.25, "tokens": 20}, step=20)
    second.finish("done")
    a, b = wait_for_runs(tmp_path / "sweep" / "wandb", 2)  # folder names sort by start time (then a -1 suffix)
    assert a.run_id == b.run_id == first.id
    assert (a.values("train/loss"), a.exit_code) == ({10: 0.5}, 1)
    assert (b.values("train/loss"), b.exit_code) == ({20: 0.25}, 0)


@pytest.mark.slow
def test_resume_in_a_new_process_continues_the_same_run(tmp_path):
    first = make(tmp_path)
    for step in (10, 20):
        first.log({"train/loss": 1.0 / step, "tokens": step}, step=step)
    first.finish("interrupted")
    script = textwrap.dedent(f"""
        from emergence.tracking import TrackerConfig, make_tracker
        t = make_tracker(TrackerConfig(kind="wandb", mode="offline"), run_id="l2d64-s0-abc", group="smoke",
                         job_type="train", config={{"seed": 0}}, tags=[], resume_id={first.id!r},
                         dir={str(tmp_path / "sweep")!r})
        assert t.id == {first.id!r}, t.id
        for step in (30, 40):
            t.log({{"train/loss": 1.0 / step, "tokens": step}}, step=step)
        t.finish("done")
    """)
    subprocess.run([sys.executable, "-c", script], cwd=REPO, check=True, timeout=120)
    segments = wait_for_runs(tmp_path / "sweep" / "wandb", 2)
    assert {s.run_id for s in segments} == {first.id}
    segments.sort(key=lambda s: min(s.steps("train/loss")))
    assert segments[0].values("train/loss") == {10: 0.1, 20: 0.05}
    assert segments[1].values("train/loss") == {30: 1 / 30, 40: 0.025}
    assert [s.exit_code for s in segments] == [1, 0]
    assert all(s.name == "l2d64-s0-abc" and s.group == "smoke" for s in segments)


def _warnings(caplog):
    return [r for r in caplog.records if r.name == "emergence.tracking" and r.levelno >= logging.WARNING]


def test_broken_wandb_warns_once_and_training_goes_on(tmp_path, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise wandb.errors.CommError("network is unreachable")

    monkeypatch.setattr(wandb, "init", broken)
    caplog.set_level(logging.INFO, logger="emergence.tracking")
    trackers = [make(tmp_path, run_id=f"r{i}", mode=mode) for i, mode in enumerate(("offline", "online", "auto"))]
    assert all(type(t) is Tracker and t.id is None for t in trackers)
    for t in trackers:  # the whole interface still works
        t.define_axes()
        t.log({"train/loss": 1.0}, step=1)
        t.log_probes(probe_rows(1, 1.0, 0.0), step=1)
        t.finish("done")
    warnings = _warnings(caplog)
    assert len(warnings) == 1, [w.getMessage() for w in warnings]
    assert "network is unreachable" in warnings[0].getMessage() and "\n" not in warnings[0].getMessage()


def test_the_warning_is_printed_when_logging_is_switched_off(tmp_path, monkeypatch, capsys):
    """Sweeps run with Hydra's job logging disabled (existing loggers disabled, root at ERROR): print it instead."""
    def broken(*args, **kwargs):
        raise wandb.errors.CommError("network is unreachable")

    monkeypatch.setattr(wandb, "init", broken)
    monkeypatch.setattr(tracking.log, "disabled", True)
    for i in range(3):
        make(tmp_path, run_id=f"r{i}").finish("done")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(tracking.WARNING_PREFIX + "W&B unavailable (CommError: network")


def test_online_failure_falls_back_to_an_offline_copy(tmp_path, monkeypatch, caplog):
    real_init, modes = wandb.init, []

    def online_fails(*args, settings=None, **kwargs):
        modes.append(settings.mode)
        if settings.mode == "online":
            raise wandb.errors.AuthenticationError("API key rejected")
        return real_init(*args, settings=settings, **kwargs)

    monkeypatch.setattr(wandb, "init", online_fails)
    caplog.set_level(logging.INFO, logger="emergence.tracking")
    t = make(tmp_path, mode="online")
    assert isinstance(t, WandbTracker) and t.mode == "offline"
    t.log({"train/loss": 0.5}, step=7)
    t.finish("done")
    u = make(tmp_path, mode="online", run_id="second")  # the same process does not wait on online again
    u.finish("done")
    assert modes == ["online", "offline", "offline"]
    warnings = _warnings(caplog)
    assert len(warnings) == 1
    assert "API key rejected" in warnings[0].getMessage() and "wandb sync" in warnings[0].getMessage()
    runs = {r.name: r for r in wait_for_runs(tmp_path / "sweep" / "wandb", 2)}
    assert runs["l2d64-s0-abc"].values("train/loss") == {7: 0.5} and runs["l2d64-s0-abc"].run_id == t.id
    assert f"wandb sync {tmp_path / 'sweep' / 'wandb' / 'offline-run-*'}" in warnings[0].getMessage()


@pytest.mark.slow
def test_unreachable_server_falls_back_offline(tmp_path, monkeypatch, caplog):
    """The real path, not a mock: a key is set (so auto means online) but the server does not answer."""
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "3")
    caplog.set_level(logging.INFO, logger="emergence.tracking")
    t = make(tmp_path, mode="auto")
    assert isinstance(t, WandbTracker) and t.mode == "offline"
    t.log({"train/loss": 0.25}, step=1)
    t.finish("done")
    assert len(_warnings(caplog)) == 1
    [offline] = wait_for_runs(tmp_path / "sweep" / "wandb", 1, prefix="offline-run")
    assert offline.values("train/loss") == {1: 0.25} and offline.run_id == t.id


def test_an_error_mid_run_warns_once_and_stops_only_tracking(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="emergence.tracking")
    t = make(tmp_path)
    t.log({"train/loss": 1.0}, step=1)

    def outage(*args, **kwargs):
        raise ConnectionError("service went away")

    monkeypatch.setattr(t._run, "log", outage)
    t.log({"train/loss": 2.0}, step=2)
    t.log({"train/loss": 3.0}, step=3)
    t.log_probes(probe_rows(3, 3.0, 0.5), step=3)
    t.finish("done")
    assert len(_warnings(caplog)) == 1 and "service went away" in _warnings(caplog)[0].getMessage()


def test_checkpoints_become_artifacts_only_when_asked(tmp_path):
    ckpt = tmp_path / "step_100.pt"
    ckpt.write_bytes(b"\0" * 1000)
    (tmp_path / "step_100.pt.sha256").write_text("sha256 " + "0" * 64 + " format 2\n")
    quiet = make(tmp_path / "a")
    quiet.log_checkpoint(str(ckpt), 100)
    quiet.finish("done")
    assert only_run(tmp_path / "a" / "sweep" / "wandb").artifacts == []

    loud = make(tmp_path / "b", log_checkpoints=True)
    loud.log_checkpoint(str(ckpt), 100)
    loud.finish("done")
    [art] = only_run(tmp_path / "b" / "sweep" / "wandb").artifacts
    assert art.type == "model" and art.name == "checkpoint-l2d64-s0-abc"
    assert set(art.aliases) == {"step_100", "latest"}
    assert sorted((e.path, e.size) for e in art.manifest.contents) == [("step_100.pt", 1000),
                                                                        ("step_100.pt.sha256", 81)]
    assert art.manifest.contents[0].local_path == str(ckpt)  # referenced, not copied


def test_analysis_run_logs_tables_figures_and_report(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([1, 2], [0, 1])
    png = tmp_path / "em_vs_params.png"
    fig.savefig(png)
    plt.close(fig)
    html = tmp_path / "report.html"
    html.write_text("<html><body><h1>Report &amp; flags</h1></body></html>")
    flags = pd.DataFrame({"task": ["add2"], "metric": ["exact_match"], "flagged": [True], "jump": [0.7],
                          "evidence": [{"before": 0.02, "after": 0.72}]})
    fits = pd.DataFrame({"task": ["add2"], "law": ["sigmoid"], "aic": [-12.5], "bic": [pd.NA]})

    t = make(tmp_path, job_type="analysis", run_id="smoke-analysis")
    t.log_analysis(flags, fits, {"em_vs_params": png}, html)
    t.finish("done")
    run = only_run(tmp_path / "sweep" / "wandb")
    assert run.job_type == "analysis" and run.group == "smoke"
    flags_table = run.table("analysis/flags")
    assert flags_table["columns"] == list(flags.columns)
    assert flags_table["data"][0][:4] == ["add2", "exact_match", True, 0.7]
    assert flags_table["data"][0][4] == '{"before": 0.02, "after": 0.72}'
    assert run.table("analysis/fits")["data"] == [["add2", "sigmoid", -12.5, None]]
    [row] = run.history
    assert row["plots/em_vs_params._type"] == "image-file"
    assert (run.files_dir / row["plots/em_vs_params.path"]).is_file()
    assert row["report._type"] == "html-file"
    assert (run.files_dir / row["report.path"]).read_text() == html.read_text()  # unchanged, no injected styles
    [art] = [a for a in run.artifacts if a.type == "report"]  # (W&B also stores each table as a run_table)
    assert art.name == "report-smoke-analysis" and [e.path for e in art.manifest.contents] == ["report.html"]


def test_probe_metrics_checks_its_input():
    values = probe_metrics(probe_rows(5, 640.0, 0.5))
    assert values["probe/add2/exact_match"] == 0.5 and values["tokens"] == 640.0
    assert values["flops"] == pytest.approx(640.0 * 6e5) and math.isnan(values["probe/recall/exact_match"])
    with pytest.raises(ValueError, match="lack column"):
        probe_metrics(pd.DataFrame({"task": ["a"], "value": [1.0]}))
    doubled = pd.concat([probe_rows(5, 640.0, 0.5), probe_rows(6, 768.0, 0.6)])
    with pytest.raises(ValueError, match="more than once"):
        probe_metrics(doubled)


def test_malformed_probe_rows_do_not_stop_training(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="emergence.tracking")
    t = make(tmp_path)
    t.log_probes(pd.DataFrame({"task": ["a"]}), step=1)
    t.log({"train/loss": 1.0}, step=2)
    t.finish("done")
    assert any("lack column" in w.getMessage() for w in _warnings(caplog))
    assert only_run(tmp_path / "sweep" / "wandb").values("train/loss") == {2: 1.0}


def test_tracker_group_composes_and_refuses_unknown_keys(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.config_store import ConfigStore
    from hydra.errors import ConfigCompositionException

    ConfigStore.instance().store(group="tracker", name="tracker_schema", node=TrackerConfig)
    (tmp_path / "config.yaml").write_text("defaults:\n  - tracker: wandb\n  - _self_\n"
                                          "hydra:\n  searchpath: [pkg://sweeps]\n")
    with initialize_config_dir(str(tmp_path), version_base="1.3"):
        cfg = compose("config", overrides=["tracker.mode=offline", "tracker.tags=[a,b]"])
        assert dict(cfg.tracker) == {"kind": "wandb", "project": "emergence", "entity": None, "mode": "offline",
                                     "dir": None, "log_checkpoints": False, "tags": ["a", "b"]}
        assert compose("config", overrides=["tracker=none"]).tracker.kind == "none"
        with pytest.raises(ConfigCompositionException):
            compose("config", overrides=["tracker.projekt=x"])
        with pytest.raises(ConfigCompositionException):
            compose("config", overrides=["tracker.log_checkpoints=maybe"])


def test_reader_joins_records_split_across_blocks_and_detects_corruption(tmp_path):
    big = "x" * (3 * BLOCK_LEN)  # one record larger than a block: first, middle(s), last
    t = make(tmp_path)
    t.log({"train/loss": 1.0, "note": big}, step=1)
    t.finish("done")
    run = only_run(tmp_path / "sweep" / "wandb")
    assert run.values("note") == {1: big}
    path = run.path
    raw = bytearray(path.read_bytes())
    raw[BLOCK_LEN + 100] ^= 0xFF  # flip a byte inside the big record
    bad = tmp_path / "bad.wandb"
    bad.write_bytes(bytes(raw))
    with pytest.raises(CorruptFile, match="checksum"):
        list(iter_payloads(bad))
    bad.write_bytes(b"NOTWANDB" + bytes(raw[8:]))
    with pytest.raises(CorruptFile, match="header"):
        list(iter_payloads(bad))


@pytest.mark.slow
def test_sweep_with_wandb_offline_gives_one_group_of_train_runs_and_an_analysis_run(tmp_path):
    """The whole sweep, read back: one train run per grid point and the analysis run, all in the sweep's group."""
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "emergence", "sweep", "experiment=smoke", "train.max_steps=8",
                        "train.ckpt_log_until=2", "train.ckpt_every=4", "probe.n=8", "probe.generate_n=2",
                        "tracker=wandb", "tracker.mode=offline", f"paths.results={tmp_path}"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    runs = wait_for_runs(tmp_path / "smoke" / "wandb", 5, prefix="offline-run")
    train_runs = [r for r in runs if r.job_type == "train"]
    [analysis] = [r for r in runs if r.job_type == "analysis"]
    assert len(train_runs) == 4 and {r.group for r in runs} == {"smoke"}
    assert sorted(r.config["model"]["name"] for r in train_runs) == ["l1d12", "l1d16", "l1d24", "l1d8"]
    for r in train_runs:
        assert r.steps("probe/copy/exact_match") == [0, 1, 2, 4, 8] and r.exit_code == 0
    flags = analysis.table("analysis/flags")
    assert "verdict" in flags["columns"] and len(flags["data"]) > 0
    assert any(a.type == "report" for a in analysis.artifacts)
