"""vLLM failing to start is a clear `BackendUnavailable` (what failed, what to install) and
leaves nothing in shared memory."""

from __future__ import annotations

import shutil

import pytest

from olmo2.infer.backends import BackendUnavailable, load_backend
from tests.vllm.conftest import engine_options, require_vllm
from tests.vllm.test_backend import _shm_entries

pytestmark = pytest.mark.vllm


def test_bad_engine_option(tiny):
    require_vllm()
    before = _shm_entries()
    with pytest.raises(
        BackendUnavailable, match=r"(?s)vLLM failed to start.*max_model_len.*olmo2\[vllm\]"
    ):
        load_backend("vllm", tiny.model, tiny.tok, **engine_options(max_model_len=10**6))
    assert _shm_entries() == before


def test_damaged_checkpoint(tiny, tmp_path):
    require_vllm()
    bad = tmp_path / "damaged"
    shutil.copytree(tiny.path, bad)
    (bad / "model.safetensors").write_bytes(b"\0" * 64)  # the engine core dies loading it
    before = _shm_entries()
    with pytest.raises(BackendUnavailable, match=f"vLLM failed to start on {bad}"):
        load_backend("vllm", bad, **engine_options())
    assert _shm_entries() == before
