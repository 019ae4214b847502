"""PPO with `rollout.backend=vllm` (`make test-vllm`): `olmo2 ppo` samples through the same
rollout engine GRPO uses, the learner's log-probs of vLLM's tokens agree with vLLM's own
(the truncated IS weight on the policy-gradient term is 1 within rounding), and the run
writes a plain HF policy checkpoint with the value model beside it, leaving nothing in
shared memory. One engine start."""

from __future__ import annotations

import json

import pytest

from olmo2.cli import main as olmo2_main
from olmo2.model.hf import load
from olmo2.model.reward import Olmo2Reward
from olmo2.model.transformer import Olmo2
from olmo2.post import rewards
from tests.post.helpers import tiny_checkpoint, write_jsonl
from tests.vllm.conftest import require_vllm
from tests.vllm.test_backend import _shm_entries

pytestmark = pytest.mark.vllm


@pytest.mark.timeout(900)
def test_ppo_through_vllm(tmp_path):
    require_vllm()
    init = tiny_checkpoint(tmp_path, d_model=64, n_heads=2, ffn_hidden=128)  # head_dim 32
    data = write_jsonl(tmp_path / "p.jsonl", rewards.addition_rows(12, seed=3))
    run, before = tmp_path / "run", _shm_entries()
    assert olmo2_main([
        "ppo", "recipes/demo-ppo.yaml", f"model.load_path={init}", f"data.paths=[{data}]",
        f"trainer.run_dir={run}", "trainer.max_steps=8", "data.epochs=null", "data.seq_len=48",
        "data.global_batch_size=8", "data.micro_batch_size=8", "ppo.max_new_tokens=16",
        "ppo.ppo_epochs=2", "ppo.mini_batches=2", "optim.lr=1e-2", "logging.progress_bar=false",
        "logging.report=false", "logging.peak_flops=1e11", "rollout.backend=vllm",
        "rollout.is_cap=2.0",
    ]) == 0  # fmt: skip
    assert _shm_entries() == before
    m = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(m) == 8
    for x in m:  # vLLM's sampled-token log-probs are the learner's, to rounding (test_grpo.py)
        assert x["is_weight"] == pytest.approx(1.0, abs=1e-4) and x["is_capped"] == 0.0
        assert x["rollout_logp_diff"] < 1e-4
    assert sum(x["grad_norm"] > 0 for x in m) >= 4  # the policy moved between the syncs
    policy, _ = load(run / "ppo-step8")
    value, _ = load(run / "ppo-step8" / "value")
    assert type(policy) is Olmo2 and type(value) is Olmo2Reward
