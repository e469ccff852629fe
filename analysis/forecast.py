"""Forecast: a larger model's score on a task, predicted from a ladder of smaller runs, with intervals that are
measured to hold.

Three methods, each with a prediction interval for one new run's measurement:

- `two_step` (Bhagia et al. 2024, "Establishing Task Scaling Laws via Compute-Efficient Model Ladders"):
  1. the task loss `via` (e.g. the answer's NLL or bits per byte) from the runs' final checkpoints as
     L(N, D) = E + A / N^alpha + B / D^beta (`chinchilla`) where the ladder varies N and D independently over three
     budgets or more, else as a power law in compute C = 6 N D (a ladder with one token budget, or with D tied to N,
     cannot separate them, and two budgets cannot identify B and beta);
  2. the metric as a sigmoid of that loss, fitted on every checkpoint of every run (intermediate ones too): the
     `logistic` law in x = 1 / loss, so that its floor is the score as the loss grows without bound (chance, for
     multiple choice: give it as `floor`, or it is fitted) and its ceiling the score as the loss goes to 0.
  Chained: each bootstrap draw of step 1's prediction (a refitted curve plus a resampled residual: where the new
  run's loss may land) is carried through one bootstrap draw of step 2 (its refitted sigmoid plus a resampled
  residual), so the interval carries the uncertainty of both steps and the scatter of a single run.
  `via` may be a loss measured on another task of the same runs, `TASK:METRIC` (a general language-modelling loss,
  as Gadre et al. 2024 use the C4 validation loss); a perplexity enters as its log.
- `direct`: the metric as a sigmoid (`logistic`) in compute C from the final checkpoints: 6 N D, or the `flops`
  column where the targets give flops too (one convention for the ladder and its targets).
- `direct_log` (Krajewski et al. 2025, who find a power law from compute to log-accuracy extrapolates better than a
  sigmoid): the share of the way from the floor (given, else the metric's worse bound) to the ceiling (given, else
  the metric's better bound) that a run's score has come, u, as -log u = E + A C^-alpha (the `power` law, E >= 0), from
  the final checkpoints. -log u falls toward E as compute grows, so the score rises toward a level of its own,
  exp(-E) of the way up. A score at or past the floor has no logarithm: u is taken as at least half an example's
  worth, 0.5 / n (n: the row's examples; 1/1000 where the table does not say), a continuity correction. A new run
  scatters about the curve on the metric's own scale, as the runs of the largest sizes do (a score at chance falls
  below the floor as often as above). It needs a metric bounded on both sides (an accuracy, exact match), and is
  refused for others.
- `auto`: the method with the smallest mean absolute error in the rolling-origin backtest of this ladder, on the
  (origin, run) pairs every method predicted; the row's `method` says which it chose, and `chosen_by` why.

A ladder whose fitted curve has not risen 10% of the way from floor to ceiling, by more than twice its points'
scatter, has not begun the rise, and cannot place it: for a target past it the interval spans a new run at the
ladder's edge up to the ceiling, and the row says `rise_unseen` (`_Fitted._rise`). Every curve and interval stays
inside the metric's bounds (`analysis.schema.METRICS`). The bootstrap is `analysis.fit.fit_law`'s: over runs where
the table has enough of them, parametric otherwise.

The rolling-origin backtest (`forecast_backtest`): for each size k of the ladder (smallest first, from the first that
leaves enough sizes below it to fit), fit on every run smaller than size k, all budgets, and predict each run of size
k: its error and whether its measured value lies inside the interval. `coverage` summarises it per method, with the
number of origins and of predicted runs, the figure to quote beside any forecast of this ladder.

This module imports numpy, scipy and pandas only.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import schema
from analysis.fit import fit_law
from analysis.ladder import check_targets, compute, ladder, task_snr
from analysis.pipeline import csv_plain, csv_safe

METHODS = ("two_step", "direct", "direct_log")
COLUMNS = ["task", "metric", "n_params", "tokens", "predicted", "lo", "hi", "method", "chosen_by", "rise_unseen",
           "distance",
           "drift", "interval_from", "lo_boot", "hi_boot", "snr", "snr_signal", "snr_noise", "snr_noise_from"]
VIA_COLUMNS = ["via_predicted", "via_lo", "via_hi"]
BACKTEST_COLUMNS = ["task", "metric", "method", "laws", "origin", "n_fit_sizes", "run_id", "n_params", "tokens",
                    "predicted", "lo", "hi", "actual", "error", "rel_error", "inside", "rise_unseen", "distance",
                    "lo_cal", "hi_cal", "inside_cal"]
COVERAGE_COLUMNS = ["task", "metric", "method", "level", "n_origins", "n_predicted", "coverage", "mean_width", "mae",
                    "mean_rel_error", "n_rise_unseen", "coverage_seen", "mean_width_seen", "n_cal", "coverage_cal_seen",
                    "mean_width_cal_seen"]
MIN_SIZES = 3  # distinct sizes a fit needs below the size it predicts
MIN_RUNS = 4  # runs a fit needs
MIN_BUDGETS = 3  # distinct token budgets L(N, D) needs; fewer, and step 1 is a power law in compute
D_MIN = 0.1  # decades of compute: the least extrapolation distance a backtest error is scaled by
SHORT_WIDEN = 1.5  # no backtest at all: the bootstrap interval is widened this much about the prediction


def _check_levels(metric: str, floor: float | None, ceiling: float | None) -> None:
    """A given floor and ceiling lie inside the metric's bounds, the ceiling on the better side of the floor (above
    it, or below it for a metric that is better lower); ValueError otherwise."""
    lo, hi = schema.metric_bounds(metric)
    lo, hi = (-np.inf if lo is None else lo), (np.inf if hi is None else hi)
    for name, v in (("floor", floor), ("ceiling", ceiling)):
        if v is not None and not (np.isfinite(v) and lo <= v <= hi):
            raise ValueError(f"the {name} {v} is outside {metric}'s range [{lo}, {hi}]")
    if floor is None or ceiling is None:
        return
    if _higher(metric) is False and not ceiling < floor:
        raise ValueError(f"the floor {floor} must lie above the ceiling {ceiling}: {metric} is better lower, so its "
                         "floor (far from learning) is the higher score")
    if _higher(metric) is not False and not floor < ceiling:
        raise ValueError(f"the floor {floor} must lie below the ceiling {ceiling}")


def log_levels(bounds, floor: float | None, ceiling: float | None, higher: bool | None) -> tuple[float, float]:
    """direct_log's two ends on the metric's scale: (worst, best), the floor and ceiling where given, else the
    metric's bounds. ValueError for a metric of unknown direction or with an open end."""
    lo, hi = bounds
    if higher is None or lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError("direct_log needs a metric bounded on both sides with a known direction (an accuracy, "
                         "exact match); use direct or two_step")
    worst = floor if floor is not None else (lo if higher else hi)
    best = ceiling if ceiling is not None else (hi if higher else lo)
    if not (best - worst) * (1 if higher else -1) > 0:
        raise ValueError(f"direct_log needs room between the floor {worst:g} and the ceiling {best:g}: give a floor "
                         "on the metric's worse side of its ceiling")
    return float(worst), float(best)


def _eps(final: pd.DataFrame) -> np.ndarray:
    """direct_log's least share of the way up: half an example's worth, 0.5 / n, else 1/1000."""
    n = pd.to_numeric(final["n_examples"], errors="coerce").to_numpy(float) if "n_examples" in final else None
    if n is None:
        return np.full(len(final), 1e-3)
    return np.where(np.isfinite(n) & (n > 0), 0.5 / np.where(n > 0, n, 1.0), 1e-3)


def _higher(metric: str) -> bool | None:
    """Whether the metric's better end is up (a registered metric's direction), None where it is not registered."""
    m = schema.METRICS.get(str(metric))
    return None if m is None else m.higher_is_better


def _enough(final: pd.DataFrame, what: str) -> None:
    sizes = final["n_params"].nunique()
    if sizes < MIN_SIZES or len(final) < MIN_RUNS:
        raise ValueError(f"{what}: the ladder has {sizes} size(s) and {len(final)} run(s) with this task measured; "
                         f"a forecast needs at least {MIN_SIZES} sizes and {MIN_RUNS} runs")


RISE_SEEN = 0.1  # how far from floor to ceiling a ladder's fitted curve must have risen to say where the rise is
TAIL = 0.025  # a target's loss draws beyond every ladder checkpoint's, in this share or more, put it past the ladder
RISE_NOISE = 2.0  # how many times the points' RMS scatter that rise must be, within the data, to be told from noise
TOP_SIZES = 2  # the ladder's largest sizes, whose runs' scatter about the fit a new run's draws take


def _top_scatter(fit, frame: pd.DataFrame, x, y: str):
    """`fit` with the residuals a new run's draw resamples taken from the runs at the ladder's TOP_SIZES largest
    sizes only: the scatter between runs is measured where it lives, nearest the targets. Where runs split between
    a floor and an acquired level the scatter there is large, and it is small on a plateau; pooled over every size
    it would be neither. The refitted curves (the fit's own uncertainty) are unchanged."""
    top = frame[frame["n_params"].isin(np.sort(frame["n_params"].unique())[-TOP_SIZES:])]
    X = top[list(x)].to_numpy(float).T if isinstance(x, tuple) else top[x].to_numpy(float)
    out = fit.with_scatter_of(X, top[y].to_numpy(float))
    return out if len(out.residuals) >= 2 else fit


# ------------------------------------------------------------------------------------------------------ methods
class _Fitted:
    """One method fitted on a ladder: `predict(targets)` gives the point prediction and a (B, n) array of draws of a
    new run's measurement at each target (and of its loss, for two_step)."""

    def __init__(self, method: str, final: pd.DataFrame, points: pd.DataFrame, bounds, floor, n_boot: int, seed: int,
                 use_flops: bool = False, ceiling: float | None = None, higher: bool | None = True):
        self.method, self.seed, self.use_flops, self.higher = method, seed, use_flops, higher
        lo, hi = bounds
        better = hi if higher else lo
        # the ladder's reach: a target larger, or trained with more compute, than every run lies past it
        # (6 N D on both sides whatever the compute convention: the test is of extrapolation, and needs no flops)
        self.reach = (float(final["n_params"].max()), float(np.max(compute(final, False))))
        # the floor is the score far from learning on either route; the ceiling given is the score at zero loss,
        # step 2's alone (direct's ceiling, at unbounded compute, is fitted)
        level_bounds = {"floor": (floor, floor)} if floor is not None else None
        run_index = {r: i for i, r in enumerate(final["run_id"])}
        self.to_value = None  # direct_log: from the fitted scale (-log u) to the metric's
        if method == "direct_log":
            _enough(final, "direct_log")
            worst, top = log_levels(bounds, floor, ceiling, higher)
            u = np.clip((final["value"].to_numpy(float) - worst) / (top - worst), _eps(final), 1.0)
            pts = final.assign(compute=compute(final, use_flops), seed=final["run_id"].map(run_index),
                               neg_log=-np.log(u))
            self.fit = fit_law(pts, "power", "compute", "neg_log", n_boot=n_boot, seed=seed)
            self.value_range = (min(lo, hi), max(lo, hi))
            self.to_value = lambda y: np.clip(worst + (top - worst) * np.exp(-np.asarray(y, float)),
                                              *self.value_range)
            # a new run scatters about the curve on the metric's own scale (a score at chance scatters below the
            # floor as often as above it, where -log u has no value): the runs of the largest sizes measure it
            near = pts[pts["n_params"].isin(np.sort(pts["n_params"].unique())[-TOP_SIZES:])]
            near = near if len(near) >= 2 else pts
            resid = near["value"].to_numpy(float) - self.to_value(self.fit.predict(near["compute"].to_numpy(float)))
            self.value_scatter = (float(np.sqrt(np.mean(resid ** 2))), len(resid))
            self.name = "direct_log (-log of the share of the way up, a power law in compute)"
            self._rise_log(pts["compute"], pts["value"], worst, top)
            return
        if method == "direct":
            _enough(final, "direct")
            pts = final.assign(compute=compute(final, use_flops), seed=final["run_id"].map(run_index))
            self.fit = fit_law(pts, "logistic", "compute", "value", y_bounds=(lo, hi), bounds=level_bounds,
                               n_boot=n_boot, seed=seed)
            self.fit = _top_scatter(self.fit, pts, "compute", "value")
            self.name = "direct (logistic in compute)"
            self._rise(pts["compute"], pts["value"], better)
            return
        _enough(final, "two_step")
        if final["via"].isna().any() or (final["via"] <= 0).any():
            raise ValueError("two_step: every run needs a positive task loss (via) at its final checkpoint")
        # B / D^beta needs three budgets or more to be identified (two give two points for two unknowns), and N and
        # D must vary apart: some size trained on more than one budget
        separable = (final["tokens"].nunique() >= MIN_BUDGETS
                     and final[["n_params", "tokens"]].drop_duplicates().shape[0] > final["n_params"].nunique())
        if separable:
            self.loss_fit = fit_law(final, "chinchilla", ("n_params", "tokens"), "via", n_boot=n_boot, seed=seed,
                                    loss="l2", space="log")
            self.loss_x = "chinchilla"
            self.loss_fit = _top_scatter(self.loss_fit, final, ("n_params", "tokens"), "via")
        else:
            by_compute = final.assign(compute=compute(final, use_flops))
            self.loss_fit = fit_law(by_compute, "power", "compute", "via", n_boot=n_boot, seed=seed, space="log")
            self.loss_x = "power in compute"
            self.loss_fit = _top_scatter(self.loss_fit, by_compute, "compute", "via")
        if len(points) < 2 * MIN_RUNS:
            raise ValueError(f"two_step: {len(points)} checkpoints have both the metric and the loss; the sigmoid "
                             f"of step 2 needs at least {2 * MIN_RUNS}")
        pts = points.assign(inv_loss=1.0 / points["via"].astype(float), seed=points["run_id"].map(run_index))
        if ceiling is not None:
            level_bounds = {**(level_bounds or {}), "ceiling": (ceiling, ceiling)}
        self.fit = fit_law(pts, "logistic", "inv_loss", "value", y_bounds=(lo, hi), bounds=level_bounds,
                           n_boot=n_boot, seed=seed)
        self.name = f"two_step ({self.loss_x}, then a sigmoid of the loss)"
        self._rise(pts["inv_loss"], pts["value"], ceiling if ceiling is not None else better)

    def _rise(self, x: pd.Series, y: pd.Series, best: float | None) -> None:
        """Whether the ladder has seen the rise. Three things must hold: the fitted curve moves from its floor toward
        the metric's better end; the ladder's largest x lies past its 10% point, where it has risen RISE_SEEN of the
        way from floor to ceiling (given or fitted; the 10%-90% convention of the jump widths), x0 9^(-1/k); and the
        rise within the data, f(largest x) - f(smallest x), is at least RISE_NOISE (2) times the RMS scatter of the
        points about the curve (a sigmoid fitted to noise about a floor finds a step of a fraction of the scatter,
        as steep as its bounds allow, and it may point either way). Where they do not hold, the ladder says where the
        rise is not, and nothing of where it is: a target past the ladder may not have begun it or may have
        completed it (the onset of an emergent ability is this case). Its interval then spans both: from a new run's
        score at the ladder's edge to `best`, two_step's given ceiling, else the metric's better bound. A metric of
        unknown direction has no rise to speak of: its curve is taken as it is fitted."""
        p = self.fit.params
        x, y = np.asarray(x, float), np.asarray(y, float)
        self.x_max = float(np.max(x))
        self.best = best if best is not None and np.isfinite(best) else None
        if self.higher is None:
            self.rise_seen = True
            return
        sign = 1 if self.higher else -1
        toward = (p["ceiling"] - p["floor"]) * sign > 0
        start = p["x0"] * ((1 - RISE_SEEN) / RISE_SEEN) ** (-1 / p["k"])
        ends = self.fit.predict(np.array([np.min(x), self.x_max]))
        scatter = float(np.sqrt(np.mean((y - self.fit.predict(x)) ** 2)))
        self.rise_seen = bool(toward and self.x_max >= start and (ends[1] - ends[0]) * sign >= RISE_NOISE * scatter)

    def _rise_log(self, x: pd.Series, y: pd.Series, worst: float, best: float) -> None:
        """`_rise` for direct_log, on the metric's scale: the fitted curve at the ladder's largest x is RISE_SEEN of
        the way from the floor up, and it rises within the data by RISE_NOISE times the points' scatter about it."""
        x, y = np.asarray(x, float), np.asarray(y, float)
        self.x_max, self.best = float(np.max(x)), best
        ends = self.to_value(self.fit.predict(np.array([np.min(x), self.x_max])))
        fitted = self.to_value(self.fit.predict(x))
        scatter = float(np.sqrt(np.mean((y - fitted) ** 2)))
        sign = 1 if self.higher else -1
        self.rise_seen = bool((ends[1] - worst) * sign >= RISE_SEEN * abs(best - worst)
                              and (ends[1] - ends[0]) * sign >= RISE_NOISE * scatter)

    def _draws(self, x, rng) -> np.ndarray:
        """Draws of a new run's measurement at compute x, on the metric's scale. direct_log's: each refitted curve
        plus the scatter of the largest sizes' runs about the fit, s t_n as `FitResult.with_scatter_of` draws it."""
        if self.to_value is None:
            return self.fit.draws(x, "prediction", rng)
        curves = self.to_value(self.fit.draws(x, "confidence", rng))
        s, n = self.value_scatter
        return np.clip(curves + s * rng.standard_t(n, size=curves.shape), *self.value_range)

    def _loss_x(self, at: pd.DataFrame):
        if self.loss_x == "chinchilla":
            return np.stack([at["n_params"].to_numpy(float), at["tokens"].to_numpy(float)])
        return compute(at, self.use_flops)

    def predict(self, at: pd.DataFrame) -> dict:
        rng = np.random.default_rng(self.seed + 7)
        # past the ladder: more parameters or compute than every run (and, for two_step, below, a loss interval that
        # reaches below every checkpoint's loss)
        past = (at["n_params"].to_numpy(float) > self.reach[0]) | (compute(at, False) > self.reach[1])
        if self.method in ("direct", "direct_log"):
            x = compute(at, self.use_flops)
            predicted = self.fit.predict(x)
            if self.to_value is not None:
                predicted = self.to_value(predicted)
            return {"predicted": predicted, "draws": self._draws(x, rng), "past": past}
        X = self._loss_x(at)
        loss = self.loss_fit.predict(X)
        loss_draws = self.loss_fit.draws(X, "prediction", rng)
        m = min(len(loss_draws), len(self.fit.finite_boot))
        draws = self.fit.draws(1.0 / loss_draws[:m], "prediction", rng, per_draw=True)
        past = past | (np.nanquantile(1.0 / loss_draws, 1 - TAIL, axis=0) > self.x_max)
        return {"predicted": self.fit.predict(1.0 / loss), "draws": draws, "via": loss, "via_draws": loss_draws,
                "past": past}

    def interval(self, p: dict, level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The `level` prediction interval of each target from its draws, and `rise_unseen`: for a target past a
        ladder that has not seen the rise (`_rise`), the fitted curve's extrapolation says nothing, and the interval
        spans both ends: the run may not have begun the rise (a new run's score at the ladder's edge), or have
        completed it (the ceiling given, else the metric's upper bound)."""
        lo, hi = _interval(p["draws"], level)
        unseen = np.asarray(p["past"] & (not self.rise_seen), dtype=bool)
        if not unseen.any() or self.higher is None:
            return lo, hi, unseen
        # a new run's score at the ladder's edge: a target past the ladder may not have begun the rise (drawn from a
        # stream of its own, so that the other draws do not depend on whether these are made)
        edge = self._draws(np.full(len(unseen), self.x_max), np.random.default_rng(self.seed + 11))
        edge_lo, edge_hi = _interval(edge, level)
        if self.higher:
            lo = np.where(unseen, np.minimum(lo, edge_lo), lo)
            hi = np.where(unseen, np.maximum(hi, self.best), hi) if self.best is not None else hi
        else:
            hi = np.where(unseen, np.maximum(hi, edge_hi), hi)
            lo = np.where(unseen, np.minimum(lo, self.best), lo) if self.best is not None else lo
        return lo, hi, unseen


def _interval(draws: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    q = (1 - level) / 2
    return np.nanquantile(draws, q, axis=0), np.nanquantile(draws, 1 - q, axis=0)


def _around(predicted, lo, hi) -> tuple[np.ndarray, np.ndarray]:
    """An interval that holds its own point: where the bootstrap's fits all fall on one side of the fit to the data
    (a skewed or biased bootstrap near a bound), the percentile interval is stretched to reach the prediction."""
    predicted = np.asarray(predicted, dtype=float)
    return np.fmin(lo, predicted), np.fmax(hi, predicted)


# ------------------------------------------------------------------------------------ intervals from the backtest
def extrapolation(at: pd.DataFrame, fitted: pd.DataFrame) -> np.ndarray:
    """Decades of compute (6 N D) from the largest run a forecast was fitted on to each target in `at`: how far it
    extrapolates (negative where a target has less compute than that run)."""
    return np.log10(compute(at, False) / float(np.max(compute(fitted, False))))


def excess(lo, hi, actual) -> np.ndarray:
    """How far each measured value lies outside its bootstrap interval (0 inside it): the part of the error the
    bootstrap, which carries the fit's uncertainty and one run's scatter, did not foresee."""
    lo, hi, actual = (np.asarray(v, float) for v in (lo, hi, actual))
    return np.maximum(0.0, np.fmax(lo - actual, actual - hi))


def drift_score(lo, hi, actual, distance) -> np.ndarray:
    """`excess` per decade of extrapolation: / max(distance, D_MIN)."""
    return excess(lo, hi, actual) / np.maximum(np.asarray(distance, float), D_MIN)


def drift_scores(backtest: pd.DataFrame, method: str) -> np.ndarray:
    """Each backtested run's excess over its bootstrap interval (`excess`) per decade of extrapolation
    (/ max(distance, D_MIN)), over the runs of `method` whose ladder had seen the rise (an interval past an unseen
    rise already reaches the ceiling)."""
    if backtest is None or backtest.empty or "distance" not in backtest.columns:
        return np.empty(0)
    bt = backtest[(backtest["method"].astype(str) == method) & ~_flag(backtest["rise_unseen"])]
    num = {c: pd.to_numeric(bt[c], errors="coerce").to_numpy(float) for c in ("lo", "hi", "actual", "distance")}
    out = drift_score(num["lo"], num["hi"], num["actual"], num["distance"])
    return out[np.isfinite(out)]


def drift_quantile(scores: np.ndarray, level: float) -> tuple[float, str]:
    """The split-conformal quantile of the backtest's excess per decade, and where the interval's width came from.
    With n scores it is the ceil((n + 1) level)-th smallest, which a new run's score exceeds with probability at
    most 1 - level if the scores are exchangeable; fewer than level / (1 - level) scores (19 at 95%) have no such
    quantile, and the largest is used, which the row says. No scores: NaN."""
    s = np.sort(np.asarray(scores, float)[np.isfinite(scores)])
    n = s.size
    if n == 0:
        return float("nan"), f"no backtest: the bootstrap interval widened {SHORT_WIDEN:g}x"
    j = int(np.ceil((n + 1) * level))
    if j <= n:
        return float(s[j - 1]), f"backtest: {n} runs"
    return float(s[-1]), f"backtest: {n} runs, too few for its quantile: the largest excess"


def reach(bounds, ceiling: float | None, higher: bool | None) -> tuple[float, float]:
    """The metric's bounds, with the better one moved to a given ceiling (the score at zero loss: no run does
    better), as a widened interval must respect."""
    lo, hi = bounds
    if ceiling is not None and higher is not None:
        lo, hi = (lo, min(hi, ceiling)) if higher else (max(lo, ceiling), hi)
    return lo, hi


def calibrated(predicted, lo, hi, distance, drift: float, bounds) -> tuple[np.ndarray, np.ndarray]:
    """The bootstrap interval widened on each side by the backtest's drift: drift x max(distance, D_MIN) (the
    excess per decade of extrapolation, times the decades this target lies past the ladder); with no drift
    measured, widened SHORT_WIDEN x about the prediction. Inside the metric's bounds."""
    predicted, lo, hi = (np.asarray(v, float) for v in (predicted, lo, hi))
    if np.isfinite(drift):
        half = drift * np.maximum(np.asarray(distance, float), D_MIN)
        lo, hi = lo - half, hi + half
    else:
        lo, hi = predicted - SHORT_WIDEN * (predicted - lo), predicted + SHORT_WIDEN * (hi - predicted)
    return np.clip(lo, bounds[0], bounds[1]), np.clip(hi, bounds[0], bounds[1])


def check_arguments(method: str, via: str | None, level: float, n_boot: int) -> None:
    """One line for arguments no forecast can use, before anything is fitted."""
    if method not in ("auto", *METHODS):
        raise ValueError(f"method must be auto, two_step, direct or direct_log, got {method!r}")
    if method == "two_step" and not via:
        raise ValueError("method two_step needs via: the task loss metric (e.g. --via answer_nll or bits_per_byte)")
    if not 0 < level < 1:
        raise ValueError(f"the interval level must be between 0 and 1 (0.95 for 95%), got {level:g}")
    if isinstance(n_boot, bool) or int(n_boot) != n_boot or n_boot < 1:
        raise ValueError(f"the intervals come from bootstrap fits: n_boot must be a positive integer (200 is the "
                         f"default), got {n_boot}")


# ------------------------------------------------------------------------------------------------------ the API
def forecast(results: pd.DataFrame, at, task: str, metric: str, via: str | None = None, method: str = "auto",
             level: float = 0.95, floor: float | None = None, n_boot: int = 200, seed: int = 0,
             backtest: pd.DataFrame | None = None, ceiling: float | None = None, calibrate: bool = True) -> pd.DataFrame:
    """Predict `metric` on `task` for each target model in `at` (n_params, tokens, optionally flops) from the ladder
    in `results` (the tidy results table: sizes x budgets x checkpoints). One row per target: task, metric,
    n_params, tokens, predicted, lo, hi (a `level` prediction interval for one run's measurement), method, and with
    `via` (the task loss) via_predicted, via_lo, via_hi. `floor`: the metric's chance level where known (multiple
    choice), else fitted. `ceiling`: the score at zero loss where known (two_step), else fitted: give the metric's
    upper bound when `via` is the loss of the answer itself (answer_nll, bits_per_byte of the answer), whose zero
    makes the answer certain. method: two_step (needs via), direct, direct_log, or auto (by rolling-origin
    backtest, the row's `chosen_by` saying why; `backtest`, if given, is that of `forecast_backtest` with the same
    arguments). Each row also has the task's signal-to-noise
    ratio on the ladder: snr, snr_signal, snr_noise, snr_noise_from (`task_snr`).

    With `calibrate` (the default) each interval also holds the drift the rolling-origin backtest measured: the
    excess over the bootstrap's interval per decade of extrapolation, at its split-conformal quantile, times
    `distance`, the decades of compute the target lies past the ladder, on each side (`calibrated`); `drift` is that
    excess per decade, `interval_from` says what the
    width rests on (`drift_quantile`), and `lo_boot`, `hi_boot` keep the bootstrap's own interval."""
    at = check_targets(at)
    check_arguments(method, via, level, n_boot)
    _check_levels(metric, floor, ceiling)
    final, points = ladder(results, task, metric, via)
    bounds = schema.metric_bounds(metric)
    chosen_by = "given"
    if method == "auto":
        if backtest is None:
            backtest = forecast_backtest(results, task, metric, via, level=level, floor=floor, n_boot=n_boot,
                                         seed=seed, use_flops="flops" in at.columns, ceiling=ceiling)
        method, chosen_by = method_choice(backtest, "two_step" if via else "direct")
    model = _Fitted(method, final, points, bounds, floor, n_boot, seed, use_flops="flops" in at.columns,
                    ceiling=ceiling, higher=_higher(metric))
    p = model.predict(at)
    lo, hi, unseen = model.interval(p, level)
    lo, hi = _around(p["predicted"], lo, hi)
    distance = extrapolation(at, final)
    lo_boot, hi_boot = lo, hi
    drift, source = float("nan"), "bootstrap"
    if calibrate:
        if backtest is None:
            backtest = forecast_backtest(results, task, metric, via, methods=[method], level=level, floor=floor,
                                         n_boot=n_boot, seed=seed, use_flops="flops" in at.columns, ceiling=ceiling)
        drift, source = drift_quantile(drift_scores(backtest, method), level)
        lo, hi = calibrated(p["predicted"], lo, hi, distance, drift, reach(bounds, ceiling, _higher(metric)))
    out = pd.DataFrame({"task": task, "metric": metric, "n_params": at["n_params"], "tokens": at["tokens"],
                        "predicted": p["predicted"], "lo": lo, "hi": hi, "method": model.name,
                        "chosen_by": chosen_by, "rise_unseen": unseen, "distance": distance, "drift": drift, "interval_from": source,
                        "lo_boot": lo_boot, "hi_boot": hi_boot})
    snr = task_snr(results, task, metric)
    out = out.assign(snr=snr["snr"], snr_signal=snr["signal"], snr_noise=snr["noise"], snr_noise_from=snr["noise_from"])
    if "via" in p:
        vlo, vhi = _around(p["via"], *_interval(p["via_draws"], level))
        out = out.assign(via_predicted=p["via"], via_lo=vlo, via_hi=vhi)
    return out


def choose_method(backtest: pd.DataFrame, default: str = "two_step") -> str:
    """The method with the smallest mean absolute error over the backtest's predictions (`method_choice`)."""
    return method_choice(backtest, default)[0]


def method_choice(backtest: pd.DataFrame, default: str = "two_step") -> tuple[str, str]:
    """(method, why): the method with the smallest mean absolute error over the backtest's predictions, on the
    (origin, run) pairs every method predicted (a method that could not fit an origin is not let off it); ties go
    to the first in METHODS, and `default` where the backtest predicted nothing. `why` says so in words."""
    if backtest.empty or backtest["error"].notna().sum() == 0:
        return default, f"auto: the backtest predicted no run of this ladder, so {default}"
    bt = backtest[backtest["error"].notna()]
    every = bt.groupby(["origin", "run_id"])["method"].transform("nunique") == bt["method"].nunique()
    bt = bt[every] if every.any() else bt
    mae = bt.assign(abs_error=bt["error"].abs()).groupby("method")["abs_error"].mean()
    order = sorted(mae.index, key=lambda m: (mae[m], METHODS.index(m) if m in METHODS else len(METHODS)))
    best = str(order[0])
    n = int((bt["method"] == best).sum())
    others = ", ".join(f"{m} {mae[m]:.3g}" for m in order[1:])
    return best, (f"auto: smallest mean |error| in the backtest, {mae[best]:.3g} over {n} runs"
                  + (f" (against {others})" if others else " (the only method that fitted)"))


def forecast_backtest(results: pd.DataFrame, task: str, metric: str, via: str | None = None, methods=None,
                      level: float = 0.95, floor: float | None = None, n_boot: int = 200, seed: int = 0,
                      use_flops: bool = False, ceiling: float | None = None) -> pd.DataFrame:
    """Rolling-origin backtest on the ladder itself: for each size k with at least MIN_SIZES sizes below it, fit each
    method on the runs smaller than size k (all budgets) and predict every run of size k. One row per (method,
    origin, predicted run): BACKTEST_COLUMNS. `distance` is the decades of compute each run lies past the runs
    fitted; `lo_cal`, `hi_cal`, `inside_cal` are the interval `forecast` would give with the drift measured on the
    earlier origins only (`calibrated`), so their coverage is measured on runs the calibration never saw."""
    methods = list(methods or (METHODS if via else [m for m in METHODS if m != "two_step"]))
    for method in methods:
        check_arguments(method, via, level, n_boot)
    _check_levels(metric, floor, ceiling)
    final, points = ladder(results, task, metric, via)
    bounds = schema.metric_bounds(metric)
    sizes = np.sort(final["n_params"].unique())
    rows = []
    seen_scores = {m: [] for m in methods}  # each method's drift scores from the origins already predicted
    for k in range(MIN_SIZES, len(sizes)):
        below = final["n_params"] < sizes[k]
        fit_runs = set(final.loc[below, "run_id"])
        targets = final[final["n_params"] == sizes[k]]
        for method in methods:
            try:
                model = _Fitted(method, final[below], points[points["run_id"].isin(fit_runs)], bounds, floor,
                                n_boot, seed, use_flops, ceiling, _higher(metric))
            except ValueError:
                continue  # too few runs below this origin for this method: no prediction, nothing to score
            p = model.predict(targets)
            lo, hi, unseen = model.interval(p, level)
            lo, hi = _around(p["predicted"], lo, hi)
            actual = targets["value"].to_numpy(float)
            err = p["predicted"] - actual
            distance = extrapolation(targets, final[below])
            drift = drift_quantile(np.concatenate(seen_scores[method]) if seen_scores[method] else np.empty(0),
                                   level)[0]
            lo_cal, hi_cal = calibrated(p["predicted"], lo, hi, distance, drift,
                                        reach(bounds, ceiling, _higher(metric)))
            seen = ~np.asarray(unseen, bool) & np.isfinite(err)
            seen_scores[method].append(drift_score(lo, hi, actual, distance)[seen])
            for i, (_, r) in enumerate(targets.iterrows()):
                rows.append({"task": task, "metric": metric, "method": method, "laws": model.name,
                             "origin": float(sizes[k]),
                             "n_fit_sizes": int(k), "run_id": r["run_id"], "n_params": float(r["n_params"]),
                             "tokens": float(r["tokens"]), "predicted": float(p["predicted"][i]),
                             "lo": float(lo[i]), "hi": float(hi[i]), "actual": actual[i], "error": float(err[i]),
                             "rel_error": float(err[i] / actual[i]) if actual[i] != 0 else np.nan,
                             "inside": bool(lo[i] <= actual[i] <= hi[i]), "rise_unseen": bool(unseen[i]),
                             "distance": float(distance[i]), "lo_cal": float(lo_cal[i]), "hi_cal": float(hi_cal[i]),
                             "inside_cal": bool(lo_cal[i] <= actual[i] <= hi_cal[i])})
    return pd.DataFrame(rows, columns=BACKTEST_COLUMNS)


def _flag(column: pd.Series) -> pd.Series:
    """A backtest's True/False column as booleans, as written (bool) or read back from a CSV ("True", 1)."""
    return column.astype(str).str.lower().isin(["true", "1", "1.0"])


def coverage(backtest: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per method: how many origins and predicted runs the backtest has, the share of runs inside their interval
    and the intervals' mean width (a share held by intervals as wide as the metric's range says nothing), the mean
    absolute error and the mean absolute relative error; and the same share and width over the runs whose ladder
    had seen the rise (`coverage_seen`, `mean_width_seen`), beside how many had not (`n_rise_unseen`: their
    intervals reach the ceiling, and hold by being wide); over those same runs, the share inside and the width of
    the intervals calibrated by the earlier origins' drift (`n_cal`, `coverage_cal_seen`, `mean_width_cal_seen`)."""
    if backtest.empty:
        return pd.DataFrame(columns=COVERAGE_COLUMNS)
    unseen = _flag(backtest["rise_unseen"]) if "rise_unseen" in backtest.columns else pd.Series(False, backtest.index)
    inside = _flag(backtest["inside"])
    width = pd.to_numeric(backtest["hi"], errors="coerce") - pd.to_numeric(backtest["lo"], errors="coerce")
    backtest = backtest.assign(inside=inside, width=width, unseen=unseen, inside_seen=inside.where(~unseen),
                               width_seen=width.where(~unseen))
    if "inside_cal" in backtest.columns:  # calibrated by the earlier origins' drift (older files lack it)
        cal = _flag(backtest["inside_cal"]).where(~unseen)
        wcal = (pd.to_numeric(backtest["hi_cal"], errors="coerce")
                - pd.to_numeric(backtest["lo_cal"], errors="coerce")).where(~unseen)
    else:
        cal = wcal = pd.Series(np.nan, backtest.index)
    backtest = backtest.assign(inside_cal_seen=cal, width_cal_seen=wcal)
    g = backtest.groupby(["task", "metric", "method"], sort=False)
    out = g.agg(n_origins=("origin", "nunique"), n_predicted=("inside", "size"),
                coverage=("inside", "mean"), mean_width=("width", "mean"),
                mae=("error", lambda e: float(np.mean(np.abs(e)))),
                mean_rel_error=("rel_error", lambda e: float(np.nanmean(np.abs(e))) if e.notna().any() else np.nan),
                n_rise_unseen=("unseen", "sum"),
                coverage_seen=("inside_seen", lambda v: float(v.dropna().astype(float).mean())
                               if v.notna().any() else np.nan),
                mean_width_seen=("width_seen", "mean"),
                n_cal=("inside_cal_seen", "count"),
                coverage_cal_seen=("inside_cal_seen", lambda v: float(v.dropna().astype(float).mean())
                                   if v.notna().any() else np.nan),
                mean_width_cal_seen=("width_cal_seen", "mean"))
    return out.reset_index().assign(level=level)[COVERAGE_COLUMNS]


def _with_other_tasks(frame: pd.DataFrame, path, task: str, metric: str) -> pd.DataFrame:
    """`frame` (one task and metric) after the rows `path` already holds for other tasks or metrics: a forecast of
    add3 does not erase that of add2. A file that cannot be read is replaced."""
    try:
        old = csv_plain(pd.read_csv(path))
    except (OSError, ValueError, pd.errors.ParserError):
        return frame
    if not {"task", "metric"} <= set(old.columns) or not len(old):
        return frame
    other = old[(old["task"].astype(str) != str(task)) | (old["metric"].astype(str) != str(metric))]
    return pd.concat([other, frame], ignore_index=True) if len(other) else frame


def write_forecast(results: pd.DataFrame, out_dir, at, task: str, metric: str, via: str | None = None,
                   method: str = "auto", level: float = 0.95, floor: float | None = None, n_boot: int = 200,
                   seed: int = 0, ceiling: float | None = None) -> dict[str, pd.DataFrame]:
    """`forecast` and `forecast_backtest` of one task, written to `out_dir` as forecast.csv and
    forecast_backtest.csv (the rows of this task and metric replaced, those of others kept; each file replaced whole, or not at all); returns the two tables and the coverage."""
    from pathlib import Path

    out_dir = Path(out_dir)
    at = check_targets(at)
    check_arguments(method, via, level, n_boot)
    bt = forecast_backtest(results, task, metric, via, methods=[method] if method != "auto" else None, level=level,
                           floor=floor, n_boot=n_boot, seed=seed, use_flops="flops" in at.columns, ceiling=ceiling)
    pred = forecast(results, at, task, metric, via, method, level, floor, n_boot, seed, backtest=bt, ceiling=ceiling)
    for frame, name in ((pred, "forecast.csv"), (bt, "forecast_backtest.csv")):
        tmp = out_dir / f".{name}.tmp"
        csv_safe(_with_other_tasks(frame, out_dir / name, task, metric)).to_csv(tmp, index=False)
        tmp.replace(out_dir / name)
    return {"forecast": pred, "backtest": bt, "coverage": coverage(bt, level)}
