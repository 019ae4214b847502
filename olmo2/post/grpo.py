"""`olmo2 grpo RECIPE.yaml [key=value ...]`: RLVR with GRPO and verifiable rewards.

Per rollout (the OLMo 2 1B GRPO recipe, allenai/open-instruct docs/olmo2.md and the legacy
grpo_vllm_thread_ray_gtrl.py): take `data.global_batch_size` prompts, sample
`grpo.num_samples` completions of each through the rollout engine (`olmo2.post.rollout`:
`rollout.backend=olmo2`, the batched KV-cache generator on the policy itself, or `vllm`, a
vLLM engine given the policy's weights each rollout; temperature 1, ending at EOS), score
their text with the verifiers (`olmo2.post.rewards`: 10 × score, optional non-stop
penalty), compute group advantages (r − mean)/(std + 1e-8), and take `grpo.mini_batches`
optimizer steps on slices of the rollout with the clipped policy-ratio loss + β·k3 KL to the
frozen starting policy (β 0.01). Prompt and padding tokens are masked. The rollout happens inside the data source,
which the trainer calls right before each step, so every rollout uses the current policy.
With `rollout.backend=vllm` the policy-gradient term of each token is reweighted by the
truncated importance-sampling weight min(π_learner/π_vLLM, `rollout.is_cap`), for the two
engines' numerical mismatch (`olmo2.post.rollout`).

Normalisation (`grpo.loss_norm`): `token` — the mean over all response tokens of the
optimizer step (open-instruct's masked mean; DAPO-style) — or `sequence` — the mean over
completions of each completion's token mean (the GRPO paper).

Logged per step: loss, `reward`, `pass_rate` (fraction with score 1), `kl` (k3 per token),
`clip_frac`, `response_len`, `finished` (fraction that emitted EOS); with vLLM rollouts also
`is_weight` (the mean truncated IS weight), `is_capped` (the fraction of tokens over the
cap) and `rollout_logp_diff` (the mean |log π_learner − log π_vLLM| per token: the
mismatch). `data_time` is the rollout time (weight sync + generation + scoring + reference
log-probs) and `step_time − data_time` the learner time.

Prompt rows are `{messages, ground_truth, dataset}`. Make them with
`olmo2 grpo --make-gsm8k-prompts OUT.jsonl` (GSM8K train from the shared data directory)
or `olmo2 grpo --make-synthetic add OUT.jsonl --n 1000` (synthetic addition / string tasks;
`--with-answers` writes SFT rows for the same task).
"""

from __future__ import annotations

import argparse
import logging
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from olmo2.infer.backends import BackendUnavailable
from olmo2.post import common, rewards
from olmo2.post.common import PostConfig, post_trainer
from olmo2.post.data import (
    BadRow,
    PostDataSection,
    PromptRow,
    RowErrors,
    gsm8k_prompt_rows,
    load_examples,
    prompt_row,
    write_jsonl,
)
from olmo2.post.losses import IGNORE, group_advantages, grpo_token_loss, k3_kl, token_logps
from olmo2.post.rollout import RolloutEngine, RolloutSection, RolloutSource, tis_weights
from olmo2.tokenizer import Tokenizer
from olmo2.train import distributed, setup
from olmo2.train.config import ScheduleSection, TrainerSection
from olmo2.train.trainer import Objective

log = logging.getLogger(__name__)


@dataclass
class GRPOSection:
    num_samples: int = 16
    """Completions per prompt (the group)."""
    max_new_tokens: int = 2048
    """Response length limit; a response cut here is 'unfinished'."""
    temperature: float = 1.0
    beta: float = 0.01
    """Weight of the k3 KL to the reference (starting) policy."""
    clip_eps: float = 0.2
    mini_batches: int = 1
    """Optimizer steps per rollout, each on 1/mini_batches of its completions."""
    loss_norm: str = "token"
    """token | sequence"""
    reward_scale: float = rewards.VERIFICATION_REWARD
    non_stop_penalty: float | None = None
    """Reward of a response without EOS (None = score it normally)."""


@dataclass
class GRPOConfig(PostConfig):
    STAGE = "grpo"
    data: PostDataSection = field(
        default_factory=lambda: PostDataSection(seq_len=2048, micro_batch_size=16)
    )
    """seq_len limits the prompt; global_batch_size counts prompts per rollout."""
    schedule: ScheduleSection = field(default_factory=lambda: ScheduleSection(name="constant"))
    trainer: TrainerSection = post_trainer("runs/grpo")
    grpo: GRPOSection = field(default_factory=GRPOSection)
    rollout: RolloutSection = field(default_factory=RolloutSection)

    def validate(self) -> None:
        super().validate()
        g = self.grpo
        if g.num_samples < 2:
            raise ValueError(
                f"grpo.num_samples must be >= 2 (advantages need a group), got {g.num_samples}"
            )
        if g.loss_norm not in ("token", "sequence"):
            raise ValueError(f"grpo.loss_norm={g.loss_norm!r}: expected token or sequence")
        if g.mini_batches < 1 or (self.data.global_batch_size * g.num_samples) % g.mini_batches:
            raise ValueError(
                "grpo.mini_batches must divide data.global_batch_size × grpo.num_samples"
            )
        if g.max_new_tokens < 1 or g.temperature <= 0:
            raise ValueError("grpo.max_new_tokens must be >= 1 and grpo.temperature > 0")


# ---- prompts ------------------------------------------------------------------------------------


@dataclass
class Prompt:
    ids: list[int]
    row: PromptRow


def tokenize_prompts(tok: Tokenizer, data: PostDataSection, errors: RowErrors) -> list[Prompt]:
    def parse(row):
        r = prompt_row(row)
        ids = tok.encode(tok.apply_chat_template(r.messages, add_generation_prompt=True))
        if len(ids) > data.seq_len:
            raise BadRow(
                "prompt longer than the limit", f"{len(ids)} tokens > data.seq_len {data.seq_len}"
            )
        return Prompt(ids, r)

    return load_examples(data.paths, parse, errors, data.max_rows)


# ---- rollouts -----------------------------------------------------------------------------------


@dataclass
class Rollout:
    prompt_ids: list[list[int]]
    completions: list[list[int]]
    """New tokens per completion (EOS included when emitted)."""
    finished: list[bool]
    rewards: torch.Tensor
    scores: torch.Tensor
    advantages: torch.Tensor
    rollout_logps: list[list[float]] | None = None
    """The rollout engine's log-prob of each completion token, when it is not the learner's
    own forward (vLLM)."""


@torch.no_grad()
def sample_group(
    engine: RolloutEngine, model, prompts: list[Prompt], g: GRPOSection, seed: int
) -> Rollout:
    """G completions per prompt (group-contiguous) by `model` through `engine`, scored and
    with group advantages."""
    gen = engine.generate(
        model, [p.ids for p in prompts], g.num_samples, g.max_new_tokens, g.temperature, seed
    )
    group = [p for p in prompts for _ in range(g.num_samples)]
    scored = [
        rewards.reward(
            p.row.dataset, text, p.row.ground_truth, f, g.non_stop_penalty, g.reward_scale
        )
        for p, text, f in zip(group, gen.texts, gen.finished, strict=True)
    ]
    rw = torch.tensor([r for r, _ in scored], dtype=torch.float32)
    return Rollout(
        [p.ids for p in group], gen.tokens, gen.finished, rw,
        torch.tensor([s for _, s in scored]), group_advantages(rw, g.num_samples), gen.logprobs,
    )  # fmt: skip


def rollout_tensors(ro: Rollout, pad: int) -> dict:
    """`input_ids` = prompt ‖ completion right-padded; `labels` only on completion tokens."""
    pc = list(zip(ro.prompt_ids, ro.completions))
    T = max(len(p) + len(c) for p, c in pc)
    ids = [p + c + [pad] * (T - len(p) - len(c)) for p, c in pc]  # one tensor, not one per row
    labels = [[IGNORE] * (len(p) - 1) + c + [IGNORE] * (T + 1 - len(p) - len(c)) for p, c in pc]
    out = {
        "input_ids": torch.tensor(ids, dtype=torch.long),
        "labels": torch.tensor(labels, dtype=torch.long),
        "advantages": ro.advantages,
        "reward": ro.rewards,
        "pass": (ro.scores >= 1.0).float(),
        "finished": torch.tensor(ro.finished, dtype=torch.float32),
        "response_len": torch.tensor([len(c) for c in ro.completions], dtype=torch.float32),
    }
    if ro.rollout_logps is not None:  # `rollout_logp` [B, T], aligned with `labels`
        lps = [[0.0] * (len(p) - 1) + lp + [0.0] * (T + 1 - len(p) - len(lp))
               for p, lp in zip(ro.prompt_ids, ro.rollout_logps, strict=True)]  # fmt: skip
        out["rollout_logp"] = torch.tensor(lps, dtype=torch.float32)
    return out


def labelled_logps(model, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """`token_logps` [B, T] of `model(ids)`, with no LM head over the leading (prompt)
    columns that no row labels."""
    s = int((labels != IGNORE).any(0).int().argmax())
    logits = model(ids, logits_to_keep=ids.shape[1] - s)
    return F.pad(token_logps(logits, labels[:, s:]), (s, 0))


@torch.no_grad()
def batched_logps(
    model, ids: torch.Tensor, labels: torch.Tensor, batch_size: int, device
) -> torch.Tensor:
    out = []
    for s in range(0, len(ids), batch_size):
        lp = labelled_logps(
            model, ids[s : s + batch_size].to(device), labels[s : s + batch_size].to(device)
        )
        out.append(lp.cpu())
    return torch.cat(out)


class RolloutBatches(RolloutSource):
    """The GRPO data source: each rollout yields `grpo.mini_batches` rank-local batches
    (one per optimizer step) of completions with advantages, reference log-probs, loss
    weights, (with several mini-batches) the rollout policy's log-probs and (vLLM) the
    rollout engine's."""

    def __init__(
        self, prompts: list[Prompt], tok: Tokenizer, policy, reference, cfg: GRPOConfig, device,
        engine: RolloutEngine,
    ):  # fmt: skip
        super().__init__(prompts, cfg.data, "GRPO prompts", device)
        self.tok, self.policy, self.ref, self.engine, self.cfg = tok, policy, reference, engine, cfg

    def rollout(self) -> list[dict]:
        g, model = self.cfg.grpo, distributed.unwrap(self.policy)
        ro = sample_group(self.engine, model, self.next_prompts(), g, self.seed())
        self.rollouts += 1
        batch = rollout_tensors(ro, self.tok.pad_token_id)
        mb = self.cfg.data.micro_batch_size
        batch["ref_logp"] = batched_logps(
            self.ref, batch["input_ids"], batch["labels"], mb, self.device
        )
        if g.mini_batches > 1:  # later mini-batches are off-policy: keep the rollout log-probs
            batch["old_logp"] = batched_logps(
                model, batch["input_ids"], batch["labels"], mb, self.device
            )
        n = len(ro.completions) // g.mini_batches
        parts = [
            {k: v[i * n : (i + 1) * n] for k, v in batch.items()} for i in range(g.mini_batches)
        ]
        for p in parts:
            p["weight"] = self.weights(p["labels"])
        log.debug("rollout %d: reward %.3f", self.rollouts, float(ro.rewards.mean()))
        return parts

    def weights(self, labels: torch.Tensor) -> torch.Tensor:
        """Per-completion loss weights so that Σ_i w_i·Σ_t loss_it / (global completions) is
        the token mean (`token`) or the mean of per-completion means (`sequence`)."""
        if self.cfg.grpo.loss_norm == "sequence":
            return (1.0 / (labels != IGNORE).sum(-1).double().clamp(min=1)).float()
        return self.token_mean_weights(labels)


@dataclass
class GRPOObjective(Objective):
    """Weighted sum of per-completion token-loss sums; one unit per completion."""

    clip_eps: float = 0.2
    beta: float = 0.01
    is_cap: float | None = None
    """`rollout.is_cap`, for batches that carry a rollout engine's `rollout_logp`."""

    def loss(self, model, mb):
        lp = labelled_logps(model, mb["input_ids"], mb["labels"])
        mask = mb["labels"] != IGNORE
        old = mb["old_logp"] if "old_logp" in mb else lp.detach()
        if "rollout_logp" in mb:
            token_loss, out, extra = self.corrected_loss(lp, old, mask, mb)
        else:
            out = grpo_token_loss(
                lp, old, mb["ref_logp"], mb["advantages"], mask, self.clip_eps, self.beta
            )
            token_loss, extra = out.token_loss, {}
        w = mb["weight"]
        metrics = {
            "kl": (out.kl.sum(-1) * w).sum(),
            "clip_frac": (out.clipped.sum(-1) * w).sum(),
            "reward": mb["reward"].sum(),
            "pass_rate": mb["pass"].sum(),
            "finished": mb["finished"].sum(),
            "response_len": mb["response_len"].sum(),
            **{k: (v.sum(-1) * w).sum() for k, v in extra.items()},  # token means, as kl
        }
        return (token_loss.sum(-1) * w).sum(), metrics

    def corrected_loss(self, lp, old, mask, mb):
        """The token loss with the policy-gradient term weighted by the truncated IS weight
        of the rollout engine's tokens (`olmo2.post.rollout`; the KL term unweighted), the
        loss's outputs and the per-token mismatch metrics."""
        is_w, capped = tis_weights(old, mb["rollout_logp"], self.is_cap)
        m, ref = mask.float(), mb["ref_logp"]
        beta = self.beta if self.is_cap is None else 0.0  # 0: the policy-gradient term alone
        out = grpo_token_loss(lp, old, ref, mb["advantages"], mask, self.clip_eps, beta)
        token_loss = out.token_loss
        if self.is_cap is not None:
            token_loss = token_loss * is_w + self.beta * k3_kl(lp, ref) * m
        metrics = {
            "is_weight": is_w * m,
            "is_capped": capped.float() * m,
            "rollout_logp_diff": (old.detach() - mb["rollout_logp"]).abs() * m,
        }
        return token_loss, out, metrics

    def units(self, mb) -> int:
        return int(mb["input_ids"].shape[0])


# ---- command ------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_arguments(p, "grpo.beta=0.05 trainer.max_steps=10", recipe_optional=True)
    p.add_argument(
        "--make-gsm8k-prompts",
        metavar="OUT.jsonl",
        help="write GSM8K train as RLVR prompt rows and exit",
    )
    p.add_argument(
        "--gsm8k-source", help="GSM8K train.jsonl (default: $OLMO2_DATA_DIR/eval/gsm8k/train.jsonl)"
    )
    p.add_argument("--data-dir", help="shared data directory (default $OLMO2_DATA_DIR)")
    p.add_argument(
        "--make-synthetic",
        nargs=2,
        metavar=("TASK", "OUT.jsonl"),
        help="write synthetic rows (add | reverse) and exit",
    )
    p.add_argument("--n", type=int, default=1000, help="rows for --make-synthetic")
    p.add_argument("--seed", type=int, default=0, help="seed for --make-synthetic")
    p.add_argument(
        "--with-answers",
        action="store_true",
        help="--make-synthetic writes SFT rows (answer as reply)",
    )


def make_rows(args) -> int:
    if args.make_gsm8k_prompts:
        from olmo2.utils import data_dir

        src = args.gsm8k_source or data_dir(args.data_dir) / "eval" / "gsm8k" / "train.jsonl"
        errors = RowErrors(args.strict)
        rows = gsm8k_prompt_rows(src, errors)
        write_jsonl(rows, args.make_gsm8k_prompts)
        print(
            f"wrote {len(rows)} GSM8K prompt rows to {args.make_gsm8k_prompts}; {errors.summary()}"
        )
        return 0
    task, out = args.make_synthetic
    makers = {"add": rewards.addition_rows, "reverse": rewards.reverse_rows}
    if task not in makers:
        raise ValueError(f"--make-synthetic {task!r}: expected one of {', '.join(makers)}")
    rows = makers[task](args.n, args.seed)
    write_jsonl(rewards.with_answers(rows) if args.with_answers else rows, out)
    print(f"wrote {len(rows)} {task} {'SFT' if args.with_answers else 'prompt'} rows to {out}")
    return 0


def run(args) -> int:
    if args.make_gsm8k_prompts or args.make_synthetic:
        return make_rows(args)
    if args.recipe is None:
        raise ValueError("give a recipe (or --make-gsm8k-prompts / --make-synthetic)")
    if (post := common.begin(GRPOConfig, args, tokenize_prompts, "prompts")) is None:
        return 0
    cfg, prompts = post.cfg, post.examples
    check_context(prompts, cfg.grpo, post.start.model_config.max_seq_len)
    common.set_steps(cfg, len(prompts), None)
    if cfg.data.epochs is not None:
        cfg.trainer.max_steps *= cfg.grpo.mini_batches
    reference = common.load_reference(post)
    with start_engine(cfg.rollout, reference, post.tok) as engine:
        model = setup.build_model(cfg, post.start)
        data = RolloutBatches(prompts, post.tok, model, reference, cfg, post.start.device, engine)
        objective = GRPOObjective(cfg.grpo.clip_eps, cfg.grpo.beta, cfg.rollout.is_cap)
        return common.fit(
            post, model, data, objective,
            lambda last: f"; reward {last.get('reward', math.nan):.3f}, pass rate {last.get('pass_rate', math.nan):.3f}, kl {last.get('kl', math.nan):.4f}",
        )  # fmt: skip


def check_context(prompts: list[Prompt], g: GRPOSection, context: int) -> None:
    """Every prompt and its `grpo.max_new_tokens` fit the model's context (both engines
    refuse a prompt that does not; found here, before anything is written)."""
    longest = max(len(p.ids) for p in prompts)
    if longest + g.max_new_tokens > context:
        raise ValueError(
            f"the longest prompt is {longest} tokens and grpo.max_new_tokens {g.max_new_tokens}: "
            f"{longest + g.max_new_tokens} > the model's context of {context} tokens (lower "
            f"data.seq_len, which drops longer prompts, or grpo.max_new_tokens)"
        )


def start_engine(section: RolloutSection, reference, tok: Tokenizer) -> RolloutEngine:
    """The rollout engine, started on the starting policy's weights before anything of the
    run is written: vLLM missing or failing to start is a clear error (exit 2) with nothing
    half-written. Every rollout syncs the policy's current (e.g. resumed) weights."""
    try:
        return RolloutEngine(section, tok, reference)
    except BackendUnavailable as e:
        raise ValueError(f"rollout.backend={section.backend}: {e}") from None
