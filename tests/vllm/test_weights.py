"""Weight sync into a running vLLM engine (RL rollouts): after `update_weights` the engine
computes with the learner's new weights, from a model or a state dict in either naming, and
it leaves only the latest weights behind in shared memory (nothing once closed)."""

from __future__ import annotations

import copy

import pytest
import torch

from olmo2.infer.backends import GenerationParams, load_backend
from olmo2.model.hf import to_hf_key
from olmo2.model.loss import token_logps
from tests.vllm.conftest import engine_options, require_vllm

pytestmark = pytest.mark.vllm

PROMPTS = [[7, 21, 99, 140, 3, 250], [42, 43], list(range(100, 130))]


@pytest.fixture(scope="module")
def engine(tiny):
    require_vllm()
    backend = load_backend("vllm", tiny.model, tiny.tok, **engine_options())
    workdir = backend._workdir
    yield backend
    backend.close()
    assert not workdir.exists()


def _stepped(model, seed):
    """The model after a pretend optimizer step: every weight moved by a few percent."""
    new = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in new.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05 * p.abs().mean())
    return new


def _logps(model):
    out = []
    with torch.no_grad():
        for p in PROMPTS:
            out.append(token_logps(model(torch.tensor([p]))[0, :-1], torch.tensor(p[1:])))
    return out


def _assert_engine_is(engine, model):
    got = engine.score_prompts(PROMPTS)
    for s, ref in zip(got, _logps(model), strict=True):
        torch.testing.assert_close(torch.tensor(s.logprobs), ref, atol=1e-5, rtol=0)
    params = GenerationParams(max_new_tokens=16)
    ours = load_backend("olmo2", model).generate(PROMPTS, params)
    assert [c.tokens for c in engine.generate(PROMPTS, params)] == [c.tokens for c in ours]


def test_engine_starts_on_the_learners_weights(engine, tiny):
    _assert_engine_is(engine, tiny.model)


def test_update_from_the_model(engine, tiny):
    learner = _stepped(tiny.model, seed=1)
    before = engine.score_prompts(PROMPTS)
    engine.update_weights(learner)
    moved = max(
        (torch.tensor(b.logprobs) - ref).abs().max().item()
        for b, ref in zip(before, _logps(learner))
    )
    assert moved > 1e-3  # the step changed what the engine must compute...
    _assert_engine_is(engine, learner)  # ...and the engine computes it
    assert engine.last_sync_s is not None and engine.last_sync_s < 30
    assert sorted(d.name for d in engine._workdir.iterdir()) == ["owner.pid", "v1"]  # v0 gone


@pytest.mark.parametrize("names", ["olmo2", "hf"])
def test_update_from_a_state_dict(engine, tiny, names):
    learner = _stepped(tiny.model, seed=2 if names == "olmo2" else 3)
    sd = learner.state_dict()
    if names == "hf":
        sd = {to_hf_key(k): v for k, v in sd.items()}
    engine.update_weights(sd)
    _assert_engine_is(engine, learner)
    assert len([d for d in engine._workdir.iterdir() if d.is_dir()]) == 1
