"""What every post-training command (`olmo2 sft|dpo|grpo`) shares: the config sections and
their defaults, the one epoch sampler, and the start and end of a run.

The start-up path is the pretraining one (`olmo2.train.setup`): `begin` reads the config and
finds where the run starts (`model.load_path`, or the newest complete checkpoint of
`trainer.run_dir` to resume), a command tokenizes its rows and builds its batches, then
`setup.build_model` and `fit` train with `olmo2.train.trainer.Trainer`. A post-training run
always starts from the weights of `model.load_path` with a fresh optimizer, and its
checkpoints are named after the stage: `sft-step{N}`, `dpo-step{N}`, `grpo-step{N}`.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from olmo2.model.transformer import Olmo2
from olmo2.post.data import PostDataSection, RowErrors
from olmo2.tokenizer import Tokenizer
from olmo2.train import config, distributed, setup
from olmo2.train.config import (
    CheckpointSection,
    DistributedSection,
    LoggingSection,
    ModelSection,
    OptimSection,
    ScheduleSection,
    TrainerSection,
)
from olmo2.train.trainer import Objective, Trainer

log = logging.getLogger(__name__)


def post_optim() -> OptimSection:
    # open-instruct finetune.py / dpo_tune_cache.py defaults: wd 0, no clipping; no spike skipping
    return OptimSection(lr=2e-5, weight_decay=0.0, clip_grad_norm=None, spike_sigma=None)


def post_trainer(run_dir: str):
    """The `trainer:` default of a post-training config: no z-loss."""
    return field(default_factory=lambda: TrainerSection(run_dir=run_dir, z_loss_multiplier=0.0))


@dataclass
class PostConfig:
    """The sections every post-training command shares; `olmo2 sft|dpo|grpo` subclass it,
    name their `STAGE`, override a default or two and add their own section."""

    STAGE: ClassVar[str]
    """The stage name, which is also the checkpoint name prefix (`olmo2.export.checkpoints`)."""

    model: ModelSection = field(default_factory=ModelSection)
    data: PostDataSection = field(default_factory=PostDataSection)
    optim: OptimSection = field(default_factory=post_optim)
    schedule: ScheduleSection = field(
        default_factory=lambda: ScheduleSection(name="linear", alpha_f=0.0)
    )
    trainer: TrainerSection = post_trainer("runs/post")
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    logging: LoggingSection = field(default_factory=LoggingSection)
    distributed: DistributedSection = field(default_factory=DistributedSection)

    def validate(self) -> None:
        t = self.trainer
        if t.max_steps <= 0 and self.data.epochs is None:
            raise ValueError(
                f"trainer.max_steps must be > 0 (or set data.epochs), got {t.max_steps}"
            )
        if self.model.load_path is None and self.model.size is None:
            raise ValueError(
                "model.load_path (the checkpoint to post-train) or model.size must be set"
            )
        if t.stage != 1 or t.ingredient is not None:
            raise ValueError(
                f"trainer.stage and trainer.ingredient name pretraining checkpoints; "
                f"{self.STAGE} checkpoints are named {self.STAGE}-step{{N}}"
            )
        if self.schedule.lr_from_checkpoint:
            raise ValueError(
                "schedule.lr_from_checkpoint: post-training starts from model.load_path's "
                "weights with a fresh optimizer and schedule (it has no checkpoint LR to take)"
            )


def set_steps(cfg: PostConfig, n_rows: int, warmup_ratio: float | None) -> None:
    """Derive trainer.max_steps from data.epochs and the warmup from a ratio, in place."""
    if cfg.data.epochs is not None:
        cfg.trainer.max_steps = max(
            1, math.ceil(cfg.data.epochs * n_rows / cfg.data.global_batch_size)
        )
    if warmup_ratio is not None:
        cfg.schedule.warmup_steps = math.ceil(warmup_ratio * cfg.trainer.max_steps)


def fingerprint(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(repr(p).encode())
    return h.hexdigest()[:16]


# ---- the epoch sampler ----------------------------------------------------------------------


class EpochSampler:
    """The order of SFT rows, DPO pairs and GRPO prompts, the pretraining loader's rule
    (`olmo2.data.loader`): epoch e visits the `n` items in the order of a permutation from
    `PCG64(seed + e)`, built once per epoch and grouped into rows by `rows` (SFT packing; one
    item per row without it); global batch b is rows [b·B, (b+1)·B) of the epoch (a partial
    last batch is dropped) and rank r takes every world-th row of it.

    The resume state is (epoch, next batch) and a fingerprint of the item count, batch size,
    seed and `identity` (what the data is), so a checkpoint of other data is refused. `rank`
    and `world` default to the process group's."""

    def __init__(
        self,
        n: int,
        global_batch_size: int,
        seed: int,
        *,
        what: str,
        identity: tuple = (),
        rows: Callable[[list[int]], list] | None = None,
        rank: int | None = None,
        world: int | None = None,
    ):
        rank = distributed.rank() if rank is None else rank
        world = distributed.world_size() if world is None else world
        if global_batch_size % world:
            raise ValueError(
                f"data.global_batch_size={global_batch_size} is not divisible by the world size {world}"
            )
        self.n, self.B, self.seed, self.rank, self.world = n, global_batch_size, seed, rank, world
        self.what, self.group = what, rows
        self.epoch, self.next_batch = 0, 0
        self._rows: tuple[int, list] = (-1, [])
        if self.n_rows(0) < global_batch_size:
            raise ValueError(
                f"{n} usable {what} make fewer rows than one global batch ({global_batch_size})"
            )
        self.fingerprint = fingerprint(n, global_batch_size, seed, *identity)

    def rows(self, epoch: int) -> list:
        """The rows of `epoch` in order: item indices, or lists of them when grouped."""
        if self._rows[0] != epoch:
            order = np.random.Generator(np.random.PCG64(self.seed + epoch)).permutation(self.n)
            order = order.tolist()
            self._rows = (epoch, self.group(order) if self.group else order)
        return self._rows[1]

    def n_rows(self, epoch: int) -> int:
        return len(self.rows(epoch))

    def next_rows(self) -> list:
        """This rank's rows of the next global batch."""
        if (self.next_batch + 1) * self.B > self.n_rows(self.epoch):
            self.epoch, self.next_batch = self.epoch + 1, 0
        rows = self.rows(self.epoch)[self.next_batch * self.B : (self.next_batch + 1) * self.B]
        self.next_batch += 1
        return rows[self.rank :: self.world]

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "next_batch": self.next_batch, "fingerprint": self.fingerprint}

    def load_state_dict(self, sd: dict) -> None:
        if sd.get("fingerprint") != self.fingerprint:
            raise ValueError(
                f"the {self.what} or their batching changed since the checkpoint; "
                "refusing to resume on other data"
            )
        self.epoch, self.next_batch = int(sd["epoch"]), int(sd["next_batch"])


class SampledBatches:
    """A data source for the trainer: this rank's rows of each global batch (`sampler`)
    turned into tensors by `collate(rows) -> dict`."""

    def __init__(self, sampler: EpochSampler, collate: Callable[[list], dict]):
        self.sampler, self.collate = sampler, collate

    def __iter__(self):
        while True:
            yield self.collate(self.sampler.next_rows())

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, sd: dict) -> None:
        self.sampler.load_state_dict(sd)


# ---- start and end of a run -------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser, example: str, recipe_optional: bool = False) -> None:
    config.add_arguments(p, example, recipe_optional)
    p.add_argument(
        "--strict", action="store_true", help="stop at the first bad data row (row number given)"
    )


def load_tokenizer(cfg: PostConfig) -> Tokenizer:
    path = cfg.data.tokenizer or cfg.model.load_path
    if path is None:
        raise ValueError(
            "data.tokenizer is not set and there is no model.load_path to take it from"
        )
    return Tokenizer.load(str(path))


@dataclass
class Run:
    cfg: PostConfig
    tok: Tokenizer
    start: setup.Start
    examples: list
    errors: RowErrors
    t0: float


Tokenize = Callable[[Tokenizer, PostDataSection, RowErrors], list]


def begin(cls: type[PostConfig], args: argparse.Namespace, tokenize: Tokenize, what: str):
    """The config (printed, and None returned, with --dry-run), where the run starts from
    (`setup.find_start`: nothing is written yet), the tokenizer, and the rows of
    `data.paths` through `tokenize` (bad rows counted in `errors`)."""
    cfg = config.from_args(cls, args, ["data.strict=true"] if args.strict else [])
    if cfg is None:
        return None
    t0 = time.perf_counter()
    start = setup.find_start(cfg, weights_only=True)
    tok = load_tokenizer(cfg)
    if tok.vocab_size > start.model_config.vocab_size:
        raise ValueError(
            f"tokenizer has {tok.vocab_size} tokens, more than the model's vocab_size {start.model_config.vocab_size}"
        )
    errors = RowErrors(cfg.data.strict)
    examples = tokenize(tok, cfg.data, errors)
    log.info("%d %s; %s", len(examples), what, errors.summary())
    if not examples:
        raise ValueError(f"data.paths: no usable {what} ({errors.summary()})")
    return Run(cfg, tok, start, examples, errors, t0)


def load_reference(run: Run) -> Olmo2:
    """A frozen copy of the starting policy (`model.load_path`, or the same seeded init)."""
    ref = setup.initial_model(run.cfg, run.start.model_config, run.start.device)
    return ref.eval().requires_grad_(False)


def fit(
    run: Run,
    model: torch.nn.Module,
    data,
    objective: Objective,
    summary: Callable[[dict], str] = lambda last: "",
) -> int:
    """Train `model` (from `setup.build_model`) on `data`, resuming if the run was cut, and
    print the closing line with `summary(last metrics)` and the bad-row count."""
    cfg = run.cfg
    trainer = Trainer(cfg, model, data, objective=objective, tokenizer=run.tok, stage=cfg.STAGE)
    setup.restore(trainer, run.start)
    return setup.run(
        cfg,
        trainer,
        run.start.resume,
        run.t0,
        lambda last: f"{summary(last)}; {run.errors.summary()}",
    )
