"""`olmo2 sft RECIPE.yaml [key=value ...]`: supervised fine-tuning on chat data.

Rows are rendered with the OLMo 2 ("tulu") chat template and only assistant content + its
EOS is trained (labels −100 elsewhere; `olmo2.post.data.encode_labelled`), truncated to
`data.seq_len`; rows with nothing trainable are counted and skipped. The loop, optimizer,
checkpoints (HF files + exact-resume train state) and metrics are the trainer's
(`olmo2.train.trainer.Trainer`); this module supplies the batches and the objective.

Loss reduction (`sft.reduction`, posttrain-eval-anchors §1.3):
- `sum` (OLMo 2 / Tülu 3 `--reduce_loss sum`): each micro-batch contributes the *sum* of its
  token losses and the global batch averages over micro-batches (the effect of accelerate's
  gradient accumulation in open-instruct), so every token weighs the same;
- `mean`: the mean over all label tokens of the global batch.

`sft.packing` packs several conversations into each `data.seq_len` row (padding-free
training) with intra-document attention masks, so packed examples never see each other.

The `setup` helper here is shared by `olmo2 dpo` and `olmo2 grpo`: it resolves the device,
tokenizer and model (a fresh run starts from `model.load_path`; an interrupted one resumes
from the newest complete checkpoint in `trainer.run_dir`).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from olmo2.model.hf import read_state_dict
from olmo2.model.transformer import Olmo2
from olmo2.post.data import PostDataSection, RowErrors, encode_labelled, load_examples, sft_messages
from olmo2.post.losses import IGNORE, masked_ce
from olmo2.tokenizer import Tokenizer
from olmo2.train import checkpoint as ckpt
from olmo2.train import distributed as D
from olmo2.train.cli import resolve_device, resolve_model_config, start_run
from olmo2.train.config import (
    CheckpointSection,
    DistributedSection,
    LoggingSection,
    ModelSection,
    OptimSection,
    ScheduleSection,
    TrainerSection,
    dump_yaml,
    load_config,
)
from olmo2.train.trainer import Trainer

log = logging.getLogger(__name__)


def _post_optim() -> OptimSection:
    # open-instruct finetune/dpo defaults: wd 0, no clipping, no spike skipping
    return OptimSection(lr=2e-5, weight_decay=0.0, clip_grad_norm=None, spike_sigma=None)


def _post_schedule() -> ScheduleSection:
    return ScheduleSection(name="linear", alpha_f=0.0)


@dataclass
class SFTSection:
    reduction: str = "sum"
    """sum (OLMo 2) | mean; see the module docstring."""
    packing: bool = False
    """Pack conversations into seq_len rows with document masking."""
    warmup_ratio: float | None = 0.03
    """When set, schedule.warmup_steps = ceil(ratio × trainer.max_steps)."""


def _post_trainer(run_dir: str):
    return field(default_factory=lambda: TrainerSection(run_dir=run_dir, z_loss_multiplier=0.0))


@dataclass
class PostConfig:
    """The sections every post-training command shares; `olmo2 sft|dpo|grpo` subclass it,
    override a default or two and add their own section."""

    model: ModelSection = field(default_factory=ModelSection)
    data: PostDataSection = field(default_factory=PostDataSection)
    optim: OptimSection = field(default_factory=_post_optim)
    schedule: ScheduleSection = field(default_factory=_post_schedule)
    trainer: TrainerSection = _post_trainer("runs/post")
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    logging: LoggingSection = field(default_factory=LoggingSection)
    distributed: DistributedSection = field(default_factory=DistributedSection)

    def validate(self) -> None:
        validate_common(self)


@dataclass
class SFTConfig(PostConfig):
    trainer: TrainerSection = _post_trainer("runs/sft")
    sft: SFTSection = field(default_factory=SFTSection)

    def validate(self) -> None:
        super().validate()
        if self.sft.reduction not in ("sum", "mean"):
            raise ValueError(f"sft.reduction={self.sft.reduction!r}: expected sum or mean")


def validate_common(cfg) -> None:
    d = cfg.data
    if d.global_batch_size <= 0 or d.micro_batch_size <= 0 or d.seq_len < 2:
        raise ValueError(
            "data.global_batch_size and data.micro_batch_size must be > 0, data.seq_len >= 2"
        )
    if cfg.trainer.max_steps <= 0 and d.epochs is None:
        raise ValueError(
            f"trainer.max_steps must be > 0 (or set data.epochs), got {cfg.trainer.max_steps}"
        )
    if cfg.model.load_path is None and cfg.model.size is None:
        raise ValueError("model.load_path (the checkpoint to post-train) or model.size must be set")


def set_steps(cfg, n_rows: int, warmup_ratio: float | None) -> None:
    """Derive trainer.max_steps from data.epochs and the warmup from a ratio, in place."""
    if cfg.data.epochs is not None:
        cfg.trainer.max_steps = max(
            1, math.ceil(cfg.data.epochs * n_rows / cfg.data.global_batch_size)
        )
    if warmup_ratio is not None:
        cfg.schedule.warmup_steps = math.ceil(warmup_ratio * cfg.trainer.max_steps)


# ---- shared set-up ---------------------------------------------------------------------------


def load_tokenizer(cfg) -> Tokenizer:
    path = cfg.data.tokenizer or cfg.model.load_path
    if path is None:
        raise ValueError(
            "data.tokenizer is not set and there is no model.load_path to take it from"
        )
    return Tokenizer.load(str(path))


@dataclass
class Setup:
    model: torch.nn.Module
    device: torch.device
    resume: Path | None


def setup(cfg, tokenizer: Tokenizer) -> Setup:
    """Device, model (from model.load_path, or the run's newest checkpoint to resume)."""
    device = resolve_device(cfg.trainer.device)
    D.init(cfg.distributed.backend, device)
    mcfg = resolve_model_config(cfg)
    if tokenizer.vocab_size > mcfg.vocab_size:
        raise ValueError(
            f"tokenizer has {tokenizer.vocab_size} tokens, more than the model's vocab_size {mcfg.vocab_size}"
        )
    run_dir = Path(cfg.trainer.run_dir)
    resume = ckpt.latest(run_dir)
    if resume is not None:
        ckpt.check_model_config(resume, mcfg)
        ckpt.verify(resume)
    model = start_run(cfg, run_dir, mcfg, device)
    if resume is None and cfg.model.load_path:
        model.load_state_dict(read_state_dict(cfg.model.load_path, dtype=torch.float32))
        log.info("loaded weights from %s", cfg.model.load_path)
    model.activation_checkpointing = cfg.trainer.activation_checkpointing
    strategy = cfg.distributed.strategy
    if strategy == "auto":
        strategy = "ddp" if D.world_size() > 1 else "none"
    return Setup(D.wrap(model, strategy, cfg.distributed.param_dtype), device, resume)


def load_reference(cfg, device: torch.device) -> Olmo2:
    """A frozen copy of the starting policy (`model.load_path`, or a fresh seeded init)."""
    mcfg = resolve_model_config(cfg)
    torch.manual_seed(cfg.trainer.seed)
    ref = Olmo2.build(mcfg, device=device)
    if cfg.model.load_path:
        ref.load_state_dict(read_state_dict(cfg.model.load_path, dtype=torch.float32))
    ref.eval().requires_grad_(False)
    return ref


def fingerprint(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(repr(p).encode())
    return h.hexdigest()[:16]


def finish(
    cfg,
    trainer: Trainer,
    last: dict,
    t0: float,
    resume: Path | None,
    errors: RowErrors,
    extra: str = "",
) -> None:
    if D.is_main() and cfg.logging.report:
        from olmo2.report import training_report

        training_report(cfg.trainer.run_dir)
    if D.is_main():
        print(
            f"trained {trainer.step} steps in {time.perf_counter() - t0:.1f}s"
            f"{' (resumed from ' + resume.name + ')' if resume else ''}; final loss {last.get('loss', float('nan')):.4f}"
            f"{extra}; {errors.summary()}; run dir {cfg.trainer.run_dir}"
        )


@dataclass
class Start:
    cfg: object
    tok: Tokenizer
    errors: RowErrors
    device: torch.device
    t0: float


def begin(cls, args) -> Start | None:
    """The start every post-training command shares: the config (printed, and None returned,
    with --dry-run), the process group, the tokenizer and the bad-row counter."""
    cfg = load_cli_config(cls, args)
    if args.dry_run:
        print(dump_yaml(cfg), end="")
        return None
    t0 = time.perf_counter()
    device = resolve_device(cfg.trainer.device)
    D.init(cfg.distributed.backend, device)
    return Start(cfg, load_tokenizer(cfg), RowErrors(cfg.data.strict), device, t0)


def fit_and_report(cfg, trainer: Trainer, resume, t0: float, errors, summary) -> int:
    """The end every post-training command shares: resume if a checkpoint was found, train
    to `trainer.max_steps`, print the closing line (`summary(last_metrics)` appended), and
    always tear down the process group."""
    if resume is not None:
        trainer.resume(resume)
    try:
        if trainer.step >= cfg.trainer.max_steps:
            print(f"run {cfg.trainer.run_dir} is already complete at step {trainer.step}")
            return 0
        last = trainer.fit()
        finish(cfg, trainer, last, t0, resume, errors, summary(last))
    finally:
        D.shutdown()
    return 0


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="YAML recipe (see recipes/)")
    p.add_argument(
        "overrides", nargs="*", help="dotted overrides, e.g. optim.lr=1e-5 trainer.max_steps=10"
    )
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument(
        "--strict", action="store_true", help="stop at the first bad data row (row number given)"
    )


def load_cli_config(cls, args):
    cfg = load_config(cls, args.recipe, args.overrides)
    if args.strict:
        cfg.data.strict = True
    return cfg


# ---- SFT data ---------------------------------------------------------------------------------


@dataclass
class SFTExample:
    ids: list[int]
    labels: list[int]


def tokenize_sft(tok: Tokenizer, data: PostDataSection, errors: RowErrors) -> list[SFTExample]:
    def parse(row):
        ids, labels, _ = encode_labelled(tok, sft_messages(row), data.seq_len)
        return SFTExample(ids, labels)

    return load_examples(data.paths, parse, errors, data.max_rows)


class SFTBatches:
    """Global batches of SFT examples (rank-local slices): `input_ids`, `labels` [b, T]
    right-padded to the longest row of the batch, or packed `seq_len` rows with `doc_ids`.
    Epoch e visits the examples in the order PCG64(seed + e); the state is (epoch, batch)."""

    def __init__(
        self, examples, global_batch_size, seq_len, pad_id, seed=0, rank=0, world=1, packing=False
    ):
        if global_batch_size % world:
            raise ValueError(
                f"data.global_batch_size={global_batch_size} is not divisible by the world size {world}"
            )
        self.ex, self.B, self.T, self.pad, self.seed = (
            examples,
            global_batch_size,
            seq_len,
            pad_id,
            seed,
        )
        self.rank, self.world, self.packing = rank, world, packing
        self.epoch, self.next_batch = 0, 0
        self._rows_epoch, self._rows = -1, None
        if self.n_rows(0) < global_batch_size:
            raise ValueError(
                f"{len(examples)} usable examples make fewer rows than one global batch ({global_batch_size})"
            )
        self.fingerprint = fingerprint(
            len(examples),
            seq_len,
            global_batch_size,
            seed,
            packing,
            [e.ids[:8] for e in examples[:64]],
        )

    def rows(self, epoch: int) -> list[list[int]]:
        """Example indices of each row of `epoch` (one per row unless packing)."""
        if self._rows_epoch != epoch:
            order = np.random.Generator(np.random.PCG64(self.seed + epoch)).permutation(
                len(self.ex)
            )
            if not self.packing:
                rows = [[int(i)] for i in order]
            else:
                rows, cur, used = [], [], 0
                for i in map(int, order):
                    n = len(self.ex[i].ids)
                    if cur and used + n > self.T:
                        rows.append(cur)
                        cur, used = [], 0
                    cur.append(i)
                    used += n
                rows.append(cur)
            self._rows_epoch, self._rows = epoch, rows
        return self._rows

    def n_rows(self, epoch: int) -> int:
        return len(self.rows(epoch))

    def collate(self, rows: list[list[int]]) -> dict:
        T = self.T if self.packing else max(len(self.ex[r[0]].ids) for r in rows)
        ids = torch.full((len(rows), T), self.pad, dtype=torch.long)
        labels = torch.full((len(rows), T), IGNORE, dtype=torch.long)
        docs = torch.full((len(rows), T), -1, dtype=torch.long)
        for b, row in enumerate(rows):
            pos = 0
            for d, i in enumerate(row):
                e = self.ex[i]
                ids[b, pos : pos + len(e.ids)] = torch.tensor(e.ids)
                labels[b, pos : pos + len(e.ids)] = torch.tensor(e.labels)
                docs[b, pos : pos + len(e.ids)] = d
                pos += len(e.ids)
        out = {"input_ids": ids, "labels": labels}
        if self.packing:
            out["doc_ids"] = docs
        return out

    def __iter__(self):
        while True:
            if (self.next_batch + 1) * self.B > self.n_rows(self.epoch):
                self.epoch, self.next_batch = self.epoch + 1, 0
            rows = self.rows(self.epoch)[self.next_batch * self.B : (self.next_batch + 1) * self.B]
            self.next_batch += 1
            yield self.collate(rows[self.rank :: self.world])

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "next_batch": self.next_batch, "fingerprint": self.fingerprint}

    def load_state_dict(self, sd: dict) -> None:
        if sd.get("fingerprint") != self.fingerprint:
            raise ValueError(
                "the SFT data or batching changed since the checkpoint; refusing to resume on other data"
            )
        self.epoch, self.next_batch = int(sd["epoch"]), int(sd["next_batch"])


@dataclass
class SFTObjective:
    """Masked CE; units make the trainer's global normalisation give `sum` or `mean`."""

    reduction: str = "sum"

    def loss(self, model, mb):
        logits = model(mb["input_ids"], doc_ids=mb.get("doc_ids"))
        ce = masked_ce(logits, mb["labels"], "sum")
        return ce, {"ce": ce.detach()}

    def units(self, mb) -> int:
        return 1 if self.reduction == "sum" else int((mb["labels"] != IGNORE).sum())


# ---- command -----------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p)


def run(args) -> int:
    if (b := begin(SFTConfig, args)) is None:
        return 0
    cfg, tok, errors, t0 = b.cfg, b.tok, b.errors, b.t0
    examples = tokenize_sft(tok, cfg.data, errors)
    log.info("%d SFT examples; %s", len(examples), errors.summary())
    data = SFTBatches(
        examples, cfg.data.global_batch_size, cfg.data.seq_len, tok.pad_token_id, cfg.data.seed,
        D.rank(), D.world_size(), cfg.sft.packing,
    )  # fmt: skip
    set_steps(cfg, data.n_rows(0), cfg.sft.warmup_ratio)
    s = setup(cfg, tok)
    trainer = Trainer(cfg, s.model, data, objective=SFTObjective(cfg.sft.reduction), tokenizer=tok)
    return fit_and_report(
        cfg, trainer, s.resume, t0, errors, lambda last: f"; {len(examples)} examples"
    )
