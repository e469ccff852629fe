"""String manipulation: copy, reverse and sort a fixed-length string of digits and lower-case letters.

Copying needs attention to a fixed offset, reversing to a mirrored one; sorting needs comparisons across the whole
string. Prompts are "<tag>:<string>=", answers the transformed string.
"""
from __future__ import annotations

import numpy as np

from .base import IndexedTask, const, with_eos
from .vocab import VOCAB

ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


class _StringTask(IndexedTask):
    tag = ""
    verb = ""

    def __init__(self, length: int = 6, alphabet: str = ALPHABET):
        if length < 1:
            raise ValueError(f"string length must be >= 1, got {length}")
        self.length, self.alphabet = length, alphabet
        self._ids = VOCAB.ids(alphabet)
        self.description = (f"{self.verb} a string of {length} characters drawn uniformly from {len(alphabet)} "
                            f"(digits and lower-case letters)")
        self.answer_format = f"{length} characters, then <eos>"
        s = "q7c2xa"[:length].ljust(length, "b")
        self.example = (f"{self.tag}:{s}=", self.transform_str(s))
        self.prompt_len = length + 3
        self.answer_len = length + 1
        self.space_size = len(alphabet) ** length

    def transform_str(self, s: str) -> str:
        raise NotImplementedError

    def transform(self, body: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def prompts_from_index(self, idx):
        a = len(self.alphabet)
        powers = a ** np.arange(self.length - 1, -1, -1, dtype=np.int64)
        body = self._ids[(idx[:, None] // powers) % a]
        n = len(idx)
        return np.concatenate([const(self.tag + ":", n), body, const("=", n)], axis=1).astype(np.int64)

    def solve(self, prompts):
        return with_eos(self.transform(prompts[:, 2:2 + self.length]))

    def natural(self, prompt, answer):
        """The operation named as a function call: "R:q7c2xa=" -> "reverse(q7c2xa)=" -> "ax2c7q"."""
        return f"{self.name}({prompt[2:].rstrip('=')})=", answer


class Copy(_StringTask):
    name, tag, verb = "copy", "C", "copy"

    def transform_str(self, s):
        return s

    def transform(self, body):
        return body


class Reverse(_StringTask):
    name, tag, verb = "reverse", "R", "reverse"

    def transform_str(self, s):
        return s[::-1]

    def transform(self, body):
        return body[:, ::-1]


class Sort(_StringTask):
    """Characters in ascending ASCII order (digits before letters); repeated characters are kept."""

    name, tag, verb = "sort", "S", "sort (ascending ASCII order, digits before letters, repeats kept)"

    def transform_str(self, s):
        return "".join(sorted(s))

    def transform(self, body):
        # token ids follow ASCII order, so sorting ids sorts characters
        return np.sort(body, axis=1)
