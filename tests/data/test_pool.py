"""Tests for olmo2/data/pool.py: order, bounded lookahead, initializer, errors, and workers
that die with their parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

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


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state, ppid, ...); None once gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else fields  # a zombie has exited


def _children(pid: int) -> set[int]:
    procs = (int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit())
    return {c for c in procs if (st := _stat(c)) is not None and int(st[1]) == pid}


def _cpu_s(pid: int) -> float:
    st = _stat(pid)
    return (int(st[11]) + int(st[12])) / os.sysconf("SC_CLK_TCK") if st else 0.0


def kill_and_check_workers_die(proc: subprocess.Popen, workers: set[int]) -> None:
    """SIGKILL `proc` alone (as the OOM killer would) and check its `workers` are gone
    within 2 s."""
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 2
    while any(_stat(w) for w in workers) and time.time() < deadline:
        time.sleep(0.02)
    assert not [w for w in workers if _stat(w)], "workers outlived their parent"


ORPHAN_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from olmo2.data import pool

    pool._HAS_PDEATHSIG = sys.argv[1] == "prctl"  # else the portable getppid() watcher

    def nap(x):
        os.write(1, f"{os.getpid()}\\n".encode())  # one write: lines do not interleave
        time.sleep(60)

    for _ in pool.ordered_map(nap, range(2), 2):
        pass
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("how", ["prctl", "poll"])
def test_workers_die_with_their_parent(how):
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-c", ORPHAN_SCRIPT, how],
        cwd=repo,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    workers: set[int] = set()
    try:
        workers = {int(proc.stdout.readline()) for _ in range(2)}
        assert workers == _children(proc.pid)
        kill_and_check_workers_die(proc, workers)
    finally:
        for w in workers:  # (they sleep for a minute if the test fails)
            if _stat(w):
                os.kill(w, signal.SIGKILL)
        proc.stdout.close()
