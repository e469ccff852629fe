"""analysis.report: the report shows the sweep's numbers, embeds every figure, escapes everything from data, and
says what is missing instead of failing."""
from __future__ import annotations

import base64
import hashlib
import io
import re
import shutil
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from report_sweep import SIZES, make_sweep  # noqa: E402

from analysis import report  # noqa: E402
from analysis.report import document  # noqa: E402

EVIL_TASK = "<script>alert(1)</script>"
ODD_TASK = "cost $5 | *bold* [link](http://x) `tick` & co"
EVIL_ERROR = 'RuntimeError: <img src=x onerror="alert(2)"> ** | not a table'
EVIL_COMMAND = "emergence sweep sweep.name='<b>x</b>' ```"
ALLOWED_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "nav", "a", "p", "code", "pre",
                "ul", "li", "div", "table", "caption", "thead", "tbody", "tr", "th", "td", "figure", "img",
                "figcaption", "b", "strong", "footer", "section", "details", "summary"}


class FakeFit:
    """A fitted power law with a band and intervals: the parts of analysis.fit.FitResult the report reads."""

    law, x, n, rmse = "power", "n_params", 13, 0.0123

    def __init__(self):
        self.params = {"E": 0.45, "A": 40.0, "alpha": 0.45}
        self.ci = {"E": (0.41, 0.49), "A": (30.0, 52.0), "alpha": (0.411, 0.492)}
        self.stderr = {"E": 0.02, "A": 5.0, "alpha": 0.02}

    def predict(self, x):
        return self.params["E"] + self.params["A"] * np.asarray(x, float) ** -self.params["alpha"]

    def predict_interval(self, x, kind="prediction"):
        y = self.predict(x)
        return 0.97 * y, 1.03 * y


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One report of a sweep whose task names, error message and command are hostile."""
    root = make_sweep(tmp_path_factory.mktemp("report") / "hostile", jump_task=EVIL_TASK, smooth_task=ODD_TASK,
                      error_text=EVIL_ERROR, command=EVIL_COMMAND)
    paths = report.write_report(root, analyses={"scaling_fit": FakeFit()})
    return root, paths, paths["html"].read_text(encoding="utf-8"), paths["md"].read_text(encoding="utf-8")


class TagCollector(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.attrs, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(html_text: str) -> TagCollector:
    p = TagCollector()
    p.feed(html_text)
    return p


# --------------------------------------------------------------------------------------------------- the files
@pytest.mark.slow
def test_writes_html_md_and_every_figure_as_png_and_svg(built):
    root, paths, html_text, _ = built
    assert paths["html"] == root / "report.html" and paths["md"] == root / "report.md"
    stems = {Path(k).stem for k in paths if k.startswith("plots/")}
    for stem in ("scaling", "capability", "heatmap", "training", "loss_threshold", "backtest", "resolution",
                 "family"):
        assert stem in stems, stem
        assert (root / "plots" / f"{stem}.png").stat().st_size > 1000
        assert (root / "plots" / f"{stem}.svg").read_text().lstrip().startswith("<?xml")
    per_task = [s for s in stems if s.startswith("capability_")]
    assert len(per_task) == 1 and re.fullmatch(r"capability_[A-Za-z0-9_.-]+", per_task[0])


@pytest.mark.slow
def test_html_is_self_contained_and_images_are_real_pngs(built):
    from PIL import Image

    _, _, html_text, _ = built
    p = parse(html_text)
    imgs = [a for t, a in p.attrs if t == "img"]
    assert len(imgs) == html_text.count("data:image/png;base64,") >= 8
    for a in imgs:
        assert a["src"].startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(a["src"].split(",", 1)[1]))) as im:
            assert im.format == "PNG" and im.size == (int(a["width"]), int(a["height"]))
        assert a["alt"]
    # nothing that could reach the network: links are in-page anchors only, no src/href to another place
    for t, a in p.attrs:
        for k, v in a.items():
            if k in ("src", "href"):
                assert v.startswith("data:image/png;base64,") or v.startswith("#"), (t, k, v[:40])
    metas = [a for t, a in p.attrs if t == "meta"]
    assert any(a.get("name") == "viewport" and "width=device-width" in a["content"] for a in metas)
    csp = next(a["content"] for a in metas if a.get("http-equiv") == "Content-Security-Policy")
    assert "default-src 'none'" in csp and "script-src" not in csp and "img-src data:" in csp
    assert "max-width: 100%" in html_text  # responsive images


@pytest.mark.slow
def test_html_has_no_live_markup_from_data(built):
    _, _, html_text, _ = built
    p = parse(html_text)
    assert set(p.tags) <= ALLOWED_TAGS, set(p.tags) - ALLOWED_TAGS
    assert p.tags.count("img") == html_text.count("data:image/png;base64,")
    assert not [(t, k) for t, a in p.attrs for k in a if k.startswith("on")]
    assert "<script" not in html_text.lower() and "<b>x</b>" not in html_text
    text = "".join(p.text)
    assert EVIL_TASK in text and EVIL_ERROR in text and ODD_TASK in text  # shown, as text
    assert html_text.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 3


@pytest.mark.slow
def test_markdown_renders_to_no_raw_html(built):
    markdown_it = pytest.importorskip("markdown_it")
    _, _, _, md = built
    rendered = markdown_it.MarkdownIt("commonmark", {"html": True}).enable("table").render(md)
    p = parse(rendered)
    allowed = {"h1", "h2", "h3", "p", "ul", "li", "code", "pre", "table", "thead", "tbody", "tr", "th", "td",
               "strong", "em", "img", "a", "blockquote"}
    assert set(p.tags) <= allowed, set(p.tags) - allowed
    assert not [(t, k) for t, a in p.attrs for k in a if k.startswith("on")]
    for t, a in p.attrs:
        if t == "img":
            assert re.fullmatch(r"plots/[A-Za-z0-9_.-]+\.png", a["src"])
        if t == "a":
            assert re.fullmatch(r"plots/[A-Za-z0-9_.-]+\.svg", a["href"]), a  # no link made from data
    text = "".join(p.text)
    assert EVIL_TASK in text and ODD_TASK in text and "onerror" in text


# ------------------------------------------------------------------------------------------------ the content
def section_of(built, anchor: str) -> str:
    """The HTML of one section of the built report."""
    return section(built[2], anchor)


def section(html_text: str, anchor: str) -> str:
    start = html_text.index(f'id="{anchor}"')
    nxt = html_text.find("<h2", start)
    return html_text[start:nxt if nxt > 0 else None]


@pytest.mark.slow
def test_sections_in_order(built):
    _, _, html_text, md = built
    order = ["what-was-run", "scaling", "emergent", "smooth", "mirage", "views", "failures", "reproducibility"]
    positions = [html_text.index(f'<h2 id="{a}"') for a in order]
    assert positions == sorted(positions)
    headings = [ln for ln in md.splitlines() if ln.startswith("## ")]
    assert headings[0] == "## What was run" and headings[-1] == "## Reproducibility"


@pytest.mark.slow
def test_what_was_run(built):
    s = section_of(built, "what-was-run")
    assert "emergence sweep sweep.name=&#x27;&lt;b&gt;x&lt;/b&gt;&#x27; ```" in s
    for col in ("layers", "width", "parameters", "FLOPs/token", "tokens trained"):
        assert f">{col}</th>" in s
    assert ">1.8M</td>" in s and ">2/3</td>" in s  # xl's parameters; small lost one seed
    assert "Seeds: 0, 1, 2." in s


@pytest.mark.slow
def test_scaling_parameters_with_intervals(built):
    s = section_of(built, "scaling")
    assert ">alpha</td><td class=\"num\">0.45</td><td class=\"num\">[0.411, 0.492]</td>" in s
    assert 'id="fig-scaling"' in s


@pytest.mark.slow
def test_definition_of_a_jump_in_html_and_md(built):
    from analysis import jumps

    _, _, html_text, md = built
    definition = jumps.DEFINITION.format(w0=0.5)
    assert "W0 = 0.5 here" in definition
    assert document._h(definition) in section(html_text, "emergent")
    assert report.md_escape(definition) in md
    assert md.index(report.md_escape(definition)) < md.index("## Smooth and flat abilities")


@pytest.mark.slow
def test_emergent_ability_with_evidence_numbers_figure_and_samples(built):
    _, _, html_text, md = built
    s = section(html_text, "emergent")
    assert "exact match rises from 0.01 to 0.86 over 0.31 decades of parameters around 370k" in s
    assert ">370k [230k, 600k] (n_params)</td>" in s
    assert ">0.31 [0.18, 0.44] decades of n_params: the interval lies below W0 = 0.5</td>" in s
    assert ">0.003</td>" in s and ">0.012</td>" in s  # p and q
    assert ">abrupt (share of runs that acquired it, by size: 0/3 0/2 0/3 3/3 2/2; rising over 0.2 decades; " \
           "p = 0.01)</td>" in s
    assert ">0.75 nats/token separates the runs that acquired the ability from those that did not</td>" in s
    assert ">0.71 of the amplitude; a rise W0 wide allows at most 0.45 (p = 0.004)</td>" in s
    assert ">14.2</td>" in s and ">13</td>" in s
    assert "likely an artefact of the metric" in s
    for removed in ("delta BIC", "likelihood-ratio", "seeds agreeing", "jump size"):
        assert removed not in html_text and removed not in md
    assert "0.31 \\[0.18, 0.44\\] decades of n\\_params" in md
    overview = html_text[:html_text.index('id="what-was-run"')]
    assert "at 370k (n_params), rising over 0.31 [0.18, 0.44] decades" in overview
    assert 'id="fig-capability_' in s
    # sample answers: the two largest sizes answer right in every seed, the others never
    assert ">10+20=</td><td>30</td><td>31 \u2717 (0/3 seeds)</td>" in s
    assert ">30 \u2713 (2/2 seeds)</td>" in s


@pytest.mark.slow
def test_smooth_flat_and_mirage_tables(built):
    html_text = built[2]
    s = section(html_text, "smooth")
    assert "improves smoothly" in s and "range 0.01 is within noise" in s and ">flat</td>" in s
    assert ">1.6 [1.1, 2.4]</td>" in s and ">200k [120k, 350k]</td>" in s  # width and location of the rise
    assert ">2.5 [1.7, \u221e]</td>" in s  # an unbounded interval is shown as such
    assert ">gradual (0/3 1/2 2/3 3/3 2/2)</td>" in s and ">0.004</td>" in s  # p of H0: W <= W0
    assert "wider than W0 = 0.5 decades" in s
    m = section(html_text, "mirage")
    assert "yes: the continuous metrics are smooth" in m and ">token accuracy</th>" in m
    assert ">emergent (W 0.31)</td>" in m and ">smooth (W 1.6)</td>" in m


@pytest.mark.slow
def test_views_tables_and_figures(built):
    s = section_of(built, "views")
    assert "1 of 2 run x task x metric curves change abruptly" in s
    assert ">29k [20k, 45k]</td><td class=\"num\">0.21 [0.12, 0.33]</td>" in s  # a phase change's location, width
    assert ">0.04 [0.02, 0.07]</td>" in s and ">0.76</td>" in s  # the loss view: width against loss, eta
    assert 'id="fig-training"' in s and 'id="fig-loss_threshold"' in s and 'id="fig-backtest"' in s
    assert 'id="fig-resolution"' in s
    assert ">1.8M</td>" in s and ">0.4</td>" in s  # backtest: held-out size and prediction


@pytest.mark.slow
def test_failed_and_diverged_runs_with_their_reasons(built):
    _, _, html_text, md = built
    s = section(html_text, "failures")
    assert "2 of 15 runs did not finish" in s
    assert "small-s2" in s and "xl-s1" in s and "loss became NaN at step 300" in s
    assert html_text.count("RuntimeError: &lt;img src=x onerror=&quot;alert(2)&quot;&gt;") == 1
    row = next(ln for ln in md.splitlines() if ln.startswith("| small-s2"))
    assert row.count(" | ") == 5  # the `|` in the message did not split the cell
    assert "&lt;img src=x onerror=" in row


@pytest.mark.slow
def test_reproducibility(built):
    root, _, html_text, _ = built
    s = section(html_text, "reproducibility")
    assert ">0123abc</td>" in s and ">pandas</td>" in s and "2-core CPU" in s
    digest = hashlib.sha256((root / "results.parquet").read_bytes()).hexdigest()[:16]
    assert f">{digest}</td>" in s


# ----------------------------------------------------------------------------------------- missing and bad input
@pytest.mark.slow
def test_missing_files_are_reported_not_fatal(tmp_path):
    root = make_sweep(tmp_path / "bare", with_views=False, with_analysis=False, sizes=SIZES[:3], seeds=[0])
    for name in ("samples.parquet", "meta.json"):
        (root / name).unlink()
    paths = report.write_report(root)
    html_text = paths["html"].read_text()
    assert "flags.csv not found." in html_text
    assert "meta.json not found." in html_text
    assert "transitions.csv not found: no phase changes are marked" in html_text
    for view in ("loss_threshold", "backtest", "resolution"):
        assert f"plots/{view}.png" not in paths
    assert "plots/training.png" in paths and "plots/capability.png" in paths


def test_unreadable_view_and_failed_figure_are_stated(tmp_path):
    root = make_sweep(tmp_path / "odd", with_views=False)
    (root / "backtest.csv").write_text("")  # a view with nothing to say
    (root / "loss.csv").write_bytes(b"\x00\x01 not a csv \xff")
    (root / "results.parquet").write_text("not parquet")
    paths = report.write_report(root)
    html_text = paths["html"].read_text()
    assert "results.parquet could not be read" in html_text
    assert "not drawn: results.parquet could not be read" in html_text
    assert "plots/family.png" in paths  # runs.parquet alone still gives the family


def test_flags_without_the_width_columns_still_report(tmp_path):
    """A flags table that lacks the width test's columns shows what it has, and the definition with the default
    W0; a table with its own w0 prints that one."""
    from analysis import jumps

    root = make_sweep(tmp_path / "old", sizes=SIZES[:3], seeds=[0], with_views=False)
    flags = pd.read_csv(root / "flags.csv")
    old = flags[["task", "metric", "x", "verdict", "jump_at", "jump_lo", "jump_hi", "n_sizes", "evidence"]]
    html_text = report.render_html(report.build_document(report.load_sweep(root, {"flags": old})), {}, "t")
    assert document._h(jumps.DEFINITION.format(w0=jumps.W0)) in html_text
    assert ">370k [230k, 600k] (n_params)</td>" in html_text and "decades of n_params" not in html_text
    md = report.render_md(report.build_document(report.load_sweep(root, {"flags": flags.assign(w0=0.25)})), {})
    assert report.md_escape(jumps.DEFINITION.format(w0=0.25)) in md and "W0 = 0.25 here" in md


def test_analyses_take_precedence_over_files(tmp_path):
    root = make_sweep(tmp_path / "given", sizes=SIZES[:3], seeds=[0])
    flags = pd.read_csv(root / "flags.csv").assign(verdict="smooth")
    sw = report.load_sweep(root, {"flags": flags, "scaling_fit": FakeFit()})
    assert sw.scaling_fits["n_params"].params["alpha"] == 0.45
    html_text = report.render_html(report.build_document(sw), {}, "t")
    assert "No ability was flagged emergent" in html_text
    assert "No ability was flagged emergent" not in report.render_html(
        report.build_document(report.load_sweep(root)), {}, "t")


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "nope", "is not a folder"),
    (lambda p: p, "not a sweep folder"),
])
def test_bad_folder_is_one_value_error(tmp_path, make, message):
    with pytest.raises(ValueError, match=message):
        report.write_report(make(tmp_path))


def test_bad_analyses_value_is_a_value_error(tmp_path):
    root = make_sweep(tmp_path / "s", with_views=False)
    with pytest.raises(ValueError, match=r"analyses\['flags'\] must be a pandas DataFrame"):
        report.write_report(root, analyses={"flags": [1, 2]})


def test_the_report_draws_the_analysis_fits_and_never_fits(tmp_path, monkeypatch):
    """The scaling figure's curve and band are fit_bands.csv's, its parameters fits.csv's; no fitting function runs
    while the report is made. Without fit_bands.csv the curve comes from fits.csv's parameters, without a band, and
    the report says so."""
    import analysis.fit

    def refuse(*a, **k):
        raise AssertionError("the report fitted a law")

    monkeypatch.setattr(analysis.fit, "fit_law", refuse)
    root = make_sweep(tmp_path / "f", sizes=SIZES, seeds=[0, 1])
    paths = report.write_report(root)
    assert paths["html"].exists()
    sw = report.load_sweep(root)
    fit = sw.scaling_fits["n_params"]
    bands = pd.read_csv(root / "fit_bands.csv").query("x == 'n_params'")
    x = bands["x_value"].to_numpy()[[3, 20]]
    assert np.allclose(fit.predict(x), bands["predicted"].to_numpy()[[3, 20]])
    assert np.allclose(fit.predict_interval(x)[1], bands["hi"].to_numpy()[[3, 20]])
    assert fit.params["alpha"] == 0.45 and fit.ci["alpha"] == (0.41, 0.49)
    (root / "fit_bands.csv").unlink()
    sw = report.load_sweep(root)
    assert not hasattr(sw.scaling_fits["n_params"], "predict_interval")
    assert any("fit_bands.csv not found" in n for n in sw.scaling_notes)


# ----------------------------------------------------------------------------------------------- escaping units
@pytest.mark.parametrize("raw, expected", [
    ("<script>x</script>", "&lt;script&gt;x&lt;/script&gt;"),
    ("*a* _b_ [c](d) | e", r"\*a\* \_b\_ \[c\](d) \| e"),
    ("![img](x) ~~s~~ `c`", r"!\[img\](x) \~\~s\~\~ \`c\`"),
    (" spaced ", " spaced "),
    ("12.5 and 0.4", "12.5 and 0.4"),
    ("# head", r"\# head"),
    ("- item", r"\- item"),
    ("1. item", r"1\. item"),
    ("a\nb", "a b"),
    ("&amp;", "&amp;amp;"),
])
def test_md_escape(raw, expected):
    assert report.md_escape(raw) == expected


def test_md_code_holds_backticks_literally():
    assert report.md_code("a`b") == "``a`b``"
    assert report.md_code("`x`") == "`` `x` ``"


def test_fits_in_another_layout_are_named_not_guessed(tmp_path):
    wide = pd.DataFrame([{"law": "power", "x": "n_params", "y": "loss", "aicc": 1.0, "E": 0.5, "E_stderr": 0.1,
                          "E_ci_low": 0.3, "E_ci_high": 0.7}])
    wide.to_csv(tmp_path / "fits.csv", index=False)
    sw = report.load_sweep(tmp_path)
    assert sw.fits is None
    assert "no 'param', 'value', 'lo', 'hi' column" in sw.notes["fits.csv"] and "rerun" in sw.notes["fits.csv"]

def test_figures_drawn_in_a_second_process_are_the_bytes_one_process_draws(tmp_path):
    """`write_report` draws part of the figures in a spawned process from the files: the same PNG and SVG bytes as
    drawing them here (SVG ids come from a fixed salt, so a rerun gives the same bytes too)."""
    from analysis.report.figures import IN_SECOND_PROCESS, make_figures
    from analysis.report.inputs import load_sweep

    root = make_sweep(tmp_path / "two", sizes=SIZES[:4], with_views=False)
    report.write_report(root, workers=2)
    here = make_figures(load_sweep(root), tmp_path / "here", keep=IN_SECOND_PROCESS.__contains__)
    assert {"training", "heatmap", "family"} <= set(here)
    for key in here:
        for ext in ("png", "svg"):
            assert (root / "plots" / f"{key}.{ext}").read_bytes() == (tmp_path / "here" / f"{key}.{ext}").read_bytes()


def test_links_in_the_sweep_folder_are_replaced_never_followed(tmp_path):
    """A report.html, report.md or figure that is a symbolic link to a file elsewhere: the report replaces the link
    with its own file and leaves the file elsewhere as it was; a plots/ that is a link is refused, nothing written."""
    root = make_sweep(tmp_path / "links", with_views=False, with_analysis=False, sizes=SIZES[:3], seeds=[0])
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "plots").mkdir(exist_ok=True)
    for name in ("report.html", "report.md", "plots/capability.png"):
        (outside / Path(name).name).write_text("mine")
        (root / name).symlink_to(outside / Path(name).name)
    report.write_report(root, workers=1)
    assert all(f.read_text() == "mine" for f in outside.iterdir())
    for name in ("report.html", "report.md", "plots/capability.png"):
        assert not (root / name).is_symlink() and (root / name).stat().st_size > 100
    assert not list(root.glob(".*.tmp")) and not list((root / "plots").glob(".*.tmp"))
    shutil.rmtree(root / "plots")
    (root / "plots").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ValueError, match="plots is a symbolic link"):
        report.write_report(root, workers=1)
    assert sorted(f.name for f in outside.iterdir()) == ["capability.png", "report.html", "report.md"]


def test_a_full_disk_names_the_file_and_leaves_the_previous_report(tmp_path, monkeypatch):
    root = make_sweep(tmp_path / "full", with_views=False, with_analysis=False, sizes=SIZES[:3], seeds=[0])
    (root / "report.html").write_text("the previous report")
    real = Path.write_text

    def full(self, *a, **k):
        if self.name == ".report.html.tmp":
            raise OSError(28, "No space left on device")
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError, match=r"could not write .*report\.html: No space left on device; the previous file is "
                                      r"intact"):
        report.write_report(root, workers=1)
    assert (root / "report.html").read_text() == "the previous report" and not (root / ".report.html.tmp").exists()
