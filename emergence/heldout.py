"""The held-out LM loss: a run's loss on its fixed held-out batches, with a standard error over sequences.

Training measures it at every checkpoint (`emergence.train`, and per seed in `emergence.stacked`), and the probe
engine measures it again for a checkpoint that does not carry its standard error (`emergence.probe.lm_loss`).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def loss_estimate(sums, counts) -> tuple[float, float, int]:
    """The held-out loss from per-sequence loss sums and scored-token counts: (mean loss per scored token, its
    standard error, n = the sequences with at least one scored token).

    Tokens of one sequence share its context, so their losses are correlated and a standard error over tokens would
    be too small; sequences are drawn independently, so they are the unit. The loss is the ratio R = sum(s) / sum(c)
    of per-sequence sums s and counts c; its standard error (delta method, sequences as clusters) is
    sqrt(n / (n - 1) * sum((s_i - R c_i)^2)) / sum(c), which is exactly sd(per-sequence mean losses) / sqrt(n) when
    every sequence scores the same number of tokens (always so for text). NaN when n < 2 (no spread to measure).
    """
    s = np.asarray(sums, dtype=np.float64).ravel()
    c = np.asarray(counts, dtype=np.float64).ravel()
    s, c = s[c > 0], c[c > 0]
    n = len(s)
    if n == 0:
        return float("nan"), float("nan"), 0
    total = float(c.sum())
    value = float(s.sum()) / total
    if n < 2 or not math.isfinite(value):
        return value, float("nan"), n
    return value, math.sqrt(n / (n - 1) * float(np.sum((s - value * c) ** 2))) / total, n


def sequence_losses(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence sums of the token losses and counts of scored tokens (targets -100 are not scored), as
    `GPT.forward`'s mean cross-entropy computes them."""
    loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100,
                           reduction="none").view(targets.shape)
    return loss.sum(1), (targets != -100).sum(1)


@torch.no_grad()
def heldout_loss(model, source, cfg, device, amp) -> tuple[float, float, int]:
    """The loss on `eval_batches` fixed held-out batches (the same batches at every evaluation): mean loss per
    scored token, its standard error over sequences and their number (`loss_estimate`)."""
    was_training = model.training
    model.eval()
    sums, counts = [], []
    for i in range(cfg.train.eval_batches):
        x, y = source.batch(cfg.seed + 10_000, i, cfg.train.batch_size, split="heldout")
        y = y.to(device)
        with amp:
            logits, _ = model(x.to(device))
        s, c = sequence_losses(logits, y)
        sums.append(s.double().cpu())
        counts.append(c.cpu())
    model.train(was_training)
    return loss_estimate(torch.cat(sums).numpy(), torch.cat(counts).numpy())
