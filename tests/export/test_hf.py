"""`olmo2 export hf|gguf` through the CLI: clean output, and clear errors with no partial files."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from olmo2.cli import main
from olmo2.export.gguf import read_gguf
from olmo2.export.hf import parse_size
from olmo2.model.hf import load_model
from tests.model.helpers import save_random, tiny_bpe


@pytest.fixture
def train_ckpt(tmp_path):
    """A checkpoint as a training run leaves it: HF files plus train state and run metadata."""
    model, path = save_random(tmp_path, "gqa")
    (path / "train_state").mkdir()
    torch.save({"step": 3}, path / "train_state" / "optim.pt")
    (path / "olmo2.json").write_text(json.dumps({"step": 3}))
    return model, path


def test_export_hf_clean_dtype_and_shards(train_ckpt, tmp_path, capsys):
    model, path = train_ckpt
    out = tmp_path / "clean"
    assert (
        main(
            [
                "export",
                "hf",
                "--model",
                str(path),
                "--output",
                str(out),
                "--dtype",
                "bfloat16",
                "--max-shard-size",
                "20KB",
            ]
        )
        == 0
    )
    names = sorted(f.name for f in out.iterdir())
    assert "train_state" not in names and "olmo2.json" not in names
    shards = [n for n in names if n.endswith(".safetensors")]
    assert len(shards) > 1 and "model.safetensors.index.json" in names
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
    assert all(t.dtype == torch.bfloat16 for s in shards for t in load_file(out / s).values())
    back = load_model(out)
    for k, v in model.state_dict().items():
        assert torch.equal(back.state_dict()[k], v.to(torch.bfloat16).float()), k
    assert "exported" in capsys.readouterr().out


def test_export_gguf_cli(train_ckpt, tmp_path, capsys):
    model, path = train_ckpt
    # no tokenizer in this checkpoint: a clear error and no file
    out = tmp_path / "m.gguf"
    assert main(["export", "gguf", "--model", str(path), "--output", str(out)]) == 2
    assert "tokenizer" in capsys.readouterr().err and not out.exists()
    (path / "tokenizer.json").write_text(json.dumps(tiny_bpe()))
    assert (
        main(["export", "gguf", "--model", str(path), "--output", str(out), "--dtype", "q8_0"]) == 0
    )
    meta, sd = read_gguf(out)
    assert meta["general.architecture"] == "olmo2" and meta["olmo2.attention.head_count_kv"] == 2
    assert set(sd) == set(model.state_dict())
    assert main(["export", "gguf", "--model", str(path), "--output", str(out)]) == 2  # exists
    assert "--force" in capsys.readouterr().err


def test_bad_inputs(train_ckpt, tmp_path, capsys):
    _, path = train_ckpt
    # a missing tensor
    weights = path / "model.safetensors"
    sd = load_file(weights)
    del sd["model.layers.1.mlp.up_proj.weight"]
    save_file(sd, weights, metadata={"format": "pt"})
    out = tmp_path / "out"
    assert main(["export", "hf", "--model", str(path), "--output", str(out)]) == 2
    assert "model.layers.1.mlp.up_proj.weight" in capsys.readouterr().err
    assert (
        main(["export", "hf", "--model", str(path), "--output", str(tmp_path / "no" / "out")]) == 2
    )
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: invalid choice
        main(
            [
                "export",
                "gguf",
                "--model",
                str(path),
                "--output",
                str(tmp_path / "x.gguf"),
                "--dtype",
                "q4_k",
            ]
        )
    assert "invalid choice" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gqa"]  # nothing partial left behind


def test_parse_size():
    assert parse_size("2GB") == 2_000_000_000 and parse_size("1MiB") == 2**20
    assert parse_size("1000") == 1000 and parse_size(None) is None
    with pytest.raises(ValueError, match="max-shard-size"):
        parse_size("lots")
