"""lmforge.data.sft_sources: held-out splits per category by source unit, the missing-cache error, the build."""

from __future__ import annotations

from collections import Counter

import pytest

from lmforge.data.sft_sources import ChatSourcesConfig, build_chat_sources, check_cache, split_held_out


def translation(page, i, en, zh):
    return {"id": f"t-{page}-{i}", "category": "translation",
            "messages": [{"role": "user", "content": f"Translate into Chinese:\n\n{en}"},
                         {"role": "assistant", "content": zh}],
            "metadata": {"page": page, "source_text": en, "src_lang": "en", "tgt_lang": "zh",
                         "language_group": "zh"}}


def test_no_page_is_on_both_sides_and_held_out_texts_are_not_trained_on():
    convs = [translation(f"p{p}.html", i, f"Paragraph {i} of page {p}.", f"第{p}页第{i}段。")
             for p in range(200) for i in range(3)]
    train, validation, counts = split_held_out(convs, fraction=0.1, seed=0, max_validation_per_language=10_000)

    held_pages = {c["metadata"]["page"] for c in validation}
    assert held_pages and not held_pages & {c["metadata"]["page"] for c in train}
    assert 8 <= len(held_pages) <= 35  # ~10% of 200 pages, whole pages
    assert set(Counter(c["metadata"]["page"] for c in validation).values()) == {3}
    assert counts == {"held_out_units_conversations": len(validation), "validation": len(validation),
                      "train": len(train), "dropped_held_out_text": {}}

    # the same paragraph on a training page is dropped from training
    held_text = validation[0]["metadata"]["source_text"]
    train_page = train[0]["metadata"]["page"]
    leak = translation(train_page, 99, held_text, "别处的同一段")
    train2, _, counts2 = split_held_out([*convs, leak], fraction=0.1, seed=0, max_validation_per_language=10_000)
    assert leak not in train2 and len(train2) == len(train)
    assert counts2["dropped_held_out_text"] == {"translation": 1}


def test_validation_is_sampled_per_category_and_language_deterministically():
    convs = [{**translation(f"p{p}.html", 0, f"English {p}.", f"中文{p}"),
              "metadata": {"page": f"p{p}.html", "language_group": lang, "source_text": f"English {p}."}}
             for p in range(400) for lang in ("zh",)]
    convs += [{"id": f"d{i}", "category": "dialogue", "metadata": {"unit": f"u{i}", "language_group": "en"},
               "messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
              for i in range(400)]
    _, validation, counts = split_held_out(convs, fraction=0.25, seed=1, max_validation_per_language=7)
    assert Counter(c["category"] for c in validation) == {"translation": 7, "dialogue": 7}
    assert counts["held_out_units_conversations"] > 100
    _, again, _ = split_held_out(convs, fraction=0.25, seed=1, max_validation_per_language=7)
    assert [c["id"] for c in again] == [c["id"] for c in validation]


def test_a_missing_cache_is_one_line_naming_make_corpus(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"does not exist; run `make corpus`") as err:
        check_cache(tmp_path / "nowhere", ["debian-faq"])
    assert "\n" not in str(err.value)
    (tmp_path / "debian-faq").mkdir()
    with pytest.raises(FileNotFoundError, match=r"lacks chatterbot-corpus; run `make corpus`"):
        build_chat_sources(["chatterbot_dialogue", "debian_faq"],
                           ChatSourcesConfig(faq_languages=["en"]), tmp_path)
    # no chat source in the mix: the cache is not needed
    assert build_chat_sources(["identity"], ChatSourcesConfig(), tmp_path / "nowhere") == ({}, [], [], {})


def test_build_chat_sources_splits_each_source_and_tags_the_held_out_side(tmp_path):
    from test_data_chat_sources import FAQ_PAGE

    for package, rel in (("debian-faq", "a.en.html"), ("debian-faq-ja", "ja/a.ja.html")):
        path = tmp_path / package / "usr/share/doc/debian/FAQ" / rel
        path.parent.mkdir(parents=True)
        path.write_text(FAQ_PAGE, encoding="utf-8")
    config = ChatSourcesConfig(faq_languages=["en", "ja"], validation_fraction=0.5, seed=3)
    train, validation, quarantine, stats = build_chat_sources(["debian_faq", "identity"], config, tmp_path)
    assert set(train) == {"debian_faq"} and quarantine == []
    units_train = {c["metadata"]["unit"] for c in train["debian_faq"]}
    units_held = {c["metadata"]["unit"] for c in validation}
    assert not units_train & units_held and len(train["debian_faq"]) + len(validation) == 4
    assert all(c["source"] == "debian_faq" and c["category"] == "faq" for c in validation)
    assert stats["debian_faq"]["read"] == {"en": {"files": 1, "pairs": 2}, "ja": {"files": 1, "pairs": 2}}
