"""Numbers as text, in one place: for sentences (evidence), tables (report), axes and labels (plots).

Every formatter says "n/a" for a value that is missing or not a number, never "0" or "nan".
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

_SUFFIXES = ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k"))


def _float(v) -> float | None:
    """v as a float, or None where it is missing or not a number."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def number(v, digits: int = 3) -> str:
    """`digits` significant figures; scientific notation beyond 1e5 or below 1e-3 (1.23e-4); "n/a" where missing
    or infinite."""
    f = _float(v)
    if f is None or not np.isfinite(f):
        return "n/a"
    if f != 0 and (abs(f) >= 1e5 or abs(f) < 1e-3):
        return f"{f:.{digits - 1}e}".replace("e+0", "e").replace("e-0", "e-").replace("e+", "e")
    return f"{f:.{digits}g}"


def number_or_inf(v, digits: int = 3, inf: str = "inf") -> str:
    """`number`, except that an infinite value (a breakthroughness, an unbounded interval end) reads as `inf`
    (with a minus sign below zero)."""
    f = _float(v)
    if f is not None and np.isinf(f):
        return inf if f > 0 else "-" + inf
    return number(v, digits)


def count(v) -> str:
    """1.8M, 228k, 2.3B, 1.2e15: counts the way papers print them."""
    f = _float(v)
    if f is None or not np.isfinite(f):
        return "n/a"
    for div, suffix in _SUFFIXES:
        if abs(f) >= div:
            if abs(f) >= 1e15:
                return f"{f:.2g}".replace("e+", "e")
            x = f / div
            return (f"{x:.3g}" if x < 100 else f"{x:.0f}") + suffix
    return f"{f:.3g}"


def sentence(v, digits: int = 3) -> str:
    """A number for a sentence: `digits` significant figures, k/M/B/T suffixes from a thousand up, "n/a" when
    unknown, inf as such."""
    f = _float(v)
    if f is None:
        return "n/a"
    if np.isinf(f):
        return "inf" if f > 0 else "-inf"
    a = abs(f)
    for div, suf in _SUFFIXES:
        if a >= div:
            return f"{f / div:.{digits}g}{suf}"
    if a != 0 and a < 1e-3:
        return f"{f:.{max(digits - 1, 1)}e}"
    return f"{f:.{digits}g}"


def cell(v, digits: int = 3) -> str:
    """A table cell: yes/no for a flag, whole numbers with thousands separators, other numbers as `number` (inf as
    the symbol), text as is, "n/a" where missing."""
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        return number_or_inf(v, digits, inf="\u221e")
    return str(v)


def with_spec(v, spec: str = ",.0f", none: str = "-") -> str:
    """format(v, spec) for a measurement table; `none` where it was not measured (None or NaN)."""
    return none if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)
