"""olmo2's own engine behind the backend interface (the default; no extra dependency).

Generation is `olmo2.infer.generate.complete` over an in-memory `Olmo2`: in RL that is the
learner's policy itself, so there is nothing to sync. Log-probs, of sampled tokens and of
prompts, come from the model's one forward and `token_logps` (the scorer every trainer and
the eval harness use), one right-padded batch at a time with the LM head only at the
positions that are scored.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from olmo2.infer.backends.base import (
    Backend,
    Completion,
    GenerationParams,
    PromptScores,
    Weights,
    check_prompts,
    olmo2_state_dict,
)
from olmo2.infer.generate import complete, fit_prompt
from olmo2.model.loss import token_logps
from olmo2.model.transformer import Olmo2


class Olmo2Backend(Backend):
    name = "olmo2"

    def __init__(self, model: Olmo2, tokenizer=None, score_batch_size: int = 32):
        self.model, self.tokenizer, self.score_batch_size = model, tokenizer, score_batch_size

    @classmethod
    def load(cls, path, dtype: str = "float32", device: str = "cpu", **options) -> Olmo2Backend:
        from olmo2.model.hf import load

        model, tok = load(path, dtype=getattr(torch, dtype), device=device)
        return cls(model.eval(), tok, **options)

    def generate(
        self, prompts: Sequence[Sequence[int]], params: GenerationParams
    ) -> list[Completion]:
        ctx = self.model.config.max_seq_len
        rows = [fit_prompt(p, params.max_new_tokens, ctx) for p in check_prompts(prompts)]
        rows = [p for p in rows for _ in range(params.n)]  # `stream` prefills each prompt once
        stops = params.stop_ids(self.model.config.eos_token_id)
        was_training = self.model.training
        self.model.eval()  # (activation checkpointing is a training-mode forward)
        try:
            drains = complete(
                self.model, rows, params, tokenizer=self.tokenizer, stop=params.stop,
                stop_token_ids=stops,
            )  # fmt: skip
            logps = [None] * len(rows)
            if params.logprobs:
                new = [d.tokens for d in drains]
                scored = self._score([p + c for p, c in zip(rows, new)], [len(p) for p in rows])
                logps = [lp.tolist() for lp, _ in scored]
        finally:
            self.model.train(was_training)
        text = (lambda d: d.text) if self.tokenizer is not None else (lambda d: None)
        return [
            Completion(d.tokens, text(d), d.finish_reason, lp)
            for d, lp in zip(drains, logps, strict=True)
        ]

    def score_prompts(self, prompts: Sequence[Sequence[int]]) -> list[PromptScores]:
        rows = check_prompts(prompts)
        return [
            PromptScores(lp.tolist(), greedy.tolist())
            for lp, greedy in self._score(rows, [1] * len(rows))
        ]

    @torch.no_grad()
    def _score(self, rows: list[list[int]], starts: list[int]):
        """(log p, is-argmax) of row[t] given row[:t] for t = start .. len(row) - 1, per row."""
        device = next(self.model.parameters()).device
        pad = self.model.config.pad_token_id or 0
        out, bs = [], self.score_batch_size
        for s in range(0, len(rows), bs):
            chunk, first = rows[s : s + bs], starts[s : s + bs]
            ids = torch.full((len(chunk), max(map(len, chunk))), pad, dtype=torch.long)
            keep = torch.zeros(ids.shape, dtype=torch.bool)  # the positions that predict a token
            for b, (row, k) in enumerate(zip(chunk, first)):
                ids[b, : len(row)] = torch.tensor(row)
                keep[b, k - 1 : len(row) - 1] = True
            counts = keep.sum(1).tolist()
            if not any(counts):
                out += [(torch.zeros(0), torch.zeros(0, dtype=torch.bool)) for _ in chunk]
                continue
            target = ids[:, 1:][keep[:, :-1]].to(device)  # right padding: no mask needed
            logits = self.model(ids.to(device), logits_to_keep=keep.to(device))  # [N, V]
            lp = token_logps(logits, target).cpu()
            greedy = (logits.argmax(-1) == target).cpu()
            out += list(zip(lp.split(counts), greedy.split(counts)))
        return out

    def update_weights(self, weights: Weights) -> None:
        """Nothing to do for the learner's own model; another model's or a state dict's
        weights are copied in."""
        if weights is self.model:
            return
        self.model.load_state_dict(olmo2_state_dict(weights))
