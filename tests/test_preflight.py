"""The memory pre-flight: estimated at the run's precision, checked where the run runs, and never refused for a login
node's RAM when a remote launcher (SLURM) runs the jobs."""
import subprocess
import sys

import pytest

from emergence.config import ConfigError, check_memory, estimate_memory, gpt_config, run_precision
from emergence.model import n_params
from emergence.sweep import is_remote, plan


def emergence(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "emergence", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_bf16_estimate_is_smaller_and_follows_its_formula(tiny):
    cfg = tiny("model=pythia-160m", "data.seq_len=512")
    gc = gpt_config(cfg)
    B, T, L, d, H, V, N = 8, gc.block_size, gc.n_layer, gc.d_model, gc.n_head, gc.vocab_size, n_params(gc)
    per_layer = B * T * L * (34 * d + 5 * H * T)  # values kept per layer for the backward pass (Korthikanti eq. 1)
    assert estimate_memory(gc, B, "fp32") == 16 * N + 2 * per_layer + 12 * B * T * V
    assert estimate_memory(gc, B, "bf16") == 18 * N + per_layer + 14 * B * T * V
    assert estimate_memory(gc, B, "bf16") < 0.7 * estimate_memory(gc, B, "fp32")
    with pytest.raises(ValueError, match="precision"):
        estimate_memory(gc, B, "fp16")


def test_precision_follows_the_device_it_runs_on(tiny):
    assert run_precision(tiny("train.device=cuda")) == "bf16"
    assert run_precision(tiny("train.device=cpu")) == "fp32"
    assert run_precision(tiny("train.device=cpu", "train.dtype=bfloat16")) == "bf16"
    assert run_precision(tiny("train.device=auto"), device_type="cuda") == "bf16"
    assert run_precision(tiny("train.device=cuda", "train.dtype=float32")) == "fp32"


def test_check_uses_the_given_device_memory(tiny):
    cfg = tiny("model=pythia-160m", "data.seq_len=512", "train.batch_size=64")
    need = estimate_memory(gpt_config(cfg), 64, "bf16")
    check_memory(cfg, "cuda", int(need / 0.79), where="GPU 0")  # fits within 80%
    with pytest.raises(ConfigError, match=r"needs about .* GiB but GPU 0 has"):
        check_memory(cfg, "cuda", int(need / 0.81), where="GPU 0")
    with pytest.raises(ConfigError, match="3 stacked copies"):
        check_memory(cfg, "cuda", int(2 * need), where="GPU 0", copies=3)


def test_launchers_local_or_remote():
    assert not is_remote({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"})
    assert not is_remote({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"})
    assert not is_remote({"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"})
    assert is_remote({"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"})


def ladder(tmp_path, *extra):
    """pythia_ladder on a corpus written here: it learns a BPE, so its config needs the [hf] extra's tokenizers."""
    pytest.importorskip("tokenizers")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a small corpus for a dry run\n" * 50)
    return ["sweep", "experiment=pythia_ladder", f"paths.results={tmp_path}", f"data.text_path={corpus}", *extra]


@pytest.mark.slow
def test_the_gpu_ladder_dry_runs_on_slurm_from_a_machine_without_a_gpu(tmp_path):
    p = emergence(*ladder(tmp_path, "hydra/launcher=slurm", "sweep.gpu_mem_gb=16", "--dry-run"))
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "remote launcher" in out and "gpus_per_node=1" in out and "mem_gb=64" in out
    rows = [line for line in out.splitlines() if line.startswith("pythia-")]
    assert len(rows) == 10 and all("bf16" in r for r in rows)
    warned = {line.split(":")[1].strip() for line in out.splitlines() if line.strip().startswith("warning:")}
    # pythia-410m at batch 256 needs more than 80% of a 16 GiB GPU; the smallest sizes do not
    assert any(w.startswith("pythia-410m") for w in warned)
    assert not any(w.startswith("pythia-14m") for w in warned)
    assert not (tmp_path / "pythia_ladder").exists()


def test_a_local_launcher_still_refuses_an_oversized_model(tmp_path):
    p = emergence(*ladder(tmp_path, "train.device=cpu", "model=pythia-410m", "seed=0", "--dry-run"))
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "GiB but this machine has" in lines[0], p.stderr
    assert not (tmp_path / "pythia_ladder").exists()


def test_plan_of_a_remote_launch_records_the_estimate_and_the_ask(tmp_path):
    _, runs = plan(ladder(tmp_path, "hydra/launcher=slurm", "train.device=cuda", "model=pythia-14m,pythia-31m",
                          "seed=0")[1:])
    assert [r["precision"] for r in runs] == ["bf16", "bf16"]
    assert all(r["remote"] and "gpus_per_node=1" in r["launcher"] for r in runs)
    assert runs[0]["memory_bytes"] < runs[1]["memory_bytes"]


def test_a_train_dry_run_shows_the_estimate_and_the_refusal_the_real_run_would_give(tmp_path):
    # pythia-1b at batch 16384: about 1.5 TiB, more than any machine this runs on
    p = emergence("train", "model=pythia-1b", "train.batch_size=16384", "train.device=cpu", "train.max_steps=10",
                  f"paths.results={tmp_path}", "--dry-run")
    assert p.returncode == 2
    assert "806,141,952 parameters" in p.stdout and " GiB to train (fp32)" in p.stdout, p.stdout
    need = p.stdout.split("about ")[1].split(" GiB")[0]
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and f"needs about {need} GiB but this machine has" in lines[0], p.stderr
    small = emergence("train", "experiment=smoke", f"paths.results={tmp_path}", "--dry-run")
    assert small.returncode == 0 and "MiB to train (fp32)" in small.stdout, small.stderr
    assert not any(tmp_path.iterdir())
