"""`olmo2 demo`: the whole recipe at small scale.

Until every stage has landed this runs the smallest end-to-end path that exists: build a
debug model, save it as an HF checkpoint with the dolma2 tokenizer (or a byte-level fallback),
load it back and generate.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch


def add_arguments(p) -> None:
    p.add_argument("--out", default="runs/demo", help="output directory")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--data-dir", default=None, help="shared data directory (eval sets, books)")


def run(args) -> int:
    from olmo2.model.config import ModelConfig
    from olmo2.model.generate import SamplingConfig, generate_text
    from olmo2.model.hf import load, save_pretrained
    from olmo2.model.transformer import Olmo2
    from olmo2.tokenizer import Tokenizer
    from olmo2.utils import data_dir

    t0 = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    d = data_dir(args.data_dir, required=False)
    tok_path = d / "tokenizers" / "allenai_dolma2.json" if d else None
    if tok_path is None or not tok_path.is_file():
        raise FileNotFoundError(
            "the demo needs a data directory with tokenizers/allenai_dolma2.json"
        )
    tok = Tokenizer.from_file(tok_path)
    cfg = ModelConfig.debug(
        vocab_size=100_352, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
    )
    torch.manual_seed(0)
    model = Olmo2.build(cfg, device=args.device)
    path = save_pretrained(model, out / "debug-random", tokenizer=tok)
    model, tok = load(path, device=args.device)
    text = generate_text(model, tok, ["The OLMo 2 recipe"], SamplingConfig(max_new_tokens=16))[0]
    print(f"built a {cfg.num_params() / 1e6:.1f}M-parameter debug model -> {path}")
    print(f"sample (untrained): {text!r}")
    print(f"demo finished in {time.time() - t0:.1f}s")
    return 0
