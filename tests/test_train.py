"""The trainer: determinism, bit-identical resume, finished runs recognised, text data, bad configs."""
import subprocess
import sys

import pandas as pd
import pytest
import torch

from emergence import checkpoint as ckpt
from emergence.config import ConfigError, run_dir, run_id, validate
from emergence.optim import lr_at
from emergence.train import train


def final_weights(cfg):
    step, state = ckpt.latest_valid(run_dir(cfg) / "checkpoints")
    return step, state["model"]


def test_lr_schedule_warmup_then_cosine_to_ten_percent():
    assert lr_at(0, 100, 1.0, 10, 0.1) == pytest.approx(0.1)
    assert lr_at(9, 100, 1.0, 10, 0.1) == pytest.approx(1.0)
    assert lr_at(100, 100, 1.0, 10, 0.1) == pytest.approx(0.1)
    assert lr_at(55, 100, 1.0, 10, 0.1) == pytest.approx(0.55)


def test_train_writes_self_describing_checkpoints(tiny):
    cfg = tiny()
    s = train(cfg)
    assert s["state"] == "done" and not s["skipped"]
    folder = run_dir(cfg)
    steps = [st for st, _ in ckpt.list_checkpoints(folder / "checkpoints")]
    assert steps == ckpt.schedule(12, 4, 6) == [0, 1, 2, 4, 6, 12]
    state = ckpt.load(folder / "checkpoints" / "step_12.pt")
    for key in ("model", "optimizer", "model_config", "config", "step", "tokens", "flops", "seed", "rng",
                "code_version", "val_loss"):
        assert key in state, key
    assert state["tokens"] == 12 * 16 * cfg.data.seq_len
    assert state["flops"] == state["tokens"] * state["flops_per_token"]
    log = pd.read_parquet(folder / "train_log.parquet")
    assert list(log["step"]) == [1, 2, 4, 6, 8, 10, 12]
    assert {"step", "tokens", "flops", "loss", "lr", "grad_norm", "tokens_per_s"} <= set(log.columns)
    assert (folder / "config.yaml").exists()
    # held-out LM loss fell from initialisation (the model learned something)
    first = ckpt.load(folder / "checkpoints" / "step_0.pt")["val_loss"]
    assert state["val_loss"] < first


def test_same_config_gives_bit_identical_weights(tiny, tmp_path):
    a = tiny()
    train(a)
    _, wa = final_weights(a)
    b = tiny(f"paths.results={tmp_path / 'other'}")
    train(b)
    _, wb = final_weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_is_bit_identical_and_finished_run_is_skipped(tiny, tmp_path):
    full = tiny(f"paths.results={tmp_path / 'full'}")
    train(full)
    _, ref = final_weights(full)
    part = tiny(f"paths.results={tmp_path / 'part'}", "train.fail_at_step=7")
    s = train(part)
    assert s["state"] == "failed" and "injected failure" in s["error"]
    # the same run (the fault-injection key is not part of its identity) resumed from step 6
    resumed = tiny(f"paths.results={tmp_path / 'part'}")
    assert run_id(resumed) == run_id(part)
    s = train(resumed)
    assert s["state"] == "done"
    _, got = final_weights(resumed)
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    log = pd.read_parquet(run_dir(resumed) / "train_log.parquet")
    assert log["step"].is_unique
    again = train(resumed)
    assert again["skipped"] and again["state"] == "done"


def test_nan_loss_stops_run_as_diverged_keeping_last_good_checkpoint(tiny):
    cfg = tiny("train.nan_at_step=5")
    s = train(cfg)
    assert s["state"] == "diverged"
    steps = [st for st, _ in ckpt.list_checkpoints(run_dir(cfg) / "checkpoints")]
    assert max(steps) == 4  # written before the NaN; nothing after it
    _, state = ckpt.latest_valid(run_dir(cfg) / "checkpoints")
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_text_source_trains_and_never_reads_heldout(tiny, text_file):
    from emergence.data import TextSource

    src = TextSource(text_file, seq_len=32, heldout_fraction=0.1)
    held = src.parts["heldout"]
    x, _ = src.batch(0, 0, 64)
    train_bytes = src.parts["train"]
    assert len(train_bytes) + len(held) == len(text_file.read_bytes())
    # every training window is a slice of the training part
    blob = bytes(train_bytes.astype("uint8"))
    starts = [blob.find(bytes(row.tolist())) for row in x.numpy().astype("uint8")]
    assert all(s >= 0 for s in starts)
    cfg = tiny("data=text", f"data.text_path={text_file}", "data.seq_len=32")
    s = train(cfg)
    assert s["state"] == "done" and s["vocab_size"] == 259


@pytest.mark.parametrize("override,message", [
    ("train.bogus=1", "train has no key bogus"),
    ("train.lrr=1", "train has no key lrr; did you mean train.lr?"),
    ("+train.lrr=1", "train has no key lrr; did you mean train.lr?"),  # Hydra's own advice, followed
    ("+seeed=1", "the config has no key seeed; did you mean seed?"),
    ("train.lr=abc", "train.lr takes a number, got 'abc'"),
    ("train.max_steps=1e9", "train.max_steps takes an integer"),
    ("train.max_steps=abc", "max_steps"),
    ("model.n_head=3", "not divisible"),
    ("train.max_steps=-5", "non-negative"),
])
def test_cli_bad_overrides_one_line_nonzero(tmp_path, override, message):
    p = subprocess.run([sys.executable, "-m", "emergence", "train", "model=l1d32",
                        f"paths.results={tmp_path}", override], capture_output=True, text=True)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert message in lines[0] and "Traceback" not in p.stderr
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_memory_preflight_refuses_a_size_too_big_where_the_run_runs(tiny):
    cfg = tiny("model=pythia-1b", "data.seq_len=2048", "train.batch_size=512")
    validate(cfg)  # the config itself is valid: memory is checked against the device the run trains on
    with pytest.raises(ConfigError, match="GiB but this machine has"):
        train(cfg)
    assert not run_dir(cfg).exists()  # refused before anything is written


def test_budgets_resolve_to_steps(tiny):
    cfg = tiny("train.budget=tokens", "train.tokens=10000")
    d = validate(cfg)
    assert d["steps"] == -(-10000 // (16 * 32))
    cfg = tiny("train.budget=flops", "train.flops=1e10")
    d = validate(cfg)
    assert d["tokens"] >= 1e10 / (6 * d["n_params"]) > d["tokens"] - d["tokens_per_step"]
    cfg = tiny("train.budget=tokens_per_param", "train.tokens_per_param=20")
    d = validate(cfg)
    assert d["tokens"] >= 20 * d["n_params"]


def test_text_mixed_into_tasks(tiny, text_file):
    from emergence.data import build_source
    from emergence.tasks import VOCAB

    cfg = tiny(f"data.text_path={text_file}", "data.text_weight=0.25", "train.batch_size=16")
    src = build_source(cfg)
    x, y = src.batch(0, 3, 16)
    assert x.shape == (16, cfg.data.seq_len)
    text_rows = [VOCAB.decode(r.tolist()) for r in x[-4:]]
    corpus = text_file.read_text()
    assert all(row in corpus for row in text_rows)  # the last quarter are windows of the text
    assert (y[-4:] != -100).all() and (y[:12] == -100).any()  # text trains every token, tasks only answers
    held = src.batch(0, 0, 16, split="heldout")[0][-4:]
    cut = int(len(corpus) * 0.9)
    assert all(VOCAB.decode(r.tolist()) in corpus[cut:] for r in held)
    s = train(cfg)
    assert s["state"] == "done"
