"""Each post-training loss against a hand computation on fixed numbers."""

from __future__ import annotations

import math

import pytest
import torch

from olmo2.post.losses import (
    bradley_terry_loss,
    dpo_loss,
    explained_variance,
    gae,
    group_advantages,
    grpo_token_loss,
    k3_kl,
    kl_reward,
    masked_ce,
    ppo_policy_loss,
    ppo_value_loss,
    sequence_logps,
    token_logps,
    whiten,
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


# ---- PPO ----------------------------------------------------------------------------------------

# two rows of five columns: a prompt column, then 3 and 2 response tokens, then padding
PPO_MASK = torch.tensor([[0, 1, 1, 1, 0], [0, 1, 1, 0, 0]])
PPO_REWARDS = torch.tensor([[9.0, 0.1, -0.2, 10.0, 5.0], [7.0, 0.3, -10.0, 4.0, 4.0]])
PPO_VALUES = torch.tensor([[3.0, 1.0, 2.0, 4.0, 8.0], [6.0, -1.0, 0.5, 2.0, 2.0]])


def _gae_by_hand(rewards, values, mask, gamma, lam):
    """The textbook loop on each row's response tokens alone (V after the last token = 0)."""
    adv, ret = [[0.0] * len(r) for r in rewards], [[0.0] * len(r) for r in rewards]
    for i, row in enumerate(mask):
        idx = [t for t, m in enumerate(row) if m]
        r, v = [rewards[i][t] for t in idx], [values[i][t] for t in idx]
        a = 0.0
        for j in reversed(range(len(idx))):
            nv = v[j + 1] if j + 1 < len(idx) else 0.0
            a = r[j] + gamma * nv - v[j] + gamma * lam * a
            adv[i][idx[j]], ret[i][idx[j]] = a, a + v[j]
    return adv, ret


@pytest.mark.parametrize("gamma", [1.0, 0.9])
@pytest.mark.parametrize("lam", [0.0, 0.95, 1.0])
def test_gae_equals_hand_loop_with_masks(gamma, lam):
    adv, ret = gae(PPO_REWARDS, PPO_VALUES, PPO_MASK, gamma, lam)
    want_a, want_r = _gae_by_hand(
        PPO_REWARDS.tolist(), PPO_VALUES.tolist(), PPO_MASK.tolist(), gamma, lam
    )
    assert torch.allclose(adv, torch.tensor(want_a), atol=1e-6)
    assert torch.allclose(ret, torch.tensor(want_r), atol=1e-6)


def test_gae_closed_forms():
    """λ = 0: A_t = δ_t (one-step TD); γ = λ = 1: R_t = the sum of the rewards to go."""
    r, v, m = PPO_REWARDS, PPO_VALUES, PPO_MASK
    adv, _ = gae(r, v, m, 1.0, 0.0)
    # row 0: tokens 1..3; δ1 = 0.1 + 2 − 1, δ2 = −0.2 + 4 − 2, δ3 = 10 + 0 − 4
    assert adv[0].tolist() == pytest.approx([0.0, 1.1, 1.8, 6.0, 0.0])
    _, ret = gae(r, v, m, 1.0, 1.0)
    assert ret[0].tolist() == pytest.approx([0.0, 9.9, 9.8, 10.0, 0.0])
    assert ret[1].tolist() == pytest.approx([0.0, -9.7, -10.0, 0.0, 0.0])
    _, ret = gae(r, v, m, 0.5, 1.0)  # discounted reward to go
    assert ret[0, 1].item() == pytest.approx(0.1 + 0.5 * -0.2 + 0.25 * 10.0)


def test_whiten_masked_mean_and_unbiased_var():
    x = torch.tensor([[100.0, 1.0, 2.0, 3.0], [-50.0, 4.0, -100.0, 7.0]])
    m = torch.tensor([[0, 1, 1, 1], [0, 1, 0, 1]])
    vals = [1.0, 2.0, 3.0, 4.0, 7.0]
    mean = sum(vals) / 5
    var = sum((a - mean) ** 2 for a in vals) / 4
    w = whiten(x, m)
    assert w[0, 1].item() == pytest.approx((1.0 - mean) / math.sqrt(var + 1e-8), rel=1e-6)
    assert w[1, 3].item() == pytest.approx((7.0 - mean) / math.sqrt(var + 1e-8), rel=1e-6)
    assert w[0, 0] == 0 and w[1, 2] == 0
    w2 = whiten(x, m, shift_mean=False)
    assert w2[0, 1].item() == pytest.approx((1.0 - mean) / math.sqrt(var + 1e-8) + mean, rel=1e-6)
    with pytest.raises(ValueError, match="two"):
        whiten(x, torch.tensor([[0, 1, 0, 0], [0, 0, 0, 0]]))


def test_ppo_policy_loss_hand():
    logp = torch.tensor([[-1.0, -0.5, -2.0], [-0.1, -3.0, -1.0]])
    old = torch.tensor([[-1.0, -1.0, -1.0], [-0.5, -2.0, -1.0]])
    adv = torch.tensor([[2.0, 1.0, -1.0], [0.5, 3.0, 4.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    out = ppo_policy_loss(logp, old, adv, mask, clip_eps=0.2)
    want, clipped = [], []
    for lp, o, a, m in zip(logp.flatten(), old.flatten(), adv.flatten(), mask.flatten()):
        rho = math.exp(lp - o)
        u, c = -a * rho, -a * min(max(rho, 0.8), 1.2)
        want.append(max(u, c) * m)
        clipped.append(float(c > u) * m)
    assert out.loss.flatten().tolist() == pytest.approx([float(x) for x in want], rel=1e-6)
    assert out.clipped.flatten().tolist() == [float(x) for x in clipped]
    # ratio 1: −A; ρ = e^0.5 with A > 0 is clipped at 1.2, ρ = e^−1 with A < 0 at 0.8
    assert out.loss[0].tolist() == pytest.approx([-2.0, -1.2, 0.8])
    assert out.clipped.tolist() == [[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]]


def test_ppo_value_loss_hand():
    v = torch.tensor([[1.0, 2.0, 0.0], [5.0, -1.0, 3.0]])
    old = torch.tensor([[1.1, 1.0, 0.5], [4.0, -1.1, 0.0]])
    ret = torch.tensor([[2.0, 0.0, -0.5], [6.0, 3.0, 1.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    out = ppo_value_loss(v, old, ret, mask, clip_eps=0.2)
    # 0.5·max((V − R)², (clip(V, V_old ± 0.2) − R)²); the clipped V: 1.0, 1.2, 0.3 / 4.2, −1.0
    want = [[0.5 * 1.0, 0.5 * 4.0, 0.5 * 0.8**2], [0.5 * 1.8**2, 0.5 * 16.0, 0.0]]
    assert out.loss.flatten().tolist() == pytest.approx(sum(want, []), rel=1e-6)
    assert out.clipped.tolist() == [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]


def test_kl_reward_and_explained_variance():
    logp = torch.tensor([[-1.0, -2.0, -0.5]])
    ref = torch.tensor([[-1.5, -1.0, -9.0]])
    r, kl1 = kl_reward(logp, ref, torch.tensor([[1, 1, 0]]), beta=0.05)
    assert kl1[0].tolist() == pytest.approx([0.5, -1.0, 0.0])
    assert r[0].tolist() == pytest.approx([-0.025, 0.05, 0.0])
    m = torch.tensor([[1, 1, 1, 0]])
    ret = torch.tensor([[1.0, 2.0, 3.0, 99.0]])
    assert explained_variance(ret, ret, m) == pytest.approx(1.0)
    assert explained_variance(torch.full_like(ret, 2.0), ret, m) == pytest.approx(0.0)
    # residuals (0, 1, −1): var 1 vs var(R) 1 -> 0; halved residuals -> 1 − 0.25
    v = torch.tensor([[1.0, 1.5, 3.5, 0.0]])
    assert explained_variance(v, ret, m) == pytest.approx(1 - 0.25, rel=1e-6)
