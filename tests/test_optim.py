"""FlatAdamW: AdamW and gradient clipping over flat buffers must be torch's AdamW + clip_grad_norm_ over the
separate parameters, and its checkpoints must be torch's per-parameter format."""
import pytest
import torch

from emergence.model import GPT, GPTConfig
from emergence.optim import FlatAdamW, implementation, model_groups
from emergence.optim import make_optimizer

# no biases: the key bias gets a zero gradient (softmax ignores it), which AdamW turns rounding noise into full steps
CFG = GPTConfig(n_layer=2, d_model=16, n_head=2, vocab_size=30, block_size=12, bias=False)


def data(step):
    g = torch.Generator().manual_seed(step)
    x = torch.randint(0, CFG.vocab_size, (4, CFG.block_size), generator=g)
    return x, torch.roll(x, -1, dims=1)


def reference(model, lr=3e-2):
    groups = [{"params": ps, "weight_decay": wd} for ps, wd in model_groups(model, 0.1)]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), **implementation("cpu"))


def step_flat(model, opt, k, max_norm=0.05):
    _, loss = model(*data(k))
    loss.backward()
    norm = opt.clip(max_norm)
    opt.step()
    opt.zero_grad()
    return norm


def step_ref(model, opt, k, max_norm=0.05):
    _, loss = model(*data(k))
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return norm


def pair():
    torch.manual_seed(0)
    a = GPT(CFG)
    torch.manual_seed(0)
    b = GPT(CFG)
    return a, make_optimizer(a, 3e-2, 0.1, (0.9, 0.98), "cpu"), b, reference(b)


@pytest.fixture
def one_thread():
    """The two optimizers are compared to 1e-6: with several threads the products' sums run in another order
    (whichever test ran before decides the thread count), so pin it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_flat_adamw_follows_torch_adamw_with_clipping(one_thread):
    a, oa, b, ob = pair()
    for k in range(6):
        na, nb = step_flat(a, oa, k), step_ref(b, ob, k)
        assert na.item() == pytest.approx(nb.item(), rel=1e-5)
        assert nb.item() > 0.05  # the clip was active: the test covers the scaling, not only AdamW
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, atol=1e-6, rtol=1e-5, msg=name)


def test_gradients_stay_views_of_the_buffer():
    a, oa, _, _ = pair()
    ptrs = [p.grad.data_ptr() for p in a.parameters()]
    step_flat(a, oa, 0)
    _, loss = a(*data(1))
    loss.backward()
    assert [p.grad.data_ptr() for p in a.parameters()] == ptrs
    total = sum(p.grad.square().sum() for p in a.parameters())
    assert total.item() == pytest.approx(sum(f.grad.square().sum() for f in oa.flats).item(), rel=1e-6)
    assert total.item() > 0


def test_state_dict_is_torch_adamw_format_and_loads_both_ways():
    a, oa, b, ob = pair()
    for k in range(3):
        step_flat(a, oa, k)
        step_ref(b, ob, k)
    sa, sb = oa.state_dict(), ob.state_dict()
    assert [g["params"] for g in sa["param_groups"]] == [g["params"] for g in sb["param_groups"]]
    assert set(sa["state"]) == set(sb["state"])
    for i, st in sb["state"].items():
        assert sa["state"][i]["exp_avg"].shape == st["exp_avg"].shape
        torch.testing.assert_close(sa["state"][i]["exp_avg_sq"], st["exp_avg_sq"], atol=1e-9, rtol=1e-4)
        assert float(sa["state"][i]["step"]) == float(st["step"]) == 3.0
    # a torch AdamW checkpoint resumes in a FlatAdamW, and goes on as the torch optimizer does
    torch.manual_seed(1)
    c = GPT(CFG)
    c.load_state_dict(b.state_dict())
    oc = make_optimizer(c, 3e-2, 0.1, (0.9, 0.98), "cpu")
    oc.load_state_dict(sb)
    step_flat(c, oc, 3)
    step_ref(b, ob, 3)
    for pc, pb in zip(c.parameters(), b.parameters()):
        torch.testing.assert_close(pc, pb, atol=1e-6, rtol=1e-5)


def test_load_state_dict_of_another_model_is_refused():
    a, oa, _, _ = pair()
    other = GPT(GPTConfig(n_layer=1, d_model=16, n_head=2, vocab_size=30, block_size=12, bias=False))
    with pytest.raises(ValueError, match="parameter groups"):
        oa.load_state_dict(make_optimizer(other, 1e-3, 0.1, (0.9, 0.98), "cpu").state_dict())


def test_seed_axis_state_is_each_seeds_own():
    ws = [torch.nn.Parameter(torch.randn(2, 3, 4)), torch.nn.Parameter(torch.randn(2, 5))]
    opt = FlatAdamW([(ws[:1], 0.1), (ws[1:], 0.0)], 1e-2, (0.9, 0.98), "cpu", seeds=2)
    (ws[0][0].sum() * 2 + ws[0][1].sum() + ws[1].square().sum()).backward()
    opt.step()
    s0, s1 = opt.state_dict(seed=0), opt.state_dict(seed=1)
    assert s0["state"][0]["exp_avg"].shape == (3, 4)
    torch.testing.assert_close(s0["state"][0]["exp_avg"], torch.full((3, 4), 0.2))
    torch.testing.assert_close(s1["state"][0]["exp_avg"], torch.full((3, 4), 0.1))


def test_the_one_step_accumulates_schedules_clips_and_steps():
    """`Step`, the step every trainer takes: two micro-batches of 2 rows give the update of one batch of 4 (the
    mean of their mean losses), at the scheduled learning rate, with the norm before clipping returned."""
    from emergence.optim import Step

    torch.manual_seed(0)
    a, b = GPT(CFG), GPT(CFG)
    b.load_state_dict(a.state_dict())
    oa, ob = make_optimizer(a, 1.0, 0.1, (0.9, 0.98), "cpu"), make_optimizer(b, 1.0, 0.1, (0.9, 0.98), "cpu")
    x, y = data(3)
    step = Step(lambda x, y: a(x, y)[1], oa, lambda i: 1e-2 * (i + 1), grad_clip=0.05)
    total, norm, lr = step(1, [(x[:2], y[:2]), (x[2:], y[2:])])
    assert lr == pytest.approx(2e-2) and oa.param_groups[0]["lr"] == pytest.approx(2e-2)
    ob.set_lr(2e-2)
    _, loss = b(x, y)
    loss.backward()
    norm_b = ob.clip(0.05)
    ob.step()
    assert torch.allclose(norm, norm_b, rtol=1e-4) and float(norm) > 0.05  # clipping was active
    assert float(total) / 2 == pytest.approx(float(loss.detach()), rel=1e-5)
    for (k, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(pa, pb, atol=1e-6, rtol=1e-4, msg=k)
    assert all(p.grad is None or not p.grad.any() for p in a.parameters())  # gradients cleared after the step
