"""The vLLM backend's shared-memory work directories: a killed run's are swept by the next
backend (runs without vLLM installed: the sweep imports nothing of it)."""

from __future__ import annotations

import os
import subprocess
import sys

from olmo2.infer.backends.vllm import new_workdir, sweep_workdirs


def test_workdirs_of_dead_owners_are_swept_live_ones_kept(tmp_path):
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead = tmp_path / "olmo2-vllm-dead"
    (dead / "v0").mkdir(parents=True)
    (dead / "owner.pid").write_text(done.stdout.strip())
    unmarked = tmp_path / "olmo2-vllm-unmarked"  # not ours to judge: left alone
    unmarked.mkdir()
    other = tmp_path / "something-else"
    other.mkdir()
    mine = new_workdir(str(tmp_path))  # sweeps first
    assert (mine / "owner.pid").read_text() == str(os.getpid())
    assert not dead.exists() and unmarked.exists() and other.exists()
    assert sweep_workdirs(tmp_path) == [] and mine.exists()  # a live owner's stays
