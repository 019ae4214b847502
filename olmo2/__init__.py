"""olmo2: a fully open, readable implementation of the OLMo 2 language-model system."""

from __future__ import annotations

__version__ = "0.1.0"


def load(path_or_hub_id, revision=None, dtype=None, device=None):
    """Load an OLMo 2 checkpoint (local HF directory or hub id) -> (model, tokenizer or None)."""
    from olmo2.model.hf import load

    return load(path_or_hub_id, revision=revision, dtype=dtype, device=device)


__all__ = ["load", "__version__"]
