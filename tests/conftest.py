"""Shared fixtures: the real config, composed and shrunk (lightning-hydra-template's habit)."""
import os
from pathlib import Path

import pytest

# one BLAS thread for numpy/scipy in tests: multithreaded BLAS on a busy 2-core machine is many times slower
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "offline")
if os.environ.get("PYTEST_XDIST_WORKER"):  # `pytest -n N`: N workers share the cores, so each (and what it starts)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # computes on one thread, as a sweep's parallel jobs do
os.environ.setdefault("WANDB_SILENT", "true")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

TINY = ["model=l1d32", "task=smoke", "train.max_steps=12", "train.batch_size=16", "train.warmup_steps=2",
        "train.ckpt_log_until=4", "train.ckpt_every=6", "train.log_interval=2", "train.eval_batches=1",
        "train.progress=false", "probe.n=16", "probe.generate_n=4", "probe.samples=1", "train.threads=1"]


@pytest.fixture
def tiny(tmp_path):
    """Compose the real config with a tiny model and budget, writing under tmp_path."""
    from emergence.config import compose

    def make(*extra):
        return compose([*TINY, f"paths.results={tmp_path / 'results'}", *extra])

    return make


@pytest.fixture
def text_file(tmp_path):
    """A small public-domain text, written by the test itself (no download)."""
    lines = [f"Line {i}: the quick brown fox jumps over the lazy dog, and counts {i * 7 % 13} sheep." for i in range(400)]
    p = tmp_path / "corpus.txt"
    p.write_text("\n".join(lines))
    return p


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module's tests: tiny models on a busy 2-core machine run many times slower with two."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


PYTHIA_EVALS = SHARED / "data" / "pythia-evals" / "pythia-v1"
PYTHIA_SUBSET_TASKS = {"arc_easy", "lambada_openai", "piqa", "sciq"}


def write_pythia_subset(dst):
    """EleutherAI's zero-shot evals of the Pythia suite, 7 sizes at steps 1000, 13000 and 143000 on 4 tasks, copied
    as lm-evaluation-harness files under `dst` (a subset of the files and tasks, to stay fast)."""
    import json

    for f in sorted(PYTHIA_EVALS.glob("pythia-*/zero-shot/*_step*.json")):
        if int(f.stem.rsplit("step", 1)[1]) in (1000, 13000, 143000):
            doc = json.loads(f.read_text())
            doc["results"] = {t: v for t, v in doc["results"].items() if t in PYTHIA_SUBSET_TASKS}
            (dst / f.relative_to(PYTHIA_EVALS)).parent.mkdir(parents=True, exist_ok=True)
            (dst / f.relative_to(PYTHIA_EVALS)).write_text(json.dumps(doc))
