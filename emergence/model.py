"""A decoder-only GPT family in one file.

Pre-LayerNorm blocks (GPT-2 / Pythia), causal self-attention through `F.scaled_dot_product_attention` (flash or
memory-efficient kernels where the device has them), a GELU MLP, learned or rotary positions, tied or untied
embeddings. The GELU is the exact one, x Phi(x) (Hendrycks and Gimpel 2016), as in Pythia (GPT-NeoX's "gelu") and
nanoGPT: GPT-2's tanh approximation is 2-3x slower on CPU, 7-11% of a training step at d_model 48 to 256.
A size is a `GPTConfig`: shapes only. Parameter counts and FLOPs per token are computed here, once, and feed the
MFU log, the run table and every fit's x-axis.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GPTConfig:
    n_layer: int
    d_model: int
    n_head: int
    vocab_size: int
    block_size: int
    d_mlp: int = 0  # 0: 4 * d_model
    pos: str = "learned"  # learned | rotary
    tie_embeddings: bool = True
    bias: bool = True

    def __post_init__(self):
        for name in ("n_layer", "d_model", "n_head", "vocab_size", "block_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"model.{name} must be positive, got {getattr(self, name)}")
        if self.d_model % self.n_head:
            raise ValueError(f"model.d_model={self.d_model} is not divisible by model.n_head={self.n_head}; "
                             "choose n_head so that d_model / n_head is a whole head size")
        if self.pos not in ("learned", "rotary"):
            raise ValueError(f"model.pos must be 'learned' or 'rotary', got {self.pos!r}")
        if self.pos == "rotary" and (self.d_model // self.n_head) % 2:
            raise ValueError(f"rotary positions need an even head size; d_model/n_head = {self.d_model // self.n_head}")
        if self.d_mlp == 0:
            self.d_mlp = 4 * self.d_model

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------------------------------------
# Counting: exact parameters and training FLOPs per token.

def param_counts(c: GPTConfig) -> dict[str, int]:
    """Exact parameter counts of `GPT(c)`, by layer type (tested against the module's own count).

    Non-embedding parameters follow Kaplan et al. 2020 (section 2.1): all parameters except the token and position
    embeddings (and an untied output matrix, which is a vocabulary embedding too).
    """
    d, L, V, T, m = c.d_model, c.n_layer, c.vocab_size, c.block_size, c.d_mlp
    b = 1 if c.bias else 0
    ln = 2 * d  # LayerNorm weight and bias
    attn = d * 3 * d + b * 3 * d + d * d + b * d
    mlp = d * m + b * m + m * d + b * d
    block = 2 * ln + attn + mlp
    tok = V * d
    pos = T * d if c.pos == "learned" else 0
    head = 0 if c.tie_embeddings else V * d
    nonembed = L * block + ln  # final LayerNorm
    return {"total": nonembed + tok + pos + head, "nonembed": nonembed, "embedding": tok + pos + head}


def n_params(c: GPTConfig) -> int:
    return param_counts(c)["total"]


def n_params_nonembed(c: GPTConfig) -> int:
    return param_counts(c)["nonembed"]


def flops_per_token(c: GPTConfig, seq_len: int | None = None) -> int:
    """Training FLOPs per token: 6 N + 12 L d T.

    Kaplan et al. 2020 (Table 1): a forward pass costs 2 N + 2 n_layer n_ctx d_attn per token and the backward pass
    twice that, so training costs 6 N + 6 n_layer n_ctx d_attn per token counting only the QK^T product; PaLM
    (Chowdhery et al. 2022, appendix B) counts both attention matmuls (QK^T and AV), giving 6 N + 12 L H Q T with
    H Q = d_model. We use the PaLM form. N is the number of parameters that take part in a matrix product:
    the non-embedding parameters plus the output projection d_model x vocab (it is a real matmul whether or not it is
    tied to the input embedding; the input lookup and position embeddings cost no FLOPs). T is the context length.
    """
    T = c.block_size if seq_len is None else seq_len
    n_matmul = n_params_nonembed(c) + c.d_model * c.vocab_size
    return 6 * n_matmul + 12 * c.n_layer * c.d_model * T


# ---------------------------------------------------------------------------------------------------------------------
# The model.

def rotary_tables(head_dim: int, length: int, device=None, base: float = 10000.0):
    """cos/sin tables for rotary position embeddings (Su et al. 2021, RoFormer), shape (length, head_dim/2)."""
    inv = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    t = torch.arange(length, device=device, dtype=torch.float32)
    freqs = torch.outer(t, inv)
    return freqs.cos(), freqs.sin()


def apply_rotary(x, cos, sin):
    """Rotate pairs (x[..., :h/2], x[..., h/2:]) of q or k, shape (B, H, T, h), by the position's angle."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class SelfAttention(nn.Module):
    def __init__(self, c: GPTConfig):
        super().__init__()
        self.n_head, self.head_dim = c.n_head, c.d_model // c.n_head
        self.qkv = nn.Linear(c.d_model, 3 * c.d_model, bias=c.bias)
        self.proj = nn.Linear(c.d_model, c.d_model, bias=c.bias)
        self.rotary = c.pos == "rotary"

    def forward(self, x, rope=None, cache=None, need_weights: bool = False):
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)
        if self.rotary:
            cos, sin = rope
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:  # generation: append this step's keys and values to the cache (a dict per layer)
            if "k" in cache:
                k, v = torch.cat((cache["k"], k), dim=2), torch.cat((cache["v"], v), dim=2)
            cache["k"], cache["v"] = k, v
        S = k.shape[2]
        weights = None
        if need_weights:  # explicit attention, for the mechanistic probe only
            att = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
            mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=S - T)
            weights = att.masked_fill(~mask, float("-inf")).softmax(-1)
            y = weights @ v
        elif S == T:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # queries are the last T of S positions: position i sees keys up to S - T + i
            mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=S - T)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.proj(y), weights


class Block(nn.Module):
    def __init__(self, c: GPTConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(c.d_model, bias=c.bias)
        self.attn = SelfAttention(c)
        self.ln2 = nn.LayerNorm(c.d_model, bias=c.bias)
        self.fc = nn.Linear(c.d_model, c.d_mlp, bias=c.bias)
        self.out = nn.Linear(c.d_mlp, c.d_model, bias=c.bias)

    def forward(self, x, rope=None, cache=None, need_weights=False):
        a, w = self.attn(self.ln1(x), rope, cache, need_weights)
        x = x + a
        x = x + self.out(F.gelu(self.fc(self.ln2(x))))
        return x, w


class GPT(nn.Module):
    def __init__(self, c: GPTConfig):
        super().__init__()
        self.config = c
        self.tok = nn.Embedding(c.vocab_size, c.d_model)
        self.pos = nn.Embedding(c.block_size, c.d_model) if c.pos == "learned" else None
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layer))
        self.ln_f = nn.LayerNorm(c.d_model, bias=c.bias)
        self.head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        if c.tie_embeddings:
            self.head.weight = self.tok.weight
        if c.pos == "rotary":
            cos, sin = rotary_tables(c.d_model // c.n_head, c.block_size)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init)
        # GPT-2's scaled init of residual projections: std 0.02 / sqrt(2 L), so the residual stream does not grow with depth
        for name, p in self.named_parameters():
            if name.endswith("attn.proj.weight") or name.endswith("out.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * c.n_layer))

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets=None, *, start: int = 0, cache=None, need_weights: bool = False):
        """Logits for `idx` (B, T); with `targets` (-100 = ignore) also the mean cross-entropy.

        `start` is the position of idx[:, 0] (generation with a KV cache, `cache` a list of per-layer dicts).
        With `need_weights`, also returns every layer's attention weights (B, H, T, S).
        """
        B, T = idx.shape
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} tokens exceeds the model's context of {self.config.block_size}")
        # index_select rather than the embedding op: the same rows, and its backward (an index_add) is 2-3x
        # faster on CPU than the embedding's dense backward; positions are a slice of the table, broadcast over the
        # batch, so their gradient is one sum over the batch instead of a scatter of B x T rows
        x = self.tok.weight.index_select(0, idx.reshape(-1)).view(B, T, -1)
        rope = None
        if self.pos is not None:
            x = x + self.pos.weight[start:start + T]
        else:
            rope = (self.rope_cos[start:start + T], self.rope_sin[start:start + T])
        weights = []
        for i, block in enumerate(self.blocks):
            x, w = block(x, rope, None if cache is None else cache[i], need_weights)
            weights.append(w)
        logits = self.head(self.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=-100)
        if need_weights:
            return logits, loss, weights
        return logits, loss

    @torch.no_grad()
    def generate(self, idx, max_new_tokens: int, *, temperature: float = 0.0, stop_token: int | None = None,
                 generator: torch.Generator | None = None):
        """Continue `idx` (B, T) with a KV cache: greedy when temperature == 0, else sampled.

        Rows that produced `stop_token` keep emitting it, so the output is rectangular (B, T + new).
        """
        max_new_tokens = min(max_new_tokens, self.config.block_size - idx.shape[1])
        cache = [dict() for _ in self.blocks]
        logits, _ = self(idx, cache=cache)
        out = [idx]
        done = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
        pos = idx.shape[1]
        for i in range(max_new_tokens):
            last = logits[:, -1, :].float()
            if temperature > 0:
                nxt = torch.multinomial((last / temperature).softmax(-1), 1, generator=generator).squeeze(1)
            else:
                nxt = last.argmax(-1)
            if stop_token is not None:
                nxt = torch.where(done, torch.full_like(nxt, stop_token), nxt)
                done |= nxt == stop_token
            out.append(nxt[:, None])
            if (stop_token is not None and bool(done.all())) or i == max_new_tokens - 1:
                break
            logits, _ = self(nxt[:, None], start=pos, cache=cache)
            pos += 1
        return torch.cat(out, dim=1)
