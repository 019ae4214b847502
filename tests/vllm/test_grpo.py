"""GRPO with `rollout.backend=vllm` (`make test-vllm`): the engine gets the learner's weights
at every rollout (its log-probs of the tokens it samples are the learner's own), and a short
`olmo2 grpo` run through it completes, writes an HF checkpoint, logs IS weights of 1 and
leaves nothing in shared memory. Two engine starts in all.

Tolerance. Both engines compute in fp32 (unit roundoff u = 2^-24 ≈ 6e-8) with different
kernels (vLLM's CPU build repacks the linear weights for oneDNN and has its own attention),
so a log-prob differs by rounding only: per dot product of length K the error is at most
~K·u·Σ|a_i·b_i| and typically √K·u times that; over two layers of K ≤ 192 with O(1)
activations that is ≲ 1e-5 at worst, and observed ≈ 1e-7 on average (test_weights.py holds
prompt log-probs to 1e-5). `TOL` = 1e-4 is ten times the worst case, and 100x below what a
single missed sync shows (> 1e-2 after the pretend step here; asserted).
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

from olmo2.cli import main as olmo2_main
from olmo2.model.hf import load
from olmo2.model.loss import token_logps
from olmo2.post import rewards
from olmo2.post.rollout import RolloutEngine, RolloutSection, tis_weights
from tests.post.helpers import tiny_checkpoint, write_jsonl
from tests.vllm.conftest import require_vllm
from tests.vllm.test_backend import _shm_entries
from tests.vllm.test_weights import _stepped

pytestmark = pytest.mark.vllm

TOL = 1e-4
PROMPTS = [[7, 21, 99, 140, 3, 250], [42, 43], list(range(100, 130))]


def _own_logps(model, prompts, gen, n):
    """The learner's log-prob of each sampled token (its own forward on prompt ‖ sample)."""
    out = []
    with torch.no_grad():
        for i, toks in enumerate(gen.tokens):
            row = list(prompts[i // n]) + toks
            logits = model(torch.tensor([row]))[0, len(row) - len(toks) - 1 : -1]
            out.append(token_logps(logits, torch.tensor(toks)))
    return out


def _max_diff(a, b):
    return max((x - torch.tensor(y)).abs().max().item() for x, y in zip(a, b, strict=True))


def test_every_rollout_syncs_the_learner(tiny):
    require_vllm()
    before = _shm_entries()
    learner = copy.deepcopy(tiny.model).train()
    n, stale = 4, None
    with RolloutEngine(RolloutSection(backend="vllm"), tiny.tok, tiny.model) as engine:
        for step in range(3):
            gen = engine.generate(
                learner, PROMPTS, n, max_new_tokens=24, temperature=1.0, seed=step
            )
            assert len(gen.tokens) == len(PROMPTS) * n and gen.logprobs is not None
            assert learner.training  # the sync leaves the learner as it was
            assert len({tuple(t) for t in gen.tokens[:n]}) > 1  # sampled, not greedy
            own = _own_logps(learner, PROMPTS, gen, n)
            diff = _max_diff(own, gen.logprobs)
            print(f"rollout {step}: max |logp_learner - logp_vllm| = {diff:.2e}")
            assert diff < TOL
            for o, r in zip(own, gen.logprobs):
                w, capped = tis_weights(o, torch.tensor(r), cap=2.0)
                torch.testing.assert_close(w, torch.ones_like(w), atol=2 * TOL, rtol=0)
                assert not capped.any()
            # the engine really computed with the new weights, not the old ones
            if stale is not None:
                assert _max_diff(_own_logps(stale, PROMPTS, gen, n), gen.logprobs) > 1e-2
            stale = copy.deepcopy(learner)
            learner = _stepped(learner, seed=step)  # a pretend optimizer step
    assert _shm_entries() == before


def test_grpo_through_vllm(tmp_path):
    """3 rollouts × 2 mini-batches (so off-policy steps too) at a large LR: every step's IS
    weight is 1 and the mismatch within rounding although the policy moves between syncs."""
    require_vllm()
    init = tiny_checkpoint(tmp_path, d_model=64, n_heads=2, ffn_hidden=128)  # head_dim 32
    data = write_jsonl(tmp_path / "p.jsonl", rewards.addition_rows(12, seed=3))
    run_dir, before = tmp_path / "run", _shm_entries()
    rc = olmo2_main([
        "grpo", "recipes/demo-grpo.yaml", f"model.load_path={init}", f"data.paths=[{data}]",
        f"trainer.run_dir={run_dir}", "trainer.max_steps=6", "data.epochs=null", "data.seq_len=48",
        "data.global_batch_size=2", "data.micro_batch_size=8", "grpo.num_samples=8",
        "grpo.max_new_tokens=40", "grpo.non_stop_penalty=-3.0", "grpo.mini_batches=2",
        "optim.lr=1e-2", "checkpoint.save_interval=0", "logging.progress_bar=false",
        "logging.report=false", "logging.peak_flops=1e11", "logging.log_interval=1",
        "rollout.backend=vllm",
    ])  # fmt: skip
    assert rc == 0
    assert _shm_entries() == before  # the engine's weight directories are gone
    m = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(m) == 6
    for x in m:
        print({k: x[k] for k in ("step", "loss", "grad_norm", "is_weight", "rollout_logp_diff")})
        assert x["is_weight"] == pytest.approx(1.0, abs=TOL) and x["is_capped"] == 0.0
        assert x["rollout_logp_diff"] < TOL
    assert sum(x["grad_norm"] > 0 for x in m[:4]) >= 2  # the policy moved before later syncs
    ckpt = run_dir / "grpo-step6"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {
        p.name for p in ckpt.iterdir()
    }
    final, _ = load(ckpt)
    start, _ = load(init)
    moved = max((a - b).abs().max().item() for a, b in zip(final.parameters(), start.parameters()))
    assert moved > 1e-3
