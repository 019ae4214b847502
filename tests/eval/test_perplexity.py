"""Bits per byte against a direct computation and its closed form on a uniform model."""

from __future__ import annotations

import math

import pytest
import torch

from olmo2.eval.perplexity import chunks_bpb, documents_bpb, rolling_windows, token_byte_lengths


def test_rolling_windows_cover_every_position_once():
    for n in (1, 5, 17, 100):
        for L in (2, 3, 8, 64):
            seen = []
            for start, stop, first in rolling_windows(n, L):
                assert stop - start <= L and first > start
                seen += range(first, stop)
            assert seen == list(range(1, n + 1))


def test_token_byte_lengths(dolma2):
    tb = token_byte_lengths(dolma2)
    assert tb[dolma2.eos_token_id] == 0
    for text in ("hello world", " é", "日本"):
        ids = dolma2.encode(text)
        assert int(tb[ids].sum()) == len(text.encode("utf-8"))


class Uniform(torch.nn.Module):
    """Logits all zero: every token has probability 1/V."""

    def __init__(self, V: int):
        super().__init__()
        self.V = V
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, ids, logits_to_keep: int = 0):
        T = logits_to_keep or ids.shape[1]
        return torch.zeros(ids.shape[0], T, self.V) + 0 * self.w


def test_chunks_bpb_closed_form_on_uniform_model(dolma2):
    V = 100352
    tb = token_byte_lengths(dolma2)
    ids = torch.tensor([dolma2.encode("The quick brown fox jumps over the lazy dog again.")[:9]])
    r = chunks_bpb(Uniform(V), ids, tb)
    nbytes = int(tb[ids[0, 1:]].sum())
    assert r.bytes == nbytes and r.tokens == 8
    assert r.bits_per_byte == pytest.approx(8 * math.log(V) / (nbytes * math.log(2)))


def test_documents_bpb_equals_direct_sum(tiny_model, dolma2):
    texts = ["A short document about cats.", "Another, longer one: " + "words " * 40]
    r = documents_bpb(tiny_model, dolma2, texts, max_length=16, progress=False)
    nats = 0.0
    with torch.no_grad():
        for t in texts:  # one full forward per document (fits the model's 1024 tokens)
            ids = torch.tensor([[dolma2.eos_token_id] + dolma2.encode(t)])
            lp = tiny_model(ids)[0, :-1].log_softmax(-1).gather(1, ids[0, 1:, None])
            nats -= lp.sum().item()
    nbytes = sum(len(t.encode()) for t in texts)
    # windows of 16 tokens see less context than the full forward, so only close, not equal
    full = documents_bpb(tiny_model, dolma2, texts, max_length=1024, progress=False)
    assert full.bits_per_byte == pytest.approx(nats / (nbytes * math.log(2)), rel=1e-5)
    assert r.bytes == nbytes and r.bits_per_byte == pytest.approx(full.bits_per_byte, rel=0.05)


def test_token_file_chunks_and_bpb(tiny_model, dolma2, tmp_path):
    import numpy as np

    from olmo2.eval.perplexity import token_file_chunks

    ids = dolma2.encode("Some text for a token file. " * 20) + [dolma2.eos_token_id]
    path = tmp_path / "part-0.npy"
    np.asarray(ids, dtype=np.uint32).tofile(path)
    chunks = token_file_chunks(path, 16)
    assert chunks.shape == (len(ids) // 16, 16) and chunks[0].tolist() == ids[:16]
    assert token_file_chunks(path, 16, max_chunks=2).shape == (2, 16)
    r = chunks_bpb(tiny_model, chunks, token_byte_lengths(dolma2), batch_size=3)
    with torch.no_grad():
        lp = tiny_model(chunks)[:, :-1].log_softmax(-1).gather(-1, chunks[:, 1:, None]).squeeze(-1)
    tb = token_byte_lengths(dolma2)[chunks[:, 1:]]
    expect = -(lp[tb > 0].double().sum().item()) / (tb.sum().item() * math.log(2))
    assert r.bits_per_byte == pytest.approx(expect, rel=1e-5)
