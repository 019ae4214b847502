"""Shared bench helpers: best-of-N timing and tiny random checkpoints on disk."""

from __future__ import annotations

import platform
import tempfile
import time
from pathlib import Path

import torch

from olmo2.model.config import ModelConfig
from olmo2.model.hf import save_pretrained
from olmo2.model.transformer import Olmo2

SIZES = {
    "debug": ModelConfig.debug(),
    # ~90M parameters: a GPT-2-small-like width with a 32k vocabulary
    "100m": ModelConfig(
        d_model=640,
        n_layers=10,
        n_heads=10,
        ffn_hidden=1728,
        vocab_size=32_000,
        max_seq_len=1024,
        eos_token_id=1,
        pad_token_id=0,
    ),
}


def twin_models(cfg: ModelConfig, seed: int = 0):
    """(olmo2 model, transformers Olmo2ForCausalLM) with the same random fp32 weights: the
    olmo2 model is saved as an HF checkpoint and transformers loads it back."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = Olmo2.build(cfg)
    with tempfile.TemporaryDirectory() as d:
        save_pretrained(model, Path(d) / "m")
        hf = AutoModelForCausalLM.from_pretrained(Path(d) / "m", dtype=torch.float32)
    return model, hf


def best_of(fn, n: int = 3) -> float:
    """Smallest wall time of n calls (this machine is noisy: up to 3x run to run)."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def best_of_interleaved(fns, n: int = 3) -> list[float]:
    """Smallest wall time of n calls of each of `fns`, called in turn (a, b, a, b, ...), so
    load from other jobs that comes and goes weighs on every side alike."""
    times = [[] for _ in fns]
    for _ in range(n):
        for t, fn in zip(times, fns):
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
    return [min(t) for t in times]


def header(title: str) -> None:
    print(f"# {title}")
    print(
        f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
    )
