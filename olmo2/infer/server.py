"""`olmo2 serve`: an OpenAI-compatible HTTP server (FastAPI + uvicorn) over the batching engine.

Endpoints follow the OpenAI API reference (platform.openai.com/docs/api-reference):
`POST /v1/completions`, `POST /v1/chat/completions` (both with `stream: true` as server-sent
events, `data: {chunk}` lines ending with `data: [DONE]`), `GET /v1/models`, `GET /health`,
plus `GET /stats` (engine counters). Errors are JSON `{"error": {"message", "type", "param",
"code"}}` with a 4xx status: 400 bad request, 404 unknown model, 413 body too large, 429 queue
full. Chat prompts use the OLMo 2 template (`olmo2.tokenizer.render_chat`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from olmo2.infer.engine import Engine, EngineConfig, QueueFullError
from olmo2.infer.generate import Drain, SamplingConfig
from olmo2.infer.load import load_for_inference

log = logging.getLogger(__name__)


@dataclass
class ServerLimits:
    max_prompt_tokens: int = 2048
    max_tokens: int = 1024
    """Largest `max_tokens` a request may ask for."""
    max_body_bytes: int = 1 << 20
    default_max_tokens: int = 256


class APIError(Exception):
    def __init__(
        self, status: int, message: str, type_: str = "invalid_request_error", param=None, code=None
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = (
            status,
            message,
            type_,
            param,
            code,
        )

    def body(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


# ---- request parsing ---------------------------------------------------------------------------
def _number(body: dict, key: str, default, lo: float, hi: float, kind=float):
    v = body.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and v != int(v)):
        raise APIError(400, f"'{key}' must be a {kind.__name__}, got {v!r}", param=key)
    if not lo <= v <= hi:
        raise APIError(400, f"'{key}' must be in [{lo}, {hi}], got {v}", param=key)
    return kind(v)


def parse_sampling(body: dict, limits: ServerLimits) -> tuple[SamplingConfig, list[str]]:
    """OpenAI request fields -> SamplingConfig and stop strings. OpenAI's default temperature is
    1.0; temperature 0 means greedy here as there."""
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    max_tokens = _number(
        {"max_tokens": max_tokens},
        "max_tokens",
        limits.default_max_tokens,
        1,
        limits.max_tokens,
        int,
    )
    temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise APIError(400, f"'seed' must be an integer, got {seed!r}", param="seed")
    if _number(body, "n", 1, 1, 1, int) != 1:
        raise APIError(400, "only n=1 is supported", param="n")
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) for s in stop):
        raise APIError(400, "'stop' must be a string or a list of up to 4 strings", param="stop")
    cfg = SamplingConfig(
        max_tokens, temperature, None, top_p if top_p and top_p < 1 else None, seed
    )
    return cfg, [s for s in stop if s]


# ---- the app -----------------------------------------------------------------------------------
def create_app(engine: Engine, tokenizer, model_name: str, limits: ServerLimits | None = None):
    limits = limits or ServerLimits()
    app = FastAPI(title="olmo2", version="1")
    app.state.engine = engine
    created = int(time.time())

    @app.exception_handler(APIError)
    async def _api_error(_req, e: APIError):
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(HTTPException)
    async def _http_error(_req, e: HTTPException):
        return JSONResponse(
            APIError(e.status_code, str(e.detail)).body(), status_code=e.status_code
        )

    @app.exception_handler(Exception)
    async def _internal(_req, e: Exception):
        log.exception("request failed")
        return JSONResponse(
            APIError(500, f"internal error: {e}", "server_error").body(), status_code=500
        )

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/stats")
    async def stats():
        return {
            "forward_passes": engine.forward_passes,
            "tokens_generated": engine.tokens_generated,
            "requests_done": engine.requests_done,
            "active": engine.active,
            "waiting": engine.waiting.qsize(),
        }

    @app.get("/v1/models")
    async def models():
        card = {"id": model_name, "object": "model", "created": created, "owned_by": "olmo2"}
        return {"object": "list", "data": [card]}

    async def read_body(request: Request) -> dict:
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > limits.max_body_bytes:
            raise APIError(413, f"request body over {limits.max_body_bytes} bytes")
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > limits.max_body_bytes:
                raise APIError(413, f"request body over {limits.max_body_bytes} bytes")
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise APIError(400, f"request body is not valid JSON: {e}") from None
        if not isinstance(body, dict):
            raise APIError(400, "request body must be a JSON object")
        model = body.get("model")
        if model != model_name:
            raise APIError(
                404,
                f"the model {model!r} does not exist; this server has {model_name!r}",
                code="model_not_found",
                param="model",
            )
        return body

    def encode_prompt(ids: list[int]) -> list[int]:
        if not ids:
            raise APIError(400, "the prompt is empty", param="prompt")
        if len(ids) > limits.max_prompt_tokens:
            raise APIError(
                400,
                f"the prompt has {len(ids)} tokens; the limit is {limits.max_prompt_tokens}",
                param="prompt",
                code="context_length_exceeded",
            )
        return ids

    async def run(request: Request, ids: list[int], body: dict, chat: bool):
        cfg, stop = parse_sampling(body, limits)
        if len(ids) + cfg.max_new_tokens > engine.max_len:
            raise APIError(
                400,
                f"prompt ({len(ids)} tokens) + max_tokens ({cfg.max_new_tokens}) exceeds the context length {engine.max_len}",
                param="max_tokens",
                code="context_length_exceeded",
            )
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def on_token(tok, reason):  # engine thread -> event loop
            loop.call_soon_threadsafe(events.put_nowait, (tok, reason))

        try:
            req = engine.submit(ids, cfg, on_token, [tokenizer.eos_token_id])
        except QueueFullError as e:
            raise APIError(429, f"server busy: {e}", "rate_limit_error") from None
        except ValueError as e:
            raise APIError(400, str(e)) from None
        meta = dict(
            id=("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24],
            created=int(time.time()),
            model=model_name,
        )
        pieces = _pieces(events, Drain(tokenizer, stop), engine, req)
        if body.get("stream"):
            return StreamingResponse(
                _sse(pieces, meta, chat, engine, req), media_type="text/event-stream"
            )
        return JSONResponse(await _collect(request, pieces, meta, chat, len(ids), engine, req))

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await read_body(request)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
            ids = prompt  # a pre-tokenised prompt
        elif isinstance(prompt, str):
            ids = tokenizer.encode(prompt)
        else:
            raise APIError(
                400, "'prompt' must be a string (or one list of token ids)", param="prompt"
            )
        return await run(request, encode_prompt(ids), body, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await read_body(request)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise APIError(400, "'messages' must be a non-empty list", param="messages")
        try:
            flat = [
                {"role": m.get("role"), "content": _content(m.get("content"))} for m in messages
            ]
            text = tokenizer.apply_chat_template(flat, add_generation_prompt=True)
        except (ValueError, AttributeError) as e:
            raise APIError(400, f"invalid messages: {e}", param="messages") from None
        return await run(request, encode_prompt(tokenizer.encode(text)), body, chat=True)

    return app


def _content(c):
    """A message's content: a string, or OpenAI's list of {"type": "text", "text": ...} parts."""
    if isinstance(c, list):
        return "".join(
            p.get("text", "") for p in c if isinstance(p, dict) and p.get("type") == "text"
        )
    return c


async def _pieces(events: asyncio.Queue, drain: Drain, engine: Engine, req):
    """Yield (text delta, finish_reason or None, completion_tokens) until the request ends.
    The engine passes every token but the stop token; stop strings end it here."""
    reason = None
    while reason is None:
        tok, reason = await events.get()
        if tok is not None:
            if drain.push(tok):  # a stop string
                engine.cancel(req)  # the slot frees at the next step
                yield drain.release(), "stop", len(drain.tokens)
                return
            if delta := drain.release():
                yield delta, None, len(drain.tokens)
    if reason == "error":
        raise RuntimeError("generation failed")
    drain.end()
    yield drain.release(), "stop" if reason == "stop" else "length", len(drain.tokens)


async def _collect(
    request, pieces, meta: dict, chat: bool, n_prompt: int, engine: Engine, req
) -> dict:
    parts, finish, n = [], "length", 0
    watcher = asyncio.create_task(_watch_disconnect(request, engine, req))
    try:
        async for delta, reason, count in pieces:
            parts.append(delta)
            finish, n = reason or finish, count
    finally:
        watcher.cancel()
        engine.cancel(req)  # no-op when already finished
    text = "".join(parts)
    if chat:
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": None,
            "finish_reason": finish,
        }
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
    usage = {"prompt_tokens": n_prompt, "completion_tokens": n, "total_tokens": n_prompt + n}
    obj = "chat.completion" if chat else "text_completion"
    return {**meta, "object": obj, "choices": [choice], "usage": usage}


async def _watch_disconnect(request, engine: Engine, req) -> None:
    """A client that hangs up on a non-streaming request frees its slot."""
    while not req.cancelled:
        if await request.is_disconnected():
            log.info("client went away; cancelling request %d", req.id)
            engine.cancel(req)
            return
        await asyncio.sleep(0.25)


async def _sse(pieces, meta: dict, chat: bool, engine: Engine, req):
    """Server-sent events; a client that disconnects closes this generator, which cancels."""
    obj = "chat.completion.chunk" if chat else "text_completion"

    def chunk(delta: str, finish, first=False) -> str:
        if chat:
            d = (
                ({"role": "assistant", "content": ""} if first else {"content": delta})
                if finish is None
                else {}
            )
            choice = {"index": 0, "delta": d, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": delta, "logprobs": None, "finish_reason": finish}
        return f"data: {json.dumps({**meta, 'object': obj, 'choices': [choice]})}\n\n"

    try:
        if chat:
            yield chunk("", None, first=True)
        async for delta, reason, _n in pieces:
            if delta:
                yield chunk(delta, None)
            if reason is not None:
                yield chunk("", reason)
        yield "data: [DONE]\n\n"
    except RuntimeError as e:
        yield f"data: {json.dumps(APIError(500, str(e), 'server_error').body())}\n\n"
    finally:
        engine.cancel(req)


# ---- CLI ---------------------------------------------------------------------------------------
def add_arguments(p) -> None:
    p.add_argument("--model", required=True, help="checkpoint directory or hub id")
    p.add_argument("--revision", default=None)
    p.add_argument(
        "--name", default=None, help="model id clients send (default: the directory name)"
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--quantize", choices=["int8"], default=None, help="int8 dynamic linear layers (CPU)"
    )
    p.add_argument("--max-batch", type=int, default=8, help="requests decoded together")
    p.add_argument(
        "--max-len", type=int, default=None, help="context per request (default: model's)"
    )
    p.add_argument("--max-queue", type=int, default=64, help="waiting requests before 429")
    p.add_argument("--max-prompt-tokens", type=int, default=2048)
    p.add_argument("--max-tokens", type=int, default=1024, help="largest max_tokens allowed")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20)


def run(args) -> int:
    import uvicorn

    model, tok = load_for_inference(
        args.model, args.revision, args.dtype, args.device, args.quantize
    )
    name = args.name or Path(str(args.model).rstrip("/")).name
    max_len = args.max_len or model.config.max_seq_len
    engine = Engine(model, EngineConfig(args.max_batch, max_len, args.max_queue)).start()
    limits = ServerLimits(
        args.max_prompt_tokens, args.max_tokens, args.max_body_bytes, min(256, args.max_tokens)
    )
    app = create_app(engine, tok, name, limits)
    log.info(
        "serving %r on http://%s:%d (batch %d, context %d)",
        name,
        args.host,
        args.port,
        args.max_batch,
        max_len,
    )
    # uvicorn's own SIGINT/SIGTERM handlers stop accepting and finish open responses; afterwards
    # it re-raises the signal to the handler it found, which here only logs, so a stopped
    # server still stops the engine, prints its summary and exits 0.
    config = uvicorn.Config(
        app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=30
    )
    server = uvicorn.Server(config)
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {
        s: signal.signal(s, lambda n, _f: log.info("signal %d: shut down", n)) for s in signals
    }
    try:
        server.run()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        engine.stop()
    print(
        f"served {engine.requests_done} requests, {engine.tokens_generated} tokens in {engine.forward_passes} forward passes"
    )
    return 0
