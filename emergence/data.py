"""Data sources: what the trainer reads. A source yields (x, y) batches that are a pure function of (seed, step, split),
so resuming needs no data-loader state and two runs with the same seed see the same stream.

Two sources: `tasks` (the generated task mixture of `emergence.tasks`, optionally with a share of rows from local text
in the task vocabulary: `data.text_path` + `data.text_weight`) and `text` (local .txt files read as bytes).
Both keep a held-out part that the training stream never reads.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import torch

TEXT_SPECIALS = {"bos": 256, "eos": 257, "pad": 258}
TEXT_VOCAB_SIZE = 259


class DataSource(Protocol):
    vocab_size: int

    def batch(self, seed: int, step: int, batch_size: int, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
        ...


def step_rng(seed: int, step: int, split: str) -> np.random.Generator:
    """An independent generator for each (seed, step, split): the batch at a step never depends on earlier steps."""
    return np.random.default_rng([int(seed), int(step), {"train": 0, "heldout": 1}[split]])


def read_text_files(path: str | Path) -> list[bytes]:
    p = Path(path)
    files = sorted(p.rglob("*.txt")) if p.is_dir() else [p]
    if not files or not all(f.is_file() for f in files):
        raise ValueError(f"data.text_path={path}: no .txt file found; point it at a text file or a folder of them")
    return [f.read_bytes() for f in files]


class TextSource:
    """Local text read as bytes (vocabulary 256 plus BOS/EOS/PAD). The last `heldout_fraction` of every file is the
    held-out part: training windows are drawn only from the first part, evaluation windows only from the last."""

    vocab_size = TEXT_VOCAB_SIZE

    def __init__(self, path: str | Path, seq_len: int, heldout_fraction: float = 0.1):
        if not 0 < heldout_fraction < 1:
            raise ValueError(f"data.text_heldout_fraction must be in (0, 1), got {heldout_fraction}")
        train, held = [], []
        for raw in read_text_files(path):
            b = self.encode(raw)
            cut = int(len(b) * (1 - heldout_fraction))
            train.append(b[:cut])
            held.append(b[cut:])
        self.parts = {"train": np.concatenate(train), "heldout": np.concatenate(held)}
        self.seq_len = seq_len
        for split, arr in self.parts.items():
            if len(arr) < seq_len + 2:
                raise ValueError(f"data.text_path={path}: the {split} part has {len(arr)} bytes, fewer than "
                                 f"data.seq_len + 2 = {seq_len + 2}; use more text or a shorter seq_len")

    @staticmethod
    def encode(raw: bytes) -> np.ndarray:
        return np.frombuffer(raw, dtype=np.uint8).astype(np.int64)

    def batch(self, seed: int, step: int, batch_size: int, split: str = "train"):
        data = self.parts[split]
        starts = step_rng(seed, step, split).integers(0, len(data) - self.seq_len - 1, size=batch_size)
        idx = starts[:, None] + np.arange(self.seq_len + 1)[None, :]
        window = torch.from_numpy(data[idx])
        return window[:, :-1].contiguous(), window[:, 1:].contiguous()


class TaskText(TextSource):
    """Local text in the task vocabulary (characters outside it are dropped), to mix into the task stream."""

    def __init__(self, path, seq_len: int, heldout_fraction: float = 0.1):
        from emergence.tasks import VOCAB

        table = np.full(256, -1, dtype=np.int64)
        for i, ch in enumerate(VOCAB.chars):
            if ord(ch) < 256:
                table[ord(ch)] = VOCAB.encode(ch)[0]
        self._table = table
        self.vocab_size = VOCAB.size
        super().__init__(path, seq_len, heldout_fraction)

    def encode(self, raw: bytes) -> np.ndarray:
        ids = self._table[np.frombuffer(raw, dtype=np.uint8)]
        return ids[ids >= 0]


class MixedSource:
    """The task mixture with a share of rows taken from local text (the text trained on every token).

    Each batch has round(batch_size x text_weight) text rows after the task rows; both parts keep their own
    held-out split, so the held-out loss mixes held-out tasks and held-out text in the same proportion."""

    def __init__(self, tasks, text: TaskText, text_weight: float):
        if not 0 < text_weight < 1:
            raise ValueError(f"data.text_weight must be in (0, 1) to mix text into tasks, got {text_weight}")
        self.tasks, self.text, self.text_weight = tasks, text, text_weight
        self.vocab_size = tasks.vocab_size

    def batch(self, seed: int, step: int, batch_size: int, split: str = "train"):
        n_text = min(batch_size - 1, max(1, round(batch_size * self.text_weight)))
        xt, yt = self.tasks.batch(seed, step, batch_size - n_text, split)
        xs, ys = self.text.batch(seed, step, n_text, split)
        return torch.cat([xt, xs]), torch.cat([yt, ys])


def build_source(cfg) -> DataSource:
    """The data source a config asks for."""
    if cfg.data.source == "text":
        return TextSource(cfg.data.text_path, cfg.data.seq_len, cfg.data.text_heldout_fraction)
    from emergence.tasks import TaskMixture

    tasks = TaskMixture(dict(cfg.task.train), cfg.data.seq_len, pack=cfg.data.pack)
    if cfg.data.text_path and cfg.data.text_weight > 0:
        text = TaskText(cfg.data.text_path, cfg.data.seq_len, cfg.data.text_heldout_fraction)
        return MixedSource(tasks, text, cfg.data.text_weight)
    return tasks
