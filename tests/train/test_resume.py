"""Exact resume: SIGKILL mid-run, restart, and the loss sequence is bitwise the same."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from olmo2.train import checkpoint as ckpt

from .helpers import args, losses, train, write_tokens

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
STEPS = 14


def _cmd(run_dir, data):
    extra = ["checkpoint.save_interval=3", "checkpoint.keep_last=2", "optim.spike_min_steps=2"]
    return [sys.executable, "-m", "olmo2", *args(run_dir, data, *extra, steps=STEPS)]


@pytest.mark.timeout(300)
def test_sigkill_resume_is_bitwise_exact(tmp_path):
    data = write_tokens(tmp_path / "train.npy", n=8_000)
    ref = tmp_path / "ref"
    assert subprocess.run(_cmd(ref, data), env=ENV, capture_output=True).returncode == 0
    run = tmp_path / "run"
    proc = subprocess.Popen(
        _cmd(run, data), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    metrics, deadline = run / "metrics.jsonl", time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 8:
            break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    n_before = len(losses(run))
    assert 8 <= n_before < STEPS, "the kill should land mid-run"
    # a checkpoint cut mid-write (hidden temp dir, or a dir without olmo2.json) is never used
    (run / ".stage1-step12-tokens0B.tmp" / "train_state").mkdir(parents=True)
    (run / "stage1-step13-tokens0B").mkdir()
    (run / "stage1-step13-tokens0B" / "config.json").write_text("{}")
    assert ckpt.latest(run).name in {f"stage1-step{s}-tokens0B" for s in (6, 9)}
    out = subprocess.run(_cmd(run, data), env=ENV, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "resumed from" in out.stdout
    assert losses(run) == losses(ref)  # bitwise: float equality of every step's loss


def test_completed_run_restart_is_noop(tmp_path, capsys):
    data = write_tokens(tmp_path / "train.npy", n=4_000)
    assert train(tmp_path / "r", data, steps=2) == 0
    before = losses(tmp_path / "r")
    assert train(tmp_path / "r", data, steps=2) == 0
    assert "already complete" in capsys.readouterr().out
    assert losses(tmp_path / "r") == before
