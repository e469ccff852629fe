"""What a task is, and the held-out split every task shares.

A task is a deterministic map from prompts to answers plus a uniform generator of prompts. Everything else (the two
splits, sampling from one split, the fixed held-out probe set, stable example ids) is written once here.

Held-out split. A prompt is held out when a 64-bit hash of its *split key* falls in the lowest HELDOUT_FRACTION of the
hash range. The split key is the prompt in a canonical form: for a commutative operation "34+12=" and "12+34=" share
the key "12+34=", so an example and its mirror image are always on the same side (a model never sees b+a in training
and is then asked a+b as "held out"). The hash is SplitMix64 (Steele, Lea & Flood 2014, "Fast splittable
pseudorandom number generators") chained over the key's tokens (eight to a word) and salted with the task's name, so
it is a pure function of the prompt: the same on every machine and in every process, independent of any seed.

Sampling one split is rejection sampling from the uniform generator (or, for spaces of at most ENUMERATE_LIMIT
examples, uniform sampling from the enumerated part), so each split is sampled uniformly over its own part.
"""
from __future__ import annotations

import functools
import hashlib
import math

import numpy as np

from .vocab import VOCAB

HELDOUT_FRACTION = 0.1  # share of every task's example space that training never sees
ENUMERATE_LIMIT = 1 << 17  # example spaces up to this size are enumerated once and sampled exactly
SPLITS = ("train", "heldout")
SHOT_SEPARATOR = "\n"  # ends each solved example of a k-shot prompt (in place of the answer's <eos>)
HELDOUT_CHUNK = 4096  # held-out sets of large spaces are drawn in chunks of this size (keeps them prefix-stable)
_MAX_ROUNDS = 200  # rejection rounds before a split is declared (practically) empty

PAD, BOS, EOS = VOCAB.pad, VOCAB.bos, VOCAB.eos
_U64 = np.uint64


def name_salt(text: str) -> int:
    """A stable 64-bit integer from a string (BLAKE2b), unlike Python's per-process randomised hash()."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def _mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser (Steele, Lea & Flood 2014): a bijection on uint64 with full avalanche.
    Array arithmetic on uint64 wraps modulo 2^64, which is what the finaliser wants."""
    z = z + _U64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
    return z ^ (z >> _U64(31))


_SHIFTS = (np.arange(8, dtype=np.uint64) * _U64(8))[None, None, :]


def hash_tokens(tokens: np.ndarray, salt: int) -> np.ndarray:
    """A uint64 hash of each row of token ids.

    Tokens are packed eight to a 64-bit word (one byte each; ids are below 256), and the words are chained left to
    right from the salt: h <- mix(h xor word). Padding (id 0) packs as zero bytes and all-padding words are skipped,
    so a row hashes the same whatever its right padding (prompts of one task may come at different widths).
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    if tokens.ndim != 2:
        raise ValueError(f"expected a 2-d array of token ids (examples x positions), got shape {tokens.shape}")
    if tokens.size and (tokens.min() < 0 or tokens.max() > 255):
        raise ValueError("token ids must be in 0..255 to be hashed")
    n, w = tokens.shape
    padded = np.zeros((n, -(-w // 8) * 8), dtype=np.uint64)
    padded[:, :w] = tokens
    words = (padded.reshape(n, -1, 8) << _SHIFTS).sum(axis=2, dtype=np.uint64)
    h = np.full(n, salt, dtype=np.uint64)
    for j in range(words.shape[1]):
        h = np.where(words[:, j] != 0, _mix64(h ^ words[:, j]), h)
    return _mix64(h)


def unit_interval(h: np.ndarray) -> np.ndarray:
    """Map uint64 hashes to floats in [0, 1) (the top 53 bits, the precision of a double)."""
    return (h >> _U64(11)).astype(np.float64) * 2.0 ** -53


def compact(tokens: np.ndarray) -> np.ndarray:
    """Move every non-pad token of each row to the left, keeping order (a stable sort on 'is padding')."""
    order = np.argsort(tokens == PAD, axis=1, kind="stable")
    return np.take_along_axis(tokens, order, axis=1)


def join_examples(prompts: np.ndarray, answers: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Examples as model input: rows "<bos> prompt answer" (the answer ends with <eos>), right-padded.

    Returns (tokens (n, 1+P+A), answer_mask (same shape, True on answer tokens incl. <eos>), lengths (n,)). The
    training stream packs exactly these rows; a probe that scores one example per row can use them as they are.
    """
    n = prompts.shape[0]
    tokens = np.concatenate([np.full((n, 1), BOS, dtype=np.int64), prompts, answers], axis=1)
    is_answer = np.zeros(tokens.shape, dtype=bool)
    is_answer[:, 1 + prompts.shape[1]:] = answers != PAD
    if not (prompts == PAD).any():  # fixed-width prompts: already contiguous, padding only after the answer
        return tokens, is_answer, (tokens != PAD).sum(axis=1)
    order = np.argsort(tokens == PAD, axis=1, kind="stable")
    tokens = np.take_along_axis(tokens, order, axis=1)
    is_answer = np.take_along_axis(is_answer, order, axis=1)
    return tokens, is_answer, (tokens != PAD).sum(axis=1)


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def check_seed(seed) -> int:
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def check_count(n) -> int:
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"the number of examples must be a non-negative integer, got {n!r}")
    return int(n)


class Task:
    """A generated task: a uniform prompt generator and a vectorised solver; the splits come from this class.

    Subclasses set the attributes below and implement `sample_prompts` and `solve` (both vectorised: numpy over all
    examples at once, loops only over positions). Prompts and answers are int64 token ids of VOCAB, right-padded with
    VOCAB.pad to `prompt_len` / `answer_len`; every answer ends with VOCAB.eos.
    """

    name: str = ""
    description: str = ""  # one or two sentences, shown in emergence/README.md
    answer_format: str = ""  # what the answer looks like
    example: tuple[str, str] = ("", "")  # (prompt, answer without <eos>), checked against `solve` at registration
    prompt_len: int = 0  # widest prompt, tokens
    answer_len: int = 0  # widest answer, tokens, including <eos>
    min_example_len: int | None = None  # shortest "<bos> prompt answer"; None: every example is `max_example_len`
    space_size: int | None = None  # number of distinct prompts when it is known
    # the metric a verdict on this task is about, declared before any data: its false-discovery-rate family is the
    # headline metric of every task (`analysis.flags.flag_emergence`); all-or-nothing answers: exact match
    headline: str = "exact_match"

    # --- to implement -------------------------------------------------------------------------------------------
    def sample_prompts(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n prompts drawn uniformly from the whole example space (both splits), shape (n, prompt_len)."""
        raise NotImplementedError

    def solve(self, prompts: np.ndarray) -> np.ndarray:
        """The answers to the prompts, shape (n, answer_len), each ending with <eos>."""
        raise NotImplementedError

    def split_key(self, prompts: np.ndarray) -> np.ndarray:
        """The canonical form of each prompt whose hash decides its split (default: the prompt itself)."""
        return prompts

    def natural(self, prompt: str, answer: str) -> tuple[str, str]:
        """One example in the natural form a pretrained LM reads (see `text`), from its prompt and answer as decoded
        characters. The default keeps the task's own text; tasks override it where their training format is not how
        text on the web writes the same thing (digits least significant first, zero padding, one-letter tags)."""
        return prompt, answer

    def text(self, prompts: np.ndarray, answers: np.ndarray) -> tuple[list[str], list[str]]:
        """Examples (token-id arrays as `sample` and `heldout_set` give them) as natural text for a pretrained LM's
        tokenizer: (prompt strings, answer strings).

        A prompt ends where its answer starts; answers carry no stop sequence (no <eos>, no newline): a probe appends
        its own. Rendering is per example and never changes which examples a split holds, so `heldout_set(n, seed)`
        rendered is the same probe set as the token ids. Every prompt of a built-in task ends with "=".
        """
        prompts, answers = np.asarray(prompts), np.asarray(answers)
        if prompts.ndim != 2 or answers.ndim != 2 or len(prompts) != len(answers):
            raise ValueError(f"task {self.name!r}: text() takes 2-d prompt and answer arrays with one row per "
                             f"example, got shapes {prompts.shape} and {answers.shape}")
        pairs = [self.natural(VOCAB.decode(p), VOCAB.decode(a)) for p, a in zip(prompts, answers)]
        return [p for p, _ in pairs], [a for _, a in pairs]

    # --- derived ------------------------------------------------------------------------------------------------
    @property
    def max_example_len(self) -> int:
        """Tokens of the longest "<bos> prompt answer<eos>"."""
        return 1 + self.prompt_len + self.answer_len

    @property
    def salt(self) -> int:
        return name_salt(self.name)

    @property
    def enumerable(self) -> bool:
        return False

    def is_heldout(self, prompts: np.ndarray) -> np.ndarray:
        """True where a prompt belongs to the held-out part (a pure function of the prompt; see the module doc)."""
        prompts = np.asarray(prompts, dtype=np.int64)
        return unit_interval(hash_tokens(self.split_key(prompts), self.salt)) < HELDOUT_FRACTION

    def example_ids(self, prompts: np.ndarray) -> np.ndarray:
        """Stable non-negative int64 ids: a 63-bit hash of the exact prompt (the same on every call and machine)."""
        h = hash_tokens(np.asarray(prompts, dtype=np.int64), name_salt(self.name + "#example-id"))
        return (h >> _U64(1)).astype(np.int64)

    def sample(self, rng: np.random.Generator, n: int, split: str) -> tuple[np.ndarray, np.ndarray]:
        """n examples of one split: (prompts (n, prompt_len), answers (n, answer_len)), uniform over that split."""
        check_split(split)
        n = check_count(n)
        prompts = self._sample_split(rng, n, split == "heldout")
        return prompts, self.solve(prompts)

    def heldout_set(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The fixed probe set: n distinct held-out examples, the same for every caller given (n, seed).

        Returns (prompts, answers, example_ids). Fewer than n rows come back when the held-out part has fewer than n
        examples: then it is all of them. A smaller n gives a prefix of a larger n's set.
        """
        n, seed = check_count(n), check_seed(seed)
        rng = np.random.default_rng([seed, self.salt])
        prompts = self._distinct_heldout(rng, n)
        return prompts, self.solve(prompts), self.example_ids(prompts)

    def check(self) -> None:
        """Consistency checks run at registration: sizes, and the documented example against `solve`."""
        if not self.name or not all(c.isalnum() or c == "_" for c in self.name) or self.name != self.name.lower():
            raise ValueError(f"task name {self.name!r} must be lower-case letters, digits and underscores")
        if self.prompt_len < 1 or self.answer_len < 2:
            raise ValueError(f"task {self.name!r}: prompt_len must be >= 1 and answer_len >= 2 (answer + <eos>)")
        prompt, answer = self.example
        got = VOCAB.decode(self.solve(VOCAB.encode_batch([prompt], self.prompt_len))[0])
        if got != answer:
            raise ValueError(f"task {self.name!r}: its documented example {prompt!r} -> {answer!r} disagrees with "
                             f"solve(), which gives {got!r}")

    def __repr__(self) -> str:
        return f"<task {self.name}: {self.description}>"

    # --- sampling machinery -------------------------------------------------------------------------------------
    def _sample_split(self, rng: np.random.Generator, n: int, heldout: bool) -> np.ndarray:
        """Rejection sampling: draw uniform prompts, keep those of the wanted split, until there are n."""
        if n == 0:
            return np.zeros((0, self.prompt_len), dtype=np.int64)
        accept = HELDOUT_FRACTION if heldout else 1.0 - HELDOUT_FRACTION
        parts, got = [], 0
        for _ in range(_MAX_ROUNDS):
            m = int(math.ceil((n - got) / accept * 1.05)) + 16
            p = self.sample_prompts(rng, m)
            p = p[self.is_heldout(p) == heldout]
            parts.append(p)
            got += len(p)
            if got >= n:
                return np.concatenate(parts)[:n]
        raise ValueError(f"task {self.name!r}: found only {got} of {n} {'heldout' if heldout else 'train'} "
                         f"examples after {_MAX_ROUNDS} rounds; that part of its example space is (nearly) empty: "
                         f"enlarge the task's example space")

    def _distinct_heldout(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Distinct held-out prompts in a stable order, drawn in fixed-size chunks until n (or none are new)."""
        parts, seen, got, stale = [], np.zeros(0, dtype=np.int64), 0, 0
        while got < n and stale < 20:
            p = self._sample_split(rng, HELDOUT_CHUNK, heldout=True)
            ids = self.example_ids(p)
            _, first = np.unique(ids, return_index=True)
            first.sort()  # keep the order of first appearance, so the set does not depend on n
            p, ids = p[first], ids[first]
            new = ~np.isin(ids, seen)
            p, ids = p[new], ids[new]
            stale = 0 if len(ids) else stale + 1
            parts.append(p)
            seen = np.concatenate([seen, ids])
            got += len(ids)
        if not parts:
            return np.zeros((0, self.prompt_len), dtype=np.int64)
        return np.concatenate(parts)[:n]


class IndexedTask(Task):
    """A task whose prompts are numbered 0 .. space_size-1 (operand pairs, strings over an alphabet, bit strings).

    Sampling draws indices; spaces of at most ENUMERATE_LIMIT prompts are enumerated once, split, and then sampled
    exactly from the wanted part (no rejection, and `heldout_set` returns all of a small held-out part).
    """

    space_size: int = 0

    def prompts_from_index(self, idx: np.ndarray) -> np.ndarray:
        """Prompt number idx[i] for each i, shape (len(idx), prompt_len)."""
        raise NotImplementedError

    def sample_prompts(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.prompts_from_index(rng.integers(0, self.space_size, size=n, dtype=np.int64))

    @property
    def enumerable(self) -> bool:
        return self.space_size <= ENUMERATE_LIMIT

    def enumerate_prompts(self) -> np.ndarray:
        """Every prompt of the task, in index order (only for enumerable tasks)."""
        if not self.enumerable:
            raise ValueError(f"task {self.name!r} has {self.space_size} prompts, more than ENUMERATE_LIMIT="
                             f"{ENUMERATE_LIMIT}; sample it instead")
        return self.prompts_from_index(np.arange(self.space_size, dtype=np.int64))

    def split_indices(self) -> dict[str, np.ndarray]:
        """For an enumerable task: the prompt indices of each split, computed once."""
        cached = self.__dict__.get("_split_indices")
        if cached is None:
            held = self.is_heldout(self.enumerate_prompts())
            cached = {"train": np.flatnonzero(~held), "heldout": np.flatnonzero(held)}
            for split, idx in cached.items():
                if len(idx) == 0:
                    raise ValueError(f"task {self.name!r}: its {split} part is empty ({self.space_size} prompts, "
                                     f"HELDOUT_FRACTION={HELDOUT_FRACTION}); enlarge the task's example space")
            self.__dict__["_split_indices"] = cached
        return cached

    def _sample_split(self, rng: np.random.Generator, n: int, heldout: bool) -> np.ndarray:
        if not self.enumerable:
            return super()._sample_split(rng, n, heldout)
        pool = self.split_indices()["heldout" if heldout else "train"]
        return self.prompts_from_index(pool[rng.integers(0, len(pool), size=n)])

    def _distinct_heldout(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if not self.enumerable:
            return super()._distinct_heldout(rng, n)
        pool = self.split_indices()["heldout"]
        return self.prompts_from_index(pool[rng.permutation(len(pool))[:n]])


def digits_to_tokens(values: np.ndarray, width: int) -> np.ndarray:
    """Non-negative integers as zero-padded decimal digit tokens, most significant first, shape (n, width)."""
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return (np.asarray(values, dtype=np.int64)[:, None] // powers) % 10 + VOCAB.id("0")


def tokens_to_int(tokens: np.ndarray) -> np.ndarray:
    """Decimal digit tokens (most significant first) as integers."""
    width = tokens.shape[1]
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return (np.asarray(tokens, dtype=np.int64) - VOCAB.id("0")) @ powers


@functools.lru_cache(maxsize=None)
def _const_ids(text: str) -> np.ndarray:
    return VOCAB.ids(text)


def const(text: str, n: int) -> np.ndarray:
    """A fixed string repeated on n rows, shape (n, len(text)) (a read-only broadcast view)."""
    return np.broadcast_to(_const_ids(text), (n, len(text)))


def with_eos(body: np.ndarray) -> np.ndarray:
    """Answer bodies of one width with <eos> appended."""
    return np.concatenate([body, np.full((body.shape[0], 1), EOS, dtype=np.int64)], axis=1)
