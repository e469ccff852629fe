"""The package installs as a wheel with its Hydra configs, and the console script lists every verb."""
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VERBS = ["train", "probe", "sweep", "status", "analyze", "report", "generate", "bench"]


def test_help_lists_every_verb_once_and_every_argument_says_what_it_is():
    from emergence.cli import build_parser

    p = subprocess.run([sys.executable, "-m", "emergence", "--help"], capture_output=True, text=True)
    assert p.returncode == 0
    for verb in VERBS:
        assert p.stdout.count(f"\n    {verb} ") == 1, verb  # listed once
    assert "analyse" not in p.stdout
    for verb in VERBS:
        q = subprocess.run([sys.executable, "-m", "emergence", verb, "--help"], capture_output=True, text=True)
        assert q.returncode == 0 and "usage: emergence " + verb in q.stdout
    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    silent = [f"{verb} {a.dest}" for verb, q in sub.choices.items() for a in q._actions
              if a.dest != "help" and not a.help]
    assert not silent, silent


@pytest.mark.slow
def test_wheel_carries_configs_and_composes_outside_the_checkout(tmp_path):
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(ROOT),
                        "-w", str(tmp_path)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    wheel = next(tmp_path.glob("emergence-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "sweeps/config.yaml" in names and "sweeps/experiment/cpu_demo.yaml" in names
    assert "analysis/schema.py" in names and "emergence/cli.py" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("import emergence, sweeps; assert emergence.__file__.startswith(%r); "
            "from emergence.config import compose; print(compose(['experiment=smoke']).experiment)") % str(site)
    q = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                       env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert q.returncode == 0, q.stderr[-2000:]
    assert q.stdout.strip() == "smoke"


@pytest.mark.parametrize("args, message", [
    (["--temperature", "-1"], "--temperature must be 0 (greedy) or positive"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be at least 1"),
])
def test_generate_refuses_settings_that_cannot_sample(tmp_path, capsys, args, message):
    from emergence.cli import main

    assert main(["generate", str(tmp_path / "step_1.pt"), "A:1+2=", *args]) == 2
    assert message in capsys.readouterr().err


def test_experiments_are_listed_and_the_composed_config_is_shown(capsys):
    from emergence.cli import main

    assert main(["sweep", "--list-experiments"]) == 0
    names = [ln.split()[0] for ln in capsys.readouterr().out.splitlines()]
    assert names == sorted(p.stem for p in (ROOT / "sweeps" / "experiment").glob("*.yaml"))
    assert main(["sweep", "--show-config", "train.tokens=7e6"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# the first of 36 points of the grid: experiment=cpu_demo train.tokens=7e6 model=l1d24")
    assert "  tokens: 7000000.0\n" in out and "  name: l1d24\n" in out
    assert main(["train", "--show-config", "model=l1d8", "train.lrr=3"]) == 2  # checked as a run would be
