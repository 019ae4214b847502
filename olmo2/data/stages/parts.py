"""Stage `parts` (one task per output part): the shards' token streams cut into the token files.

`plan_parts` (in the driver, one shard's lengths in memory at a time) applies the rule of
`tokenize.tokenize_documents` to the concatenated stream: a part is closed before a document
would push it past `max_part_tokens`, and a longer document gets a part of its own. So the parts
are those of a single sequential run, whatever the shards, executor or task count. Each task
copies its documents' tokens and index rows from the shards' files into
`part-NNNNN.npy` / `.csv.gz` (atomically) and returns the part's counts and SHA-256.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator

import numpy as np

from olmo2.data import fs
from olmo2.data.stages.job import Job
from olmo2.data.tokenize import write_part


def plan_parts(lengths: Iterator[np.ndarray], max_tokens: int) -> list[list[tuple]]:
    """Parts as lists of segments (shard, first doc, end doc, first token, end token)."""
    parts: list[list[tuple]] = []
    current: list[tuple] = []
    size = 0
    for s, lens in enumerate(lengths):
        cum = np.concatenate([[0], np.cumsum(lens)])
        d = 0
        while d < len(lens):
            if size and size + lens[d] > max_tokens:
                parts.append(current)
                current, size = [], 0
            e = int(np.searchsorted(cum, cum[d] + max_tokens - size, "right")) - 1
            e = max(e, d + 1)  # a document longer than the cap: a part of its own
            current.append((s, d, e, int(cum[d]), int(cum[e])))
            size += int(cum[e] - cum[d])
            d = e
    if current or not parts:
        parts.append(current)
    return parts


def shard_lengths(job: Job) -> Iterator[np.ndarray]:
    for s in range(len(job.shards)):
        yield np.fromfile(job.shard_tokens(s, "lens"), dtype=np.int64)


def _rows(job: Job, s: int, lo: int, hi: int) -> list[list[str]]:
    with open(job.shard_tokens(s, "rows.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in itertools.islice(f, lo, hi)]


def write_part_task(job: Job, spec: tuple[int, list[tuple]]) -> dict:
    k, segments = spec
    dtype = np.dtype(job.extra["dtype"])
    arrays, rows, offset = [], [], 0
    for s, d0, d1, t0, t1 in segments:
        tokens = np.fromfile(
            job.shard_tokens(s, "tok"), dtype=dtype, count=t1 - t0, offset=t0 * dtype.itemsize
        )
        lens = np.fromfile(
            job.shard_tokens(s, "lens"), dtype=np.int64, count=d1 - d0, offset=d0 * 8
        )
        ends = offset + np.cumsum(lens)
        for (doc_id, source), start, end in zip(_rows(job, s, d0, d1), ends - lens, ends):
            rows.append((int(start), int(end), doc_id, source))
        arrays.append(tokens)
        offset += t1 - t0
    tokens = np.concatenate(arrays) if arrays else np.zeros(0, dtype)
    return write_part(fs.location(job.cfg.output), k, tokens, rows, job.staging)
