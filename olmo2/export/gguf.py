"""Write (and read back) OLMo 2 checkpoints as GGUF files for llama.cpp.

Uses only the `gguf` package (llama.cpp's own Python writer). The layout follows what
llama.cpp's `convert_hf_to_gguf.py` writes for `Olmo2ForCausalLM` (architecture `olmo2`):

- hyper-parameters under `olmo2.*` (context, width, layers, ffn, heads, kv heads, RoPE base,
  RMSNorm eps); no Q/K permutation (llama.cpp's Olmo2 converter does none either);
- tensor names from `gguf.constants` (`MODEL_TENSORS[MODEL_ARCH.OLMO2]`), not spelled by hand;
- the tokenizer as a `gpt2`-type byte-level BPE: tokens, token types, merges, special ids and
  `tokenizer.ggml.pre` (the name llama.cpp uses to pick its pre-split regex: `dbrx` is the
  cl100k regex that dolma2 uses, `gpt-2` the GPT-2 one; llama.cpp src/llama-vocab.cpp);
- the chat template (jinja), which llama.cpp's chat mode reads.

Dtypes: f32, f16, bf16 and q8_0 for the 2-D weights; norm weights always stay f32 (as in
llama.cpp's converter). q8_0 needs rows that are a multiple of 32 wide; other tensors fall
back to f16.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import numpy as np
import torch

from olmo2.model.config import ModelConfig
from olmo2.model.transformer import Olmo2
from olmo2.utils import atomic_path

log = logging.getLogger(__name__)

DTYPES = ("f32", "f16", "bf16", "q8_0")

# our parameter name (block-relative for blocks) -> gguf MODEL_TENSOR member name
_BLOCK = {
    "attention.w_q": "ATTN_Q",
    "attention.w_k": "ATTN_K",
    "attention.w_v": "ATTN_V",
    "attention.w_out": "ATTN_OUT",
    "attention.q_norm": "ATTN_Q_NORM",
    "attention.k_norm": "ATTN_K_NORM",
    "attention_norm": "ATTN_POST_NORM",
    "feed_forward.w_gate": "FFN_GATE",
    "feed_forward.w_up": "FFN_UP",
    "feed_forward.w_down": "FFN_DOWN",
    "feed_forward_norm": "FFN_POST_NORM",
}
_TOP = {"embeddings": "TOKEN_EMBD", "norm": "OUTPUT_NORM", "lm_head": "OUTPUT"}

# pre-tokenizer regexes llama.cpp knows by name (llama-vocab.cpp `LLAMA_VOCAB_PRE_TYPE_*`)
_CL100K = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+"


def gguf_tensor_name(name: str) -> str:
    """Our parameter name -> llama.cpp's, e.g. blocks.3.attention.w_q.weight -> blk.3.attn_q.weight."""
    import gguf

    m = re.fullmatch(r"blocks\.(\d+)\.(.+)\.weight", name)
    member = _BLOCK[m[2]] if m else _TOP[name.removesuffix(".weight")]
    kind = gguf.MODEL_TENSOR[member]
    assert kind in gguf.MODEL_TENSORS[gguf.MODEL_ARCH.OLMO2], f"{member} is not an olmo2 tensor"
    return gguf.TENSOR_NAMES[kind].format(bid=int(m[1]) if m else 0) + ".weight"


def detect_pre(tokenizer_json: dict) -> str:
    """llama.cpp's name for the pre-tokenizer of a byte-level BPE tokenizer.json."""
    text = json.dumps(tokenizer_json.get("pre_tokenizer"))
    if _CL100K.replace("\\", "\\\\") in text:
        return "dbrx"
    pre = tokenizer_json.get("pre_tokenizer") or {}
    subs = pre.get("pretokenizers", [pre])
    if any(p.get("type") == "ByteLevel" and p.get("use_regex", True) for p in subs) or (
        _GPT2.replace("\\", "\\\\") in text
    ):
        return "gpt-2"
    raise ValueError(
        "tokenizer.json: pre-tokenizer not recognised (expected the cl100k/dolma2 or GPT-2 "
        "split); pass pre= (--pre) with a llama.cpp pre-tokenizer name"
    )


def _vocab(tokenizer_json: dict, vocab_size: int):
    """Tokens and token types for every embedding row (rows past the tokenizer: [PAD{i}])."""
    import gguf

    model = tokenizer_json["model"]
    if model.get("type") != "BPE":
        raise ValueError(f"tokenizer.json: model type {model.get('type')!r}, expected BPE")
    id_to_tok = {i: t for t, i in model["vocab"].items()}
    types = {}
    for a in tokenizer_json.get("added_tokens", []):
        id_to_tok[a["id"]] = a["content"]
        looks_special = re.fullmatch(r"<\|.*\|>", a["content"]) is not None
        special = a.get("special") or looks_special
        types[a["id"]] = gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED
    if max(id_to_tok) >= vocab_size:
        raise ValueError(f"tokenizer has id {max(id_to_tok)} but the model only {vocab_size} rows")
    tokens, toktypes = [], []
    for i in range(vocab_size):
        if i in id_to_tok:
            tokens.append(id_to_tok[i])
            toktypes.append(types.get(i, gguf.TokenType.NORMAL))
        else:
            tokens.append(f"[PAD{i}]")
            toktypes.append(gguf.TokenType.UNUSED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return tokens, toktypes, merges


def _tensor(writer, name: str, t: torch.Tensor, dtype: str) -> None:
    import gguf

    q = gguf.GGMLQuantizationType
    data = t.detach().to("cpu", torch.float32).contiguous().numpy()
    if data.ndim == 1 or dtype == "f32":
        writer.add_tensor(name, data)
    elif dtype == "f16" or (dtype == "q8_0" and data.shape[-1] % 32):
        writer.add_tensor(name, data.astype(np.float16))
    else:
        kind = q.BF16 if dtype == "bf16" else q.Q8_0
        writer.add_tensor(name, gguf.quants.quantize(data, kind), raw_dtype=kind)


def write_gguf(
    model: Olmo2,
    tokenizer_json: dict,
    path: str | os.PathLike,
    dtype: str = "f32",
    chat_template: str | None = None,
    name: str = "olmo2",
    pre: str | None = None,
) -> Path:
    """Write `model` + tokenizer to a GGUF file atomically (nothing at `path` on failure)."""
    import gguf

    if dtype not in DTYPES:
        raise ValueError(f"unsupported GGUF dtype {dtype!r}; choose one of {DTYPES}")
    cfg: ModelConfig = model.config
    tokens, toktypes, merges = _vocab(tokenizer_json, cfg.vocab_size)
    pre = pre or detect_pre(tokenizer_json)
    file_type = {
        "f32": "ALL_F32",
        "f16": "MOSTLY_F16",
        "bf16": "MOSTLY_BF16",
        "q8_0": "MOSTLY_Q8_0",
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        w = gguf.GGUFWriter(str(tmp), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.OLMO2])
        w.add_name(name)
        w.add_context_length(cfg.max_seq_len)
        w.add_embedding_length(cfg.d_model)
        w.add_block_count(cfg.n_layers)
        w.add_feed_forward_length(cfg.ffn_hidden)
        w.add_head_count(cfg.n_heads)
        w.add_head_count_kv(cfg.n_kv_heads)
        w.add_key_length(cfg.head_dim)
        w.add_value_length(cfg.head_dim)
        w.add_rope_dimension_count(cfg.head_dim)
        w.add_rope_freq_base(cfg.rope_theta)
        w.add_layer_norm_rms_eps(cfg.norm_eps)
        w.add_vocab_size(cfg.vocab_size)
        w.add_file_type(gguf.LlamaFileType[file_type[dtype]])
        if dtype == "q8_0":
            w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(pre)
        w.add_token_list(tokens)
        w.add_token_types(toktypes)
        w.add_token_merges(merges)
        if cfg.eos_token_id is not None:
            w.add_eos_token_id(cfg.eos_token_id)
            w.add_bos_token_id(cfg.eos_token_id)  # OLMo 2 chat: bos = eos, never auto-added
        if cfg.pad_token_id is not None:
            w.add_pad_token_id(cfg.pad_token_id)
        w.add_add_bos_token(False)
        w.add_add_eos_token(False)
        if chat_template:
            w.add_chat_template(chat_template)
        for k, t in model.state_dict().items():
            _tensor(w, gguf_tensor_name(k), t, dtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file(progress=False)
        w.close()
    log.info("wrote %s (%s, %.1f MB)", path, dtype, path.stat().st_size / 1e6)
    return path


def export_gguf(
    checkpoint: str | os.PathLike, path, dtype: str = "f32", pre: str | None = None
) -> Path:
    """A checkpoint directory (weights + tokenizer.json) -> GGUF file."""
    from olmo2.model.hf import load_model
    from olmo2.tokenizer import CHAT_TEMPLATE

    checkpoint = Path(checkpoint)
    if dtype not in DTYPES:
        raise ValueError(f"unsupported GGUF dtype {dtype!r}; choose one of {DTYPES}")
    if not Path(path).parent.is_dir():
        raise FileNotFoundError(f"{Path(path).parent}: output directory does not exist")
    tok_file = checkpoint / "tokenizer.json"
    if not tok_file.is_file():
        raise FileNotFoundError(f"{tok_file}: a GGUF needs the tokenizer; none next to the weights")
    tokenizer_json = json.loads(tok_file.read_text())
    template = CHAT_TEMPLATE
    tok_cfg = checkpoint / "tokenizer_config.json"
    if tok_cfg.is_file():
        template = json.loads(tok_cfg.read_text()).get("chat_template") or template
    model = load_model(checkpoint)
    return write_gguf(model, tokenizer_json, path, dtype, template, checkpoint.name, pre)


def read_gguf(path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(metadata, our-named fp32 state dict) of a GGUF file (path or an open `GGUFReader`),
    dequantising as needed."""
    import gguf

    reader = path if isinstance(path, gguf.GGUFReader) else gguf.GGUFReader(str(path))
    meta = {}
    for f in reader.fields.values():
        if f.name.startswith("GGUF."):
            continue
        meta[f.name] = f.contents()
    names = {}
    n_layers = int(meta["olmo2.block_count"])
    for top in _TOP:
        names[gguf_tensor_name(f"{top}.weight")] = f"{top}.weight"
    for i in range(n_layers):
        for sub in _BLOCK:
            names[gguf_tensor_name(f"blocks.{i}.{sub}.weight")] = f"blocks.{i}.{sub}.weight"
    sd = {}
    for t in reader.tensors:
        arr = gguf.quants.dequantize(t.data, t.tensor_type)
        shape = tuple(int(x) for x in reversed(t.shape))  # ggml lists dims innermost first
        sd[names[t.name]] = torch.from_numpy(np.array(arr, np.float32).reshape(shape))
    return meta, sd
