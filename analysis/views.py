"""Views of emergence beyond a jump over model size: along training, and against pre-training loss.

- `flag_transitions(df, x="tokens")`: abrupt changes of a metric within one run (phase changes such as the
  formation of induction heads, Olsson et al. 2022, "In-context Learning and Induction Heads"; grokking, Power et
  al. 2022), each with the flags of `analysis.flags.flag_curve`, and whether it coincides with the run's own
  induction-head transition as measured by the mechanistic probe.
- `loss_view(df)` / `loss_threshold(df, task, metric)`: every checkpoint of every size pooled, with its held-out LM
  loss as x (Du et al. 2024, "Understanding Emergent Abilities of Language Models from the Loss Perspective"): an
  ability is emergent if it is absent while the loss is above a threshold eta and improves once the loss is below
  it. Reports eta with a bootstrap interval, and whether model size still explains the metric once loss is known.
  `analysis.flags.flag_emergence(df, x="loss")` is this view.

The flags themselves (verdicts, jump intervals, breakthroughness, model comparison) come from `analysis.flags`; the
fits from `analysis.fit`. This module only arranges the data for them and adds what is specific to each view.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
from scipy import stats

from analysis import schema
from analysis.fit import fit_law
from analysis.options import DEFAULTS
from analysis.jumps import ALPHA, EXTRA_COLUMNS, FLAG_COLUMNS, N_BOOT
from analysis.verdicts import CONTINUOUS_FOR_MIRAGE, apply_fdr, flag_along, flag_curve

# The jump width against loss: loss is read on a linear axis (nats), where the rises Du et al. 2024 report span a
# few tenths of a nat; W0 for the loss view is its own setting, in nats, chosen before looking.
LOSS_W0 = DEFAULTS.loss_w0

FLAG_KEYS = [c for c in FLAG_COLUMNS + EXTRA_COLUMNS if c not in ("task", "metric")]
MECHANISTIC_TASK = "mechanistic"
INDUCTION_METRICS = ("icl_score", "prefix_matching")
LOSS_TASK, LOSS_METRIC = "lm", "loss"
TRAINING_X = ("tokens", "step", "flops")


def _measured(df: pd.DataFrame, where: str) -> pd.DataFrame:
    """The measured rows of a validated results table (`analysis.schema.measured`)."""
    return schema.measured(schema.validate(df, where=where))


def _checkpoint_words(evidence: str) -> str:
    """`flag_curve` speaks of sizes; along training and in the pooled loss view each point is a checkpoint."""
    return re.sub(r"\bsize(s|\(s\))?\b", lambda m: "checkpoint" + (m.group(1) or ""), str(evidence))


def _flags(res: dict) -> dict:
    """The flag columns of a `flag_curve` result, NaN/NA for any it did not give."""
    return {k: res.get(k, np.nan) for k in FLAG_KEYS}


# ------------------------------------------------------------------------------------------------ along training
def _induction_interval(rows: list[dict]) -> tuple[float, float, float] | None:
    """The run's induction-head transition: where its mechanistic metrics jump.

    Olsson et al. 2022 see the phase change at once in the in-context-learning score (it drops) and in the
    prefix-matching score of the strongest head (it rises). Each flagged metric gives a jump interval; the run's
    transition interval is their hull (either metric's evidence counts), its location the geometric mean of the
    jump locations (x is log-spaced). None if neither metric jumps.
    """
    hits = [r for r in rows if r["verdict"] == "emergent" and np.isfinite(r["jump_at"])]
    if not hits:
        return None
    at = [r["jump_at"] for r in hits]
    lo = [r["jump_lo"] if np.isfinite(r["jump_lo"]) else r["jump_at"] for r in hits]
    hi = [r["jump_hi"] if np.isfinite(r["jump_hi"]) else r["jump_at"] for r in hits]
    return float(np.exp(np.mean(np.log(at)))), float(min(lo)), float(max(hi))


def _mirage_within_runs(out: pd.DataFrame) -> pd.Series:
    """Schaeffer et al. 2023 along training: is a run's jump in a discontinuous metric (exact match) absent from the
    same task's continuous metrics in the same run? False: a continuous metric jumps too; True: every continuous
    metric rises smoothly (`smooth`: its width shown to exceed W0); NA otherwise: no jump in a discontinuous metric,
    no continuous metric to compare, or continuous metrics that are flat or inconclusive (lacking the power to
    tell is never True)."""
    verdicts = out.set_index(["run_id", "task", "metric"])["verdict"].to_dict()
    mirage = []
    for r in out.itertuples(index=False):
        meta = schema.METRICS.get(str(r.metric))
        if meta is None or not meta.discontinuous or r.verdict != "emergent":
            mirage.append(pd.NA)
            continue
        cont = [verdicts[(r.run_id, r.task, c)] for c in CONTINUOUS_FOR_MIRAGE if (r.run_id, r.task, c) in verdicts]
        mirage.append(False if any(v == "emergent" for v in cont) else
                      True if cont and all(v == "smooth" for v in cont) else pd.NA)
    return pd.Series(pd.array(mirage, dtype="boolean"), index=out.index)


def flag_transitions(df: pd.DataFrame, x: str = "tokens", *, mechanistic_task: str = MECHANISTIC_TASK,
                     progress=None, **options) -> pd.DataFrame:
    """Abrupt changes of each metric along training, within each run: one row per (run_id, task, metric).

    Each run's curve of a metric over its checkpoints (x = tokens, step or flops) is judged on a log scale:
    checkpoints follow Pythia's log-spaced schedule (steps 0, 1, 2, 4, ..., 512, then every 1000; Biderman et al.
    2023), so early training is sampled as densely as late training. Step 0 (x = 0) has no place on a log axis and
    is left out; the evidence says so. The runs of one model size (same `model`) are fitted together by
    `analysis.flags.flag_along`: they share one width W, and each run keeps its own floor, ceiling and location.
    q-values: Benjamini-Hochberg across the table's (size, task, metric) tests. `options` go to `flag_along`
    (w0, alpha, n_boot, seed, min_sizes, min_side). `progress(done, total)`, if given, is called after each
    (size, task, metric) group is judged: the view's cost grows with runs x checkpoints, and a large table takes
    minutes.

    Columns: run_id, model, n_params, seed, task, metric, the flag columns of `flag_emergence` (n_sizes: here the
    number of checkpoints; width, width_lo, width_hi: the shared width of the run's size), then induction_at,
    induction_lo, induction_hi (the run's
    induction-head transition, see `_induction_interval`) and `coincides_with_induction`:
    True if this metric jumps and its jump location lies inside the run's induction-transition interval; False if
    it jumps elsewhere or the run's mechanistic metrics show no transition; NA if the metric does not jump, the run
    has no mechanistic rows, or the row is itself a mechanistic metric.
    """
    if x not in TRAINING_X:
        raise ValueError(f"flag_transitions follows a run along training: x must be one of {', '.join(TRAINING_X)}, "
                         f"got {x!r}")
    m = _measured(df, "flag_transitions input")
    m = m[pd.to_numeric(m[x], errors="coerce").notna()]
    rows: list[dict] = []
    groups: list[str] = []
    size_key = m["model"].astype("string").fillna(m["n_params"].astype("string")).fillna("<size>")
    m = m.assign(_size=size_key)[["_size", "run_id", "model", "n_params", "seed", "task", "metric", x, "value",
                                     "stderr", "n"]]  # only what is read: a wide table is copied once, narrow
    alpha = options.get("alpha", ALPHA)
    grouped = m.groupby(["_size", "task", "metric"], sort=True)
    for done, ((size, task, metric), gs) in enumerate(grouped, start=1):
        hib = schema.higher_is_better(str(metric))
        spec = schema.METRICS[str(metric)]
        runs, heads, zeros = [], [], []
        for run_id, g in gs.groupby("run_id", sort=True):
            first = g.iloc[0]
            heads.append({"run_id": run_id, "model": first["model"], "n_params": first["n_params"],
                          "seed": first["seed"], "task": task, "metric": metric})
            xv = g[x].to_numpy(float)
            runs.append({"x": xv, "y": g["value"].to_numpy(float), "stderr": g["stderr"].to_numpy(float),
                         "n": g["n"].astype("Float64").to_numpy(float, na_value=np.nan)})
            zeros.append(int(np.sum(xv <= 0)))
        results = flag_along(runs, higher_is_better=hib, bounds=(spec.lower_bound, spec.upper_bound), x_name=x,
                             **options)
        for head, res, z in zip(heads, results, zeros):
            flags = _flags(res)
            flags["evidence"] = _checkpoint_words(flags["evidence"])
            if z:
                flags["evidence"] += f" ({z} checkpoint(s) at {x} = 0 left out: no place on a log axis)"
            rows.append({**head, **flags})
            groups.append(f"{size}\x1f{task}\x1f{metric}")
        if progress is not None:
            progress(done, grouped.ngroups)
    out = pd.DataFrame(rows, columns=["run_id", "model", "n_params", "seed", "task", "metric", *FLAG_KEYS])
    out = apply_fdr(out, alpha, groups=groups)
    out["mirage"] = _mirage_within_runs(out)
    induction = {}
    for run_id, g in out.groupby("run_id"):
        mech = g[(g["task"] == mechanistic_task) & g["metric"].isin(INDUCTION_METRICS)]
        induction[run_id] = None if mech.empty else (_induction_interval(mech.to_dict("records")) or ())
    at, lo, hi, coincide = [], [], [], []
    for r in out.itertuples(index=False):
        ind = induction.get(r.run_id)
        at.append(ind[0] if ind else np.nan)
        lo.append(ind[1] if ind else np.nan)
        hi.append(ind[2] if ind else np.nan)
        jumps = r.verdict == "emergent" and np.isfinite(r.jump_at)
        if not jumps or ind is None or r.task == mechanistic_task:
            coincide.append(pd.NA)
        elif ind == ():
            coincide.append(False)
        else:
            coincide.append(bool(ind[1] <= r.jump_at <= ind[2]))
    out["induction_at"], out["induction_lo"], out["induction_hi"] = at, lo, hi
    out["coincides_with_induction"] = pd.array(coincide, dtype="boolean")
    return out


# ---------------------------------------------------------------------------------------------------- loss view
def join_loss(df: pd.DataFrame, *, loss_task: str = LOSS_TASK, loss_metric: str = LOSS_METRIC) -> pd.DataFrame:
    """Every measured row beside its own checkpoint's held-out LM loss (column `loss`).

    The loss of a checkpoint is its row task="lm", metric="loss" at the same (run_id, step). Rows whose checkpoint
    has no measured loss are dropped; the loss rows themselves are not returned.
    """
    m = _measured(df, "loss view input")
    lm = m[(m["task"] == loss_task) & (m["metric"] == loss_metric)]
    if lm.empty:
        raise ValueError(f"the loss view needs each checkpoint's held-out loss: rows with task={loss_task!r}, "
                         f"metric={loss_metric!r}; this table has none")
    lm = lm.groupby(["run_id", "step"], as_index=False)["value"].mean().rename(columns={"value": "loss"})
    rest = m[~((m["task"] == loss_task) & (m["metric"] == loss_metric))]
    out = rest.merge(lm, on=["run_id", "step"], how="inner")
    return out[out["loss"] > 0]


def _rank(X: np.ndarray) -> int:
    """Numerical rank with columns scaled to unit length and a relative tolerance (1e-9), so that a column that is
    a combination of others up to rounding is not counted."""
    norms = np.linalg.norm(X, axis=0)
    sv = np.linalg.svd(X / np.where(norms > 0, norms, 1.0), compute_uv=False)
    return int(np.sum(sv > 1e-9 * sv.max()))


def _size_test(loss: np.ndarray, y: np.ndarray, n_params: np.ndarray, eta: float, n_knots: int = 3
               ) -> tuple[float, str]:
    """Does model size explain the metric once loss is known? A partial F test (nested least squares).

    Reduced model: y = b0 + b1 L + b2 max(0, eta - L) + sum_k c_k max(0, L - kappa_k), L = loss: a linear spline
    in loss with the threshold eta and knots kappa_k at quantiles of L, flexible enough that size cannot score by
    mending a poor fit in loss. Full model: the same plus g log10(n_params).
    F = ((RSS_0 - RSS_1) / q) / (RSS_1 / (n - r_1)), q = r_1 - r_0 (ranks of the designs), p from F(q, n - r_1)
    (the extra-sum-of-squares test; e.g. Draper & Smith 1998, "Applied Regression Analysis", section 6.1).
    Du et al. 2024 (section 3) report that models of different sizes share one performance-vs-loss curve; a small
    p says this table departs from that. Caveat: checkpoints of one run are not independent, so with few runs the
    p-value is optimistic. Returns (p, reason); p is NaN with a reason when the test cannot be made.
    """
    logn = np.log10(n_params.astype(float))
    if len(np.unique(logn)) < 2:
        return np.nan, "one model size only"
    cols = [np.ones_like(loss), loss]
    # the threshold's hinge only where it has data on both sides; at an edge it is the line [1, L] again
    if np.isfinite(eta) and np.sum(loss > eta) >= 2 and np.sum(loss < eta) >= 2:
        cols.append(np.maximum(0.0, eta - loss))
    for q in np.unique(np.quantile(loss, np.arange(1, n_knots + 1) / (n_knots + 1))):
        cols.append(np.maximum(0.0, loss - q))
    X0 = np.column_stack(cols)
    X1 = np.column_stack([X0, logn])
    r0, r1 = _rank(X0), _rank(X1)
    n = len(y)
    if r1 == r0:
        return np.nan, "size is collinear with the loss model"
    if n - r1 < 3:
        return np.nan, f"{n} points are too few for the test"
    rss0 = float(np.sum((y - X0 @ np.linalg.lstsq(X0, y, rcond=None)[0]) ** 2))
    rss1 = float(np.sum((y - X1 @ np.linalg.lstsq(X1, y, rcond=None)[0]) ** 2))
    if rss1 <= 0:
        return np.nan, "the full model fits exactly"
    q = r1 - r0
    F = ((rss0 - rss1) / q) / (rss1 / (n - r1))
    return float(stats.f.sf(max(F, 0.0), q, n - r1)), ""


def loss_threshold(df: pd.DataFrame, task: str, metric: str, *, n_boot: int = N_BOOT, level: float = 0.95,
                   alpha: float = ALPHA, seed: int = 0, resample: str = "auto", w0: float = LOSS_W0,
                   **options) -> dict:
    """The loss view of one (task, metric): flags against loss, the threshold eta, and whether size still matters.

    Pools every checkpoint of every run, x = its held-out LM loss (`join_loss`), each checkpoint one point with its
    measurement error and a dispersion from the residuals (checkpoints are not independent runs). Lower loss is more
    capable, so the curve is read from high loss to low, on a linear axis in nats: the width W of the rise is in
    nats of loss and is judged against `w0` (LOSS_W0 = 0.1 nats unless given), not against the decades of the size
    axis (a whole family's losses rarely span a tenth of a decade).

    eta (Du et al. 2024, section 4): the loss below which the ability appears, estimated as the knee of the hinge
    y = a + b' max(0, eta - loss): flat above eta and linear in loss below it, the shape Du et al. draw on a linear
    loss axis. It is `analysis.laws.hinge` fitted with `fit_law` in x'' = exp(-loss) (log10 x'' = -loss log10 e, so
    the law's knee is h = exp(-eta)). eta_lo, eta_hi is its bootstrap interval at `level` (`n_boot` resamples). eta is
    the onset where the metric leaves its floor, reported for every row that is not flat whose knee has at least two
    checkpoints on each side and improves below it; otherwise it is NaN and the evidence says why. The bootstrap
    resamples whole runs (`resample="runs"`: checkpoints of one run share its training noise), or single checkpoints
    (`"points"`); "auto" takes runs when there are at least 10, points otherwise (a percentile bootstrap over fewer
    clusters covers too little: on synthetic data with 5 runs, 87% for a nominal 95%, against 93% over points).

    size_explains_p: the partial F test of `_size_test`; size_still_matters = size_explains_p < alpha (NA when the
    test cannot be made).
    Returns a dict: task, metric, the flag columns (x = "loss"), eta, eta_lo, eta_hi, size_explains_p,
    size_still_matters, n_points, n_runs. `n_boot`, `alpha`, `seed` and `options` also go to `flag_curve`.
    """
    if task == LOSS_TASK and metric == LOSS_METRIC:
        raise ValueError("the loss view plots a metric against the LM loss; the loss itself is its x, not a metric")
    if resample not in ("auto", "runs", "points"):
        raise ValueError(f"resample must be 'auto', 'runs' or 'points', got {resample!r}")
    return _loss_threshold(join_loss(df), task, metric, n_boot=n_boot, level=level, alpha=alpha, seed=seed,
                           resample=resample, w0=w0, **options)


def _to_loss(xp: float) -> float:
    """loss from x'' = exp(-loss); NaN where x'' is not a positive finite number."""
    return float(-np.log(xp)) if np.isfinite(xp) and xp > 0 else np.nan


def _loss_threshold(joined: pd.DataFrame, task: str, metric: str, *, n_boot: int, level: float, alpha: float,
                    seed: int, resample: str, w0: float = LOSS_W0, **options) -> dict:
    """`loss_threshold` on a table already joined with its loss (`join_loss`)."""
    j = joined[(joined["task"] == task) & (joined["metric"] == metric)]
    out = {"task": task, "metric": metric}
    n_runs = int(j["run_id"].nunique())
    if j.empty:
        return {**out, **{k: np.nan for k in FLAG_KEYS}, "x": "loss", "verdict": "inconclusive",
                "evidence": "no checkpoint has both this metric and its held-out loss",
                "reason": "not enough data: no checkpoint with a held-out loss", "eta": np.nan,
                "eta_lo": np.nan, "eta_hi": np.nan, "size_explains_p": np.nan, "size_still_matters": pd.NA,
                "n_points": 0, "n_runs": 0}
    hib = schema.higher_is_better(metric)
    spec = schema.METRICS[metric]
    loss = j["loss"].to_numpy(float)
    y = j["value"].to_numpy(float)
    res = flag_curve(loss, y, higher_is_better=hib, stderr=j["stderr"].to_numpy(float),
                     n=j["n"].astype("Float64").to_numpy(float, na_value=np.nan),
                     bounds=(spec.lower_bound, spec.upper_bound), x_name="loss", axis="reversed", w0=w0,
                     n_boot=n_boot, alpha=alpha, seed=seed, **options)
    flags = _flags(res)

    eta = eta_lo = eta_hi = knee = np.nan
    by_runs = resample == "runs" or (resample == "auto" and n_runs >= 10)
    table = pd.DataFrame({"exp_neg_loss": np.exp(-loss), "value": y})
    if by_runs:
        table["seed"] = pd.factorize(j["run_id"])[0]  # fit_law resamples whole "seeds": here, whole runs
    try:
        fit = fit_law(table, "hinge", "exp_neg_loss", "value", n_boot=n_boot, level=level, seed=seed)
        knee = _to_loss(fit.params["h"])
        h_lo, h_hi = fit.ci["h"]
        inside = np.sum(loss > knee) >= 2 and np.sum(loss < knee) >= 2
        right_way = (fit.params["b"] > 0) == hib
        if flags["verdict"] == "flat":
            eta_note = "no threshold: nothing rises beyond noise"
        elif not inside:
            eta_note = (f"no threshold: the hinge's knee ({knee:.4g}) sits at the edge of the measured losses "
                        f"({loss.min():.4g} to {loss.max():.4g})")
        elif not right_way:
            eta_note = "no threshold: the hinge gets worse below its knee, so no ability appears there"
        else:
            eta = knee
            eta_lo, eta_hi = _to_loss(h_hi), _to_loss(h_lo)
            eta_note = (f"eta = {eta:.4g} [{eta_lo:.4g}, {eta_hi:.4g}] ({level:.0%} bootstrap over "
                        f"{'runs' if by_runs else 'checkpoints'})")
    except ValueError as e:
        eta_note = f"no threshold fitted: {e}"
    p, why = _size_test(loss, y, j["n_params"].to_numpy(float), knee)
    still = pd.NA if not np.isfinite(p) else bool(p < alpha)
    size_text = (f"model size {'still explains' if still else 'adds nothing significant to'} the metric once loss "
                 f"is known (partial F test p = {p:.3g})" if np.isfinite(p) else f"size test not made: {why}")
    flags["evidence"] = (f"{_checkpoint_words(flags['evidence'])}. Against loss ({len(j)} checkpoints of {n_runs} "
                         f"runs): {eta_note}; {size_text}.")
    return {**out, **flags, "eta": eta, "eta_lo": eta_lo, "eta_hi": eta_hi, "size_explains_p": p,
            "size_still_matters": still, "n_points": int(len(j)), "n_runs": n_runs}


def loss_view(df: pd.DataFrame, *, n_boot: int = N_BOOT, level: float = 0.95, alpha: float = ALPHA, seed: int = 0,
              resample: str = "auto", w0: float = None, **options) -> pd.DataFrame:
    """`loss_threshold` for every (task, metric) of the table except the loss itself: one row each.

    This is `flag_emergence(df, x="loss")`. Columns: task, metric, the flag columns, eta, eta_lo, eta_hi,
    size_explains_p, size_still_matters, n_points, n_runs.
    """
    if resample not in ("auto", "runs", "points"):
        raise ValueError(f"resample must be 'auto', 'runs' or 'points', got {resample!r}")
    j = join_loss(df)
    keys = j[["task", "metric"]].drop_duplicates().sort_values(["task", "metric"])
    w0 = LOSS_W0 if w0 is None else w0
    rows = [_loss_threshold(j, t, m, n_boot=n_boot, level=level, alpha=alpha, seed=seed, resample=resample,
                            w0=w0, **options) for t, m in keys.itertuples(index=False)]
    out_rows = pd.DataFrame(rows)
    if len(out_rows):
        q = apply_fdr(out_rows[["verdict", "p_value", "evidence"]].copy(), alpha)
        for c in ("verdict", "q_value", "evidence"):
            for r, v in zip(rows, q[c]):
                r[c] = v
    cols = ["task", "metric", *FLAG_KEYS, "eta", "eta_lo", "eta_hi", "size_explains_p", "size_still_matters",
            "n_points", "n_runs"]
    out = pd.DataFrame(rows, columns=cols)
    out["size_still_matters"] = out["size_still_matters"].astype("boolean")
    return out
