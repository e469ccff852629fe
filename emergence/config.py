"""Typed configuration: dataclass schemas registered in Hydra's ConfigStore, plus the values derived from them.

The YAML files under `sweeps/` extend these schemas, so an unknown key or a value of the wrong type is an error at
composition time. Derived values (parameter counts, FLOPs per token, the number of steps a budget buys, the run id)
are computed here and never typed into YAML.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from analysis.options import DEFAULTS as FLAG_DEFAULTS
from analysis.options import FlagOptions, OptionsError, Settings
from emergence.data import BPE_MIN_VOCAB, HF_EXTRA, TEXT_VOCAB_SIZE, TOKEN_DTYPES
from emergence.model import GPTConfig, flops_per_token, n_params, n_params_nonembed
from emergence.tasks import VOCAB
from emergence.tracking import TrackerConfig


class ConfigError(ValueError):
    """A configuration that cannot run; its message is one line that says what to change."""


@dataclass
class ModelConfig:
    name: str = MISSING
    n_layer: int = MISSING
    d_model: int = MISSING
    n_head: int = MISSING
    d_mlp: int = 0  # 0: 4 * d_model
    pos: str = "learned"  # learned | rotary
    tie_embeddings: bool = True
    source: str = ""  # where the shape comes from


@dataclass
class TrainConfig:
    # budget: exactly one rule decides the number of steps (see `resolve_budget`)
    budget: str = "steps"  # steps | tokens | tokens_per_param | flops
    max_steps: int = 1000
    tokens: float = 0.0  # budget=tokens
    tokens_per_param: float = 20.0  # budget=tokens_per_param (Hoffmann et al. 2022: about 20)
    flops: float = 0.0  # budget=flops: D = C / (6 N) (Hoffmann et al. 2022, approach 2)
    batch_size: int = 64
    grad_accum: int = 1
    lr: float = 3e-3
    lr_rule: str = "constant"  # constant | inverse_width: lr * lr_base_width / d_model
    lr_base_width: int = 64
    min_lr_ratio: float = 0.1  # cosine decay to 10% of peak (Pythia)
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.98
    grad_clip: float = 1.0
    eval_interval: int = 0  # 0: evaluate at every checkpoint only
    eval_batches: int = 4
    log_interval: int = 50
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | float32 | bfloat16
    compile: bool = False
    threads: int = 0  # torch threads; 0: leave torch's default
    progress: bool = True
    ckpt_log_until: int = 512  # checkpoints at 0, 1, 2, 4, ..., up to this step (Pythia)
    ckpt_every: int = 1000  # then every K steps, and the final step
    ckpt_keep_optimizer: bool = True
    fail_at_step: int = -1  # fault injection for tests: raise at this step (-1: never)
    nan_at_step: int = -1  # fault injection for tests: make the loss NaN at this step (-1: never)


@dataclass
class DataConfig:
    source: str = "tasks"  # tasks | text | tokens
    seq_len: int = 32
    # task rows (the task stream, and tasks mixed into text): several examples per row (True) or one example per
    # row at position 0 (False)
    pack: bool = False
    text_path: Optional[str] = None  # a .txt file or a folder of them (source=text)
    text_heldout_fraction: float = 0.1  # the tail of each text file (or of one tokens .bin) that is held out
    text_weight: float = 0.0  # source=tasks: share of each batch's rows taken from text_path (0: none)
    # source=text: bytes (UTF-8 bytes + <bos> <eos> <pad>, 259 ids) | bpe (a byte-level BPE of vocab_size tokens
    # learned on the training part of text_path, kept as tokenizer.json in the run folder)
    tokenizer: str = "bytes"
    vocab_size: int = 0  # tokenizer=bpe: tokens of the BPE (>= 259); source=tokens: the corpus's vocabulary size
    task_weight: float = 0.0  # source=text: share of each batch's rows that are task examples (task.train) as text
    tokens_path: Optional[str] = None  # source=tokens: a folder with train.bin and val.bin, or one .bin file
    tokens_dtype: str = "uint16"  # source=tokens: uint16 | uint32


@dataclass
class TaskSuiteConfig:
    name: str = "arith"
    train: Dict[str, float] = field(default_factory=dict)  # task -> mixture weight
    probe: List[str] = field(default_factory=list)  # probed tasks; empty: the training tasks


@dataclass
class ProbeConfig:
    inline: bool = True  # probe every checkpoint as it is written
    tasks: List[str] = field(default_factory=list)  # empty: the suite's probe list
    n: int = 512  # held-out examples per task (the same for every checkpoint and size)
    seed: int = 1234
    batch_size: int = 256
    generate_n: int = 128  # examples generated for edit_distance (real greedy decoding with a KV cache)
    samples: int = 4  # held-out prompts per task whose answers are kept for the report
    mechanistic: bool = True
    steps: List[int] = field(default_factory=list)  # probe only these steps (empty: every checkpoint)
    # solved training examples before each query when a model is probed through a tokenizer (--hf, data.tokenizer=bpe
    # runs); 0: zero-shot
    shots: int = 3


@dataclass
class PathsConfig:
    results: str = "results"


@dataclass
class SweepConfig:
    name: str = "${experiment}"
    analyze: bool = True  # run analysis and report at the end of `emergence sweep`
    # train the seeds of one size together as one stacked model (`emergence.stacked`): one job per grid point
    # without its seed axis, each job training every seed; sizes above stack_max_params train their seeds one
    # after another in their job (stacking helps where per-step overhead dominates, `emergence bench`)
    stack_seeds: bool = False
    stack_max_params: int = 100_000
    # at most this many seeds per stacked job (0: every seed of a size in one job). A stack's step costs about its
    # seed count times one seed's on a CPU, so splitting the seeds evens the workers' load when the sizes do not
    # divide among them (5 sizes x 6 seeds on 2 workers: 10 jobs of 3, not 3 rounds of 6)
    stack_size: int = 0
    seeds: list[int] = field(default_factory=list)  # a stacked job's seeds: set by `emergence sweep`, not by hand
    # memory of one GPU that a remote launcher (SLURM) gets, in GiB: the launch warns about runs that need more
    # (null: unknown, only the estimate is printed)
    gpu_mem_gb: Optional[float] = None


@dataclass
class AnalysisConfig:
    """The emergence verdict's settings, chosen before looking at the data: the fields and defaults of
    `analysis.options.FlagOptions`, which validates them (`validate`)."""
    w0: float = FLAG_DEFAULTS.w0  # a jump rises from 10% to 90% of its amplitude within W0 decades of x
    loss_w0: float = FLAG_DEFAULTS.loss_w0  # the loss view's W0, in nats of held-out loss (Du et al. 2024)
    alpha: float = FLAG_DEFAULTS.alpha  # level of the one-sided width tests and of the FDR across rows
    n_boot: int = FLAG_DEFAULTS.n_boot  # draws of the parametric bootstrap (at most; stops early once decided)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    task: TaskSuiteConfig = field(default_factory=TaskSuiteConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    experiment: str = "default"
    seed: int = 0


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    for group, node in (("model", ModelConfig), ("train", TrainConfig), ("data", DataConfig),
                        ("task", TaskSuiteConfig), ("probe", ProbeConfig), ("tracker", TrackerConfig)):
        cs.store(group=group, name=f"{group}_schema", node=node)


register_configs()

CONFIG_MODULE = "sweeps"  # the Hydra config root, a package so that it is found in editable and wheel installs


def compose(overrides: list[str] | None = None, *, config_name: str = "config",
            return_hydra_config: bool = False) -> DictConfig:
    """Compose the real config with overrides (the compose API; used by the CLI's pre-flight check, the sweep's grid
    and by tests). `return_hydra_config` keeps the `hydra` node (the sweeper's grid, the launcher)."""
    from hydra import compose as hydra_compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from hydra.errors import ConfigCompositionException
    from omegaconf.errors import ConfigAttributeError, ValidationError

    GlobalHydra.instance().clear()
    overrides = list(overrides or [])
    try:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            cfg = hydra_compose(config_name=config_name, overrides=overrides, return_hydra_config=return_hydra_config)
    except ConfigCompositionException as e:
        cause, text = e.__cause__, str(e.__cause__)
        where = re.search(r"full_key: (\S+)", text)
        if isinstance(cause, ConfigAttributeError) and where and "not in" in text:
            kind = re.search(r"not in '(\w+)'", text)
            raise ConfigError(unknown_key(where.group(1), globals().get(kind.group(1)) if kind else None)) from None
        if isinstance(cause, ValidationError) and where and "could not be converted to" in text:
            given = re.search(r"Value '([^']*)'", text)
            want = re.search(r"converted to (\w+)", text).group(1)
            raise ConfigError(f"{where.group(1)} takes {TYPE_WORDS.get(want, want)}, got "
                              f"{given.group(1) if given else 'another type'!r}") from None
        raise
    for o in overrides:  # `+key=value` adds a key; Hydra accepts it anywhere, a schema only where it has the field
        key = o.split("=", 1)[0]
        if not key.startswith("+") or "/" in key or "@" in key or key.lstrip("+").startswith("hydra."):
            continue
        parent_path, _, leaf = key.lstrip("+").rpartition(".")
        parent = OmegaConf.select(cfg, parent_path) if parent_path else cfg
        schema = OmegaConf.get_type(parent) if isinstance(parent, DictConfig) else None
        if dataclasses.is_dataclass(schema) and leaf not in {f.name for f in dataclasses.fields(schema)}:
            raise ConfigError(unknown_key(key.lstrip("+"), schema))
    return cfg


TYPE_WORDS = {"Integer": "an integer (write 1000000000, not 1e9)", "Float": "a number", "Boolean": "true or false",
              "String": "text"}


def unknown_key(full_key: str, schema) -> str:
    """"train has no key lrr; did you mean lr?": one line for a key that no schema defines."""
    import difflib

    parent, _, leaf = full_key.rpartition(".")
    where = parent or "the config"
    fields = [f.name for f in dataclasses.fields(schema)] if dataclasses.is_dataclass(schema) else []
    near = difflib.get_close_matches(leaf, fields, n=1)
    hint = (f"did you mean {parent + '.' if parent else ''}{near[0]}?" if near else
            f"its keys: {', '.join(fields)}" if fields else "check the name")
    return f"{where} has no key {leaf}; {hint} (a key no schema defines would change the run id and train again)"


# ---------------------------------------------------------------------------------------------------------------------
# Derived values.

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=,+-]*$")


def vocab_size_for(cfg) -> int:
    """The model's vocabulary: the task vocabulary, the byte tokenizer's 259 ids, or data.vocab_size (a learned BPE,
    whose tokenizer has exactly that many tokens, or a corpus tokenized elsewhere)."""
    d = cfg.data
    if d.source == "tokens" or (d.source == "text" and d.get("tokenizer", "bytes") == "bpe"):
        return int(d.vocab_size)
    if d.source == "text":
        return TEXT_VOCAB_SIZE
    return VOCAB.size


DATA_SOURCES = ("tasks", "text", "tokens")
TOKENIZERS = ("bytes", "bpe")


def check_data(cfg) -> None:
    """The data settings the schema cannot check, each refused with one line that says what to set. The corpus files
    themselves (their size, their ids) are checked when the source opens them (`emergence.data.build_source`)."""
    d = cfg.data
    if d.source not in DATA_SOURCES:
        raise ConfigError(f"data.source must be one of {', '.join(DATA_SOURCES)}, got {d.source!r}")
    if d.tokenizer not in TOKENIZERS:
        raise ConfigError(f"data.tokenizer must be one of {', '.join(TOKENIZERS)}, got {d.tokenizer!r}")
    if not 0 < d.text_heldout_fraction < 1:
        raise ConfigError(f"data.text_heldout_fraction must be in (0, 1), got {d.text_heldout_fraction}")
    for key in ("text_weight", "task_weight"):
        if not 0 <= d[key] < 1:
            raise ConfigError(f"data.{key} must be in [0, 1), got {d[key]}")
    if d.tokenizer == "bpe" and d.source != "text":
        raise ConfigError("data.tokenizer=bpe learns a vocabulary from text: it needs data.source=text")
    if d.task_weight > 0 and d.source != "text":
        raise ConfigError("data.task_weight mixes task rows into text and needs data.source=text (to mix text into "
                          "the task stream, set data.text_weight)")
    if d.text_weight > 0 and d.source != "tasks":
        raise ConfigError("data.text_weight mixes text into the task stream and needs data.source=tasks (to mix task "
                          "rows into text, set data.task_weight)")
    if (d.source == "tasks" or d.task_weight > 0) and not cfg.task.train:
        raise ConfigError(f"the task suite {cfg.task.name!r} has an empty training list: set task.train "
                          "(task name -> weight) or pick a suite with task=<name>")
    if d.vocab_size < 0 or (d.vocab_size and d.source != "tokens" and d.tokenizer != "bpe"):
        raise ConfigError(f"data.vocab_size={d.vocab_size} applies to data.tokenizer=bpe and data.source=tokens only "
                          "(the task and byte vocabularies are fixed): set data.tokenizer=bpe or leave it 0")
    if d.source == "text":
        _need_path(d, "text_path", "a .txt file or a folder of them", " (no corpus ships with emergence)")
        if d.tokenizer == "bpe":
            if d.vocab_size < BPE_MIN_VOCAB:
                raise ConfigError(f"data.tokenizer=bpe needs data.vocab_size >= {BPE_MIN_VOCAB} (256 bytes + <pad>, "
                                  f"<bos>, <eos>), got {d.vocab_size}")
            try:
                importlib.import_module("tokenizers")  # the optional extra, needed on this path only
            except ImportError:
                raise ConfigError(f"data.tokenizer=bpe needs the tokenizers library: {HF_EXTRA}") from None
    if d.source == "tokens":
        _need_path(d, "tokens_path", "a folder with train.bin and val.bin, or one .bin file of token ids")
        if d.vocab_size < 1:
            raise ConfigError("data.source=tokens needs data.vocab_size=<the vocabulary size of the corpus's "
                              "tokenizer>")
        if d.tokens_dtype not in TOKEN_DTYPES:
            raise ConfigError(f"data.tokens_dtype must be one of {', '.join(TOKEN_DTYPES)}, got {d.tokens_dtype!r}")
        if d.tokens_dtype == "uint16" and d.vocab_size > 1 << 16:
            raise ConfigError(f"data.vocab_size={d.vocab_size} does not fit in data.tokens_dtype=uint16; set "
                              "data.tokens_dtype=uint32")


def _need_path(d, key: str, what: str, note: str = "") -> None:
    """A path the data source reads: given, and there."""
    value = getattr(d, key)
    if not value:
        raise ConfigError(f"data.source={d.source} needs data.{key}=<{what}>{note}")
    if not Path(value).exists():
        raise ConfigError(f"data.{key}={value} does not exist; point it at {what}")


def gpt_config(cfg) -> GPTConfig:
    """The model's shape as a plain dataclass (what a checkpoint stores), checked on construction."""
    m = cfg.model
    try:
        return GPTConfig(n_layer=m.n_layer, d_model=m.d_model, n_head=m.n_head, d_mlp=m.d_mlp,
                         vocab_size=vocab_size_for(cfg), block_size=cfg.data.seq_len, pos=m.pos,
                         tie_embeddings=m.tie_embeddings)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def resolve_budget(cfg, gc: GPTConfig | None = None) -> dict[str, Any]:
    """Turn the budget rule into a number of optimizer steps.

    tokens per step = batch_size x grad_accum x seq_len. `tokens_per_param` uses the total parameter count
    (Hoffmann et al. 2022 count all parameters); `flops` gives each size D = C / (6 N) tokens (approach 2, IsoFLOP).
    """
    t = cfg.train
    gc = gc or gpt_config(cfg)
    tokens_per_step = t.batch_size * t.grad_accum * cfg.data.seq_len
    N = n_params(gc)
    if t.budget == "steps":
        steps = t.max_steps
    elif t.budget == "tokens":
        steps = math.ceil(t.tokens / tokens_per_step)
    elif t.budget == "tokens_per_param":
        steps = math.ceil(t.tokens_per_param * N / tokens_per_step)
    elif t.budget == "flops":
        steps = math.ceil(t.flops / (6 * N) / tokens_per_step)
    else:
        raise ConfigError(f"train.budget must be one of steps, tokens, tokens_per_param, flops; got {t.budget!r}")
    return {"steps": int(steps), "tokens_per_step": tokens_per_step, "tokens": int(steps) * tokens_per_step}


def config_settings(a) -> Settings:
    """The verdict's settings of a config's `analysis` group, each from the sweep config; ConfigError when one is out
    of range."""
    try:
        return Settings().override({f.name: a.get(f.name) for f in dataclasses.fields(FlagOptions)}, "sweep config")
    except OptionsError as e:
        raise ConfigError(f"analysis.{e}") from None


def peak_lr(cfg) -> float:
    """The learning rate after the declared size rule (so a study does not confuse scale with tuning)."""
    t = cfg.train
    if t.lr_rule == "constant":
        return t.lr
    if t.lr_rule == "inverse_width":  # Adam's update size scales as 1/width under muP-style reasoning (Yang et al. 2022)
        return t.lr * t.lr_base_width / cfg.model.d_model
    raise ConfigError(f"train.lr_rule must be 'constant' or 'inverse_width', got {t.lr_rule!r}")


def validate(cfg) -> dict[str, Any]:
    """Check what the schema cannot (ranges, names, divisibility) and return the derived values, with the run's memory
    estimate. Memory is checked against a device where the run runs (`device.check_run_memory`), and at launch against
    this machine for local launchers only (`sweep.plan`)."""
    a = cfg.get("analysis") if hasattr(cfg, "get") else None
    if a is not None:
        config_settings(a)
    t = cfg.train
    for key in ("max_steps", "batch_size", "grad_accum", "log_interval", "eval_batches", "ckpt_every"):
        if getattr(t, key) < (0 if key == "max_steps" else 1):
            raise ConfigError(f"train.{key} must be {'non-negative' if key == 'max_steps' else 'positive'}, "
                              f"got {getattr(t, key)}")
    for key in ("tokens", "flops", "tokens_per_param", "lr", "warmup_steps", "eval_interval", "grad_clip"):
        if getattr(t, key) < 0:
            raise ConfigError(f"train.{key} must be non-negative, got {getattr(t, key)}")
    if not 0 <= t.min_lr_ratio <= 1:
        raise ConfigError(f"train.min_lr_ratio must be in [0, 1], got {t.min_lr_ratio}")
    if cfg.data.seq_len < 2:
        raise ConfigError(f"data.seq_len must be at least 2, got {cfg.data.seq_len}")
    if cfg.sweep.stack_size < 0:
        raise ConfigError(f"sweep.stack_size must be 0 (every seed of a size in one job) or positive, got "
                          f"{cfg.sweep.stack_size}")
    for key, value in (("sweep.name", str(cfg.sweep.name)), ("model.name", str(cfg.model.name))):
        if not SAFE_NAME.match(value) or ".." in value:
            raise ConfigError(f"{key}={value!r} is not a safe folder name: use letters, digits, '_', '-', '.' "
                              "(no '/', no '..')")
    check_data(cfg)
    gc = gpt_config(cfg)
    budget = resolve_budget(cfg, gc)
    derived = {
        "n_params": n_params(gc),
        "n_params_nonembed": n_params_nonembed(gc),
        "flops_per_token": flops_per_token(gc),
        "vocab_size": gc.vocab_size,
        "lr": peak_lr(cfg),
        **budget,
    }
    derived["flops"] = float(derived["flops_per_token"]) * derived["tokens"]
    derived["precision"] = run_precision(cfg)
    derived["memory_bytes"] = estimate_memory(gc, t.batch_size, derived["precision"])
    return derived


def run_precision(cfg, device_type: str | None = None) -> str:
    """"bf16" for a run under bf16 autocast, else "fp32": train.dtype, or with dtype=auto bf16 on CUDA only. The
    device is `device_type` where known (the run's own), else train.device (auto: CUDA if this machine has it)."""
    if cfg.train.dtype in ("bfloat16", "float32"):
        return "bf16" if cfg.train.dtype == "bfloat16" else "fp32"
    if device_type is None:
        device_type = cfg.train.device
        if device_type == "auto":
            import torch

            device_type = "cuda" if torch.cuda.is_available() else "cpu"
    return "bf16" if device_type == "cuda" else "fp32"


def estimate_memory(gc: GPTConfig, batch_size: int, precision: str = "fp32") -> int:
    """Pre-flight estimate of training memory in bytes.

        16 N + a B T L (34 d + 5 H T) / 2 + B T V l

    - 16 N: fp32 master weights, gradients and two AdamW moments, 4 bytes each per parameter, in either precision
      (autocast keeps the weights in fp32); under bf16 autocast add 2 N for the bf16 copies of the weights it casts.
    - Activations kept for the backward pass: 34 d + 5 H T values per token per layer (Korthikanti et al. 2022,
      eq. 1 without sequence parallelism), a = 2 bytes each under bf16 autocast, a = 4 in fp32.
    - Logits: l bytes per position and vocabulary entry: fp32 logits, their softmax and its gradient (l = 12); under
      autocast the bf16 logits and their fp32 copy for the loss come first (l = 2 + 4 + 4 + 4 = 14).
    """
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    N = n_params(gc)
    T, d, L, H = gc.block_size, gc.d_model, gc.n_layer, gc.n_head
    a, w, lg = (2, 18, 14) if precision == "bf16" else (4, 16, 12)
    acts = batch_size * T * L * (34 * d + 5 * H * T) * a // 2
    return w * N + acts + batch_size * T * gc.vocab_size * lg


def check_memory(cfg, device_type: str, available: int, where: str = "this machine", copies: int = 1) -> None:
    """Refuse a run whose estimate (`estimate_memory`, at the precision it runs in on `device_type`, times `copies`
    models trained together) exceeds 80% of `available` bytes, the memory of the device it trains on."""
    need = copies * estimate_memory(gpt_config(cfg), cfg.train.batch_size, run_precision(cfg, device_type))
    if available and need > 0.8 * available:
        what = f"{copies} stacked copies of model {cfg.model.name}" if copies > 1 else f"model {cfg.model.name}"
        raise ConfigError(f"{what} at batch {cfg.train.batch_size} needs about {need / 2**30:.1f} GiB but {where} "
                          f"has {available / 2**30:.1f} GiB: lower train.batch_size (raise train.grad_accum) or pick "
                          "a smaller model")


def available_memory() -> int:
    """Host RAM in bytes (0 where it cannot be read)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


# Keys that do not change what is trained: they are left out of the run id, so changing them reuses the run.
NON_IDENTITY = ("paths", "sweep", "tracker", "probe", "analysis", "experiment", "train.log_interval", "train.progress",
                "train.threads", "train.eval_interval", "train.eval_batches", "train.device", "model.source",
                "train.fail_at_step", "train.nan_at_step")


# Settings added after runs were trained without them: left at these defaults they change nothing, and are left out
# of a run's identity so that earlier runs keep their ids (and a rerun of an earlier sweep skips them).
ADDED_DEFAULTS = {"data.tokenizer": "bytes", "data.vocab_size": 0, "data.task_weight": 0.0, "data.tokens_path": None,
                  "data.tokens_dtype": "uint16"}


def identity(cfg) -> dict:
    """The part of the resolved config that determines the trained weights."""
    d = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else json.loads(json.dumps(cfg))
    d.pop("hydra", None)
    for key in NON_IDENTITY:
        parts = key.split(".")
        node = d
        for p in parts[:-1]:
            node = node.get(p, {})
        node.pop(parts[-1], None)
    for key, default in ADDED_DEFAULTS.items():  # a setting added later, left at its default, keeps old run ids
        section, name = key.split(".")
        if d.get(section, {}).get(name, default) == default:
            d.get(section, {}).pop(name, None)
    return d


def run_id(cfg) -> str:
    """`<model>_s<seed>_<hash>`: readable, and a hash of the resolved config so a changed config is a new run."""
    h = hashlib.sha256(json.dumps(identity(cfg), sort_keys=True).encode()).hexdigest()[:8]
    return f"{cfg.model.name}_s{cfg.seed}_{h}"


def sweep_dir(cfg) -> Path:
    return Path(cfg.paths.results) / str(cfg.sweep.name)


def run_dir(cfg) -> Path:
    return sweep_dir(cfg) / "runs" / run_id(cfg)
