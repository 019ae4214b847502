"""What a generation backend takes and returns: the one interface RL rollouts, evaluation and
the rollout benchmark ask of an engine, whichever engine runs behind it.

Requests are batches of token-id prompts (tokenizing and chat templates stay with the
caller, so both engines see the same ids). A backend answers with, per prompt and sample,
the new token ids, their text, why the row ended and, on request, the log-prob of each
sampled token; and it scores prompts (the log-prob of every prompt token after the first).

Log-probs are always those of the model's own distribution, `log_softmax(logits)` before
temperature, top-k or top-p: what the learner's `token_logps(model(ids))` computes, so the
two can be compared token for token (the denominator of a truncated importance-sampling
ratio, Yao et al. 2025; vLLM's default `logprobs_mode="raw_logprobs"`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from olmo2.infer.generate import SamplingConfig


class BackendUnavailable(RuntimeError):
    """The engine cannot be used here: not installed, or it failed to start."""


@dataclass
class GenerationParams(SamplingConfig):
    """`SamplingConfig` (max_new_tokens, temperature, top_k, top_p, seed) plus what a batch
    request needs."""

    n: int = 1
    """Samples per prompt; the results are grouped by prompt (GRPO's group of G)."""
    stop: tuple[str, ...] = ()
    """Stop strings: a row ends at the token that completes one; its text is cut before it."""
    stop_token_ids: tuple[int, ...] | None = None
    """A row ends after one of these (kept in `tokens`). None = the model's EOS; () = none."""
    logprobs: bool = False
    """Also return the log-prob of every sampled token (`Completion.logprobs`)."""

    def __post_init__(self):
        super().__post_init__()
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        self.stop = tuple(self.stop)
        if self.stop_token_ids is not None:
            self.stop_token_ids = tuple(self.stop_token_ids)

    def stop_ids(self, eos_token_id: int | None) -> list[int]:
        if self.stop_token_ids is not None:
            return list(self.stop_token_ids)
        return [] if eos_token_id is None else [eos_token_id]


@dataclass
class Completion:
    """One sample for one prompt."""

    tokens: list[int]
    """New ids, including the stop token that ended the row (and, for a stop string, every
    token up to the one that completed it)."""
    text: str | None
    """Decoded by `olmo2.infer.generate.Drain` for every backend (cut before a stop string,
    without the stop token); None when the backend has no tokenizer."""
    finish_reason: str
    """"stop" (a stop token or string) or "length"."""
    logprobs: list[float] | None = None
    """log p(token) per entry of `tokens` when `GenerationParams.logprobs`."""


@dataclass
class PromptScores:
    """Scores of one prompt's tokens after the first (the first has no context to score it)."""

    logprobs: list[float]
    """log p(prompt[t] | prompt[:t]) for t = 1 .. len(prompt) - 1."""
    greedy: list[bool]
    """Whether prompt[t] is the argmax there (the eval harness's `is_greedy`)."""


Weights = nn.Module | Mapping[str, torch.Tensor]
"""An `Olmo2` (a learner's policy) or its state dict, in olmo2's or the HF checkpoint's names."""


class Backend:
    """A generation engine. `generate` and `score_prompts` take token-id prompts;
    `update_weights` gives a rollout engine the learner's new weights after an optimizer
    step; `sleep`/`wake_up` free and take back the engine's memory around the learner's step
    where the engine supports it (a no-op elsewhere). Use as a context manager or `close()`."""

    name: str = ""

    def generate(
        self, prompts: Sequence[Sequence[int]], params: GenerationParams
    ) -> list[Completion]:
        """`params.n` completions per prompt, grouped by prompt: `len(prompts) * n` rows,
        prompt i's samples at i*n .. i*n + n - 1."""
        raise NotImplementedError

    def score_prompts(self, prompts: Sequence[Sequence[int]]) -> list[PromptScores]:
        raise NotImplementedError

    def update_weights(self, weights: Weights) -> None:
        raise NotImplementedError

    def sleep(self) -> None:
        """Free the engine's memory until the next call that needs it."""

    def wake_up(self) -> None:
        """Take the memory back (called by `generate`/`score_prompts` when needed)."""

    def close(self) -> None:
        """Stop the engine and remove what it wrote."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_prompts(prompts: Sequence[Sequence[int]], min_len: int = 1) -> list[list[int]]:
    rows = [list(map(int, p)) for p in prompts]
    short = [i for i, p in enumerate(rows) if len(p) < min_len]
    if short:
        raise ValueError(f"prompts {short[:5]} have fewer than {min_len} token(s)")
    return rows


def olmo2_state_dict(weights: Weights) -> dict[str, torch.Tensor]:
    """Full tensors in olmo2's names of a model or a state dict (HF names are mapped back).
    A sharded learner's DTensors are gathered (`full_tensor()`, a collective: every rank
    calls it, as TRL's FSDP2 sync does in trl/generation/vllm_generation.py)."""
    from olmo2.model.hf import from_hf_key

    sd = weights.state_dict() if isinstance(weights, nn.Module) else dict(weights)
    out = {}
    for k, v in sd.items():
        out[from_hf_key(k) or k] = v.full_tensor() if hasattr(v, "full_tensor") else v
    return out
