"""`olmo2 export hf`: a clean Hugging Face directory (config.json, safetensors, tokenizer
files) from any loadable checkpoint. Only the weights, config and tokenizer are read, so a
training run's extras (train_state/, olmo2.json) are left behind; choose the dtype and shard
size. Written atomically: a failure leaves no partial output."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

log = logging.getLogger(__name__)

HF_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_size(text: str | None) -> int | None:
    """'2GB' / '500MB' / '1048576' -> bytes (decimal units, as transformers' max_shard_size)."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise ValueError(f"--max-shard-size: cannot parse {text!r} (e.g. 2GB, 500MB, 1000000)")
    unit = (m[2] or "").upper()
    scale = {"": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
    return int(float(m[1]) * scale[unit])


def check_output(output: Path, force: bool) -> None:
    if not output.parent.is_dir():
        raise FileNotFoundError(f"{output.parent}: output directory does not exist")
    if output.exists() and not force:
        raise FileExistsError(f"{output}: already exists (pass --force to replace it)")


def export_hf(
    model_path, output, dtype: str = "float32", max_shard_size: str | None = None, force=False
) -> Path:
    from olmo2.model.hf import load, save_pretrained

    output = Path(output)
    if dtype not in HF_DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}; choose one of {list(HF_DTYPES)}")
    shard_bytes = parse_size(max_shard_size)
    check_output(output, force)
    model, tok = load(model_path)
    if tok is None:
        log.warning("%s has no tokenizer.json; the export will have none either", model_path)
    return save_pretrained(model, output, tok, HF_DTYPES[dtype], shard_bytes)
