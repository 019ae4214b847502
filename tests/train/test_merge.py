from __future__ import annotations

import pytest
import torch

from olmo2.cli import main
from olmo2.model.hf import read_state_dict
from olmo2.train import checkpoint as ckpt

from .helpers import train, write_tokens


@pytest.fixture(scope="module")
def ingredients(tmp_path_factory):
    """Three short runs with different data seeds (the stage-2 "ingredients")."""
    d = tmp_path_factory.mktemp("merge")
    data = write_tokens(d / "train.npy", n=4_000)
    out = []
    for k, seed in enumerate((42069, 666, 42), start=1):
        run = d / f"ingr{k}"
        assert (
            train(
                run,
                data,
                f"data.seed={seed}",
                "trainer.stage=2",
                f"trainer.ingredient={k}",
                steps=2,
            )
            == 0
        )
        out.append(ckpt.latest(run))
    return out


def test_merge_equals_average(ingredients, tmp_path):
    out = tmp_path / "soup"
    assert main(["merge", *map(str, ingredients), "--output", str(out)]) == 0
    merged = read_state_dict(out)
    sds = [read_state_dict(p) for p in ingredients]
    assert set(merged) == set(sds[0])
    for k, v in merged.items():
        ref = (sds[0][k].double() + sds[1][k].double() + sds[2][k].double()) / 3
        torch.testing.assert_close(v.double(), ref, atol=1e-8, rtol=1e-6)  # fp32 rounding
    assert not torch.equal(sds[0]["lm_head.weight"], sds[1]["lm_head.weight"])


def test_weighted_merge(ingredients, tmp_path):
    out = tmp_path / "w"
    assert (
        main(["merge", *map(str, ingredients[:2]), "--output", str(out), "--weights", "3", "1"])
        == 0
    )
    a, b, m = read_state_dict(ingredients[0]), read_state_dict(ingredients[1]), read_state_dict(out)
    torch.testing.assert_close(m["norm.weight"], 0.75 * a["norm.weight"] + 0.25 * b["norm.weight"])


def test_transformers_loads_checkpoints(ingredients, tmp_path):
    from transformers import AutoModelForCausalLM

    from olmo2.model.hf import load_model

    out = tmp_path / "soup"
    assert main(["merge", *map(str, ingredients), "--output", str(out)]) == 0
    ids = torch.randint(2, 100, (2, 16))
    for path in [*ingredients, out]:
        hf = AutoModelForCausalLM.from_pretrained(path).eval()
        ours = load_model(path)
        with torch.no_grad():
            torch.testing.assert_close(hf(ids).logits, ours(ids), atol=1e-4, rtol=1e-4)


def test_merge_refuses_mismatched_configs(ingredients, tmp_path, capsys):
    other = tmp_path / "other"
    data = write_tokens(tmp_path / "t.npy", n=4_000)
    assert train(other, data, "model.n_layers=1", steps=1) == 0
    rc = main(
        ["merge", str(ingredients[0]), str(ckpt.latest(other)), "--output", str(tmp_path / "o")]
    )
    assert rc == 2 and "configs differ (n_layers: 2 vs 1)" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
