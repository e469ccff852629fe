"""The task registry, the built-in tasks and the training mixture: formats, answers, determinism, bad input.

Answers are checked against independent reference solvers written here on plain strings, so a vectorised solver
that is wrong disagrees with them.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from emergence.data import TaskMixture
from emergence.tasks import (TASKS, VOCAB, KShot, Task, get_task, join_examples,
                             list_tasks, register)
from emergence.tasks.base import PAD, hash_tokens

ROOT = Path(__file__).resolve().parents[1]
SUITES = ROOT / "sweeps" / "task"
REQUIRED = ["add1", "add2", "add3", "add4", "add5", "mult2", "mod97", "copy", "reverse", "sort", "parity", "recall",
            "twohop", "dyck"]
VARIANTS = {"add3_3shot": ("add3", 3), "dyck_2shot": ("dyck", 2), "recall_1shot": ("recall", 1)}  # label: (task, k)
ALL = list_tasks() + list(VARIANTS)


def task_of(name: str):
    """A registered task, or one of VARIANTS by its rows' label, asked for by number as the probe does."""
    return get_task(*VARIANTS[name]) if name in VARIANTS else get_task(name)


# ---- reference solvers on strings -----------------------------------------------------------------------------------
def reference(task_name: str, prompt: str) -> str:
    """The answer (without <eos>) a prompt should get, computed from its text."""
    m = re.fullmatch(r"(?P<base>.+)_(?P<k>\d+)shot", task_name)
    if m:
        *shots, query = prompt.split("\n")
        assert len(shots) == int(m["k"]), prompt
        for shot in shots:  # every solved example in the context is solved correctly
            cut = shot.index("=") + 1
            assert reference(m["base"], shot[:cut]) == shot[cut:], shot
        return reference(m["base"], query)
    if task_name.startswith("add"):
        a, b = re.fullmatch(r"(\d+)\+(\d+)=", prompt).groups()
        assert len(a) == len(b) == int(task_name[3:])
        return str(int(a) + int(b)).zfill(len(a) + 1)[::-1]
    if task_name.startswith("mult"):
        a, b = re.fullmatch(r"(\d+)\*(\d+)=", prompt).groups()
        return str(int(a) * int(b)).zfill(2 * len(a))[::-1]
    if task_name == "mod97":
        a, op, b = re.fullmatch(r"M:(\d\d)([-+*])(\d\d)=", prompt).groups()
        a, b = int(a), int(b)
        assert a < 97 and b < 97
        return f"{ {'+': a + b, '-': a - b, '*': a * b}[op] % 97:02d}"
    if task_name in ("copy", "reverse", "sort"):
        s = re.fullmatch(r"[CRS]:([0-9a-z]{6})=", prompt).group(1)
        return {"copy": s, "reverse": s[::-1], "sort": "".join(sorted(s))}[task_name]
    if task_name == "parity":
        bits = re.fullmatch(r"P:([01]{10})=", prompt).group(1)
        return str(bits.count("1") % 2)
    if task_name == "recall":
        pairs, q = re.fullmatch(r"K:((?:[a-z][0-9]){6})\|([a-z])=", prompt).groups()
        table = dict(zip(pairs[0::2], pairs[1::2]))
        assert len(table) == 6  # distinct keys
        return table[q]
    if task_name == "twohop":
        m1, m2, q = re.fullmatch(r"H:((?:[a-z][A-Z]){4})\|((?:[A-Z][0-9]){4})\|([a-z])=", prompt).groups()
        one, two = dict(zip(m1[0::2], m1[1::2])), dict(zip(m2[0::2], m2[1::2]))
        assert set(one.values()) == set(two)  # the second map covers the first map's values
        return two[one[q]]
    if task_name == "dyck":
        body = re.fullmatch(r"D:([()\[\]]{4,12})=", prompt).group(1)
        stack = []
        for c in body:
            if c in "([":
                stack.append(c)
            else:
                assert stack and stack.pop() == {")": "(", "]": "["}[c], body
        assert stack, body
        return "".join({"(": ")", "[": "]"}[c] for c in reversed(stack))
    raise AssertionError(f"no reference for {task_name}")


def decode_answer(row) -> str:
    """An answer row as text, checking the <eos> layout: characters, one <eos>, then padding only."""
    row = list(row)
    assert VOCAB.eos in row, row
    e = row.index(VOCAB.eos)
    assert all(t not in (VOCAB.pad, VOCAB.bos, VOCAB.eos) for t in row[:e]), row
    assert all(t == VOCAB.pad for t in row[e + 1:]), row
    return VOCAB.decode(row[:e])


# ---- vocabulary ------------------------------------------------------------------------------------------------------
def test_vocab_specials_and_roundtrip():
    assert (VOCAB.pad, VOCAB.bos, VOCAB.eos) == (0, 1, 2)
    assert VOCAB.sep == VOCAB.bos
    assert VOCAB.size == 3 + len(VOCAB.chars) == 99
    text = "12+34=640\nK:a1|a=~ "
    ids = VOCAB.encode(text)
    assert min(ids) >= 3 and max(ids) < VOCAB.size
    assert VOCAB.decode(ids) == text
    assert VOCAB.decode([VOCAB.bos] + ids + [VOCAB.eos, 0, 0], keep_special=True) == "<bos>" + text + "<eos>"
    assert VOCAB.decode([VOCAB.bos] + ids + [VOCAB.eos, 0]) == text
    # ids follow ASCII order, which Sort relies on
    assert VOCAB.encode("09az") == sorted(VOCAB.encode("z9a0"))
    arr = VOCAB.encode_batch(["ab", "c"])
    assert arr.tolist() == [VOCAB.encode("ab"), VOCAB.encode("c") + [0]]
    with pytest.raises(ValueError, match="not in the task vocabulary"):
        VOCAB.encode("é")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        VOCAB.decode([VOCAB.size])


# ---- registry --------------------------------------------------------------------------------------------------------
def test_registry_has_every_required_task():
    names = list_tasks()
    for name in REQUIRED:
        assert name in names
        assert get_task(name).name == name
    assert names == list(TASKS)
    assert any(isinstance(TASKS[n], KShot) for n in names)


def test_unknown_task_lists_known_names():
    with pytest.raises(ValueError) as e:
        get_task("add9")
    msg = str(e.value)
    assert "unknown task 'add9'" in msg and "add2" in msg and "recall" in msg and "shot" in msg
    with pytest.raises(ValueError, match="unknown task"):
        get_task("nonesuch", shots=3)


def test_kshot_variants_built_on_demand_once():
    t = get_task("add3", shots=3)
    assert isinstance(t, KShot) and t.k == 3 and t.base is get_task("add3") and t.name == "add3_3shot"
    assert get_task("add3", shots=3) is t
    assert "add3_3shot" not in list_tasks()  # derived, not registered
    with pytest.raises(ValueError, match="nest"):
        KShot(t, 2)


class _Double(Task):
    """A toy task written the way emergence/README.md ("Adding a task") says: a file's worth of code plus one register() line."""

    name = "double_test"
    description = "double a digit"
    answer_format = "two digits, then <eos>"
    example = ("D2:7=", "14")
    prompt_len, answer_len = 5, 3

    def sample_prompts(self, rng, n):
        d = rng.integers(0, 10, size=n) + VOCAB.id("0")
        return np.concatenate([np.tile(VOCAB.ids("D2:"), (n, 1)), d[:, None], np.full((n, 1), VOCAB.id("="))], 1)

    def solve(self, prompts):
        v = 2 * (prompts[:, 3] - VOCAB.id("0"))
        zero = VOCAB.id("0")
        return np.stack([v // 10 + zero, v % 10 + zero, np.full(len(v), VOCAB.eos)], axis=1)


def test_register_a_new_task_and_refuse_bad_ones():
    task = _Double()
    try:
        assert register(task) is task
        assert get_task("double_test") is task and "double_test" in list_tasks()
        p, a = task.sample(np.random.default_rng(0), 50, "train")
        assert not task.is_heldout(p).any()
        assert get_task("double_test", shots=2).sample(np.random.default_rng(0), 3, "heldout")[0].shape == (3, 21)
        with pytest.raises(ValueError, match="already registered"):
            register(_Double())
    finally:
        TASKS.pop("double_test", None)

    wrong = _Double()
    wrong.name = "double_wrong"
    wrong.example = ("D2:7=", "15")
    with pytest.raises(ValueError, match="disagrees with solve"):
        register(wrong)
    assert "double_wrong" not in TASKS
    bad = _Double()
    bad.name = "Bad Name"
    with pytest.raises(ValueError, match="lower-case"):
        register(bad)


# ---- every task: format, answers, determinism ------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_examples_are_well_formed_and_correct(name):
    task = task_of(name)
    rng = np.random.default_rng(7)
    for split in ("train", "heldout"):
        prompts, answers = task.sample(rng, 300, split)
        assert prompts.dtype == np.int64 and answers.dtype == np.int64
        assert prompts.shape == (300, task.prompt_len) and answers.shape == (300, task.answer_len)
        assert prompts.min() >= 0 and prompts.max() < VOCAB.size
        # no special token inside a prompt, padding only at the right end
        assert not np.isin(prompts, [VOCAB.bos, VOCAB.eos]).any()
        is_pad = prompts == PAD
        assert (np.diff(is_pad.astype(int), axis=1) >= 0).all()
        for p, a in zip(VOCAB.decode_batch(prompts), answers):
            assert decode_answer(a) == reference(name, p), (name, p)
        tok, mask, lengths = join_examples(prompts, answers)
        assert (tok[:, 0] == VOCAB.bos).all()
        assert (tok[np.arange(300), lengths - 1] == VOCAB.eos).all()
        assert (mask.sum(1) == (answers != PAD).sum(1)).all()
        assert lengths.max() <= task.max_example_len
        assert lengths.min() >= (task.min_example_len or task.max_example_len)


@pytest.mark.parametrize("name", ALL)
def test_documented_example_and_metadata(name):
    task = task_of(name)
    prompt, answer = task.example
    assert reference(name, prompt) == answer
    got = task.solve(VOCAB.encode_batch([prompt], task.prompt_len))
    assert decode_answer(got[0]) == answer
    assert task.description and task.answer_format


@pytest.mark.parametrize("name", ["add3", "recall", "dyck", "add2_2shot", "mod97"])
def test_sampling_is_deterministic_and_seed_dependent(name):
    task = task_of(name)
    a = task.sample(np.random.default_rng(3), 64, "train")
    b = task.sample(np.random.default_rng(3), 64, "train")
    c = task.sample(np.random.default_rng(4), 64, "train")
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])


def test_bad_split_and_counts():
    t = get_task("add2")
    with pytest.raises(ValueError, match="split must be one of"):
        t.sample(np.random.default_rng(0), 4, "test")
    with pytest.raises(ValueError, match="non-negative integer"):
        t.sample(np.random.default_rng(0), -1, "train")
    with pytest.raises(ValueError, match="seed must be"):
        t.heldout_set(4, seed=-3)
    p, a = t.sample(np.random.default_rng(0), 0, "train")
    assert p.shape == (0, t.prompt_len) and a.shape[0] == 0


def test_uniform_over_operands():
    """Addition draws every operand digit uniformly (chi-square-free check: each digit's share within 2%)."""
    p, _ = get_task("add3").sample(np.random.default_rng(0), 50_000, "train")
    digits = p[:, [0, 1, 2, 4, 5, 6]] - VOCAB.id("0")
    shares = np.bincount(digits.ravel(), minlength=10) / digits.size
    assert np.all(np.abs(shares - 0.1) < 0.02), shares


def test_dyck_and_recall_distributions():
    p, a = get_task("dyck").sample(np.random.default_rng(0), 5000, "train")
    lengths = (p != PAD).sum(1) - 3
    assert lengths.min() == 4 and lengths.max() == 12
    depth = (a != PAD).sum(1) - 1
    assert depth.min() == 1 and depth.max() >= 5
    p, a = get_task("recall").sample(np.random.default_rng(0), 5000, "train")
    query_pos = [VOCAB.decode(r)[2:14:2].index(VOCAB.decode(r)[15]) for r in p[:500]]
    assert set(query_pos) == set(range(6))  # every pair gets queried


def test_hash_ignores_right_padding_only():
    t = VOCAB.encode_batch(["12+34=", "34+12="])
    wide = np.concatenate([t, np.zeros((2, 11), dtype=np.int64)], axis=1)
    assert np.array_equal(hash_tokens(t, 5), hash_tokens(wide, 5))
    assert hash_tokens(t, 5)[0] != hash_tokens(t, 5)[1]
    assert hash_tokens(t, 5)[0] != hash_tokens(t, 6)[0]


# ---- the mixture -----------------------------------------------------------------------------------------------------
def split_examples(x_row, y_row):
    """(prompt, answer) strings of the examples packed in one row, located by <bos> and by the trained positions."""
    x_row, y_row = list(x_row), list(y_row)
    trained = [t + 1 for t, v in enumerate(y_row) if v != -100]  # positions whose token is a target
    out, starts = [], [i for i, t in enumerate(x_row) if t == VOCAB.bos]
    for s, e in zip(starts, starts[1:] + [len(x_row)]):
        ans = [i for i in trained if s < i < e]
        assert ans, "an example without trained answer tokens"
        assert ans == list(range(ans[0], ans[-1] + 1))  # the answer is one contiguous span
        assert x_row[ans[-1]] == VOCAB.eos
        assert all(t == VOCAB.pad for t in x_row[ans[-1] + 1:e])
        out.append((VOCAB.decode(x_row[s + 1:ans[0]]), VOCAB.decode(x_row[ans[0]:ans[-1]])))
    return out


def test_mixture_batch_layout_and_answers():
    mix = TaskMixture({"add2": 1.0, "recall": 1.0, "dyck": 0.5, "add2_2shot": 0.5}, seq_len=40)
    x, y, owner = mix.batch_with_tasks(seed=1, step=2, batch_size=64)
    assert x.dtype == torch.long and y.dtype == torch.long and x.shape == y.shape == (64, 40)
    assert mix.vocab_size == VOCAB.size
    xs, ys = x.numpy(), y.numpy()
    trained = ys != -100
    assert np.array_equal(ys[:, :-1][trained[:, :-1]], xs[:, 1:][trained[:, :-1]])  # y is x shifted by one
    assert (ys[:, -1] == -100).all()
    n = 0
    for r in range(64):
        starts = np.flatnonzero(xs[r] == VOCAB.bos)
        for (prompt, answer), s in zip(split_examples(xs[r], ys[r]), starts):
            name = mix.names[owner[r, s]]
            assert reference(name, prompt) == answer, (name, prompt, answer)
            n += 1
    assert n > 64  # rows hold more than one example when they fit
    assert ((xs == VOCAB.pad) == (owner == -1)).all()


def test_mixture_is_a_pure_function_of_seed_step_split():
    mix = TaskMixture({"add2": 1.0, "copy": 1.0}, seq_len=32)
    a, b = mix.batch(0, 5, 16), mix.batch(0, 5, 16)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(mix.batch(0, 6, 16)[0], a[0])
    assert not torch.equal(mix.batch(1, 5, 16)[0], a[0])
    assert not torch.equal(mix.batch(0, 5, 16, split="heldout")[0], a[0])
    # the order a config lists tasks in does not matter
    assert torch.equal(TaskMixture({"copy": 1.0, "add2": 1.0}, 32).batch(0, 5, 16)[0], a[0])


def test_mixture_batches_do_not_depend_on_what_was_asked_before():
    """Steps are drawn 16 at a time and kept per stream: a batch must be the same whichever batches (other steps,
    seeds, splits, many interleaved streams as stacked seeds read them) were asked for before it."""
    fresh = {(s, t): TaskMixture({"add2": 1.0, "copy": 1.0}, 32).batch(s, t, 8)[0]
             for s in range(3) for t in (0, 15, 16, 40)}
    mix = TaskMixture({"add2": 1.0, "copy": 1.0}, 32)
    for t in (40, 0, 16, 15):
        for s in (2, 0, 1):
            for other in range(300):  # more streams than the mixture keeps
                mix.batch(100 + other, t, 8)
            assert torch.equal(mix.batch(s, t, 8)[0], fresh[(s, t)])
            mix.batch(s, t, 8, split="heldout")
    rows = {tuple(fresh[(0, t)][0].tolist()) for t in (0, 15, 16, 40)}
    assert len(rows) == 4  # steps of one draw are different rows


def test_mixture_weights_are_respected():
    mix = TaskMixture({"add2": 3.0, "mult2": 1.0, "mod97": 0.0}, seq_len=12)  # one example per row: no packing bias
    shares = mix.task_shares(batches=10, batch_size=256)
    assert set(shares) == {"add2", "mult2"}
    assert abs(shares["add2"] - 0.75) < 0.04


def test_mixture_rejects_bad_input():
    with pytest.raises(ValueError, match="seq_len=16 is too short: task 'recall'.*>= 20"):
        TaskMixture({"recall": 1.0, "add1": 1.0}, seq_len=16)
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        TaskMixture({"nope": 1.0}, seq_len=32)
    with pytest.raises(ValueError, match=">= 0"):
        TaskMixture({"add2": -1.0}, seq_len=32)
    with pytest.raises(ValueError, match="every task weight is 0"):
        TaskMixture({"add2": 0.0}, seq_len=32)
    with pytest.raises(ValueError, match="non-empty"):
        TaskMixture({}, seq_len=32)
    mix = TaskMixture({"add2": 1.0}, seq_len=32)
    with pytest.raises(ValueError, match="split must be one of"):
        mix.batch(0, 0, 4, split="valid")
    with pytest.raises(ValueError, match="non-negative"):
        mix.batch(-1, 0, 4)
    assert mix.max_example_len() == 11


# ---- suites ----------------------------------------------------------------------------------------------------------
def load_suite(name):
    return yaml.safe_load((SUITES / f"{name}.yaml").read_text())


@pytest.mark.parametrize("path", sorted(SUITES.glob("*.yaml")), ids=lambda p: p.stem)
def test_suite_files_match_the_schema_and_name_real_tasks(path):
    suite = yaml.safe_load(path.read_text())
    assert set(suite) == {"name", "train", "probe"}
    assert suite["name"] == path.stem
    assert isinstance(suite["train"], dict) and suite["train"]
    assert all(isinstance(w, (int, float)) and w > 0 for w in suite["train"].values())
    assert isinstance(suite["probe"], list)
    for name in list(suite["train"]) + suite["probe"]:
        get_task(name)
    # every shipped suite trains at the default sequence length
    assert TaskMixture(suite["train"], seq_len=32).max_example_len() <= 32


def test_the_required_suites():
    assert {"arith", "all", "demo", "smoke"} <= {p.stem for p in SUITES.glob("*.yaml")}
    assert set(load_suite("all")["train"]) == set(list_tasks())
    assert set(load_suite("arith")["train"]) == {"add1", "add2", "add3", "add4", "add5", "mult2", "mod97"}
    assert 1 <= len(load_suite("smoke")["train"]) <= 2


def test_suites_compose_with_the_real_config():
    config = pytest.importorskip("emergence.config")
    for name in ("demo", "arith", "smoke", "all"):
        cfg = config.compose([f"task={name}"])
        assert cfg.task.name == name
        assert dict(cfg.task.train) == load_suite(name)["train"]
        TaskMixture(dict(cfg.task.train), cfg.data.seq_len)
