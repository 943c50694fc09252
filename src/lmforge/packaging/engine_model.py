"""The gateway's model: our prompt checks, then generation by an OpenAI-compatible engine (llama.cpp, vLLM).

`EngineChatModel` has `ChatModel`'s interface (``version``, ``engine``, ``encode``, ``reply``, ``stream``), so
the FastAPI app of ``lmforge.packaging.app`` serves either one unchanged. It loads only the package's
tokenizer and config: every request is checked and encoded by our chat template first (special-token text,
a final non-user turn, prompt + ``max_tokens`` over the context get our 4xx before the engine sees them),
then the *messages* go to ``POST <engine>/v1/chat/completions``, where the engine renders its own template
(the GGUF's; ``lmforge.engine.parity`` proves its token ids equal ours). The engine's ``usage.prompt_tokens``
is compared with our count on every answer and a difference is logged as a warning: a live parity check.

There is no lock around generation: concurrent requests reach the engine at once, and the engine batches them (llama.cpp's
``--parallel`` slots, vLLM's continuous batching). Each request is a new loopback HTTP connection (stdlib
``http.client``; a connection costs ~0.1 ms against milliseconds per token).

Engine failures are ``EngineUnavailable`` (nothing listens, the connection drops, a timeout: the app answers
503) or ``EngineError`` (the engine answered an error status or something that is not its protocol: 502),
each one line that names the engine's URL; the gateway keeps serving and answers again once the engine does.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lmforge.packaging.chat_model import check_context, default_model_version, encode_checked, forbidden_text

logger = logging.getLogger(__name__)


class EngineUnavailable(RuntimeError):
    """The engine did not answer (not running, connection refused or dropped, timed out): HTTP 503."""


class EngineError(RuntimeError):
    """The engine answered, but with an error status or a body that is not an OpenAI chat completion: HTTP 502."""


@dataclass
class EngineChatModel:
    """A package's tokenizer (for our checks) + the URL of an engine serving the same model."""

    tokenizer: Any
    version: str
    max_context: int
    forbidden_text: tuple[str, ...]
    url: str
    engine: str
    """``<engine>:<format>:<first 12 hex of the model file's sha256>``, e.g. ``llama.cpp:q8_0:3f2a...``: recorded
    with each answer and sent as OpenAI's ``system_fingerprint``."""
    timeout: float = 300.0
    """Seconds to wait for the engine's next bytes (a long answer under load streams for a while)."""
    streams: bool = True

    def __post_init__(self) -> None:
        # Only around encoding (~0.1 ms): a fast tokenizer shared by threads can fail with "Already borrowed"
        # when two calls touch its truncation/padding state at once. Generation itself is never serialized.
        self._encode_lock = threading.Lock()

    @classmethod
    def load(cls, model_dir: str | Path, url: str, *, engine: str, version: str | None = None,
             timeout: float = 300.0) -> EngineChatModel:
        """The tokenizer and context of the package in ``model_dir``, for an engine at ``url`` serving it."""
        from transformers import AutoTokenizer

        model_dir = Path(model_dir)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"the tokenizer in {model_dir} has no chat_template: serve a package made by "
                             "`kedro run --pipelines packaging` (it writes the project's chat template)")
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        return cls(tokenizer=tokenizer, version=version or default_model_version(model_dir),
                   max_context=int(config.get("max_position_embeddings") or 0),
                   forbidden_text=forbidden_text(tokenizer), url=url.rstrip("/"), engine=engine, timeout=timeout)

    def encode(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """Prompt ids of a conversation by our template; BadRequest on special-token text or a final non-user turn."""
        with self._encode_lock:
            return encode_checked(self.tokenizer, self.forbidden_text, messages)

    def _checked_prompt_tokens(self, messages: Sequence[dict[str, str]], max_tokens: int) -> int:
        n = len(self.encode(messages))
        check_context(n, max_tokens, self.max_context)
        return n

    def _open(self, payload: dict[str, Any]) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """POST ``payload`` to the engine's chat endpoint; the open connection and its 200 response."""
        parts = urlsplit(self.url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=self.timeout)
        try:
            conn.request("POST", "/v1/chat/completions", body=json.dumps(payload).encode(),
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise EngineUnavailable(f"the engine at {self.url} is not answering "
                                    f"({type(exc).__name__}: {exc})") from exc
        if resp.status != 200:
            body = resp.read()
            conn.close()
            try:
                message = json.loads(body)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = body.decode(errors="replace")[:200]
            kind = EngineUnavailable if resp.status == 503 else EngineError  # 503: llama.cpp still loading
            raise kind(f"the engine at {self.url} answered HTTP {resp.status}: {' '.join(str(message).split())}")
        return conn, resp

    def _payload(self, messages: Sequence[dict[str, str]], max_tokens: int, temperature: float, seed: int,
                 stream: bool) -> dict[str, Any]:
        payload = {"messages": [dict(m) for m in messages], "max_tokens": max_tokens, "temperature": temperature,
                   "seed": seed, "stream": stream}
        if stream:
            payload["stream_options"] = {"include_usage": True}
        return payload

    def _check_prompt_tokens(self, ours: int, usage: dict[str, Any]) -> None:
        theirs = usage.get("prompt_tokens")
        if theirs is not None and theirs != ours:
            logger.warning("the engine counted %s prompt tokens where our template gives %d: its chat template or "
                           "tokenizer differs from the package's (run the packaging stage's parity check)", theirs, ours)

    def reply(self, messages: Sequence[dict[str, str]], *, max_tokens: int, temperature: float,
              seed: int = 0) -> dict[str, Any]:
        """``{"content", "prompt_tokens", "completion_tokens", "finish_reason"}`` from the engine."""
        n_prompt = self._checked_prompt_tokens(messages, max_tokens)
        conn, resp = self._open(self._payload(messages, max_tokens, temperature, seed, stream=False))
        try:
            body = json.loads(resp.read())
            choice = body["choices"][0]
            out = {"content": choice["message"].get("content") or "", "finish_reason": choice.get("finish_reason"),
                   "prompt_tokens": int(body["usage"]["prompt_tokens"]),
                   "completion_tokens": int(body["usage"]["completion_tokens"])}
        except (OSError, http.client.HTTPException) as exc:
            raise EngineUnavailable(f"the engine at {self.url} dropped the answer ({type(exc).__name__}: {exc})") from exc
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise EngineError(f"the engine at {self.url} answered something that is not a chat completion: "
                              f"{type(exc).__name__}: {exc}") from exc
        finally:
            conn.close()
        self._check_prompt_tokens(n_prompt, out)
        return out

    def stream(self, messages: Sequence[dict[str, str]], *, max_tokens: int, temperature: float,
               seed: int = 0) -> Iterator[str | dict[str, Any]]:
        """Pieces of the answer as the engine generates them, then the `reply` dict (the whole text, usage).

        The checks and the connection happen here, before the first item is asked for: a bad request or an
        engine that is down raises now, so the app can still answer with a 4xx/5xx status instead of a stream.
        """
        n_prompt = self._checked_prompt_tokens(messages, max_tokens)
        conn, resp = self._open(self._payload(messages, max_tokens, temperature, seed, stream=True))
        return self._read_stream(conn, resp, n_prompt)

    def _read_stream(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse,
                     n_prompt: int) -> Iterator[str | dict[str, Any]]:
        pieces: list[str] = []
        finish_reason, usage = None, {}
        try:
            for raw in resp:  # server-sent events: "data: {json}" lines, "data: [DONE]" at the end
                line = raw.strip()
                if not line.startswith(b"data:"):
                    continue
                data = line[len(b"data:"):].strip()
                if data == b"[DONE]":
                    break
                chunk = json.loads(data)
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices") or ():
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        pieces.append(piece)
                        yield piece
                    finish_reason = choice.get("finish_reason") or finish_reason
        except (OSError, http.client.HTTPException) as exc:
            raise EngineUnavailable(f"the engine at {self.url} dropped the stream ({type(exc).__name__}: {exc})") from exc
        except (ValueError, AttributeError) as exc:
            raise EngineError(f"the engine at {self.url} streamed something that is not SSE JSON: {exc}") from exc
        finally:
            conn.close()
        if not usage:
            raise EngineError(f"the engine at {self.url} ended its stream without usage (stream_options.include_usage)")
        self._check_prompt_tokens(n_prompt, usage)
        yield {"content": "".join(pieces), "finish_reason": finish_reason,
               "prompt_tokens": int(usage["prompt_tokens"]), "completion_tokens": int(usage["completion_tokens"])}

    def engine_health(self, timeout: float = 2.0) -> bool:
        """Whether the engine answers ``GET /health`` with 200 (llama.cpp: model loaded; vLLM: ready)."""
        parts = urlsplit(self.url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        try:
            conn.request("GET", "/health")
            return conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()
