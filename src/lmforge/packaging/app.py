"""The FastAPI app of the chat server: OpenAI-style chat, health, and user ratings.

The same app serves the package in-process (`ChatModel`, ``--engine torch``) or is the gateway in front of
an inference engine (`EngineChatModel`, ``--engine llama.cpp|vllm``): what is ours stays here either way
(request checks and 4xx, the ratings table, the model version and engine of every answer).

- ``POST /v1/chat/completions``: ``{"messages": [{"role", "content"}, ...], "max_tokens", "temperature", "seed",
  "stream"}`` -> ``{"id", "model", "system_fingerprint", "choices": [{"message": {"role": "assistant", "content"},
  "finish_reason"}], "usage"}``; with ``"stream": true`` OpenAI ``chat.completion.chunk`` server-sent events
  (the usage chunk always ends the stream; the torch model sends its answer as one piece).
  ``model`` is the model version, ``system_fingerprint`` the engine (``torch:f32:cpu``,
  ``llama.cpp:q8_0:<GGUF sha256 12>``). An engine that does not answer is a 503, a broken answer a 502
  (``{"error": {"message", "type": "engine_unavailable" | "engine_error"}}``); the app keeps serving.
- ``GET /health``: ``{"status": "ok", "model_version", "engine", "streams"}``; 503 with ``"status":
  "engine_unavailable"`` while the engine behind the gateway does not answer its own ``/health``.
- ``POST /v1/feedback``: ``{"id": <response id>, "rating": 1-5}``; ``GET /v1/feedback/summary``: mean rating
  per model version (the user-satisfaction metric).

Bad requests (malformed JSON, no messages, unknown role, empty user/system content, special-token
text, prompt longer than the context) get a 4xx JSON ``{"error": {"message", "type"}}`` and the server
keeps serving; a conversation over the context carries ``"code": "context_length_exceeded"`` so a client
can offer to start over. Before any route reads a body, ``BodyGuard`` answers 415 to a POST that is not
``Content-Type: application/json`` and 413 to a body over ``max_body_bytes``: at once from its
Content-Length header, or as soon as a streamed (chunked) body passes the limit.

Every answered request is recorded in the ``FeedbackStore`` with the client named by its
``X-Lmforge-Client`` header (the chat client sends ``chat``, the load test ``loadtest``; curl sends none):
the satisfaction metric counts the chat client's answers only (``feedback_store``).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.requests import Request  # module level: FastAPI resolves a route's annotations in these globals

from lmforge.packaging.chat_model import BadRequest, ChatModel
from lmforge.packaging.engine_model import EngineChatModel, EngineError, EngineUnavailable
from lmforge.packaging.feedback_store import FeedbackStore
from lmforge.packaging.loadtest import CLIENT_HEADER

logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 1_000_000
"""Largest request body (413 above it): a conversation that fills any of our models' contexts is far smaller."""

# Request bodies live at module level: FastAPI resolves (postponed) annotations in the module globals.


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant"]
    content: str

    @model_validator(mode="after")
    def _not_blank(self) -> Message:
        # An assistant turn may be empty (a model can answer nothing); a question cannot.
        if self.role != "assistant" and not self.content.strip():
            raise ValueError(f"content of a {self.role} message must not be empty")
        return self


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)  # None: min(64, the server's --max-tokens-limit)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    seed: int = 0
    stream: bool = False  # OpenAI server-sent events; the usage chunk always ends the stream
    model: str | None = None  # accepted for OpenAI compatibility; this server has one model


class Feedback(BaseModel):
    id: str = Field(min_length=1)
    rating: int = Field(ge=1, le=5)
    comment: str | None = None


def _error_body(message: str, kind: str = "invalid_request_error", code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, **({"code": code} if code else {})}}


def _usage(out: dict[str, Any]) -> dict[str, int]:
    return {"prompt_tokens": out["prompt_tokens"], "completion_tokens": out["completion_tokens"],
            "total_tokens": out["prompt_tokens"] + out["completion_tokens"]}


def _sse(pieces: Iterator[str | dict[str, Any]], head: dict[str, Any],
         record: Callable[[dict[str, Any]], None]) -> Iterator[str]:
    """OpenAI ``chat.completion.chunk`` events: a delta per piece, the finish reason, the usage, ``[DONE]``.

    The answer is recorded (and becomes ratable by ``head["id"]``) when the last piece has arrived. An engine
    that fails mid-stream ends the stream with an ``error`` event (the status line is long gone) and is logged.
    """
    def event(choices: list[dict[str, Any]], **extra: Any) -> str:
        return "data: " + json.dumps({**head, "object": "chat.completion.chunk", "choices": choices, **extra}) + "\n\n"

    yield event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
    try:
        for piece in pieces:
            if isinstance(piece, str):
                yield event([{"index": 0, "delta": {"content": piece}, "finish_reason": None}])
            else:
                record(piece)
                yield event([{"index": 0, "delta": {}, "finish_reason": piece["finish_reason"]}])
                yield event([], usage=_usage(piece))
    except (EngineUnavailable, EngineError) as exc:
        logger.error("%s", exc)
        yield "data: " + json.dumps({"error": {"message": str(exc), "type": "engine_error"}}) + "\n\n"
    yield "data: [DONE]\n\n"


class BodyGuard:
    """ASGI middleware: 415 for a POST that is not JSON, 413 for a body over ``max_bytes``, before a route reads it.

    A declared Content-Length over the limit is refused before one byte of the body is read; a streamed
    body is counted as it arrives and refused as soon as it passes the limit.
    """

    def __init__(self, app: Any, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, send: Any, status: int, message: str, kind: str) -> None:
        body = json.dumps(_error_body(message, kind)).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        media = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if media != b"application/json":
            shown = media.decode(errors="replace") or "none"
            await self._refuse(send, 415, f"Content-Type must be application/json, got {shown}",
                               "unsupported_media_type")
            return
        declared = headers.get(b"content-length")
        too_large = f"request body over {self.max_bytes} bytes: send a shorter conversation"
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(send, 413, too_large, "request_too_large")
            return
        from fastapi import HTTPException  # the class FastAPI's body reader lets through (not a 400)

        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:  # raised inside the route's body read: the app's handler answers 413
                raise HTTPException(413, too_large)
            return message

        await self.app(scope, counted, send)


def create_app(chat_model: ChatModel | EngineChatModel, store: FeedbackStore, *, max_tokens_limit: int = 256,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> Any:
    """The FastAPI app around a loaded model and a feedback table."""
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    app = FastAPI(title="lmforge chat", version=chat_model.version)
    app.add_middleware(BodyGuard, max_bytes=max_body_bytes)

    def error(status: int, message: str, kind: str = "invalid_request_error", code: str | None = None) -> JSONResponse:
        return JSONResponse(status_code=status, content=_error_body(message, kind, code))

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for e in exc.errors():
            if e.get("type") == "json_invalid":  # loc is ("body", <character position>)
                problems.append(f"body is not valid JSON (character {e['loc'][-1]}): "
                                f"{e.get('ctx', {}).get('error', e.get('msg'))}")
                continue
            where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
            problems.append(f"{where}: {e.get('msg').removeprefix('Value error, ')}")
        return error(400, "; ".join(problems) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kinds = {404: "not_found", 413: "request_too_large"}
        return error(exc.status_code, str(exc.detail), kinds.get(exc.status_code, "http_error"))

    @app.get("/health")
    def health() -> Any:
        body = {"status": "ok", "model_version": chat_model.version, "engine": chat_model.engine,
                "streams": chat_model.streams}
        if isinstance(chat_model, EngineChatModel) and not chat_model.engine_health():
            # The gateway answers, the engine does not: not ready (a load balancer routes elsewhere).
            return JSONResponse(status_code=503, content={**body, "status": "engine_unavailable",
                                                          "engine_url": chat_model.url})
        return body

    def engine_failure(exc: Exception) -> JSONResponse:
        logger.error("%s", exc)
        if isinstance(exc, EngineUnavailable):
            return error(503, f"{exc}: retry later; the server's log says why the engine stopped",
                         "engine_unavailable")
        return error(502, str(exc), "engine_error")

    @app.post("/v1/chat/completions")
    def chat_completions(req: ChatRequest, request: Request) -> Any:
        max_tokens = min(64, max_tokens_limit) if req.max_tokens is None else req.max_tokens
        if max_tokens > max_tokens_limit:
            return error(400, f"max_tokens: at most {max_tokens_limit} on this server, got {max_tokens}")
        messages = [m.model_dump(include={"role", "content"}) for m in req.messages]
        settings = {"max_tokens": max_tokens, "temperature": req.temperature, "seed": req.seed}
        start = time.perf_counter()
        response_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        client = request.headers.get(CLIENT_HEADER)

        def record(out: dict[str, Any]) -> None:
            store.record(response_id, chat_model.version, {"messages": messages, **settings}, out["content"],
                         (time.perf_counter() - start) * 1000, client=client, engine=chat_model.engine)

        try:
            if req.stream:
                pieces = chat_model.stream(messages, **settings)  # checks and connects now: errors still get a status
            else:
                out = chat_model.reply(messages, **settings)
        except BadRequest as exc:
            return error(400, str(exc), code=exc.code)
        except (EngineUnavailable, EngineError) as exc:
            return engine_failure(exc)
        head = {"id": response_id, "created": created, "model": chat_model.version,
                "system_fingerprint": chat_model.engine}
        if req.stream:
            return StreamingResponse(_sse(pieces, head, record), media_type="text/event-stream")
        record(out)
        return {
            **head,
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": out["content"]},
                         "finish_reason": out["finish_reason"]}],
            "usage": _usage(out),
        }

    @app.post("/v1/feedback")
    def feedback(fb: Feedback) -> Any:
        if not store.rate(fb.id, fb.rating):
            return error(404, f"no response with id {fb.id!r}: rate the 'id' of a /v1/chat/completions reply",
                         "not_found")
        return {"id": fb.id, "rating": fb.rating, "stored": True}

    @app.get("/v1/feedback/summary")
    def feedback_summary() -> dict[str, Any]:
        return {"model_version": chat_model.version, "versions": store.summary()}

    return app
