'''The project's one chat format (ChatML-like) and the SFT tokenisation that follows from it.

One source of truth: the Jinja template string lives in the Kedro conf (``DEFAULT_CHAT_TEMPLATE`` is
the default the conf copies), is written into the exported tokenizer's ``chat_template``, and is the
template used here to build SFT examples. ``render_chat`` compiles it with the same Jinja environment
that transformers' ``apply_chat_template`` uses, so training text == inference text.

The format (``⏎`` is a newline)::

    <s><|im_start|>system⏎{content}<|im_end|>⏎<|im_start|>user⏎{content}<|im_end|>⏎
    <|im_start|>assistant⏎{content}<|im_end|>⏎

and with ``add_generation_prompt``, ``<|im_start|>assistant⏎`` at the end.

What is trained: the template marks it. Each assistant turn's ``{content}<|im_end|>`` is wrapped in
``{% generation %}...{% endgeneration %}`` (the transformers convention, also used by
``return_assistant_tokens_mask``). So every assistant turn, not only the last, is trained on its content
plus the closing ``<|im_end|>``; the role header and the newline after ``<|im_end|>`` are not.

EOS: the chat format does not use ``</s>``. ``<|im_end|>`` ends an assistant turn and is the token
generation must stop on (packaging should put its id into ``generation_config.eos_token_id``, next to
``</s>``). ``</s>`` stays the document separator of pretraining.

Token boundaries: ids are built segment by segment (trained / not trained) and equal
``tokenizer.encode(render_chat(...))`` because every segment boundary sits next to a newline or an
atomic marker: no learned piece contains a newline (training is per line) and markers never merge.
A template that puts a boundary elsewhere is rejected with a clear error instead of silently
mis-tokenising.
'''

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import jinja2

    from lmforge.tokenizer.sentencepiece_tokenizer import SentencePieceTokenizer

IGNORE_INDEX = -100  # label of tokens that carry no loss (PyTorch cross-entropy ignore_index)

DEFAULT_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{% else %}"
    "{{ message['content'] + '<|im_end|>' }}"
    "{% endif %}"
    "{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

_ROLES = ("system", "user", "assistant")


@lru_cache(maxsize=16)
def compile_chat_template(template: str) -> jinja2.Template:
    """Compile ``template`` in a Jinja environment configured like transformers' apply_chat_template.

    Same settings: ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, the loopcontrols
    extension, a ``{% generation %}`` block tag, a ``tojson`` that does not HTML-escape, and the
    globals ``raise_exception`` and ``strftime_now``.
    """
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationTracker(jinja2.ext.Extension):
        """``{% generation %}...{% endgeneration %}``: records the character span of its output."""

        tags: ClassVar[set[str]] = {"generation"}

        def __init__(self, environment: jinja2.Environment):
            super().__init__(environment)
            # Per-thread (rendered blocks, spans) of the render in progress; None when not tracking.
            self.state = threading.local()
            environment.extend(generation_tracker=self)

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_track", []), [], [], body).set_lineno(lineno)

        def _track(self, caller: Any) -> str:
            text = caller()
            tracking = getattr(self.state, "tracking", None)
            if tracking is not None:
                rendered, spans = tracking
                start = sum(len(block) for block in rendered)
                spans.append((start, start + len(text)))
            return text

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None,
               sort_keys: bool = False) -> str:
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt: str) -> str:
        return datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTracker, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env.from_string(template)


def render_chat_with_spans(
    messages: Sequence[dict[str, Any]],
    template: str,
    *,
    bos_token: str,
    eos_token: str,
    add_generation_prompt: bool = False,
) -> tuple[str, list[tuple[int, int]]]:
    """Render the conversation and return the character spans of ``{% generation %}`` blocks."""
    compiled = compile_chat_template(template)
    tracker = compiled.environment.generation_tracker  # type: ignore[attr-defined]
    rendered: list[str] = []
    spans: list[tuple[int, int]] = []
    tracker.state.tracking = (rendered, spans)
    try:
        for block in compiled.generate(
            messages=[dict(m) for m in messages],
            bos_token=bos_token,
            eos_token=eos_token,
            add_generation_prompt=add_generation_prompt,
        ):
            rendered.append(block)  # noqa: PERF402  (the tracker reads `rendered` between blocks)
    finally:
        tracker.state.tracking = None
    return "".join(rendered), spans


def render_chat(
    messages: list[dict],
    template: str,
    *,
    bos_token: str,
    eos_token: str,
    add_generation_prompt: bool = False,
) -> str:
    """Render ``messages`` ([{"role", "content"}, ...]) to text, like ``apply_chat_template(tokenize=False)``."""
    text, _ = render_chat_with_spans(
        messages, template, bos_token=bos_token, eos_token=eos_token, add_generation_prompt=add_generation_prompt
    )
    return text


def validate_messages(messages: Sequence[dict[str, Any]]) -> None:
    """Raise ValueError on an unknown role, TypeError on non-string content."""
    if not messages:
        raise ValueError("A conversation needs at least one message")
    for k, message in enumerate(messages):
        role = message.get("role")
        if role not in _ROLES:
            raise ValueError(f"Message {k}: role must be one of {_ROLES}, got {role!r}")
        if not isinstance(message.get("content"), str):
            raise TypeError(f"Message {k} ({role}): content must be a string")


def _is_safe_boundary(text: str, pos: int, markers: Sequence[str]) -> bool:
    """True when no token can straddle ``pos``: next to a newline, an atomic marker or an end."""
    if pos in (0, len(text)) or text[pos - 1] == "\n" or text[pos] == "\n":
        return True
    return any(text.startswith(m, pos) or text.endswith(m, 0, pos) for m in markers)


def tokenize_conversation(
    messages: list[dict],
    tokenizer: SentencePieceTokenizer,
    template: str,
    *,
    train_on_prompt: bool = False,
) -> tuple[list[int], list[int]]:
    """Return ``(input_ids, labels)``; labels are the ids on trained tokens and -100 elsewhere.

    ``input_ids == tokenizer.encode(render_chat(messages, template, ...))``. Trained tokens are the
    ``{% generation %}`` spans (every assistant turn's content and its ``<|im_end|>``); with
    ``train_on_prompt`` every token is trained. Labels are not shifted (the model shifts them).
    Raises ValueError when a message's content contains special-token text (``<s>``,
    ``<|im_end|>``, ...), which would silently become a control token.
    """
    validate_messages(messages)
    markers = tokenizer.user_defined_symbols + tokenizer.special_tokens
    for k, message in enumerate(messages):
        found = [m for m in markers if m in message["content"]]
        if found:
            raise ValueError(
                f"Message {k} ({message['role']}) contains special-token text {found}: it would be encoded "
                "as the special token and corrupt the chat structure; drop or escape such conversations"
            )
    bos = tokenizer.id_to_token(tokenizer.bos_id)
    eos = tokenizer.id_to_token(tokenizer.eos_id)
    text, spans = render_chat_with_spans(messages, template, bos_token=bos, eos_token=eos)
    if train_on_prompt:
        ids = tokenizer.encode(text)
        return ids, list(ids)

    cuts: list[tuple[int, int, bool]] = []  # (start, end, trained)
    pos = 0
    for start, end in spans:
        if start < pos:
            raise ValueError("Nested or overlapping {% generation %} blocks in the chat template")
        for boundary in (start, end):
            if not _is_safe_boundary(text, boundary, markers):
                raise ValueError(
                    f"Chat template puts a trained-span boundary at {text[max(0, boundary - 20):boundary]!r}|"
                    f"{text[boundary:boundary + 20]!r}, not next to a newline or a special marker: "
                    "tokens could merge across it"
                )
        cuts.append((pos, start, False))
        cuts.append((start, end, True))
        pos = end
    cuts.append((pos, len(text), False))

    input_ids: list[int] = []
    labels: list[int] = []
    for start, end, trained in cuts:
        if start == end:
            continue
        ids = tokenizer.encode(text[start:end])
        input_ids.extend(ids)
        labels.extend(ids if trained else [IGNORE_INDEX] * len(ids))
    return input_ids, labels
