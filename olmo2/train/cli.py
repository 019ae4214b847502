"""`olmo2 train RECIPE.yaml [key=value ...]`: pretraining (stage 1) and annealing (stage 2).

The start-up path (what is checked before anything is written, where training starts from)
is `olmo2.train.setup`, the one every training command shares; this module adds the
pretraining data, the tokenizer and the in-loop evaluators.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from olmo2.eval.in_loop import TaskEval, TokenFileEval
from olmo2.train import config, distributed, setup
from olmo2.train.config import DataSection, TrainConfig
from olmo2.train.data import build_loader
from olmo2.train.trainer import Trainer
from olmo2.utils import sha256_file

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    config.add_arguments(p, "optim.lr=3e-4 trainer.max_steps=10")


def run_tokenizer(d: DataSection):
    """`data.tokenizer`, else the tokenizer the token files' manifests name (so every
    checkpoint carries tokenizer files and works with `generate`, `chat`, `eval` and
    transformers' AutoTokenizer as it is), else None with a warning."""
    from olmo2.tokenizer import Tokenizer

    if d.tokenizer is not None:
        return Tokenizer.load(d.tokenizer)
    named = manifest_tokenizers(d.paths)
    if len(named) > 1:
        raise ValueError(
            f"data.paths: the token files were made with {len(named)} different tokenizers "
            f"({', '.join(sorted(named.values()))}); they cannot be trained on together"
        )
    for sha, path in named.items():
        if Path(path).is_file() and sha256_file(path) == sha:
            log.info("tokenizer %s (named by the token files' manifest)", path)
            return Tokenizer.from_file(path)
        log.warning("the manifest's tokenizer %s is missing or changed; set data.tokenizer", path)
    if not named:
        log.warning("no tokenizer known (data.tokenizer unset, no manifest.json beside the data)")
    log.warning("checkpoints will carry no tokenizer files")
    return None


def manifest_tokenizers(paths: list[str]) -> dict[str, str]:
    """SHA-256 -> path of the tokenizer each `manifest.json` beside the token files names."""
    from olmo2.data.loader import expand_paths
    from olmo2.data.tokenize import MANIFEST

    dirs = {f.parent for files in expand_paths(paths) for f in files}
    out = {}
    for d in sorted(dirs):
        manifest = d / MANIFEST
        if manifest.is_file():
            try:
                m = json.loads(manifest.read_text())
                out[m["tokenizer_sha256"]] = m["tokenizer"]
            except (json.JSONDecodeError, KeyError) as e:
                raise ValueError(f"{manifest}: not a token manifest ({e})") from None
    return out


def evaluators(d: DataSection, tokenizer) -> list:
    out = []
    if d.eval_paths:
        out.append(TokenFileEval(d.eval_paths, d.seq_len, d.eval_max_chunks, tokenizer))
    if d.eval_tasks:
        if tokenizer is None:
            raise ValueError(
                "data.eval_tasks needs a tokenizer (the prompts are text): set data.tokenizer"
            )
        out.append(TaskEval(d.eval_tasks, d.eval_data_dir, d.eval_tasks_limit, tokenizer))
    return out


def build(cfg: TrainConfig) -> tuple[Trainer, Path | None]:
    """Validate inputs, then build model, data and trainer; returns (trainer, resumed-from)."""
    start = setup.find_start(cfg)
    mcfg, world = start.model_config, distributed.world_size()
    data = build_loader(cfg.data, distributed.rank(), world, mcfg.eos_token_id, mcfg.vocab_size)
    if cfg.data.global_batch_size // world % cfg.data.micro_batch_size:
        log.info(
            "rank batch is not a multiple of micro_batch_size; the last micro-batch is smaller"
        )
    tokenizer = run_tokenizer(cfg.data)
    if tokenizer is not None and tokenizer.vocab_size > mcfg.vocab_size:
        raise ValueError(
            f"the tokenizer has {tokenizer.vocab_size} ids, more than model.vocab_size "
            f"{mcfg.vocab_size}"
        )
    evals = evaluators(cfg.data, tokenizer)
    # ---- inputs are valid: from here on we write ---------------------------------------
    model = setup.build_model(cfg, start)
    trainer = Trainer(cfg, model, data, evaluators=evals, tokenizer=tokenizer)
    setup.restore(trainer, start)
    return trainer, start.resume


def run(args) -> int:
    if (cfg := config.from_args(TrainConfig, args)) is None:
        return 0
    t0 = time.perf_counter()
    trainer, resumed = build(cfg)
    return setup.run(cfg, trainer, resumed, t0)
