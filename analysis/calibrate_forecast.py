"""How well `analysis.forecast` predicts, measured: `python -m analysis.calibrate_forecast`.

1. A public ladder (Gadre et al. 2024, `../shared/data/gadre2024`): for each of its three training sets, the models
   of 11M to 411M parameters (every token multiplier, 0.25x to 32x Chinchilla) predict the 1.4B and 6.9B models on
   the seven tasks of Bhagia et al. 2024's set that these sizes lift above chance (HellaSwag, ARC-Easy,
   ARC-Challenge, PIQA, WinoGrande, OpenBookQA, SocialIQA; MMLU, the eighth, stays at chance below 7B), by the
   two-step route: the C4 validation loss from (N, D), then accuracy as a sigmoid of that loss with the task's
   random-guess floor (`eval_metadata.csv`). Each model was evaluated once: the interval is for that measurement.
2. A public ladder with a 12B target (Pythia, `../shared/data/pythia-evals`): the models of 70M to 1.4B
   parameters predict the 2.8B, 6.9B and 12B models (all trained on the same 300B tokens) on the eight zero-shot
   tasks the evals hold one score for, by the two-step route with a general loss: the log of LAMBADA's perplexity
   (`via="lambada_openai:perplexity"`) as a power law in compute from the final checkpoints, then accuracy as a
   sigmoid of it on every checkpoint. The floor is fitted: the ladder's untrained checkpoints (step 0) measure it.
   LAMBADA's own accuracy takes the ceiling 1 (its via is the answer's own loss); the others' ceilings are fitted.
3. Synthetic ladders with a known L(N, D) and a known sigmoid of the loss: the share of new runs inside their 95%
   prediction interval (nominal coverage).
4. A CPU ladder of this repository's own runs, when its results are here (`--ladder results/cpu_demo
   results/cpu_demo_x2`): the rolling-origin backtest's coverage, with the number of origins, task by task and
   together. Its task loss is answer_nll, the loss of the answer itself, so step 2's ceiling is given as 1.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import forecast as fc
from analysis.io import load_results

TASKS = ["hellaswag", "arc_easy", "arc_challenge", "piqa", "winogrande", "openbook_qa", "siqa"]
GADRE = Path(__file__).resolve().parents[2] / "shared" / "data" / "gadre2024" / "exp_data"
LADDER_MAX = 5e8  # ladder: up to 411M parameters; targets: the open_lm 1B and 7B models
# the synthetic ladders' truth: L(N, D) = E + A / N^alpha + B / D^beta, score = the sigmoid of 1/L
TRUE = dict(E=1.6, A=400.0, alpha=0.34, B=410.0, beta=0.28, floor=0.25, ceiling=0.95, k=12.0, x0=1 / 2.6)


def true_loss(N, D):
    return TRUE["E"] + TRUE["A"] / N ** TRUE["alpha"] + TRUE["B"] / D ** TRUE["beta"]


def true_score(loss):
    """The known sigmoid of the loss: floor + (ceiling - floor) / (1 + ((1/L) / x0)^-k)."""
    return TRUE["floor"] + (TRUE["ceiling"] - TRUE["floor"]) / (1 + ((1 / loss) / TRUE["x0"]) ** (-TRUE["k"]))


def synthetic_ladder(rng, sizes=np.logspace(6.5, 9, 6), budgets=(3e8, 1e9, 3e9), seeds=2, n=500, checkpoints=6,
                     scatter=0.01):
    """Runs of every size x budget x seed; each checkpoint's loss is the law times a run's own scatter and a little
    per-checkpoint noise, its exact match a binomial proportion of n at the sigmoid of that loss. The sizes below
    the largest reach past the 10% point of the truth's rise (score 0.32), so a fit to them can place it."""
    rows = []
    for N in sizes:
        for D in budgets:
            for s in range(seeds):
                run = rng.normal(0, scatter)
                for j in range(1, checkpoints + 1):
                    d = D * j / checkpoints
                    L = true_loss(N, d) * np.exp(run + rng.normal(0, scatter / 3))
                    a = rng.binomial(n, true_score(L)) / n
                    base = dict(sweep="ladder", run_id=f"N{N:.0f}_D{D:.0f}_s{s}", model=f"N{N:.0f}", n_params=int(N),
                                n_params_nonembed=int(N), n_layer=1, d_model=1, seed=s, step=j, tokens=int(d),
                                flops=6 * N * d, task="t", n=n, status="ok")
                    rows.append({**base, "metric": "answer_nll", "value": L, "stderr": 0.01})
                    rows.append({**base, "metric": "exact_match", "value": a, "stderr": np.sqrt(a * (1 - a) / n)})
    return pd.DataFrame(rows)


def load_gadre(root: Path = GADRE, tasks=TASKS) -> tuple[pd.DataFrame, dict[str, float]]:
    """Gadre et al. 2024's models as a results table (one 'run' per model, step 1): per task, `acc` and the model's
    C4 validation loss `c4_loss`; and each task's random-guess floor (a proportion)."""
    meta = pd.read_csv(root / "eval_metadata.csv").set_index("Eval Task")
    floors = {t: float(meta.loc[t, "Random baseline"]) / 100 for t in tasks}
    sizes = {t: int(meta.loc[t, "#datapoints"]) for t in tasks}
    rows = []
    for path in sorted((root / "models").glob("*.json")):
        m = json.loads(path.read_text())
        h, name = m["hyperparameters"], m["name"]
        ev = root / "evals" / f"evaluation_{name}_heavy.json"
        if not ev.exists():
            continue
        icl = json.loads(ev.read_text())["eval_metrics"]["icl"]
        c4 = [r["loss"] for r in m["results"] if any("c4_val" in v for v in r["val_data"])]
        if not c4:
            continue
        base = dict(sweep=m["dataset_name"], run_id=name, model=h["model"], n_params=int(h["params"]),
                    n_params_nonembed=int(h["params_no_embed"]), n_layer=0, d_model=0, seed=0, step=1,
                    tokens=int(h["tokens"]), flops=6.0 * h["params"] * h["tokens"], status="imported")
        for t in tasks:
            a, n = float(icl[t]), sizes[t]
            rows.append({**base, "task": t, "metric": "acc", "value": a, "stderr": np.sqrt(a * (1 - a) / n), "n": n})
            rows.append({**base, "task": t, "metric": "c4_loss", "value": float(c4[0]), "stderr": np.nan, "n": 0})
    return pd.DataFrame(rows), floors


def _scored(t: pd.DataFrame) -> pd.DataFrame:
    """Predictions against their measured `actual`: error, relative error, inside the interval or not."""
    error = t["predicted"] - t["actual"]
    inside = (t["lo"] <= t["actual"]) & (t["actual"] <= t["hi"])
    inside_boot = (t["lo_boot"] <= t["actual"]) & (t["actual"] <= t["hi_boot"])
    return t.assign(error=error, rel_error=error / t["actual"], inside=inside, inside_boot=inside_boot)


def public_ladder(n_boot: int = 200, methods=fc.METHODS) -> pd.DataFrame:
    """Predict every >= 1B model of each training set from its <= 411M ladder, on each task, by each method."""
    df, floors = load_gadre()
    out = []
    for dataset, d in df.groupby("sweep"):
        lad = d[d["n_params"] <= LADDER_MAX]
        big = d[d["n_params"] > LADDER_MAX]
        targets = big[["run_id", "model", "n_params", "tokens"]].drop_duplicates("run_id").reset_index(drop=True)
        for task, method in ((t, m) for t in TASKS for m in methods):
            pred = fc.forecast(lad, targets[["n_params", "tokens"]], task, "acc", via="c4_loss", method=method,
                               floor=floors[task], n_boot=n_boot)
            actual = big[(big["task"] == task) & (big["metric"] == "acc")].set_index("run_id")["value"]
            loss = big[(big["task"] == task) & (big["metric"] == "c4_loss")].set_index("run_id")["value"]
            for i, r in targets.iterrows():
                p = pred.iloc[i]
                out.append({"dataset": dataset, "task": task, "method": method, "target": r["run_id"],
                            "n_params": r["n_params"],
                            "tokens": r["tokens"], "predicted": p["predicted"], "lo": p["lo"], "hi": p["hi"],
                            "lo_boot": p["lo_boot"], "hi_boot": p["hi_boot"], "interval_from": p["interval_from"],
                            "actual": actual[r["run_id"]], "loss_predicted": p.get("via_predicted", np.nan),
                            "rise_unseen": bool(p["rise_unseen"]),
                            "loss_actual": loss[r["run_id"]]})
    return _scored(pd.DataFrame(out))


PYTHIA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pythia-evals" / "pythia-v1"
PYTHIA_TASKS = ["arc_easy", "arc_challenge", "piqa", "winogrande", "sciq", "lambada_openai", "logiqa", "wsc"]
PYTHIA_LADDER_MAX = 1.5e9  # ladder: 70M, 160M, 410M, 1.4B; targets: 2.8B, 6.9B, 12B
PYTHIA_VIA = "lambada_openai:perplexity"


def pythia_ladder(root: Path = PYTHIA, n_boot: int = 200, tasks=PYTHIA_TASKS, methods=("two_step",)
                  ) -> pd.DataFrame:
    """Predict each Pythia model above 1.4B at its last checkpoint from the models up to 1.4B, task by task: one row
    per (task, target) with the prediction, its 95% interval, the measured accuracy and the predicted and measured
    loss (log LAMBADA perplexity)."""
    from analysis.importers import import_lm_eval

    df = import_lm_eval(root)
    ladder, big = df[df["n_params"] <= PYTHIA_LADDER_MAX], df[df["n_params"] > PYTHIA_LADDER_MAX]
    last = big[big["step"] == big.groupby("run_id")["step"].transform("max")]
    loss = last[(last["task"] == "lambada_openai") & (last["metric"] == "perplexity")].set_index("run_id")["value"]
    out = []
    for task, method in ((t, m) for t in tasks for m in methods):
        actual = last[(last["task"] == task) & (last["metric"] == "acc")].sort_values("n_params")
        try:
            pred = fc.forecast(ladder, actual[["n_params", "tokens"]], task, "acc", via=PYTHIA_VIA, method=method,
                               n_boot=n_boot, ceiling=1.0 if task == "lambada_openai" else None)
        except ValueError as e:  # four models, one run each: a sigmoid in compute (4 parameters) cannot be fitted
            print(f"  Pythia {task} {method}: not fitted ({e})")
            continue
        out.append(pred.assign(method=method, target=actual["model"].to_numpy(), actual=actual["value"].to_numpy(),
                               loss_actual=np.log(loss[actual["run_id"]].to_numpy())))
    return _scored(pd.concat(out, ignore_index=True))


def synthetic_predictions(ladders: int = 30, n_boot: int = 200, methods=fc.METHODS, sizes=None
                          ) -> dict[str, pd.DataFrame]:
    """Each method's forecasts of new runs over synthetic ladders (`synthetic_ladder`: 6 sizes x 3 budgets x 2 seeds
    x 6 checkpoints; each ladder's largest size predicted from the rest): lo, hi, rise_unseen and the measured value,
    one row per predicted run. `sizes`: the ladder's sizes, `synthetic_ladder`'s by default."""
    out = {m: [] for m in methods}
    for r in range(ladders):
        df = synthetic_ladder(np.random.default_rng(100 + r), **({} if sizes is None else {"sizes": sizes}))
        top = df["n_params"].max()
        new = df[(df["n_params"] == top) & (df["metric"] == "exact_match")]
        new = new[new["step"] == new["step"].max()].reset_index(drop=True)
        for m in methods:
            pred = fc.forecast(df[df["n_params"] < top], new[["n_params", "tokens"]], "t", "exact_match",
                               via="answer_nll", method=m, n_boot=n_boot, seed=r)
            out[m].append(pred[["predicted", "lo", "hi", "lo_boot", "hi_boot", "rise_unseen", "interval_from"]]
                          .assign(value=new["value"]))
    return {m: pd.concat(parts, ignore_index=True) for m, parts in out.items()}


def synthetic_coverage(ladders: int = 30, n_boot: int = 200, sizes=None) -> dict:
    """Per method (`synthetic_predictions`): `summarize` of its predictions of new runs."""
    return {m: summarize(_scored(p.rename(columns={"value": "actual"})))
            for m, p in synthetic_predictions(ladders, n_boot, sizes=sizes).items()}


def summarize(t: pd.DataFrame) -> dict:
    """Scored predictions (`_scored`) in figures: how many, the mean absolute relative error, and for the targets
    whose ladder had seen the rise and for the others apart, how many, the share inside the interval and its mean
    width, as `forecast` gives it (calibrated by the backtest) and as the bootstrap alone gave it."""
    out = {"n": len(t), "mean_rel_error": float(np.nanmean(np.abs(t["rel_error"]))) if len(t) else float("nan")}
    unseen = t["rise_unseen"].astype(bool)
    for name, part in (("seen", t[~unseen]), ("unseen", t[unseen])):
        out[f"n_{name}"] = len(part)
        for kind, (lo, hi, inside) in {"cal": ("lo", "hi", "inside"), "boot": ("lo_boot", "hi_boot", "inside_boot")
                                       }.items():
            out[f"coverage_{kind}_{name}"] = float(part[inside].mean()) if len(part) else float("nan")
            out[f"width_{kind}_{name}"] = float((part[hi] - part[lo]).mean()) if len(part) else float("nan")
    return out


def _sources(t: pd.DataFrame) -> str:
    """What the intervals of `t` rest on (`interval_from`), with how many of each."""
    return ", ".join(f"{k} ({v})" for k, v in t["interval_from"].value_counts().items())


def summary_line(d: dict) -> str:
    """`summarize`'s figures in one line."""
    parts = [f"{d['n']} predictions, mean |relative error| {d['mean_rel_error']:.1%}"]
    for name in ("seen", "unseen"):
        if d[f"n_{name}"]:
            parts.append(f"rise {name} {d[f'n_{name}']}: calibrated {d[f'coverage_cal_{name}']:.0%} inside "
                         f"(width {d[f'width_cal_{name}']:.3f}), bootstrap alone {d[f'coverage_boot_{name}']:.0%} "
                         f"(width {d[f'width_boot_{name}']:.3f})")
    return "; ".join(parts)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.calibrate_forecast", description=__doc__.splitlines()[0])
    p.add_argument("--ladders", type=int, default=30, help="synthetic ladders (0: skip)")
    p.add_argument("--ladder", nargs="*", default=[], help="results of a CPU ladder to backtest (folders or tables)")
    p.add_argument("--tasks", nargs="*", default=["add2", "add3", "sort"], help="tasks of the CPU ladder")
    p.add_argument("--n-boot", type=int, default=200)
    a = p.parse_args(argv)
    if GADRE.exists():
        t0 = time.time()
        t = public_ladder(a.n_boot)
        print(f"public ladder (Gadre et al. 2024): <= 411M parameters predicting the 1.4B and 6.9B models "
              f"({time.time() - t0:.0f} s)")
        for (method, size), g in t.groupby(["method", t["n_params"] > 3e9], sort=False):
            print(f"  {method}, {'6.9B' if size else '1.4B'}: {summary_line(summarize(g))}; interval from: "
                  + _sources(g))
            print("  " + g.groupby("task").agg(abs_error=("error", lambda e: e.abs().mean()),
                                               inside=("inside", "sum"), inside_boot=("inside_boot", "sum"),
                                               n=("inside", "size")).round(3).to_string().replace("\n", "\n  "))
    if PYTHIA.exists():
        t0 = time.time()
        t = pythia_ladder(n_boot=a.n_boot, methods=fc.METHODS)
        print(f"public ladder (Pythia): 70M-1.4B predicting the 2.8B, 6.9B and 12B models via {PYTHIA_VIA} "
              f"({time.time() - t0:.0f} s)")
        for (method, target), g in t.groupby(["method", "target"], sort=False):
            print(f"  {method}, {target}: {summary_line(summarize(g))}; interval from: "
                  + _sources(g))
        print(t[["method", "target", "task", "predicted", "lo", "hi", "lo_boot", "hi_boot", "actual", "inside",
                 "rise_unseen"]].round(3).to_string(index=False))
    if a.ladders:
        t0 = time.time()
        for label, sizes in (("", None), (", stopped at 10^8.5, short of the rise's 10% point", np.logspace(6.5, 8.5, 6))):
            for m, d in synthetic_coverage(a.ladders, a.n_boot, sizes=sizes).items():
                print(f"synthetic ladders ({a.ladders}{label}) {m}: {summary_line(d)}")
        print(f"  ({time.time() - t0:.0f} s)")
    if a.ladder:
        df = pd.concat([load_results(p) for p in a.ladder], ignore_index=True)
        # answer_nll is the loss of the answer itself: at zero loss the answer is certain, exact match 1
        bts = [fc.forecast_backtest(df, task, "exact_match", via="answer_nll", n_boot=a.n_boot, ceiling=1.0)
               for task in a.tasks]
        bt = pd.concat(bts, ignore_index=True)
        for frame in (*bts, bt.assign(task=", ".join(a.tasks))):
            for _, r in fc.coverage(frame).iterrows():
                print(f"CPU ladder {r['task']} exact_match {r['method']}: {r['n_predicted']} runs over "
                      f"{r['n_origins']} origins, mean |relative error| {r['mean_rel_error']:.1%}; all "
                      f"{r['coverage']:.0%} inside (width {r['mean_width']:.2f}); rise unseen for "
                      f"{r['n_rise_unseen']}; of the {int(r['n_predicted'] - r['n_rise_unseen'])} seen, bootstrap "
                      f"{r['coverage_seen']:.0%} (width {r['mean_width_seen']:.2f}), calibrated by the earlier "
                      f"origins {r['coverage_cal_seen']:.0%} (width {r['mean_width_cal_seen']:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
