"""Export a packaged model to GGUF (llama.cpp's and Ollama's format), read GGUF metadata, write a Modelfile.

``export_gguf`` turns the HF package (``lmforge.packaging.export.package_model``) into
``<name>-f32.gguf`` and ``<name>-f16.gguf`` with llama.cpp's own converter (``convert_hf_to_gguf.py``), and
``<name>-q8_0.gguf`` / ``<name>-q4_k_m.gguf`` with ``llama-quantize`` from the f32 file (quantizing from the
full-precision file, never from f16, is what llama.cpp recommends). f32 is the reference the parity checks
and the perplexity deltas are measured against.

The tokenizer is the risky part, so the export pins it down instead of trusting the converter's guesses:

- the converter is given our sentencepiece ``tokenizer.model`` (copied beside the package files in a
  staging folder when the package lacks it): with it, the GGUF holds the sentencepiece pieces, scores and
  byte-fallback tokens, and llama.cpp's SPM tokenizer encodes like ours (measured: see
  ``tests/engine/test_gguf.py``). Without it the converter falls back to the HF ``tokenizer.json`` path,
  which loses the scores;
- ``tokenizer.ggml.add_bos_token`` is false and ``add_space_prefix`` false: our chat template writes
  ``{{ bos_token }}`` itself, so the engine must not add a second BOS, and our model has no dummy prefix;
- the chat template's end-of-turn (``<|im_end|>``) is written as ``tokenizer.ggml.eot_token_id``, so
  generation stops there (llama.cpp also guesses it from the text; Ollama's stop comes from the Modelfile);
- the chat template is the package's own, unchanged (llama.cpp's Jinja engine ignores the
  ``{% generation %}`` markers, as transformers does at inference).

``ollama_modelfile`` writes the Ollama ``Modelfile``: Ollama renders Go templates, not Jinja, so our
ChatML-style template is translated (``chat_template_to_go``) and the translation checked to render a
conversation exactly as the Jinja template does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.engine.llama_cpp import converter, tool
from lmforge.errors import UserError
from lmforge.processes import die_with

__all__ = ["GGUF_FORMATS", "GgufFile", "chat_template_to_go", "export_gguf", "gguf_metadata", "ollama_modelfile",
           "render_go_template"]

logger = logging.getLogger(__name__)

GGUF_FORMATS = ("f32", "f16", "q8_0", "q4_k_m")
"""The formats ``export_gguf`` writes: f32 (the full-precision reference), f16, 8-bit and 4-bit."""

QUANTIZE_TYPES = {"f16": "F16", "q8_0": "Q8_0", "q4_k_m": "Q4_K_M"}
"""Formats ``llama-quantize`` makes from the converter's f32 file (its type names). f16 too: one converter run
(~8 s CPU: it imports torch) instead of two, and llama-quantize keeps the 1-D tensors in f32 as the converter does."""

SENTENCEPIECE_FILE = "tokenizer.model"


@dataclass(frozen=True)
class GgufFile:
    """One exported GGUF file: its format (``GGUF_FORMATS``), path, size in bytes and sha256."""

    format: str
    path: Path
    bytes: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "path": str(self.path), "bytes": self.bytes, "sha256": self.sha256}


def export_gguf(package_dir: str | Path, out_dir: str | Path, *, name: str, formats: Sequence[str] = GGUF_FORMATS,
                tokenizer_model: str | Path | None = None) -> dict[str, GgufFile]:
    """Write ``<out_dir>/<name>-<format>.gguf`` for each of ``formats``; returns them by format.

    ``package_dir`` is an HF package folder; ``tokenizer_model`` the sentencepiece model to convert with
    (default: ``<package_dir>/tokenizer.model``; pass the tokenizer stage's ``tokenizer.model``, which the package
    does not hold). Without one (a foreign model's package) the converter reads the package's own tokenizer files.
    f32 is always converted (the quantized formats are made from it) but only kept when asked for.
    """
    package_dir, out_dir = Path(package_dir), Path(out_dir)
    unknown = [f for f in formats if f not in GGUF_FORMATS]
    if unknown:
        raise ValueError(f"unknown GGUF format(s) {unknown}: choose from {GGUF_FORMATS}")
    if not (package_dir / "config.json").is_file():
        raise FileNotFoundError(f"no HF package at {package_dir} (config.json missing): run the packaging stage")
    sp_model = Path(tokenizer_model) if tokenizer_model else package_dir / SENTENCEPIECE_FILE
    if tokenizer_model and not sp_model.is_file():
        raise FileNotFoundError(f"sentencepiece model not found: {sp_model}")
    if not sp_model.is_file():  # a foreign model's own tokenizer files: the converter reads them as they are
        logger.warning("%s has no %s: the converter uses the package's tokenizer.json (our own tokenizer needs the "
                       "tokenizer stage's %s as tokenizer_model)", package_dir, SENTENCEPIECE_FILE, SENTENCEPIECE_FILE)
        sp_model = None
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {fmt: out_dir / f"{name}-{fmt}.gguf" for fmt in GGUF_FORMATS}
    tokenizer = _tokenizer_facts(package_dir, sp_model)

    with tempfile.TemporaryDirectory(prefix=".gguf-staging-", dir=out_dir) as tmp:
        staging = Path(tmp) / "package"
        staging.mkdir()
        for item in package_dir.iterdir():  # links: the weights are not copied
            if item.is_file() and item.name != SENTENCEPIECE_FILE:
                (staging / item.name).symlink_to(item.resolve())
        if sp_model is not None:
            shutil.copyfile(sp_model, staging / SENTENCEPIECE_FILE)

        raw, made = Path(tmp) / "f32.raw.gguf", {fmt: Path(tmp) / path.name for fmt, path in paths.items()}
        _convert(staging, raw, "f32")
        _fix_metadata(raw, made["f32"], **tokenizer)
        for fmt in (f for f in formats if f in QUANTIZE_TYPES):
            _quantize(made["f32"], made[fmt], QUANTIZE_TYPES[fmt])
        for fmt in formats:  # only complete files reach out_dir, each by an atomic rename
            os.replace(made[fmt], paths[fmt])

    files = {fmt: _describe(fmt, paths[fmt]) for fmt in GGUF_FORMATS if fmt in formats}
    logger.info("GGUF export of %s: %s", package_dir,
                ", ".join(f"{f.format} {f.bytes / 1e6:.1f} MB" for f in files.values()))
    return files


END_OF_TURN = "<|im_end|>"
"""Our chat template's end of turn: the GGUF's ``eot_token_id``."""


def _tokenizer_facts(package_dir: Path, sp_model: Path | None) -> dict[str, Any]:
    """What ``_fix_metadata`` pins, read from the package: its added tokens (content -> (id, special)), whether its
    chat template writes BOS itself, and (with a sentencepiece model) whether that model adds a dummy prefix."""
    tokenizer_json = package_dir / "tokenizer.json"
    if not tokenizer_json.is_file():
        raise FileNotFoundError(f"{tokenizer_json} not found: the package must hold its tokenizer")
    data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    added = {tok["content"]: (int(tok["id"]), bool(tok.get("special"))) for tok in data.get("added_tokens", [])}
    config = json.loads((package_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    template_file = package_dir / "chat_template.jinja"
    template = template_file.read_text(encoding="utf-8") if template_file.is_file() else config.get("chat_template")
    bos = config.get("bos_token")
    bos = bos.get("content") if isinstance(bos, dict) else bos
    writes_bos = bool(template and bos) and _render_jinja(
        template, [{"role": "user", "content": "x"}], add_generation_prompt=True, bos_token=bos).startswith(bos)
    dummy_prefix = None
    if sp_model is not None:
        from sentencepiece import sentencepiece_model_pb2

        proto = sentencepiece_model_pb2.ModelProto()
        proto.ParseFromString(sp_model.read_bytes())
        dummy_prefix = bool(proto.normalizer_spec.add_dummy_prefix)
    return {"added_tokens": added, "template_writes_bos": writes_bos, "dummy_prefix": dummy_prefix}


def _run(cmd: Sequence[str], what: str, *, env: Mapping[str, str] | None = None) -> None:
    started = time.perf_counter()
    logger.info("%s: %s", what, " ".join(map(str, cmd)))
    # die_with: a SIGKILLed stage must not leave a converter or quantizer writing into the folder a rerun fills
    proc = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, env=env, check=False,  # noqa: PLW1509
                          preexec_fn=die_with(os.getpid()))
    if proc.returncode != 0:
        tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
        raise UserError(f"{what} failed (exit {proc.returncode}): {tail}",
                        "check the package with `python -m lmforge.packaging...` or rebuild llama.cpp: `make install`")
    logger.info("%s done in %.1f s", what, time.perf_counter() - started)


def _convert(package: Path, out: Path, outtype: str) -> None:
    script, gguf_py = converter()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(gguf_py), env.get("PYTHONPATH", "")) if p)
    _run([sys.executable, script, package, "--outfile", out, "--outtype", outtype], f"convert to GGUF {outtype}",
         env=env)


def _quantize(src: Path, out: Path, qtype: str) -> None:
    _run([tool("llama-quantize"), src, out, qtype, str(os.cpu_count() or 1)], f"llama-quantize {qtype}")


def _fix_metadata(src: Path, out: Path, *, added_tokens: Mapping[str, tuple[int, bool]], template_writes_bos: bool,
                  dummy_prefix: bool | None) -> None:
    """Copy ``src`` to ``out`` with our tokenizer metadata pinned (the module docstring says which and why).

    Measured on the converter's own output (transformers 5 no longer saves ``add_bos_token`` nor
    ``added_tokens_decoder`` in a package's ``tokenizer_config.json``): no ``add_bos_token`` key (llama.cpp's
    SPM default is true: a doubled BOS), no ``add_space_prefix`` (default true: a leading space our model
    never saw), ``<|im_start|>``/``<|im_end|>`` typed NORMAL (split like text, not matched whole) and no EOT.
    """
    import gguf

    reader = gguf.GGUFReader(src)
    arch = reader.get_field(gguf.Keys.General.ARCHITECTURE).contents()
    writer = gguf.GGUFWriter(out, arch=arch, endianess=reader.endianess)
    overrides: dict[str, tuple[Any, Any, Any]] = {gguf.Keys.Tokenizer.ADD_EOS: (False, gguf.GGUFValueType.BOOL, None)}
    if template_writes_bos:  # else the converter's value stands (the tokenizer's own add_bos_token)
        overrides[gguf.Keys.Tokenizer.ADD_BOS] = (False, gguf.GGUFValueType.BOOL, None)
    if dummy_prefix is not None:  # sentencepiece vocabulary: llama.cpp's default is true, ours is false
        overrides[gguf.Keys.Tokenizer.ADD_PREFIX] = (dummy_prefix, gguf.GGUFValueType.BOOL, None)
    if END_OF_TURN in added_tokens:
        overrides[gguf.Keys.Tokenizer.EOT_ID] = (added_tokens[END_OF_TURN][0], gguf.GGUFValueType.UINT32, None)
    types = list(reader.get_field(gguf.Keys.Tokenizer.TOKEN_TYPE).contents())
    for content, (token_id, special) in added_tokens.items():
        # special (<s>, </s>, <pad>, <unk>) and our end of turn: CONTROL (never printed); the other added tokens
        # (<|im_start|>): USER_DEFINED, matched whole in any text, as sentencepiece and HF match them
        control = special or content == END_OF_TURN
        if types[token_id] != gguf.TokenType.UNKNOWN:
            types[token_id] = gguf.TokenType.CONTROL if control else gguf.TokenType.USER_DEFINED
    overrides[gguf.Keys.Tokenizer.TOKEN_TYPE] = (types, gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.INT32)
    alignment = reader.get_field(gguf.Keys.General.ALIGNMENT)
    if alignment is not None:
        writer.data_alignment = alignment.contents()
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        if field.name in overrides:
            continue
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), value_type, sub_type=sub_type)
    for key, (value, value_type, sub_type) in overrides.items():
        writer.add_key_value(key, value, value_type, sub_type=sub_type)
    for tensor in reader.tensors:
        writer.add_tensor_info(tensor.name, tensor.data.shape, tensor.data.dtype, tensor.data.nbytes, tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in reader.tensors:
        writer.write_tensor_data(tensor.data, tensor_endianess=reader.endianess)
    writer.close()


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (GGUF files are tens of MB to GB): the one file hash of the
    GGUF manifest, the packaging stage's copy check and the server's lineage check."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _describe(fmt: str, path: Path) -> GgufFile:
    return GgufFile(format=fmt, path=path, bytes=path.stat().st_size, sha256=file_sha256(path))


def gguf_metadata(path: str | Path) -> dict[str, Any]:
    """What a GGUF says about its tokenizer and context, read with the ``gguf`` package.

    Keys: ``architecture``, ``context_length`` (the training context, ``n_ctx_train``), ``chat_template``,
    ``bos_token_id``, ``eos_token_id``, ``eot_token_id``, ``add_bos_token``, ``add_eos_token``,
    ``add_space_prefix``, ``tokenizer_model``, ``vocab_size``, ``file_type`` (None where the file has no such key).
    """
    import gguf

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {path}")
    reader = gguf.GGUFReader(path)

    def value(key: str) -> Any:
        field = reader.get_field(key)
        return None if field is None else field.contents()

    arch = value(gguf.Keys.General.ARCHITECTURE)
    tokens = reader.get_field(gguf.Keys.Tokenizer.LIST)
    return {
        "architecture": arch,
        "context_length": value(gguf.Keys.LLM.CONTEXT_LENGTH.format(arch=arch)),
        "chat_template": value(gguf.Keys.Tokenizer.CHAT_TEMPLATE),
        "bos_token_id": value(gguf.Keys.Tokenizer.BOS_ID),
        "eos_token_id": value(gguf.Keys.Tokenizer.EOS_ID),
        "eot_token_id": value(gguf.Keys.Tokenizer.EOT_ID),
        "add_bos_token": value(gguf.Keys.Tokenizer.ADD_BOS),
        "add_eos_token": value(gguf.Keys.Tokenizer.ADD_EOS),
        "add_space_prefix": value(gguf.Keys.Tokenizer.ADD_PREFIX),
        "tokenizer_model": value(gguf.Keys.Tokenizer.MODEL),
        "vocab_size": None if tokens is None else len(tokens.data),
        "file_type": value(gguf.Keys.General.FILE_TYPE),
    }


# --- Ollama ---

_ROLE, _CONTENT = "\x00ROLE\x00", "\x00CONTENT\x00"
PROBE_ROLES = ("system", "user", "assistant")


def _render_jinja(chat_template: str, messages: Sequence[Mapping[str, str]], *, add_generation_prompt: bool,
                  bos_token: str) -> str:
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template(conversations=[[dict(m) for m in messages]], chat_template=chat_template,
                                        add_generation_prompt=add_generation_prompt, bos_token=bos_token)
    return rendered[0]


def chat_template_to_go(chat_template: str, *, bos_token: str = "<s>") -> str:
    """Our Jinja chat template as an Ollama (Go ``text/template``) template, or ValueError when it cannot be.

    Ollama cannot run Jinja, so the translation is derived from what the template *renders*, not from its
    source: the text before any message, one message's text with its role and content cut out, and the
    generation prompt. That holds for templates that write every message the same way (ours: ChatML with a
    leading BOS); a template whose message text depends on the role or the position (Llama-2's ``[INST]``,
    a system prompt folded into the first user turn) is refused, never translated approximately.
    """
    def render(messages: Sequence[Mapping[str, str]], gen: bool = False) -> str:
        return _render_jinja(chat_template, messages, add_generation_prompt=gen, bos_token=bos_token)

    head = render([])
    generation = render([], gen=True).removeprefix(head)
    shapes = set()
    for role in PROBE_ROLES:
        text = render([{"role": role, "content": _CONTENT}])
        if not text.startswith(head) or text.count(_CONTENT) != 1:
            raise ValueError(f"chat template writes a {role} message in a way Ollama's template cannot express")
        shapes.add(text.removeprefix(head).replace(role, _ROLE, 1))
    if len(shapes) != 1:
        raise ValueError("chat template writes messages differently by role: no Go translation (write the "
                         "Modelfile's TEMPLATE by hand)")
    message = shapes.pop()
    if _ROLE not in message:
        raise ValueError("chat template does not write the role of a message")
    go_message = message.replace(_ROLE, "{{ .Role }}").replace(_CONTENT, "{{ .Content }}")
    go = f"{head}{{{{- range .Messages }}}}{go_message}{{{{ end }}}}{generation}"
    # the translation must render a real conversation exactly as the Jinja template does
    probe = [{"role": "system", "content": "You are Forge."}, {"role": "user", "content": "hi\nthere"},
             {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "2+2?"}]
    if render_go_template(go, probe) != render(probe, gen=True):
        raise ValueError("the Go translation of the chat template does not render like the template")
    return go


def render_go_template(template: str, messages: Sequence[Mapping[str, str]]) -> str:
    """Render the subset of Go templates ``chat_template_to_go`` writes (text, ``{{- range .Messages }}`` ...
    ``{{ end }}``, ``{{ .Role }}``, ``{{ .Content }}``) the way Ollama does: a check, not an Ollama."""
    start, end = "{{- range .Messages }}", "{{ end }}"
    if template.count(start) != 1 or template.count(end) != 1 or template.index(start) > template.index(end):
        raise ValueError("not a template of the form chat_template_to_go writes")
    head, rest = template.split(start)
    body, tail = rest.split(end)
    # `{{-` trims the whitespace before it, as in Go
    parts = [head.rstrip()]
    for m in messages:
        parts.append(body.replace("{{ .Role }}", m["role"]).replace("{{ .Content }}", m["content"]))
    return "".join(parts) + tail


def ollama_modelfile(gguf_filename: str, chat_template: str, stop: Sequence[str], *, num_ctx: int,
                     bos_token: str = "<s>") -> str:
    """An Ollama ``Modelfile`` for ``./<gguf_filename>``: our template in Go syntax (``chat_template_to_go``),
    one ``PARAMETER stop`` per stop string (the end of turn), the context size.

    Ollama renders the template, then tokenizes it with special tokens parsed: the leading BOS is the
    template's (the GGUF's ``add_bos_token`` is false), ``<|im_start|>``/``<|im_end|>`` are single tokens.
    """
    go = chat_template_to_go(chat_template, bos_token=bos_token)
    if '"""' in go:
        raise ValueError('the chat template contains """, which a Modelfile cannot quote')
    lines = [f"FROM ./{gguf_filename}", f'TEMPLATE """{go}"""']
    lines += [f"PARAMETER stop {json.dumps(s, ensure_ascii=False)}" for s in stop]
    lines.append(f"PARAMETER num_ctx {int(num_ctx)}")
    return "\n".join(lines) + "\n"
