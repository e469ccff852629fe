"""Reading results tables: `load_results(path)` for a .parquet or .csv table, or a sweep folder."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis import schema

SUFFIXES = (".parquet", ".csv")


def load_results(path, dedupe: str | None = None) -> pd.DataFrame:
    """Read a results table and validate it against `analysis.schema` (columns, dtypes, statuses).

    path: a .parquet or .csv file, or a sweep folder (its `results.parquet`, else `results.csv`). Returns the table
    with the schema's dtypes. Raises ValueError naming the file and what is wrong (a missing column, a non-numeric
    value, an unknown status, a number where the status says nothing was measured, two rows of one measurement).
    `dedupe` ("first" or "last") keeps one row of each measurement instead of refusing (`schema.dedupe`).
    """
    try:
        p = Path(path)
    except TypeError:
        raise ValueError(f"load_results needs a path to a .parquet/.csv table or a sweep folder, got {path!r}") from None
    if p.is_dir():
        for name in ("results.parquet", "results.csv"):
            if (p / name).is_file():
                p = p / name
                break
        else:
            raise ValueError(f"{p}: folder has no results.parquet or results.csv; run `emergence sweep` (which "
                             "writes results.parquet) or pass the table's path")
    if not p.exists():
        raise ValueError(f"{p}: no such file or folder")
    suffix = p.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"{p}: unsupported file type {p.suffix or '(none)'!r}; use a .parquet or .csv results table")
    try:
        df = pd.read_parquet(p) if suffix == ".parquet" else pd.read_csv(p)
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{p}: could not be read as {suffix[1:]} ({type(e).__name__}: {e})") from None
    except Exception as e:  # pyarrow raises its own error types for corrupt files
        raise ValueError(f"{p}: could not be read as {suffix[1:]} ({type(e).__name__}: {e})") from None
    return schema.dedupe(schema.validate(df, where=str(p)), dedupe, where=str(p))
