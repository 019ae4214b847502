"""`olmo2 sft|dpo|grpo` resume exactly after SIGKILL: same per-step losses as an
uninterrupted run."""

from __future__ import annotations

import json
import os
import sys

import pytest

from olmo2.post import rewards
from tests.post.helpers import kill_and_resume, tiny_checkpoint, write_jsonl

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
STEPS = 8
WORDS = ["hi", "hello", "fox", "dog", "yes", "no", "the", "lazy"]


def _data(tmp_path, cmd):
    if cmd == "sft":
        rows = [{"instruction": f"say {w}", "output": w} for w in WORDS]
    elif cmd == "dpo":
        rows = [{"prompt": f"say {w}", "chosen": w, "rejected": f"{w} {w} bad"} for w in WORDS]
    else:
        rows = rewards.addition_rows(12, seed=3)
    return write_jsonl(tmp_path / f"{cmd}.jsonl", rows)


def _cmd(cmd, run_dir, init, data):
    extra = {
        "sft": [],
        "dpo": [],
        "grpo": [
            "data.global_batch_size=2",
            "grpo.num_samples=4",
            "grpo.max_new_tokens=3",
            "data.micro_batch_size=4",
            "grpo.mini_batches=2",
        ],
    }[cmd]
    return [
        sys.executable, "-m", "olmo2", cmd, f"recipes/demo-{cmd}.yaml", f"model.load_path={init}",
        f"data.paths=[{data}]", f"trainer.run_dir={run_dir}", f"trainer.max_steps={STEPS}", "data.epochs=null",
        "data.seq_len=48", "data.global_batch_size=4", "data.micro_batch_size=2", "optim.lr=1e-3",
        "checkpoint.save_interval=3", "checkpoint.keep_last=2", "logging.progress_bar=false",
        "logging.report=false", "logging.peak_flops=1e11", *extra,
    ]  # fmt: skip


def _losses(run):
    return [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow  # ~40 s each on a loaded 2-core CPU (three process starts)
@pytest.mark.timeout(300)
@pytest.mark.parametrize("cmd", ["sft", "dpo", "grpo"])
def test_sigkill_resume_is_exact(tmp_path, cmd):
    init, data = tiny_checkpoint(tmp_path), _data(tmp_path, cmd)
    ref, run, stdout = kill_and_resume(lambda r: _cmd(cmd, r, init, data), tmp_path, STEPS, ENV)
    assert "resumed from" in stdout
    assert _losses(run) == _losses(ref)
