"""k-shot variants: k solved examples of a task before the query, as in the few-shot prompts of Brown et al. 2020
("Language Models are Few-Shot Learners").

Few-shot template (one for every task, so that k-shot scores compare across tasks): each solved example is the base
task's prompt followed by its answer, ended by a newline in place of <eos>; k of them, then the query prompt. The
answer is the query's answer:

    add2_2shot:  "84+99=381\\n63+58=121\\n40+97="  ->  "731"

The held-out split is the base task's split applied to the query: a held-out add3 example is held out in add3_3shot
too, and the solved examples are always drawn from the base task's training part, so no split of a k-shot task ever
shows a held-out example of its base task in its context.
"""
from __future__ import annotations

import numpy as np

from .base import EOS, PAD, SHOT_SEPARATOR, Task, check_count, check_seed, check_split, compact, name_salt
from .vocab import VOCAB

NEWLINE = VOCAB.id(SHOT_SEPARATOR)


class KShot(Task):
    def __init__(self, base: Task, k: int):
        if isinstance(base, KShot):
            raise ValueError(f"k-shot variants nest no further: {base.name!r} is already one")
        if not 1 <= k <= 32:
            raise ValueError(f"k (solved examples before the query) must be in 1..32, got {k}")
        if SHOT_SEPARATOR in "".join(base.example):
            raise ValueError(f"task {base.name!r} uses the shot separator {SHOT_SEPARATOR!r} itself")
        self.base, self.k = base, k
        self.name = f"{base.name}_{k}shot"
        self.description = f"{base.name} with {k} solved examples before the query: {base.description}"
        self.answer_format = base.answer_format
        shot = base.prompt_len + base.answer_len  # the answer's <eos> becomes the separator
        self.prompt_len = k * shot + base.prompt_len
        self.answer_len = base.answer_len
        base_min = base.min_example_len or base.max_example_len
        self.min_example_len = 1 + (k + 1) * (base_min - 1)
        self.space_size = None

    @property
    def example(self):
        """The base task's example as the query, after k solved training examples (a fixed draw)."""
        sp, sa = self.base.sample(np.random.default_rng(0), self.k, "train")
        q = VOCAB.encode_batch([self.base.example[0]], self.base.prompt_len)
        return VOCAB.decode(self.build(sp, sa, q)[0]), self.base.example[1]

    def build(self, sp: np.ndarray, sa: np.ndarray, qp: np.ndarray) -> np.ndarray:
        """k-shot prompts from n*k solved examples (sp, sa; row i uses shots i*k .. i*k+k-1) and n query prompts."""
        n, k = len(qp), self.k
        if len(sp) != n * k or len(sa) != n * k:
            raise ValueError(f"{self.name}: need {n * k} solved examples for {n} queries, got {len(sp)}")
        sa = np.where(sa == EOS, NEWLINE, sa)
        shots = np.concatenate([sp, sa], axis=1).reshape(n, k * (sp.shape[1] + sa.shape[1]))
        prompts = compact(np.concatenate([shots, qp], axis=1).astype(np.int64))
        out = np.full((n, self.prompt_len), PAD, dtype=np.int64)
        w = min(prompts.shape[1], self.prompt_len)
        out[:, :w] = prompts[:, :w]
        return out

    def query(self, prompts: np.ndarray) -> np.ndarray:
        """The query part of k-shot prompts (what follows the k-th separator), as base-task prompts."""
        prompts = np.asarray(prompts, dtype=np.int64)
        nl = prompts == NEWLINE
        if np.any(nl.sum(axis=1) != self.k):
            raise ValueError(f"{self.name}: every prompt must hold exactly {self.k} solved examples, each ended by "
                             f"{SHOT_SEPARATOR!r}")
        keep = (np.cumsum(nl, axis=1) == self.k) & ~nl
        q = compact(np.where(keep, prompts, PAD))
        out = np.full((len(q), self.base.prompt_len), PAD, dtype=np.int64)
        w = min(q.shape[1], self.base.prompt_len)
        out[:, :w] = q[:, :w]
        return out

    def natural(self, prompt, answer):
        """The k solved examples and the query, each in the base task's natural form, separated by newlines: add2_2shot
        "84+99=381\\n63+58=121\\n40+97=" -> "48+99=147\\n36+85=121\\n40+97=" -> "137". A solved example is split into
        its prompt and answer after its last "=" (every built-in prompt ends with one, and no answer holds one)."""
        *shots, query = prompt.split(SHOT_SEPARATOR)
        if len(shots) != self.k:
            raise ValueError(f"{self.name}: every prompt must hold exactly {self.k} solved examples, each ended by "
                             f"{SHOT_SEPARATOR!r}")
        parts = []
        for shot in shots:
            p, eq, a = shot.rpartition("=")
            if not eq:
                raise ValueError(f"{self.name}: a solved example {shot!r} has no '=' to split its prompt from its "
                                 f"answer; natural text needs base prompts that end with '='")
            parts.append("".join(self.base.natural(p + eq, a)))
        q, a = self.base.natural(query, answer)
        return SHOT_SEPARATOR.join([*parts, q]), a

    def sample_prompts(self, rng, n):
        sp, sa = self.base.sample(rng, n * self.k, "train")
        return self.build(sp, sa, self.base.sample_prompts(rng, n))

    def solve(self, prompts):
        return self.base.solve(self.query(prompts))

    def is_heldout(self, prompts):
        return self.base.is_heldout(self.query(prompts))

    def example_ids(self, prompts):
        """The query's id in the base task, so a k-shot score joins its zero-shot score example by example."""
        return self.base.example_ids(self.query(prompts))

    def sample(self, rng, n, split):
        check_split(split)
        n = check_count(n)
        qp, qa = self.base.sample(rng, n, split)
        sp, sa = self.base.sample(rng, n * self.k, "train")
        return self.build(sp, sa, qp), qa

    def heldout_set(self, n, seed):
        """The base task's held-out set as queries (same examples, same ids), each after k fixed solved examples."""
        n, seed = check_count(n), check_seed(seed)
        qp, qa, ids = self.base.heldout_set(n, seed)
        sp, sa = self.base.sample(np.random.default_rng([seed, name_salt(self.name)]), len(qp) * self.k, "train")
        return self.build(sp, sa, qp), qa, ids

    def check(self):
        super().check()
        self.base.check()
