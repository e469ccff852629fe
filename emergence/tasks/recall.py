"""In-context lookup: associative recall and two-hop recall.

The mapping is new in every prompt, so it cannot be memorised in the weights: the model must find the queried key
in its context and copy what follows it, the job of the induction heads of Olsson et al. 2022 ("In-context Learning
and Induction Heads"). Two-hop composes two such lookups (key -> middle in one map, middle -> value in another).
"""
from __future__ import annotations

import numpy as np

from .base import Task, const, with_eos
from .vocab import VOCAB

LOWER = VOCAB.ids("abcdefghijklmnopqrstuvwxyz")
UPPER = VOCAB.ids("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
DIGITS = VOCAB.ids("0123456789")


def _distinct(rng: np.random.Generator, n: int, k: int, pool: int) -> np.ndarray:
    """k distinct indices into range(pool) per row, in random order (the first k of a random permutation)."""
    return np.argsort(rng.random((n, pool)), axis=1)[:, :k]


def _interleave(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rows a0 b0 a1 b1 ... from two (n, k) arrays."""
    return np.stack([a, b], axis=2).reshape(a.shape[0], -1)


def _lookup(keys: np.ndarray, values: np.ndarray, query: np.ndarray, what: str) -> np.ndarray:
    match = keys == query[:, None]
    if not match.any(axis=1).all():
        raise ValueError(f"{what}: a query key is missing from its prompt's map")
    return values[np.arange(len(query)), np.argmax(match, axis=1)]


class _InContextMap(Task):
    """A task over `k` in-context pairs keyed by distinct letters (1..26 of them), answered with one digit."""

    answer_format = "one digit, then <eos>"
    answer_len = 2

    def __init__(self, n_pairs: int, name: str, description: str):
        if not 1 <= n_pairs <= 26:
            raise ValueError(f"n_pairs must be in 1..26, got {n_pairs}")
        self.k, self.name, self.description = n_pairs, name, description


class Recall(_InContextMap):
    """Key-value pairs (distinct letter keys, digit values), then one key: answer its value."""

    def __init__(self, n_pairs: int = 6):
        super().__init__(n_pairs, "recall", f"associative recall: {n_pairs} key-value pairs (distinct letters -> "
                         f"digits) in the prompt, then one of the keys; answer its value (Olsson et al. 2022)")
        pairs = "a1b7c3d9e0f2g5h8i4j6k2l0m3n1o7p9q5r8s6t4u2v0w3x1y7z9"[:2 * n_pairs]
        self.example = (f"K:{pairs}|{pairs[-4]}=", pairs[-3])
        self.prompt_len = 2 * n_pairs + 5

    def sample_prompts(self, rng, n):
        keys = LOWER[_distinct(rng, n, self.k, 26)]
        values = DIGITS[rng.integers(0, 10, size=(n, self.k))]
        query = keys[np.arange(n), rng.integers(0, self.k, size=n)]
        return np.concatenate([const("K:", n), _interleave(keys, values), const("|", n), query[:, None],
                               const("=", n)], axis=1).astype(np.int64)

    def natural(self, prompt, answer):
        """The map as assignments, then the key: "K:a1b7|b=" -> "a=1, b=7. b=" -> "7"."""
        pairs, key = prompt[2:].rstrip("=").split("|")
        return ", ".join(f"{pairs[i]}={pairs[i + 1]}" for i in range(0, len(pairs), 2)) + f". {key}=", answer

    def solve(self, prompts):
        k = self.k
        pairs = prompts[:, 2:2 + 2 * k]
        value = _lookup(pairs[:, 0::2], pairs[:, 1::2], prompts[:, 2 * k + 3], self.name)
        return with_eos(value[:, None])


class TwoHop(_InContextMap):
    """Two in-context maps, letters -> capitals and capitals -> digits; answer map2(map1(query))."""

    def __init__(self, n_pairs: int = 4):
        super().__init__(n_pairs, "twohop", f"two-hop recall: a map of {n_pairs} letters -> capitals, a map of those "
                         "capitals -> digits (listed in another order), then a letter; answer the digit its capital "
                         "maps to")
        if n_pairs == 4:
            self.example = ("H:aXbYcZdW|Y3X7W1Z5|b=", "3")
        else:
            keys, mids = "abcdefghijklmnopqrstuvwxyz"[:n_pairs], "ZYXWVUTSRQPONMLKJIHGFEDCBA"[:n_pairs]
            m1 = "".join(k + m for k, m in zip(keys, mids))
            m2 = "".join(m + str(i % 10) for i, m in enumerate(mids[::-1]))
            self.example = (f"H:{m1}|{m2}|{keys[0]}=", str((n_pairs - 1) % 10))
        self.prompt_len = 4 * n_pairs + 6

    def sample_prompts(self, rng, n):
        k = self.k
        keys = LOWER[_distinct(rng, n, k, 26)]
        mids = UPPER[_distinct(rng, n, k, 26)]
        values = DIGITS[rng.integers(0, 10, size=(n, k))]
        order = _distinct(rng, n, k, k)  # the second map lists the capitals in a different order
        rows = np.arange(n)[:, None]
        query = keys[np.arange(n), rng.integers(0, k, size=n)]
        return np.concatenate([const("H:", n), _interleave(keys, mids), const("|", n),
                               _interleave(mids[rows, order], values[rows, order]), const("|", n), query[:, None],
                               const("=", n)], axis=1).astype(np.int64)

    def natural(self, prompt, answer):
        """Both maps as assignments, then the key: "H:aXbY|Y3X7|b=" -> "a=X, b=Y. Y=3, X=7. b=" -> "3"."""
        m1, m2, key = prompt[2:].rstrip("=").split("|")
        maps = [", ".join(f"{m[i]}={m[i + 1]}" for i in range(0, len(m), 2)) for m in (m1, m2)]
        return f"{maps[0]}. {maps[1]}. {key}=", answer

    def solve(self, prompts):
        k = self.k
        map1 = prompts[:, 2:2 + 2 * k]
        map2 = prompts[:, 2 * k + 3:4 * k + 3]
        mid = _lookup(map1[:, 0::2], map1[:, 1::2], prompts[:, 4 * k + 4], self.name)
        value = _lookup(map2[:, 0::2], map2[:, 1::2], mid, self.name)
        return with_eos(value[:, None])
