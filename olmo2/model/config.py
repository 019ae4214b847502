"""Model configuration and the registry of named OLMo 2 sizes.

Shapes are the published ones (allenai/OLMo configs official-0425/-1124, OLMo-core
`TransformerConfig.olmo2_*` in src/olmo_core/nn/transformer/config.py).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from olmo2.model.rope import RopeScaling

DOLMA2_VOCAB = 100_278  # tokenizer ids (100k merges + 22 added tokens)
EOS_TOKEN_ID = 100_257
PAD_TOKEN_ID = 100_277


def pad_vocab(n: int, multiple: int = 128) -> int:
    """Round the tokenizer vocab up to a multiple of 128 (OLMo-core `padded_vocab_size`):
    100 278 -> 100 352 embedding rows."""
    return multiple * math.ceil(n / multiple)


def swiglu_hidden(d_model: int, multiplier: float = 1.0, multiple_of: int = 256) -> int:
    """OLMo-core `llama_like` rule: int(8d/3) times a multiplier, rounded up to a multiple of 256."""
    hidden = int(int(8 * d_model / 3) * multiplier)
    return multiple_of * math.ceil(hidden / multiple_of)


@dataclass
class ModelConfig:
    """Shape and constants of an OLMo 2 transformer."""

    d_model: int = 2048
    """Width of the residual stream."""
    n_layers: int = 16
    """Number of transformer blocks."""
    n_heads: int = 16
    """Attention (query) heads; head_dim = d_model // n_heads."""
    n_kv_heads: int | None = None
    """Key/value heads for grouped-query attention (None = n_heads)."""
    ffn_hidden: int = 8192
    """SwiGLU hidden size of each of the gate/up projections."""
    vocab_size: int = pad_vocab(DOLMA2_VOCAB)
    """Embedding / LM-head rows (the tokenizer vocab padded to a multiple of 128)."""
    max_seq_len: int = 4096
    """Context length: pretraining's, or the extended one with `rope_scaling` (caches and
    evaluation windows are sized from it; RoPE itself has no hard limit)."""
    rope_theta: float = 500_000.0
    """RoPE base θ; raising it is "ABF" context extension (OLMo-core `ABFRoPEScalingConfig`)."""
    rope_scaling: RopeScaling | None = None
    """Linear, dynamic-NTK, YaRN or llama3 RoPE scaling (`olmo2.model.rope`); None = plain RoPE."""
    norm_eps: float = 1e-6
    init_std: float = 0.02
    """Every weight ~ trunc-normal(0, init_std, ±3·init_std); no depth scaling in OLMo 2."""
    eos_token_id: int | None = EOS_TOKEN_ID
    pad_token_id: int | None = PAD_TOKEN_ID
    bos_token_id: int | None = None

    def __post_init__(self) -> None:
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"n_heads={self.n_heads} is not divisible by n_kv_heads={self.n_kv_heads}"
            )
        for name in ("eos_token_id", "pad_token_id", "bos_token_id"):
            tid = getattr(self, name)
            if tid is not None and not 0 <= tid < self.vocab_size:
                raise ValueError(f"{name}={tid} is outside the vocabulary (size {self.vocab_size})")
        if self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} must be even for RoPE")
        if isinstance(self.rope_scaling, dict):
            self.rope_scaling = RopeScaling.from_dict(self.rope_scaling)
        s = self.rope_scaling
        if s is not None and s.type == "dynamic" and self.max_seq_len != dynamic_context(s):
            # transformers keeps only L0 (as max_position_embeddings) for dynamic scaling
            raise ValueError(
                f"dynamic RoPE scaling: max_seq_len must be factor x original_max_seq_len = "
                f"{dynamic_context(s)}, got {self.max_seq_len}"
            )

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def with_context(self, seq_len: int, scaling: str = "yarn", **options) -> ModelConfig:
        """This model extended to `seq_len` tokens with RoPE scaling `scaling` (a type of
        `olmo2.model.rope`, or "none" for plain RoPE, e.g. with a new `rope_theta` in
        `options`): factor = seq_len / the original length, which stays the pretraining
        one when the model was already extended (OLMo-core `YaRNRoPEScalingConfig(factor=
        new/old, old_context_len=old)`). Other `options` are `RopeScaling` fields."""
        original = self.original_max_seq_len
        theta = options.pop("rope_theta", self.rope_theta)
        if scaling == "none":
            if options:
                raise ValueError(f"options {sorted(options)} need a scaling type")
            return dataclasses.replace(
                self, max_seq_len=seq_len, rope_theta=theta, rope_scaling=None
            )
        if seq_len < original:
            raise ValueError(f"seq_len {seq_len} is shorter than the original {original}")
        orig = None if scaling == "linear" else original
        s = RopeScaling(scaling, seq_len / original, orig, **options)
        return dataclasses.replace(self, max_seq_len=seq_len, rope_theta=theta, rope_scaling=s)

    @property
    def original_max_seq_len(self) -> int:
        """The pretraining context: max_seq_len / factor when RoPE is scaled."""
        s = self.rope_scaling
        if s is None:
            return self.max_seq_len
        return s.original_max_seq_len or round(self.max_seq_len / s.factor)

    # ---- named sizes -------------------------------------------------------------------
    @classmethod
    def debug(cls, **overrides) -> ModelConfig:
        """A tiny model for tests (milliseconds per step on CPU)."""
        base = dict(
            d_model=64,
            n_layers=2,
            n_heads=4,
            ffn_hidden=192,
            vocab_size=512,
            max_seq_len=256,
            eos_token_id=1,
            pad_token_id=0,
        )
        return cls(**{**base, **overrides})

    @classmethod
    def olmo2_1b(cls) -> ModelConfig:
        """OLMo-2-0425-1B: 16 layers, d 2048, 16 heads, SwiGLU 8192 (mlp_ratio 8 fused)."""
        return cls(d_model=2048, n_layers=16, n_heads=16, ffn_hidden=8192)

    @classmethod
    def olmo2_7b(cls) -> ModelConfig:
        return cls(d_model=4096, n_layers=32, n_heads=32, ffn_hidden=11008)

    @classmethod
    def olmo2_13b(cls) -> ModelConfig:
        return cls(d_model=5120, n_layers=40, n_heads=40, ffn_hidden=13824)

    @classmethod
    def olmo2_32b(cls) -> ModelConfig:
        return cls(d_model=5120, n_layers=64, n_heads=40, n_kv_heads=8, ffn_hidden=27648)

    @classmethod
    def named(cls, name: str, **overrides) -> ModelConfig:
        """Look up a size by name (`debug`, `olmo2_1b`, `1b`, ...), then apply overrides."""
        key = name.lower().replace("-", "_")
        key = {"1b": "olmo2_1b", "7b": "olmo2_7b", "13b": "olmo2_13b", "32b": "olmo2_32b"}.get(
            key, key
        )
        if key not in SIZES:
            raise ValueError(f"unknown model size {name!r}; known: {', '.join(SIZES)}")
        cfg = getattr(cls, key)()
        return dataclasses.replace(cfg, **overrides) if overrides else cfg

    # ---- derived numbers ---------------------------------------------------------------
    def num_params(self, include_embedding: bool = True) -> int:
        d, kv = self.d_model, self.n_kv_heads * self.head_dim
        attn = d * d * 2 + d * kv * 2 + d + kv  # q, o, k, v + q_norm, k_norm
        block = attn + 3 * d * self.ffn_hidden + 2 * d  # SwiGLU + two block norms
        total = self.n_layers * block + d + self.vocab_size * d  # final norm + LM head
        return total + (self.vocab_size * d if include_embedding else 0)

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (forward + backward): 6·N over non-embedding parameters
        (LM head included) plus 12·L·d·T for attention scores and values — the PaLM
        appendix-B formula that OLMo-core and nanoGPT use for MFU (causal masking not halved)."""
        n = self.num_params(include_embedding=False)
        return 6 * n + 12 * self.n_layers * self.d_model * seq_len

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - fields
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**d)  # a rope_scaling dict becomes a RopeScaling in __post_init__


def dynamic_context(s: RopeScaling) -> int:
    """The context of a dynamic-NTK model: factor x L0 (what `factor` is chosen for)."""
    return round(s.factor * s.original_max_seq_len)


SIZES = ("debug", "olmo2_1b", "olmo2_7b", "olmo2_13b", "olmo2_32b")
