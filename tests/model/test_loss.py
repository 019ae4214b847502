"""The fused loss op against plain autograd on fp64 log-softmax (an independent reference)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from olmo2.model.loss import lm_loss, target_logit_and_lse, token_logps


def _reference(logits, labels, zm):
    """CE + z-loss sums by autograd over fp64 log_softmax/logsumexp."""
    x = logits.double()
    valid = labels != -100
    ce = F.cross_entropy(x, labels, ignore_index=-100, reduction="sum")
    z = zm * (torch.logsumexp(x, -1).square() * valid).sum()
    return ce, z


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("zm", [0.0, 1e-4])
def test_lm_loss_value_and_gradient_match_autograd(dtype, zm):
    g = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(37, 101, generator=g)).to(dtype).requires_grad_()
    labels = torch.randint(0, 101, (37,), generator=g)
    labels[::5] = -100  # ignored rows get exactly zero gradient
    out = lm_loss(logits[None], labels[None], z_loss_multiplier=zm, reduction="sum")
    (grad,) = torch.autograd.grad(out.loss * 0.7, logits)
    ref_logits = logits.detach().double().requires_grad_()
    ce, z = _reference(ref_logits, labels, zm)
    (ref_grad,) = torch.autograd.grad((ce + z) * 0.7, ref_logits)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert grad.dtype == dtype
    assert out.ce.detach().item() == pytest.approx(float(ce.detach()), rel=1e-5)
    assert out.z_loss.detach().item() == pytest.approx(float(z.detach()), rel=1e-5, abs=1e-12)
    assert torch.allclose(grad.double(), ref_grad, atol=tol, rtol=tol)
    assert not grad[::5].any()
    assert int(out.n_tokens) == int((labels != -100).sum())


def test_token_logps_gradient_with_mixed_sign_upstream():
    """Upstream gradients of both signs (a GRPO advantage) take the general backward path."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 9, 50, generator=g, requires_grad=True)
    labels = torch.randint(0, 50, (2, 9), generator=g)
    labels[0, :3] = -100
    w = torch.randn(2, 9, generator=g)
    lp = token_logps(logits, labels)
    (grad,) = torch.autograd.grad((lp * w).sum(), logits)
    ref = logits.detach().double().requires_grad_()
    ref_lp = ref.log_softmax(-1).gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1)
    ref_lp = ref_lp * (labels != -100)
    (ref_grad,) = torch.autograd.grad((ref_lp * w).sum(), ref)
    assert torch.allclose(lp.double(), ref_lp, atol=1e-5)
    assert torch.allclose(grad.double(), ref_grad, atol=1e-6)
    assert not lp[0, :3].any()


def test_only_target_logit_used():
    logits = torch.randn(4, 6, requires_grad=True)
    target = torch.tensor([0, 5, 2, 2])
    logit_y, _ = target_logit_and_lse(logits, target)
    (grad,) = torch.autograd.grad(logit_y.sum(), logits)
    assert torch.equal(grad, F.one_hot(target, 6).float())
