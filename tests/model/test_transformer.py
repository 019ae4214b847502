"""olmo2's network against transformers' Olmo2ForCausalLM (an independent implementation)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from olmo2.model.config import ModelConfig
from olmo2.model.loss import lm_loss, shift_labels
from olmo2.model.transformer import Olmo2
from tests.model.helpers import CONFIGS, save_random


@pytest.mark.parametrize("key", list(CONFIGS))
def test_logits_and_loss_match_transformers(tmp_path, key):
    model, path = save_random(tmp_path, key)
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    ids = torch.randint(
        0, model.config.vocab_size, (2, 37), generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        ours = model(ids)
        out = hf(input_ids=ids, labels=ids)
    assert (ours - out.logits).abs().max().item() <= 1e-5
    # HF's loss is plain CE (no z-loss), averaged over the shifted labels
    loss = lm_loss(ours, shift_labels(ids), z_loss_multiplier=0.0)
    assert abs(loss.loss.item() - out.loss.item()) <= 1e-5


def test_z_loss_closed_form():
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, 4.0]]])
    labels = torch.tensor([[2, -100]])
    out = lm_loss(logits, labels, z_loss_multiplier=1e-5)
    lse = torch.log(torch.tensor(4.0))  # logsumexp of four zeros
    assert torch.allclose(out.ce, lse)  # uniform -> CE = log 4
    assert torch.allclose(out.z_loss, 1e-5 * lse**2)
    assert out.n_tokens.item() == 1
    summed = lm_loss(torch.cat([logits, logits]), torch.cat([labels, labels]), reduction="sum")
    assert torch.allclose(summed.loss, 2 * out.loss)


def test_structure_and_init():
    cfg = ModelConfig.debug()
    model = Olmo2.build(cfg)
    assert sum(p.numel() for p in model.parameters()) == cfg.num_params()
    w = model.blocks[0].feed_forward.w_down.weight
    assert w.abs().max() <= 0.06 + 1e-7 and abs(w.std().item() - 0.02) < 0.004
    assert torch.all(model.blocks[1].attention.q_norm.weight == 1)
    # no biases anywhere, untied head
    assert not any(n.endswith("bias") for n, _ in model.named_parameters())
    assert model.lm_head.weight.data_ptr() != model.embeddings.weight.data_ptr()


def test_named_sizes_match_published_shapes():
    one = ModelConfig.olmo2_1b()
    assert one.vocab_size == 100_352 and one.head_dim == 128
    assert abs(one.num_params() - 1.485e9) / 1.485e9 < 0.01  # anchors §1.4 [derived]
    seven = ModelConfig.olmo2_7b()
    assert abs(seven.num_params() - 7.30e9) / 7.30e9 < 0.01
    big = ModelConfig.olmo2_32b()
    assert big.n_kv_heads == 8 and big.ffn_hidden == 27648 and big.n_layers == 64
    with torch.device("meta"):
        Olmo2(big)  # builds without memory
    assert one.flops_per_token(4096) > 6 * 1.2e9


def test_doc_mask_equals_separate_documents():
    torch.manual_seed(0)
    model = Olmo2.build(ModelConfig.debug()).eval()
    a, b = torch.randint(0, 512, (1, 7)), torch.randint(0, 512, (1, 5))
    packed = torch.cat([a, b], dim=1)
    doc_ids = torch.tensor([[0] * 7 + [1] * 5])
    with torch.no_grad():
        together = model(packed, doc_ids=doc_ids)
        alone = torch.cat([model(a), model(b)], dim=1)
    assert (together - alone).abs().max() < 1e-5
    # and without the mask the second document does see the first
    with torch.no_grad():
        assert (model(packed)[:, 7:] - alone[:, 7:]).abs().max() > 1e-3


def test_sdpa_matches_eager_attention():
    torch.manual_seed(0)
    model = Olmo2.build(ModelConfig.debug(n_kv_heads=2)).eval()
    attn = model.blocks[0].attention
    x = torch.randn(2, 9, 64)
    from olmo2.model.transformer import rope_cos_sin

    cos, sin = rope_cos_sin(torch.arange(9)[None].expand(2, 9), model.config)
    with torch.no_grad():
        y = attn(x, cos, sin)
        # eager reference
        c = model.config
        q = attn.q_norm(attn.w_q(x)).view(2, 9, 4, 16).transpose(1, 2)
        k = attn.k_norm(attn.w_k(x)).view(2, 9, 2, 16).transpose(1, 2)
        v = attn.w_v(x).view(2, 9, 2, 16).transpose(1, 2)
        from olmo2.model.transformer import apply_rope

        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        k, v = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
        s = q @ k.transpose(-1, -2) / 16**0.5
        s = s.masked_fill(~torch.ones(9, 9, dtype=torch.bool).tril(), float("-inf"))
        ref = attn.w_out((F.softmax(s, -1) @ v).transpose(1, 2).reshape(2, 9, c.d_model))
    assert (y - ref).abs().max() < 1e-5
