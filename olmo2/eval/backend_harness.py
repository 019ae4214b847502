"""The harness over a generation backend (`olmo2.infer.backends`; vLLM for scale):
`olmo2 eval --backend vllm`.

Requests, caching, the prompt-length rule and scoring are the harness's; only the model calls
change. A log-likelihood request is the backend's prompt log-probs of `context +
continuation` summed over the continuation (vLLM's `prompt_logprobs`, as OLMES's vLLM
backend scores them); generation is the backend's, with its text from olmo2's own `Drain`.
The model's weights live in the backend only (the olmo2 process holds none), so the
fingerprint that keys the result cache hashes the checkpoint's weight files instead.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from tqdm import tqdm

from olmo2.eval.formats import LLResult
from olmo2.eval.harness import CPU_TOKEN_BUDGET, Harness, ResultCache, encode_pair
from olmo2.infer.backends import Backend, GenerationParams
from olmo2.infer.generate import SamplingConfig, fit_prompt
from olmo2.model.config import ModelConfig


def files_fingerprint(checkpoint: Path) -> str:
    """sha256 over each weight file's name, size and first MiB: changes with the weights,
    without reading gigabytes."""
    h = hashlib.sha256()
    for f in sorted(checkpoint.glob("*.safetensors")):
        h.update(f"{f.name}{f.stat().st_size}".encode())
        with f.open("rb") as fh:
            h.update(fh.read(1 << 20))
    return h.hexdigest()[:16]


class BackendHarness(Harness):
    def __init__(
        self,
        backend: Backend,
        tokenizer,
        config: ModelConfig,
        fingerprint: str,
        batch_size: int | str = "auto",
        cache_path: str | Path | None = None,
        progress: bool = True,
        truncate: bool = False,
    ):
        if config.vocab_size < tokenizer.vocab_size:
            raise ValueError(
                f"tokenizer has {tokenizer.vocab_size} ids but the model's vocabulary is "
                f"{config.vocab_size}: they do not belong together"
            )
        self.backend, self.tokenizer, self.model = backend, tokenizer, None
        self.batch_size, self.max_length, self.truncate = batch_size, config.max_seq_len, truncate
        self.progress, self.budget = progress, CPU_TOKEN_BUDGET
        self.fingerprint, self.cache_path = fingerprint, cache_path
        self.cache = ResultCache(cache_path, fingerprint) if cache_path else None

    def _score(self, pairs: list[tuple[str, str]]) -> list[LLResult]:
        memo: dict[str, list[int]] = {}
        rows = [self._fit(*encode_pair(self.tokenizer, c, x, memo)) for c, x in pairs]
        out, step = [], 64 if self.batch_size == "auto" else self.batch_size
        for i in tqdm(range(0, len(rows), step), desc="loglikelihood", disable=not self.progress):
            chunk = rows[i : i + step]
            scores = self.backend.score_prompts([list(ctx) + cont for ctx, cont in chunk])
            for (_, cont), s in zip(chunk, scores, strict=True):
                n = len(cont)
                out.append(LLResult(sum(s.logprobs[-n:]), all(s.greedy[-n:]), n))
        return out

    def _generate_batch(
        self, prompts: list[list[int]], stop: tuple[str, ...], cfg: SamplingConfig
    ) -> list[str]:
        fit = [fit_prompt(p, cfg.max_new_tokens, self.max_length, self.truncate) for p in prompts]
        params = GenerationParams(
            max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
            seed=cfg.seed, stop=tuple(stop), stop_token_ids=(self.tokenizer.eos_token_id,),
        )  # fmt: skip
        return [c.text for c in self.backend.generate(fit, params)]
