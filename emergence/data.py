"""Data sources: what the trainer reads. A source yields (x, y) batches that are a pure function of (seed, step, split),
so resuming needs no data-loader state and two runs with the same seed see the same stream.

Three sources:
- `tasks`: the generated task mixture (`TaskMixture`, in `emergence.mixture`) in the task vocabulary, optionally with
  a share of rows from local text in that vocabulary (`data.text_path` + `data.text_weight`);
- `text`: local .txt files, tokenized as UTF-8 bytes (`data.tokenizer=bytes`) or with a byte-level BPE learned on the
  training part of the corpus and kept in the run folder (`data.tokenizer=bpe`), optionally with a share of task rows
  rendered as natural text in the same tokenizer (`data.task_weight`);
- `tokens`: a corpus tokenized elsewhere, flat uint16/uint32 ids (nanoGPT's train.bin / val.bin), memory-mapped.
Every source keeps a held-out part that the training stream never reads (and the BPE never learns from).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

TEXT_SPECIALS = {"bos": 256, "eos": 257, "pad": 258}
TEXT_VOCAB_SIZE = 259

from emergence.files import atomic_write_bytes
from emergence.mixture import IGNORE_INDEX, STEPS_PER_DRAW, STREAMS_KEPT, TaskMixture, mixture_weights
from emergence.tasks import get_task
from emergence.tasks.base import SPLITS, check_count, check_seed, check_split
from emergence.tasks.vocab import VOCAB


class DataSource(Protocol):
    vocab_size: int

    def batch(self, seed: int, step: int, batch_size: int, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
        ...


def step_rng(seed: int, step: int, split: str) -> np.random.Generator:
    """An independent generator for each (seed, step, split): the batch at a step never depends on earlier steps."""
    return np.random.default_rng([int(seed), int(step), {"train": 0, "heldout": 1}[split]])


def text_files(path: str | Path) -> list[Path]:
    """The corpus's files: `path` itself, or every .txt file under the folder `path`, in sorted order."""
    p = Path(path)
    files = sorted(p.rglob("*.txt")) if p.is_dir() else [p]
    if not files or not all(f.is_file() for f in files):
        raise ValueError(f"data.text_path={path}: no .txt file found; point it at a text file or a folder of them")
    return files


def read_text_files(path: str | Path) -> list[bytes]:
    return [f.read_bytes() for f in text_files(path)]


def check_heldout_fraction(heldout_fraction: float) -> float:
    if not 0 < heldout_fraction < 1:
        raise ValueError(f"data.text_heldout_fraction must be in (0, 1), got {heldout_fraction}")
    return float(heldout_fraction)


def text_parts(path: str | Path, heldout_fraction: float = 0.1) -> dict[str, list[str]]:
    """Each file of the corpus as text (UTF-8; bytes that do not decode become U+FFFD), cut by characters into its
    training head and its held-out tail: {"train": [head of each file], "heldout": [tail of each file]}.

    The BPE learns from the "train" part only, so no held-out text shapes the vocabulary it is measured with."""
    check_heldout_fraction(heldout_fraction)
    parts: dict[str, list[str]] = {"train": [], "heldout": []}
    for raw in read_text_files(path):
        text = raw.decode("utf-8", errors="replace")
        cut = int(len(text) * (1 - heldout_fraction))
        parts["train"].append(text[:cut])
        parts["heldout"].append(text[cut:])
    return parts


def windows(data: np.ndarray, rng: np.random.Generator, batch_size: int, seq_len: int):
    """`batch_size` random windows of seq_len + 1 consecutive ids of `data` (any integer dtype, a memory map too) as
    (x, y) LongTensors: y is x shifted by one, every token trained."""
    starts = rng.integers(0, len(data) - seq_len - 1, size=batch_size)
    window = torch.from_numpy(data[starts[:, None] + np.arange(seq_len + 1)[None, :]].astype(np.int64))
    return window[:, :-1].contiguous(), window[:, 1:].contiguous()


def compact_dtype(vocab_size: int):
    """The smallest unsigned dtype that holds every id below `vocab_size` (uint16 up to 65,536 ids)."""
    return np.uint16 if vocab_size <= 1 << 16 else np.uint32


# --------------------------------------------------------------------------------------------------------------
# Tokenizers of the text source. Both encode text to ids and name their special tokens, so task examples mixed into
# a text stream are written in the same vocabulary as the text.

HF_EXTRA = 'pip install "emergence[hf]"'
BPE_SPECIALS = ("<pad>", "<bos>", "<eos>")  # ids 0, 1, 2: the task vocabulary's ids for the same tokens
BPE_MIN_VOCAB = 256 + len(BPE_SPECIALS)  # the 256 byte tokens a byte-level BPE starts from, plus the specials
TOKENIZER_FILE = "tokenizer.json"  # in the run folder, next to config.yaml


class ByteTokenizer:
    """UTF-8 bytes, ids 0..255, then BOS/EOS/PAD (`TEXT_SPECIALS`): data.tokenizer=bytes."""

    vocab_size = TEXT_VOCAB_SIZE
    bos, eos, pad = TEXT_SPECIALS["bos"], TEXT_SPECIALS["eos"], TEXT_SPECIALS["pad"]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [list(t.encode("utf-8")) for t in texts]

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", errors="replace")


def _tokenizers():
    """The optional `tokenizers` library, or one line saying how to install it."""
    try:
        import tokenizers  # optional dependency (the hf extra)
    except ImportError:
        raise ValueError(f"data.tokenizer=bpe needs the tokenizers library: {HF_EXTRA}") from None
    return tokenizers


class BPETokenizer:
    """A byte-level BPE (the `tokenizers` library; GPT-2's pre-tokenizer, no prefix space): data.tokenizer=bpe.

    Its file, `tokenizer.json`, is the library's own format, with <pad>, <bos> and <eos> declared as special tokens
    (ids 0, 1, 2), so `tokenizers.Tokenizer.from_file` and `transformers.PreTrainedTokenizerFast(tokenizer_file=...)`
    read it. Text is encoded with special-token strings taken literally: a corpus that contains "<eos>" gets the
    characters, and only this code places the special ids."""

    def __init__(self, json_text: str):
        self._tok = _tokenizers().Tokenizer.from_str(json_text)
        self._tok.encode_special_tokens = True
        self.vocab_size = self._tok.get_vocab_size()
        ids = [self._tok.token_to_id(t) for t in BPE_SPECIALS]
        if any(i is None for i in ids):
            raise ValueError(f"this tokenizer does not declare the special tokens {', '.join(BPE_SPECIALS)}; it was "
                             "not made by data.tokenizer=bpe")
        self.pad, self.bos, self.eos = ids

    @classmethod
    def train(cls, texts, vocab_size: int) -> "BPETokenizer":
        """Learn a byte-level BPE of `vocab_size` tokens (specials included) from an iterable of strings.

        Deterministic: the same texts and vocab_size give the same file (merges are chosen by count, ties broken by
        the pair itself). Raises when the texts cannot fill the vocabulary (too little text for so many merges)."""
        tk = _tokenizers()
        if vocab_size < BPE_MIN_VOCAB:
            raise ValueError(f"data.vocab_size={vocab_size} is too small for a byte-level BPE: it needs at least "
                             f"{BPE_MIN_VOCAB} (256 bytes + {', '.join(BPE_SPECIALS)})")
        tok = tk.Tokenizer(tk.models.BPE())
        tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = tk.decoders.ByteLevel()
        trainer = tk.trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(BPE_SPECIALS),
                                         initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
                                         show_progress=False)
        tok.train_from_iterator(texts, trainer)
        if tok.get_vocab_size() < vocab_size:
            raise ValueError(f"data.text_path: the training text yields only {tok.get_vocab_size()} BPE tokens, fewer "
                             f"than data.vocab_size={vocab_size}; use more text or data.vocab_size <= "
                             f"{tok.get_vocab_size()}")
        return cls(tok.to_str())

    @classmethod
    def load(cls, path: str | Path) -> "BPETokenizer":
        return cls(Path(path).read_text(encoding="utf-8"))

    def to_json(self) -> str:
        return self._tok.to_str()

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        encode = getattr(self._tok, "encode_batch_fast", self._tok.encode_batch)  # fast: no character offsets
        return [e.ids for e in encode(list(texts), add_special_tokens=False)]

    def decode(self, ids) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)


def encode_document(tokenizer, text: str) -> list[int]:
    """One document's ids. It is encoded line by line (lines keep their newline), as the BPE learned it: the pieces
    encode in parallel, and a piece boundary falls where the pre-tokenizer splits anyway."""
    return [i for ids in tokenizer.encode_batch(text.splitlines(keepends=True)) for i in ids]


def encode_task_examples(tokenizer, prompts: list[str], answers: list[str]) -> list[tuple[np.ndarray, int]]:
    """Task examples in a text tokenizer: for each, (ids of "<bos> prompt answer <eos>", n) where the first n ids are
    <bos> and the prompt and the rest are the answer and <eos>, the tokens trained and scored.

    Prompt and answer are encoded separately, so no BPE token straddles the point where the answer starts, and a
    probe that encodes the prompt alone sees the same prompt tokens."""
    p_ids, a_ids = tokenizer.encode_batch(prompts), tokenizer.encode_batch(answers)
    return [(np.array([tokenizer.bos, *p, *a, tokenizer.eos], dtype=np.int64), 1 + len(p))
            for p, a in zip(p_ids, a_ids)]


_BPE_MEMO: dict[tuple, str] = {}  # (corpus files and their stat, vocab_size, held-out fraction) -> tokenizer JSON
_ENCODED_MEMO: dict[tuple, dict[str, np.ndarray]] = {}  # the latest corpus encoded, per split (one entry at most)


def corpus_key(path: str | Path) -> tuple:
    """The corpus's files with their sizes and modification times: what a memo of its tokenizer is valid for."""
    return tuple((str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in text_files(path))


def train_run_tokenizer(path: str | Path, vocab_size: int, heldout_fraction: float) -> BPETokenizer:
    """The BPE of `vocab_size` tokens learned on the training part of the corpus at `path` (`text_parts`).

    Kept for the life of the process, keyed by the corpus files' sizes and modification times: a run folder and its
    data source (and each run of stacked seeds) get one training, not one each."""
    key = (corpus_key(path), int(vocab_size), float(heldout_fraction))
    if key not in _BPE_MEMO:
        train = text_parts(path, heldout_fraction)["train"]
        _BPE_MEMO[key] = BPETokenizer.train((line for doc in train for line in doc.splitlines(keepends=True)),
                                            int(vocab_size)).to_json()
    return BPETokenizer(_BPE_MEMO[key])


def _is_bpe(data) -> bool:
    return data.source == "text" and data.get("tokenizer", "bytes") == "bpe"


def run_tokenizer(cfg, run_folder: str | Path | None = None) -> BPETokenizer:
    """A data.tokenizer=bpe run's tokenizer: the one saved in its folder when there is one (a resumed run never
    learns it again), else learned from the corpus (`train_run_tokenizer`)."""
    d = cfg.data
    saved = Path(run_folder) / TOKENIZER_FILE if run_folder is not None else None
    if saved is not None and saved.is_file():
        tok = BPETokenizer.load(saved)
        if tok.vocab_size != int(d.vocab_size):
            raise ValueError(f"{saved} has {tok.vocab_size} tokens but data.vocab_size={d.vocab_size}; this folder "
                             "belongs to another run")
        return tok
    if not d.text_path:
        raise ValueError("data.source=text needs data.text_path=<a .txt file or a folder of them>")
    return train_run_tokenizer(d.text_path, int(d.vocab_size), float(d.text_heldout_fraction))


def load_tokenizer(run_folder: str | Path) -> BPETokenizer:
    """The BPE a data.tokenizer=bpe run trained with, from its folder (for probing and generation)."""
    path = Path(run_folder) / TOKENIZER_FILE
    if not path.is_file():
        raise ValueError(f"{path} not found: only data.tokenizer=bpe runs have a tokenizer.json")
    return BPETokenizer.load(path)


def save_run_tokenizer(run_folder: str | Path, cfg) -> Path | None:
    """Write a data.tokenizer=bpe run's tokenizer as `tokenizer.json` in its folder (atomically) unless it is there;
    other runs: nothing. The tokenizer is learned (or taken from this process's memo) before anything is written,
    so a corpus too small for the vocabulary leaves the folder as it was."""
    from omegaconf import DictConfig, OmegaConf

    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(cfg)
    if not _is_bpe(cfg.data):
        return None
    path = Path(run_folder) / TOKENIZER_FILE
    if path.is_file():
        return path
    text = run_tokenizer(cfg).to_json()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, text.encode("utf-8"))
    return path


class TextSource:
    """Local text read as bytes (vocabulary 256 plus BOS/EOS/PAD). The last `heldout_fraction` of every file is the
    held-out part: training windows are drawn only from the first part, evaluation windows only from the last."""

    vocab_size = TEXT_VOCAB_SIZE

    def __init__(self, path: str | Path, seq_len: int, heldout_fraction: float = 0.1):
        check_heldout_fraction(heldout_fraction)
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


class BPETextSource:
    """Local text in a byte-level BPE (`BPETokenizer`). Each file is cut by characters into a training head and a
    held-out tail (`text_parts`); each part is encoded and ended with <eos> (a document boundary), and the parts of
    all files are concatenated per split. Windows are drawn as in `TextSource`."""

    def __init__(self, path: str | Path, seq_len: int, heldout_fraction: float, tokenizer: BPETokenizer):
        self.tokenizer, self.vocab_size, self.seq_len = tokenizer, tokenizer.vocab_size, seq_len
        # encoding is the slow part (about 1 MB of text per second per core): the runs of a ladder that one process
        # trains in turn share the corpus and the tokenizer, so the latest encoding is kept
        key = (corpus_key(path), float(heldout_fraction), tokenizer.to_json())
        if key not in _ENCODED_MEMO:
            dtype = compact_dtype(self.vocab_size)
            parts = {split: np.concatenate([np.array(encode_document(tokenizer, doc) + [tokenizer.eos], dtype=dtype)
                                            for doc in docs])
                     for split, docs in text_parts(path, heldout_fraction).items()}
            for arr in parts.values():
                arr.flags.writeable = False  # shared by every source built from this memo
            _ENCODED_MEMO.clear()
            _ENCODED_MEMO[key] = parts
        self.parts = _ENCODED_MEMO[key]
        for split in self.parts:
            if len(self.parts[split]) < seq_len + 2:
                raise ValueError(f"data.text_path={path}: the {split} part has {len(self.parts[split])} tokens, "
                                 f"fewer than data.seq_len + 2 = {seq_len + 2}; use more text or a shorter seq_len")

    def batch(self, seed: int, step: int, batch_size: int, split: str = "train"):
        return windows(self.parts[split], step_rng(seed, step, split), batch_size, self.seq_len)


TOKEN_DTYPES = {"uint16": np.uint16, "uint32": np.uint32}
_ID_CHECK_BLOCKS, _ID_CHECK_BLOCK = 64, 1 << 14  # ids checked at construction: 64 evenly spaced blocks of 16k


class TokenSource:
    """A corpus tokenized elsewhere: a flat array of token ids (uint16 or uint32, nanoGPT's layout), memory-mapped.

    `path` is a folder with train.bin and val.bin (the held-out part), or one .bin file whose last
    `heldout_fraction` is held out. Windows are drawn as in `TextSource`. Ids are checked against `vocab_size` on
    evenly spaced blocks when the source opens and on every batch, so a wrong vocab_size or dtype fails with a line
    that names it, never with an index error inside the embedding."""

    def __init__(self, path: str | Path, seq_len: int, vocab_size: int, dtype: str = "uint16",
                 heldout_fraction: float = 0.1):
        if dtype not in TOKEN_DTYPES:
            raise ValueError(f"data.tokens_dtype must be one of {', '.join(TOKEN_DTYPES)}, got {dtype!r}")
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)) or vocab_size < 1:
            raise ValueError("data.source=tokens needs data.vocab_size=<the vocabulary size of the corpus's tokenizer>")
        self.vocab_size, self.seq_len, self.dtype = int(vocab_size), int(seq_len), dtype
        if np.iinfo(TOKEN_DTYPES[dtype]).max + 1 < self.vocab_size:
            raise ValueError(f"data.vocab_size={vocab_size} does not fit in data.tokens_dtype={dtype}; use uint32")
        p = Path(path)
        if p.is_dir():
            missing = [n for n in ("train.bin", "val.bin") if not (p / n).is_file()]
            if missing:
                raise ValueError(f"data.tokens_path={path}: the folder has no {' and no '.join(missing)}; give a "
                                 "folder with train.bin and val.bin (nanoGPT's layout) or one .bin file")
            self.files = {"train": p / "train.bin", "heldout": p / "val.bin"}
            self.parts = {split: self._open(f) for split, f in self.files.items()}
        elif p.is_file():
            check_heldout_fraction(heldout_fraction)
            data = self._open(p)
            cut = int(len(data) * (1 - heldout_fraction))
            self.files = {"train": p, "heldout": p}
            self.parts = {"train": data[:cut], "heldout": data[cut:]}
        else:
            raise ValueError(f"data.tokens_path={path} does not exist; point it at a .bin file of token ids or a "
                             "folder with train.bin and val.bin")
        for split, arr in self.parts.items():
            if len(arr) < seq_len + 2:
                raise ValueError(f"data.tokens_path={path}: the {split} part has {len(arr)} tokens, fewer than "
                                 f"data.seq_len + 2 = {seq_len + 2}; use a larger corpus or a shorter seq_len")
            n = len(arr)
            starts = np.unique(np.linspace(0, max(n - _ID_CHECK_BLOCK, 0), _ID_CHECK_BLOCKS).astype(np.int64))
            self._check_ids(max(int(arr[s:s + _ID_CHECK_BLOCK].max()) for s in starts), split)

    def _open(self, f: Path) -> np.ndarray:
        size, item = f.stat().st_size, np.dtype(TOKEN_DTYPES[self.dtype]).itemsize
        if size == 0:
            raise ValueError(f"data.tokens_path: {f} is empty")
        if size % item:
            raise ValueError(f"data.tokens_path: {f} has {size} bytes, not a multiple of {item} "
                             f"(data.tokens_dtype={self.dtype}); is the dtype right?")
        return np.memmap(f, dtype=TOKEN_DTYPES[self.dtype], mode="r")

    def _check_ids(self, largest: int, split: str) -> None:
        if largest >= self.vocab_size:
            raise ValueError(f"data.tokens_path: {self.files[split]} holds token id {largest}, not below "
                             f"data.vocab_size={self.vocab_size}; set data.vocab_size to its tokenizer's size (or "
                             f"check data.tokens_dtype={self.dtype})")

    def batch(self, seed: int, step: int, batch_size: int, split: str = "train"):
        x, y = windows(self.parts[split], step_rng(seed, step, split), batch_size, self.seq_len)
        if batch_size:
            self._check_ids(max(int(x.max()), int(y.max())), split)
        return x, y


class TaskText(TextSource):
    """Local text in the task vocabulary (characters outside it are dropped), to mix into the task stream."""

    def __init__(self, path, seq_len: int, heldout_fraction: float = 0.1):
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


class TaskRows:
    """Task examples written as natural text (`Task.text`: sums most significant digit first, operations named) and
    encoded with a text source's tokenizer, as rows to mix into that text stream.

    The layout is the task stream's (`TaskMixture`): "<bos> prompt answer <eos>" examples from the left of a row, then
    padding, with targets only on the answer and its <eos> (-100 elsewhere). pack=True fills a row by first fit over
    `slots` drawn examples (about as many as fill a row at the mixture's mean example length, measured once in this
    tokenizer); pack=False puts one example per row. Split "heldout" draws held-out examples only.

    As in `TaskMixture`, the rows of STEPS_PER_DRAW consecutive steps are drawn together, from a generator seeded by
    (seed, step // STEPS_PER_DRAW, split, 1) (independent of the text windows of the same steps), so a batch is a
    pure function of (seed, step, split, n_rows): sampling, rendering and encoding run once per draw, not once per
    task per step."""

    _SAMPLE = 64  # examples per task encoded once to measure lengths in this tokenizer

    def __init__(self, weights: dict[str, float], tokenizer, seq_len: int, pack: bool = True):
        self.names, self.probs = mixture_weights(weights)
        self.tasks = [get_task(n) for n in self.names]
        self.tokenizer, self.seq_len, self.pack = tokenizer, int(seq_len), bool(pack)
        rng = np.random.default_rng(0)
        lengths = {}
        for task in self.tasks:
            lengths[task.name] = [len(ids) for ids, _ in self._encode(task, *task.sample(rng, self._SAMPLE, "train"))]
        name, longest = max(((n, max(v)) for n, v in lengths.items()), key=lambda kv: kv[1])
        if longest > self.seq_len:
            raise ValueError(f"data.seq_len={seq_len} is too short for task {name!r}: its examples take {longest} "
                             f"tokens in this tokenizer (<bos> prompt answer <eos>); set data.seq_len >= {longest}")
        mean = float(sum(p * np.mean(lengths[n]) for n, p in zip(self.names, self.probs)))
        self.slots = max(1, math.ceil(self.seq_len / mean)) if self.pack else 1  # examples drawn per row
        self._draws: dict[tuple, tuple[int, tuple[np.ndarray, np.ndarray]]] = {}

    def _encode(self, task, prompts: np.ndarray, answers: np.ndarray) -> list[tuple[np.ndarray, int]]:
        return encode_task_examples(self.tokenizer, *task.text(prompts, answers))

    def batch(self, seed: int, step: int, n_rows: int, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y), LongTensors of shape (n_rows, seq_len): task rows in the layout of the class doc."""
        check_split(split)
        seed, step, n_rows = check_seed(seed), check_seed(step), check_count(n_rows)
        draw, i = divmod(step, STEPS_PER_DRAW)
        stream = (seed, n_rows, split)
        kept = self._draws.get(stream)
        if kept is None or kept[0] != draw:
            rows = self._draw(np.random.default_rng([seed, draw, SPLITS.index(split), 1]), n_rows * STEPS_PER_DRAW,
                              split)
            self._draws.pop(stream, None)
            if len(self._draws) >= STREAMS_KEPT:
                self._draws.pop(next(iter(self._draws)))
            kept = self._draws[stream] = (draw, rows)
        return tuple(torch.from_numpy(a[i * n_rows:(i + 1) * n_rows].copy()) for a in kept[1])

    def _draw(self, rng: np.random.Generator, n_rows: int, split: str) -> tuple[np.ndarray, np.ndarray]:
        T, m = self.seq_len, self.slots
        x = np.full((n_rows, T), self.tokenizer.pad, dtype=np.int64)
        y = np.full((n_rows, T), IGNORE_INDEX, dtype=np.int64)
        choice = rng.choice(len(self.tasks), size=n_rows * m, p=self.probs)
        prompts, answers = [""] * (n_rows * m), [""] * (n_rows * m)
        for i, task in enumerate(self.tasks):
            where = np.flatnonzero(choice == i)
            if len(where):
                for w, p, a in zip(where, *task.text(*task.sample(rng, len(where), split))):
                    prompts[w], answers[w] = p, a
        examples = encode_task_examples(self.tokenizer, prompts, answers)  # one call: the tokenizer's own threads
        for r in range(n_rows):
            used = 0
            for ids, n_ctx in examples[r * m:(r + 1) * m]:
                L = len(ids)
                if used + L > T:  # first fit: a later, shorter example may still fit
                    continue
                x[r, used:used + L] = ids
                y[r, used + n_ctx - 1:used + L - 1] = ids[n_ctx:]  # position t predicts x[t+1]: answer and <eos>
                used += L
        return x, y


class TextTaskSource:
    """A text stream with a share of task rows in the same tokenizer (data.source=text, data.task_weight > 0).

    Each batch has round(batch_size x task_weight) task rows (`TaskRows`, at least one, at most batch_size - 1)
    after the text rows. Text rows train on every token, task rows on their answers only. Both parts keep their own
    held-out split, so the held-out loss mixes held-out text and held-out task examples in the same proportion."""

    def __init__(self, text, tasks: TaskRows, task_weight: float):
        if not 0 < task_weight < 1:
            raise ValueError(f"data.task_weight must be in (0, 1) to mix tasks into text, got {task_weight}")
        self.text, self.tasks, self.task_weight = text, tasks, float(task_weight)
        self.vocab_size, self.tokenizer = text.vocab_size, tasks.tokenizer

    def n_task_rows(self, batch_size: int) -> int:
        return min(batch_size - 1, max(1, round(batch_size * self.task_weight)))

    def batch(self, seed: int, step: int, batch_size: int, split: str = "train"):
        n_task = self.n_task_rows(batch_size)
        xs, ys = self.text.batch(seed, step, batch_size - n_task, split)
        xt, yt = self.tasks.batch(seed, step, n_task, split)
        return torch.cat([xs, xt]), torch.cat([ys, yt])


def build_source(cfg, run_folder: str | Path | None = None) -> DataSource:
    """The data source a config asks for. `run_folder`: the run's folder, where a data.tokenizer=bpe run keeps its
    tokenizer (reused when there, learned from the corpus when not; `save_run_tokenizer` writes it)."""
    d = cfg.data
    if d.source == "tokens":
        return TokenSource(d.tokens_path, d.seq_len, d.vocab_size, d.tokens_dtype, d.text_heldout_fraction)
    if d.source == "text":
        if _is_bpe(d):
            tokenizer = run_tokenizer(cfg, run_folder)
            text = BPETextSource(d.text_path, d.seq_len, d.text_heldout_fraction, tokenizer)
        else:
            tokenizer, text = ByteTokenizer(), TextSource(d.text_path, d.seq_len, d.text_heldout_fraction)
        task_weight = float(d.get("task_weight", 0.0))
        if task_weight > 0:
            rows = TaskRows(dict(cfg.task.train), tokenizer, d.seq_len, pack=d.pack)
            return TextTaskSource(text, rows, task_weight)
        return text
    tasks = TaskMixture(dict(cfg.task.train), cfg.data.seq_len, pack=cfg.data.pack)
    if cfg.data.text_path and cfg.data.text_weight > 0:
        text = TaskText(cfg.data.text_path, cfg.data.seq_len, cfg.data.text_heldout_fraction)
        return MixedSource(tasks, text, cfg.data.text_weight)
    return tasks
