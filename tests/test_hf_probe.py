"""`emergence probe --hf`: tiny random Hugging Face models built here (no download), probed into a sweep folder
that analysis and report read; revisions' steps and tokens; the refusals (one line, nothing written)."""
from __future__ import annotations

import argparse
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from analysis.schema import validate  # noqa: E402
from emergence import textprobe  # noqa: E402
from emergence.cli import main  # noqa: E402
from emergence.hf import (PYTHIA_TOKENS_PER_STEP, ModelRefused, param_counts, parse_revision, probe_hf,  # noqa: E402
                          probe_hf_cli)
from emergence.tasks import get_task  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


N = 8  # examples per task
OVERRIDES = ["probe.tasks=[add2,parity]", f"probe.n={N}", f"probe.samples={N}", "probe.batch_size=4",
             "probe.shots=1"]


def _corpus() -> list[str]:
    """Sums, parities and a sentence, 300 of each: what the tokenizer trained here learns its merges from."""
    rng = np.random.default_rng(0)
    sums = [f"{a}+{b}={a + b}\n" for a, b in rng.integers(0, 100, (300, 2))]
    bits = ["".join(row) for row in rng.choice(list("01"), (300, 10))]
    return [line for s, b in zip(sums, bits)
            for line in (s, f"parity({b})={b.count('1') % 2}\n", "the quick brown fox jumps.\n")]


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(_corpus(), trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")


def _neox(vocab, seed):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    return GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2,
                                            num_attention_heads=4, intermediate_size=64,
                                            max_position_embeddings=128, tie_word_embeddings=False,
                                            bos_token_id=0, eos_token_id=0)).eval()


def _gpt2(vocab, seed):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=128,
                                      bos_token_id=0, eos_token_id=0)).eval()


def _save_pickled(model, folder):
    """A model folder with pickled weights only (pytorch_model.bin), as older checkpoints on the hub are."""
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A folder of models: neox (safetensors; revisions step1000..3000 as subfolders, tokenizer at the top),
    gpt2 (pickled weights that torch.load(weights_only=True) reads)."""
    root = tmp_path_factory.mktemp("hub")
    tok = _tokenizer()
    vocab = len(tok)
    neox = root / "tiny-neox"
    for i, step in enumerate((1000, 2000, 3000)):
        _neox(vocab, i).save_pretrained(neox / f"step{step}")
    _neox(vocab, 0).save_pretrained(neox)
    tok.save_pretrained(neox)
    gpt2 = root / "tiny-gpt2"
    _save_pickled(_gpt2(vocab, 5), gpt2)
    tok.save_pretrained(gpt2)
    assert (gpt2 / "pytorch_model.bin").exists() and not list(gpt2.glob("*.safetensors"))
    return {"root": root, "neox": neox, "gpt2": gpt2, "tok": tok}


def _reference_greedy(model, tok, prompt: str, max_new: int) -> str:
    """One example at a time, no cache, no padding: the plainest greedy loop."""
    ids = tok(prompt)["input_ids"]
    new = []
    for _ in range(max_new):
        with torch.no_grad():
            nxt = int(model(torch.tensor([ids + new])).logits[0, -1].argmax())
        new.append(nxt)
        if nxt == tok.eos_token_id or "\n" in tok.decode([nxt]):
            break
    if tok.eos_token_id in new:
        new = new[:new.index(tok.eos_token_id)]
    return tok.decode(new, skip_special_tokens=True).split("\n")[0].strip()


def test_probing_two_models_gives_schema_rows_that_match_a_reference_loop(hub, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "sweep"
    # through the command line's function: argparse hands the first override to the optional RUN_DIR
    args = argparse.Namespace(hf=[str(hub["neox"]), str(hub["gpt2"])], revision=None, tokens_per_step=None,
                              out=str(out), run_dir=OVERRIDES[0], overrides=OVERRIDES[1:])
    assert probe_hf_cli(args) == 0
    res = validate(pd.read_parquet(out / "results.parquet"))
    assert set(res["task"]) == {"add2_1shot", "parity_1shot"}
    assert set(res["metric"]) == set(textprobe.METRICS) and (res["status"] == "ok").all()
    assert (res["n"] == N).all() and np.isfinite(res["stderr"]).all()
    assert res["step"].isna().all() and res["tokens"].isna().all()  # no revision: one checkpoint, step unknown
    runs = pd.read_parquet(out / "runs.parquet")
    assert len(runs) == 2 and (runs["status"] == "done").all()
    samples = pd.read_parquet(out / "samples.parquet")
    inst = pd.read_parquet(out / "instances.parquet")
    for name, folder in (("tiny-neox", hub["neox"]), ("tiny-gpt2", hub["gpt2"])):
        model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
        tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        rows = res[res["model"] == name]
        total = sum(p.numel() for p in model.parameters())
        inp = model.get_input_embeddings().weight.numel()
        if name == "tiny-neox":  # untied output matrix, rotary positions
            nonembed = total - inp - model.get_output_embeddings().weight.numel()
        else:  # tied output matrix, learned positions
            nonembed = total - inp - model.transformer.wpe.weight.numel()
        assert (rows["n_params"] == total).all() and (rows["n_params_nonembed"] == nonembed).all()
        assert param_counts(model) == (total, nonembed)
        assert (rows["n_layer"] == 2).all() and (rows["d_model"] == 32).all()
        for base in ("add2", "parity"):
            task = get_task(base, shots=1).name  # the rows' label
            prompts, answers, ids = get_task(base, shots=1).heldout_set(N, 1234)
            ptext, atext = get_task(base, shots=1).text(prompts, answers)
            s = samples[(samples["model"] == name) & (samples["task"] == task)].set_index("example_id")
            e = inst[(inst["run_id"] == rows["run_id"].iloc[0]) & (inst["task"] == task)].set_index("example_id")
            assert len(s) == len(e) == N
            for p, a, i in zip(ptext, atext, ids):
                want = _reference_greedy(model, tok, p, len(a) + 1)
                assert s.loc[i, "output"] == want, (name, p)
                assert bool(e.loc[i, "exact"]) == (want == a)
                assert s.loc[i, "prompt"] == p and s.loc[i, "target"] == a
            # the teacher-forced answer log-probability: prompt ids then answer ids, one example at a time
            p0, a0 = tok(ptext[0])["input_ids"], tok(atext[0], add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logp = model(torch.tensor([p0 + a0])).logits[0].log_softmax(-1)
            ref = sum(float(logp[len(p0) - 1 + j, t]) for j, t in enumerate(a0))
            assert e.loc[ids[0], "answer_logprob"] == pytest.approx(ref, abs=1e-4)
            em = rows[(rows["task"] == task) & (rows["metric"] == "exact_match")].iloc[0]
            assert em["value"] == pytest.approx(e["exact"].mean())


@pytest.mark.slow
def test_three_revisions_form_a_sweep_that_analyze_and_report_accept(hub, tmp_path):
    out = tmp_path / "revs"
    probe_hf([str(hub["neox"])], ["step1000", "step2000", "step3000"], out,
             ["probe.tasks=[add2]", f"probe.n={N}", "probe.shots=0"], None)
    res = validate(pd.read_parquet(out / "results.parquet"))
    assert sorted(res["step"].unique()) == [1000, 2000, 3000]
    assert set(res["tokens"]) == {s * float(PYTHIA_TOKENS_PER_STEP) for s in (1000, 2000, 3000)}
    assert set(res["flops"]) == {6.0 * res["n_params_nonembed"].iloc[0] * t for t in res["tokens"]}
    assert set(res["task"]) == {"add2"} and res["run_id"].nunique() == 1
    # revisions differ (each subfolder holds other weights), and each was read from its own folder
    nll = res[res["metric"] == "answer_nll"].set_index("step")["value"]
    assert nll.nunique() == 3
    grid = json.loads((out / "grid.json").read_text())
    assert [r["model"] for r in grid["runs"]] == ["tiny-neox"]
    # the command-line entry point, in this process (a fresh interpreter would import analysis and torch again)
    assert main(["analyze", str(out), "--x", "tokens"]) == 0
    assert main(["report", str(out)]) == 0
    assert (out / "flags.csv").exists() and (out / "report.html").stat().st_size > 0
    html = (out / "report.html").read_text()
    assert "1 model size (seeds not recorded)" in html and "Seeds: ." not in html and "0 seed(s)" not in html
    flags = pd.read_csv(out / "flags.csv")
    assert set(flags["task"]) == {"add2"} and set(flags["metric"]) == set(textprobe.METRICS)


def test_revision_names_give_step_and_tokens():
    assert parse_revision("step1000") == (1000, 1000 * 2_097_152.0)
    assert parse_revision("step143000", tokens_per_step=1000) == (143000, 143_000_000.0)
    assert parse_revision("stage1-step1000-tokens4B") == (1000, 4e9)
    assert parse_revision("step556000-tokens2460B") == (556000, 2.46e12)
    assert parse_revision("ckpt_step_50", tokens_per_step=10) == (50, 500.0)
    with pytest.raises(ModelRefused, match="--tokens-per-step"):
        parse_revision("ckpt_step_50")
    with pytest.raises(ModelRefused, match="names no training step"):
        parse_revision("main")
    with pytest.raises(ModelRefused, match="positive"):
        parse_revision("step10", tokens_per_step=-1)


def test_hub_names_come_from_the_local_cache_only(hub, tmp_path, monkeypatch):
    """A hub name resolves to its snapshot in the local cache (a revision through refs/<revision>); one not cached
    is refused without any network call (local_files_only)."""
    import huggingface_hub.constants as hc

    from emergence.hf import resolve

    repo = tmp_path / "cache" / "models--tiny--neox"
    for ref, commit, src in (("main", "a" * 40, hub["neox"]), ("step2000", "b" * 40, hub["neox"] / "step2000")):
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
        snap = repo / "snapshots" / commit
        snap.mkdir(parents=True)
        for f in src.iterdir():
            if f.is_file():
                (snap / f.name).write_bytes(f.read_bytes())
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve("tiny/neox", None) == (repo / "snapshots" / ("a" * 40), None)
    assert resolve("tiny/neox", "step2000") == (repo / "snapshots" / ("b" * 40), None)
    with pytest.raises(ModelRefused, match="revision 'step9' of tiny/neox: .*never downloads"):
        resolve("tiny/neox", "step9")


def _refused(models, out, revisions=None, match="", overrides=OVERRIDES):
    with pytest.raises(ModelRefused, match=match) as e:
        probe_hf(models, revisions, out, overrides, None)
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 400
    assert not out.exists()  # nothing written
    return msg


def test_refusals_are_one_line_and_write_nothing(hub, tmp_path):
    from transformers import BertConfig, BertModel

    out = tmp_path / "out"
    _refused([str(tmp_path / "no-such-model")], out, match="no such folder")
    _refused([str(hub["neox"])], out, overrides=["probe.tasks=[nope]"], match="unknown task 'nope'")
    _refused([str(hub["neox"])], out, overrides=["probe.bogus=1"], match="bogus")
    _refused([str(hub["neox"])], out, overrides=["train.lr=1"], match="probe.. overrides only")
    _refused([str(hub["neox"])], out, ["main"], match="names no training step")
    with pytest.raises(ModelRefused, match="not both"):
        probe_hf_cli(argparse.Namespace(hf=[str(hub["neox"])], revision=None, tokens_per_step=None, out=str(out),
                                        run_dir="results/x/runs/y", overrides=[]))
    with pytest.raises(ModelRefused, match="needs --out"):
        probe_hf_cli(argparse.Namespace(hf=[str(hub["neox"])], revision=None, out=None, run_dir=None))
    _refused([str(hub["neox"])], out, ["step1000", "step9999"], match="no revision 'step9999'")
    revisions_only = tmp_path / "revisions-only"  # a suite's revisions as subfolders, nothing at the top
    shutil.copytree(hub["neox"] / "step1000", revisions_only / "step1000")
    shutil.copytree(hub["neox"] / "step2000", revisions_only / "step2000")
    _refused([str(revisions_only)], out, match="2 subfolder.s. do: probe them as revisions, --revision step1000,step2000")
    _refused(["nobody/not-a-cached-model"], out, match="local Hugging Face cache")

    bert = tmp_path / "bert"
    BertModel(BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(bert)
    hub["tok"].save_pretrained(bert)
    _refused([str(bert)], out, match="not a causal language model")

    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "config.json").write_text(json.dumps({
        "model_type": "tiny_custom", "architectures": ["TinyCustomForCausalLM"],
        "auto_map": {"AutoConfig": "configuration_tiny.TinyConfig",
                     "AutoModelForCausalLM": "modeling_tiny.TinyCustomForCausalLM"}}))
    (remote / "modeling_tiny.py").write_text("raise SystemExit('remote code ran')\n")
    _refused([str(remote)], out, match="remote code")

    unsafe = tmp_path / "unsafe"
    _save_pickled(_gpt2(len(hub["tok"]), 0), unsafe)
    hub["tok"].save_pretrained(unsafe)
    state = torch.load(unsafe / "pytorch_model.bin", weights_only=True)
    state["extra"] = Payload()  # any object that is not a tensor or plain container: needs pickled code
    torch.save(state, unsafe / "pytorch_model.bin")
    _refused([str(unsafe)], out, match="weights_only")
    # one bad model among good ones: still nothing written
    _refused([str(hub["neox"]), str(unsafe)], out, match="weights_only")


class Payload:
    """Stands for code a pickle would run."""


def test_revisions_that_serve_one_checkpoint_are_named_and_kept_out(hub, tmp_path, capsys):
    """step1000 serves step3000's weights (byte for byte, as a hub branch can): one line names both, step1000's rows
    are duplicate_weights (unprobed, value NaN), and runs.parquet records every revision's files and fingerprint.
    --keep-duplicates probes them all, and the two revisions then measure the same."""
    folder = tmp_path / "dup-neox"
    for step, seed in ((2000, 1), (3000, 2)):
        _neox(len(hub["tok"]), seed).save_pretrained(folder / f"step{step}")
    shutil.copytree(folder / "step3000", folder / "step1000")
    hub["tok"].save_pretrained(folder)
    revs = ["step1000", "step2000", "step3000"]
    over = ["probe.tasks=[add2]", f"probe.n={N}", "probe.shots=0"]
    out = probe_hf([str(folder)], revs, tmp_path / "dup", over, None)
    err = capsys.readouterr().err
    line = [x for x in err.splitlines() if "identical weights" in x]
    assert len(line) == 1 and "step1000, step3000" in line[0] and "step3000 is probed" in line[0]
    res = validate(pd.read_parquet(out / "results.parquet"))
    by_step = {step: set(g) for step, g in res.groupby("step")["status"]}
    assert by_step[1000] == {"duplicate_weights"} and by_step[2000] == by_step[3000] == {"ok"}
    assert res.loc[res["step"] == 1000, "value"].isna().all()
    runs = pd.read_parquet(out / "runs.parquet")
    rec = {r["revision"]: r for r in json.loads(runs["revisions"].iloc[0])}
    assert rec["step1000"]["fingerprint"] == rec["step3000"]["fingerprint"] != rec["step2000"]["fingerprint"]
    assert rec["step2000"]["files"] == ["model.safetensors"] and len(rec["step2000"]["fingerprint"]) == 64
    kept = validate(pd.read_parquet(probe_hf([str(folder)], revs, tmp_path / "keep", over, None,
                                             keep_duplicates=True) / "results.parquet"))
    assert (kept["status"] == "ok").all()
    nll = kept[kept["metric"] == "answer_nll"].set_index("step")["value"]
    assert nll[1000] == nll[3000] != nll[2000]


def test_an_interrupted_probe_resumes_with_only_what_is_missing(hub, tmp_path, monkeypatch):
    """Killed after its first revision, a rerun with the same arguments loads only the two revisions left, and the
    folder's rows equal those of one uninterrupted call. A task or a revision added later is probed alone; other
    settings are refused in one line."""
    import emergence.hf as hf

    revs = ["step1000", "step2000", "step3000"]
    over = ["probe.tasks=[add2]", f"probe.n={N}", "probe.shots=0"]
    whole = pd.read_parquet(probe_hf([str(hub["neox"])], revs, tmp_path / "whole" / "s", over, None)
                        / "results.parquet")

    loads, real_load, real_probe = [], hf.load, hf.textprobe.probe_model
    monkeypatch.setattr(hf, "load", lambda folder, *a, **k: loads.append(folder.name) or real_load(folder, *a, **k))

    def dies_at_the_second(lm, tok, tasks, cfg, base, out, shots=0):
        if base["step"] == 2000:
            raise KeyboardInterrupt  # as a kill would, after step1000's rows were written
        return real_probe(lm, tok, tasks, cfg, base, out, shots)

    monkeypatch.setattr(hf.textprobe, "probe_model", dies_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        probe_hf([str(hub["neox"])], revs, tmp_path / "cut" / "s", over, None)
    monkeypatch.setattr(hf.textprobe, "probe_model", real_probe)
    loads.clear()
    cut = pd.read_parquet(probe_hf([str(hub["neox"])], revs, tmp_path / "cut" / "s", over, None) / "results.parquet")
    assert loads == ["step2000", "step3000"]
    key = ["step", "task", "metric"]
    pd.testing.assert_frame_equal(cut.sort_values(key).reset_index(drop=True),
                                  whole.sort_values(key).reset_index(drop=True))
    # the same call again loads nothing; a task added is probed alone, at every revision
    loads.clear()
    probe_hf([str(hub["neox"])], revs, tmp_path / "cut" / "s", over, None)
    assert loads == []
    calls = []
    monkeypatch.setattr(hf.textprobe, "probe_model",
                        lambda lm, tok, tasks, *a: calls.append(list(tasks)) or real_probe(lm, tok, tasks, *a))
    more = pd.read_parquet(probe_hf([str(hub["neox"])], revs, tmp_path / "cut" / "s",
                                    ["probe.tasks=[add2,parity]", f"probe.n={N}", "probe.shots=0"], None)
                           / "results.parquet")
    assert calls == [["parity"]] * 3 and set(more["task"]) == {"add2", "parity"}
    with pytest.raises(ModelRefused, match=r"other settings \(n 8 there, 4 now\)"):
        probe_hf([str(hub["neox"])], revs, tmp_path / "cut" / "s", ["probe.tasks=[add2]", "probe.n=4", "probe.shots=0"],
                 None)


def test_the_lm_eval_bench_scores_the_same_items_as_lm_eval_item_by_item(hub, tmp_path, capsys):
    """Our engine and lm-evaluation-harness on one tiny local model and one task's probe set: the same greedy
    answers, exact match and answer log-probabilities on every item; both timed, in one run."""
    pytest.importorskip("lm_eval")
    pytest.importorskip("accelerate")
    from emergence.bench.lmeval import LOGPROB_TOL, lmeval_bench

    r = lmeval_bench(hub["neox"], task="add2", n=24, shots=1, batch_size=8)
    assert r["task"] == "add2_1shot" and r["n"] == 24
    assert r["agree"] and r["agree_text"] == r["agree_exact"] == r["agree_logprob"] == 24
    assert r["max_logprob_diff"] <= LOGPROB_TOL and r["ours_s"] > 0 and r["lmeval_s"] > 0
    assert r["ratio"] == pytest.approx(r["lmeval_s"] / r["ours_s"])
    # the command: one line for a folder that is not a model, the figures and agreement otherwise
    assert main(["bench", "--lm-eval", str(tmp_path)]) == 2
    assert "not a local Hugging Face model folder" in capsys.readouterr().err
    out = tmp_path / "bench.json"
    assert main(["bench", "--lm-eval", str(hub["neox"]), "--n", "8", "--out", str(out)]) == 0
    assert "the scores agree on every item" in capsys.readouterr().out
    assert json.loads(out.read_text())["n"] == 8
