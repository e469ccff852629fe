"""Train the seeds of one size together: one stacked model with a leading seed axis.

At the smallest sizes a training step is mostly fixed cost (Python, operator dispatch, small kernels), so S seeds
trained one after another pay it S times. Here every weight of `GPT` gets a leading axis of length S, linear layers
become batched matrix products (`torch.baddbmm`), attention folds the seed axis into the batch, and one optimizer
steps all seeds at once: the same arithmetic in S-times-larger operations.

Each seed keeps what makes it its own run, as `train()` does it:
- its initialisation: seed s is built by `torch.manual_seed(s); GPT(config)`, then stacked;
- its data order: seed s reads `source.batch(s, step * grad_accum + micro, batch_size)`;
- its loss: the mean cross-entropy over its own answer tokens (the seeds' losses are summed for the backward pass,
  and since no weight is shared across seeds, seed s's gradient is exactly the gradient of its own loss);
- its gradient clipping: the global norm of seed s's gradient alone, `torch.nn.utils.clip_grad_norm_`'s formula
  (scale by max_norm / (norm + 1e-6) when that is below 1);
- its optimizer state: AdamW is elementwise, so AdamW over a stacked tensor is AdamW over each seed's slice.

The results match separate `train()` runs up to floating-point rounding (batched products sum in another order), a
difference that the test `tests/test_stacked.py` bounds after a short run. `train_seeds(cfg, seeds)` writes each
seed's run folder as `train()` would (config, checkpoints on the same schedule, training log, status, inline probes),
so probing, aggregation and analysis cannot tell the two apart.
"""
from __future__ import annotations

import math
import os
import sys
import time
import traceback
from pathlib import Path

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from emergence.model import GPT, GPTConfig, apply_rotary, rotary_tables


def _key(name: str) -> str:
    return name.replace(".", "__")  # module attribute names cannot hold dots


class StackedGPT(nn.Module):
    """S copies of `GPT(config)` with their weights stacked on a leading axis; `forward` returns the S losses.

    Parameter `name` of seed s is `self.get(name)[s]`, where `name` is the parameter's name in `GPT` (a tied output
    head is the token embedding, as in `GPT`)."""

    def __init__(self, models: list[GPT]):
        super().__init__()
        if not models:
            raise ValueError("StackedGPT needs at least one model")
        c = models[0].config
        if any(m.config != c for m in models):
            raise ValueError("every stacked model must have the same configuration (one size per stack)")
        self.config, self.S = c, len(models)
        self.names = [n for n, _ in models[0].named_parameters()]  # deduplicated: a tied head is not listed
        self.orig_dim = {}
        for name in self.names:
            tensors = [dict(m.named_parameters())[name].detach() for m in models]
            self.register_parameter(_key(name), nn.Parameter(torch.stack(tensors).clone()))
            self.orig_dim[name] = tensors[0].dim()
        if c.pos == "rotary":
            cos, sin = rotary_tables(c.d_model // c.n_head, c.block_size)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)

    def get(self, name: str) -> torch.Tensor:
        return getattr(self, _key(name))

    def seed_state(self, s: int) -> dict[str, torch.Tensor]:
        """Seed s's weights as a `GPT.state_dict()` (tied head included), ready for `GPT.load_state_dict`."""
        out = {n: self.get(n)[s].detach().clone() for n in self.names}
        if self.config.tie_embeddings:
            out["head.weight"] = out["tok.weight"]
        return out

    def named_stacked(self):
        """(GPT name, stacked parameter) pairs."""
        return [(n, self.get(n)) for n in self.names]

    # -- the forward pass: GPT.forward with a seed axis -------------------------------------------------------------
    def _linear(self, x, prefix: str):
        """x (S, N, in) @ weight (S, out, in)^T + bias (S, out): `nn.Linear` per seed, as one batched product."""
        w = self.get(prefix + ".weight")
        if self.config.bias:
            return torch.baddbmm(self.get(prefix + ".bias").unsqueeze(1), x, w.transpose(1, 2))
        return torch.bmm(x, w.transpose(1, 2))

    def _layer_norm(self, x, prefix: str):
        """LayerNorm without its affine part (the kernel cannot take per-seed weights), then the per-seed affine."""
        d = self.config.d_model
        y = F.layer_norm(x, (d,), eps=1e-5)
        w = self.get(prefix + ".weight").unsqueeze(1)
        if self.config.bias:
            return torch.addcmul(self.get(prefix + ".bias").unsqueeze(1), y, w)
        return y * w

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """idx, targets: (S, B, T), targets -100 where ignored. Returns the S mean cross-entropies (S,)."""
        c = self.config
        S, B, T = idx.shape
        if S != self.S:
            raise ValueError(f"got batches for {S} seeds, the stack holds {self.S}")
        if T > c.block_size:
            raise ValueError(f"sequence of {T} tokens exceeds the model's context of {c.block_size}")
        d, H = c.d_model, c.n_head
        hd, N = d // H, B * T
        tok = self.get("tok.weight")  # (S, V, d)
        offset = (torch.arange(S, device=idx.device) * c.vocab_size).view(S, 1, 1)
        x = tok.reshape(S * c.vocab_size, d).index_select(0, (idx + offset).reshape(-1)).view(S, B, T, d)
        rope = None
        if c.pos == "learned":
            x = x + self.get("pos.weight")[:, None, :T]
        else:
            rope = (self.rope_cos[:T], self.rope_sin[:T])
        x = x.reshape(S, N, d)
        for i in range(c.n_layer):
            p = f"blocks.{i}."
            h = self._layer_norm(x, p + "ln1")
            q, k, v = self._linear(h, p + "attn.qkv").view(S * B, T, 3, H, hd).permute(2, 0, 3, 1, 4)
            if rope is not None:
                q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self._linear(y.transpose(1, 2).reshape(S, N, d), p + "attn.proj")
            h = self._layer_norm(x, p + "ln2")
            x = x + self._linear(F.gelu(self._linear(h, p + "fc")), p + "out")
        x = self._layer_norm(x, "ln_f")
        head = self.get("tok.weight" if c.tie_embeddings else "head.weight")
        logits = torch.bmm(x, head.transpose(1, 2))  # (S, N, V)
        flat_t = targets.reshape(S * N)
        loss = F.cross_entropy(logits.reshape(S * N, c.vocab_size), flat_t, ignore_index=-100, reduction="none")
        valid = (flat_t != -100).view(S, N)
        # the mean over each seed's own answer tokens: F.cross_entropy's "mean" with ignore_index, per seed
        return loss.view(S, N).sum(1) / valid.sum(1)


# ---------------------------------------------------------------------------------------------------------------------
# Optimizer and clipping, per seed.

def stacked_optimizer(stack: StackedGPT, lr: float, weight_decay: float, betas, device_type: str,
                      like: torch.optim.Optimizer | None = None) -> torch.optim.AdamW:
    """AdamW with `make_optimizer`'s grouping (decay on what is a matrix or embedding in `GPT`, judged by the
    un-stacked dimension) and its implementation flags (foreach / fused), read from `like` (an optimizer that
    `make_optimizer` built) so the two stay the same."""
    decay = [p for n, p in stack.named_stacked() if stack.orig_dim[n] >= 2]
    no_decay = [p for n, p in stack.named_stacked() if stack.orig_dim[n] < 2]
    flags = {}
    if like is not None:
        flags = {k: like.defaults[k] for k in ("foreach", "fused") if like.defaults.get(k)}
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, **flags)


@torch.no_grad()
def clip_per_seed(stack: StackedGPT, max_norm: float) -> torch.Tensor:
    """Clip each seed's gradient to global norm `max_norm` on its own; return the S norms before clipping.

    Each seed gets `torch.nn.utils.clip_grad_norm_`'s rule: total = || (||g_p||_2 for every parameter p) ||_2,
    then g *= min(1, max_norm / (total + 1e-6))."""
    grads = [p.grad for _, p in stack.named_stacked() if p.grad is not None]
    S = stack.S
    norms = torch.stack([torch.linalg.vector_norm(g.reshape(S, -1), 2, dim=1) for g in grads])  # (P, S)
    total = torch.linalg.vector_norm(norms, 2, dim=0)  # (S,)
    if math.isinf(max_norm):
        return total
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view(S, *([1] * (g.dim() - 1))))
    return total
