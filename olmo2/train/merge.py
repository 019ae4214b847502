"""`olmo2 merge CKPT... --output DIR [--weights w1 w2 ...]`: the OLMo 2 "soup".

Averages the weights of checkpoints with identical configs in fp32 (OLMo 2 7B/13B/32B `main`
= the uniform average of the stage-2 ingredients: "we just averaged the weights in Python";
OLMo-core `merge_hf_checkpoints.py` also averages in fp32). Weights are normalised to sum
to 1. The output is an HF-loadable directory (written atomically), with the first input's
tokenizer files when it has them.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

import torch

from olmo2.model.hf import read_config, read_state_dict, save_pretrained
from olmo2.model.transformer import Olmo2

log = logging.getLogger(__name__)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "checkpoints", nargs="+", help="HF checkpoint directories with identical configs"
    )
    p.add_argument("--output", required=True, help="output directory (must not exist)")
    p.add_argument(
        "--weights", nargs="+", type=float, help="one weight per checkpoint (default uniform)"
    )
    p.add_argument(
        "--dtype", choices=["float32", "bfloat16"], default="float32", help="output dtype"
    )


def merge(paths: list[str | Path], weights: list[float] | None = None) -> Olmo2:
    """Weighted fp32 average of the checkpoints' parameters."""
    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        raise ValueError("merge needs at least two checkpoints")
    weights = weights or [1.0] * len(paths)
    if len(weights) != len(paths):
        raise ValueError(f"--weights has {len(weights)} values for {len(paths)} checkpoints")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"--weights must be non-negative with a positive sum, got {weights}")
    weights = [w / sum(weights) for w in weights]
    configs = [read_config(p) for p in paths]
    for p, c in zip(paths[1:], configs[1:]):
        diff = {
            k: (v, getattr(c, k)) for k, v in configs[0].to_dict().items() if getattr(c, k) != v
        }
        if diff:
            desc = ", ".join(f"{k}: {a} vs {b}" for k, (a, b) in diff.items())
            raise ValueError(f"cannot merge {paths[0]} and {p}: configs differ ({desc})")
    avg: dict[str, torch.Tensor] = {}
    for p, w in zip(paths, weights):
        for k, v in read_state_dict(p, dtype=torch.float32).items():
            avg[k] = avg[k].add_(v, alpha=w) if k in avg else v.float() * w
    model = Olmo2.build(configs[0], init=False)
    model.load_state_dict(avg)
    return model


def run(args) -> int:
    out = Path(args.output)
    if out.exists():
        raise FileExistsError(f"--output {out} already exists")
    model = merge(args.checkpoints, args.weights)
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    save_pretrained(model, out, dtype=dtype)
    first = Path(args.checkpoints[0])
    for name in TOKENIZER_FILES:
        if (first / name).is_file():
            shutil.copy2(first / name, out / name)
    print(
        f"merged {len(args.checkpoints)} checkpoints ({model.config.num_params() / 1e6:.1f}M params) -> {out}"
    )
    return 0
