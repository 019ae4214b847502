"""The OpenAI API's request fields and response objects, for `olmo2 serve`.

Field by field after the OpenAI API reference (platform.openai.com/docs/api-reference:
"Completions" (legacy) and "Chat"), and where OpenAI is silent after vLLM's server
(vllm/entrypoints/openai/protocol.py), which lm-evaluation-harness's `local-completions`
backend and most clients are written against:

- every field a request may carry is listed; any other is refused with a 400 naming it, and
  so is a listed field we do not implement when it is set to anything but its no-op value
  (`presence_penalty: 0`, `logit_bias: {}`, `response_format: {"type": "text"}`, ...);
- `logprobs` are of the raw model distribution (before temperature and top-p), as vLLM's
  default; `echo` puts the prompt's tokens first, the first one's log-prob `null`;
- `max_tokens: 0` is allowed with `echo` (score a prompt, generate nothing);
- `n` choices per prompt, `index = prompt_index * n + j`; with a `seed`, choice j samples with
  seed + j, so a request is reproducible and its choices differ;
- `usage` on every response; a stream with `stream_options.include_usage` ends with a chunk
  whose `choices` is empty and which carries `usage`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from olmo2.infer.engine import Logprobs
from olmo2.infer.generate import SamplingConfig


class APIError(Exception):
    """An error answered as `{"error": {"message", "type", "param", "code"}}`."""

    def __init__(
        self, status: int, message: str, type_: str = "invalid_request_error", param=None, code=None
    ):
        super().__init__(message)
        self.status, self.message, self.type = status, message, type_
        self.param, self.code = param, code

    def body(self) -> dict:
        e = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return {"error": e}


@dataclass
class ServerLimits:
    max_prompt_tokens: int = 2048
    max_tokens: int = 1024
    """Largest `max_tokens` a request may ask for."""
    max_body_bytes: int = 1 << 20
    default_max_tokens: int = 256
    """`max_tokens` when a request has none (less where the context has less room)."""
    max_choices: int = 64
    """Prompts × n per request."""
    max_logprobs: int = 20
    """Largest `logprobs` / `top_logprobs` (OpenAI: 5 and 20; vLLM's default: 20)."""


COMMON = {"model", "max_tokens", "temperature", "top_p", "top_k", "n", "stream", "stream_options"}
COMMON |= {"stop", "seed", "user"}
COMPLETION_FIELDS = COMMON | {"prompt", "logprobs", "echo"}
CHAT_FIELDS = COMMON | {"messages", "max_completion_tokens", "logprobs", "top_logprobs"}
NO_OP = {
    "presence_penalty": (0, 0.0),
    "frequency_penalty": (0, 0.0),
    "logit_bias": ({},),
    "suffix": ("",),
    "response_format": ({"type": "text"},),
    "tools": ([],),
    "tool_choice": ("none",),
    "parallel_tool_calls": (True, False),
    "store": (False,),
    "metadata": ({},),
    "service_tier": ("auto", "default"),
}
"""Fields accepted only at a value that asks for nothing (or null)."""


@dataclass
class Params:
    """A parsed request: what every choice runs with."""

    sampling: SamplingConfig
    max_tokens: int | None
    """None: `limits.default_max_tokens`, less where the prompt leaves less room."""
    n: int
    stop: list[str]
    logprobs: int | None
    """Alternatives per token (None: no log-probs)."""
    echo: bool
    stream: bool
    include_usage: bool

    def choice_sampling(self, j: int, max_new_tokens: int) -> SamplingConfig:
        seed = None if self.sampling.seed is None else self.sampling.seed + j
        return replace(self.sampling, max_new_tokens=max(max_new_tokens, 1), seed=seed)


# ---- fields --------------------------------------------------------------------------------
def _number(body: dict, key: str, default, lo: float, hi: float, kind=float):
    v = body.get(key)
    if v is None:
        return default
    number = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if not number or (kind is int and v != int(v)):
        raise APIError(
            400,
            f"'{key}' must be {'an integer' if kind is int else 'a number'}, got {v!r}",
            param=key,
        )
    if not lo <= v <= hi:
        raise APIError(400, f"'{key}' must be in [{lo}, {hi}], got {v}", param=key)
    return kind(v)


def _flag(body: dict, key: str) -> bool:
    v = body.get(key, False)
    if v is None:
        return False
    if not isinstance(v, bool):
        raise APIError(400, f"'{key}' must be true or false, got {v!r}", param=key)
    return v


def check_fields(body: dict, allowed: set[str]) -> None:
    for key, value in body.items():
        if key in allowed or value is None:
            continue
        if key in NO_OP:
            if value in NO_OP[key]:
                continue
            raise APIError(400, f"'{key}' is not supported (only {NO_OP[key][0]!r})", param=key)
        raise APIError(400, f"unsupported field '{key}'", param=key)


def _stop(body: dict) -> list[str]:
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) for s in stop):
        raise APIError(400, "'stop' must be a string or a list of up to 4 strings", param="stop")
    return [s for s in stop if s]


def _logprobs(body: dict, chat: bool, limits: ServerLimits) -> int | None:
    """Completions: `logprobs` is the number of alternatives. Chat: `logprobs` is a flag and
    `top_logprobs` the number, which needs the flag (as OpenAI answers)."""
    hi = limits.max_logprobs
    if not chat:
        return _number(body, "logprobs", None, 0, hi, int)
    top = _number(body, "top_logprobs", None, 0, hi, int)
    if not _flag(body, "logprobs"):
        if top is not None:
            raise APIError(400, "'top_logprobs' needs 'logprobs': true", param="top_logprobs")
        return None
    return top or 0


def parse_params(body: dict, chat: bool, limits: ServerLimits) -> Params:
    check_fields(body, CHAT_FIELDS if chat else COMPLETION_FIELDS)
    echo = False if chat else _flag(body, "echo")
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _number(body, key, None, 0, limits.max_tokens, int)
    if max_tokens == 0 and not echo:
        raise APIError(400, f"'{key}' must be at least 1 (0 only with echo)", param=key)
    n = _number(body, "n", 1, 1, limits.max_choices, int)
    temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
    top_k = _number(body, "top_k", -1, -1, 1 << 30, int)  # vLLM's extension; -1 (or 0) = off
    seed = _number(body, "seed", None, -(1 << 63), (1 << 63) - 1, int)
    stream_options = body.get("stream_options") or {}
    stream = _flag(body, "stream")
    if not isinstance(stream_options, dict) or set(stream_options) - {"include_usage"}:
        raise APIError(
            400, "'stream_options' may only hold 'include_usage'", param="stream_options"
        )
    if stream_options and not stream:
        raise APIError(400, "'stream_options' needs 'stream': true", param="stream_options")
    sampling = SamplingConfig(
        1, temperature, top_k if top_k > 0 else None, top_p if 0 < top_p < 1 else None, seed
    )
    if top_p == 0:  # nothing but the top token survives
        sampling.temperature = 0.0
    include_usage = _flag(stream_options, "include_usage")
    return Params(
        sampling,
        max_tokens,
        n,
        _stop(body),
        _logprobs(body, chat, limits),
        echo,
        stream,
        include_usage,
    )


def _is_id(t) -> bool:
    return isinstance(t, int) and not isinstance(t, bool)


def parse_prompts(prompt) -> list[str | list[int]]:
    """The OpenAI `prompt`: a string, a list of strings, one list of token ids, or a list of
    token-id lists (one prompt each)."""
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt) or all(
            isinstance(p, list) and p and all(map(_is_id, p)) for p in prompt
        ):
            return prompt
        if all(map(_is_id, prompt)):
            return [prompt]
    raise APIError(
        400,
        "'prompt' must be a string, a list of strings, a list of token ids or a list of "
        "token-id lists",
        param="prompt",
    )


def message_content(c):
    """A message's content: a string, or OpenAI's list of {"type": "text", "text": ...} parts."""
    if isinstance(c, list):
        return "".join(
            p.get("text", "") for p in c if isinstance(p, dict) and p.get("type") == "text"
        )
    return c


# ---- responses -----------------------------------------------------------------------------
def _unicode_to_bytes() -> dict[str, int]:
    """Byte-level BPE's printable stand-ins back to the bytes they stand for (openai/gpt-2
    src/encoder.py, `bytes_to_unicode`, inverted): printable bytes stand for themselves, the
    other 68 for chr(256), chr(257), ... in byte order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    keep += range(ord("®"), ord("ÿ") + 1)
    rest = [b for b in range(256) if b not in keep]
    return {chr(b): b for b in keep} | {chr(256 + n): b for n, b in enumerate(rest)}


class TokenText:
    """Token id -> (text, bytes) for log-prob entries. Bytes are the token's own (a byte-level
    BPE token may be part of a UTF-8 character: OpenAI's `bytes` field exists for that); the
    text is those bytes decoded, with U+FFFD for an incomplete character, as vLLM reports."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        backend = tokenizer.backend
        self._backend = backend
        self._byte_level = "ByteLevel" in repr(backend.decoder)
        self._special = set(backend.get_added_tokens_decoder())
        self._to_byte = _unicode_to_bytes()
        self._cache: dict[int, tuple[str, bytes]] = {}

    def get(self, token: int) -> tuple[str, bytes]:
        if token not in self._cache:
            piece = self._backend.id_to_token(token)
            if piece is None:  # a padding row of the embedding, past the tokenizer's vocabulary
                raw = b""
            elif (
                self._byte_level
                and token not in self._special
                and set(piece) <= self._to_byte.keys()
            ):
                raw = bytes(self._to_byte[ch] for ch in piece)
            else:
                raw = self.tok.decode([token]).encode()
            self._cache[token] = (raw.decode("utf-8", errors="replace"), raw)
        return self._cache[token]

    def text(self, token: int) -> str:
        return self.get(token)[0]


Entry = tuple[int, Logprobs | None]
"""A reported token and its log-probs (None for a prompt's first token)."""


def completion_logprobs(entries: list[Entry], tt: TokenText, offset: int) -> dict:
    """The legacy Completions `logprobs` object; `offset`: text offset of the first token.
    The sampled token is always among `top_logprobs`, as vLLM does (so up to logprobs + 1)."""
    out = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for tok, lp in entries:
        text = tt.text(tok)
        out["tokens"].append(text)
        out["text_offset"].append(offset)
        offset += len(text)
        out["token_logprobs"].append(None if lp is None else lp.logprob)
        top = None
        if lp is not None:
            top = {}
            for t, v in [*lp.top, (lp.token, lp.logprob)]:  # two ids may share a text
                top.setdefault(tt.text(t), v)
        out["top_logprobs"].append(top)
    return out


def chat_logprobs(entries: list[Entry], tt: TokenText) -> dict:
    def item(t: int, v: float) -> dict:
        text, raw = tt.get(t)
        return {"token": text, "logprob": v, "bytes": list(raw)}

    content = [
        {**item(tok, lp.logprob), "top_logprobs": [item(t, v) for t, v in lp.top]}
        for tok, lp in entries
    ]
    return {"content": content, "refusal": None}


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
