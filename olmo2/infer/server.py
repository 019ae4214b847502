"""`olmo2 serve`: an OpenAI-compatible HTTP server (FastAPI + uvicorn) over the batching engine.

Endpoints follow the OpenAI API reference (platform.openai.com/docs/api-reference):
`POST /v1/completions`, `POST /v1/chat/completions` (both with `stream: true` as server-sent
events, `data: {chunk}` lines ending with `data: [DONE]`), `GET /v1/models`; the request
fields and response objects are in `olmo2.infer.protocol`. Beside them: `GET /health`,
`GET /stats` (engine counters), `GET /metrics` (Prometheus, `olmo2.infer.metrics`) and `GET /`,
a chat page (`olmo2/infer/static/chat.html`) that talks to the same API.

With an API key (`--api-key` or `OLMO2_API_KEY`) every route but `/health` and the page
itself needs `Authorization: Bearer KEY` (compared in constant time, `hmac.compare_digest`),
else 401. The page is static text that a browser fetches without headers; it asks for the key
and sends it on its API calls (llama.cpp's server does the same with its web UI).

Errors are JSON `{"error": {"message", "type", "param", "code"}}` with a 4xx status: 400 bad
request, 401 no or wrong key, 404 unknown model or route, 413 body too large, 429 queue full;
a 500 only for a fault of the server itself. Chat prompts use the OLMo 2 template
(`olmo2.tokenizer.render_chat`).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import os
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import torch
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from olmo2.infer.engine import Engine, EngineConfig, QueueFullError
from olmo2.infer.engine import Request as EngineRequest
from olmo2.infer.generate import Drain, fit_prompt
from olmo2.infer.load import load_for_inference
from olmo2.infer.metrics import CONTENT_TYPE
from olmo2.infer.protocol import (
    APIError,
    Entry,
    Params,
    ServerLimits,
    TokenText,
    chat_logprobs,
    completion_logprobs,
    message_content,
    parse_params,
    parse_prompts,
    usage,
)

log = logging.getLogger(__name__)

API_KEY_ENV = "OLMO2_API_KEY"
PUBLIC_PATHS = frozenset({"/health", "/"})
CHAT_PAGE = Path(__file__).parent / "static" / "chat.html"

__all__ = ["APIError", "ServerLimits", "create_app"]


# ---- access ------------------------------------------------------------------------------------
class BearerAuth:
    """ASGI middleware: `Authorization: Bearer KEY` on every path but PUBLIC_PATHS. Pure ASGI
    (not Starlette's BaseHTTPMiddleware) so streaming responses pass through untouched."""

    def __init__(self, app, api_key: str):
        self.app, self.key = app, api_key.encode()

    def _authorised(self, scope) -> bool:
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, given = header.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self.key)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] not in PUBLIC_PATHS:
            if not self._authorised(scope):
                err = APIError(
                    401,
                    "missing or incorrect API key: send 'Authorization: Bearer KEY'",
                    "authentication_error",
                    code="invalid_api_key",
                )
                headers = {"WWW-Authenticate": "Bearer"}
                await JSONResponse(err.body(), 401, headers=headers)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: assume it may be reachable from outside
        return False


# ---- one request's choices ---------------------------------------------------------------------
@dataclass
class Choice:
    """One choice of a request: its engine request, its drain, what is not yet sent."""

    index: int
    prompt: int
    """Index of its prompt in the request."""
    drain: Drain
    req: EngineRequest | None = None
    entries: list[Entry] = field(default_factory=list)
    """Log-prob entries not yet sent."""
    offset: int = 0
    """Text offset of the next entry (Completions' `text_offset`)."""
    started: bool = False
    finish: str | None = None


@dataclass
class Job:
    """A request's prompts and their choices, fed by the engine through `events`."""

    params: Params
    prompts: list[list[int]]
    prompt_texts: list[str | None]
    choices: list[Choice]
    events: asyncio.Queue
    chat: bool
    meta: dict

    @property
    def prompt_tokens(self) -> int:
        return sum(len(p) for p in self.prompts)

    @property
    def completion_tokens(self) -> int:
        return sum(len(c.drain.tokens) for c in self.choices)


class Generator:
    """Runs requests on the engine and turns its events into text pieces."""

    def __init__(self, engine: Engine, tokenizer, limits: ServerLimits, model_name: str):
        self.engine, self.tok, self.limits, self.model_name = engine, tokenizer, limits, model_name
        self.tt = TokenText(tokenizer)

    def encode(self, text: str) -> list[int]:
        try:
            return self.tok.encode(text)
        except (UnicodeError, TypeError, ValueError) as e:  # e.g. a lone surrogate
            raise APIError(400, f"the prompt is not valid text: {e}", param="prompt") from None

    def budget(self, ids: list[int], params: Params) -> int:
        """max_tokens for this prompt, after the checks at the door: length limits (the one
        rule, `fit_prompt`) and token ids inside the vocabulary (`Engine.check`)."""
        if not ids:
            raise APIError(400, "the prompt is empty", param="prompt")
        if len(ids) > self.limits.max_prompt_tokens:
            raise APIError(
                400,
                f"the prompt has {len(ids)} tokens; the limit is {self.limits.max_prompt_tokens}",
                param="prompt",
                code="context_length_exceeded",
            )
        n = params.max_tokens
        if n is None:  # a default that fits: what the context has room for, at most the default
            n = max(1, min(self.limits.default_max_tokens, self.engine.max_len - len(ids)))
        try:
            fit_prompt(ids, n, self.engine.max_len)
        except ValueError as e:
            raise APIError(
                400, str(e), param="max_tokens", code="context_length_exceeded"
            ) from None
        try:
            self.engine.check(ids, n)
        except ValueError as e:
            raise APIError(400, str(e), param="prompt") from None
        return n

    def start(self, params: Params, prompts, prompt_texts, chat: bool) -> Job:
        if len(prompts) * params.n > self.limits.max_choices:
            raise APIError(
                400,
                f"{len(prompts)} prompts x n={params.n} is over {self.limits.max_choices} choices",
                param="n",
            )
        budgets = [self.budget(ids, params) for ids in prompts]
        meta = {
            "id": ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24],
            "created": int(time.time()),
            "model": self.model_name,
        }
        job = Job(params, prompts, prompt_texts, [], asyncio.Queue(), chat, meta)
        loop = asyncio.get_running_loop()
        try:
            for p, (ids, n) in enumerate(zip(prompts, budgets)):
                for j in range(params.n):
                    c = Choice(len(job.choices), p, Drain(self.tok, params.stop))
                    job.choices.append(c)

                    def on_token(t, r, lp, i=c.index):  # engine thread -> event loop
                        loop.call_soon_threadsafe(job.events.put_nowait, (i, t, r, lp))

                    c.req = self.engine.submit(
                        ids, params.choice_sampling(j, n), on_token, [self.tok.eos_token_id],
                        max_new_tokens=n, logprobs=params.logprobs, echo=params.echo,
                    )  # fmt: skip
        except QueueFullError as e:
            self.cancel(job)
            raise APIError(429, f"server busy: {e}", "rate_limit_error") from None
        return job

    def cancel(self, job: Job) -> None:
        for c in job.choices:
            if c.req is not None:
                self.engine.cancel(c.req)

    async def pieces(self, job: Job):
        """Yield (choice, text delta) as events arrive, until every choice has finished;
        `choice.entries` then holds the log-prob entries that came with the delta."""
        running = len(job.choices)
        while running:
            i, tok, reason, lp = await job.events.get()
            c = job.choices[i]
            if c.finish is not None:  # e.g. the "cancelled" after a stop string
                continue
            text = "" if c.started else self._echo(job, c)
            c.started = True
            text += self._push(c, tok, reason, lp)
            yield c, text
            running -= c.finish is not None

    def _echo(self, job: Job, c: Choice) -> str:
        """The prompt's text and entries when the request asked for `echo`."""
        if not job.params.echo:
            return ""
        ids = job.prompts[c.prompt]
        if job.params.logprobs is not None and c.req.prompt_logprobs is not None:
            c.entries += [(ids[0], None), *((lp.token, lp) for lp in c.req.prompt_logprobs[1:])]
        text = job.prompt_texts[c.prompt]
        return self.tok.decode(ids) if text is None else text

    def _push(self, c: Choice, tok, reason, lp) -> str:
        if tok is not None:
            if lp is not None:
                c.entries.append((tok, lp))
            if c.drain.push(tok):  # a stop string: the slot frees at the next step
                self.engine.cancel(c.req)
                c.finish = "stop"
            return c.drain.release()
        if reason == "error":
            raise APIError(500, "generation failed inside the engine", "server_error")
        if reason == "stop" and lp is not None:  # the stop token: in the log-probs, not the text
            c.entries.append((lp.token, lp))
        c.drain.end()
        c.finish = "stop" if reason == "stop" else "length"
        return c.drain.release()

    def logprobs(self, job: Job, c: Choice):
        """The log-probs object for the entries gathered since the last call (None if off)."""
        if job.params.logprobs is None:
            return None
        entries, c.entries = c.entries, []
        if job.chat:
            return chat_logprobs(entries, self.tt)
        out = completion_logprobs(entries, self.tt, c.offset)
        c.offset += sum(len(t) for t in out["tokens"])
        return out

    # ---- answers ---------------------------------------------------------------------------
    async def collect(self, request: Request, job: Job) -> dict:
        texts = {c.index: [] for c in job.choices}
        watcher = asyncio.create_task(self._watch_disconnect(request, job))
        try:
            async for c, text in self.pieces(job):  # entries gather in c.entries
                texts[c.index].append(text)
        finally:
            watcher.cancel()
            self.cancel(job)  # no-op for finished requests
        choices = []
        for c in job.choices:
            text = "".join(texts[c.index])
            body = (
                {"message": {"role": "assistant", "content": text}} if job.chat else {"text": text}
            )
            choices.append(
                {
                    "index": c.index,
                    **body,
                    "logprobs": self.logprobs(job, c),
                    "finish_reason": c.finish,
                }
            )
        obj = "chat.completion" if job.chat else "text_completion"
        u = usage(job.prompt_tokens, job.completion_tokens)
        return {**job.meta, "object": obj, "choices": choices, "usage": u}

    async def _watch_disconnect(self, request: Request, job: Job) -> None:
        """A client that hangs up on a non-streaming request frees its slots."""
        while True:
            if await request.is_disconnected():
                log.info("client went away; cancelling %s", job.meta["id"])
                self.cancel(job)
                return
            await asyncio.sleep(0.25)

    async def sse(self, job: Job):
        """Server-sent events; a client that disconnects closes this generator, which cancels."""
        obj = "chat.completion.chunk" if job.chat else "text_completion"
        extra = {"usage": None} if job.params.include_usage else {}

        def event(choices: list[dict], **more) -> str:
            return f"data: {json.dumps({**job.meta, 'object': obj, 'choices': choices, **extra, **more})}\n\n"

        def chunk(c: Choice, text: str, first: bool = False) -> str:
            lps = None if first else self.logprobs(job, c)
            if job.chat:
                delta = {"role": "assistant", "content": ""} if first else {"content": text}
                if c.finish is not None and not text:
                    delta = {}
                choice = {"index": c.index, "delta": delta}
            else:
                choice = {"index": c.index, "text": text}
            finish = None if first else c.finish
            return event([{**choice, "logprobs": lps, "finish_reason": finish}])

        try:
            if job.chat:
                for c in job.choices:
                    yield chunk(c, "", first=True)
            async for c, text in self.pieces(job):
                if text or c.entries or c.finish is not None:
                    yield chunk(c, text)
            if job.params.include_usage:
                yield event([], usage=usage(job.prompt_tokens, job.completion_tokens))
            yield "data: [DONE]\n\n"
        except APIError as e:
            yield f"data: {json.dumps(e.body())}\n\n"
        finally:
            self.cancel(job)


# ---- the app -----------------------------------------------------------------------------------
def create_app(
    engine: Engine,
    tokenizer,
    model_name: str,
    limits: ServerLimits | None = None,
    api_key: str | None = None,
):
    limits = limits or ServerLimits()
    app = FastAPI(title="olmo2", version="1", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine = engine
    gen = Generator(engine, tokenizer, limits, model_name)
    created = int(time.time())
    if api_key:
        app.add_middleware(BearerAuth, api_key=api_key)

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

    page = CHAT_PAGE.read_text() if CHAT_PAGE.exists() else "<p>chat page not installed</p>"

    @app.get("/")
    async def chat_page():
        return HTMLResponse(page)

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

    @app.get("/metrics")
    async def metrics():
        return Response(engine.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def models():
        card = {"id": model_name, "object": "model", "created": created, "owned_by": "olmo2"}
        card["max_model_len"] = engine.max_len  # vLLM's field: lm-eval's max_length
        return {"object": "list", "data": [card]}

    async def read_body(request: Request) -> dict:
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > limits.max_body_bytes:
            raise APIError(413, f"request body over {limits.max_body_bytes} bytes")
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > limits.max_body_bytes:
                raise APIError(413, f"request body over {limits.max_body_bytes} bytes")
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
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

    async def answer(request: Request, job: Job):
        if job.params.stream:
            return StreamingResponse(gen.sse(job), media_type="text/event-stream")
        return JSONResponse(await gen.collect(request, job))

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await read_body(request)
        params = parse_params(body, chat=False, limits=limits)
        prompts = parse_prompts(body.get("prompt"))
        ids = [gen.encode(p) if isinstance(p, str) else p for p in prompts]
        texts = [p if isinstance(p, str) else None for p in prompts]
        return await answer(request, gen.start(params, ids, texts, chat=False))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await read_body(request)
        params = parse_params(body, chat=True, limits=limits)
        text = _render_chat(tokenizer, body.get("messages"))
        return await answer(request, gen.start(params, [gen.encode(text)], [None], chat=True))

    return app


def _render_chat(tokenizer, messages) -> str:
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "'messages' must be a non-empty list", param="messages")
    flat = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise APIError(400, f"message {i} must be an object", param="messages")
        flat.append({"role": m.get("role"), "content": message_content(m.get("content"))})
    try:
        return tokenizer.apply_chat_template(flat, add_generation_prompt=True)
    except ValueError as e:
        raise APIError(400, f"invalid messages: {e}", param="messages") from None


# ---- CLI ---------------------------------------------------------------------------------------
def add_arguments(p) -> None:
    p.add_argument("--model", required=True, help="checkpoint directory or hub id")
    p.add_argument("--revision", default=None)
    p.add_argument(
        "--name", default=None, help="model id clients send (default: the directory name)"
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--api-key",
        default=None,
        help=f"require 'Authorization: Bearer KEY' (default: ${API_KEY_ENV}, else no key)",
    )
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


def api_key_for(args) -> str | None:
    """--api-key, else $OLMO2_API_KEY, else None; warn when a keyless server is reachable from
    beyond this machine."""
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    if api_key is None and not is_loopback(args.host):
        log.warning(
            "serving on %s without an API key: anyone who can reach the port can use the "
            "model (set --api-key or $%s)",
            args.host,
            API_KEY_ENV,
        )
    return api_key


def run(args) -> int:
    import uvicorn

    api_key = api_key_for(args)
    model, tok = load_for_inference(
        args.model, args.revision, args.dtype, args.device, args.quantize
    )
    name = args.name or Path(str(args.model).rstrip("/")).name
    max_len = args.max_len or model.config.max_seq_len
    engine = Engine(model, EngineConfig(args.max_batch, max_len, args.max_queue)).start()
    limits = ServerLimits(
        args.max_prompt_tokens, args.max_tokens, args.max_body_bytes, min(256, args.max_tokens)
    )
    app = create_app(engine, tok, name, limits, api_key)
    log.info(
        "serving %r on http://%s:%d (batch %d, context %d%s)",
        name,
        args.host,
        args.port,
        args.max_batch,
        max_len,
        ", API key required" if api_key else "",
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
