"""AdamW over flat parameter buffers: the optimizer of `train()` and of stacked seeds.

At the smallest sizes a training step is mostly fixed cost per operation, and the optimizer's part of it grows with
the number of parameter tensors (a 1-layer GPT has 16): `torch.optim.AdamW` walks them in Python, gradient clipping
takes one norm per tensor, zeroing frees and reallocates every gradient. Here each weight-decay group's parameters
and gradients are views into one contiguous buffer, so a step is one fused AdamW call per group, clipping is one norm
per group, and zeroing is one fill: 8 to 10% more tokens/s at the smallest sizes (`emergence bench`). The
arithmetic is AdamW's, elementwise, so the weights follow the same trajectory (up to the order in which the clipping
norm sums its squares).

With a leading seed axis (stacked seeds, `emergence.stacked`), each buffer is (S, n): seed s's parameters are row s,
so each seed's gradient norm is one reduction over its row and each seed is clipped on its own.

`state_dict()` is `torch.optim.AdamW`'s per-parameter format over the model's parameters in order, and
`load_state_dict` takes that format, so checkpoints do not depend on how the optimizer stores its state.
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn as nn


def _torch_at_least(major: int, minor: int) -> bool:
    parts = torch.__version__.split("+")[0].split(".")
    return (int(parts[0]), int(parts[1])) >= (major, minor)


def implementation(device_type: str) -> dict:
    """AdamW's kernel flag: fused on CUDA, and on CPU where torch has it (2.4 and later); foreach otherwise."""
    fused = device_type == "cuda" or (device_type == "cpu" and _torch_at_least(2, 4))
    return {"fused": True} if fused else {"foreach": True}


class FlatAdamW:
    """AdamW with decoupled weight decay on `groups` = [(parameters, weight_decay), ...], each group's parameters
    moved into one buffer. `seeds`: the length of a leading seed axis that every parameter has (None: no axis).

    The parameters stay the module's own `nn.Parameter` objects (their `.data` and `.grad` become views), so the
    module, its `state_dict` and autograd are unchanged; gradients are accumulated in place into the views. Call
    `zero_grad()` of this object, never `module.zero_grad(set_to_none=True)`, which would detach a gradient from
    its buffer."""

    def __init__(self, groups: list[tuple[list[nn.Parameter], float]], lr: float, betas, device_type: str,
                 seeds: int | None = None, eps: float = 1e-8):
        self.seeds = seeds
        self.params: list[nn.Parameter] = []
        self.flats: list[nn.Parameter] = []
        self.sizes: list[list[int]] = []
        opt_groups = []
        lead = () if seeds is None else (seeds,)
        for params, weight_decay in groups:
            params = [p for p in params if p.requires_grad]
            if not params:
                continue
            rows = [p.detach().reshape(*lead, -1) for p in params]
            flat = torch.cat(rows, dim=-1).contiguous()
            grad = torch.zeros_like(flat)
            offset, sizes = 0, []
            for p, r in zip(params, rows):
                n = r.shape[-1]
                p.data = flat[..., offset:offset + n].view(p.shape)
                p.grad = grad[..., offset:offset + n].view(p.shape)
                offset += n
                sizes.append(n)
            buffer = nn.Parameter(flat)
            buffer.grad = grad
            self.params += params
            self.flats.append(buffer)
            self.sizes.append(sizes)
            opt_groups.append({"params": [buffer], "weight_decay": weight_decay})
        self.opt = torch.optim.AdamW(opt_groups, lr=lr, betas=betas, eps=eps, **implementation(device_type))

    @property
    def param_groups(self):
        return self.opt.param_groups

    @property
    def defaults(self):
        return self.opt.defaults

    def set_lr(self, lr: float) -> None:
        for group in self.opt.param_groups:
            group["lr"] = lr

    @torch.no_grad()
    def clip(self, max_norm: float) -> torch.Tensor:
        """`torch.nn.utils.clip_grad_norm_`'s rule on the whole gradient (each seed's on its own with a seed axis):
        total = ||g||_2, then g *= min(1, max_norm / (total + 1e-6)). Returns the norm before clipping (one per
        seed with a seed axis); no host sync."""
        dim = -1 if self.seeds is not None else None
        norms = [torch.linalg.vector_norm(f.grad, 2, dim=dim) for f in self.flats]
        total = norms[0] if len(norms) == 1 else torch.linalg.vector_norm(torch.stack(norms), 2, dim=0)
        if math.isinf(max_norm):
            return total
        coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
        if self.seeds is not None:
            coef = coef.unsqueeze(-1)
        for f in self.flats:
            f.grad.mul_(coef)
        return total

    def step(self) -> None:
        self.opt.step()

    def zero_grad(self) -> None:
        for f in self.flats:
            f.grad.zero_()

    # -- checkpoints: AdamW's per-parameter format -------------------------------------------------------------------
    def _split(self, tensor: torch.Tensor, g: int) -> list[torch.Tensor]:
        """Group g's buffer-shaped `tensor` cut back into its parameters' shapes."""
        out, offset = [], 0
        for p, n in zip(self._group_params(g), self.sizes[g]):
            out.append(tensor[..., offset:offset + n].view(p.shape))
            offset += n
        return out

    def _group_params(self, g: int) -> list[nn.Parameter]:
        start = sum(len(s) for s in self.sizes[:g])
        return self.params[start:start + len(self.sizes[g])]

    def state_dict(self, seed: int | None = None) -> dict:
        """The state as `torch.optim.AdamW` over the separate parameters would give it (parameters numbered in group
        order). With a seed axis, `seed` picks one seed's state (copied), in the shape of one un-stacked run's."""
        inner = self.opt.state_dict()
        state, groups, index = {}, [], 0
        for g, group in enumerate(inner["param_groups"]):
            st = inner["state"].get(group["params"][0], {})
            parts = {k: self._split(v, g) for k, v in st.items()
                     if torch.is_tensor(v) and v.dim() > 0}
            ids = []
            for j, p in enumerate(self._group_params(g)):
                if st:
                    entry = {k: v.clone() if torch.is_tensor(v) else v for k, v in st.items() if k not in parts}
                    for k, pieces in parts.items():
                        piece = pieces[j]
                        entry[k] = piece[seed].clone() if seed is not None else piece
                    state[index] = entry
                ids.append(index)
                index += 1
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": ids})
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, sd: dict) -> None:
        """Load AdamW's per-parameter format (what `state_dict()` writes, and what a `torch.optim.AdamW` over the
        same parameters in the same order writes)."""
        groups = sd["param_groups"]
        if [len(g["params"]) for g in groups] != [len(s) for s in self.sizes]:
            raise ValueError(f"the saved optimizer state has parameter groups of sizes "
                             f"{[len(g['params']) for g in groups]}, this model's are {[len(s) for s in self.sizes]}")
        inner_state, inner_groups = {}, []
        for g, group in enumerate(groups):
            entries = [sd["state"].get(i) for i in group["params"]]
            if all(e is not None for e in entries):
                st = {}
                for k, v in entries[0].items():
                    if torch.is_tensor(v) and v.dim() > 0:
                        lead = () if self.seeds is None else (self.seeds,)
                        st[k] = torch.cat([e[k].reshape(*lead, -1) for e in entries], dim=-1)
                    else:  # a copy: the step counter is updated in place, and must not be shared with `sd`
                        st[k] = v.clone() if torch.is_tensor(v) else v
                inner_state[g] = st
            inner_groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": [g]})
        self.opt.load_state_dict({"state": inner_state, "param_groups": inner_groups})


def model_groups(model: nn.Module, weight_decay: float) -> list[tuple[list[nn.Parameter], float]]:
    """[(decayed parameters, weight_decay), (the rest, 0)]: decay on matrices and embeddings (dim >= 2), none on biases
    and LayerNorm parameters."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [(decay, weight_decay), (no_decay, 0.0)]


def lr_at(step: int, total: int, peak: float, warmup: int, min_ratio: float) -> float:
    """Linear warm-up to `peak`, then cosine decay to `min_ratio * peak` at the last step (Pythia's schedule)."""
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    if total <= warmup:
        return peak
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, betas, device_type: str) -> FlatAdamW:
    """AdamW with weight decay on matrices and embeddings only; biases and LayerNorm parameters are not decayed.

    Fused (one kernel per parameter group) on CUDA, and on CPU where torch has it (2.4 and later), over flat parameter
    buffers (`emergence.optim`): at the smallest sizes the optimizer was a fifth of a CPU training step, and fused
    AdamW over two buffers makes it a small fraction of that (`emergence bench`)."""
    return FlatAdamW(model_groups(model, weight_decay), lr, betas, device_type)


class Step:
    """One optimizer step, the same for a single run, seeds stacked in one model, the benchmark and the dry run's
    calibration: set the scheduled learning rate, forward and backward over the micro-batches (gradient
    accumulation: each micro-batch's loss over their number), clip, step, zero. No host sync inside.

    `forward(x, y)` returns the loss: a scalar for one run, one per seed for a stack (their sum is backpropagated:
    the seeds' parameters are disjoint, so each seed gets its own gradient). The parts are separate so that a caller
    can look at the gradient norm between `clip` and `apply` (a single run refuses to step on a non-finite one)."""

    def __init__(self, forward, opt, schedule, grad_clip: float, amp=None, backward_context=None):
        self.forward, self.opt, self.schedule = forward, opt, schedule
        self.max_norm = grad_clip if grad_clip > 0 else float("inf")
        self.amp = amp if amp is not None else contextlib.nullcontext()
        self.backward_context = backward_context or contextlib.nullcontext

    def set_lr(self, step: int) -> float:
        lr = self.schedule(step)
        self.opt.set_lr(lr)
        return lr

    def backward(self, micro_batches, transform=None) -> torch.Tensor:
        """Forward and backward over the micro-batches; returns the sum of their losses (detached, on the device).
        `transform`, if given, is applied to each loss first (fault injection)."""
        k = len(micro_batches)
        total = None
        for x, y in micro_batches:
            with self.amp:
                loss = self.forward(x, y)
            if transform is not None:
                loss = transform(loss)
            with self.backward_context():
                ((loss.sum() if loss.dim() else loss) / k).backward()  # a single run's loss is already a scalar
            total = loss.detach() if total is None else total + loss.detach()
        return total

    def clip(self) -> torch.Tensor:
        return self.opt.clip(self.max_norm)

    def apply(self) -> None:
        self.opt.step()
        self.opt.zero_grad()

    def __call__(self, step: int, micro_batches) -> tuple[torch.Tensor, torch.Tensor, float]:
        """The whole step: (sum of the micro-batches' losses, gradient norm before clipping, lr)."""
        lr = self.set_lr(step)
        total = self.backward(micro_batches)
        norm = self.clip()
        self.apply()
        return total, norm, lr
