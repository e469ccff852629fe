"""Probing a causal language model through its own tokenizer: the task suite as natural text.

`emergence.probe` scores our character-level models on the tasks' own token ids. A model with another vocabulary (a
pretrained Hugging Face model, or one of our runs trained on text with a BPE tokenizer) reads the tasks as text
instead: each held-out example is rendered in its natural form (`Task.text`: "12+7=" -> "19"), k solved training
examples before it by default (the k-shot template of `emergence.tasks.kshot`, each shot ended by a newline), and the
model answers in its own tokens. The examples are exactly those of `emergence.metrics.probe_set` (same `probe.n`,
same `probe.seed`, same ids), so a k-shot score joins the zero-shot one and our char-level one example by example.

Per task, on every example:
- exact match: greedy generation (batched, left padding, the model's KV cache) up to a stop: a token whose text holds
  a newline, or the end-of-text token; the text before the first newline, stripped, must equal the answer;
- char accuracy and edit distance of that generated answer against the answer, character by character, so that
  models with different tokenizers compare on one scale;
- answer log-probability by teacher forcing, its NLL per answer token (`answer_nll`) and per answer character
  (`answer_nll_char`, tokenizer-independent), and the teacher-forced argmax accuracy per answer token
  (`token_accuracy`). The answer's ids are those that follow the prompt's in the tokenized prompt + answer
  (`TextTokenizer.encode_answers`), so a tokenizer that marks word starts (SentencePiece's Metaspace) does not make
  the answer a new word; where a merge crosses the boundary ("=" + "19" -> "=19") the prompt's ids are not a
  prefix, and the answer is tokenized on its own: a split the tokenizer would not itself produce, a small bias for
  the numeric answers of this suite. The answer is scored without a stop.

Every metric comes with its standard error (binomial for exact match, the standard error of the mean of per-example
values for the rest) and n, the number of examples.

A model is given as an adapter of `emergence.engine`, the engine every probe runs through (`HFCausalLM` for
transformers models, `GPTCausalLM` for ours), and a tokenizer (a transformers `PreTrainedTokenizer(Fast)` or a
`tokenizers.Tokenizer`, wrapped by `TextTokenizer`). Nothing here imports transformers or tokenizers: both are
optional, and arrive here as objects.
"""
from __future__ import annotations

import math
import sys

import numpy as np
import torch

from emergence.engine import CausalLM, greedy, teacher_forced
from emergence.metrics import levenshtein, measurement, probe_set, proportion_stderr, sem
from emergence.tasks import get_task

DEFAULT_SHOTS = 3  # solved training examples before each query when a probe config does not say (probe.shots)
STOP = "\n"  # ends an answer: the k-shot separator
METRICS = ("exact_match", "token_accuracy", "answer_nll", "answer_nll_char", "char_accuracy", "edit_distance")
EOS_NAMES = ("<eos>", "</s>", "<|endoftext|>", "<|eos|>", "[EOS]")  # end-of-text tokens of a bare tokenizers file


# ---------------------------------------------------------------------------------------------------------------------
# Tokenizers.

class TextTokenizer:
    """One interface over a transformers tokenizer and a bare `tokenizers.Tokenizer` (a run's tokenizer.json).

    Prompts are encoded with the tokenizer's own special tokens (a BOS where its template adds one), answers without.
    A bare tokenizer that declares "<bos>" (data.tokenizer=bpe, whose runs train on "<bos> prompt answer <eos>")
    starts every prompt with it.
    """

    def __init__(self, tok):
        self.tok = tok
        self.bare = hasattr(tok, "encode_batch") and hasattr(tok, "get_vocab_size")  # a tokenizers.Tokenizer
        self.bos_id = None
        if self.bare:
            self.size = int(tok.get_vocab_size(with_added_tokens=True))
            ids = [tok.token_to_id(name) for name in EOS_NAMES]
            self.eos_id = next((int(i) for i in ids if i is not None), None)
            self.bos_id = tok.token_to_id("<bos>")
        elif callable(tok) and hasattr(tok, "batch_decode"):
            self.size = len(tok)
            self.eos_id = tok.eos_token_id
        else:
            raise ValueError(f"expected a transformers tokenizer or a tokenizers.Tokenizer, got {type(tok).__name__}")
        self._stops: dict[int, torch.Tensor] = {}

    def encode(self, texts: list[str], special: bool) -> list[list[int]]:
        if not texts:
            return []
        if self.bare:
            rows = [list(e.ids) for e in self.tok.encode_batch(list(texts), add_special_tokens=special)]
            if special and self.bos_id is not None:
                rows = [r if r[:1] == [self.bos_id] else [self.bos_id, *r] for r in rows]
            return rows
        rows = [list(ids) for ids in self.tok(list(texts), add_special_tokens=special)["input_ids"]]
        if special and self.eos_id is not None:  # a template that ends every text with eos (add_eos_token=True)
            rows = [r[:-1] if len(r) > 1 and r[-1] == self.eos_id else r for r in rows]
        return rows

    def encode_answers(self, prompts: list[str], answers: list[str]) -> list[list[int]]:
        """Each answer's ids as they follow its prompt: the tail of the tokenized prompt + answer where the prompt's
        own tokens are a prefix of it (so a tokenizer that marks a word start, SentencePiece's Metaspace, does not
        mark the answer as a new word), else the answer tokenized on its own."""
        whole = self.encode([p + a for p, a in zip(prompts, answers)], special=False)
        head = self.encode(list(prompts), special=False)
        alone = self.encode(list(answers), special=False)
        return [w[len(h):] if w[:len(h)] == h and len(w) > len(h) else a for w, h, a in zip(whole, head, alone)]

    def decode_many(self, rows: list[list[int]]) -> list[str]:
        if not rows:
            return []
        if self.bare:
            return list(self.tok.decode_batch(rows, skip_special_tokens=True))
        return list(self.tok.batch_decode(rows, skip_special_tokens=True, clean_up_tokenization_spaces=False))

    def special_ids(self) -> set[int]:
        if self.bare:
            return {int(i) for i, t in self.tok.get_added_tokens_decoder().items() if t.special}
        return {int(i) for i in self.tok.all_special_ids}

    def stops(self, vocab_size: int) -> torch.Tensor:
        """(vocab_size,) bool: the token ids that end a generated answer (their text holds a newline, or end of
        text). Ids the tokenizer does not know (a model's vocabulary padded to a round size) never stop."""
        if vocab_size not in self._stops:
            known = min(self.size, vocab_size)
            texts = self.decode_many([[i] for i in range(known)])
            stop = torch.zeros(vocab_size, dtype=torch.bool)
            stop[:known] = torch.tensor([STOP in t for t in texts], dtype=torch.bool)
            if self.eos_id is not None and self.eos_id < vocab_size:
                stop[self.eos_id] = True
            self._stops[vocab_size] = stop
        return self._stops[vocab_size]


def answer_text(tok: TextTokenizer, ids: list[int]) -> str:
    """The generated answer: the text before the end-of-text token and before the first newline, stripped."""
    if tok.eos_id is not None and tok.eos_id in ids:
        ids = ids[:ids.index(tok.eos_id)]
    ids = [i for i in ids if i < tok.size]  # a vocabulary padded past the tokenizer's: those ids have no text
    return tok.decode_many([ids])[0].split(STOP, 1)[0].strip()


def char_scores(outputs: list[str], targets: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per example: the share of the target's characters matched position by position, and the Levenshtein
    distance normalised by the longer string (0 = identical, 1 = nothing in common)."""
    n = len(targets)
    acc = np.array([sum(a == b for a, b in zip(o, t)) / max(len(t), 1) for o, t in zip(outputs, targets)])
    la = np.array([len(o) for o in outputs], dtype=np.int64)
    lb = np.array([len(t) for t in targets], dtype=np.int64)
    width = max(1, int(la.max(initial=0)), int(lb.max(initial=0)))
    pa, pb = np.full((n, width), -1, np.int64), np.full((n, width), -2, np.int64)
    for i, (o, t) in enumerate(zip(outputs, targets)):
        pa[i, :len(o)] = [ord(c) for c in o]
        pb[i, :len(t)] = [ord(c) for c in t]
    dist = levenshtein(pa, la, pb, lb) / np.maximum(np.maximum(la, lb), 1)
    return acc, dist.astype(np.float64)


def shot_labels(tasks, shots: int) -> dict[str, str]:
    """Each row's task label (`get_task(task, shots).name`: add3_3shot for add3 with 3) -> the registered task."""
    return {get_task(t, shots).name: t for t in tasks}


def probe_shots(probe_cfg) -> int:
    """k from the probe config (`probe.shots`), DEFAULT_SHOTS where the config has no such key."""
    try:
        k = probe_cfg.get("shots", None)
    except AttributeError:
        k = getattr(probe_cfg, "shots", None)
    return DEFAULT_SHOTS if k is None else k


def _not_measured(name: str) -> list[dict]:
    return [{"task": name, "metric": m, **measurement(None, None, 0)} for m in METRICS]


def score_text_task(lm: CausalLM, tok: TextTokenizer, name: str, probe_cfg, shots: int = 0
                    ) -> tuple[list[dict], dict, dict]:
    """Every metric of one registered task, with `shots` solved examples before each query (`get_task`), on its
    held-out probe set: tidy rows {task, metric, value, stderr, n, status}, per-example instance columns
    (example_id, answer_logprob, exact) and a few sample answers (`probe_cfg.samples`), as
    `emergence.probe.score_task` returns them. Rows are labelled with the task's name (add3_3shot for add3 with 3)."""
    task = get_task(name, shots)
    prompts, answers, ids = probe_set(name, int(probe_cfg.n), int(probe_cfg.seed), int(shots))
    name = task.name
    n = len(prompts)
    if n == 0:
        return _not_measured(name), {}, {}
    p_text, a_text = task.text(prompts, answers)
    p_ids = tok.encode(p_text, special=True)
    a_ids = tok.encode_answers(p_text, a_text)
    longest = max(len(p) + len(a) for p, a in zip(p_ids, a_ids))
    if lm.context is not None and longest > lm.context:
        print(f"warning: task {name}: an example takes {longest} tokens, more than the model's context of "
              f"{lm.context}; its rows are not_measured (use fewer shots, probe.shots=0)", file=sys.stderr)
        return _not_measured(name), {}, {}
    top = max(max(p + a, default=0) for p, a in zip(p_ids, a_ids))
    if top >= lm.vocab_size:
        raise ValueError(f"the tokenizer gives id {top}, outside the model's vocabulary of {lm.vocab_size}; the "
                         "tokenizer is not this model's")
    bs = int(probe_cfg.batch_size)
    tf = teacher_forced(lm, p_ids, a_ids, bs)
    n_tok = np.array([max(len(a), 1) for a in a_ids], dtype=np.float64)
    n_chr = np.array([max(len(a), 1) for a in a_text], dtype=np.float64)
    max_new = np.array([len(a) + 1 for a in a_text])  # every token carries a character: answer + a stop fit
    gen = greedy(lm, p_ids, max_new, tok.stops(lm.vocab_size), bs)
    outputs = [answer_text(tok, g) for g in gen]
    targets = [a.strip() for a in a_text]
    exact = np.array([o == t for o, t in zip(outputs, targets)])
    char_acc, dist = char_scores(outputs, targets)
    nll, nll_char, tok_acc = -tf["logprob"] / n_tok, -tf["logprob"] / n_chr, tf["correct"] / n_tok
    em = float(exact.mean())
    values = {
        "exact_match": (em, proportion_stderr(em, n)),
        "token_accuracy": (float(tok_acc.mean()), sem(tok_acc)),
        "answer_nll": (float(nll.mean()), sem(nll)),
        "answer_nll_char": (float(nll_char.mean()), sem(nll_char)),
        "char_accuracy": (float(char_acc.mean()), sem(char_acc)),
        "edit_distance": (float(dist.mean()), sem(dist)),
    }
    rows = [{"task": name, "metric": m, **measurement(v, s, n)} for m, (v, s) in values.items()]
    inst = {"task": [name] * n, "example_id": np.asarray(ids, dtype=np.int64),
            "answer_logprob": tf["logprob"].copy(), "exact": exact.astype(bool)}
    k = min(int(probe_cfg.samples), n)
    samp = {"task": [name] * k, "example_id": np.asarray(ids[:k], dtype=np.int64), "prompt": p_text[:k],
            "target": targets[:k], "output": outputs[:k], "correct": [bool(e) for e in exact[:k]]}
    return rows, inst, samp


def probe_model(lm: CausalLM, tok: TextTokenizer, tasks: list[str], probe_cfg, base: dict, out, shots: int = 0
                ) -> list[dict]:
    """Score registered `tasks` with `shots` solved examples before each query and add the rows, labelled with
    `base` (run_id, step, sizes, ...), to `out` (an `emergence.probe.Probed`); return the new rows."""
    first = len(out.rows)
    for name in tasks:
        rows, inst, samp = score_text_task(lm, tok, name, probe_cfg, shots)
        out.rows += [{**base, **r} for r in rows]
        if inst:
            m = len(inst["example_id"])
            out.instances.append({**inst, "run_id": [base["run_id"]] * m, "step": np.full(m, base["step"])})
        if samp:
            m = len(samp["example_id"])
            out.samples.append({**samp, "run_id": [base["run_id"]] * m, "step": np.full(m, base["step"]),
                                "model": [base["model"]] * m, "n_params": np.full(m, base["n_params"]),
                                "seed": np.full(m, base["seed"])})
    return out.rows[first:]


def load_tokenizer_file(path) -> TextTokenizer:
    """A run's tokenizer.json (the `tokenizers` library's format) as a TextTokenizer."""
    try:
        from tokenizers import Tokenizer  # optional dependency (the hf extra)
    except ImportError:
        raise ValueError(f"{path} needs the tokenizers package to be read: pip install 'emergence[hf]'") from None
    try:
        tok = Tokenizer.from_file(str(path))
        tok.encode_special_tokens = True  # as in training: a literal "<eos>" in text is text (emergence.data)
        return TextTokenizer(tok)
    except Exception as e:  # the library's own error types: a file that is not a tokenizer
        raise ValueError(f"{path} is not a readable tokenizers file ({type(e).__name__}: {e})") from None


def nonspecial_ids(tok: TextTokenizer, vocab_size: int) -> np.ndarray:
    """Ids of the ordinary tokens (what the mechanistic probe draws its random sequences from)."""
    special = tok.special_ids()
    ids = np.array([i for i in range(min(tok.size, vocab_size)) if i not in special], dtype=np.int64)
    return ids if len(ids) else np.arange(vocab_size, dtype=np.int64)


def describe(rows: list[dict]) -> str:
    """A one-line summary of exact match per task, for the command line."""
    em = [f"{r['task']} {r['value']:.2f}" for r in rows if r["metric"] == "exact_match" and math.isfinite(r["value"])]
    return "exact match: " + (", ".join(em) if em else "none measured")
