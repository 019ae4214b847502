"""Pretraining batches: `olmo2.data.loader.InstanceLoader` (fixed-length instances from token
files, PCG64(seed + epoch) order, rank striding, prefetch thread, resume by tokens seen and a
dataset fingerprint) configured from the recipe's `data:` section, plus a check that every
token id fits the model's embedding (data tokenized for another vocabulary fails with a clear
message instead of an index error deep inside the forward pass)."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from olmo2.data.loader import DataConfig, InstanceLoader
from olmo2.train.config import DataSection


class VocabChecked:
    """A data source whose batches are checked against the model vocabulary."""

    def __init__(self, source, vocab_size: int):
        self.source, self.vocab_size = source, vocab_size

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for batch in self.source:
            top = int(batch["input_ids"].max())
            if top >= self.vocab_size:
                raise ValueError(
                    f"token id {top} in data.paths is outside the model vocabulary "
                    f"({self.vocab_size}); was the data tokenized for another model?"
                )
            yield batch

    def state_dict(self) -> dict:
        return self.source.state_dict()

    def load_state_dict(self, sd: dict) -> None:
        self.source.load_state_dict(sd)


def build_loader(
    d: DataSection, rank: int, world_size: int, eos_token_id: int | None, vocab_size: int
) -> VocabChecked:
    cfg = DataConfig(
        paths=list(d.paths),
        seq_len=d.seq_len,
        global_batch_size=d.global_batch_size,
        seed=d.seed,
        label_mask_paths=list(d.label_mask_paths) or None,
        doc_masking=d.doc_masking,
        packing=d.packing,
        eos_token_id=-1 if eos_token_id is None else eos_token_id,
    )
    return VocabChecked(InstanceLoader(cfg, rank, world_size), vocab_size)
