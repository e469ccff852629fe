"""The jump test: is a capability's rise narrower than W0 decades of the x-axis? (work in progress)"""
from __future__ import annotations

W0 = 0.5  # analysis.jump_width: decades of the x-axis, chosen before looking

DEFINITION = (
    "A jump is a rise from a curve's floor to its ceiling (10% to 90% of its own amplitude) narrower than W0 "
    "decades of the x-axis (W0 = {w0:g} here, analysis.jump_width, chosen before looking). Across sizes the curve "
    "judged is the expected score of a run of size N, estimated from all runs at each size with the between-run "
    "variance measured at that size; along training, each run's own curve. A row is emergent when the 95% interval "
    "of the width W lies below W0 (and its false-discovery-rate q-value is at most alpha), smooth when it lies "
    "above, inconclusive when it straddles W0, when the sizes or checkpoints around the rise are more than W0/2 "
    "apart, or when a claimed jump's floor or ceiling is not observed; flat when nothing rises beyond noise.")

FLAG_COLUMNS = ["task", "metric", "x", "verdict", "jump_at", "jump_lo", "jump_hi", "width", "width_lo", "width_hi",
                "n_sizes", "n_runs", "per_run", "p_value", "q_value", "breakthroughness", "mirage", "loss_at_jump",
                "evidence"]
EXTRA_COLUMNS = ["w0", "floor", "ceiling", "p_smooth", "p_flat", "step_max", "step_allowed", "step_p",
                 "share_by_size", "share_width", "per_run_p", "loss_separates", "em_measured", "em_predicted",
                 "answer_length", "noise"]
