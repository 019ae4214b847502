"""The batching engine: same tokens as one-at-a-time `generate`, fewer forward passes."""

from __future__ import annotations

import threading

import pytest
import torch

from olmo2.infer.engine import Engine, EngineConfig, QueueFullError
from olmo2.infer.generate import SamplingConfig, generate
from tests.model.helpers import CONFIGS, random_model


@pytest.fixture(scope="module", params=["mha", "gqa", "wide"])
def model(request):
    return random_model(CONFIGS[request.param], seed=3)


def _prompts(n, vocab, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randint(
            2, vocab, (int(torch.randint(1, 12, (1,), generator=g)),), generator=g
        ).tolist()
        for _ in range(n)
    ]


def test_engine_matches_generate_and_batches(model):
    prompts = _prompts(10, model.config.vocab_size)
    want = [generate(model, [p], max_new_tokens=9, eos_token_id=-1)[0] for p in prompts]
    engine = Engine(model, EngineConfig(max_batch=4, max_len=64)).start()
    try:
        results: dict[int, list[int]] = {i: [] for i in range(len(prompts))}
        done = threading.Semaphore(0)
        for i, p in enumerate(prompts):

            def on_token(t, reason, i=i):
                if t is not None:
                    results[i].append(t)
                if reason is not None:
                    assert reason == "length"
                    done.release()

            engine.submit(p, SamplingConfig(max_new_tokens=9), on_token)
        for _ in prompts:
            assert done.acquire(timeout=60)
    finally:
        engine.stop()
    assert [results[i] for i in range(len(prompts))] == want
    # 10 prefills + shared decode steps, far fewer than one pass per generated token
    assert engine.forward_passes < len(prompts) * 9 * 0.6
    assert engine.tokens_generated == 90


def test_stop_token_seed_and_cancel(model):
    engine = Engine(model, EngineConfig(max_batch=2, max_len=64, max_queue=1)).start()
    try:
        prompt = _prompts(1, model.config.vocab_size, seed=5)[0]
        toks, reason = engine.generate(prompt, SamplingConfig(max_new_tokens=8))
        assert reason == "length" and len(toks) == 8
        # stop on the 3rd greedy token: it is not returned
        toks2, reason2 = engine.generate(prompt, SamplingConfig(max_new_tokens=8), [toks[2]])
        assert reason2 == "stop" and toks2 == toks[: toks.index(toks[2])]
        sampled = SamplingConfig(max_new_tokens=8, temperature=1.0, seed=7)
        assert engine.generate(prompt, sampled)[0] == engine.generate(prompt, sampled)[0]
        with pytest.raises(ValueError, match="context length"):
            engine.submit([1] * 60, SamplingConfig(max_new_tokens=8), lambda t, r: None)
    finally:
        engine.stop()
    assert engine.active == 0


def test_cancel_frees_slot_and_queue_limit(model):
    engine = Engine(model, EngineConfig(max_batch=1, max_len=200, max_queue=2))
    reasons = []
    long = engine.submit(
        [5, 6], SamplingConfig(max_new_tokens=190), lambda t, r: r and reasons.append(r)
    )
    engine.submit([5, 6], SamplingConfig(max_new_tokens=3), lambda t, r: r and reasons.append(r))
    with pytest.raises(QueueFullError):
        engine.submit([5], SamplingConfig(max_new_tokens=3), lambda t, r: None)
    engine.cancel(long)
    engine.start()
    try:
        for _ in range(400):
            if len(reasons) == 2:
                break
            threading.Event().wait(0.05)
    finally:
        engine.stop()
    assert reasons == ["cancelled", "length"]


def test_engine_serves_an_int8_model():
    from olmo2.infer.quantize import quantize_model

    model = quantize_model(random_model(CONFIGS["gqa"], seed=4))
    prompts = _prompts(3, model.config.vocab_size, seed=2)
    want = [generate(model, [p], max_new_tokens=5, eos_token_id=-1)[0] for p in prompts]
    engine = Engine(model, EngineConfig(max_batch=3, max_len=32)).start()
    try:
        got = [engine.generate(p, SamplingConfig(max_new_tokens=5))[0] for p in prompts]
    finally:
        engine.stop()
    assert got == want
