"""The GGUF packages of a release: the evaluation stage's files shipped beside the HF package, each proven on
llama.cpp to prompt, generate and stop as our chat path does.

The evaluation stage exports the chat model to GGUF (``data/06_models/gguf``: ``model-<format>.gguf`` and a
manifest, ``quantization.json``, listing each file's bytes and sha256) and scores its bits per byte.
`release_gguf` takes those files and the packaged HF model and:

1. copies each configured format as ``<model_name>-<format>.gguf`` into a staging folder (the catalog's
   ``packaged_gguf``, ``data/07_model_output/lmforge-chat-gguf``), checking its sha256 against the manifest;
2. writes an Ollama ``Modelfile`` (``lmforge.engine.gguf.ollama_modelfile``: ``FROM`` the
   ``engine.ollama_format`` file, our template converted to Go's, a ``stop`` per stop token) and a README
   with the llama-server and Ollama commands for the real file names;
3. starts one ``LlamaServer`` per format, one after the other, and runs ``lmforge.engine.parity.check_parity``
   against the packaged HF model on the template audit's conversation plus ``engine.conversations`` held-out
   chat conversations (a Chinese and a Japanese one first when there are any): prompt ids equal for every
   format, greedy tokens equal for ``engine.reference_format`` (f32) and an agreeing prefix reported for the
   others, the stop rule for all. A mismatch raises ``TemplateParityError`` and nothing is registered.

It returns the staging folder, flat metrics for packaging.json (``engine.<format>.bytes``,
``.prompt_ids_equal``, ``.greedy_agreement``, ``.stop_ok``, ``engine.parity_passed``) and the record
written to ``data/08_reporting/template_audit/engine.json`` (per format and conversation: both token lists).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lmforge.engine.gguf import file_sha256
from lmforge.errors import UserError
from lmforge.locks import owned_tempdir
from lmforge.packaging.config import EngineConfig

logger = logging.getLogger(__name__)

MANIFEST = "quantization.json"
"""The evaluation stage's manifest beside its GGUF files (``lmforge.evaluation.quantization``)."""
MODELFILE = "Modelfile"
DISABLED_NOTE = "ENGINE_DISABLED.md"
"""The only file of the GGUF package folder when ``packaging.engine.enabled`` is false."""

Messages = list[dict[str, str]]

FULL_PRECISION_ARGS = ("--flash-attn", "off", "--cache-type-k", "f32", "--cache-type-v", "f32")
"""llama-server flags for the reference format: its attention and KV cache in f32 too (llama.cpp's defaults,
flash attention and an f16 cache, moved the f32 file's log-probs by 0.012 against ours; these, by 7e-5). The
other formats are checked as they are deployed, with the defaults."""


def find_gguf_files(gguf_dir: str | Path, formats: Sequence[str]) -> dict[str, Path]:
    """``{format: file}`` in the evaluation stage's folder: from its manifest, else ``*-<format>.gguf``.

    UserError when the folder, the manifest's quantization or a format is missing (what to change is said).
    """
    gguf_dir = Path(gguf_dir)
    manifest = _read_manifest(gguf_dir)
    if manifest.get("enabled") is False:
        raise UserError(f"{gguf_dir}/{MANIFEST} says evaluation.quantization.enabled was false: there are no GGUF "
                        "files to package", "enable evaluation.quantization or set packaging.engine.enabled: false")
    listed = manifest.get("formats", {})
    found = {}
    for fmt in formats:
        if fmt in listed:
            path = gguf_dir / listed[fmt]["file"]
        else:
            matches = sorted(gguf_dir.glob(f"*-{fmt}.gguf"))
            path = matches[0] if len(matches) == 1 else gguf_dir / f"<name>-{fmt}.gguf"
        if not path.is_file():
            raise UserError(f"no {fmt} GGUF file in {gguf_dir} (looked for {path.name})",
                            "add the format to evaluation.quantization.formats and rerun evaluation, or drop it "
                            "from packaging.engine.formats")
        found[fmt] = path
    return found


def select_conversations(held_out: Sequence[Mapping[str, Any]], n: int, tokenizer: Any, *,
                         max_prompt_tokens: int) -> list[Messages]:
    """The audit conversation's prompt, then up to ``n`` held-out prompts that fit ``max_prompt_tokens``.

    A held-out record is ``{"messages": [...]}`` (``sft_validation_conversations``); its prompt is its
    messages before the last assistant turn. A Chinese and a Japanese prompt (by script:
    ``lmforge.data.langid.detect_script``) come first when there are any, then the rest in input order.
    """
    from lmforge.data.langid import detect_script
    from lmforge.generation import encode_chat
    from lmforge.tokenizer.template_audit import AUDIT_CONVERSATION

    prompts: list[tuple[str, Messages]] = []
    for record in held_out:
        messages = [dict(m) for m in record.get("messages", [])]
        while messages and messages[-1].get("role") == "assistant":
            messages.pop()
        if not messages or messages[-1].get("role") != "user":
            continue
        if len(encode_chat(tokenizer, messages)) > max_prompt_tokens:
            continue
        script = detect_script(" ".join(m["content"] for m in messages if m["role"] == "user"))[0]
        prompts.append(({"Hani": "zh", "Jpan": "ja"}.get(script, "other"), messages))
    audit = len(encode_chat(tokenizer, AUDIT_CONVERSATION[:-1]))
    if audit > max_prompt_tokens:
        raise UserError(f"the template audit's prompt ({audit} tokens) leaves no room for packaging.engine.n_tokens "
                        f"in the model's context", "lower packaging.engine.n_tokens")
    ordered = [next((m for lang, m in prompts if lang == want), None) for want in ("zh", "ja")]
    chosen = [m for m in ordered if m is not None]
    chosen += [m for _, m in prompts if not any(m is c for c in chosen)]
    return [[dict(m) for m in AUDIT_CONVERSATION[:-1]]] + chosen[:n]


def release_gguf(package_dir: str | Path, gguf_dir: str | Path, config: EngineConfig, *, model_name: str,
                 held_out: Sequence[Mapping[str, Any]] = ()) -> tuple[str, dict[str, float], dict[str, Any]]:
    """Ship and check the GGUF files (module docstring); returns (staging folder, flat metrics, engine audit)."""
    from lmforge.engine.gguf import ollama_modelfile
    from lmforge.engine.parity import check_parity, reference_completions
    from lmforge.engine.server import LlamaServer
    from lmforge.generation import load_model_and_tokenizer

    files = find_gguf_files(gguf_dir, config.formats)
    expected = {fmt: entry.get("sha256") for fmt, entry in _read_manifest(Path(gguf_dir)).get("formats", {}).items()}
    out_dir = owned_tempdir("lmforge-gguf-") / f"{model_name}-gguf"
    out_dir.mkdir()
    shipped = {}
    for fmt, source in files.items():
        target = out_dir / f"{model_name}-{fmt}.gguf"
        shutil.copyfile(source, target)
        sha = file_sha256(target)
        if expected.get(fmt) and expected[fmt] != sha:
            raise UserError(f"{source} has sha256 {sha[:12]}, its manifest says {expected[fmt][:12]}",
                            "rerun the evaluation stage (`dvc repro evaluation`) to export it again")
        shipped[fmt] = {"file": target.name, "bytes": target.stat().st_size, "sha256": sha}

    model, tokenizer = load_model_and_tokenizer(package_dir)
    context = int(getattr(model.config, "max_position_embeddings", 0) or 2048)
    conversations = select_conversations(held_out, config.conversations, tokenizer,
                                         max_prompt_tokens=context - config.n_tokens)
    stop_texts = [t for t in tokenizer.convert_ids_to_tokens(_stop_ids(tokenizer, model)) if t]
    ollama_file = shipped[config.ollama_format]["file"]
    (out_dir / MODELFILE).write_text(ollama_modelfile(ollama_file, tokenizer.chat_template, stop_texts,
                                                      num_ctx=context, bos_token=tokenizer.bos_token or ""),
                                     encoding="utf-8")
    (out_dir / "README.md").write_text(f"# {model_name}: GGUF packages\n\n"
                                       + run_instructions(model_name, shipped, config.ollama_format, context),
                                       encoding="utf-8")

    reference = reference_completions(tokenizer, model, conversations, n_tokens=config.n_tokens)
    results = {}
    for fmt in config.formats:
        reference_format = fmt == config.reference_format
        server = LlamaServer(out_dir / shipped[fmt]["file"], parallel=1, ctx_size=context, threads=config.threads,
                             extra_args=FULL_PRECISION_ARGS if reference_format else ())
        with server.start(timeout=config.startup_timeout_s):
            results[fmt] = check_parity(server.url, tokenizer, model, conversations, n_tokens=config.n_tokens,
                                        greedy=reference_format, label=fmt, reference=reference,
                                        tie_tolerance=config.tie_tolerance)
    audit = engine_audit(results, shipped, conversations, config)
    card = Path(package_dir) / "README.md"
    if card.is_file():  # the HF package's model card says how to run the checked files
        with open(card, "a", encoding="utf-8") as fh:
            fh.write("\n## Run it on an engine\n\nThe GGUF files below ship in the folder beside this package "
                     "(the packaging stage's `packaged_gguf`).\n\n"
                     + run_instructions(model_name, shipped, config.ollama_format, context, heading_level=3))
    return str(out_dir), engine_metrics(results, shipped), audit


def disabled_release(reason: str) -> tuple[str, dict[str, float], dict[str, Any]]:
    """What `release_gguf`'s caller returns when the engine step is off: a folder holding only a note."""
    out_dir = owned_tempdir("lmforge-gguf-") / "gguf"
    out_dir.mkdir()
    (out_dir / DISABLED_NOTE).write_text(f"No GGUF package: {reason}.\n", encoding="utf-8")
    logger.info("GGUF packages and the engine parity check skipped: %s", reason)
    return str(out_dir), {"engine.enabled": 0.0}, {"stage": "engine", "enabled": False, "reason": reason}


def engine_metrics(results: Mapping[str, Mapping[str, Any]], shipped: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """Headline numbers for packaging.json: per format its bytes, prompt-ids equality, greedy agreement
    (agreeing tokens / our tokens, over all conversations) and stop check; all passed (1.0) or the stage failed."""
    out: dict[str, float] = {"engine.enabled": 1.0, "engine.parity_passed": 1.0}
    for fmt, r in results.items():
        out.update({f"engine.{fmt}.bytes": float(shipped[fmt]["bytes"]),
                    f"engine.{fmt}.prompt_ids_equal": float(r["prompt_ids_equal"]),
                    f"engine.{fmt}.greedy_agreement": sum(r["greedy_agreeing_prefix"]) / max(r["greedy_tokens"], 1),
                    f"engine.{fmt}.greedy_exact": float(r["greedy_exact"]),
                    f"engine.{fmt}.greedy_ties": float(len(r["greedy_ties"])),
                    f"engine.{fmt}.stop_ok": float(r["stop_ok"])})
    out["engine.conversations"] = float(next(iter(results.values()))["conversations"]) if results else 0.0
    return out


def engine_audit(results: Mapping[str, Mapping[str, Any]], shipped: Mapping[str, Mapping[str, Any]],
                 conversations: Sequence[Messages], config: EngineConfig) -> dict[str, Any]:
    """The record of template_audit/engine.json: settings, conversations, and per format the file and the check."""
    return {"stage": "engine", "enabled": True, "engine": "llama.cpp llama-server", "n_tokens": config.n_tokens,
            "reference_format": config.reference_format, "conversations": conversations,
            "formats": {fmt: {**shipped[fmt], **results[fmt]} for fmt in results}}


def run_instructions(model_name: str, shipped: Mapping[str, Mapping[str, Any]], ollama_format: str, context: int,
                     *, heading_level: int = 2) -> str:
    """Which GGUF file is which, and the llama-server and Ollama commands (the GGUF folder's README, the card)."""
    rows = "\n".join(f"| {fmt} | {f['file']} | {f['bytes']:,} | `{f['sha256'][:16]}` |" for fmt, f in shipped.items())
    server_file = shipped[ollama_format]["file"]
    h = "#" * heading_level
    return ("Every file passed lmforge's template-parity check on llama.cpp (prompt ids equal, full precision's "
            "greedy tokens equal, stops at the end of turn): template_audit/engine.json.\n\n"
            f"| format | file | bytes | sha256 |\n|---|---|---|---|\n{rows}\n\n"
            f"{h} llama.cpp\n\n"
            f"```\nllama-server -m {server_file} --jinja -c {context} --host 127.0.0.1 --port 8080\n"
            "curl -s http://127.0.0.1:8080/v1/chat/completions -H 'Content-Type: application/json' \\\n"
            "  -d '{\"messages\": [{\"role\": \"user\", \"content\": \"Hello\"}]}'\n```\n\n"
            f"{h} Ollama\n\n"
            f"```\nollama create {model_name} -f Modelfile\nollama run {model_name}\n```\n")


def _stop_ids(tokenizer: Any, model: Any) -> list[int]:
    from lmforge.generation import resolve_stop_token_ids

    return resolve_stop_token_ids(tokenizer, getattr(model, "generation_config", None))


def _read_manifest(gguf_dir: Path) -> dict[str, Any]:
    if not gguf_dir.is_dir():
        raise UserError(f"no GGUF folder at {gguf_dir}",
                        "run the evaluation stage first (it exports the GGUF files), or set packaging.engine.enabled: "
                        "false")
    path = gguf_dir / MANIFEST
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


