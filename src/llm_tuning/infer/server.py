"""An OpenAI-compatible server for a model and its adapters, with a chat page at `/`.

    llm-tuning serve --adapter math=weights/math --adapter style=weights/style \
        --mix both=math:0.5,style:0.5 --port 8000 --api_key SECRET

`/v1/models`, `/v1/chat/completions` and `/v1/completions`, streamed (server-sent events) or not. The
request's `model` picks the base model (its folder name, or `base`), an adapter by name, or a mix named
at start-up (weighted `--adapter` specs also make one named `mix`). `temperature`, `top_p`, `max_tokens`,
`stop` and `seed` are honoured and token usage is reported. Requests share one continuously batched
decode loop, each row with its own adapter and sampling settings (`--engine batch`, `--max_batch`; past
`--max_queue` waiting requests the answer is 429), or run one at a time under a lock (`--engine serial`).
Parsing, tokenizing and generating run in worker threads (the event loop keeps answering), and a
generation stops as soon as its client hangs up, streamed or not. `llm_tuning.infer.guard` decides
what gets in (Host, Origin, JSON bodies, the key; `--allowed_hosts`, `--cors_origins`). `--backend vllm`
hands the model and adapters to vLLM's OpenAI server instead (`llm_tuning.infer.vllm_backend`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

try:
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.middleware.cors import CORSMiddleware
except ImportError as err:  # pragma: no cover - the serve extra is optional
    raise ImportError(
        "`llm-tuning serve` needs FastAPI and uvicorn: pip install 'llm-tuning[serve]'"
    ) from err

from llm_tuning.infer.engine import Engine, Job, Outcome, ServeConfig, build_engine
from llm_tuning.infer.guard import Guard, Policy, allowed_hosts, is_loopback
from llm_tuning.infer.openai_api import (
    DONE,
    ApiError,
    ChatRequest,
    CompletionRequest,
    SamplingRequest,
    chat_response,
    chunk,
    completion_response,
    new_id,
    parse_request,
    usage,
)

__all__ = ["ServeConfig", "build_app", "build_engine", "run"]

logger = logging.getLogger(__name__)


DISCONNECT_POLL_S = 0.1  # how often a non-streamed request checks that its client is still there


def _error(err: ApiError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


async def _read_body(request: Request, limit: int) -> bytes:
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise ApiError(413, f"the request body is over {limit} bytes", code="request_too_large")
    return bytes(body)


async def _events(engine: Engine, job: Job, rid: str, chat: bool, include_usage: bool) -> AsyncIterator[str]:
    """Server-sent events for one streamed request; generation runs in a thread and stops if the client leaves."""
    loop, queue, cancel = asyncio.get_running_loop(), asyncio.Queue(), threading.Event()

    def put(item: Any) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the event loop closed (server shutting down)
            cancel.set()

    def work() -> None:
        try:
            put(engine.run(job, put, cancel))
        except Exception as err:  # reported to the client as an error event
            logger.exception("generation failed")
            put(err)

    threading.Thread(target=work, name="generate", daemon=True).start()
    try:
        if chat:
            yield chunk(rid, job.model, chat, role=True)
        while isinstance(item := await queue.get(), str):
            yield chunk(rid, job.model, chat, text=item)
        if isinstance(item, Outcome):
            yield chunk(rid, job.model, chat, finish=item.finish_reason)
            if include_usage:
                yield chunk(rid, job.model, chat, usage_=usage(item.prompt_tokens, item.completion_tokens))
        else:
            error = ApiError(500, f"generation failed: {item}", kind="server_error")
            yield f"data: {json.dumps(error.body())}\n\n"
        yield DONE
    finally:
        cancel.set()


def _prepare(engine: Engine, body: bytes, chat: bool) -> tuple[SamplingRequest, Job]:
    """Parse and tokenize: CPU work (seconds for a large prompt) that must stay off the event loop."""
    req = parse_request(body, ChatRequest if chat else CompletionRequest)
    return req, engine.chat_job(req) if chat else engine.completion_job(req)


async def _complete(engine: Engine, job: Job, request: Request) -> Outcome:
    """Generate in a worker thread; stop it as soon as the client hangs up (nobody would read the answer)."""
    cancel = threading.Event()
    work = asyncio.ensure_future(run_in_threadpool(engine.run, job, lambda piece: None, cancel))
    try:
        while not work.done():
            await asyncio.wait({work}, timeout=DISCONNECT_POLL_S)
            if not work.done() and await request.is_disconnected():
                logger.info("the client left: generation for %s stopped", job.model)
                cancel.set()
        return work.result()
    finally:
        cancel.set()  # also when this handler itself is cancelled


async def _answer(engine: Engine, request: Request, chat: bool) -> Any:
    body = await _read_body(request, engine.cfg.max_request_bytes)
    req, job = await run_in_threadpool(_prepare, engine, body, chat)
    engine.enqueue(job)  # a place in the batch engine's queue, or 429, before any response starts
    rid = new_id("chatcmpl" if chat else "cmpl")
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return StreamingResponse(_events(engine, job, rid, chat, include_usage), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})  # fmt: skip
    out = await _complete(engine, job, request)
    build = chat_response if chat else completion_response
    return JSONResponse(
        build(rid, job.model, out.text, out.finish_reason, out.prompt_tokens, out.completion_tokens)
    )


def _guarded(app: FastAPI, cfg: ServeConfig) -> None:
    """CORS for --cors_origins (none: same origin only), inside the Host / Origin / JSON / key guard."""
    if cfg.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=cfg.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["authorization", "content-type"], max_age=600)  # fmt: skip
    policy = Policy(allowed_hosts(cfg.host, cfg.allowed_hosts), frozenset(cfg.cors_origins), cfg.api_key,
                    cfg.max_request_bytes)  # fmt: skip
    app.add_middleware(Guard, policy=policy)  # added last, so it runs first


def build_app(engine: Engine) -> FastAPI:
    """The FastAPI app: the chat page, /health, and the OpenAI routes behind the optional API key."""
    from llm_tuning.infer.chat_page import CHAT_PAGE

    app = FastAPI(title="llm-tuning", docs_url=None, redoc_url=None, openapi_url=None)
    _guarded(app, engine.cfg)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError) -> Any:
        return _error(err)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> Any:
        return _error(
            ApiError(err.status_code, str(err.detail), code="not_found" if err.status_code == 404 else None)
        )

    @app.exception_handler(Exception)
    async def server_error(request: Request, err: Exception) -> Any:
        logger.exception("request failed")
        return _error(ApiError(500, f"the server failed: {type(err).__name__}: {err}", kind="server_error"))

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return CHAT_PAGE

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [_model_card(m) for m in engine.model_ids()]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> dict:
        engine.resolve(model_id)
        return _model_card(model_id)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        return await _answer(engine, request, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        return await _answer(engine, request, chat=False)

    return app


def _model_card(model_id: str) -> dict:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "llm-tuning"}


@dataclass
class ServeResult:
    url: str
    models: list[str] = field(default_factory=list)


def run(cfg: ServeConfig) -> ServeResult:
    if cfg.backend == "vllm":  # vLLM's own server replaces this process
        from llm_tuning.infer.vllm_backend import run_vllm

        run_vllm(cfg)
    import uvicorn

    engine = build_engine(cfg)
    if not is_loopback(cfg.host) and not cfg.api_key:
        logger.warning("binding %s without --api_key: anyone on the network can use this server", cfg.host)
    hosts = sorted(allowed_hosts(cfg.host, cfg.allowed_hosts))
    logger.info("requests must name one of these hosts (--allowed_hosts adds more): %s", ", ".join(hosts))
    if cfg.cors_origins:
        logger.info("web pages at %s may call the API (--cors_origins)", ", ".join(cfg.cors_origins))
    url = f"http://{cfg.host}:{cfg.port}"
    logger.info("chat page: %s/  API: %s/v1 (models: %s)", url, url, ", ".join(engine.model_ids()))
    uvicorn.run(build_app(engine), host=cfg.host, port=cfg.port, log_level="info")
    return ServeResult(url, engine.model_ids())
