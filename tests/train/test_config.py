from __future__ import annotations

import pytest

from olmo2.cli import main
from olmo2.train.config import TrainConfig, apply_overrides, dump_yaml, load_config

from .helpers import RECIPE


def test_overrides_and_types():
    cfg = load_config(
        TrainConfig, RECIPE, ["optim.lr=1e-3", "optim.betas=[0.8, 0.9]", "trainer.ingredient=2"]
    )
    assert cfg.optim.lr == 1e-3 and isinstance(cfg.optim.lr, float)
    assert cfg.optim.betas == [0.8, 0.9] and cfg.trainer.ingredient == 2
    # ints are accepted for floats; YAML's "4e-4" (a string in YAML 1.1) too
    assert apply_overrides(cfg, ["optim.lr=1"]).optim.lr == 1.0
    assert apply_overrides(cfg, ["model.load_path=null"]).model.load_path is None


def test_unknown_key_suggests_closest():
    with pytest.raises(ValueError, match=r"unknown config key 'optim.lrr'.*'optim.lr'"):
        load_config(TrainConfig, RECIPE, ["optim.lrr=1e-3"])
    with pytest.raises(ValueError, match=r"'trainr'.*'trainer'"):
        load_config(TrainConfig, RECIPE, ["trainr.max_steps=3"])


def test_wrong_type_and_choice():
    with pytest.raises(ValueError, match="trainer.max_steps: expected int"):
        load_config(TrainConfig, RECIPE, ["trainer.max_steps=ten"])
    with pytest.raises(ValueError, match="data.paths: expected a list"):
        load_config(TrainConfig, RECIPE, ["data.paths=3"])
    with pytest.raises(ValueError, match="schedule.name='cosin'"):
        load_config(TrainConfig, RECIPE, ["schedule.name=cosin"])


def test_yaml_round_trip(tmp_path):
    cfg = load_config(TrainConfig, RECIPE, ["optim.lr=2e-3"])
    p = tmp_path / "c.yaml"
    p.write_text(dump_yaml(cfg))
    assert load_config(TrainConfig, p) == cfg


def test_unknown_key_in_yaml(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("optim:\n  weight_decy: 0.1\n")
    with pytest.raises(ValueError, match="'optim.weight_decy'.*'optim.weight_decay'"):
        load_config(TrainConfig, p)


def test_dry_run_prints_config(capsys, tmp_path):
    run_dir = tmp_path / "run"
    assert (
        main(["train", str(RECIPE), "optim.lr=0.5", f"trainer.run_dir={run_dir}", "--dry-run"]) == 0
    )
    out = capsys.readouterr().out
    assert "lr: 0.5" in out and not run_dir.exists()


def test_cli_bad_key_exit_code(capsys, tmp_path):
    assert main(["train", str(RECIPE), "optim.lrr=1", f"trainer.run_dir={tmp_path / 'r'}"]) == 2
    assert "did you mean 'optim.lr'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_recipe_section_keeps_the_configs_own_defaults(tmp_path):
    """A post-training recipe that sets only `optim.lr` keeps post-training's optimizer
    defaults (weight decay 0, no clipping, no spike guard: open-instruct's), and `trainer:`
    keeps its z-loss 0 — not the generic section's defaults (wd 0.1, clip 1.0, 6σ, 1e-5)."""
    from olmo2.post.sft import SFTConfig
    from olmo2.train.config import load_config

    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: {size: debug}\ndata: {paths: [x.jsonl]}\noptim: {lr: 1.0e-5}\n"
                      "trainer: {max_steps: 3}\n")  # fmt: skip
    cfg = load_config(SFTConfig, recipe)
    o = cfg.optim
    assert (o.lr, o.weight_decay, o.clip_grad_norm, o.spike_sigma) == (1e-5, 0.0, None, None)
    assert cfg.trainer.z_loss_multiplier == 0.0 and cfg.trainer.max_steps == 3
    assert cfg.trainer.run_dir == SFTConfig().trainer.run_dir
