"""Tests for lmforge.data.sft_mix: weights, caps, per-category caps, reproducibility, the realised mix."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from lmforge.data.sft_mix import SourceSpec, build_mix, cap_categories, parse_sources, sample_source


def convs(n, categories=1, prefix="c"):
    return [{"id": f"{prefix}{i}", "category": f"cat{i % categories}",
             "messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
            for i in range(n)]


def ids(conversations):
    return [c["id"] for c in conversations]


def test_weight_subsamples_or_repeats_and_keeps_input_order():
    pool = convs(100)
    quarter, info = sample_source(pool, SourceSpec("corpus_instructions", weight=0.25), seed=0)
    assert len(quarter) == 25 == info["selected"] and info["available"] == 100
    assert ids(quarter) == [i for i in ids(pool) if i in set(ids(quarter))]  # input order kept

    more, _ = sample_source(pool, SourceSpec("corpus_instructions", weight=2.5), seed=0)
    counts = Counter(ids(more))
    assert len(more) == 250 and set(counts.values()) == {2, 3} and sum(v == 3 for v in counts.values()) == 50

    default, info = sample_source(pool, SourceSpec("identity"), seed=0, default_weight=3)
    assert ids(default) == ids(pool) * 3 and info["weight"] == 3


def test_max_samples_caps_without_repeating():
    pool = convs(40)
    capped, info = sample_source(pool, SourceSpec("corpus_instructions", max_samples=10), seed=0)
    assert len(capped) == len(set(ids(capped))) == 10 and info["max_samples"] == 10
    everything, _ = sample_source(pool, SourceSpec("corpus_instructions", max_samples=1000), seed=0)
    assert ids(everything) == ids(pool)


def test_per_category_cap_takes_at_most_n_of_each_category():
    pool = convs(24 * 30, categories=24) + convs(5, prefix="rare-")  # 24 categories of 30, cat0 gets 5 more
    capped = cap_categories(pool, 20, seed=1, source="s")
    per_category = Counter(c["category"] for c in capped)
    assert len(per_category) == 24 and set(per_category.values()) == {20}

    selected, info = sample_source(pool, SourceSpec("corpus_instructions", per_category_cap=20, weight=0.5), seed=1)
    assert info["after_category_cap"] == 480 and info["selected"] == 240 == len(selected)
    assert sum(info["categories"].values()) == 240 and len(info["categories"]) <= 24


def test_sampling_is_reproducible_by_seed_and_independent_per_source():
    pool = convs(200, categories=7)
    spec = SourceSpec("corpus_instructions", per_category_cap=20, max_samples=50)
    first, _ = sample_source(pool, spec, seed=3)
    again, _ = sample_source([dict(c) for c in pool], spec, seed=3)
    other, _ = sample_source(pool, spec, seed=4)
    assert ids(first) == ids(again)
    assert ids(first) != ids(other) and len(other) == 50

    renamed, _ = sample_source(pool, SourceSpec("identity", per_category_cap=20, max_samples=50), seed=3)
    assert ids(renamed) != ids(first)  # each source draws from its own stream


def lang_convs(n, lang, category, prefix):
    return [{"id": f"{prefix}{i}", "category": category, "metadata": {"language_group": lang},
             "messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
            for i in range(n)]


def test_default_mix_caps_each_category_balances_languages_and_repeats_identity():
    specs = parse_sources(None)
    assert [s.name for s in specs] == ["libreoffice_translation", "chatterbot_dialogue", "debian_faq",
                                       "corpus_instructions", "identity"]
    builtin = {"libreoffice_translation": lang_convs(900, "zh", "translation", "tz") + lang_convs(40, "ja", "translation", "tj"),
               "chatterbot_dialogue": lang_convs(700, "en", "dialogue", "de") + lang_convs(100, "zh", "dialogue", "dz"),
               "debian_faq": lang_convs(10, "ja", "faq", "fj"),
               "corpus_instructions": lang_convs(800, "code", "code", "c"),
               "identity": lang_convs(4, "zh", "identity", "id-")}

    mixed, quarantine, realised = build_mix(specs, builtin, seed=0, default_weights={"identity": 8})

    by_source = realised["sources"]
    # translation: zh capped at 250 per language, ja keeps its 40; the category cap (500) not reached
    assert by_source["libreoffice_translation"]["languages"] == {"ja": 40, "zh": 250}
    assert by_source["chatterbot_dialogue"]["languages"] == {"en": 160, "zh": 100}
    assert by_source["corpus_instructions"]["selected"] == 500  # the seed recipe's 500 per category
    assert by_source["identity"]["selected"] == 32
    assert realised["by_category"] == {"code": 500, "dialogue": 260, "faq": 10, "identity": 32, "translation": 290}
    assert realised["by_language"] == {"code": 500, "en": 160, "ja": 50, "zh": 382}
    assert realised["conversations"] == len(mixed) == 1092 and quarantine == []
    assert by_source["identity"]["share"] == pytest.approx(32 / 1092)
    assert Counter(c["source"] for c in mixed)["debian_faq"] == 10


def test_per_language_cap_applies_before_the_category_cap():
    pool = lang_convs(300, "en", "dialogue", "e") + lang_convs(300, "ja", "dialogue", "j")
    selected, info = sample_source(pool, SourceSpec("chatterbot_dialogue", per_language_cap=200, per_category_cap=300),
                                   seed=0)
    assert info["after_category_cap"] == 300 and len(selected) == 300
    assert sum(info["languages"].values()) == 300 and max(info["languages"].values()) <= 200


def test_user_sources_are_read_sampled_and_their_bad_records_counted(tmp_path):
    rows = [{"instruction": f"task {i}", "output": f"done {i}", "kind": f"k{i % 3}"} for i in range(30)]
    rows.insert(5, {"instruction": "no answer"})
    path = tmp_path / "alpaca.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    specs = parse_sources([{"name": "corpus_instructions", "weight": 0.5},
                           {"name": "mine", "path": str(path), "format": "alpaca", "category_field": "kind",
                            "per_category_cap": 4}])

    mixed, quarantine, realised = build_mix(specs, {"corpus_instructions": convs(10)}, seed=0)

    mine = realised["sources"]["mine"]
    assert (mine["read"], mine["valid"], mine["quarantined"]) == (31, 30, {"missing_field": 1})
    assert mine["selected"] == 12 and mine["categories"] == {"k0": 4, "k1": 4, "k2": 4}
    assert [(q["location"], q["reason"]) for q in quarantine] == [("alpaca.jsonl:6", "missing_field")]
    assert realised["quarantined"] == 1 and len(mixed) == 5 + 12 == realised["conversations"]
    assert json.loads(json.dumps(realised)) == realised  # the metrics dataset writes it as JSON


def test_the_realised_mix_flattens_to_valid_mlflow_metric_names():
    import posixpath
    import re

    from lmforge.tracking import flatten

    pool = [{**c, "category": name} for c, name in zip(convs(3), ["数学:x", "../up", "a//b/"], strict=True)]
    _, _, realised = build_mix(parse_sources([{"name": "identity", "per_category_cap": 1}]), {"identity": pool},
                               seed=0)
    flat = flatten({"data": {"mix": realised}}, "sft")
    assert flat["sft.data.mix.sources.identity.selected"] == 3.0
    assert len([k for k in flat if ".categories." in k]) == 3
    # mlflow.utils.validation's rules (importing mlflow takes seconds): allowed characters, and a name
    # that is its own normalised path
    assert all(re.fullmatch(r"[/\w.\- :]*", k) and posixpath.normpath(k) == k for k in flat)


@pytest.mark.parametrize(("raw", "message"), [
    ([{"name": "x"}], "has no path"),
    ([{"name": "identity", "path": "a.jsonl"}], "is built in"),
    ([{"name": "x", "path": "a.jsonl", "weight": 1, "max_samples": 3}], "not both"),
    ([{"name": "x", "path": "a.jsonl", "weight": -1}], "weight must be"),
    ([{"name": "debian_faq", "per_language_cap": -1}], "per_language_cap must be"),
    ([{"name": "x", "path": "a.jsonl", "per_category_cap": 5}], "needs category_field"),
    ([{"name": "x", "path": "a.jsonl", "format": "vicuna"}], "format must be one of"),
    ([{"name": "x", "path": "a.jsonl", "wieght": 1}], r"sft.sources\[0\].wieght"),
    ([{"name": "identity"}, {"name": "identity"}], "unique"),
    ([{"name": "my/data", "path": "a.jsonl"}], "letters, digits"),
])
def test_bad_source_configs_are_rejected_with_a_clear_message(raw, message):
    with pytest.raises(ValueError, match=message):
        parse_sources(raw)


def test_the_base_config_declares_the_default_mix(project_root):
    import yaml

    params = yaml.safe_load((project_root / "conf/base/parameters_sft.yml").read_text(encoding="utf-8"))["sft"]
    assert parse_sources(params["sources"]) == parse_sources(None)
    assert [s.name for s in parse_sources(None)] == ["libreoffice_translation", "chatterbot_dialogue", "debian_faq",
                                                     "corpus_instructions", "identity"]
    assert isinstance(params["mix_seed"], int)
