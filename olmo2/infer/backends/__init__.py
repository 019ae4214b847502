"""Generation backends: one interface (`base`) for RL rollouts, evaluation and benchmarks, with
olmo2's own engine (`native`, the default, no extra dependency) and vLLM (`vllm`, the
`olmo2[vllm]` extra) behind it.

    backend = load_backend("vllm", policy, tokenizer)      # or a checkpoint directory
    outs = backend.generate(prompt_ids, GenerationParams(max_new_tokens=64, n=16,
                                                         temperature=1.0, logprobs=True))
    backend.update_weights(policy)                          # after each optimizer step
"""

from __future__ import annotations

from pathlib import Path

from olmo2.infer.backends.base import (
    Backend,
    BackendUnavailable,
    Completion,
    GenerationParams,
    PromptScores,
)

BACKENDS = ("olmo2", "vllm")


def load_backend(name: str, model, tokenizer=None, **options) -> Backend:
    """Backend `name` on `model`: an in-memory `Olmo2` (a learner's policy; the olmo2 backend
    uses it as it is, vLLM starts on a copy written to shared memory) or a checkpoint
    directory. `options` go to the backend (`Olmo2Backend`, `VLLMBackend`)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown generation backend {name!r}; known: {', '.join(BACKENDS)}")
    from_path = isinstance(model, (str, Path))
    if name == "olmo2":
        from olmo2.infer.backends.native import Olmo2Backend

        if from_path:
            return Olmo2Backend.load(model, **options)
        return Olmo2Backend(model, tokenizer, **options)
    from olmo2.infer.backends.vllm import VLLMBackend

    if from_path:
        return VLLMBackend(model, **options)
    return VLLMBackend.from_model(model, tokenizer, **options)


__all__ = [
    "BACKENDS",
    "Backend",
    "BackendUnavailable",
    "Completion",
    "GenerationParams",
    "PromptScores",
    "load_backend",
]
