"""What the post-training commands share with `olmo2 train`: one config validation, one
start-up path (`trainer.compile` honoured), one epoch sampler, stage-named checkpoints."""

from __future__ import annotations

import numpy as np
import pytest

from olmo2.cli import main as olmo2_main
from olmo2.export.checkpoints import checkpoint_name, parse_name
from olmo2.post.common import EpochSampler
from olmo2.train import checkpoint as ckpt
from tests.post.helpers import tiny_checkpoint, write_jsonl

RECIPES = {cmd: f"recipes/demo-{cmd}.yaml" for cmd in ("sft", "dpo", "grpo")}
RECIPES["train"] = "recipes/debug.yaml"


@pytest.mark.parametrize("cmd", ["train", "sft", "dpo", "grpo"])
def test_precision_typo_is_rejected_by_every_command(cmd, tmp_path, capsys):
    """The shared sections are validated for every command: `trainer.precision=bf61` used to
    train sft/dpo/grpo in fp32 without a word."""
    argv = [cmd, RECIPES[cmd], "model.load_path=x", f"trainer.run_dir={tmp_path / 'r'}"]
    assert olmo2_main([*argv, "trainer.precision=bf61"]) == 2
    assert "trainer.precision='bf61': expected one of fp32, bf16" in capsys.readouterr().err
    assert olmo2_main([*argv, "distributed.strategy=fsdp2"]) == 2
    assert "distributed.strategy='fsdp2': expected one of" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("key", ["trainer.stage=2", "trainer.ingredient=1"])
def test_post_training_refuses_pretraining_names(key, capsys):
    assert olmo2_main(["sft", RECIPES["sft"], "model.load_path=x", key, "--dry-run"]) == 2
    assert "sft checkpoints are named sft-step{N}" in capsys.readouterr().err


@pytest.mark.parametrize("compile_", [True, False])
def test_sft_honours_trainer_compile(tmp_path, monkeypatch, compile_):
    """`trainer.compile=true` compiles every transformer block in `olmo2 sft` (it used to be
    accepted and ignored); the spy stands in for torch.compile so no kernel is built."""
    from olmo2.model.transformer import Block

    compiled = []
    monkeypatch.setattr(Block, "compile", lambda self, *a, **k: compiled.append(self))
    init = tiny_checkpoint(tmp_path)
    data = write_jsonl(tmp_path / "sft.jsonl", [{"instruction": "say hi", "output": "hi"}] * 4)
    assert olmo2_main([
        "sft", RECIPES["sft"], f"model.load_path={init}", f"data.paths=[{data}]",
        f"trainer.run_dir={tmp_path / 'run'}", "trainer.max_steps=1", "data.epochs=null",
        "data.global_batch_size=2", "data.seq_len=32", "logging.progress_bar=false",
        "logging.report=false", "logging.peak_flops=1e11", f"trainer.compile={str(compile_).lower()}",
    ]) == 0  # fmt: skip
    assert len(compiled) == (2 if compile_ else 0)  # tiny_config has 2 layers
    assert [p.name for p in ckpt.list_complete(tmp_path / "run")] == ["sft-step1"]


def test_post_checkpoint_names_parse_and_resume():
    for stage in ("sft", "dpo", "grpo", "ppo"):
        name = checkpoint_name(stage, 80)
        assert name == f"{stage}-step80"
        ref = parse_name(name)
        assert (ref.stage, ref.step, ref.tokens_b) == (stage, 80, None)
    assert checkpoint_name(1, 20, 0) == "stage1-step20-tokens0B"
    with pytest.raises(ValueError, match="post-training stage 'kto'"):
        checkpoint_name("kto", 1)


def test_latest_understands_post_names(tmp_path):
    for step in (3, 12, 6):
        (tmp_path / f"dpo-step{step}").mkdir()
        (tmp_path / f"dpo-step{step}" / ckpt.META).write_text("{}")
    (tmp_path / "dpo-step20").mkdir()  # no olmo2.json: cut by a crash
    assert ckpt.latest(tmp_path).name == "dpo-step12"


def _sampler(n=10, B=4, seed=3, **kw):
    return EpochSampler(n, B, seed, what="test rows", **kw)


def test_epoch_sampler_order_ranks_and_epochs():
    """Epoch e is the permutation of PCG64(seed + e); batch b is rows [bB, (b+1)B) with the
    partial last batch dropped; rank r takes every world-th row."""
    s = _sampler()
    batches = [s.next_rows() for _ in range(5)]
    perm = [np.random.Generator(np.random.PCG64(3 + e)).permutation(10).tolist() for e in (0, 1, 2)]
    assert batches == [perm[0][:4], perm[0][4:8], perm[1][:4], perm[1][4:8], perm[2][:4]]
    r0, r1 = _sampler(rank=0, world=2), _sampler(rank=1, world=2)
    assert (r0.next_rows(), r1.next_rows()) == (perm[0][0:4:2], perm[0][1:4:2])
    grouped = _sampler(rows=lambda order: [order[i : i + 2] for i in range(0, len(order), 2)])
    assert grouped.n_rows(0) == 5 and grouped.next_rows() == [
        perm[0][0:2],
        perm[0][2:4],
        perm[0][4:6],
        perm[0][6:8],
    ]


def test_epoch_sampler_resume_and_refusal():
    s = _sampler(identity=("a",))
    for _ in range(3):
        s.next_rows()
    resumed = _sampler(identity=("a",))
    resumed.load_state_dict(s.state_dict())
    assert [resumed.next_rows() for _ in range(4)] == [s.next_rows() for _ in range(4)]
    with pytest.raises(
        ValueError, match="the test rows or their batching changed .* refusing to resume"
    ):
        _sampler(identity=("b",)).load_state_dict(s.state_dict())
    with pytest.raises(ValueError, match="refusing to resume"):
        _sampler(B=2, identity=("a",)).load_state_dict(s.state_dict())
    with pytest.raises(
        ValueError, match="3 usable test rows make fewer rows than one global batch"
    ):
        _sampler(n=3)
    with pytest.raises(ValueError, match="not divisible by the world size 3"):
        _sampler(world=3)
