"""Reading a sweep folder from its files alone: the grid's run ids (`grid.json`, else the folders under `runs/`),
each run's `status.json`, and the one-row-per-run table built from them.

`emergence status` (one-shot and `--watch`), the sweep's progress bar and the sweep's aggregation all read runs
this way, so they work alike for runs trained in this process, in a launcher's workers or on other machines.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from emergence.config import ConfigError
from emergence.files import pid_alive

RUN_COLUMNS = ["run_id", "sweep", "experiment", "model", "n_params", "n_params_nonembed", "n_layer", "d_model",
               "n_head", "seed", "budget", "max_steps", "tokens", "flops", "flops_per_token", "lr", "task_suite",
               "status", "error", "wall_s", "final_loss", "final_val_loss", "revisions"]


def read_status(folder: Path) -> dict:
    try:
        return json.loads((Path(folder) / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def grid_run_ids(folder: Path) -> list[str]:
    grid = folder / "grid.json"
    if grid.exists():
        return [r["run_id"] for r in json.loads(grid.read_text())["runs"]]
    runs = folder / "runs"
    return sorted(p.name for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []


def load_runs(folder: Path) -> pd.DataFrame:
    """One row per run of the grid, from the files alone (grid.json, each run's status.json)."""
    grid = {r["run_id"]: r for r in json.loads((folder / "grid.json").read_text())["runs"]} \
        if (folder / "grid.json").exists() else {}
    rows = []
    for rid in grid_run_ids(folder):
        st = read_status(folder / "runs" / rid)
        g = grid.get(rid, {})
        state = st.get("state", "not_started")
        if state == "running" and not pid_alive(st.get("pid")):
            state = "stopped"
        row = {c: g.get(c) for c in RUN_COLUMNS}
        row.update({"run_id": rid, "status": state, "error": st.get("error", "") or "",
                    "wall_s": st.get("wall_s"), "final_loss": st.get("final_loss"),
                    "final_val_loss": st.get("final_val_loss")})
        for c in ("n_params", "flops", "tokens"):
            if row.get(c) is None and c in st:
                row[c] = st[c]
        rows.append(row)
    df = pd.DataFrame(rows, columns=RUN_COLUMNS)
    for c in ("wall_s", "final_loss", "final_val_loss", "flops", "lr", "tokens"):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    return df


def require_sweep_folder(folder: Path) -> None:
    """Refuse a path that holds no sweep (the one line of `emergence status`)."""
    if not folder.is_dir() or not (folder / "runs").is_dir() and not (folder / "grid.json").exists():
        raise ConfigError(f"{folder} is not a sweep folder (no runs/ or grid.json); give results/<sweep>")
