"""`olmo2 serve --api-key` / $OLMO2_API_KEY and the Prometheus `/metrics` behind it: the app
on uvicorn on 127.0.0.1, the `openai` client, and prometheus_client's own parser."""

from __future__ import annotations

import argparse
import logging
import re

import httpx
import openai
import pytest

from olmo2.infer.server import add_arguments, api_key_for, is_loopback
from tests.infer.test_server import serve_in_thread

KEY = "sk-test-0123456789"


@pytest.fixture(scope="module")
def keyed(dolma2_ckpt):
    model, tok, path = dolma2_ckpt
    with serve_in_thread(model, tok, path.name, api_key=KEY, max_len=128) as base:
        yield base, path.name


def _routes(name):
    chat = {"model": name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    return [
        ("GET", "/v1/models", None),
        ("POST", "/v1/completions", {"model": name, "prompt": "hi", "max_tokens": 2}),
        ("POST", "/v1/chat/completions", chat),
        ("GET", "/metrics", None),
        ("GET", "/stats", None),
    ]


def test_key_required_on_every_route_but_health(keyed):
    base, name = keyed
    assert httpx.get(base + "/health").status_code == 200
    wrong = [
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": KEY},
        {"Authorization": f"Basic {KEY}"},
    ]
    for method, path, body in [*_routes(name), ("GET", "/v1/nothing", None)]:
        for headers in wrong:
            r = httpx.request(method, base + path, json=body, headers=headers)
            assert r.status_code == 401, (path, headers, r.text)
            assert r.json()["error"]["type"] == "authentication_error"
    ok = {"Authorization": f"Bearer {KEY}"}
    for method, path, body in _routes(name):
        r = httpx.request(method, base + path, json=body, headers=ok, timeout=60)
        assert r.status_code == 200, (path, r.text)
    assert httpx.get(base + "/v1/nothing", headers=ok).status_code == 404


def test_openai_client_with_and_without_the_key(keyed):
    base, name = keyed
    bad = openai.OpenAI(base_url=base + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.completions.create(model=name, prompt="hi", max_tokens=2)
    good = openai.OpenAI(base_url=base + "/v1", api_key=KEY, max_retries=0, timeout=60)
    assert good.completions.create(model=name, prompt="hi", max_tokens=2).usage.total_tokens > 0


def _samples(text: str) -> dict[str, float]:
    """Prometheus text format -> {name + sorted labels: value}, by prometheus_client's own
    parser when installed, else by the format's grammar (prometheus.io/docs/instrumenting/
    exposition_formats): `# HELP`/`# TYPE` lines, then `name{label="value",...} number`."""
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        out = {}
        for line in text.splitlines():
            if line.startswith("# HELP ") or line.startswith("# TYPE "):
                continue
            m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)", line)
            assert m, line
            labels = sorted(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m[2] or ""))
            out[m[1] + str(labels)] = float(m[3])
        return out
    return {
        s.name + str(sorted(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def test_metrics_in_prometheus_text_format(keyed, dolma2_tok):
    base, name = keyed
    client = openai.OpenAI(base_url=base + "/v1", api_key=KEY, max_retries=0, timeout=60)
    ok = {"Authorization": f"Bearer {KEY}"}

    def scrape() -> dict:
        r = httpx.get(base + "/metrics", headers=ok)
        assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
        return _samples(r.text)

    before = scrape()
    for i in range(3):
        client.completions.create(model=name, prompt=f"Count {i}", max_tokens=4, temperature=0)
    after = scrape()

    def grew(key):
        return after[key] - before.get(key, 0.0)

    assert grew("olmo2_generation_tokens_total[]") == 12
    assert (
        grew("olmo2_prompt_tokens_total[]") == 3 * len("Count 0".split())
        or grew("olmo2_prompt_tokens_total[]") > 0
    )
    assert grew("olmo2_time_to_first_token_seconds_count[]") == 3
    assert grew("olmo2_time_per_output_token_seconds_count[]") == 9  # 3 gaps per request
    assert grew("olmo2_requests_total[('finish_reason', 'length')]") == 3
    assert (
        after["olmo2_time_to_first_token_seconds_bucket[('le', '+Inf')]"]
        == after["olmo2_time_to_first_token_seconds_count[]"]
    )
    assert after["olmo2_requests_running[]"] == 0 and after["olmo2_requests_waiting[]"] == 0


def test_key_from_the_environment_and_the_warning(monkeypatch, caplog):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.org")
    p = argparse.ArgumentParser()
    add_arguments(p)

    def args(*extra):
        return p.parse_args(["--model", "m", *extra])

    monkeypatch.delenv("OLMO2_API_KEY", raising=False)
    with caplog.at_level(logging.WARNING, logger="olmo2.infer.server"):
        assert api_key_for(args()) is None and not caplog.records  # loopback: no warning
        assert api_key_for(args("--host", "0.0.0.0")) is None
    assert "without an API key" in caplog.text
    caplog.clear()
    monkeypatch.setenv("OLMO2_API_KEY", KEY)
    with caplog.at_level(logging.WARNING, logger="olmo2.infer.server"):
        assert api_key_for(args("--host", "0.0.0.0")) == KEY and not caplog.records
    assert api_key_for(args("--api-key", "other")) == "other"  # the flag wins
