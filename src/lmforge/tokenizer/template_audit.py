"""The template audit: one conversation as training, evaluation and serving each encode it, compared.

Every stage that turns chat into ids writes an audit of ``AUDIT_CONVERSATION`` (a system prompt and
two exchanges, English and Chinese) through its own real path:

- **sft**: the training example (text, ids, labels, which tokens carry loss) and the prompt for the
  last assistant turn (``ChatTokenizer``);
- **evaluation**: the prompt as ``lmforge.generation`` encodes it for the model being evaluated;
- **packaging**: the prompt as the packaged model's server encodes it.

Each audit also holds the template's sha256, the end-of-turn token and the stop, BOS and pad ids.
``check_audits`` compares every later stage with sft's: the same template hash and stop ids, and the
prompt ids equal to the training ids up to where the answer starts (what the model was trained to
continue). A difference fails the run naming the first differing token, both ways round: the
template or special-token mismatch that makes a model ramble or never stop is caught before it
ships (LLaMA-Factory #5476, #5836, #7943).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lmforge.tokenizer.chat_tokenizer import ChatTokenizer

AUDIT_CONVERSATION: tuple[dict[str, str], ...] = (
    {"role": "system", "content": "You are a concise assistant."},
    {"role": "user", "content": "What does len('héllo') return in Python?"},
    {"role": "assistant", "content": "5: it counts characters, not bytes."},
    {"role": "user", "content": "请用中文再说一遍。"},
    {"role": "assistant", "content": "返回 5：它数的是字符，不是字节。"},
)


class TemplateMismatchError(ValueError):
    """Two stages encode the same conversation differently (the message names the first differing token)."""


def _pieces(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    return [str(p) for p in tokenizer.convert_ids_to_tokens(list(ids))]


def _header(stage: str, *, template: str, tokenizer: Any, stop_ids: Sequence[int], source: str) -> dict[str, Any]:
    return {"stage": stage, "tokenizer": source, "template_sha256": hashlib.sha256(template.encode("utf-8")).hexdigest(),
            "stop_ids": sorted(int(i) for i in stop_ids), "bos_id": tokenizer.bos_token_id,
            "eos_id": tokenizer.eos_token_id, "conversation": [dict(m) for m in AUDIT_CONVERSATION]}


def training_audit(chat: ChatTokenizer, stage: str = "sft") -> dict[str, Any]:
    """The audit of the training side: the rendered example, its ids and labels, and its prompt."""
    ids, labels = chat.encode_conversation(AUDIT_CONVERSATION)
    prompt_messages = AUDIT_CONVERSATION[:-1]
    prompt_ids = chat.encode_prompt(prompt_messages)
    audit = _header(stage, template=chat.template, tokenizer=chat.tokenizer, stop_ids=chat.stop_ids, source=chat.source)
    audit.update(
        template_name=chat.template_name, end_of_turn=chat.end_of_turn, end_of_turn_id=chat.end_of_turn_id,
        pad_id=chat.pad_id,
        training={"text": chat.render(AUDIT_CONVERSATION), "input_ids": ids, "labels": labels,
                  "tokens": _pieces(chat.tokenizer, ids),
                  "trained_positions": [i for i, label in enumerate(labels) if label != -100]},
        prompt={"text": chat.render(prompt_messages, add_generation_prompt=True), "input_ids": prompt_ids,
                "tokens": _pieces(chat.tokenizer, prompt_ids)},
    )
    return audit


def prompt_audit(stage: str, tokenizer: Any, prompt_ids: Sequence[int], stop_ids: Sequence[int], *,
                 source: str) -> dict[str, Any]:
    """The audit of a prompting side (evaluation, serving): ``prompt_ids`` are what that stage's own code
    encoded for ``AUDIT_CONVERSATION[:-1]``."""
    audit = _header(stage, template=tokenizer.chat_template or "", tokenizer=tokenizer, stop_ids=stop_ids,
                    source=source)
    audit["prompt"] = {"text": tokenizer.decode(list(prompt_ids)), "input_ids": [int(i) for i in prompt_ids],
                       "tokens": _pieces(tokenizer, prompt_ids)}
    return audit


def _first_difference(a: Sequence[int], b: Sequence[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def _describe(audit: Mapping[str, Any], key: str, i: int) -> str:
    ids, tokens = audit[key]["input_ids"], audit[key]["tokens"]
    return f"{tokens[i]!r} (id {ids[i]})" if i < len(ids) else "the end"


def check_audits(reference: Mapping[str, Any], other: Mapping[str, Any]) -> None:
    """Raise ``TemplateMismatchError`` when ``other`` (evaluation, packaging) disagrees with ``reference`` (sft).

    The prompt ids are compared first, so a changed template that changes the prompt is reported with
    its first differing token (and the two template hashes); a template whose text changed but whose
    prompt did not still fails, on the hash.
    """
    stage = other["stage"]
    changed = other["template_sha256"] != reference["template_sha256"]
    template = (f" (its chat template has sha256 {other['template_sha256'][:12]}, sft's "
                f"{reference['template_sha256'][:12]})" if changed else "")
    want = reference["training"]["input_ids"][: len(reference["prompt"]["input_ids"])]
    got = other["prompt"]["input_ids"]
    i = _first_difference(want, got)
    if i is not None:
        expected = (f"{reference['training']['tokens'][i]!r} (id {want[i]})" if i < len(want) else "the end")
        raise TemplateMismatchError(f"{stage} prompts the model differently from how sft trained it{template}: first "
                                    f"difference at token {i}: sft has {expected}, {stage} has "
                                    f"{_describe(other, 'prompt', i)}; see the template audits in "
                                    "data/08_reporting/template_audit/")
    if changed:
        raise TemplateMismatchError(f"{stage} uses a different chat template (sha256 {other['template_sha256'][:12]}) "
                                    f"than sft trained with ({reference['template_sha256'][:12]}), although this "
                                    "conversation's prompt is the same: see the template audits in "
                                    "data/08_reporting/template_audit/")
    missing = sorted(set(reference["stop_ids"]) - set(other["stop_ids"]))
    if missing:
        raise TemplateMismatchError(f"{stage} does not stop on {missing} (sft's end-of-turn "
                                    f"{reference.get('end_of_turn')!r} and EOS ids): the model would not stop")
