"""A judge behind any OpenAI-compatible chat endpoint (OpenAI, vLLM, `olmo2 serve` itself).

`olmo2 eval --judge-url http://127.0.0.1:8000/v1 --judge-model NAME` (key from the
environment variable `--judge-key-env`, OPENAI_API_KEY by default; none for a local server).
Requests go to `POST {url}/chat/completions` with only the standard fields (model, messages,
max_tokens, temperature, logprobs, top_logprobs), from a few threads at once, retried with
backoff on 429 and 5xx. The standard library's `urllib` is the client: no SDK needed.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

log = logging.getLogger(__name__)


class JudgeError(RuntimeError):
    pass


def chat_url(url: str) -> str:
    """`http://host:port`, `.../v1` or the full `.../v1/chat/completions`."""
    url = url.rstrip("/")
    if url.endswith("/chat/completions"):
        return url
    return url + ("/chat/completions" if url.endswith("/v1") else "/v1/chat/completions")


@dataclass
class Judge:
    url: str
    model: str
    api_key: str | None = None
    timeout_s: float = 300.0
    workers: int = 8
    retries: int = 4

    @classmethod
    def from_env(cls, url: str, model: str, key_env: str = "OPENAI_API_KEY") -> Judge:
        return cls(url, model, os.environ.get(key_env) or None)

    def chat(self, messages: list[dict], max_tokens: int, top_logprobs: int = 0) -> dict:
        """The first choice of a greedy chat completion (OpenAI's response object)."""
        body = {"model": self.model, "messages": messages, "max_tokens": max_tokens,
                "temperature": 0}  # fmt: skip
        if top_logprobs:
            body |= {"logprobs": True, "top_logprobs": top_logprobs}
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(chat_url(self.url), json.dumps(body).encode(), headers)
        for attempt in range(self.retries + 1):
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    return json.loads(resp.read())["choices"][0]
            except urllib.error.HTTPError as e:
                detail = e.read().decode("utf-8", "replace")[:500]
                if e.code not in (429, 500, 502, 503, 504) or attempt == self.retries:
                    raise JudgeError(f"judge {self.url}: HTTP {e.code}: {detail}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                if attempt == self.retries:
                    raise JudgeError(f"judge {self.url} unreachable: {e}") from None
            time.sleep(min(30.0, 2.0**attempt))
        raise AssertionError("unreachable")

    def map(self, fn: Callable, items: Sequence) -> list:
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(fn, items))


def first_token_probs(choice: dict, tokens: Sequence[str]) -> dict[str, float] | None:
    """Probability of each of `tokens` as the first generated token, from the response's
    `top_logprobs` (tokens compared after stripping white space); None without log-probs."""
    content = (choice.get("logprobs") or {}).get("content") or []
    if not content:
        return None
    probs = dict.fromkeys(tokens, 0.0)
    for alt in content[0].get("top_logprobs") or []:
        t = alt["token"].strip()
        if t in probs:
            probs[t] += math.exp(alt["logprob"])
    return probs


def text_of(choice: dict) -> str:
    return (choice.get("message") or {}).get("content") or ""
