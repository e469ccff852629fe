"""Probing beside lm-evaluation-harness: the same local model, the same items, the same two metrics, timed in one run.

`emergence bench --lm-eval MODEL_FOLDER` writes one of our tasks (its held-out probe set, `probe_set`) as a local
JSON-lines dataset with two lm-eval task configs: `generate_until` (greedy, stopping at a newline, for exact match)
and `loglikelihood` of the answer after the prompt (no delimiter between them, as our probe scores it). It scores the
items with lm-eval's `HFLM` (`simple_evaluate`, per-item samples logged) and with our engine (`emergence.engine`:
`teacher_forced` and `greedy` on `HFCausalLM`), both on one already loaded model, on the CPU, in float32, at one
batch size and one generation length, and reports examples per second for each, the ratio, and whether the scores
agree item by item: the generated text, exact match, and the answer's log-probability (within 1e-3 nats).

lm-eval is an optional dependency (`pip install 'emergence[bench]'`); nothing else imports this module.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from emergence import engine, textprobe
from emergence.metrics import probe_set
from emergence.tasks import get_task

LOGPROB_TOL = 1e-3  # nats: float32 sums of a few tokens' log-probabilities, batched differently


def task_files(folder: Path, name: str, prompts: list[str], answers: list[str], max_gen: int) -> list[str]:
    """The items as `items.jsonl` and two lm-eval task configs beside it; returns the two task names."""
    with open(folder / "items.jsonl", "w") as f:
        for i, (p, a) in enumerate(zip(prompts, answers)):
            f.write(json.dumps({"id": i, "prompt": p, "answer": a}) + "\n")
    common = (f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {json.dumps(str(folder / 'items.jsonl'))}\n"
              "test_split: test\ndoc_to_text: \"{{prompt}}\"\ndoc_to_target: \"{{answer}}\"\ntarget_delimiter: \"\"\n")
    gen, ll = f"emergence_{name}_gen", f"emergence_{name}_ll"
    (folder / f"{gen}.yaml").write_text(
        f"task: {gen}\noutput_type: generate_until\n{common}"
        f"generation_kwargs:\n  until: [\"\\n\"]\n  do_sample: false\n  max_gen_toks: {max_gen}\n"
        "metric_list:\n  - metric: exact_match\n")
    (folder / f"{ll}.yaml").write_text(f"task: {ll}\noutput_type: loglikelihood\n{common}"
                                       "metric_list:\n  - metric: perplexity\n")
    return [gen, ll]


def run_lmeval(model, tok, folder: Path, names: list[str], batch_size: int, bos: bool
               ) -> tuple[list[str], np.ndarray, float]:
    """lm-eval's generations and answer log-probabilities, item by item (ordered by id), and its wall time; `bos`:
    whether a begin-of-text token precedes each prompt, as our encoding puts one."""
    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):  # a local dataset and a loaded model: never the network
        os.environ.setdefault(var, "1")
    from lm_eval import simple_evaluate  # optional dependency (the bench extra)
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size, device="cpu", dtype="float32",
              add_bos_token=bos)
    manager = TaskManager(include_path=str(folder))
    t0 = time.perf_counter()
    out = simple_evaluate(model=lm, tasks=names, task_manager=manager, log_samples=True, bootstrap_iters=0)
    seconds = time.perf_counter() - t0
    gen = sorted(out["samples"][names[0]], key=lambda s: s["doc"]["id"])
    ll = sorted(out["samples"][names[1]], key=lambda s: s["doc"]["id"])
    texts = [s["filtered_resps"][0] for s in gen]
    logprobs = np.array([float(s["resps"][0][0][0]) for s in ll])
    return texts, logprobs, seconds


def run_ours(model, text_tok, prompts: list[str], answers: list[str], max_gen: int, batch_size: int
             ) -> tuple[list[str], np.ndarray, float]:
    """Our engine's generations (the text before the first newline) and answer log-probabilities, and its time."""
    lm = engine.HFCausalLM(model)
    t0 = time.perf_counter()
    p_ids = text_tok.encode(prompts, special=True)
    a_ids = text_tok.encode_answers(prompts, answers)
    tf = engine.teacher_forced(lm, p_ids, a_ids, batch_size)
    gen = engine.greedy(lm, p_ids, np.full(len(prompts), max_gen), text_tok.stops(lm.vocab_size), batch_size)
    outputs = [textprobe.answer_text(text_tok, g) for g in gen]
    return outputs, tf["logprob"], time.perf_counter() - t0


def lmeval_bench(model_dir, task: str = "add2", n: int = 128, shots: int = 0, seed: int = 1234,
                 batch_size: int = 16) -> dict:
    """Score one task's probe set with both tools on the model in `model_dir` (a local Hugging Face folder) and
    compare them (see the module's docstring)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer  # optional dependency (the hf extra)

    model_dir = Path(model_dir)
    if isinstance(n, bool) or int(n) != n or n < 1 or batch_size < 1:
        raise ValueError(f"--n and --batch-size must be whole numbers of at least 1, got {n} and {batch_size}")
    if not (model_dir / "config.json").is_file():
        raise ValueError(f"--lm-eval {model_dir} is not a local Hugging Face model folder (no config.json)")
    prompts_ids, answers_ids, _ = probe_set(task, n, seed, shots)
    prompts, answers = get_task(task, shots).text(prompts_ids, answers_ids)
    answers = [a.strip() for a in answers]
    max_gen = max(len(a) for a in answers) + 1  # every token carries a character: the answer and a stop fit
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    text_tok = textprobe.TextTokenizer(tok)
    ours, our_lp, our_s = run_ours(model, text_tok, prompts, answers, max_gen, batch_size)
    # the same input ids for lm-eval: a begin-of-text token where our encoding of a prompt adds one
    bos = len(text_tok.encode(["1"], special=True)[0]) > len(text_tok.encode(["1"], special=False)[0])
    with tempfile.TemporaryDirectory() as tmp:
        names = task_files(Path(tmp), get_task(task, shots).name, prompts, answers, max_gen)
        theirs, their_lp, their_s = run_lmeval(model, tok, Path(tmp), names, batch_size, bos)
    theirs = [t.split("\n")[0].strip() for t in theirs]
    our_em = np.array([o == a for o, a in zip(ours, answers)])
    their_em = np.array([t == a for t, a in zip(theirs, answers)])
    same_text = np.array([o == t for o, t in zip(ours, theirs)])
    lp_diff = np.abs(our_lp - their_lp)
    return {"task": get_task(task, shots).name, "n": len(prompts), "batch_size": batch_size, "max_gen": max_gen,
            "ours_s": our_s, "lmeval_s": their_s, "ours_per_s": len(prompts) / our_s,
            "lmeval_per_s": len(prompts) / their_s, "ratio": their_s / our_s,
            "exact_match": {"ours": float(our_em.mean()), "lmeval": float(their_em.mean())},
            "agree_exact": int((our_em == their_em).sum()), "agree_text": int(same_text.sum()),
            "agree_logprob": int((lp_diff <= LOGPROB_TOL).sum()), "max_logprob_diff": float(lp_diff.max()),
            "agree": bool((our_em == their_em).all() and same_text.all() and (lp_diff <= LOGPROB_TOL).all())}


def describe(r: dict) -> str:
    """The bench's result in three lines."""
    return (f"{r['task']}, {r['n']} items, batch {r['batch_size']}, up to {r['max_gen']} new tokens: ours "
            f"{r['ours_per_s']:.1f} examples/s ({r['ours_s']:.2f} s), lm-evaluation-harness {r['lmeval_per_s']:.1f} "
            f"examples/s ({r['lmeval_s']:.2f} s): {r['ratio']:.2f}x\n"
            f"agreement item by item: exact match {r['agree_exact']}/{r['n']} (ours {r['exact_match']['ours']:.3f}, "
            f"lm-eval {r['exact_match']['lmeval']:.3f}), generated text {r['agree_text']}/{r['n']}, answer "
            f"log-probability {r['agree_logprob']}/{r['n']} within {LOGPROB_TOL:g} (largest difference "
            f"{r['max_logprob_diff']:.2g})\n"
            + ("the scores agree on every item" if r["agree"] else "the scores do NOT agree on every item"))
