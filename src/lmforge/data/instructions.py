"""Instruction pairs from a code corpus: a function's signature and docstring -> its body.

Each documented function (``ast``) becomes a single-turn conversation: the user gives the
signature with its docstring and asks for the implementation; the assistant answers with the body.
Pairs are split into train/validation by their SOURCE document (``assign_split``), so no file
contributes to both sides.
"""

from __future__ import annotations

import ast
import logging
import textwrap
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from lmforge.data.documents import CODE_GROUP, Document
from lmforge.data.splits import assign_split

logger = logging.getLogger(__name__)

PROMPT = "Complete the body of this Python function.\n\n{signature}"


@dataclass
class InstructionConfig:
    """How pairs are extracted."""

    # Stop after this many pairs (documents in input order, functions in source order).
    max_pairs: int = 3000
    # Skip bodies shorter than this many lines (after the docstring).
    min_body_lines: int = 2
    # Skip pairs whose prompt / response exceed these lengths (characters).
    max_prompt_chars: int = 1200
    max_response_chars: int = 1200
    # Share of source documents whose pairs are held out.
    validation_fraction: float = 0.1
    # Seed of the document split.
    seed: int = 0


def extract_function_pairs(doc: Document, config: InstructionConfig) -> tuple[list[dict], Counter]:
    """Pairs ``{"prompt", "response", "function"}`` from one document, and counts of skipped functions."""
    skipped: Counter = Counter()
    try:
        tree = ast.parse(doc.text)
    except (SyntaxError, ValueError):
        skipped["unparsable_document"] += 1
        return [], skipped
    lines = doc.text.splitlines()
    pairs = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        doc_node = node.body[0] if node.body else None
        if not (isinstance(doc_node, ast.Expr) and isinstance(getattr(doc_node, "value", None), ast.Constant)
                and isinstance(doc_node.value.value, str)) or len(node.body) < 2:
            skipped["no_docstring_or_body"] += 1
            continue
        start = min([d.lineno for d in node.decorator_list] + [node.lineno]) - 1
        signature = textwrap.dedent("\n".join(lines[start:doc_node.end_lineno]))
        body = textwrap.dedent("\n".join(lines[doc_node.end_lineno:node.end_lineno]))
        if body.count("\n") + 1 < config.min_body_lines:
            skipped["body_too_short"] += 1
            continue
        prompt = PROMPT.format(signature=signature)
        if len(prompt) > config.max_prompt_chars or len(body) > config.max_response_chars:
            skipped["too_long"] += 1
            continue
        pairs.append({"prompt": prompt, "response": body, "function": node.name})
    return pairs, skipped


def build_instruction_pairs(docs: Iterable[Document], config: InstructionConfig) -> tuple[dict[str, list[dict]], dict]:
    """Conversations ``{"id", "messages", "source_id", "category": "code", "metadata"}`` split into
    train/validation (``metadata["language_group"]`` is ``code``)."""
    splits: dict[str, list[dict]] = {"train": [], "validation": []}
    skipped: Counter = Counter()
    n = 0
    for doc in docs:
        if n >= config.max_pairs:
            break
        if doc.metadata.get("language_group") not in (None, "", CODE_GROUP):  # prose declared by its reader
            skipped["not_code"] += 1
            continue
        pairs, doc_skipped = extract_function_pairs(doc, config)
        skipped.update(doc_skipped)
        split = assign_split(doc.id, config.validation_fraction, config.seed)
        for i, pair in enumerate(pairs[: config.max_pairs - n]):
            splits[split].append({
                "id": f"{doc.id}-{i}",
                "source_id": doc.id,
                "category": "code",
                "metadata": {"language_group": "code", "license": doc.metadata.get("license") or "unknown"},
                "messages": [{"role": "user", "content": pair["prompt"]},
                             {"role": "assistant", "content": pair["response"]}],
            })
            n += 1
    stats = {"pairs": n, "train_pairs": len(splits["train"]), "validation_pairs": len(splits["validation"]),
             "skipped": dict(skipped)}
    logger.info("instruction pairs: %d train, %d validation", stats["train_pairs"], stats["validation_pairs"])
    return splits, stats
