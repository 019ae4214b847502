"""The OLMo 2 transformer.

The choices that make it OLMo 2 (OLMo 2 paper §2.3; allenai/OLMo-core `ReorderedNormTransformerBlock`;
transformers `Olmo2DecoderLayer`):

- **Reordered norm**: the RMSNorm sits on each sublayer's *output*, inside the residual branch:
  `h = x + norm(attn(x)); out = h + norm(mlp(h))`. No input norms; a final RMSNorm before the head.
- **QK-norm** over the whole q projection (n_heads·head_dim) and k projection (n_kv·head_dim),
  before the split into heads and before RoPE.
- **RoPE** θ = 500 000, rotate-half, computed in fp32.
- **SwiGLU** `down(silu(gate x) * up x)`; no biases anywhere; untied embeddings; optional GQA.
- RMSNorm eps 1e-6, normalise in fp32, multiply by the weight in fp32, cast back.
- The loss (cross-entropy plus z-loss, in fp32) is in `olmo2.model.loss`.

Attention runs through `scaled_dot_product_attention` (flash kernels on GPU). Single-token
decoding with a KV cache takes a leaner path (`Block.decode`: same math, fewer tensor ops).
Tensor-shape suffixes: B batch, T query length, S key length, D model width, H heads, K kv
heads, E head dim, V vocab.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from olmo2.model.config import ModelConfig
from olmo2.model.skinny import SkinnyLinear, decode_linear


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # one call; same math as x·rsqrt(mean(x²)+eps)·w, all in fp32
        w = self.weight
        if x.dtype == w.dtype == torch.float32:  # skip the no-op casts (decoding is op-bound)
            return F.rms_norm(x, w.shape, w, self.eps)
        return F.rms_norm(x.float(), w.shape, w.float(), self.eps).to(x.dtype)


def rope_cos_sin(positions_BT: torch.Tensor, head_dim: int, theta: float):
    """fp32 cos/sin tables [B, 1, T, E] for integer positions."""
    inv_freq = 1.0 / theta ** (
        torch.arange(0, head_dim, 2, device=positions_BT.device, dtype=torch.float32) / head_dim
    )
    freqs = positions_BT.float()[..., None] * inv_freq  # B T E/2
    emb = torch.cat((freqs, freqs), dim=-1)[:, None]
    return emb.cos(), emb.sin()


def apply_rope(x_BHTE: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x = x_BHTE.float()
    x1, x2 = x.chunk(2, dim=-1)
    return (x * cos + torch.cat((-x2, x1), dim=-1) * sin).to(x_BHTE.dtype)


@functools.lru_cache(maxsize=8)
def _rotate_half_matrix(E: int, device: torch.device) -> torch.Tensor:
    """R [E, E] with x @ R == cat(-x2, x1) (exact: one ±1 per column)."""
    with torch.inference_mode(False):
        R, h = torch.zeros(E, E, device=device), E // 2
        R[torch.arange(h, E), torch.arange(h)] = -1.0
        R[torch.arange(h), torch.arange(h, E)] = 1.0
        return R


def rope_matrix(cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """M [B, E, E] = diag(cos) + R·diag(sin) for fp32 cos/sin of one position per row, so that
    x @ M == apply_rope(x, cos, sin): decoding applies RoPE as one bmm instead of ~8 ops."""
    B, E = cos.shape[0], cos.shape[-1]
    R = _rotate_half_matrix(E, cos.device)
    return torch.diag_embed(cos.reshape(B, E)).addcmul_(R, sin.reshape(B, 1, E))


@functools.lru_cache(maxsize=32)
def _mean_col(n: int, eps: float, device: torch.device):
    """(column of 1/n [n, 1], [eps]) in fp32: mean(x²) + eps of rows as one addmm."""
    with torch.inference_mode(False):  # constants usable outside inference mode too
        col = torch.full((n, 1), 1.0 / n, device=device)
        return col, torch.tensor([eps], device=device)


def _rsqrt_mean_sq(x_BN: torch.Tensor, eps: float) -> torch.Tensor:
    """rsqrt(mean(x²) + eps) [B, 1] of fp32 rows in 3 ops (F.rms_norm takes ~8 on CPU)."""
    col, e = _mean_col(x_BN.shape[-1], eps, x_BN.device)
    return torch.addmm(e, x_BN * x_BN, col).rsqrt_()


def _mm(x_BN: torch.Tensor, w) -> torch.Tensor:
    """x @ w for a transposed weight view (see `DecodeWeights`), or w(x) for a module or a
    `SkinnyLinear`."""
    return torch.mm(x_BN, w) if isinstance(w, torch.Tensor) else w(x_BN)


def _norm(norm: RMSNorm, x_BN: torch.Tensor) -> torch.Tensor:
    """norm(x) of [B, N] rows for decoding (fp32 only; other dtypes call `norm`)."""
    if x_BN.dtype != torch.float32:
        return norm(x_BN)
    return x_BN * _rsqrt_mean_sq(x_BN, norm.eps) * norm.weight


def _add_norm(h_BD: torch.Tensor, norm: RMSNorm, y_BD: torch.Tensor) -> torch.Tensor:
    """h + norm(y) for decoding, as `_norm`."""
    if y_BD.dtype != torch.float32:
        return h_BD + norm(y_BD)
    return torch.addcmul(h_BD, y_BD * _rsqrt_mean_sq(y_BD, norm.eps), norm.weight)


@dataclass
class DecodeWeights:
    """One block's weights arranged for single-token decoding (`Block.decode`): each linear
    as `skinny.decode_linear` gives it (a `SkinnyLinear` over a large fp32 CPU weight, else a
    transposed view for `torch.mm` with no per-step transpose) or, for a quantized linear,
    the module itself; q and k norms fused into one (their weights
    concatenated; for fp32 weights the attention scale 1/√E folded into q's, which RoPE
    commutes with).
    Both follow in-place weight updates; build anew after replacing parameters."""

    q: torch.Tensor | nn.Module | SkinnyLinear
    k: torch.Tensor | nn.Module | SkinnyLinear
    v: torch.Tensor | nn.Module | SkinnyLinear
    out: torch.Tensor | nn.Module | SkinnyLinear
    gate: torch.Tensor | nn.Module | SkinnyLinear
    up: torch.Tensor | nn.Module | SkinnyLinear
    down: torch.Tensor | nn.Module | SkinnyLinear
    qk_weight: torch.Tensor
    """fp32 [H+K, E]: q_norm.weight (/√E for fp32 weights) ‖ k_norm.weight."""
    qk_mean: torch.Tensor
    """fp32 [(H+K)·E, H+K]: column h averages the squares of head h's group (all q features
    for a q head, all k features for a k head), so one addmm gives every head its norm."""
    eps: torch.Tensor

    @classmethod
    def of(cls, block: Block) -> DecodeWeights:
        a, f = block.attention, block.feed_forward
        c = a.config
        nq, nk = c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim
        dev = a.q_norm.weight.device

        def t(m):
            return decode_linear(m.weight) if type(m) is nn.Linear else m

        fp32 = a.q_norm.weight.dtype == torch.float32
        scale = c.head_dim**-0.5 if fp32 else 1.0
        qk_weight = torch.cat((a.q_norm.weight.float() * scale, a.k_norm.weight.float()))
        H, K = c.n_heads, c.n_kv_heads
        qk_mean = torch.zeros(nq + nk, H + K, device=dev)
        qk_mean[:nq, :H], qk_mean[nq:, H:] = 1.0 / nq, 1.0 / nk
        return cls(
            t(a.w_q), t(a.w_k), t(a.w_v), t(a.w_out), t(f.w1), t(f.w3), t(f.w2),
            qk_weight.detach().view(H + K, c.head_dim), qk_mean,
            torch.tensor([c.norm_eps], device=dev),
        )  # fmt: skip


class KVCache:
    """Preallocated keys/values for batched decoding of left-padded prompts.

    Slot s of row b holds the token at position `s - left_pad[b]`; slots before `left_pad[b]`
    are padding and never attended to.
    """

    def __init__(
        self,
        config: ModelConfig,
        batch: int,
        max_len: int,
        left_pad: torch.Tensor,
        dtype: torch.dtype,
        device: torch.device | str,
    ):
        shape = (config.n_layers, batch, config.n_kv_heads, max_len, config.head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.left_pad = left_pad.to(device)
        self.length = 0
        self.decode_weights: list[DecodeWeights] | None = None
        """`Olmo2.decode_weights()` for this generation call; None: built per step."""
        self.max_len = max_len
        slots = torch.arange(max_len, device=self.left_pad.device)
        self.valid = slots[None] >= self.left_pad[:, None]  # B S: not a padding slot
        self.padded = bool(self.left_pad.any())
        self.valid_B11S = self.valid[:, None, None]
        positions = (slots[None] - self.left_pad[:, None]).clamp(min=0)
        self.cos, self.sin = rope_cos_sin(positions, config.head_dim, config.rope_theta)

    def index_rows(self, rows: torch.Tensor) -> None:
        """Keep rows `rows` of the batch, in that order (repeats allowed): e.g. prefill each
        distinct prompt once, then repeat its row for every sample of it."""
        self.k, self.v = self.k.index_select(1, rows), self.v.index_select(1, rows)
        self.left_pad, self.valid = self.left_pad[rows], self.valid[rows]
        self.valid_B11S = self.valid[:, None, None]
        self.cos, self.sin = self.cos.index_select(0, rows), self.sin.index_select(0, rows)

    def rope(self, T: int):
        """fp32 cos/sin [B, 1, T, E] of the next T slots (computed once per cache)."""
        return self.cos.narrow(2, self.length, T), self.sin.narrow(2, self.length, T)

    def mask(self, T: int) -> torch.Tensor | None:
        """Bool [B, 1, T, S]: causal over slots, padding slots hidden (a padding query sees
        itself only, which keeps softmax finite). None when every key may be seen: a single
        new token and no padding."""
        S = self.length + T
        if T == 1:
            return self.valid_B11S[..., :S] if self.padded else None
        q = torch.arange(self.length, S, device=self.left_pad.device)[:, None]
        k = torch.arange(S, device=self.left_pad.device)[None]
        return ((k <= q)[None] & self.valid[:, None, :S] | (k == q)[None])[:, None]

    def update(self, layer: int, k_BKTE: torch.Tensor, v_BKTE: torch.Tensor):
        T = k_BKTE.shape[2]
        if self.length + T > self.max_len:
            raise ValueError(f"KV cache full: {self.length}+{T} > max_len {self.max_len}")
        k, v = self.k[layer], self.v[layer]
        k.narrow(2, self.length, T).copy_(k_BKTE)
        v.narrow(2, self.length, T).copy_(v_BKTE)
        return k.narrow(2, 0, self.length + T), v.narrow(2, 0, self.length + T)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, layer: int):
        super().__init__()
        d, kv = config.d_model, config.n_kv_heads * config.head_dim
        self.layer, self.config = layer, config
        self.w_q = nn.Linear(d, d, bias=False)
        self.w_k = nn.Linear(d, kv, bias=False)
        self.w_v = nn.Linear(d, kv, bias=False)
        self.w_out = nn.Linear(d, d, bias=False)
        self.q_norm = RMSNorm(d, config.norm_eps)
        self.k_norm = RMSNorm(kv, config.norm_eps)

    def forward(self, x_BTD, cos, sin, mask=None, cache: KVCache | None = None):
        B, T, _ = x_BTD.shape
        c = self.config
        q = self.q_norm(self.w_q(x_BTD)).view(B, T, c.n_heads, c.head_dim).transpose(1, 2)
        k = self.k_norm(self.w_k(x_BTD)).view(B, T, c.n_kv_heads, c.head_dim).transpose(1, 2)
        v = self.w_v(x_BTD).view(B, T, c.n_kv_heads, c.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(self.layer, k, v)
        gqa = c.n_kv_heads != c.n_heads
        if mask is None:  # plain causal; a single query (decoding) sees every cached key
            y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1, enable_gqa=gqa)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        return self.w_out(y.transpose(1, 2).reshape(B, T, c.d_model))


class FeedForward(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.w1 = nn.Linear(config.d_model, config.ffn_hidden, bias=False)  # gate
        self.w3 = nn.Linear(config.d_model, config.ffn_hidden, bias=False)  # up
        self.w2 = nn.Linear(config.ffn_hidden, config.d_model, bias=False)  # down

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer: int):
        super().__init__()
        self.attention = Attention(config, layer)
        self.attention_norm = RMSNorm(config.d_model, config.norm_eps)
        self.feed_forward = FeedForward(config)
        self.feed_forward_norm = RMSNorm(config.d_model, config.norm_eps)

    def forward(self, x, cos, sin, mask=None, cache=None):
        """x [B, T, D]; or x [B, D]: one decoding step with `cache`, where `cos` is the
        `rope_matrix`, `sin` unused and `mask` the additive bias of `decode` (so a sharded
        block stays one module call: FSDP hooks run)."""
        if x.dim() == 2:
            return self.decode(x, cos, mask, cache)
        h = x + self.attention_norm(self.attention(x, cos, sin, mask, cache))
        return h + self.feed_forward_norm(self.feed_forward(h))

    def decode(self, x_BD, rope_BEE, bias, cache: KVCache) -> torch.Tensor:
        """`forward` for one new token per row on [B, D] in about half the tensor ops (no
        nn.Module calls inside, q/k norms fused, RoPE of q and k in one bmm, attention as two
        matmuls, `bias` [B, 1, 1, S] additive mask or None): small models decode op-bound."""
        a, B, dtype = self.attention, x_BD.shape[0], x_BD.dtype
        H, K, E = a.config.n_heads, a.config.n_kv_heads, a.config.head_dim
        w = cache.decode_weights[a.layer] if cache.decode_weights else DecodeWeights.of(self)
        qk = torch.cat((_mm(x_BD, w.q), _mm(x_BD, w.k)), 1).float()  # [B, (H+K)·E]
        r = torch.addmm(w.eps, qk * qk, w.qk_mean).rsqrt_()  # [B, H+K]: 1/rms of each head
        qk = (qk.view(B, H + K, E) * r[:, :, None]).mul_(w.qk_weight)
        if dtype != torch.float32:  # the norm's output dtype, as `forward` rounds it
            qk = qk.to(dtype).float()
        qk = torch.bmm(qk, rope_BEE).to(dtype)  # RoPE of q and k heads, in fp32
        k, v = cache.update(a.layer, qk[:, H:, None], _mm(x_BD, w.v).view(B, K, 1, E))
        if dtype == torch.float32:  # q carries the 1/√E scale (`DecodeWeights`)
            S, G = k.shape[2], H // K  # heads sharing a kv head become rows of one bmm
            s = torch.bmm(qk[:, :H].reshape(B * K, G, E), k.reshape(B * K, S, E).transpose(1, 2))
            if bias is not None:
                s.view(B, K, G, S).add_(bias)
            y = torch.bmm(s.softmax(-1), v.reshape(B * K, S, E)).view(B, H * E)
        else:  # SDPA keeps the scores in fp32
            q = qk[:, :H, None]
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, enable_gqa=K != H)
            y = y.view(B, H * E)
        h = _add_norm(x_BD, self.attention_norm, _mm(y, w.out))
        y = _mm(F.silu(_mm(h, w.gate)) * _mm(h, w.up), w.down)
        return _add_norm(h, self.feed_forward_norm, y)


class Olmo2(nn.Module):
    """The OLMo 2 decoder. `forward(input_ids) -> logits [B, T, V]`."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embeddings = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layers))
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.activation_checkpointing = False

    @classmethod
    def build(cls, config: ModelConfig, device="cpu", dtype=torch.float32, init=True) -> Olmo2:
        """Construct on the meta device, materialise on `device`, then initialise."""
        with torch.device("meta"):
            model = cls(config)
        model = model.to_empty(device=device).to(dtype)
        if init:
            model.init_weights()
        return model

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """Every linear and embedding weight ~ trunc-normal(0, 0.02, a=-0.06, b=0.06) with no
        depth or fan-in scaling (OLMo-core `InitMethod.normal`); every RMSNorm weight = 1."""
        std = self.config.init_std
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(m.weight, 0.0, std, -3 * std, 3 * std, generator=generator)
            elif isinstance(m, RMSNorm):
                m.weight.fill_(1.0)

    def forward(
        self,
        input_ids: torch.Tensor,
        doc_ids: torch.Tensor | None = None,
        cache: KVCache | None = None,
        last_only: bool = False,
        logits_from: int = 0,
    ) -> torch.Tensor:
        """input_ids [B, T] -> logits [B, T, V] (or [B, 1, V] with `last_only`, or
        [B, T − logits_from, V]: callers scoring only a suffix skip the rest of the LM head).

        `doc_ids` [B, T] (same id = same document) restricts attention to the token's own
        document (intra-document masking). `cache` decodes incrementally.
        """
        B, T = input_ids.shape
        if cache is not None and T == 1:
            return self._decode(input_ids, cache)
        mask = None
        if cache is not None:
            (cos, sin), mask = cache.rope(T), cache.mask(T)
        else:
            positions = torch.arange(T, device=input_ids.device)[None]
            cos, sin = rope_cos_sin(positions, self.config.head_dim, self.config.rope_theta)
            if doc_ids is not None:
                causal = torch.ones(T, T, dtype=torch.bool, device=input_ids.device).tril()
                mask = (causal & (doc_ids[:, :, None] == doc_ids[:, None, :]))[:, None]
        h = self.embeddings(input_ids)
        for block in self.blocks:
            if self.activation_checkpointing and self.training:
                h = torch.utils.checkpoint.checkpoint(block, h, cos, sin, mask, use_reentrant=False)
            else:
                h = block(h, cos, sin, mask, cache)
        if cache is not None:
            cache.length += T
        if last_only:
            h = h[:, -1:]
        elif logits_from:
            h = h[:, logits_from:]
        return self.lm_head(self.norm(h))

    def decode_weights(self) -> list[DecodeWeights]:
        """Per-block `DecodeWeights`, built once per generation call (not for FSDP-sharded
        blocks, whose weights exist only inside their forward)."""
        return [DecodeWeights.of(b) for b in self.blocks]

    def _decode(self, ids_B1: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """`forward` for one new token per row: [B, D] activations through `Block.decode`."""
        rope, mask = rope_matrix(*cache.rope(1)), cache.mask(1)
        bias, h_dtype = None, self.embeddings.weight.dtype  # one additive mask for all layers
        if mask is not None:
            bias = torch.zeros(mask.shape, dtype=h_dtype, device=mask.device)
            bias.masked_fill_(~mask, -torch.inf)
        h = F.embedding(ids_B1[:, 0], self.embeddings.weight)  # [B, D]
        for block in self.blocks:  # sharded blocks need their module call (FSDP hooks)
            h = (
                block.decode(h, rope, bias, cache)
                if cache.decode_weights
                else block(h, rope, None, bias, cache)
            )
        cache.length += 1
        head = self.lm_head
        logits = _mm(
            _norm(self.norm, h), decode_linear(head.weight) if type(head) is nn.Linear else head
        )
        return logits[:, None]
