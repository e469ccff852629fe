"""Arithmetic: k-digit addition, k-digit multiplication, and modular arithmetic mod a prime.

Formats follow what small models learn fastest (measured in this project, and Lee et al. 2023, "Teaching Arithmetic
to Small Transformers"): operands are zero-padded to a fixed width, and sums and products are written least
significant digit first, so each output digit depends only on digits already seen plus a carry.
"""
from __future__ import annotations

import numpy as np

from .base import IndexedTask, const, digits_to_tokens, tokens_to_int, with_eos
from .vocab import VOCAB


def _binary_prompts(a: np.ndarray, b: np.ndarray, width: int, op: str, tag: str = "") -> np.ndarray:
    """Rows "<tag><a><op><b>=" with a and b zero-padded to `width` digits."""
    n = len(a)
    return np.concatenate([const(tag, n), digits_to_tokens(a, width), const(op, n), digits_to_tokens(b, width),
                           const("=", n)], axis=1).astype(np.int64)


class _DigitOperation(IndexedTask):
    """a OP b for k-digit a, b (0 .. 10^k - 1), zero-padded; the result is written with `width(k)` digits, least
    significant digit first. Both operations commute, so a OP b and b OP a are one example for the split."""

    op, word, result, prefix, max_k = "+", "addition", "sum", "add", 9

    @staticmethod
    def width(k: int) -> int:
        raise NotImplementedError

    @staticmethod
    def apply(a, b):
        raise NotImplementedError

    @staticmethod
    def example_operands(k: int) -> tuple[int, int]:
        raise NotImplementedError

    def __init__(self, k: int):
        if not 1 <= k <= self.max_k:
            raise ValueError(f"{self.word} digits k must be in 1..{self.max_k}, got {k}")
        self.k = k
        self.name = f"{self.prefix}{k}"
        w = self.width(k)
        self.description = (f"{k}-digit {self.word}: operands zero-padded to {k} digit{'s' * (k > 1)}; the "
                            f"{self.result} is written with {w} digits, least significant digit first")
        self.answer_format = f"{w} digits, least significant first, then <eos>"
        a, b = self.example_operands(k)
        self.example = (f"{str(a).zfill(k)}{self.op}{str(b).zfill(k)}=", str(self.apply(a, b)).zfill(w)[::-1])
        self.prompt_len = 2 * k + 2
        self.answer_len = w + 1
        self.space_size = 10 ** (2 * k)

    def prompts_from_index(self, idx):
        base = 10 ** self.k
        return _binary_prompts(idx // base, idx % base, self.k, self.op)

    def operands(self, prompts):
        k = self.k
        return tokens_to_int(prompts[:, :k]), tokens_to_int(prompts[:, k + 1:2 * k + 1])

    def solve(self, prompts):
        a, b = self.operands(prompts)
        return with_eos(digits_to_tokens(self.apply(a, b), self.width(self.k))[:, ::-1])

    def natural(self, prompt, answer):
        """Operands and result most significant digit first, without zero padding: "012+007=" -> "19"."""
        a, b = prompt.rstrip("=").split(self.op)
        return f"{int(a)}{self.op}{int(b)}=", str(int(answer[::-1]))

    def split_key(self, prompts):
        a, b = self.operands(prompts)
        return _binary_prompts(np.minimum(a, b), np.maximum(a, b), self.k, self.op)


class Addition(_DigitOperation):
    """a + b for k-digit a, b (0 .. 10^k - 1); the k+1-digit sum is written least significant digit first."""

    op, word, result, prefix, max_k = "+", "addition", "sum", "add", 9

    @staticmethod
    def width(k):
        return k + 1

    @staticmethod
    def apply(a, b):
        return a + b

    @staticmethod
    def example_operands(k):
        return 10 ** k // 3 + 7 * (k > 1), 10 ** k - 3  # a readable example with a carry


class Multiplication(_DigitOperation):
    """a * b for k-digit a, b; the 2k-digit product is written least significant digit first."""

    op, word, result, prefix, max_k = "*", "multiplication", "product", "mult", 4

    def __init__(self, k: int = 2):
        super().__init__(k)

    @staticmethod
    def width(k):
        return 2 * k

    @staticmethod
    def apply(a, b):
        return a * b

    @staticmethod
    def example_operands(k):
        return int("4" * k) + 3, int("9" * k) - 2


class Modular(IndexedTask):
    """(a op b) mod p for a, b in 0 .. p-1 and op in `ops`, the algorithmic tasks of Power et al. 2022 ("Grokking:
    Generalization Beyond Overfitting on Small Algorithmic Datasets"). Every (op, a, b) is one example."""

    OPS = {"+": np.add, "-": np.subtract, "*": np.multiply}

    def __init__(self, p: int = 97, ops: str = "+-*", name: str | None = None):
        if p < 2 or p > 99:
            raise ValueError(f"the modulus must be in 2..99 (two-digit operands), got {p}")
        if not ops or any(o not in self.OPS for o in ops) or len(set(ops)) != len(ops):
            raise ValueError(f"ops must be distinct characters from {''.join(self.OPS)}, got {ops!r}")
        self.p, self.ops = p, ops
        self.name = name or f"mod{p}"
        self.description = (f"modular arithmetic: (a op b) mod {p} for a, b in 0..{p - 1}, op in {' '.join(ops)} "
                            f"(Power et al. 2022); operands and result are 2 digits, most significant first")
        self.answer_format = "2 digits, most significant first (no carries to propagate), then <eos>"
        op = "*" if "*" in ops else ops[0]
        a, b = 17, 45
        self.example = (f"M:{a:02d}{op}{b:02d}=", f"{int(self.OPS[op](a, b)) % p:02d}")
        self.prompt_len = 8  # "M:" a op b "="
        self.answer_len = 3
        self.space_size = len(ops) * p * p
        self._op_ids = VOCAB.ids(ops)

    def prompts_from_index(self, idx):
        p = self.p
        op = idx // (p * p)
        a, b = (idx // p) % p, idx % p
        n = len(idx)
        return np.concatenate([const("M:", n), digits_to_tokens(a, 2), self._op_ids[op][:, None],
                               digits_to_tokens(b, 2), const("=", n)], axis=1).astype(np.int64)

    def _parse(self, prompts):
        a, b = tokens_to_int(prompts[:, 2:4]), tokens_to_int(prompts[:, 5:7])
        op = np.argmax(prompts[:, 4:5] == self._op_ids[None, :], axis=1)
        return a, op, b

    def solve(self, prompts):
        a, op, b = self._parse(prompts)
        out = np.zeros(len(a), dtype=np.int64)
        for i, o in enumerate(self.ops):
            sel = op == i
            out[sel] = self.OPS[o](a[sel], b[sel]) % self.p
        return with_eos(digits_to_tokens(out, 2))

    def natural(self, prompt, answer):
        """The operation written out, without zero padding: "M:17*05=" -> "(17*5) mod 97=" -> "85"."""
        body = prompt[2:].rstrip("=")
        a, op, b = body[:2], body[2], body[3:]
        return f"({int(a)}{op}{int(b)}) mod {self.p}=", str(int(answer))

    def split_key(self, prompts):
        # commutative operations: (a, b) and (b, a) are one example
        a, op, b = self._parse(prompts)
        commutes = np.isin(self._op_ids[op], VOCAB.ids("+*"))
        swap = commutes & (a > b)
        key = np.array(prompts[:, :self.prompt_len], dtype=np.int64, copy=True)
        key[swap, 2:4], key[swap, 5:7] = prompts[swap, 5:7], prompts[swap, 2:4]
        return key
