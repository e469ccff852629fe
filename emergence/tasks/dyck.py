"""Balanced brackets (the Dyck language over two bracket pairs): complete an unbalanced prefix.

The prompt is a prefix of a balanced string with at least one bracket left open; the answer is the unique shortest
completion: the open brackets closed in reverse order. Solving it needs a stack (Dyck languages are the canonical
test of hierarchical structure in sequence models; Hahn 2020, Yao et al. 2021 "Self-Attention Networks Can Process
Bounded Hierarchical Languages"). Prompts and answers vary in length, so both are right-padded.
"""
from __future__ import annotations

import numpy as np

from .base import PAD, EOS, Task, const
from .vocab import VOCAB

OPEN = VOCAB.ids("([")
CLOSE = VOCAB.ids(")]")


class Dyck(Task):
    def __init__(self, min_len: int = 4, max_len: int = 12):
        if not 1 <= min_len <= max_len:
            raise ValueError(f"need 1 <= min_len <= max_len, got {min_len}, {max_len}")
        self.lo, self.hi = min_len, max_len
        self.name = "dyck"
        self.description = (f"bracket completion: a prefix of {min_len}-{max_len} brackets from ( ) [ ] that is "
                            f"balanced except for >= 1 open bracket; answer the closing brackets that balance it")
        self.answer_format = "1 or more closing brackets (innermost first), then <eos>"
        self.example = ("D:([]([=", "]))")
        self.prompt_len = max_len + 3
        self.answer_len = max_len + 1
        self.min_example_len = 1 + (min_len + 3) + 2

    def sample_prompts(self, rng, n):
        """A random walk over bracket depth: each step closes the innermost open bracket with probability 1/2 (if one
        is open), else opens a random bracket type; the last step never leaves the prefix balanced."""
        hi = self.hi
        length = rng.integers(self.lo, hi + 1, size=n)
        close_draw = rng.random((n, hi)) < 0.5
        kinds = rng.integers(0, 2, size=(n, hi))
        stack = np.zeros((n, hi + 1), dtype=np.int64)
        depth = np.zeros(n, dtype=np.int64)
        body = np.full((n, hi), PAD, dtype=np.int64)
        rows = np.arange(n)
        for i in range(hi):
            last = i == length - 1
            close = close_draw[:, i] & (depth > 0) & ~(last & (depth < 2))
            top = stack[rows, np.maximum(depth - 1, 0)]
            tok = np.where(close, CLOSE[top], OPEN[kinds[:, i]])
            pushed = np.where(close, stack[rows, depth], kinds[:, i])
            stack[rows, depth] = pushed
            depth = depth + np.where(close, -1, 1)
            body[:, i] = np.where(i < length, tok, PAD)
        prompts = np.concatenate([const("D:", n), body, np.full((n, 1), PAD, dtype=np.int64)], axis=1)
        prompts[rows, 2 + length] = VOCAB.id("=")
        return prompts.astype(np.int64)

    def natural(self, prompt, answer):
        """Close the brackets: "D:([]([=" -> "close ([]([=" -> "]))"."""
        return f"close {prompt[2:]}", answer

    def solve(self, prompts):
        n, width = prompts.shape
        stack = np.zeros((n, width + 1), dtype=np.int64)
        depth = np.zeros(n, dtype=np.int64)
        rows = np.arange(n)
        for i in range(2, width):
            tok = prompts[:, i]
            is_open = (tok == OPEN[0]) | (tok == OPEN[1])
            is_close = (tok == CLOSE[0]) | (tok == CLOSE[1])
            kind = np.where(tok == OPEN[1], 1, 0)
            top = stack[rows, np.maximum(depth - 1, 0)]
            if np.any(is_close & ((depth == 0) | (CLOSE[top] != tok))):
                raise ValueError("dyck: a prompt closes a bracket that is not open")
            stack[rows, depth] = np.where(is_open, kind, stack[rows, depth])
            depth = depth + is_open - is_close
        if np.any(depth < 1):
            raise ValueError("dyck: a prompt is already balanced (it needs at least one open bracket)")
        # answer position j closes the bracket at stack depth (depth - 1 - j)
        j = np.arange(self.answer_len)[None, :]
        src = np.clip(depth[:, None] - 1 - j, 0, None)
        answers = np.where(j < depth[:, None], CLOSE[np.take_along_axis(stack, src, axis=1)], PAD)
        answers[rows, depth] = EOS
        return answers.astype(np.int64)
