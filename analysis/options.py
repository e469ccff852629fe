"""The verdict's settings, one typed set: `FlagOptions` (W0, the loss view's W0, alpha, bootstrap draws).

They are chosen before looking at the data. One definition serves every place that needs them: the defaults of the
sweep config's `analysis` group (`emergence.config.AnalysisConfig`), the keywords of `flag_emergence`, the
command-line flags of `emergence analyze` and `emergence stability`, and the file a sweep folder keeps them in
(`flag_options.json`, written beside `flags.csv`), from which `analyze`, `report`, `stability` and `forecast` read
them back. Each setting carries its source (`default`, `sweep config` or `command line`), kept in the file as first
given, which the report prints.

This module imports the standard library only.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path

FILE = "flag_options.json"

# setting -> (what it is, its unit) for messages and the report
ABOUT = {
    "w0": ("W0: a jump rises from 10% to 90% of its amplitude within this many decades of x", "decades"),
    "loss_w0": ("the loss view's W0, in nats of held-out loss", "nats"),
    "alpha": ("the level of the one-sided width tests and of the false discovery rate across rows", ""),
    "n_boot": ("draws of the parametric bootstrap (at most; stops early once a p-value is clearly decided)", "draws"),
}


class OptionsError(ValueError):
    """A setting out of its range, or an unreadable settings file: one line saying which and what to do."""


@dataclass(frozen=True)
class FlagOptions:
    """The settings of `flag_emergence`, validated on construction."""
    w0: float = 0.5
    loss_w0: float = 0.1
    alpha: float = 0.05
    n_boot: int = 500

    def __post_init__(self):
        def number(name, v):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise OptionsError(f"{name} must be a number, got {v!r}")
        for f in fields(self):
            number(f.name, getattr(self, f.name))
        if not self.w0 > 0:
            raise OptionsError(f"w0 must be a positive number of decades, got {self.w0}")
        if not self.loss_w0 > 0:
            raise OptionsError(f"loss_w0 must be a positive number of nats, got {self.loss_w0}")
        if not 0 < self.alpha < 1:
            raise OptionsError(f"alpha must be between 0 and 1, got {self.alpha}")
        if int(self.n_boot) != self.n_boot or self.n_boot < 20:
            raise OptionsError(f"n_boot must be a whole number of at least 20, got {self.n_boot}")
        object.__setattr__(self, "n_boot", int(self.n_boot))
        for name in ("w0", "loss_w0", "alpha"):
            object.__setattr__(self, name, float(getattr(self, name)))

    def kwargs(self, *, loss_view: bool = True) -> dict:
        """The keywords of `run_analysis`'s flag_options; without `loss_w0` (loss_view=False), of `flag_emergence`
        and `stability`, which judge against size only."""
        out = dataclasses.asdict(self)
        if not loss_view:
            out.pop("loss_w0")
        return out


DEFAULTS = FlagOptions()


class Settings:
    """FlagOptions with the source of each value: built from the defaults, then overridden in order."""

    def __init__(self, options: FlagOptions = DEFAULTS, sources: dict[str, str] | None = None):
        self.options = options
        self.sources = {f.name: "default" for f in fields(FlagOptions)} | dict(sources or {})

    def override(self, values: dict, source: str) -> "Settings":
        """These values (None: not given) from `source`; validated together."""
        given = {k: v for k, v in values.items() if v is not None}
        unknown = set(given) - {f.name for f in fields(FlagOptions)}
        if unknown:
            raise OptionsError(f"unknown verdict setting(s) {', '.join(sorted(unknown))}; the settings are "
                               f"{', '.join(f.name for f in fields(FlagOptions))}")
        opts = dataclasses.replace(self.options, **given)
        return Settings(opts, {**self.sources, **{k: source for k in given}})

    def to_json(self) -> dict:
        return {"options": self.options.kwargs(), "sources": dict(self.sources)}

    def write(self, folder: Path) -> Path:
        """flag_options.json in `folder`, written whole (a temporary file renamed over it)."""
        path = Path(folder) / FILE
        tmp = path.with_name(f".{FILE}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        os.replace(tmp, path)
        return path

    def describe(self) -> list[str]:
        """One phrase per setting: value, unit and source."""
        out = []
        for f in fields(FlagOptions):
            v = getattr(self.options, f.name)
            unit = ABOUT[f.name][1]
            out.append(f"{f.name} = {v:g}{' ' + unit if unit else ''} ({self.sources.get(f.name, 'default')})")
        return out


def read(folder: Path) -> Settings | None:
    """The settings a folder keeps (flag_options.json), their sources as written there; None when it has none.

    Raises OptionsError when the file is there but unreadable or out of range."""
    path = Path(folder) / FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        opts = FlagOptions(**data["options"])
        sources = {k: str(v) for k, v in dict(data.get("sources", {})).items()}
    except OptionsError as e:
        raise OptionsError(f"{path}: {e}; fix or delete it") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise OptionsError(f"{path} is not a readable settings file ({type(e).__name__}: {e}); delete it to use "
                           "the defaults") from None
    return Settings(opts, sources)


def for_folder(folder: Path, cli: dict | None = None) -> Settings:
    """What a verb judges a folder with: the folder's file (else the defaults), then the command line's values."""
    base = read(folder) or Settings()
    return base.override(cli or {}, "command line")
