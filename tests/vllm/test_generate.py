"""The vLLM backend against olmo2's own engine on one olmo2-written checkpoint: fp32 greedy
generations token for token (prompts of different lengths, stop ids, stop strings), prompt
log-probs against `token_logps` of the model's forward, and the log-probs of sampled tokens
(what an importance-sampling correction divides by)."""

from __future__ import annotations

import pytest
import torch

from olmo2.infer.backends import GenerationParams, load_backend
from olmo2.model.loss import token_logps
from tests.vllm.conftest import engine_options, require_vllm

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def engines(tiny):
    require_vllm()
    ours = load_backend("olmo2", tiny.model, tiny.tok)
    with load_backend("vllm", tiny.path, **engine_options()) as vllm:
        yield ours, vllm


@pytest.fixture(scope="module")
def prompts(tiny):
    enc = tiny.tok.encode
    return [
        enc("the quick brown fox jumps"),
        [5],
        enc("over the lazy dog and the quick brown"),
        list(range(40, 75)),
    ]


def _same(a, b):
    assert [c.tokens for c in a] == [c.tokens for c in b]
    assert [c.finish_reason for c in a] == [c.finish_reason for c in b]
    assert [c.text for c in a] == [c.text for c in b]


def test_greedy_equals_olmo2(engines, prompts):
    ours, vllm = engines
    params = GenerationParams(max_new_tokens=32)
    a, b = ours.generate(prompts, params), vllm.generate(prompts, params)
    _same(a, b)
    assert len({tuple(c.tokens) for c in a}) == len(prompts)  # really different rows
    assert sum(len(c.tokens) for c in a) > 3 * 32


def test_stop_ids_and_strings(engines, prompts):
    ours, vllm = engines
    free = ours.generate(prompts, GenerationParams(max_new_tokens=32))
    # a stop id that row 1 emits at step 6, and a stop string inside row 2's text
    stop_id = free[1].tokens[5]
    text = free[2].text
    stop = next(text[i : i + 3] for i in range(4, len(text)) if text[i : i + 3].isascii())
    params = GenerationParams(max_new_tokens=32, stop=(stop,), stop_token_ids=(stop_id,))
    a, b = ours.generate(prompts, params), vllm.generate(prompts, params)
    _same(a, b)
    assert a[1].tokens[-1] == stop_id and a[1].finish_reason == "stop"
    assert a[2].finish_reason == "stop" and len(a[2].tokens) < 32 and stop not in a[2].text


def test_prompt_logprobs_equal_token_logps(engines, prompts, tiny):
    ours, vllm = engines
    theirs, mine = vllm.score_prompts(prompts), ours.score_prompts(prompts)
    for p, s, m in zip(prompts, theirs, mine, strict=True):
        with torch.no_grad():
            logits = tiny.model(torch.tensor([p]))[0, :-1]
        ref = token_logps(logits, torch.tensor(p[1:]))
        assert len(s.logprobs) == len(p) - 1
        if len(p) > 1:
            torch.testing.assert_close(torch.tensor(s.logprobs), ref, atol=1e-5, rtol=0)
            torch.testing.assert_close(torch.tensor(m.logprobs), ref, atol=1e-5, rtol=0)
        assert s.greedy == m.greedy == (logits.argmax(-1) == torch.tensor(p[1:])).tolist()


def test_sampled_token_logprobs_and_groups(engines, prompts, tiny):
    _, vllm = engines
    params = GenerationParams(max_new_tokens=12, temperature=1.0, n=3, seed=7, logprobs=True)
    out = vllm.generate(prompts[:2], params)
    assert len(out) == 6
    for i, c in enumerate(out):  # grouped by prompt: rows 0-2 are prompt 0's samples
        row = prompts[i // 3] + c.tokens
        with torch.no_grad():
            logits = tiny.model(torch.tensor([row]))[0, len(prompts[i // 3]) - 1 : -1]
        ref = token_logps(logits, torch.tensor(c.tokens))
        torch.testing.assert_close(torch.tensor(c.logprobs), ref, atol=1e-5, rtol=0)
    assert len({tuple(c.tokens) for c in out[:3]}) > 1  # the samples of one prompt differ
    again = vllm.generate(prompts[:2], params)
    assert [c.tokens for c in again] == [c.tokens for c in out]  # seeded


def test_olmo2_sampled_logprobs_are_the_models(engines, prompts, tiny):
    ours, _ = engines
    params = GenerationParams(max_new_tokens=8, temperature=1.0, n=2, seed=1, logprobs=True)
    out = ours.generate(prompts[:2], params)
    assert len(out) == 4
    for i, c in enumerate(out):
        row = prompts[i // 2] + c.tokens
        with torch.no_grad():
            logits = tiny.model(torch.tensor([row]))[0, len(prompts[i // 2]) - 1 : -1]
        torch.testing.assert_close(
            torch.tensor(c.logprobs), token_logps(logits, torch.tensor(c.tokens)), atol=1e-5, rtol=0
        )
