"""Stages `prune` (per shard) and `paragraphs` (per hash partition): duplicate paragraphs.

A paragraph (blank-line separated, at least `min_paragraph_chars` long) is removed from a kept
document when an equal paragraph (after `dedup.normalize_text`) occurs earlier in (file, line,
paragraph) order in a kept document; the first occurrence stays. So paragraphs are compared only
after the document-level decisions: `prune` drops the records of documents that are filtered,
contaminated or removed as duplicates (each task reads only its own shard's removal list), then
each `paragraphs` task merges its partition's pruned files (`records.merged_groups`) and writes,
per shard, the (document, paragraph) pairs to cut.
"""

from __future__ import annotations

import numpy as np

from olmo2.data import records as R
from olmo2.data.stages.cluster import removals
from olmo2.data.stages.job import Job

DROP = [("pos", "<u4"), ("para", "<u4")]
"""A paragraph to cut: the document's position in its shard and the paragraph's index."""


def prune_shard(job: Job, shard: int) -> dict:
    removed = removals(job, shard)["pos"]
    kept = 0
    for p in range(job.partitions):
        rec = R.read_records(job.records("paragraph", shard, p), R.PARAGRAPH)
        _, pos = R.split_ordinal(rec["doc"])
        rec = rec[~np.isin(pos, removed)]
        path = job.kept_paragraphs(shard, p)
        R.write_records(path, rec)  # still sorted
        kept += len(rec)
    return {"paragraphs": kept}


def paragraph_partition(job: Job, partition: int) -> dict:
    shards = range(len(job.shards))
    paths = [job.kept_paragraphs(s, partition) for s in shards]
    drops = []
    for block in R.merged_groups(paths, R.PARAGRAPH, ["k0", "k1", "doc", "para"]):
        first = R.group_starts(block)
        drops.append(block[first != np.arange(len(block))])
    cut = np.concatenate(drops) if drops else np.zeros(0, R.PARAGRAPH)
    cut = np.sort(cut, order=["doc", "para"])
    shard, pos = R.split_ordinal(cut["doc"])
    bounds = np.searchsorted(shard, np.arange(len(job.shards) + 1, dtype=np.uint64))
    for s in shards:
        sl = slice(bounds[s], bounds[s + 1])
        out = np.zeros(bounds[s + 1] - bounds[s], dtype=DROP)
        out["pos"], out["para"] = pos[sl], cut["para"][sl]
        path = job.paragraph_drops(s, partition)
        R.write_records(path, out)
    return {"paragraphs_removed": int(len(cut))}
