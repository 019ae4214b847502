"""`olmo2 ppo RECIPE.yaml [key=value ...]`: RLVR with PPO, a value model and verifiable rewards.

The OLMo 2 7B/13B Instruct RLVR recipe (allenai/open-instruct docs/archived_dev_scripts/
olmo2_1124.sh with `ppo_vllm_thread_ray_gtrl_olmo.py` at b452f9226 and the legacy
`ppo_vllm_thread_ray_gtrl.py` at bac939310^). Per rollout:

1. take `data.global_batch_size` prompts and sample one completion each through the rollout
   engine GRPO uses (`olmo2.post.grpo.sample_group` over `olmo2.post.rollout`:
   `rollout.backend=olmo2|vllm`, temperature 1, ending at EOS);
2. score = 10 × verifier score (+ `ppo.reward_model_multiplier` × the score of a frozen
   reward model, off in OLMo 2), replaced by the non-stop penalty −10 for a response that
   never emitted EOS; per-token reward = −β·kl1 (kl1 = log π − log π_ref against the frozen
   starting policy) with the score added at the response's last token;
3. values V_t from the value model (an `Olmo2Reward`: from `ppo.value_path`, the reward
   model trained on the same preference mix as in OLMo 2, or the policy's backbone with a
   fresh head), GAE (γ 1, λ 0.95), returns A + V, advantages whitened over the rollout;
4. `ppo.ppo_epochs` passes over the rollout, each in `ppo.mini_batches` shuffled
   mini-batches, one optimizer step each: PPO-clip policy loss (ε 0.2) + vf_coef (0.1) ×
   the clipped value loss (ε_v 0.2), both token means over the mini-batch
   (`olmo2.post.losses`).

Policy and value model are one module (`PolicyAndValue`) for the trainer: one AdamW over both
at one LR (open-instruct gives both models `learning_rate`; AdamW is per-parameter, so this
equals two optimizers), each model's gradient clipped by its own norm (open-instruct's two
DeepSpeed engines; the logged `grad_norm` is that of both together), one exact-resume
checkpoint. A checkpoint `ppo-step{N}/` is a plain HF `Olmo2ForCausalLM` directory (the
policy: what `olmo2 eval|export|generate` load) with the value model beside it in `value/`,
an HF `Olmo2ForSequenceClassification` directory; `train_state/` holds both.

Other departures from open-instruct, stated: the score sits at the last response token (EOS
when finished), not one past it (TRL PPOv2's `sequence_lengths_p1` placement), and values
are trained on the response tokens only; no asynchronous (one-step-stale) rollouts; one
completion per prompt.

Logged per step: loss, `pg_loss`, `vf_loss`, `pg_clip_frac`, `vf_clip_frac`, `kl` (kl1 per
token), and of the rollout the step learns from: `reward` (the score), `pass_rate`,
`explained_var` (1 − Var(R − V)/Var(R) of the rollout's values), `response_len`, `finished`,
`rollout_time` (generation, scoring and the no-grad policy/reference/value forwards; on the
first step of each rollout, 0 on the others, as the trainer's `data_time`); the learner time
is `step_time − data_time`. With `rollout.backend=vllm` the policy-gradient term is weighted
per token by GRPO's truncated IS weight (`olmo2.post.rollout`), logged as `is_weight`,
`is_capped` and `rollout_logp_diff`.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from olmo2.model.config import ModelConfig
from olmo2.model.hf import read_config
from olmo2.model.reward import (
    Olmo2Reward,
    check_reward_checkpoint,
    load_reward_model,
    load_weights,
    sequence_scores,
)
from olmo2.model.transformer import Olmo2
from olmo2.post import common, rewards
from olmo2.post.common import PostConfig, post_optim, post_trainer
from olmo2.post.data import PostDataSection
from olmo2.post.grpo import (
    GRPOSection,
    Prompt,
    batched_logps,
    rollout_tensors,
    sample_group,
    start_engine,
    tokenize_prompts,
)
from olmo2.post.losses import (
    IGNORE,
    explained_variance,
    gae,
    kl_reward,
    ppo_policy_loss,
    ppo_value_loss,
    token_logps,
    whiten,
)
from olmo2.post.rollout import RolloutEngine, RolloutSection, RolloutSource, tis_weights
from olmo2.tokenizer import Tokenizer
from olmo2.train import checkpoint as ckpt
from olmo2.train import distributed, setup
from olmo2.train.config import OptimSection, TrainerSection
from olmo2.train.trainer import Objective

log = logging.getLogger(__name__)


@dataclass
class PPOSection:
    value_path: str | None = None
    """The value model's initialisation: a reward-model checkpoint (`olmo2 rm`; OLMo 2's
    choice, `init_value_from_scratch=False`) or a causal LM; null = the policy's backbone
    (`model.load_path`) with a fresh scalar head. It must be the policy's size."""
    reward_model_path: str | None = None
    """A frozen reward model whose score × `reward_model_multiplier` adds to the reward."""
    reward_model_multiplier: float = 0.0
    """0 in the OLMo 2 runs (the verifier alone rewards)."""
    max_new_tokens: int = 2048
    """Response length limit; a response cut here is 'unfinished' (non-stop penalty)."""
    temperature: float = 1.0
    beta: float = 0.05
    """KL coefficient of the per-token reward −β·kl1 (OLMo 2 swept 0.03-0.1)."""
    gamma: float = 1.0
    lam: float = 0.95
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    ppo_epochs: int = 4
    """Passes over each rollout (open-instruct `num_epochs` default 4)."""
    mini_batches: int = 1
    """Optimizer steps per pass, each on 1/mini_batches of the rollout."""
    whiten_advantages: bool = True
    reward_scale: float = rewards.VERIFICATION_REWARD
    non_stop_penalty: float | None = -10.0
    """Score of a response without EOS (null = score it normally)."""

    def validate(self) -> None:
        if self.ppo_epochs < 1 or self.mini_batches < 1:
            raise ValueError("ppo.ppo_epochs and ppo.mini_batches must be >= 1")
        if not (0 <= self.gamma <= 1 and 0 <= self.lam <= 1):
            raise ValueError(
                f"ppo.gamma and ppo.lam must be in [0, 1], got {self.gamma}, {self.lam}"
            )
        if self.max_new_tokens < 1 or self.temperature <= 0:
            raise ValueError("ppo.max_new_tokens must be >= 1 and ppo.temperature > 0")
        if min(self.cliprange, self.cliprange_value, self.vf_coef, self.beta) < 0:
            raise ValueError("ppo.cliprange, cliprange_value, vf_coef and beta must be >= 0")
        if self.reward_model_multiplier and not self.reward_model_path:
            raise ValueError("ppo.reward_model_multiplier is set but ppo.reward_model_path is not")


@dataclass
class PPOConfig(PostConfig):
    STAGE = "ppo"
    data: PostDataSection = field(
        default_factory=lambda: PostDataSection(seq_len=2048, micro_batch_size=8)
    )
    """seq_len limits the prompt; global_batch_size counts prompts (= completions) per rollout."""
    optim: OptimSection = field(default_factory=lambda: dataclasses.replace(post_optim(), lr=3e-7))
    trainer: TrainerSection = post_trainer("runs/ppo")
    ppo: PPOSection = field(default_factory=PPOSection)
    rollout: RolloutSection = field(default_factory=RolloutSection)

    def validate(self) -> None:
        super().validate()
        if self.data.global_batch_size % self.ppo.mini_batches:
            raise ValueError(
                f"ppo.mini_batches={self.ppo.mini_batches} must divide data.global_batch_size="
                f"{self.data.global_batch_size}"
            )


# ---- the two trained networks -------------------------------------------------------------------


class PolicyAndValue(nn.Module):
    """Policy and value model as one module for the trainer: `forward(ids, logits_to_keep)`
    gives (policy logits, values), so a data-parallel wrapper sees one forward; `hf_parts`
    tells the checkpoint writer to save the policy as the checkpoint's own HF files and the
    value model under `value/`."""

    def __init__(self, policy: Olmo2, value: Olmo2Reward):
        super().__init__()
        self.policy, self.value = policy, value
        self.config = policy.config  # what the trainer reads (FLOPs per token: the policy's)

    @property
    def blocks(self) -> list[nn.Module]:
        return [*self.policy.blocks, *self.value.blocks]

    @property
    def activation_checkpointing(self) -> bool:
        return self.policy.activation_checkpointing

    @activation_checkpointing.setter
    def activation_checkpointing(self, on: bool) -> None:
        self.policy.activation_checkpointing = self.value.activation_checkpointing = on

    def clip_groups(self) -> list:
        """Policy and value gradients are clipped apart (the trainer's `_clip`), each at
        `optim.clip_grad_norm`, as open-instruct's two DeepSpeed engines do."""
        return [self.policy.parameters(), self.value.parameters()]

    def forward(self, input_ids: torch.Tensor, logits_to_keep: int = 0):
        return (
            self.policy(input_ids, logits_to_keep=logits_to_keep),
            self.value(input_ids, logits_to_keep=logits_to_keep),
        )

    def hf_parts(self, full_sd: dict) -> dict[str, tuple[ModelConfig, dict]]:
        parts: dict[str, tuple[ModelConfig, dict]] = {}
        for sub, name, m in (("", "policy.", self.policy), ("value", "value.", self.value)):
            parts[sub] = (
                m.config,
                {k[len(name) :]: v for k, v in full_sd.items() if k.startswith(name)},
            )
        return parts


def value_config(cfg: PPOConfig, policy: ModelConfig, tok: Tokenizer) -> ModelConfig:
    """The value model's config, checked before anything is written: `ppo.value_path`'s
    (which must be the policy's size, with a [1, d_model] head if it has one), else the
    policy's; the pad id defaults to the tokenizer's."""
    path = cfg.ppo.value_path
    if path is None:
        mc = policy
    else:
        if not Path(path).is_dir():
            raise FileNotFoundError(f"ppo.value_path: {path} is not a directory")
        try:
            ckpt.check_model_config(Path(path), policy)
        except ValueError as e:
            raise ValueError(
                f"ppo.value_path: the value model must be the policy's size: {e}"
            ) from None
        mc = read_config(path)
    if mc.pad_token_id is None:
        mc = dataclasses.replace(mc, pad_token_id=tok.pad_token_id)
    if path is not None:
        check_reward_checkpoint(path, mc)
    return mc


def initial_models(cfg: PPOConfig, mcfg: ModelConfig, vcfg: ModelConfig, device, weights: bool):
    """Policy (`setup.initial_model`) and value model: seeded inits, with their starting
    weights when `weights` (a resumed run's come from its checkpoint instead)."""
    policy = setup.initial_model(cfg, mcfg, device, weights)
    torch.manual_seed(cfg.trainer.seed + 1)
    value = Olmo2Reward.build(vcfg, device=device)
    source = cfg.ppo.value_path or cfg.model.load_path
    if weights and source:
        load_weights(value, source)
        log.info("value model from %s%s", source, "" if cfg.ppo.value_path else " (fresh head)")
    return PolicyAndValue(policy, value)


def load_scorer(cfg: PPOConfig, tok: Tokenizer, device) -> Olmo2Reward | None:
    """The frozen reward model of `ppo.reward_model_path`, when its multiplier is not 0."""
    p = cfg.ppo
    if not p.reward_model_multiplier:
        return None
    rm = load_reward_model(p.reward_model_path, device=device).requires_grad_(False)
    if rm.config.pad_token_id != tok.pad_token_id or rm.config.vocab_size < tok.vocab_size:
        raise ValueError(
            f"ppo.reward_model_path: {p.reward_model_path} does not share the policy's "
            f"tokenizer (pad id {rm.config.pad_token_id} vs {tok.pad_token_id}, vocab "
            f"{rm.config.vocab_size} vs {tok.vocab_size})"
        )
    return rm


# ---- rollouts -----------------------------------------------------------------------------------


def first_labelled(labels: torch.Tensor) -> int:
    """The first column any row labels (the LM and value heads skip the prompt before it)."""
    return int((labels != IGNORE).any(0).int().argmax())


@torch.no_grad()
def batched_values(value, ids: torch.Tensor, labels: torch.Tensor, batch_size: int, device):
    """Values [B, T] aligned with `labels` (V_t of the state that predicts labels[t])."""
    out = []
    for s in range(0, len(ids), batch_size):
        i, lab = ids[s : s + batch_size].to(device), labels[s : s + batch_size]
        k = first_labelled(lab)
        out.append(F.pad(value(i, logits_to_keep=i.shape[1] - k).float(), (k, 0)).cpu())
    return torch.cat(out)


@torch.no_grad()
def batched_scores(rm, ids: torch.Tensor, pad: int, batch_size: int, device) -> torch.Tensor:
    out = [sequence_scores(rm, ids[s : s + batch_size].to(device), pad).float().cpu()
           for s in range(0, len(ids), batch_size)]  # fmt: skip
    return torch.cat(out)


def token_rewards(score, logp, ref_logp, mask, beta: float):
    """Per-token rewards −β·kl1 with `score` [B] added at each row's last response token;
    returns (rewards, kl1)."""
    r, kl1 = kl_reward(logp, ref_logp, mask, beta)
    cols = torch.arange(mask.shape[1])
    last = torch.where(mask, cols, -1).max(-1).values
    r[torch.arange(len(last)), last] += score
    return r, kl1


class PPORollouts(RolloutSource):
    """The PPO data source: each rollout yields ppo_epochs × mini_batches rank-local batches
    (one per optimizer step) holding the rollout's tokens, log-probs, values, advantages and
    returns. The rollout happens inside `next()`, right before its first step."""

    def __init__(self, prompts: list[Prompt], tok: Tokenizer, model, reference, scorer,
                 engine: RolloutEngine, cfg: PPOConfig, device):  # fmt: skip
        super().__init__(prompts, cfg.data, "PPO prompts", device)
        self.tok, self.model, self.cfg = tok, model, cfg
        self.ref, self.scorer, self.engine = reference, scorer, engine
        p = cfg.ppo  # GRPO's sampling and scoring path, one completion per prompt
        self.gen = GRPOSection(num_samples=1, max_new_tokens=p.max_new_tokens, temperature=p.temperature,
                               reward_scale=p.reward_scale, non_stop_penalty=p.non_stop_penalty)  # fmt: skip

    def rollout(self) -> list[dict]:
        t0, p = time.perf_counter(), self.cfg.ppo
        mb, dev = self.cfg.data.micro_batch_size, self.device
        model = distributed.unwrap(self.model)
        seed = self.seed()
        ro = sample_group(self.engine, model.policy, self.next_prompts(), self.gen, seed)
        self.rollouts += 1
        b = rollout_tensors(ro, self.tok.pad_token_id)
        ids, labels = b["input_ids"], b["labels"]
        mask = labels != IGNORE
        logp = batched_logps(model.policy, ids, labels, mb, dev)
        ref_logp = batched_logps(self.ref, ids, labels, mb, dev)
        values = batched_values(model.value, ids, labels, mb, dev) * mask
        score = self.score(ro, ids)
        r, kl1 = token_rewards(score, logp, ref_logp, mask, p.beta)
        adv, ret = gae(r, values, mask, p.gamma, p.lam)
        if p.whiten_advantages and int(mask.sum()) > 1:
            adv = whiten(adv, mask)
        n = len(ids)
        batch = {
            "input_ids": ids, "labels": labels, "old_logp": logp, "old_values": values,
            "advantages": adv, "returns": ret, "kl": kl1, "reward": score, "pass": b["pass"],
            "finished": b["finished"], "response_len": b["response_len"],
            "explained_var": torch.full((n,), explained_variance(values, ret, mask)),
        }  # fmt: skip
        if "rollout_logp" in b:
            batch["rollout_logp"] = b["rollout_logp"]
        log.debug("rollout %d: reward %.3f", self.rollouts, float(score.mean()))
        parts = self.mini_batches(batch, seed)
        for i, part in enumerate(parts):
            k = len(part["input_ids"])
            part["rollout_time"] = torch.full((k,), time.perf_counter() - t0 if i == 0 else 0.0)
        return parts

    def score(self, ro, ids: torch.Tensor) -> torch.Tensor:
        """[B] verifier reward (or the non-stop penalty) + multiplier × the RM's score; the
        penalty replaces the whole score (open-instruct)."""
        p = self.cfg.ppo
        if self.scorer is None:
            return ro.rewards.clone()
        mb, pad = self.cfg.data.micro_batch_size, self.tok.pad_token_id
        rm = p.reward_model_multiplier * batched_scores(self.scorer, ids, pad, mb, self.device)
        keep = torch.tensor(ro.finished) | (p.non_stop_penalty is None)
        return torch.where(keep, ro.rewards + rm, ro.rewards)

    def mini_batches(self, batch: dict, seed: int) -> list[dict]:
        """ppo_epochs passes over the rollout, each a fresh seeded shuffle cut in mini_batches."""
        p, n = self.cfg.ppo, len(batch["input_ids"])
        size, g = n // p.mini_batches, torch.Generator().manual_seed(seed)
        parts = []
        for _ in range(p.ppo_epochs):
            perm = torch.randperm(n, generator=g)
            for i in range(p.mini_batches):
                part = {k: v[perm[i * size : (i + 1) * size]] for k, v in batch.items()}
                part["weight"] = self.token_mean_weights(part["labels"])
                parts.append(part)
        return parts


@dataclass
class PPOObjective(Objective):
    """Token means (via the rows' weights) of the PPO-clip policy loss + vf_coef × the clipped
    value loss; one unit per completion, so per-rollout metrics are means over completions."""

    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    is_cap: float | None = 2.0
    """`rollout.is_cap`, for batches that carry a rollout engine's `rollout_logp` (vLLM)."""

    def loss(self, model, mb):
        ids, labels = mb["input_ids"], mb["labels"]
        s = first_labelled(labels)
        logits, values = model(ids, logits_to_keep=ids.shape[1] - s)
        lp = F.pad(token_logps(logits, labels[:, s:]), (s, 0))
        v = F.pad(values.float(), (s, 0))
        mask = labels != IGNORE
        pg = ppo_policy_loss(lp, mb["old_logp"], mb["advantages"], mask, self.cliprange)
        vf = ppo_value_loss(v, mb["old_values"], mb["returns"], mask, self.cliprange_value)
        w = mb["weight"]

        def token_mean(x):  # Σ_i w_i·Σ_t x_it; / units (rows) = the token mean
            return (x.sum(-1) * w).sum()

        pg_loss, extra = pg.loss, {}
        if "rollout_logp" in mb:  # truncated IS weight of another engine's samples (GRPO's)
            is_w, capped = tis_weights(mb["old_logp"], mb["rollout_logp"], self.is_cap)
            pg_loss = pg_loss * is_w
            m = mask.float()
            extra = {
                "is_weight": token_mean(is_w * m),
                "is_capped": token_mean(capped.float() * m),
                "rollout_logp_diff": token_mean((mb["old_logp"] - mb["rollout_logp"]).abs() * m),
            }
        metrics = {
            **extra,
            "pg_loss": token_mean(pg_loss).detach(),
            "vf_loss": token_mean(vf.loss).detach(),
            "pg_clip_frac": token_mean(pg.clipped),
            "vf_clip_frac": token_mean(vf.clipped),
            "kl": token_mean(mb["kl"]),
            **{
                k: mb[k].sum()
                for k in ("reward", "finished", "response_len", "explained_var", "rollout_time")
            },
            "pass_rate": mb["pass"].sum(),
        }
        return token_mean(pg_loss + self.vf_coef * vf.loss), metrics

    def units(self, mb) -> int:
        return int(mb["input_ids"].shape[0])


# ---- command ------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_arguments(p, "ppo.beta=0.05 ppo.value_path=runs/rm/rm-step100 trainer.max_steps=10")


def run(args) -> int:
    if (post := common.begin(PPOConfig, args, tokenize_prompts, "prompts")) is None:
        return 0
    cfg, prompts, dev = post.cfg, post.examples, post.start.device
    vcfg = value_config(cfg, post.start.model_config, post.tok)
    scorer = load_scorer(cfg, post.tok, dev)
    common.set_steps(cfg, len(prompts), None)
    if cfg.data.epochs is not None:
        cfg.trainer.max_steps *= cfg.ppo.ppo_epochs * cfg.ppo.mini_batches
    model = setup.build_model(
        cfg, post.start, lambda c, mc, d, weights=True: initial_models(c, mc, vcfg, d, weights)
    )
    reference = common.load_reference(post)
    with start_engine(cfg.rollout, distributed.unwrap(model).policy, post.tok) as engine:
        data = PPORollouts(prompts, post.tok, model, reference, scorer, engine, cfg, dev)
        p = cfg.ppo
        objective = PPOObjective(p.cliprange, p.cliprange_value, p.vf_coef, cfg.rollout.is_cap)
        return common.fit(
            post, model, data, objective,
            lambda last: f"; reward {last.get('reward', math.nan):.3f}, pass rate {last.get('pass_rate', math.nan):.3f}, kl {last.get('kl', math.nan):.4f}, value loss {last.get('vf_loss', math.nan):.4f}",
        )  # fmt: skip
