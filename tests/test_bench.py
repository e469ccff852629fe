"""The benchmark's logic: what it measures, on which shapes, and how it reports. No timed assertions: speed figures
belong in the benchmark's output, not in tests."""
import json

import pytest
import torch

from emergence.bench import cli, gpu, measure, reference, report
from emergence.bench import shapes as shapes_mod
from emergence.device import matmul_peak
from emergence.model import GPT, GPTConfig, flops_per_token, n_params

TINY = shapes_mod.Shape(name="tiny", n_layer=1, d_model=16, n_head=2, seq_len=12, batch_size=4, vocab_size=30,
                   warmup_steps=2)


def copy_into_reference(ours: GPT, ref: reference.RefGPT) -> None:
    """Our weights into the reference's layout (nanoGPT's names)."""
    names = {"tok.": "wte.", "pos.": "wpe.", "ln_f.": "ln_f.", "head.": "lm_head."}
    block = {"ln1.": "ln_1.", "ln2.": "ln_2.", "attn.qkv.": "attn.c_attn.", "attn.proj.": "attn.c_proj.",
             "fc.": "mlp.c_fc.", "out.": "mlp.c_proj."}
    target = dict(ref.named_parameters())
    with torch.no_grad():
        for name, p in ours.named_parameters():
            if name.startswith("blocks."):
                _, i, rest = name.split(".", 2)
                key = next(f"h.{i}.{v}{rest[len(k):]}" for k, v in block.items() if rest.startswith(k))
            else:
                key = next(v + name[len(k):] for k, v in names.items() if name.startswith(k))
            target[key].copy_(p)


@pytest.mark.parametrize("tie", [True, False])
def test_reference_gpt_is_the_same_model_written_plainly(tie):
    """Same parameter count and, with the same weights, the same loss: the ratio compares code, not models."""
    c = GPTConfig(n_layer=2, d_model=32, n_head=4, vocab_size=40, block_size=16, tie_embeddings=tie)
    torch.manual_seed(0)
    ours, ref = GPT(c), reference.RefGPT(c)
    assert sum(p.numel() for p in ref.parameters()) == n_params(c)
    copy_into_reference(ours, ref)
    x = torch.randint(0, 40, (3, 16))
    y = torch.randint(0, 40, (3, 16))
    y[:, :5] = -100
    _, lo = ours(x, y)
    logits, lr = ref(x, y)
    assert lr.item() == pytest.approx(lo.item(), abs=1e-5)
    torch.testing.assert_close(logits, ours(x)[0], atol=1e-5, rtol=1e-5)


def test_reference_refuses_rotary_positions():
    with pytest.raises(ValueError, match="learned positions"):
        reference.RefGPT(GPTConfig(n_layer=1, d_model=16, n_head=2, vocab_size=20, block_size=8, pos="rotary"))


def test_matmul_peak_reports_every_size():
    r = matmul_peak(sizes=(32, 64), min_seconds=0.01)
    assert set(r["by_n"]) == {32, 64}
    assert r["gflops"] == max(r["by_n"].values()) > 0
    assert r["dtype"] == "float32" and r["device"] == "cpu"


def test_time_interleaved_alternates_and_counts():
    calls = []

    def make(name, tokens):
        def fn():
            calls.append(name)
            return tokens
        return fn

    r = measure.time_interleaved({"a": make("a", 10), "b": make("b", 30)}, seconds=0.0, warmup=1, min_samples=4)
    assert calls[:2] == ["a", "b"]  # warm-up, then strictly alternating steps
    timed = calls[2:]
    assert timed == ["a", "b"] * (len(timed) // 2)
    assert r["a"]["steps"] == r["b"]["steps"] == 4
    assert r["a"]["rate"] > 0 and r["a"]["rate"] >= r["a"]["median"]


def test_measure_training_row_has_the_documented_fields_and_consistent_values():
    peak = 50.0
    r = measure.measure_training(TINY, peak, seconds=0.05)
    for key in ("name", "n_layer", "d_model", "n_head", "seq_len", "batch_size", "vocab_size", "n_params",
                "flops_per_token", "tokens_per_s", "mfu", "ref_tokens_per_s", "ref_mfu", "ratio"):
        assert key in r, key
    c = TINY.gpt_config()
    assert r["n_params"] == n_params(c)
    assert r["flops_per_token"] == flops_per_token(c, TINY.seq_len)
    assert r["mfu"] == pytest.approx(r["tokens_per_s"] * r["flops_per_token"] / (peak * 1e9))
    assert r["ratio"] == pytest.approx(r["tokens_per_s"] / r["ref_tokens_per_s"])
    assert r["ref_status"] == "ok" and r["steps_timed"] >= 3


def test_trainer_step_trains_like_train():
    """The timed step is a real training step: the loss falls on a repeated batch."""
    tr = measure.our_trainer(TINY)
    batches = measure.make_batches(TINY, 1)
    first = float(tr.step(batches))
    for _ in range(30):
        last = float(tr.step(batches))
    assert last < first


def test_ladder_composes_the_real_config():
    names = shapes_mod.ladder_names()
    assert names and all(n.startswith("l") for n in names)
    shapes = shapes_mod.ladder(names[:3], base=shapes_mod.default_base())
    from emergence.config import compose, gpt_config
    from emergence.tasks import VOCAB

    sizes = [n_params(s.gpt_config()) for s in shapes]
    assert sizes == sorted(sizes)
    for s in shapes:
        cfg = compose([*shapes_mod.default_base(), f"model={s.name}"])
        assert s.gpt_config() == gpt_config(cfg)
        assert (s.vocab_size, s.seq_len, s.batch_size) == (VOCAB.size, cfg.data.seq_len, cfg.train.batch_size)
        assert s.task_weights == dict(cfg.task.train)
    x, y = measure.make_batches(shapes[0], 1)[0]
    assert x.shape == (shapes[0].batch_size, shapes[0].seq_len) and (y != -100).any()


def test_quick_pick_takes_three_sizes_one_wide():
    shapes = shapes_mod.ladder(base=shapes_mod.default_base())
    picked = shapes_mod.quick_pick(shapes)
    assert len(picked) == 3 and picked[0] == shapes[0]
    assert any(s.d_model >= 256 for s in picked) == any(s.d_model >= 256 for s in shapes)


def test_measure_stacked_reports_both_sides():
    r = measure.measure_stacked(TINY, seeds=2, seconds=0.05)
    assert r["seeds"] == 2 and r["n_params"] == n_params(TINY.gpt_config())
    assert r["separate_tokens_per_s"] > 0 and r["stacked_tokens_per_s"] > 0
    assert r["ratio"] == pytest.approx(r["stacked_tokens_per_s"] / r["separate_tokens_per_s"])


def test_measure_probe_uses_the_runs_probe_tasks(tiny):
    cfg = tiny()
    r = measure.measure_probe(cfg)
    assert r["tasks"] == measure.probe_tasks(cfg) and r["tasks"]
    assert r["examples"] == cfg.probe.n * len(r["tasks"])
    assert r["forced_examples_per_s"] > 0 and r["examples_per_s"] > 0 and r["seconds_per_checkpoint"] > 0


def test_targets_are_judged_from_the_figures():
    rows = [dict(name=f"s{i}", n_params=10 ** (i + 3), d_model=d, mfu=m, ratio=q)
            for i, (d, m, q) in enumerate([(8, 0.01, 1.3), (16, 0.02, 1.25), (32, 0.05, 1.1), (256, 0.8, 1.05),
                                           (384, 0.7, 1.0)])]
    result = {"sizes": rows, "ladder": [r["name"] for r in rows],
              "stacked": [{"n_params": 1000, "ratio": 1.8}, {"n_params": 50_000, "ratio": 1.4},
                          {"n_params": 200_000, "ratio": 0.9}],
              "probe_share": [{"share": 0.04}, {"share": 0.12}]}
    t = {x["target"].split(",")[0]: x for x in report.targets(result)}
    mfu = next(v for k, v in t.items() if k.startswith("MFU"))
    assert mfu["value"] == 0.7 and mfu["met"] is False
    every = next(v for k, v in t.items() if "1.0 x" in k)
    assert every["value"] == 1.0 and every["met"] is True
    small = next(v for k, v in t.items() if "1.2 x" in k)
    assert small["value"] == 1.1 and small["met"] is False  # s0, s1, s2 are the three smallest
    stacked = next(v for k, v in t.items() if k.startswith("stacked"))
    assert stacked["value"] == 1.4 and stacked["met"] is False  # 200k parameters is outside the target's range
    probe = next(v for k, v in t.items() if k.startswith("probing"))
    assert probe["value"] == 0.12 and probe["met"] is False


def test_main_writes_json_with_nulls_for_missing_figures(tmp_path, monkeypatch, capsys):
    fake = {"machine": report.machine() | {"load_after": [0.0, 0.0, 0.0]}, "matmul_peak_gflops": 100.0,
            "matmul_peak": {"gflops": 100.0, "by_n": {512: 100.0}},
            "sizes": [dict(name="l1d4", n_params=728, n_layer=1, d_model=4, n_head=2, seq_len=20, batch_size=32,
                           vocab_size=99, flops_per_token=5000, tokens_per_s=1e5, mfu=0.005,
                           ref_tokens_per_s=None, ref_mfu=None, ratio=None, ratio_median=None)],
            "analysis": {"wall_s": None, "status": "not measured: no module"},
            "smoke_sweep": {"wall_s": float("nan"), "status": "not measured: it failed"}}
    monkeypatch.setattr(cli, "run", lambda **kw: fake)
    out = tmp_path / "b.json"
    assert cli.main(out=str(out)) == 0
    data = json.loads(out.read_text())
    assert data["matmul_peak_gflops"] == 100.0 and data["sizes"][0]["name"] == "l1d4"
    assert data["smoke_sweep"]["wall_s"] is None  # NaN is written as null, never as 0
    text = capsys.readouterr().out
    assert "l1d4" in text and "not measured: no module" in text


@pytest.mark.parametrize("kw,msg", [(dict(out="x.txt"), ".json"), (dict(out="/no/such/dir/x.json"), "does not exist"),
                                    (dict(threads=0), "at least 1")])
def test_main_refuses_bad_arguments(kw, msg):
    with pytest.raises(ValueError, match=msg):
        cli.main(**kw)


def test_gpu_path_logic_runs_on_cpu_and_refuses_without_cuda():
    r = gpu.run_gpu(seconds=0.05, shapes=[TINY], device="cpu", compile=False, stacked_shape=TINY)
    row = r["sizes"][0]
    assert row["name"] == "tiny" and row["ref_tokens_per_s"] is None
    assert row["mfu_datasheet"] == pytest.approx(row["tokens_per_s"] * row["flops_per_token"] / 989e12)
    assert r["stacked"]["seeds"] == 8
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="needs a CUDA GPU"):
            gpu.run_gpu(device="cuda")


def test_gpu_shapes_are_pythias():
    s70, s160 = shapes_mod.gpu_shapes()
    assert (s70.n_layer, s70.d_model, s70.n_head) == (6, 512, 8)
    assert (s160.n_layer, s160.d_model, s160.n_head) == (12, 768, 12)
    for s in (s70, s160):
        assert s.vocab_size == 50304 and s.seq_len == 2048 and s.pos == "rotary" and not s.tie_embeddings
    from emergence.model import n_params_nonembed

    assert n_params_nonembed(s70.gpt_config()) == 18_915_328  # Pythia-70M, Biderman et al. 2023


def test_cli_bench_gpu_without_cuda_is_one_clear_line(capsys):
    from emergence.cli import main

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(["bench", "--gpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "CUDA" in err


def test_smoke_sweep_failure_is_reported_not_zero(monkeypatch, tmp_path):
    import subprocess

    class Done:
        returncode, stdout, stderr = 1, "", "some output\nerror: the sweep broke\n"

    monkeypatch.setattr(subprocess, "run", lambda *a, **k: Done())
    r = measure.measure_smoke_sweep(tmp_path)
    assert r["wall_s"] is None and "the sweep broke" in r["status"]


def test_profile_names_the_operators_of_one_step(capsys):
    from emergence.bench import main

    assert main(profile="l1d4", threads=1) == 0
    out = capsys.readouterr().out
    assert out.startswith("l1d4 (728 parameters, batch 32 x seq 20, one run, 1 threads): 10 steps")
    assert "aten::mm" in out or "aten::addmm" in out
    assert "_fused_adamw" in out or "AdamW" in out  # the optimizer is part of the step profiled
    with pytest.raises(ValueError, match="not a size of the CPU ladder"):
        main(profile="l9d9")
