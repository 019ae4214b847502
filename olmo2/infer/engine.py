"""Continuous batching: many requests share one decoding batch; new ones join between steps.

`olmo2.infer.generate.stream` decodes a fixed batch to the end. A server wants more: requests
arrive at any time and finish at different lengths. The engine keeps `max_batch` cache *slots*
(one row of keys/values each, `max_len` positions long). A scheduler thread loops:

1. admit queued requests into free slots: prefill each prompt alone through the model's
   forward with a one-row `KVCache`, copy its keys/values into the slot, sample the first
   token;
2. run one decode step over every active slot together (`olmo2.infer.cache.SlotCache` gives
   each row its own position, so rows of different lengths share the step with no padding);
3. sample each row with its own settings, hand tokens to the request, free finished slots.

This is the scheme of Orca (Yu et al., OSDI 2022, "iteration-level scheduling") without paged
memory. `forward_passes` counts model calls so tests can show that concurrent requests share
steps. Requests are cancelled (slot freed at the next step) when a client goes away.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from olmo2.infer.cache import KVCache, SlotCache
from olmo2.infer.decode import decode_step, decode_weights
from olmo2.infer.generate import SamplingConfig, sample
from olmo2.model.transformer import Olmo2

log = logging.getLogger(__name__)


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
class Request:
    """One generation. `on_token(token, finish_reason)` is called from the engine thread for
    each new token (finish_reason None) and once more at the end with token None and the
    reason: "stop" (a stop token, not passed to on_token), "length", "cancelled" or "error"."""

    prompt: list[int]
    sampling: SamplingConfig
    on_token: Callable[[int | None, str | None], None]
    stop_token_ids: frozenset[int] = frozenset()
    id: int = 0
    cancelled: bool = False
    generated: int = 0
    generator: torch.Generator | None = field(default=None, repr=False)


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
            self.waiting.get_nowait().on_token(None, "cancelled")

    def submit(
        self,
        prompt: Sequence[int],
        sampling: SamplingConfig,
        on_token: Callable[[int | None, str | None], None],
        stop_token_ids: Sequence[int] = (),
    ) -> Request:
        if not prompt:
            raise ValueError("the prompt needs at least one token")
        if len(prompt) + sampling.max_new_tokens > self.max_len:
            raise ValueError(
                f"prompt ({len(prompt)} tokens) + max_new_tokens ({sampling.max_new_tokens}) "
                f"exceeds the context length {self.max_len}"
            )
        if self.waiting.qsize() >= self.config.max_queue:
            raise QueueFullError(f"{self.waiting.qsize()} requests already waiting")
        if self._stop.is_set():
            raise QueueFullError("the engine is shutting down")
        gen = None
        if sampling.seed is not None:
            gen = torch.Generator(device=self.cache.k.device).manual_seed(sampling.seed)
        req = Request(list(prompt), sampling, on_token, frozenset(stop_token_ids))
        req.id, req.generator = next(self._ids), gen
        self.waiting.put(req)
        return req

    def cancel(self, req: Request) -> None:
        req.cancelled = True  # read by the engine thread before the next step

    def generate(self, prompt: Sequence[int], sampling: SamplingConfig, stop_token_ids=()):
        """Blocking convenience: (tokens, finish_reason)."""
        out: list[int] = []
        done = threading.Event()
        reason: list[str] = []

        def on_token(t, r):
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
                req.on_token(None, "cancelled")
                continue
            self.slots[i] = req
            self._prefill(i, req)

    @torch.no_grad()
    def _prefill(self, slot: int, req: Request) -> None:
        n = len(req.prompt)
        dev = self.cache.k.device
        no_pad = torch.zeros(1, dtype=torch.long)
        pre = KVCache(self.model.config, 1, n, no_pad, self.cache.k.dtype, dev)
        ids = torch.tensor([req.prompt], dtype=torch.long, device=dev)
        logits = self.model(ids, cache=pre, logits_to_keep=1)[:, -1]
        self.forward_passes += 1
        self.cache.load(slot, pre, n)
        self._emit(slot, int(sample(logits, req.sampling, req.generator)[0]))

    @torch.no_grad()
    def _decode_step(self) -> None:
        for i, r in enumerate(self.slots):
            if r is not None and r.cancelled:
                self._finish(i, "cancelled")
        rows = [i for i, r in enumerate(self.slots) if r is not None]
        if not rows:
            return
        self.cache.rows = torch.tensor(rows, device=self.cache.k.device)
        ids = self.next_token[rows].to(self.cache.k.device)
        logits = decode_step(self.model, self.weights, ids, self.cache)
        self.forward_passes += 1
        greedy = logits.argmax(-1).tolist()
        for j, i in enumerate(rows):
            req = self.slots[i]
            if req.sampling.temperature == 0:
                tok = greedy[j]
            else:
                tok = int(sample(logits[j : j + 1], req.sampling, req.generator)[0])
            self._emit(i, tok)

    def _emit(self, slot: int, tok: int) -> None:
        req = self.slots[slot]
        if tok in req.stop_token_ids:
            self._finish(slot, "stop")
            return
        req.generated += 1
        self.tokens_generated += 1
        req.on_token(tok, None)
        if req.generated >= req.sampling.max_new_tokens:
            self._finish(slot, "length")
        elif int(self.cache.pos[slot]) >= self.max_len:  # no room for the next token
            self._finish(slot, "length")
        else:
            self.next_token[slot] = tok

    def _finish(self, slot: int, reason: str) -> None:
        req = self.slots[slot]
        self.slots[slot] = None
        self.requests_done += 1
        req.on_token(None, reason)
