"""Tests of MinHash LSH near-dedup: which records go, exactness against brute-force Jaccard, determinism."""

import random
import re
import sysconfig
from itertools import combinations
from pathlib import Path

import pytest
from cjk_pages import JA_CHGRP, JA_CHOWN, ZH_CHGRP, ZH_CHOWN

from lmforge.data.dedup_minhash import (
    NearDedupConfig,
    near_dedup,
    near_duplicate_pairs,
    shingle_documents,
    uses_character_shingles,
)
from lmforge.data.documents import Document
from lmforge.data.process import DataProcessingConfig, process_corpus

WORD = re.compile(rb"[A-Za-z0-9_\x80-\xff]+")

BASE = (
    "The quick brown fox jumps over the lazy dog while the farmer watches from the porch and "
    "drinks his morning coffee slowly, thinking about the harvest that will come in the autumn "
    "when the fields turn gold and the barn fills with grain for the long winter ahead of them all. "
    "His daughter repairs the old tractor in the shed, humming a tune her grandmother taught her, "
    "while the dog sleeps in the shade of the apple tree near the gate. In the evening the family "
    "gathers around the kitchen table to share bread, soup and stories about the neighbours, the "
    "weather, the price of seed and the new school that opened in the village last spring.\n"
)
UNRELATED = [
    "def parse(line):\n    key, _, value = line.partition('=')\n    return key.strip(), value.strip()\n",
    "Photosynthesis converts light energy into chemical energy stored in glucose molecules inside "
    "the chloroplasts of plant cells, releasing oxygen as a by-product of splitting water.",
    "SELECT name, count(*) FROM orders JOIN customers USING (customer_id) GROUP BY name ORDER BY 2 DESC;",
]


def doc(doc_id: str, text: str) -> Document:
    return Document(id=doc_id, text=text, source="test")


def reference_shingles(text: str, n: int = 5) -> set[tuple[bytes, ...]]:
    """Word n-grams in plain Python, independent of the numpy hashing: the ground truth."""
    words = [w.lower() for w in WORD.findall(text.encode("utf-8", errors="surrogatepass"))]
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def jaccard(x: set, y: set) -> float:
    return len(x & y) / len(x | y) if x | y else 1.0


def test_near_copy_and_exact_copy_go_unrelated_stay():
    near = BASE.replace("lazy", "sleepy").replace("winter", "summer")  # two words changed
    docs = [doc("base", BASE), doc("u0", UNRELATED[0]), doc("near", near), doc("u1", UNRELATED[1]),
            doc("copy", BASE), doc("u2", UNRELATED[2])]
    result = near_dedup(docs, NearDedupConfig())
    assert [d.id for d in result.kept] == ["base", "u0", "u1", "u2"]
    removed = {r["id"]: r for r in result.removed}
    assert list(removed) == ["near", "copy"]  # input order
    assert {r["kept_id"] for r in result.removed} == {"base"}
    assert {r["reason"] for r in result.removed} == {"near_duplicate"}
    assert removed["copy"]["similarity"] == 1.0
    expected = jaccard(reference_shingles(BASE), reference_shingles(near))
    assert 0.8 <= expected < 1.0
    assert removed["near"]["similarity"] == pytest.approx(expected, abs=1e-6)


def test_below_threshold_and_short_documents_stay():
    half = " ".join(BASE.split()[:30]) + " completely different words follow here to make it diverge a lot more now"
    docs = [doc("base", BASE), doc("half", half), doc("short1", "a b c"), doc("short2", "a b c")]
    assert jaccard(reference_shingles(BASE), reference_shingles(half)) < 0.8
    result = near_dedup(docs)
    assert [d.id for d in result.kept] == ["base", "half", "short1", "short2"]  # < 5 words: no shingles
    assert near_dedup([]).removed == []


def test_hashed_shingles_match_reference_sets():
    texts = [BASE, UNRELATED[0], "Ünïcode wörds_and CAPS café " * 3]
    hashes, owners = shingle_documents(texts, NearDedupConfig())
    for i, text in enumerate(texts):
        assert len(set(hashes[owners == i].tolist())) == len(reference_shingles(text))


def test_config_is_validated():
    with pytest.raises(ValueError, match="bands \\* rows"):
        NearDedupConfig(num_perm=128, bands=10, rows=8)
    with pytest.raises(ValueError, match="threshold"):
        NearDedupConfig(threshold=1.5)
    with pytest.raises(ValueError, match=r"data_processing\.near_dedup\.band\b"):
        DataProcessingConfig.from_dict({"near_dedup": {"band": 4}})
    config = DataProcessingConfig.from_dict({"near_dedup": {"bands": 32, "rows": 4, "threshold": 0.7}})
    assert config.near_dedup.num_perm == 128 and config.near_dedup.threshold == 0.7


def mutate(text: str, rng: random.Random, changes: int) -> str:
    """Replace `changes` words of text at random positions: a synthetic near-copy."""
    parts = re.split(r"(\s+)", text)
    word_positions = [i for i, p in enumerate(parts) if p and not p.isspace()]
    for i in rng.sample(word_positions, min(changes, len(word_positions))):
        parts[i] = f"mutated{rng.randrange(10**6)}"
    return "".join(parts)


@pytest.fixture(scope="module")
def stdlib_sample():
    """~200 real stdlib files plus 30 synthetic near-copies (a few words changed) appended at the end."""
    base = Path(sysconfig.get_paths()["stdlib"])
    paths = sorted(p for p in base.glob("*.py"))[:200]
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in paths]
    rng = random.Random(0)
    originals = rng.sample([i for i, t in enumerate(texts) if len(t.split()) > 400], 30)
    texts += [mutate(texts[i], rng, rng.choice([1, 3, 8])) for i in originals]
    return texts


def test_removed_pairs_match_brute_force_jaccard(stdlib_sample):
    texts = stdlib_sample
    config = NearDedupConfig()
    ref = [reference_shingles(t) for t in texts]
    truth = {}
    for i, j in combinations(range(len(texts)), 2):
        small, large = sorted((len(ref[i]), len(ref[j])))
        if small and small >= config.threshold * large:  # Jaccard <= small / large: skip impossible pairs
            sim = jaccard(ref[i], ref[j])
            if sim >= config.threshold:
                truth[(i, j)] = sim
    assert len(truth) >= 30  # the synthetic copies, at least

    found = {(i, j): sim for i, j, sim in near_duplicate_pairs(texts, config)}
    assert set(found) <= set(truth)  # precision 1.0: every reported pair is a true one
    for pair, sim in found.items():
        assert sim == pytest.approx(truth[pair], abs=1e-9)
    assert len(found) >= 0.9 * len(truth)  # recall

    docs = [doc(f"d{i:03d}", t) for i, t in enumerate(texts)]
    result = near_dedup(docs, config)
    index = {d.id: i for i, d in enumerate(docs)}
    kept_ids = {d.id for d in result.kept}
    for removal in result.removed:
        i, k = index[removal["id"]], index[removal["kept_id"]]
        assert k < i  # the kept document comes first
        assert removal["kept_id"] in kept_ids  # named against a document that stays
        assert removal["similarity"] == pytest.approx(jaccard(ref[i], ref[k]), abs=1e-6)
        assert jaccard(ref[i], ref[k]) >= config.threshold  # never below the threshold to its survivor
    assert {index[r["id"]] for r in result.removed} >= {j for (_, j) in truth if (_, j) in found}
    assert len(result.kept) + len(result.removed) == len(docs)


def test_same_seed_same_result(stdlib_sample):
    docs = [doc(f"d{i:03d}", t) for i, t in enumerate(stdlib_sample)]
    first = near_dedup(docs, NearDedupConfig(seed=7))
    second = near_dedup(docs, NearDedupConfig(seed=7))
    assert first.removed == second.removed
    assert [d.id for d in first.kept] == [d.id for d in second.kept]


def test_process_corpus_counts_and_manifest():
    near = BASE.replace("lazy", "sleepy")
    shards = {
        "s0": [doc("base", BASE).to_dict(), doc("u0", UNRELATED[0]).to_dict()],
        "s1": [doc("copy", BASE).to_dict(), doc("near", near).to_dict(), doc("u1", UNRELATED[1]).to_dict()],
    }
    config = DataProcessingConfig.from_dict({"cleaning": {"min_chars": 20}})
    result = process_corpus(shards, config, shard_size=10)
    report = result.report
    assert report["records_in"] == 5 and report["records_out"] == 3
    assert {k: v for k, v in report["dropped"].items() if v} == {"exact_duplicate": 1, "near_duplicate": 1}
    assert report["records_in"] == report["records_out"] + sum(report["dropped"].values())
    assert report["duplicates_removed"] == 2
    manifest = result.dedup_manifest()
    assert [{k: m[k] for k in ("id", "kept_id")} for m in manifest] == [
        {"id": "copy", "kept_id": "base"},
        {"id": "near", "kept_id": "base"},
    ]
    assert manifest[0]["similarity"] == 1.0 and 0.8 <= manifest[1]["similarity"] < 1.0
    assert set(manifest[1]) == {"id", "kept_id", "similarity"}
    reasons = {q["id"]: q["reason"] for q in result.quarantine}
    assert reasons == {"copy": "exact_duplicate", "near": "near_duplicate"}
    assert next(q for q in result.quarantine if q["id"] == "near")["text"] == near

    disabled = DataProcessingConfig.from_dict({"cleaning": {"min_chars": 20}, "near_dedup": {"enabled": False}})
    assert process_corpus(shards, disabled, shard_size=10).report["records_out"] == 4


def test_chain_keeps_the_document_below_threshold_to_its_survivor():
    """A~B and B~C at >= 0.8 but A-C < 0.8: B goes (named against A), C stays (B was not kept)."""
    words = [f"w{i}" for i in range(240)]
    a, b, c = (" ".join(words[shift : shift + 200]) for shift in (0, 15, 30))
    ref = {name: reference_shingles(text) for name, text in (("a", a), ("b", b), ("c", c))}
    assert jaccard(ref["a"], ref["b"]) >= 0.8 and jaccard(ref["b"], ref["c"]) >= 0.8
    assert jaccard(ref["a"], ref["c"]) < 0.8
    assert {(i, j) for i, j, _ in near_duplicate_pairs([a, b, c], NearDedupConfig())} == {(0, 1), (1, 2)}
    result = near_dedup([doc("a", a), doc("b", b), doc("c", c)], NearDedupConfig())
    assert [d.id for d in result.kept] == ["a", "c"]
    assert [(r["id"], r["kept_id"]) for r in result.removed] == [("b", "a")]
    assert result.removed[0]["similarity"] == pytest.approx(jaccard(ref["a"], ref["b"]), abs=1e-6)


def test_large_bucket_of_copies_keeps_one():
    """More copies than a bucket pairs fully: every copy still meets the kept first one."""
    docs = [doc(f"c{i:03d}", BASE + ("" if i % 2 else " ")) for i in range(150)]
    result = near_dedup(docs, NearDedupConfig())
    assert [d.id for d in result.kept] == ["c000"]
    assert {r["kept_id"] for r in result.removed} == {"c000"}


def edit_zh(text: str) -> str:
    """An edited copy of a Chinese page: a phrase reworded, a paragraph dropped, a sentence added."""
    return (text.replace("修改每个文件的所属组为指定的组。", "将每个文件的所属组修改为给定的组。")
            .replace("  -v, --verbose\n  对于每个文件的处理， 都会打印分析报告\n\n", "")
            .replace("范例\n", "范例\n  以下是两个常见的用法。\n"))


def edit_ja(text: str) -> str:
    """An edited copy of a Japanese page: a sentence reworded, an option dropped, a note added."""
    return (text.replace("各ファイルのグループを GROUP に変更します。", "指定した各ファイルのグループを GROUP へ変更する。")
            .replace("  -f, --silent, --quiet\n  ほとんどのエラーメッセージの出力を抑制する\n\n", "")
            .replace("例\n", "例\n  よく使われる例を示す。\n"))


def test_cjk_pages_are_shingled_by_characters():
    config = NearDedupConfig()
    assert all(uses_character_shingles(t, config) for t in (ZH_CHGRP, JA_CHOWN))
    assert not uses_character_shingles(BASE, config) and not uses_character_shingles(UNRELATED[0], config)
    hashes, owners = shingle_documents(["用户命令，修改文件。", "a b c d e f"], NearDedupConfig(cjk_shingle_size=3))
    assert owners.tolist() == [0] * 6 + [1] * 2  # 8 characters -> 6 trigrams; 6 words -> 2 word 5-grams


def test_cjk_edited_copies_go_distinct_pages_on_one_topic_stay():
    zh_edit, ja_edit = edit_zh(ZH_CHGRP), edit_ja(JA_CHGRP)
    assert zh_edit.count("\n") < ZH_CHGRP.count("\n") and ja_edit.count("\n") < JA_CHGRP.count("\n")  # edits took
    docs = [doc("zh-chgrp", ZH_CHGRP), doc("zh-chown", ZH_CHOWN), doc("ja-chgrp", JA_CHGRP),
            doc("ja-chown", JA_CHOWN), doc("zh-chgrp-edited", zh_edit), doc("ja-chgrp-edited", ja_edit)]
    result = near_dedup(docs, NearDedupConfig())
    assert [d.id for d in result.kept] == ["zh-chgrp", "zh-chown", "ja-chgrp", "ja-chown"]
    assert [(r["id"], r["kept_id"]) for r in result.removed] == [("zh-chgrp-edited", "zh-chgrp"),
                                                                ("ja-chgrp-edited", "ja-chgrp")]
    assert all(0.8 <= r["similarity"] < 1.0 for r in result.removed)
