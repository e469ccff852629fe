"""The yardsticks: this machine's dense matmul peak (what every MFU figure divides by), and a plain reference GPT
with its AdamW, written the most direct way (nanoGPT's layout), that our model and trainer are timed against."""
from __future__ import annotations


import torch
import torch.nn as nn
import torch.nn.functional as F

from emergence.model import GPTConfig


# H100/H200 SXM dense bf16 tensor-core peak, FLOP/s (NVIDIA H100 datasheet, "BF16 Tensor Core" 1,979 TFLOPS is
# with 2:4 sparsity; dense is half of it). The H200 uses the same GH100 compute die, so the same peak.
H100_BF16_DENSE_PEAK = 989e12


# ---------------------------------------------------------------------------------------------------------------------
# The machine's limit.

# ---------------------------------------------------------------------------------------------------------------------
# A plain reference GPT, written the most direct way (nanoGPT's layout): the yardstick for our model and trainer.

class RefAttention(nn.Module):
    def __init__(self, d_model: int, n_head: int, bias: bool):
        super().__init__()
        self.c_attn = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.c_proj = nn.Linear(d_model, d_model, bias=bias)
        self.n_head = n_head

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class RefMLP(nn.Module):
    def __init__(self, d_model: int, d_mlp: int, bias: bool):
        super().__init__()
        self.c_fc = nn.Linear(d_model, d_mlp, bias=bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(d_mlp, d_model, bias=bias)

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class RefBlock(nn.Module):
    def __init__(self, c: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(c.d_model, bias=c.bias)
        self.attn = RefAttention(c.d_model, c.n_head, c.bias)
        self.ln_2 = nn.LayerNorm(c.d_model, bias=c.bias)
        self.mlp = RefMLP(c.d_model, c.d_mlp, c.bias)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class RefGPT(nn.Module):
    """Learned positions only (the CPU ladder's choice); same parameter count as `GPT` for such a config."""

    def __init__(self, c: GPTConfig):
        super().__init__()
        if c.pos != "learned":
            raise ValueError(f"the reference GPT has learned positions only, not pos={c.pos!r}")
        self.config = c
        self.wte = nn.Embedding(c.vocab_size, c.d_model)
        self.wpe = nn.Embedding(c.block_size, c.d_model)
        self.h = nn.ModuleList([RefBlock(c) for _ in range(c.n_layer)])
        self.ln_f = nn.LayerNorm(c.d_model, bias=c.bias)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        if c.tie_embeddings:
            self.wte.weight = self.lm_head.weight
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, idx, targets=None):
        B, T = idx.size()
        pos = torch.arange(0, T, dtype=torch.long, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-100)
        return logits, loss


class RefOptimizer:
    """AdamW as nanoGPT configures and steps it: decay on matrices, none on vectors; fused on CUDA, torch's default
    elsewhere; `clip_grad_norm_` over the parameters, gradients set to None after the step. (The methods are those of
    our `FlatAdamW`, so one step function times both.)"""

    def __init__(self, model: nn.Module, lr: float, weight_decay: float, betas, device_type: str):
        self.params = [p for p in model.parameters() if p.requires_grad]
        groups = [{"params": [p for p in self.params if p.dim() >= 2], "weight_decay": weight_decay},
                  {"params": [p for p in self.params if p.dim() < 2], "weight_decay": 0.0}]
        extra = {"fused": True} if device_type == "cuda" else {}
        self.opt = torch.optim.AdamW(groups, lr=lr, betas=betas, **extra)

    def set_lr(self, lr: float) -> None:
        for group in self.opt.param_groups:
            group["lr"] = lr

    def clip(self, max_norm: float) -> torch.Tensor:
        return torch.nn.utils.clip_grad_norm_(self.params, max_norm)

    def step(self) -> None:
        self.opt.step()

    def zero_grad(self) -> None:
        self.opt.zero_grad(set_to_none=True)
