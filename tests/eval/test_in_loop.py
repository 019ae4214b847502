"""In-loop evaluation: CE and bits per byte from one forward per batch of held-out chunks,
and the model's training mode back afterwards, also when the evaluation raises."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from olmo2.eval.in_loop import TokenFileEval
from olmo2.eval.perplexity import chunks_bpb
from olmo2.model.config import ModelConfig
from olmo2.model.transformer import Olmo2


@pytest.fixture
def debug_model() -> Olmo2:
    torch.manual_seed(0)
    return Olmo2.build(ModelConfig.debug())


@pytest.fixture
def val_file(tmp_path, dolma2):
    ids = np.array(
        dolma2.encode("The quick brown fox jumps over the lazy dog. " * 40), dtype=np.uint32
    )
    ids = np.minimum(ids, 511)  # the debug model's vocabulary
    ids.tofile(tmp_path / "val.npy")
    return tmp_path / "val.npy", ids


def test_ce_and_bits_per_byte_from_one_forward(debug_model, val_file, dolma2):
    path, ids = val_file
    ev = TokenFileEval([str(path)], seq_len=32, max_chunks=4, tokenizer=dolma2, batch_size=2)
    calls = []
    debug_model.register_forward_hook(lambda *a: calls.append(1))
    out = ev(debug_model)
    assert len(calls) == 2  # 4 chunks in batches of 2: one forward each, for CE and bpb
    chunks = torch.from_numpy(ids[: 4 * 32].astype(np.int64)).view(4, 32)
    with torch.no_grad():
        logits = debug_model(chunks)[:, :-1]
        logp = logits.log_softmax(-1).gather(-1, chunks[:, 1:, None]).squeeze(-1)
    nbytes = ev.token_bytes[chunks[:, 1:]]  # UTF-8 length per token (0 = special)
    ref = float(-logp[nbytes > 0].sum()) / (float(nbytes.sum()) * math.log(2))
    assert out["eval/val/bpb"] == pytest.approx(ref, rel=1e-5)
    assert out["eval/val/bpb"] == pytest.approx(
        chunks_bpb(debug_model, chunks, ev.token_bytes).bits_per_byte, rel=1e-6
    )
    assert out["eval/val/ce"] == pytest.approx(float(-logp.mean()), rel=1e-5)


def test_without_tokenizer_only_ce(debug_model, val_file):
    path, _ = val_file
    out = TokenFileEval([str(path)], seq_len=32, max_chunks=4)(debug_model)
    assert list(out) == ["eval/val/ce"]


def test_training_mode_comes_back_even_on_error(debug_model, val_file):
    path, _ = val_file
    ev = TokenFileEval([str(path)], seq_len=32, max_chunks=4)
    debug_model.train()
    seen = []
    debug_model.register_forward_hook(lambda m, *a: seen.append(m.training))
    ev(debug_model)
    assert seen and not any(seen) and debug_model.training

    def fail(*a):
        raise RuntimeError("out of memory")

    debug_model.register_forward_hook(fail)
    with pytest.raises(RuntimeError, match="out of memory"):
        ev(debug_model)
    assert debug_model.training
