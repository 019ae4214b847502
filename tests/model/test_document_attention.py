"""Intra-document attention without a T×T mask (`olmo2.model.documents`) against the dense
`causal & same document` mask, and its memory."""

from __future__ import annotations

import pytest
import torch

from olmo2.model.config import ModelConfig
from olmo2.model.documents import documents
from olmo2.model.loss import lm_loss, shift_labels
from olmo2.model.transformer import Olmo2
from tests.model.helpers import CONFIGS, peak_heap_bytes, random_documents, random_model


def dense_document_mask(doc_ids_BT: torch.Tensor) -> torch.Tensor:
    """The reference: bool [B, 1, T, T], causal and within the token's own document."""
    T = doc_ids_BT.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    return (causal & (doc_ids_BT[:, :, None] == doc_ids_BT[:, None, :]))[:, None]


def _loss_and_grads(model, ids, **mask):
    model.zero_grad()
    logits = model(ids, **mask)
    lm_loss(logits, shift_labels(ids)).loss.backward()
    return logits.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("key", ["gqa", "odd"])
def test_equals_the_dense_mask_reference(key):
    """Logits and every gradient to 1e-6: the same attention, only the kernel differs (SDPA's
    flash path per group vs its masked path over the row): fp32 sums in another order,
    ~1e-7 on logits and gradients of magnitude <= 1. A token seeing a neighbouring document
    or a padded slot would be off by 1e-2 or more. Documents of 1 to 90 tokens (several
    length groups, single-token ones), a row that is one document, and a padding tail
    (id -1, as SFT packs); with activation checkpointing the gradients are the same bits."""
    model = random_model(CONFIGS[key], seed=0).train()
    B, T = 3, 160
    doc = random_documents(B, T, max_len=90, seed=1)
    doc[1] = 0
    doc[2, -13:] = -1
    ids = torch.randint(0, 500, (B, T), generator=torch.Generator().manual_seed(2))
    got, got_grads = _loss_and_grads(model, ids, doc_ids=doc)
    want, want_grads = _loss_and_grads(model, ids, attn_mask=dense_document_mask(doc))
    assert (got - want).abs().max() <= 1e-6
    for g, w in zip(got_grads, want_grads, strict=True):
        assert (g - w).abs().max() <= 1e-6
    # and the masking matters: plain causal attention differs
    assert (model(ids)[0] - got[0]).abs().max() > 1e-3
    model.activation_checkpointing = True  # the layout passes through checkpoint() too
    _, ckpt_grads = _loss_and_grads(model, ids, doc_ids=doc)
    assert all(torch.equal(g, c) for g, c in zip(got_grads, ckpt_grads, strict=True))


def test_groups_cover_every_token_once_with_little_padding():
    doc = random_documents(4, 2048, max_len=700, seed=3)
    d = documents(doc)
    real = int((d.token_of < doc.numel()).sum())
    slots = len(d.take)
    assert real == doc.numel() and len(d.slot_of.unique()) == doc.numel()
    assert torch.equal(d.take[d.slot_of], torch.arange(doc.numel()))  # each token in its slot
    assert slots <= 1.25 * real + 16 * len(d.groups) * 16  # <= 25%, or the 16-token minimum
    assert len(d.groups) <= 4 * 12  # a handful of SDPA calls per layer, not one per document


def dense_scores_bytes(B: int, H: int, T: int) -> int:
    """What a dense mask costs at least: SDPA's masked path keeps fp32 scores [B, H, T, T]."""
    return B * H * T * T * 4


TINY = ModelConfig.debug(d_model=32, n_heads=2, ffn_hidden=64, vocab_size=128, max_seq_len=8192)


def _fwd_bwd_peak(B: int, T: int) -> int:
    torch.manual_seed(0)
    model = Olmo2.build(TINY)
    ids = torch.randint(0, 128, (B, T))
    doc = random_documents(1, B * T, max_len=1000, seed=4).view(B, T)

    def step():
        lm_loss(model(ids, doc_ids=doc), shift_labels(ids)).loss.backward()

    return peak_heap_bytes(step)


def test_t8192_forward_backward_memory_is_linear_in_t(bound_fraction: float = 0.25):
    """A tiny model, T = 8192 in documents of up to 1000 tokens: forward + backward must
    peak below `bound_fraction` of the dense mask's score tensor of ONE layer (512 MiB
    here), and about as high as the same tokens as 4 rows of 2048 (quadratic attention
    memory would be 4x)."""
    long = _fwd_bwd_peak(1, 8192)
    if long is None:
        pytest.skip("no glibc mallinfo2 to read heap use from")
    assert long < bound_fraction * dense_scores_bytes(1, TINY.n_heads, 8192), long / 2**20
    short = _fwd_bwd_peak(4, 2048)
    assert long < 1.25 * short, (long / 2**20, short / 2**20)
