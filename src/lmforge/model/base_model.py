"""A local Hugging Face model directory as a stage's starting point: checked before anything runs.

``check_base_model`` is the one gate every stage that starts from a user's model (continued
pretraining, SFT) goes through: the directory must hold a ``config.json`` of a causal LM that the
installed transformers implements natively. A model whose code ships in its directory (``auto_map``
in ``config.json``, e.g. InternLM2 or Baichuan) runs arbitrary Python from that directory when
loaded, so it is refused unless the stage's ``trust_remote_code`` is true, with the reason and the
way out (an HF-native port where one exists) in one line.

``resolve_attn_implementation`` keeps the configured attention kernel where the model's class
implements it and falls back to ``eager`` (with a warning) where it does not: BLOOM has no SDPA path,
and a project-wide ``sdpa`` default must not make BLOOM unusable.

Which tokenizer goes with a model is ``lmforge.tokenizer.chat_tokenizer.tokenizer_dir_for`` (the model
directory's own first), loaded by ``ChatTokenizer.for_model``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# HF-native ways to run models whose original release is remote code.
NATIVE_PORTS = {
    "internlm2": "convert it to Llama format (InternLM's tools/convert2llama.py) and point at the converted directory",
    "baichuan": "Baichuan-7B's weights load as Llama after renaming W_pack; use a converted Llama-format copy",
}


class RemoteCodeRefused(PermissionError):
    """Loading the model would run Python shipped in its directory, and the stage did not allow it."""


def read_model_config(model_dir: str | Path, *, where: str) -> dict[str, Any]:
    """``config.json`` of ``model_dir``, or a one-line error naming the parameter to fix."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{where}: {model_dir} has no config.json: point {where} at a local Hugging Face "
                                "model directory (what save_pretrained writes)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{err.lineno}: not valid JSON ({err.msg}): repair or re-download the model") from None


def config_value(config: dict[str, Any], key: str) -> Any:
    """``config[key]``, or the text model's (multimodal configs such as Gemma 3 nest it under ``text_config``)."""
    return config.get(key, (config.get("text_config") or {}).get(key))


def check_vocab_fits(model_dir: str | Path, vocab_size: int, *, where: str) -> dict[str, Any]:
    """Refuse a model whose embedding is smaller than the tokenizer's vocabulary; returns its ``config.json``."""
    config = read_model_config(model_dir, where=where)
    rows = config_value(config, "vocab_size")
    if rows is not None and rows < vocab_size:
        raise ValueError(f"{where}: {model_dir} embeds {rows} tokens but the tokenizer has {vocab_size}: use the "
                         "model's own tokenizer, or a model trained with this one")
    return config


def check_base_model(model_dir: str | Path, *, trust_remote_code: bool, where: str) -> str:
    """The model's ``model_type``; raises when loading it would need code lmforge was not allowed to run."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    config = read_model_config(model_dir, where=where)
    model_type = str(config.get("model_type", ""))
    auto_map = config.get("auto_map") or {}
    native = model_type in CONFIG_MAPPING_NAMES
    if (auto_map or not native) and not trust_remote_code:
        code = auto_map.get("AutoModelForCausalLM") or next(iter(auto_map.values()), None)
        hint = NATIVE_PORTS.get(model_type.lower(), "use a model transformers implements natively")
        raise RemoteCodeRefused(f"{where}: {model_dir} is a {model_type or 'unknown'} model whose code ships in the "
                              f"directory ({code or 'no native transformers class'}); lmforge does not run a model "
                              f"directory's Python unless you set {where.rsplit('.', 1)[0]}.trust_remote_code: true; "
                              f"or {hint}")
    return model_type


def resolve_attn_implementation(model_dir: str | Path, requested: str, *, where: str) -> str:
    """``requested`` when the model's transformers class supports it, else ``eager`` (logged)."""
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    model_type = str(read_model_config(model_dir, where=where).get("model_type", ""))
    name = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type)
    cls = getattr(transformers, name, None) if name else None
    support = {"sdpa": "_supports_sdpa", "flash_attention_2": "_supports_flash_attn"}.get(requested)
    if cls is None or support is None or getattr(cls, support, True):
        return requested
    logger.warning("%s: %s has no %s attention; using eager (set %s.model.attn_implementation: eager to silence "
                   "this)", where, name, requested, where.split(".", 1)[0])
    return "eager"
