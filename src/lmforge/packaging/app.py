"""The FastAPI app of the chat server: OpenAI-style chat, health, and user ratings.

- ``POST /v1/chat/completions``: ``{"messages": [{"role", "content"}, ...], "max_tokens", "temperature", "seed"}``
  -> ``{"id", "model", "choices": [{"message": {"role": "assistant", "content"}, "finish_reason"}], "usage"}``.
- ``GET /health``: ``{"status": "ok", "model_version"}``.
- ``POST /v1/feedback``: ``{"id": <response id>, "rating": 1-5}``; ``GET /v1/feedback/summary``: mean rating
  per model version (the user-satisfaction metric).

Bad requests (malformed JSON, no messages, unknown role, special-token text, prompt longer than the
context) get a 4xx JSON ``{"error": {"message", "type"}}`` and the server keeps serving. Every answered
request is recorded in the ``FeedbackStore``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lmforge.packaging.chat_model import BadRequest, ChatModel
from lmforge.packaging.feedback_store import FeedbackStore

# Request bodies live at module level: FastAPI resolves (postponed) annotations in the module globals.


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)  # None: min(64, the server's --max-tokens-limit)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    seed: int = 0
    model: str | None = None  # accepted for OpenAI compatibility; this server has one model


class Feedback(BaseModel):
    id: str = Field(min_length=1)
    rating: int = Field(ge=1, le=5)
    comment: str | None = None


def create_app(chat_model: ChatModel, store: FeedbackStore, *, max_tokens_limit: int = 256) -> Any:
    """The FastAPI app around a loaded model and a feedback table."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    app = FastAPI(title="lmforge chat", version=chat_model.version)

    def error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
        return JSONResponse(status_code=status, content={"error": {"message": message, "type": kind}})

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for e in exc.errors():
            if e.get("type") == "json_invalid":  # loc is ("body", <character position>)
                problems.append(f"body is not valid JSON (character {e['loc'][-1]}): "
                                f"{e.get('ctx', {}).get('error', e.get('msg'))}")
                continue
            where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
            problems.append(f"{where}: {e.get('msg')}")
        return error(400, "; ".join(problems) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail), "not_found" if exc.status_code == 404 else "http_error")

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "model_version": chat_model.version}

    @app.post("/v1/chat/completions")
    def chat_completions(req: ChatRequest) -> Any:
        max_tokens = min(64, max_tokens_limit) if req.max_tokens is None else req.max_tokens
        if max_tokens > max_tokens_limit:
            return error(400, f"max_tokens: at most {max_tokens_limit} on this server, got {max_tokens}")
        messages = [m.model_dump(include={"role", "content"}) for m in req.messages]
        start = time.perf_counter()
        try:
            out = chat_model.reply(messages, max_tokens=max_tokens, temperature=req.temperature, seed=req.seed)
        except BadRequest as exc:
            return error(400, str(exc))
        latency_ms = (time.perf_counter() - start) * 1000
        response_id = f"chatcmpl-{uuid.uuid4().hex}"
        store.record(response_id, chat_model.version,
                     {"messages": messages, "max_tokens": max_tokens, "temperature": req.temperature,
                      "seed": req.seed}, out["content"], latency_ms)
        return {
            "id": response_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": chat_model.version,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": out["content"]},
                         "finish_reason": out["finish_reason"]}],
            "usage": {"prompt_tokens": out["prompt_tokens"], "completion_tokens": out["completion_tokens"],
                      "total_tokens": out["prompt_tokens"] + out["completion_tokens"]},
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
