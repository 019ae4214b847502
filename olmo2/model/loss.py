"""Language-model losses over [N, V] logits without materialising a log-softmax.

Every loss here is a function of two per-row numbers: the target's logit `logits[y]` and
`logsumexp(logits)`. Cross-entropy is `lse − logits[y]`, the z-loss `lse²` (PaLM; OLMo 2
§2.3), a token log-prob `logits[y] − lse`. `target_logit_and_lse` computes both in fp32 and
its backward writes the logits' gradient in one softmax pass,
`softmax(logits)·∂L/∂lse + onehot(y)·∂L/∂logits[y]`, instead of autograd's two
gather-backward zero tensors, their sum and a log-softmax backward (each a full [N, V]
tensor; at a 32k vocabulary that loss was ~13% of a CPU training step). Nothing of size
[N, V] is saved but the logits themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


class _TargetLogitLSE(torch.autograd.Function):
    # log_softmax / softmax are single fused passes per row on CPU (measured faster than
    # logsumexp or exp(x − lse) at vocabularies 512–100k); `dtype=` upcasts bf16 inside them
    @staticmethod
    def forward(ctx, logits_NV: torch.Tensor, target_N: torch.Tensor):
        y = target_N[:, None]
        logit_y = logits_NV.gather(1, y).squeeze(1).float()
        lse = logit_y - logits_NV.log_softmax(-1, dtype=torch.float32).gather(1, y).squeeze(1)
        ctx.save_for_backward(logits_NV, target_N)
        return logit_y, lse

    @staticmethod
    def backward(ctx, g_logit_y: torch.Tensor | None, g_lse: torch.Tensor | None):
        logits, target = ctx.saved_tensors
        if g_lse is None:
            grad = torch.zeros(logits.shape, dtype=torch.float32, device=logits.device)
        else:
            grad = logits.softmax(-1, dtype=torch.float32).mul_(g_lse[:, None])
        if g_logit_y is not None:
            grad.scatter_add_(1, target[:, None], g_logit_y[:, None].float())
        return grad.to(logits.dtype), None


def target_logit_and_lse(logits_NV: torch.Tensor, target_N: torch.Tensor):
    """(logits[n, target[n]], logsumexp(logits[n])) [N] each, in fp32, differentiable.
    `target` must index the vocabulary (clamp ignored labels first)."""
    return _TargetLogitLSE.apply(logits_NV, target_N)


def token_logps(logits_BTV: torch.Tensor, labels_BT: torch.Tensor, ignore_index: int = -100):
    """log p(labels) per position in fp32, 0 where the label is ignored: logits [..., V] and
    labels [...] of any leading shape ([B, T], or [N] of selected positions)."""
    valid = labels_BT != ignore_index
    V = logits_BTV.shape[-1]
    logit_y, lse = target_logit_and_lse(
        logits_BTV.reshape(-1, V), labels_BT.clamp(min=0).reshape(-1)
    )
    return ((logit_y - lse) * valid.reshape(-1)).view(labels_BT.shape)


@dataclass
class LossOutput:
    loss: torch.Tensor
    """ce + z_loss, reduced as requested; what is backpropagated."""
    ce: torch.Tensor
    z_loss: torch.Tensor
    n_tokens: torch.Tensor
    """Number of non-ignored label positions."""


def lm_loss(
    logits_BTV: torch.Tensor,
    labels_BT: torch.Tensor,
    z_loss_multiplier: float = 1e-5,
    reduction: str = "mean",
    ignore_index: int = -100,
) -> LossOutput:
    """Cross-entropy in fp32 plus z-loss = multiplier·logsumexp(logits)² over non-ignored tokens.

    `labels` are already aligned with `logits` (shifted by the caller; −100 = ignore).
    `reduction="sum"` lets a trainer divide by the token count of a whole global batch.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    labels = labels_BT.reshape(-1)
    valid = labels != ignore_index
    logit_y, lse = target_logit_and_lse(
        logits_BTV.reshape(-1, logits_BTV.shape[-1]), labels.clamp(min=0)
    )
    ce = ((lse - logit_y) * valid).sum()
    z = z_loss_multiplier * (lse.square() * valid).sum()
    n = valid.sum()
    if reduction == "mean":
        denom = n.clamp(min=1)
        ce, z = ce / denom, z / denom
    return LossOutput(loss=ce + z, ce=ce, z_loss=z, n_tokens=n)


def shift_labels(input_ids: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Labels for next-token prediction: input shifted left, last position ignored."""
    labels = torch.full_like(input_ids, ignore_index)
    labels[:, :-1] = input_ids[:, 1:]
    return labels
