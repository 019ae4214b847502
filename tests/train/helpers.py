"""Tiny token files and a tiny model for the trainer tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from olmo2.cli import main as olmo2_main

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "debug.yaml"
# a model small enough that one step takes milliseconds on a shared 2-core CPU
TINY = [
    "model.d_model=32",
    "model.n_heads=2",
    "model.n_kv_heads=2",
    "model.ffn_hidden=64",
    "model.vocab_size=128",
]


def markov_tokens(
    n: int, n_states: int = 48, branches: int = 2, seed: int = 0, eos: int = 1
) -> np.ndarray:
    """A first-order Markov chain over ids 2..n_states+1 with `branches` equiprobable successors
    per state (conditional entropy ln(branches)), an EOS every 97 tokens."""
    rng = np.random.default_rng(seed)
    succ = rng.integers(2, n_states + 2, size=(n_states + 2, branches))
    choice = rng.integers(0, branches, size=n)
    out = np.empty(n, dtype=np.uint32)
    out[0] = 2
    for i in range(1, n):
        out[i] = succ[out[i - 1], choice[i]]
    out[::97] = eos
    return out


def unigram_entropy(tokens: np.ndarray) -> float:
    counts = np.bincount(tokens.astype(np.int64))
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def write_tokens(path: Path, n: int = 20_000, seed: int = 0) -> Path:
    markov_tokens(n, seed=seed).tofile(path)
    return path


def args(run_dir: Path, data: Path, *extra: str, steps: int = 6) -> list[str]:
    return [
        "train", str(RECIPE), *TINY,
        f"data.paths=[{data}]", f"trainer.run_dir={run_dir}", f"trainer.max_steps={steps}",
        "data.seq_len=32", "trainer.eval_interval=0", "checkpoint.save_interval=0",
        "logging.progress_bar=false", "logging.report=false", "logging.peak_flops=1e11", *extra,
    ]  # fmt: skip


def train(run_dir: Path, data: Path, *extra: str, steps: int = 6) -> int:
    return olmo2_main(args(run_dir, data, *extra, steps=steps))


def losses(run_dir: Path) -> list[float]:
    import json

    return [json.loads(ln)["loss"] for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
