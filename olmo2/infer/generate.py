"""Batched generation with a preallocated KV cache.

Prompts of different lengths are left-padded into one batch; each row's positions start at
its first real token, so padding never changes the result (cached decoding equals full
recomputation — tested against transformers' `generate`). Sampling: greedy, temperature,
top-k, top-p, seeded. Stops on EOS / stop ids / stop strings; `stream` yields tokens as they come.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from olmo2.infer.cache import KVCache
from olmo2.infer.decode import decode_step, decode_weights
from olmo2.infer.logit_top import logit_top
from olmo2.model.transformer import Olmo2


@dataclass
class SamplingConfig:
    max_new_tokens: int = 128
    temperature: float = 0.0
    """0 = greedy."""
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")


def fit_prompt(ids: Sequence[int], max_new_tokens: int, context: int, truncate: bool = False):
    """The one rule for a prompt and its generation budget against the model's context
    (`olmo2 generate`, `chat`, `serve`, the eval harness): refuse, naming the lengths, when
    prompt + max_new_tokens does not fit; with `truncate`, keep the prompt's last tokens."""
    room = context - max_new_tokens
    if room < 1:
        raise ValueError(
            f"max_new_tokens {max_new_tokens} leaves no room for a prompt in the context of "
            f"{context} tokens"
        )
    if len(ids) <= room:
        return list(ids)
    if truncate:
        return list(ids[-room:])
    raise ValueError(
        f"the prompt is {len(ids)} tokens and max_new_tokens {max_new_tokens}: "
        f"{len(ids) + max_new_tokens} > the model's context of {context} tokens "
        f"(truncate to keep the prompt's last {room} tokens)"
    )


def sample(
    logits_BV: torch.Tensor, cfg: SamplingConfig, gen: torch.Generator | None
) -> torch.Tensor:
    if cfg.temperature == 0:  # argmax (torch's on ties) in one pass of the C kernel
        return logit_top(logits_BV, 1).indices[:, 0]
    logits = logits_BV.float() / cfg.temperature
    if cfg.top_k is not None and cfg.top_k < logits.shape[-1]:
        kth = torch.topk(logits, cfg.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p is not None and cfg.top_p < 1:
        sorted_logits, idx = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(-1)
        # drop a token when the mass before it already reaches top_p (the top token is kept)
        drop = (probs.cumsum(-1) - probs) >= cfg.top_p
        logits = logits.scatter(-1, idx, sorted_logits.masked_fill(drop, float("-inf")))
    # inverse-CDF sampling: one uniform per row (torch.multinomial draws one exponential per
    # vocabulary entry, ~10x slower on CPU); the fp64 cumsum keeps tail probabilities exact.
    # u in (0, total] and the first cdf >= u: zero-probability tokens are never picked.
    cdf = logits.softmax(-1).double().cumsum(-1)
    u = 1 - torch.rand(cdf.shape[0], 1, generator=gen, dtype=cdf.dtype, device=cdf.device)
    return torch.searchsorted(cdf, u * cdf[:, -1:]).squeeze(-1)


def _sharded(model: nn.Module) -> bool:
    if not torch.distributed.is_available():
        return False
    from torch.distributed.fsdp import FSDPModule

    return any(isinstance(m, FSDPModule) for m in (model, *getattr(model, "blocks", ())))


def _no_grad_mode(model: nn.Module):
    """inference_mode (~15% less per-op overhead than no_grad when decoding small models),
    but no_grad for an FSDP-sharded model: its unsharded parameters must stay usable by autograd."""
    return torch.no_grad() if _sharded(model) else torch.inference_mode()


def stream(
    model: Olmo2,
    prompts: Sequence[Sequence[int]],
    cfg: SamplingConfig,
    stop_token_ids: Sequence[int] = (),
    should_stop: Callable[[int, int], bool] | None = None,
) -> Iterator[list[int | None]]:
    """Yield, per decoding step, the new token of each row (None once a row has finished).

    A row finishes after emitting a stop token (which is yielded) or when `should_stop(row,
    token)`, called with each new token, returns True (`complete` uses it for stop strings).
    """
    # the mode applies only while the generator runs, not to the caller between steps
    return _no_grad_mode(model)(_stream)(model, prompts, cfg, stop_token_ids, should_stop)


SHARED_PREFIX_MIN = 16
"""A common prompt prefix at least this long (few-shot examples, a system prompt) is
prefilled once for the whole batch."""


def shared_prefix_len(prompts: Sequence[tuple[int, ...]]) -> int:
    """Tokens every prompt starts with, leaving each at least one of its own (whose logits
    start decoding); 0 below `SHARED_PREFIX_MIN` or for a single prompt."""
    if len(prompts) < 2:
        return 0
    first, n = prompts[0], min(len(p) for p in prompts) - 1
    for p in prompts[1:]:
        n = next((i for i in range(n) if p[i] != first[i]), n)
    return n if n >= SHARED_PREFIX_MIN else 0


def _prefill(model: Olmo2, prompts, max_new_tokens: int):
    """KV cache and last-position logits [B, V] of every prompt. A prefix shared by all
    prompts is prefilled once (`KVCache.load_prefix`), and identical prompts (a GRPO group,
    `n` samples of one request) once each, their cache rows then repeated."""
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    distinct: dict[tuple[int, ...], int] = {}
    rows = [distinct.setdefault(tuple(map(int, p)), len(distinct)) for p in prompts]
    C = shared_prefix_len(list(distinct))
    P = max(len(p) for p in distinct)
    ids = torch.full((len(distinct), P - C), model.config.pad_token_id or 0, dtype=torch.long)
    for i, p in enumerate(distinct):
        ids[i, P - len(p) :] = torch.tensor(p[C:], dtype=torch.long)
    left_pad = torch.tensor([P - len(p) for p in distinct])
    cache = KVCache(
        model.config, len(distinct), P + max_new_tokens, left_pad, dtype, device, pad_start=C
    )
    if C:
        prefix = KVCache(model.config, 1, C, torch.zeros(1, dtype=torch.long), dtype, device)
        model(
            torch.tensor([next(iter(distinct))[:C]], device=device), cache=prefix, logits_to_keep=1
        )
        cache.load_prefix(prefix)
    logits = model(ids.to(device), cache=cache, logits_to_keep=1)[:, -1]
    if len(distinct) < len(prompts):
        rows_B = torch.tensor(rows, device=device)
        cache.index_rows(rows_B)
        logits = logits[rows_B]
    return cache, logits


def _stream(model, prompts, cfg, stop_token_ids, should_stop) -> Iterator[list[int | None]]:
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    B, pad = len(prompts), model.config.pad_token_id or 0
    cache, logits = _prefill(model, prompts, cfg.max_new_tokens)
    weights = None if _sharded(model) else decode_weights(model)
    gen = None
    if cfg.seed is not None:
        gen = torch.Generator(device=logits.device).manual_seed(cfg.seed)
    stops = set(stop_token_ids)
    done = [False] * B  # Python-side bookkeeping: no tensor ops per step beyond the model
    for step in range(cfg.max_new_tokens):
        nxt = sample(logits, cfg, gen)
        if any(done):  # finished rows feed padding
            nxt = nxt.masked_fill(torch.tensor(done, device=nxt.device), pad)
        out = [None if d else t for d, t in zip(done, nxt.tolist())]
        yield out
        for i, t in enumerate(out):
            if t is not None and (t in stops or (should_stop is not None and should_stop(i, t))):
                done[i] = True
        if all(done) or step == cfg.max_new_tokens - 1:
            return
        if weights is None:  # sharded: the module calls run the FSDP hooks
            logits = model(nxt[:, None], cache=cache)[:, -1]
        else:
            logits = decode_step(model, weights, nxt, cache)


class Drain:
    """One row's completion, fed token by token: the one place where generation ends and
    becomes text, for `complete` (batch generation, the eval harness, RL rollouts) and the
    server's streams.

    A row ends at a stop token (kept in `tokens`, not in `text`) or when the text contains a
    stop string (`text` is cut before it; `tokens` keep what was generated). Text is decoded
    incrementally (the offsets scheme of TGI's and vLLM's detokenizers: decode a short
    window, emit what it adds, never a trailing incomplete UTF-8 character), so a stop string
    is found at the token that completes it, at O(1) cost per token. `release()` hands a
    streaming client the text that can no longer change."""

    def __init__(self, tokenizer=None, stop: Sequence[str] = (), stop_token_ids=()):
        self.stop = [s for s in stop if s]
        if self.stop and tokenizer is None:
            raise ValueError("stop strings need a tokenizer")
        self.tok, self.stop_ids = tokenizer, set(stop_token_ids)
        self.tokens: list[int] = []
        self.finish_reason: str | None = None
        """None while running, then "stop" (a stop token or string) or "length"."""
        self._text, self._cut = "", False
        self._prefix = self._read = self._sent = 0
        self._hold = max((len(s) for s in self.stop), default=1) - 1
        """Characters that may be the start of a stop string."""

    def push(self, token: int) -> bool:
        """Add a generated token; True when the row is finished."""
        self.tokens.append(token)
        if token in self.stop_ids:
            self.finish_reason = "stop"
        elif self.stop:
            start = max(0, len(self._text) - self._hold)
            self._decode()
            hits = [i for i in (self._text.find(s, start) for s in self.stop) if i >= 0]
            if hits:
                self._text, self._cut, self.finish_reason = self._text[: min(hits)], True, "stop"
        return self.finish_reason is not None

    def end(self) -> None:
        """No more tokens come: a row still running finished by length."""
        self.finish_reason = self.finish_reason or "length"

    def _decode(self, final: bool = False) -> None:
        ids = self.tokens[:-1] if self.tokens and self.tokens[-1] in self.stop_ids else self.tokens
        if self._cut or self._read >= len(ids):
            return
        before = self.tok.decode(ids[self._prefix : self._read])
        after = self.tok.decode(ids[self._prefix :])
        if len(after) > len(before) and (final or not after.endswith("\ufffd")):
            self._text += after[len(before) :]
            self._prefix, self._read = self._read, len(ids)

    @property
    def text(self) -> str:
        """The completion's text so far; all of it once finished."""
        if self.tok is None:
            raise ValueError("text needs a tokenizer")
        self._decode(final=self.finish_reason is not None)
        return self._text

    def release(self) -> str:
        """Text not yet released that no later token can change (all of it once finished)."""
        text = self.text
        upto = len(text) if self.finish_reason else len(text) - self._hold
        out = text[self._sent : max(upto, self._sent)]
        self._sent += len(out)
        return out


def drained(model: Olmo2, prompts, cfg: SamplingConfig, drains: list[Drain]) -> Iterator[None]:
    """`stream` with each row's tokens fed to its `Drain` (which decides when it ends); yields
    after every step, so a caller can stream `release()`; every drain is finished after."""
    try:
        for _ in stream(model, prompts, cfg, (), lambda i, t: drains[i].push(t)):
            yield
    finally:
        for d in drains:
            d.end()


def complete(
    model: Olmo2,
    prompts: Sequence[Sequence[int]],
    cfg: SamplingConfig,
    *,
    tokenizer=None,
    stop: Sequence[str] = (),
    stop_token_ids: Sequence[int] = (),
) -> list[Drain]:
    """Generate for a batch of token prompts; one finished `Drain` per prompt (`tokens`,
    `text` with a tokenizer, `finish_reason`)."""
    drains = [Drain(tokenizer, stop, stop_token_ids) for _ in prompts]
    for _ in drained(model, prompts, cfg, drains):
        pass
    return drains


def generate(
    model: Olmo2,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_token_id: int | None = None,
    stop_token_ids: Sequence[int] | None = None,
    seed: int | None = None,
) -> list[list[int]]:
    """New tokens per prompt (including the stop token that ended a row, if any)."""
    cfg = SamplingConfig(max_new_tokens, temperature, top_k, top_p, seed)
    stops = list(stop_token_ids or [])
    eos = model.config.eos_token_id if eos_token_id is None else eos_token_id
    if eos is not None and eos >= 0:
        stops.append(eos)
    return [d.tokens for d in complete(model, prompts, cfg, stop_token_ids=stops)]


def generate_text(
    model: Olmo2,
    tokenizer,
    prompts: Sequence[str],
    cfg: SamplingConfig,
    stop: Sequence[str] = (),
) -> list[str]:
    """Text in, text out. Generation ends at EOS or at any `stop` string (cut from the output)."""
    encoded = [tokenizer.encode(p) for p in prompts]
    drains = complete(
        model, encoded, cfg, tokenizer=tokenizer, stop=stop,
        stop_token_ids=[tokenizer.eos_token_id],
    )  # fmt: skip
    return [d.text for d in drains]


# ---- CLI: olmo2 generate --------------------------------------------------------------------
def add_sampling_arguments(p) -> None:
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)


def sampling_from_args(args) -> SamplingConfig:
    return SamplingConfig(args.max_new_tokens, args.temperature, args.top_k, args.top_p, args.seed)


def add_arguments(p) -> None:
    p.add_argument("--model", required=True, help="checkpoint directory or hub id")
    p.add_argument("--revision", default=None, help="hub revision (branch) to load")
    p.add_argument("--prompt", action="append", required=True, help="repeat for a batch")
    p.add_argument("--chat", action="store_true", help="wrap each prompt as a user chat turn")
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument(
        "--truncate",
        action="store_true",
        help="keep a prompt's last tokens when it does not fit the context (default: refuse)",
    )
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quantize", choices=["int8"], default=None, help="int8 linear layers (CPU)")
    add_sampling_arguments(p)


def run(args) -> int:
    from olmo2.infer.load import load_for_inference

    model, tok = load_for_inference(
        args.model, args.revision, args.dtype, args.device, args.quantize
    )
    prompts = args.prompt
    if args.chat:
        prompts = [tok.apply_chat_template([{"role": "user", "content": p}], True) for p in prompts]
    cfg = sampling_from_args(args)
    context = model.config.max_seq_len
    ids = [fit_prompt(tok.encode(p), cfg.max_new_tokens, context, args.truncate) for p in prompts]
    if len(prompts) == 1:  # stream a single prompt to the terminal
        sys.stdout.write(args.prompt[0])
        drain = Drain(tok, args.stop, [tok.eos_token_id])
        for _ in drained(model, ids, cfg, [drain]):
            sys.stdout.write(drain.release())
            sys.stdout.flush()
        sys.stdout.write(drain.release() + "\n")
        return 0
    drains = complete(
        model, ids, cfg, tokenizer=tok, stop=args.stop, stop_token_ids=[tok.eos_token_id]
    )
    for prompt, d in zip(args.prompt, drains):
        print(f"--- {prompt!r}\n{d.text}")
    return 0
