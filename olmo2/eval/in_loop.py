"""Evaluation inside the training loop: held-out token files and downstream tasks.

Each evaluator is called as `evaluator(model, autocast) -> {"eval/...": value}` by the trainer
every `trainer.eval_interval` steps (`olmo2.train.trainer.Trainer.evaluate`), with the
unwrapped model and the trainer's autocast context; the model is in eval mode for the call
and gets its mode back even when the evaluation raises (`olmo2.eval.harness.eval_mode`).
Bad inputs (missing token files, unknown task keys, missing eval sets) fail in the
constructor, before training starts.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from pathlib import Path

import torch

from olmo2.eval.harness import eval_mode
from olmo2.model.loss import token_logps

Autocast = Callable[[], contextlib.AbstractContextManager]


class TokenFileEval:
    """Held-out loss on token files: mean CE (nats per token) and, with a tokenizer, bits per
    byte (`olmo2.eval.perplexity`: −Σ log p / (bytes · ln 2), special tokens 0 bytes and not
    scored), both from the same forward pass over each batch of `seq_len` chunks."""

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
    def __call__(self, model: torch.nn.Module, autocast: Autocast = contextlib.nullcontext) -> dict:
        out = {}
        with eval_mode(model):
            for name, chunks in self.sets.items():
                out.update(self._score(model, autocast, name, chunks))
        return out

    def _score(self, model, autocast: Autocast, name: str, chunks_NT: torch.Tensor) -> dict:
        device = next(model.parameters()).device
        nats = scored_nats = 0.0
        tokens = nbytes = 0
        for i in range(0, len(chunks_NT), self.batch_size):
            ids = chunks_NT[i : i + self.batch_size].to(device)
            with autocast():
                logits = model(ids)
            lp = token_logps(logits[:, :-1], ids[:, 1:]).double()
            nats, tokens = nats - float(lp.sum()), tokens + lp.numel()
            if self.token_bytes is not None:
                b = self.token_bytes.to(device)[ids[:, 1:]]
                scored_nats -= float(lp[b > 0].sum())
                nbytes += int(b.sum())
        out = {f"eval/{name}/ce": nats / max(tokens, 1)}
        if nbytes:
            out[f"eval/{name}/bpb"] = scored_nats / (nbytes * math.log(2))
        return out


class TaskEval:
    """Downstream tasks: OLMES keys through `olmo2.eval` (the same prompts, normalisations
    and scoring as `olmo2 eval`) on each task's seeded document subsample."""

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
    def __call__(self, model: torch.nn.Module, autocast: Autocast = contextlib.nullcontext) -> dict:
        from olmo2.eval.harness import Harness, evaluate

        with eval_mode(model), autocast():
            # a short training context keeps the last tokens of long few-shot prompts
            harness = Harness(model, self.tokenizer, progress=False, truncate=True)
            res = evaluate(harness, self.tasks, self.data_dir, self.limit)
        out = {f"eval/{k}": v["primary_score"] for k, v in res["tasks"].items()}
        out.update({f"eval/{k}": v["score"] for k, v in res["suites"].items()})
        return out
