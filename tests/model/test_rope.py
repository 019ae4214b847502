"""RoPE scaling (`olmo2.model.rope`) against transformers' `Olmo2ForCausalLM` with the same
`rope_parameters`: logits at positions past the original context, greedy generation across
it, and the config round trip through config.json in both directions.

Tolerance 1e-5 on fp32 logits: both sides compute the same inverse frequencies with the same
fp32 operations (the formulas follow transformers' `_compute_*_parameters` term by term), so
what remains is the summation order of the matmuls, ~1e-7 on logits of magnitude ~1. A wrong
ramp dimension, a missing attention factor or a wrong θ moves logits by 1e-3 or more.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from transformers import AutoModelForCausalLM

import olmo2
from olmo2.infer.generate import generate
from olmo2.model.config import ModelConfig
from olmo2.model.hf import config_from_hf, config_to_hf, save_pretrained
from olmo2.model.rope import RopeScaling, rope_frequencies, yarn_correction_range
from tests.model.helpers import hf_twin, random_model

L0 = 64  # the "pretraining" context of the test models
# head_dim 64: YaRN's ramp and llama3's blend cover several dimensions (head_dim 16 would not)
BASE = ModelConfig.debug(d_model=128, n_heads=2, n_kv_heads=1, max_seq_len=L0, eos_token_id=None)

CASES = {
    "abf-theta": dict(scaling="none", rope_theta=8e6),
    "linear-2": dict(scaling="linear", factor=2),
    "linear-8": dict(scaling="linear", factor=8),
    "dynamic-2": dict(scaling="dynamic", factor=2),
    "dynamic-8": dict(scaling="dynamic", factor=8),
    "yarn-2": dict(scaling="yarn", factor=2),
    "yarn-8": dict(scaling="yarn", factor=8),
    "yarn-8-beta": dict(scaling="yarn", factor=8, beta_fast=8.0, beta_slow=0.5, rope_theta=1e4),
    "yarn-4-untruncated": dict(scaling="yarn", factor=4, truncate=False),
    "yarn-4-mscale": dict(scaling="yarn", factor=4, mscale=0.707, mscale_all_dim=1.0),
    "yarn-4-attention": dict(scaling="yarn", factor=4, attention_factor=1.5),
    "llama3-2": dict(scaling="llama3", factor=2),
    "llama3-8": dict(scaling="llama3", factor=8, low_freq_factor=2.0, high_freq_factor=8.0),
}


def scaled(case: str) -> ModelConfig:
    opts = dict(CASES[case])
    factor = opts.pop("factor", 4)
    return BASE.with_context(L0 * factor, **opts)


def max_diff(a, b) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_transformers_past_the_original_context(case):
    cfg = scaled(case)
    model = random_model(cfg, seed=1)
    hf = hf_twin(model)
    T = cfg.max_seq_len + 8  # every position of the extended context, and a few beyond
    ids = torch.randint(0, cfg.vocab_size, (1, T), generator=torch.Generator().manual_seed(0))
    # a second call at far positions (dynamic: θ follows the largest one); fresh HF module
    # state, since transformers' dynamic RoPE remembers the longest sequence it has seen
    far = torch.arange(40)[None] + 8 * cfg.max_seq_len
    with torch.no_grad():
        assert max_diff(model(ids), hf(input_ids=ids).logits) <= 1e-5
        hf = hf_twin(model)
        got = model(ids[:, :40], positions=far)
        assert max_diff(got, hf(input_ids=ids[:, :40], position_ids=far).logits) <= 1e-5
    if case != "abf-theta":  # the scaling really changes the model past L0
        plain = dataclasses.replace(cfg, rope_scaling=None)
        assert not torch.equal(
            rope_frequencies(cfg, "cpu", T)[0], rope_frequencies(plain, "cpu")[0]
        )


@pytest.mark.parametrize("case", ["linear-2", "dynamic-2", "yarn-2", "llama3-2", "yarn-8-beta"])
def test_greedy_generation_past_the_original_length_equals_transformers(case):
    """Prompts of 60 and 45 tokens, 48 new ones: decoding crosses L0 = 64 (the cached keys
    of dynamic NTK keep the frequencies they were computed with, on both sides)."""
    cfg = scaled(case)
    model = random_model(cfg, seed=3)
    hf = hf_twin(model)
    gen = torch.Generator().manual_seed(4)
    prompts = [torch.randint(2, 500, (n,), generator=gen).tolist() for n in (60, 45)]
    ours = generate(model, prompts, max_new_tokens=48)
    P, pad = 60, cfg.pad_token_id
    ids = torch.tensor([[pad] * (P - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (P - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        out = hf.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=48, do_sample=False, pad_token_id=pad
        )
    assert ours == out[:, P:].tolist()
    assert len(set(ours[0])) > 5  # not a degenerate repetition


def test_yarn_correction_range_matches_olmo_core_worked_values():
    """OLMo-core nn/rope.py (head_dim 128, θ 5e5): L0 8192 x8 -> dims 18..35, attention
    factor 1.2079; L0 4096 x2 -> 14..32, 1.0693 (also what transformers computes)."""
    for L, factor, low, high, att in ((8192, 8, 18, 35, 1.2079), (4096, 2, 14, 32, 1.0693)):
        cfg = ModelConfig.named("1b", max_seq_len=L).with_context(L * factor)
        assert yarn_correction_range(cfg.rope_scaling, 128, 5e5) == (low, high)
        assert abs(rope_frequencies(cfg, "cpu")[1] - att) < 1e-4


# ---- config round trip -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "case", ["linear-8", "dynamic-2", "yarn-8-beta", "yarn-4-mscale", "llama3-8"]
)
def test_checkpoint_round_trip_through_transformers(tmp_path, case):
    """olmo2 writes -> transformers loads (same logits past L0) -> transformers writes (its
    5.x `rope_parameters` form) -> olmo2 reads the same config and logits back."""
    cfg = scaled(case)
    model = random_model(cfg, seed=2)
    save_pretrained(model, tmp_path / "ours")
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "ours", dtype=torch.float32).eval()
    ids = torch.randint(0, 512, (1, cfg.max_seq_len), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert max_diff(model(ids), hf(input_ids=ids).logits) <= 1e-5
    hf.save_pretrained(tmp_path / "theirs")
    written = json.loads((tmp_path / "theirs" / "config.json").read_text())
    assert (
        "rope_scaling" not in written
        and written["rope_parameters"]["rope_type"] == cfg.rope_scaling.type
    )
    back, _ = olmo2.load(tmp_path / "theirs")
    assert back.config == cfg
    with torch.no_grad():
        assert max_diff(back(ids), model(ids)) == 0


def test_transformers4_and_5_config_forms_read_alike():
    """The 4.x form (top-level rope_theta, `rope_scaling`, legacy `type` key) and the 5.x
    form (`rope_parameters` with rope_theta inside) are the same model."""
    cfg = scaled("yarn-8-beta")
    d = config_to_hf(cfg)
    v4 = {k: v for k, v in d.items() if k != "rope_parameters"}
    v4["rope_scaling"] = {
        "type": "yarn",
        **{k: v for k, v in v4["rope_scaling"].items() if k != "rope_type"},
    }
    v5 = {k: v for k, v in d.items() if k not in ("rope_scaling", "rope_theta")}
    assert config_from_hf(v4) == config_from_hf(v5) == config_from_hf(d) == cfg
    # transformers 5 defaults: no original length -> max_position_embeddings; beta 0 -> 32
    v5["rope_parameters"] = {"rope_type": "yarn", "factor": 2.0, "beta_fast": 0, "rope_theta": 1e4}
    s = config_from_hf(v5).rope_scaling
    assert (s.original_max_seq_len, s.beta_fast, s.beta_slow) == (
        v5["max_position_embeddings"],
        32,
        1,
    )


def test_model_config_dict_round_trip():
    for case in CASES:
        cfg = scaled(case)
        assert ModelConfig.from_dict(cfg.to_dict()) == cfg
        assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_unknown_or_bad_scaling_is_a_clear_error(tmp_path):
    model = random_model(BASE)
    path = save_pretrained(model, tmp_path / "ckpt")
    d = json.loads((path / "config.json").read_text())
    d["rope_parameters"] = {"rope_type": "longrope", "rope_theta": 5e5}
    (path / "config.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match=r"'longrope'.*default, linear, dynamic, yarn, llama3"):
        olmo2.load(path)
    with pytest.raises(ValueError, match="supported: default"):
        RopeScaling("ntk", 2.0)
    with pytest.raises(ValueError, match="needs original_max_seq_len"):
        RopeScaling("yarn", 2.0)
    with pytest.raises(ValueError, match="factor x original_max_seq_len = 128"):
        dataclasses.replace(BASE, rope_scaling=RopeScaling("dynamic", 2.0, L0))
    with pytest.raises(ValueError, match="unknown rope_scaling keys"):
        ModelConfig.from_dict({**BASE.to_dict(), "rope_scaling": {"type": "yarn", "fact": 2}})
