"""Tests for olmo2/data/dedup.py and the dedup stages (olmo2/data/stages/): MinHash accuracy,
LSH parameters, and the staged decisions (exact, URL, near-duplicate, paragraph)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from datasketch.lsh import _optimal_param

from olmo2.data import records as R
from olmo2.data.decontam import DecontamConfig
from olmo2.data.dedup import (
    DedupConfig,
    MinHasher,
    lsh_bands,
    lsh_params,
    normalize_text,
    remove_paragraphs,
    shingle_hashes,
    split_paragraphs,
)
from olmo2.data.executors import LocalExecutor, run_stage
from olmo2.data.filters import FILTER_NAMES, FilterConfig
from olmo2.data.prepare import PrepareConfig
from olmo2.data.shards import make_shards, scan_task
from olmo2.data.stages.analyze import analyze_shard
from olmo2.data.stages.buckets import bucket_partition
from olmo2.data.stages.cluster import cluster, removals
from olmo2.data.stages.job import Job
from olmo2.data.stages.paragraphs import DROP, paragraph_partition, prune_shard


def _words(rng: random.Random, n: int) -> list[str]:
    return [f"w{rng.randrange(100_000)}" for _ in range(n)]


def _text(rng: random.Random, n: int = 300) -> str:
    return " ".join(_words(rng, n))


def test_minhash_estimates_jaccard():
    """Signature agreement vs exact Jaccard of the shingle sets, over pairs of varying overlap."""
    rng = random.Random(0)
    hasher = MinHasher(num_perm=256, seed=3)
    errors = []
    for k in range(40):
        a = np.unique(np.array([rng.getrandbits(64) for _ in range(400)], dtype=np.uint64))
        keep = int(len(a) * k / 40)
        b = np.unique(
            np.concatenate(
                [
                    a[:keep],
                    np.array([rng.getrandbits(64) for _ in range(400 - keep)], dtype=np.uint64),
                ]
            )
        )
        exact = len(np.intersect1d(a, b)) / len(np.union1d(a, b))
        sig = hasher.signatures([a, b])
        errors.append(np.mean(sig[0] == sig[1]) - exact)
    errors = np.array(errors)
    # Each estimate is a mean of 256 Bernoullis: sd <= 0.5/16 = 0.031.
    assert np.abs(errors).max() < 0.12
    assert abs(errors.mean()) < 0.02  # unbiased


def test_minhash_batching_does_not_change_signatures():
    rng = random.Random(1)
    sets = [shingle_hashes([w.encode() for w in _words(rng, n)], 5) for n in (3, 50, 0, 700)]
    hasher = MinHasher(64)
    together = hasher.signatures(sets, chunk=100)
    alone = np.stack([hasher.signatures([s])[0] for s in sets])
    assert np.array_equal(together, alone)
    assert (together[2] == MinHasher.EMPTY).all()


def test_lsh_params_match_datasketch():
    for threshold, num_perm in [(0.8, 128), (0.5, 128), (0.9, 256), (0.7, 64)]:
        assert lsh_params(threshold, num_perm) == _optimal_param(threshold, num_perm, 0.5, 0.5)
    assert lsh_params(0.8, 128, 0.1, 0.9) == _optimal_param(0.8, 128, 0.1, 0.9) == (14, 9)


def _job(tmp: Path, cfg: DedupConfig, texts: list[str], urls=None, shards=1, parts=2) -> Job:
    """The dedup stages run (local executor) over `texts` cut into `shards` JSONL files."""
    urls = urls or [None] * len(texts)
    rows = [
        {"id": f"d{i}", "text": t} | ({"url": u} if u else {})
        for i, (t, u) in enumerate(zip(texts, urls))
    ]
    inputs = []
    tmp.mkdir(parents=True, exist_ok=True)
    for k, piece in enumerate(np.array_split(np.arange(len(rows)), shards)):
        p = tmp / f"s{k}.jsonl"  # contiguous pieces: file order is input order
        p.write_text("".join(json.dumps(rows[i]) + "\n" for i in piece))
        inputs.append(str(p))
    filters = FilterConfig()
    for name in FILTER_NAMES:
        getattr(filters, name).enabled = False
    pcfg = PrepareConfig(inputs, str(tmp / "out"), "unused", filters=filters, dedup=cfg)
    pcfg.decontam = DecontamConfig()
    job = Job(pcfg, str(tmp / "work"), parts, "unused")
    job.bands, job.rows = lsh_bands(cfg) if cfg.minhash else (0, 0)
    ex, work = LocalExecutor(1), Path(job.work)
    job.shards = make_shards(run_stage(ex, work, "scan", scan_task, job, inputs))
    run_stage(ex, work, "analyze", analyze_shard, job, job.shards)
    if job.doc_dedup_on:
        run_stage(ex, work, "buckets", bucket_partition, job, list(range(parts)))
        run_stage(ex, work, "cluster", cluster, job, [0])
    if cfg.paragraph:
        run_stage(ex, work, "prune", prune_shard, job, list(range(len(job.shards))))
        run_stage(ex, work, "paragraphs", paragraph_partition, job, list(range(parts)))
    return job


def _dedup_all(tmp, cfg, texts, urls=None, shards=1, parts=2) -> list[str | None]:
    """The duplicate kind of each text (None = kept), in input order."""
    job = _job(tmp, cfg, texts, urls, shards, parts)
    out: list[str | None] = [None] * len(texts)
    first = np.cumsum([0] + [len(p) for p in np.array_split(np.arange(len(texts)), shards)])
    for s in range(shards):
        for pos, kind in removals(job, s).tolist():
            out[first[s] + pos] = R.KINDS[kind]
    return out


def test_exact_duplicates_after_normalisation(tmp_path):
    rng = random.Random(2)
    a, b = _text(rng), _text(rng)
    texts = [a, b, a.upper(), "  " + a.replace(" ", "\n  "), b + " extra"]
    cfg = DedupConfig(minhash=False)
    assert _dedup_all(tmp_path, cfg, texts) == [None, None, "exact", "exact", None]
    assert normalize_text(" A \n b ") == "a b"


def test_url_dedup(tmp_path):
    cfg = DedupConfig(minhash=False)
    urls = ["https://x", "https://y", "https://x"]
    assert _dedup_all(tmp_path, cfg, ["one", "two", "three"], urls) == [None, None, "url"]


def test_near_duplicates_found_and_distinct_docs_kept(tmp_path):
    rng = random.Random(3)
    originals = [_words(rng, 300) for _ in range(30)]
    texts = [" ".join(w) for w in originals]
    near = []
    for w in originals[:10]:  # change 3 of 300 words: Jaccard of 5-shingles ~ 0.9
        w = list(w)
        for i in rng.sample(range(300), 3):
            w[i] = "changed"
        near.append(" ".join(w))
    far = []
    for w in originals[10:15]:  # change every 4th word: Jaccard ~ 0
        far.append(" ".join(x if i % 4 else "other" for i, x in enumerate(w)))
    expected = [None] * 30 + ["minhash"] * 10 + [None] * 5
    assert _dedup_all(tmp_path / "a", DedupConfig(exact=False), texts + near + far) == expected
    # Across shards and partitions the decisions are the same, the first copy kept (near[0]
    # first, in shard 0 of 3, its original in shard 0, the other near copies in shard 2).
    order = near[:1] + texts + near[1:] + far
    got = _dedup_all(tmp_path / "b", DedupConfig(exact=False), order, shards=3, parts=5)
    assert got == [None, "minhash"] + [None] * 29 + ["minhash"] * 9 + [None] * 5


def test_minhash_threshold_respected(tmp_path):
    """Pairs well below the threshold are not merged even if they share LSH buckets."""
    rng = random.Random(4)
    base = _words(rng, 400)
    half = base[:200] + _words(rng, 200)  # Jaccard ~ 1/3
    texts = [" ".join(base), " ".join(half)]
    cfg = DedupConfig(exact=False, threshold=0.2, bands=64)  # 2 rows: surely candidates
    assert _dedup_all(tmp_path / "a", cfg, texts) == [None, "minhash"]
    cfg = DedupConfig(exact=False, threshold=0.5, bands=64)
    assert _dedup_all(tmp_path, cfg, texts) == [None, None]
    with pytest.raises(ValueError, match="bands"):
        lsh_bands(DedupConfig(bands=500))


def test_chains_form_one_cluster_keeping_the_first(tmp_path):
    """a = b (url), b = c (exact text): one cluster; only a, the first, is kept."""
    rng = random.Random(5)
    t1, t2 = _text(rng), _text(rng)
    urls = ["https://u", "https://u", None, None]
    got = _dedup_all(tmp_path, DedupConfig(minhash=False), [t1, t2, t2.upper(), _text(rng)], urls)
    assert got == [None, "url", "exact", None]


def test_paragraph_dedup(tmp_path):
    p1, p2, p3 = ("first paragraph is long enough", "second paragraph is long enough", "THE END")
    cfg = DedupConfig(exact=False, minhash=False, paragraph=True)
    doc1 = f"{p1}\n\n{p3}"
    doc2 = f"{p2}\n\n{p1.upper()}\n \n{p3}"
    job = _job(tmp_path, cfg, [doc1, doc2])
    drops = [R.read_records(job.paragraph_drops(0, p), DROP) for p in range(2)]
    # p1 seen before (case-insensitive); "THE END" too short to count
    assert sorted(np.concatenate(drops).tolist()) == [(1, 1)]
    assert remove_paragraphs(doc2, [1]) == f"{p2}\n \n{p3}"
    assert split_paragraphs("a\n\nb\n  \nc") == ["a", "b", "c"]
    assert remove_paragraphs("a\n\nb\n\nc", [0]) == "b\n\nc"
