"""Decode throughput: olmo2's KV-cache generator vs transformers' `generate`, same weights.

    .venv/bin/python bench/generate.py [--sizes debug 100m] [--repeats 3] [--dtype bfloat16]

Prints new tokens/s for each and the ratio olmo2 / transformers (best of N, measured in
the same run, interleaved).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SIZES, best_of, header, twin_models  # noqa: E402

from olmo2.infer.generate import generate  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", nargs="+", default=list(SIZES))
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    args = ap.parse_args()
    header(f"decode tokens/s, greedy, {args.dtype} CPU")
    print(f"{'size':<6} {'batch':>5} {'olmo2 tok/s':>12} {'hf tok/s':>10} {'ratio':>6}")
    for size in args.sizes:
        cfg = SIZES[size]
        model, hf = twin_models(cfg)
        dtype = getattr(torch, args.dtype)
        model, hf = model.eval().to(dtype), hf.eval().to(dtype)
        for batch in args.batches:
            g = torch.Generator().manual_seed(batch)
            prompts = torch.randint(2, cfg.vocab_size, (batch, args.prompt_len), generator=g)
            n = args.new_tokens

            def ours():
                generate(model, prompts.tolist(), max_new_tokens=n, eos_token_id=-1)

            def theirs():
                with torch.no_grad():
                    hf.generate(
                        input_ids=prompts,
                        attention_mask=torch.ones_like(prompts),
                        max_new_tokens=n,
                        min_new_tokens=n,
                        do_sample=False,
                        pad_token_id=0,
                        eos_token_id=None,
                    )

            ours(), theirs()  # warm-up
            t_ours = t_hf = float("inf")
            for _ in range(args.repeats):  # interleave so both see the same machine state
                t_ours = min(t_ours, best_of(ours, 1))
                t_hf = min(t_hf, best_of(theirs, 1))
            a, b = batch * n / t_ours, batch * n / t_hf
            print(f"{size:<6} {batch:>5} {a:>12.1f} {b:>10.1f} {a / b:>5.2f}x", flush=True)


if __name__ == "__main__":
    main()
