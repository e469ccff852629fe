"""The training stream: a weighted mixture of tasks packed into fixed-length rows.

A batch is a pure function of (seed, step, split): the batches of STEPS_PER_DRAW consecutive steps are drawn together
from a generator seeded from (seed, step // STEPS_PER_DRAW, split), so resuming a run needs no data-loader state and
every run with the same seed sees the same stream. Generation is vectorised: numpy over all examples of a draw, with
Python loops only over tasks and over example slots of a row. One draw per 16 steps rather than one per step: at the
smallest sizes, drawing each step's 32 rows on its own took a quarter of a run's wall time.

Row layout (T = seq_len): whole examples "<bos> prompt answer <eos>" one after another, then <pad>:

    x:  <bos> 1 2 + 3 4 = 6 4 0 <eos> <bos> K : ...  <pad> <pad>
    y:  target x[t+1] where x[t+1] is an answer token (incl. <eos>), else -100 (ignored by cross-entropy)

so the loss is the answers' loss only. An example never straddles two rows.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch

from emergence.tasks import get_task
from emergence.tasks.base import PAD, SPLITS, check_count, check_seed, check_split, join_examples
from emergence.tasks.vocab import VOCAB

IGNORE_INDEX = -100  # torch.nn.functional.cross_entropy's default ignore_index
STEPS_PER_DRAW = 16  # consecutive steps whose batches are drawn in one vectorised call
STREAMS_KEPT = 256  # (seed, batch size, split) streams whose latest draw is kept


def mixture_weights(weights) -> tuple[list[str], np.ndarray]:
    """The tasks with a positive weight, sorted by name (the stream does not depend on the order a config lists its
    tasks in), and their probabilities."""
    if not isinstance(weights, Mapping) or not weights:
        raise ValueError("the task mixture needs a non-empty mapping task name -> weight (task.train)")
    for name, w in weights.items():
        if not isinstance(w, (int, float)) or isinstance(w, bool) or not math.isfinite(w) or w < 0:
            raise ValueError(f"task weight for {name!r} must be a finite number >= 0, got {w!r}")
    names = sorted(n for n, w in weights.items() if w > 0)
    if not names:
        raise ValueError("every task weight is 0; give at least one task a positive weight")
    w = np.array([float(weights[n]) for n in names])
    return names, w / w.sum()


class TaskMixture:
    """Weighted mixture of tasks. Each example slot of a row picks a task with probability proportional to its
    weight; slots are filled left to right and a slot whose example does not fit in what is left of the row is
    dropped (first fit), so short tasks keep slightly more of their slots than long ones. `task_shares` measures
    the realised shares.

    pack=False puts one example per row, always starting at position 0. Rows then carry more padding, but a small
    model with learned absolute positions finds each digit at a fixed position and never attends across examples;
    on this project's CPU measurements (1 layer, d_model 64, the demo suite, 3M tokens) it left the loss plateau
    sooner than packed rows."""

    def __init__(self, weights: dict[str, float], seq_len: int, pack: bool = True):
        self.names, self.probs = mixture_weights(weights)
        self.tasks = [get_task(n) for n in self.names]
        if isinstance(seq_len, bool) or not isinstance(seq_len, (int, np.integer)):
            raise ValueError(f"seq_len must be an integer, got {seq_len!r}")
        self.seq_len = int(seq_len)
        need = self.max_example_len()
        if self.seq_len < need:
            longest = max(self.tasks, key=lambda t: t.max_example_len)
            raise ValueError(f"seq_len={seq_len} is too short: task {longest.name!r} has examples of {need} tokens "
                             f"(<bos> prompt answer <eos>); set data.seq_len >= {need}")
        self.vocab_size = VOCAB.size
        shortest = min(t.min_example_len or t.max_example_len for t in self.tasks)
        self.pack = bool(pack)
        self.slots = self.seq_len // shortest if self.pack else 1  # the most examples a row can hold
        self._draws: dict[tuple, tuple[int, tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}

    def max_example_len(self) -> int:
        """The longest "<bos> prompt answer <eos>" of any task in the mixture, in tokens."""
        return max(t.max_example_len for t in self.tasks)

    def batch(self, seed: int, step: int, batch_size: int, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y), LongTensors of shape (batch_size, seq_len); see the module doc for the layout."""
        x, y, _ = self._pack(seed, step, batch_size, split)
        return torch.from_numpy(x), torch.from_numpy(y)

    def batch_with_tasks(self, seed: int, step: int, batch_size: int, split: str = "train"):
        """Like `batch`, plus an int array (batch_size, seq_len): the index into `self.names` of the task each token
        belongs to (-1 on padding), for per-task losses and for checks."""
        x, y, owner = self._pack(seed, step, batch_size, split)
        return torch.from_numpy(x), torch.from_numpy(y), owner

    def task_shares(self, seed: int = 0, batches: int = 20, batch_size: int = 128) -> dict[str, float]:
        """Realised share of examples per task over some batches (packing favours short tasks slightly)."""
        counts = np.zeros(len(self.names))
        for step in range(batches):
            x, _, owner = self._pack(seed, step, batch_size, "train")
            starts = x == VOCAB.bos
            counts += np.bincount(owner[starts], minlength=len(self.names))
        return dict(zip(self.names, (counts / counts.sum()).tolist()))

    # -----------------------------------------------------------------------------------------------------------
    def _pack(self, seed, step, batch_size, split):
        """Rows of step `step`: its slice of the draw that holds it."""
        check_split(split)
        seed, step, B = check_seed(seed), check_seed(step), check_count(batch_size)
        draw, i = divmod(step, STEPS_PER_DRAW)
        stream = (seed, B, split)  # each stream keeps its latest draw (stacked seeds read several streams in turn)
        kept = self._draws.get(stream)
        if kept is None or kept[0] != draw:
            rows = self._draw(np.random.default_rng([seed, draw, SPLITS.index(split)]), B * STEPS_PER_DRAW, split)
            self._draws.pop(stream, None)
            if len(self._draws) >= STREAMS_KEPT:
                self._draws.pop(next(iter(self._draws)))
            kept = self._draws[stream] = (draw, rows)
        return tuple(a[i * B:(i + 1) * B].copy() for a in kept[1])

    def _draw(self, rng: np.random.Generator, B: int, split: str):
        """B packed rows: (x, y, owner)."""
        T, m = self.seq_len, self.slots

        # 1. a task for every slot, then each task's examples in one vectorised call
        choice = rng.choice(len(self.tasks), size=B * m, p=self.probs)
        width = max(t.max_example_len for t in self.tasks)
        tokens = np.full((B * m, width), PAD, dtype=np.int64)
        answer = np.zeros((B * m, width), dtype=bool)
        for i, task in enumerate(self.tasks):
            where = np.flatnonzero(choice == i)
            if len(where) == 0:
                continue
            prompts, answers = task.sample(rng, len(where), split)
            tok, ans, _ = join_examples(prompts, answers)
            tokens[where, :tok.shape[1]] = tok
            answer[where, :tok.shape[1]] = ans
        tokens, answer = tokens.reshape(B, m, width), answer.reshape(B, m, width)
        length = (tokens != PAD).sum(axis=2)

        # 2. first fit, slot by slot: keep a slot's example if it fits in what is left of its row
        keep = np.zeros((B, m), dtype=bool)
        offset = np.zeros((B, m), dtype=np.int64)
        used = np.zeros(B, dtype=np.int64)
        for j in range(m):
            fits = used + length[:, j] <= T
            keep[:, j], offset[:, j] = fits, used
            used = used + np.where(fits, length[:, j], 0)

        # 3. scatter the kept examples into the rows
        col = np.arange(width)
        valid = keep[:, :, None] & (col[None, None, :] < length[:, :, None])
        rows = np.broadcast_to(np.arange(B)[:, None, None], valid.shape)[valid]
        pos = (offset[:, :, None] + col[None, None, :])[valid]
        x = np.full((B, T), PAD, dtype=np.int64)
        is_answer = np.zeros((B, T), dtype=bool)
        owner = np.full((B, T), -1, dtype=np.int64)
        x[rows, pos] = tokens[valid]
        is_answer[rows, pos] = answer[valid]
        owner[rows, pos] = np.broadcast_to(choice.reshape(B, m)[:, :, None], valid.shape)[valid]

        # 4. targets: position t predicts x[t+1], and only answer tokens are trained
        y = np.full((B, T), IGNORE_INDEX, dtype=np.int64)
        y[:, :-1] = np.where(is_answer[:, 1:], x[:, 1:], IGNORE_INDEX)
        return x, y, owner

    def __repr__(self) -> str:
        mix = ", ".join(f"{n}: {p:.3g}" for n, p in zip(self.names, self.probs))
        return f"TaskMixture({{{mix}}}, seq_len={self.seq_len})"
