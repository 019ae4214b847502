"""Sorted record files and their streaming k-way merge: how the dedup stages exchange data.

A record file is a raw array of one numpy structured dtype, sorted by its key fields, written
atomically (no header: a block is one `np.fromfile`). The hash-partitioned stages read one
partition's file from every shard through `merged_groups`, which yields the merged records in
key order, in blocks that never split a group of equal keys. Like datatrove's bucket stage
(`pipeline/dedup/minhash.py`, `MinhashDedupBuckets`, a heap merge of sorted signature files),
a reader holds a fixed budget of records spread over its inputs, plus one group at most, so its
memory does not grow with the number of shards or the size of the corpus.

Every record carries `doc`, the document's ordinal `(shard << 32) | position in the shard`:
ordinals sort in (input file, line) order, which decides which copy of a duplicate is kept.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from olmo2.utils import atomic_path

KEY = [("k0", "<u8"), ("k1", "<u8"), ("doc", "<u8")]
"""A 128-bit hash key (exact text, URL/id, paragraph; band keys use k1 = 0) and the document."""
PARAGRAPH = KEY + [("para", "<u4")]
"""A paragraph's hash, its document, and its position in the document."""
EDGE = [("a", "<u8"), ("b", "<u8"), ("kind", "u1")]
"""Document `a` (the earlier) and `b` are duplicates of the kind `KINDS[kind]`."""
KINDS = ("url", "exact", "minhash")
"""Duplicate kinds, in the order that names a removed document's reason (url first, as the
streaming dedup checked them)."""

SHARD_BITS = 32


def ordinal(shard: int, local: np.ndarray | int) -> np.ndarray | int:
    return (np.uint64(shard) << np.uint64(SHARD_BITS)) | np.asarray(local, dtype=np.uint64)


def split_ordinal(doc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(shard, position in the shard) of ordinals."""
    doc = np.asarray(doc, dtype=np.uint64)
    return doc >> np.uint64(SHARD_BITS), doc & np.uint64((1 << SHARD_BITS) - 1)


def write_records(path: Path, records: np.ndarray, order: list[str] | None = None) -> None:
    """Write `records` (sorted by `order` first, when given) atomically."""
    if order is not None and len(records):
        records = np.sort(records, order=order)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        records.tofile(tmp)


def read_records(path: Path, dtype) -> np.ndarray:
    return np.fromfile(path, dtype=np.dtype(dtype))


class _Run:
    """One sorted file, read a block at a time."""

    def __init__(self, path: Path, dtype: np.dtype, block: int):
        self.f = open(path, "rb")  # noqa: SIM115 - closed when exhausted
        self.dtype, self.block = dtype, block
        self.buf = np.empty(0, dtype)
        self.done = False

    def fill(self) -> None:
        more = np.fromfile(self.f, dtype=self.dtype, count=self.block)
        if len(more) < self.block:
            self.done = True
            self.f.close()
        self.buf = np.concatenate([self.buf, more]) if len(self.buf) else more


def merged_groups(
    paths: list[Path], dtype, order: list[str], budget_bytes: int = 8 << 20
) -> Iterator[np.ndarray]:
    """The records of sorted files, merged and sorted by `order`, in blocks that never split a
    group of records with equal `order[0]`.

    Each round cuts at the smallest last key among the inputs not yet exhausted: everything
    below it is complete in every buffer and is emitted; an input whose buffer ends at the cut
    reads its next block (a group larger than a block accumulates until it is complete).
    """
    dtype = np.dtype(dtype)
    paths = [p for p in paths if os.path.getsize(p) > 0]
    block = max(256, budget_bytes // (max(1, len(paths)) * dtype.itemsize))
    runs = [_Run(p, dtype, block) for p in paths]
    key = order[0]
    while True:
        for r in runs:
            if not len(r.buf) and not r.done:
                r.fill()
        runs = [r for r in runs if len(r.buf) or not r.done]
        if not runs:
            return
        live = [r for r in runs if not r.done]
        cut = min(r.buf[key][-1] for r in live) if live else None
        taken = []
        for r in runs:
            n = len(r.buf) if cut is None else int(np.searchsorted(r.buf[key], cut, "left"))
            if n:
                taken.append(r.buf[:n])
                r.buf = r.buf[n:]
        if taken:
            yield np.sort(np.concatenate(taken), order=order)
        else:  # every buffer holds only the cut key: read on until its group is complete
            for r in live:
                if r.buf[key][-1] == cut:
                    r.fill()


def group_starts(records: np.ndarray, fields: tuple[str, ...] = ("k0", "k1")) -> np.ndarray:
    """Index of the first record of each record's group (records sorted by `fields`)."""
    if not len(records):
        return np.empty(0, dtype=np.int64)
    new = np.zeros(len(records), dtype=bool)
    new[0] = True
    for f in fields:
        new[1:] |= records[f][1:] != records[f][:-1]
    starts = np.flatnonzero(new)
    return np.repeat(starts, np.diff(np.append(starts, len(records))))
