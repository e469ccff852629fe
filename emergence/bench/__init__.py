"""`emergence bench`: how fast this machine trains and probes, measured against its own limit.

One process measures, and prints as a table and (with --out) writes as JSON:

- the dense matmul peak (GFLOP/s): the fastest large square fp32 products, n in 512..2048 (bf16 too on CUDA).
  Every MFU figure is divided by this measured peak, not by a datasheet number, so the figures say how close the
  training step comes to what this machine can do;
- for each size of the CPU ladder (`sweeps/model/l*.yaml`, composed with the real config so the shapes, sequence
  length, batch size and task vocabulary are those a sweep trains), the training throughput (tokens/s) and MFU of
  our trainer's step (`GPT` + `make_optimizer` + gradient clipping, the loop of `train()`), and the same for a plain
  reference GPT written below in the most direct PyTorch style (nanoGPT's layout, same shapes, same AdamW settings).
  The two are timed in alternation, one step each in turn, on the same batches, so machine load hits both alike;
  a rate is that of the fastest step (the `timeit` convention: load only slows a step down), the median beside it;
- probe throughput (examples/s) and the share of a run's wall time spent probing;
- the time to analyse 1,000 curves, and the wall time of the `smoke` sweep (the whole loop, in a subprocess);
- the seeds of one size trained together as one stacked model (`emergence.stacked`) against the same seeds
  trained one after another.

MFU (model FLOPs utilisation, Chowdhery et al. 2022, appendix B) = tokens/s x FLOPs per token / peak FLOP/s, with
FLOPs per token from `emergence.model.flops_per_token` (6 N + 12 L d T), the one formula the project uses.

`--gpu` measures the Pythia 70M and 160M shapes on one CUDA device with bf16 autocast, fused AdamW, `torch.compile`
and SDPA (flash) attention, against the measured bf16 matmul peak and the H100/H200 dense bf16 datasheet peak.

Figures vary with machine load: the JSON records the load average before and after, and the thread count
(`--threads N` pins it; a sweep's parallel launcher gives each job cores // jobs threads).
A measurement that could not be taken is `null` in the JSON with a `*_status` string that says why, never 0.
"""
from emergence.bench.cli import main, run

__all__ = ["main", "run"]
