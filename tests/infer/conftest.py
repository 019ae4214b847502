"""A tiny random model with the real dolma2 tokenizer, saved once per session."""

from __future__ import annotations

import pytest

from olmo2.model.config import ModelConfig
from olmo2.model.hf import save_pretrained
from olmo2.tokenizer import Tokenizer
from tests.model.helpers import random_model

# 100,352 embedding rows for the dolma2 ids (~13M parameters, almost all embeddings)
DOLMA2_DEBUG = ModelConfig.debug(vocab_size=100352, eos_token_id=100257, pad_token_id=100277)


@pytest.fixture(scope="session")
def dolma2_tok(dolma2_path):
    return Tokenizer.from_file(dolma2_path)


@pytest.fixture(scope="session")
def dolma2_ckpt(tmp_path_factory, dolma2_tok):
    model = random_model(DOLMA2_DEBUG, seed=11)
    path = save_pretrained(model, tmp_path_factory.mktemp("serve") / "tiny-olmo2", dolma2_tok)
    return model, dolma2_tok, path
