"""The natural text form of the tasks, and the tokenizer-based probe engine (emergence.textprobe)."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from emergence import engine
from emergence.tasks import VOCAB, get_task, list_tasks

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------------------------------------------------------------
# Natural text form of every task.


def _encode(task, prompts):
    return VOCAB.encode_batch(prompts, task.prompt_len)


def test_addition_text_is_most_significant_first_without_padding():
    t = get_task("add2")
    prompts = _encode(t, ["12+07=", "99+99=", "00+00=", "40+97="])
    p, a = t.text(prompts, t.solve(prompts))
    assert p == ["12+7=", "99+99=", "0+0=", "40+97="]
    assert a == ["19", "198", "0", "137"]


def test_other_arithmetic_text():
    t = get_task("mult2")
    prompts = _encode(t, ["47*97=", "05*03="])
    assert t.text(prompts, t.solve(prompts)) == (["47*97=", "5*3="], ["4559", "15"])
    t = get_task("mod97")
    prompts = _encode(t, ["M:17*45=", "M:03-05="])
    assert t.text(prompts, t.solve(prompts)) == (["(17*45) mod 97=", "(3-5) mod 97="], ["86", "95"])


@pytest.mark.parametrize("name", ["copy", "reverse", "sort", "parity", "recall", "twohop", "dyck"])
def test_text_of_each_task_is_solved_by_its_own_answer(name):
    """The rendered answer is the right answer to the rendered prompt, checked from the text alone."""
    t = get_task(name)
    prompts, answers, _ = t.heldout_set(64, seed=3)
    ps, as_ = t.text(prompts, answers)
    assert len(ps) == len(as_) == len(prompts)
    for p, a in zip(ps, as_):
        assert "\n" not in p + a and a and a == a.strip() and p.endswith("=")
        if name in ("copy", "reverse", "sort", "parity"):
            m = re.fullmatch(rf"{name}\(([0-9a-z]+)\)=", p)
            assert m, p
            s = m.group(1)
            want = {"copy": s, "reverse": s[::-1], "sort": "".join(sorted(s)),
                    "parity": str(s.count("1") % 2)}[name]
            assert a == want
        elif name == "recall":
            *pairs, key = re.findall(r"([a-z])=(\d)?", p)
            assert dict(pairs)[key[0]] == a
        elif name == "twohop":
            m1, m2, key = p.rstrip("=").split(". ")
            first = dict(kv.split("=") for kv in m1.split(", "))
            second = dict(kv.split("=") for kv in m2.split(", "))
            assert second[first[key]] == a
        else:
            stack = []
            for ch in p[len("close "):-1]:
                if ch in "([":
                    stack.append(")" if ch == "(" else "]")
                else:
                    assert stack.pop() == ch
            assert "".join(reversed(stack)) == a


def test_every_task_text_keeps_the_split():
    """Rendering is one-to-one on each task's prompts, so no rendered training prompt equals a rendered held-out one
    (the held-out guarantee holds for the text a pretrained model reads)."""
    rng = np.random.default_rng(0)
    for name in list_tasks():
        t = get_task(name)
        hp, ha, _ = t.heldout_set(200, seed=1)
        tp, ta = t.sample(rng, 2000, "train")
        held = set(zip(*t.text(hp, ha)))
        train = set(zip(*t.text(tp, ta)))
        assert held and train and not held & train, name
        assert len(held) == len(hp), name  # distinct examples stay distinct


def test_kshot_text_renders_each_solved_example_naturally():
    t = get_task("add3", shots=3)
    assert t.name == "add3_3shot" and get_task("add3", shots=3) is t  # the rows' label; built once
    prompts, answers, ids = t.heldout_set(50, seed=7)
    ps, as_ = t.text(prompts, answers)
    base = get_task("add3")
    bp, ba, bids = base.heldout_set(50, seed=7)
    qp, qa = base.text(bp, ba)
    assert np.array_equal(ids, bids) and as_ == qa  # the same questions, same answers
    held = set(qp)
    for p, q in zip(ps, qp):
        lines = p.split("\n")
        assert len(lines) == 4 and lines[-1] == q
        for shot in lines[:3]:
            m = re.fullmatch(r"(\d+)\+(\d+)=(\d+)", shot)
            assert m and int(m.group(1)) + int(m.group(2)) == int(m.group(3))
            assert not re.search(r"(^|\D)0\d", shot)  # no zero padding anywhere
            assert shot.split("=")[0] + "=" not in held  # shots come from the training split
    # the same (n, seed) renders the same text: the probe set is fixed
    assert t.text(*t.heldout_set(50, seed=7)[:2]) == (ps, as_)


def test_default_text_is_the_decoded_task_text():
    from emergence.tasks.base import Task

    t = get_task("add2")
    prompts = _encode(t, ["12+07="])
    assert Task.text(type("Plain", (Task,), {"name": "plain"})(), prompts, t.solve(prompts)) == (["12+07="], ["910"])
    with pytest.raises(ValueError, match="one row per example"):
        t.text(prompts, t.solve(prompts)[:0])


# ---------------------------------------------------------------------------------------------------------------------
# The probe engine, on a bare `tokenizers` BPE (no transformers needed).

def _bpe(specials=("<pad>", "<bos>", "<eos>"), vocab=300):
    tk = pytest.importorskip("tokenizers")
    rng = np.random.default_rng(0)
    lines = []
    for _ in range(300):
        a, b = rng.integers(0, 100, 2)
        s = "".join(rng.choice(list("0123456789abcdefghijklmnopqrstuvwxyz"), 6))
        lines += [f"{a}+{b}={a + b}\n", f"copy({s})={s}\n", "the quick brown fox jumps over the lazy dog.\n"]
    tok = tk.Tokenizer(tk.models.BPE())
    tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tk.decoders.ByteLevel()
    tok.train_from_iterator(lines, tk.trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=list(specials), initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    return tok


def _cfg(**kw):
    from omegaconf import OmegaConf

    from emergence.config import ProbeConfig

    return OmegaConf.merge(OmegaConf.structured(ProbeConfig), {"n": 16, "batch_size": 5, "samples": 16, **kw})


class Oracle:
    """A fake causal LM that knows the answers: after a `good` prompt it puts logit 20 on the answer's next token
    (then on a newline), after any other prompt on a newline at once. Left padding, like a transformers model."""

    left_padding = True
    context = None
    device = torch.device("cpu")

    def __init__(self, tok, prompts, answers, good):
        self.vocab_size = tok.size
        self.newline = tok.encode(["\n"], special=False)[0][0]
        self.cont = {tuple(p): (list(a) if g else []) + [self.newline] for p, a, g in zip(prompts, answers, good)}
        self.prompt_lens = sorted({len(p) for p in prompts})

    def _next(self, seq):
        for L in self.prompt_lens:
            cont = self.cont.get(tuple(seq[:L]))
            if cont is not None and len(seq) >= L:
                j = len(seq) - L
                return cont[j] if j < len(cont) else self.newline
        return self.newline

    def _one_hot(self, tokens):
        out = torch.zeros(len(tokens), self.vocab_size)
        out[torch.arange(len(tokens)), torch.tensor(tokens)] = 20.0
        return out

    def logits(self, ids, mask, keep):
        rows = []
        for r in range(len(ids)):
            seq = ids[r][mask[r].bool()].tolist()
            rows.append(self._one_hot([self._next(seq[:len(seq) - keep + 1 + j]) for j in range(keep)]))
        return torch.stack(rows)

    def start(self, ids, mask):
        seqs = [ids[r][mask[r].bool()].tolist() for r in range(len(ids))]
        return self._one_hot([self._next(s) for s in seqs]), seqs

    def step(self, ids, mask, seqs):
        seqs = [s + [int(t)] for s, t in zip(seqs, ids)]
        return self._one_hot([self._next(s) for s in seqs]), seqs


def test_scores_of_a_model_that_knows_half_the_answers():
    """Exact match, char accuracy, edit distance, token accuracy and NLL against values known by construction."""
    from emergence import textprobe as tp

    tok = tp.TextTokenizer(_bpe())
    name = "add2_2shot"
    prompts, answers, ids = get_task(name).heldout_set(16, 1234)
    p_text, a_text = get_task(name).text(prompts, answers)
    p_ids, a_ids = tok.encode(p_text, special=True), tok.encode(a_text, special=False)
    good = np.arange(16) % 2 == 0
    rows, inst, samp = tp.score_text_task(Oracle(tok, p_ids, a_ids, good), tok, name, _cfg())
    got = {r["metric"]: r for r in rows}
    assert set(got) == set(tp.METRICS) and all(r["status"] == "ok" and r["n"] == 16 for r in rows)
    assert got["exact_match"]["value"] == 0.5 and got["exact_match"]["stderr"] == pytest.approx(0.125)
    assert got["char_accuracy"]["value"] == 0.5 and got["edit_distance"]["value"] == 0.5
    assert got["token_accuracy"]["value"] == 0.5
    assert np.array_equal(inst["exact"], good) and np.array_equal(inst["example_id"], ids)
    lp = inst["answer_logprob"]
    assert np.allclose(lp[good], 0, atol=1e-5) and (lp[~good] < -19 * np.array([len(a) for a in a_ids])[~good]).all()
    nll = -lp / np.array([len(a) for a in a_ids])
    nll_char = -lp / np.array([len(a) for a in a_text])
    assert got["answer_nll"]["value"] == pytest.approx(nll.mean()) and got["answer_nll"]["stderr"] > 0
    assert got["answer_nll_char"]["value"] == pytest.approx(nll_char.mean())
    assert samp["output"] == [a if g else "" for a, g in zip(a_text, good)] and samp["prompt"] == p_text
    # every prompt starts with the tokenizer's <bos>, as data.tokenizer=bpe trains
    assert all(p[0] == tok.bos_id == 1 for p in p_ids)


def test_char_scores():
    from emergence.textprobe import char_scores

    acc, dist = char_scores(["137", "13", "", "731", "1370"], ["137", "137", "137", "137", "137"])
    assert acc.tolist() == [1.0, 2 / 3, 0.0, 1 / 3, 1.0]
    assert dist.tolist() == [0.0, 1 / 3, 1.0, 2 / 3, 1 / 4]


def _gpt(vocab, block=96, seed=0):
    from emergence.model import GPT, GPTConfig

    torch.manual_seed(seed)
    return GPT(GPTConfig(n_layer=2, d_model=32, n_head=4, vocab_size=vocab, block_size=block)).eval()


def test_our_gpt_generation_and_teacher_forcing_match_a_plain_loop():
    """Batched generation with the KV cache gives, example by example, what a loop with no cache and no batching
    gives; so does the teacher-forced answer log-probability."""
    from emergence import textprobe as tp

    tok = tp.TextTokenizer(_bpe())
    model = _gpt(tok.size)
    lm = engine.GPTCausalLM(model)
    name = "copy"
    prompts, answers, _ = get_task(name, shots=1).heldout_set(12, 5)
    p_text, a_text = get_task(name, shots=1).text(prompts, answers)
    p_ids, a_ids = tok.encode(p_text, special=True), tok.encode(a_text, special=False)
    stops = tok.stops(tok.size)
    max_new = np.array([len(a) + 1 for a in a_text])
    gen = engine.greedy(lm, p_ids, max_new, stops, batch_size=5)
    tf = engine.teacher_forced(lm, p_ids, a_ids, batch_size=5)
    for i, (p, a) in enumerate(zip(p_ids, a_ids)):
        seq = list(p)
        for _ in range(max_new[i]):
            with torch.no_grad():
                nxt = int(model(torch.tensor([seq]))[0][0, -1].argmax())
            seq.append(nxt)
            if stops[nxt]:
                break
        assert gen[i] == seq[len(p):]
        with torch.no_grad():
            logp = model(torch.tensor([p + a]))[0][0].log_softmax(-1)
        want = sum(float(logp[len(p) - 1 + j, t]) for j, t in enumerate(a))
        assert tf["logprob"][i] == pytest.approx(want, abs=1e-4)
    # an example longer than the model's context: the task is not measured, not scored on a cut prompt
    rows, inst, _ = tp.score_text_task(engine.GPTCausalLM(_gpt(tok.size, block=12)), tok, name, _cfg(n=4), shots=1)
    assert {r["status"] for r in rows} == {"not_measured"} and not inst
    assert {r["task"] for r in rows} == {"copy_1shot"}


def test_a_bpe_run_is_probed_through_its_tokenizer(tmp_path):
    """A run folder with tokenizer.json (data.tokenizer=bpe) is probed by textprobe, k-shot, in the same files and
    schema as the char-level probe; probing again adds nothing."""
    import pandas as pd

    from analysis.schema import validate
    from emergence import checkpoint as ckpt
    from emergence.model import n_params, n_params_nonembed
    from emergence.probe import probe_run

    tok = _bpe()
    run = tmp_path / "runs" / "bpe-run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "tokenizer.json").write_text(tok.to_str())
    model = _gpt(tok.get_vocab_size())
    c = model.config
    run_cfg = {"sweep": {"name": "bpe"}, "model": {"name": "l2d32"}, "data": {"source": "text", "tokenizer": "bpe"},
               "task": {"train": {}, "probe": ["add2", "copy"]}}
    for step in (10, 20):
        ckpt.save(run / "checkpoints" / f"step_{step}.pt", {
            "model": model.state_dict(), "model_config": c.to_dict(), "config": run_cfg, "run_id": "bpe-run",
            "step": step, "tokens": step * 100, "flops": step * 1e6, "n_params": n_params(c),
            "n_params_nonembed": n_params_nonembed(c), "seed": 0, "val_loss": 5.0, "val_loss_stderr": 0.1,
            "val_loss_n": 8})
    new = probe_run(run, _cfg(n=6))
    rows = validate(pd.read_parquet(run / "probes.parquet"))
    assert set(rows["task"]) == {"lm", "mechanistic", "add2_3shot", "copy_3shot"}  # probe.shots: 3 by default
    task_rows = rows[rows["task"].str.endswith("shot")]
    assert set(task_rows["metric"]) == {"exact_match", "token_accuracy", "answer_nll", "answer_nll_char",
                                        "char_accuracy", "edit_distance"}
    assert (task_rows["status"] == "ok").all() and (task_rows["n"] == 6).all()
    assert sorted(rows["step"].unique()) == [10, 20] and len(new) == len(rows)
    inst = pd.read_parquet(run / "instances.parquet")
    assert len(inst) == 2 * 2 * 6 and np.isfinite(inst["answer_logprob"]).all()
    assert len(probe_run(run, _cfg(n=6))) == 0  # incremental: nothing left to probe


def test_an_answer_is_tokenized_as_it_follows_its_prompt():
    """A SentencePiece-style tokenizer marks a word start (Metaspace): the answer "19" alone is "▁1 9", after
    "12+7=" it is "=1 9"-like pieces. Scoring uses the tail of prompt + answer, as the model would produce it."""
    tk = pytest.importorskip("tokenizers")
    from emergence.textprobe import TextTokenizer

    tok = tk.Tokenizer(tk.models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = tk.pre_tokenizers.Metaspace()
    tok.decoder = tk.decoders.Metaspace()
    trainer = tk.trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>", "<pad>", "<bos>", "<eos>"],
                                     show_progress=False)
    # prompts and numbers apart, so that no merge crosses "=" (one that did would leave the answer tokenized alone)
    tok.train_from_iterator([f"{a}+{b}=" for a in range(40) for b in range(40)] + [str(n) for n in range(80)],
                            trainer)
    t = TextTokenizer(tok)
    prompts, answers = ["12+7=", "3+4="], ["19", "7"]
    got = t.encode_answers(prompts, answers)
    assert got != t.encode(answers, special=False)  # alone, each answer would start a word
    for p, a, ids in zip(prompts, answers, got):
        whole, head = tok.encode(p + a).ids, tok.encode(p).ids
        assert ids == whole[len(head):] and tok.decode(head + ids) == p + a
        assert tok.id_to_token(ids[0]) != "\u2581"  # never a lone word-start marker before the answer


def test_shots_are_a_number_never_read_from_a_name():
    """A k-shot variant is asked for by number; its row label is never parsed back into one."""
    assert get_task("add2", shots=0) is get_task("add2")
    assert get_task("add2_2shot", shots=3) is get_task("add2_2shot")  # registered as a variant: nests no further
    with pytest.raises(ValueError, match="by number, probe.shots=K"):
        get_task("add3_3shot")
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(ValueError, match="non-negative whole number"):
            get_task("add3", shots=bad)
    with pytest.raises(ValueError, match="1..32"):
        get_task("add3", shots=33)
