"""Inference benchmarks (issue 7). Results go to bench/RESULTS.md.

1. `olmo2 serve` on loopback: throughput (generated tokens/s) and p50/p95 request latency at
   1, 8 and 32 concurrent clients, with continuous batching (--max-batch 32) and sequential
   serving (--max-batch 1), same model, same requests.
1b. The same load streamed, with `logprobs` off and on (5 alternatives per token, issue 20):
   tokens/s, p50/p95 latency and time to first token (client side: request sent -> first
   chunk with text), and the on/off throughput ratio (target: at most 10% slower).
2. Decode tokens/s at batch 1: olmo2 fp32, olmo2 int8 (`--quantize int8`), and llama.cpp
   (`llama-cpp-python`, if installed) on the GGUF export of the same weights (f32 and q8_0).

The model is a random OLMo 2 with the dolma2 tokenizer (d256, 4 layers, 100,352 vocab: 53M
parameters, half of them the LM head); speed does not depend on what the weights learned.

    .venv/bin/python bench/serve.py [--sections serve,logprobs,decode] [--out /tmp/olmo2-bench]
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


def _percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def load_test(
    base: str,
    name: str,
    clients: int,
    n_requests: int,
    max_tokens: int,
    logprobs: int | None = None,
    stream: bool = False,
) -> dict:
    """Tokens/s over the run, p50/p95 latency, and (streamed) p50/p95 time to first token."""
    import openai

    client = openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0, timeout=600)

    def one(i: int):
        t0 = time.perf_counter()
        kw = dict(
            model=name, prompt=f"Request {i}: once upon a time", max_tokens=max_tokens,
            temperature=0, logprobs=logprobs,
        )  # fmt: skip
        if not stream:
            r = client.completions.create(**kw)
            return time.perf_counter() - t0, None, r.usage.completion_tokens
        first, tokens = None, 0
        for chunk in client.completions.create(
            **kw, stream=True, stream_options={"include_usage": True}
        ):
            if chunk.choices and chunk.choices[0].text and first is None:
                first = time.perf_counter() - t0
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
        return time.perf_counter() - t0, first, tokens

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, range(n_requests)))
    wall = time.perf_counter() - t0
    lat = [r[0] for r in results]
    ttft = [r[1] for r in results if r[1] is not None]
    out = {
        "tps": sum(r[2] for r in results) / wall,
        "p50": statistics.median(lat),
        "p95": _percentile(lat, 0.95),
    }
    if ttft:
        out |= {"ttft_p50": statistics.median(ttft), "ttft_p95": _percentile(ttft, 0.95)}
    return out


def bench_serve(ckpt: Path, n_requests: int, max_tokens: int) -> None:
    print("\n## serve: 32 requests per run, completions, greedy\n")
    print("| serving | clients | tokens/s | p50 latency s | p95 latency s |")
    print("|---|---:|---:|---:|---:|")
    for label, max_batch in (("continuous batching (32 slots)", 32), ("sequential (1 slot)", 1)):
        proc, base = start_server(ckpt, max_batch)
        try:
            load_test(base, ckpt.name, 4, 4, 4)  # warm-up
            for clients in (1, 8, 32):
                r = load_test(base, ckpt.name, clients, n_requests, max_tokens)
                row = f"| {label} | {clients} | {r['tps']:.0f} | {r['p50']:.2f} | {r['p95']:.2f} |"
                print(row, flush=True)
        finally:
            proc.terminate()
            proc.wait(30)


def bench_logprobs(ckpt: Path, n_requests: int, max_tokens: int, repeats: int) -> None:
    """Streamed completions at 1, 8, 32 clients, logprobs off and on, best of `repeats`
    (highest tokens/s; the rest of that run's row beside it), the two interleaved."""
    print(f"\n## serve, streamed: {n_requests} requests per run, {max_tokens} tokens, greedy\n")
    print(
        "| clients | logprobs | tokens/s | p50 latency s | p95 latency s | TTFT p50 s | TTFT p95 s |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|")
    proc, base = start_server(ckpt, 32)
    try:
        load_test(base, ckpt.name, 4, 4, 4, logprobs=5, stream=True)  # warm-up
        for clients in (1, 8, 32):
            best: dict[str, dict] = {}
            for _ in range(repeats):
                for label, lp in (("off", None), ("5", 5)):
                    r = load_test(base, ckpt.name, clients, n_requests, max_tokens, lp, True)
                    if label not in best or r["tps"] > best[label]["tps"]:
                        best[label] = r
            for label, r in best.items():
                print(
                    f"| {clients} | {label} | {r['tps']:.0f} | {r['p50']:.2f} | {r['p95']:.2f} "
                    f"| {r['ttft_p50']:.3f} | {r['ttft_p95']:.3f} |",
                    flush=True,
                )
            ratio = best["5"]["tps"] / best["off"]["tps"]
            print(f"| {clients} | on/off | {ratio:.2f}x | | | | |", flush=True)
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
    p.add_argument("--sections", default="serve,logprobs,decode")
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
    if "logprobs" in sections:
        bench_logprobs(ckpt, args.requests, args.max_tokens, args.repeats)
    if "decode" in sections:
        bench_decode(ckpt, out, 64, args.repeats)


if __name__ == "__main__":
    main()
