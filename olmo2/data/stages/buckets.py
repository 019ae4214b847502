"""Stage `buckets` (one task per hash partition): duplicate pairs from the sorted records.

The task merges its partition's record files from every shard (`records.merged_groups`, a
streaming k-way merge) and, in each group of equal keys (an exact-text hash, a URL/id, or an LSH
bucket: one band's key), pairs the group's first document in (file, line) order with each other
member (datatrove's `MinhashDedupBuckets` pairs consecutive equal signatures instead; a star on
the first member keeps the pairs linear in the group size and the earliest copy in every pair).

LSH pairs are candidates: each is kept only when the two signatures agree on at least
`threshold` of their values (an unbiased Jaccard estimate; Broder 1997), read from the shards'
signature files a few rows at a time. Exact and URL/id pairs need no check. Output: one sorted,
de-duplicated edge file; the task returns counts.
"""

from __future__ import annotations

import numpy as np

from olmo2.data import records as R
from olmo2.data.stages.job import Job

VERIFY_BATCH = 4096
"""Candidate pairs whose signatures are read and compared at a time."""


def _star_pairs(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first document of the group, other member) for every non-first record."""
    first = R.group_starts(block)
    other = first != np.arange(len(block))
    return block["doc"][first[other]], block["doc"][other]


class SignatureReader:
    """Signature rows by document ordinal, read from the shards' files on demand."""

    def __init__(self, job: Job):
        self.job, self.width = job, job.cfg.dedup.num_perm

    def read(self, docs: np.ndarray) -> np.ndarray:
        out = np.empty((len(docs), self.width), dtype=np.uint32)
        shard, pos = R.split_ordinal(docs)
        row_bytes = self.width * 4
        for s in np.unique(shard):
            rows = np.flatnonzero(shard == s)
            with open(self.job.signatures(int(s)), "rb") as f:
                for r in rows:
                    f.seek(int(pos[r]) * row_bytes)
                    out[r] = np.frombuffer(f.read(row_bytes), dtype=np.uint32)
        return out


def _verified(job: Job, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mask of the candidate pairs whose signature agreement reaches the threshold."""
    reader, keep = SignatureReader(job), np.zeros(len(a), dtype=bool)
    for lo in range(0, len(a), VERIFY_BATCH):
        sl = slice(lo, lo + VERIFY_BATCH)
        docs, inv = np.unique(np.concatenate([a[sl], b[sl]]), return_inverse=True)
        sigs = reader.read(docs)
        ia, ib = inv[: len(a[sl])], inv[len(a[sl]) :]
        keep[sl] = (sigs[ia] == sigs[ib]).mean(axis=1) >= job.cfg.dedup.threshold
    return keep


def bucket_partition(job: Job, partition: int) -> dict:
    cfg = job.cfg.dedup
    shards = range(len(job.shards))
    edges, counts = [], {"candidates": 0, "edges": 0}
    kinds = [("url", cfg.by_url), ("exact", cfg.exact), ("minhash", cfg.minhash)]
    for kind, on in kinds:
        if not on:
            continue
        category = "band" if kind == "minhash" else kind
        paths = [job.records(category, s, partition) for s in shards]
        for block in R.merged_groups(paths, R.KEY, ["k0", "k1", "doc"]):
            a, b = _star_pairs(block)
            if kind == "minhash":
                # The same pair can share several bands: check it once.
                pairs = np.unique(np.stack([a, b], axis=1), axis=0)
                a, b = pairs[:, 0], pairs[:, 1]
                counts["candidates"] += len(a)
                ok = _verified(job, a, b)
                a, b = a[ok], b[ok]
            e = np.zeros(len(a), dtype=R.EDGE)
            e["a"], e["b"], e["kind"] = a, b, R.KINDS.index(kind)
            edges.append(e)
    out = np.unique(np.concatenate(edges)) if edges else np.zeros(0, R.EDGE)
    path = job.edges(partition)
    R.write_records(path, out)
    counts["edges"] = len(out)
    return counts
