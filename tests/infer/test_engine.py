"""The batching engine: same tokens as one-at-a-time `generate`, fewer forward passes."""

from __future__ import annotations

import threading

import pytest
import torch

from olmo2.infer.engine import Engine, EngineConfig, QueueFullError, Request
from olmo2.infer.generate import SamplingConfig, generate
from olmo2.model.loss import token_logps
from tests.model.helpers import CONFIGS, random_model


@pytest.fixture(scope="module", params=["mha", "gqa", "wide"])
def model(request):
    return random_model(CONFIGS[request.param], seed=3)


@pytest.fixture(scope="module")
def gqa_model():
    return random_model(CONFIGS["gqa"], seed=3)


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

            def on_token(t, reason, _lp, i=i):
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
        with pytest.raises(ValueError, match="context of 64"):
            engine.submit([1] * 60, SamplingConfig(max_new_tokens=8), lambda t, r, _lp: None)
    finally:
        engine.stop()
    assert engine.active == 0


def test_cancel_frees_slot_and_queue_limit(model):
    engine = Engine(model, EngineConfig(max_batch=1, max_len=200, max_queue=2))
    reasons = []
    long = engine.submit(
        [5, 6], SamplingConfig(max_new_tokens=190), lambda t, r, _lp: r and reasons.append(r)
    )
    engine.submit(
        [5, 6], SamplingConfig(max_new_tokens=3), lambda t, r, _lp: r and reasons.append(r)
    )
    with pytest.raises(QueueFullError):
        engine.submit([5], SamplingConfig(max_new_tokens=3), lambda t, r, _lp: None)
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


def _collect(engine, prompt, n, **kw):
    """(tokens, logprobs, reason, request) of one request, blocking."""
    toks, lps, reason, done = [], [], [], threading.Event()

    def on_token(t, r, lp):
        if t is not None:
            toks.append(t)
            lps.append(lp)
        if r is not None:
            reason.append(r)
            done.set()

    req = engine.submit(prompt, SamplingConfig(max_new_tokens=max(n, 1)), on_token, **kw)
    assert done.wait(60)
    return toks, lps, reason[0], req


def test_logprobs_and_echo_are_the_forwards_token_logps(gqa_model):
    """Generated tokens' log-probs and the prompt's (echo) equal token_logps over one forward
    of prompt + completion; top-k lists are sorted and start with the greedy token."""
    model = gqa_model
    prompt = _prompts(1, model.config.vocab_size, seed=9)[0] + [3, 4]
    engine = Engine(model, EngineConfig(max_batch=2, max_len=64)).start()
    try:
        toks, lps, reason, req = _collect(engine, prompt, 5, logprobs=3, echo=True)
        _, _, reason0, req0 = _collect(engine, prompt, 0, logprobs=2, echo=True, max_new_tokens=0)
    finally:
        engine.stop()
    assert reason == "length" and reason0 == "length"
    ids = torch.tensor([prompt + toks])
    with torch.no_grad():
        want = token_logps(model(ids)[0, :-1], ids[0, 1:]).tolist()
    got = [p.logprob for p in req.prompt_logprobs[1:]] + [p.logprob for p in lps]
    assert req.prompt_logprobs[0] is None and len(got) == len(want)
    assert got == pytest.approx(want, abs=1e-4)
    assert [p.logprob for p in req0.prompt_logprobs[1:]] == pytest.approx(
        want[: len(prompt) - 1], abs=1e-4
    )
    for p in lps:  # greedy: the chosen token is the most likely one
        assert len(p.top) == 3 and p.top[0] == (p.token, pytest.approx(p.logprob, abs=1e-5))
        assert [v for _, v in p.top] == sorted((v for _, v in p.top), reverse=True)
    assert all(len(p.top) == 2 for p in req0.prompt_logprobs[1:])


def test_bad_ids_are_refused_and_a_failing_request_fails_alone(gqa_model):
    model = gqa_model
    engine = Engine(model, EngineConfig(max_batch=4, max_len=64))
    V = model.config.vocab_size
    for bad in ([10**9, 5], [-1, 5], [5, V]):
        with pytest.raises(ValueError, match=f"token id {bad[0] if bad[0] != 5 else V}"):
            engine.submit(bad, SamplingConfig(max_new_tokens=2), lambda t, r, lp: None)
    prompts = _prompts(4, V, seed=1)
    want = [generate(model, [p], max_new_tokens=6, eos_token_id=-1)[0] for p in prompts]
    out = {i: [] for i in range(5)}
    reasons, done = {}, threading.Semaphore(0)

    def cb(i, raise_at=None):
        def on_token(t, r, _lp):
            if t is not None:
                out[i].append(t)
                if len(out[i]) == raise_at:
                    raise RuntimeError("client callback broke")
            if r is not None:
                reasons[i] = r
                done.release()

        return on_token

    for i, p in enumerate(prompts):
        engine.submit(p, SamplingConfig(max_new_tokens=6), cb(i, raise_at=2 if i == 1 else None))
    # an out-of-vocabulary id that got past the door (`submit` checks it) fails its own prefill
    engine.waiting.put(
        Request([10**9, 5], SamplingConfig(max_new_tokens=6), cb(4), max_new_tokens=6)
    )
    engine.start()
    try:
        for _ in range(5):
            assert done.acquire(timeout=60)
    finally:
        engine.stop()
    assert reasons == {0: "length", 1: "cancelled", 2: "length", 3: "length", 4: "error"}
    assert [out[i] for i in (0, 2, 3)] == [want[i] for i in (0, 2, 3)]
