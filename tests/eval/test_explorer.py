"""The checkpoint explorer: a run with 3 checkpoints gives a table, a PNG per metric and an
HTML page; an interrupted sweep resumes with only the missing checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

from olmo2.cli import main
from olmo2.eval import explorer, harness


@pytest.fixture(scope="module")
def run_dir(tiny_model, dolma2, tmp_path_factory):
    from olmo2.model.hf import save_pretrained

    run = tmp_path_factory.mktemp("run")
    names = [
        "stage1-step10-tokens0B",
        "stage1-step20-tokens0B",
        "stage2-ingredient1-step30-tokens0B",
    ]
    state = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    try:
        for i, name in enumerate(names):
            with torch.no_grad():  # a different model per checkpoint
                tiny_model.lm_head.weight.mul_(1.0 + 0.5 * i)
            path = save_pretrained(tiny_model, run / name, tokenizer=dolma2)
            (path / "olmo2.json").write_text(
                json.dumps({"step": 10 * (i + 1), "tokens": 40960 * (i + 1)})
            )
    finally:
        tiny_model.load_state_dict(state)
    (run / ".stage1-step40-tokens0B.tmp").mkdir()  # a checkpoint being written: ignored
    return run


def test_find_checkpoints_in_token_order(run_dir):
    ckpts = explorer.find_checkpoints(run_dir)
    assert [c.step for c in ckpts] == [10, 20, 30]
    assert [c.tokens for c in ckpts] == [40960.0, 81920.0, 122880.0]
    assert [c.stage for c in ckpts] == ["stage1", "stage1", "stage2"]


def test_sweep_writes_table_plots_html_and_resumes(run_dir, data_dir, tmp_path, monkeypatch):
    out = tmp_path / "sweep"
    argv = ["eval", "--model", str(run_dir), "--all-checkpoints", "--tasks", "copa",
            "--limit", "4", "--data-dir", str(data_dir), "--output", str(out)]  # fmt: skip
    real, calls = harness.evaluate, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the sweep is stopped during the third checkpoint
        return real(*args, **kwargs)

    monkeypatch.setattr(harness, "evaluate", flaky)
    assert main(argv) == 130  # the CLI reports the interrupt and exits
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "stage1-step10-tokens0B.json", "stage1-step20-tokens0B.json"]  # fmt: skip

    calls.clear()
    assert main(argv) == 0
    assert len(calls) == 1  # only the missing checkpoint
    sweep = json.loads((out / "explorer.json").read_text())
    assert [r["step"] for r in sweep["checkpoints"]] == [10, 20, 30]
    assert sweep["metrics"] == ["copa:rc::olmes"]
    scores = [r["scores"]["copa:rc::olmes"] for r in sweep["checkpoints"]]
    assert all(0.0 <= s <= 1.0 for s in scores)
    png = out / sweep["plots"]["copa:rc::olmes"]
    assert png.read_bytes()[:4] == b"\x89PNG"
    html = (out / "explorer.html").read_text()
    assert "stage2-ingredient1-step30-tokens0B" in html and "<img" in html
    assert explorer.stage_boundaries(sweep["checkpoints"]) == [(122880.0, "stage2")]


def test_changed_settings_reevaluate(tmp_path):
    ckpts = [explorer.Checkpoint("stage1-step1", "x", step=1, stage="stage1", tokens=1.0)]
    seen = []

    def fake(c):
        seen.append(c.name)
        return {"tasks": {"t": {"primary_score": 0.5}}, "suites": {}}

    explorer.explore(ckpts, fake, tmp_path, {"tasks": ["t"], "limit": 4})
    explorer.explore(ckpts, fake, tmp_path, {"tasks": ["t"], "limit": 4})
    explorer.explore(ckpts, fake, tmp_path, {"tasks": ["t"], "limit": 8})
    assert seen == ["stage1-step1", "stage1-step1"]


def test_no_checkpoints_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoints found"):
        explorer.find_checkpoints(tmp_path)
