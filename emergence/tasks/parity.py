"""Parity of a bit string: is the number of ones odd?

A classic hard case for Transformers: the answer depends on every input bit at once, and attention finds no
shortcut (Hahn 2020, "Theoretical Limitations of Self-Attention in Neural Sequence Models"); it sits at the hard end
of the spectrum.
"""
from __future__ import annotations

import numpy as np

from .base import IndexedTask, const, with_eos
from .vocab import VOCAB


class Parity(IndexedTask):
    def __init__(self, n_bits: int = 10):
        if not 1 <= n_bits <= 24:
            raise ValueError(f"n_bits must be in 1..24, got {n_bits}")
        self.n_bits = n_bits
        self.name = "parity"
        self.description = f"parity of {n_bits} bits: 1 if the number of ones is odd, else 0"
        self.answer_format = "one digit (0 or 1), then <eos>"
        bits = "1101001110"[:n_bits].ljust(n_bits, "0")
        self.example = (f"P:{bits}=", str(bits.count("1") % 2))
        self.prompt_len = n_bits + 3
        self.answer_len = 2
        self.space_size = 2 ** n_bits
        self._zero = VOCAB.id("0")

    def prompts_from_index(self, idx):
        shifts = np.arange(self.n_bits - 1, -1, -1, dtype=np.int64)
        bits = (idx[:, None] >> shifts) & 1
        n = len(idx)
        return np.concatenate([const("P:", n), bits + self._zero, const("=", n)], axis=1).astype(np.int64)

    def natural(self, prompt, answer):
        """Named as a function call: "P:1101001110=" -> "parity(1101001110)=" -> "0"."""
        return f"parity({prompt[2:].rstrip('=')})=", answer

    def solve(self, prompts):
        ones = (prompts[:, 2:2 + self.n_bits] - self._zero).sum(axis=1)
        return with_eos((ones % 2 + self._zero)[:, None])
