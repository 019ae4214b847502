"""Long-context training step: olmo2 vs transformers, same weights and YaRN rope scaling,
intra-document masking on, T = 2k, 8k, 16k at the same tokens per step.

    .venv/bin/python bench/long_context.py [--lengths 2048 8192 16384] [--tokens 16384]
        [--repeats 2] [--threads N]

The model (~7M parameters: d 256, 4 layers, 4 heads of 64, vocab 8192) is extended from
4096 to 16384 positions with YaRN (factor 4). Each row holds documents of random lengths
(uniform in 64..T, the same draw for both sides). olmo2 takes `doc_ids` (documents grouped
and run through SDPA's causal kernel, no T×T mask); transformers takes the equivalent 4D
boolean mask (`causal & same document`), the way to give it packed documents on CPU (its
varlen path needs flash-attn on GPU). Loss: olmo2's CE + z-loss, transformers' CE.

Each (side, T) runs in a fresh process: peak memory is that process's peak RSS during the
steps above its RSS before them, and the peak C-heap use read after every aten op of one
step (`tests.model.helpers.peak_heap_bytes`' method); tokens/s is the best of `repeats`
timed forward+backward steps. Prints one row per T and the olmo2/transformers ratios.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, twin_models  # noqa: E402

from olmo2.model.config import ModelConfig
from olmo2.model.loss import lm_loss, shift_labels

CONFIG = ModelConfig(
    d_model=256,
    n_layers=4,
    n_heads=4,
    ffn_hidden=688,
    vocab_size=8192,
    max_seq_len=4096,
    eos_token_id=1,
    pad_token_id=0,
).with_context(16384, "yarn")


def documents(B: int, T: int, seed: int = 0) -> torch.Tensor:
    """doc_ids [B, T]: documents of lengths uniform in 64..T, numbered in order per row."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(64, T + 1, (B * T // 64 + 1,), generator=g)
    ids = torch.repeat_interleave(torch.arange(len(lengths)), lengths)[: B * T].view(B, T)
    return ids - ids[:, :1]


def dense_mask(doc_ids_BT: torch.Tensor) -> torch.Tensor:
    T = doc_ids_BT.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    return (causal & (doc_ids_BT[:, :, None] == doc_ids_BT[:, None, :]))[:, None]


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def heap_peak(fn) -> int | None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.model.helpers import peak_heap_bytes

    return peak_heap_bytes(fn)


def child(side: str, T: int, tokens: int, repeats: int, threads: int | None) -> dict:
    if threads:
        torch.set_num_threads(threads)
    B = max(1, tokens // T)
    model, hf = twin_models(CONFIG)
    net = (model if side == "olmo2" else hf).train()
    ids = torch.randint(2, CONFIG.vocab_size, (B, T), generator=torch.Generator().manual_seed(1))
    doc = documents(B, T)

    def step():
        if side == "olmo2":
            loss = lm_loss(net(ids, doc_ids=doc), shift_labels(ids)).loss
        else:  # the mask is part of what transformers needs per step
            loss = net(input_ids=ids, attention_mask=dense_mask(doc), labels=ids).loss
        loss.backward()
        net.zero_grad(set_to_none=True)

    rss0 = rss_bytes()
    heap = heap_peak(step)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss0
    return {"tok_s": B * T / min(times), "peak_rss": peak_rss, "peak_heap": heap, "B": B}


def run_child(side: str, T: int, args) -> dict:
    cmd = [sys.executable, __file__, "--child", side, str(T), "--tokens", str(args.tokens),
           "--repeats", str(args.repeats)] + (["--threads", str(args.threads)] if args.threads else [])  # fmt: skip
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def check_same_model() -> float:
    """Both sides compute the same function: logits of one small packed batch."""
    model, hf = twin_models(CONFIG)
    ids, doc = torch.randint(2, CONFIG.vocab_size, (2, 512)), documents(2, 512)
    with torch.no_grad():
        a = model(ids, doc_ids=doc)
        b = hf(input_ids=ids, attention_mask=dense_mask(doc)).logits
    return float((a - b).abs().max())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[2048, 8192, 16384])
    p.add_argument("--tokens", type=int, default=16384, help="tokens per step")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--child", nargs=2, metavar=("SIDE", "T"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        res = child(args.child[0], int(args.child[1]), args.tokens, args.repeats, args.threads)
        print(json.dumps(res))
        return
    header(
        f"long-context forward+backward, yarn x4 (4096 -> 16384), doc masking, {args.tokens} "
        f"tokens/step, best of {args.repeats}"
    )
    diff = check_same_model()
    assert diff < 1e-4, f"olmo2 and transformers disagree: max |logit diff| {diff:.2e}"
    print(f"# same logits on a packed batch: max |diff| {diff:.1e}")
    print(
        f"{'T':>6} {'B':>3} {'olmo2 tok/s':>12} {'hf tok/s':>9} {'speed':>6} "
        f"{'olmo2 MiB':>10} {'hf MiB':>8} {'mem':>5}  (peak RSS; peak heap olmo2/hf MiB)"
    )
    mib = 2**20
    for T in args.lengths:
        ours, theirs = run_child("olmo2", T, args), run_child("transformers", T, args)
        heap = ""
        if ours["peak_heap"] is not None:
            heap = f"  ({ours['peak_heap'] / mib:.0f}/{theirs['peak_heap'] / mib:.0f})"
        print(
            f"{T:>6} {ours['B']:>3} {ours['tok_s']:>12.0f} {theirs['tok_s']:>9.0f} "
            f"{ours['tok_s'] / theirs['tok_s']:>5.2f}x {ours['peak_rss'] / mib:>10.0f} "
            f"{theirs['peak_rss'] / mib:>8.0f} {ours['peak_rss'] / theirs['peak_rss']:>4.2f}x{heap}",
            flush=True,
        )


if __name__ == "__main__":
    main()
