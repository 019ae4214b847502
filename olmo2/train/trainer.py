"""The training loop, shared by pretraining and post-training (SFT, DPO, GRPO).

Post-training reuses `Trainer` unchanged and supplies its own batches and loss:

**Objective** — what is minimised (subclass `Objective`)::

    def loss(self, model, micro_batch: dict) -> tuple[Tensor, dict[str, Tensor]]:
        '''Forward one micro-batch; return the SUM of per-unit losses (a 0-d tensor with
        grad) and extra metrics, also as sums over units (detached 0-d tensors).'''
    def units(self, micro_batch: dict) -> int:
        '''The normaliser's share of this micro-batch: label tokens for LM/SFT,
        sequences or pairs for DPO, completions (or tokens) for GRPO.'''
    def tokens(self, micro_batch: dict) -> int:
        '''Tokens the micro-batch feeds the model (tokens/s, MFU); default `input_ids`.'''

The trainer all-reduces the units of the whole global batch (all micro-batches, all ranks)
before the backward passes and divides every micro-batch's loss sum by that total, so
gradient accumulation and world size never change the math: the gradient is exactly that of
(Σ loss over the global batch) / (Σ units). Reported `loss` and every metric are likewise
global sums / global units. `LMObjective` (the default) is CE + z-loss summed over non −100
labels, with `ce` and `z_loss` reported separately.

**Data source** — any object that iterates over *rank-local* slices of global batches (dicts
of tensors whose first dimension is the instance; non-tensor values are passed through to
every micro-batch) and has `state_dict()` / `load_state_dict()` for exact resume. The
trainer splits each batch into micro-batches of `data.micro_batch_size` rows and moves
tensors to the device. `olmo2.train.data.build_loader` makes the pretraining source
(`olmo2.data.loader.InstanceLoader`); `olmo2.post.common.EpochSampler` orders the
post-training ones. GRPO's source generates its rollouts inside `next()`, right before the
step, so every rollout uses the current policy.

**Evaluators** — callables `evaluator(model, autocast) -> dict` run every
`trainer.eval_interval` steps and at the end (`olmo2.eval.in_loop`).

One optimizer step (`train_step`): split → forward/backward per micro-batch under bf16
autocast when asked (fp32 master weights; DDP/FSDP gradient sync only on the last
micro-batch) → clip to `optim.clip_grad_norm` → loss-spike / non-finite guard → set the
scheduled LR → AdamW step.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from olmo2.export.checkpoints import checkpoint_name
from olmo2.model.loss import lm_loss
from olmo2.train import checkpoint as ckpt
from olmo2.train import distributed
from olmo2.train.config import TrainConfig, to_dict
from olmo2.train.metrics import MetricsLogger, peak_flops
from olmo2.train.optim import SpikeGuard, build_optimizer, lr_at, set_lr

log = logging.getLogger(__name__)


class TrainingDiverged(ValueError):
    """Too many updates in a row were skipped (`optim.max_skipped_steps`): the run stops with
    exit 2 (a ValueError to the CLI), and no checkpoint of the suspect model is written."""


class Objective:
    """What the trainer minimises; see the module docstring."""

    def loss(
        self, model: torch.nn.Module, micro_batch: dict
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def units(self, micro_batch: dict) -> int:
        raise NotImplementedError

    def tokens(self, micro_batch: dict) -> int:
        return micro_batch["input_ids"].numel()


@dataclass
class LMObjective(Objective):
    """Next-token CE + z-loss (OLMo 2: 1e-5·logsumexp²), summed over non-ignored labels."""

    z_loss_multiplier: float = 1e-5

    def loss(self, model, micro_batch):
        logits = model(micro_batch["input_ids"], doc_ids=micro_batch.get("doc_ids"))
        out = lm_loss(logits, micro_batch["labels"], self.z_loss_multiplier, reduction="sum")
        return out.loss, {"ce": out.ce.detach(), "z_loss": out.z_loss.detach()}

    def units(self, micro_batch) -> int:
        return int((micro_batch["labels"] != -100).sum())


def split_micro(batch: dict, size: int) -> list[dict]:
    n = next(len(v) for v in batch.values() if isinstance(v, torch.Tensor))
    return [
        {k: v[i : i + size] if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        for i in range(0, n, size)
    ]


def rng_state() -> dict:
    st = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


class Trainer:
    """Owns the loop, checkpoint cadence, evaluation cadence and logging.

    `model` is already on its device and wrapped for data parallelism (`olmo2.train.setup`
    builds it; `setup.restore` resumes). `cfg` is a `TrainConfig` or any dataclass with the
    sections the loop reads: `optim`, `schedule`, `trainer`, `checkpoint`, `logging` (the
    classes in config.py) and `data.micro_batch_size` / `data.seq_len`. Checkpoints are
    named after the pretraining stage (`stage1-step{N}-tokens{B}B`, from `trainer.stage` and
    `trainer.ingredient`) or, with `stage`, after the post-training stage (`sft-step{N}`).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        model: torch.nn.Module,
        data,
        objective: Objective | None = None,
        evaluators: list[Callable[..., dict]] = (),
        tokenizer=None,
        stage: str | None = None,
    ):
        self.cfg, self.model, self.data = cfg, model, data
        self.objective = objective or LMObjective(cfg.trainer.z_loss_multiplier)
        self.evaluators, self.tokenizer, self.stage = list(evaluators), tokenizer, stage
        self.optimizer = build_optimizer(model, cfg.optim)
        self.peak_lr = cfg.optim.lr
        o = cfg.optim
        self.guard = SpikeGuard(
            o.spike_sigma, o.spike_window, o.spike_min_steps, o.spike_early_factor
        )
        self.skipped_in_a_row = 0
        """Consecutive skipped updates: the model is suspect while this is above 0."""
        self.run_dir = Path(cfg.trainer.run_dir)
        self.device = next(model.parameters()).device
        self.step, self.tokens = 0, 0
        self.last_eval_step = -1

    # ---- state --------------------------------------------------------------------------
    def lr(self, step: int) -> float:
        return lr_at(self.cfg.schedule, self.peak_lr, step, self.cfg.trainer.max_steps)

    def rank_state(self) -> dict:
        return {
            "step": self.step,
            "tokens": self.tokens,
            "peak_lr": self.peak_lr,
            "data": self.data.state_dict(),
            "rng": rng_state(),
            "guard": self.guard.state_dict(),
        }

    def load_rank_state(self, st: dict) -> None:
        self.step, self.tokens = st["step"], st["tokens"]
        # the recipe's LR wins on resume (lowering optim.lr is how a diverged run is resumed);
        # a stage-2 start LR taken from the stage-1 checkpoint stays what it was
        if self.cfg.schedule.lr_from_checkpoint:
            self.peak_lr = st["peak_lr"]
        elif st["peak_lr"] != self.peak_lr:
            log.info("optim.lr %.4g replaces the checkpoint's %.4g", self.peak_lr, st["peak_lr"])
        self.data.load_state_dict(st["data"])
        self.guard.load_state_dict(st["guard"])
        set_rng_state(st["rng"])

    def resume(self, path: Path) -> None:
        """Restore everything from a checkpoint of this run (exact resume)."""
        st = ckpt.load(path, self.model, self.optimizer)
        if st is None:
            raise ValueError(f"{path}: train_state/ has no rank state file")
        self.load_rank_state(st)
        log.info("resumed from %s at step %d", path, self.step)

    def save(self) -> Path | None:
        """Write a checkpoint of this step; not while updates are being skipped (the guard is
        rejecting this model's losses, so it is not a checkpoint to resume from)."""
        if self.skipped_in_a_row:
            log.warning(
                "step %d: no checkpoint (the last %d updates were skipped)",
                self.step, self.skipped_in_a_row,
            )  # fmt: skip
            return None
        t = self.cfg.trainer
        if self.stage is not None:
            name = checkpoint_name(self.stage, self.step)
        else:
            name = checkpoint_name(t.stage, self.step, self.tokens, t.ingredient)
        meta = {
            "step": self.step,
            "tokens": self.tokens,
            "lr": self.lr(self.step),
            "world_size": distributed.world_size(),
            "config": to_dict(self.cfg),
        }
        path = ckpt.save(
            self.run_dir, name, self.model, self.optimizer, self.rank_state(), meta, self.tokenizer
        )
        ckpt.prune(self.run_dir, self.cfg.checkpoint.keep_last)
        return path

    # ---- one optimizer step --------------------------------------------------------------
    def autocast(self):
        if self.cfg.trainer.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _to_device(self, mb: dict) -> dict:
        return {
            k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
            for k, v in mb.items()
        }

    def train_step(self, batch: dict) -> dict[str, Any]:
        micro = split_micro(batch, self.cfg.data.micro_batch_size)
        local = [float(sum(self.objective.units(mb) for mb in micro))]
        local.append(float(sum(self.objective.tokens(mb) for mb in micro)))
        units, tokens = distributed.all_reduce_sum(
            torch.tensor(local, dtype=torch.float64, device=self.device)
        ).tolist()
        if units <= 0:
            raise ValueError(
                f"step {self.step}: the global batch has no loss units (every label masked?)"
            )
        scale = distributed.world_size() / units  # DDP/FSDP average over ranks; this undoes it
        sums: dict[str, torch.Tensor] = {}
        for i, mb in enumerate(micro):
            mb = self._to_device(mb)
            with distributed.no_sync(self.model, last=i == len(micro) - 1), self.autocast():
                loss_sum, metrics = self.objective.loss(self.model, mb)
            (loss_sum * scale).backward()
            for k, v in {"loss": loss_sum.detach(), **metrics}.items():
                sums[k] = sums.get(k, 0.0) + v.detach().double()
        keys = list(sums)
        reduced = distributed.all_reduce_sum(torch.stack([sums[k] for k in keys])) / units
        out = dict(zip(keys, reduced.tolist()))
        out["grad_norm"] = self._clip()
        out["batch_tokens"], out["units"] = tokens, units
        self.step += 1
        out["lr"] = self.lr(self.step)
        out["skipped"] = self.guard.check(out["loss"], out["grad_norm"])
        if out["skipped"] is None:
            set_lr(self.optimizer, out["lr"])
            self.optimizer.step()
            self.skipped_in_a_row = 0
        else:
            log.warning("step %d: update skipped (%s)", self.step, out["skipped"])
            self.skipped_in_a_row += 1
        self.optimizer.zero_grad(set_to_none=True)
        self.tokens += int(tokens)
        return out

    def _check_diverged(self, out: dict) -> None:
        limit = self.cfg.optim.max_skipped_steps
        if limit is None or self.skipped_in_a_row < limit:
            return
        good = ckpt.latest(self.run_dir)
        first = self.step - self.skipped_in_a_row + 1
        raise TrainingDiverged(
            f"training diverged: the {self.skipped_in_a_row} updates of steps {first}-{self.step} "
            f"were all skipped (last: {out['skipped']}, loss {out['loss']:.4g}, grad-norm "
            f"{out['grad_norm']:.4g}); "
            + (f"the last good checkpoint is {good}" if good else "no checkpoint was saved")
            + " (lower optim.lr or raise schedule.warmup_steps, then resume or restart)"
        )

    def _clip(self) -> float:
        """Clip to `optim.clip_grad_norm`; return the gradient norm before clipping. A model
        of several networks that names its `clip_groups()` (`olmo2 ppo`: policy and value)
        has each group clipped by its own norm, as separate optimizers would be
        (open-instruct's PPO), and the norm returned is that of all groups together."""
        max_norm = self.cfg.optim.clip_grad_norm or float("inf")
        inner = distributed.unwrap(self.model)
        groups = inner.clip_groups() if hasattr(inner, "clip_groups") else [self.model.parameters()]
        norms = []
        for group in groups:
            params = [p for p in group if p.grad is not None]
            norm = torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
            if hasattr(norm, "full_tensor"):  # FSDP2: a DTensor
                norm = norm.full_tensor()
            norms.append(float(norm))
        return norms[0] if len(norms) == 1 else math.sqrt(sum(n * n for n in norms))

    # ---- evaluation -----------------------------------------------------------------------
    def evaluate(self) -> dict:
        results: dict = {}
        for evaluator in self.evaluators:
            results.update(evaluator(distributed.unwrap(self.model), self.autocast))
        self.last_eval_step = self.step
        return results

    # ---- the loop ---------------------------------------------------------------------------
    def fit(self) -> dict:
        t = self.cfg.trainer
        inner = distributed.unwrap(self.model)
        fpt = (
            inner.config.flops_per_token(self.cfg.data.seq_len) if hasattr(inner, "config") else 0.0
        )
        logger = MetricsLogger(
            self.run_dir, self.cfg.logging, t.max_steps, fpt,
            peak_flops(self.device, self.cfg.logging.peak_flops), distributed.world_size(),
            start_step=self.step, enabled=distributed.is_main(), config=to_dict(self.cfg),
        )  # fmt: skip
        self.model.train()
        it, last, data_time = iter(self.data), {}, 0.0
        try:
            while self.step < t.max_steps:
                t0 = time.perf_counter()
                batch = next(it)
                data_time = time.perf_counter() - t0
                last = self.train_step(batch)
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                last.update(step=self.step, tokens=self.tokens, data_time=data_time)
                logger.throughput(last, time.perf_counter() - t0, self.device)
                logger.log_step(last)
                self._check_diverged(last)
                if t.eval_interval and self.step % t.eval_interval == 0:
                    logger.log_eval(self.step, self.evaluate())
                si = self.cfg.checkpoint.save_interval
                if si and self.step % si == 0 and self.step < t.max_steps:
                    self.save()
            if self.last_eval_step != self.step and self.evaluators:
                logger.log_eval(self.step, self.evaluate())
            if self.cfg.checkpoint.save_final:
                self.save()
        finally:
            logger.close()
            if hasattr(it, "close"):
                it.close()  # stops a loader's prefetch thread
        return last
