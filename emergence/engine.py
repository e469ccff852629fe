"""The scoring engine every probe runs through: a causal LM behind one small protocol, teacher forcing and greedy
generation.

`emergence.probe` scores our models on the tasks' own token ids and `emergence.textprobe` scores any model on the
tasks as text; both hand token ids to these two functions:
- `teacher_forced`: one forward pass per batch gives, per example, the answer's summed log-probability, how many
  answer tokens are the argmax and (optionally) the Brier score;
- `greedy`: real greedy generation with the model's KV cache, each row to its first stop token.

A model arrives as an adapter (`CausalLM`): `GPTCausalLM` for ours (no attention mask, so batches hold rows of one
length), `HFCausalLM` for a transformers model (left padding with an attention mask). Nothing here imports
transformers: it arrives as an object. This module imports numpy and torch only.
"""
from __future__ import annotations

import inspect
from typing import Any, Protocol

import numpy as np
import torch

LOGIT_BUDGET = 1 << 27  # most logits (floats) one teacher-forced batch may hold: 512 MiB of float32


class CausalLM(Protocol):
    """What the engine needs from a model. Batches are left-padded (mask 0 on padding) when `left_padding` is True;
    otherwise the engine only batches rows of equal length, which need no padding."""

    left_padding: bool
    context: int | None  # most positions the model takes (None: unbounded)
    vocab_size: int
    device: torch.device

    def logits(self, ids: torch.Tensor, mask: torch.Tensor, keep: int) -> torch.Tensor:
        """Logits (B, keep, V) at the last `keep` positions of the batch."""

    def start(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """Read the prompts; return the last position's logits (B, V) and the KV cache."""

    def step(self, ids: torch.Tensor, mask: torch.Tensor, cache: Any) -> tuple[torch.Tensor, Any]:
        """Feed one token per row (B,), `mask` covering every position so far; logits (B, V) and the cache."""


class HFCausalLM:
    """A transformers causal LM: left padding with an attention mask, positions counted from each row's first real
    token, the model's own KV cache (`past_key_values`)."""

    left_padding = True

    def __init__(self, model):
        self.model = model.eval()
        self.device = next(model.parameters()).device
        cfg = model.config
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
        ctx = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
        self.context = int(ctx) if ctx else None
        params = inspect.signature(model.forward).parameters
        self._positions = "position_ids" in params
        self._keep = "logits_to_keep" in params
        self._cache = "cache" if "cache" in params else "past_key_values"  # the name changed in transformers 5

    def _call(self, ids, mask, positions, keep=None, cache=None, use_cache=False):
        kw: dict = {"input_ids": ids, "attention_mask": mask, "use_cache": use_cache}
        if self._positions:
            kw["position_ids"] = positions
        if keep is not None and self._keep:
            kw["logits_to_keep"] = keep
        if cache is not None:
            kw[self._cache] = cache
        out = self.model(**kw)
        return out.logits, (getattr(out, "cache", None) if self._cache == "cache" else out.past_key_values)

    @staticmethod
    def _positions_of(mask):
        return (mask.long().cumsum(-1) - 1).clamp(min=0)

    @torch.no_grad()
    def logits(self, ids, mask, keep):
        return self._call(ids, mask, self._positions_of(mask), keep=keep)[0][:, -keep:]

    @torch.no_grad()
    def start(self, ids, mask):
        logits, cache = self._call(ids, mask, self._positions_of(mask), keep=1, use_cache=True)
        return logits[:, -1], cache

    @torch.no_grad()
    def step(self, ids, mask, cache):
        positions = mask.long().sum(-1, keepdim=True) - 1
        logits, cache = self._call(ids[:, None], mask, positions, keep=1, cache=cache, use_cache=True)
        return logits[:, -1], cache


class GPTCausalLM:
    """Our `emergence.model.GPT`: no attention mask, so batches hold rows of one length; its KV cache for
    generation."""

    left_padding = False

    def __init__(self, model):
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.vocab_size = int(model.config.vocab_size)
        self.context = int(model.config.block_size)

    @torch.no_grad()
    def logits(self, ids, mask, keep):
        return self.model(ids)[0][:, -keep:]

    @torch.no_grad()
    def start(self, ids, mask):
        cache = [dict() for _ in self.model.blocks]
        logits, _ = self.model(ids, cache=cache)
        return logits[:, -1], (cache, ids.shape[1])

    @torch.no_grad()
    def step(self, ids, mask, state):
        cache, pos = state
        logits, _ = self.model(ids[:, None], start=pos, cache=cache)
        return logits[:, -1], (cache, pos + 1)


# ---------------------------------------------------------------------------------------------------------------------
# Batching, scoring and generation.

def _batches(lengths: np.ndarray, batch_size: int, equal_only: bool) -> list[np.ndarray]:
    """Row indices in batches of at most batch_size, rows of similar length together (of equal length when the
    model cannot take padding)."""
    order = np.argsort(lengths, kind="stable")
    out = []
    if equal_only:
        for L in np.unique(lengths):
            rows = order[lengths[order] == L]
            out += [rows[s:s + batch_size] for s in range(0, len(rows), batch_size)]
        return out
    return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]


def _left_pad(seqs: list[list[int]], device) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = np.array([len(q) for q in seqs])
    width = int(lengths.max())
    ids = np.zeros((len(seqs), width), dtype=np.int64)
    mask = np.arange(width)[None] >= (width - lengths)[:, None]
    if lengths.size:
        ids[mask] = np.concatenate([np.asarray(q, dtype=np.int64) for q in seqs])
    return torch.from_numpy(ids).to(device), torch.from_numpy(mask.astype(np.int64)).to(device)


def teacher_forced(lm: CausalLM, prompts: list[list[int]], answers: list[list[int]], batch_size: int,
                   brier: bool = False) -> dict[str, np.ndarray]:
    """Per example: summed log-probability of the answer tokens after the prompt, and how many of them are the
    argmax ("logprob", "correct"; float64 arrays); with `brier`, also the Brier score summed over the answer tokens
    ("brier": sum_v (p_v - 1[v = target])^2 at each token)."""
    n = len(prompts)
    logprob, correct, brier_sum = np.zeros(n), np.zeros(n), np.zeros(n)
    seqs = [p + a for p, a in zip(prompts, answers)]
    lengths = np.array([len(s) for s in seqs])
    for rows in _batches(lengths, batch_size, not lm.left_padding):
        keep = 1 + max(len(answers[r]) for r in rows)
        per = max(1, LOGIT_BUDGET // (keep * lm.vocab_size))  # keep the logits of one batch within budget
        for s in range(0, len(rows), per):
            sub = rows[s:s + per]
            ids, mask = _left_pad([seqs[r] for r in sub], lm.device)
            # rows end together (left padding), so column j of the kept logits predicts position -keep + 1 + j, and
            # each row's answer is its last len(answer) positions
            lp = lm.logits(ids, mask, keep).float().log_softmax(-1)[:, :-1]  # (B, keep - 1, V)
            target = ids[:, ids.shape[1] - keep + 1:]
            la = torch.tensor([len(answers[r]) for r in sub], device=lm.device)
            on = torch.arange(keep - 1, device=lm.device)[None] >= (keep - 1 - la)[:, None]
            tok = lp.gather(-1, target[..., None]).squeeze(-1)
            logprob[sub] = torch.where(on, tok, 0.0).sum(1).double().cpu().numpy()
            correct[sub] = ((lp.argmax(-1) == target) & on).sum(1).double().cpu().numpy()
            if brier:
                per_tok = lp.exp().square().sum(-1) - 2 * tok.exp() + 1
                brier_sum[sub] = torch.where(on, per_tok, 0.0).sum(1).double().cpu().numpy()
    out = {"logprob": logprob, "correct": correct}
    if brier:
        out["brier"] = brier_sum
    return out


def greedy(lm: CausalLM, prompts: list[list[int]], max_new: np.ndarray, stops: torch.Tensor,
           batch_size: int) -> list[list[int]]:
    """Greedy continuations with the KV cache: each row's new tokens, up to and including its first stop token, at
    most max_new[i] of them (and never past the model's context)."""
    out: list[list[int]] = [[] for _ in prompts]
    lengths = np.array([len(p) for p in prompts])
    stops = stops.to(lm.device)
    for rows in _batches(lengths, batch_size, not lm.left_padding):
        ids, mask = _left_pad([prompts[r] for r in rows], lm.device)
        # each row's own limit: its budget, and never past the context from its own (unpadded) length
        own = np.asarray([max_new[r] if lm.context is None else min(max_new[r], lm.context - lengths[r])
                          for r in rows])
        budget = int(own.max())
        if lm.context is not None:  # the padded batch itself must fit as well
            budget = min(budget, lm.context - ids.shape[1])
        limit = torch.as_tensor(own, device=lm.device)
        if budget <= 0:
            continue
        logits, cache = lm.start(ids, mask)
        done = torch.zeros(len(rows), dtype=torch.bool, device=lm.device)
        new = []
        for t in range(budget):
            nxt = logits.float().argmax(-1)
            new.append(torch.where(done, torch.full_like(nxt, -1), nxt))
            done |= stops[nxt] | (t + 1 >= limit)
            if bool(done.all()) or t == budget - 1:
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            logits, cache = lm.step(nxt, mask, cache)
        gen = torch.stack(new, dim=1).cpu().numpy()
        for b, r in enumerate(rows):
            out[r] = [int(i) for i in gen[b] if i >= 0]
    return out
