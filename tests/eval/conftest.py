"""Fixtures for the eval tests: a tiny random OLMo 2 with the real dolma2 vocabulary."""

from __future__ import annotations

import pytest
import torch

from olmo2.model.config import ModelConfig
from olmo2.model.transformer import Olmo2
from olmo2.tokenizer import Tokenizer


@pytest.fixture(scope="session")
def dolma2(dolma2_path) -> Tokenizer:
    return Tokenizer.from_file(dolma2_path)


@pytest.fixture(scope="session")
def tiny_model() -> Olmo2:
    """Debug sizes but the padded dolma2 vocabulary, so real prompts can be scored."""
    torch.manual_seed(0)
    cfg = ModelConfig.debug(
        vocab_size=100352, max_seq_len=1024, eos_token_id=100257, pad_token_id=100277
    )
    return Olmo2.build(cfg).eval()
