"""The report of a sweep: figures in `plots/` (PNG and SVG), one self-contained `report.html`, and `report.md`.

`write_report(sweep_dir)` reads what the sweep and its analysis wrote (results.parquet, runs.parquet, fits.csv,
flags.csv, the views' CSVs, samples.parquet, instances, meta.json), draws the figures with `analysis.plots`, and
writes one document in two renderings. A file that is missing or unreadable is said so in its section; nothing is
invented to fill the gap.

The package: `inputs` reads the sweep folder (`load_sweep`), `figures` draws, `sections` builds the document
(`build_document`) and writes the sections on the verdicts, `overview`, `view_sections` and `records` write the
others (the opening sections; the views and the forecast; stability, budget, failures, reproducibility) from the
cells and notes of `cells`, and `document` holds the blocks and renders them to HTML and Markdown.

Safety: the document is built as a list of blocks whose text is plain strings, and each renderer escapes every
string it writes (HTML: `html.escape`; Markdown: backslash escapes, entities for `<`, `>` and `&`, code spans and
fences longer than any backtick run inside). No string from data or config is ever emitted as markup, so a task
named `<script>` is shown, not run. The HTML also carries a Content-Security-Policy that allows no script and no
network at all: images come from data URIs, styles are inline.
"""
from __future__ import annotations

import os
from pathlib import Path

from analysis.report.document import md_code, md_escape, render_html, render_md
from analysis.report.figures import draw_figures, make_figures
from analysis.report.inputs import load_sweep, refuse_broken
from analysis.report.sections import build_document

__all__ = ["write_report", "load_sweep", "build_document", "make_figures", "render_html", "render_md", "md_escape",
           "md_code"]

def write_report(sweep_dir, *, analyses: dict | None = None, strict: bool = False,
                 workers: int | None = None) -> dict[str, Path]:
    """Write `plots/*.png` and `plots/*.svg`, `report.html` (self-contained) and `report.md` into `sweep_dir`.

    analyses: optional results already computed, which take precedence over the files: {"flags": DataFrame,
    "fits": DataFrame, "transitions" | "loss" | "resolution" | "backtest": DataFrame, "scaling_fit": FitResult
    (or a dict of them; a FitResult's x says whether it is against n_params or flops; a "chinchilla" one draws
    the compute-optimal frontier)}.
    workers: processes drawing the figures (default: 2 where the machine has 2 cores or more and the figures come
    from the files alone, else 1).
    strict: refuse (ValueError, one line, nothing written) a folder whose results.parquet is missing, or any of whose
    files is damaged; without it (the end of a sweep) such a file is reported in its section.
    Returns {"html": path, "md": path, "plots/<name>.png": path, "plots/<name>.svg": path, ...}.
    """
    sw = load_sweep(sweep_dir, analyses)
    if strict:
        refuse_broken(sw)
    plots_dir = sw.folder / "plots"
    if plots_dir.is_symlink() or (plots_dir.exists() and not plots_dir.is_dir()):
        raise ValueError(f"{plots_dir} is {'a symbolic link' if plots_dir.is_symlink() else 'not a folder'}; the "
                         "report writes its figures into a folder of the sweep's own: remove it and run the report "
                         "again")
    if workers is None:
        workers = 2 if (os.cpu_count() or 1) >= 2 and not analyses else 1
    figs = draw_figures(sw, plots_dir, workers=workers if not analyses else 1)
    doc = build_document(sw)
    title = f"Sweep report: {sw.folder.name}"
    html_text = render_html(doc, figs, title)
    md_text = render_md(doc, figs)
    out: dict[str, Path] = {}
    for name, text in (("report.html", html_text), ("report.md", md_text)):
        # whole or not at all, and a link at that name is replaced, not followed out of the folder
        tmp = sw.folder / f".{name}.tmp"
        try:
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, sw.folder / name)
        except OSError as e:  # a full disk: say which file, and leave the previous one as it was
            tmp.unlink(missing_ok=True)
            raise OSError(f"could not write {sw.folder / name}: {e.strerror or e}; the previous file is intact") \
                from e
    out["html"] = sw.folder / "report.html"
    out["md"] = sw.folder / "report.md"
    for ff in figs.values():
        for p in (ff.png, ff.svg):
            if p is not None:
                out[f"plots/{p.name}"] = p
    return out
