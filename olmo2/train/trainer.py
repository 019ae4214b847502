"""The training loop, shared by pretraining and post-training (SFT, DPO, GRPO).

Post-training reuses `Trainer` unchanged and supplies its own batches and loss through two
small protocols:

**Objective** — what is minimised::

    class Objective(Protocol):
        def loss(self, model, micro_batch: dict) -> tuple[Tensor, dict[str, Tensor]]:
            '''Forward one micro-batch; return the SUM of per-unit losses (a 0-d tensor with
            grad) and extra metrics, also as sums over units (detached 0-d tensors).'''
        def units(self, micro_batch: dict) -> int:
            '''The normaliser's share of this micro-batch: label tokens for LM/SFT,
            sequences or pairs for DPO, completions (or tokens) for GRPO.'''

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
(`olmo2.data.loader.InstanceLoader`).

**Callbacks** — subclass `Callback` and override any of `on_train_start(trainer)`,
`on_step_start(trainer, step)` (e.g. GRPO refreshing rollouts with the current policy),
`on_step_end(trainer, step, metrics)`, `on_eval(trainer, step, results)` (return a dict to
add downstream-task results), `on_checkpoint(trainer, path)`, `on_train_end(trainer)`.
A callback with `state_dict()/load_state_dict()` is saved and restored with checkpoints.

One optimizer step (`train_step`): split → forward/backward per micro-batch under bf16
autocast when asked (fp32 master weights; DDP/FSDP gradient sync only on the last
micro-batch) → clip to `optim.clip_grad_norm` → loss-spike / non-finite guard → set the
scheduled LR → AdamW step.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from olmo2.export.checkpoints import checkpoint_name
from olmo2.model.loss import lm_loss
from olmo2.train import checkpoint as ckpt
from olmo2.train import distributed as D
from olmo2.train.config import TrainConfig, to_dict
from olmo2.train.metrics import MetricsLogger, peak_flops
from olmo2.train.optim import SpikeGuard, build_optimizer, lr_at, set_lr

log = logging.getLogger(__name__)


class Objective(Protocol):
    def loss(
        self, model: torch.nn.Module, micro_batch: dict
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...

    def units(self, micro_batch: dict) -> int: ...


@dataclass
class LMObjective:
    """Next-token CE + z-loss (OLMo 2: 1e-5·logsumexp²), summed over non-ignored labels."""

    z_loss_multiplier: float = 1e-5

    def loss(self, model, micro_batch):
        logits = model(micro_batch["input_ids"], doc_ids=micro_batch.get("doc_ids"))
        out = lm_loss(logits, micro_batch["labels"], self.z_loss_multiplier, reduction="sum")
        return out.loss, {"ce": out.ce.detach(), "z_loss": out.z_loss.detach()}

    def units(self, micro_batch) -> int:
        return int((micro_batch["labels"] != -100).sum())


def batch_tokens(micro_batch: dict) -> int:
    """Tokens a micro-batch feeds the model (for tokens/s and MFU): `input_ids`, or the
    chosen and rejected sequences of a preference batch."""
    keys = ("input_ids",) if "input_ids" in micro_batch else ("chosen_ids", "rejected_ids")
    return sum(micro_batch[k].numel() for k in keys if k in micro_batch)


class Callback:
    """Hooks called on every rank; override what you need."""

    def on_train_start(self, trainer: Trainer) -> None: ...
    def on_step_start(self, trainer: Trainer, step: int) -> None: ...
    def on_step_end(self, trainer: Trainer, step: int, metrics: dict) -> None: ...
    def on_eval(self, trainer: Trainer, step: int, results: dict) -> dict | None: ...
    def on_checkpoint(self, trainer: Trainer, path: Path) -> None: ...
    def on_train_end(self, trainer: Trainer) -> None: ...


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

    `model` is already on its device and wrapped for data parallelism (see
    `distributed.wrap`); the optimizer is built here unless given.

    `cfg` is a `TrainConfig` or any dataclass with the same sections the loop reads:
    `optim`, `schedule`, `trainer`, `checkpoint`, `logging` (the classes in config.py) and
    `data.micro_batch_size` / `data.seq_len` (post-training configs reuse those sections).
    Resume: `path = checkpoint.latest(run_dir)`, then `trainer.resume(path)` before `fit()`
    (see `olmo2.train.cli.build` for the full start-up order).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        model: torch.nn.Module,
        data,
        objective: Objective | None = None,
        callbacks: list[Callback] = (),
        evaluators: list[Callable[[Trainer], dict]] = (),
        tokenizer=None,
        optimizer: torch.optim.Optimizer | None = None,
        peak_lr: float | None = None,
        seq_len: int | None = None,
    ):
        self.cfg, self.model, self.data = cfg, model, data
        self.objective = objective or LMObjective(cfg.trainer.z_loss_multiplier)
        self.callbacks, self.evaluators, self.tokenizer = (
            list(callbacks),
            list(evaluators),
            tokenizer,
        )
        self.optimizer = optimizer or build_optimizer(model, cfg.optim)
        self.peak_lr = cfg.optim.lr if peak_lr is None else peak_lr
        self.guard = SpikeGuard(
            cfg.optim.spike_sigma, cfg.optim.spike_window, cfg.optim.spike_min_steps
        )
        self.run_dir = Path(cfg.trainer.run_dir)
        self.device = next(model.parameters()).device
        self.seq_len = seq_len or cfg.data.seq_len
        self.step, self.tokens = 0, 0
        self.last_eval_step = -1

    # ---- state --------------------------------------------------------------------------
    def lr(self, step: int) -> float:
        return lr_at(self.cfg.schedule, self.peak_lr, step, self.cfg.trainer.max_steps)

    def rank_state(self) -> dict:
        cbs = {
            i: cb.state_dict() for i, cb in enumerate(self.callbacks) if hasattr(cb, "state_dict")
        }
        return {
            "step": self.step,
            "tokens": self.tokens,
            "peak_lr": self.peak_lr,
            "data": self.data.state_dict(),
            "rng": rng_state(),
            "guard": self.guard.state_dict(),
            "callbacks": cbs,
        }

    def load_rank_state(self, st: dict) -> None:
        self.step, self.tokens, self.peak_lr = st["step"], st["tokens"], st["peak_lr"]
        self.data.load_state_dict(st["data"])
        self.guard.load_state_dict(st["guard"])
        set_rng_state(st["rng"])
        for i, cb in enumerate(self.callbacks):
            if i in st.get("callbacks", {}) and hasattr(cb, "load_state_dict"):
                cb.load_state_dict(st["callbacks"][i])

    def resume(self, path: Path) -> None:
        """Restore everything from a checkpoint of this run (exact resume)."""
        st = ckpt.load(path, self.model, self.optimizer)
        if st is None:
            raise ValueError(f"{path}: train_state/ has no rank state file")
        self.load_rank_state(st)
        log.info("resumed from %s at step %d", path, self.step)

    def save(self) -> Path:
        t = self.cfg.trainer
        name = checkpoint_name(t.stage, self.step, self.tokens, t.ingredient)
        meta = {
            "step": self.step,
            "tokens": self.tokens,
            "lr": self.lr(self.step),
            "world_size": D.world_size(),
            "config": to_dict(self.cfg),
        }
        path = ckpt.save(
            self.run_dir, name, self.model, self.optimizer, self.rank_state(), meta, self.tokenizer
        )
        ckpt.prune(self.run_dir, self.cfg.checkpoint.keep_last)
        for cb in self.callbacks:
            cb.on_checkpoint(self, path)
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
        local.append(float(sum(batch_tokens(mb) for mb in micro)))
        units, tokens = D.all_reduce_sum(
            torch.tensor(local, dtype=torch.float64, device=self.device)
        ).tolist()
        if units <= 0:
            raise ValueError(
                f"step {self.step}: the global batch has no loss units (every label masked?)"
            )
        scale = D.world_size() / units  # DDP/FSDP average over ranks; this undoes it
        sums: dict[str, torch.Tensor] = {}
        for i, mb in enumerate(micro):
            mb = self._to_device(mb)
            with D.no_sync(self.model, last=i == len(micro) - 1), self.autocast():
                loss_sum, metrics = self.objective.loss(self.model, mb)
            (loss_sum * scale).backward()
            for k, v in {"loss": loss_sum.detach(), **metrics}.items():
                sums[k] = sums.get(k, 0.0) + v.detach().double()
        keys = list(sums)
        reduced = D.all_reduce_sum(torch.stack([sums[k] for k in keys])) / units
        out = dict(zip(keys, reduced.tolist()))
        out["grad_norm"] = self._clip()
        out["batch_tokens"], out["units"] = tokens, units
        self.step += 1
        out["lr"] = self.lr(self.step)
        out["skipped"] = self.guard.check(out["loss"], out["grad_norm"])
        if out["skipped"] is None:
            set_lr(self.optimizer, out["lr"])
            self.optimizer.step()
        else:
            log.warning("step %d: update skipped (%s)", self.step, out["skipped"])
        self.optimizer.zero_grad(set_to_none=True)
        self.tokens += int(tokens)
        return out

    def _clip(self) -> float:
        max_norm = self.cfg.optim.clip_grad_norm or float("inf")
        params = [p for p in self.model.parameters() if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
        if hasattr(norm, "full_tensor"):  # FSDP2: a DTensor
            norm = norm.full_tensor()
        return float(norm)

    # ---- evaluation -----------------------------------------------------------------------
    def evaluate(self) -> dict:
        results: dict = {}
        for fn in self.evaluators:
            results.update(fn(self) or {})
        for cb in self.callbacks:
            results.update(cb.on_eval(self, self.step, results) or {})
        self.last_eval_step = self.step
        return results

    # ---- the loop ---------------------------------------------------------------------------
    def fit(self) -> dict:
        t = self.cfg.trainer
        inner = D.unwrap(self.model)
        fpt = inner.config.flops_per_token(self.seq_len) if hasattr(inner, "config") else 0.0
        logger = MetricsLogger(
            self.run_dir, self.cfg.logging, t.max_steps, fpt,
            peak_flops(self.device, self.cfg.logging.peak_flops), D.world_size(),
            start_step=self.step, enabled=D.is_main(), config=to_dict(self.cfg),
        )  # fmt: skip
        self.model.train()
        for cb in self.callbacks:
            cb.on_train_start(self)
        it, last, data_time = iter(self.data), {}, 0.0
        try:
            while self.step < t.max_steps:
                t0 = time.perf_counter()
                batch = next(it)
                data_time = time.perf_counter() - t0
                for cb in self.callbacks:
                    cb.on_step_start(self, self.step + 1)
                last = self.train_step(batch)
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                last.update(step=self.step, tokens=self.tokens, data_time=data_time)
                logger.throughput(last, time.perf_counter() - t0, self.device)
                logger.log_step(last)
                for cb in self.callbacks:
                    cb.on_step_end(self, self.step, last)
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
        for cb in self.callbacks:
            cb.on_train_end(self)
        return last


class TokenFileEval:
    """In-loop held-out evaluation on token files: bits per byte (`olmo2.eval.perplexity`)
    when a tokenizer is known, and mean CE (nats/token) always."""

    def __init__(
        self, paths: list[str], seq_len: int, max_chunks: int, tokenizer=None, batch_size: int = 8
    ):
        from olmo2.data.loader import expand_paths
        from olmo2.eval.perplexity import token_byte_lengths, token_file_chunks

        self.sets = {}  # one set per entry: a file, or a directory / glob of token files
        for entry, files in zip(paths, expand_paths(paths, "data.eval_paths")):
            chunks = torch.cat([token_file_chunks(f, seq_len, max_chunks) for f in files])
            self.sets[Path(entry).stem] = chunks[:max_chunks]
        self.token_bytes = token_byte_lengths(tokenizer) if tokenizer is not None else None
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, trainer: Trainer) -> dict:
        from olmo2.eval.perplexity import chunks_bpb

        model = D.unwrap(trainer.model)
        was = model.training
        model.eval()
        out = {}
        for name, chunks in self.sets.items():
            nats, n = 0.0, 0
            for i in range(0, len(chunks), self.batch_size):
                ids = chunks[i : i + self.batch_size].to(trainer.device)
                with trainer.autocast():
                    logits = model(ids)
                res = lm_loss(logits[:, :-1], ids[:, 1:], z_loss_multiplier=0.0, reduction="sum")
                nats, n = nats + float(res.ce), n + int(res.n_tokens)
            out[f"eval/{name}/ce"] = nats / max(n, 1)
            if self.token_bytes is not None:
                out[f"eval/{name}/bpb"] = chunks_bpb(
                    model, chunks, self.token_bytes, self.batch_size
                ).bits_per_byte
        model.train(was)
        return out


class TaskEval:
    """In-loop downstream evaluation: OLMES tasks through `olmo2.eval` (the same prompts,
    normalisations and scoring as `olmo2 eval`) on each task's seeded document subsample.
    Bad task keys or missing eval files fail here, before training starts."""

    def __init__(self, tasks: list[str], data_dir: str | None, limit: int | None, tokenizer):
        from olmo2.eval.tasks import get_task, resolve
        from olmo2.utils import data_dir as find_data_dir

        self.tasks, self.limit, self.tokenizer = list(tasks), limit, tokenizer
        self.data_dir = find_data_dir(data_dir)
        for key in resolve(self.tasks)[0]:
            task = get_task(key)
            task.check_ready()
            task.docs(self.data_dir, limit)

    @torch.no_grad()
    def __call__(self, trainer: Trainer) -> dict:
        from olmo2.eval.harness import Harness, evaluate

        model = D.unwrap(trainer.model)
        was = model.training
        model.eval()
        with trainer.autocast():
            harness = Harness(model, self.tokenizer, progress=False)
            res = evaluate(harness, self.tasks, self.data_dir, self.limit)
        model.train(was)
        out = {f"eval/{k}": v["primary_score"] for k, v in res["tasks"].items()}
        out.update({f"eval/{k}": v["score"] for k, v in res["suites"].items()})
        return out
