"""Each post-training loss against a hand computation on fixed numbers."""

from __future__ import annotations

import math

import pytest
import torch

from olmo2.post.losses import (
    bradley_terry_loss,
    dpo_loss,
    group_advantages,
    grpo_token_loss,
    k3_kl,
    masked_ce,
    sequence_logps,
    token_logps,
)


def _logits():
    torch.manual_seed(0)
    return torch.randn(2, 3, 5)


def test_token_logps_and_masked_ce_sum_mean():
    logits = _logits()
    labels = torch.tensor([[1, -100, 4], [-100, -100, 0]])
    expected, n = 0.0, 0
    for b in range(2):
        for t in range(3):
            y = int(labels[b, t])
            if y == -100:
                continue
            row = [float(x) for x in logits[b, t]]
            lse = math.log(sum(math.exp(x) for x in row))
            expected += lse - row[y]
            n += 1
    assert masked_ce(logits, labels, "sum").item() == pytest.approx(expected, rel=1e-6)
    assert masked_ce(logits, labels, "mean").item() == pytest.approx(expected / n, rel=1e-6)
    lp = token_logps(logits, labels)
    assert lp[0, 1] == 0 and lp[1, 0] == 0
    seq = sequence_logps(logits, labels)
    assert seq.sum().item() == pytest.approx(-expected, rel=1e-6)
    avg = sequence_logps(logits, labels, average=True)
    assert avg[0].item() == pytest.approx(seq[0].item() / 2) and avg[1].item() == pytest.approx(
        seq[1].item()
    )
    with pytest.raises(ValueError, match="reduction"):
        masked_ce(logits, labels, "none")


def test_dpo_loss_rewards_margins_hand():
    pc, pr = torch.tensor([-10.0, -3.0]), torch.tensor([-12.0, -2.0])
    rc, rr = torch.tensor([-11.0, -3.5]), torch.tensor([-11.5, -2.5])
    beta = 0.1
    out = dpo_loss(pc, pr, rc, rr, beta)
    for i in range(2):
        z = (pc[i] - pr[i] - (rc[i] - rr[i])).item()
        assert out.losses[i].item() == pytest.approx(math.log1p(math.exp(-beta * z)), rel=1e-6)
        assert out.chosen_rewards[i].item() == pytest.approx(beta * (pc[i] - rc[i]).item())
        assert out.rejected_rewards[i].item() == pytest.approx(beta * (pr[i] - rr[i]).item())
    # pair 0: chosen reward 0.1, rejected -0.05 -> margin 0.15, correct; pair 1: 0.05 vs 0.05
    assert out.margins.tolist() == pytest.approx([0.15, 0.0], abs=1e-6)
    assert out.accuracy.tolist() == [1.0, 0.0]


def test_dpo_norm_uses_mean_logps_beta5():
    """dpo_norm = sigmoid DPO on per-token mean log-probs (β 5, the OLMo 2 recipe)."""
    logits = _logits()
    chosen = torch.tensor([[1, 2, 3], [-100, 0, 1]])
    pol = sequence_logps(logits, chosen, average=True)
    ref = sequence_logps(
        torch.zeros_like(logits), chosen, average=True
    )  # uniform: log(1/5) per token
    assert ref.tolist() == pytest.approx([math.log(0.2)] * 2, rel=1e-6)
    out = dpo_loss(pol[:1], pol[1:], ref[:1], ref[1:], beta=5.0)
    z = (pol[0] - pol[1]).item()  # reference terms cancel (equal means)
    assert out.losses.item() == pytest.approx(math.log1p(math.exp(-5 * z)), rel=1e-5)


def test_group_advantages_hand():
    r = torch.tensor([10.0, 0.0, 0.0, 0.0, 5.0, 5.0, 5.0, 5.0])
    a = group_advantages(r, 4)
    mean, std = 2.5, math.sqrt(((7.5**2) + 3 * 2.5**2) / 3)  # unbiased
    assert a[:4].tolist() == pytest.approx(
        [(x - mean) / (std + 1e-8) for x in [10, 0, 0, 0]], rel=1e-6
    )
    assert a[4:].tolist() == [0.0] * 4  # an all-equal group gives no signal
    with pytest.raises(ValueError, match="groups"):
        group_advantages(r, 3)


def test_k3_kl_hand():
    lp, ref = torch.tensor([-1.0, -2.0, -0.5]), torch.tensor([-1.0, -1.0, -2.0])
    got = k3_kl(lp, ref)
    for i in range(3):
        d = (ref[i] - lp[i]).item()
        assert got[i].item() == pytest.approx(math.exp(d) - 1 - d, rel=1e-6)
    assert got[0] == 0 and (got >= 0).all()


def test_grpo_token_loss_hand():
    lp = torch.tensor([[-1.0, -0.5, -2.0], [-0.2, -0.3, -9.0]])
    old = torch.tensor([[-1.5, -0.5, -2.0], [-0.1, -0.6, -9.0]])
    ref = torch.tensor([[-1.2, -0.7, -2.0], [-0.2, -0.1, -9.0]])
    adv = torch.tensor([1.0, -2.0])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    eps, beta = 0.2, 0.01
    out = grpo_token_loss(lp, old, ref, adv, mask, eps, beta)
    for b in range(2):
        for t in range(3):
            if not mask[b, t]:
                assert out.token_loss[b, t] == 0
                continue
            ratio = math.exp(lp[b, t] - old[b, t])
            a = adv[b].item()
            pg = max(-a * ratio, -a * min(max(ratio, 1 - eps), 1 + eps))
            d = (ref[b, t] - lp[b, t]).item()
            kl = math.exp(d) - 1 - d
            assert out.token_loss[b, t].item() == pytest.approx(pg + beta * kl, rel=1e-6)
    # ratio e^0.5 = 1.65 with A > 0 is clipped at 1.2: the gradient of that token vanishes
    assert out.clipped[0, 0] == 1
    lp2 = lp.clone().requires_grad_()
    grpo_token_loss(lp2, old, ref, adv, mask, eps, 0.0).token_loss.sum().backward()
    assert lp2.grad[0, 0] == 0 and lp2.grad[0, 1] != 0


def test_bradley_terry_loss_accuracy_and_margin():
    chosen, rejected = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([0.5, 1.0, 0.5])
    out = bradley_terry_loss(chosen, rejected)
    for i, d in enumerate([1.5, -2.0, 0.0]):
        assert out.losses[i].item() == pytest.approx(math.log(1 + math.exp(-d)), rel=1e-6)
    assert out.margins.tolist() == pytest.approx([1.5, -2.0, 0.0])
    assert out.accuracy.tolist() == [1.0, 0.0, 0.0]  # a tie is not a win
    with_margin = bradley_terry_loss(chosen, rejected, margin=torch.tensor([1.0, 0.0, 2.0]))
    for i, d in enumerate([0.5, -2.0, -2.0]):
        assert with_margin.losses[i].item() == pytest.approx(math.log(1 + math.exp(-d)), rel=1e-6)
