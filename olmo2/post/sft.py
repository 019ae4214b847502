"""`olmo2 sft RECIPE.yaml [key=value ...]`: supervised fine-tuning on chat data.

Rows are rendered with the OLMo 2 ("tulu") chat template and only assistant content + its
EOS is trained (labels −100 elsewhere; `olmo2.post.data.encode_labelled`), truncated to
`data.seq_len`; rows with nothing trainable are counted and skipped. The loop, optimizer,
checkpoints (HF files + exact-resume train state) and metrics are the trainer's, the start-up
path `olmo2.train.setup` (through `olmo2.post.common`); this module supplies the batches and
the objective.

Loss reduction (`sft.reduction`):
- `sum` (OLMo 2 / Tülu 3 `--reduce_loss sum`, allenai/open-instruct finetune.py before PR
  #1024 and docs/olmo2.md): each micro-batch contributes the *sum* of its token losses and
  the global batch averages over micro-batches (the effect of accelerate's gradient
  accumulation in open-instruct), so every token weighs the same;
- `mean`: the mean over all label tokens of the global batch.

`sft.packing` packs several conversations into each `data.seq_len` row (padding-free
training, open-instruct `--packing`) with intra-document attention masks, so packed
examples never see each other.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import torch

from olmo2.post import common
from olmo2.post.common import EpochSampler, PostConfig, SampledBatches, post_trainer
from olmo2.post.data import PostDataSection, RowErrors, encode_labelled, load_examples, sft_messages
from olmo2.post.losses import IGNORE, masked_ce
from olmo2.tokenizer import Tokenizer
from olmo2.train import setup
from olmo2.train.config import TrainerSection
from olmo2.train.trainer import Objective


@dataclass
class SFTSection:
    reduction: str = "sum"
    """sum (OLMo 2) | mean; see the module docstring."""
    packing: bool = False
    """Pack conversations into seq_len rows with document masking."""
    warmup_ratio: float | None = 0.03
    """When set, schedule.warmup_steps = ceil(ratio × trainer.max_steps)."""


@dataclass
class SFTConfig(PostConfig):
    STAGE = "sft"
    trainer: TrainerSection = post_trainer("runs/sft")
    sft: SFTSection = field(default_factory=SFTSection)

    def validate(self) -> None:
        super().validate()
        if self.sft.reduction not in ("sum", "mean"):
            raise ValueError(f"sft.reduction={self.sft.reduction!r}: expected sum or mean")


# ---- data ---------------------------------------------------------------------------------


@dataclass
class SFTExample:
    ids: list[int]
    labels: list[int]


def tokenize_sft(tok: Tokenizer, data: PostDataSection, errors: RowErrors) -> list[SFTExample]:
    def parse(row):
        ids, labels, _ = encode_labelled(tok, sft_messages(row), data.seq_len)
        return SFTExample(ids, labels)

    return load_examples(data.paths, parse, errors, data.max_rows)


def pack(examples: list[SFTExample], order: list[int], seq_len: int) -> list[list[int]]:
    """Greedy packing in `order`: consecutive examples share a row while they fit `seq_len`."""
    rows, cur, used = [], [], 0
    for i in order:
        n = len(examples[i].ids)
        if cur and used + n > seq_len:
            rows.append(cur)
            cur, used = [], 0
        cur.append(i)
        used += n
    return rows + [cur] if cur else rows


def sft_sampler(examples: list[SFTExample], data: PostDataSection, packing: bool) -> EpochSampler:
    """Rows of example indices: one example each, or packed into `data.seq_len` tokens."""
    if packing:
        rows = lambda order: pack(examples, order, data.seq_len)  # noqa: E731
    else:
        rows = lambda order: [[i] for i in order]  # noqa: E731
    head = [e.ids[:8] for e in examples[:64]]
    return EpochSampler(
        len(examples), data.global_batch_size, data.seed,
        what="SFT examples", identity=(data.seq_len, packing, head), rows=rows,
    )  # fmt: skip


def collate_sft(
    examples: list[SFTExample], rows: list[list[int]], pad: int, packed_len: int | None = None
) -> dict:
    """`input_ids`, `labels` [b, T] right-padded to the longest row; with `packed_len`,
    rows of several examples in T = packed_len tokens and their `doc_ids` (−1 = padding)."""
    T = packed_len or max(len(examples[r[0]].ids) for r in rows)
    ids = torch.full((len(rows), T), pad, dtype=torch.long)
    labels = torch.full((len(rows), T), IGNORE, dtype=torch.long)
    docs = torch.full((len(rows), T), -1, dtype=torch.long)
    for b, row in enumerate(rows):
        pos = 0
        for d, i in enumerate(row):
            e = examples[i]
            ids[b, pos : pos + len(e.ids)] = torch.tensor(e.ids)
            labels[b, pos : pos + len(e.ids)] = torch.tensor(e.labels)
            docs[b, pos : pos + len(e.ids)] = d
            pos += len(e.ids)
    out = {"input_ids": ids, "labels": labels}
    if packed_len:
        out["doc_ids"] = docs
    return out


@dataclass
class SFTObjective(Objective):
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
    common.add_arguments(p, "optim.lr=1e-5 trainer.max_steps=10")


def run(args) -> int:
    if (post := common.begin(SFTConfig, args, tokenize_sft, "SFT examples")) is None:
        return 0
    cfg, examples, pad = post.cfg, post.examples, post.tok.pad_token_id
    sampler = sft_sampler(examples, cfg.data, cfg.sft.packing)
    packed_len = cfg.data.seq_len if cfg.sft.packing else None
    data = SampledBatches(sampler, lambda rows: collate_sft(examples, rows, pad, packed_len))
    common.set_steps(cfg, sampler.n_rows(0), cfg.sft.warmup_ratio)
    model = setup.build_model(cfg, post.start)
    objective = SFTObjective(cfg.sft.reduction)
    return common.fit(post, model, data, objective, lambda last: f"; {len(examples)} examples")
