"""The data pipeline's local executor: an ordered, streaming map over forked worker processes.

`ordered_map(fn, items, workers)` yields `(item, fn(item))` in input order, so output never
depends on the worker count. It streams: at most `lookahead` items per worker are in flight, so
memory stays bounded however long the input is (`multiprocessing.Pool.imap` submits tasks as
fast as it can read the input, so it reads a whole corpus ahead).

Workers are forked, not spawned: they inherit whatever the parent set up before the call (the
filters, the contamination index) instead of unpickling it. They also die with the parent: each
asks the kernel for SIGKILL when its parent exits (Linux `prctl(PR_SET_PDEATHSIG)`, prctl(2)),
elsewhere a thread polls `os.getppid()`. Without this, workers of a SIGKILLed `prepare` went on
for seconds, competing with a re-run.
"""

from __future__ import annotations

import collections
import ctypes
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_HAS_PDEATHSIG = sys.platform.startswith("linux")


def ordered_map(
    fn: Callable,
    items: Iterable,
    workers: int = 1,
    *,
    send: Callable | None = None,
    initializer: Callable | None = None,
    initargs: tuple = (),
    lookahead: int = 2,
) -> Iterator[tuple[Any, Any]]:
    """Yield `(item, fn(send(item)))` for every item, in input order.

    `send` picks what goes to the worker (default: the item), e.g. only the texts of a chunk of
    documents, so the rest is never pickled. `initializer(*initargs)` runs once in each worker;
    with `workers <= 1` everything runs in this process, and so does the initializer.
    """
    send = send or (lambda item: item)
    if workers <= 1:
        if initializer is not None:
            initializer(*initargs)
        yield from ((item, fn(send(item))) for item in items)
        return
    ctx = mp.get_context("fork")
    pool = ctx.Pool(workers, _start_worker, (os.getpid(), initializer, initargs))
    try:
        pending: collections.deque = collections.deque()
        for item in items:
            pending.append((item, pool.apply_async(fn, (send(item),))))
            if len(pending) >= lookahead * workers:
                yield _next_done(pending)
        while pending:
            yield _next_done(pending)
    finally:
        pool.terminate()
        pool.join()


def _next_done(pending: collections.deque) -> tuple[Any, Any]:
    item, result = pending.popleft()
    return item, result.get()


def chunks_by_size(items: Iterable, limit: int, size: Callable[[Any], int]) -> Iterator[list]:
    """Consecutive items grouped until their `size`s reach `limit` (work items big enough to
    amortise the pickling, small enough to keep every worker busy)."""
    chunk, total = [], 0
    for it in items:
        chunk.append(it)
        total += size(it)
        if total >= limit:
            yield chunk
            chunk, total = [], 0
    if chunk:
        yield chunk


def _start_worker(parent: int, initializer: Callable | None, initargs: tuple) -> None:
    # `Pool.terminate` ends workers with SIGTERM: take the default action, not a handler
    # inherited from the parent (Ray's driver installs one that prints a stack trace).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    die_with_parent(parent)
    if initializer is not None:
        initializer(*initargs)


def die_with_parent(parent: int) -> None:
    """Make this (forked) process exit as soon as process `parent` is gone."""
    if _HAS_PDEATHSIG:
        libc = ctypes.CDLL(None, use_errno=True)
        # (The signal comes when the forking *thread* exits: `Pool` forks from the thread that
        # creates it, which outlives the pool.)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
            if os.getppid() != parent:  # it died before the request took effect
                os._exit(1)
            return
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _watch_parent(parent: int, interval_s: float = 0.2) -> None:
    while os.getppid() == parent:
        time.sleep(interval_s)
    os._exit(1)
