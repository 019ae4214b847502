from __future__ import annotations

import math

import pytest

from olmo2.model.config import ModelConfig
from olmo2.model.transformer import Olmo2
from olmo2.train.config import OptimSection, ScheduleSection
from olmo2.train.optim import SpikeGuard, build_optimizer, lr_at, param_groups


def test_cosine_closed_form():
    s = ScheduleSection(name="cosine", warmup_steps=10, t_max=110, alpha_f=0.1)
    assert lr_at(s, 1.0, 0, 50) == 0.0
    assert lr_at(s, 1.0, 5, 50) == pytest.approx(0.5)
    assert lr_at(s, 1.0, 10, 50) == pytest.approx(1.0)
    # half-way through the decay: floor + (peak - floor)/2
    assert lr_at(s, 1.0, 60, 50) == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi / 2)) / 2)
    assert lr_at(s, 1.0, 110, 50) == pytest.approx(0.1)
    assert lr_at(s, 1.0, 500, 50) == pytest.approx(0.1)  # t_max may lie beyond the run


def test_linear_anneal_wsd_constant():
    lin = ScheduleSection(name="linear", warmup_steps=0, alpha_f=0.0)
    assert lr_at(lin, 7e-5, 0, 4) == 7e-5 and lr_at(lin, 7e-5, 1, 4) == pytest.approx(5.25e-5)
    assert lr_at(lin, 7e-5, 4, 4) == 0.0
    wsd = ScheduleSection(name="wsd", warmup_steps=2, decay_steps=4, alpha_f=0.0)
    assert [lr_at(wsd, 1.0, t, 10) for t in (1, 2, 6, 8, 10)] == pytest.approx([0.5, 1, 1, 0.5, 0])
    assert lr_at(ScheduleSection(name="constant"), 3.0, 1000, 10) == 3.0


def test_weight_decay_groups():
    model = Olmo2.build(ModelConfig.debug())
    groups = param_groups(model, 0.1)
    assert groups[1]["params"] == [model.embeddings.weight] and groups[1]["weight_decay"] == 0.0
    n = sum(p.numel() for g in groups for p in g["params"])
    assert n == sum(p.numel() for p in model.parameters())
    assert any(
        p is model.blocks[0].attention_norm.weight for p in groups[0]["params"]
    )  # norms decayed
    opt = build_optimizer(model, OptimSection())
    assert opt.defaults["betas"] == (0.9, 0.95) and opt.defaults["eps"] == 1e-8


def test_spike_guard():
    g = SpikeGuard(sigma=6.0, window=128, min_steps=8)
    for i in range(8):
        assert g.check(2.0 + 0.01 * (i % 2), 1.0 + 0.01 * (i % 3)) is None
    assert g.check(3.0, 1.0) == "loss spike"  # 6σ ≈ 0.03 above a mean of ~2.005
    assert g.check(2.0, 5.0) == "grad-norm spike"
    assert g.check(float("nan"), 1.0) == "non-finite" and g.check(2.0, float("inf")) == "non-finite"
    state = g.state_dict()
    h = SpikeGuard(6.0, 128, 8)
    h.load_state_dict(state)
    assert h.check(3.0, 1.0) == g.check(3.0, 1.0)


def test_spike_guard_first_steps_use_the_early_bound():
    """Before the window has `min_steps` values there is no σ: a loss above early_factor × the
    largest accepted loss is skipped (the first explosive steps of a diverging run), and a
    skipped value never enters the window, so the next explosive loss is skipped too."""
    g = SpikeGuard(sigma=6.0, min_steps=64, early_factor=2.0)
    assert [g.check(x, 1.0) for x in [6.25, 5.0, 9.0]] == [None, None, None]  # 9 < 2 × 6.25
    assert g.check(6.7e5, 1.0).startswith("loss spike: 6.7e+05 > 2 x 9")
    assert g.check(4.7e10, 1.0).startswith("loss spike") and max(g.losses) == 9.0
    assert g.check(float("nan"), 1.0) == "non-finite" and len(g.losses) == 3
    assert g.check(12.0, 1.0) is None  # a loss that merely rises stays within the bound
    assert SpikeGuard(sigma=6.0, early_factor=None).check(1e9, 1.0) is None
    assert SpikeGuard(sigma=None).check(1e9, 1e9) is None  # the guard off: only non-finite
