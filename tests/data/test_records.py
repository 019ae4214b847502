"""Tests for olmo2/data/records.py: the streaming merge of sorted record files."""

from __future__ import annotations

import numpy as np

from olmo2.data import records as R


def _random_records(rng, n: int, keys: int) -> np.ndarray:
    rec = np.zeros(n, dtype=R.KEY)
    rec["k0"] = rng.integers(0, keys, n)
    rec["k1"] = rec["k0"] * 7  # (k0 decides the group, as for real 64-bit hashes)
    rec["doc"] = rng.integers(0, 1 << 40, n)
    return rec


def test_merged_groups_equal_a_full_sort_and_never_split_a_group(tmp_path):
    rng = np.random.default_rng(0)
    paths, every = [], []
    for k in range(7):
        rec = _random_records(rng, int(rng.integers(0, 3000)), keys=400)
        rec[: len(rec) // 3]["k0"] = 5  # a big group, larger than a block, in every file
        paths.append(tmp_path / f"{k}.rec")
        R.write_records(paths[-1], rec, ["k0", "k1", "doc"])
        every.append(rec)
    order = ["k0", "k1", "doc"]
    blocks = list(R.merged_groups(paths, R.KEY, order, budget_bytes=7 * 256 * 24))
    assert len(blocks) > 10  # it did stream
    merged = np.concatenate(blocks)
    assert np.array_equal(merged, np.sort(np.concatenate(every), order=order))
    for a, b in zip(blocks, blocks[1:]):
        assert a["k0"][-1] < b["k0"][0]  # a group never spans two blocks


def test_group_starts_and_ordinals():
    rec = np.zeros(5, dtype=R.KEY)
    rec["k0"] = [1, 1, 2, 3, 3]
    assert R.group_starts(rec).tolist() == [0, 0, 2, 3, 3]
    doc = R.ordinal(3, np.array([0, 7]))
    shard, pos = R.split_ordinal(doc)
    assert shard.tolist() == [3, 3] and pos.tolist() == [0, 7]
    assert R.ordinal(2, 2**32 - 1) < R.ordinal(3, 0)  # (file, line) order
