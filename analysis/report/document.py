"""The report as a document: a list of blocks whose text is plain strings, and its two renderings. Each renderer
escapes every string it writes (HTML: `html.escape`; Markdown: backslash escapes, entities for `<`, `>` and `&`, code
spans and fences longer than any backtick run inside), so no string from data or config is ever emitted as markup.
The HTML carries a Content-Security-Policy that allows no script and no network at all."""
from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path




CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


# ------------------------------------------------------------------------------------------------- document model
@dataclass
class Code:
    text: str


@dataclass
class Strong:
    text: str


@dataclass
class Heading:
    level: int
    text: str
    anchor: str = ""


@dataclass
class Para:
    parts: list  # str | Code | Strong


@dataclass
class Note:
    text: str


@dataclass
class Pre:
    text: str


@dataclass
class Bullets:
    items: list  # each a list of parts


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    caption: str = ""
    numeric: set = field(default_factory=set)  # column indices aligned right
    detail: str = ""  # a column of long text (the evidence): in HTML it leaves the row for a <details> under it


@dataclass
class FirstScreen:
    """The top of the report: what the verdicts mean, the headline verdicts, and the capability figure beside
    them (HTML: side by side where the page is wide, one under the other on a phone)."""
    blocks: list  # Para and Table blocks
    figure: str = ""  # a figure key, drawn small, its caption naming the full-size PNG


@dataclass
class FigureRef:
    key: str


@dataclass
class FigureFile:
    key: str
    title: str
    caption: str
    png: Path | None = None
    svg: Path | None = None
    error: str = ""
    size: tuple[int, int] = (0, 0)


# ----------------------------------------------------------------------------------------------------- HTML
STYLE = """
:root { --fg: #1b1b1b; --muted: #5a5a5a; --rule: #d9d9d9; --accent: #0072b2; --note: #fff6e0; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; text-size-adjust: 100%; }
body { margin: 0 auto; padding: 1rem; max-width: 74rem; color: var(--fg); background: #fff;
  font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
h1 { font-size: 1.6rem; margin: .5rem 0 1rem; overflow-wrap: anywhere; }
h2 { font-size: 1.3rem; margin: 2.2rem 0 .6rem; padding-top: .4rem; border-top: 1px solid var(--rule); }
h3 { font-size: 1.1rem; margin: 1.6rem 0 .5rem; overflow-wrap: anywhere; }
p, li { max-width: 48rem; overflow-wrap: anywhere; }
nav { font-size: .95rem; margin-bottom: 1rem; }
nav a { color: var(--accent); text-decoration: none; margin-right: .9rem; display: inline-block; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: .88em; }
code { background: #f3f3f3; padding: 0 .2em; border-radius: 3px; overflow-wrap: anywhere; }
pre { background: #f6f6f6; padding: .6rem .8rem; overflow-x: auto; white-space: pre-wrap; overflow-wrap: anywhere;
  border-radius: 4px; max-width: 100%; }
.note { background: var(--note); border-left: 4px solid #e69f00; padding: .4rem .7rem; max-width: 48rem; }
.table-wrap { overflow-x: auto; max-width: 100%; margin: .6rem 0 1rem; -webkit-overflow-scrolling: touch; }
table { border-collapse: separate; border-spacing: 0; font-size: .9rem; }
th:first-child, td:first-child { position: sticky; left: 0; background: #fff; z-index: 1; }
thead th:first-child { background: #f3f3f3; }
tr.detail td { border-bottom: 1px solid var(--rule); padding-top: 0; font-size: .85rem; color: var(--muted);
  position: static; }
tr.detail details { max-width: min(60rem, calc(100vw - 2rem)); position: sticky; left: .6rem; }
tr.detail summary { cursor: pointer; color: var(--accent); }
tr.has-detail td { border-bottom: none; white-space: nowrap; }
.first { display: flex; flex-wrap: wrap; gap: 1rem 2rem; align-items: flex-start; }
.first > div { flex: 1 1 36rem; min-width: 0; }
.first figure { flex: 0 1 20rem; margin: 0; }
.first figure img { max-height: 30rem; width: auto; }
caption { caption-side: top; text-align: left; color: var(--muted); font-size: .88rem; padding-bottom: .3rem; }
th, td { border-bottom: 1px solid var(--rule); padding: .3rem .6rem; text-align: left; vertical-align: top;
  max-width: 32rem; overflow-wrap: break-word; }
th { background: #f3f3f3; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
figure { margin: 1rem 0 1.6rem; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: var(--muted); font-size: .9rem; max-width: 52rem; margin-top: .4rem; }
figcaption b { color: var(--fg); }
.missing { color: #8a4b00; }
footer { color: var(--muted); font-size: .85rem; margin-top: 3rem; border-top: 1px solid var(--rule);
  padding-top: .6rem; }
@media (max-width: 640px) { body { padding: .6rem; font-size: 15px; } th, td { padding: .25rem .4rem; }
  td { white-space: nowrap; } tr.detail td { white-space: normal; } }
"""


def _h(s) -> str:
    return html.escape(str(s), quote=True)


def _parts(parts, code, strong, text) -> str:
    """Inline parts rendered by kind: Code, Strong, or plain text."""
    return "".join(code(p.text) if isinstance(p, Code) else strong(p.text) if isinstance(p, Strong) else text(p)
                   for p in parts)


def _parts_html(parts) -> str:
    return _parts(parts, lambda t: f"<code>{_h(t)}</code>", lambda t: f"<strong>{_h(t)}</strong>", _h)


def _table_html(t: Table) -> str:
    cap = f"<caption>{_h(t.caption)}</caption>" if t.caption else ""
    num = ' class="num"'

    def cls(i):
        return num if i in t.numeric else ""

    d = t.header.index(t.detail) if t.detail in t.header else -1
    cols = [i for i in range(len(t.header)) if i != d]
    head = "".join(f'<th{cls(i)} scope="col">{_h(t.header[i])}</th>' for i in cols)
    body = []
    for row in t.rows:
        text = str(row[d]).strip() if d >= 0 else ""
        cells = "".join(f"<td{cls(i)}>{_h(row[i])}</td>" for i in cols)
        if not text:
            body.append(f"<tr>{cells}</tr>")
            continue
        body.append(f'<tr class="has-detail">{cells}</tr><tr class="detail"><td colspan="{len(cols)}"><details>'
                    f"<summary>{_h(t.detail)}</summary>{_h(text)}</details></td></tr>")
    return (f'<div class="table-wrap"><table>{cap}<thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody>'
            "</table></div>")


def _figure_html(ff: FigureFile | None, key: str) -> str:
    if ff is None:
        return ""
    if ff.error or ff.png is None:
        return (f'<figure id="fig-{_h(key)}"><p class="note missing">Figure \u201c{_h(ff.title)}\u201d not drawn: '
                f"{_h(ff.error)}</p></figure>")
    data = base64.b64encode(ff.png.read_bytes()).decode("ascii")
    w, h = ff.size
    return (f'<figure id="fig-{_h(key)}"><img src="data:image/png;base64,{data}" width="{w}" height="{h}" '
            f'alt="{_h(ff.title)}"><figcaption><b>{_h(ff.title)}.</b> {_h(ff.caption)}</figcaption></figure>')


def _first_screen_html(b: FirstScreen, figs: dict[str, FigureFile], placed: set) -> str:
    inner = "".join(f"<p>{_parts_html(x.parts)}</p>" if isinstance(x, Para) else _table_html(x)
                    for x in b.blocks if isinstance(x, (Para, Table)))
    out = f'<section class="first"><div>{inner}</div>'
    ff = figs.get(b.figure)
    if ff is not None and not ff.error and ff.png is not None:
        placed.add(b.figure)
        data = base64.b64encode(ff.png.read_bytes()).decode("ascii")
        w, h = ff.size
        out += (f'<figure id="fig-{_h(b.figure)}"><img src="data:image/png;base64,{data}" width="{w}" height="{h}" '
                f'alt="{_h(ff.title)}"><figcaption><b>{_h(ff.title)}.</b> Full size: <code>plots/'
                f"{_h(ff.png.name)}</code> beside this report.</figcaption></figure>")
    return out + "</section>"


def render_html(doc: list, figs: dict[str, FigureFile], title: str) -> str:
    body = []
    toc = [(b.anchor, b.text) for b in doc if isinstance(b, Heading) and b.level == 2 and b.anchor]
    placed = set()
    for b in doc:
        if isinstance(b, FirstScreen):
            body.append(_first_screen_html(b, figs, placed))
            continue
        if isinstance(b, Heading):
            anchor = f' id="{_h(b.anchor)}"' if b.anchor else ""
            body.append(f"<h{b.level}{anchor}>{_h(b.text)}</h{b.level}>")
            if b.level == 1 and toc:
                body.append("<nav>" + "".join(f'<a href="#{_h(a)}">{_h(t)}</a>' for a, t in toc) + "</nav>")
        elif isinstance(b, Para):
            body.append(f"<p>{_parts_html(b.parts)}</p>")
        elif isinstance(b, Note):
            body.append(f'<p class="note">{_h(b.text)}</p>')
        elif isinstance(b, Pre):
            body.append(f"<pre>{_h(b.text)}</pre>")
        elif isinstance(b, Bullets):
            body.append("<ul>" + "".join(f"<li>{_parts_html(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            body.append(_table_html(b))
        elif isinstance(b, FigureRef):
            if b.key in figs and b.key not in placed:
                placed.add(b.key)
                body.append(_figure_html(figs[b.key], b.key))
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f'<meta http-equiv="Content-Security-Policy" content="{_h(CSP)}">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            '<meta name="referrer" content="no-referrer">\n'
            f"<title>{_h(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(body)
            + "\n<footer>Written by <code>analysis.report</code> of emergence. Self-contained: no script, no "
              "network; every figure is embedded.</footer>\n</body>\n</html>\n")


# ------------------------------------------------------------------------------------------------- Markdown
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


def md_escape(s) -> str:
    """Plain text for Markdown: no emphasis, link, image, table cell break, heading, list or HTML can come out of it.

    `&`, `<` and `>` become entities (so no raw HTML and no entity from data survives); CommonMark's inline
    punctuation that could open markup (backslash, backtick, `*`, `_`, `[`, `]`, `~`) and the table separator `|`
    are backslash-escaped; a leading `#`, a leading list marker (`-`, `+`, `=`, `1.`) is escaped too. Line breaks
    become spaces (a cell or a paragraph stays one line); leading and trailing spaces are kept, so that segments
    join as written."""
    s = re.sub(r"\s+", " ", str(s))
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    s = _MD_SPECIAL.sub(r"\\\1", s)
    s = re.sub(r"^(\s*)([#+=-])", r"\1\\\2", s)
    s = re.sub(r"^(\s*\d{1,9})([.)])(?=\s|$)", r"\1\\\2", s)
    return s


def md_code(s) -> str:
    """An inline code span that holds `s` literally (a fence longer than any backtick run inside)."""
    s = " ".join(str(s).split())
    run = max((len(m) for m in re.findall(r"`+", s)), default=0)
    fence = "`" * (run + 1)
    pad = " " if s.startswith("`") or s.endswith("`") or not s.strip() else ""
    return f"{fence}{pad}{s}{pad}{fence}"


def _parts_md(parts) -> str:
    return _parts(parts, md_code, lambda t: f"**{md_escape(t)}**", md_escape)


def _table_md(t: Table) -> str:
    lines = []
    if t.caption:
        lines.append(f"*{md_escape(t.caption)}*\n")
    header = [md_escape(c).strip() or " " for c in t.header]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---:" if i in t.numeric else "---" for i in range(len(header))) + "|")
    for row in t.rows:
        lines.append("| " + " | ".join(md_escape(c).strip() for c in row) + " |")
    return "\n".join(lines)


def render_md(doc: list, figs: dict[str, FigureFile]) -> str:
    out = []
    placed = set()
    for b in [x for b in doc for x in ((*b.blocks, FigureRef(b.figure)) if isinstance(b, FirstScreen) else (b,))]:
        if isinstance(b, Heading):
            out.append("#" * b.level + " " + md_escape(b.text))
        elif isinstance(b, Para):
            out.append(_parts_md(b.parts))
        elif isinstance(b, Note):
            out.append("> " + md_escape(b.text))
        elif isinstance(b, Pre):
            run = max((len(m) for m in re.findall(r"`{3,}", b.text)), default=2)
            fence = "`" * max(3, run + 1)
            out.append(f"{fence}\n{b.text}\n{fence}")
        elif isinstance(b, Bullets):
            out.append("\n".join("- " + _parts_md(i) for i in b.items))
        elif isinstance(b, Table):
            out.append(_table_md(b))
        elif isinstance(b, FigureRef):
            ff = figs.get(b.key)
            if ff is None or b.key in placed:
                continue
            placed.add(b.key)
            if ff.error or ff.png is None:
                out.append("> " + md_escape(f"Figure \u201c{ff.title}\u201d not drawn: {ff.error}"))
            else:
                # figure keys are slugs (letters, digits, _ . -): safe inside a link target
                out.append(f"![{md_escape(ff.title)}](plots/{ff.png.name})\n\n"
                           f"*{md_escape(ff.title)}.* {md_escape(ff.caption)} ([vector](plots/{ff.svg.name}))")
    return "\n\n".join(out) + "\n"
