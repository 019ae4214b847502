"""Inference benchmarks (issue 7). Results go to bench/RESULTS.md.

1. `olmo2 serve` on loopback: throughput (generated tokens/s) and p50/p95 request latency at
   1, 8 and 32 concurrent clients, with continuous batching (--max-batch 32) and sequential
   serving (--max-batch 1), same model, same requests.
2. Decode tokens/s at batch 1: olmo2 fp32, olmo2 int8 (`--quantize int8`), and llama.cpp
   (`llama-cpp-python`, if installed) on the GGUF export of the same weights (f32 and q8_0).

The model is a random OLMo 2 with the dolma2 tokenizer (d256, 4 layers, 100,352 vocab: 53M
parameters, half of them the LM head); speed does not depend on what the weights learned.

    .venv/bin/python bench/serve.py [--sections serve,decode] [--out /tmp/olmo2-bench]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import best_of, header  # noqa: E402

from olmo2.infer.generate import generate  # noqa: E402
from olmo2.model.config import ModelConfig  # noqa: E402
from olmo2.model.hf import load_model, save_pretrained  # noqa: E402
from olmo2.model.transformer import Olmo2  # noqa: E402
from olmo2.tokenizer import Tokenizer  # noqa: E402
from olmo2.utils import data_dir  # noqa: E402

BENCH = ModelConfig(
    d_model=256,
    n_layers=4,
    n_heads=4,
    ffn_hidden=768,
    max_seq_len=1024,
)


def make_checkpoint(out: Path) -> Path:
    path = out / "bench-olmo2"
    if not (path / "config.json").exists():
        torch.manual_seed(0)
        model = Olmo2.build(BENCH).eval()
        tok = Tokenizer.from_file(data_dir() / "tokenizers" / "allenai_dolma2.json")
        save_pretrained(model, path, tok)
    return path


# ---- 1. serving --------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(ckpt: Path, max_batch: int):
    import httpx

    port = _free_port()
    cmd = [sys.executable, "-m", "olmo2.cli", "serve", "--model", str(ckpt), "--port", str(port)]
    cmd += ["--max-batch", str(max_batch), "--max-len", "256"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(1200):
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


def load_test(base: str, name: str, clients: int, n_requests: int, max_tokens: int):
    import openai

    client = openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0, timeout=600)

    def one(i: int):
        t0 = time.perf_counter()
        r = client.completions.create(
            model=name,
            prompt=f"Request {i}: once upon a time",
            max_tokens=max_tokens,
            temperature=0,
        )
        return time.perf_counter() - t0, r.usage.completion_tokens

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, range(n_requests)))
    wall = time.perf_counter() - t0
    lat = sorted(r[0] for r in results)
    tokens = sum(r[1] for r in results)
    p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))]
    return tokens / wall, statistics.median(lat), p95


def bench_serve(ckpt: Path, n_requests: int, max_tokens: int) -> None:
    print("\n## serve: 32 requests per run, completions, greedy\n")
    print("| serving | clients | tokens/s | p50 latency s | p95 latency s |")
    print("|---|---:|---:|---:|---:|")
    for label, max_batch in (("continuous batching (32 slots)", 32), ("sequential (1 slot)", 1)):
        proc, base = start_server(ckpt, max_batch)
        try:
            load_test(base, ckpt.name, 4, 4, 4)  # warm-up
            for clients in (1, 8, 32):
                tps, p50, p95 = load_test(base, ckpt.name, clients, n_requests, max_tokens)
                print(f"| {label} | {clients} | {tps:.0f} | {p50:.2f} | {p95:.2f} |", flush=True)
        finally:
            proc.terminate()
            proc.wait(30)


# ---- 2. decode speed ---------------------------------------------------------------------------
def olmo2_decode(model, prompt: list[int], n: int, repeats: int) -> float:
    t = best_of(lambda: generate(model, [prompt], max_new_tokens=n, eos_token_id=-1), repeats)
    return n / t


def llama_decode(gguf_path: Path, prompt: list[int], n: int, repeats: int) -> float:
    from llama_cpp import Llama

    llm = Llama(
        model_path=str(gguf_path), n_ctx=256, n_threads=torch.get_num_threads(), verbose=False
    )

    def run():
        llm.reset()
        for i, _ in enumerate(llm.generate(prompt, temp=0.0, top_k=1)):
            if i + 1 == n:
                break

    return n / best_of(run, repeats)


def bench_decode(ckpt: Path, out: Path, n: int, repeats: int) -> None:
    from olmo2.export.gguf import export_gguf
    from olmo2.infer.quantize import quantize_model

    tok = Tokenizer.from_file(ckpt / "tokenizer.json")
    prompt = tok.encode("The quick brown fox jumps over the lazy dog. " * 3)
    print(f"\n## decode: batch 1, prompt {len(prompt)} tokens, {n} new tokens, greedy\n")
    print("| engine | weights | tokens/s |")
    print("|---|---|---:|")
    fp32 = olmo2_decode(load_model(ckpt), prompt, n, repeats)
    print(f"| olmo2 | fp32 | {fp32:.0f} |", flush=True)
    int8 = olmo2_decode(quantize_model(load_model(ckpt)), prompt, n, repeats)
    print(f"| olmo2 | int8 dynamic | {int8:.0f} ({int8 / fp32:.2f}x fp32) |", flush=True)
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        print("| llama.cpp | — | llama-cpp-python not installed |")
        return
    for dtype in ("f32", "q8_0"):
        path = out / f"bench-{dtype}.gguf"
        if not path.exists():
            export_gguf(ckpt, path, dtype)
        tps = llama_decode(path, prompt, n, repeats)
        print(f"| llama.cpp | {dtype} | {tps:.0f} ({tps / fp32:.2f}x olmo2 fp32) |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sections", default="serve,decode")
    p.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "olmo2-bench"))
    p.add_argument("--requests", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    header("olmo2 inference bench (issue 7)")
    ckpt = make_checkpoint(out)
    sections = args.sections.split(",")
    if "serve" in sections:
        bench_serve(ckpt, args.requests, args.max_tokens)
    if "decode" in sections:
        bench_decode(ckpt, out, 64, args.repeats)


if __name__ == "__main__":
    main()
