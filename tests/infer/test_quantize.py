"""int8 quantization: error against a hand-rolled per-channel int8 reference, perplexity cost on
held-out text for a briefly trained model, and generation still working."""

from __future__ import annotations

import math

import pytest
import torch

from olmo2.infer.generate import generate
from olmo2.infer.quantize import quantize_model
from olmo2.model.config import ModelConfig
from olmo2.model.loss import lm_loss, shift_labels
from olmo2.model.transformer import Olmo2
from tests.model.helpers import CONFIGS, random_model


def test_linear_matches_per_channel_int8_reference():
    model = random_model(CONFIGS["mha"], seed=0)
    w = model.blocks[0].feed_forward.w_gate.weight.detach().clone()
    quantize_model(model)
    x = torch.randn(3, w.shape[1])
    # reference: symmetric int8 per output row, scale = max|w| / 127 (weights only)
    scale = w.abs().amax(1, keepdim=True) / 127
    w_q = (w / scale).round().clamp(-127, 127) * scale
    ref, exact = x @ w_q.T, x @ w.T
    out = model.blocks[0].feed_forward.w_gate(x)
    assert isinstance(model.blocks[0].feed_forward.w_gate, torch.ao.nn.quantized.dynamic.Linear)
    assert isinstance(model.lm_head, torch.ao.nn.quantized.dynamic.Linear)
    # dynamic activation quantization (8-bit per tensor) adds a little more error than weights
    err, err_w = (out - exact).abs().max(), (ref - exact).abs().max()
    assert err < 0.02 * exact.abs().max() and err_w < err * 4 + 1e-6
    with pytest.raises(ValueError, match="unsupported quantization"):
        quantize_model(random_model(CONFIGS["mha"]), "int4")


def _train(text: bytes, steps: int, seed: int = 0) -> Olmo2:
    cfg = ModelConfig.debug(vocab_size=256, max_seq_len=64, eos_token_id=None, pad_token_id=None)
    torch.manual_seed(seed)
    model = Olmo2.build(cfg)
    data = torch.tensor(list(text), dtype=torch.long)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        start = torch.randint(0, len(data) - 65, (8,), generator=g)
        x = torch.stack([data[s : s + 64] for s in start])
        loss = lm_loss(model(x), shift_labels(x)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def _ppl(model, text: bytes) -> float:
    data = torch.tensor(list(text), dtype=torch.long)
    x = data[: len(data) // 64 * 64].view(-1, 64)
    return math.exp(float(lm_loss(model(x), shift_labels(x), z_loss_multiplier=0).ce))


@pytest.fixture
def one_thread():
    """Tiny ops run ~5x faster on one thread than on two busy shared cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_int8_perplexity_within_2_percent(data_dir, one_thread):
    text = (data_dir / "pretrain" / "tinyshakespeare.txt").read_bytes()
    train, held_out = text[:1_000_000], text[-16_384:]
    model = _train(train, steps=300)
    fp32 = _ppl(model, held_out)
    assert fp32 < 12, fp32  # it learned something (uniform over bytes would be 256)
    prompt = list(b"ROMEO:")
    want = generate(model, [prompt], max_new_tokens=8, eos_token_id=-1)
    int8 = _ppl(quantize_model(model), held_out)
    print(f"held-out byte perplexity fp32 {fp32:.4f} int8 {int8:.4f} ({int8 / fp32 - 1:+.3%})")
    assert abs(int8 / fp32 - 1) < 0.02
    got = generate(model, [prompt], max_new_tokens=8, eos_token_id=-1)
    assert len(got[0]) == 8 and got[0][:2] == want[0][:2]
