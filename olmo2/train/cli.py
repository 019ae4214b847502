"""`olmo2 train RECIPE.yaml [key=value ...]`: pretraining (stage 1) and annealing (stage 2).

The start-up path (what is checked before anything is written, where training starts from)
is `olmo2.train.setup`, the one every training command shares; this module adds the
pretraining data, the tokenizer and the in-loop evaluators.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from olmo2.eval.in_loop import TaskEval, TokenFileEval
from olmo2.train import config, distributed, setup
from olmo2.train.config import DataSection, TrainConfig
from olmo2.train.data import build_loader
from olmo2.train.trainer import Trainer

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    config.add_arguments(p, "optim.lr=3e-4 trainer.max_steps=10")


def _load_tokenizer(path: str | None):
    if path is None:
        return None
    from olmo2.tokenizer import Tokenizer

    return Tokenizer.load(path)


def evaluators(d: DataSection, tokenizer) -> list:
    out = []
    if d.eval_paths:
        out.append(TokenFileEval(d.eval_paths, d.seq_len, d.eval_max_chunks, tokenizer))
    if d.eval_tasks:
        if tokenizer is None:
            raise ValueError("data.eval_tasks needs data.tokenizer (the prompts are text)")
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
    tokenizer = _load_tokenizer(cfg.data.tokenizer)
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
