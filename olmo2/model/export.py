"""`olmo2 export hf|gguf`: hand a checkpoint to other tools.

- `hf`: a clean Hugging Face directory (config.json, safetensors, tokenizer files) from any
  loadable checkpoint. Only the weights, config and tokenizer are read, so a training run's
  extras (train_state/, olmo2.json) are left behind; choose the dtype and shard size.
- `gguf`: one GGUF file for llama.cpp (`olmo2.model.gguf`).

Both write atomically: a failure leaves no partial output.
"""

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


def _check_output(output: Path, force: bool) -> None:
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
    _check_output(output, force)
    model, tok = load(model_path)
    if tok is None:
        log.warning("%s has no tokenizer.json; the export will have none either", model_path)
    return save_pretrained(model, output, tok, HF_DTYPES[dtype], shard_bytes)


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="format", metavar="FORMAT", required=True)
    hf = sub.add_parser("hf", help="a clean Hugging Face checkpoint directory")
    hf.add_argument("--model", required=True, help="checkpoint directory or hub id")
    hf.add_argument("--output", required=True, help="directory to create")
    hf.add_argument("--dtype", default="float32", choices=list(HF_DTYPES))
    hf.add_argument("--max-shard-size", default=None, help="e.g. 2GB: split the safetensors")
    hf.add_argument("--force", action="store_true", help="replace an existing output")
    gg = sub.add_parser("gguf", help="a GGUF file for llama.cpp")
    gg.add_argument("--model", required=True, help="checkpoint directory")
    gg.add_argument("--output", required=True, help="FILE.gguf")
    gg.add_argument("--dtype", default="f32", choices=["f32", "f16", "bf16", "q8_0"])
    gg.add_argument("--pre", default=None, help="llama.cpp pre-tokenizer name (auto-detected)")
    gg.add_argument("--force", action="store_true", help="replace an existing output")


def run(args) -> int:
    output = Path(args.output)
    if args.format == "hf":
        path = export_hf(args.model, output, args.dtype, args.max_shard_size, args.force)
        files = sorted(f.name for f in path.iterdir())
        print(f"exported {args.model} -> {path} ({args.dtype}): {', '.join(files)}")
        return 0
    from olmo2.model.gguf import export_gguf

    _check_output(output, args.force)
    path = export_gguf(args.model, output, args.dtype, args.pre)
    print(f"exported {args.model} -> {path} ({args.dtype}, {path.stat().st_size / 1e6:.1f} MB)")
    return 0
