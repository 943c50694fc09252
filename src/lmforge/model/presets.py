"""Named model sizes as data: a table of presets read by ``Preset.from_name``.

Model sizes are data, not code (litgpt's ``name_to_config``). YAML names a preset and lists only
the differences (``Preset.from_name("tiny", n_layers=2)``). Every preset maps onto a Hugging Face
``transformers`` architecture, so what we train and package loads anywhere.

Conventions of the project's spec table (kept here so the table reads like the spec):
- ``ffn_hidden`` counts the gated MLP's gate and up projections *together*, so the
  ``intermediate_size`` of the transformers config is ``ffn_hidden // 2``.
- ``head_dim`` is explicit: it need not equal ``d_model / n_heads`` (internlm-tiny has 4 x 128 = 512
  attention width on a 1024-wide residual stream).

This module is data only: it imports nothing of the package, so ``build.py`` (which turns a preset
into a transformers model) can import it without a circle. ``python -m lmforge.model`` prints the
table with parameter counts of the models actually built (on the meta device: nothing is allocated).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

# What YAML may change in a preset (``pretrain.model.overrides``): scalar fields by name, e.g.
# ``{n_layers: 2, rope_theta: 500000.0}``; ``Preset.from_name`` checks names and types.
PresetOverrides = dict[str, int | float | str | bool]


@dataclass(frozen=True)
class Preset:
    """One named model size. Every field maps to a transformers config field (see ``build.py``)."""

    name: str
    # "llama" -> LlamaForCausalLM (RMSNorm, SwiGLU, rotary, GQA); "gemma" -> GemmaForCausalLM.
    family: str
    # Width of the residual stream.
    d_model: int
    # Number of transformer blocks.
    n_layers: int
    # Gate + up projection widths together (the spec's "FFN hidden dims"); intermediate = half.
    ffn_hidden: int
    # Query heads.
    n_heads: int
    # Key/value heads (grouped-query attention when < n_heads; 1 = multi-query).
    n_kv_heads: int
    # Width of one attention head.
    head_dim: int
    # Vocabulary size; the pipelines override it with the trained tokenizer's size.
    vocab_size: int
    # Longest sequence the rotary embedding is configured for.
    max_seq_len: int = 2048
    # Rotary base frequency.
    rope_theta: float = 10000.0
    # RMSNorm epsilon.
    norm_eps: float = 1e-6
    # Share input embedding and output head weights.
    tie_embeddings: bool = False
    # Spec figures to compare against (None where the spec gives none).
    spec_embedding_params: int | None = None
    spec_non_embedding_params: int | None = None
    # Free-form notes shown by the presets command.
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def intermediate_size(self) -> int:
        return self.ffn_hidden // 2

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> Preset:
        """Look a preset up by name and apply overrides (unknown override keys are an error)."""
        if name not in PRESETS:
            raise KeyError(f"unknown model preset {name!r}; known presets: {', '.join(sorted(PRESETS))}")
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"unknown preset override(s) {sorted(unknown)} for {name!r}; valid: {sorted(known)}")
        base = PRESETS[name]
        for key, value in overrides.items():
            current = getattr(base, key)
            # the table's value gives the type: an int where a float is expected is fine, a bool never is
            expected = (int, float) if isinstance(current, float) else type(current)
            if current is not None and (not isinstance(value, expected) or isinstance(value, bool) != isinstance(
                    current, bool)):
                raise ValueError(f"preset override {key}={value!r} for {name!r}: expected {type(current).__name__} "
                                 f"like the table's {current!r}")
        return replace(base, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# The table. The first two are CPU sizes for laptops and CI; the rest are the spec table's rows.
_TABLE: list[dict[str, Any]] = [
    # Trains in a few minutes on 2 CPU cores: the default of `make run`.
    dict(name="tiny", family="llama", d_model=256, n_layers=4, ffn_hidden=1536, n_heads=4, n_kv_heads=2,
         head_dim=64, vocab_size=4096, max_seq_len=512, notes="CPU default"),
    # The CI/debug target: seconds per step on one core.
    dict(name="debug", family="llama", d_model=64, n_layers=2, ffn_hidden=256, n_heads=4, n_kv_heads=2,
         head_dim=16, vocab_size=4096, max_seq_len=256, notes="tests"),
    dict(name="internlm-tiny", family="llama", d_model=1024, n_layers=12, ffn_hidden=16384, n_heads=4,
         n_kv_heads=1, head_dim=128, vocab_size=128000, max_seq_len=4096,
         spec_embedding_params=262_275_072, spec_non_embedding_params=524_288_000),
    dict(name="internlm-large", family="llama", d_model=4096, n_layers=24, ffn_hidden=65536, n_heads=32,
         n_kv_heads=32, head_dim=128, vocab_size=128000, max_seq_len=4096,
         spec_embedding_params=1_048_576_128, spec_non_embedding_params=4_194_304_000),
    dict(name="japanese-small", family="llama", d_model=768, n_layers=6, ffn_hidden=12288, n_heads=6,
         n_kv_heads=1, head_dim=64, vocab_size=32000, max_seq_len=2048,
         spec_embedding_params=24_576_000, spec_non_embedding_params=98_304_000),
    dict(name="japanese-large", family="llama", d_model=1536, n_layers=12, ffn_hidden=24576, n_heads=12,
         n_kv_heads=12, head_dim=64, vocab_size=32000, max_seq_len=2048,
         spec_embedding_params=49_152_000, spec_non_embedding_params=393_216_000),
    dict(name="gemma-2b", family="gemma", d_model=2048, n_layers=18, ffn_hidden=32768, n_heads=8,
         n_kv_heads=1, head_dim=256, vocab_size=256128, max_seq_len=8192, tie_embeddings=True,
         spec_embedding_params=524_550_144, spec_non_embedding_params=1_981_884_416),
    dict(name="gemma-7b", family="gemma", d_model=3072, n_layers=28, ffn_hidden=49152, n_heads=16,
         n_kv_heads=16, head_dim=256, vocab_size=256128, max_seq_len=8192, tie_embeddings=True,
         spec_embedding_params=786_825_216, spec_non_embedding_params=7_751_248_896),
]

PRESETS: dict[str, Preset] = {row["name"]: Preset(**row) for row in _TABLE}
