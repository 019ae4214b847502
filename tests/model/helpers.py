"""Tiny random checkpoints shared by the model tests."""

from __future__ import annotations

import torch

from olmo2.model.config import ModelConfig
from olmo2.model.hf import save_pretrained
from olmo2.model.transformer import Olmo2

# tiny shapes: plain MHA, GQA, odd sizes (vocab not a multiple of 8, odd ffn), and "wide":
# linears large enough for decoding's CPU kernel (`olmo2.model.skinny`), odd K and N
CONFIGS = {
    "mha": ModelConfig.debug(),
    "gqa": ModelConfig.debug(n_heads=8, n_kv_heads=2, n_layers=3),
    "odd": ModelConfig.debug(d_model=48, n_heads=3, ffn_hidden=101, vocab_size=509, n_layers=2),
    "wide": ModelConfig.debug(d_model=264, n_heads=4, n_kv_heads=2, ffn_hidden=301, vocab_size=509),
}


def random_model(cfg: ModelConfig, seed: int = 0) -> Olmo2:
    torch.manual_seed(seed)
    model = Olmo2.build(cfg)
    # random norm weights too, so a swapped norm cannot hide behind all-ones
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model.eval()


def save_random(tmp_path, key: str = "mha", seed: int = 0):
    model = random_model(CONFIGS[key], seed)
    path = save_pretrained(model, tmp_path / key)
    return model, path
