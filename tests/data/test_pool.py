"""Tests for olmo2/data/pool.py: order, bounded lookahead, initializer, errors."""

from __future__ import annotations

import os

import pytest

from olmo2.data.pool import chunks_by_size, ordered_map

_STATE = {"offset": 0}


def _init(offset: int) -> None:
    _STATE["offset"] = offset


def _work(x: int) -> tuple[int, int]:
    if x == 13:
        raise ValueError("item 13 is unlucky")
    return x * x + _STATE["offset"], os.getpid()


@pytest.mark.parametrize("workers", [1, 3])
def test_ordered_streaming_and_initializer(workers):
    pulled = []

    def items():
        for i in range(12):
            pulled.append(i)
            yield i

    out = []
    for item, (value, pid) in ordered_map(
        _work, items(), workers, initializer=_init, initargs=(5,)
    ):
        # Streaming: never more than `lookahead` (2) items per worker read ahead of the output.
        assert len(pulled) - len(out) <= 2 * workers
        out.append((item, value, pid))
    assert [(i, v) for i, v, _ in out] == [(i, i * i + 5) for i in range(12)]
    pids = {pid for _, _, pid in out}
    assert (pids == {os.getpid()}) == (workers == 1)


def test_send_and_worker_errors():
    got = list(ordered_map(_work, ["a", "bb"], 2, send=len, initializer=_init, initargs=(0,)))
    assert [(item, v) for item, (v, _) in got] == [("a", 1), ("bb", 4)]
    with pytest.raises(ValueError, match="unlucky"):
        list(ordered_map(_work, range(20), 2))


def test_chunks_by_size():
    assert list(chunks_by_size(["ab", "c", "defg", "h"], 3, len)) == [["ab", "c"], ["defg"], ["h"]]
    assert list(chunks_by_size([], 3, len)) == []
