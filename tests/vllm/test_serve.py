"""A checkpoint olmo2 writes, served as it is by vLLM's OpenAI-compatible server (the CPU
build's `python -m vllm.entrypoints.openai.api_server`: its `vllm` console script is broken),
answers the `openai` client with olmo2's own greedy tokens, for a completion from token ids
and for a chat through the checkpoint's chat template."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from olmo2.infer.backends import GenerationParams, load_backend
from tests.vllm.conftest import MAX_LEN, require_vllm

pytestmark = pytest.mark.vllm

START_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def server(tiny, tmp_path_factory):
    require_vllm()
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]  # a free port
    log = (tmp_path_factory.mktemp("serve") / "server.log").open("w")
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny.path),
        "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
        "--max-model-len", str(MAX_LEN), "--max-num-seqs", "4", "--enforce-eager",
        "--kv-cache-memory-bytes", str(16 << 20), "--generation-config", "vllm",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the vLLM server exited with {proc.returncode}; see {log.name}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the vLLM server did not come up in {START_TIMEOUT_S} s; {log.name}")
            time.sleep(1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its engine-core process
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def client(server):
    import openai

    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=120)


def _olmo2_greedy(tiny, ids, n):
    return load_backend("olmo2", tiny.model, tiny.tok).generate([ids], GenerationParams(n))[0]


def test_model_listed(client, tiny):
    assert [m.id for m in client.models.list().data] == [str(tiny.path)]


def test_completion_from_token_ids(client, tiny):
    ids = tiny.tok.encode("the quick brown fox jumps over")
    out = client.completions.create(
        model=str(tiny.path), prompt=ids, max_tokens=24, temperature=0,
        extra_body={"return_token_ids": True, "skip_special_tokens": False},
    )  # fmt: skip
    ours = _olmo2_greedy(tiny, ids, 24)
    choice = out.choices[0]
    assert choice.model_extra["token_ids"] == ours.tokens
    assert choice.finish_reason == ours.finish_reason
    assert out.usage.completion_tokens == len(ours.tokens)


def test_chat(client, tiny):
    messages = [{"role": "user", "content": "the lazy dog"}]
    out = client.chat.completions.create(
        model=str(tiny.path), messages=messages, max_tokens=16, temperature=0,
        extra_body={"return_token_ids": True},
    )  # fmt: skip
    prompt = tiny.tok.encode(tiny.tok.apply_chat_template(messages, add_generation_prompt=True))
    assert out.model_extra["prompt_token_ids"] == prompt  # the saved template is olmo2's
    assert out.choices[0].model_extra["token_ids"] == _olmo2_greedy(tiny, prompt, 16).tokens
