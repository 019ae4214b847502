"""Stage `cluster` (one task): union-find over every duplicate pair, into removal lists.

All edges of all partitions form a graph whose connected components are the duplicate clusters
(datatrove's `MinhashDedupCluster`, stage 3, one task as there). Unlike datatrove, whose kept
document is the union-find root (union by size), the kept document of a cluster is its first in
(input file, line) order, the smallest ordinal: so the result does not depend on how the pairs
were found or partitioned, and it is what a streaming first-occurrence-wins pass keeps for
chains of exact duplicates. Every other member is removed, with the reason of its most specific
pair (url, then exact, then minhash). Memory: the documents that appear in some pair (the
duplicates, not the corpus).

Components are found with vectorised min-label propagation and pointer jumping (Shiloach and
Vishkin 1982): each node's label is the smallest node it has been connected to, and labels are
followed to their own labels until nothing changes.
"""

from __future__ import annotations

import numpy as np

from olmo2.data import records as R
from olmo2.data.stages.job import Job

REMOVAL = [("pos", "<u4"), ("kind", "u1")]
"""A removed document (its position in the shard) and why (`records.KINDS`)."""


def components(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(nodes, smallest node of each node's component, inverse of the edge ends) for edges
    a[i]-b[i]; nodes are sorted."""
    nodes, inv = np.unique(np.concatenate([a, b]), return_inverse=True)
    ia, ib = inv[: len(a)], inv[len(a) :]
    label = np.arange(len(nodes))
    while True:
        low = np.minimum(label[ia], label[ib])
        new = label.copy()
        np.minimum.at(new, ia, low)
        np.minimum.at(new, ib, low)
        new = new[new]
        if np.array_equal(new, label):
            return nodes, nodes[label], inv
        label = new


def cluster(job: Job, _spec: int) -> dict:
    edges = np.concatenate([R.read_records(job.edges(p), R.EDGE) for p in range(job.partitions)])
    nodes, root, inv = components(edges["a"], edges["b"])
    kind = np.full(len(nodes), len(R.KINDS), dtype=np.uint8)
    ends = np.concatenate([edges["kind"], edges["kind"]])
    np.minimum.at(kind, inv, ends)
    removed = nodes != root
    shard, pos = R.split_ordinal(nodes[removed])  # sorted: nodes are
    kinds = kind[removed]
    bounds = np.searchsorted(shard, np.arange(len(job.shards) + 1, dtype=np.uint64))
    for s in range(len(job.shards)):
        mine = slice(bounds[s], bounds[s + 1])
        out = np.zeros(bounds[s + 1] - bounds[s], dtype=REMOVAL)
        out["pos"], out["kind"] = pos[mine], kinds[mine]
        path = job.removals(s)
        R.write_records(path, out)
    counts = np.bincount(kinds, minlength=len(R.KINDS))
    return {
        "duplicates": {k: int(n) for k, n in zip(R.KINDS, counts) if n},
        "clusters": int(len(np.unique(root[removed]))),
    }


def removals(job: Job, shard: int) -> np.ndarray:
    """The shard's removed documents (empty when no document-level dedup ran)."""
    if not job.doc_dedup_on:
        return np.zeros(0, dtype=REMOVAL)
    return R.read_records(job.removals(shard), REMOVAL)
