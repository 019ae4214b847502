"""`olmo2 demo --tiny --rl ppo`: the recipe's last stage as OLMo 2 7B/13B ran it, a reward
model then PPO with its value model initialised from that reward model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from olmo2.cli import main as olmo2_main


@pytest.mark.slow  # the whole tiny demo: a few minutes on 2 cores
@pytest.mark.timeout(1200)
def test_tiny_demo_with_ppo(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("OLMO2_DATA_DIR", str(data_dir))
    out = tmp_path / "demo"
    assert olmo2_main(["demo", "--tiny", "--rl", "ppo", "--out", str(out)]) == 0
    s = json.loads((out / "demo-state.json").read_text())["stages"]
    assert {"rm", "ppo", "eval ppo"} <= set(s) and "grpo" not in s
    # the RM is a sequence-classification checkpoint, the PPO value model starts from it
    ppo_recipe = (out / "recipes" / "ppo.yaml").read_text()
    assert f"value_path: {s['rm']['checkpoint']}" in ppo_recipe
    rm_config = json.loads((Path(s["rm"]["checkpoint"]) / "config.json").read_text())
    assert rm_config["architectures"] == ["Olmo2ForSequenceClassification"]
    ppo = Path(s["ppo"]["checkpoint"])
    assert ppo.name.startswith("ppo-step") and (ppo / "value" / "config.json").is_file()
    m = [
        json.loads(x)
        for x in (Path(s["ppo"]["run_dir"]) / "metrics.jsonl").read_text().splitlines()
    ]
    assert {"vf_loss", "explained_var", "pg_clip_frac"} <= set(m[-1])
    # the final model is a plain causal LM: transformers loads it with olmo2's logits
    checks = s["transformers check"]["checks"]
    assert "ppo" in checks and all(c["ok"] for c in checks.values()), checks
    md = (out / "report.md").read_text()
    assert "PPO (RLVR)" in md and "PPO mean reward per rollout" in md
    assert len(re.findall(r"^\| (.+?) \| (yes|NO) \|", md, flags=re.M)) == 6
