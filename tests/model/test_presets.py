"""Model presets: the table builds, counts add up, lookups fail clearly, the debug model runs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lmforge.model.build import build_config, build_model, count_parameters
from lmforge.model.presets import PRESETS, Preset


def expected_non_embedding(p: Preset) -> int:
    """Parameters outside the vocab matrices of a Llama/Gemma decoder, from the preset's own fields."""
    attention = p.d_model * p.n_heads * p.head_dim * 2 + p.d_model * p.n_kv_heads * p.head_dim * 2  # q, o, k, v
    mlp = 3 * p.d_model * p.intermediate_size  # gate, up, down
    norms = 2 * p.d_model
    return p.n_layers * (attention + mlp + norms) + p.d_model  # + final norm


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_on_meta_device(name):
    preset = PRESETS[name]

    counts = count_parameters(preset)

    vocab_matrices = 1 if preset.tie_embeddings else 2
    assert counts["embedding_params"] == vocab_matrices * preset.vocab_size * preset.d_model
    assert counts["non_embedding_params"] == expected_non_embedding(preset)
    assert counts["total_params"] == counts["embedding_params"] + counts["non_embedding_params"]


def test_count_parameters_uses_the_given_vocab_size():
    preset = PRESETS["debug"]

    small = count_parameters(preset, vocab_size=300)

    assert small["embedding_params"] == 2 * 300 * preset.d_model
    assert small["non_embedding_params"] == count_parameters(preset)["non_embedding_params"]


def test_from_name_applies_overrides_without_touching_the_table():
    original = PRESETS["debug"]

    preset = Preset.from_name("debug", n_layers=3, rope_theta=500.0)

    assert (preset.n_layers, preset.rope_theta) == (3, 500.0)
    assert preset.d_model == original.d_model and preset.name == "debug"
    assert PRESETS["debug"].n_layers == original.n_layers != 3


def test_from_name_rejects_an_unknown_override_key_by_name():
    with pytest.raises(ValueError, match="n_layerz"):
        Preset.from_name("debug", n_layerz=3)


def test_from_name_rejects_an_override_of_the_wrong_type():
    assert Preset.from_name("debug", rope_theta=500).rope_theta == 500  # an int where a float is expected
    with pytest.raises(ValueError, match="n_layers='2'"):
        Preset.from_name("debug", n_layers="2")
    with pytest.raises(ValueError, match="tie_embeddings=1"):
        Preset.from_name("debug", tie_embeddings=1)
    with pytest.raises(ValueError, match="n_layers=True"):
        Preset.from_name("debug", n_layers=True)


def test_from_name_unknown_preset_lists_known_names():
    with pytest.raises(KeyError) as err:
        Preset.from_name("huge")

    message = str(err.value)
    assert "huge" in message
    assert all(name in message for name in PRESETS)


def test_build_config_rejects_unknown_family():
    with pytest.raises(ValueError, match="family"):
        build_config(Preset.from_name("debug", family="mamba"))


def test_presets_command_json_has_one_row_per_preset():
    out = subprocess.run([sys.executable, "-m", "lmforge.model", "--json"], capture_output=True, text=True,
                         check=True, timeout=120)

    rows = json.loads(out.stdout)

    assert [r["preset"] for r in rows] == list(PRESETS)
    for row in rows:
        assert row["total_params"] == row["embedding_params"] + row["non_embedding_params"]
        for kind in ("embedding", "non_embedding"):
            if row[f"spec_{kind}"] is None:
                assert row[f"diff_{kind}"] is None
            else:
                assert row[f"diff_{kind}"] == row[f"{kind}_params"] - row[f"spec_{kind}"]


def test_debug_model_forward_pass():
    import torch

    model = build_model(PRESETS["debug"], vocab_size=300, seed=0)
    input_ids = torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(0))

    out = model(input_ids=input_ids, labels=input_ids)

    assert out.logits.shape == (2, 16, 300)
    assert out.logits.dtype == torch.float32
    assert torch.isfinite(out.logits).all()
    assert torch.isfinite(out.loss)
    assert sum(p.numel() for p in model.parameters()) == count_parameters(PRESETS["debug"], vocab_size=300)[
        "total_params"]


def test_same_seed_builds_identical_models_and_another_seed_differs():
    import torch

    a = build_model(PRESETS["debug"], vocab_size=300, seed=7).state_dict()
    b = build_model(PRESETS["debug"], vocab_size=300, seed=7).state_dict()
    c = build_model(PRESETS["debug"], vocab_size=300, seed=8).state_dict()

    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
