"""The fast single-token decode step (`olmo2.infer.decode`) against the model's forward."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from olmo2.infer import skinny
from olmo2.infer.cache import KVCache, SlotCache
from olmo2.infer.decode import decode_step, decode_weights
from tests.model.helpers import CONFIGS, random_model

PROMPTS = [[5, 17, 99, 3, 250, 7, 8], [42], [11, 12, 13, 14]]
STEPS = 4


def _decode_vs_forward(model, key: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(decode-step logits, full-forward logits) [V] in fp32 for every row and step: the
    prompts left-padded in one batch, prefilled through the forward, then STEPS new tokens
    decoded; the forward sees each row alone, unpadded."""
    P = max(map(len, PROMPTS))
    ids = torch.tensor([[0] * (P - len(p)) + p for p in PROMPTS])
    left_pad = torch.tensor([P - len(p) for p in PROMPTS])
    new = torch.randint(2, 500, (len(PROMPTS), STEPS), generator=torch.Generator().manual_seed(0))
    dtype = model.embeddings.weight.dtype
    cache = KVCache(model.config, len(PROMPTS), P + STEPS, left_pad, dtype, "cpu")
    weights = decode_weights(model)
    uses_kernel = key == "wide" and skinny.kernel() is not None
    assert isinstance(weights.blocks[0].q, skinny.SkinnyLinear) == uses_kernel
    out = []
    with torch.no_grad():
        model(ids, cache=cache)
        for t in range(STEPS):
            got = decode_step(model, weights, new[:, t], cache).float()
            for b, p in enumerate(PROMPTS):
                seq = torch.tensor([p + new[b, : t + 1].tolist()])
                out.append((got[b], model(seq)[0, -1].float()))
    return out


@pytest.mark.parametrize("key", ["gqa", "wide"])
def test_fp32_decode_step_equals_forward(key):
    """fp32: the same math in another order (fused norms, RoPE as a bmm, 1/√E folded into
    q's norm): agreement to a few fp32 ulps of logits of magnitude ~1."""
    model = random_model(CONFIGS[key], seed=5)
    for got, want in _decode_vs_forward(model, key):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("key", ["gqa", "wide"])
def test_bf16_decode_step_is_as_close_to_fp32_as_the_forward(key):
    """bf16: decode step and forward are two roundings of one function. Where the CPU has
    native bf16 (AVX-512 BF16) both use the same kernels and agree bit for bit; elsewhere
    (AVX2) torch and oneDNN round other intermediates, and the two differ by a few bf16 ulps
    (2^-7 = 0.0078 at logits in [1, 2)) even though neither is wrong. So the bound is not a
    constant: both are compared with the fp32 forward over the same bf16-rounded weights,
    and the decode step may be at most twice as far from it as the bf16 forward is. A real
    fault (wrong position, mask or norm) is off by tenths."""
    model = random_model(CONFIGS[key], seed=5).to(torch.bfloat16)
    exact = random_model(CONFIGS[key], seed=5).to(torch.bfloat16).float()
    pairs = _decode_vs_forward(model, key)
    ref = [x for _, x in _decode_vs_forward(exact, key)]
    err_decode = max(float((g - r).abs().max()) for (g, _), r in zip(pairs, ref))
    err_forward = max(float((w - r).abs().max()) for (_, w), r in zip(pairs, ref))
    assert 0 < err_forward < 0.05  # bf16 really rounds, and only by bf16 ulps
    assert err_decode <= 2 * err_forward, (err_decode, err_forward)


def test_slot_cache_rows_decode_at_their_own_positions():
    """Slots at different positions share one decode step; each equals its own forward."""
    model = random_model(CONFIGS["gqa"], seed=2)
    cache = SlotCache(model.config, 3, 16, torch.float32, "cpu")
    weights = decode_weights(model)
    with torch.no_grad():
        for slot, p in enumerate(PROMPTS):
            pre = KVCache(
                model.config, 1, len(p), torch.zeros(1, dtype=torch.long), torch.float32, "cpu"
            )
            model(torch.tensor([p]), cache=pre)
            cache.load(slot, pre, len(p))
        cache.rows = torch.tensor([2, 0])  # slot 1 sits this step out
        got = decode_step(model, weights, torch.tensor([9, 9]), cache)
        for row, slot in enumerate([2, 0]):
            want = model(torch.tensor([PROMPTS[slot] + [9]]))[0, -1]
            torch.testing.assert_close(got[row], want, atol=1e-5, rtol=1e-5)
    assert cache.pos.tolist() == [len(PROMPTS[0]) + 1, len(PROMPTS[1]), len(PROMPTS[2]) + 1]


@pytest.mark.parametrize("scaling", ["yarn", "llama3"])
def test_decode_step_with_rope_scaling_past_the_original_context(scaling):
    """A model pretrained at 8 positions, extended 4x: prompts of up to 7 tokens and 4 steps
    cross position 8. The decode step takes cos/sin (YaRN's attention factor included) from
    the one `rope_cos_sin`, so it equals the forward as for plain RoPE. (Dynamic NTK is left
    out: its θ follows the batch's largest position, so a padded batch is not each row alone
    — in transformers too.)"""
    cfg = dataclasses.replace(CONFIGS["gqa"], max_seq_len=8).with_context(32, scaling)
    model = random_model(cfg, seed=5)
    for got, want in _decode_vs_forward(model, "gqa"):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
