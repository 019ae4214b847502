"""Tests for olmo2/data/dedup.py: MinHash accuracy, LSH parameters, streaming decisions."""

from __future__ import annotations

import random

import numpy as np
import pytest
from datasketch.lsh import _optimal_param

from olmo2.data.dedup import (
    DedupConfig,
    Deduplicator,
    MinHasher,
    lsh_params,
    normalize_text,
    remove_paragraphs,
    shingle_hashes,
    split_paragraphs,
)


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


def _dedup_all(cfg: DedupConfig, texts: list[str], keys=None) -> list[str | None]:
    d = Deduplicator(cfg)
    keys = keys or [None] * len(texts)
    return [d.check(i, d.features(t, k)) for i, (t, k) in enumerate(zip(texts, keys))]


def test_exact_duplicates_after_normalisation():
    rng = random.Random(2)
    a, b = _text(rng), _text(rng)
    texts = [a, b, a.upper(), "  " + a.replace(" ", "\n  "), b + " extra"]
    cfg = DedupConfig(minhash=False)
    assert _dedup_all(cfg, texts) == [None, None, "exact", "exact", None]
    assert normalize_text(" A \n b ") == "a b"


def test_url_dedup():
    cfg = DedupConfig(minhash=False)
    assert _dedup_all(cfg, ["one", "two", "three"], ["url:x", "url:y", "url:x"]) == [
        None,
        None,
        "url",
    ]


def test_near_duplicates_found_and_distinct_docs_kept():
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
    result = _dedup_all(DedupConfig(exact=False), texts + near + far)
    assert result == [None] * 30 + ["minhash"] * 10 + [None] * 5


def test_minhash_threshold_respected():
    """Pairs well below the threshold are not merged even if they share LSH buckets."""
    rng = random.Random(4)
    base = _words(rng, 400)
    half = base[:200] + _words(rng, 200)  # Jaccard ~ 1/3
    cfg = DedupConfig(exact=False, threshold=0.2, bands=64)  # 2 rows: surely candidates
    assert _dedup_all(cfg, [" ".join(base), " ".join(half)]) == [None, "minhash"]
    cfg = DedupConfig(exact=False, threshold=0.5, bands=64)
    assert _dedup_all(cfg, [" ".join(base), " ".join(half)]) == [None, None]
    with pytest.raises(ValueError, match="bands"):
        Deduplicator(DedupConfig(bands=500))


def test_paragraph_dedup():
    p1, p2, p3 = ("first paragraph is long enough", "second paragraph is long enough", "THE END")
    cfg = DedupConfig(exact=False, minhash=False, paragraph=True)
    d = Deduplicator(cfg)
    doc1 = f"{p1}\n\n{p3}"
    doc2 = f"{p2}\n\n{p1.upper()}\n \n{p3}"
    assert d.duplicate_paragraphs(d.features(doc1)) == []
    drops = d.duplicate_paragraphs(d.features(doc2))
    assert drops == [1]  # p1 seen before (case-insensitive); "THE END" too short to count
    assert remove_paragraphs(doc2, drops) == f"{p2}\n \n{p3}"
    assert split_paragraphs("a\n\nb\n  \nc") == ["a", "b", "c"]
    assert remove_paragraphs("a\n\nb\n\nc", [0]) == "b\n\nc"
