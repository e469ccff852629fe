"""`emergence export`: our checkpoints as Hugging Face folders, checked by loading them with transformers: the same
logits for both architectures (GPT-2 for learned positions, GPT-NeoX for rotary) with and without biases, tied and
untied; the same token ids as our own readers for the task vocabulary, bytes and a learned BPE; bad input refused
with nothing written."""
import json

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
pytest.importorskip("safetensors")

from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from emergence import checkpoint as ckpt  # noqa: E402
from emergence import export as ex  # noqa: E402
from emergence.data import TEXT_SPECIALS, TaskText, TextSource  # noqa: E402
from emergence.model import GPT, GPTConfig, flops_per_token, n_params, n_params_nonembed  # noqa: E402
from emergence.run import payload  # noqa: E402
from emergence.tasks import VOCAB, get_task  # noqa: E402

TEXT = "Line 1: the quick brown fox\tjumps over the lazy dog; caf\u00e9 \u2013 \u00fcber <eos> 12+34=46 ~|\n"


def make_checkpoint(run, *, pos="learned", bias=True, tie=True, data=None, vocab_size=99, state_extra=None):
    """A tiny model moved well away from its initialisation (so LayerNorms, biases and positions all matter), saved
    as a run's checkpoint through `emergence.run.payload`; returns (checkpoint path, model)."""
    torch.manual_seed(0)
    c = GPTConfig(n_layer=2, d_model=32, n_head=4, vocab_size=vocab_size, block_size=32, pos=pos, bias=bias,
                  tie_embeddings=tie)
    model = GPT(c)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    derived = {"tokens_per_step": 32, "flops_per_token": flops_per_token(c), "n_params": n_params(c),
               "n_params_nonembed": n_params_nonembed(c)}
    state = payload(model_state=model.state_dict(), model_config=c.to_dict(),
                    resolved={"data": data or {"source": "tasks"}}, rid="r0", seed=0, step=5, derived=derived,
                    heldout=(1.0, 0.1, 8), wall=1.0, rng=torch.get_rng_state(), tracker=None, optimizer_state=None)
    state.update(state_extra or {})
    (run / "checkpoints").mkdir(parents=True)
    return ckpt.save(run / "checkpoints" / "step_5.pt", state), model.eval()


@pytest.mark.parametrize("pos, bias, tie", [("learned", True, True), ("learned", False, False),
                                             ("rotary", True, False), ("rotary", False, True)])
def test_transformers_gives_our_logits(tmp_path, pos, bias, tie):
    """Each architecture with and without biases, and with a tied and an untied head."""
    path, model = make_checkpoint(tmp_path / "run", pos=pos, bias=bias, tie=tie)
    out = ex.export(path, tmp_path / "hf")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "emergence.json", "generation_config.json",
                                                     "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(hf).__name__ == {"learned": "GPT2LMHeadModel", "rotary": "GPTNeoXForCausalLM"}[pos]
    assert hf.dtype == torch.float32 and hf.config.tie_word_embeddings == tie
    ids = torch.randint(0, 99, (3, 32), generator=torch.Generator().manual_seed(1))  # the whole context
    with torch.no_grad():
        ours, theirs = model(ids)[0], hf(input_ids=ids).logits
    assert ours.std() > 0.5  # logits that vary, so a match means something
    assert (theirs - ours).abs().max() < 1e-4


def test_a_wrong_layout_is_caught_by_the_export_itself_and_nothing_is_written(tmp_path, monkeypatch):
    """The export loads its folder back before putting it in place: with GPT-NeoX's per-head qkv order left out,
    the logits differ and it refuses."""
    path, _ = make_checkpoint(tmp_path / "run", pos="rotary")
    monkeypatch.setattr(ex, "_per_head_qkv", lambda w, n_head: w)
    with pytest.raises(ValueError, match=r"reads the export with logits .* away from ours .*nothing was written"):
        ex.export(path, tmp_path / "hf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no folder, no temporary left behind


def test_task_vocabulary_tokenizer_gives_our_ids(tmp_path):
    path, _ = make_checkpoint(tmp_path / "run")
    out = ex.export(path, tmp_path / "hf")
    tok = AutoTokenizer.from_pretrained(out)
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (VOCAB.pad, VOCAB.bos, VOCAB.eos) == (0, 1, 2)
    config = json.loads((out / "config.json").read_text())
    assert (config["pad_token_id"], config["bos_token_id"], config["eos_token_id"]) == (0, 1, 2)
    for name in ("add3", "sort", "recall", "add2_2shot"):
        prompt, answer = get_task(name).example
        assert tok(prompt)["input_ids"] == [VOCAB.bos, *VOCAB.encode(prompt)]  # as `emergence generate` feeds it
        assert tok(prompt + answer, add_special_tokens=False)["input_ids"] == VOCAB.encode(prompt + answer)
    # arbitrary text: characters outside the vocabulary are dropped, as emergence's reader of text in it does;
    # "<eos>" typed in the text is five characters, as for emergence
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT * 20)
    expected = TaskText(corpus, seq_len=8).encode(TEXT.encode("utf-8")).tolist()
    got = tok(TEXT, add_special_tokens=False)["input_ids"]
    assert got == expected and len(got) == len(TEXT) - 4  # tab, e-acute, en dash and u-umlaut dropped
    assert tok.decode(tok(TEXT)["input_ids"], skip_special_tokens=True) == VOCAB.decode(expected)


def test_byte_tokenizer_gives_our_ids(tmp_path):
    path, model = make_checkpoint(tmp_path / "run", data={"source": "text", "text_path": "x.txt"},
                                  vocab_size=TextSource.vocab_size)
    out = ex.export(path, tmp_path / "hf")
    tok = AutoTokenizer.from_pretrained(out)
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (256, 257, 258) == \
        (TEXT_SPECIALS["bos"], TEXT_SPECIALS["eos"], TEXT_SPECIALS["pad"])
    raw = TEXT.encode("utf-8")
    assert tok(TEXT, add_special_tokens=False)["input_ids"] == TextSource.encode(raw).tolist()
    assert tok(TEXT)["input_ids"] == [TEXT_SPECIALS["bos"], *raw]  # as `emergence generate` feeds a prompt
    assert tok.decode(tok(TEXT)["input_ids"], skip_special_tokens=True) == TEXT
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.tensor([tok(TEXT[:20])["input_ids"]])
    with torch.no_grad():
        assert (hf(input_ids=ids).logits - model(ids)[0]).abs().max() < 1e-4


def test_learned_bpe_tokenizer_is_the_runs_own(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<bos>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator([TEXT] * 50, trainer)
    run = tmp_path / "run"
    data = {"source": "text", "text_path": "x.txt", "tokenizer": "bpe"}
    path, _ = make_checkpoint(run, data=data, vocab_size=bpe.get_vocab_size())
    with pytest.raises(ValueError, match=r"data.tokenizer=bpe but no tokenizer.json"):
        ex.export(path, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
    bpe.save(str(run / "tokenizer.json"))  # where the run keeps it, one level above its checkpoints
    out = ex.export(path, tmp_path / "hf")
    tok = AutoTokenizer.from_pretrained(out)
    bpe.encode_special_tokens = True  # as emergence reads text in training: a typed "<bos>" is text
    assert tok(TEXT)["input_ids"] == bpe.encode(TEXT).ids and len(bpe.encode(TEXT).ids) < len(TEXT) / 2
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == tuple(
        bpe.token_to_id(t) for t in ("<pad>", "<bos>", "<eos>"))
    assert json.loads((out / "emergence.json").read_text())["tokenizer"] == "bpe"


def test_bad_inputs_are_refused_with_one_line_and_nothing_written(tmp_path):
    good, _ = make_checkpoint(tmp_path / "run")
    (tmp_path / "notes.pt").write_text("not a checkpoint\n")
    no_model = ckpt.save(tmp_path / "step_1.pt", {"step": 1})
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    cases = [(tmp_path / "missing.pt", tmp_path / "o1", "does not exist"),
             (tmp_path / "notes.pt", tmp_path / "o2", "has no checksum file notes.pt.sha256"),
             (no_model, tmp_path / "o3", "is not an emergence model checkpoint"),
             (good, full, "already exists and is not an empty folder")]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for checkpoint, out, message in cases:
        with pytest.raises(ValueError, match=message) as e:
            ex.export(checkpoint, out)
        assert "\n" not in str(e.value) and (str(checkpoint) in str(e.value) or str(out) in str(e.value))
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert (full / "keep.txt").read_text() == "mine"


def test_cli_exports_into_an_empty_folder_and_says_where(tmp_path, capfd):
    path, _ = make_checkpoint(tmp_path / "run", pos="rotary", tie=False)
    (tmp_path / "hf").mkdir()
    killed = tmp_path / ".hf.export-999999999"  # left by an export killed long ago: its mark is inside
    killed.mkdir()
    (killed / ex.EXPORT_MARK).write_text("999999999\n")
    # folders this tool did not make, whatever their names: never touched
    others = [".hf.export-2019", ".hf.export-final", ".hf.export-999999998", ".hfx.export-999999999"]
    for name in others:
        (tmp_path / name / "keep").mkdir(parents=True)
    assert ex.export_cli(str(path), str(tmp_path / "hf")) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["hf", "run", *others])
    assert not (tmp_path / "hf" / ex.EXPORT_MARK).exists()
    star = tmp_path / "out*"  # a target whose name is a glob pattern matches only itself
    assert ex.remove_killed_exports(star) == [] and all((tmp_path / n / "keep").is_dir() for n in others)
    said, err = capfd.readouterr()
    assert "GPTNeoXForCausalLM" in said and "step 5" in said and "from_pretrained" in said
    assert "sequence length" not in err and "transformers" not in err, err  # the check's sample is ours to compare
    modes = {f.name: f.stat().st_mode & 0o777 for f in (tmp_path / "hf").iterdir()}
    assert len(set(modes.values())) == 1 and modes["model.safetensors"] & 0o044, modes  # one mode for every file
    meta = json.loads((tmp_path / "hf" / "emergence.json").read_text())
    assert meta["step"] == 5 and meta["run_id"] == "r0" and meta["tokenizer"] == "chars"
    assert meta["n_params"] == n_params(GPTConfig(**meta["model_config"]))


def test_without_the_hf_extra_the_export_says_how_to_get_it(tmp_path, monkeypatch):
    import importlib.util

    path, _ = make_checkpoint(tmp_path / "run")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "safetensors" else real(name, *a))
    with pytest.raises(ValueError, match=r"pip install 'emergence\[hf\]'"):
        ex.export(path, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
