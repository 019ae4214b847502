"""Continuous batching: many requests share one decoding batch; new ones join between steps.

`olmo2.infer.generate.stream` decodes a fixed batch to the end. A server wants more: requests
arrive at any time and finish at different lengths. The engine keeps `max_batch` cache *slots*
(one row of keys/values each, `max_len` positions long). A scheduler thread loops:

1. admit queued requests into free slots: prefill each prompt alone through the model's
   forward with a one-row `KVCache` (in chunks of `PREFILL_CHUNK` tokens), copy its
   keys/values into the slot, sample the first token;
2. run one decode step over every active slot together (`olmo2.infer.cache.SlotCache` gives
   each row its own position, so rows of different lengths share the step with no padding);
3. sample each row with its own settings, hand tokens to the request, free finished slots.

This is the scheme of Orca (Yu et al., OSDI 2022, "iteration-level scheduling") without paged
memory. `forward_passes` counts model calls so tests can show that concurrent requests share
steps. Requests are cancelled (slot freed at the next step) when a client goes away.

Log-probs (the OpenAI API's `logprobs` / `echo`) are a logit less its row's log-sum-exp
(`olmo2.infer.logit_top`, summed in fp64; `olmo2.model.loss.token_logps`, what every other
scorer uses, within fp32 rounding): of the raw model distribution, before temperature or
top-p (as vLLM returns them by default), for generated tokens from the step's logits and for the
prompt from the prefill forward's. A failure is contained: a prefill that raises fails its own
request, a decode step that raises is retried row by row so only the row that fails again is
failed, and a callback that raises cancels its own request.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from olmo2.infer.cache import KVCache, SlotCache
from olmo2.infer.decode import decode_step, decode_weights
from olmo2.infer.generate import SamplingConfig, fit_prompt, sample
from olmo2.infer.logit_top import LogitTop, logit_top
from olmo2.infer.metrics import Gauge, ServingMetrics
from olmo2.model.transformer import Olmo2

log = logging.getLogger(__name__)

PREFILL_CHUNK = 512
"""Prompt tokens per prefill forward: bounds an echo request's [T, V] logits (~200 MB at a
100k vocabulary) whatever the prompt length."""


class QueueFullError(RuntimeError):
    """The engine's waiting queue is at its limit (the server answers 429)."""


@dataclass
class EngineConfig:
    max_batch: int = 8
    """Cache slots = requests decoded together in one forward pass."""
    max_len: int | None = None
    """Positions per slot (prompt + generated); None = the model's max_seq_len."""
    max_queue: int = 256
    """Requests allowed to wait for a slot before `submit` raises QueueFullError."""


@dataclass
class Logprobs:
    """One position: its token's log-prob and the `top` most likely tokens, best first."""

    token: int
    logprob: float
    top: list[tuple[int, float]]


def position_logprobs(
    logits_NV: torch.Tensor, tokens_N: torch.Tensor, k: int, top: LogitTop | None = None
) -> list[Logprobs]:
    """Log-probs of `tokens` under each row of logits, and each row's top-k alternatives
    (`top`: `logit_top(logits_NV, >= max(k, 1), lse=True)` when the caller has it): a logit
    less its row's log-sum-exp, the token's and the alternatives' alike."""
    if top is None:
        top = logit_top(logits_NV, max(k, 1), lse=True)
    logit_N = logits_NV.gather(1, tokens_N[:, None]).squeeze(1).double()
    lps, toks = (logit_N - top.lse).tolist(), tokens_N.tolist()
    if k == 0:
        return [Logprobs(t, lp, []) for t, lp in zip(toks, lps)]
    top_lp = (top.values[:, :k].double() - top.lse[:, None]).tolist()
    return [
        Logprobs(t, lp, list(zip(ids, vals)))
        for t, lp, ids, vals in zip(toks, lps, top.indices[:, :k].tolist(), top_lp)
    ]


OnToken = Callable[[int | None, str | None, Logprobs | None], None]


@dataclass
class Request:
    """One generation. `on_token(token, finish_reason, logprobs)` is called from the engine
    thread for each new token (finish_reason None; logprobs when asked for, else None) and
    once more at the end with token None and the reason: "stop" (a stop token, not passed to
    on_token), "length", "cancelled" or "error". With `echo`, `prompt_logprobs` (None for the
    first token, which nothing predicts) is filled before the first call."""

    prompt: list[int]
    sampling: SamplingConfig
    on_token: OnToken
    stop_token_ids: frozenset[int] = frozenset()
    max_new_tokens: int = 0
    """Tokens to generate; 0 scores the prompt only (with echo)."""
    logprobs: int | None = None
    """Alternatives per generated token to report (0 = the token's own log-prob only)."""
    echo: bool = False
    id: int = 0
    cancelled: bool = False
    generated: int = 0
    prompt_logprobs: list[Logprobs | None] | None = None
    generator: torch.Generator | None = field(default=None, repr=False)
    submitted: float = 0.0
    last_token_at: float = 0.0


class Engine:
    """Scheduler thread + slot cache around one model. Thread-safe `submit` / `cancel`."""

    def __init__(self, model: Olmo2, config: EngineConfig | None = None):
        self.model = model.eval()
        self.config = config or EngineConfig()
        self.max_len = self.config.max_len or model.config.max_seq_len
        if self.config.max_batch < 1 or self.max_len < 2:
            raise ValueError("max_batch must be >= 1 and max_len >= 2")
        p = next(model.parameters())
        self.cache = SlotCache(model.config, self.config.max_batch, self.max_len, p.dtype, p.device)
        self.weights = decode_weights(model)
        self.slots: list[Request | None] = [None] * self.config.max_batch
        self.next_token = torch.zeros(self.config.max_batch, dtype=torch.long)
        self.waiting: queue.Queue[Request] = queue.Queue()
        self.forward_passes = 0
        self.tokens_generated = 0
        self.requests_done = 0
        self.metrics = ServingMetrics()
        self.metrics.gauges += [
            Gauge("olmo2_requests_running", "Requests in a decoding slot.", lambda: self.active),
            Gauge("olmo2_requests_waiting", "Requests queued for a slot.", self.waiting.qsize),
        ]
        self._ids = itertools.count(1)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- public API -------------------------------------------------------------------------
    def start(self) -> Engine:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="olmo2-engine", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the current step, cancel every request, end the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        for i, r in enumerate(self.slots):
            if r is not None:
                self._finish(i, "cancelled")
        while not self.waiting.empty():
            self._call(self.waiting.get_nowait(), None, "cancelled")

    def check(self, prompt: Sequence[int], max_new_tokens: int) -> None:
        """ValueError naming the problem when a prompt cannot run: empty, a token id outside
        the model's vocabulary, or prompt + max_new_tokens over the context
        (`olmo2.infer.generate.fit_prompt`, the one prompt-length rule)."""
        if not prompt:
            raise ValueError("the prompt needs at least one token")
        vocab = self.model.config.vocab_size
        for pos, t in enumerate(prompt):
            if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < vocab:
                raise ValueError(
                    f"token id {t!r} at position {pos} is outside the vocabulary [0, {vocab})"
                )
        fit_prompt(prompt, max_new_tokens, self.max_len)

    def submit(
        self,
        prompt: Sequence[int],
        sampling: SamplingConfig,
        on_token: OnToken,
        stop_token_ids: Sequence[int] = (),
        *,
        max_new_tokens: int | None = None,
        logprobs: int | None = None,
        echo: bool = False,
    ) -> Request:
        """Queue a request. `max_new_tokens` (default `sampling.max_new_tokens`) may be 0 with
        `echo`: the prompt is scored and nothing generated."""
        max_new = sampling.max_new_tokens if max_new_tokens is None else max_new_tokens
        if max_new < 0 or (max_new == 0 and not echo):
            raise ValueError(f"max_new_tokens must be >= 1 (0 only with echo), got {max_new}")
        self.check(prompt, max_new)
        if self.waiting.qsize() >= self.config.max_queue:
            raise QueueFullError(f"{self.waiting.qsize()} requests already waiting")
        if self._stop.is_set():
            raise QueueFullError("the engine is shutting down")
        gen = None
        if sampling.seed is not None:
            gen = torch.Generator(device=self.cache.k.device).manual_seed(sampling.seed)
        req = Request(
            list(prompt), sampling, on_token, frozenset(stop_token_ids), max_new, logprobs, echo
        )
        req.id, req.generator, req.submitted = next(self._ids), gen, time.perf_counter()
        self.waiting.put(req)
        return req

    def cancel(self, req: Request) -> None:
        req.cancelled = True  # read by the engine thread before the next step

    def generate(self, prompt: Sequence[int], sampling: SamplingConfig, stop_token_ids=()):
        """Blocking convenience: (tokens, finish_reason)."""
        out: list[int] = []
        done = threading.Event()
        reason: list[str] = []

        def on_token(t, r, _lp):
            if t is not None:
                out.append(t)
            if r is not None:
                reason.append(r)
                done.set()

        self.submit(prompt, sampling, on_token, stop_token_ids)
        done.wait()
        return out, reason[0]

    @property
    def active(self) -> int:
        return sum(r is not None for r in self.slots)

    # ---- the scheduler ----------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._admit(block=self.active == 0)
                if self.active:
                    self._decode_step()
            except Exception:  # keep serving: fail the requests in flight, not the process
                log.exception("engine step failed")
                for i, r in enumerate(self.slots):
                    if r is not None:
                        self._finish(i, "error")

    def _admit(self, block: bool) -> None:
        for i in range(len(self.slots)):
            if self.slots[i] is not None:
                continue
            try:
                req = self.waiting.get(timeout=0.05) if block else self.waiting.get_nowait()
            except queue.Empty:
                return
            block = False
            if req.cancelled:
                self._call(req, None, "cancelled")
                continue
            self.slots[i] = req
            try:
                self._prefill(i, req)
            except Exception:  # this request only
                log.exception("prefill of request %d failed", req.id)
                if self.slots[i] is req:
                    self._finish(i, "error")

    @torch.inference_mode()
    def _prefill(self, slot: int, req: Request) -> None:
        n = len(req.prompt)
        dev = self.cache.k.device
        pre = KVCache(
            self.model.config, 1, n, torch.zeros(1, dtype=torch.long), self.cache.k.dtype, dev
        )
        ids = torch.tensor(req.prompt, dtype=torch.long, device=dev)
        k = req.logprobs or 0
        scored: list[Logprobs | None] = [None]
        for s in range(0, n, PREFILL_CHUNK):
            e = min(s + PREFILL_CHUNK, n)
            keep = 0 if req.echo else 1
            logits = self.model(ids[None, s:e], cache=pre, logits_to_keep=keep)[0]
            self.forward_passes += 1
            if req.echo:  # position t predicts prompt token t + 1
                targets = ids[s + 1 : e + 1]
                scored += position_logprobs(logits[: len(targets)], targets, k)
        self.metrics.prompt_tokens.inc(n)
        if req.echo:
            req.prompt_logprobs = scored
        if req.max_new_tokens == 0:
            self._finish(slot, "length")
            return
        self.cache.load(slot, pre, n)
        self._emit_rows([slot], logits[-1:])

    @torch.inference_mode()
    def _decode_step(self) -> None:
        for i, r in enumerate(self.slots):
            if r is not None and r.cancelled:
                self._finish(i, "cancelled")
        rows = [i for i, r in enumerate(self.slots) if r is not None]
        if not rows:
            return
        try:
            self._step(rows)
        except Exception:  # find the row that fails: retry each alone (rewriting a cache
            log.exception("decode step failed; retrying its %d rows one by one", len(rows))
            for i in rows:  # position that a failed step wrote is harmless)
                try:
                    self._step([i])
                except Exception:
                    log.exception("request %d failed", self.slots[i].id)
                    self._finish(i, "error")

    def _step(self, rows: list[int]) -> None:
        self.cache.rows = torch.tensor(rows, device=self.cache.k.device)
        ids = self.next_token[rows].to(self.cache.k.device)
        logits = decode_step(self.model, self.weights, ids, self.cache)
        self.forward_passes += 1
        self._emit_rows(rows, logits)

    def _emit_rows(self, rows: list[int], logits_BV: torch.Tensor) -> None:
        """Sample each row with its own settings (greedy rows: the top of one `logit_top`), the
        log-probs of the rows that asked from the same call, hand the tokens over."""
        reqs = [self.slots[i] for i in rows]
        asked = [j for j, r in enumerate(reqs) if r.logprobs is not None]
        k = max((reqs[j].logprobs for j in asked), default=0)
        top = logit_top(logits_BV, max(k, 1), lse=bool(asked))  # greedy tokens: top[:, 0]
        toks = top.indices[:, 0].clone()
        for j, r in enumerate(reqs):
            if r.sampling.temperature > 0:
                toks[j] = sample(logits_BV[j : j + 1], r.sampling, r.generator)[0]
        lps: list[Logprobs | None] = [None] * len(rows)
        if asked:  # every row's: selecting the asked rows' logits would copy them (B x V)
            every = position_logprobs(logits_BV, toks, k, top)
            for j in asked:
                lp, n = every[j], reqs[j].logprobs
                lps[j] = lp if n == k else Logprobs(lp.token, lp.logprob, lp.top[:n])
        for i, tok, lp in zip(rows, toks.tolist(), lps):
            self._emit(i, tok, lp)

    def _emit(self, slot: int, tok: int, lp: Logprobs | None) -> None:
        req = self.slots[slot]
        if tok in req.stop_token_ids:
            self._finish(slot, "stop")
            return
        now = time.perf_counter()
        m = self.metrics
        if req.generated == 0:
            m.ttft.observe(now - req.submitted)
        else:
            m.tpot.observe(now - req.last_token_at)
        req.generated, req.last_token_at = req.generated + 1, now
        self.tokens_generated += 1
        m.generation_tokens.inc()
        self._call(req, tok, None, lp)
        if req.generated >= req.max_new_tokens:
            self._finish(slot, "length")
        elif int(self.cache.pos[slot]) >= self.max_len:  # no room for the next token
            self._finish(slot, "length")
        else:
            self.next_token[slot] = tok

    def _finish(self, slot: int, reason: str) -> None:
        req = self.slots[slot]
        self.slots[slot] = None
        self.requests_done += 1
        self.metrics.requests.inc(value=reason)
        self.metrics.e2e.observe(time.perf_counter() - req.submitted)
        self._call(req, None, reason)

    def _call(self, req: Request, tok: int | None, reason: str | None, lp=None) -> None:
        """Hand an event to the request's callback; one that raises cancels its own request."""
        try:
            req.on_token(tok, reason, lp)
        except Exception:
            log.exception("callback of request %d failed; cancelling it", req.id)
            req.cancelled = True
