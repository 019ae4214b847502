"""Training-step throughput: olmo2 forward+backward+AdamW vs transformers + AdamW, same weights.

    .venv/bin/python bench/train_step.py [--sizes debug 100m] [--batch 8 --seq 256] [--repeats 3]

Both sides: fp32 master weights, AdamW(lr 4e-4, betas 0.9/0.95, wd 0.1), grad clipping 1.0;
olmo2 also computes the z-loss. Prints tokens/s and the ratio (best of N, interleaved), in fp32
and with bf16 autocast.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SIZES, best_of, header  # noqa: E402

from olmo2.model.hf import save_pretrained  # noqa: E402
from olmo2.model.transformer import Olmo2, lm_loss, shift_labels  # noqa: E402


def adamw(params):
    return torch.optim.AdamW(params, lr=4e-4, betas=(0.9, 0.95), weight_decay=0.1, eps=1e-8)


def step_fn(model, opt, ids, labels, autocast: bool, hf: bool):
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()

    def step():
        with ctx:
            if hf:
                loss = model(input_ids=ids, labels=ids).loss
            else:
                loss = lm_loss(model(ids), labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", nargs="+", default=list(SIZES))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    header(f"train step tokens/s, batch {args.batch}x{args.seq}")
    print(f"{'size':<6} {'precision':<9} {'olmo2 tok/s':>12} {'hf tok/s':>10} {'ratio':>6}")
    for size in args.sizes:
        cfg = SIZES[size]
        torch.manual_seed(0)
        model = Olmo2.build(cfg).train()
        with tempfile.TemporaryDirectory() as d:
            save_pretrained(model, Path(d) / "m")
            hf = AutoModelForCausalLM.from_pretrained(Path(d) / "m", dtype=torch.float32).train()
        ids = torch.randint(2, cfg.vocab_size, (args.batch, args.seq))
        labels = shift_labels(ids)
        opt_ours, opt_hf = adamw(model.parameters()), adamw(hf.parameters())
        for autocast in (False, True):
            ours = step_fn(model, opt_ours, ids, labels, autocast, hf=False)
            theirs = step_fn(hf, opt_hf, ids, labels, autocast, hf=True)
            ours(), theirs()  # warm-up (allocates optimizer state)
            t_ours = t_hf = float("inf")
            for _ in range(args.repeats):
                t_ours = min(t_ours, best_of(ours, 1))
                t_hf = min(t_hf, best_of(theirs, 1))
            tokens = args.batch * args.seq
            a, b = tokens / t_ours, tokens / t_hf
            prec = "bf16-amp" if autocast else "fp32"
            print(f"{size:<6} {prec:<9} {a:>12.1f} {b:>10.1f} {a / b:>5.2f}x", flush=True)


if __name__ == "__main__":
    main()
