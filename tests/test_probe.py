"""Probing: metrics against hand computations and real generation, incremental and idempotent probing,
and the whole chain measuring learning (a tiny model learns a held-out task well above chance)."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from analysis.schema import METRICS, validate
from emergence import checkpoint as ckpt
from emergence.config import ProbeConfig, run_dir
from emergence.metrics import levenshtein
from emergence.model import GPT, GPTConfig
from emergence import engine
from emergence.probe import load_model, mechanistic_scores, probe_run
from emergence.tasks import VOCAB, get_task
from emergence.tasks.base import join_examples
from emergence.train import train


def probe_cfg(**kw):
    return OmegaConf.merge(OmegaConf.structured(ProbeConfig), kw)


def test_levenshtein_vectorised_matches_reference():
    def ref(a, b):
        d = list(range(len(b) + 1))
        for i, ca in enumerate(a, 1):
            prev, d[0] = d[0], i
            for j, cb in enumerate(b, 1):
                prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (ca != cb))
        return d[len(b)]

    rng = np.random.default_rng(0)
    A = rng.integers(0, 3, (200, 6))
    B = rng.integers(0, 3, (200, 7))
    la, lb = rng.integers(0, 7, 200), rng.integers(0, 8, 200)
    got = levenshtein(A, la, B, lb)
    want = [ref(list(A[i, :la[i]]), list(B[i, :lb[i]])) for i in range(200)]
    assert got.tolist() == want


def test_metrics_on_a_model_that_knows_the_answer():
    """A 'model' whose logits put all mass on the next token of the example it reads gives exact 1, accuracy 1,
    NLL 0, Brier 0 and edit distance 0, through the engine's teacher forcing and its greedy generation with a
    cache."""
    from emergence.probe import score_task

    prompts, answers, ids = get_task("copy").heldout_set(16, seed=0)
    tokens, _, lengths = join_examples(prompts, answers)
    nxt = {tuple(row[:i + 1]): int(row[i + 1]) for row, L in zip(tokens.tolist(), lengths) for i in range(L - 1)}

    class Oracle(torch.nn.Module):
        config = GPTConfig(n_layer=1, d_model=4, n_head=1, vocab_size=VOCAB.size, block_size=tokens.shape[1])
        blocks = [None]

        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x, start=0, cache=None, **k):
            seen = x if cache is None else torch.cat([cache[0].get("ids", x[:, :0]), x], 1)
            if cache is not None:
                cache[0]["ids"] = seen
            logits = torch.full((*x.shape, VOCAB.size), -1e4)
            first = seen.shape[1] - x.shape[1]
            for b in range(x.shape[0]):
                for j in range(x.shape[1]):
                    t = nxt.get(tuple(seen[b, :first + j + 1].tolist()))
                    if t is not None:
                        logits[b, j, t] = 1e4
            return logits, None

    rows, inst, samp = score_task(Oracle(), "copy", prompts, answers, ids, probe_cfg(n=16, generate_n=16), VOCAB)
    got = {r["metric"]: r["value"] for r in rows}
    assert got["exact_match"] == 1 and got["token_accuracy"] == pytest.approx(1)
    assert got["answer_nll"] == pytest.approx(0, abs=1e-6) and got["brier"] == pytest.approx(0, abs=1e-6)
    assert got["edit_distance"] == 0 and all(samp["correct"]) and inst["exact"].all()
    assert np.allclose(inst["answer_logprob"], 0, atol=1e-5)


def test_every_metric_declares_a_direction():
    for m in ("exact_match", "token_accuracy", "answer_nll", "brier", "edit_distance", "loss", "icl_score",
              "prefix_matching"):
        assert isinstance(METRICS[m].higher_is_better, bool)


def test_mechanistic_scores_are_finite_and_bounded():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, d_model=32, n_head=2, vocab_size=VOCAB.size, block_size=20)).eval()
    s = mechanistic_scores(model, np.arange(3, VOCAB.size), "cpu", n=8)
    assert np.isfinite(s["icl_score"]["value"]) and 0 <= s["prefix_matching"]["value"] <= 1
    for r in s.values():
        assert r["n"] == 8 and np.isfinite(r["stderr"]) and r["stderr"] > 0


def test_mechanistic_stderr_is_over_sequences():
    """Each score is the mean of per-sequence scores and its stderr their sd / sqrt(n): more sequences, a smaller
    stderr, about as 1 / sqrt(n)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, d_model=32, n_head=2, vocab_size=VOCAB.size, block_size=20)).eval()
    few = mechanistic_scores(model, np.arange(3, VOCAB.size), "cpu", n=16)
    many = mechanistic_scores(model, np.arange(3, VOCAB.size), "cpu", n=256)
    for m in ("icl_score", "prefix_matching"):
        assert many[m]["n"] == 256 and 0 < many[m]["stderr"] < few[m]["stderr"]
        assert abs(many[m]["value"] - few[m]["value"]) < 5 * few[m]["stderr"]


def test_loss_estimate_is_the_per_token_mean_with_a_stderr_over_sequences():
    from emergence.heldout import loss_estimate

    rng = np.random.default_rng(0)
    per_seq = rng.normal(2.0, 0.3, 50)
    v, se, n = loss_estimate(per_seq * 10, np.full(50, 10))  # every sequence scores 10 tokens
    assert n == 50 and v == pytest.approx(per_seq.mean())
    assert se == pytest.approx(per_seq.std(ddof=1) / np.sqrt(50))
    # unequal counts: the per-token mean; sequences without a scored token do not count
    v, se, n = loss_estimate([4.0, 3.0, 0.0, 9.0], [2, 1, 0, 3])
    assert n == 3 and v == pytest.approx(16 / 6) and se > 0
    assert np.isnan(loss_estimate([1.0], [1])[1])  # one sequence: no spread to measure


def test_every_ok_probe_row_has_a_finite_stderr_and_n(tiny):
    """Every row the probe marks ok carries a finite standard error and its n, the held-out LM loss included; the
    loss's stderr is plausible (positive, well below the loss) and shrinks with more held-out sequences."""
    se = {}
    for batches in (1, 4):
        cfg = tiny(f"train.eval_batches={batches}", f"sweep.name=eval{batches}", "probe.n=8", "probe.generate_n=2")
        train(cfg)
        rows = validate(pd.read_parquet(run_dir(cfg) / "probes.parquet"))
        ok = rows[rows["status"] == "ok"]
        assert {"lm", "mechanistic"} <= set(ok["task"]) and len(ok) == len(rows)
        assert np.isfinite(ok["stderr"]).all() and (ok["stderr"] >= 0).all(), ok[~np.isfinite(ok["stderr"])]
        assert (ok["n"] >= 1).all()
        lm = ok[(ok["task"] == "lm") & (ok["metric"] == "loss")].set_index("step")
        assert (lm["n"] == batches * cfg.train.batch_size).all()
        assert ((lm["stderr"] > 0) & (lm["stderr"] < 0.2 * lm["value"])).all(), lm[["value", "stderr"]]
        mech = ok[ok["task"] == "mechanistic"]
        assert set(mech["metric"]) == {"icl_score", "prefix_matching"} and (mech["n"] == 64).all()
        se[batches] = lm["stderr"]
    # 4x the sequences: about half the standard error at every checkpoint (the same weights: evaluation draws
    # nothing from the training stream)
    ratio = se[4] / se[1]
    assert ((ratio > 0.3) & (ratio < 0.8)).all(), ratio


def test_a_checkpoint_without_a_stored_stderr_is_measured_again(tiny, tmp_path):
    """A checkpoint whose payload predates the stored standard error gets its held-out loss measured again by the
    probe, on the same batches: the same value and stderr as training stored."""
    cfg = tiny("probe.inline=false", "train.eval_batches=2")
    train(cfg)
    src = run_dir(cfg) / "checkpoints" / "step_12.pt"
    state = ckpt.load(src)
    old = tmp_path / "old"
    (old / "checkpoints").mkdir(parents=True)
    stored = (state.pop("val_loss"), state.pop("val_loss_stderr"), state.pop("val_loss_n"))
    ckpt.save(old / "checkpoints" / "step_12.pt", state)
    rows = probe_run(old, probe_cfg(n=8, generate_n=2, tasks=["copy"], mechanistic=False))
    lm = rows[rows["task"] == "lm"].iloc[0]
    assert lm["status"] == "ok" and lm["n"] == stored[2] == 2 * cfg.train.batch_size
    assert lm["value"] == pytest.approx(stored[0], rel=1e-5) and lm["stderr"] == pytest.approx(stored[1], rel=1e-4)


@pytest.mark.slow
def test_training_raises_heldout_exact_match_far_above_chance(tiny):
    """The whole chain measures learning: copy is learned to near-perfect held-out exact match (chance: ~0)."""
    cfg = tiny("task=smoke", "data.seq_len=20", "data.pack=false", "train.max_steps=400", "train.batch_size=32",
               "train.ckpt_log_until=0", "train.ckpt_every=100", "train.warmup_steps=50", "train.lr=0.01",
               "probe.n=128", "probe.generate_n=32", "train.log_interval=100")
    s = train(cfg)
    assert s["state"] == "done"
    res = validate(pd.read_parquet(run_dir(cfg) / "probes.parquet"))
    em = res[(res["task"] == "copy") & (res["metric"] == "exact_match")].set_index("step")["value"]
    assert em.loc[0] < 0.02  # an untrained model does not copy 6 random characters
    assert em.loc[400] > 0.5, em
    ed = res[(res["task"] == "copy") & (res["metric"] == "edit_distance")].set_index("step")["value"]
    assert ed.loc[400] < ed.loc[0]
    # exact match from one teacher-forced pass equals real greedy decoding with a KV cache, example by example,
    # on checkpoints where the model is right on some examples and wrong on others
    prompts, answers, _ = get_task("copy").heldout_set(128, seed=0)
    p_ids = [[VOCAB.bos, *p[p != VOCAB.pad].tolist()] for p in prompts]
    a_ids = [a[a != VOCAB.pad].tolist() for a in answers]
    seen = set()
    for step, path in ckpt.list_checkpoints(run_dir(cfg) / "checkpoints"):
        model = load_model(ckpt.load(path))
        tf = engine.teacher_forced(engine.GPTCausalLM(model), p_ids, a_ids, 64)
        exact = tf["correct"] == np.array([len(a) for a in a_ids])
        # the model's own generate, one example at a time: no batching and no engine in the way
        outs = [model.generate(torch.tensor([p]), answers.shape[1], stop_token=VOCAB.eos)[0, len(p):].tolist()
                for p in p_ids]
        generated = np.array([o[:o.index(VOCAB.eos)] == a[:-1] if VOCAB.eos in o else False
                              for o, a in zip(outs, a_ids)])
        assert np.array_equal(exact, generated), step
        seen |= set(exact.tolist())
    assert seen == {True, False}


def test_probing_is_incremental_and_idempotent(tiny):
    cfg = tiny("probe.inline=false")
    train(cfg)
    folder = run_dir(cfg)
    assert not (folder / "probes.parquet").exists()
    first = probe_run(folder, probe_cfg(n=8, generate_n=2, steps=[0, 4]))
    assert sorted(set(first["step"])) == [0, 4]
    rows = pd.read_parquet(folder / "probes.parquet")
    again = probe_run(folder, probe_cfg(n=8, generate_n=2, steps=[0, 4]))
    assert len(again) == 0 and len(pd.read_parquet(folder / "probes.parquet")) == len(rows)
    rest = probe_run(folder, probe_cfg(n=8, generate_n=2))
    assert sorted(set(rest["step"])) == [1, 2, 6, 12]
    allrows = validate(pd.read_parquet(folder / "probes.parquet"))
    assert not allrows.duplicated(["run_id", "step", "task", "metric"]).any()
    # a new task for already-probed checkpoints adds only that task
    more = probe_run(folder, probe_cfg(n=8, generate_n=2, tasks=["add1"], mechanistic=False))
    assert set(more["task"]) == {"add1"} and len(set(more["step"])) == 6
    inst = pd.read_parquet(folder / "instances.parquet")
    assert {"step", "task", "example_id", "answer_logprob", "exact"} <= set(inst.columns)
    assert (inst["answer_logprob"] <= 0).all()
    # the same examples at every checkpoint
    ids = inst[inst["task"] == "copy"].groupby("step")["example_id"].apply(lambda s: tuple(sorted(s)))
    assert ids.nunique() == 1


def test_inline_probing_scores_the_payload_and_matches_probing_the_files(tiny):
    """Inline probing (payload in memory, files written in batches) gives the rows that probing the written
    checkpoint files afterwards gives, and the run's status says how long probing took."""
    inline = tiny("probe.n=8", "probe.generate_n=2", "sweep.name=inline")
    summary = train(inline)
    folder = run_dir(inline)
    st = json.loads((folder / "status.json").read_text())
    assert 0 < st["probe_s"] < st["wall_s"] and summary["probe_s"] == st["probe_s"]
    later = tiny("probe.n=8", "probe.generate_n=2", "probe.inline=false", "sweep.name=later")
    train(later)
    probe_run(run_dir(later), later.probe)
    keys = ["step", "task", "metric"]
    for name in ("probes", "instances", "samples"):
        a = pd.read_parquet(folder / f"{name}.parquet").drop(columns=["sweep"], errors="ignore")
        b = pd.read_parquet(run_dir(later) / f"{name}.parquet").drop(columns=["sweep"], errors="ignore")
        by = keys if name == "probes" else ["step", "task", "example_id"]
        a, b = a.sort_values(by, ignore_index=True), b.sort_values(by, ignore_index=True)
        assert len(a) and list(a.columns) == list(b.columns)
        pd.testing.assert_frame_equal(a, b, check_dtype=False)
    assert sorted(set(pd.read_parquet(folder / "probes.parquet")["step"])) == [0, 1, 2, 4, 6, 12]


def test_probe_cli_and_generate(tiny, tmp_path):
    import subprocess
    import sys

    cfg = tiny("probe.inline=false")
    train(cfg)
    folder = run_dir(cfg)
    p = subprocess.run([sys.executable, "-m", "emergence", "probe", str(folder), "probe.n=8", "probe.generate_n=2",
                        "probe.steps=[12]"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "steps [12]" in p.stdout and "rebuilt" not in p.stdout  # a run outside a sweep: no sweep tables to rebuild
    sweep = folder.parent.parent
    (sweep / "grid.json").write_text(json.dumps({"runs": [{"run_id": folder.name, "model": "l1d8", "seed": 0}],
                                                 "overrides": []}))
    p = subprocess.run([sys.executable, "-m", "emergence", "probe", str(folder), "probe.n=8", "probe.generate_n=2",
                        "probe.steps=[4]"], capture_output=True, text=True)
    assert p.returncode == 0 and f"{sweep / 'results.parquet'}: rebuilt" in p.stdout, p.stderr
    assert 4 in set(pd.read_parquet(sweep / "results.parquet")["step"])  # the new rows reach the sweep's table
    p = subprocess.run([sys.executable, "-m", "emergence", "generate", str(folder / "checkpoints" / "step_12.pt"),
                        "C:abc123=", "--max-new-tokens", "8"], capture_output=True, text=True)
    assert p.returncode == 0 and len(p.stdout.strip("\n")) <= 8
    bad = subprocess.run([sys.executable, "-m", "emergence", "probe", str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode == 2 and "no checkpoints/ folder" in bad.stderr


def test_the_engine_scores_our_gpt_as_one_padded_forward_pass_does():
    """score_task runs through the shared engine (equal-length batches, a KV cache for generation); its numbers
    equal a direct computation from one right-padded forward pass over the joined examples."""
    from emergence.probe import score_task

    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, d_model=32, n_head=2, vocab_size=VOCAB.size, block_size=32)).eval()
    prompts, answers, ids = get_task("add3").heldout_set(64, seed=0)
    rows, inst, _ = score_task(model, "add3", prompts, answers, ids, probe_cfg(n=64, generate_n=8), VOCAB)
    got = {r["metric"]: r["value"] for r in rows}
    tokens, is_answer, _ = join_examples(prompts, answers)
    x, m = torch.from_numpy(tokens), torch.from_numpy(is_answer)[:, 1:]
    with torch.no_grad():
        logp = model(x[:, :-1])[0].log_softmax(-1)
    tok = logp.gather(-1, x[:, 1:, None]).squeeze(-1)
    right = (logp.argmax(-1) == x[:, 1:]) & m
    count = m.sum(1)
    brier = (logp.exp().square().sum(-1) - 2 * tok.exp() + 1)
    assert np.array_equal(inst["exact"], (right | ~m).all(1).numpy())
    assert got["token_accuracy"] == pytest.approx(float((right.sum(1) / count).mean()), abs=1e-6)
    assert got["answer_nll"] == pytest.approx(float((-(tok * m).sum(1) / count).mean()), rel=1e-5)
    assert got["brier"] == pytest.approx(float(((brier * m).sum(1) / count).mean()), rel=1e-5)
    assert np.allclose(inst["answer_logprob"], (tok * m).sum(1).numpy(), atol=1e-4)


def test_checkpoints_with_the_same_weights_are_named(tmp_path, capsys):
    """The fingerprint is of the weights alone (a copy has it, one changed element does not); a step whose weights
    an earlier step has is named in one line, and every step's fingerprint is kept in the run's folder."""
    from emergence.probe import note_fingerprint, weights_fingerprint

    torch.manual_seed(0)
    w = GPT(GPTConfig(n_layer=1, d_model=16, n_head=2, vocab_size=VOCAB.size, block_size=8)).state_dict()
    copy = {k: v.clone() for k, v in w.items()}
    moved = {k: v.clone() for k, v in w.items()}
    next(iter(moved.values())).view(-1)[0] += 1e-3
    assert weights_fingerprint(w) == weights_fingerprint(copy) != weights_fingerprint(moved)
    assert weights_fingerprint({k: v.bfloat16() for k, v in w.items()}) != weights_fingerprint(w)
    assert note_fingerprint(tmp_path, 100, weights_fingerprint(w)) == []
    assert note_fingerprint(tmp_path, 200, weights_fingerprint(moved)) == []
    assert note_fingerprint(tmp_path, 300, weights_fingerprint(copy)) == [100]
    err = capsys.readouterr().err
    assert "checkpoint step 300 has the weights of step 100" in err and err.count("warning") == 1
    assert sorted(json.loads((tmp_path / "fingerprints.json").read_text())) == ["100", "200", "300"]
