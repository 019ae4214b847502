"""PPO: the objective and the per-token rewards vs hand computations, the checkpoint layout
(the policy a plain HF LM, the value model beside it), exact resume, bad input, and reward
going up on the synthetic addition task after SFT."""

from __future__ import annotations

import json
import math
import shutil
import sys

import pytest
import torch

from olmo2.cli import main as olmo2_main
from olmo2.model.hf import save_pretrained
from olmo2.model.reward import Olmo2Reward
from olmo2.post import rewards
from olmo2.post.ppo import PPOObjective, token_rewards
from tests.post.helpers import (
    kill_and_resume,
    tiny_checkpoint,
    tiny_config,
    tiny_tokenizer,
    write_jsonl,
)
from tests.post.test_resume import ENV

TIMES = ("step_time", "data_time", "rollout_time", "tokens_per_s", "mfu", "memory_gb", "eta_s")


def _common():
    return ["data.epochs=null", "logging.progress_bar=false", "logging.report=false", "logging.peak_flops=1e11",
            "logging.log_interval=10"]  # fmt: skip


def _metrics(run):
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMES} for r in rows]


def test_token_rewards_kl_and_score_at_the_last_token():
    mask = torch.tensor([[0, 1, 1, 0], [0, 1, 1, 1]], dtype=torch.bool)
    logp = torch.tensor([[0.0, -1.0, -2.0, 0.0], [0.0, -0.5, -0.5, -3.0]])
    ref = torch.tensor([[0.0, -1.5, -1.0, 0.0], [0.0, -0.5, -1.5, -2.0]])
    r, kl1 = token_rewards(torch.tensor([10.0, -10.0]), logp, ref, mask, beta=0.1)
    assert kl1.tolist() == [[0.0, 0.5, -1.0, 0.0], [0.0, 0.0, 1.0, -1.0]]
    assert r[0].tolist() == pytest.approx([0.0, -0.05, 10.1, 0.0])
    assert r[1].tolist() == pytest.approx([0.0, 0.0, -0.1, -9.9])


def test_ppo_objective_equals_hand_computation():
    """Σ over response tokens of PPO-clip + 0.1 × clipped value loss, / response tokens."""
    labels = torch.tensor([[-100, 7, 0, -100, -100], [-100, 8, 9, 0, -100]])
    ids = torch.tensor([[5, 6, 7, 0, 1], [5, 6, 8, 9, 0]])
    torch.manual_seed(0)
    logits, values = torch.randn(2, 5, 12), torch.randn(2, 5)
    mask = labels != -100
    mb = {
        "input_ids": ids, "labels": labels,
        "old_logp": (logits.log_softmax(-1).gather(-1, labels.clamp(min=0)[..., None])[..., 0]
                     + 0.3 * torch.randn(2, 5)) * mask,
        "advantages": torch.randn(2, 5) * mask, "old_values": values + 0.4 * torch.randn(2, 5),
        "returns": 3 * torch.randn(2, 5) * mask, "kl": torch.randn(2, 5) * mask,
        "weight": torch.full((2,), 2 / 5),
        **{k: torch.ones(2) for k in ("reward", "pass", "finished", "response_len", "explained_var",
                                      "rollout_time")},
    }  # fmt: skip

    def model(ids, logits_to_keep=0):
        return logits[:, -logits_to_keep:], values[:, -logits_to_keep:]

    loss, metrics = PPOObjective(0.2, 0.2, 0.1).loss(model, mb)
    lp = logits.log_softmax(-1)
    total, vf_total, clipped = 0.0, 0.0, 0
    for i in range(2):
        for t in range(5):
            y = int(labels[i, t])
            if y == -100:
                continue
            rho = math.exp(float(lp[i, t, y] - mb["old_logp"][i, t]))
            a = float(mb["advantages"][i, t])
            pg = max(-a * rho, -a * min(max(rho, 0.8), 1.2))
            clipped += -a * min(max(rho, 0.8), 1.2) > -a * rho
            v, old, ret = (
                float(values[i, t]),
                float(mb["old_values"][i, t]),
                float(mb["returns"][i, t]),
            )
            vc = old + min(max(v - old, -0.2), 0.2)
            vf = 0.5 * max((v - ret) ** 2, (vc - ret) ** 2)
            total += pg + 0.1 * vf
            vf_total += vf
    assert (loss / 2).item() == pytest.approx(total / 5, rel=1e-5)
    assert (metrics["vf_loss"] / 2).item() == pytest.approx(vf_total / 5, rel=1e-5)
    assert (metrics["pg_clip_frac"] / 2).item() == pytest.approx(clipped / 5, rel=1e-6)
    assert (metrics["reward"] / 2).item() == 1.0


def test_policy_and_value_gradients_are_clipped_apart():
    """Each network's gradient is clipped by its own norm (open-instruct's two engines); the
    logged norm is that of both together."""
    from types import SimpleNamespace

    from olmo2.model.transformer import Olmo2
    from olmo2.post.ppo import PolicyAndValue
    from olmo2.train.trainer import Trainer

    model = PolicyAndValue(Olmo2.build(tiny_config()), Olmo2Reward.build(tiny_config()))
    for net, g in ((model.policy, 3.0), (model.value, 4.0)):
        for p in net.parameters():
            p.grad = torch.full_like(p, g)
    norms = [math.sqrt(sum(p.grad.square().sum().item() for p in net.parameters()))
             for net in (model.policy, model.value)]  # fmt: skip
    stub = SimpleNamespace(
        cfg=SimpleNamespace(optim=SimpleNamespace(clip_grad_norm=1.0)), model=model
    )
    assert Trainer._clip(stub) == pytest.approx(math.hypot(*norms), rel=1e-5)
    for net in (model.policy, model.value):
        total = math.sqrt(sum(p.grad.square().sum().item() for p in net.parameters()))
        assert total == pytest.approx(1.0, rel=1e-4)


def _ppo_cmd(init, data, run, steps, *extra):
    return ["ppo", "recipes/demo-ppo.yaml", f"model.load_path={init}", f"data.paths=[{data}]",
            f"trainer.run_dir={run}", f"trainer.max_steps={steps}", "data.seq_len=48",
            "data.global_batch_size=4", "data.micro_batch_size=2", "ppo.max_new_tokens=3",
            "ppo.ppo_epochs=2", "ppo.mini_batches=2", "optim.lr=1e-3", "checkpoint.save_interval=3",
            "checkpoint.keep_last=2", *_common(), *extra]  # fmt: skip


def test_checkpoints_hold_a_plain_lm_and_the_value_model_and_resume_exactly(tmp_path):
    """ppo-step{N}/ is an HF causal LM (olmo2.load gives an Olmo2; transformers loads it),
    value/ an HF sequence-classification model; a run resumed from step 3 repeats the
    uninterrupted run's steps 4-6 bit for bit."""
    import olmo2
    from olmo2.model.reward import Olmo2Reward
    from olmo2.model.transformer import Olmo2
    from olmo2.train import checkpoint as ckpt

    init = tiny_checkpoint(tmp_path)
    data = write_jsonl(tmp_path / "add.jsonl", rewards.addition_rows(12, seed=3))
    run = tmp_path / "run"
    assert olmo2_main(_ppo_cmd(init, data, run, 6)) == 0
    last = run / "ppo-step6"
    assert [p.name for p in ckpt.list_complete(run)] == ["ppo-step3", "ppo-step6"]
    ckpt.verify(last)  # the value model's files are hashed with the rest
    policy, _ = olmo2.load(last)
    value, _ = olmo2.load(last / "value")
    assert type(policy) is Olmo2 and type(value) is Olmo2Reward
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoModelForCausalLM.from_pretrained(last)
    assert type(hf).__name__ == "Olmo2ForCausalLM"
    seq = transformers.AutoModelForSequenceClassification.from_pretrained(last / "value")
    assert type(seq).__name__ == "Olmo2ForSequenceClassification" and seq.config.num_labels == 1
    ids = torch.tensor([[5, 6, 7, 8]])
    assert torch.allclose(hf(ids).logits, policy(ids), atol=1e-5)
    m = _metrics(run)
    assert len(m) == 6 and {"vf_loss", "pg_clip_frac", "vf_clip_frac", "explained_var"} <= set(m[0])
    assert m[0]["kl"] == 0.0  # the first step's policy is the reference

    cut = tmp_path / "cut"
    shutil.copytree(run, cut)
    shutil.rmtree(cut / "ppo-step6")
    assert olmo2_main(_ppo_cmd(init, data, cut, 6)) == 0
    assert _metrics(cut) == m


@pytest.mark.slow  # ~40 s on a loaded 2-core CPU (three process starts)
@pytest.mark.timeout(300)
def test_sigkill_resume_is_exact(tmp_path):
    init = tiny_checkpoint(tmp_path)
    data = write_jsonl(tmp_path / "add.jsonl", rewards.addition_rows(12, seed=3))
    steps = 8

    def cmd(run):
        return [sys.executable, "-m", "olmo2", *_ppo_cmd(init, data, run, steps)]

    ref, run, stdout = kill_and_resume(cmd, tmp_path, steps, ENV)
    assert "resumed from" in stdout
    assert _metrics(run) == _metrics(ref)


def test_value_model_of_another_size_or_head_is_refused(tmp_path, capsys):
    init = tiny_checkpoint(tmp_path)
    data = write_jsonl(tmp_path / "add.jsonl", rewards.addition_rows(12, seed=3))
    (tmp_path / "big").mkdir()
    big = tiny_checkpoint(tmp_path / "big", d_model=64, n_heads=4, n_kv_heads=4)
    run = tmp_path / "run"
    assert olmo2_main(_ppo_cmd(init, data, run, 2, f"ppo.value_path={big}")) == 2
    err = capsys.readouterr().err
    assert (
        "value model must be the policy's size" in err
        and "d_model: recipe 32 vs checkpoint 64" in err
    )
    assert not run.exists()
    # a two-label head
    rm = Olmo2Reward.build(tiny_config())
    rm.score = torch.nn.Linear(32, 2, bias=False)
    bad = save_pretrained(rm, tmp_path / "rm2", tokenizer=tiny_tokenizer())
    assert olmo2_main(_ppo_cmd(init, data, run, 2, f"ppo.value_path={bad}")) == 2
    assert "[1, 32]" in capsys.readouterr().err and not run.exists()
    assert olmo2_main(_ppo_cmd(init, data, run, 2, "ppo.value_path=/nonexistent")) == 2
    assert olmo2_main(_ppo_cmd(init, data, run, 2, "ppo.reward_model_multiplier=1.0")) == 2
    assert "reward_model_path" in capsys.readouterr().err and not run.exists()


def test_reward_model_score_adds_with_its_multiplier(tmp_path):
    """reward = verifier reward + multiplier × RM score: the first rollout (same seed, same
    completions) with multipliers 0, 1, 2 gives r0, r0 + s, r0 + 2s."""
    init = tiny_checkpoint(tmp_path)
    data = write_jsonl(tmp_path / "add.jsonl", rewards.addition_rows(12, seed=3))
    torch.manual_seed(1)
    rm = save_pretrained(
        Olmo2Reward.build(tiny_config()), tmp_path / "rm", tokenizer=tiny_tokenizer()
    )
    first = []
    for mult in (0.0, 1.0, 2.0):
        run = tmp_path / f"run{mult}"
        extra = [f"ppo.reward_model_path={rm}", f"ppo.reward_model_multiplier={mult}",
                 "ppo.non_stop_penalty=null", "checkpoint.save_final=false"]  # fmt: skip
        assert olmo2_main(_ppo_cmd(init, data, run, 1, *extra)) == 0
        first.append(_metrics(run)[0]["reward"])
    r0, r1, r2 = first
    assert r1 != r0 and r2 - r0 == pytest.approx(2 * (r1 - r0), rel=1e-5)


# ---- reward going up -----------------------------------------------------------------------------


def _sft_on_addition(tmp_path):
    """Single-digit addition (operands 0-4): SFT on a 50/50 mix of right and off-by-one
    answers gives a policy that is right some of the time (as tests/post/test_grpo.py)."""
    init = tiny_checkpoint(tmp_path)
    prompts = [{"messages": [{"role": "user", "content": f"{a}+{b}="}], "ground_truth": str(a + b),
                "dataset": "add"} for a in range(5) for b in range(5)]  # fmt: skip
    sft = [{"messages": p["messages"] + [{"role": "assistant", "content": str(int(p["ground_truth"]) + d)}]}
           for p in prompts for d in (0, 1)]  # fmt: skip
    write_jsonl(tmp_path / "sft.jsonl", sft)
    write_jsonl(tmp_path / "p.jsonl", prompts * 4)  # 100 rows: a rollout of 100 completions
    assert olmo2_main([
        "sft", "recipes/demo-sft.yaml", f"model.load_path={init}", f"data.paths=[{tmp_path / 'sft.jsonl'}]",
        f"trainer.run_dir={tmp_path / 'sft'}", "trainer.max_steps=100", "optim.lr=3e-3", "data.seq_len=32",
        "data.global_batch_size=50", "data.micro_batch_size=50", "sft.reduction=mean",
        "checkpoint.save_interval=0", *_common(),
    ]) == 0  # fmt: skip
    return max((tmp_path / "sft").glob("sft-step*"))


EPOCHS = 4


def _ppo_on_addition(tmp_path, ckpt, steps):
    """demo-ppo's PPO numbers (β 0.05, γ 1, λ 0.95, vf_coef 0.1, both clips 0.2, −10 for no
    EOS), value model from the policy with a fresh head; 4 epochs over rollouts of 100."""
    run = tmp_path / "ppo"
    assert olmo2_main([
        "ppo", "recipes/demo-ppo.yaml", f"model.load_path={ckpt}", f"data.paths=[{tmp_path / 'p.jsonl'}]",
        f"trainer.run_dir={run}", f"trainer.max_steps={steps}", "optim.lr=1e-3", "ppo.max_new_tokens=3",
        f"ppo.ppo_epochs={EPOCHS}", "ppo.mini_batches=1", "data.global_batch_size=100",
        "data.micro_batch_size=100", "checkpoint.save_interval=0", *_common(),
    ]) == 0  # fmt: skip
    return _metrics(run)


def _summary(m):
    """Mean reward of the first and last quarter of the steps; the value loss before each of
    a rollout's 4 updates (steps 4k+1..4k+4 learn from rollout k), averaged over rollouts;
    explained variance of each rollout's values (before learning from it)."""
    q = len(m) // 4
    first, last = (sum(x["reward"] for x in part) / q for part in (m[:q], m[-q:]))
    rollouts = [m[i : i + EPOCHS] for i in range(0, len(m), EPOCHS)]
    vf = [sum(r[e]["vf_loss"] for r in rollouts) / len(rollouts) for e in range(EPOCHS)]
    ev = [r[0]["explained_var"] for r in rollouts]
    print(f"PPO mean reward: first quarter {first:.2f}, last quarter {last:.2f}; max kl "
          f"{max(x['kl'] for x in m):.3f}; value loss by PPO epoch {[round(v, 3) for v in vf]}; "
          f"explained variance per rollout {[round(e, 3) for e in ev]}")  # fmt: skip
    return first, last, vf, ev


@pytest.mark.timeout(600)
def test_sft_then_ppo_raises_reward_on_addition(tmp_path):
    """48 steps = 12 rollouts. Measured (data seeds 0/1/2): mean reward 1.77 → 2.67,
    1.37 → 2.67, 1.23 → 3.00 (first → last quarter); max KL 0.19; the value loss falls over
    every rollout's epochs and the explained variance climbs from ≈ −0.02 to ≈ +0.04..0.09."""
    m = _ppo_on_addition(tmp_path, _sft_on_addition(tmp_path), 48)
    first, last, vf, ev = _summary(m)
    assert last > first + 0.5, (first, last)  # +5 points of pass rate at least
    assert max(x["kl"] for x in m) < 1.0
    assert vf == sorted(vf, reverse=True) and vf[-1] < vf[0]  # the value model fits its returns
    assert sum(ev[-3:]) > sum(ev[:3])  # and predicts the next rollouts' returns better


@pytest.mark.slow  # 160 steps: ~1-4 min on 2 cores
@pytest.mark.timeout(900)
def test_longer_ppo_learns_the_task_and_the_value(tmp_path):
    """160 steps = 40 rollouts, data seed 0. Measured: mean reward 2.13 → 6.98 (first → last
    quarter), value loss 14.6 → 4.7 (first → last 8 steps), explained variance −0.02 → 0.58
    (first → last rollout), max KL 0.61."""
    m = _ppo_on_addition(tmp_path, _sft_on_addition(tmp_path), 160)
    first, last, _, ev = _summary(m)
    assert last > first + 3.0, (first, last)
    vf0, vf1 = (sum(x["vf_loss"] for x in part) / 20 for part in (m[:20], m[-20:]))
    assert vf1 < 0.6 * vf0, (vf0, vf1)
    assert sum(ev[-4:]) / 4 > 0.3 and max(x["kl"] for x in m) < 2.0
