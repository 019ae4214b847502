"""`olmo2 demo --tiny`: the whole recipe end to end, its report card, the stage-to-stage
claims (checked here from the run's own files, not from the report's verdicts), and resume
after a SIGKILL."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from olmo2.cli import main as olmo2_main

SECTIONS = [
    "Evaluation, stage by stage",
    "What the recipe should show",
    "Training",
    "Environment",
    "Time per stage",
    "Data",
    "Curves",
    "Samples (greedy)",
]
STAGES = [
    "corpus", "tokenizer", "prepare", "stage1", "explorer", "stage2-ingredient1", "stage2-ingredient2",
    "merge", "posttrain-data", "sft", "dpo", "grpo", "transformers check",
]  # fmt: skip


def _demo(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "olmo2", "demo", "--tiny", "--out", str(out), *extra]


def _metrics(run_dir: str) -> list[dict]:
    lines = Path(run_dir, "metrics.jsonl").read_text().splitlines()
    return [json.loads(x) for x in lines]


def check_run(out: Path) -> dict:
    state = json.loads((out / "demo-state.json").read_text())
    s = state["stages"]
    assert set(STAGES) <= set(s)
    # stage 1 learns; both anneals decay linearly from stage 1's last LR to exactly 0
    m1 = _metrics(s["stage1"]["run_dir"])
    assert min(m["loss"] for m in m1[-5:]) < 0.7 * m1[0]["loss"]
    for i in (1, 2):
        m = _metrics(s[f"stage2-ingredient{i}"]["run_dir"])
        assert m[-1]["lr"] == 0.0
        assert m[0]["lr"] == pytest.approx(m1[-1]["lr"] * (1 - 1 / len(m)), rel=1e-6)
    # the explorer walked every stage-1 checkpoint; its held-out bpb falls with tokens seen
    ex = s["explorer"]
    assert ex["checkpoints"] >= 3 and all(Path(p).is_file() for p in ex["plots"].values())
    sweep = json.loads((out / "explorer" / "explorer.json").read_text())["checkpoints"]
    bpb = [r["scores"]["heldout_bpb"] for r in sweep]
    assert [r["tokens"] for r in sweep] == sorted(r["tokens"] for r in sweep)
    assert bpb[-1] < bpb[0]
    # the soup is no worse than the mean of its ingredients on held-out text
    ev = {k[5:]: v for k, v in s.items() if k.startswith("eval ")}
    ingr = [ev[f"stage2-ingredient{i}"]["heldout_bpb"] for i in (1, 2)]
    assert ev["merged"]["heldout_bpb"] <= sum(ingr) / 2 + 1e-9
    # RLVR improves the verifiable task over the SFT model
    assert ev["grpo"]["add_pass_rate"] > ev["sft"]["add_pass_rate"]
    # transformers loads every checkpoint with the same logits
    checks = s["transformers check"]["checks"]
    assert len(checks) == 7 and all(c["ok"] for c in checks.values()), checks
    # the report card: every section, plots that exist, and every claim row holds
    md = (out / "report.md").read_text()
    for title in SECTIONS:
        assert title in md, title
    assert (out / "report.html").read_text().count("<img") >= 6
    assert "checkpoint explorer: heldout_bpb" in md
    for png in re.findall(r"\]\(([^)]+\.png)\)", md):
        assert (out / png).is_file(), png
    claims = re.findall(r"^\| (.+?) \| (yes|NO) \|", md, flags=re.M)
    assert len(claims) == 6 and all(v == "yes" for _, v in claims), claims
    return state


# Timeouts only catch a hung demo: on 2 cores loaded to 5 by other jobs the tiny demo took
# 414 s (2026-12-02), so they leave room for a machine that busy.
@pytest.mark.timeout(900)
def test_tiny_demo_resumes_after_sigkill_and_shows_the_recipe(tmp_path, data_dir):
    out = tmp_path / "demo"
    env = {**os.environ, "OLMO2_DATA_DIR": str(data_dir)}
    proc = subprocess.Popen(
        _demo(out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 240
    while not list((out / "stage1").glob("stage1-step*/olmo2.json")):
        assert proc.poll() is None, "the demo ended before stage 1 saved a checkpoint"
        assert time.time() < deadline, "stage 1 never saved a checkpoint"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert "stage1" not in json.loads((out / "demo-state.json").read_text())["stages"]

    rerun = subprocess.run(_demo(out), env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    for stage in ("corpus", "tokenizer", "prepare"):
        assert f"[demo] {stage}: done earlier" in rerun.stdout
    assert "(resumed from stage1-step" in rerun.stdout  # not restarted from step 0
    state = check_run(out)
    assert state["data_dir"] == str(data_dir)
    assert "arc_easy:rc::olmes" in state["stages"]["eval merged"]["olmes"]


@pytest.mark.timeout(600)
def test_tiny_demo_runs_offline_on_the_packaged_corpus(tmp_path):
    out = tmp_path / "demo"
    assert olmo2_main(["demo", "--tiny", "--no-data-dir", "--out", str(out)]) == 0
    state = check_run(out)
    assert state["data_dir"] is None
    assert "olmes" not in state["stages"]["eval merged"]  # no eval sets without a data dir
    assert state["stages"]["corpus"]["source"] == "packages"


def test_changed_settings_refuse_to_mix_into_a_run(tmp_path):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "demo-state.json").write_text(json.dumps({"config": {"preset": "cpu"}, "stages": {}}))
    assert olmo2_main(["demo", "--tiny", "--no-data-dir", "--out", str(out)]) == 2


def test_hub_post_training_rows(tmp_path, monkeypatch):
    """`--hub` without a data directory streams the OLMo 2 SFT and preference mixtures (a
    stand-in `datasets` module here: tests never touch the network)."""
    import types

    from olmo2.demo.config import preset
    from olmo2.demo.tasks import HUB_DPO, HUB_SFT, write_posttrain_data

    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    bad = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "go away"}]
    hub = {HUB_SFT: [{"id": "a", "messages": msgs}], HUB_DPO: [{"chosen": msgs, "rejected": bad}]}
    calls = []

    class Stream(list):
        def take(self, n):
            return self[:n]

    def load_dataset(name, split, streaming):
        calls.append((name, split, streaming))
        return Stream(hub[name])

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    cfg = preset("tiny")
    cfg.hub = True
    files = write_posttrain_data(tmp_path, None, cfg)
    assert calls == [(HUB_SFT, "train", True), (HUB_DPO, "train", True)]
    assert HUB_SFT in files["sft.jsonl"] and HUB_DPO in files["dpo.jsonl"]
    dpo = [json.loads(x) for x in (tmp_path / "dpo.jsonl").read_text().splitlines()]
    assert dpo == [{"messages": msgs[:1], "chosen": "hello", "rejected": "go away"}]
    sft = [json.loads(x) for x in (tmp_path / "sft.jsonl").read_text().splitlines()]
    assert {"messages": msgs} in sft and len(sft) == 1 + cfg.add_sft_rows


def test_minutes_and_set_resolve_the_config():
    import argparse

    from olmo2.demo import add_arguments, resolve_config

    p = argparse.ArgumentParser()
    add_arguments(p)
    cpu = resolve_config(p.parse_args([]))
    assert cpu.preset == "cpu" and cpu.device == "cpu"
    half = resolve_config(p.parse_args(["--minutes", "7", "--set", "sft_steps=5"]))
    assert half.stage1_steps == round(cpu.stage1_steps / 2) and half.sft_steps == 5
    with pytest.raises(ValueError, match="unknown config key 'sft_step'"):
        resolve_config(p.parse_args(["--set", "sft_step=5"]))
    assert resolve_config(p.parse_args(["--tiny"])).preset == "tiny"
