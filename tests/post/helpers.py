"""A tiny byte-level BPE tokenizer (trained here with `tokenizers`) and tiny models for the
post-training tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tokenizers import Tokenizer as HFTok
from tokenizers import decoders, models, pre_tokenizers, trainers

from olmo2.model.config import ModelConfig
from olmo2.model.hf import save_pretrained
from olmo2.model.transformer import Olmo2
from olmo2.tokenizer import Tokenizer

SPECIALS = ["<|endoftext|>", "<|pad|>", "<|user|>", "<|assistant|>", "<|system|>"]
CORPUS = [
    "hello there, how are you? I am fine, thank you.",
    "the quick brown fox jumps over the lazy dog",
    "what is 3+4? it is 7. reverse abc is cba.",
    "Human Assistant question answer good bad chosen rejected",
] * 20


def tiny_tokenizer(vocab_size: int = 300) -> Tokenizer:
    tok = HFTok(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    return Tokenizer(tok, "tiny")


def tiny_config(vocab: int = 320, **kw) -> ModelConfig:
    base = dict(
        d_model=32,
        n_layers=2,
        n_heads=2,
        n_kv_heads=2,
        ffn_hidden=64,
        vocab_size=vocab,
        max_seq_len=256,
    )
    base.update(kw)
    tok_eos = 0  # "<|endoftext|>" is the first special token
    return ModelConfig.debug(**base, eos_token_id=tok_eos, pad_token_id=1)


def tiny_checkpoint(tmp_path: Path, seed: int = 0, **kw) -> Path:
    tok = tiny_tokenizer()
    assert tok.eos_token_id == 0 and tok.pad_token_id == 1
    torch.manual_seed(seed)
    model = Olmo2.build(tiny_config(**kw))
    return save_pretrained(model, tmp_path / "init", tokenizer=tok)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def kill_and_resume(cmd: Callable[[Path], list[str]], tmp_path: Path, steps: int, env: dict,
                    after: int = 5) -> tuple[Path, Path, str]:  # fmt: skip
    """Run `cmd(ref)` to the end; run `cmd(run)`, SIGKILL it once `after` steps are logged,
    and run it again. Returns (ref, run, the resumed run's stdout), both runs finished."""
    ref, run = tmp_path / "ref", tmp_path / "run"
    out = subprocess.run(cmd(ref), env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    proc = subprocess.Popen(cmd(run), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics, deadline = run / "metrics.jsonl", time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= after:
            break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    logged = len(metrics.read_text().splitlines())
    assert after <= logged < steps, f"the kill should land mid-run ({logged} of {steps} steps)"
    out = subprocess.run(cmd(run), env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return ref, run, out.stdout
