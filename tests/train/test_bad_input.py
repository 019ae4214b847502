"""Bad input: a clear error, exit code 2, and the run directory left as it was."""

from __future__ import annotations

import hashlib

import pytest

from olmo2.train import checkpoint as ckpt

from .helpers import train, write_tokens


def _snapshot(d):
    if not d.exists():
        return None
    return {
        str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(d.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """A finished 2-step run (checkpoint at step 2) and its data."""
    d = tmp_path_factory.mktemp("bad")
    data = write_tokens(d / "train.npy", n=4_000)
    assert train(d / "run", data, "checkpoint.save_interval=1", steps=2) == 0
    return d / "run", data


def _fails(capsys, run, data, *extra, match, steps=4):
    before = _snapshot(run)
    assert train(run, data, *extra, steps=steps) == 2
    err = capsys.readouterr().err
    assert "olmo2 train: error:" in err and match in err, err
    assert _snapshot(run) == before


def test_empty_data_directory(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    _fails(capsys, tmp_path / "run", tmp_path / "empty", match="matches no .npy token files")
    assert not (tmp_path / "run").exists()


def test_missing_data_file(tmp_path, capsys):
    _fails(capsys, tmp_path / "run", tmp_path / "nope.npy", match="does not exist")


def test_token_ids_outside_vocab(tmp_path, capsys):
    import numpy as np

    np.full(4096, 1000, dtype=np.uint32).tofile(tmp_path / "big.npy")
    assert train(tmp_path / "run", tmp_path / "big.npy", steps=1) == 2
    assert "outside the model vocabulary" in capsys.readouterr().err


def test_checkpoint_of_other_size(done, capsys):
    run, data = done
    _fails(
        capsys,
        run,
        data,
        "model.d_model=64",
        "model.n_heads=4",
        "model.n_kv_heads=4",
        match="different model size",
    )


def test_load_path_of_other_size(done, tmp_path, capsys):
    run, data = done
    c = ckpt.latest(run)
    _fails(
        capsys,
        tmp_path / "new",
        data,
        f"model.load_path={c}",
        "model.d_model=64",
        match="d_model: recipe 64 vs checkpoint 32",
    )
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("victim", ["model.safetensors", "train_state/rank0.pt", "distcp"])
def test_corrupted_checkpoint(done, tmp_path, capsys, victim):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(done[0], run)
    c = ckpt.latest(run)
    f = next((c / "train_state").glob("*.distcp")) if victim == "distcp" else c / victim
    raw = bytearray(f.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    f.write_bytes(bytes(raw))
    _fails(capsys, run, done[1], match="corrupted checkpoint")


def test_unknown_recipe_file(tmp_path, capsys):
    from olmo2.cli import main

    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "recipe not found" in capsys.readouterr().err
