"""`olmo2 dpo RECIPE.yaml [key=value ...]`: direct preference optimisation.

Losses (`dpo.loss`, allenai/open-instruct dpo_utils.py): `dpo_norm` — sigmoid DPO on
per-token *mean* response log-probs with β 5, the OLMo 2 / Tülu 3 recipe (open-instruct
docs/olmo2.md) — and the standard sigmoid `dpo` on summed log-probs. Only the final assistant reply (+ EOS) is scored; the prompt,
earlier turns and padding are masked.

The reference model is the starting checkpoint (`model.load_path`). Its log-probs are
computed once over the whole dataset, cached on disk under a key hashing (reference
weights, data files, tokenizer, seq_len, row limit), and the reference model is freed
before training (open-instruct `dpo_tune_cache.py`). A resumed run finds the cache and never
loads the reference again. `dpo.reference_cache: false` keeps the reference in memory and
scores it live instead (same losses; tested).

Chosen and rejected go through one concatenated forward. Logged per step: loss,
`rewards/chosen`, `rewards/rejected` (β·(π − ref)), `rewards/margin`, `rewards/accuracy`.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from olmo2.post import common
from olmo2.post.common import EpochSampler, PostConfig, SampledBatches, post_trainer
from olmo2.post.data import (
    PostDataSection,
    RowErrors,
    encode_labelled,
    load_examples,
    preference_pair,
)
from olmo2.post.losses import DPO_LOSSES, IGNORE, dpo_loss, token_logps
from olmo2.tokenizer import Tokenizer
from olmo2.train import distributed, setup
from olmo2.train.config import TrainerSection
from olmo2.train.trainer import Objective
from olmo2.utils import atomic_path, sha256_file

log = logging.getLogger(__name__)
CACHE_VERSION = 1


@dataclass
class DPOSection:
    loss: str = "dpo_norm"
    """dpo_norm (length-normalised, OLMo 2) | dpo (sigmoid on summed log-probs)"""
    beta: float = 5.0
    reference_cache: bool = True
    """Pre-compute reference log-probs once and free the reference model."""
    cache_dir: str | None = None
    """Where the reference cache lives (default: trainer.run_dir)."""
    reference_batch_size: int = 8
    """Pairs per forward while filling the cache."""
    warmup_ratio: float | None = 0.1


@dataclass
class DPOConfig(PostConfig):
    STAGE = "dpo"
    data: PostDataSection = field(default_factory=lambda: PostDataSection(seq_len=2048))
    trainer: TrainerSection = post_trainer("runs/dpo")
    dpo: DPOSection = field(default_factory=DPOSection)

    def validate(self) -> None:
        super().validate()
        if self.dpo.loss not in DPO_LOSSES:
            raise ValueError(f"dpo.loss={self.dpo.loss!r}: expected one of {', '.join(DPO_LOSSES)}")
        if self.dpo.beta <= 0:
            raise ValueError(f"dpo.beta must be > 0, got {self.dpo.beta}")


# ---- data ---------------------------------------------------------------------------------------


@dataclass
class PairExample:
    chosen_ids: list[int]
    chosen_labels: list[int]
    rejected_ids: list[int]
    rejected_labels: list[int]


def tokenize_pairs(tok: Tokenizer, data: PostDataSection, errors: RowErrors) -> list[PairExample]:
    def parse(row):
        prompt, ch, rj = preference_pair(row)
        c_ids, c_lab, _ = encode_labelled(
            tok, prompt + [{"role": "assistant", "content": ch}], data.seq_len, True
        )
        r_ids, r_lab, _ = encode_labelled(
            tok, prompt + [{"role": "assistant", "content": rj}], data.seq_len, True
        )
        return PairExample(c_ids, c_lab, r_ids, r_lab)

    return load_examples(data.paths, parse, errors, data.max_rows)


def collate_pairs(examples: list[PairExample], idx: list[int], pad: int) -> dict:
    """`chosen_*`/`rejected_*` [b, T] right-padded to one length T, and `index` [b]."""
    T = max(max(len(examples[i].chosen_ids), len(examples[i].rejected_ids)) for i in idx)
    out = {}
    for side in ("chosen", "rejected"):
        ids = torch.full((len(idx), T), pad, dtype=torch.long)
        labels = torch.full((len(idx), T), IGNORE, dtype=torch.long)
        for b, i in enumerate(idx):
            e_ids, e_lab = (
                getattr(examples[i], f"{side}_ids"),
                getattr(examples[i], f"{side}_labels"),
            )
            ids[b, : len(e_ids)], labels[b, : len(e_lab)] = torch.tensor(e_ids), torch.tensor(e_lab)
        out[f"{side}_ids"], out[f"{side}_labels"] = ids, labels
    out["index"] = torch.tensor(idx, dtype=torch.long)
    return out


def pair_sampler(examples: list[PairExample], data: PostDataSection) -> EpochSampler:
    head = [e.chosen_ids[:8] for e in examples[:64]]
    return EpochSampler(
        len(examples), data.global_batch_size, data.seed, what="preference pairs", identity=(head,)
    )


def with_reference(batch: dict, ref_cache: torch.Tensor | None) -> dict:
    """Add `ref_chosen`/`ref_rejected` [b, 2] = (Σ log-prob, tokens) from the cache."""
    if ref_cache is not None:
        idx = batch["index"]
        batch["ref_chosen"], batch["ref_rejected"] = ref_cache[idx, 0], ref_cache[idx, 1]
    return batch


# ---- reference log-probs --------------------------------------------------------------------------


def pair_logps(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward over chosen ‖ rejected: per-sequence (Σ log-prob [2b], label tokens [2b])."""
    ids = torch.cat([batch["chosen_ids"], batch["rejected_ids"]])
    labels = torch.cat([batch["chosen_labels"], batch["rejected_labels"]])
    lp = token_logps(model(ids), labels).sum(-1)
    return lp, (labels != IGNORE).sum(-1)


@torch.no_grad()
def reference_logps(
    model, examples: list[PairExample], pad: int, batch_size: int, device
) -> torch.Tensor:
    """[N, 2, 2]: for each pair, (Σ log-prob, tokens) of chosen and of rejected."""
    out = torch.zeros(len(examples), 2, 2, dtype=torch.float64)
    for s in tqdm(
        range(0, len(examples), batch_size),
        desc="reference log-probs",
        disable=not distributed.is_main(),
    ):
        idx = list(range(s, min(s + batch_size, len(examples))))
        batch = {k: v.to(device) for k, v in collate_pairs(examples, idx, pad).items()}
        lp, n = pair_logps(model, batch)
        b = len(idx)
        out[s : s + b, :, 0] = torch.stack([lp[:b], lp[b:]], 1).double().cpu()
        out[s : s + b, :, 1] = torch.stack([n[:b], n[b:]], 1).double().cpu()
    return out


def cache_key(cfg, tok: Tokenizer) -> str:
    """Hash of everything the reference log-probs depend on."""
    ref = Path(cfg.model.load_path) if cfg.model.load_path else None
    weights = (
        sorted(sha256_file(p) for p in ref.glob("*.safetensors"))
        if ref
        else ("init", cfg.model.size, cfg.trainer.seed)
    )
    data = [sha256_file(p) for p in cfg.data.paths]
    return common.fingerprint(
        CACHE_VERSION, weights, data, tok.backend.to_str(), cfg.data.seq_len, cfg.data.max_rows
    )


def cached_reference(post: common.Run, examples: list[PairExample]) -> torch.Tensor:
    """Load the reference cache, or compute it (rank 0 writes, then everyone reads)."""
    cfg, tok, device = post.cfg, post.tok, post.start.device
    path = Path(cfg.dpo.cache_dir or cfg.trainer.run_dir) / f"ref_logps-{cache_key(cfg, tok)}.pt"
    if not path.is_file():
        if distributed.is_main():
            t0 = time.perf_counter()
            ref = common.load_reference(post)
            values = reference_logps(
                ref, examples, tok.pad_token_id, cfg.dpo.reference_batch_size, device
            )
            del ref  # the reference model is not needed again
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                torch.save(values, tmp)
            log.info(
                "reference log-probs of %d pairs in %.1fs -> %s",
                len(examples),
                time.perf_counter() - t0,
                path,
            )
        distributed.barrier()
    else:
        log.info("reference log-probs from cache %s", path)
    values = torch.load(path)
    if values.shape != (len(examples), 2, 2):
        raise ValueError(
            f"{path}: cache holds {tuple(values.shape)}, expected ({len(examples)}, 2, 2); delete it"
        )
    return values


# ---- objective ----------------------------------------------------------------------------------


@dataclass
class DPOObjective(Objective):
    """Sum of per-pair DPO losses; one unit per pair. Reference values come from the batch
    (`ref_chosen`/`ref_rejected` = (Σ log-prob, tokens)) or from a live `reference` model."""

    loss_type: str = "dpo_norm"
    beta: float = 5.0
    reference: torch.nn.Module | None = None

    def _seq(self, lp: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        return lp / n.clamp(min=1) if DPO_LOSSES[self.loss_type] else lp

    def loss(self, model, mb):
        lp, n = pair_logps(model, mb)
        b = mb["chosen_ids"].shape[0]
        if self.reference is not None:
            with torch.no_grad():
                rlp, rn = pair_logps(self.reference, mb)
            ref_c, ref_r = self._seq(rlp[:b], rn[:b]), self._seq(rlp[b:], rn[b:])
        else:
            rc, rr = mb["ref_chosen"].to(lp.device), mb["ref_rejected"].to(lp.device)
            ref_c, ref_r = (
                self._seq(rc[:, 0].float(), rc[:, 1]),
                self._seq(rr[:, 0].float(), rr[:, 1]),
            )
        pol = self._seq(lp, n)
        out = dpo_loss(pol[:b], pol[b:], ref_c, ref_r, self.beta)
        metrics = {
            "rewards/chosen": out.chosen_rewards.sum(),
            "rewards/rejected": out.rejected_rewards.sum(),
            "rewards/margin": out.margins.sum(),
            "rewards/accuracy": out.accuracy.sum(),
        }
        return out.losses.sum(), metrics

    def units(self, mb) -> int:
        return int(mb["chosen_ids"].shape[0])

    def tokens(self, mb) -> int:
        return mb["chosen_ids"].numel() + mb["rejected_ids"].numel()


# ---- command ------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_arguments(p, "dpo.beta=0.1 trainer.max_steps=10")


def run(args) -> int:
    if (post := common.begin(DPOConfig, args, tokenize_pairs, "preference pairs")) is None:
        return 0
    cfg, examples, pad = post.cfg, post.examples, post.tok.pad_token_id
    common.set_steps(cfg, len(examples), cfg.dpo.warmup_ratio)
    cache = cached_reference(post, examples) if cfg.dpo.reference_cache else None
    data = SampledBatches(
        pair_sampler(examples, cfg.data),
        lambda idx: with_reference(collate_pairs(examples, idx, pad), cache),
    )
    model = setup.build_model(cfg, post.start)
    live = None if cfg.dpo.reference_cache else common.load_reference(post)
    return common.fit(
        post, model, data, DPOObjective(cfg.dpo.loss, cfg.dpo.beta, live),
        lambda last: f"; margin {last.get('rewards/margin', float('nan')):.4f}, accuracy {last.get('rewards/accuracy', float('nan')):.3f}",
    )  # fmt: skip
