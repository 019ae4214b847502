"""`olmo2 serve` under load: 200 concurrent valid requests mixed with malformed ones and with
clients that hang up. Every valid request succeeds, every malformed one gets a 4xx with a JSON
error, nothing gets a 5xx, the server stays healthy, frees every slot, and its resident memory
returns near where it started. A real server process on 127.0.0.1; requests bounded in number
and time."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from tests.infer.test_server import start_server, stop_server

VALID = 200
MAX_TOKENS = 8


def _rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _valid(i: int, name: str) -> tuple[str, dict]:
    """A mix of what clients send: completions, chat, streams, log-probs, echo, n, batches."""
    msgs = [{"role": "user", "content": f"Question {i}?"}]
    kinds = [
        ("/v1/completions", {"prompt": f"Number {i} is", "temperature": 0}),
        ("/v1/chat/completions", {"messages": msgs, "temperature": 0.8, "seed": i}),
        ("/v1/completions", {"prompt": f"Say {i}", "stream": True, "logprobs": 2}),
        ("/v1/chat/completions", {"messages": msgs, "stream": True, "logprobs": True, "top_logprobs": 2}),
        ("/v1/completions", {"prompt": [[5, 6, 7], [8, 9]], "echo": True, "logprobs": 1, "n": 2}),
        ("/v1/completions", {"prompt": f"Score {i}", "echo": True, "logprobs": 0, "max_tokens": 0}),
    ]  # fmt: skip
    path, body = kinds[i % len(kinds)]
    return path, {"model": name, "max_tokens": MAX_TOKENS, **body}


def _malformed(name: str) -> list[tuple[str, bytes, int]]:
    """(path, raw body, expected status)."""

    def js(**body):
        return json.dumps({"model": name, **body}).encode()

    bad = [
        ("/v1/completions", b"{not json", 400),
        ("/v1/completions", b"", 400),
        ("/v1/completions", b"[" * 5000 + b"]" * 5000, 400),  # nesting deeper than json allows
        ("/v1/completions", b'"just a string"', 400),
        ("/v1/completions", js(prompt=5), 400),
        ("/v1/completions", js(prompt="hi", max_tokens="ten"), 400),
        ("/v1/completions", js(prompt="hi", max_tokens=-1), 400),
        ("/v1/completions", js(prompt="hi", max_tokens=10**12), 400),
        ("/v1/completions", js(prompt="hi", temperature=float("nan")), 400),
        ("/v1/completions", js(prompt="hi", max_tokens=float("inf")), 400),
        ("/v1/completions", js(prompt="hi", n=float("nan")), 400),
        ("/v1/completions", js(prompt="hi", n=0), 400),
        ("/v1/completions", js(prompt="hi", logprobs=1000), 400),
        ("/v1/completions", js(prompt="hi", stream="yes"), 400),
        ("/v1/completions", js(prompt="hi", stop=[1, 2]), 400),
        ("/v1/completions", js(prompt="hi", unknown_field=1), 400),
        ("/v1/completions", js(prompt=[[]]), 400),
        ("/v1/completions", js(prompt=[10**12]), 400),
        ("/v1/completions", js(prompt="hi \ud800 there"), 400),  # a lone surrogate
        ("/v1/completions", js(prompt="x", stream_options={"include_usage": True}), 400),
        ("/v1/completions", json.dumps({"model": "other", "prompt": "hi"}).encode(), 404),
        ("/v1/completions", js(prompt="x" * (20 << 20)), 413),  # a 20 MB body
        ("/v1/chat/completions", js(messages="hi"), 400),
        ("/v1/chat/completions", js(messages=[{"role": "user"}]), 400),
        ("/v1/chat/completions", js(messages=[["user", "hi"]]), 400),
        ("/v1/chat/completions", js(messages=[{"role": "user", "content": "x"}], top_logprobs=2), 400),
        ("/v1/chat/completions", js(messages=[{"role": "user", "content": "x"}], tools=[{"type": "function"}]), 400),
        ("/v1/nothing", b"{}", 404),
    ]  # fmt: skip
    return bad


async def _send_valid(client, path, body):
    if not body.get("stream"):
        r = await client.post(path, json=body)
        assert r.status_code == 200, r.text
        return r.json()
    async with client.stream("POST", path, json=body) as r:
        assert r.status_code == 200, await r.aread()
        lines = [line async for line in r.aiter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line[6:]) for line in lines[:-1]]


async def _send_malformed(client, path, raw, status):
    r = await client.post(path, content=raw, headers={"content-type": "application/json"})
    assert r.status_code == status, (path, raw[:80], r.status_code, r.text[:300])
    assert r.json()["error"]["message"]
    return r.status_code


async def _hang_up(client, name, i):
    """A client that reads the first chunk of a stream and goes; one that gives up on a long
    non-streaming request."""
    body = {"model": name, "prompt": f"Go on {i}", "max_tokens": 100, "stream": True}
    async with client.stream("POST", "/v1/completions", json=body) as r:
        async for _ in r.aiter_lines():
            break
    try:
        await client.post("/v1/completions", json={**body, "stream": False}, timeout=0.3)
    except httpx.TimeoutException:
        pass


async def _storm(base, name, n_valid=VALID):
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=50)
    async with httpx.AsyncClient(base_url=base, timeout=300, limits=limits) as client:
        valid = [_send_valid(client, *_valid(i, name)) for i in range(n_valid)]
        bad = [_send_malformed(client, *m) for m in _malformed(name)]
        gone = [_hang_up(client, name, i) for i in range(8)]
        results = await asyncio.gather(*valid, *bad, *gone)
    return results[:n_valid]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_200_concurrent_requests_with_malformed_ones(dolma2_ckpt):
    _, _, path = dolma2_ckpt
    base, proc = start_server(
        path, "--max-batch", "8", "--max-len", "128", "--max-queue", "400",
        "--max-tokens", "100", "--max-body-bytes", str(1 << 20),
    )  # fmt: skip
    try:
        asyncio.run(_storm(base, path.name, 24))  # warm-up: first-call allocations, caches
        _wait_idle(base)
        start = _rss_mb(proc.pid)
        results = asyncio.run(_storm(base, path.name))
        _wait_idle(base)
        end = _rss_mb(proc.pid)
        assert httpx.get(base + "/health").json() == {"status": "ok"}
        for i, out in enumerate(results):
            _, body = _valid(i, path.name)
            if body.get("stream"):
                assert out and all("choices" in c for c in out)
            else:
                assert len(out["choices"]) == (4 if body.get("n") == 2 else 1)
                assert out["usage"]["total_tokens"] > 0
        assert end < start + 64, (start, end)  # MB: back near the starting level
    finally:
        log = stop_server(proc)
    assert "Traceback" not in log and "request failed" not in log, log[-3000:]
    print(f"server RSS: {start:.0f} MB before, {end:.0f} MB after the second storm")


def _wait_idle(base: str) -> None:
    for _ in range(300):
        s = httpx.get(base + "/stats").json()
        if s["active"] == 0 and s["waiting"] == 0:
            return
        time.sleep(0.1)
    pytest.fail(f"server still busy: {s}")
