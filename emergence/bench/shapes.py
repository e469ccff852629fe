"""What is measured: the model shapes of the CPU ladder (composed with the real config) and of the GPU check."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from emergence.config import compose, gpt_config, peak_lr
from emergence.model import GPTConfig, flops_per_token, n_params


# ---------------------------------------------------------------------------------------------------------------------
# Shapes: what is measured.

@dataclass
class Shape:
    """One measured configuration; the JSON lists these fields so another tool can repeat the measurement."""
    name: str
    n_layer: int
    d_model: int
    n_head: int
    seq_len: int
    batch_size: int
    vocab_size: int
    d_mlp: int = 0
    pos: str = "learned"
    tie_embeddings: bool = True
    lr: float = 3e-3
    weight_decay: float = 0.1
    betas: tuple = (0.9, 0.98)
    grad_clip: float = 1.0
    grad_accum: int = 1
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    task_weights: dict = field(default_factory=dict)

    def gpt_config(self) -> GPTConfig:
        return GPTConfig(n_layer=self.n_layer, d_model=self.d_model, n_head=self.n_head, d_mlp=self.d_mlp,
                         vocab_size=self.vocab_size, block_size=self.seq_len, pos=self.pos,
                         tie_embeddings=self.tie_embeddings)

    def describe(self) -> dict:
        c = self.gpt_config()
        return {"name": self.name, "n_layer": self.n_layer, "d_model": self.d_model, "n_head": self.n_head,
                "seq_len": self.seq_len, "batch_size": self.batch_size, "vocab_size": self.vocab_size,
                "n_params": n_params(c), "flops_per_token": flops_per_token(c, self.seq_len)}


def shape_from_config(cfg) -> Shape:
    """The shape and training settings a composed run config trains with."""
    gc = gpt_config(cfg)
    t = cfg.train
    return Shape(name=str(cfg.model.name), n_layer=gc.n_layer, d_model=gc.d_model, n_head=gc.n_head,
                 seq_len=cfg.data.seq_len, batch_size=t.batch_size, vocab_size=gc.vocab_size, d_mlp=gc.d_mlp,
                 pos=gc.pos, tie_embeddings=gc.tie_embeddings, lr=peak_lr(cfg), weight_decay=t.weight_decay,
                 betas=(t.beta1, t.beta2), grad_clip=t.grad_clip, grad_accum=t.grad_accum,
                 warmup_steps=t.warmup_steps, min_lr_ratio=t.min_lr_ratio,
                 task_weights=dict(cfg.task.train) if cfg.data.source == "tasks" else {})


def ladder_names() -> list[str]:
    """The CPU ladder: every `sweeps/model/l*.yaml`, smallest first (by parameter count at the default config)."""
    import sweeps

    folder = Path(sweeps.__file__).parent / "model"
    return sorted(p.stem for p in folder.glob("l*.yaml"))


def ladder(names: list[str] | None = None, base: list[str] | None = None) -> list[Shape]:
    """Compose the real config for each ladder size (`base` overrides first) and return the shapes, smallest first."""
    shapes = [shape_from_config(compose([*(base or []), f"model={n}"])) for n in (names or ladder_names())]
    return sorted(shapes, key=lambda s: n_params(s.gpt_config()))


def quick_pick(shapes: list[Shape]) -> list[Shape]:
    """`--quick`: the smallest size, the third smallest (overhead-bound) and the smallest with d_model >= 256 (the
    MFU target's regime); fewer if the ladder is short."""
    picks = [shapes[0]] + shapes[2:3]
    wide = [s for s in shapes if s.d_model >= 256]
    if wide:
        picks.append(wide[0])
    out = []
    for s in picks:
        if s not in out:
            out.append(s)
    return out


def default_base() -> list[str]:
    """Overrides the ladder is measured under: the CPU demo experiment's when it exists (its sequence length and batch
    size are what a sweep trains), else the defaults of `sweeps/config.yaml`."""
    import sweeps

    return ["experiment=cpu_demo"] if (Path(sweeps.__file__).parent / "experiment" / "cpu_demo.yaml").exists() else []


PYTHIA_VOCAB = 50304  # Pythia's embedding rows (its 50,277-token BPE padded to a multiple of 128; model cards)
GPU_SEQ_LEN = 2048  # Pythia's context (Biderman et al. 2023)
GPU_BATCH = 16  # sequences per step on one GPU: 32k tokens


def gpu_shapes(names=("pythia-70m", "pythia-160m")) -> list[Shape]:
    """The Pythia shapes from `sweeps/model/` with Pythia's own vocabulary and context (so MFU is comparable with
    published figures), random tokens, `GPU_BATCH` sequences per step."""
    out = []
    for n in names:
        m = compose([f"model={n}"]).model
        out.append(Shape(name=n, n_layer=m.n_layer, d_model=m.d_model, n_head=m.n_head, seq_len=GPU_SEQ_LEN,
                         batch_size=GPU_BATCH, vocab_size=PYTHIA_VOCAB, d_mlp=m.d_mlp, pos=m.pos,
                         tie_embeddings=m.tie_embeddings, lr=6e-4, warmup_steps=10))
    return out
