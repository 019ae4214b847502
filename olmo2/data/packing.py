"""Document-aware instances (`data.packing: bfd`): whole documents packed into `seq_len` rows.

The default layout (`concat`) cuts each token file into consecutive `seq_len` windows, so most
documents are split across instances. For long-context training OLMo-core packs instead
(`NumpyPackedFSLDatasetConfig`, its "Optimized Best-Fit-Decreasing" packing in the OLMo 2 7B
long-context script): documents are taken longest first and each goes into the open instance
with the least room that still fits it; instances are padded to exactly `seq_len`.

Rules here, per token file:
- A document is the tokens up to and including an EOS (a file's unterminated tail is one too).
- A document longer than `seq_len` fills whole instances with its first `seq_len`-token
  windows, and its remainder is packed like a document (OLMo-core truncates by default; olmo2
  keeps every token).
- Best-fit decreasing over the (piece) lengths, ties by file order; instances are numbered in
  the order they were opened (longest documents first).
An instance is an `[k, 2]` array of `(start, length)` segments of its file; the loader pads it
to `seq_len`, gives every segment its own `doc_ids` number and never trains on padding.
"""

from __future__ import annotations

import bisect

import numpy as np


def document_spans(tokens: np.ndarray, eos: int) -> np.ndarray:
    """`[n, 2]` (start, length) of each document of a flat token array."""
    ends = np.flatnonzero(np.asarray(tokens) == eos) + 1
    if len(ends) == 0 or ends[-1] != len(tokens):
        ends = np.append(ends, len(tokens))
    starts = np.concatenate([[0], ends[:-1]])
    spans = np.stack([starts, ends - starts], axis=1).astype(np.int64)
    return spans[spans[:, 1] > 0]


def split_long(spans: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(whole-instance windows `[m, 2]`, pieces left to pack `[n, 2]`)."""
    full, rest = [], []
    for start, length in spans.tolist():
        n_full = length // seq_len if length > seq_len else 0
        full.extend((start + i * seq_len, seq_len) for i in range(n_full))
        if length - n_full * seq_len:
            rest.append((start + n_full * seq_len, length - n_full * seq_len))
    as_array = lambda xs: np.array(xs, dtype=np.int64).reshape(-1, 2)  # noqa: E731
    return as_array(full), as_array(rest)


def best_fit_decreasing(lengths: np.ndarray, capacity: int) -> list[list[int]]:
    """Bins (lists of item indices, in the order opened) of best-fit decreasing packing.

    Open bins are kept by remaining room: `rooms` is the sorted list of distinct rooms that
    some open bin has, `bins_with[r]` those bins; the best fit for length L is the smallest
    room >= L (a bisect), so packing is O(n log n) plus at most `capacity` distinct rooms.
    """
    if len(lengths) and int(np.max(lengths)) > capacity:
        raise ValueError(f"an item of {int(np.max(lengths))} does not fit a bin of {capacity}")
    order = np.argsort(-np.asarray(lengths), kind="stable")
    bins: list[list[int]] = []
    rooms: list[int] = []
    bins_with: dict[int, list[int]] = {}
    for i in order.tolist():
        size = int(lengths[i])
        k = bisect.bisect_left(rooms, size)
        if k == len(rooms):
            b, room = len(bins), capacity
            bins.append([])
        else:
            room = rooms[k]
            b = bins_with[room].pop()
            if not bins_with[room]:
                del bins_with[room], rooms[k]
        bins[b].append(i)
        left = room - size
        if left:
            if left not in bins_with:
                bisect.insort(rooms, left)
                bins_with[left] = []
            bins_with[left].append(b)
    return bins


def pack(tokens: np.ndarray, seq_len: int, eos: int) -> list[np.ndarray]:
    """The instances of one token file, each an `[k, 2]` array of (start, length) segments."""
    full, rest = split_long(document_spans(tokens, eos), seq_len)
    packed = [rest[b] for b in best_fit_decreasing(rest[:, 1], seq_len)]
    return [full[i : i + 1] for i in range(len(full))] + packed
