"""A loaded chat package: model + tokenizer, the prompt checks of the server, and replies via lmforge.generation.

``resolve_model`` turns ``--model`` (a package directory, or an MLflow URI such as
``models:/lmforge-chat-tiny@champion`` or ``runs:/...``, downloaded first) into a directory and its
registry version; ``ChatModel.load`` loads it (fp32, first GPU when there is one). ``ChatModel.reply``
renders a conversation with the tokenizer's own ``chat_template`` (``lmforge.generation.encode_chat``),
refuses what the model cannot answer as sent (``BadRequest``: special-token text, a final non-user turn,
a prompt + ``max_tokens`` longer than the context) and generates with ``lmforge.generation`` (stop on
the package's stop ids: EOS, ``<|im_end|>`` and every ``eos_token_id`` of its generation_config, where
packaging lists the template's end-of-turn; greedy at temperature 0, else sampled with the request's
seed). ``serving_audit`` is the template audit of this path: packaging checks it against sft's. A lock lets one
request generate at a time (a CPU model gains nothing from more). The model version recorded with each
reply is the registry version when known, else ``<dir name>@<sha256 of the weights, 12 hex>``.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.errors import UserError

CONTEXT_LIMIT_CODE = "context_length_exceeded"
"""The ``error.code`` of a 400 for a conversation longer than the context (OpenAI's code for it)."""


class BadRequest(ValueError):
    """A request the model cannot answer as sent (4xx): the message says what to change."""

    code: str | None = None


class ContextLimitExceeded(BadRequest):
    """The prompt + ``max_tokens`` is longer than the model's context: the conversation must be shortened."""

    code = CONTEXT_LIMIT_CODE


class ModelNotFoundError(UserError, FileNotFoundError):
    """``--model`` names no packaged model (a directory without config.json, an unknown registry URI)."""


@dataclass
class ChatModel:
    """A loaded package: model + tokenizer + stop ids, with a lock so one request generates at a time."""

    model: Any
    tokenizer: Any
    version: str
    max_context: int
    stop_ids: list[int]
    forbidden_text: tuple[str, ...]
    engine: str = "torch:f32"
    """What generates the answers, recorded with each one (the gateway's is ``llama.cpp:<format>:<gguf sha>``)."""
    streams: bool = False
    """Whether `stream` yields text as it is generated; ours yields the whole answer at once (one lock, one
    ``generate`` call), so a client's time to first token is the full latency."""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    @classmethod
    def load(cls, model_dir: str | Path, version: str | None = None, device: str = "auto") -> ChatModel:
        """Load a package; ``device`` "auto" is the first GPU when there is one, else the CPU (fp32 either way)."""
        import torch

        from lmforge.generation import load_model_and_tokenizer, resolve_stop_token_ids

        model_dir = Path(model_dir)
        model, tokenizer = load_model_and_tokenizer(model_dir)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        model.to(device)
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"the tokenizer in {model_dir} has no chat_template: serve a package made by "
                             "`kedro run --pipelines packaging` (it writes the project's chat template)")
        return cls(
            model=model,
            tokenizer=tokenizer,
            version=version or default_model_version(model_dir),
            max_context=int(getattr(model.config, "max_position_embeddings", 0) or 0),
            stop_ids=resolve_stop_token_ids(tokenizer, model.generation_config),
            forbidden_text=forbidden_text(tokenizer),
            engine=f"torch:f32:{device}",
        )

    def encode(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """Prompt ids of a conversation; BadRequest on special-token text or a final non-user turn."""
        return encode_checked(self.tokenizer, self.forbidden_text, messages)

    def reply(self, messages: Sequence[dict[str, str]], *, max_tokens: int, temperature: float,
              seed: int = 0) -> dict[str, Any]:
        """``{"content", "prompt_tokens", "completion_tokens", "finish_reason"}`` for a conversation.

        Greedy at ``temperature`` 0, else sampled at that temperature from ``seed``.
        """
        from lmforge.generation import generate_from_ids

        prompt_ids = self.encode(messages)
        check_context(len(prompt_ids), max_tokens, self.max_context)
        with self._lock:
            [completion] = generate_from_ids(self.model, self.tokenizer, [prompt_ids], max_new_tokens=max_tokens,
                                             do_sample=temperature > 0, temperature=temperature or 1.0, seed=seed)
        return {
            "content": completion.text,
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.new_tokens,
            "finish_reason": completion.finish_reason,
        }

    def stream(self, messages: Sequence[dict[str, str]], *, max_tokens: int, temperature: float,
               seed: int = 0) -> Iterator[str | dict[str, Any]]:
        """The `reply` as a stream: its text in one piece, then the `reply` dict (this model does not stream)."""
        out = self.reply(messages, max_tokens=max_tokens, temperature=temperature, seed=seed)
        return iter([out["content"], out])


def forbidden_text(tokenizer: Any) -> tuple[str, ...]:
    """The special-token texts a message may not contain (they would forge turns): specials, added tokens, ChatML."""
    from lmforge.generation import END_OF_TURN_TOKEN

    added = [getattr(t, "content", str(t)) for t in getattr(tokenizer, "added_tokens_decoder", {}).values()]
    markers = {*tokenizer.all_special_tokens, *added, END_OF_TURN_TOKEN, "<|im_start|>"}
    return tuple(sorted(m for m in markers if m))


def encode_checked(tokenizer: Any, forbidden: Sequence[str], messages: Sequence[dict[str, str]]) -> list[int]:
    """Prompt ids of a conversation by the package's chat template; BadRequest on special-token text or a final
    non-user turn. The torch server and the engine gateway both refuse with this, before anything generates."""
    from lmforge.generation import encode_chat

    for k, message in enumerate(messages):
        found = [m for m in forbidden if m in message["content"]]
        if found:
            raise BadRequest(f"messages[{k}].content contains special-token text {found}: remove it")
    if messages[-1]["role"] != "user":
        raise BadRequest(f"the last message must have role 'user', got {messages[-1]['role']!r}")
    return encode_chat(tokenizer, messages)


def check_context(prompt_tokens: int, max_tokens: int, max_context: int) -> None:
    """`ContextLimitExceeded` when the prompt + ``max_tokens`` does not fit ``max_context`` (0: unknown, no check)."""
    if max_context and prompt_tokens + max_tokens > max_context:
        raise ContextLimitExceeded(f"prompt ({prompt_tokens} tokens) + max_tokens ({max_tokens}) exceeds the model's "
                                   f"context of {max_context} tokens: shorten the conversation or lower max_tokens")


def serving_audit(model_dir: str | Path) -> dict[str, Any]:
    """The template audit of serving: ``AUDIT_CONVERSATION[:-1]`` as the server encodes it from the package in
    ``model_dir`` (``ChatModel.encode``), with the server's stop ids (``lmforge.tokenizer.template_audit``)."""
    from lmforge.tokenizer.template_audit import AUDIT_CONVERSATION, prompt_audit

    chat_model = ChatModel.load(model_dir, device="cpu")
    prompt_ids = chat_model.encode([dict(m) for m in AUDIT_CONVERSATION[:-1]])
    return prompt_audit("packaging", chat_model.tokenizer, prompt_ids, chat_model.stop_ids, source=str(model_dir))


def default_model_version(model_dir: str | Path) -> str:
    """``<dir name>@<first 12 hex of the sha256 of the weight files>``: changes exactly when the weights do."""
    model_dir = Path(model_dir)
    digest = hashlib.sha256()
    for path in sorted(model_dir.glob("*.safetensors")) or sorted(model_dir.glob("*.bin")):
        with path.open("rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                digest.update(chunk)
    return f"{model_dir.name}@{digest.hexdigest()[:12]}"


PRODUCE_PACKAGE = "run `make run` (or `kedro run --pipelines packaging`) first"
"""How a package directory comes to exist: the next step of a missing default ``--model``."""


def resolve_model(model: str, download_dir: str | Path | None = None,
                  next_step: str = f"{PRODUCE_PACKAGE}, or pass --model") -> tuple[Path, str | None]:
    """A package directory for ``model`` (a directory or an MLflow URI) and its registry version, if any.

    ``ModelNotFoundError`` (a ``FileNotFoundError``) when there is none; its next step is ``next_step``.
    """
    if "://" not in model and not model.startswith(("models:/", "runs:/")):
        path = Path(model)
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{path} is not a packaged model (no config.json)", next_step)
        return path, None
    import tempfile

    import mlflow
    from mlflow.exceptions import MlflowException

    version = None
    dst = Path(download_dir or tempfile.mkdtemp(prefix="lmforge-serve-"))
    try:
        if model.startswith("models:/"):
            name, _, alias = model[len("models:/"):].partition("@")
            if alias:  # an alias such as champion
                version = f"{name}/{mlflow.MlflowClient().get_model_version_by_alias(name, alias).version}"
            elif name.rpartition("/")[2].isdigit():  # models:/<name>/<version>
                version = name
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model, dst_path=str(dst)))
    except (MlflowException, OSError) as exc:  # unknown name/alias/run, or its artifacts are gone
        detail = " ".join(str(getattr(exc, "message", exc)).split())
        raise ModelNotFoundError(f"{model} not found in the MLflow registry at {mlflow.get_tracking_uri()}: "
                                 f"{detail}", "the registered models and their aliases are in `make ui`; a "
                                 "package directory works too") from exc
    candidates = sorted(p.parent for p in local.rglob("config.json") if (p.parent / "tokenizer_config.json").is_file())
    if not candidates:
        raise ModelNotFoundError(f"{model} holds no HF model directory (config.json + tokenizer_config.json) "
                                 f"under {local}", "register a package made by `kedro run --pipelines packaging`")
    return candidates[0], version
