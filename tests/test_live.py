"""Live views: the status table and `emergence status --watch`, the sweep's bar and a run's progress, and their plain
lines in log files and CI."""
import io
import os
import subprocess
import sys

import pandas as pd
import pytest
from rich.console import Console

from emergence import checkpoint as ckpt
from emergence import live
from emergence.cli import main
from emergence.files import atomic_write_parquet, write_json
from emergence.run import write_status

TOKENS_PER_STEP = 512
ESCAPES = ("\x1b", "\r")


class Terminal(io.StringIO):
    """A stream that says it is an interactive terminal."""

    def isatty(self):
        return True


@pytest.fixture(autouse=True)
def interactive(monkeypatch):
    """The environment of an interactive terminal (tests that want CI or TERM=dumb set them)."""
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv(live.PARENT_BAR, raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def write_run(folder, run_id, *, state, steps, loss_at, pid=None, **status):
    """A run's files as train() writes them: checkpoints at `steps`, the train log up to the newest, status.json."""
    run = folder / "runs" / run_id
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    for step in steps:
        ckpt.save(run / "checkpoints" / f"step_{step}.pt", {"step": step, "run_id": run_id})
    rows = [{"step": s, "tokens": s * TOKENS_PER_STEP, "flops": 0.0, "loss": loss_at(s), "lr": 1e-3,
             "grad_norm": 1.0, "tokens_per_s": 1024.0, "wall_s": s / 2} for s in range(2, max(steps) + 1, 2)]
    if rows:
        atomic_write_parquet(pd.DataFrame(rows), run / "train_log.parquet")
    write_status(run, state=state, run_id=run_id, pid=pid or os.getpid(), steps=12, **status)


def make_sweep(root, states=("done", "running", "failed", "stopped", "not_started")):
    """A sweep folder of 12-step runs named after their state: grid.json as `emergence sweep` writes it, and each
    run's files."""
    folder = root / "demo"
    folder.mkdir(parents=True)
    write_json(folder / "grid.json", {"runs": [{"run_id": f"r-{s}", "model": "l1d8", "seed": 0, "max_steps": 12}
                                               for s in states]})
    loss = lambda s: 3.0 - s / 10  # noqa: E731
    for s in states:
        if s == "done":
            write_run(folder, "r-done", state="done", steps=[0, 4, 12], loss_at=loss, final_loss=1.25)
        elif s == "running":
            write_run(folder, "r-running", state="running", steps=[0, 4], loss_at=loss)
        elif s == "failed":
            write_run(folder, "r-failed", state="failed", steps=[0, 2], loss_at=loss, error="RuntimeError: boom",
                      final_loss=float("nan"))
        elif s == "stopped":  # status.json says running, but its process is gone
            write_run(folder, "r-stopped", state="running", steps=[0, 4, 6], loss_at=loss, pid=dead_pid())
    return folder


def by_id(rows):
    return {r["run_id"]: r for r in rows}


def test_status_rows_read_state_step_loss_rate_and_eta_from_the_run_files(tmp_path):
    rows = by_id(live.status_rows(make_sweep(tmp_path)))
    assert list(rows) == ["r-done", "r-running", "r-failed", "r-stopped", "r-not_started"]
    assert {k: r["state"] for k, r in rows.items()} == {
        "r-done": "done", "r-running": "running", "r-failed": "failed", "r-stopped": "stopped",
        "r-not_started": "not_started"}
    assert [(r["step"], r["total"]) for r in rows.values()] == [(12, 12), (4, 12), (2, 12), (6, 12), (0, 12)]
    assert rows["r-done"]["loss"] == 1.25  # a finished run: its final loss
    assert rows["r-running"]["loss"] == pytest.approx(3.0 - 0.4)  # a running one: the newest logged loss
    assert rows["r-failed"]["loss"] == pytest.approx(3.0 - 0.2)
    assert rows["r-running"]["tokens_per_s"] == 1024.0
    assert rows["r-done"]["eta_s"] == 0.0
    assert rows["r-running"]["eta_s"] == pytest.approx((12 - 4) * TOKENS_PER_STEP / 1024, abs=1.0)
    for rid in ("r-failed", "r-stopped", "r-not_started"):
        assert rows[rid]["eta_s"] != rows[rid]["eta_s"]  # NaN: nothing is training
    assert rows["r-not_started"]["loss"] != rows["r-not_started"]["loss"]
    assert live.footer(list(rows.values())) == "1 of 5 runs done, 1 failed"
    assert not live.all_finished(list(rows.values()))


def test_the_table_shows_each_run_and_the_footer(tmp_path):
    rows = live.status_rows(make_sweep(tmp_path))
    assert live.table_cells(by_id(rows)["r-running"]) == ["r-running", "running", "4/12", "2.6000", "1,024",
                                                          "0:00:04"]
    assert live.table_cells(by_id(rows)["r-not_started"]) == ["r-not_started", "not started", "0/12", "-", "-", "-"]
    out = io.StringIO()
    Console(file=out, width=120, color_system=None).print(live.render_table(rows))
    text = out.getvalue()
    assert "1 of 5 runs done, 1 failed" in text
    line = next(ln for ln in text.splitlines() if "r-done" in ln)
    assert [c.strip() for c in line.split("│")[1:-1]] == ["r-done", "done", "12/12", "1.2500", "1,024", "0:00:00"]


def test_a_real_run_is_read_back_and_its_progress_is_plain_in_a_log(tiny, capsys, monkeypatch):
    from emergence.config import run_dir
    from emergence.train import train

    monkeypatch.setattr(live, "PLAIN_EVERY_S", 3600.0)
    cfg = tiny("train.progress=true", "probe.inline=false")
    summary = train(cfg)
    err = capsys.readouterr().err
    assert not any(e in err for e in ESCAPES)
    lines = [ln for ln in err.splitlines() if " step " in ln]
    # the first log step, then nothing for PLAIN_EVERY_S seconds, and the last step
    assert [ln.split(" loss ")[0] for ln in lines] == [f"{summary['run_id']} step 2/12",
                                                       f"{summary['run_id']} step 12/12"]
    assert lines[-1].endswith("ETA 0:00:00")
    [row] = live.status_rows(run_dir(cfg).parents[1])  # no grid.json: the total comes from status.json
    assert row["run_id"] == summary["run_id"] and row["state"] == "done"
    assert (row["step"], row["total"]) == (12, 12)
    assert row["loss"] == pytest.approx(summary["final_loss"]) and row["tokens_per_s"] > 0


def test_watch_returns_at_once_when_every_run_has_finished(tmp_path):
    folder = make_sweep(tmp_path, states=("done", "failed"))
    out = io.StringIO()
    assert live.watch(folder, interval=0.01, stream=out) == 0
    text = out.getvalue()
    assert not any(e in text for e in ESCAPES)
    assert text.splitlines() == ["r-done  done  12/12  1.2500  1,024  0:00:00", "r-failed  failed  2/12  2.8000  1,024  -",
                                 "1 of 2 runs done, 1 failed"]


@pytest.mark.timeout(60)
def test_watch_follows_a_run_until_it_finishes(tmp_path):
    folder = make_sweep(tmp_path, states=("done", "running"))
    run = folder / "runs" / "r-running"
    looks = []
    real_rows = live.status_rows

    def rows_then_finish(f):
        rows = real_rows(f)
        looks.append([r["state"] for r in rows])
        if len(looks) == 3:  # the run finishes between the third and fourth look
            write_run(folder, "r-running", state="done", steps=[0, 4, 12], loss_at=lambda s: 1.0, final_loss=0.5)
        return rows

    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(live, "status_rows", rows_then_finish)
        assert live.watch(folder, interval=0.01, stream=out) == 0
    assert looks == [["done", "running"]] * 3 + [["done", "done"]]
    lines = out.getvalue().splitlines()
    assert lines[-2:] == ["r-running  done  12/12  0.5000  1,024  0:00:00", "2 of 2 runs done"]
    assert lines.count("1 of 2 runs done") == 1  # nothing changed between the first three looks: printed once
    assert (run / "status.json").exists()


def test_watch_on_a_terminal_redraws_a_table_and_ctrl_c_ends_it_quietly(tmp_path, monkeypatch):
    folder = make_sweep(tmp_path, states=("done", "running"))

    def interrupt(_):
        raise KeyboardInterrupt

    monkeypatch.setattr(live.time, "sleep", interrupt)
    out = Terminal()
    assert live.watch(folder, interval=5, stream=out) == 0
    text = out.getvalue()
    assert "\x1b[" in text and "r-running" in text and "1 of 2 runs done" in text


@pytest.mark.parametrize("env", [{"CI": "true"}, {"TERM": "dumb"}, {}])
def test_plain_lines_in_ci_with_a_dumb_terminal_or_a_file(env, monkeypatch):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    stream = Terminal() if env else io.StringIO()
    assert not live.is_terminal(stream)
    p = live.RunProgress(True, "run", total=10, every=5, stream=stream)
    for step in range(1, 11):
        p.update(step, 2.0 - step / 10, 1500.0, 10.0 - step)
    p.close()
    assert stream.getvalue() == "run step 5/10 loss 1.5000 1,500 tok/s ETA 0:00:05\n" \
                                "run step 10/10 loss 1.0000 1,500 tok/s ETA 0:00:00\n"
    assert live.is_terminal(Terminal()) == (not env)


def test_a_run_on_a_terminal_draws_a_bar_and_none_under_another_process_bar(monkeypatch):
    out = Terminal()
    p = live.RunProgress(True, "run-a", total=10, every=5, stream=out)
    p.update(10, 1.0, 1500.0, 0.0)
    p.close()
    assert "\x1b[" in out.getvalue() and "10/10 steps" in out.getvalue() and "run-a" in out.getvalue()
    monkeypatch.setenv(live.PARENT_BAR, "1")  # a sweep in the parent process draws the terminal
    quiet = Terminal()
    p = live.RunProgress(True, "run-b", total=10, every=5, stream=quiet)
    p.update(10, 1.0, 1500.0, 0.0)
    p.close()
    assert p.mode == "off" and quiet.getvalue() == ""


@pytest.mark.timeout(60)
def test_the_sweep_prints_a_line_per_finished_run_in_a_log(tmp_path):
    folder = make_sweep(tmp_path, states=("done", "running", "not_started"))
    out = io.StringIO()
    with live.SweepProgress(folder, poll_s=0.01, stream=out) as sp:
        write_run(folder, "r-running", state="done", steps=[0, 12], loss_at=lambda s: 1.0, final_loss=0.5)
        write_run(folder, "r-not_started", state="failed", steps=[0], loss_at=lambda s: 1.0, error="boom")
    text = out.getvalue()
    assert not any(e in text for e in ESCAPES)
    lines = text.splitlines()
    assert lines and lines[-1].startswith("sweep demo: 2 of 3 runs done, 1 failed, ETA ")
    assert all(ln.startswith("sweep demo: ") for ln in lines) and len(lines) <= 2  # per change, not per look
    assert not sp.thread.is_alive()


def test_the_sweep_bar_holds_the_runs_of_this_process(tmp_path):
    folder = make_sweep(tmp_path, states=("done", "running"))
    out = Terminal()
    with live.SweepProgress(folder, poll_s=0.01, stream=out) as sp:
        assert os.environ[live.PARENT_BAR] == "1" and live._shared_bar() is sp.bar
        run = live.RunProgress(True, "r-running", total=12, every=2, stream=out)
        run.update(6, 2.0, 1000.0, 6.0)
        assert run.bar is sp.bar and len(sp.bar.tasks) == 2
        run.close()
        assert len(sp.bar.tasks) == 1
        assert sp.bar.tasks[0].fields["count"] == "1/2 runs"
        assert sp.bar.tasks[0].completed == pytest.approx(1 + 4 / 12)  # r-running's newest checkpoint is step 4
        write_run(folder, "r-running", state="failed", steps=[0, 4], loss_at=lambda s: 2.0, error="OSError: disk full")
    assert live.PARENT_BAR not in os.environ and live._shared_bar() is None
    text = out.getvalue()
    assert "sweep demo" in text and "2/2 runs" in text and "1 failed" in text
    assert text.count("[r-running] failed, loss 2.0000: OSError: disk full") == 1  # one line per finished run
    assert "[r-done]" not in text  # done before the sweep began


def test_job_lines_give_way_to_a_sweep_bar_on_the_terminal(monkeypatch, capsys):
    from emergence.sweep import _say

    _say("[run 1/2] a")
    monkeypatch.setenv(live.PARENT_BAR, "1")
    _say("[run 2/2] b")  # stderr is captured, not a terminal: the line stays
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert live.bar_owns_terminal()
    _say("[run 3/3] c")
    assert sys.stderr.getvalue() == ""
    assert capsys.readouterr().err == "[run 1/2] a\n[run 2/2] b\n"


def test_cli_watch_runs_until_done_and_one_shot_status_is_unchanged(tmp_path, capsys):
    folder = make_sweep(tmp_path, states=("done", "failed"))
    assert main(["status", str(folder), "--watch", "--interval", "0.01"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "1 of 2 runs done, 1 failed" and "\x1b" not in out
    assert main(["status", str(folder)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("run_id") and out.count(" done ") == 1 and "12/12" in out and "RuntimeError: boom" in out


@pytest.mark.parametrize("args, message", [
    (["--watch"], "is not a sweep folder"),
    (["--watch", "--interval", "0"], "--interval must be a positive number"),
    (["--interval", "1"], "give --watch too"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    target = tmp_path / "not_a_sweep" if "is not" in message else make_sweep(tmp_path)
    target.mkdir(exist_ok=True)
    assert main(["status", str(target), *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.splitlines()) == 1 and message in captured.err
    assert captured.err.startswith("emergence status: error: ")


@pytest.mark.timeout(60)
def test_watch_started_before_the_sweep_waits_for_its_folder(tmp_path, monkeypatch):
    """A user starts `status --watch` in a second terminal before the sweep has written its folder."""
    looks = []
    real_sleep = live.time.sleep

    def sleep(seconds):
        looks.append(seconds)
        if len(looks) == 2:
            make_sweep(tmp_path, states=("done",))
        real_sleep(0)

    monkeypatch.setattr(live.time, "sleep", sleep)
    out = io.StringIO()
    assert live.watch(tmp_path / "demo", interval=0.01, stream=out) == 0
    text = out.getvalue()
    assert text.startswith(f"waiting for {tmp_path / 'demo'} to appear") and text.splitlines()[-1] == "1 of 1 runs done"
