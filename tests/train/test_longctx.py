"""The context-extension stage (`model.extend_context`, recipes/*longctx.yaml): a model
pretrained at 64 tokens is extended 4× with YaRN, intra-document masking and whole documents
packed by best-fit decreasing; the checkpoint records the scaling in the form transformers
reads (same logits past the old context), and the extended model predicts the positions past
the old context better than the model it started from."""

from __future__ import annotations

import json

import torch

from olmo2.model.hf import load_model
from olmo2.model.loss import lm_loss
from olmo2.train import checkpoint as ckpt

from .helpers import markov_tokens, train

SHORT, LONG = 64, 256


def _late_ce(model, chunks: torch.Tensor) -> float:
    """Mean CE of the positions past the original context."""
    with torch.no_grad():
        logits = model(chunks)[:, SHORT - 1 : -1]
        return float(lm_loss(logits, chunks[:, SHORT:], 0.0).ce)


def test_extension_stage_scales_rope_and_helps_past_the_old_context(tmp_path):
    from transformers import AutoModelForCausalLM

    tokens = markov_tokens(48_000)
    data = tmp_path / "train.npy"
    tokens[:40_000].tofile(data)
    held_out = torch.from_numpy(tokens[-8 * LONG :].astype("int64")).view(8, LONG)
    base = ["model.max_seq_len=64", f"data.seq_len={SHORT}", "schedule.name=constant"]
    assert train(tmp_path / "s1", data, *base, steps=80) == 0
    start = ckpt.latest(tmp_path / "s1")
    extend = [
        f"model.load_path={start}", "model.size=null", "model.reset_trainer_state=true",
        f"model.extend_context={LONG}", "model.rope_scaling=yarn", f"data.seq_len={LONG}",
        "data.doc_masking=true", "data.packing=bfd", "trainer.stage=3", "trainer.activation_checkpointing=true",
        "data.global_batch_size=4", "data.micro_batch_size=2", "optim.lr=1e-3",
        "schedule.warmup_steps=5",
    ]  # fmt: skip
    assert train(tmp_path / "ext", data, *extend, steps=30) == 0
    done = ckpt.latest(tmp_path / "ext")
    assert done.name.startswith("stage3-step30")
    hf_cfg = json.loads((done / "config.json").read_text())
    assert hf_cfg["max_position_embeddings"] == LONG
    rope = hf_cfg["rope_parameters"]
    assert rope["rope_type"] == "yarn" and rope["factor"] == 4.0
    assert rope["original_max_position_embeddings"] == SHORT
    extended, original = load_model(done).eval(), load_model(start).eval()
    hf = AutoModelForCausalLM.from_pretrained(done, dtype=torch.float32).eval()
    with torch.no_grad():
        diff = (hf(held_out).logits - extended(held_out)).abs().max()
    assert diff < 1e-4  # fp32, two implementations of the same YaRN network
    late = _late_ce(extended, held_out), _late_ce(original, held_out)
    assert late[0] < late[1] - 0.05
