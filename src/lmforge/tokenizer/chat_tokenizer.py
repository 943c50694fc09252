'''One chat tokenizer for any Hugging Face model: rendering, assistant-only masks and stop tokens.

Training, evaluation and serving all turn a conversation into ids here (``ChatTokenizer``), with the
model's own ``chat_template`` rendered by its own tokenizer (``apply_chat_template``), so the text a
model is trained on is the text it is prompted with. A tokenizer without a template gets one of the
built-in templates by name (``BUILTIN_TEMPLATES``: chatml, llama3, gemma, internlm2), never a silent
default.

What carries loss, for any template: every assistant turn's content and the end-of-turn token that
closes it, nothing else (LLaMA-Factory #5476: a model never trained on its end-of-turn token never
stops). The spans come from rendering prefix by prefix: for assistant message k, the rendering of
``messages[:k]`` with the generation prompt is a prefix of the rendering of ``messages[:k+1]``, which
is a prefix of the whole conversation's; the trained span starts where the generation prompt ends and
ends after the first end-of-turn token that follows. A template that breaks these prefix relations
(the generation prompt differs from what training sees, or history turns are rewritten once later
turns follow) is refused with the reason rather than masked wrongly.

Verified token by token: the rendered text is tokenized once with offsets (``add_special_tokens``
off: the template writes BOS itself where it wants one); every span boundary must fall between two
tokens, the last trained token of every turn must be the end-of-turn id, and the ids must not start
with two BOS (a tokenizer that adds BOS under a template that writes it: doubled BOS in lm-eval).

The end-of-turn token is derived from the template, not assumed: the first special token the
template writes after an assistant message's content. Generation stops on it, on the tokenizer's EOS
and on every ``eos_token_id`` of the model's ``generation_config.json``.
'''

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label of tokens that carry no loss (PyTorch cross-entropy ignore_index)

_CHATML_TURNS = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}"
    "{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Templates for a tokenizer that has none, chosen by name (``sft.chat_template``). Each marks the
# trained part with {% generation %} (transformers' convention) and needs its markers to be single
# tokens of the tokenizer (checked when assigned).
BUILTIN_TEMPLATES: dict[str, str] = {
    "chatml": _CHATML_TURNS,
    "internlm2": "{{ bos_token }}" + _CHATML_TURNS,
    "llama3": (
        "{{ bos_token }}"
        "{% for message in messages %}"
        "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
        "{% if message['role'] == 'assistant' %}"
        "{% generation %}{{ message['content'] | trim + '<|eot_id|>' }}{% endgeneration %}"
        "{% else %}{{ message['content'] | trim + '<|eot_id|>' }}{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
    ),
    "gemma": (
        "{{ bos_token }}"
        "{% set system = messages[0]['content'] + '\\n\\n' if messages[0]['role'] == 'system' else '' %}"
        "{% for message in messages if message['role'] != 'system' %}"
        "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
        "{{ '<start_of_turn>' + role + '\\n' }}"
        "{% if message['role'] == 'assistant' %}"
        "{% generation %}{{ message['content'] | trim + '<end_of_turn>' }}{% endgeneration %}"
        "{% else %}{{ (system if loop.first else '') + message['content'] | trim + '<end_of_turn>' }}{% endif %}"
        "{{ '\\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
    ),
}
# The markers each built-in template writes; all must be single tokens of the tokenizer it is given to.
BUILTIN_MARKERS: dict[str, tuple[str, ...]] = {
    "chatml": ("<|im_start|>", "<|im_end|>"),
    "internlm2": ("<|im_start|>", "<|im_end|>"),
    "llama3": ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
    "gemma": ("<start_of_turn>", "<end_of_turn>"),
}

# A probe conversation: enough to find the end-of-turn token and to check the prefix relations.
_PROBE = ({"role": "user", "content": "ping"}, {"role": "assistant", "content": "pong"})
_ROLES = ("system", "user", "assistant")


class ChatTemplateError(ValueError):
    """The tokenizer's chat template cannot be trained on safely (the message says why and what to do)."""


def validate_messages(messages: Sequence[Mapping[str, Any]]) -> None:
    """Raise ValueError on an empty conversation or an unknown role, TypeError on non-string content."""
    if not messages:
        raise ValueError("A conversation needs at least one message")
    for k, message in enumerate(messages):
        role = message.get("role")
        if role not in _ROLES:
            raise ValueError(f"Message {k}: role must be one of {_ROLES}, got {role!r}")
        if not isinstance(message.get("content"), str):
            raise TypeError(f"Message {k} ({role}): content must be a string")


def _template_sha256(template: str) -> str:
    return hashlib.sha256(template.encode("utf-8")).hexdigest()


def _generation_config_eos(model_dir: Path | None) -> list[int]:
    """``eos_token_id`` of ``generation_config.json`` (an int or a list), else of ``config.json``."""
    if model_dir is None:
        return []
    for name in ("generation_config.json", "config.json"):
        path = model_dir / name
        if path.is_file():
            value = json.loads(path.read_text(encoding="utf-8")).get("eos_token_id")
            if value is not None:
                return [int(v) for v in (value if isinstance(value, list) else [value])]
    return []


@dataclass
class ChatTokenizer:
    """A Hugging Face tokenizer with the one chat template of its model, and what follows from it.

    Build it with ``ChatTokenizer.load``; ``encode_conversation`` gives training ids and labels,
    ``encode_prompt`` the ids a model is prompted with (evaluation and serving), ``save`` writes the
    tokenizer with its template next to a checkpoint.
    """

    # The transformers tokenizer (AutoTokenizer); its ``chat_template`` is ``template``.
    tokenizer: Any
    # The Jinja chat template: the tokenizer's own, or a built-in one named by ``template_name``.
    template: str
    # Where the tokenizer was loaded from.
    source: str
    # Name of the built-in template given to a tokenizer that had none; None: the tokenizer's own.
    template_name: str | None = None
    # Extra stop ids (the model's generation_config eos ids).
    model_stop_ids: list[int] = field(default_factory=list)
    # Derived in __post_init__ from the template: the end-of-turn token and its id.
    end_of_turn: str = field(init=False)
    end_of_turn_id: int = field(init=False)

    def __post_init__(self) -> None:
        self.tokenizer.chat_template = self.template
        self.end_of_turn, self.end_of_turn_id = self._find_end_of_turn()

    @classmethod
    def load(cls, tokenizer_dir: str | Path, *, chat_template: str | None = None, model_dir: str | Path | None = None,
             trust_remote_code: bool = False) -> ChatTokenizer:
        """The tokenizer in ``tokenizer_dir`` with its own template, or the built-in ``chat_template``.

        ``chat_template`` names a built-in template (``BUILTIN_TEMPLATES``) for a tokenizer that has
        none; naming one for a tokenizer that has its own is refused (one template: the model's).
        ``model_dir`` (default ``tokenizer_dir``) supplies ``generation_config.json``'s stop ids.
        """
        from transformers import AutoTokenizer

        tokenizer_dir = Path(tokenizer_dir)
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True,
                                                  trust_remote_code=trust_remote_code)
        own = getattr(tokenizer, "chat_template", None)
        if isinstance(own, dict):  # several named templates: the default one is the chat template
            own = own.get("default")
        if own and chat_template and chat_template not in (own, *(n for n, t in BUILTIN_TEMPLATES.items() if t == own)):
            raise ChatTemplateError(f"{tokenizer_dir} has its own chat_template; the model's template is the one "
                                    f"template, so chat_template: {chat_template!r} is refused: set it to null")
        name = None
        if not own:
            if not chat_template:
                raise ChatTemplateError(f"{tokenizer_dir} has no chat_template: name one of the built-in templates "
                                        f"({', '.join(BUILTIN_TEMPLATES)}) with sft.chat_template")
            if chat_template not in BUILTIN_TEMPLATES:
                raise ChatTemplateError(f"unknown chat_template {chat_template!r}: use one of "
                                        f"{', '.join(BUILTIN_TEMPLATES)}")
            vocab = tokenizer.get_vocab()
            missing = [m for m in BUILTIN_MARKERS[chat_template] if m not in vocab]
            if missing:
                raise ChatTemplateError(f"chat_template {chat_template!r} writes {missing}, which are not tokens of "
                                        f"{tokenizer_dir}: pick a template whose markers its vocabulary has")
            own, name = BUILTIN_TEMPLATES[chat_template], chat_template
            logger.info("%s has no chat template: using the built-in %r", tokenizer_dir, name)
        stops = _generation_config_eos(Path(model_dir) if model_dir else tokenizer_dir)
        return cls(tokenizer=tokenizer, template=own, source=str(tokenizer_dir), template_name=name,
                   model_stop_ids=stops)

    @classmethod
    def for_model(cls, model_dir: str | Path, stage_tokenizer_dir: str | Path, *, chat_template: str | None = None,
                  trust_remote_code: bool = False) -> ChatTokenizer:
        """The tokenizer that goes with ``model_dir`` (``tokenizer_dir_for``), with its stop ids.

        The one rule sft, evaluation and packaging load a model's tokenizer by; ``chat_template`` as in ``load``.
        """
        tokenizer_dir = tokenizer_dir_for(model_dir, stage_tokenizer_dir)
        if not Path(tokenizer_dir, "tokenizer_config.json").is_file():
            raise FileNotFoundError(f"{model_dir} holds no tokenizer and the tokenizer stage's {tokenizer_dir} does "
                                    "not exist: use a model directory with its tokenizer, or run `kedro run "
                                    "--pipelines tokenizer` first")
        return cls.load(tokenizer_dir, chat_template=chat_template, model_dir=model_dir,
                        trust_remote_code=trust_remote_code)

    # ------------------------------------------------------------------ ids and names
    @property
    def vocab_size(self) -> int:
        """Every id the tokenizer can produce (base vocabulary and added tokens)."""
        return len(self.tokenizer)

    @property
    def bos_id(self) -> int | None:
        return self.tokenizer.bos_token_id

    @property
    def stop_ids(self) -> list[int]:
        """Ids that end generation: end-of-turn, the tokenizer's EOS, the model's generation-config EOS ids."""
        ids = [self.end_of_turn_id, self.tokenizer.eos_token_id, *self.model_stop_ids]
        return list(dict.fromkeys(int(i) for i in ids if i is not None))

    @property
    def pad_id(self) -> int:
        """The tokenizer's pad id, else its EOS, else the end-of-turn id (padding is masked out anyway)."""
        for candidate in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id, self.end_of_turn_id):
            if candidate is not None:
                return int(candidate)
        raise AssertionError("unreachable: end_of_turn_id is always set")

    @property
    def template_sha256(self) -> str:
        return _template_sha256(self.template)

    @functools.cached_property
    def sha256(self) -> str:
        """Fingerprint of what decides the ids of chat: the plain-text fingerprint of the tokenizer
        (``hf_encoder.hf_tokenizer_sha256``, the one token shards record) and the template."""
        from lmforge.tokenizer.hf_encoder import hf_tokenizer_sha256

        return hashlib.sha256(f"{hf_tokenizer_sha256(self.tokenizer)}\n{self.template}".encode()).hexdigest()

    @functools.cached_property
    def special_token_texts(self) -> tuple[str, ...]:
        """Texts that encode as control tokens (special and added tokens): never allowed in message content.

        Cached: every conversation is checked against them, and the tokenizer's special tokens never change."""
        added = [t.content if hasattr(t, "content") else str(t)
                 for t in getattr(self.tokenizer, "added_tokens_decoder", {}).values()]
        return tuple(sorted({*self.tokenizer.all_special_tokens, *added} - {""}))

    # ------------------------------------------------------------------ rendering
    def render(self, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = False) -> str:
        """The conversation as text, by the tokenizer's own ``apply_chat_template``."""
        return self.tokenizer.apply_chat_template([dict(m) for m in messages], tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)

    def encode_text(self, text: str) -> list[int]:
        """Ids of rendered chat text: no special tokens added (the template writes BOS where it wants one)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode_prompt(self, messages: Sequence[Mapping[str, Any]]) -> list[int]:
        """Ids a model is prompted with to answer ``messages`` (evaluation and serving)."""
        validate_messages(messages)
        ids = self.encode_text(self.render(messages, add_generation_prompt=True))
        self.check_single_bos(ids)
        return ids

    def check_single_bos(self, ids: Sequence[int], where: str = "") -> None:
        """Raise when ``ids`` start with BOS twice (a tokenizer adding BOS to text whose template wrote one)."""
        bos = self.bos_id
        if bos is not None and len(ids) >= 2 and ids[0] == ids[1] == bos:
            raise ChatTemplateError(f"{where or 'encoded chat'} starts with BOS twice: the template writes "
                                    f"{self.tokenizer.bos_token!r} and the text was encoded with special tokens "
                                    "added; encode rendered chat with add_special_tokens=False")

    def _find_end_of_turn(self) -> tuple[str, int]:
        """The first special token the template writes after an assistant message's content."""
        prompt = self.render(_PROBE[:1], add_generation_prompt=True)
        full = self.render(_PROBE)
        if not full.startswith(prompt):
            raise ChatTemplateError(f"{self.source}: the template's generation prompt {prompt[-40:]!r} is not how it "
                                    "renders an assistant turn in a conversation: generation would not be prompted "
                                    "like training; fix the template (or name a built-in one)")
        answer = full[len(prompt):]
        after = answer[answer.find("pong") + len("pong"):] if "pong" in answer else answer
        specials = sorted(self.special_token_texts, key=len, reverse=True)
        stripped = after.lstrip(" ")
        for token in specials:
            if stripped.startswith(token):
                return token, int(self.tokenizer.convert_tokens_to_ids(token))
        raise ChatTemplateError(f"{self.source}: the template ends an assistant turn with {after[:40]!r}, not with a "
                                "special token, so generation could never stop at the end of a turn; use a template "
                                f"that closes turns with an end-of-turn token (built-in: {', '.join(BUILTIN_TEMPLATES)})")

    # ------------------------------------------------------------------ training examples
    def assistant_spans(self, messages: Sequence[Mapping[str, Any]]) -> tuple[str, list[tuple[int, int]]]:
        """(rendered conversation, character spans that carry loss), by rendering prefix by prefix."""
        full = self.render(messages)
        spans: list[tuple[int, int]] = []
        for k, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            prompt = self.render(messages[:k], add_generation_prompt=True)
            turn = self.render(messages[: k + 1])
            if not turn.startswith(prompt):
                raise ChatTemplateError(f"message {k}: the generation prompt is not a prefix of the rendered assistant "
                                        "turn: the model would be prompted differently from how it is trained")
            if not full.startswith(turn):
                raise ChatTemplateError(f"message {k}: the template renders this assistant turn differently once later "
                                        "turns follow (history rewritten, e.g. reasoning stripped): train on "
                                        "conversations ending at this turn instead")
            end = turn.find(self.end_of_turn, len(prompt))
            if end < 0:
                raise ChatTemplateError(f"message {k}: the rendered assistant turn has no {self.end_of_turn!r}: the "
                                        "model would not learn to stop")
            spans.append((len(prompt), end + len(self.end_of_turn)))
        return full, spans

    def encode_conversation(self, messages: Sequence[Mapping[str, Any]], *,
                            train_on_prompt: bool = False) -> tuple[list[int], list[int]]:
        """``(input_ids, labels)``: labels are the ids on trained tokens and -100 elsewhere (not shifted).

        ``input_ids`` equal ``apply_chat_template(messages, tokenize=True)``. Raises ValueError for an
        invalid conversation, content holding special-token text, or a template whose spans fall
        inside a token (``ChatTemplateError``, naming the place).
        """
        validate_messages(messages)
        markers = self.special_token_texts
        for k, message in enumerate(messages):
            found = [m for m in markers if m in message["content"]]
            if found:
                raise ValueError(f"Message {k} ({message['role']}) contains special-token text {found}: it would be "
                                 "encoded as the control token and corrupt the chat structure")
        text, spans = self.assistant_spans(messages)
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(encoded["input_ids"])
        self.check_single_bos(ids)
        if train_on_prompt:
            return ids, list(ids)
        offsets = [tuple(o) for o in encoded["offset_mapping"]]
        starts = {s for s, _ in offsets}
        ends = {e for _, e in offsets}
        labels = [IGNORE_INDEX] * len(ids)
        for start, end in spans:
            if start not in starts or end not in ends:
                at = start if start not in starts else end
                raise ChatTemplateError(f"a trained-span boundary falls inside a token at {text[max(0, at - 20):at]!r}|"
                                        f"{text[at:at + 20]!r}: the mask would be wrong by a piece of a token")
            trained = [i for i, (s, _) in enumerate(offsets) if start <= s < end]
            if not trained or ids[trained[-1]] != self.end_of_turn_id:
                raise ChatTemplateError(f"an assistant turn's trained tokens do not end with {self.end_of_turn!r} "
                                        f"(id {self.end_of_turn_id}): the model would not learn to stop")
            for i in trained:
                labels[i] = ids[i]
        return ids, labels

    # ------------------------------------------------------------------ files
    def save(self, out_dir: str | Path) -> None:
        """Write the tokenizer with its chat template into ``out_dir`` (next to a checkpoint)."""
        self.tokenizer.chat_template = self.template
        self.tokenizer.save_pretrained(str(out_dir))


def tokenizer_dir_for(model_dir: str | Path, stage_tokenizer_dir: str | Path) -> str:
    """The one rule for which tokenizer goes with a model: the model directory's own when it holds one (a
    foreign model, or a checkpoint lmforge saved with its tokenizer), else the tokenizer stage's."""
    return str(model_dir) if has_tokenizer(model_dir) else str(stage_tokenizer_dir)


def has_tokenizer(model_dir: str | Path) -> bool:
    """True when ``model_dir`` holds a Hugging Face tokenizer (``tokenizer_config.json`` and its vocabulary)."""
    model_dir = Path(model_dir)
    return (model_dir / "tokenizer_config.json").is_file() and any(
        (model_dir / name).is_file() for name in ("tokenizer.json", "tokenizer.model", "vocab.json"))
