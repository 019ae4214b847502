"""Every recipe loads, validates, and builds its model on the meta device."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from olmo2.model.config import ModelConfig
from olmo2.model.transformer import Olmo2
from olmo2.train.config import TrainConfig, load_config
from olmo2.train.optim import lr_at

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))
PRETRAIN = [
    p for p in RECIPES if p.stem == "debug" or p.stem.startswith("olmo2-") and "stage" in p.stem
]


@pytest.mark.parametrize("path", PRETRAIN, ids=lambda p: p.stem)
def test_recipe_loads_and_builds(path):
    cfg = load_config(TrainConfig, path)
    size = cfg.model.size or ("olmo2_1b" if "1b" in path.stem else "olmo2_7b")
    mcfg = ModelConfig.named(size, **cfg.model.overrides())
    with torch.device("meta"):
        model = Olmo2(mcfg)
    assert sum(p.numel() for p in model.parameters()) == mcfg.num_params()


def test_published_hyperparameters():
    """OLMo 2 facts (olmo-training-anchors §2)."""
    s1 = load_config(TrainConfig, [p for p in RECIPES if p.stem == "olmo2-1b-stage1"][0])
    assert (s1.optim.lr, s1.schedule.warmup_steps, s1.data.global_batch_size * s1.data.seq_len) == (
        4e-4,
        4000,
        2_097_152,
    )
    assert (
        s1.optim.betas == [0.9, 0.95]
        and s1.optim.weight_decay == 0.1
        and s1.optim.clip_grad_norm == 1.0
    )
    # cosine over the 5T horizon, stopped at 4T: the published stage-1 end LR 7.4487e-5
    end = lr_at(s1.schedule, s1.optim.lr, s1.trainer.max_steps, s1.trainer.max_steps)
    assert math.isclose(end, 7.4487e-5, rel_tol=1e-4)
    s7 = load_config(TrainConfig, [p for p in RECIPES if p.stem == "olmo2-7b-stage1"][0])
    assert (s7.optim.lr, s7.schedule.warmup_steps, s7.data.global_batch_size * s7.data.seq_len) == (
        3e-4,
        2000,
        4_194_304,
    )
    for stem, start, steps in [
        ("olmo2-1b-stage2", 7.4487e-5, 23852),
        ("olmo2-7b-stage2", 6.1499e-5, 11931),
    ]:
        c = load_config(TrainConfig, [p for p in RECIPES if p.stem == stem][0])
        assert c.optim.lr == start and c.trainer.max_steps == steps and c.trainer.stage == 2
        assert (
            lr_at(c.schedule, start, 0, steps) == start
            and lr_at(c.schedule, start, steps, steps) == 0.0
        )
