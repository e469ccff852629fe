"""The shared character vocabulary of every generated task.

One token per character: three special tokens, then newline and the 95 printable ASCII characters (space to '~'),
so any task written in plain ASCII text can be encoded and a tiny model pays for ~100 embedding rows only.

    id 0  <pad>  fills the end of rows and of variable-length prompts/answers; never a training target
    id 1  <bos>  starts every example; it is also the separator between examples packed into one row (sep == bos)
    id 2  <eos>  ends every answer; exact match requires the model to emit it
    id 3  '\\n'   separates the solved examples of a k-shot prompt
    id 4+ ' ' ... '~'
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

SPECIALS = ("<pad>", "<bos>", "<eos>")
CHARS = "\n" + "".join(chr(c) for c in range(32, 127))


class Vocab:
    """Character <-> id mapping, with helpers for whole batches of strings (tests, docs and prompts typed by hand)."""

    def __init__(self, chars: str = CHARS):
        if len(set(chars)) != len(chars):
            raise ValueError("vocabulary characters must be distinct")
        self.chars = chars
        self.pad, self.bos, self.eos = 0, 1, 2
        self.sep = self.bos
        self.n_special = len(SPECIALS)
        self.size = self.n_special + len(chars)
        self._id = {c: i + self.n_special for i, c in enumerate(chars)}

    def id(self, ch: str) -> int:
        """The id of one character."""
        try:
            return self._id[ch]
        except KeyError:
            raise ValueError(f"character {ch!r} is not in the task vocabulary (newline and printable ASCII)") from None

    def ids(self, chars: str) -> np.ndarray:
        """Ids of the characters of a string, as an int64 array (used to build lookup tables in tasks)."""
        return np.array([self.id(c) for c in chars], dtype=np.int64)

    def encode(self, s: str) -> list[int]:
        """A string as token ids (no special tokens added)."""
        return [self.id(c) for c in s]

    def decode(self, ids: Iterable[int], keep_special: bool = False) -> str:
        """Token ids as a string. Padding is dropped; <bos>/<eos> are dropped too unless `keep_special`."""
        out = []
        for i in ids:
            i = int(i)
            if i < 0 or i >= self.size:
                raise ValueError(f"token id {i} is outside the vocabulary (size {self.size})")
            if i < self.n_special:
                if keep_special and i != self.pad:
                    out.append(SPECIALS[i])
                continue
            out.append(self.chars[i - self.n_special])
        return "".join(out)

    def encode_batch(self, strings: Sequence[str], width: int | None = None) -> np.ndarray:
        """Strings as an (n, width) int64 array, right-padded with <pad> (width: the longest string by default)."""
        width = max((len(s) for s in strings), default=0) if width is None else width
        out = np.zeros((len(strings), width), dtype=np.int64)
        for r, s in enumerate(strings):
            if len(s) > width:
                raise ValueError(f"string {s!r} is longer than width {width}")
            out[r, :len(s)] = self.encode(s)
        return out

    def decode_batch(self, ids: np.ndarray, keep_special: bool = False) -> list[str]:
        """Rows of token ids as strings (see `decode`)."""
        return [self.decode(row, keep_special) for row in np.asarray(ids)]

    def __repr__(self) -> str:
        return f"Vocab(size={self.size}, pad={self.pad}, bos={self.bos}, eos={self.eos}, sep={self.sep})"


VOCAB = Vocab()
