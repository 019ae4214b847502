"""Training-step throughput: olmo2 forward+backward+AdamW vs transformers + AdamW, same weights.

    .venv/bin/python bench/train_step.py [--sizes debug 100m] [--batch 8 --seq 256] [--repeats 3]
        [--threads N] [--skip-bare] [--compile]

Two comparisons:
* bare step: the model's forward/backward + torch AdamW on both sides;
* full trainer: `olmo2.train.Trainer.train_step` fed by the token-file loader (micro-batch
  split, global-batch normalisation, clipping, spike guard, schedule, fused AdamW) against a
  plain transformers loop (`model(input_ids, labels).loss`, clip, torch AdamW). The loader's
  share of a step (`next()` time / step time) is printed too (target < 2%).

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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SIZES, best_of, header, twin_models  # noqa: E402

from olmo2.model.loss import lm_loss, shift_labels


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


def full_trainer_bench(
    size: str, cfg, batch: int, seq: int, repeats: int, bf16: bool, compile_: bool
) -> None:
    """Full Trainer step (loader included) vs a plain transformers + AdamW loop, same weights;
    with `compile_` the trainer compiles its blocks (`trainer.compile`), the loop stays eager."""
    import time

    import numpy as np

    from olmo2.train.config import TrainConfig
    from olmo2.train.data import build_loader
    from olmo2.train.trainer import Trainer

    with tempfile.TemporaryDirectory() as d:
        tokens = np.random.default_rng(0).integers(
            2, cfg.vocab_size, batch * seq * 64, dtype=np.uint32
        )
        tokens.tofile(Path(d) / "t.npy")
        tc = TrainConfig()
        tc.data.seq_len, tc.data.global_batch_size, tc.data.micro_batch_size = seq, batch, batch
        tc.trainer.precision = "bf16" if bf16 else "fp32"
        tc.trainer.run_dir = d
        model, hf = twin_models(cfg)
        model, hf = model.train(), hf.train()
        if compile_:  # what `olmo2 train` does with trainer.compile=true
            for block in model.blocks:
                block.compile()
        tc.data.paths = [str(Path(d) / "t.npy")]
        data = build_loader(tc.data, 0, 1, cfg.eos_token_id, cfg.vocab_size)
        trainer = Trainer(tc, model, data)
        it, opt_hf = iter(data), adamw(hf.parameters())

        def ours():
            t0 = time.perf_counter()
            b = next(it)
            load_times.append(time.perf_counter() - t0)
            trainer.train_step(b)

        def theirs():
            b = next(it)
            ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
            with ctx:
                loss = hf(input_ids=b["input_ids"], labels=b["input_ids"]).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
            opt_hf.step()
            opt_hf.zero_grad(set_to_none=True)

        load_times: list[float] = []
        ours(), theirs()  # warm-up
        t_ours = t_hf = float("inf")
        for _ in range(repeats):
            t_ours = min(t_ours, best_of(ours, 1))
            t_hf = min(t_hf, best_of(theirs, 1))
        a, b = batch * seq / t_ours, batch * seq / t_hf
        share = 100 * min(load_times) / t_ours
        prec = ("bf16-amp" if bf16 else "fp32") + ("+c" if compile_ else "")
        print(
            f"{size:<6} {prec:<9} {a:>12.1f} {b:>10.1f} {a / b:>5.2f}x {share:>8.2f}%", flush=True
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", nargs="+", default=list(SIZES))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--skip-bare", action="store_true", help="only the full-trainer comparison")
    ap.add_argument(
        "--compile",
        action="store_true",
        help="bare step: torch.compile every block of both models; full trainer: "
        "trainer.compile (olmo2's blocks) against the plain, eager transformers loop",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.skip_bare:
        bare(args)
    header(
        f"full trainer step (loader + Trainer.train_step) vs transformers loop, batch {args.batch}x{args.seq}"
    )
    print(
        f"{'size':<6} {'precision':<9} {'trainer tok/s':>12} {'hf tok/s':>10} {'ratio':>6} {'loader':>9}"
    )
    for size in args.sizes:
        for bf16 in (False, True):
            full_trainer_bench(
                size, SIZES[size], args.batch, args.seq, args.repeats, bf16, args.compile
            )


def bare(args) -> None:
    header(f"train step tokens/s, batch {args.batch}x{args.seq}")
    print(f"{'size':<6} {'precision':<9} {'olmo2 tok/s':>12} {'hf tok/s':>10} {'ratio':>6}")
    for size in args.sizes:
        cfg = SIZES[size]
        model, hf = twin_models(cfg)
        model, hf = model.train(), hf.train()
        if args.compile:  # the same per-block compile on both sides (as `trainer.compile`)
            for block in (*model.blocks, *hf.model.layers):
                block.compile()
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
            prec = ("bf16-amp" if autocast else "fp32") + ("+c" if args.compile else "")
            print(f"{size:<6} {prec:<9} {a:>12.1f} {b:>10.1f} {a / b:>5.2f}x", flush=True)


if __name__ == "__main__":
    main()
