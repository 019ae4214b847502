"""Pure loss functions of post-training (SFT, DPO, RM, GRPO), each with a closed-form test.

Shapes: `B` sequences, `T` positions, `V` vocabulary. Labels are already aligned with the
logits (position t predicts labels[t]); −100 marks positions that do not count. Everything
is computed in fp32.

Sources:
- DPO: `loss = −logsigmoid(β·((π_c − π_r) − (ref_c − ref_r)))`, rewards `β·(π − ref)`;
  `dpo_norm` uses the per-token *mean* log-prob of each response for policy and reference
  (allenai/open-instruct dpo_utils.py; Tülu 3 paper §4.3); `dpo` the sum.
- Reward model (Bradley-Terry; allenai/open-instruct reward_modeling.py, Ouyang et al. 2022
  eq. 1): `loss = −logsigmoid(r_c − r_r − margin)`, accuracy = fraction with r_c > r_r.
- GRPO (allenai/open-instruct, legacy `grpo_vllm_thread_ray_gtrl.py`): advantages
  `(r − mean_group)/(std_group + 1e-8)`, per-token loss `max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε)) +
  β·k3`, with k3 = `exp(−kl1) − 1 + kl1`, kl1 = logπ − logπ_ref (Schulman's k3 estimator).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from olmo2.model.loss import token_logps

IGNORE = -100


def sequence_logps(
    logits_BTV: torch.Tensor, labels_BT: torch.Tensor, average: bool = False
) -> torch.Tensor:
    """Per-sequence log-prob [B]: sum over labelled tokens, or their mean with `average`."""
    lp = token_logps(logits_BTV, labels_BT).sum(-1)
    if average:
        lp = lp / (labels_BT != IGNORE).sum(-1).clamp(min=1)
    return lp


def masked_ce(
    logits_BTV: torch.Tensor, labels_BT: torch.Tensor, reduction: str = "sum"
) -> torch.Tensor:
    """SFT cross-entropy over labelled tokens: their `sum` (OLMo 2 / Tülu 3 `reduce_loss sum`)
    or `mean`."""
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    nll = -token_logps(logits_BTV, labels_BT).sum()
    if reduction == "mean":
        nll = nll / (labels_BT != IGNORE).sum().clamp(min=1)
    return nll


@dataclass
class DPOOutput:
    losses: torch.Tensor
    """[B] per-pair loss."""
    chosen_rewards: torch.Tensor
    """[B] β·(π_c − ref_c), detached."""
    rejected_rewards: torch.Tensor

    @property
    def margins(self) -> torch.Tensor:
        return self.chosen_rewards - self.rejected_rewards

    @property
    def accuracy(self) -> torch.Tensor:
        return (self.chosen_rewards > self.rejected_rewards).float()


DPO_LOSSES = {"dpo": False, "dpo_norm": True}
"""loss type -> whether sequence log-probs are per-token means (length-normalised)."""


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> DPOOutput:
    """Sigmoid DPO on sequence log-probs (sums for `dpo`, means for `dpo_norm`)."""
    logits = (policy_chosen - policy_rejected) - (ref_chosen - ref_rejected)
    losses = -F.logsigmoid(beta * logits)
    return DPOOutput(
        losses,
        (beta * (policy_chosen - ref_chosen)).detach(),
        (beta * (policy_rejected - ref_rejected)).detach(),
    )


@dataclass
class RMOutput:
    losses: torch.Tensor
    """[B] per-pair loss."""
    margins: torch.Tensor
    """[B] r_chosen − r_rejected, detached."""

    @property
    def accuracy(self) -> torch.Tensor:
        return (self.margins > 0).float()


def bradley_terry_loss(
    chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor | float = 0.0
) -> RMOutput:
    """Pairwise reward-model loss −log σ(r_c − r_r − margin) on scalar scores [B] (the
    optional margin as in Llama 2's RM, Touvron et al. 2023 eq. 2)."""
    diff = chosen.float() - rejected.float()
    return RMOutput(-F.logsigmoid(diff - margin), diff.detach())


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-8) -> torch.Tensor:
    """GRPO advantages for rewards laid out group after group: (r − mean)/(std + eps) within
    each group of `group_size` samples of one prompt (torch's unbiased std, as in the
    open-instruct and TRL implementations)."""
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    g = rewards.float().view(-1, group_size)
    std = g.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(g[:, :1])
    return ((g - g.mean(dim=1, keepdim=True)) / (std + eps)).view(-1)


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(π‖π_ref): exp(−kl1) − 1 + kl1 with kl1 = logπ − logπ_ref
    (non-negative, unbiased for samples from π)."""
    kl1 = logp - ref_logp
    return torch.exp(-kl1) - 1 + kl1


@dataclass
class GRPOOutput:
    token_loss: torch.Tensor
    """[B, T] per-token loss (0 on masked positions)."""
    kl: torch.Tensor
    """[B, T] per-token k3 KL, detached (0 on masked positions)."""
    clipped: torch.Tensor
    """[B, T] 1.0 where the clipped branch was taken."""


def grpo_token_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    ref_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float = 0.2,
    beta: float = 0.01,
) -> GRPOOutput:
    """Clipped policy-ratio objective plus β·k3 KL, per response token.

    `logp`, `old_logp`, `ref_logp`, `mask` are [B, T]; `advantages` [B] (one per completion).
    """
    m = mask.float()
    ratio = torch.exp(logp - old_logp)
    a = advantages[:, None]
    unclipped, clipped = -a * ratio, -a * ratio.clamp(1 - clip_eps, 1 + clip_eps)
    pg = torch.maximum(unclipped, clipped)
    kl = k3_kl(logp, ref_logp)
    loss = (pg + beta * kl) * m
    return GRPOOutput(loss, (kl * m).detach(), ((clipped > unclipped).float() * m).detach())
