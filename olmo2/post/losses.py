"""Pure loss functions of post-training (SFT, DPO, RM, GRPO, PPO), each with a closed-form test.

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
- PPO (allenai/open-instruct, legacy `ppo_vllm_thread_ray_gtrl.py` at `bac939310^` and its
  OLMo variant `ppo_vllm_thread_ray_gtrl_olmo.py` at `b452f9226`, after TRL's PPOv2): the KL
  enters as a per-token reward `−β·kl1`; GAE (Schulman et al. 2016, eq. 16)
  `δ_t = r_t + γ·V_{t+1} − V_t`, `A_t = δ_t + γλ·A_{t+1}`, returns `A + V`; advantages
  whitened with the masked mean and the unbiased masked variance (`masked_whiten`, eps 1e-8);
  policy loss `max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε))`; value loss
  `0.5·max((V − R)², (clip(V, V_old ± ε_v) − R)²)` (Schulman et al. 2017, as in
  OpenAI baselines' ppo2).
"""

from __future__ import annotations

import math
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


# ---- PPO ----------------------------------------------------------------------------------------


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `x` over the positions `mask` marks (0 when none are)."""
    m = mask.float()
    return (x * m).sum() / m.sum().clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unbiased (Bessel-corrected) variance of `x` over the masked positions; needs two."""
    n = mask.float().sum()
    if n < 2:
        raise ValueError(f"masked_var needs at least two masked positions, got {int(n)}")
    return masked_mean((x - masked_mean(x, mask)) ** 2, mask) * n / (n - 1)


def whiten(
    x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """(x − mean)/√(var + eps) over the masked positions (open-instruct `masked_whiten`);
    `shift_mean=False` adds the mean back. Masked-out positions are set to 0."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    return torch.where(mask.bool(), out if shift_mean else out + mean, 0.0)


def kl_reward(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, beta: float):
    """Per-token KL penalty as a reward, −β·kl1 with kl1 = logπ − logπ_ref (open-instruct's
    `kl_estimator kl1`); returns (reward [B, T], kl1 [B, T]), both 0 where `mask` is 0."""
    m = mask.bool()
    kl1 = torch.where(m, logp.float() - ref_logp.float(), 0.0)
    return -beta * kl1, kl1


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over [B, T] per-token rewards and values.

    `mask` marks each row's response tokens, one contiguous run (left prompt columns and
    right padding are 0): the value after the last response token is 0 (the episode ends
    there), and masked positions contribute nothing. Returns (advantages, returns = A + V),
    both 0 where `mask` is 0."""
    m = mask.float()
    r, v = rewards.float() * m, values.float() * m
    T = r.shape[1]
    adv = torch.zeros_like(r)
    last = torch.zeros_like(r[:, 0])
    for t in reversed(range(T)):
        next_v = v[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = r[:, t] + gamma * next_v - v[:, t]
        last = delta + gamma * lam * last
        adv[:, t] = last
    adv = adv * m
    return adv, (adv + v) * m


@dataclass
class ClippedLoss:
    loss: torch.Tensor
    """[B, T] per-token loss (0 on masked positions)."""
    clipped: torch.Tensor
    """[B, T] 1.0 where the clipped branch was the larger (taken) one, detached."""


def ppo_policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float = 0.2,
) -> ClippedLoss:
    """PPO-clip per token: max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε)) with ρ = exp(logπ − logπ_old);
    `advantages` are per token [B, T]."""
    m = mask.float()
    ratio = torch.exp(logp - old_logp)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_eps, 1 + clip_eps)
    return ClippedLoss(
        torch.maximum(unclipped, clipped) * m, ((clipped > unclipped).float() * m).detach()
    )


def ppo_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float = 0.2,
) -> ClippedLoss:
    """Clipped value loss per token: 0.5·max((V − R)², (clip(V, V_old ± ε) − R)²)."""
    m = mask.float()
    vclipped = old_values + (values - old_values).clamp(-clip_eps, clip_eps)
    l1, l2 = (values - returns) ** 2, (vclipped - returns) ** 2
    return ClippedLoss(0.5 * torch.maximum(l1, l2) * m, ((l2 > l1).float() * m).detach())


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 − Var(R − V)/Var(R) over the masked positions (1 = perfect, 0 = no better than the
    mean; NaN when the returns do not vary)."""
    var = masked_var(returns, mask)
    return float(1 - masked_var(returns - values, mask) / var) if var > 0 else math.nan
