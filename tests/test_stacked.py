"""Stacked seeds: one model with a seed axis must train each seed as its own run would (within rounding)."""
import pandas as pd
import pytest
import torch

from emergence import checkpoint as ckpt
from emergence.config import run_dir
from emergence.model import GPT, GPTConfig
from emergence.stacked import StackedGPT, StackedTrainer, build_models, stacked_optimizer, train_seeds
from emergence.optim import make_optimizer
from emergence.train import train

SHAPES = [
    dict(n_layer=2, d_model=16, n_head=2, vocab_size=30, block_size=12),
    dict(n_layer=1, d_model=16, n_head=4, vocab_size=30, block_size=12, pos="rotary", tie_embeddings=False),
    dict(n_layer=1, d_model=8, n_head=2, vocab_size=20, block_size=8, bias=False),
]


def batch(S, B, T, V, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, V, (S, B, T), generator=g)
    y = torch.randint(0, V, (S, B, T), generator=g)
    y[:, :, : T // 2] = -100  # only some positions are answers, as in the task rows
    return x, y


@pytest.mark.parametrize("shape", SHAPES)
def test_stacked_losses_and_gradients_equal_separate_models(shape):
    c = GPTConfig(**shape)
    models, _ = build_models(c, [0, 1, 2])
    stack = StackedGPT(models)
    x, y = batch(3, 4, c.block_size, c.vocab_size)
    losses = stack(x, y)
    losses.sum().backward()
    for s, m in enumerate(models):
        _, loss = m(x[s], y[s])
        loss.backward()
        assert losses[s].item() == pytest.approx(loss.item(), abs=1e-5)
        grads = dict(m.named_parameters())
        for name in stack.names:
            torch.testing.assert_close(stack.get(name).grad[s], grads[name].grad, atol=1e-5, rtol=1e-4)


def test_seeds_keep_their_own_initialisation_and_state_round_trips():
    c = GPTConfig(**SHAPES[0])
    models, rng = build_models(c, [3, 7])
    torch.manual_seed(7)
    alone = GPT(c)
    assert torch.equal(rng[1], torch.get_rng_state())  # the RNG state train() would checkpoint for seed 7
    stack = StackedGPT(models)
    state = stack.seed_state(1)
    assert all(torch.equal(state[k], v) for k, v in alone.state_dict().items())
    assert not torch.equal(stack.seed_state(0)["tok.weight"], state["tok.weight"])


def test_clip_is_clip_grad_norm_for_each_seed():
    c = GPTConfig(**SHAPES[0])
    models, _ = build_models(c, [0, 1, 2])
    stack = StackedGPT(models)
    opt = stacked_optimizer(stack, 1e-3, 0.1, (0.9, 0.98), "cpu")
    g = torch.Generator().manual_seed(0)
    scales = [0.01, 1.0, 50.0]  # one seed under the limit, two over it
    for name, p in stack.named_stacked():
        p.grad.copy_(torch.randn(p.shape, generator=g) * torch.tensor(scales).view(3, *[1] * (p.dim() - 1)))
        for s, m in enumerate(models):
            dict(m.named_parameters())[name].grad = p.grad[s].clone()
    norms = opt.clip(1.0)
    for s, m in enumerate(models):
        expected = torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        assert norms[s].item() == pytest.approx(expected.item(), rel=1e-5)
        for name, p in m.named_parameters():
            torch.testing.assert_close(stack.get(name).grad[s], p.grad, atol=1e-7, rtol=1e-5)
    assert norms[0] < 1 < norms[1] < norms[2]


def test_a_diverging_seed_does_not_touch_the_others():
    c = GPTConfig(**SHAPES[0])
    kw = dict(lr=1e-2, weight_decay=0.1, betas=(0.9, 0.98), grad_clip=1.0, total_steps=10, warmup_steps=0,
              min_lr_ratio=0.1)
    a = StackedTrainer(c, [0, 1, 2], **kw)
    b = StackedTrainer(c, [0, 1, 2], **kw)
    with torch.no_grad():
        b.stack.get("blocks.0.fc.weight")[1].fill_(float("nan"))
    x, y = batch(3, 4, c.block_size, c.vocab_size)
    for _ in range(3):
        la, _, _ = a.step([(x, y)])
        lb, _, _ = b.step([(x, y)])
    assert torch.isnan(lb[1])
    for s in (0, 2):
        assert lb[s].item() == la[s].item()
        assert torch.equal(b.stack.seed_state(s)["tok.weight"], a.stack.seed_state(s)["tok.weight"])


def test_stacked_optimizer_uses_make_optimizers_grouping_and_flags():
    c = GPTConfig(**SHAPES[0])
    tr = StackedTrainer(c, [0, 1], lr=1e-3, weight_decay=0.1, betas=(0.9, 0.98), grad_clip=1.0, total_steps=10,
                        warmup_steps=0, min_lr_ratio=0.1)
    one = make_optimizer(GPT(c), 1e-3, 0.1, (0.9, 0.98), "cpu")
    a, b = tr.opt.state_dict(seed=0)["param_groups"], one.state_dict()["param_groups"]
    assert [g["params"] for g in a] == [g["params"] for g in b] and len(a) == 2
    assert [g["weight_decay"] for g in a] == [0.1, 0.0]
    for k in ("foreach", "fused"):
        assert bool(tr.opt.defaults.get(k)) == bool(one.defaults.get(k))


def _runs(results, cfgs):
    return [run_dir(c) for c in cfgs], [r["run_dir"] for r in results]


def test_train_seeds_matches_separate_train_runs(tiny, tmp_path):
    """Three seeds of the tiny config: same run ids, files, checkpoint steps and keys; weights, optimizer moments,
    losses and held-out losses equal up to rounding (batched products sum in another order)."""
    seeds = [0, 1, 2]
    sep = [train(tiny(f"seed={s}", f"paths.results={tmp_path / 'sep'}", "probe.inline=false")) for s in seeds]
    st = train_seeds(tiny(f"paths.results={tmp_path / 'st'}", "probe.inline=false"), seeds)
    assert [r["run_id"] for r in sep] == [r["run_id"] for r in st]
    for a, b in zip(sep, st):
        assert a["state"] == b["state"] == "done" and not b["skipped"]
        fa, fb = (ckpt.list_checkpoints(f"{r['run_dir']}/checkpoints") for r in (a, b))
        assert [s for s, _ in fa] == [s for s, _ in fb] == [0, 1, 2, 4, 6, 12]
        for (_, pa), (_, pb) in zip(fa, fb):
            A, B = ckpt.load(pa), ckpt.load(pb)
            assert set(A) == set(B)
            assert A["run_id"] == B["run_id"] and A["seed"] == B["seed"] and A["tokens"] == B["tokens"]
            assert torch.equal(A["rng"]["torch"], B["rng"]["torch"])
            assert list(A["model"]) == list(B["model"])
            for k in A["model"]:
                torch.testing.assert_close(A["model"][k], B["model"][k], atol=1e-4, rtol=1e-4)
            for i, st_a in A["optimizer"]["state"].items():
                for k in ("exp_avg", "exp_avg_sq"):
                    torch.testing.assert_close(st_a[k], B["optimizer"]["state"][i][k], atol=1e-6, rtol=1e-3)
            assert B["val_loss"] == pytest.approx(A["val_loss"], abs=1e-5)
        la = pd.read_parquet(f"{a['run_dir']}/train_log.parquet")
        lb = pd.read_parquet(f"{b['run_dir']}/train_log.parquet")
        assert list(la.columns) == list(lb.columns) and list(la["step"]) == list(lb["step"])
        assert (la["loss"] - lb["loss"]).abs().max() < 1e-4
        assert (la["grad_norm"] - lb["grad_norm"]).abs().max() < 1e-3
        assert b["final_loss"] == pytest.approx(a["final_loss"], abs=1e-4)
    # different seeds really are different runs
    assert len({round(r["final_loss"], 6) for r in st}) == 3


def test_single_and_stacked_runs_tell_the_tracker_the_same_metrics(tiny, tmp_path, monkeypatch):
    """One run lifecycle (`emergence.run`): a single run and stacked seeds log the same train/* keys, MFU included,
    each MFU the run's own tokens/s x FLOPs per token over the measured peak; and the same checkpoint keys."""
    import emergence.run as run

    logged: dict[str, list[dict]] = {}

    class Tracker:
        def __init__(self, rid):
            self.id, self.rid = rid, rid

        def log(self, metrics, step):
            logged.setdefault(self.rid, []).append(dict(metrics, step=step))

        def log_checkpoint(self, path, step):
            pass

        def finish(self, state):
            pass

    import emergence.train

    for module in (run, emergence.train):
        monkeypatch.setattr(module, "make_run_tracker", lambda cfg, rid, derived, resume_id: Tracker(rid))
    single = train(tiny("seed=5", f"paths.results={tmp_path / 'one'}", "probe.inline=false"))
    stacked = train_seeds(tiny(f"paths.results={tmp_path / 'st'}", "probe.inline=false"), [0, 1])
    fpt = single["flops_per_token"]
    keys, peaks = set(), []
    for r in [single] + stacked:
        rows = [m for m in logged[r["run_id"]] if "train/loss" in m]
        assert len(rows) >= 3
        keys.add(frozenset(rows[0]))
        assert all(0 < m["train/mfu"] < 1 for m in rows)
        peaks += [m["train/tokens_per_s"] * fpt / m["train/mfu"] for m in rows]  # the one measured peak
    assert peaks == pytest.approx([peaks[0]] * len(peaks))
    assert len(keys) == 1 and {"train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s",
                                "train/mfu"} <= set(next(iter(keys)))
    a = ckpt.load(ckpt.list_checkpoints(f"{single['run_dir']}/checkpoints")[-1][1])
    b = ckpt.load(ckpt.list_checkpoints(f"{stacked[0]['run_dir']}/checkpoints")[-1][1])
    assert set(a) == set(b)


def test_stacked_checkpoints_resume_with_train_and_done_runs_are_skipped(tiny, tmp_path):
    cfg = tiny(f"paths.results={tmp_path}", "probe.inline=false")
    first = train_seeds(cfg, [0, 1])
    folder = run_dir(tiny(f"paths.results={tmp_path}", "probe.inline=false", "seed=1"))
    final = ckpt.load(folder / "checkpoints" / "step_12.pt")["model"]
    # interrupt seed 1 after step 6: train() resumes it from the stacked checkpoint (optimizer state included)
    (folder / "checkpoints" / "step_12.pt").unlink()
    (folder / "status.json").unlink()
    again = train_seeds(cfg, [0, 1])
    assert again[0]["skipped"] and again[0]["run_id"] == first[0]["run_id"]
    assert again[1]["state"] == "done" and not again[1]["skipped"]
    resumed = ckpt.load(folder / "checkpoints" / "step_12.pt")["model"]
    for k in final:
        torch.testing.assert_close(resumed[k], final[k], atol=1e-4, rtol=1e-4)


def test_train_seeds_refuses_bad_seed_lists(tiny, tmp_path):
    with pytest.raises(ValueError, match="at least one seed"):
        train_seeds(tiny(f"paths.results={tmp_path}"), [])
    with pytest.raises(ValueError, match="distinct"):
        train_seeds(tiny(f"paths.results={tmp_path}"), [1, 1])


def test_stacked_gpt_refuses_mixed_sizes():
    with pytest.raises(ValueError, match="same configuration"):
        StackedGPT([GPT(GPTConfig(**SHAPES[0])), GPT(GPTConfig(**SHAPES[2]))])
