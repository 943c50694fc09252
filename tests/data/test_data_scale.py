"""Scale-out and streaming of process_corpus: the same result on any executor and worker count,
counts that reconcile on real site-packages code, and memory bounded by a shard, not the corpus."""

import functools
import pickle
import random
import sysconfig
import tracemalloc
from pathlib import Path

import pytest
from code_folder_oracle import read_code_folder

from lmforge.data.cleaning import CleaningConfig
from lmforge.data.executor import ExecutorConfig, map_in_order
from lmforge.data.ingest_units import ingest_sources
from lmforge.data.process import DataProcessingConfig, ShardTask, clean_shard, process_corpus
from lmforge.data.sources import shard_documents

SITE_PACKAGES = Path(sysconfig.get_paths()["purelib"])
# Real vendored near-copies: pip ships its own packaging and idna next to the standalone packages.
VENDORED_PAIRS = ["packaging", "pip/_vendor/packaging", "idna", "pip/_vendor/idna", "rich", "pip/_vendor/rich"]
BODY = "def {name}(values):\n    total = 0\n    for v in values:\n        total += v * {k}\n    return total\n"


def config(kind: str = "local", workers: int | None = 2, **overrides) -> DataProcessingConfig:
    return DataProcessingConfig.from_dict({
        "cleaning": {"min_chars": 40, "identify_language": False},  # language ID is tested in test_data_langid
        "decontamination": {"enabled": False},
        "executor": {"kind": kind, "workers": workers},
        **overrides,
    })


def outcome(result) -> tuple:
    """Everything a caller can see of a result, fully read."""
    return dict(result.clean_shards), list(result.quarantine), result.dedup_removed, result.report


def site_packages_source(folders: list[str]) -> dict:
    present = [f for f in folders if (SITE_PACKAGES / f).is_dir()]
    if len(present) < 2:
        pytest.skip(f"site-packages at {SITE_PACKAGES} lacks the vendored pairs {folders}")
    return {"name": "site-packages", "root": str(SITE_PACKAGES), "patterns": [f"{f}/**/*.py" for f in present],
            "exclude": ["**/__pycache__/**"], "license": "various"}


@pytest.fixture
def mixed_shards(tmp_path):
    """Shards in all three forms (list, picklable loader, unpicklable closure) with every kind of drop."""
    rng = random.Random(0)
    files = {f"m{i:02d}.py": _words_text(rng, 1500) for i in range(12)}
    files["copy.py"] = files["m03.py"]  # exact duplicate
    files["near.py"] = files["m05.py"] + "extra = 'one more line at the end'\n"  # near duplicate
    files["tiny.py"] = "x = 1\n"  # too short
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    shards = shard_documents(read_code_folder(tmp_path, source="demo", license="MIT"), shard_size=4)
    names = sorted(shards)
    raw = {names[0]: shards[names[0]]}
    raw[names[1]] = functools.partial(list, shards[names[1]])
    for name in names[2:]:
        raw[name] = lambda records=shards[name]: records  # not picklable: loaded by the parent
    raw["zz-broken"] = [{"id": "broken", "source": "demo"}, "not a dict"]
    return raw


def test_one_and_many_workers_give_identical_results(mixed_shards):
    expected = outcome(process_corpus(mixed_shards, config("sequential"), shard_size=3))
    clean, quarantine, removed, report = expected
    assert report["dropped"]["exact_duplicate"] == 1 and report["dropped"]["near_duplicate"] == 1
    assert report["dropped"]["malformed_record"] == 2 and report["dropped"]["too_short"] == 1
    assert report["records_in"] == report["records_out"] + sum(report["dropped"].values()) == 17
    assert len(quarantine) == sum(report["dropped"].values()) and len(removed) == 2
    for kind, workers in (("local", 1), ("local", 2), ("local", 3)):
        assert outcome(process_corpus(mixed_shards, config(kind, workers), shard_size=3)) == expected, (kind, workers)


def test_site_packages_sample_reconciles_with_vendored_near_copies():
    source = site_packages_source(VENDORED_PAIRS)
    shards = ingest_sources([source], shard_size=40, lazy=True)
    assert all(callable(loader) for loader in shards.values())  # workers read their own files
    files = sum(1 for f in VENDORED_PAIRS if (SITE_PACKAGES / f).is_dir() for _ in (SITE_PACKAGES / f).rglob("*.py"))
    result = process_corpus(shards, config(), shard_size=50)
    report = result.report
    kept = [r for shard in result.clean_shards.values() for r in shard]
    quarantine = list(result.quarantine)
    assert report["records_in"] == files and report["shards_in"] == len(shards)
    assert report["records_out"] == len(kept) and report["records_in"] == len(kept) + len(quarantine)
    assert report["bytes_out"] == sum(len(r["text"].encode()) for r in kept)
    by_reason: dict[str, int] = {}
    for q in quarantine:
        by_reason[q["reason"]] = by_reason.get(q["reason"], 0) + 1
    assert by_reason == {reason: n for reason, n in report["dropped"].items() if n}
    # Every duplicate found is a vendored copy of its standalone file (or the reverse): the first in path order is kept.
    path_of = {r["id"]: r["metadata"]["path"] for r in kept}
    pairs = [(q["metadata"]["path"], path_of[q["kept_id"]], q["reason"]) for q in quarantine
             if q["reason"] in ("exact_duplicate", "near_duplicate")]
    assert {reason for *_, reason in pairs} == {"exact_duplicate", "near_duplicate"}
    assert all(sorted([removed, kept_path]) == [kept_path, removed] for removed, kept_path, _ in pairs)
    assert all({removed, kept_path} == {p, "pip/_vendor/" + p} for removed, kept_path, _ in pairs
               for p in [min((removed, kept_path), key=len)])
    assert len({r["id"] for r in kept}) == len(kept)


def test_site_packages_pair_is_identical_on_one_and_two_workers():
    shards = ingest_sources([site_packages_source(["packaging", "pip/_vendor/packaging"])], shard_size=10, lazy=True)
    one = outcome(process_corpus(shards, config("local", 1), shard_size=10))
    two = outcome(process_corpus(shards, config("local", 2), shard_size=10))
    assert one == two and one[3]["dropped"]["near_duplicate"] + one[3]["dropped"]["exact_duplicate"] > 0


def _identity(x):
    return x


def test_map_in_order_keeps_order_and_at_most_two_shards_per_worker_in_flight():
    state = {"produced": 0, "consumed": 0, "max_in_flight": 0}

    def tasks():
        for i in range(20):
            state["produced"] += 1
            state["max_in_flight"] = max(state["max_in_flight"], state["produced"] - state["consumed"])
            yield i

    out = []
    for value in map_in_order(_identity, tasks(), ExecutorConfig(kind="local", workers=2)):
        out.append(value)
        state["consumed"] += 1
    assert out == list(range(20))
    assert state["max_in_flight"] <= 2 * 2 + 1  # the window, plus the task being handed out


def _words_text(rng: random.Random, n_chars: int) -> str:
    words = []
    size = 0
    while size < n_chars:
        word = "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(3, 9)))
        words.append(word)
        size += len(word) + 1
    lines = [" ".join(words[i : i + 10]) for i in range(0, len(words), 10)]
    return "\n".join(f"value_{i} = '{line}'" for i, line in enumerate(lines)) + "\n"


def test_worker_sends_back_no_text(tmp_path):
    rng = random.Random(0)
    records = [{"id": f"d{i}", "text": _words_text(rng, 20_000), "source": "s"} for i in range(10)]
    task = ShardTask(0, "s-0", records, CleaningConfig(), config().near_dedup, str(tmp_path))
    summary = clean_shard(task)
    text_bytes = sum(len(r["text"]) for r in records)
    assert summary.ids == [r["id"] for r in records]
    assert len(pickle.dumps(summary)) < text_bytes / 10  # ids, hashes, sizes, signatures only
    assert (tmp_path / "00000.kept.jsonl").stat().st_size > text_bytes  # the text went to the spool


def test_parent_memory_is_bounded_by_a_shard_not_the_corpus():
    rng = random.Random(1)
    shard_records, n_shards = 8, 24
    texts = [_words_text(rng, 10_000) for _ in range(shard_records * n_shards)]
    corpus_bytes = sum(len(t) for t in texts)

    def load(k: int) -> list[dict]:  # texts are built on demand, like files read from disk
        return [{"id": f"{k}-{i}", "text": texts[k * shard_records + i], "source": "s"} for i in range(shard_records)]

    shards = {f"s-{k:03d}": functools.partial(load, k) for k in range(n_shards)}
    cfg = config("sequential", near_dedup={"enabled": False})
    process_corpus({"warm-up": load(0)}, cfg)  # first-use imports are not part of the measure
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        result = process_corpus(shards, cfg, shard_size=shard_records)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.report["records_out"] == shard_records * n_shards
    # Holding every kept text (the old design) costs >= corpus_bytes; one shard is 1/24 of it.
    assert peak < corpus_bytes / 4, (peak, corpus_bytes)
    first = result.clean_shards["shard-00000"]
    assert [r["id"] for r in first] == [f"0-{i}" for i in range(shard_records)]


def test_lazy_shards_save_one_at_a_time_through_kedro(tmp_path, mixed_shards):
    from kedro_datasets.partitions import PartitionedDataset

    result = process_corpus(mixed_shards, config(), shard_size=3)
    lazy = result.clean_shards.lazy()
    assert all(callable(loader) for loader in lazy.values())
    dataset = PartitionedDataset(path=str(tmp_path / "out"), dataset="lmforge.pipelines.datasets.JSONLinesDataset",
                                 filename_suffix=".jsonl")
    dataset.save(lazy)
    saved = {name: loader() for name, loader in dataset.load().items()}
    assert saved == dict(result.clean_shards)


def test_lazy_ingest_gives_the_eager_records(tmp_path):
    for i in range(7):
        (tmp_path / f"m{i}.py").write_text(BODY.format(name=f"f{i}", k=i))
    source = {"name": "mine", "root": str(tmp_path), "max_files": 6, "metadata": {"team": "x"}}
    eager = ingest_sources([source], shard_size=4)
    lazy = ingest_sources([source], shard_size=4, lazy=True)
    assert list(lazy) == list(eager) == ["mine-shard-00000", "mine-shard-00001"]
    assert {name: pickle.loads(pickle.dumps(loader))() for name, loader in lazy.items()} == eager


def test_fast_alphanumeric_count_matches_the_per_character_definition():
    from lmforge.data.cleaning import count_alphanumeric

    texts = ["", "x_1 = 2  # ok\n", "café ñ 中文 ٣ ² Ⅻ _\t\ud800 é", Path(__file__).read_text() * 3]
    for text in texts:
        assert count_alphanumeric(text) == sum(ch.isalnum() for ch in text), text[:20]


def test_decontamination_in_workers_keeps_the_stage_order_and_is_identical():
    from lmforge.data.decontamination import load_humaneval

    item = load_humaneval()[2].text
    rng = random.Random(3)
    filler = [_words_text(rng, 800) for _ in range(6)]
    copied = filler[0] + item  # contaminated
    records = [{"id": f"f{i}", "text": text, "source": "t"} for i, text in enumerate(filler[1:])]
    records[1:1] = [{"id": "copied", "text": copied, "source": "t"},
                    {"id": "exact", "text": copied, "source": "t"},  # exact copy: counted as a duplicate first
                    {"id": "near", "text": copied + "extra = 'one more line'\n", "source": "t"}]
    shards = {"a": records[:4], "b": records[4:]}
    overrides = {"decontamination": {"enabled": True}}
    expected = outcome(process_corpus(shards, config("sequential", **overrides), shard_size=3))
    reasons = {q["id"]: q["reason"] for q in expected[1]}
    assert reasons == {"copied": "contaminated", "exact": "exact_duplicate", "near": "near_duplicate"}
    assert [r["reason"] for r in expected[2]] == ["exact_duplicate", "near_duplicate", "contaminated"]
    assert outcome(process_corpus(shards, config("local", 2, **overrides), shard_size=3)) == expected
