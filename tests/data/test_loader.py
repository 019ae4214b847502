"""Instance loader: determinism, resume, rank split, masks, document ids, fingerprint."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from olmo2.data.loader import DataConfig, InstanceLoader

EOS = 7


def write_files(tmp_path, sizes=(103, 250, 61), seed=0):
    """Token files of random ids in [10, 1000) with an EOS every ~13 tokens."""
    rng = np.random.default_rng(seed)
    paths = []
    for k, n in enumerate(sizes):
        toks = rng.integers(10, 1000, n).astype(np.uint32)
        toks[rng.random(n) < 1 / 13] = EOS
        p = tmp_path / f"part-{k:05d}.npy"
        toks.tofile(p)
        paths.append(str(p))
    return paths


def cfg(paths, **kw):
    base = dict(paths=paths, seq_len=10, global_batch_size=4, seed=3, eos_token_id=EOS)
    return DataConfig(**{**base, **kw})


def take(loader, n):
    return [b for b in itertools.islice(iter(loader), n)]


def same(a, b):
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x) for x, y in zip(a, b)
    )


def test_instances_are_file_chunks_and_epoch_is_permutation(tmp_path):
    paths = write_files(tmp_path)
    ld = InstanceLoader(cfg(paths, global_batch_size=1), prefetch=0)
    assert ld.n_instances == 10 + 25 + 6  # each file's tail dropped
    files = [np.fromfile(p, dtype=np.uint32) for p in paths]
    expected = [f[i * 10 : (i + 1) * 10] for f in files for i in range(len(f) // 10)]
    batches = take(ld, ld.n_instances)
    assert sorted(int(b["index"][0]) for b in batches) == list(range(ld.n_instances))
    for b in batches:
        assert b["input_ids"].dtype == torch.int64 and b["input_ids"].shape == (1, 10)
        assert b["input_ids"][0].tolist() == expected[int(b["index"][0])].tolist()
        assert b["labels"][0, :-1].tolist() == b["input_ids"][0, 1:].tolist()
        assert b["labels"][0, -1] == -100


def test_same_seed_same_batches_other_seed_differs(tmp_path):
    paths = write_files(tmp_path)
    a = take(InstanceLoader(cfg(paths)), 12)  # 12 > 10 batches/epoch: crosses an epoch
    b = take(InstanceLoader(cfg(paths)), 12)
    c = take(InstanceLoader(cfg(paths, seed=4)), 12)
    assert same(a, b) and not same(a, c)
    first_epoch = torch.cat([x["index"] for x in a[:10]])
    assert len(set(first_epoch.tolist())) == 40


def test_resume_equals_uninterrupted(tmp_path):
    paths = write_files(tmp_path)
    full = take(InstanceLoader(cfg(paths)), 14)
    ld = InstanceLoader(cfg(paths))
    take(ld, 9)
    state = ld.state_dict()
    assert state["tokens_seen"] == 9 * 4 * 10
    resumed = InstanceLoader(cfg(paths))
    resumed.load_state_dict(state)
    assert same(take(resumed, 5), full[9:])


def test_two_ranks_cover_one_rank(tmp_path):
    paths = write_files(tmp_path)
    one = take(InstanceLoader(cfg(paths)), 6)
    r0 = take(InstanceLoader(cfg(paths), rank=0, world_size=2), 6)
    r1 = take(InstanceLoader(cfg(paths), rank=1, world_size=2), 6)
    for b, x, y in zip(one, r0, r1):
        assert b["index"][0::2].tolist() == x["index"].tolist()
        assert b["index"][1::2].tolist() == y["index"].tolist()
        assert torch.equal(b["input_ids"][0::2], x["input_ids"])
        assert torch.equal(b["input_ids"][1::2], y["input_ids"])
    # a resume on another world size continues at the same global batch
    r1b = InstanceLoader(cfg(paths), rank=1, world_size=2)
    ld = InstanceLoader(cfg(paths))
    take(ld, 3)
    r1b.load_state_dict(ld.state_dict())
    assert same(take(r1b, 3), r1[3:])


def test_label_masks_and_doc_ids(tmp_path):
    paths = write_files(tmp_path, sizes=(40,))
    toks = np.fromfile(paths[0], dtype=np.uint32)
    mask = np.arange(40) % 3 != 0
    mask.tofile(tmp_path / "m.mask.npy")
    ld = InstanceLoader(
        cfg(
            paths,
            global_batch_size=1,
            label_mask_paths=[str(tmp_path / "m.mask.npy")],
            doc_masking=True,
        ),
        prefetch=0,
    )
    for b in take(ld, 4):
        start = int(b["index"][0]) * 10
        for t in range(9):
            want = int(toks[start + t + 1]) if mask[start + t + 1] else -100
            assert int(b["labels"][0, t]) == want
        doc, ids = 0, b["input_ids"][0].tolist()
        for t in range(10):  # a token after an EOS starts a new document
            assert int(b["doc_ids"][0, t]) == doc
            doc += ids[t] == EOS


def test_fingerprint_refuses_changed_data(tmp_path):
    paths = write_files(tmp_path)
    ld = InstanceLoader(cfg(paths))
    take(ld, 2)
    state = ld.state_dict()
    with pytest.raises(ValueError, match="dataset changed"):
        InstanceLoader(cfg(paths, seq_len=5)).load_state_dict(state)
    np.zeros(300, np.uint32).tofile(paths[1])
    with pytest.raises(ValueError, match="dataset changed"):
        InstanceLoader(cfg(paths)).load_state_dict(state)


def test_bad_inputs(tmp_path):
    paths = write_files(tmp_path)
    with pytest.raises(FileNotFoundError, match="nope.npy"):
        InstanceLoader(cfg([str(tmp_path / "nope.npy")]))
    with pytest.raises(ValueError, match="fewer than one global batch"):
        InstanceLoader(cfg(paths, global_batch_size=100))
    with pytest.raises(ValueError, match="not divisible"):
        InstanceLoader(cfg(paths), world_size=3)


def test_directory_glob_and_downsample(tmp_path):
    paths = write_files(tmp_path)
    by_dir = InstanceLoader(cfg([str(tmp_path)]))
    by_glob = InstanceLoader(cfg([str(tmp_path / "part-*.npy")]))
    assert by_dir.files == by_glob.files == InstanceLoader(cfg(paths)).files
    down = InstanceLoader(cfg([paths[1], paths[1]], path_instances=[5, None]), prefetch=0)
    assert down.n_instances == 5 + 25
    assert [int(down.segments(i)[1][0, 0]) for i in range(5)] == [0, 50, 100, 150, 200]


def test_order_is_pcg64_permutation_of_seed_plus_epoch(tmp_path):
    """DESIGN §3's order, computed here straight from numpy: epoch e = PCG64(seed + e)."""
    paths = write_files(tmp_path)
    ld = InstanceLoader(cfg(paths), prefetch=0)
    n, B = 41, 4
    assert ld.n_instances == n and ld.batches_per_epoch == n // B
    for g in (0, 5, 9, 10, 23):
        epoch, b = divmod(g, n // B)
        perm = np.random.Generator(np.random.PCG64(3 + epoch)).permutation(n)
        assert ld.get_batch(g)["index"].tolist() == perm[b * B : (b + 1) * B].tolist()
