"""Rollout throughput: olmo2's engine vs vLLM on the same checkpoint, plus weight-sync time.

    make test-vllm   # builds .venv-vllm (vLLM's CPU build + olmo2)
    .venv-vllm/bin/python bench/rollout.py [--size 100m] [--batches 1 8 64] [--repeats 3]

Both backends generate exactly `--new-tokens` greedy tokens per prompt (no stop ids) for
batches of random `--prompt-len`-token prompts, through the backend interface a GRPO rollout
uses (`olmo2.infer.backends`). Prints new tokens/s of each and the ratio olmo2 / vLLM (best
of N, interleaved, in the same run), vLLM's engine start, and the weight sync of one RL step:
`update_weights` (safetensors into /dev/shm, then the worker's `reload_weights`); the olmo2
backend generates with the learner's own weights and syncs nothing. vLLM's CPU worker keeps
one core for its scheduler by default (vllm/utils/ompmultiprocessing.py); `--reserved-cpus 0`
gives its worker every core; `--threads` sets olmo2's (default 1: the same compute as vLLM's
default worker; on a busy machine a second OpenMP thread on 2 cores also costs more than it
gives).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SIZES, header  # noqa: E402

from olmo2.infer.backends import GenerationParams, load_backend  # noqa: E402
from olmo2.model.transformer import Olmo2  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="100m", choices=[s for s in SIZES if s != "debug"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8, 64])
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--syncs", type=int, default=3, help="weight syncs timed (best of)")
    ap.add_argument("--reserved-cpus", type=int, default=None, help="VLLM_CPU_NUM_OF_RESERVED_CPU")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of olmo2's engine")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.reserved_cpus is not None:
        os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] = str(args.reserved_cpus)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")

    cfg = SIZES[args.size]  # (debug's head_dim 16 is not a size vLLM's CPU attention takes)
    torch.manual_seed(0)
    model = Olmo2.build(cfg).eval()
    n_params = sum(p.numel() for p in model.parameters())
    ours = load_backend("olmo2", model)
    max_len = args.prompt_len + args.new_tokens
    t0 = time.perf_counter()
    vllm = load_backend(
        "vllm", model, max_model_len=max_len, max_num_seqs=max(args.batches)
    )  # the learner's model, copied to /dev/shm
    start_s = time.perf_counter() - t0

    header(f"rollout tokens/s, greedy fp32 CPU, {args.size} ({n_params / 1e6:.0f}M parameters)")
    reserved = os.environ.get("VLLM_CPU_NUM_OF_RESERVED_CPU", "vLLM's default")
    print(f"# olmo2: {args.threads} thread(s); vLLM reserved CPUs: {reserved}")
    print(f"# vLLM engine start (checkpoint write + engine): {start_s:.1f} s")
    print(f"{'batch':>5} {'olmo2 tok/s':>12} {'vllm tok/s':>11} {'olmo2/vllm':>11}")
    params = GenerationParams(max_new_tokens=args.new_tokens, stop_token_ids=())
    for batch in args.batches:
        g = torch.Generator().manual_seed(batch)
        prompts = torch.randint(2, cfg.vocab_size, (batch, args.prompt_len), generator=g).tolist()
        new = batch * args.new_tokens
        best = {"olmo2": float("inf"), "vllm": float("inf")}
        outs = {}
        for backend in (ours, vllm):  # warm-up (vLLM's first step builds its kernels)
            outs[backend.name] = backend.generate(prompts, params)
        assert all(len(c.tokens) == args.new_tokens for o in outs.values() for c in o)
        same = sum(a.tokens == b.tokens for a, b in zip(outs["olmo2"], outs["vllm"]))
        for _ in range(args.repeats):
            for backend in (ours, vllm):
                t = time.perf_counter()
                backend.generate(prompts, params)
                best[backend.name] = min(best[backend.name], time.perf_counter() - t)
        a, b = new / best["olmo2"], new / best["vllm"]
        print(f"{batch:>5} {a:>12.0f} {b:>11.0f} {a / b:>10.2f}x   ({same}/{batch} identical)")

    syncs = []
    for _ in range(args.syncs):
        with torch.no_grad():  # a pretend optimizer step, so every sync moves real weights
            for p in model.parameters():
                p.mul_(1.0001)
        vllm.update_weights(model)
        syncs.append(vllm.last_sync_s)
    mb = n_params * 4 / 2**20
    print(f"# weight sync per step (vLLM, {mb:.0f} MiB fp32): best {min(syncs):.2f} s")
    print("# olmo2 backend: generates with the learner's weights, no sync")
    vllm.close()


if __name__ == "__main__":
    main()
