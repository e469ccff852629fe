"""The verdict's settings: one typed set, validated once, kept in the sweep folder with the source of each value."""
import json

import pytest

from analysis import options
from analysis.options import DEFAULTS, FlagOptions, OptionsError, Settings, for_folder, read


def test_defaults_are_the_configs_and_the_tests():
    from analysis.jumps import ALPHA, N_BOOT, W0
    from analysis.views import LOSS_W0
    from emergence.config import AnalysisConfig

    cfg = AnalysisConfig()
    assert (cfg.w0, cfg.loss_w0, cfg.alpha, cfg.n_boot) == (DEFAULTS.w0, DEFAULTS.loss_w0, DEFAULTS.alpha,
                                                            DEFAULTS.n_boot) == (W0, LOSS_W0, ALPHA, N_BOOT)


@pytest.mark.parametrize("bad, said", [({"w0": 0}, "w0 must be a positive"), ({"loss_w0": -1}, "loss_w0 must be"),
                                       ({"alpha": 1.0}, "alpha must be between"), ({"n_boot": 19}, "n_boot must be"),
                                       ({"n_boot": 50.5}, "whole number"), ({"w0": float("nan")}, "must be a number"),
                                       ({"alpha": "0.05"}, "must be a number"), ({"w0": True}, "must be a number")])
def test_each_setting_is_checked_on_construction(bad, said):
    with pytest.raises(OptionsError, match=said):
        FlagOptions(**bad)


def test_overrides_keep_the_source_of_each_value_and_round_trip(tmp_path):
    s = Settings().override({"w0": 0.3, "alpha": None}, "sweep config").override({"n_boot": 100}, "command line")
    assert s.options == FlagOptions(w0=0.3, n_boot=100)
    assert s.sources == {"w0": "sweep config", "loss_w0": "default", "alpha": "default", "n_boot": "command line"}
    s.write(tmp_path)
    back = read(tmp_path)
    assert back.options == s.options and back.sources == s.sources
    assert "w0 = 0.3 decades (sweep config)" in back.describe()
    assert for_folder(tmp_path, {"w0": 0.2}).sources["w0"] == "command line"
    assert for_folder(tmp_path).options.w0 == 0.3  # no flag: the folder's own setting, not the default
    assert read(tmp_path / "missing") is None and for_folder(tmp_path / "missing").options == DEFAULTS
    with pytest.raises(OptionsError, match="unknown verdict setting"):
        Settings().override({"jump_width": 0.3}, "command line")


def test_a_damaged_settings_file_is_one_clear_error(tmp_path):
    (tmp_path / options.FILE).write_text(json.dumps({"options": {"w0": -1}, "sources": {}}))
    with pytest.raises(OptionsError, match="w0 must be a positive.*fix or delete it"):
        read(tmp_path)
    (tmp_path / options.FILE).write_text("[1, 2")
    with pytest.raises(OptionsError, match="not a readable settings file"):
        read(tmp_path)
