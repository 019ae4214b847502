"""Training checkpoints: a directory transformers loads as it is, plus train state.

    {run_dir}/stage1-step{N}-tokens{B}B/    (post-training: sft-step{N}, dpo-step{N}, ...)
        config.json, model.safetensors      HF files (fp32 master weights), via hf.write_hf_files
        tokenizer.json ...                  when the run knows its tokenizer
        value/                              `olmo2 ppo`: the value model's HF directory
        train_state/                        torch.distributed.checkpoint of model + optimizer
                                            (sharded, so it loads on another world size)
        train_state/rank{R}.pt              step, data position, RNG states, spike-guard window
        olmo2.json                          run config, step, tokens, lr, SHA-256 of every file

Everything is written under `.{name}.tmp` and renamed once complete, with `olmo2.json`
written last; `latest()` only considers non-hidden directories holding `olmo2.json`, so a
checkpoint cut by a crash is never picked up. Loading re-hashes the files and refuses a
corrupted checkpoint with a clear error.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from olmo2.export.checkpoints import parse_name
from olmo2.model.config import ModelConfig
from olmo2.model.hf import read_config, write_hf_files
from olmo2.train import distributed
from olmo2.utils import _fsync_dir, sha256_file

log = logging.getLogger(__name__)

META = "olmo2.json"
TRAIN_STATE = "train_state"


class _FullModel:
    """What `write_hf_files` needs (config + state_dict) over a gathered full state dict."""

    def __init__(self, config: ModelConfig, sd: dict):
        self.config, self._sd = config, sd

    def state_dict(self) -> dict:
        return self._sd


def hf_parts(model: torch.nn.Module, full: dict) -> dict[str, tuple[ModelConfig, dict]]:
    """The HF directories of a checkpoint, {subdirectory: (config, full state dict)}: the
    model itself at the top, or what a module of several networks names with its own
    `hf_parts(full)` (`olmo2 ppo`: the policy at the top, the value model in `value/`)."""
    return model.hf_parts(full) if hasattr(model, "hf_parts") else {"": (model.config, full)}


def save(
    run_dir: Path,
    name: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    rank_state: dict,
    meta: dict,
    tokenizer=None,
) -> Path:
    """Collective: every rank calls it. Returns the final checkpoint path."""
    final, tmp = run_dir / name, run_dir / f".{name}.tmp"
    inner = distributed.unwrap(model)
    if distributed.is_main():
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / TRAIN_STATE).mkdir(parents=True)
    distributed.barrier()
    full = get_model_state_dict(
        inner, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    if distributed.is_main():
        for sub, (config, sd) in hf_parts(inner, full).items():
            (tmp / sub).mkdir(exist_ok=True)
            write_hf_files(
                _FullModel(config, sd), tmp / sub, tokenizer=tokenizer, dtype=torch.float32
            )
    del full
    state = {
        "model": get_model_state_dict(inner),
        "optim": get_optimizer_state_dict(inner, optimizer),
    }
    with warnings.catch_warnings():  # "assuming the intent is to save in a single process"
        warnings.filterwarnings("ignore", message=".*single process", category=UserWarning)
        dcp.save(state, checkpoint_id=str(tmp / TRAIN_STATE))
    torch.save(rank_state, tmp / TRAIN_STATE / f"rank{distributed.rank()}.pt")
    distributed.barrier()
    if distributed.is_main():
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        meta = {**meta, "files": {str(p.relative_to(tmp)): sha256_file(p) for p in files}}
        (tmp / META).write_text(json.dumps(meta, indent=1))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(run_dir)
        log.info("saved checkpoint %s", final)
    distributed.barrier()
    return final


def list_complete(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (by step)."""
    if not run_dir.is_dir():
        return []
    found = []
    for p in run_dir.iterdir():
        if p.is_dir() and not p.name.startswith(".") and (p / META).is_file():
            ref = parse_name(p.name)
            if ref.step is not None:
                found.append((ref.step, p))
    return [p for _, p in sorted(found)]


def latest(run_dir: Path) -> Path | None:
    ckpts = list_complete(run_dir)
    return ckpts[-1] if ckpts else None


def prune(run_dir: Path, keep_last: int | None) -> None:
    if keep_last is None or not distributed.is_main():
        return
    for p in list_complete(run_dir)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(p, ignore_errors=True)
        log.info("removed old checkpoint %s", p)


def read_meta(path: Path) -> dict:
    try:
        return json.loads((path / META).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path / META}: unreadable checkpoint metadata ({e})") from None


def verify(path: Path) -> dict:
    """Check every file against the SHA-256 recorded at save time; return the metadata."""
    meta = read_meta(path)
    for rel, digest in meta.get("files", {}).items():
        f = path / rel
        if not f.is_file():
            raise ValueError(f"corrupted checkpoint {path}: {rel} is missing")
        if sha256_file(f) != digest:
            raise ValueError(
                f"corrupted checkpoint {path}: {rel} does not match its recorded SHA-256"
            )
    return meta


def check_model_config(path: Path, expected: ModelConfig) -> None:
    """Refuse a checkpoint of another model shape, naming the differing fields."""
    got = read_config(path)
    diff = {
        k: (v, getattr(got, k))
        for k, v in expected.to_dict().items()
        if k in ("d_model", "n_layers", "n_heads", "n_kv_heads", "ffn_hidden", "vocab_size")
        and getattr(got, k) != v
    }
    if diff:
        desc = ", ".join(f"{k}: recipe {a} vs checkpoint {b}" for k, (a, b) in diff.items())
        raise ValueError(f"checkpoint {path} is a different model size ({desc})")


def load(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None
) -> dict | None:
    """Restore model (+ optimizer) from train_state/; return this rank's trainer state
    (rank 0's when the checkpoint came from fewer ranks), or None if absent."""
    ts = path / TRAIN_STATE
    if not (ts / ".metadata").is_file():
        raise ValueError(
            f"{path}: no {TRAIN_STATE}/ (an HF-only directory); use model.reset_trainer_state=true"
        )
    inner = distributed.unwrap(model)
    state = {"model": get_model_state_dict(inner)}
    if optimizer is not None:
        state["optim"] = get_optimizer_state_dict(inner, optimizer)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*single process", category=UserWarning)
            dcp.load(state, checkpoint_id=str(ts))
    except Exception as e:  # DCP raises a CheckpointException wrapping per-rank errors
        raise ValueError(f"corrupted checkpoint {path}: cannot read {TRAIN_STATE}/ ({e})") from None
    set_model_state_dict(inner, state["model"])
    if optimizer is not None:
        set_optimizer_state_dict(inner, optimizer, state["optim"])
    f = ts / f"rank{distributed.rank()}.pt"
    f = f if f.is_file() else ts / "rank0.pt"
    return torch.load(f, weights_only=False) if f.is_file() else None
