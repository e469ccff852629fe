"""Text pretraining data: a learned byte-level BPE (data.tokenizer=bpe), corpora tokenized elsewhere
(data.source=tokens), task rows mixed into text in the text's tokenizer (data.task_weight), and the pythia_ladder
experiment built on them."""
import json
import sys

import numpy as np
import pytest
import torch

from emergence import checkpoint as ckpt
from emergence.config import ConfigError, compose, run_dir, run_id, validate

BPE = ["data=text", "data.tokenizer=bpe", "data.vocab_size=320", "data.seq_len=32", "model.n_layer=2",
       "train.max_steps=12", "train.ckpt_log_until=0", "probe.inline=false"]
MARKER = "zqxjvwk"  # a word that only the held-out tail contains


def corpus(tmp_path, name="corpus.txt", tail=""):
    """A few KB of text written here; `tail` is appended at the end, inside the held-out 10%."""
    nouns = "river mountain garden window letter harbor engine meadow lantern castle forest kettle".split()
    verbs = "carries follows watches paints remembers gathers crosses answers measures opens".split()
    lines = [f"Day {i}: the {nouns[i % 12]} {verbs[i * 7 % 10]} a {nouns[i * 5 % 12]}ish {nouns[i * 11 % 12]}, "
             f"counting {i * 37 % 101} {verbs[i % 10][:-1]}ers." for i in range(120)]
    text = "\n".join(lines) + "\n"
    p = tmp_path / name
    p.write_text(text + tail)
    return p


def final_weights(cfg):
    _, state = ckpt.latest_valid(run_dir(cfg) / "checkpoints")
    return state


# ---------------------------------------------------------------------------------------------------------------------
# The BPE tokenizer


def test_bpe_learns_only_from_the_training_part_deterministically(tmp_path):
    pytest.importorskip("tokenizers")
    from emergence.data import BPE_SPECIALS, BPETokenizer, text_parts, train_run_tokenizer

    held_tail = " ".join([MARKER] * 40)  # frequent enough that any BPE seeing it would merge it
    path = corpus(tmp_path, tail=held_tail)
    parts = text_parts(path, 0.1)
    assert all(MARKER not in p for p in parts["train"]) and MARKER in parts["heldout"][0]
    assert parts["train"][0] + parts["heldout"][0] == path.read_text()

    tok = train_run_tokenizer(path, 400, 0.1)
    vocab = json.loads(tok.to_json())["model"]["vocab"]
    assert tok.vocab_size == len(vocab) == 400
    assert not any("zq" in t or "jvw" in t for t in vocab)  # no merge learned from the held-out tail
    # the control: the same words in the training part are merged (the check above can fail)
    seen = BPETokenizer.train([held_tail + "\n", *parts["train"]], 400)
    assert any(MARKER in t for t in json.loads(seen.to_json())["model"]["vocab"])

    # deterministic: learned again from scratch, the same file
    again = BPETokenizer.train((line for doc in parts["train"] for line in doc.splitlines(keepends=True)), 400)
    assert again.to_json() == tok.to_json()
    # specials declared as special tokens, at the task vocabulary's ids
    added = {t["content"]: (t["id"], t["special"]) for t in json.loads(tok.to_json())["added_tokens"]}
    assert added == {"<pad>": (0, True), "<bos>": (1, True), "<eos>": (2, True)}
    assert (tok.pad, tok.bos, tok.eos) == (0, 1, 2) and tuple(added) == BPE_SPECIALS
    # a literal "<eos>" in text is text, and text round-trips
    ids = tok.encode_batch(["a <eos> b 12+34=46"])[0]
    assert tok.eos not in ids and tok.decode(ids) == "a <eos> b 12+34=46"


def test_bpe_run_writes_its_tokenizer_and_resumes_bit_identically(tiny, tmp_path, monkeypatch):
    pytest.importorskip("tokenizers")
    import emergence.data as data
    from emergence.train import train

    path = corpus(tmp_path)
    full = tiny(*BPE, f"data.text_path={path}", f"paths.results={tmp_path / 'full'}")
    s = train(full)
    assert s["state"] == "done" and s["vocab_size"] == 320
    saved = run_dir(full) / "tokenizer.json"
    assert data.BPETokenizer.load(saved).vocab_size == 320 == final_weights(full)["model_config"]["vocab_size"]

    part = tiny(*BPE, f"data.text_path={path}", f"paths.results={tmp_path / 'part'}", "train.fail_at_step=7")
    assert train(part)["state"] == "failed"
    assert (run_dir(part) / "tokenizer.json").read_bytes() == saved.read_bytes()
    # the resumed run reads its saved tokenizer: learning one again would fail here
    data._BPE_MEMO.clear()

    def no_training(*args, **kwargs):
        raise AssertionError("a resumed run learned its tokenizer again")

    monkeypatch.setattr(data.BPETokenizer, "train", no_training)
    resumed = tiny(*BPE, f"data.text_path={path}", f"paths.results={tmp_path / 'part'}")
    assert run_id(resumed) == run_id(part)
    assert train(resumed)["state"] == "done"
    ref, got = final_weights(full), final_weights(resumed)
    assert ref["step"] == got["step"] == 12
    assert all(torch.equal(ref["model"][k], got["model"][k]) for k in ref["model"])

    # and it probes: the tasks are read as text through its own tokenizer (emergence.textprobe)
    import pandas as pd

    from emergence.cli import main

    assert main(["probe", str(run_dir(full)), "probe.tasks=[add2]", "probe.n=8", "probe.shots=0",
                 "probe.mechanistic=false"]) == 0
    rows = pd.read_parquet(run_dir(full) / "probes.parquet")
    add2 = rows[(rows["task"] == "add2") & (rows["step"] == 12)].set_index("metric")
    assert {"exact_match", "char_accuracy", "answer_nll", "answer_nll_char", "edit_distance"} <= set(add2.index)
    assert (add2["status"] == "ok").all() and (add2["n"] == 8).all()
    assert 0 <= add2.loc["char_accuracy", "value"] <= 1 and add2.loc["answer_nll", "value"] > 0


def test_bpe_bad_input_is_one_line(tiny, tmp_path, monkeypatch):
    pytest.importorskip("tokenizers")
    from emergence.data import build_source

    path = corpus(tmp_path)
    with pytest.raises(ConfigError, match=r"data.vocab_size >= 259"):
        validate(tiny(*BPE, f"data.text_path={path}", "data.vocab_size=200"))
    with pytest.raises(ConfigError, match="does not exist"):
        validate(tiny(*BPE, f"data.text_path={tmp_path / 'nowhere.txt'}"))
    with pytest.raises(ConfigError, match="needs data.text_path"):
        validate(tiny(*BPE))
    with pytest.raises(ConfigError, match="needs data.source=text"):
        validate(tiny("data.task_weight=0.2"))
    with pytest.raises(ConfigError, match="data.tokenizer=bpe or leave it 0"):
        validate(tiny("data=text", f"data.text_path={path}", "data.vocab_size=300"))
    with pytest.raises(ValueError, match=r"yields only \d+ BPE tokens, fewer than data.vocab_size=5000"):
        build_source(tiny(*BPE, f"data.text_path={path}", "data.vocab_size=5000"))
    small = tmp_path / "small.txt"
    small.write_text("the quick brown fox " * 10)  # its held-out tail: 20 characters
    with pytest.raises(ValueError, match="fewer than data.seq_len"):
        build_source(tiny(*BPE, f"data.text_path={small}", "data.vocab_size=260", "data.seq_len=64"))
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # as if the extra were not installed
    with pytest.raises(ConfigError, match=r'pip install "emergence\[hf\]"'):
        validate(tiny(*BPE, f"data.text_path={path}"))


def test_cli_corpus_too_small_for_the_vocabulary_one_line_and_nothing_written(tmp_path, capsys):
    pytest.importorskip("tokenizers")
    from emergence.cli import main

    path = corpus(tmp_path)
    results = tmp_path / "results"
    code = main(["train", "model=l1d32", *BPE, f"data.text_path={path}", "data.vocab_size=5000",
                 f"paths.results={results}"])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "data.vocab_size=5000" in lines[0] and "Traceback" not in err
    assert not results.exists()


# ---------------------------------------------------------------------------------------------------------------------
# Task rows mixed into text


def split_examples(x_row, y_row, tok):
    """The examples of one task row: (prompt text, answer text, answer ids trained) per <bos> ... <eos>."""
    out, ids, tgt = [], x_row.tolist(), y_row.tolist()
    starts = [i for i, t in enumerate(ids) if t == tok.bos]
    for s in starts:
        e = ids.index(tok.eos, s)
        trained = [t for t in tgt[s:e] if t != -100]  # position t predicts x[t+1]: answer tokens and the <eos>
        assert trained[-1] == tok.eos
        n_answer = len(trained) - 1
        prompt_ids, answer_ids = ids[s + 1:e - n_answer], ids[e - n_answer:e]
        assert trained[:-1] == answer_ids
        out.append((tok.decode(prompt_ids), tok.decode(answer_ids)))
    return out, starts


def answer_of(prompt: str) -> int:
    """The right answer to a natural-text arithmetic prompt: "12+345=", "47*97=", "(89-36) mod 97="."""
    body = prompt.rstrip("=")
    mod = body.endswith(" mod 97")
    body = body.removesuffix(" mod 97").strip("()")
    op = next(o for o in "+*-" if o in body)
    a, b = (int(v) for v in body.split(op))
    value = {"+": a + b, "*": a * b, "-": a - b}[op]
    return value % 97 if mod else value


@pytest.mark.parametrize("tokenizer", ["bpe", "bytes"])
def test_task_rows_in_text_train_answers_only_and_read_as_natural_text(tiny, tmp_path, tokenizer):
    pytest.importorskip("tokenizers")
    from emergence.data import build_source

    path = corpus(tmp_path)
    extra = ["data.tokenizer=bpe", "data.vocab_size=400"] if tokenizer == "bpe" else []
    cfg = tiny("data=text", *extra, f"data.text_path={path}", "data.seq_len=48", "task=arith",
               "data.task_weight=0.25", "data.pack=true")
    src = build_source(cfg)
    tok = src.tokenizer
    x, y = src.batch(0, 3, 16)
    assert x.shape == y.shape == (16, 48) and src.n_task_rows(16) == 4
    x2, y2 = src.batch(0, 3, 16)
    assert torch.equal(x, x2) and torch.equal(y, y2)  # a pure function of (seed, step, split)
    assert not torch.equal(x[-4:], src.batch(0, 4, 16)[0][-4:])
    text = path.read_text()
    for r in range(12):  # text rows: windows of the training text, every token trained
        assert torch.equal(y[r, :-1], x[r, 1:])
        assert tok.decode(x[r].tolist()) in text
    n_examples = 0
    for r in range(12, 16):
        examples, starts = split_examples(x[r], y[r], tok)
        assert starts[0] == 0 and len(examples) >= 2  # packed from the left
        for prompt, answer in examples:  # natural text, most significant digit first, and the answer is right
            assert answer == str(answer_of(prompt)), (prompt, answer)
            n_examples += 1
        inside = np.zeros(48, dtype=bool)  # outside the examples' answers nothing is trained
        ids = x[r].tolist()
        for s in starts:
            inside[s:ids.index(tok.eos, s)] = True
        assert (y[r].numpy()[~inside] == -100).all()
    assert n_examples >= 8


def test_task_rows_one_per_row_from_their_split_and_a_seq_len_too_short(tiny, tmp_path):
    pytest.importorskip("tokenizers")
    from emergence.data import build_source
    from emergence.tasks import VOCAB, get_task

    path = corpus(tmp_path)
    base = ["data=text", "data.tokenizer=bpe", "data.vocab_size=400", f"data.text_path={path}", "task=smoke",
            "data.task_weight=0.5"]
    src = build_source(tiny(*base, "data.seq_len=32"))
    tok, copy = src.tokenizer, get_task("copy")
    assert src.tasks.slots == 1
    for split in ("train", "heldout"):
        x, y = src.batch(1, 0, 32, split)
        assert [int((row == tok.bos).sum()) for row in x[16:]] == [1] * 16 and (x[16:, 0] == tok.bos).all()
        prompts = []
        for r in range(16, 32):
            (prompt, answer), = split_examples(x[r], y[r], tok)[0]
            assert prompt == f"copy({answer})="
            prompts.append(VOCAB.encode(f"C:{answer}="))
        assert (copy.is_heldout(np.array(prompts)) == (split == "heldout")).all()  # task rows keep their split
    with pytest.raises(ValueError, match=r"data.seq_len=8 is too short for task 'copy'"):
        build_source(tiny(*base, "data.seq_len=8"))


# ---------------------------------------------------------------------------------------------------------------------
# A corpus tokenized elsewhere


@pytest.mark.parametrize("dtype,vocab", [("uint16", 1000), ("uint32", 100_000)])
def test_tokens_source_reads_bins_as_a_pure_function_of_seed_step_split(tmp_path, dtype, vocab):
    from emergence.data import TokenSource

    rng = np.random.default_rng(0)
    folder = tmp_path / "bins"
    folder.mkdir()
    train = rng.integers(0, vocab // 2, size=5000).astype(dtype)  # training ids in the lower half
    val = rng.integers(vocab // 2, vocab, size=700).astype(dtype)  # held-out ids in the upper half
    train.tofile(folder / "train.bin")
    val.tofile(folder / "val.bin")
    src = TokenSource(folder, 16, vocab, dtype)
    x, y = src.batch(3, 5, 8)
    assert x.dtype == torch.int64 and x.shape == (8, 16)
    assert torch.equal(x, src.batch(3, 5, 8)[0]) and not torch.equal(x, src.batch(3, 6, 8)[0])
    assert torch.equal(y[:, :-1], x[:, 1:]) and int(x.max()) < vocab // 2
    for row in x.numpy():  # each row a window of train.bin
        hits = np.flatnonzero(train[:len(train) - 15] == row[0])
        assert any((train[h:h + 16] == row).all() for h in hits)
    xh, _ = src.batch(3, 5, 8, "heldout")
    assert int(xh.min()) >= vocab // 2
    # one .bin: the last 10% is held out
    one = tmp_path / "all.bin"
    np.concatenate([train, val]).tofile(one)
    single = TokenSource(one, 16, vocab, dtype, heldout_fraction=700 / 5700)
    assert len(single.parts["train"]) == 5000 and int(single.batch(0, 0, 8, "heldout")[0].min()) >= vocab // 2


def test_tokens_source_bad_input_is_one_line(tmp_path):
    from emergence.data import TokenSource

    ids = np.arange(100, dtype=np.uint16)
    folder = tmp_path / "bins"
    folder.mkdir()
    ids.tofile(folder / "train.bin")
    with pytest.raises(ValueError, match="no val.bin"):
        TokenSource(folder, 8, 200)
    odd = tmp_path / "odd.bin"
    odd.write_bytes(ids.tobytes() + b"\x00")
    with pytest.raises(ValueError, match="201 bytes, not a multiple of 2"):
        TokenSource(odd, 8, 200)
    ok = tmp_path / "ok.bin"
    ids.tofile(ok)
    with pytest.raises(ValueError, match="holds token id 89, not below data.vocab_size=50"):
        TokenSource(ok, 8, 50)
    with pytest.raises(ValueError, match="fewer than data.seq_len"):
        TokenSource(ok, 64, 200)
    with pytest.raises(ValueError, match="does not fit in data.tokens_dtype=uint16"):
        TokenSource(ok, 8, 70_000)


def test_a_tokens_run_trains(tiny, tmp_path):
    from emergence.train import train

    ids = (np.arange(4000) % 50).astype(np.uint32)  # a periodic corpus: learnable in a few steps
    path = tmp_path / "corpus.bin"
    ids.tofile(path)
    with pytest.raises(ConfigError, match="needs data.vocab_size"):
        validate(tiny("data=tokens", f"data.tokens_path={path}", "data.tokens_dtype=uint32"))
    cfg = tiny("data=tokens", f"data.tokens_path={path}", "data.tokens_dtype=uint32", "data.vocab_size=64",
               "data.seq_len=32", "probe.inline=false")
    s = train(cfg)
    assert s["state"] == "done" and s["vocab_size"] == 64
    first = ckpt.load(run_dir(cfg) / "checkpoints" / "step_0.pt")["val_loss"]
    assert final_weights(cfg)["val_loss"] < first


# ---------------------------------------------------------------------------------------------------------------------
# The pythia_ladder experiment


def test_pythia_ladder_is_text_plus_tasks_in_a_bpe(tmp_path):
    pytest.importorskip("tokenizers")
    from emergence.data import TextTaskSource, build_source

    cfg = compose(["experiment=pythia_ladder", f"paths.results={tmp_path}"])
    d = cfg.data
    assert (d.source, d.tokenizer, d.seq_len, d.pack) == ("text", "bpe", 512, True)
    assert d.vocab_size >= 8192 and 0 < d.task_weight < 0.5 and len(cfg.task.train) == 15
    with pytest.raises(ConfigError, match=r"^data.source=text needs data.text_path=.*no corpus ships"):
        validate(cfg)
    # with a corpus (and a vocabulary its few KB can fill) it builds: text rows and the whole suite as task rows
    path = tmp_path / "big.txt"
    path.write_text("".join(f"Line {i}: the quick brown fox jumps over the lazy dog {i % 13} times.\n"
                            for i in range(400)))
    cfg = compose(["experiment=pythia_ladder", f"paths.results={tmp_path}", f"data.text_path={path}",
                   "data.vocab_size=400"])
    src = build_source(cfg)
    assert isinstance(src, TextTaskSource) and src.vocab_size == 400
    x, y = src.batch(0, 0, 10)
    assert x.shape == (10, 512) and (y[-1] != -100).sum() > 20  # a packed task row: many answers
