"""The held-out guarantee: no training stream ever emits a held-out example.

Proved by enumeration where the example space is small (every prompt is classified, then the training stream is
checked against the held-out prompts as text), and by sampling (>= 100k examples per task) elsewhere; then the same
for the packed rows the trainer actually reads. Membership is checked on the prompt text re-encoded at another
width, so the check does not lean on the arrays the sampler produced.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from emergence.data import TaskMixture
from emergence.tasks import HELDOUT_FRACTION, VOCAB, get_task, list_tasks
from emergence.tasks.base import PAD

ENUMERABLE = ["add1", "add2", "mult2", "mod97", "parity"]
SAMPLED = ["add3", "add4", "add5", "copy", "reverse", "sort", "recall", "twohop", "dyck", "add2_2shot",
           ("add3", 3), ("mod97", 2)]  # (task, shots): a k-shot variant built on demand
N_SAMPLED = 100_000


def as_set(prompts: np.ndarray, width: int = 128) -> set[bytes]:
    """Prompts as a set of exact byte strings (their tokens, right-padded to one width so padding cannot matter)."""
    prompts = np.asarray(prompts, dtype=np.int64)
    assert prompts.shape[1] <= width and (prompts[:, -1:] == PAD).all() | (prompts.shape[1] < width)
    rows = np.zeros((len(prompts), width), dtype=np.uint8)
    rows[:, :prompts.shape[1]] = prompts
    return set(rows.view(f"V{width}").ravel().tolist())


def reencode(prompts: np.ndarray, extra: int = 3) -> np.ndarray:
    """The prompts decoded to text and encoded again, right-padded wider than the task's own width."""
    texts = VOCAB.decode_batch(prompts)
    return VOCAB.encode_batch(texts, max(map(len, texts)) + extra)


def test_every_built_in_task_is_covered():
    assert set(ENUMERABLE) | set(SAMPLED) >= set(list_tasks())


# ---- by enumeration --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ENUMERABLE)
def test_split_by_enumeration(name):
    task = get_task(name)
    assert task.enumerable
    everything = task.enumerate_prompts()
    assert len(as_set(everything)) == task.space_size  # the enumeration has no repeats
    held = task.is_heldout(everything)
    n_held = int(held.sum())
    assert 0 < n_held < task.space_size
    if task.space_size >= 1000:
        assert abs(n_held / task.space_size - HELDOUT_FRACTION) < 0.03
    held_set, train_set = as_set(everything[held]), as_set(everything[~held])

    rng = np.random.default_rng(0)
    train_p, _ = task.sample(rng, N_SAMPLED, "train")
    seen = as_set(train_p)
    assert not seen & held_set
    assert len(seen) >= 0.95 * len(train_set)  # the train split reaches (almost) its whole part, uniformly
    held_p, _ = task.sample(rng, 20_000, "heldout")
    assert as_set(held_p) <= held_set
    assert len(as_set(held_p)) >= 0.95 * len(held_set)


@pytest.mark.parametrize("name", ["add1", "add2", "mult2", "mod97"])
def test_mirror_images_share_a_side(name):
    """a+b and b+a (a*b and b*a, and + and * mod 97) are one example: both held out or both trained on."""
    task = get_task(name)
    everything = task.enumerate_prompts()
    held = dict(zip(VOCAB.decode_batch(everything), task.is_heldout(everything)))
    checked = 0
    for text, h in held.items():
        body = text[2:] if text.startswith("M:") else text
        op = next(c for c in "+-*" if c in body)
        if op == "-":
            continue
        a, b = body[:-1].split(op)
        mirror = text.replace(body, f"{b}{op}{a}=")
        assert held[mirror] == h, (text, mirror)
        checked += 1
    assert checked >= 0.6 * len(held)


def test_split_is_pinned():
    """The split is part of the results' meaning (a checkpoint trained under one split is probed under the same), so
    it must not drift between versions or machines: these held-out examples are fixed."""
    add1 = get_task("add1")
    held = sorted(VOCAB.decode_batch(add1.prompts_from_index(add1.split_indices()["heldout"])))
    assert held == ['0+0=', '0+9=', '1+6=', '2+4=', '4+2=', '4+9=', '5+8=', '6+1=', '8+5=', '9+0=', '9+4=']
    add2 = get_task("add2")
    assert len(add2.split_indices()["heldout"]) == 1000
    assert add2.is_heldout(VOCAB.encode_batch(["00+22=", "22+00=", "00+50=", "00+23="])).tolist() == \
        [True, True, True, False]


# ---- by sampling -----------------------------------------------------------------------------------------------------
def task_of(spec):
    """A registered task by name, or (name, shots): its k-shot variant."""
    return get_task(*spec) if isinstance(spec, tuple) else get_task(spec)


@pytest.mark.parametrize("name", SAMPLED, ids=str)
def test_split_by_sampling(name):
    task = task_of(name)
    rng = np.random.default_rng(1)
    train_p, _ = task.sample(rng, N_SAMPLED, "train")
    assert not task.is_heldout(train_p).any()
    assert not task.is_heldout(reencode(train_p[:2_000])).any()  # the text decides, not the array
    held_p, _ = task.sample(rng, 2_000, "heldout")
    assert task.is_heldout(reencode(held_p)).all()
    assert not as_set(train_p) & as_set(held_p)
    # the uniform generator really splits about HELDOUT_FRACTION off (so the sampler's filter is doing work)
    share = task.is_heldout(task.sample_prompts(rng, 20_000)).mean()
    assert abs(share - HELDOUT_FRACTION) < 0.012, share  # 5 standard errors


@pytest.mark.parametrize("name", ["add2_2shot", ("add3", 3), ("mod97", 2)], ids=str)
def test_kshot_contexts_hold_only_training_examples(name):
    """In every split of a k-shot task the solved examples come from the base task's training part, and the query
    is on the side the split asks for."""
    task = task_of(name)
    base = task.base
    rng = np.random.default_rng(2)
    for split in ("train", "heldout"):
        prompts, _ = task.sample(rng, 5_000, split)
        texts = VOCAB.decode_batch(prompts)
        parts = [t.split("\n") for t in texts]
        assert all(len(p) == task.k + 1 for p in parts)
        shots = [s[:s.index("=") + 1] for p in parts for s in p[:-1]]
        assert not base.is_heldout(VOCAB.encode_batch(shots)).any()
        queries = VOCAB.encode_batch([p[-1] for p in parts])
        assert (base.is_heldout(queries) == (split == "heldout")).all()
        assert (task.is_heldout(prompts) == (split == "heldout")).all()


# ---- the fixed held-out probe set ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["add1", "add2", "mod97", "add3", "recall", "dyck", "add2_2shot"])
def test_heldout_set_is_deterministic_distinct_and_disjoint_from_train(name):
    task = get_task(name)
    p1, a1, id1 = task.heldout_set(512, seed=1234)
    p2, a2, id2 = task.heldout_set(512, seed=1234)
    assert np.array_equal(p1, p2) and np.array_equal(a1, a2) and np.array_equal(id1, id2)
    assert id1.dtype == np.int64 and (id1 >= 0).all()
    assert len(set(id1.tolist())) == len(id1) == len(as_set(p1))  # distinct examples, distinct ids
    assert np.array_equal(id1, task.example_ids(p1))  # ids are a function of the example
    assert task.is_heldout(reencode(p1)).all()
    assert np.array_equal(a1, task.solve(p1))
    # a smaller n is a prefix of a larger n's set, so probe sets nest
    p_small, _, id_small = task.heldout_set(100, seed=1234)
    assert np.array_equal(p_small, p1[:len(p_small)]) and np.array_equal(id_small, id1[:len(id_small)])
    # another seed draws another set (where the held-out part is larger than the set)
    p3, _, _ = task.heldout_set(512, seed=99)
    if task.enumerable:
        assert len(p1) == min(512, len(task.split_indices()["heldout"]))
    else:
        assert len(p1) == 512
    if len(p1) == 512:
        assert not np.array_equal(p1, p3)
    train_p, _ = task.sample(np.random.default_rng(3), N_SAMPLED, "train")
    assert not as_set(train_p) & as_set(p1)


def test_heldout_set_larger_than_the_heldout_part_returns_all_of_it():
    add1 = get_task("add1")
    prompts, answers, ids = add1.heldout_set(1000, seed=0)
    everything = add1.enumerate_prompts()
    held = as_set(everything[add1.is_heldout(everything)])
    assert len(prompts) == len(held) == 11  # all of it, and the length says so
    assert as_set(prompts) == held and len(set(ids.tolist())) == 11
    # the same examples in another order for another seed
    other, _, other_ids = add1.heldout_set(1000, seed=1)
    assert as_set(other) == held and set(other_ids.tolist()) == set(ids.tolist())
    # a k-shot variant of a tiny task is bounded by its base's held-out queries
    p, a, kid = get_task("add1", shots=2).heldout_set(1000, seed=0)
    assert len(p) == 11 and set(kid.tolist()) == set(ids.tolist())


def test_kshot_heldout_set_queries_are_the_base_set():
    """add2_2shot's probe set asks add2's probe-set questions (same ids), so k-shot and zero-shot scores pair up."""
    bp, ba, bid = get_task("add2").heldout_set(256, seed=5)
    kshot = get_task("add2_2shot")
    kp, ka, kid = kshot.heldout_set(256, seed=5)
    assert np.array_equal(bid, kid) and np.array_equal(ba, ka)
    assert np.array_equal(kshot.query(kp), bp)


# ---- the packed training stream --------------------------------------------------------------------------------------
def stream_examples(mix: TaskMixture, split: str, steps: int, batch_size: int = 128):
    """(task name, prompt text) of every example in the rows of `steps` batches, found by decoding the rows."""
    out = []
    for step in range(steps):
        x, y, owner = mix.batch_with_tasks(seed=11, step=step, batch_size=batch_size, split=split)
        x, y = x.numpy(), y.numpy()
        for r in range(len(x)):
            row = x[r]
            starts = np.flatnonzero(row == VOCAB.bos)
            for s in starts:
                first_answer = s + 1 + int(np.argmax(y[r, s:] != -100))  # y[t] targets x[t+1]
                out.append((mix.names[owner[r, s]], VOCAB.decode(row[s + 1:first_answer])))
    return out


@pytest.mark.parametrize("suite", [["add1", "add2", "mod97", "parity", "mult2"],
                                   ["add3", "copy", "recall", "twohop", "dyck", "add2_2shot", "sort"]])
def test_training_rows_hold_no_heldout_example(suite):
    mix = TaskMixture({n: 1.0 for n in suite}, seq_len=32)
    examples = stream_examples(mix, "train", steps=60)
    assert len(examples) > 10_000
    by_task: dict[str, list[str]] = {}
    for name, text in examples:
        by_task.setdefault(name, []).append(text)
    assert set(by_task) == set(suite)
    for name, texts in by_task.items():
        task = get_task(name)
        prompts = VOCAB.encode_batch(texts, task.prompt_len)
        assert not task.is_heldout(prompts).any(), name
        if task.enumerable:  # against the enumerated held-out part, as text
            everything = task.enumerate_prompts()
            held_text = set(VOCAB.decode_batch(everything[task.is_heldout(everything)]))
            assert not set(texts) & held_text, name


def test_heldout_rows_hold_only_heldout_examples():
    mix = TaskMixture({"add1": 1.0, "add3": 1.0, "recall": 1.0, "add2_2shot": 1.0}, seq_len=32)
    examples = stream_examples(mix, "heldout", steps=5)
    assert len(examples) > 500
    for name in mix.names:
        texts = [t for n, t in examples if n == name]
        assert texts and get_task(name).is_heldout(VOCAB.encode_batch(texts)).all(), name


# ---- speed (reported, not asserted) ----------------------------------------------------------------------------------
def test_batch_generation_speed_report(capsys):
    """Batches per second for batch 128 at seq_len 32; printed (run with -s to see it), never asserted."""
    lines = []
    for suite in ({"copy": 0.5, "add2": 1.0, "add3": 1.0, "recall": 1.0}, {n: 1.0 for n in list_tasks()}):
        mix = TaskMixture(suite, seq_len=32)
        mix.batch(0, 0, 128)
        t0, examples, n = time.perf_counter(), 0, 0
        while time.perf_counter() - t0 < 1.0:
            x, y = mix.batch(0, n, 128)
            examples += int((x == VOCAB.bos).sum())
            n += 1
        dt = time.perf_counter() - t0
        assert x.shape == (128, 32) and (y != -100).any()
        lines.append(f"{len(suite)} tasks: {n / dt:.0f} batches/s, {examples / dt:.0f} examples/s "
                     f"(batch 128, seq_len 32)")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
