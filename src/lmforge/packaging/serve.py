"""Serve a packaged model over HTTP on loopback: OpenAI-style chat, health, and user ratings.

``python -m lmforge.packaging.serve --model data/07_model_output/lmforge-chat`` (``make serve``) starts a
uvicorn server (one worker) with a FastAPI app:

- ``POST /v1/chat/completions``: ``{"messages": [{"role", "content"}, ...], "max_tokens", "temperature"}``
  -> ``{"id", "model", "choices": [{"message": {"role": "assistant", "content"}, "finish_reason"}], "usage"}``.
  The prompt is the tokenizer's own ``chat_template`` (the project's one template, written into the
  package) with the generation prompt; generation stops on ``<|im_end|>``/EOS.
- ``GET /health``: ``{"status": "ok", "model_version"}``.
- ``POST /v1/feedback``: ``{"id": <response id>, "rating": 1-5}``; ``GET /v1/feedback/summary``: mean rating
  per model version (the user-satisfaction metric).

Every answered request is a row of a SQLite table (``FeedbackStore``; default
``data/08_reporting/serving_feedback.sqlite``) holding the request, the reply, its latency and, once the
user rates it, the rating. ``--summary`` (`log_satisfaction`) logs the mean rating per model version to
MLflow and, for a version served from the Model Registry, tags that registered model version with it
(``user_satisfaction.mean_rating``, ``user_satisfaction.ratings``, ...). Bad requests (malformed JSON, no
messages, unknown role, special-token text, prompt longer than the context) get a 4xx JSON
``{"error": {"message", "type"}}`` and the server keeps serving. Generation holds a lock: one request
generates at a time (a CPU model gains nothing from more).

``--model`` is a package directory, or an MLflow URI (``models:/lmforge-chat-tiny@champion``, ``runs:/...``)
that is downloaded first; the model version recorded with each row is the registry version when known,
else ``<dir name>@<sha256 of the weights, 12 hex>``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

logger = logging.getLogger(__name__)

DEFAULT_MODEL_DIR = "data/07_model_output/lmforge-chat"
"""Where the packaging stage writes the package (catalog entry ``packaged_model``)."""

DEFAULT_FEEDBACK_DB = "data/08_reporting/serving_feedback.sqlite"
"""Request/response/rating table of the server."""

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


# --- the request/response/rating table ------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS interactions (
    id            TEXT PRIMARY KEY,
    created_at    REAL NOT NULL,
    model_version TEXT NOT NULL,
    request       TEXT NOT NULL,   -- JSON of the messages and generation settings
    response      TEXT NOT NULL,
    latency_ms    REAL NOT NULL,
    rating        INTEGER CHECK (rating BETWEEN 1 AND 5),
    rated_at      REAL
)
"""


class FeedbackStore:
    """SQLite table of answered requests and their ratings; safe to use from several threads."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._connect() as db:
            db.execute(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def record(self, response_id: str, model_version: str, request: dict, response: str, latency_ms: float) -> None:
        with self._lock, self._connect() as db:
            db.execute(
                "INSERT INTO interactions (id, created_at, model_version, request, response, latency_ms)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (response_id, time.time(), model_version, json.dumps(request, ensure_ascii=False), response,
                 latency_ms),
            )

    def rate(self, response_id: str, rating: int) -> bool:
        """Set (or replace) the rating of a response; False when the id is unknown."""
        if not 1 <= int(rating) <= 5:
            raise ValueError(f"rating must be an integer from 1 to 5, got {rating!r}")
        with self._lock, self._connect() as db:
            cur = db.execute("UPDATE interactions SET rating = ?, rated_at = ? WHERE id = ?",
                             (int(rating), time.time(), response_id))
            return cur.rowcount == 1

    def get(self, response_id: str) -> dict[str, Any] | None:
        with self._lock, self._connect() as db:
            db.row_factory = sqlite3.Row
            row = db.execute("SELECT * FROM interactions WHERE id = ?", (response_id,)).fetchone()
        return dict(row) if row is not None else None

    def summary(self) -> dict[str, dict[str, float]]:
        """Per model version: ``responses``, ``rated``, ``mean_rating`` (None when nothing is rated), ``rating_rate``."""
        with self._lock, self._connect() as db:
            rows = db.execute(
                "SELECT model_version, COUNT(*), COUNT(rating), AVG(rating) FROM interactions GROUP BY model_version"
            ).fetchall()
        return {
            version: {"responses": n, "rated": rated, "mean_rating": mean, "rating_rate": rated / n if n else 0.0}
            for version, n, rated, mean in rows
        }


SATISFACTION_TAG_PREFIX = "user_satisfaction."
"""Prefix of the registered-model-version tags `log_satisfaction` sets (``user_satisfaction.mean_rating``, ...)."""


def parse_registry_version(model_version: str) -> tuple[str, str] | None:
    """``"<registered model name>/<version number>"`` (what `resolve_model` records) -> (name, number), else None."""
    name, sep, number = model_version.rpartition("/")
    return (name, number) if sep and name and number.isdigit() else None


def log_satisfaction(store: FeedbackStore, tracking_uri: str | None = None) -> dict[str, dict[str, float]]:
    """Log each model version's user-satisfaction metric to MLflow; put it on registered versions too.

    Every model version in the table gets a run in the ``lmforge-serving`` experiment (tag ``model_version``,
    metrics ``serving.user_satisfaction.{responses,rated,mean_rating,rating_rate}``). A version served from the
    Model Registry (``<name>/<number>``, recorded when the server loaded ``models:/<name>@<alias>`` or
    ``models:/<name>/<number>``) also gets tags on that registered model version:
    ``user_satisfaction.{mean_rating,ratings,responses,rating_rate,run_id}``, so the registry shows each
    version's rating next to its lineage. A registry version unknown to this tracking server is logged with
    a warning and skipped. Returns `FeedbackStore.summary`.
    """
    import mlflow

    from lmforge.packaging.loadtest import log_to_mlflow

    summary = store.summary()
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    for version, stats in summary.items():
        metrics = {f"serving.user_satisfaction.{k}": v for k, v in stats.items() if v is not None}
        run_id = log_to_mlflow(metrics, params={}, tags={"model_version": version},
                               run_name=f"satisfaction-{version}", tracking_uri=tracking_uri)
        registered = parse_registry_version(version)
        if registered is None:
            continue
        name, number = registered
        tags = {"ratings": str(stats["rated"]), "responses": str(stats["responses"]),
                "rating_rate": f"{stats['rating_rate']:.6g}", "run_id": run_id}
        if stats["mean_rating"] is not None:
            tags["mean_rating"] = f"{stats['mean_rating']:.6g}"
        try:
            for key, value in tags.items():
                client.set_model_version_tag(name, number, SATISFACTION_TAG_PREFIX + key, value)
        except mlflow.exceptions.MlflowException as exc:
            logger.warning("model version %s is not in the registry at %s, its rating stays on run %s only: %s",
                           version, mlflow.get_tracking_uri(), run_id, exc.message)
            continue
        logger.info("registered model %s version %s: user_satisfaction.mean_rating=%s over %s rating(s)",
                    name, number, tags.get("mean_rating", "none"), tags["ratings"])
    return summary


# --- the model --------------------------------------------------------------------------------------


class BadRequest(ValueError):
    """A request the model cannot answer as sent (4xx): the message says what to change."""


@dataclass
class ChatModel:
    """A loaded package: model + tokenizer + stop ids, with a lock so one request generates at a time."""

    model: Any
    tokenizer: Any
    version: str
    max_context: int
    stop_ids: list[int]
    forbidden_text: tuple[str, ...]

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    @classmethod
    def load(cls, model_dir: str | Path, version: str | None = None, device: str = "auto") -> ChatModel:
        """Load a package; ``device`` "auto" is the first GPU when there is one, else the CPU (fp32 either way)."""
        import torch

        from lmforge.evaluation.generation import END_OF_TURN_TOKEN, load_model_and_tokenizer, resolve_stop_token_ids

        model_dir = Path(model_dir)
        model, tokenizer = load_model_and_tokenizer(model_dir)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        model.to(device)
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"the tokenizer in {model_dir} has no chat_template: serve a package made by "
                             "`kedro run --pipelines packaging` (it writes the project's chat template)")
        markers = {*tokenizer.all_special_tokens, END_OF_TURN_TOKEN, "<|im_start|>"}
        return cls(
            model=model,
            tokenizer=tokenizer,
            version=version or default_model_version(model_dir),
            max_context=int(getattr(model.config, "max_position_embeddings", 0) or 0),
            stop_ids=resolve_stop_token_ids(tokenizer),
            forbidden_text=tuple(sorted(m for m in markers if m)),
        )

    def encode(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """Prompt ids of a conversation; BadRequest on special-token text or a final non-user turn."""
        for k, message in enumerate(messages):
            found = [m for m in self.forbidden_text if m in message["content"]]
            if found:
                raise BadRequest(f"messages[{k}].content contains special-token text {found}: remove it")
        if messages[-1]["role"] != "user":
            raise BadRequest(f"the last message must have role 'user', got {messages[-1]['role']!r}")
        text = self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def reply(self, messages: Sequence[dict[str, str]], *, max_tokens: int, temperature: float,
              seed: int = 0) -> dict[str, Any]:
        """``{"content", "prompt_tokens", "completion_tokens", "finish_reason"}`` for a conversation."""
        import torch

        prompt_ids = self.encode(messages)
        if self.max_context and len(prompt_ids) + max_tokens > self.max_context:
            raise BadRequest(f"prompt ({len(prompt_ids)} tokens) + max_tokens ({max_tokens}) exceeds the model's "
                             f"context of {self.max_context} tokens: shorten the conversation or lower max_tokens")
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        device = next(self.model.parameters()).device
        rng_devices = [device.index or 0] if device.type == "cuda" else []
        with self._lock, torch.random.fork_rng(devices=rng_devices), torch.inference_mode():
            torch.manual_seed(seed)
            input_ids = torch.tensor([prompt_ids], dtype=torch.long, device=device)  # (1, P)
            output = self.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                         max_new_tokens=max_tokens, eos_token_id=self.stop_ids,
                                         pad_token_id=self.stop_ids[0], **sampling)
        new_ids = output[0, len(prompt_ids):].tolist()
        stopped = bool(new_ids) and new_ids[-1] in self.stop_ids
        text_ids = new_ids[:-1] if stopped else new_ids
        return {
            "content": self.tokenizer.decode(text_ids, skip_special_tokens=True),
            "prompt_tokens": len(prompt_ids),
            "completion_tokens": len(new_ids),
            "finish_reason": "stop" if stopped else "length",
        }


def default_model_version(model_dir: str | Path) -> str:
    """``<dir name>@<first 12 hex of the sha256 of the weight files>``: changes exactly when the weights do."""
    model_dir = Path(model_dir)
    digest = hashlib.sha256()
    for path in sorted(model_dir.glob("*.safetensors")) or sorted(model_dir.glob("*.bin")):
        with path.open("rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                digest.update(chunk)
    return f"{model_dir.name}@{digest.hexdigest()[:12]}"


def resolve_model(model: str, download_dir: str | Path | None = None) -> tuple[Path, str | None]:
    """A package directory for ``model`` (a directory or an MLflow URI) and its registry version, if any."""
    if "://" not in model and not model.startswith(("models:/", "runs:/")):
        path = Path(model)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is not a packaged model (no config.json): run "
                                    "`kedro run --pipelines packaging` (or `dvc repro`) first, or pass --model")
        return path, None
    import tempfile

    import mlflow

    version = None
    if model.startswith("models:/"):
        name, _, alias = model[len("models:/"):].partition("@")
        if alias:  # an alias such as champion
            version = f"{name}/{mlflow.MlflowClient().get_model_version_by_alias(name, alias).version}"
        elif name.rpartition("/")[2].isdigit():  # models:/<name>/<version>
            version = name
    dst = Path(download_dir or tempfile.mkdtemp(prefix="lmforge-serve-"))
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model, dst_path=str(dst)))
    candidates = sorted(p.parent for p in local.rglob("config.json") if (p.parent / "tokenizer_config.json").is_file())
    if not candidates:
        raise FileNotFoundError(f"{model} holds no HF model directory (config.json + tokenizer_config.json) "
                                f"under {local}")
    return candidates[0], version


# --- the app --------------------------------------------------------------------------------------
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


def serve(model: str, *, host: str = "127.0.0.1", port: int = 8000, feedback_db: str | Path = DEFAULT_FEEDBACK_DB,
          model_version: str | None = None, max_tokens_limit: int = 256, device: str = "auto") -> None:
    """Load ``model`` and serve it until SIGINT/SIGTERM."""
    import uvicorn

    if host not in LOOPBACK_HOSTS:
        logger.warning("serving on %s: reachable from other machines; use 127.0.0.1 for local use", host)
    model_dir, registry_version = resolve_model(model)
    chat_model = ChatModel.load(model_dir, version=model_version or registry_version, device=device)
    app = create_app(chat_model, FeedbackStore(feedback_db), max_tokens_limit=max_tokens_limit)
    logger.info("serving %s (version %s) on http://%s:%d", model_dir, chat_model.version, host, port)
    uvicorn.run(app, host=host, port=port, workers=1, log_level="warning", access_log=False)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m lmforge.packaging.serve",
        description="Serve a packaged lmforge model: POST /v1/chat/completions, GET /health, POST /v1/feedback.",
    )
    parser.add_argument("--model", default=DEFAULT_MODEL_DIR,
                        help=f"package directory or MLflow URI such as models:/lmforge-chat-tiny@champion "
                             f"(default {DEFAULT_MODEL_DIR})")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1, loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--feedback-db", default=DEFAULT_FEEDBACK_DB, help="SQLite table of requests and ratings")
    parser.add_argument("--model-version", default=None, help="version recorded with each request (default: "
                        "registry version, else <dir>@<weights sha256>)")
    parser.add_argument("--max-tokens-limit", type=int, default=256, help="largest max_tokens a request may ask")
    parser.add_argument("--device", default="auto", help="auto (GPU when present, else CPU), cpu, cuda or cuda:N")
    parser.add_argument("--summary", action="store_true",
                        help="print the mean rating per model version from --feedback-db, then exit; when "
                             "MLFLOW_TRACKING_URI is set, also log it to MLflow (experiment lmforge-serving) and "
                             "tag registry versions (models:/...) with user_satisfaction.*")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.summary:
        import os

        store = FeedbackStore(args.feedback_db)
        summary = log_satisfaction(store) if os.environ.get("MLFLOW_TRACKING_URI") else store.summary()
        logger.info("user satisfaction per model version:\n%s", json.dumps(summary, indent=2))
        return
    serve(args.model, host=args.host, port=args.port, feedback_db=args.feedback_db, model_version=args.model_version,
          max_tokens_limit=args.max_tokens_limit, device=args.device)


if __name__ == "__main__":
    main()
