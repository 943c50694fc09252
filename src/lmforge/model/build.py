"""Build a Hugging Face model from a preset, and count its parameters without allocating it.

Single-device model code only: ZeRO, launchers and process groups live in ``lmforge.training``.
``describe_presets`` (the table with the counts of the models as built) is here rather than in
``presets.py`` so the table stays plain data that this module imports, with no circle back.
"""

from __future__ import annotations

from typing import Any

from lmforge.model.presets import PRESETS, Preset

# The transformers attention kernel when a config names none (``<stage>.model.attn_implementation``):
# PyTorch's fused scaled_dot_product_attention, on CPU and GPU alike.
ATTN_IMPLEMENTATION = "sdpa"


def build_config(preset: Preset, *, vocab_size: int | None = None, bos_id: int = 1, eos_id: int = 2,
                 pad_id: int = 3, attn_implementation: str = ATTN_IMPLEMENTATION) -> Any:
    """The transformers config for ``preset`` (vocab from the trained tokenizer when given)."""
    common = dict(
        vocab_size=vocab_size or preset.vocab_size,
        hidden_size=preset.d_model,
        intermediate_size=preset.intermediate_size,
        num_hidden_layers=preset.n_layers,
        num_attention_heads=preset.n_heads,
        num_key_value_heads=preset.n_kv_heads,
        head_dim=preset.head_dim,
        max_position_embeddings=preset.max_seq_len,
        rms_norm_eps=preset.norm_eps,
        tie_word_embeddings=preset.tie_embeddings,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )
    if preset.family == "llama":
        from transformers import LlamaConfig

        config = LlamaConfig(**common, rope_theta=preset.rope_theta, hidden_act="silu")
    elif preset.family == "gemma":
        from transformers import GemmaConfig

        config = GemmaConfig(**common, rope_theta=preset.rope_theta, hidden_activation="gelu_pytorch_tanh")
    else:
        raise ValueError(f"preset {preset.name!r} has unknown family {preset.family!r} (llama or gemma)")
    config._attn_implementation = attn_implementation
    return config


def build_model(preset: Preset, *, vocab_size: int | None = None, seed: int = 0, **config_kwargs: Any) -> Any:
    """A freshly initialised causal LM for ``preset`` in fp32 (seeded, so two builds are identical)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = build_config(preset, vocab_size=vocab_size, **config_kwargs)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def count_parameters(preset: Preset, *, vocab_size: int | None = None) -> dict[str, int]:
    """Embedding / non-embedding / total parameter counts, built on the meta device.

    "Embedding" counts the input embedding plus an untied output head (the vocab-sized matrices);
    everything else is non-embedding. Nothing is allocated, so the largest presets are safe.
    """
    import torch
    from transformers import AutoModelForCausalLM

    config = build_config(preset, vocab_size=vocab_size)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    seen: set[int] = set()
    total = embedding = 0
    vocab_modules = {id(model.get_input_embeddings()), id(model.get_output_embeddings())}
    vocab_params = {id(p) for m in model.modules() if id(m) in vocab_modules for p in m.parameters()}
    for p in model.parameters():  # parameters() already de-duplicates tied weights
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        if id(p) in vocab_params:
            embedding += p.numel()
    return {"embedding_params": embedding, "non_embedding_params": total - embedding, "total_params": total}


def describe_presets() -> list[dict[str, Any]]:
    """Parameter counts of every preset as built (meta device), beside the spec figures."""
    rows = []
    for preset in PRESETS.values():
        counts = count_parameters(preset)
        row: dict[str, Any] = {"preset": preset.name, "family": preset.family, **counts}
        for kind in ("embedding", "non_embedding"):
            spec = getattr(preset, f"spec_{kind}_params")
            row[f"spec_{kind}"] = spec
            row[f"diff_{kind}"] = None if spec is None else counts[f"{kind}_params"] - spec
        rows.append(row)
    return rows
