"""Probing a run: score its checkpoints on held-out task examples.

For each checkpoint and task, on the same `probe.n` held-out examples (seeded, identical for every checkpoint, size
and seed), one teacher-forced forward pass gives exact match, token accuracy, answer NLL and the Brier score, and a
real greedy generation with a KV cache gives the edit distance. Both run through `emergence.engine`, the engine the
text probe (`emergence.textprobe`) and Hugging Face models (`emergence.hf`) use too: here the model reads the
tasks' own token ids, there their text through a tokenizer. Exact match from the teacher-forced pass is exact:
greedy decoding reproduces the answer (and its end token) if and only if the argmax at every answer position is the
target, because each greedy step then conditions on exactly the teacher-forced prefix.

Writes, per run: `probes.parquet` (tidy rows of `analysis.schema`), `instances.parquet` (per-example answer
log-probabilities, for infinite-resolution analysis, Hu et al. 2023) and `samples.parquet` (a few prompts with the
model's answers, for the report). Probing is incremental (only (checkpoint, task) pairs not yet probed) and
idempotent; a lock file serialises concurrent probes of one run.

Every row with status "ok" carries a finite standard error and its `n`, the independent units it is over: examples
for the task metrics, held-out sequences for the LM loss (`heldout.loss_estimate`), random repeated sequences for the
mechanistic probe (`mechanistic_scores`).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import sys
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from filelock import FileLock
from omegaconf import OmegaConf

from analysis.schema import COLUMNS, coerce
from emergence import checkpoint as ckpt
from emergence import engine, textprobe
from emergence.config import ProbeConfig
from emergence.data import TEXT_SPECIALS, build_source, load_tokenizer
from emergence.files import atomic_write_parquet, write_json
from emergence.heldout import heldout_loss
from emergence.metrics import levenshtein, measurement, probe_set, proportion_stderr, sem
from emergence.model import GPT, GPTConfig
from emergence.tasks import VOCAB

MECHANISTIC = "mechanistic"


# ---------------------------------------------------------------------------------------------------------------------
# Mechanistic probe: induction heads (Olsson et al. 2022).

@torch.no_grad()
def mechanistic_scores(model: GPT, vocab_ids: np.ndarray, device, n: int = 64, seed: int = 0) -> dict[str, dict]:
    """In-context-learning score and prefix-matching score on repeated random sequences: {metric: {"value",
    "stderr", "n"}}, n the number of sequences.

    A random sequence of length P is shown twice (total 2P + 1 with <bos> dropped to fit the context). The ICL score
    is the mean loss on the second copy minus the mean loss on the first copy's tokens (Olsson et al. 2022 use
    "loss at token 500 minus loss at token 50"; repeated sequences make a small context sufficient): more negative
    means the model uses the earlier occurrence. The prefix-matching score of a head is its mean attention, from a
    token in the second copy, to the token right after that token's occurrence in the first copy; we report the
    strongest head's score.

    Standard errors are over sequences, the independent draws: positions within one sequence share its tokens and
    are correlated. Every sequence has the same positions, so each score is exactly the mean of per-sequence scores
    (the sequence's second-copy loss minus its first-copy loss; the head's mean attention over the sequence's
    second-copy positions) and its stderr is their sd / sqrt(n). For prefix matching the stderr is that of the
    chosen head's score given the choice: picking the strongest of all heads on the same sequences biases the
    maximum upward by an amount this stderr does not include.
    """
    T = model.config.block_size
    P = (T - 1) // 2
    nothing = {"value": float("nan"), "stderr": float("nan"), "n": 0}
    if P < 2:
        return {"icl_score": dict(nothing), "prefix_matching": dict(nothing)}
    rng = np.random.default_rng(seed)
    seq = vocab_ids[rng.integers(0, len(vocab_ids), size=(n, P))]
    x = torch.from_numpy(np.concatenate([seq, seq], axis=1)).to(device)
    logits, _, weights = model(x, need_weights=True)
    logp = logits.float().log_softmax(-1)[:, :-1]
    nll = -logp.gather(-1, x[:, 1:, None]).squeeze(-1)  # nll[:, t] is the loss of token t + 1
    first = nll[:, : P - 1].mean(1)
    second = nll[:, P:].mean(1)  # tokens P+1 .. 2P-1: all predictable from the first copy
    icl = (second - first).double().cpu().numpy()
    # query at position q = P + i (second copy, token i) should attend to key i + 1 (after the first occurrence)
    q = torch.arange(P, 2 * P - 1, device=device)
    k = q - P + 1
    best, best_seq = -1.0, None
    for w in weights:  # (B, H, T, T)
        per_seq = w[:, :, q, k].float().mean(dim=2)  # (B, H)
        score = per_seq.mean(0)
        h = int(score.argmax())
        if float(score[h]) > best:
            best, best_seq = float(score[h]), per_seq[:, h].double().cpu().numpy()
    return {"icl_score": {"value": float(icl.mean()), "stderr": sem(icl), "n": len(icl)},
            "prefix_matching": dict(nothing) if best_seq is None else  # no head with a finite score
            {"value": float(best_seq.mean()), "stderr": sem(best_seq), "n": len(best_seq)}}


# ---------------------------------------------------------------------------------------------------------------------
# Probing a run.

def load_model(state: dict, device="cpu") -> GPT:
    model = GPT(GPTConfig(**state["model_config"]))
    model.load_state_dict(state["model"])
    return model.to(device).eval()


def rows_frame(rows: list[dict]) -> pd.DataFrame:
    """Tidy probe rows as a results table (`analysis.schema` columns and types)."""
    if not rows:
        return coerce(pd.DataFrame({c: pd.Series(dtype="object") for c in COLUMNS}))
    return coerce(pd.DataFrame(rows))[list(COLUMNS)]


def _append(path: Path, new: pd.DataFrame, keys: list[str]) -> None:
    if not len(new):
        return
    if path.exists():
        new = pd.concat([pd.read_parquet(path), new], ignore_index=True).drop_duplicates(keys, keep="last")
    atomic_write_parquet(new, path)


def unprobed_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints of a run with no probe row yet (the process was killed between writing one and probing it)."""
    run_dir = Path(run_dir)
    probes_path = run_dir / "probes.parquet"
    if not probes_path.exists():
        return [p for _, p in ckpt.list_checkpoints(run_dir / "checkpoints")]
    rows = pd.read_parquet(probes_path, columns=["step", "task"])
    listed = set(zip(rows["step"].astype(int), rows["task"].astype(str)))
    short = {s for s, _ in listed - probed_pairs(run_dir)}  # a task's probe row without its per-example rows
    done = {s for s, _ in listed} - short
    return [p for s, p in ckpt.list_checkpoints(run_dir / "checkpoints") if s not in done]


def probe_tasks_for(run_cfg: dict, probe_cfg) -> list[str]:
    tasks = list(probe_cfg.tasks) if probe_cfg.tasks else list(run_cfg["task"].get("probe") or [])
    if not tasks:
        tasks = list(run_cfg["task"].get("train") or {})
    return tasks


def probe_run(run_dir: Path, probe_cfg, *, only: list[Path] | None = None, task_suite=None,
              device: str = "cpu") -> pd.DataFrame:
    """Probe the checkpoints of a run that are not yet probed (or just `only`); return the new rows."""
    run_dir = Path(run_dir)
    with FileLock(str(run_dir / ".probe.lock")):
        files = [(ckpt.step_of(p), Path(p)) for p in only] if only else \
            ckpt.list_checkpoints(run_dir / "checkpoints")
        probed = Probed()
        probe_checkpoints(files, probe_cfg, probed_pairs(run_dir), probed, device)
        new, instances, samples = probed.frames()
        write_probes(run_dir, new, instances, samples)
        return new


def probed_pairs(run_dir: Path) -> set[tuple[int, str]]:
    """(step, task) pairs probed completely: in `probes.parquet`, and, for a task that keeps per-example rows (one
    that has them at some step) and was measured at that step, in `instances.parquet` too. A pair short of either
    is probed again. A checkpoint without a step (a Hugging Face model probed without a revision) is step -1."""
    run_dir = Path(run_dir)
    probes_path, inst_path = run_dir / "probes.parquet", run_dir / "instances.parquet"
    if not probes_path.exists():
        return set()
    old = pd.read_parquet(probes_path, columns=["step", "task", "status"])
    done = set(zip(old["step"].fillna(-1).astype(int), old["task"].astype(str)))
    if inst_path.exists():
        inst = pd.read_parquet(inst_path, columns=["step", "task"])
        has = set(zip(inst["step"].fillna(-1).astype(int), inst["task"].astype(str)))
        per_example = {t for _, t in has}
        # a pair measured nowhere (every row of it not measured, or a duplicate revision) has no examples to keep
        ok = old["status"] == "ok"
        measured = set(zip(old["step"].fillna(-1).astype(int)[ok], old["task"].astype(str)[ok]))
        done = {(s, t) for s, t in done if t not in per_example or (s, t) in has or (s, t) not in measured}
    return done


def write_probes(run_dir: Path, new: pd.DataFrame, instances: pd.DataFrame, samples: pd.DataFrame) -> None:
    """Merge new rows into the run's three probe files (a row probed again replaces the old one). probes.parquet,
    which says what was probed, is written last: a process killed before it leaves those checkpoints to be probed
    again, their per-example rows replaced, never a probe row without its examples. The caller holds the run's probe
    lock."""
    run_dir = Path(run_dir)
    _append(run_dir / "instances.parquet", instances, ["run_id", "step", "task", "example_id"])
    _append(run_dir / "samples.parquet", samples, ["run_id", "step", "task", "example_id"])
    _append(run_dir / "probes.parquet", new, ["run_id", "step", "task", "metric"])


class Probed:
    """What probing produced and nothing has written yet: tidy rows, and per-example instance and sample columns.
    Tables are made once, in `frames()` (a pandas table per checkpoint and task cost more than the scoring at the
    smallest sizes)."""

    def __init__(self):
        self.rows: list[dict] = []
        self.instances: list[dict] = []
        self.samples: list[dict] = []

    def __len__(self) -> int:
        return len(self.rows)

    def frames(self) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        return rows_frame(self.rows), _concat_columns(self.instances), _concat_columns(self.samples)


def _concat_columns(parts: list[dict]) -> pd.DataFrame:
    """One table from column dicts with the same keys (values: numpy arrays, or lists of strings)."""
    parts = [p for p in parts if p]
    if not parts:
        return pd.DataFrame()
    return pd.DataFrame({k: [v for p in parts for v in p[k]] if isinstance(parts[0][k], list)
                         else np.concatenate([p[k] for p in parts]) for k in parts[0]})


def probe_checkpoints(files: list[tuple[int, Path]], probe_cfg, done: set[tuple[int, str]], out: Probed,
                      device="cpu", states: dict[int, dict] | None = None) -> list[dict]:
    """Score checkpoints `files` [(step, path)] on every (step, task) pair not in `done` (which is updated), adding
    to `out`; return the new tidy rows. `states` {step: checkpoint payload} stands in for reading a file back
    (inline probing scores the payload it has just written)."""
    if probe_cfg.steps:
        files = [(s, p) for s, p in files if s in set(probe_cfg.steps)]
    first = len(out.rows)
    for step, path in files:
        state = (states or {}).get(step)
        if state is None:
            try:
                state = ckpt.load(path)
            except ckpt.CheckpointError as e:
                print(f"warning: {e}; skipping it and probing the rest", file=sys.stderr)
                continue
        run_cfg = state["config"]
        text_run = run_cfg["data"]["source"] in ("text", "tokens")  # no task vocabulary: only a tokenizer renders tasks
        tok = checkpoint_tokenizer(path)
        if tok is not None:  # a run trained with a tokenizer reads the tasks as text (emergence.textprobe)
            shots = textprobe.probe_shots(probe_cfg)
            labels = textprobe.shot_labels(probe_tasks_for(run_cfg, probe_cfg), shots)
            tasks = list(labels)
        else:
            tasks = [] if text_run else probe_tasks_for(run_cfg, probe_cfg)
        wanted = [t for t in ["lm", *tasks, *([MECHANISTIC] if probe_cfg.mechanistic else [])]
                  if (step, t) not in done]
        if not wanted:
            continue
        done.update((step, t) for t in wanted)
        note_fingerprint(Path(path).parent.parent, step, weights_fingerprint(state["model"]))
        model = load_model(state, device)
        base = {"sweep": run_cfg["sweep"]["name"], "run_id": state["run_id"], "model": run_cfg["model"]["name"],
                "n_params": state["n_params"], "n_params_nonembed": state["n_params_nonembed"],
                "n_layer": state["model_config"]["n_layer"], "d_model": state["model_config"]["d_model"],
                "seed": state["seed"], "step": step, "tokens": float(state["tokens"]),
                "flops": float(state["flops"])}
        if "lm" in wanted:
            out.rows.append({**base, "task": "lm", "metric": "loss", **lm_loss(state, model, device)})
        if tok is not None:
            textprobe.probe_model(engine.GPTCausalLM(model), tok, [labels[t] for t in wanted if t in labels],
                                  probe_cfg, base, out, shots)
        for name in ([] if tok is not None else wanted):
            if name in ("lm", MECHANISTIC):
                continue
            prompts, answers, ids = probe_set(name, probe_cfg.n, probe_cfg.seed)
            new_rows, inst, samp = score_task(model, name, prompts, answers, ids, probe_cfg, VOCAB)
            out.rows += [{**base, **r} for r in new_rows]
            if inst:
                n = len(inst["example_id"])
                out.instances.append({**inst, "run_id": [state["run_id"]] * n, "step": np.full(n, step)})
            if samp:
                k = len(samp["example_id"])
                out.samples.append({**samp, "run_id": [state["run_id"]] * k, "step": np.full(k, step),
                                    "model": [base["model"]] * k, "n_params": np.full(k, base["n_params"]),
                                    "seed": np.full(k, base["seed"])})
        if MECHANISTIC in wanted:
            vocab_ids = textprobe.nonspecial_ids(tok, model.config.vocab_size) if tok is not None \
                else VOCAB.ids(VOCAB.chars) if not text_run \
                else np.arange(min(32, model.config.vocab_size), min(127, model.config.vocab_size), dtype=np.int64)
            for metric, r in mechanistic_scores(model, vocab_ids, device, seed=probe_cfg.seed).items():
                out.rows.append({**base, "task": MECHANISTIC, "metric": metric,
                                 **measurement(r["value"], r["stderr"], r["n"])})
    return out.rows[first:]


def weights_fingerprint(weights: dict) -> str:
    """sha256 of a state dict's tensors (names and bytes, in name order): equal exactly when the weights are."""
    h = hashlib.sha256()
    for name in sorted(weights):
        t = weights[name].detach().cpu().contiguous().reshape(-1)
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def note_fingerprint(run_dir: Path, step: int, fp: str) -> list[int]:
    """Record checkpoint `step`'s weight fingerprint in the run's `fingerprints.json`, and say in one line when an
    earlier step has the same weights (no update between them, or a checkpoint written over with another's: the
    check `emergence probe --hf` makes of a hub's revisions). Both are still probed: in a run of ours either may be
    genuine. Returns the other steps with these weights."""
    path = Path(run_dir) / "fingerprints.json"
    try:
        known = {int(k): v for k, v in json.loads(path.read_text()).items()}
    except (OSError, ValueError, AttributeError):
        known = {}
    same = sorted(s for s, v in known.items() if v == fp and s != step)
    if same:
        print(f"warning: {Path(run_dir).name}: checkpoint step {step} has the weights of step "
              f"{', '.join(map(str, same))} (sha256 {fp[:12]}): no update between them, or a checkpoint written "
              "over with another's; both are probed", file=sys.stderr)
    if known.get(step) != fp:
        known[step] = fp
        write_json(path, {str(k): v for k, v in sorted(known.items())})
    return same


def checkpoint_tokenizer(checkpoint: Path | None):
    """The tokenizer a run trained with, as a `textprobe.TextTokenizer`, when its folder holds `tokenizer.json`
    (data.tokenizer=bpe); None for runs in the task or byte vocabulary, which the char-level probe scores."""
    if checkpoint is None:
        return None
    path = Path(checkpoint)
    run_dir = next((p.parent for p in path.parents if p.name == "checkpoints"), path.parent.parent)
    tok_file = run_dir / "tokenizer.json"
    if not tok_file.is_file():
        return None
    return _read_tokenizer(str(tok_file), tok_file.stat().st_mtime_ns)


@lru_cache(maxsize=8)
def _read_tokenizer(path: str, mtime_ns: int):
    return textprobe.load_tokenizer_file(path)


def lm_loss(state: dict, model: GPT, device) -> dict:
    """A checkpoint's held-out LM loss row (value, stderr, n sequences, status) as training measured it
    (`heldout.heldout_loss`: mean loss per scored token of the run's fixed held-out batches, its standard error over
    sequences). A checkpoint written before payloads carried the standard error is measured again here, on the same
    held-out batches, so that its row has one too."""
    if "val_loss_stderr" in state:
        return measurement(state.get("val_loss"), state["val_loss_stderr"], state.get("val_loss_n"))
    try:
        cfg = OmegaConf.create(state["config"])
        return measurement(*heldout_loss(model, build_source(cfg), cfg, device, contextlib.nullcontext()))
    except Exception as e:  # the run's data may be gone (a text file moved): the loss is then not measured
        print(f"warning: step {state.get('step')} of {state.get('run_id')}: the held-out loss could not be measured "
              f"again for its standard error ({type(e).__name__}: {e}); its lm/loss row is not_measured",
              file=sys.stderr)
        return measurement(None, None, 0)


class InlineProber:
    """Inline probing for the trainer: each checkpoint is scored as it is written (from the payload in memory, and
    its rows returned at once, for the tracker), and the rows are written to the run's files at most every
    `flush_s` seconds and at `flush()`.

    Reading the checkpoint back and writing three parquet files per checkpoint (read, merge, write) cost more than
    the scoring itself at the smallest sizes. Rows not yet written when a process dies are not lost: their
    checkpoints are on disk with no probe rows, and the resumed run probes them again (`unprobed_checkpoints`)."""

    def __init__(self, run_dir: Path, probe_cfg, flush_s: float = 30.0, device="cpu"):
        self.run_dir, self.cfg, self.flush_s, self.device = Path(run_dir), probe_cfg, flush_s, device
        self.done = probed_pairs(self.run_dir)
        self.pending = Probed()
        self.last_flush = time.perf_counter()
        self.seconds = 0.0  # time spent probing and writing, for the run's status

    def __call__(self, path: Path, state: dict | None = None) -> list[dict]:
        t0 = time.perf_counter()
        step = ckpt.step_of(path)
        with torch.random.fork_rng(devices=[]):  # building a model draws an initialisation: keep it out of the
            new = probe_checkpoints([(step, Path(path))], self.cfg, self.done, self.pending, self.device,  # run's
                                    states=None if state is None else {step: state})  # RNG stream
        if time.perf_counter() - self.last_flush >= self.flush_s:
            self.flush()
        self.seconds += time.perf_counter() - t0
        return new

    def flush(self) -> None:
        t0 = time.perf_counter()
        if len(self.pending):
            with FileLock(str(self.run_dir / ".probe.lock")):
                write_probes(self.run_dir, *self.pending.frames())
            self.pending = Probed()
        self.last_flush = time.perf_counter()
        self.seconds += self.last_flush - t0


def token_lists(prompts: np.ndarray, answers: np.ndarray, vocab) -> tuple[list[list[int]], list[list[int]]]:
    """A task's padded prompt and answer arrays as the engine takes them: "<bos> prompt", as training packs it, and
    the answer with its <eos>."""
    return ([[vocab.bos, *p[p != vocab.pad].tolist()] for p in prompts],
            [a[a != vocab.pad].tolist() for a in answers])


def score_task(model, name, prompts, answers, ids, probe_cfg, vocab):
    """All metrics of one task at one checkpoint: tidy rows, per-example instances and a few sample answers (the
    last two as columns, {name: array or list}; `Probed.frames` makes the tables)."""
    n = len(prompts)
    if n == 0:
        rows = [{"task": name, "metric": m, "value": float("nan"), "stderr": float("nan"), "n": 0,
                 "status": "not_measured"} for m in ("exact_match", "token_accuracy", "answer_nll", "brier",
                                                     "edit_distance")]
        return rows, {}, {}
    lm = engine.GPTCausalLM(model)
    p_ids, a_ids = token_lists(prompts, answers, vocab)
    s = engine.teacher_forced(lm, p_ids, a_ids, probe_cfg.batch_size, brier=True)
    count = np.array([max(len(a), 1) for a in a_ids], dtype=np.float64)
    exact = s["correct"] == np.array([len(a) for a in a_ids])  # every answer token, <eos> too, is the argmax
    token_acc, nll, brier = s["correct"] / count, -s["logprob"] / count, s["brier"] / count
    em = float(exact.mean())
    rows = [
        {"metric": "exact_match", "value": em, "stderr": proportion_stderr(em, n), "n": n},
        {"metric": "token_accuracy", "value": float(token_acc.mean()), "stderr": sem(token_acc), "n": n},
        {"metric": "answer_nll", "value": float(nll.mean()), "stderr": sem(nll), "n": n},
        {"metric": "brier", "value": float(brier.mean()), "stderr": sem(brier), "n": n},
    ]
    g = min(n, max(probe_cfg.generate_n, probe_cfg.samples))
    stops = torch.zeros(lm.vocab_size, dtype=torch.bool)
    stops[vocab.eos] = True
    max_new = np.full(g, max(len(a) for a in a_ids))
    outs = [np.array([t for t in o if t != vocab.eos], dtype=np.int64)
            for o in engine.greedy(lm, p_ids[:g], max_new, stops, probe_cfg.batch_size)]
    target = [a[(a != vocab.pad) & (a != vocab.eos)] for a in answers[:g]]
    width = max(1, max(len(o) for o in outs), max(len(t) for t in target))
    pa = np.full((g, width), -1, np.int64)
    pb = np.full((g, width), -2, np.int64)
    for i, (o, t) in enumerate(zip(outs, target)):
        pa[i, :len(o)] = o
        pb[i, :len(t)] = t
    la = np.array([len(o) for o in outs])
    lb = np.array([len(t) for t in target])
    dist = levenshtein(pa, la, pb, lb) / np.maximum(np.maximum(la, lb), 1)
    rows.append({"metric": "edit_distance", "value": float(dist.mean()), "stderr": sem(dist), "n": g})
    rows = [{"task": name, "metric": r["metric"], **measurement(r["value"], r["stderr"], r["n"])} for r in rows]
    inst = {"task": [name] * n, "example_id": np.asarray(ids, dtype=np.int64),
            "answer_logprob": np.asarray(s["logprob"]), "exact": exact.astype(bool)}
    k = min(probe_cfg.samples, g)
    samp = {
        "task": [name] * k, "example_id": np.asarray(ids[:k], dtype=np.int64),
        "prompt": [vocab.decode(p[p != vocab.pad]) for p in prompts[:k]],
        "target": [vocab.decode(t) for t in target[:k]],
        "output": [vocab.decode(o) for o in outs[:k]],
        "correct": [bool(np.array_equal(o, t)) for o, t in zip(outs[:k], target[:k])],
    }
    return rows, inst, samp


def probe_cli(run_dir: Path, overrides: list[str]) -> int:
    """`emergence probe RUN_DIR [probe.tasks=...] [probe.n=...]`."""
    if not (run_dir / "checkpoints").is_dir():
        raise ValueError(f"{run_dir} has no checkpoints/ folder; give a run folder, results/<sweep>/runs/<run_id>")
    base = OmegaConf.structured(ProbeConfig)
    run_cfg_path = run_dir / "config.yaml"
    if run_cfg_path.exists():
        base = OmegaConf.merge(base, OmegaConf.load(run_cfg_path).get("probe", {}))
    for o in overrides:
        if not o.startswith("probe."):
            raise ValueError(f"{o!r}: emergence probe takes probe.* overrides only (probe.tasks=[add2], probe.n=256)")
    cfg = OmegaConf.merge(base, OmegaConf.from_dotlist([o[len("probe."):] for o in overrides]))
    new = probe_run(run_dir, cfg)
    steps = sorted(set(new["step"].astype(int))) if len(new) else []
    print(f"{run_dir}: {len(new)} new rows for {len(steps)} checkpoint(s)" + (f" (steps {steps})" if steps else ""))
    return 0


def generate_text(path: Path, prompt: str, *, max_new_tokens: int = 32, temperature: float = 0.0,
                  seed: int = 0) -> str:
    """Continue `prompt` from a checkpoint; stops at the end-of-answer token for task-trained models."""
    state = ckpt.load(path)
    model = load_model(state)
    tok = checkpoint_tokenizer(path)
    if tok is not None:  # a run trained with a learned tokenizer (data.tokenizer=bpe)
        bpe = load_tokenizer(Path(path).parent.parent)
        ids, eos, decode = [bpe.bos, *bpe.encode_batch([prompt])[0]], bpe.eos, bpe.decode
    elif state["config"]["data"]["source"] == "tokens":
        raise ValueError(f"{path} was trained on pre-tokenized ids (data.source=tokens): its tokenizer is not part of "
                         "the run, so a text prompt cannot be encoded for it")
    elif state["config"]["data"]["source"] == "text":
        ids = [TEXT_SPECIALS["bos"], *prompt.encode("utf-8")]
        eos, decode = TEXT_SPECIALS["eos"], lambda t: bytes(int(i) for i in t if i < 256).decode("utf-8", "replace")
    else:
        ids = [VOCAB.bos, *VOCAB.encode(prompt)]
        eos, decode = VOCAB.eos, VOCAB.decode
    if len(ids) >= model.config.block_size:
        raise ValueError(f"the prompt has {len(ids)} tokens; this model's context is {model.config.block_size}")
    g = torch.Generator().manual_seed(seed)
    out = model.generate(torch.tensor([ids]), max_new_tokens, temperature=temperature, stop_token=eos, generator=g)
    new = out[0, len(ids):].tolist()
    if eos in new:
        new = new[:new.index(eos)]
    return decode(new)
