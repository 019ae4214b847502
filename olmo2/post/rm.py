"""`olmo2 rm RECIPE.yaml [key=value ...]`: reward-model training (Bradley-Terry).

The model is an `olmo2.model.reward.Olmo2Reward`: the OLMo 2 backbone with a scalar `score`
head read at each sequence's last non-pad token, saved as an HF
`Olmo2ForSequenceClassification` directory (num_labels 1, pad id in config.json) that
transformers loads as it is. `model.load_path` is a causal LM (the SFT checkpoint: backbone
weights, a fresh head ~ N(0, 1/√(d+1))) or an existing reward model (all weights).

Data are the preference rows `olmo2 dpo` reads (`olmo2.post.data.preference_pair`); each side
is the whole conversation through the chat template, ending with the reply's EOS, where the
score is read. A pair with a side longer than `data.seq_len` is skipped and counted rather
than truncated (the score would be read mid-reply; open-instruct `preference_filter_v1`
drops such rows too). `data.exclude_heldout` leaves out the pairs the reward-model eval tasks
score (`olmo2.eval.tasks.reward.is_heldout`, a hash of the prompt), so an RM trained and
evaluated on one file never sees its test side.

Loss −log σ(r_chosen − r_rejected − `rm.margin`) per pair (`losses.bradley_terry_loss`),
chosen and rejected in one forward; by default (`rm.shared_prompt`) each pair is one row whose
prompt tokens are computed once for both replies (the eval harness's shared-context layout). Logged per step: loss, `accuracy` (r_c > r_r; a tie is
wrong, as in RewardBench), `margin` (mean r_c − r_r), `score/chosen`, `score/rejected`.

Recipe facts (OLMo 2 7B/13B RM, allenai/open-instruct docs/archived_dev_scripts/olmo2_1124.sh,
script `reward_modeling.py`): from the SFT checkpoint, LR 3e-6, linear decay, no warmup,
1 epoch, max length 2048, AdamW eps 1e-5; `recipes/olmo2-7b-rm.yaml` cites each.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field

import torch

from olmo2.eval.harness import tree_mask
from olmo2.eval.tasks.reward import is_heldout
from olmo2.model.config import ModelConfig
from olmo2.model.reward import Olmo2Reward, check_reward_checkpoint, load_weights, sequence_scores
from olmo2.post import common
from olmo2.post.common import PostConfig, SampledBatches, post_trainer
from olmo2.post.data import (
    BadRow,
    PostDataSection,
    RowErrors,
    encode_labelled,
    load_examples,
    preference_pair,
)
from olmo2.post.dpo import PairExample, collate_pairs, pair_sampler
from olmo2.post.losses import bradley_terry_loss
from olmo2.tokenizer import Tokenizer
from olmo2.train import setup
from olmo2.train.config import OptimSection, TrainerSection
from olmo2.train.trainer import Objective

log = logging.getLogger(__name__)


@dataclass
class RMSection:
    margin: float = 0.0
    """Subtracted from r_chosen − r_rejected inside the loss (Llama 2's RM margin, Touvron et
    al. 2023 eq. 2); 0 is plain Bradley-Terry, as OLMo 2 trained its RMs."""
    warmup_ratio: float | None = None
    """Warmup as a fraction of the steps (open-instruct reward_modeling.py: no warmup)."""
    shared_prompt: bool = True
    """One row per pair: the tokens both sides share (the prompt) once, then the chosen and
    the rejected reply as two branches (tree attention mask, positions restarting after the
    prompt), so the prompt is computed once; the scores are those of the two conversations
    alone. false: chosen and rejected as two right-padded rows (open-instruct, TRL)."""


@dataclass
class RMDataSection(PostDataSection):
    exclude_heldout: bool = False
    """Leave out the pairs whose prompt falls on the held-out side of
    `olmo2.eval.tasks.reward.is_heldout` (the pairs `olmo2 eval --tasks ...:rm::heldout`
    scores): train on one file, evaluate on the rest of it."""


def rm_optim() -> OptimSection:
    # open-instruct reward_modeling.py: torch AdamW (betas 0.9/0.999) with eps 1e-5, no weight
    # decay; like the other post-training commands, no clipping or spike skipping
    return OptimSection(
        lr=3e-6, betas=[0.9, 0.999], eps=1e-5, weight_decay=0.0, clip_grad_norm=None,
        spike_sigma=None,
    )  # fmt: skip


@dataclass
class RMConfig(PostConfig):
    STAGE = "rm"
    data: RMDataSection = field(
        default_factory=lambda: RMDataSection(seq_len=2048, epochs=1.0, global_batch_size=128)
    )
    optim: OptimSection = field(default_factory=rm_optim)
    trainer: TrainerSection = post_trainer("runs/rm")
    rm: RMSection = field(default_factory=RMSection)


# ---- data ---------------------------------------------------------------------------------------


def tokenize_rm_pairs(tok: Tokenizer, data: RMDataSection, errors: RowErrors) -> list[PairExample]:
    """Both sides of every usable pair as whole conversations (labels mark the reply, unused
    by the loss); over-long pairs are bad rows and, with `exclude_heldout`, held-out pairs
    are left out (they count towards `data.max_rows`)."""

    def parse(row):
        prompt, ch, rj = preference_pair(row)
        if data.exclude_heldout and is_heldout(prompt):
            return None
        sides = []
        for reply in (ch, rj):
            msgs = prompt + [{"role": "assistant", "content": reply}]
            ids, labels, _ = encode_labelled(tok, msgs, 1 << 62, last_only=True)
            if len(ids) > data.seq_len:
                raise BadRow("longer than data.seq_len", f"{len(ids)} > {data.seq_len} tokens")
            sides += [ids, labels]
        return PairExample(*sides)

    rows = load_examples(data.paths, parse, errors, data.max_rows)
    pairs = [p for p in rows if p is not None]
    if data.exclude_heldout:
        log.info("%d pairs held out for evaluation (data.exclude_heldout)", len(rows) - len(pairs))
    return pairs


def shared_prompt_rows(examples: list[PairExample], idx: list[int], pad: int) -> dict:
    """One row per pair: the leading tokens chosen and rejected share, the rest of chosen,
    the rest of rejected; `positions` [b, T] restart after the shared part for the rejected
    branch, `seg` [b, T] 0 shared / 1 chosen / 2 rejected / −1 pad (`tree_mask`), `last`
    [b, 2] the position of each branch's last token (where its score is read)."""
    parts = []
    for i in idx:
        c, r = examples[i].chosen_ids, examples[i].rejected_ids
        n = min(len(c), len(r)) - 1  # each branch keeps at least its last token
        P = next((t for t in range(n) if c[t] != r[t]), n)
        parts.append((c[:P], c[P:], r[P:]))
    T = max(len(p) + len(a) + len(b) for p, a, b in parts)
    ids = torch.full((len(idx), T), pad, dtype=torch.long)
    pos = torch.zeros((len(idx), T), dtype=torch.long)
    seg = torch.full((len(idx), T), -1, dtype=torch.long)
    last = torch.zeros((len(idx), 2), dtype=torch.long)
    for row, (p, a, b) in enumerate(parts):
        P, A, B = len(p), len(a), len(b)
        ids[row, : P + A + B] = torch.tensor(p + a + b)
        pos[row, : P + A] = torch.arange(P + A)
        pos[row, P + A : P + A + B] = torch.arange(P, P + B)
        seg[row, :P], seg[row, P : P + A], seg[row, P + A : P + A + B] = 0, 1, 2
        last[row] = torch.tensor([P + A - 1, P + A + B - 1])
    return {"ids": ids, "positions": pos, "seg": seg, "last": last}


# ---- model --------------------------------------------------------------------------------------


def initial_reward_model(cfg, mcfg: ModelConfig, device, weights: bool = True) -> Olmo2Reward:
    """`setup.initial_model` for a reward model: seeded init (the head as
    `Olmo2Reward.init_weights` says), then `model.load_path`'s weights: all of a reward
    model's, or a causal LM's backbone with the fresh head."""
    torch.manual_seed(cfg.trainer.seed)
    model = Olmo2Reward.build(mcfg, device=device)
    if weights and cfg.model.load_path:
        load_weights(model, cfg.model.load_path)
    return model


def check_start(run: common.Run) -> None:
    """Refuse, before anything is written, a starting checkpoint whose head is not [1, d]
    and a pad id the model and the tokenizer do not share (scores are read at the last
    non-pad token, so the collated padding must be the config's pad id)."""
    mcfg, pad = run.start.model_config, run.tok.pad_token_id
    origin = run.start.resume or run.start.load_path
    if origin is not None:
        check_reward_checkpoint(origin, mcfg)
    if mcfg.pad_token_id != pad:
        raise ValueError(
            f"the model's pad_token_id is {mcfg.pad_token_id} but the tokenizer pads with {pad}; "
            f"a reward model reads its score at the last non-pad token (set model.pad_token_id={pad})"
        )
    if pad == run.tok.eos_token_id:
        raise ValueError(
            f"the tokenizer pads with its EOS id {pad}: the score would be read before the "
            "reply's EOS; use a tokenizer with a <|pad|> token"
        )


# ---- objective ----------------------------------------------------------------------------------


@dataclass
class RMObjective(Objective):
    """Sum of per-pair Bradley-Terry losses; one unit per pair. One forward per micro-batch:
    `shared_prompt_rows` (a row per pair, the prompt once) or `collate_pairs` (chosen ‖
    rejected as right-padded rows)."""

    pad_token_id: int
    margin: float = 0.0

    def scores(self, model, mb) -> tuple[torch.Tensor, torch.Tensor]:
        """(r_chosen [b], r_rejected [b])."""
        if "seg" in mb:
            keep = torch.zeros(mb["ids"].shape, dtype=torch.bool, device=mb["ids"].device)
            keep[torch.arange(len(keep), device=keep.device)[:, None], mb["last"]] = True
            s = model(
                mb["ids"], positions=mb["positions"], attn_mask=tree_mask(mb["seg"]),
                logits_to_keep=keep,
            ).float()  # fmt: skip
            return s[0::2], s[1::2]  # row-major: each row's chosen end precedes its rejected end
        b = mb["chosen_ids"].shape[0]
        ids = torch.cat([mb["chosen_ids"], mb["rejected_ids"]])
        s = sequence_scores(model, ids, self.pad_token_id).float()
        return s[:b], s[b:]

    def loss(self, model, mb):
        chosen, rejected = self.scores(model, mb)
        out = bradley_terry_loss(chosen, rejected, self.margin)
        metrics = {
            "accuracy": out.accuracy.sum(),
            "margin": out.margins.sum(),
            "score/chosen": chosen.detach().sum(),
            "score/rejected": rejected.detach().sum(),
        }
        return out.losses.sum(), metrics

    def units(self, mb) -> int:
        return len(mb["last"] if "seg" in mb else mb["chosen_ids"])

    def tokens(self, mb) -> int:
        if "seg" in mb:
            return int((mb["seg"] >= 0).sum())
        return mb["chosen_ids"].numel() + mb["rejected_ids"].numel()


# ---- command ------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_arguments(p, "rm.margin=0.5 trainer.max_steps=10")


def run(args) -> int:
    if (post := common.begin(RMConfig, args, tokenize_rm_pairs, "preference pairs")) is None:
        return 0
    check_start(post)
    cfg, examples, pad = post.cfg, post.examples, post.tok.pad_token_id
    common.set_steps(cfg, len(examples), cfg.rm.warmup_ratio)
    collate = shared_prompt_rows if cfg.rm.shared_prompt else collate_pairs
    data = SampledBatches(pair_sampler(examples, cfg.data), lambda idx: collate(examples, idx, pad))
    model = setup.build_model(cfg, post.start, initial_reward_model)
    return common.fit(
        post, model, data, RMObjective(pad, cfg.rm.margin),
        lambda last: f"; accuracy {last.get('accuracy', float('nan')):.3f}, margin {last.get('margin', float('nan')):.4f}",
    )  # fmt: skip
