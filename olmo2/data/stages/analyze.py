"""Stage `analyze` (one task per shard): filters, contamination, and the dedup records.

For every document of the shard it applies the filters (`filters.py`) and, to those that pass,
the contamination check (`decontam.py`); a document that survives both is *eligible* for dedup
and contributes its records (datatrove's `MinhashDedupSignature`, stage 1):

- `url`/`exact`: a 128-bit key of its URL (or explicit id) and of its normalised text;
- `band`: one 64-bit key per LSH band of its MinHash signature (no shingles: no bands);
- `paragraph`: a key per paragraph long enough to count, with the paragraph's position;
- its signature, as row `position` of the shard's signature file (all-ones when none).

Records are hash-partitioned (`k0 % partitions`) into one sorted file per (category, partition).
The per-document verdicts (the filter reason, the contaminated eval tasks) go to a small JSON
file for the emit stage. The task returns counts only.
"""

from __future__ import annotations

import collections
import json
import re

import numpy as np

from olmo2.data import fs
from olmo2.data import records as R
from olmo2.data.dedup import (
    MinHasher,
    band_keys,
    key128,
    paragraph_keys,
    shingle_text,
    text_key,
)
from olmo2.data.documents import Document, ReadStats
from olmo2.data.filters import FilterPipeline
from olmo2.data.shards import Shard, read_shard
from olmo2.data.stages.job import Job
from olmo2.utils import write_text_atomic

SIG_BATCH = 256
"""Documents whose signatures are computed in one vectorised call."""


def id_key(doc: Document, path: str) -> str | None:
    """The URL, or an explicit id, for URL/id dedup (ids made up from file:line never repeat)."""
    url = doc.metadata.get("url")
    if isinstance(url, str) and url:
        return "url:" + url
    if re.fullmatch(re.escape(fs.name(fs.location(path))) + r"(:\d+)?", doc.id):
        return None
    return "id:" + doc.id


class _Records:
    """The dedup records of one shard, collected in memory (bounded by the shard)."""

    def __init__(self, job: Job, shard: Shard):
        self.job, self.shard, self.cfg = job, shard, job.cfg.dedup
        self.rows: dict[str, list] = {c: [] for c in ("url", "exact", "paragraph")}
        self.hasher = MinHasher(self.cfg.num_perm, self.cfg.seed) if self.cfg.minhash else None
        self.pending: list[tuple[int, np.ndarray]] = []  # (position, shingles)
        self.sigs: list[tuple[int, np.ndarray]] = []
        self.bands: list[np.ndarray] = []

    def add(self, pos: int, doc: Document) -> None:
        c, doc_id = self.cfg, int(R.ordinal(self.shard.index, pos))
        if c.by_url and (key := id_key(doc, self.shard.path)) is not None:
            self.rows["url"].append((*key128(key.encode("utf-8", "surrogatepass")), doc_id))
        if c.exact:
            self.rows["exact"].append((*text_key(doc.text), doc_id))
        if c.paragraph:
            for k0, k1, i in paragraph_keys(doc.text, c.min_paragraph_chars):
                self.rows["paragraph"].append((k0, k1, doc_id, i))
        if self.hasher is not None:
            self.pending.append((pos, shingle_text(doc.text, c.minhash_ngram)))
            if len(self.pending) >= SIG_BATCH:
                self._sign()

    def _sign(self) -> None:
        if not self.pending:
            return
        sigs = self.hasher.signatures([s for _, s in self.pending])
        pos = np.array([p for p, _ in self.pending], dtype=np.uint64)
        self.sigs.extend(zip(pos.tolist(), sigs))
        has = sigs[:, 0] != MinHasher.EMPTY  # no shingles: no bands, never a candidate
        keys = band_keys(sigs[has], self.job.bands, self.job.rows)
        docs = np.repeat(R.ordinal(self.shard.index, pos[has]), self.job.bands)
        rec = np.zeros(len(docs), dtype=R.KEY)
        rec["k0"], rec["doc"] = keys.reshape(-1), docs
        self.bands.append(rec)
        self.pending = []

    def write(self, n_docs: int) -> None:
        job, s, parts = self.job, self.shard.index, self.job.partitions
        self._sign()
        arrays = {
            "url": np.array(self.rows["url"], dtype=R.KEY),
            "exact": np.array(self.rows["exact"], dtype=R.KEY),
            "paragraph": np.array(self.rows["paragraph"], dtype=R.PARAGRAPH),
            "band": np.concatenate(self.bands) if self.bands else np.zeros(0, R.KEY),
        }
        for cat, rec in arrays.items():
            order = list(rec.dtype.names)
            where = rec["k0"] % np.uint64(parts)
            for p in range(parts):
                path = job.records(cat, s, p)
                R.write_records(path, rec[where == p], order)
        if self.hasher is not None:
            table = np.full((n_docs, self.cfg.num_perm), MinHasher.EMPTY, dtype=np.uint32)
            for pos, sig in self.sigs:
                table[pos] = sig
            R.write_records(job.signatures(s), table)


def analyze_shard(job: Job, shard: Shard) -> dict:
    cfg = job.cfg
    filters = FilterPipeline(cfg.filters)  # (the language model is loaded once per process)
    stats = ReadStats()
    dedup = _Records(job, shard) if job.dedup_on else None
    filtered: collections.Counter = collections.Counter()
    contaminated: collections.Counter = collections.Counter()
    verdicts: dict[str, dict] = {"filtered": {}, "contaminated": {}}
    n = eligible = 0
    docs = read_shard(
        shard,
        text_field=cfg.text_field,
        separator=cfg.separator,
        skip_bad_lines=cfg.skip_bad_lines,
        stats=stats,
    )
    for pos, doc in enumerate(docs):
        n += 1
        reason = filters(doc)
        if reason is not None:
            filtered[reason] += 1
            verdicts["filtered"][str(pos)] = reason
            continue
        tasks = job.index.matches(doc.text) if job.index is not None else []
        if tasks:
            contaminated.update(tasks)
            verdicts["contaminated"][str(pos)] = tasks
            if cfg.decontam.mode == "drop":
                continue
        eligible += 1
        if dedup is not None:
            dedup.add(pos, doc)
    if dedup is not None:
        dedup.write(n)
    path = job.verdicts(shard.index)
    write_text_atomic(path, json.dumps({"documents": n, **verdicts}))
    return {
        "documents_in": n,
        "bytes_in": stats.bytes,
        "bad_lines": stats.bad_lines,
        "damaged_files": stats.damaged_files,
        "filtered": dict(filtered),
        "contaminated": dict(contaminated),
        "contaminated_docs": len(verdicts["contaminated"]),
        "eligible": eligible,
    }
