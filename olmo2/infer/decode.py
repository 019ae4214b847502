"""The fast single-token decode step of CPU inference.

Small models decode op-bound: every tensor op costs microseconds of dispatch whatever its
size. This step computes exactly `Olmo2.forward` for one new token per row, on [B, D]
activations, in about half the ops: no nn.Module calls, q and k norms fused into one addmm,
RoPE of q and k heads as one bmm, attention as two bmms (fp32), and each linear through
`olmo2.infer.skinny` (the CPU matmul kernel) or a pre-transposed weight view. It is tested
against the model's forward (tests/infer/test_decode.py); sharded (FSDP) models decode
through the forward instead, whose module calls run the FSDP hooks.

Use: `weights = decode_weights(model)` once per generation call (the views follow in-place
weight updates; build anew after replacing parameters), then
`logits_BV = decode_step(model, weights, ids_B, cache)` per token, with any `Cache`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from olmo2.infer.skinny import SkinnyLinear, decode_linear
from olmo2.model.transformer import Block, Cache, Olmo2, RMSNorm, rope_cos_sin

Linear = torch.Tensor | nn.Module | SkinnyLinear
"""How decoding multiplies by a weight: a transposed view for `torch.mm`, a `SkinnyLinear`
or (for quantized layers) the module itself."""


def _mm(x_BN: torch.Tensor, w: Linear) -> torch.Tensor:
    return torch.mm(x_BN, w) if isinstance(w, torch.Tensor) else w(x_BN)


def _linear(m: nn.Module) -> Linear:
    return decode_linear(m.weight) if type(m) is nn.Linear else m


@dataclass
class BlockWeights:
    """One block's weights arranged for `decode_block`: each linear as `_linear` gives it; q
    and k norms fused into one (weights concatenated; for fp32 weights the attention scale
    1/√E folded into q's, which RoPE commutes with)."""

    q: Linear
    k: Linear
    v: Linear
    out: Linear
    gate: Linear
    up: Linear
    down: Linear
    qk_weight: torch.Tensor
    """fp32 [H+K, E]: q_norm.weight (/√E for fp32 weights) ‖ k_norm.weight."""
    qk_mean: torch.Tensor
    """fp32 [(H+K)·E, H+K]: column h averages the squares of head h's group (all q features
    for a q head, all k features for a k head), so one addmm gives every head its norm."""
    eps: torch.Tensor
    attention_norm: RMSNorm
    feed_forward_norm: RMSNorm
    heads: tuple[int, int, int]
    """(H, K, E): query heads, kv heads, head dim."""

    @classmethod
    def of(cls, block: Block) -> BlockWeights:
        a, f, c = block.attention, block.feed_forward, block.attention.config
        H, K, E = c.n_heads, c.n_kv_heads, c.head_dim
        dev = a.q_norm.weight.device
        scale = E**-0.5 if a.q_norm.weight.dtype == torch.float32 else 1.0
        qk_weight = torch.cat((a.q_norm.weight.float() * scale, a.k_norm.weight.float()))
        qk_mean = torch.zeros((H + K) * E, H + K, device=dev)
        qk_mean[: H * E, :H], qk_mean[H * E :, H:] = 1.0 / (H * E), 1.0 / (K * E)
        return cls(
            _linear(a.w_q), _linear(a.w_k), _linear(a.w_v), _linear(a.w_out),
            _linear(f.w_gate), _linear(f.w_up), _linear(f.w_down),
            qk_weight.detach().view(H + K, E), qk_mean,
            torch.tensor([c.norm_eps], device=dev), block.attention_norm, block.feed_forward_norm,
            (H, K, E),
        )  # fmt: skip


@dataclass
class DecodeWeights:
    blocks: list[BlockWeights]
    lm_head: Linear


def decode_weights(model: Olmo2) -> DecodeWeights:
    return DecodeWeights([BlockWeights.of(b) for b in model.blocks], _linear(model.lm_head))


@functools.lru_cache(maxsize=32)
def _mean_col(n: int, eps: float, device: torch.device):
    """(column of 1/n [n, 1], [eps]) in fp32: mean(x²) + eps of rows as one addmm."""
    with torch.inference_mode(False):  # constants usable outside inference mode too
        return torch.full((n, 1), 1.0 / n, device=device), torch.tensor([eps], device=device)


def _norm(norm: RMSNorm, x_BN: torch.Tensor) -> torch.Tensor:
    """norm(x) of fp32 rows in 3 ops (F.rms_norm takes ~8 on CPU); other dtypes call `norm`."""
    if x_BN.dtype != torch.float32:
        return norm(x_BN)
    col, e = _mean_col(x_BN.shape[-1], norm.eps, x_BN.device)
    return x_BN * torch.addmm(e, x_BN * x_BN, col).rsqrt_() * norm.weight


def _add_norm(h_BD: torch.Tensor, norm: RMSNorm, y_BD: torch.Tensor) -> torch.Tensor:
    """h + norm(y), as `_norm`."""
    if y_BD.dtype != torch.float32:
        return h_BD + norm(y_BD)
    col, e = _mean_col(y_BD.shape[-1], norm.eps, y_BD.device)
    return torch.addcmul(h_BD, y_BD * torch.addmm(e, y_BD * y_BD, col).rsqrt_(), norm.weight)


@functools.lru_cache(maxsize=8)
def _rotate_half_matrix(E: int, device: torch.device) -> torch.Tensor:
    """R [E, E] with x @ R == cat(-x2, x1) (exact: one ±1 per column)."""
    with torch.inference_mode(False):
        R, h = torch.zeros(E, E, device=device), E // 2
        R[torch.arange(h, E), torch.arange(h)] = -1.0
        R[torch.arange(h), torch.arange(h, E)] = 1.0
        return R


def rope_matrix(cos_B11E: torch.Tensor, sin_B11E: torch.Tensor) -> torch.Tensor:
    """M [B, E, E] = diag(cos) + R·diag(sin), so that x @ M == apply_rope(x, cos, sin) for one
    position per row: RoPE as one bmm instead of ~8 ops."""
    B, E = cos_B11E.shape[0], cos_B11E.shape[-1]
    R = _rotate_half_matrix(E, cos_B11E.device)
    return torch.diag_embed(cos_B11E.reshape(B, E)).addcmul_(R, sin_B11E.reshape(B, 1, E))


def decode_block(w: BlockWeights, layer: int, x_BD, rope_BEE, bias, cache: Cache):
    """`Block.forward` of one new token per row; `bias` [B, 1, 1, S] additive mask or None."""
    B, dtype, (H, K, E) = x_BD.shape[0], x_BD.dtype, w.heads
    qk = torch.cat((_mm(x_BD, w.q), _mm(x_BD, w.k)), 1).float()  # [B, (H+K)·E]
    r = torch.addmm(w.eps, qk * qk, w.qk_mean).rsqrt_()  # [B, H+K]: 1/rms of each head
    qk = (qk.view(B, H + K, E) * r[:, :, None]).mul_(w.qk_weight)
    if dtype != torch.float32:  # the norm's output dtype, as the forward rounds it
        qk = qk.to(dtype).float()
    qk = torch.bmm(qk, rope_BEE).to(dtype)  # RoPE of q and k heads, in fp32
    k, v = cache.update(layer, qk[:, H:, None], _mm(x_BD, w.v).view(B, K, 1, E))
    if dtype == torch.float32:  # q carries the 1/√E scale (`BlockWeights`)
        S, G = k.shape[2], H // K  # heads sharing a kv head become rows of one bmm
        s = torch.bmm(qk[:, :H].reshape(B * K, G, E), k.reshape(B * K, S, E).transpose(1, 2))
        if bias is not None:
            s.view(B, K, G, S).add_(bias)
        y = torch.bmm(s.softmax(-1), v.reshape(B * K, S, E)).view(B, H * E)
    else:  # SDPA keeps the scores in fp32
        q = qk[:, :H, None]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, enable_gqa=K != H)
        y = y.view(B, H * E)
    h = _add_norm(x_BD, w.attention_norm, _mm(y, w.out))
    y = _mm(F.silu(_mm(h, w.gate)) * _mm(h, w.up), w.down)
    return _add_norm(h, w.feed_forward_norm, y)


def decode_step(model: Olmo2, weights: DecodeWeights, ids_B: torch.Tensor, cache: Cache):
    """logits [B, V] of one new token per row: `model(ids[:, None], cache=cache)[:, 0]`."""
    cos, sin = rope_cos_sin(cache.positions(1), model.config)
    rope, mask = rope_matrix(cos, sin), cache.mask(1)
    bias, h_dtype = None, model.embeddings.weight.dtype  # one additive mask for all layers
    if mask is not None:
        bias = torch.zeros(mask.shape, dtype=h_dtype, device=mask.device)
        bias.masked_fill_(~mask, -torch.inf)
    h = F.embedding(ids_B, model.embeddings.weight)  # [B, D]
    for layer, w in enumerate(weights.blocks):
        h = decode_block(w, layer, h, rope, bias, cache)
    cache.advance(1)
    return _mm(_norm(model.norm, h), weights.lm_head)
