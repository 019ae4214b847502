"""Document-aware instances: spans, best-fit decreasing against a brute-force reference, and
the loader's packed batches (every token once, documents whole, padding never trained on)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from olmo2.data.loader import DataConfig, InstanceLoader
from olmo2.data.packing import best_fit_decreasing, document_spans, pack, split_long

EOS = 1


def _bfd_reference(lengths: list[int], capacity: int) -> list[int]:
    """Rooms left in the bins of textbook best-fit decreasing (scan every bin)."""
    rooms: list[int] = []
    for size in sorted(lengths, reverse=True):
        fits = [k for k, r in enumerate(rooms) if r >= size]
        if fits:
            k = min(fits, key=lambda k: rooms[k])
            rooms[k] -= size
        else:
            rooms.append(capacity - size)
    return rooms


def test_document_spans_end_at_eos_and_keep_an_unterminated_tail():
    toks = np.array([5, 6, EOS, EOS, 7, EOS, 8, 9])
    assert document_spans(toks, EOS).tolist() == [[0, 3], [3, 1], [4, 2], [6, 2]]
    assert document_spans(np.array([5, EOS]), EOS).tolist() == [[0, 2]]


def test_split_long_fills_whole_instances_and_packs_the_rest():
    full, rest = split_long(np.array([[0, 10], [10, 3], [13, 8]]), 4)
    assert full.tolist() == [[0, 4], [4, 4], [13, 4], [17, 4]]
    assert rest.tolist() == [[8, 2], [10, 3]]


@pytest.mark.parametrize("seed", range(5))
def test_best_fit_decreasing_matches_the_textbook_algorithm(seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 64, size=300)
    bins = best_fit_decreasing(lengths, 64)
    assert sorted(i for b in bins for i in b) == list(range(300))
    rooms = [64 - int(lengths[b].sum()) for b in bins]
    assert min(rooms) >= 0
    assert sorted(rooms) == sorted(_bfd_reference(lengths.tolist(), 64))
    with pytest.raises(ValueError, match="does not fit"):
        best_fit_decreasing(np.array([65]), 64)


def _docs(seed: int, n: int, T: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    docs = [np.append(rng.integers(2, 50, size=int(k)), EOS) for k in rng.integers(1, 2 * T, n)]
    return np.concatenate(docs).astype(np.uint32)


def test_packed_batches_hold_every_token_once_with_documents_whole(tmp_path):
    T = 32
    toks = _docs(0, 120, T)
    path = tmp_path / "a.npy"
    toks.tofile(path)
    instances = pack(toks, T, EOS)
    assert sum(int(i[:, 1].sum()) for i in instances) == len(toks)
    assert all(int(i[:, 1].sum()) <= T for i in instances)
    cfg = DataConfig(
        paths=[str(path)], seq_len=T, global_batch_size=len(instances), eos_token_id=EOS,
        doc_masking=True, packing="bfd",
    )  # fmt: skip
    loader = InstanceLoader(cfg, prefetch=0)
    assert loader.n_instances == len(instances)
    b = loader.get_batch(0)
    ids, labels, docs = b["input_ids"], b["labels"], b["doc_ids"]
    seen = []
    for row in range(len(ids)):
        f, spans = loader.segments(int(b["index"][row]))
        used = int(spans[:, 1].sum())
        for n, (start, length) in enumerate(spans.tolist()):
            at = int(spans[:n, 1].sum())
            assert ids[row, at : at + length].tolist() == toks[start : start + length].tolist()
            assert (docs[row, at : at + length] == n).all()
            seen.extend(range(start, start + length))
        assert (labels[row, max(used - 1, 0) :] == -100).all()  # padding is never a target
        assert (labels[row, : used - 1] == ids[row, 1:used]).all()
        assert (docs[row, used:] == len(spans)).all()
    assert sorted(seen) == list(range(len(toks)))
    # a document no longer than T is never split: each piece starts after an EOS
    starts = {s for i in instances for s in i[:, 0].tolist()}
    doc_starts = set(document_spans(toks, EOS)[:, 0].tolist())
    assert doc_starts <= starts


def test_packing_changes_the_fingerprint_and_bad_mode_is_named(tmp_path):
    path = tmp_path / "a.npy"
    _docs(1, 40, 16).tofile(path)
    base = dict(paths=[str(path)], seq_len=16, global_batch_size=2, eos_token_id=EOS)
    concat = InstanceLoader(DataConfig(**base), prefetch=0)
    packed = InstanceLoader(DataConfig(**base, packing="bfd"), prefetch=0)
    assert concat.fingerprint != packed.fingerprint
    with pytest.raises(ValueError, match="data.packing='best'"):
        InstanceLoader(DataConfig(**base, packing="best"), prefetch=0)


def test_concat_batches_are_unchanged_by_the_segment_layout(tmp_path):
    path = tmp_path / "a.npy"
    toks = _docs(2, 60, 16)
    toks.tofile(path)
    cfg = DataConfig(paths=[str(path)], seq_len=16, global_batch_size=4, eos_token_id=EOS)
    b = InstanceLoader(cfg, prefetch=0).get_batch(0)
    for row, i in enumerate(b["index"].tolist()):
        window = torch.from_numpy(toks[i * 16 : (i + 1) * 16].astype(np.int64))
        assert torch.equal(b["input_ids"][row], window)
        assert torch.equal(b["labels"][row, :-1], window[1:])
