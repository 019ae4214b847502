"""Rollouts through a generation backend (olmo2/post/rollout.py): olmo2's engine gives
exactly the generator's samples, the truncated importance-sampling weight and the GRPO loss
it corrects against hand computations, the `rollout:` section's checks, and a clear error
where vLLM is missing. The vLLM engine itself: tests/vllm/test_grpo.py (`make test-vllm`)."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from olmo2.cli import main as olmo2_main
from olmo2.infer.generate import SamplingConfig, complete
from olmo2.model.transformer import Olmo2
from olmo2.post import rewards
from olmo2.post.grpo import GRPOConfig, GRPOObjective, Rollout, rollout_tensors
from olmo2.post.rollout import RolloutEngine, RolloutSection, tis_weights
from olmo2.train.config import load_config
from tests.post.helpers import tiny_checkpoint, tiny_config, tiny_tokenizer, write_jsonl


def test_olmo2_engine_samples_what_the_generator_samples():
    """`rollout.backend=olmo2` is the batched generator on the policy, G copies of each
    prompt, one seed: the same tokens, texts and finish reasons as calling it directly."""
    tok = tiny_tokenizer()
    torch.manual_seed(0)
    model = Olmo2.build(tiny_config()).train()
    prompts = [tok.encode("3+4="), tok.encode("hello there"), tok.encode("reverse abc")]
    with RolloutEngine(RolloutSection(), tok, None) as engine:
        got = engine.generate(model, prompts, n=4, max_new_tokens=40, temperature=1.0, seed=5)
    assert model.training  # given back in the mode it was in
    rows = [p for p in prompts for _ in range(4)]
    cfg = SamplingConfig(max_new_tokens=40, temperature=1.0, seed=5)
    model.eval()
    want = complete(model, rows, cfg, tokenizer=tok, stop_token_ids=[tok.eos_token_id])
    assert got.tokens == [d.tokens for d in want]
    assert got.texts == [d.text for d in want]
    assert got.finished == [d.finish_reason == "stop" for d in want]
    assert 0 < sum(got.finished) < len(rows)  # both kinds of ending occur here
    assert got.logprobs is None  # the learner's own forward: nothing to correct


def test_tis_weights_by_hand():
    old = torch.tensor([[-1.0, -2.0, -0.5], [-3.0, -0.1, 0.0]])
    rollout = torch.tensor([[-1.0, -3.0, -0.4], [-1.0, -1.5, 0.0]])
    w, capped = tis_weights(old, rollout, cap=2.0)
    ratio = [[1.0, math.e, math.exp(-0.1)], [math.exp(-2.0), math.exp(1.4), 1.0]]
    want = [[min(r, 2.0) for r in row] for row in ratio]
    torch.testing.assert_close(w, torch.tensor(want), rtol=1e-6, atol=0)
    assert capped.tolist() == [[False, True, False], [False, True, False]]
    plain, none = tis_weights(old, rollout, cap=None)  # no correction: the ratio, for logging
    torch.testing.assert_close(plain, torch.tensor(ratio), rtol=1e-6, atol=0)
    assert not none.any()
    lp = old.clone().requires_grad_()
    assert not tis_weights(lp, rollout, 2.0)[0].requires_grad  # a constant in the loss


def _batch(rollout_logps=None):
    ro = Rollout(
        prompt_ids=[[5, 6], [5, 6, 4]],
        completions=[[7, 0], [9, 9, 0]],
        finished=[True, True],
        rewards=torch.tensor([10.0, 0.0]),
        scores=torch.tensor([1.0, 0.0]),
        advantages=torch.tensor([0.7, -0.7]),
        rollout_logps=rollout_logps,
    )
    b = rollout_tensors(ro, pad=1)
    torch.manual_seed(0)
    logits = torch.randn(2, b["input_ids"].shape[1], 12)
    mask = b["labels"] != -100
    b["ref_logp"] = torch.randn(mask.shape).clamp(max=-0.1) * mask
    b["weight"] = torch.full((2,), 2 / 5)  # token mean over the 5 response tokens
    return b, logits


def test_rollout_logps_align_with_labels():
    b, _ = _batch([[-0.5, -0.25], [-1.0, -2.0, -3.0]])
    assert b["labels"].tolist() == [[-100, 7, 0, -100, -100, -100], [-100, -100, 9, 9, 0, -100]]
    assert b["rollout_logp"].tolist() == [[0, -0.5, -0.25, 0, 0, 0], [0, 0, -1, -2, -3, 0]]
    assert "rollout_logp" not in _batch()[0]  # olmo2's engine: none recorded


def _model(logits):
    return lambda ids, logits_to_keep=0: logits[:, -logits_to_keep:]


def test_corrected_grpo_loss_by_hand():
    """On-policy (ratio 1) the per-token loss is w_t·(−A) + β·k3 with w_t = min(exp(logπ −
    logπ_rollout), cap); the logged IS weight, capped fraction and mismatch are token means."""
    b0, logits = _batch()
    lp = logits.log_softmax(-1)
    mask = b0["labels"] != -100
    own = [
        [float(lp[i, t, b0["labels"][i, t]]) for t in range(mask.shape[1]) if mask[i, t]]
        for i in range(2)
    ]
    shift = [[0.1, -1.2], [0.0, 0.3, -0.05]]  # log π_learner − log π_rollout per token
    b, _ = _batch([[x - s for x, s in zip(o, d)] for o, d in zip(own, shift)])
    beta, cap = 0.05, 2.0
    loss, metrics = GRPOObjective(0.2, beta, cap).loss(_model(logits), b)
    total, ws, capped, diff = 0.0, [], 0, []
    for i in range(2):
        ts = [t for t in range(mask.shape[1]) if mask[i, t]]
        for t, d in zip(ts, shift[i]):
            w = min(math.exp(d), cap)
            k = float(b["ref_logp"][i, t] - lp[i, t, b["labels"][i, t]])
            total += w * -float(b["advantages"][i]) + beta * (math.exp(k) - 1 - k)
            ws.append(w)
            capped += math.exp(d) > cap
            diff.append(abs(d))
    assert (loss / 2).item() == pytest.approx(total / 5, rel=1e-5)
    assert (metrics["is_weight"] / 2).item() == pytest.approx(sum(ws) / 5, rel=1e-5)
    assert (metrics["is_capped"] / 2).item() == pytest.approx(capped / 5)
    assert (metrics["rollout_logp_diff"] / 2).item() == pytest.approx(sum(diff) / 5, rel=1e-4)


def test_agreeing_engines_change_nothing():
    """Rollout log-probs equal to the learner's: weights 1, and loss and gradient as without
    a rollout engine; with `is_cap: null` the loss is the uncorrected one whatever the
    rollout log-probs."""
    b, logits = _batch()
    own = logits.log_softmax(-1).gather(-1, b["labels"].clamp(min=0)[..., None])[..., 0]
    mask = b["labels"] != -100

    def loss_grad(batch, cap):
        x = logits.clone().requires_grad_()
        loss, metrics = GRPOObjective(0.2, 0.05, cap).loss(_model(x), batch)
        loss.backward()
        return loss, x.grad, metrics

    plain, g_plain, _ = loss_grad(b, 2.0)
    agree = {**b, "rollout_logp": (own * mask).detach()}
    same, g_same, metrics = loss_grad(agree, 2.0)
    torch.testing.assert_close(same, plain, rtol=1e-6, atol=0)
    torch.testing.assert_close(g_same, g_plain, rtol=1e-5, atol=1e-8)
    assert (metrics["is_weight"] / 2).item() == pytest.approx(1.0, abs=1e-6)
    assert metrics["is_capped"].item() == 0.0
    off = {**b, "rollout_logp": (own * mask - 0.7).detach()}
    uncorrected, g_off, metrics = loss_grad(off, None)
    assert uncorrected.item() == plain.item() and torch.equal(g_off, g_plain)
    assert (metrics["is_weight"] / 2).item() == pytest.approx(math.exp(0.7), rel=1e-5)


@pytest.mark.parametrize(
    "override, message",
    [
        ("rollout.backend=native", r"rollout.backend='native': expected one of olmo2, vllm"),
        ("rollout.is_cap=0", r"rollout.is_cap must be > 0"),
        ("rollout.is_cap=-1.5", r"rollout.is_cap must be > 0"),
        ("rollout.gpu_memory_utilization=1.5", r"rollout.gpu_memory_utilization"),
        ("rollout.dtype=fp8", r"rollout.dtype='fp8'"),
    ],
)
def test_rollout_section_checks(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(GRPOConfig, "recipes/demo-grpo.yaml", ["model.load_path=x", override])
    cfg = load_config(
        GRPOConfig, "recipes/demo-grpo.yaml", ["model.load_path=x", "rollout.is_cap=null"]
    )
    assert cfg.rollout.is_cap is None and cfg.rollout.backend == "olmo2"


def _refused_grpo(tmp_path, capsys, override: str) -> str:
    """stderr of a GRPO run on a tiny checkpoint (context 256) that must exit 2 with nothing
    written."""
    init = tiny_checkpoint(tmp_path)
    data = write_jsonl(tmp_path / "p.jsonl", rewards.addition_rows(4))
    run_dir = tmp_path / "run"
    rc = olmo2_main([
        "grpo", "recipes/demo-grpo.yaml", f"model.load_path={init}", f"data.paths=[{data}]",
        f"trainer.run_dir={run_dir}", override,
    ])  # fmt: skip
    assert rc == 2
    assert not run_dir.exists()  # nothing written
    return capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
def test_vllm_missing_is_a_clear_error(tmp_path, capsys):
    err = _refused_grpo(tmp_path, capsys, "rollout.backend=vllm")
    assert "rollout.backend=vllm: the vllm backend needs vLLM" in err and "olmo2[vllm]" in err


def test_prompt_and_response_must_fit_the_context(tmp_path, capsys):
    err = _refused_grpo(tmp_path, capsys, "grpo.max_new_tokens=250")
    assert "grpo.max_new_tokens 250" in err and "> the model's context of 256 tokens" in err
