"""analysis.plots: each figure draws what its data say (checked on the artists), and fails clearly on bad input."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib import colormaps
from matplotlib.collections import PathCollection, PolyCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

sys.path.insert(0, str(Path(__file__).parent))
from report_sweep import SIZES, STEPS, make_sweep  # noqa: E402

from analysis import plots, tables  # noqa: E402


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = make_sweep(tmp_path_factory.mktemp("plots") / "s")
    return {"results": pd.read_parquet(root / "results.parquet"), "runs": pd.read_parquet(root / "runs.parquet"),
            "flags": pd.read_csv(root / "flags.csv"), "fits": pd.read_csv(root / "fits.csv"),
            "transitions": pd.read_csv(root / "transitions.csv"), "loss": pd.read_csv(root / "loss.csv"),
            "backtest": pd.read_csv(root / "backtest.csv"), "resolution": pd.read_csv(root / "resolution.csv")}


def visible_axes(fig: Figure):
    return [ax for ax in fig.axes if ax.axison]


def all_texts(fig: Figure) -> str:
    from matplotlib.text import Text

    return "\n".join(t.get_text() for t in fig.findobj(Text))


# ------------------------------------------------------------------------------------------------------ helpers
def test_size_colours_follow_log_size_on_viridis():
    colors = plots.size_colors([1e4, 1e5, 1e6, 1e5])
    cmap = colormaps["viridis"]
    assert list(colors) == [10_000, 100_000, 1_000_000]
    assert np.allclose(colors[10_000], cmap(0.0))
    assert np.allclose(colors[100_000], cmap(0.425))  # halfway in log between the two ends of the used range
    assert np.allclose(colors[1_000_000], cmap(plots.SIZE_CMAP_RANGE[1]))


def test_fmt_count_and_num():
    assert [plots.fmt_count(v) for v in (14_000, 228_000, 1.8e6, 2.3e9, 999)] == ["14k", "228k", "1.8M", "2.3B", "999"]
    assert plots.fmt_count(float("nan")) == "n/a"
    assert plots.fmt_num(0.000123) == "1.23e-4"
    assert plots.fmt_num(12.5) == "12.5"


def test_final_values_take_last_checkpoint_of_completed_runs(sweep):
    res, runs = sweep["results"], sweep["runs"]
    fin = tables.final_values(res, "lm", "loss", runs=runs)
    assert set(fin["run_id"]) == set(runs.loc[runs["status"] == "done", "run_id"])
    assert (fin["step"] == STEPS[-1]).all()
    row = res[(res["run_id"] == "tiny-s0") & (res["task"] == "lm") & (res["step"] == STEPS[-1])]
    assert fin.loc[fin["run_id"] == "tiny-s0", "value"].item() == row["value"].item()
    # without runs.parquet, the row statuses alone still exclude the diverged run
    assert "xl-s1" not in set(tables.final_values(res, "lm", "loss")["run_id"])


def test_seed_summary_is_mean_with_student_t_interval():
    df = pd.DataFrame({"n_params": [10, 10, 10, 20], "value": [1.0, 2.0, 3.0, 5.0], "stderr": [np.nan] * 3 + [0.1]})
    s = tables.seed_summary(df).set_index("n_params")
    assert s.loc[10, "mean"] == 2.0
    assert s.loc[10, "hi"] - 2.0 == pytest.approx(4.302653 / np.sqrt(3), rel=1e-5)  # t_{0.975, 2} * sd / sqrt(n)
    assert (s.loc[20, "lo"], s.loc[20, "hi"]) == pytest.approx((5 - 0.196, 5 + 0.196))  # one seed: 1.96 stderr


def test_frontier_is_running_minimum():
    pts = pd.DataFrame({"flops": [1, 2, 3, 4, 5, 0], "value": [5.0, 6.0, 4.0, 4.5, 3.0, 1.0]})
    fr = tables.frontier(pts)
    assert fr["flops"].tolist() == [1, 3, 5]  # x = 0 has no place on a log axis
    assert fr["value"].tolist() == [5.0, 4.0, 3.0]


def test_safe_text_keeps_dollars_literal():
    fig = plots.new_figure(3, 2)
    ax = fig.subplots()
    ax.set_title(plots.safe_text("cost $5 and $x^2$ \\alpha"))
    fig.canvas.draw()  # mathtext would raise on an unbalanced or unknown expression
    assert ax.get_title() == r"cost \$5 and \$x^2\$ \\alpha"


# ------------------------------------------------------------------------------------------------------ figures
class FakeFit:
    """A fitted law with a band, the interface of analysis.fit.FitResult that plots use."""

    def __init__(self, E, A, alpha):
        self.params = {"E": E, "A": A, "alpha": alpha}

    def predict(self, x):
        return self.params["E"] + self.params["A"] * np.asarray(x, float) ** -self.params["alpha"]

    def predict_interval(self, x, kind="prediction"):
        y = self.predict(x)
        return y * 0.95, y * 1.05


def test_scaling_draws_final_points_fit_band_and_frontier(sweep):
    fit = FakeFit(0.45, 40.0, 0.45)
    fig = plots.plot_scaling(sweep["results"], sweep["runs"], fits={"n_params": fit})
    ax_n, ax_c = visible_axes(fig)
    assert ax_n.get_xscale() == "log" and ax_c.get_xscale() == "log"
    assert "FLOP" in ax_c.get_xlabel() and "nats/token" in ax_n.get_ylabel()
    # the faint seed points are exactly the final losses of the completed runs
    fin = tables.final_values(sweep["results"], "lm", "loss", runs=sweep["runs"])
    offsets = np.concatenate([c.get_offsets() for c in ax_n.collections if isinstance(c, PathCollection)])
    assert sorted(offsets[:, 1]) == pytest.approx(sorted(fin["value"]))
    # the fitted curve and its band
    line = next(ln for ln in ax_n.lines if ln.get_color() == plots.FIT_COLOR)
    x, y = line.get_data()
    assert y == pytest.approx(fit.predict(x))
    band = [c for c in ax_n.collections if isinstance(c, PolyCollection)]
    assert len(band) == 1
    verts = band[0].get_paths()[0].vertices
    assert verts[:, 1].max() == pytest.approx(fit.predict(x).max() * 1.05, rel=1e-6)
    # the empirical frontier reaches the lowest loss of any completed checkpoint
    step = next(ln for ln in ax_c.lines if ln.get_linestyle() == "--")
    ok = sweep["results"][(sweep["results"]["task"] == "lm") & (sweep["results"]["flops"] > 0)]
    assert min(step.get_ydata()) == pytest.approx(ok["value"].min())


def test_scaling_draws_compute_optimal_frontier_when_given(sweep):
    optimal = pd.DataFrame({"flops": [1e10, 1e12, 1e14], "loss": [1.2, 0.9, 0.7]})
    fig = plots.plot_scaling(sweep["results"], sweep["runs"], optimal=optimal)
    ax_c = visible_axes(fig)[1]
    line = next(ln for ln in ax_c.lines if ln.get_linestyle() == "-.")
    assert list(line.get_ydata()) == [1.2, 0.9, 0.7]
    labels = [t.get_text() for t in ax_c.get_legend().get_texts()]
    assert "compute-optimal (Chinchilla fit)" in labels


def test_capability_shades_the_flagged_jump_and_states_evidence(sweep):
    pytest.importorskip("analysis.laws")
    fig = plots.plot_capability(sweep["results"], runs=sweep["runs"], flags=sweep["flags"], fits=sweep["fits"])
    axes = visible_axes(fig)
    n_panels = sum(len(tables.ordered_metrics(g["metric"].unique()))
                   for t, g in sweep["results"].groupby("task") if t != "lm")
    assert len(axes) == n_panels
    em = next(ax for ax in axes if ax.get_title(loc="left").startswith("task: add2"))
    spans = [p for p in em.patches if isinstance(p, Rectangle)]
    assert len(spans) == 1
    x0 = spans[0].get_x()  # axvspan draws a rectangle in (data x, axes y)
    assert (x0, x0 + spans[0].get_width()) == pytest.approx((2.3e5, 6.0e5))
    # the dashed curve is the law with the lowest AICc in fits.csv (logistic), evaluated by analysis.laws
    from analysis.laws import logistic
    dashed = next(ln for ln in em.lines if ln.get_linestyle() == "--")
    x, y = dashed.get_data()
    assert y == pytest.approx(logistic(x, 0.01, 0.9, 2.5, 2.0e5))
    text = all_texts(fig)
    assert "breakthroughness 14.2" in text and "EMERGENT" in text and "mirage: yes" in text
    assert "jump 370k\nW 0.31 dec" in [t.get_text() for t in em.texts]  # the width labels the shaded jump
    flag = sweep["flags"].iloc[0]
    assert plots.flag_annotation(flag).splitlines() == [
        "jump at 370k [230k, 600k]", "W 0.31 [0.18, 0.44] dec (W0 0.5)", "p=0.003, q=0.012",
        "runs: abrupt (0/3 0/2 0/3 3/3 2/2)", "breakthroughness 14.2", "loss at jump 0.75"]
    assert "W 1.6 [1.1, 2.4] dec" in plots.verdict_text(sweep["flags"], "add2", ["token_accuracy"])
    assert plots.width_text(sweep["flags"].iloc[2]) == "W 2.5 [1.7, inf] dec"
    # two metrics whose short labels coincide keep their full ones; others stay short
    ms = ["acc", "acc_norm", "answer_nll", "answer_nll_char"]
    four = pd.concat([sweep["flags"].iloc[[1]].assign(task="t", metric=m) for m in ms])
    lines = plots.verdict_text(four, "t", ms, width=200).splitlines()
    assert [ln.split(": ")[0] for ln in lines if not ln.startswith(" ")] == ["accuracy", "accuracy (length-normalised)",
                                                    "answer NLL (nats/token)", "answer NLL (nats/character)"], lines
    assert plots.verdict_text(four, "t", ["answer_nll"], width=200).startswith("answer NLL: ")
    # means drawn for each size are the means of the completed runs' final values
    fin = tables.final_values(sweep["results"], "add2", "exact_match", runs=sweep["runs"])
    black = next(ln for ln in em.lines if ln.get_color() == "black" and ln.get_linestyle() == "-")
    assert list(black.get_ydata()) == pytest.approx(fin.groupby("n_params")["value"].mean().tolist())


def test_capability_one_task_and_unknown_metric():
    df = pd.DataFrame({"run_id": ["a", "b"], "n_params": [10, 100], "step": [5, 5], "task": ["t", "t"],
                       "metric": ["my_score", "my_score"], "value": [0.1, 0.2], "seed": [0, 0]})
    fig = plots.plot_capability(df)
    (ax,) = visible_axes(fig)
    assert ax.get_ylabel() == "my_score"


def test_training_curves_one_line_per_run_and_marked_transition(sweep):
    fig = plots.plot_training(sweep["results"], runs=sweep["runs"], transitions=sweep["transitions"])
    axes = visible_axes(fig)
    loss_ax = axes[0]
    assert loss_ax.get_title(loc="left") == "held-out LM loss" and loss_ax.get_xscale() == "log"
    lm = sweep["results"][(sweep["results"]["task"] == "lm") & sweep["results"]["value"].notna()]
    run_lines = [ln for ln in loss_ax.lines if len(ln.get_xdata()) > 1]
    assert len(run_lines) == lm["run_id"].nunique() == 13  # the failed and the diverged run have no values
    tiny = next(ln for ln in run_lines if len(ln.get_xdata()) and ln.get_ydata()[-1] ==
                lm[(lm["run_id"] == "tiny-s0")].sort_values("step")["value"].iloc[-1])
    assert list(tiny.get_xdata()) == sorted(lm.loc[(lm["run_id"] == "tiny-s0") & (lm["tokens"] > 0), "tokens"])
    pm = next(ax for ax in axes if ax.get_title(loc="left") == "mechanistic" and "prefix" in ax.get_ylabel())
    marker = next(ln for ln in pm.lines if ln.get_marker() == "v")
    assert marker.get_xdata()[0] == 2.9e4


def test_training_curve_of_a_run_that_stopped_is_dotted():
    """A run that runs.parquet calls failed, but whose rows hold values (an imported or partial table), is dotted."""
    rows = [dict(run_id=r, n_params=n, step=s, tokens=s * 100.0, task="lm", metric="loss", value=3.0 / (1 + s),
                 status="ok") for r, n in (("a", 10), ("b", 20)) for s in (1, 2, 4)]
    runs = pd.DataFrame({"run_id": ["a", "b"], "status": ["done", "failed"]})
    fig = plots.plot_training(pd.DataFrame(rows), runs=runs)
    styles = sorted(ln.get_linestyle() for ln in visible_axes(fig)[0].lines if len(ln.get_xdata()) > 1)
    assert styles == ["-", ":"]


def test_heatmap_is_the_mean_final_exact_match(sweep):
    table = tables.heatmap_table(sweep["results"], runs=sweep["runs"])
    fin = tables.final_values(sweep["results"], "recall", "exact_match", runs=sweep["runs"])
    assert table.loc["recall"].tolist() == pytest.approx(fin.groupby("n_params")["value"].mean().tolist())
    fig = plots.plot_heatmap(sweep["results"], runs=sweep["runs"])
    img = visible_axes(fig)[0].images[0]
    assert np.asarray(img.get_array()) == pytest.approx(table.values)
    assert list(table.columns) == [s[4] for s in SIZES]


def test_family_table(sweep):
    t = tables.family_table(sweep["runs"])
    assert t["model"].tolist() == [s[0] for s in SIZES]
    assert t.set_index("model").loc["small", "done"] == "2/3"
    assert t.set_index("model").loc["large", "n_layer"] == 3
    shown = tables.family_display(sweep["runs"])
    assert shown.columns[0] == "model" and shown.set_index("model").loc["xl", "parameters"] == "1.8M"
    fig = plots.plot_family_table(sweep["runs"])
    cells = fig.axes[0].tables[0].get_celld()
    header = [cells[0, j].get_text().get_text() for j in range(len(shown.columns))]
    assert header == list(shown.columns) and "FLOPs/token" in header
    assert cells[5, 0].get_text().get_text() == "xl"


def test_loss_threshold_marks_eta_on_a_reversed_loss_axis(sweep):
    loss = sweep["loss"].assign(eta=0.76, eta_lo=0.71, eta_hi=0.79)
    fig = plots.plot_loss_threshold(sweep["results"], loss, runs=sweep["runs"])
    ax = visible_axes(fig)[0]
    lo, hi = ax.get_xlim()
    assert lo > hi  # high loss on the left
    span = next(p for p in ax.patches if isinstance(p, Rectangle))
    assert (span.get_x(), span.get_x() + span.get_width()) == pytest.approx((0.71, 0.79))
    assert "\u03b7 = 0.76 [0.71, 0.79]" in all_texts(fig)


def test_backtest_draws_prediction_with_interval(sweep):
    fig = plots.plot_backtest(sweep["backtest"], sweep["results"], runs=sweep["runs"])
    ax = visible_axes(fig)[0]
    pred = next(ln for ln in ax.lines if ln.get_marker() == "D")
    assert (pred.get_xdata()[0], pred.get_ydata()[0]) == (1.8e6, 0.4)


def test_resolution_line_has_the_reported_slope(sweep):
    pts = pd.DataFrame({"task": ["t"] * 4, "n_params": [1e4, 1e5, 1e6, 1e7], "loglogp": [2.0, 1.0, 0.1, -1.0]})
    summary = pd.DataFrame({"task": ["t"], "slope": [-0.4], "curvature": [-0.01], "curvature_lo": [-0.02],
                            "curvature_hi": [0.0], "shape": ["linear"]})
    fig = plots.plot_resolution(pts, summary)
    ax = visible_axes(fig)[0]
    dashed = next(ln for ln in ax.lines if ln.get_linestyle() == "--")
    x, y = dashed.get_data()
    assert np.polyfit(np.log(x), y, 1)[0] == pytest.approx(-0.4)
    assert np.mean(y[[0, -1]]) == pytest.approx(pts["loglogp"].mean())  # through the centroid
    assert "linear" in all_texts(fig)


def test_save_figure_writes_palette_png_and_svg_reproducibly(tmp_path):
    from PIL import Image

    fig = plots.new_figure(3, 2)
    fig.subplots().plot([1, 2, 3], [3, 1, 2])
    png, svg = plots.save_figure(fig, tmp_path / "f")
    first = png.read_bytes()
    with Image.open(png) as im:
        assert im.mode == "P" and im.size == (3 * plots.DPI, 2 * plots.DPI)
    assert svg.read_text().lstrip().startswith("<?xml") and "<dc:date>" not in svg.read_text()
    plots.save_figure(fig, tmp_path / "f")
    assert png.read_bytes() == first


@pytest.mark.parametrize("call, message", [
    (lambda: plots.plot_scaling(pd.DataFrame({"run_id": []})), "lacks column"),
    (lambda: plots.plot_scaling(pd.DataFrame({c: [] for c in ["run_id", "n_params", "step", "flops", "task",
                                                                 "metric", "value"]})), "no held-out LM loss"),
    (lambda: plots.plot_capability(pd.DataFrame({c: [] for c in ["run_id", "n_params", "step", "task", "metric",
                                                                    "value"]})), "no probed task"),
    (lambda: plots.plot_backtest(pd.DataFrame({"task": ["t"], "metric": ["m"]})), "held-out size"),
    (lambda: tables.family_table(None), "no table given"),
])
def test_bad_input_is_one_clear_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_slug_is_a_plain_file_name():
    for name in ("../../etc/passwd", "<script>", ".hidden", "a/b\\c", ""):
        s = tables.slug(name)
        assert s and "/" not in s and "\\" not in s and not s.startswith(".")


def test_seed_intervals_stay_inside_the_metric_bounds():
    final = pd.DataFrame({"n_params": [1e3, 1e3, 1e4, 1e4], "value": [0.0, 0.9, 0.95, 1.0],
                          "stderr": [0.01] * 4, "metric": ["exact_match"] * 4})
    s = tables.seed_summary(final)
    assert (s["lo"] >= 0).all() and (s["hi"] <= 1).all()
    assert s["hi"].iloc[0] == 1.0  # 2 seeds at 0 and 0.9: a t interval far wider than [0, 1], clipped


def test_capability_follows_a_training_axis_with_every_checkpoint(tmp_path):
    """One model's checkpoints judged along tokens (`emergence analyze --x tokens`): the panels draw every
    checkpoint against tokens, and the report's figure uses the flags' axis, not parameters."""
    from analysis import plots
    from analysis.report.figures import flags_axis
    from analysis.report.inputs import Sweep

    steps = [1000, 2000, 4000, 8000, 16000, 32000]
    rows = [{"sweep": "hf", "run_id": "m", "model": "m", "n_params": 7e7, "seed": pd.NA, "step": s,
             "tokens": s * 2e6, "flops": 6 * 7e7 * s * 2e6, "task": "add2", "metric": "exact_match",
             "value": v, "stderr": 0.02, "n": 256, "status": "imported"}
            for s, v in zip(steps, [0.01, 0.02, 0.03, 0.6, 0.9, 0.92])]
    res = pd.DataFrame(rows)
    flags = pd.DataFrame([{"task": "add2", "metric": "exact_match", "x": "tokens", "verdict": "emergent",
                           "jump_at": 1.1e10, "jump_lo": 9e9, "jump_hi": 1.3e10, "width": 0.2, "evidence": "e"}])
    fig = plots.plot_capability(res, flags=flags, x="tokens")
    ax = fig.axes[0]
    points = sum(len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection))
    assert points == len(steps) and ax.get_xlabel().lower().startswith("training tokens"), ax.get_xlabel()
    assert flags_axis(Sweep(tmp_path, results=res, flags=flags)) == "tokens"
    assert flags_axis(Sweep(tmp_path, results=res, flags=flags.assign(x="n_params"))) == "n_params"
