"""The OLMo 2 transformer.

The choices that make it OLMo 2 (OLMo 2 paper §2.3; allenai/OLMo-core `ReorderedNormTransformerBlock`;
transformers `Olmo2DecoderLayer`):

- **Reordered norm**: the RMSNorm sits on each sublayer's *output*, inside the residual branch:
  `h = x + norm(attn(x)); out = h + norm(mlp(h))`. No input norms; a final RMSNorm before the head.
- **QK-norm** over the whole q projection (n_heads·head_dim) and k projection (n_kv·head_dim),
  before the split into heads and before RoPE.
- **RoPE** θ = 500 000, rotate-half, computed in fp32; optional context-extension scaling
  (linear, dynamic NTK, YaRN, llama3) in `olmo2.model.rope`, as transformers applies it.
- **SwiGLU** `down(silu(gate x) * up x)`; no biases anywhere; untied embeddings; optional GQA.
- RMSNorm eps 1e-6, normalise in fp32, multiply by the weight in fp32, cast back.
- The loss (cross-entropy plus z-loss, in fp32) is in `olmo2.model.loss`.

Attention runs through `scaled_dot_product_attention` (flash kernels on GPU). This file is the
readable model and the only forward: training, every scorer and prefill use it. The fast
single-token decode step of CPU inference lives in `olmo2.infer.decode` and is tested against
this forward. Tensor-shape suffixes: B batch, T query length, S key length, D model width,
H heads, K kv heads, E head dim, V vocab.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from olmo2.model.config import ModelConfig
from olmo2.model.documents import Documents, document_attention, documents
from olmo2.model.rope import rope_frequencies


class Cache(Protocol):
    """What `Olmo2.forward` needs of a KV cache (`olmo2.infer.cache` has the implementations).
    One forward of T new tokens per row: `positions(T)` and `mask(T)` are asked once,
    `update` once per layer, then `advance(T)` once."""

    def positions(self, T: int) -> torch.Tensor:
        """[B, T] RoPE positions of the T new tokens."""

    def mask(self, T: int) -> torch.Tensor | None:
        """bool [B, 1, T, S] over the S keys `update` returns (True = may attend); None when
        every query may see every cached key and, for T > 1, causally the new ones."""

    def update(self, layer: int, k_BKTE: torch.Tensor, v_BKTE: torch.Tensor):
        """Store layer `layer`'s new keys/values; return all keys/values [B, K, S, E]."""

    def advance(self, T: int) -> None:
        """The T new tokens are stored in every layer."""


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # one call; same math as x·rsqrt(mean(x²)+eps)·w, all in fp32
        w = self.weight
        if x.dtype == w.dtype == torch.float32:  # skip the no-op casts
            return F.rms_norm(x, w.shape, w, self.eps)
        return F.rms_norm(x.float(), w.shape, w.float(), self.eps).to(x.dtype)


def rope_cos_sin(positions_BT: torch.Tensor, config: ModelConfig):
    """fp32 cos/sin tables [B, 1, T, E] for integer positions (rotate-half layout), with the
    config's RoPE scaling (`olmo2.model.rope`; YaRN's attention factor multiplies both)."""
    dynamic = config.rope_scaling is not None and config.rope_scaling.type == "dynamic"
    top = int(positions_BT.max()) if dynamic and positions_BT.numel() else 0
    inv_freq, factor = rope_frequencies(config, positions_BT.device, top)
    freqs = positions_BT.float()[..., None] * inv_freq  # B T E/2
    emb = torch.cat((freqs, freqs), dim=-1)[:, None]
    if factor == 1.0:
        return emb.cos(), emb.sin()
    return emb.cos() * factor, emb.sin() * factor


def apply_rope(x_BHTE: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x = x_BHTE.float()
    x1, x2 = x.chunk(2, dim=-1)
    return (x * cos + torch.cat((-x2, x1), dim=-1) * sin).to(x_BHTE.dtype)


def attend(q_BHTE, k_BKSE, v_BKSE, mask: torch.Tensor | Documents | None) -> torch.Tensor:
    """SDPA: plain causal (mask None; a single query sees every key), within documents, or
    any boolean mask [B, 1, T, S]."""
    if isinstance(mask, Documents):
        fn = document_attention
        if torch.compiler.is_compiling():  # data-dependent shapes: eager, a graph break
            fn = torch.compiler.disable(document_attention)
        return fn(q_BHTE, k_BKSE, v_BKSE, mask)
    gqa, T = k_BKSE.shape[1] != q_BHTE.shape[1], q_BHTE.shape[2]
    if mask is None:
        return F.scaled_dot_product_attention(
            q_BHTE, k_BKSE, v_BKSE, is_causal=T > 1, enable_gqa=gqa
        )
    return F.scaled_dot_product_attention(q_BHTE, k_BKSE, v_BKSE, attn_mask=mask, enable_gqa=gqa)


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

    def forward(self, x_BTD, cos, sin, mask=None, cache: Cache | None = None):
        B, T, _ = x_BTD.shape
        c = self.config
        q = self.q_norm(self.w_q(x_BTD)).view(B, T, c.n_heads, c.head_dim).transpose(1, 2)
        k = self.k_norm(self.w_k(x_BTD)).view(B, T, c.n_kv_heads, c.head_dim).transpose(1, 2)
        v = self.w_v(x_BTD).view(B, T, c.n_kv_heads, c.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(self.layer, k, v)
        y = attend(q, k, v, mask)
        return self.w_out(y.transpose(1, 2).reshape(B, T, c.d_model))


class FeedForward(nn.Module):
    """SwiGLU: `w_down(silu(w_gate x) * w_up x)`."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.w_gate = nn.Linear(config.d_model, config.ffn_hidden, bias=False)
        self.w_up = nn.Linear(config.d_model, config.ffn_hidden, bias=False)
        self.w_down = nn.Linear(config.ffn_hidden, config.d_model, bias=False)

    def forward(self, x):
        return self.w_down(F.silu(self.w_gate(x)) * self.w_up(x))


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer: int):
        super().__init__()
        self.attention = Attention(config, layer)
        self.attention_norm = RMSNorm(config.d_model, config.norm_eps)
        self.feed_forward = FeedForward(config)
        self.feed_forward_norm = RMSNorm(config.d_model, config.norm_eps)

    def forward(self, x, cos, sin, mask=None, cache: Cache | None = None):
        h = x + self.attention_norm(self.attention(x, cos, sin, mask, cache))
        return h + self.feed_forward_norm(self.feed_forward(h))


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
        *,
        positions: torch.Tensor | None = None,
        doc_ids: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        logits_to_keep: int | torch.Tensor = 0,
    ) -> torch.Tensor:
        """input_ids [B, T] -> logits [B, T, V].

        - `positions` [B, T]: RoPE positions (default 0..T-1); `doc_ids` [B, T] (a run of
          equal ids = one document): intra-document causal attention, without a T×T mask
          (`document_attention`); `attn_mask` bool [B, 1, T, T]: any other pattern (the
          eval harness scores several continuations in one row).
        - `cache`: incremental decoding; positions and mask come from it (`Cache`).
        - `logits_to_keep`: an int k > 0 keeps the last k positions ([B, k, V]); a bool
          [B, T] tensor keeps the positions it marks, as [N, V] in row-major order. Scorers
          of a few positions so skip most of the LM head.
        """
        if sum(x is not None for x in (doc_ids, attn_mask, cache)) > 1 or (
            cache is not None and positions is not None
        ):
            raise ValueError(
                "a cache sets positions and mask; doc_ids and attn_mask exclude each other"
            )
        T = input_ids.shape[1]
        mask = attn_mask if doc_ids is None else documents(doc_ids)
        if cache is not None:
            positions, mask = cache.positions(T), cache.mask(T)
        elif positions is None:
            positions = torch.arange(T, device=input_ids.device)[None]
        cos, sin = rope_cos_sin(positions, self.config)
        h = self.embeddings(input_ids)
        for block in self.blocks:
            if self.activation_checkpointing and self.training:
                h = torch.utils.checkpoint.checkpoint(block, h, cos, sin, mask, use_reentrant=False)
            else:
                h = block(h, cos, sin, mask, cache)
        if cache is not None:
            cache.advance(T)
        if isinstance(logits_to_keep, torch.Tensor):
            h = h[logits_to_keep]
        elif logits_to_keep:
            h = h[:, -logits_to_keep:]
        return self.lm_head(self.norm(h))
