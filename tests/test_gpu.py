"""The GPU path, for a machine with CUDA: `python -m pytest -m gpu` (each test is skipped, with its reason, without
one). bf16 autocast, torch.compile, flash attention, the memory estimate against the measured peak, and a 20-step
run of the smallest pythia_ladder size with probing."""
import pandas as pd
import pytest
import torch

from emergence.config import estimate_memory
from emergence.model import GPT, GPTConfig
from emergence.optim import Step, make_optimizer

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

DEV = torch.device("cuda")


def one_step(model, x, lr=1e-3, amp=True):
    opt = make_optimizer(model, lr, 0.1, (0.9, 0.95), "cuda")
    step = Step(lambda a, b: model(a, b)[1], opt, lambda i: lr, 1.0)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
        return step(0, [(x, x)])


def tiny_gpt(**kw):
    torch.manual_seed(0)
    c = GPTConfig(**{"n_layer": 2, "d_model": 128, "n_head": 4, "vocab_size": 512, "block_size": 128, **kw})
    return GPT(c).to(DEV)


def test_a_bf16_autocast_step_trains_in_bf16_with_fp32_weights():
    model = tiny_gpt()
    x = torch.randint(0, 512, (8, 128), device=DEV)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits, loss = model(x, x)
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
    before = model.head.weight.detach().clone()
    one_step(model, x)
    assert model.head.weight.dtype == torch.float32  # master weights stay fp32
    assert not torch.equal(before, model.head.weight)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        assert torch.isfinite(model(x, x)[1])


def test_compiled_model_matches_eager():
    model = tiny_gpt()
    x = torch.randint(0, 512, (4, 128), device=DEV)
    with torch.no_grad():
        eager = model(x)[0]
        compiled = torch.compile(model)(x)[0]
    assert (eager - compiled).abs().max().item() < 1e-3


def test_flash_attention_runs_the_model_in_bf16():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = tiny_gpt(pos="rotary")
    x = torch.randint(0, 512, (4, 128), device=DEV)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):  # raises if the flash kernel cannot run these inputs
            flash = model(x)[0].float()
        with sdpa_kernel(SDPBackend.MATH):
            math = model(x)[0].float()
    assert (flash - math).abs().max().item() < 5e-2


@pytest.mark.parametrize("shape", [(6, 512, 8, 256), (12, 768, 12, 128)])
def test_the_memory_estimate_brackets_the_measured_peak(shape):
    L, d, H, B = shape
    c = GPTConfig(n_layer=L, d_model=d, n_head=H, vocab_size=8192, block_size=512)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(DEV)
    base = torch.cuda.memory_allocated(DEV)
    model = GPT(c).to(DEV)
    x = torch.randint(0, c.vocab_size, (B, c.block_size), device=DEV)
    one_step(model, x)
    one_step(model, x)  # the second step holds the AdamW moments too
    peak = torch.cuda.max_memory_allocated(DEV) - base
    est = estimate_memory(c, B, "bf16")
    print(f"{shape}: estimate {est / 2**30:.2f} GiB, measured peak {peak / 2**30:.2f} GiB, ratio {est / peak:.2f}")
    assert 0.8 <= est / peak <= 2.0


def test_a_short_pythia_ladder_run_trains_and_probes(tmp_path):
    from emergence.config import compose
    from emergence.train import train

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"Line {i}: the quick brown fox jumps over the lazy dog {i % 13} times.\n"
                              for i in range(20000)))
    cfg = compose(["experiment=pythia_ladder", "model=pythia-14m", "seed=0", "train.budget=steps",
                   "train.max_steps=20", "train.ckpt_log_until=0", "train.ckpt_every=10", "train.warmup_steps=2",
                   "probe.n=64", f"data.text_path={corpus}", f"paths.results={tmp_path / 'results'}"])
    s = train(cfg)
    assert s["state"] == "done", s
    probes = pd.read_parquet(s["run_dir"] + "/probes.parquet")
    final = probes[(probes.step == 20) & (probes.status == "ok")]
    assert len(final) > 0 and final["value"].notna().all()
