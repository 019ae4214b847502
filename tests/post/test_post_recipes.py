"""The post-training recipes load, validate, and carry the published OLMo 2 numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from olmo2.post.dpo import DPOConfig
from olmo2.post.grpo import GRPOConfig
from olmo2.post.sft import SFTConfig
from olmo2.train.config import load_config

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
KINDS = {"sft": SFTConfig, "dpo": DPOConfig, "grpo": GRPOConfig}


@pytest.mark.parametrize("name", [f"{p}-{k}" for p in ("demo", "olmo2-1b") for k in KINDS])
def test_post_recipe_loads(name):
    cls = KINDS[name.rsplit("-", 1)[1]]
    over = ["model.load_path=x"] if name.startswith("demo") else []
    cfg = load_config(cls, RECIPES / f"{name}.yaml", over)
    assert cfg.data.global_batch_size % cfg.data.micro_batch_size == 0 or "grpo" in name


def test_published_post_training_hyperparameters():
    """OLMo 2 1B SFT, DPO and GRPO (allenai/open-instruct docs/olmo2.md)."""
    sft = load_config(SFTConfig, RECIPES / "olmo2-1b-sft.yaml")
    assert (sft.optim.lr, sft.data.global_batch_size, sft.data.seq_len, sft.data.epochs) == (
        3e-5,
        128,
        4096,
        2.0,
    )
    assert (sft.sft.reduction, sft.sft.warmup_ratio, sft.schedule.name, sft.optim.weight_decay) == (
        "sum",
        0.03,
        "linear",
        0.0,
    )
    dpo = load_config(DPOConfig, RECIPES / "olmo2-1b-dpo.yaml")
    assert (
        dpo.dpo.loss,
        dpo.dpo.beta,
        dpo.optim.lr,
        dpo.data.global_batch_size,
        dpo.data.seq_len,
    ) == ("dpo_norm", 5.0, 2.5e-6, 128, 2048)
    assert dpo.dpo.warmup_ratio == 0.1 and dpo.data.epochs == 1.0
    grpo = load_config(GRPOConfig, RECIPES / "olmo2-1b-grpo.yaml")
    g = grpo.grpo
    assert (
        g.num_samples,
        grpo.data.global_batch_size,
        g.beta,
        grpo.optim.lr,
        grpo.schedule.name,
    ) == (16, 48, 0.01, 5e-7, "constant")
    assert (g.max_new_tokens, g.temperature, g.mini_batches, g.non_stop_penalty) == (
        2048,
        1.0,
        2,
        None,
    )
    episodes = (
        grpo.trainer.max_steps // g.mini_batches * g.num_samples * grpo.data.global_batch_size
    )
    assert abs(episodes - 2_000_000) < 768


def test_bad_config_values():
    with pytest.raises(ValueError, match="dpo.loss"):
        load_config(DPOConfig, RECIPES / "demo-dpo.yaml", ["model.load_path=x", "dpo.loss=ipo"])
    with pytest.raises(ValueError, match="num_samples"):
        load_config(
            GRPOConfig, RECIPES / "demo-grpo.yaml", ["model.load_path=x", "grpo.num_samples=1"]
        )
    with pytest.raises(ValueError, match="model.load_path"):
        load_config(SFTConfig, RECIPES / "demo-sft.yaml")


def test_ppo_recipes_carry_the_published_numbers():
    """OLMo 2 7B/13B PPO (allenai/open-instruct docs/archived_dev_scripts/olmo2_1124.sh and
    the legacy ppo_vllm_thread_ray_gtrl.py defaults; posttrain-eval-anchors §1.5)."""
    from olmo2.post.ppo import PPOConfig

    demo = load_config(PPOConfig, RECIPES / "demo-ppo.yaml", ["model.load_path=x"])
    assert demo.data.global_batch_size % demo.ppo.mini_batches == 0
    for size, beta, seed in (("7b", 0.05, 1), ("13b", 0.1, 52)):
        cfg = load_config(PPOConfig, RECIPES / f"olmo2-{size}-ppo.yaml")
        p = cfg.ppo
        assert (p.gamma, p.lam, p.vf_coef, p.cliprange, p.cliprange_value) == (
            1.0,
            0.95,
            0.1,
            0.2,
            0.2,
        )
        assert (cfg.optim.lr, p.beta, p.max_new_tokens, p.temperature, cfg.data.seq_len) == (
            3e-7, beta, 2048, 1.0, 2048,
        )  # fmt: skip
        assert (p.reward_scale, p.non_stop_penalty, p.reward_model_multiplier) == (10.0, -10.0, 0.0)
        assert p.whiten_advantages and p.value_path.endswith(f"OLMo-2-1124-{size.upper()}-RM")
        assert cfg.data.seed == seed and cfg.schedule.name == "linear"
        rollouts = cfg.trainer.max_steps // (p.ppo_epochs * p.mini_batches)
        assert rollouts == 200_000 // cfg.data.global_batch_size  # 200k episodes, 248 per rollout
    with pytest.raises(ValueError, match="mini_batches"):
        load_config(
            PPOConfig, RECIPES / "demo-ppo.yaml", ["model.load_path=x", "ppo.mini_batches=3"]
        )
    with pytest.raises(ValueError, match="reward_model_path"):
        load_config(
            PPOConfig,
            RECIPES / "demo-ppo.yaml",
            ["model.load_path=x", "ppo.reward_model_multiplier=1"],
        )
