"""GRPO: prompt rows, rewards, the objective vs a hand computation, and reward going up on a
synthetic verifiable task after SFT."""

from __future__ import annotations

import json

import pytest
import torch

from olmo2.cli import main as olmo2_main
from olmo2.post import rewards
from olmo2.post.data import BadRow, PostDataSection, RowErrors, gsm8k_prompt_rows, prompt_row
from olmo2.post.grpo import GRPOObjective, Rollout, rollout_tensors, tokenize_prompts
from tests.post.helpers import tiny_checkpoint, tiny_tokenizer, write_jsonl


def test_rewards_and_synthetic_tasks():
    assert rewards.reward("add", "the sum is 12", "12") == (10.0, 1.0)
    assert rewards.reward("add", "12 then 13", "12") == (0.0, 0.0)  # the last integer counts
    assert rewards.reward("add", "12", "12", finished=False, non_stop_penalty=-10.0) == (-10.0, 1.0)
    assert rewards.reward("reverse", " cba ", "cba")[0] == 10.0
    rows = rewards.addition_rows(50, seed=7)
    assert rows == rewards.addition_rows(50, seed=7) and rows != rewards.addition_rows(50, seed=8)
    for r in rows:
        a, b = map(int, r["messages"][0]["content"].rstrip("=").split("+"))
        assert 0 <= a <= 9 and 0 <= b <= 9 and r["ground_truth"] == str(a + b)
    rev = rewards.reverse_rows(5, seed=1)[0]
    assert rev["messages"][0]["content"] == "reverse " + rev["ground_truth"][::-1]
    with pytest.raises(ValueError, match="unknown verifier"):
        rewards.score("nope", "x", "y")


def test_gsm8k_reward_uses_eval_checkers():
    pytest.importorskip("olmo2.eval.checkers")
    assert rewards.reward("gsm8k", "48 + 24 = 72. So the answer is 72.", "72")[0] == 10.0
    assert rewards.reward("gsm8k", "So the answer is 71.", "72")[0] == 0.0


def test_gsm8k_prompt_rows(data_dir):
    rows = gsm8k_prompt_rows(data_dir / "eval" / "gsm8k" / "train.jsonl")
    assert len(rows) > 7000 and rows[0]["dataset"] == "gsm8k" and rows[0]["ground_truth"] == "72"
    assert rows[0]["messages"][0]["content"].startswith("Natalia sold clips")
    assert prompt_row(rows[0]).ground_truth == "72"


def test_prompt_bad_rows(tmp_path):
    tok = tiny_tokenizer()
    rows = rewards.addition_rows(3) + [
        {
            "messages": [{"role": "user", "content": "q"}],
            "ground_truth": "1",
            "dataset": "unknown_set",
        },
        {
            "messages": [{"role": "user", "content": "hello " * 100}],
            "ground_truth": "1",
            "dataset": "add",
        },
        {"messages": [{"role": "user", "content": "q"}]},
    ]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    errors = RowErrors()
    prompts = tokenize_prompts(tok, PostDataSection(paths=[str(path)], seq_len=40), errors)
    assert len(prompts) == 3
    assert errors.counts == {
        "unknown verifier dataset": 1,
        "prompt longer than the limit": 1,
        "missing ground_truth/dataset": 1,
    }
    with pytest.raises(ValueError, match="row 4: unknown verifier dataset"):
        tokenize_prompts(
            tok, PostDataSection(paths=[str(path)], seq_len=40), RowErrors(strict=True)
        )
    with pytest.raises(BadRow):
        prompt_row({"messages": [], "ground_truth": "1", "dataset": "add"})


def test_grpo_objective_equals_hand_computation():
    """Token-level normalisation: Σ over response tokens of (−A·ratio + β·k3) / tokens, with
    ratio 1 (on-policy) and a fixed reward group."""
    adv = torch.tensor([0.8660254, -0.8660254, 0.8660254, -0.8660254])
    ro = Rollout(
        prompt_ids=[[5, 6]] * 4,
        completions=[[7, 0], [8], [9, 9, 0], [7]],
        finished=[True, False, True, False],
        rewards=torch.tensor([10.0, 0.0, 10.0, 0.0]),
        scores=torch.tensor([1.0, 0.0, 1.0, 0.0]),
        advantages=adv,
    )
    b = rollout_tensors(ro, pad=1)
    assert b["labels"].tolist() == [
        [-100, 7, 0, -100, -100],
        [-100, 8, -100, -100, -100],
        [-100, 9, 9, 0, -100],
        [-100, 7, -100, -100, -100],
    ]
    torch.manual_seed(0)
    logits = torch.randn(4, 5, 12)
    ref = torch.randn(4, 5).clamp(max=-0.1) * (b["labels"] != -100)
    b["ref_logp"], b["weight"] = ref, torch.full((4,), 4 / 7)
    model = lambda ids, logits_to_keep=0: logits[:, -logits_to_keep:]  # noqa: E731
    beta = 0.05
    loss, metrics = GRPOObjective(0.2, beta).loss(model, b)
    lp = logits.log_softmax(-1)
    total, kl = 0.0, 0.0
    for i in range(4):
        for t in range(5):
            y = int(b["labels"][i, t])
            if y == -100:
                continue
            d = float(ref[i, t] - lp[i, t, y])
            k3 = torch.tensor(d).exp().item() - 1 - d
            total += -float(adv[i]) + beta * k3
            kl += k3
    assert (loss / 4).item() == pytest.approx(total / 7, rel=1e-5)
    assert (metrics["kl"] / 4).item() == pytest.approx(kl / 7, rel=1e-5)
    assert (metrics["reward"] / 4).item() == 5.0 and (metrics["finished"] / 4).item() == 0.5


def _common():
    return ["data.epochs=null", "logging.progress_bar=false", "logging.report=false", "logging.peak_flops=1e11",
            "checkpoint.save_interval=0", "logging.log_interval=10"]  # fmt: skip


@pytest.mark.slow  # ~2-3 min on a loaded 2-core CPU
@pytest.mark.timeout(600)
def test_sft_then_grpo_raises_reward_on_addition(tmp_path):
    """Single-digit addition (operands 0-4): SFT on a 50/50 mix of right and off-by-one
    answers gives a policy that is right some of the time; GRPO must raise the mean reward
    while the KL to the SFT policy stays bounded."""
    init = tiny_checkpoint(tmp_path)
    prompts = [
        {
            "messages": [{"role": "user", "content": f"{a}+{b}="}],
            "ground_truth": str(a + b),
            "dataset": "add",
        }
        for a in range(5)
        for b in range(5)
    ]
    sft = [
        {
            "messages": p["messages"]
            + [{"role": "assistant", "content": str(int(p["ground_truth"]) + d)}]
        }
        for p in prompts
        for d in (0, 1)
    ]
    write_jsonl(tmp_path / "sft.jsonl", sft)
    write_jsonl(tmp_path / "p.jsonl", prompts)
    assert olmo2_main([
        "sft", "recipes/demo-sft.yaml", f"model.load_path={init}", f"data.paths=[{tmp_path / 'sft.jsonl'}]",
        f"trainer.run_dir={tmp_path / 'sft'}", "trainer.max_steps=100", "optim.lr=3e-3", "data.seq_len=32",
        "data.global_batch_size=50", "data.micro_batch_size=50", "sft.reduction=mean", *_common(),
    ]) == 0  # fmt: skip
    ckpt = max((tmp_path / "sft").glob("sft-step*"))
    assert olmo2_main([
        "grpo", "recipes/demo-grpo.yaml", f"model.load_path={ckpt}", f"data.paths=[{tmp_path / 'p.jsonl'}]",
        f"trainer.run_dir={tmp_path / 'grpo'}", "trainer.max_steps=40", "optim.lr=1e-3", "grpo.max_new_tokens=3",
        "grpo.num_samples=8", "data.global_batch_size=25", "data.micro_batch_size=200", *_common(),
    ]) == 0  # fmt: skip
    m = [json.loads(x) for x in (tmp_path / "grpo" / "metrics.jsonl").read_text().splitlines()]
    first = sum(x["reward"] for x in m[:8]) / 8
    last = sum(x["reward"] for x in m[-8:]) / 8
    print(
        f"GRPO mean reward: first 8 steps {first:.2f}, last 8 steps {last:.2f}; max kl {max(x['kl'] for x in m):.3f}"
    )
    assert last > first + 1.0, (first, last)  # +10 points of pass rate at least
    # bounded, not blown up: over 30 runs (15 data seeds × two samplers) the largest
    # per-step KL at this aggressive lr (1e-3) was 2.62
    assert max(x["kl"] for x in m) < 4.0


@pytest.mark.parametrize("norm", ["token", "sequence"])
def test_grpo_loss_norm_weights_by_hand(norm):
    """`token`: Σ_i w_i·Σ_t loss_it / N is the mean over all response tokens; `sequence`: the
    mean over completions of each completion's token mean."""
    from types import SimpleNamespace

    from olmo2.post.grpo import RolloutBatches
    from olmo2.post.rollout import RolloutSource

    labels = torch.tensor([[-100, 3, 4, -100], [-100, 5, -100, -100], [-100, 6, 7, 8]])
    stub = SimpleNamespace(cfg=SimpleNamespace(grpo=SimpleNamespace(loss_norm=norm)), device="cpu")
    stub.token_mean_weights = lambda lb: RolloutSource.token_mean_weights(stub, lb)
    w = RolloutBatches.weights(stub, labels)
    tok_loss = torch.tensor([[0.0, 1.0, 2.0, 0.0], [0.0, 3.0, 0.0, 0.0], [0.0, 4.0, 5.0, 6.0]])
    got = ((tok_loss.sum(-1) * w).sum() / 3).item()
    want = 21 / 6 if norm == "token" else (1.5 + 3.0 + 5.0) / 3
    assert got == pytest.approx(want, rel=1e-6)
