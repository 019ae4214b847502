"""A tiny olmo2 checkpoint with a tokenizer, and vLLM engines on it (`make test-vllm`).

Shapes vLLM's CPU build takes: head_dim 32 (its attention kernels reject the debug size's
16). The vocabulary is the tokenizer's own, so every id decodes. Each test module starts
one engine (module-scoped; ~20 s on 2 cores) and shuts it down. vLLM is imported only inside
these fixtures: in the default run the tests are deselected and nothing imports it; a run
of `-m vllm` without it skips, unless OLMO2_REQUIRE_VLLM=1 (`make test-vllm`) fails instead.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from tokenizers import Tokenizer as HFTokenizer

from olmo2.model.config import ModelConfig
from olmo2.model.hf import save_pretrained
from olmo2.model.transformer import Olmo2
from olmo2.tokenizer import Tokenizer
from tests.model.helpers import random_model, tiny_bpe

MAX_LEN = 256
"""max_model_len of every test engine (small: a KV cache of a few MB)."""


@dataclass
class Tiny:
    model: Olmo2
    tok: Tokenizer
    path: Path


def tiny_config(tok: Tokenizer) -> ModelConfig:
    return ModelConfig.debug(
        d_model=128, n_heads=4, n_kv_heads=2, n_layers=2, ffn_hidden=192, max_seq_len=MAX_LEN,
        vocab_size=tok.vocab_size, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )  # fmt: skip


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Tiny:
    tok = Tokenizer(HFTokenizer.from_str(json.dumps(tiny_bpe())))
    model = random_model(tiny_config(tok), seed=3)
    return Tiny(model, tok, save_pretrained(model, tmp_path_factory.mktemp("vllm") / "tiny", tok))


def require_vllm() -> None:
    """Skip without vLLM, or fail where the run asked for it."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded at test time
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    if os.environ.get("OLMO2_REQUIRE_VLLM") == "1":
        import vllm  # noqa: F401
    else:
        pytest.importorskip("vllm")


def engine_options(**overrides) -> dict:
    return {"max_model_len": MAX_LEN, "max_num_seqs": 16, **overrides}
