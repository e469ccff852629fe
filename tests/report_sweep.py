"""A synthetic sweep folder with known content, for the plot and report tests.

Five sizes x three seeds, log-spaced checkpoints, a held-out LM loss that follows L = E + A N^-a + B D^-b, one task
whose exact match jumps between the third and fourth size (its token accuracy rises smoothly), one task that improves
smoothly, one that stays flat, the mechanistic probe, one failed and one diverged run (whose rows carry their status
and no value, as the sweep's aggregation writes them). The fits, flags and views CSVs
are written in the shapes the analysis package writes, with hand-chosen numbers: the tests check that the report
shows them, not that they are right.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

SIZES = [  # model, n_layer, d_model, n_head, n_params
    ("tiny", 1, 32, 2, 14_000),
    ("small", 2, 64, 2, 110_000),
    ("medium", 2, 96, 4, 228_000),
    ("large", 3, 128, 4, 600_000),
    ("xl", 4, 192, 6, 1_800_000),
]
SEEDS = [0, 1, 2]
STEPS = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 976]
TOKENS_PER_STEP = 128 * 24
JUMP_TASK = "add2"


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def make_sweep(root: Path, *, jump_task: str = JUMP_TASK, smooth_task: str = "add3",
               error_text: str = "RuntimeError: CUDA out of memory",
               command: str = "emergence sweep experiment=cpu_demo", with_views: bool = True,
               with_analysis: bool = True, seed: int = 0, sizes=SIZES, seeds=SEEDS) -> Path:
    """Write a sweep folder under `root` and return it. Task names, the error text and the command are
    parameters so that tests can make them hostile (markup, Markdown, `$` for matplotlib's mathtext)."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rows, runs, samples = [], [], []
    tasks = {jump_task: "jump", smooth_task: "smooth", "recall": "flat"}
    for model, n_layer, d_model, n_head, n in sizes:
        fpt = 6 * n + 12 * n_layer * d_model * 24
        for seed_ in seeds:
            run_id = f"{model}-s{seed_}"
            status, error = "done", ""
            last_step = STEPS[-1]
            if model == "small" and seed_ == 2:
                status, error, last_step = "failed", error_text, 64
            if model == "xl" and seed_ == 1:
                status, error, last_step = "diverged", "loss became NaN at step 300", 256
            final_loss = np.nan
            first_row = len(rows)
            for step in STEPS:
                if step > last_step:
                    break
                tokens = float(step * TOKENS_PER_STEP)
                flops = float(fpt * tokens)
                d = max(tokens, 1.0)
                loss = 0.45 + 40.0 * n ** -0.45 + 30.0 * d ** -0.35 + rng.normal(0, 0.01)
                loss = min(loss, 4.2)
                final_loss = loss
                common = dict(sweep="synthetic", run_id=run_id, model=model, n_params=n,
                              n_params_nonembed=int(n * 0.9), n_layer=n_layer, d_model=d_model, seed=seed_,
                              step=step, tokens=tokens, flops=flops, stderr=np.nan, n=512, status="ok")
                rows.append(dict(common, task="lm", metric="loss", value=loss))
                progress = step / STEPS[-1]
                for task, kind in tasks.items():
                    if kind == "jump":
                        ta = _sigmoid(3.0 * (np.log10(n) - 5.2) + 4 * (progress - 0.5)) * 0.9 + 0.08
                        em = ta ** 6
                    elif kind == "smooth":
                        ta = 0.2 + 0.12 * (np.log10(n) - 4) * progress
                        em = 0.05 + 0.1 * (np.log10(n) - 4) * progress
                    else:
                        ta, em = 0.1, 0.0
                    ta = float(np.clip(ta + rng.normal(0, 0.01), 0, 1))
                    em = float(np.clip(em + rng.normal(0, 0.015), 0, 1))
                    se = np.sqrt(max(em * (1 - em), 1e-4) / 512)
                    rows.append(dict(common, task=task, metric="exact_match", value=em, stderr=se))
                    rows.append(dict(common, task=task, metric="token_accuracy", value=ta))
                    rows.append(dict(common, task=task, metric="answer_nll", value=float(-np.log(max(ta, 1e-3)))))
                induction = _sigmoid((np.log2(max(step, 1)) - (9.5 - np.log10(n))) * 3)
                rows.append(dict(common, task="mechanistic", metric="icl_score",
                                 value=float(-0.8 * induction + rng.normal(0, 0.02))))
                rows.append(dict(common, task="mechanistic", metric="prefix_matching",
                                 value=float(0.05 + 0.6 * induction + abs(rng.normal(0, 0.01)))))
            if status != "done":
                # as the sweep's aggregation writes them: every row of a failed or diverged run keeps the run's
                # status and no value (a value that was not measured to the end must not read as a number)
                for r in rows[first_row:]:
                    r.update(status=status, value=np.nan, stderr=np.nan)
            runs.append(dict(run_id=run_id, sweep="synthetic", model=model, n_params=n, n_params_nonembed=int(n * .9),
                             n_layer=n_layer, d_model=d_model, n_head=n_head, seed=seed_, budget="tokens",
                             max_steps=STEPS[-1], tokens=float(STEPS[-1] * TOKENS_PER_STEP),
                             flops=float(fpt * STEPS[-1] * TOKENS_PER_STEP), flops_per_token=float(fpt), lr=3e-3,
                             status=status, error=error, wall_s=10.0 * n / 14_000,
                             final_loss=final_loss, final_val_loss=final_loss if status == "done" else np.nan))
            if status != "done":
                continue
            # per-example answer log-probabilities at the final checkpoint: log p = -c_i N^-0.5, so that
            # log(-log P) is close to a straight line in log N (the task scaling law of Hu et al. 2023)
            inst = []
            for task, kind in tasks.items():
                for ex in range(20):
                    c = (400.0 if kind == "jump" else 60.0) * (1 + ex / 10)
                    inst.append(dict(run_id=run_id, step=STEPS[-1], task=task, example_id=ex,
                                     answer_logprob=-c * n ** -0.5 * float(np.exp(rng.normal(0, 0.05)))))
            run_dir = root / "runs" / run_id
            run_dir.mkdir(parents=True, exist_ok=True)
            pd.DataFrame(inst).to_parquet(run_dir / "instances.parquet")
            for task, kind in tasks.items():
                for ex in range(3):
                    a, b = 10 + 7 * ex, 20 + 3 * ex
                    right = kind == "jump" and n >= 600_000
                    samples.append(dict(run_id=run_id, model=model, n_params=n, seed=seed_, step=STEPS[-1],
                                        task=task, example_id=ex, prompt=f"{a}+{b}=", target=str(a + b),
                                        output=str(a + b) if right else str(a + b + 1), correct=right))
    results = pd.DataFrame(rows)
    results.to_parquet(root / "results.parquet")
    pd.DataFrame(runs).to_parquet(root / "runs.parquet")
    pd.DataFrame(samples).to_parquet(root / "samples.parquet")
    (root / "meta.json").write_text(json.dumps({
        "command": command, "experiment": "cpu_demo", "git_rev": "0123abc",
        "versions": {"torch": "2.13.0", "numpy": np.__version__, "pandas": pd.__version__},
        "machine": "2-core CPU", "started": "2026-11-28T10:00:00", "finished": "2026-11-28T10:09:00"}))
    if with_analysis:
        _write_analysis(root, jump_task, smooth_task)
    if with_views:
        _write_views(root, jump_task, smooth_task)
    return root


def _write_analysis(root: Path, jump_task: str, smooth_task: str) -> None:
    fits = []
    for law, params in (("power", {"E": (0.45, 0.4, 0.5), "A": (40.0, 30.0, 52.0), "alpha": (0.45, 0.41, 0.49)}),):
        for x in ("n_params", "flops"):
            for p, (v, lo, hi) in params.items():
                fits.append(dict(task="lm", metric="loss", x=x, law=law, param=p, value=v, stderr=(hi - lo) / 4,
                                 lo=lo, hi=hi, aicc=-40.0, bic=-38.0, rmse=0.01))
    for law, aicc, params in (("logistic", -20.0, {"floor": 0.01, "ceiling": 0.9, "k": 2.5, "x0": 2.0e5}),
                              ("linear_log", -5.0, {"a": -1.5, "b": 0.35})):
        for p, v in params.items():
            fits.append(dict(task=jump_task, metric="exact_match", x="n_params", law=law, param=p, value=v,
                             stderr=np.nan, lo=np.nan, hi=np.nan, aicc=aicc, bic=aicc, rmse=0.05))
    pd.DataFrame(fits).to_csv(root / "fits.csv", index=False)
    bands = []  # the power laws above on the analysis's grid, with a band of +-3%
    for x, lo_hi in (("n_params", (2e4, 2e6)), ("flops", (1e11, 1e15))):
        grid = np.logspace(np.log10(lo_hi[0]), np.log10(lo_hi[1]), 50)
        y = 0.45 + 40.0 * grid ** -0.45
        bands += [dict(task="lm", metric="loss", x=x, law="power", x_value=g, predicted=v, lo=0.97 * v, hi=1.03 * v)
                  for g, v in zip(grid, y)]
    pd.DataFrame(bands).to_csv(root / "fit_bands.csv", index=False)
    w0 = 0.5
    new = dict(w0=w0, noise="binomial per probe, between-run variance per size")
    flags = [
        dict(task=jump_task, metric="exact_match", x="n_params", verdict="emergent", jump_at=3.7e5, jump_lo=2.3e5,
             jump_hi=6.0e5, width=0.31, width_lo=0.18, width_hi=0.44, n_sizes=5, n_runs=13, per_run="abrupt",
             p_value=0.003, q_value=0.012, breakthroughness=14.2, mirage=True, loss_at_jump=0.75,
             evidence="exact match rises from 0.01 to 0.86 over 0.31 decades of parameters around 370k (95% "
                      "interval 0.18 to 0.44, below W0 = 0.5; p=0.003); single runs acquire it abruptly; token "
                      "accuracy is smooth: likely a mirage",
             floor=0.01, ceiling=0.86, p_smooth=0.97, p_flat=0.001, step_max=0.71, step_allowed=0.45, step_p=0.004,
             share_by_size="0/3 0/2 0/3 3/3 2/2", share_width=0.2, per_run_p=0.01, loss_separates=True,
             em_measured=0.86, em_predicted=0.84, answer_length=6, **new),
        dict(task=jump_task, metric="token_accuracy", x="n_params", verdict="smooth", jump_at=2.0e5, jump_lo=1.2e5,
             jump_hi=3.5e5, width=1.6, width_lo=1.1, width_hi=2.4, n_sizes=5, n_runs=13, per_run="gradual",
             p_value=0.98, q_value=0.98, breakthroughness=3.1, mirage=np.nan, loss_at_jump=np.nan,
             evidence="token accuracy rises over 1.6 decades (95% interval 1.1 to 2.4, above W0 = 0.5)",
             floor=0.08, ceiling=0.98, p_smooth=0.004, p_flat=0.001, step_max=0.3, step_allowed=0.45, step_p=0.6,
             share_by_size="0/3 1/2 2/3 3/3 2/2", share_width=1.4, per_run_p=0.7, loss_separates=np.nan,
             em_measured=np.nan, em_predicted=np.nan, answer_length=np.nan, **new),
        dict(task=smooth_task, metric="exact_match", x="n_params", verdict="smooth", jump_at=2.6e5, jump_lo=9.0e4,
             jump_hi=7.0e5, width=2.5, width_lo=1.7, width_hi=np.inf, n_sizes=5, n_runs=13, per_run="undetermined",
             p_value=0.99, q_value=0.99, breakthroughness=2.0, mirage=np.nan, loss_at_jump=np.nan,
             evidence="improves smoothly", floor=0.05, ceiling=np.nan, p_smooth=0.01, p_flat=0.002, step_max=0.2,
             step_allowed=0.45, step_p=0.8, share_by_size="", share_width=np.nan, per_run_p=np.nan,
             loss_separates=np.nan, em_measured=0.3, em_predicted=0.31, answer_length=6, **new),
        dict(task="recall", metric="exact_match", x="n_params", verdict="flat", jump_at=np.nan, jump_lo=np.nan,
             jump_hi=np.nan, width=np.nan, width_lo=np.nan, width_hi=np.nan, n_sizes=5, n_runs=13, per_run=np.nan,
             p_value=np.nan, q_value=np.nan, breakthroughness=np.nan, mirage=np.nan, loss_at_jump=np.nan,
             evidence="range 0.01 is within noise", floor=np.nan, ceiling=np.nan, p_smooth=np.nan, p_flat=0.6,
             step_max=np.nan, step_allowed=np.nan, step_p=np.nan, share_by_size="", share_width=np.nan,
             per_run_p=np.nan, loss_separates=np.nan, em_measured=0.0, em_predicted=0.0, answer_length=6, **new),
    ]
    pd.DataFrame(flags).to_csv(root / "flags.csv", index=False)


def _write_views(root: Path, jump_task: str, smooth_task: str) -> None:
    run = dict(model="xl", n_params=1_800_000, seed=0)
    pd.DataFrame([dict(run_id="xl-s0", **run, task="mechanistic", metric="prefix_matching", x="tokens",
                       verdict="emergent", jump_at=2.9e4, jump_lo=2.0e4, jump_hi=4.5e4, width=0.21, width_lo=0.12,
                       width_hi=0.33, p_value=0.002, q_value=0.004, w0=0.5, coincides_with_induction=True,
                       evidence="prefix matching rises over 0.21 decades of tokens around 2.9e4 tokens"),
                  dict(run_id="large-s0", model="large", n_params=600_000, seed=0, task=jump_task,
                       metric="exact_match", x="tokens", verdict="smooth", jump_at=np.nan, jump_lo=np.nan,
                       jump_hi=np.nan, width=1.3, width_lo=0.9, width_hi=2.0, p_value=0.9, q_value=0.9, w0=0.5,
                       coincides_with_induction=np.nan, evidence="smooth")]
                 ).to_csv(root / "transitions.csv", index=False)
    pd.DataFrame([dict(task=jump_task, metric="exact_match", x="loss", verdict="emergent", jump_at=0.75,
                       jump_lo=0.7, jump_hi=0.8, width=0.04, width_lo=0.02, width_hi=0.07, p_value=0.001,
                       q_value=0.002, w0=0.5, eta=0.76, eta_lo=0.71, eta_hi=0.81, size_explains_p=0.4,
                       size_still_matters=False, evidence="absent above loss 0.8, present below 0.7")]
                 ).to_csv(root / "loss.csv", index=False)
    pd.DataFrame([dict(task=jump_task, metric="exact_match", law="logistic", x="n_params", x_value=1.8e6, n_fit=4,
                       prediction=0.4, lo=0.2, hi=0.6, actual=0.86, error=0.46, rel_error=0.53, inside=False,
                       note="")]).to_csv(root / "backtest.csv", index=False)
    pd.DataFrame([dict(task=t, x="n_params", n_sizes=5, n_examples=20, slope=-0.5, slope_lo=-0.55, slope_hi=-0.45,
                       curvature=c, curvature_lo=c - 0.02, curvature_hi=c + 0.02, sagitta=abs(c), shape=shape,
                       evidence=f"{shape} within the tolerance")
                  for t, c, shape in ((jump_task, -0.001, "linear"), (smooth_task, 0.0, "linear"),
                                      ("recall", 0.001, "linear"))]).to_csv(root / "resolution.csv", index=False)
