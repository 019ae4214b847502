"""The backend interface without vLLM (default suite): olmo2's engine behind it (grouped
samples, sampled-token and prompt log-probs from the model's forward, weight updates), and
the errors a caller sees when vLLM is missing. The tests that run vLLM are marked `vllm`."""

from __future__ import annotations

import copy
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from olmo2.infer.backends import BackendUnavailable, GenerationParams, load_backend
from olmo2.infer.generate import SamplingConfig, complete
from olmo2.model.hf import to_hf_key
from olmo2.model.loss import token_logps

PROMPTS = [[7, 21, 99, 140, 3, 250], [42], list(range(100, 130))]


def _ref_logps(model, row, start):
    with torch.no_grad():
        logits = model(torch.tensor([row]))[0, start - 1 : -1]
    return token_logps(logits, torch.tensor(row[start:]))


def test_generate_is_completes(tiny):
    backend = load_backend("olmo2", tiny.model, tiny.tok)
    params = GenerationParams(max_new_tokens=10, stop=("e",))
    got = backend.generate(PROMPTS, params)
    ref = complete(
        tiny.model, PROMPTS, SamplingConfig(10), tokenizer=tiny.tok, stop=("e",),
        stop_token_ids=[tiny.tok.eos_token_id],
    )  # fmt: skip
    assert [(c.tokens, c.text, c.finish_reason) for c in got] == [
        (d.tokens, d.text, d.finish_reason) for d in ref
    ]
    assert got[0].logprobs is None


def test_groups_and_sampled_logprobs(tiny):
    backend = load_backend("olmo2", tiny.model)  # no tokenizer: no text
    params = GenerationParams(max_new_tokens=6, temperature=1.0, n=3, seed=5, logprobs=True)
    out = backend.generate(PROMPTS[:2], params)
    assert len(out) == 6 and out[0].text is None
    assert len({tuple(c.tokens) for c in out[:3]}) > 1
    for i, c in enumerate(out):
        p = PROMPTS[i // 3]
        torch.testing.assert_close(
            torch.tensor(c.logprobs),
            _ref_logps(tiny.model, p + c.tokens, len(p)),
            atol=1e-6,
            rtol=0,
        )


def test_score_prompts(tiny):
    scores = load_backend("olmo2", tiny.model).score_prompts(PROMPTS)
    assert scores[1].logprobs == [] and scores[1].greedy == []
    for p, s in zip(PROMPTS, scores):
        if len(p) > 1:
            torch.testing.assert_close(torch.tensor(s.logprobs), _ref_logps(tiny.model, p, 1))


def test_update_weights(tiny):
    learner = copy.deepcopy(tiny.model)
    with torch.no_grad():
        for p in learner.parameters():
            p.mul_(1.05)
    backend = load_backend("olmo2", copy.deepcopy(tiny.model))
    backend.update_weights({to_hf_key(k): v for k, v in learner.state_dict().items()})
    for p, s in zip(PROMPTS, backend.score_prompts(PROMPTS)):
        if len(p) > 1:
            torch.testing.assert_close(torch.tensor(s.logprobs), _ref_logps(learner, p, 1))


def test_from_a_checkpoint_directory(tiny):
    backend = load_backend("olmo2", tiny.path)
    params = GenerationParams(max_new_tokens=8)
    ref = load_backend("olmo2", tiny.model, tiny.tok).generate(PROMPTS, params)
    assert [c.text for c in backend.generate(PROMPTS, params)] == [c.text for c in ref]


def test_bad_requests(tiny):
    with pytest.raises(ValueError, match="unknown generation backend 'sglang'"):
        load_backend("sglang", tiny.path)
    with pytest.raises(ValueError, match="n must be >= 1"):
        GenerationParams(n=0)
    backend = load_backend("olmo2", tiny.model)
    with pytest.raises(ValueError, match="fewer than 1 token"):
        backend.generate([[1, 2], []], GenerationParams())
    with pytest.raises(ValueError, match="context of 256 tokens"):
        backend.generate([[1] * 250], GenerationParams(max_new_tokens=10))


def _shm_entries() -> set[str]:
    d = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    return {p.name for p in d.glob("olmo2-vllm-*")}


@pytest.mark.parametrize("source", ["path", "model"])
def test_vllm_missing_names_the_extra(tiny, monkeypatch, source):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError
    before = _shm_entries()
    with pytest.raises(BackendUnavailable, match=r"pip install 'olmo2\[vllm\]'"):
        load_backend("vllm", tiny.path if source == "path" else tiny.model, tiny.tok)
    assert _shm_entries() == before  # nothing half-written
