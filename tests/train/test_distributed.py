"""2-process gloo runs (torchrun) equal the 1-process run; checkpoints move across world sizes."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from olmo2.model.hf import read_state_dict
from olmo2.train import checkpoint as ckpt

from .helpers import args, losses, train, write_tokens

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
EXTRA = ("data.micro_batch_size=2", "checkpoint.save_interval=2")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(run_dir, data, *extra):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2"]
    cmd += ["--master-addr", "127.0.0.1", "--master-port", str(_free_port()), "-m", "olmo2"]
    cmd += args(run_dir, data, *EXTRA, *extra, steps=4)
    proc = subprocess.Popen(
        cmd,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and its workers, nothing else
        out, err = proc.communicate()
        pytest.fail(f"torchrun timed out: {err[-3000:]}")
    assert proc.returncode == 0, err[-3000:]
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("dist")
    data = write_tokens(d / "t.npy", n=8_000)
    assert train(d / "one", data, *EXTRA, steps=4) == 0
    _torchrun(d / "ddp", data, "distributed.strategy=ddp")
    _torchrun(d / "fsdp", data, "distributed.strategy=fsdp", "distributed.param_dtype=fp32")
    return d, data


@pytest.mark.timeout(300)
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_equal_one(runs, strategy):
    d, _ = runs
    np.testing.assert_allclose(losses(d / strategy), losses(d / "one"), rtol=0, atol=1e-5)
    a, b = read_state_dict(ckpt.latest(d / strategy)), read_state_dict(ckpt.latest(d / "one"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-5)


@pytest.mark.timeout(300)
def test_resume_two_process_checkpoint_in_one_process(runs, tmp_path):
    """DCP train state is topology-agnostic: a 2-rank FSDP checkpoint resumes on 1 process."""
    d, data = runs
    run = tmp_path / "run"
    run.mkdir()
    shutil.copytree(d / "fsdp" / "stage1-step2-tokens0B", run / "stage1-step2-tokens0B")
    assert train(run, data, *EXTRA, steps=4) == 0
    np.testing.assert_allclose(losses(run)[-2:], losses(d / "one")[-2:], rtol=0, atol=1e-5)
