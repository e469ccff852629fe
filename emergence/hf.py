"""`emergence probe --hf`: probe Hugging Face causal LMs (any size, any revision) into a sweep folder.

Each model becomes one run of the sweep (one size), each revision one of its checkpoints: a model family (Pythia
70M ... 12B) gives the size axis, a model's revisions (Pythia's step1000, step2000, ...) the training axis, and the
folder is read by `emergence analyze` and `emergence report` like one we trained. Probing is `emergence.textprobe`:
the task suite in natural text, k-shot by default, scored through the model's own tokenizer.

Loading is safe or refused. Models come from a local folder (`--revision R` reads its subfolder R) or from the
local Hugging Face cache by name (`--revision R` is the hub revision; nothing is ever downloaded). Remote code is
never run: a config or tokenizer config with an `auto_map`, or a model type transformers does not know, is refused.
The model must be a causal LM (its architecture one that AutoModelForCausalLM builds). Weights in safetensors are
preferred; a folder with only pickled weights (pytorch_model.bin) is read only if `torch.load(weights_only=True)`
reads every file of it, which runs no pickled code. Every model and revision is checked before anything is written:
a refusal is one line and leaves the output folder as it was.

Step and tokens come from the revision's name: Pythia's `step<N>` (tokens = N x 2,097,152, Pythia's 1024 sequences
of 2048 tokens per step, Biderman et al. 2023; or N x --tokens-per-step), OLMo's `stage1-step<N>-tokens<T>B`
(tokens = T x 10^9); any other name with `step<N>` needs --tokens-per-step. Without --revision a model is one
checkpoint with unknown step and tokens (NA), enough for a comparison across sizes.

Revisions are fingerprinted: the sha256 of each revision's weight files (safetensors, else the pickled .bin files).
Revisions of one model that share a fingerprint are named in one line (a hub repository can serve one checkpoint
under several step names); all but the one with the latest step get rows of status `duplicate_weights`, unprobed
and kept out of the analysis, unless `keep_duplicates`. `runs.parquet` records each run's revisions, their files
and fingerprints (`revisions`, JSON).

Probing resumes: each checkpoint's rows are written as soon as it is probed, and a second call with the same --out
probes only the (revision, task) pairs whose rows are not complete there (an interrupted call, new revisions, new
tasks); a checkpoint with nothing missing is not even loaded. The probe settings that change a row (`probe.n`,
`probe.seed`, the shots) must match those the folder was probed with.

transformers, tokenizers and huggingface_hub are imported inside functions: they are the optional `hf` extra.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from emergence import engine, textprobe
from emergence.config import ProbeConfig
from emergence.files import atomic_write_bytes, environment, write_json
from emergence.probe import Probed, probed_pairs, write_probes
from emergence.sweep import aggregate
from emergence.tasks import TASKS
from emergence.tasks.kshot import KShot

PYTHIA_TOKENS_PER_STEP = 2_097_152  # 1024 sequences x 2048 tokens per optimizer step (Biderman et al. 2023)
HF_EXTRA = 'pip install "emergence[hf]"'
EXPERIMENT = "hf"
SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
_OLMO = re.compile(r"(?:^|-)step(\d+)-tokens(\d+(?:\.\d+)?)B$")
_PYTHIA = re.compile(r"^step(\d+)$")
_ANY_STEP = re.compile(r"(?:^|[^a-z])step[-_]?(\d+)", re.IGNORECASE)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class ModelRefused(ValueError):
    """A model, revision or argument that `probe_hf` will not load or use (one line: what is wrong, what to do)."""


# ---------------------------------------------------------------------------------------------------------------------
# Revisions: step and tokens.

def parse_revision(revision: str, tokens_per_step: float | None = None) -> tuple[int, float]:
    """(step, tokens) named by a revision: OLMo's "stage1-step1000-tokens4B" -> (1000, 4e9); Pythia's "step1000" ->
    (1000, 1000 x tokens_per_step, by default Pythia's 2,097,152); another name holding step<N> -> (N, N x
    tokens_per_step), which it then needs."""
    tokens_per_step = check_tokens_per_step(tokens_per_step)
    rev = str(revision).strip().rstrip("/").split("/")[-1]
    m = _OLMO.search(rev)
    if m:
        return int(m.group(1)), float(m.group(2)) * 1e9
    m = _PYTHIA.match(rev)
    if m:
        step = int(m.group(1))
        return step, step * float(tokens_per_step or PYTHIA_TOKENS_PER_STEP)
    m = _ANY_STEP.search(rev)
    if m is None:
        raise ModelRefused(f"revision {revision!r} names no training step; use names like step1000 (Pythia) or "
                           "stage1-step1000-tokens4B (OLMo), or leave out --revision to probe one checkpoint")
    if tokens_per_step is None:
        raise ModelRefused(f"revision {revision!r}: its tokens cannot be read from the name; give --tokens-per-step N "
                           "(tokens per optimizer step of that model's training)")
    return int(m.group(1)), int(m.group(1)) * float(tokens_per_step)


def check_tokens_per_step(tokens_per_step) -> float | None:
    if tokens_per_step is None:
        return None
    try:
        v = float(tokens_per_step)
    except (TypeError, ValueError):
        v = float("nan")
    if not (math.isfinite(v) and v > 0):
        raise ModelRefused(f"--tokens-per-step must be a positive number of tokens, got {tokens_per_step!r}")
    return v


# ---------------------------------------------------------------------------------------------------------------------
# Finding and checking a model.

def resolve(model: str, revision: str | None) -> tuple[Path, Path | None]:
    """(the folder with the model's weights, the model's root folder for a local model or None) for a local path or
    a name in the local Hugging Face cache. Never downloads."""
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelRefused(f"{model} is a file; give a model folder (with config.json) or a hub name")
        if revision is None:
            return path, path
        folder = path / revision
        if not folder.is_dir():
            have = sorted(p.name for p in path.iterdir() if p.is_dir() and (p / "config.json").exists())
            raise ModelRefused(f"{model} has no revision {revision!r} ({folder} is not a folder); its revisions: "
                               f"{', '.join(have) if have else 'none'}")
        return folder, path
    if not _HUB_ID.match(model) or model.startswith((".", "~")):
        raise ModelRefused(f"{model}: no such folder; give a model folder (with config.json) or a hub name")
    try:
        from huggingface_hub import snapshot_download  # optional dependency (the hf extra)
        from huggingface_hub.constants import HF_HUB_CACHE  # optional dependency (the hf extra)
    except ImportError:
        raise ModelRefused(f"{model}: no such folder, and reading the Hugging Face cache needs {HF_EXTRA}") from None
    try:
        return Path(snapshot_download(model, revision=revision, local_files_only=True)), None
    except Exception:  # LocalEntryNotFoundError, a malformed name, a revision not cached
        what = f"revision {revision!r} of {model}" if revision else model
        raise ModelRefused(f"{what}: no such folder and not in the local Hugging Face cache ({HF_HUB_CACHE}); this "
                           "command never downloads: download it first or give a folder") from None


def _read_json(path: Path, label: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelRefused(f"{label}: {path.name} is not readable JSON ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict):
        raise ModelRefused(f"{label}: {path.name} is not a JSON object")
    return data


def check_config(folder: Path, label: str) -> dict:
    """The model's config.json, refused unless transformers builds it as a causal LM without remote code."""
    try:
        # optional dependency (the hf extra)
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    except ImportError:
        raise ModelRefused(f"probing Hugging Face models needs transformers: {HF_EXTRA}") from None
    path = folder / "config.json"
    if not path.is_file():
        revisions = sorted(p.name for p in folder.iterdir() if p.is_dir() and (p / "config.json").is_file()) \
            if folder.is_dir() else []
        if revisions:
            shown = ",".join(revisions[:4]) + (",..." if len(revisions) > 4 else "")
            raise ModelRefused(f"{label}: {folder} has no config.json, but {len(revisions)} subfolder(s) do: probe "
                               f"them as revisions, --revision {shown}")
        raise ModelRefused(f"{label}: {folder} has no config.json; it is not a Hugging Face model folder")
    cfg = _read_json(path, label)
    if cfg.get("auto_map"):
        raise ModelRefused(f"{label}: its config.json asks for remote code (auto_map), which this command never runs; "
                           "use a model whose architecture transformers ships")
    kind = cfg.get("model_type")
    if kind not in CONFIG_MAPPING_NAMES:
        raise ModelRefused(f"{label}: model_type {kind!r} is not one transformers knows (it would need remote code); "
                           "upgrade transformers or use another model")
    causal = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    archs = cfg.get("architectures") or []
    ok = any(a in causal for a in archs) if archs else (kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
                                                         and not cfg.get("is_encoder_decoder"))
    if not ok:
        what = ", ".join(archs) if archs else f"a {kind} model"
        raise ModelRefused(f"{label}: {what} is not a causal language model (AutoModelForCausalLM); probing needs a "
                           "decoder-only LM that generates text")
    return cfg


def check_weights(folder: Path, label: str) -> bool:
    """True for safetensors weights; False for pickled weights that `torch.load(weights_only=True)` reads (each
    file is opened that way here, so no pickled code runs); refused otherwise."""
    if any((folder / f).is_file() for f in SAFE_WEIGHTS) or list(folder.glob("*.safetensors")):
        return True
    pickles = sorted(folder.glob("pytorch_model*.bin"))
    if not pickles:
        raise ModelRefused(f"{label}: {folder} holds no weights (model.safetensors or pytorch_model.bin)")
    import torch

    if tuple(int(v) for v in torch.__version__.split("+")[0].split(".")[:2]) < (2, 6):
        raise ModelRefused(f"{label}: its weights are pickled ({pickles[0].name}), and before torch 2.6 "
                           "torch.load(weights_only=True) can still run code from a crafted pickle (CVE-2025-32434): "
                           "upgrade torch to 2.6 or later, or convert the weights to safetensors from a trusted copy")
    for p in pickles:
        try:
            torch.load(p, map_location="cpu", weights_only=True, mmap=True)
        except Exception:
            try:  # the legacy (non-zip) format cannot be memory-mapped
                torch.load(p, map_location="cpu", weights_only=True)
            except Exception as e:
                raise ModelRefused(f"{label}: {p.name} is not a plain tensor pickle (torch.load weights_only=True "
                                   f"refuses it: {type(e).__name__}); convert it to safetensors from a trusted "
                                   "copy, this command never runs pickled code") from None
    return False


def tokenizer_folder(folder: Path, root: Path | None, label: str) -> Path:
    """Where the tokenizer is: beside the weights, else (a revision subfolder of a local model) in the model's
    folder. Its config is refused if it asks for remote code."""
    for cand in (folder, root):
        if cand is not None and any((cand / f).is_file() for f in TOKENIZER_FILES):
            tc = cand / "tokenizer_config.json"
            if tc.is_file() and _read_json(tc, label).get("auto_map"):
                raise ModelRefused(f"{label}: its tokenizer_config.json asks for remote code (auto_map), which this "
                                   "command never runs")
            return cand
    raise ModelRefused(f"{label}: no tokenizer in {folder}" + (f" or {root}" if root and root != folder else "") +
                       " (tokenizer.json or tokenizer_config.json)")


def load(folder: Path, tok_folder: Path, safetensors: bool, device, label: str):
    """The checked model (eval mode, on `device`, float32 on CPU and bfloat16 on CUDA) and its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer  # optional dependency (the hf extra)

    dtype = torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, trust_remote_code=False,
                                                     use_safetensors=safetensors)
        tok = AutoTokenizer.from_pretrained(tok_folder, local_files_only=True, trust_remote_code=False)
    except Exception as e:  # transformers' own errors: a broken file, a shape mismatch
        msg = " ".join(str(e).split())[:300]
        raise ModelRefused(f"{label}: transformers could not load it ({type(e).__name__}: {msg})") from None
    return model.to(device=device, dtype=dtype).eval(), tok


def param_counts(model) -> tuple[int, int]:
    """(all parameters, non-embedding parameters) of a transformers model, each shared tensor counted once.
    Embedding parameters (Kaplan et al. 2020) are the input and learned position embeddings (every nn.Embedding)
    and an output matrix not tied to the input one."""
    import torch.nn as nn

    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    emb = set()
    for m in model.modules():
        if isinstance(m, nn.Embedding):
            emb.add(id(m.weight))
    out = model.get_output_embeddings()
    if out is not None:
        emb.add(id(out.weight))
    embed = sum(p.numel() for p in model.parameters() if id(p) in emb)  # parameters() yields a shared one once
    return int(total), int(total - embed)


# ---------------------------------------------------------------------------------------------------------------------
# The sweep folder.

def run_id_for(name: str, where: str) -> str:
    """A run folder name from the model's name, with a hash of where it came from (two folders called "model" stay
    two runs)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "model"
    return f"hf-{slug}-{hashlib.sha256(where.encode()).hexdigest()[:8]}"


def _probe_config(overrides: list[str]):
    for o in overrides:
        if not o.startswith("probe.") or "=" not in o:
            raise ModelRefused(f"{o!r}: emergence probe --hf takes probe.* overrides only (probe.tasks=[add2], "
                               "probe.n=256)")
    try:
        return OmegaConf.merge(OmegaConf.structured(ProbeConfig),
                               OmegaConf.from_dotlist([o[len("probe."):] for o in overrides]))
    except Exception as e:  # OmegaConf's errors: an unknown key, a value of the wrong type
        raise ModelRefused(f"probe overrides {' '.join(overrides)}: {str(e).splitlines()[0]}") from None


def default_tasks() -> list[str]:
    """Every registered task (k-shot variants aside): what --hf probes when probe.tasks is not given."""
    return [name for name, t in TASKS.items() if not isinstance(t, KShot)]


def _merge_grid(out: Path, entries: list[dict]) -> dict:
    grid_path = out / "grid.json"
    grid = json.loads(grid_path.read_text()) if grid_path.exists() else {"runs": [], "overrides": []}
    new = {e["run_id"] for e in entries}
    grid["runs"] = [r for r in grid.get("runs", []) if r.get("run_id") not in new] + entries
    return grid


def fingerprint(folder: Path) -> tuple[str, list[str]]:
    """The sha256 of a revision's weights (every *.safetensors file, else every pytorch_model*.bin, in name order,
    each preceded by its length) and the files' names."""
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    h = hashlib.sha256()
    for f in files:
        h.update(f.stat().st_size.to_bytes(8, "little"))
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 24), b""):
                h.update(block)
    return h.hexdigest(), [f.name for f in files]


def duplicate_revisions(label: str, revisions: list[dict]) -> set:
    """Revisions (each {"revision", "step", "fingerprint"}) whose weights another revision of the model also has:
    all of each such group but its latest step, the one whose weights they serve (an early step name serving the
    final weights is the failure seen on the hub; the reverse cannot happen). One line per group on stderr."""
    groups: dict[str, list[dict]] = {}
    for r in revisions:
        groups.setdefault(r["fingerprint"], []).append(r)
    dup = set()
    for fp, g in groups.items():
        if len(g) < 2:
            continue
        g = sorted(g, key=lambda r: (r["step"] is not None, r["step"] or 0))
        dup |= {r["revision"] for r in g[:-1]}
        print(f"warning: {label}: revisions {', '.join(str(r['revision']) for r in g)} have identical weights "
              f"(sha256 {fp[:12]}); {g[-1]['revision']} is probed, the others' rows get status duplicate_weights "
              "and stay out of the analysis (--keep-duplicates probes them all)", file=sys.stderr)
    return dup


@dataclass
class Checkpoint:
    """One revision of one model, checked and ready to load."""

    revision: str | None
    folder: Path  # the weights and config
    tokenizer: Path  # the tokenizer's folder
    safetensors: bool
    label: str  # how messages name it


@dataclass
class Planned:
    """One model: a run of the sweep, its checkpoints in revision order."""

    model: str  # as given on the command line
    name: str  # the `model` column: the folder's name or the hub name
    run_id: str
    source: str  # the folder, or the hub name
    checkpoints: list[Checkpoint]


def plan(models: list[str], revisions: list[str] | None) -> list[Planned]:
    """Every model at every revision, found and checked (config, weights, tokenizer) before anything is loaded or
    written; the first problem is refused with one line."""
    out = []
    for model in models:
        cps = []
        for rev in (revisions or [None]):
            label = model if rev is None else f"{model} (revision {rev})"
            folder, root = resolve(model, rev)
            check_config(folder, label)
            safe = check_weights(folder, label)
            cps.append(Checkpoint(rev, folder, tokenizer_folder(folder, root, label), safe, label))
        local = Path(model).expanduser()
        where = str(local.resolve()) if local.exists() else f"hub:{model}"
        name = local.resolve().name if local.exists() else model
        out.append(Planned(model, name, run_id_for(name, where), where.removeprefix("hub:"), cps))
    if len({p.run_id for p in out}) != len(out):
        raise ModelRefused("a model is named twice in --hf; give each once")
    return out


def _sizes(model) -> dict:
    n_params, nonembed = param_counts(model)
    c = model.config

    def whole(attr):
        v = getattr(c, attr, None)
        return int(v) if isinstance(v, int) and v > 0 else None

    return {"n_params": n_params, "n_params_nonembed": nonembed, "n_layer": whole("num_hidden_layers"),
            "d_model": whole("hidden_size"), "n_head": whole("num_attention_heads")}


def training_flops(n_params_nonembed: int, tokens: float) -> float:
    """C = 6 N D (Kaplan et al. 2020, section 2.1; N the non-embedding parameters): a published model's training
    compute from its size and tokens, where its exact FLOPs per token are not ours to compute."""
    return 6.0 * n_params_nonembed * tokens


def probe_hf(models: list[str], revisions: list[str] | None, out: Path, overrides: list[str],
             tokens_per_step: float | None, *, shots: int | None = None, device=None,
             keep_duplicates: bool = False) -> Path:
    """Probe each model (a folder or a name in the local hub cache) at each revision (None: the model as it is)
    on the task suite, into the sweep folder `out` (one run per model); return `out`.

    Writes `out/runs/<run_id>/` (config.yaml, status.json, probes.parquet, instances.parquet, samples.parquet),
    `out/grid.json` and `out/meta.json`, then aggregates them into `out/results.parquet` and `out/runs.parquet`.
    Each checkpoint's rows are written when it is probed; a second call probes only what the folder lacks (see the
    module's docstring), and the rows are those of one uninterrupted call. Every model and revision is checked
    first; a refusal writes nothing. `shots` (k solved examples before each query) overrides `probe.shots` (default
    3). `keep_duplicates` probes revisions whose weights another revision has too (`duplicate_revisions`).
    """
    import torch

    out = Path(out)
    if not models:
        raise ModelRefused("give at least one model: --hf PATH_OR_NAME")
    if out.exists() and not out.is_dir():
        raise ModelRefused(f"--out {out} is a file; give a folder for the sweep")
    if revisions is not None:
        revisions = [r.strip() for r in revisions if r.strip()]
        if not revisions:
            raise ModelRefused("--revision is empty; give revision names separated by commas (step1000,step2000)")
        if len(set(revisions)) != len(revisions):
            raise ModelRefused(f"--revision names a revision twice: {','.join(revisions)}")
    check_tokens_per_step(tokens_per_step)
    cfg = _probe_config(list(overrides))
    k = shots if shots is not None else textprobe.probe_shots(cfg)
    tasks = [str(t) for t in cfg.tasks] or default_tasks()
    try:
        labels = textprobe.shot_labels(tasks, k)
    except ValueError as e:
        raise ModelRefused(str(e)) from None
    steps = {None: (None, float("nan"))} if revisions is None else \
        {r: parse_revision(r, tokens_per_step) for r in revisions}
    if len({s for s, _ in steps.values()}) != len(steps):
        raise ModelRefused(f"two revisions name the same step: {','.join(revisions)}")
    planned = plan(models, revisions)
    settings = {"n": int(cfg.n), "seed": int(cfg.seed), "shots": int(k)}
    for p in planned:
        check_settings(out / "runs" / p.run_id, settings)

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    command = ["emergence", "probe", *(a for m in models for a in ("--hf", m)),
               *(["--revision", ",".join(revisions)] if revisions else []),
               *(["--tokens-per-step", str(tokens_per_step)] if tokens_per_step else []), "--out", str(out),
               *overrides]
    meta = {"command": shlex.join(command), "experiment": EXPERIMENT,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **environment()}
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for p in planned:
        t0 = time.time()
        run_dir = out / "runs" / p.run_id
        revs = _fingerprints(p, steps)
        dup = set() if keep_duplicates else duplicate_revisions(p.name, revs)
        known = _known_revisions(run_dir, revs)
        last = max((r["tokens"] for r in known if r["tokens"] == r["tokens"]), default=float("nan"))
        run_cfg = {"experiment": EXPERIMENT, "sweep": {"name": out.name}, "seed": None,
                   "hf": {"model": p.model, "source": p.source, "revisions": [r["revision"] for r in known
                                                                               if r["revision"] is not None],
                          "tokens_per_step": tokens_per_step, "shots": k},
                   "model": {"name": p.name, **_read_sizes(run_dir)},
                   "probe": OmegaConf.to_container(cfg, resolve=True), "settings": settings}
        _write_config(run_dir, run_cfg)
        write_json(run_dir / "status.json", {"state": "running", "pid": os.getpid()})
        sizes = _probe_run(p, steps, labels, k, cfg, device, out.name, run_dir, dup)
        _write_config(run_dir, {**run_cfg, "model": {"name": p.name, **sizes}})
        flops = training_flops(sizes["n_params_nonembed"], last)
        write_json(run_dir / "status.json", {"state": "done", "wall_s": time.time() - t0,
                                             "n_params": sizes["n_params"], "tokens": last, "flops": flops})
        entries.append({"run_id": p.run_id, "sweep": out.name, "experiment": EXPERIMENT, "model": p.name, **sizes,
                        "seed": None, "budget": None,
                        "max_steps": max((r["step"] for r in known if r["step"] is not None), default=None),
                        "tokens": last, "flops": flops,
                        "flops_per_token": training_flops(sizes["n_params_nonembed"], 1), "lr": None,
                        "task_suite": ",".join(tasks), "state": "done",
                        "revisions": json.dumps([{k2: r[k2] for k2 in ("revision", "step", "fingerprint", "files")}
                                                 for r in known])})
    write_json(out / "grid.json", _merge_grid(out, entries))
    meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write_json(out / "meta.json", meta)
    aggregate(out)
    return out


def _fingerprints(p: Planned, steps: dict) -> list[dict]:
    out = []
    for cp in p.checkpoints:
        fp, files = fingerprint(cp.folder)
        step, tokens = steps[cp.revision]
        out.append({"revision": cp.revision, "step": step, "tokens": tokens, "fingerprint": fp, "files": files})
    return out


def _known_revisions(run_dir: Path, revs: list[dict]) -> list[dict]:
    """This call's revisions after those an earlier call recorded for the run (`revisions.json`), by step; the
    record is rewritten."""
    path = run_dir / "revisions.json"
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        old = []
    merged = {r["revision"]: r for r in old if isinstance(r, dict) and "revision" in r}
    merged.update({r["revision"]: r for r in revs})
    known = sorted(merged.values(), key=lambda r: (r["step"] is not None, r["step"] or 0))
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(path, known)
    return known


def check_settings(run_dir: Path, settings: dict) -> None:
    """Refuse, in one line, to add rows to a run probed with settings that change a row (probe.n, probe.seed, the
    shots): its rows would not be comparable."""
    try:
        old = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml")).get("settings")
    except (OSError, ValueError, AttributeError):
        return
    if isinstance(old, dict) and old != settings:
        diff = ", ".join(f"{k} {old.get(k)} there, {settings.get(k)} now" for k in settings if old.get(k) != settings[k])
        raise ModelRefused(f"{run_dir.parent.parent} was probed with other settings ({diff}); give the same "
                           "settings to add to it, or a new --out")


def _probe_run(p: Planned, steps: dict, labels: dict[str, str], shots: int, cfg, device, sweep: str, run_dir: Path,
               duplicates: set) -> dict:
    """Probe each checkpoint of one model for the (step, task label) pairs `run_dir` lacks (`labels`: label ->
    registered task, scored with `shots` solved examples), one checkpoint at a time,
    writing its rows as soon as it is done; a duplicate revision's rows are status duplicate_weights, unprobed.
    Returns the model's sizes."""
    from filelock import FileLock

    sizes = _read_sizes(run_dir)
    done = probed_pairs(run_dir)
    for cp in p.checkpoints:
        step, tokens = steps[cp.revision]
        key = -1 if step is None else int(step)
        wanted = [t for t in labels if (key, t) not in done]
        if not wanted:
            continue
        done |= {(key, t) for t in wanted}
        probed = Probed()
        if cp.revision in duplicates and sizes:  # its sizes known: not even loaded
            probed.rows += _duplicate_rows(_base(sweep, p, sizes, step, tokens), wanted)
        else:
            model, tok = load(cp.folder, cp.tokenizer, cp.safetensors, device, cp.label)
            sizes = _sizes(model)
            _write_sizes(run_dir, sizes)
            if cp.revision in duplicates:
                probed.rows += _duplicate_rows(_base(sweep, p, sizes, step, tokens), wanted)
            else:
                rows = textprobe.probe_model(engine.HFCausalLM(model), textprobe.TextTokenizer(tok),
                                             [labels[t] for t in wanted], cfg, _base(sweep, p, sizes, step, tokens),
                                             probed, shots)
                print(f"{cp.label}: {textprobe.describe(rows)}", file=sys.stderr)
            del model
        with FileLock(str(run_dir / ".probe.lock")):
            write_probes(run_dir, *probed.frames())
    if not sizes:  # every checkpoint was probed before, by a version that did not record the sizes
        model, _ = load(p.checkpoints[-1].folder, p.checkpoints[-1].tokenizer, p.checkpoints[-1].safetensors,
                        "cpu", p.checkpoints[-1].label)
        sizes = _sizes(model)
        _write_sizes(run_dir, sizes)
    return sizes


def _duplicate_rows(base: dict, tasks: list[str]) -> list[dict]:
    return [{**base, "task": t, "metric": m, "value": float("nan"), "stderr": float("nan"), "n": 0,
             "status": "duplicate_weights"} for t in tasks for m in textprobe.METRICS]


def _base(sweep: str, p: Planned, sizes: dict, step, tokens) -> dict:
    return {"sweep": sweep, "run_id": p.run_id, "model": p.name, "n_params": sizes["n_params"],
            "n_params_nonembed": sizes["n_params_nonembed"], "n_layer": sizes["n_layer"],
            "d_model": sizes["d_model"], "seed": None, "step": step, "tokens": tokens,
            "flops": training_flops(sizes["n_params_nonembed"], tokens)}


def _read_sizes(run_dir: Path) -> dict:
    try:
        sizes = json.loads((run_dir / "sizes.json").read_text())
    except (OSError, ValueError):
        return {}
    return sizes if isinstance(sizes, dict) and "n_params" in sizes else {}


def _write_sizes(run_dir: Path, sizes: dict) -> None:
    write_json(run_dir / "sizes.json", sizes)


def _write_config(run_dir: Path, run_cfg: dict) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(run_cfg)).encode())


def probe_hf_cli(args) -> int:
    """`emergence probe --hf PATH_OR_NAME [--hf ...] [--revision R1,R2] [--tokens-per-step N] [--shots K] --out
    SWEEP_DIR [probe.* overrides]`."""
    if not getattr(args, "out", None):
        raise ModelRefused("emergence probe --hf needs --out SWEEP_DIR (the sweep folder to write)")
    revisions = None
    if getattr(args, "revision", None):
        revisions = [r for part in args.revision for r in str(part).split(",")]
    overrides = list(getattr(args, "overrides", None) or [])
    first = getattr(args, "run_dir", None)  # argparse gives the first override to the optional RUN_DIR
    if first:
        if "=" not in str(first):
            raise ModelRefused(f"give a run folder ({first}) or --hf models, not both")
        overrides.insert(0, str(first))
    t0 = time.time()
    out = probe_hf(list(args.hf), revisions, Path(args.out), overrides, getattr(args, "tokens_per_step", None),
                   shots=getattr(args, "shots", None), keep_duplicates=bool(getattr(args, "keep_duplicates", False)))
    print(f"wrote {out} ({len(args.hf)} model(s) x {len(revisions or [None])} revision(s) in "
          f"{time.time() - t0:.0f} s); next: emergence analyze {out}" + (" --x tokens" if revisions else ""))
    return 0


__all__ = ["ModelRefused", "PYTHIA_TOKENS_PER_STEP", "parse_revision", "resolve", "check_config", "check_weights",
           "param_counts", "plan", "probe_hf", "probe_hf_cli", "fingerprint", "duplicate_revisions"]
