"""Cells and notes that every section of the report writes: numbers with their intervals, locations on an x axis,
one-line text from data, the W0 a flags table was computed with, and the note for a table a section cannot use."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis import plots
from analysis.report.document import Note, Para
from analysis.report.inputs import Sweep


def num(v) -> float:
    """A cell as a float (NaN where it is missing or not a number), for the optional flag columns."""
    if isinstance(v, (bool, np.bool_)):
        return float("nan")
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def with_interval(r: pd.Series, col: str, lo: str, hi: str, fmt) -> str:
    """`value [lo, hi]`, or the value alone where the interval was not computed."""
    text = fmt(r.get(col, np.nan))
    a, b = num(r.get(lo, np.nan)), num(r.get(hi, np.nan))
    if not (np.isnan(a) or np.isnan(b)):
        text += f" [{fmt(a)}, {fmt(b)}]"
    return text


def x_value(v, x: str) -> str:
    """A location on an x axis: counts as 1.8M, losses as plain numbers."""
    try:
        v = float(v)
    except (TypeError, ValueError):
        return "n/a"
    if not np.isfinite(v):
        return "n/a"
    return plots.fmt_num(v) if x == "loss" else plots.fmt_count(v)


def missing_note(sw: Sweep, name: str) -> Note:
    """The note for a file the report could not read, with why (as `inputs` recorded it)."""
    return Note(f"{name} {sw.notes.get(name, 'is not available')}.")


def unusable_note(sw: Sweep, frame: pd.DataFrame | None, name: str, columns: tuple[str, ...]) -> Note | None:
    """The note for a table a section cannot use (missing, or without a column it reads); None where it can."""
    if frame is None:
        return missing_note(sw, name)
    lacking = [c for c in columns if c not in frame.columns]
    return Note(f"{name} has no {', '.join(repr(c) for c in lacking)} column.") if lacking else None


def rows_other_than(sw: Sweep, frame: pd.DataFrame | None, name: str, column: str, value: str,
                     when_none: str) -> tuple[pd.DataFrame | None, list]:
    """The rows of a table whose `column` is not `value` (a copy), or None with the block that says why there is
    nothing to show: the table is missing or lacks the column, or every row has that value (`when_none`)."""
    if (note := unusable_note(sw, frame, name, (column,))) is not None:
        return None, [note]
    rest = frame[~frame[column].astype(str).eq(value)].copy()
    return (None, [Para([when_none])]) if rest.empty else (rest, [])


def oneline(v, limit: int = 80) -> str:
    """Text from data on one line (line breaks and tabs escaped), cut to `limit` characters."""
    s = "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
    s = s.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")
    return s if len(s) <= limit else s[: limit - 1] + "\u2026"


def has_column(frame: pd.DataFrame | None, column: str) -> bool:
    """Whether an optional table (written on demand) is there, has rows and the column a section reads."""
    return frame is not None and not frame.empty and column in frame.columns


def w0_values(flags: pd.DataFrame | None) -> list[float]:
    """The distinct W0 the flags were computed with (their `w0` column), most common first."""
    if flags is None or "w0" not in flags.columns:
        return []
    w = pd.to_numeric(flags["w0"], errors="coerce")
    return [float(v) for v in w[np.isfinite(w)].value_counts(sort=True).index]
