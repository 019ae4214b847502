"""RL rollouts through a generation backend (`olmo2 grpo`, `olmo2 ppo`): the `rollout:`
section, one engine per run, and the truncated importance-sampling weight for an engine
that is not the learner's own forward.

`rollout.backend=olmo2` (the default) samples with olmo2's batched KV-cache generator on the
learner's policy itself (`olmo2.infer.backends.native`): nothing to sync, and the sampled
tokens' log-probs are the learner's. `rollout.backend=vllm` samples with a vLLM engine in the
learner's process (colocated, TRL's `vllm_mode="colocate"` / open-instruct's single-GPU set-up;
`olmo2.infer.backends.vllm`): started once on the policy, and given the policy's current
weights at the start of every rollout (safetensors under /dev/shm + the worker's
`reload_weights`, ~1 s for 54M parameters on CPU). Its kernels differ from the learner's, so
the tokens it samples come from a slightly different distribution: it returns its own
log-prob of each sampled token, and the policy-gradient term is reweighted per token by

    w_t = min(exp(log π_learner(y_t) − log π_rollout(y_t)), C)      (`tis_weights`)

— truncated importance sampling (TIS; Yao, Liu et al. 2025, "Your Efficient RL Framework
Secretly Brings You Off-Policy RL Training", fengyao.notion.site/off-policy-rl), with
log π_learner the learner's log-prob under the weights that were synced (the "old" policy of
the clipped ratio) and C = `rollout.is_cap`. As in open-instruct's
`truncated_importance_sampling_ratio_cap` (grpo_fast.py at bd26188b) the weight is a constant
multiplying the clipped surrogate, not the KL term; C = 2.0 is verl's `rollout_is_threshold`
and open-instruct's `rho_clamp_upper_bound` default (TRL's `vllm_importance_sampling_clip_max`
is 3.0).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from olmo2.infer.backends import BACKENDS, GenerationParams, load_backend
from olmo2.post.common import EpochSampler
from olmo2.post.losses import IGNORE
from olmo2.tokenizer import Tokenizer
from olmo2.train import distributed
from olmo2.train.config import choice

log = logging.getLogger(__name__)


@dataclass
class RolloutSection:
    backend: str = "olmo2"
    """olmo2 (the learner's own model; no extra dependency) | vllm (`pip install
    'olmo2[vllm]'`; a vLLM engine beside the learner, synced every rollout)."""
    dtype: str = "float32"
    """vllm: the engine's dtype (bfloat16 on a GPU; on a CPU without bf16 matmuls fp32 is ~5x
    faster)."""
    gpu_memory_utilization: float = 0.3
    """vllm on a GPU: the fraction of GPU memory the engine takes for weights and KV cache,
    leaving the rest to the learner (TRL's colocate default). Unused on a CPU."""
    enforce_eager: bool | None = None
    """vllm: no CUDA graphs (None: eager on a CPU, CUDA graphs on a GPU)."""
    sleep: bool = False
    """vllm on a GPU: free the engine's memory after each generation (vLLM sleep level 2);
    the next weight sync wakes it. Ignored on a CPU (vLLM's CPU build has no sleep mode)."""
    is_cap: float | None = None
    """vllm: the cap C of the truncated importance-sampling weight min(π_learner/π_rollout, C)
    on the policy-gradient term (2.0 in the references); null (the default) = no correction,
    the weights and the mismatch are still logged."""

    def validate(self) -> None:
        choice("rollout.backend", self.backend, BACKENDS)
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"rollout.dtype={self.dtype!r}: expected float32, bfloat16 or float16")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(
                f"rollout.gpu_memory_utilization must be in (0, 1], got "
                f"{self.gpu_memory_utilization}"
            )
        if self.is_cap is not None and not self.is_cap > 0:
            raise ValueError(
                f"rollout.is_cap must be > 0 (or null for no correction), got {self.is_cap}"
            )

    def engine_options(self) -> dict:
        """`load_backend` options of the backend."""
        if self.backend == "olmo2":
            return {}
        from olmo2.infer.backends.vllm import import_vllm

        import_vllm()  # BackendUnavailable naming the extra, before any option is looked at
        from vllm.platforms import current_platform

        options = {"dtype": self.dtype, "enforce_eager": self.enforce_eager}
        if current_platform.is_cpu():
            if self.sleep:  # the CPU build refuses enable_sleep_mode ("not supported")
                log.warning("rollout.sleep ignored: vLLM's CPU build has no sleep mode")
        else:
            options["gpu_memory_utilization"] = self.gpu_memory_utilization
            options["sleep_mode"] = self.sleep
        return options


@dataclass
class Generations:
    """Completions of a rollout, grouped by prompt (prompt i's samples at i·n .. i·n + n − 1)."""

    tokens: list[list[int]]
    """New ids per completion, the EOS that ended it included."""
    texts: list[str]
    finished: list[bool]
    """Whether the completion ended at EOS (not at the length limit)."""
    logprobs: list[list[float]] | None
    """The rollout engine's log p of each entry of `tokens`; None when the engine is the
    learner's own forward (`rollout.backend=olmo2`), whose log-probs the learner computes."""


class RolloutEngine:
    """The generation engine of an RL run, then `generate` per rollout. A vLLM engine starts
    here, once, on `initial` (a model with the run's starting weights, e.g. the frozen
    reference: the engine can start before the learner is built or anything is written);
    olmo2's engine is the policy itself. Close it (or use it as a context manager)."""

    def __init__(
        self, section: RolloutSection, tokenizer: Tokenizer, initial: torch.nn.Module | None
    ):
        self.section, self.tokenizer = section, tokenizer
        self.separate = section.backend != "olmo2"
        """Whether the engine computes apart from the learner (so is synced and corrected)."""
        self.backend = None
        if self.separate:
            options = section.engine_options()
            self.backend = load_backend(section.backend, initial, tokenizer, **options)

    def generate(
        self,
        policy: torch.nn.Module,
        prompts: Sequence[Sequence[int]],
        n: int,
        max_new_tokens: int,
        temperature: float,
        seed: int,
    ) -> Generations:
        """`n` completions of each prompt by the current `policy` (unwrapped), ending at EOS."""
        if self.separate:
            backend = self.backend
            backend.update_weights(policy)
        else:
            backend = load_backend("olmo2", policy, self.tokenizer)
        params = GenerationParams(
            max_new_tokens=max_new_tokens, temperature=temperature, seed=seed, n=n,
            stop_token_ids=(self.tokenizer.eos_token_id,), logprobs=self.separate,
        )  # fmt: skip
        out = backend.generate(prompts, params)
        if self.section.sleep:
            backend.sleep()  # the learner's step gets the memory; the next sync wakes it
        return Generations(
            [c.tokens for c in out],
            [c.text for c in out],
            [c.finish_reason == "stop" for c in out],
            [c.logprobs for c in out] if self.separate else None,
        )

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def tis_weights(
    old_logp: torch.Tensor, rollout_logp: torch.Tensor, cap: float | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Truncated importance-sampling weights (see the module docstring) and where the cap
    bit, both [B, T] and without gradient: min(exp(old − rollout), cap) per token (the plain
    ratio when `cap` is None). Masked positions are the caller's to ignore."""
    ratio = torch.exp(old_logp.detach().float() - rollout_logp.float())
    if cap is None:
        return ratio, torch.zeros_like(ratio, dtype=torch.bool)
    return ratio.clamp(max=cap), ratio > cap


class RolloutSource:
    """What the RL data sources (`olmo2 grpo`, `olmo2 ppo`) share: prompts drawn by the epoch
    sampler, a rollout made inside iteration right before its first optimizer step (so it
    uses the current policy), and the steps of a rollout not yet taken kept in the state for
    an exact resume. A subclass implements `rollout() -> [one batch per optimizer step]`."""

    def __init__(self, prompts: list, data, what: str, device):
        self.prompts, self.data, self.device, self.rank = prompts, data, device, distributed.rank()
        head = [p.ids[:8] for p in prompts[:64]]
        self.sampler = EpochSampler(
            len(prompts), data.global_batch_size, data.seed, what=what, identity=(head,)
        )
        self.rollouts = 0
        self.pending: list[dict] = []

    def rollout(self) -> list[dict]:
        raise NotImplementedError

    def next_prompts(self) -> list:
        return [self.prompts[i] for i in self.sampler.next_rows()]

    def seed(self) -> int:
        """The sampling seed of the next rollout on this rank."""
        return (self.data.seed * 1_000_003 + self.rollouts * 7919 + self.rank) % 2**62

    def token_mean_weights(self, labels: torch.Tensor) -> torch.Tensor:
        """Per-row weight rows/tokens of the global batch (all ranks): Σ_i w·Σ_t loss_it /
        rows is the mean over every labelled token (open-instruct's `masked_mean`)."""
        lens = (labels != IGNORE).sum(-1).double()
        local = torch.tensor(
            [float(len(lens)), float(lens.sum())], dtype=torch.float64, device=self.device
        )
        rows, tokens = distributed.all_reduce_sum(local).tolist()
        return torch.full_like(lens, rows / max(tokens, 1.0)).float()

    def __iter__(self):
        while True:
            if not self.pending:
                self.pending = self.rollout()
            yield self.pending.pop(0)

    def state_dict(self) -> dict:
        return {**self.sampler.state_dict(), "rollouts": self.rollouts, "pending": self.pending}

    def load_state_dict(self, sd: dict) -> None:
        self.sampler.load_state_dict(sd)
        self.rollouts, self.pending = int(sd["rollouts"]), list(sd["pending"])
