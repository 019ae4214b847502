"""Load a checkpoint for generation, chat and serving: `olmo2.load`, a tokenizer check, and
optional int8 quantization."""

from __future__ import annotations

import torch

from olmo2.model.hf import load


def load_for_inference(model, revision=None, dtype="float32", device="cpu", quantize=None):
    """(model, tokenizer) for `olmo2 generate|chat|serve`."""
    m, tok = load(model, revision=revision, dtype=getattr(torch, dtype), device=device)
    if tok is None:
        raise ValueError(f"{model}: no tokenizer.json next to the weights")
    if quantize:
        from olmo2.infer.quantize import quantize_model

        if str(device) != "cpu":
            raise ValueError(f"--quantize {quantize} runs on CPU only (use --device cpu)")
        m = quantize_model(m, quantize)
    return m, tok
