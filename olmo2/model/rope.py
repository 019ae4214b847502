"""RoPE frequencies, with the context-extension scalings transformers knows.

Every function returns the inverse frequencies `inv_freq` [E/2] (fp32) of the rotate-half
RoPE and, where the method has one, the factor that multiplies cos and sin. The formulas and
their floating-point order follow transformers `modeling_rope_utils.py` (the
`_compute_*_parameters` functions of transformers 5), so logits match `Olmo2ForCausalLM`
with the same `rope_parameters`:

- **linear** (position interpolation, Chen et al. 2023, arXiv 2306.15595): every frequency
  divided by `factor`.
- **dynamic** (NTK-aware, "dynamic NTK" of u/bloc97 and u/emozilla, 2023): θ grows with the
  sequence length L once L passes the original length L₀:
  θ' = θ·(factor·L/L₀ − (factor − 1))^(E/(E−2)).
- **yarn** (Peng et al. 2023, arXiv 2309.00071: "NTK-by-parts" plus an attention
  temperature): dimensions that rotate more than `beta_fast` times over L₀ keep their
  frequency, those rotating fewer than `beta_slow` times are interpolated, a linear ramp
  between; cos and sin are multiplied by the attention factor 0.1·ln(factor) + 1 (the
  paper's √(1/t), applied to q and k alike). OLMo-core `YaRNRoPEScalingConfig` is the same
  with the ramp's top clamped at E/2 − 1 (no difference for E = 128).
- **llama3** (Llama 3.1, transformers `_compute_llama3_parameters`): wavelengths longer than
  L₀/low_freq_factor are divided by `factor`, shorter than L₀/high_freq_factor kept, a
  smooth blend between.
- A new θ ("ABF", Xiong et al. 2023, arXiv 2309.16039) is just `ModelConfig.rope_theta`;
  it combines with any of the above (OLMo-core `ABFRoPEScalingConfig`).

Departure from transformers: its `dynamic` module keeps the frequencies of the longest
sequence it has seen (until a sequence shorter than L₀ resets them); here they depend only
on the current call's largest position. The two agree on every single forward and during
generation, where positions only grow.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import torch

TYPES = ("linear", "dynamic", "yarn", "llama3")
"""Scaling types besides plain RoPE (transformers' `default`)."""
_NEEDS_ORIGINAL = ("dynamic", "yarn", "llama3")


@dataclass
class RopeScaling:
    """How RoPE is stretched past the length the model was pretrained at (`rope_scaling` of
    transformers 4.x / `rope_parameters` of 5.x; `olmo2.model.hf` converts)."""

    type: str
    """linear | dynamic | yarn | llama3"""
    factor: float
    """New context / original context (≥ 1)."""
    original_max_seq_len: int | None = None
    """Context length of pretraining, L₀ (transformers `original_max_position_embeddings`);
    required by dynamic, yarn and llama3, unused by linear."""
    beta_fast: float = 32.0
    """yarn: dimensions rotating more than this many times over L₀ keep their frequency."""
    beta_slow: float = 1.0
    """yarn: dimensions rotating fewer times than this are fully interpolated."""
    attention_factor: float | None = None
    """yarn: multiplies cos and sin; None = 0.1·ln(factor) + 1 (or the mscale ratio)."""
    mscale: float | None = None
    """yarn (DeepSeek form): with `mscale_all_dim`, attention factor =
    m(factor, mscale) / m(factor, mscale_all_dim), m(s, k) = 0.1·k·ln(s) + 1."""
    mscale_all_dim: float | None = None
    truncate: bool = True
    """yarn: round the correction range to whole dimensions (floor/ceil), as the paper."""
    low_freq_factor: float = 1.0
    """llama3: wavelengths above L₀/low_freq_factor are divided by `factor`."""
    high_freq_factor: float = 4.0
    """llama3: wavelengths below L₀/high_freq_factor are kept."""

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(
                f"unknown RoPE scaling type {self.type!r}; supported: default (no scaling), "
                f"{', '.join(TYPES)}"
            )
        if not self.factor >= 1:
            raise ValueError(f"rope_scaling.factor must be >= 1, got {self.factor}")
        if self.type in _NEEDS_ORIGINAL and not self.original_max_seq_len:
            raise ValueError(f"rope_scaling type {self.type!r} needs original_max_seq_len")
        if self.type == "linear" and self.original_max_seq_len is not None:
            raise ValueError(
                "rope_scaling type 'linear' has no original_max_seq_len (transformers' linear "
                "scaling has no such key); leave it unset"
            )
        if self.type == "llama3" and not self.high_freq_factor > self.low_freq_factor:
            raise ValueError(
                f"llama3 scaling needs high_freq_factor > low_freq_factor, got "
                f"{self.high_freq_factor} and {self.low_freq_factor}"
            )

    @classmethod
    def from_dict(cls, d: dict) -> RopeScaling:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - fields
        if unknown:
            raise ValueError(
                f"unknown rope_scaling keys {sorted(unknown)}; known: {sorted(fields)}"
            )
        return cls(**d)


# ---- the inverse frequencies of each type --------------------------------------------------
def default_inv_freq(dim: int, theta: float) -> torch.Tensor:
    """1/θ^(2i/E), i = 0..E/2-1 (the RoPE of RoFormer, Su et al. 2021)."""
    return 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))


def dynamic_theta(theta: float, s: RopeScaling, seq_len: int, dim: int) -> float:
    """transformers `_compute_dynamic_ntk_parameters`: θ unchanged up to L₀."""
    L0 = s.original_max_seq_len
    L = max(seq_len, L0)
    return theta * ((s.factor * L / L0) - (s.factor - 1)) ** (dim / (dim - 2))


def yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def yarn_attention_factor(s: RopeScaling) -> float:
    if s.attention_factor is not None:
        return s.attention_factor
    if s.mscale and s.mscale_all_dim:
        return float(yarn_mscale(s.factor, s.mscale) / yarn_mscale(s.factor, s.mscale_all_dim))
    return yarn_mscale(s.factor)


def yarn_correction_range(s: RopeScaling, dim: int, theta: float) -> tuple[float, float]:
    """Dimensions (low, high) between which YaRN ramps from keeping to interpolating:
    d(r) = E·ln(L₀/(2π r)) / (2 ln θ) is the dimension that rotates r times over L₀
    (the YaRN paper's ratio r = L₀/λ_d solved for d)."""

    def dim_of(rotations: float) -> float:
        return (dim * math.log(s.original_max_seq_len / (rotations * 2 * math.pi))) / (
            2 * math.log(theta)
        )

    low, high = dim_of(s.beta_fast), dim_of(s.beta_slow)
    if s.truncate:
        low, high = math.floor(low), math.ceil(high)
    return max(low, 0), min(high, dim - 1)


def yarn_inv_freq(dim: int, theta: float, s: RopeScaling) -> torch.Tensor:
    pos_freqs = theta ** (torch.arange(0, dim, 2).to(dtype=torch.float) / dim)
    extrapolation, interpolation = 1.0 / pos_freqs, 1.0 / (s.factor * pos_freqs)
    low, high = yarn_correction_range(s, dim, theta)
    if low == high:
        high += 0.001  # transformers' guard against a zero-width ramp
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    keep = 1 - ramp  # 1: the frequency is kept (extrapolated), 0: interpolated
    return interpolation * (1 - keep) + extrapolation * keep


def llama3_inv_freq(dim: int, theta: float, s: RopeScaling) -> torch.Tensor:
    inv_freq = default_inv_freq(dim, theta)
    L0, lo, hi = s.original_max_seq_len, s.low_freq_factor, s.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > L0 / lo, inv_freq / s.factor, inv_freq)
    smooth = (L0 / wavelen - lo) / (hi - lo)
    blended = (1 - smooth) * scaled / s.factor + smooth * scaled
    medium = ~(wavelen < L0 / hi) * ~(wavelen > L0 / lo)
    return torch.where(medium, blended, scaled)


@functools.lru_cache(maxsize=16)
def _frequencies(dim: int, theta: float, scaling: tuple | None, seq_len: int, device):
    s = RopeScaling(*scaling) if scaling is not None else None
    factor = 1.0
    if s is None:
        inv_freq = default_inv_freq(dim, theta)
    elif s.type == "linear":
        inv_freq = default_inv_freq(dim, theta) / s.factor
    elif s.type == "dynamic":
        inv_freq = default_inv_freq(dim, dynamic_theta(theta, s, seq_len, dim))
    elif s.type == "yarn":
        inv_freq, factor = yarn_inv_freq(dim, theta, s), yarn_attention_factor(s)
    else:
        inv_freq = llama3_inv_freq(dim, theta, s)
    with torch.inference_mode(False):  # usable outside inference mode too
        return inv_freq.to(device), factor


def rope_frequencies(config, device, max_position: int = 0) -> tuple[torch.Tensor, float]:
    """(inv_freq [E/2] fp32, cos/sin factor) of `config` (a `ModelConfig`); dynamic scaling
    also needs the call's largest position `max_position`."""
    s = config.rope_scaling
    seq_len = max_position + 1 if s is not None and s.type == "dynamic" else 0
    key = dataclasses.astuple(s) if s is not None else None
    return _frequencies(config.head_dim, float(config.rope_theta), key, seq_len, device)
