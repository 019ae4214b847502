"""`olmo2 serve` end to end: a real server process on 127.0.0.1, the official `openai` client."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
import torch

from olmo2.infer.generate import generate
from olmo2.model.loss import token_logps

MAX_BATCH = 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(path, *args: str, env: dict | None = None):
    """`olmo2 serve` in a subprocess on a free loopback port; (base URL, process)."""
    port = _free_port()
    cmd = [sys.executable, "-m", "olmo2.cli", "serve", "--model", str(path), "--port", str(port)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.Popen(
        [*cmd, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):  # up to 60 s for torch + fastapi imports on a busy machine
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                return base, proc
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.1)
    proc.kill()
    pytest.fail("server did not come up")


@contextlib.contextmanager
def serve_in_thread(
    model, tok, name: str, api_key: str | None = None, max_len: int = 256, **limits
):
    """The same app on uvicorn in a thread of this process (no second torch import): a real
    HTTP server on a free loopback port. Yields the base URL."""
    import uvicorn

    from olmo2.infer.engine import Engine, EngineConfig
    from olmo2.infer.server import ServerLimits, create_app

    engine = Engine(model, EngineConfig(max_batch=MAX_BATCH, max_len=max_len)).start()
    app = create_app(engine, tok, name, ServerLimits(**limits), api_key)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(300):
            if server.started:
                break
            time.sleep(0.05)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        engine.stop()


def stop_server(proc) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


@pytest.fixture(scope="module")
def server(dolma2_ckpt):
    model, tok, path = dolma2_ckpt
    base, proc = start_server(
        path, "--max-batch", str(MAX_BATCH), "--max-len", "256", "--max-prompt-tokens", "64",
        "--max-tokens", "64", "--max-body-bytes", "20000",
    )  # fmt: skip
    yield base, proc, model, tok, path.name
    stop_server(proc)


def _client(base):
    return openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0, timeout=60)


def _greedy_text(model, tok, ids, n):
    out = generate(model, [ids], max_new_tokens=n, eos_token_id=tok.eos_token_id)[0]
    return tok.decode([t for t in out if t != tok.eos_token_id])


def test_completions_and_chat(server):
    base, _, model, tok, name = server
    client = _client(base)
    assert [m.id for m in client.models.list().data] == [name]
    prompt = "The capital of France is"
    r = client.completions.create(model=name, prompt=prompt, max_tokens=12, temperature=0)
    assert r.choices[0].text == _greedy_text(model, tok, tok.encode(prompt), 12)
    assert r.usage.prompt_tokens == len(tok.encode(prompt)) and r.usage.completion_tokens == 12
    assert r.choices[0].finish_reason == "length"
    # streaming gives the same text in pieces
    chunks = list(
        client.completions.create(
            model=name, prompt=prompt, max_tokens=12, temperature=0, stream=True
        )
    )
    assert "".join(c.choices[0].text for c in chunks) == r.choices[0].text
    assert chunks[-1].choices[0].finish_reason == "length"

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]
    chat_ids = tok.encode(tok.apply_chat_template(messages, add_generation_prompt=True))
    c = client.chat.completions.create(model=name, messages=messages, max_tokens=10, temperature=0)
    assert c.choices[0].message.role == "assistant"
    assert c.choices[0].message.content == _greedy_text(model, tok, chat_ids, 10)
    stream = client.chat.completions.create(
        model=name, messages=messages, max_tokens=10, temperature=0, stream=True
    )
    text = "".join(ch.choices[0].delta.content or "" for ch in stream)
    assert text == c.choices[0].message.content


def test_stop_string_and_seeded_sampling(server):
    base, _, model, tok, name = server
    client = _client(base)
    full = (
        client.completions.create(model=name, prompt="Once upon", max_tokens=16, temperature=0)
        .choices[0]
        .text
    )
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    assert stop.strip(), full
    r = client.completions.create(
        model=name, prompt="Once upon", max_tokens=16, temperature=0, stop=[stop]
    )
    assert r.choices[0].text == full[: full.find(stop)] and r.choices[0].finish_reason == "stop"
    kw = dict(model=name, prompt="Once upon", max_tokens=8, temperature=1.0, seed=3)
    assert (
        client.completions.create(**kw).choices[0].text
        == client.completions.create(**kw).choices[0].text
    )


def test_32_concurrent_requests_are_batched(server):
    base, _, _, _, name = server
    client = _client(base)
    before = httpx.get(base + "/stats").json()
    n_tokens = 16

    def one(i):
        if i % 2:
            msgs = [{"role": "user", "content": f"Question {i}?"}]
            r = client.chat.completions.create(
                model=name, messages=msgs, max_tokens=n_tokens, temperature=0
            )
            return r.usage.completion_tokens
        r = client.completions.create(
            model=name, prompt=f"Number {i} is", max_tokens=n_tokens, temperature=0
        )
        return r.usage.completion_tokens

    with ThreadPoolExecutor(32) as pool:
        counts = list(pool.map(one, range(32)))
    after = httpx.get(base + "/stats").json()
    generated = sum(counts)
    assert generated >= 32  # every request answered with at least one token
    passes = after["forward_passes"] - before["forward_passes"]
    # one-at-a-time serving would need one pass per generated token (+1 for each prefill)
    assert passes < generated * 0.5, (passes, generated)
    assert after["active"] == 0


@pytest.mark.parametrize(
    "path,body,status",
    [
        ("/v1/completions", b"{not json", 400),
        ("/v1/completions", b"[1, 2]", 400),
        ("/v1/completions", b'{"model": "M", "prompt": "hi", "max_tokens": NaN}', 400),
        ("/v1/completions", b'{"model": "M", "prompt": "hi", "n": Infinity}', 400),
        ("/v1/completions", json.dumps({"model": "nope", "prompt": "hi"}).encode(), 404),
        ("/v1/completions", json.dumps({"model": "M", "prompt": "word " * 200}).encode(), 400),
        (
            "/v1/completions",
            json.dumps({"model": "M", "prompt": "hi", "max_tokens": 10_000}).encode(),
            400,
        ),
        (
            "/v1/completions",
            json.dumps({"model": "M", "prompt": "hi", "temperature": "hot"}).encode(),
            400,
        ),
        ("/v1/completions", json.dumps({"model": "M", "prompt": "x" * 30_000}).encode(), 413),
        (
            "/v1/chat/completions",
            json.dumps({"model": "M", "messages": [{"role": "robot", "content": "x"}]}).encode(),
            400,
        ),
        ("/v1/nothing", b"{}", 404),
    ],
)
def test_bad_requests_get_json_errors(server, path, body, status):
    base, proc, _, _, name = server
    body = body.replace(b'"M"', json.dumps(name).encode())
    r = httpx.post(base + path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["message"]
    assert proc.poll() is None and httpx.get(base + "/health").status_code == 200


def test_openai_client_sees_errors(server):
    base, _, _, _, name = server
    client = _client(base)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="unknown-model", prompt="hi", max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="context_length_exceeded|limit"):
        client.completions.create(model=name, prompt="word " * 200, max_tokens=2)


def _forward_logps(model, ids):
    """token_logps of one forward over ids: the log-prob of ids[t + 1] at position t."""
    x = torch.tensor([ids])
    with torch.no_grad():
        return token_logps(model(x)[0, :-1], x[0, 1:]).tolist()


def test_completion_logprobs_and_echo(server):
    base, _, model, tok, name = server
    client = _client(base)
    prompt = "The capital of France is"
    ids = tok.encode(prompt)
    r = client.completions.create(
        model=name, prompt=prompt, max_tokens=3, temperature=0, logprobs=2, echo=True
    )
    c = r.choices[0]
    lp = c.logprobs
    assert c.text.startswith(prompt) and len(lp.tokens) == len(ids) + 3
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None  # nothing predicts it
    new = tok.encode(c.text)[len(ids) :]  # greedy tokens, re-encoded from the text
    assert lp.token_logprobs[1:] == pytest.approx(_forward_logps(model, ids + new), abs=1e-4)
    assert "".join(lp.tokens) == c.text and lp.text_offset[0] == 0
    assert lp.text_offset == sorted(lp.text_offset)
    for chosen, top in zip(lp.token_logprobs[len(ids) :], lp.top_logprobs[len(ids) :]):
        assert len(top) <= 3 and max(top.values()) == pytest.approx(chosen)  # greedy
    assert r.usage.prompt_tokens == len(ids) and r.usage.completion_tokens == 3
    # max_tokens=0 + echo: score the prompt only (how lm-eval and OpenAI clients score text)
    r0 = client.completions.create(model=name, prompt=ids, max_tokens=0, logprobs=1, echo=True)
    assert r0.choices[0].text == prompt and r0.usage.completion_tokens == 0
    assert r0.choices[0].logprobs.token_logprobs == lp.token_logprobs[: len(ids)]
    # a list of token-id lists is a batch of prompts; choice i answers prompt i
    rb = client.completions.create(model=name, prompt=[ids, ids[:2]], max_tokens=2, temperature=0)
    assert [ch.index for ch in rb.choices] == [0, 1]
    assert rb.choices[0].text == c.text[len(prompt) :][: len(rb.choices[0].text)]


def test_chat_logprobs_n_and_usage_in_streams(server):
    base, _, model, tok, name = server
    client = _client(base)
    messages = [{"role": "user", "content": "Hi!"}]
    ids = tok.encode(tok.apply_chat_template(messages, add_generation_prompt=True))
    r = client.chat.completions.create(
        model=name, messages=messages, max_tokens=4, temperature=0, logprobs=True, top_logprobs=3
    )
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens == 4
    new = [tok.encode(bytes(e.bytes).decode("utf-8", "replace")) for e in content]
    assert b"".join(bytes(e.bytes) for e in content).decode() == r.choices[0].message.content
    for e in content:
        assert len(e.top_logprobs) == 3 and e.top_logprobs[0].logprob == pytest.approx(e.logprob)
    flat = [t for ts in new for t in ts]
    if len(flat) == 4:  # each token re-encodes to itself: compare against the forward
        want = _forward_logps(model, ids + flat)[len(ids) - 1 :]
        assert [e.logprob for e in content] == pytest.approx(want, abs=1e-4)
    three = client.chat.completions.create(
        model=name, messages=messages, max_tokens=6, temperature=1.0, n=3, seed=11
    )
    assert [c.index for c in three.choices] == [0, 1, 2]
    again = client.chat.completions.create(
        model=name, messages=messages, max_tokens=6, temperature=1.0, n=3, seed=11
    )
    texts = [c.message.content for c in three.choices]
    assert texts == [c.message.content for c in again.choices]  # the same seed, the same samples
    assert len(set(texts)) > 1  # choice j samples with seed + j
    stream = client.completions.create(
        model=name, prompt="Hello", max_tokens=5, temperature=0, n=2, stream=True,
        stream_options={"include_usage": True}, logprobs=0,
    )  # fmt: skip
    chunks = list(stream)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 10
    assert all(ch.usage is None for ch in chunks[:-1])
    assert {ch.choices[0].index for ch in chunks[:-1]} == {0, 1}
    n_lps = sum(len(ch.choices[0].logprobs.tokens) for ch in chunks[:-1] if ch.choices[0].logprobs)
    assert n_lps == 10


def test_faults_from_the_issue(server):
    """Bad token ids get a 400 naming the id and do not fail requests batched with them; a
    one-token prompt [5] is one prompt; unsupported fields are refused by name."""
    base, _, model, tok, name = server
    url = base + "/v1/completions"

    def post(body):
        return httpx.post(url, json={"model": name, **body}, timeout=60)

    good = {"prompt": "Once upon a time", "max_tokens": 8, "temperature": 0}
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(post, good) for _ in range(6)]
        bad = [pool.submit(post, {"prompt": p, "max_tokens": 4}) for p in ([10**9, 5], [-1, 5])]
        answers = [f.result() for f in futures]
        refused = [f.result() for f in bad]
    assert [a.status_code for a in answers] == [200] * 6
    assert len({a.json()["choices"][0]["text"] for a in answers}) == 1
    for r, bad_id in zip(refused, ("1000000000", "-1")):
        assert r.status_code == 400 and f"token id {bad_id}" in r.json()["error"]["message"]
    one = post({"prompt": [5], "max_tokens": 2, "temperature": 0})
    assert one.status_code == 200 and one.json()["usage"]["prompt_tokens"] == 1
    assert post({"prompt": "hi", "n": 2, "max_tokens": 2}).json()["usage"]["completion_tokens"] == 4
    for field, value in [("best_of", 3), ("logit_bias", {"5": 10}), ("frobnicate", 1)]:
        r = post({"prompt": "hi", field: value})
        assert r.status_code == 400 and r.json()["error"]["param"] == field, r.text
    assert post({"prompt": "hi", "presence_penalty": 0, "max_tokens": 1}).status_code == 200
    r = post({"prompt": "hi", "max_tokens": 0})
    assert r.status_code == 400 and "echo" in r.json()["error"]["message"]
    chat = httpx.post(
        base + "/v1/chat/completions",
        json={"model": name, "messages": [{"role": "user", "content": "x"}],
              "response_format": {"type": "json_object"}},
    )  # fmt: skip
    assert chat.status_code == 400 and chat.json()["error"]["param"] == "response_format"


def test_disconnect_frees_slot_then_sigterm(server):
    base, proc, _, _, name = server
    body = {
        "model": name,
        "prompt": "Tell me a story",
        "max_tokens": 64,
        "temperature": 0,
        "stream": True,
    }
    with httpx.stream("POST", base + "/v1/completions", json=body) as r:
        next(r.iter_lines())  # first chunk arrived, then hang up
    for _ in range(100):
        if httpx.get(base + "/stats").json()["active"] == 0:
            break
        time.sleep(0.1)
    assert httpx.get(base + "/stats").json()["active"] == 0
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "served" in out


def test_queue_full_is_429(dolma2_ckpt):
    from fastapi.testclient import TestClient

    from olmo2.infer.engine import Engine, EngineConfig
    from olmo2.infer.server import create_app

    model, tok, _ = dolma2_ckpt
    engine = Engine(model, EngineConfig(max_batch=1, max_len=64, max_queue=0))  # never started
    client = TestClient(create_app(engine, tok, "m"))
    r = client.post("/v1/completions", json={"model": "m", "prompt": "hi", "max_tokens": 4})
    assert r.status_code == 429 and r.json()["error"]["type"] == "rate_limit_error"
    r = client.post("/v1/completions", json={"model": "m", "prompt": "hi", "max_tokens": 100})
    assert r.status_code == 400 and "context of 64" in r.json()["error"]["message"]
    assert r.json()["error"]["code"] == "context_length_exceeded"
