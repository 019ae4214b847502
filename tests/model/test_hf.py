"""HF checkpoint interop: transformers loads what we write, we load what transformers writes."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

import olmo2
from olmo2.cli import main
from olmo2.model.hf import INDEX_NAME, config_from_hf, save_pretrained
from tests.model.helpers import CONFIGS, random_model, save_random

IDS = torch.randint(0, 500, (2, 11), generator=torch.Generator().manual_seed(0))


def test_transformers_saves_olmo2_loads(tmp_path):
    _, path = save_random(tmp_path, "gqa")
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    hf.save_pretrained(tmp_path / "hf_saved")
    model, tok = olmo2.load(tmp_path / "hf_saved")
    assert tok is None
    with torch.no_grad():
        assert torch.equal(model(IDS), hf(input_ids=IDS).logits)


def test_sharded_roundtrip_and_bf16(tmp_path):
    model = random_model(CONFIGS["mha"])
    path = save_pretrained(model, tmp_path / "sharded", max_shard_bytes=100_000)
    assert (path / INDEX_NAME).is_file() and len(list(path.glob("model-*.safetensors"))) > 2
    loaded, _ = olmo2.load(path)
    with torch.no_grad():
        assert torch.equal(loaded(IDS), model(IDS))
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        assert (hf(input_ids=IDS).logits - model(IDS)).abs().max() <= 1e-5
    bf16, _ = olmo2.load(path, dtype=torch.bfloat16)
    assert bf16.lm_head.weight.dtype == torch.bfloat16
    with torch.no_grad():
        assert (bf16(IDS).float() - model(IDS)).abs().max() < 0.1


def test_reads_transformers4_and_5_config_layouts():
    base = {
        "model_type": "olmo2",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 128,
        "vocab_size": 100352,
        "rms_norm_eps": 1e-6,
        "eos_token_id": 100257,
        "pad_token_id": 100277,
    }
    # the released OLMo-2-0425-1B config.json (transformers 4.x): top-level rope_theta
    v4 = config_from_hf({**base, "rope_theta": 500000, "rope_scaling": None})
    v5 = config_from_hf({**base, "rope_parameters": {"rope_theta": 500000, "rope_type": "default"}})
    assert v4 == v5 and v4.rope_theta == 500000 and v4.n_kv_heads == 4
    with pytest.raises(ValueError, match="rope type 'longrope' is not supported"):
        config_from_hf({**base, "rope_scaling": {"rope_type": "longrope", "factor": 2}})


def _corrupt(tmp_path, how):
    _, path = save_random(tmp_path, "mha")
    st = path / "model.safetensors"
    if how == "no_config":
        (path / "config.json").unlink()
    elif how == "model_type":
        cfg = json.loads((path / "config.json").read_text())
        (path / "config.json").write_text(json.dumps({**cfg, "model_type": "llama"}))
    elif how in ("missing", "extra", "shape"):
        sd = load_file(st)
        if how == "missing":
            del sd["model.layers.1.mlp.up_proj.weight"]
        elif how == "extra":
            sd["model.layers.9.mlp.up_proj.weight"] = torch.zeros(2)
        else:
            sd["model.norm.weight"] = torch.ones(65)
        save_file(sd, st)
    elif how == "unreadable":
        st.write_bytes(b"\x00garbage" * 10)
    return path


@pytest.mark.parametrize(
    "how,message",
    [
        ("no_config", "config.json"),
        ("model_type", "model_type"),
        ("missing", "up_proj"),
        ("extra", "layers.9"),
        ("shape", "model.norm.weight"),
        ("unreadable", "model.safetensors"),
    ],
)
def test_bad_checkpoints_are_named(tmp_path, capsys, how, message):
    path = _corrupt(tmp_path, how)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        olmo2.load(path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    code = main(["generate", "--model", str(path), "--prompt", "hi", "--max-new-tokens", "2"])
    assert code == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written


def test_save_is_atomic_on_failure(tmp_path, monkeypatch):
    model = random_model(CONFIGS["mha"])
    import olmo2.model.hf as hf

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(hf, "save_file", boom)
    with pytest.raises(RuntimeError):
        save_pretrained(model, tmp_path / "ckpt")
    assert list(tmp_path.iterdir()) == []
