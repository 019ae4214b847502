"""Tests for olmo2/data/stages: union-find clusters and the part plan."""

from __future__ import annotations

import random

import numpy as np

from olmo2.data.stages.cluster import components
from olmo2.data.stages.parts import plan_parts


def _union_find_roots(edges: list[tuple[int, int]]) -> dict[int, int]:
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {x: find(x) for x in parent}


def test_components_match_union_find_with_the_smallest_node_as_root():
    rng = random.Random(0)
    for trial in range(20):
        n = rng.randrange(2, 300)
        edges = [(rng.randrange(n) * 17, rng.randrange(n) * 17) for _ in range(rng.randrange(1, n))]
        if trial == 0:  # a long path, the worst case for label propagation
            edges = [(i * 17, (i + 1) * 17) for i in range(n)][::-1]
        a = np.array([e[0] for e in edges], dtype=np.uint64)
        b = np.array([e[1] for e in edges], dtype=np.uint64)
        nodes, root, _ = components(a, b)
        assert dict(zip(nodes.tolist(), root.tolist())) == _union_find_roots(edges)


def _sequential_parts(lengths: list[int], cap: int) -> list[list[int]]:
    """The rule of tokenize.tokenize_documents, one document at a time."""
    parts, cur, size = [], [], 0
    for i, n in enumerate(lengths):
        if size and size + n > cap:
            parts.append(cur)
            cur, size = [], 0
        cur.append(i)
        size += n
    return parts + [cur] if cur or not parts else parts


def test_plan_parts_equals_the_sequential_rule_across_shards():
    rng = random.Random(1)
    for _ in range(30):
        shards = [[rng.randrange(1, 60) for _ in range(rng.randrange(0, 12))] for _ in range(5)]
        cap = rng.randrange(1, 150)
        flat = [n for s in shards for n in s]
        first = np.cumsum([0] + [len(s) for s in shards])
        plan = plan_parts((np.array(s, dtype=np.int64) for s in shards), cap)
        got = [[first[s] + d for s, d0, d1, _, _ in part for d in range(d0, d1)] for part in plan]
        assert got == _sequential_parts(flat, cap)
