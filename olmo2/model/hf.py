"""Read and write Hugging Face `Olmo2ForCausalLM` checkpoint directories.

A checkpoint directory holds `config.json`, `model.safetensors` (or shards named in
`model.safetensors.index.json`) and, when known, `tokenizer.json` + `tokenizer_config.json`,
so `transformers.AutoModelForCausalLM.from_pretrained(dir)` loads it as it is.
Key names and config fields: transformers src/transformers/models/olmo2/configuration_olmo2.py;
what the OLMo converters write: allenai/OLMo scripts/convert_olmo2_to_hf.py.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from olmo2.model.config import ModelConfig, dynamic_context
from olmo2.model.rope import TYPES as ROPE_TYPES
from olmo2.model.rope import RopeScaling
from olmo2.model.transformer import Olmo2
from olmo2.utils import atomic_path

log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"

# our block-relative name -> HF layer-relative name
_BLOCK_KEYS = {
    "attention.w_q": "self_attn.q_proj",
    "attention.w_k": "self_attn.k_proj",
    "attention.w_v": "self_attn.v_proj",
    "attention.w_out": "self_attn.o_proj",
    "attention.q_norm": "self_attn.q_norm",
    "attention.k_norm": "self_attn.k_norm",
    "attention_norm": "post_attention_layernorm",
    "feed_forward.w_gate": "mlp.gate_proj",
    "feed_forward.w_up": "mlp.up_proj",
    "feed_forward.w_down": "mlp.down_proj",
    "feed_forward_norm": "post_feedforward_layernorm",
}
# `score`: the scalar head of a reward / value model (`Olmo2ForSequenceClassification`,
# olmo2/model/reward.py), which has no `lm_head`
_TOP_KEYS = {
    "embeddings": "model.embed_tokens",
    "norm": "model.norm",
    "lm_head": "lm_head",
    "score": "score",
}
_HF_BLOCK_KEYS = {v: k for k, v in _BLOCK_KEYS.items()}
_HF_TOP_KEYS = {v: k for k, v in _TOP_KEYS.items()}


def to_hf_key(name: str) -> str:
    m = re.fullmatch(r"blocks\.(\d+)\.(.+)\.weight", name)
    if m:
        return f"model.layers.{m[1]}.{_BLOCK_KEYS[m[2]]}.weight"
    return f"{_TOP_KEYS[name.removesuffix('.weight')]}.weight"


def from_hf_key(name: str) -> str | None:
    m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)\.weight", name)
    if m:
        sub = _HF_BLOCK_KEYS.get(m[2])
        return f"blocks.{m[1]}.{sub}.weight" if sub else None
    top = _HF_TOP_KEYS.get(name.removesuffix(".weight"))
    return f"{top}.weight" if top and name.endswith(".weight") else None


# ---- config ------------------------------------------------------------------------------
def config_to_hf(cfg: ModelConfig, dtype: torch.dtype = torch.float32) -> dict:
    rope = rope_to_hf(cfg.rope_scaling)
    return {
        "architectures": ["Olmo2ForCausalLM"],
        "model_type": "olmo2",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.ffn_hidden,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "hidden_act": "silu",
        "max_position_embeddings": hf_max_position_embeddings(cfg),
        "initializer_range": cfg.init_std,
        "rms_norm_eps": cfg.norm_eps,
        # transformers 4.x reads top-level rope_theta/rope_scaling, 5.x reads rope_parameters
        # (and takes rope_scaling over it when both are set: they say the same here)
        "rope_theta": cfg.rope_theta,
        "rope_scaling": rope,
        "rope_parameters": {"rope_theta": cfg.rope_theta, **(rope or {"rope_type": "default"})},
        "attention_bias": False,
        "attention_dropout": 0.0,
        "tie_word_embeddings": False,
        "use_cache": True,
        "pad_token_id": cfg.pad_token_id,
        "eos_token_id": cfg.eos_token_id,
        "bos_token_id": cfg.bos_token_id,
        "torch_dtype": str(dtype).removeprefix("torch."),
    }


def hf_max_position_embeddings(cfg: ModelConfig) -> int:
    """transformers' dynamic NTK reads `max_position_embeddings` as the original length L0
    (`_compute_dynamic_ntk_parameters`); every other type reads it as the model's context."""
    s = cfg.rope_scaling
    return s.original_max_seq_len if s is not None and s.type == "dynamic" else cfg.max_seq_len


def rope_to_hf(s: RopeScaling | None) -> dict | None:
    """The transformers `rope_scaling` dict (keys of `RotaryEmbeddingConfigMixin`'s
    `_validate_*_rope_parameters`) without rope_theta; None for plain RoPE."""
    if s is None:
        return None
    d: dict = {"rope_type": s.type, "factor": s.factor}
    if s.type in ("yarn", "llama3"):
        d["original_max_position_embeddings"] = s.original_max_seq_len
    if s.type == "yarn":
        d.update(beta_fast=s.beta_fast, beta_slow=s.beta_slow)
        for key in ("attention_factor", "mscale", "mscale_all_dim"):
            if getattr(s, key) is not None:
                d[key] = getattr(s, key)
        if not s.truncate:  # transformers 5 only; its default is true
            d["truncate"] = False
    if s.type == "llama3":
        d.update(low_freq_factor=s.low_freq_factor, high_freq_factor=s.high_freq_factor)
    return d


HF_ROPE_TYPES = ("default", *ROPE_TYPES)


def rope_from_hf(d: dict, source: str) -> tuple[float, RopeScaling | None, int]:
    """(rope_theta, scaling, max_seq_len) of an HF config dict, read as transformers 5 reads
    it (`RotaryEmbeddingConfigMixin.convert_rope_params_to_dict` / `standardize_rope_params`
    and the `_compute_*_parameters` defaults): `rope_scaling` (4.x) wins over
    `rope_parameters` (5.x), `type` is an alias of `rope_type`, a missing original length of
    yarn/llama3 is max_position_embeddings."""
    rope = d.get("rope_scaling") or d.get("rope_parameters") or {}
    kind = rope.get("rope_type") or rope.get("type") or "default"
    if kind not in HF_ROPE_TYPES:
        raise ValueError(
            f"{source}: rope type {kind!r} is not supported; supported: {', '.join(HF_ROPE_TYPES)}"
        )
    if rope.get("partial_rotary_factor", 1.0) != 1.0:
        raise ValueError(f"{source}: partial_rotary_factor is not supported (OLMo 2 rotates all)")
    theta = float(
        (d.get("rope_parameters") or {}).get("rope_theta")
        or rope.get("rope_theta")
        or d.get("rope_theta")
        or 500_000.0
    )
    max_pos = int(d.get("max_position_embeddings") or 4096)
    if kind == "default":
        return theta, None, max_pos
    original = d.get("original_max_position_embeddings") or rope.get(
        "original_max_position_embeddings", max_pos
    )
    factor = rope.get("factor")
    if factor is None and kind == "yarn":
        factor = max_pos / original
    if factor is None:
        raise ValueError(f"{source}: rope type {kind!r} needs a factor")
    if kind == "linear":
        return theta, RopeScaling("linear", float(factor)), max_pos
    if kind == "dynamic":  # max_position_embeddings is L0; the context is factor x L0
        s = RopeScaling("dynamic", float(factor), max_pos)
        return theta, s, dynamic_context(s)
    if kind == "yarn":
        opts = {k: rope[k] for k in ("attention_factor", "mscale", "mscale_all_dim") if k in rope}
        opts["beta_fast"] = float(rope.get("beta_fast") or 32)  # `or`: 0 means the default
        opts["beta_slow"] = float(rope.get("beta_slow") or 1)
        opts["truncate"] = bool(rope.get("truncate", True))
        return theta, RopeScaling("yarn", float(factor), int(original), **opts), max_pos
    try:
        lo, hi = float(rope["low_freq_factor"]), float(rope["high_freq_factor"])
    except KeyError as e:
        raise ValueError(f"{source}: llama3 rope scaling needs {e.args[0]!r}") from None
    s = RopeScaling("llama3", float(factor), int(original), low_freq_factor=lo, high_freq_factor=hi)
    return theta, s, max_pos


def config_from_hf(d: dict, source: str = CONFIG_NAME) -> ModelConfig:
    """Parse an HF config.json dict (transformers 4.x or 5.x layout) into a ModelConfig."""
    if d.get("model_type") != "olmo2":
        raise ValueError(f"{source}: model_type is {d.get('model_type')!r}, expected 'olmo2'")
    theta, scaling, max_seq_len = rope_from_hf(d, source)
    if d.get("attention_bias"):
        raise ValueError(f"{source}: attention_bias=true is not OLMo 2 (no biases)")
    if d.get("tie_word_embeddings"):
        raise ValueError(f"{source}: tie_word_embeddings=true is not OLMo 2 (untied)")
    try:
        heads = int(d["num_attention_heads"])
        return ModelConfig(
            d_model=int(d["hidden_size"]),
            n_layers=int(d["num_hidden_layers"]),
            n_heads=heads,
            n_kv_heads=int(d.get("num_key_value_heads") or heads),
            ffn_hidden=int(d["intermediate_size"]),
            vocab_size=int(d["vocab_size"]),
            max_seq_len=max_seq_len,
            rope_theta=theta,
            rope_scaling=scaling,
            norm_eps=float(d.get("rms_norm_eps", 1e-6)),
            init_std=float(d.get("initializer_range", 0.02)),
            eos_token_id=_first(d.get("eos_token_id")),
            pad_token_id=d.get("pad_token_id"),
            bos_token_id=d.get("bos_token_id"),
        )
    except KeyError as e:
        raise ValueError(f"{source}: missing required field {e.args[0]!r}") from None


def _first(x):
    return x[0] if isinstance(x, list) and x else x


def read_config(path: str | os.PathLike) -> ModelConfig:
    path = Path(path)
    cfg_file = path / CONFIG_NAME
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: not a checkpoint directory")
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{cfg_file}: missing (a checkpoint directory needs config.json)")
    try:
        d = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{cfg_file}: invalid JSON ({e})") from None
    return config_from_hf(d, str(cfg_file))


# ---- weights -----------------------------------------------------------------------------
def _weight_files(path: Path) -> list[Path]:
    if (path / INDEX_NAME).is_file():
        try:
            index = json.loads((path / INDEX_NAME).read_text())
            files = sorted(set(index["weight_map"].values()))
        except (json.JSONDecodeError, KeyError) as e:
            raise ValueError(f"{path / INDEX_NAME}: not a valid safetensors index ({e})") from None
        missing = [f for f in files if not (path / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{path}: shards named in {INDEX_NAME} are missing: {missing}")
        return [path / f for f in files]
    if (path / WEIGHTS_NAME).is_file():
        return [path / WEIGHTS_NAME]
    if (path / "pytorch_model.bin").exists():
        raise ValueError(
            f"{path}: only safetensors weights are supported (found pytorch_model.bin)"
        )
    raise FileNotFoundError(f"{path}: no {WEIGHTS_NAME} or {INDEX_NAME}")


def read_state_dict(path: str | os.PathLike, dtype: torch.dtype | None = None) -> dict:
    """Our-named state dict from a checkpoint directory's safetensors files."""
    out: dict[str, torch.Tensor] = {}
    for f in _weight_files(Path(path)):
        try:
            with safe_open(str(f), framework="pt") as sf:
                for key in sf.keys():
                    ours = from_hf_key(key)
                    if ours is None:
                        if "rotary_emb" in key:  # old exports carry a RoPE buffer
                            continue
                        raise ValueError(f"{f}: unexpected tensor {key!r} for Olmo2ForCausalLM")
                    t = sf.get_tensor(key)
                    out[ours] = t.to(dtype) if dtype is not None else t
        except ValueError:
            raise
        except Exception as e:  # safetensors raises its own error types on corrupt files
            raise ValueError(f"{f}: unreadable safetensors file ({e})") from None
    return out


def check_state_dict(sd: dict, model: Olmo2, source: str) -> None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(sd))
    extra = sorted(set(sd) - set(expected))
    if missing:
        names = [to_hf_key(k) for k in missing[:5]]
        raise ValueError(f"{source}: missing tensors {names}{' ...' if len(missing) > 5 else ''}")
    if extra:
        raise ValueError(f"{source}: unexpected tensors {[to_hf_key(k) for k in extra[:5]]}")
    for k, shape in expected.items():
        if tuple(sd[k].shape) != shape:
            raise ValueError(
                f"{source}: tensor {to_hf_key(k)} has shape {tuple(sd[k].shape)}, "
                f"config.json implies {shape}"
            )


def load_model(path: str | os.PathLike, dtype: torch.dtype | None = None, device=None) -> Olmo2:
    """Build an Olmo2 from an HF checkpoint directory (fp32 on CPU unless told otherwise)."""
    path = Path(path)
    cfg = read_config(path)
    dtype = dtype or torch.float32
    sd = read_state_dict(path, dtype)
    with torch.device("meta"):
        model = Olmo2(cfg)
    check_state_dict(sd, model, str(path))
    model.load_state_dict(sd, assign=True)
    return model.to(device or "cpu").eval()


def load(path_or_hub_id, revision=None, dtype=None, device=None):
    """`olmo2.load`: a local directory or a hub id -> (model, tokenizer or None); the model
    is an `olmo2.model.reward.Olmo2Reward` for an `Olmo2ForSequenceClassification` directory."""
    from olmo2.tokenizer import Tokenizer

    path = resolve(path_or_hub_id, revision)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    from olmo2.model.reward import is_reward_checkpoint, load_reward_model

    loader = load_reward_model if is_reward_checkpoint(path) else load_model
    model = loader(path, dtype=dtype, device=device)
    tok = (
        Tokenizer.from_file(path / "tokenizer.json")
        if (path / "tokenizer.json").is_file()
        else None
    )
    return model, tok


def resolve(path_or_hub_id, revision: str | None = None) -> Path:
    """A local directory as is; otherwise download `org/name` (at `revision`) from the hub."""
    p = Path(path_or_hub_id)
    if p.exists() or revision is None and not re.fullmatch(r"[\w.-]+/[\w.-]+", str(path_or_hub_id)):
        if not p.is_dir():
            raise FileNotFoundError(f"{p}: no such checkpoint directory")
        return p
    from huggingface_hub import snapshot_download

    local = snapshot_download(
        str(path_or_hub_id),
        revision=revision,
        allow_patterns=["*.json", "*.safetensors", "tokenizer*"],
    )
    return Path(local)


def write_hf_files(
    model: Olmo2,
    out_dir: str | os.PathLike,
    tokenizer=None,
    dtype: torch.dtype | None = None,
    max_shard_bytes: int | None = None,
) -> None:
    """Write config.json + safetensors (+ tokenizer files) into an existing directory."""
    out_dir = Path(out_dir)
    sd = {k: v for k, v in model.state_dict().items()}
    dtype = dtype or next(iter(sd.values())).dtype
    tensors = {to_hf_key(k): v.detach().to("cpu", dtype).contiguous() for k, v in sd.items()}
    meta = {"format": "pt"}
    shards = _shard(tensors, max_shard_bytes)
    if len(shards) == 1:
        save_file(shards[0], str(out_dir / WEIGHTS_NAME), metadata=meta)
    else:
        weight_map, total = {}, 0
        for i, shard in enumerate(shards):
            name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(out_dir / name), metadata=meta)
            for k, t in shard.items():
                weight_map[k] = name
                total += t.numel() * t.element_size()
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (out_dir / INDEX_NAME).write_text(json.dumps(index, indent=2))
    hf_config = config_to_hf(model.config, dtype)
    if "score.weight" in tensors:  # a reward / value model
        from olmo2.model.reward import seq_cls_config

        hf_config = seq_cls_config(hf_config)
    (out_dir / CONFIG_NAME).write_text(json.dumps(hf_config, indent=2))
    if tokenizer is not None:
        tokenizer.save(out_dir)


def _shard(tensors: dict, max_bytes: int | None) -> list[dict]:
    if not max_bytes:
        return [tensors]
    shards, cur, size = [], {}, 0
    for k, t in tensors.items():
        n = t.numel() * t.element_size()
        if cur and size + n > max_bytes:
            shards.append(cur)
            cur, size = {}, 0
        cur[k], size = t, size + n
    return shards + [cur]


def save_pretrained(model: Olmo2, path, tokenizer=None, dtype=None, max_shard_bytes=None) -> Path:
    """Atomically write an HF-loadable checkpoint directory (temp dir, then rename)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.mkdir()
        write_hf_files(model, tmp, tokenizer, dtype, max_shard_bytes)
    log.info("saved %s", path)
    return path
