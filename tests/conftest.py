"""Shared fixtures: an offline environment and the expensive artifacts of the chain, built once per session.

The chain fixtures run the same library functions the pipelines call, on a tiny real corpus in the
default's four language groups (about 70 KB of the interpreter's own standard library and the same 8
LibreOffice help pages in English, Chinese and Japanese, ``tests/chain_corpus.json``, 165 KB in all):
documents -> tokenizer (sentencepiece, vocab 1024) -> packed token shards (64 tokens) -> pretrained
``debug`` checkpoint (2 processes, DeepSpeed) -> SFT checkpoint (the sft pipeline's own run). Each pipeline test reuses the upstream artifacts it needs and runs its own pipeline.
Heavy libraries are imported inside the fixtures, so collecting unrelated tests stays fast.
"""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CHAIN_SOURCE = "python-stdlib"
CHAIN_PROSE = PROJECT_ROOT / "tests" / "chain_corpus.json"
CHAIN_VOCAB_SIZE = 1024
CHAIN_CHARACTER_COVERAGE = 0.995  # ~900 distinct CJK characters in 25 KB: the rarest are byte fallback
CHAIN_SEQ_LEN = 64
CHAIN_VALIDATION_FRACTION = 0.2
CHAIN_STEPS = 20


@pytest.fixture(scope="session", autouse=True)
def _mlflow_outside_the_project(tmp_path_factory):
    """Every MLflow store and artifact of the suite goes under a temporary folder, never into the project.

    ``make test`` exports the project's own ``mlflow.db``; and a sqlite store puts the artifacts of an
    experiment created without ``artifact_location`` at ``./mlruns/<experiment id>`` of the working
    directory, so tests that log models into their own temporary store still left ``mlruns/1/models/...``
    (and ``mlruns/5`` of a store long deleted) in the project. MLflow has no public setting for that
    default; ``_MLFLOW_SERVER_ARTIFACT_ROOT`` is the variable ``mlflow server`` exports to its workers for
    exactly this default, and subprocesses inherit it. (It also marks the process as a tracking server's
    for MLflow's host policy, which only concerns ftp/http-style artifact URIs; the tests use local
    files.) `.ci/run` checks that the tree is clean after the suite.
    """
    root = tmp_path_factory.mktemp("mlflow-session").resolve()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
        mp.setenv("_MLFLOW_SERVER_ARTIFACT_ROOT", str(root / "mlruns"))
        yield root


@pytest.fixture(scope="session", autouse=True)
def _offline_environment():
    """No downloads, no telemetry, and no MLflow run inherited from the shell that started pytest."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        mp.setenv("KEDRO_DISABLE_TELEMETRY", "1")
        mp.setenv("DVC_NO_ANALYTICS", "1")
        mp.setenv("TOKENIZERS_PARALLELISM", "false")
        mp.delenv("MLFLOW_RUN_ID", raising=False)
        yield


@pytest.fixture(scope="session")
def mlflow_tracking_uri(tmp_path_factory) -> str:
    """A fresh sqlite MLflow store at an absolute path (MLflow 3 refuses the ./mlruns file store), tables made."""
    from mlflow_helpers import migrated_store

    return migrated_store(tmp_path_factory.mktemp("mlflow").resolve() / "mlflow.db")


@pytest.fixture(scope="session")
def deepspeed_templates() -> dict[str, dict]:
    """conf/base/deepspeed/zero<stage>.json as the catalog's PartitionedDataset would load them."""
    return {p.stem: json.loads(p.read_text()) for p in sorted((PROJECT_ROOT / "conf/base/deepspeed").glob("*.json"))}


def project_chat_template() -> str:
    """The project's one chat format: conf/base/parameters_tokenizer.yml read through the stage's typed config."""
    import yaml

    from lmforge.config import build_dataclass
    from lmforge.tokenizer.config import TokenizerConfig

    params = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_tokenizer.yml").read_text())
    return build_dataclass(TokenizerConfig, params["tokenizer"], path="tokenizer").chat_template


@pytest.fixture(scope="session")
def chat_template() -> str:
    """The project's one chat format (``project_chat_template``)."""
    return project_chat_template()


@pytest.fixture(scope="session")
def chain_documents() -> dict[str, list[dict]]:
    """Clean-document shards (what data_processing writes) in all four language groups: ~70 KB of top-level
    stdlib modules (code) and 8 LibreOffice help pages in en, zh and ja (``tests/chain_corpus.json``)."""
    from lmforge.data.documents import Document
    from lmforge.data.sources import make_document_id

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    records, size = [], 0
    for path in sorted(stdlib.glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        if not 500 <= len(text) <= 20_000 or "<s>" in text or "<|im_" in text:
            continue
        doc = Document(id=make_document_id(CHAIN_SOURCE, path.name), text=text, source=CHAIN_SOURCE,
                       metadata={"path": path.name, "kind": "code", "language_group": "code", "license": "PSF-2.0"})
        records.append(doc.to_dict())
        size += len(text)
        if size > 70_000:
            break
    for prose in json.loads(CHAIN_PROSE.read_text("utf-8"))["documents"]:
        doc = Document(id=make_document_id(prose["source"], prose["path"]), text=prose["text"], source=prose["source"],
                       metadata={"path": prose["path"], "language_group": prose["language_group"],
                                 "license": prose["license"]})
        records.append(doc.to_dict())
    return {"shard-00000": records[: len(records) // 2], "shard-00001": records[len(records) // 2:]}


@pytest.fixture(scope="session")
def chain_tokenizer_params(chat_template) -> dict:
    """``params:tokenizer`` for the tiny chain (vocab 1024, 64-token blocks)."""
    return {
        "train": {"model_type": "bpe", "vocab_size": CHAIN_VOCAB_SIZE, "character_coverage": CHAIN_CHARACTER_COVERAGE,
                  "num_threads": 2, "seed": 42},
        "chat_template": chat_template,
        "model_max_length": 512,
        "shards": {"seq_len": CHAIN_SEQ_LEN, "validation_fraction": CHAIN_VALIDATION_FRACTION, "split_seed": 0,
                   "blocks_per_shard": 500},
    }


@pytest.fixture(scope="session")
def chain_tokenizer_config(chain_tokenizer_params):
    """``chain_tokenizer_params`` as the stage's typed config, built as the tokenizer nodes build it."""
    from lmforge.config import build_dataclass
    from lmforge.tokenizer.config import TokenizerConfig

    return build_dataclass(TokenizerConfig, chain_tokenizer_params, path="tokenizer")


@pytest.fixture(scope="session")
def chain_split_texts(chain_documents, chain_tokenizer_config) -> dict[str, list[str]]:
    """Document texts split by id by the tokenizer pipeline's own split function."""
    from lmforge.pipelines.tokenizer.nodes import split_texts

    splits = split_texts(chain_documents, chain_tokenizer_config)
    assert splits["train"] and splits["validation"], "the tiny corpus must give both splits"
    return splits


@pytest.fixture(scope="session")
def chain_split_labels(chain_documents, chain_tokenizer_config) -> dict[str, list[dict[str, str]]]:
    """Each split document's language group, source and licence, in ``chain_split_texts`` order (the node's split)."""
    from lmforge.pipelines.tokenizer.nodes import split_texts_and_labels

    labels = split_texts_and_labels(chain_documents, chain_tokenizer_config)[1]
    for split, docs in labels.items():
        assert {doc["language"] for doc in docs} == {"en", "zh", "ja", "code"}, f"{split} lacks a language group"
    return labels


@pytest.fixture(scope="session")
def chain_tokenizer_dir(chain_split_texts, chain_tokenizer_config, tmp_path_factory) -> str:
    """A trained and exported tokenizer directory (sentencepiece + HF files + chat template), built by the
    library function the train_tokenizer node calls."""
    from lmforge.tokenizer.artifact import build_tokenizer_dir

    out = tmp_path_factory.mktemp("chain") / "tokenizer"
    build_tokenizer_dir(chain_split_texts["train"], chain_tokenizer_config, out)
    return str(out)


@pytest.fixture(scope="session")
def chain_token_shards(chain_split_texts, chain_split_labels, chain_tokenizer_dir, chain_tokenizer_config,
                       tmp_path_factory) -> str:
    """Packed train/validation token shards of CHAIN_SEQ_LEN tokens, made with the chain tokenizer (the library
    function the build_token_shards node calls), with token counts per language, source and licence."""
    from lmforge.tokenizer.artifact import build_token_shards_dir

    out = tmp_path_factory.mktemp("chain") / "tokens"
    build_token_shards_dir(chain_split_texts, chain_tokenizer_dir, out, chain_tokenizer_config.shards,
                           split_labels=chain_split_labels)
    return str(out)


def training_params(run_dir: Path, *, zero_stage: int = 2, steps: int = CHAIN_STEPS, lr: float = 3e-3,
                    launcher: str = "torchrun", **extra) -> dict:
    """``params:pretrain``-shaped dict for a short 2-process CPU run of the ``debug`` preset."""
    return {
        "train": {"max_steps": steps, "micro_batch_size": 4, "gradient_accumulation_steps": 1, "lr": lr,
                  "min_lr_ratio": 0.1, "warmup_steps": 2, "weight_decay": 0.0, "seed": 0, "precision": "fp32"},
        "deepspeed": {"zero_stage": zero_stage, "overrides": {}},
        "launch": {"launcher": launcher, "nproc_per_node": 2, "timeout_s": 300},
        "run_dir": str(run_dir),
        **extra,
    }


@pytest.fixture(scope="session")
def training_params_factory():
    """``training_params`` as a fixture (test folders have no package to import helpers from)."""
    return training_params


def pretrain_config(params: dict):
    """``PretrainConfig`` from a ``params:pretrain`` dict, as the pretrain node builds it."""
    from lmforge.config import build_dataclass
    from lmforge.training.pretrain_config import PretrainConfig

    return build_dataclass(PretrainConfig, params, path="pretrain")


def sft_config(params: dict):
    """``SftConfig`` from a ``params:sft`` dict, as the sft pipeline's first node builds it."""
    from lmforge.pipelines.sft.nodes import build_sft_config

    return build_sft_config(params)


@pytest.fixture(scope="session")
def pretrain_config_factory():
    """``pretrain_config(params)``: the typed config ``run_pretraining`` takes."""
    return pretrain_config


@pytest.fixture(scope="session")
def sft_config_factory():
    """``sft_config(params)``: the typed config ``run_sft`` and the sft nodes take."""
    return sft_config


@pytest.fixture(scope="session")
def chain_pretrain_runs(chain_token_shards, chain_tokenizer_dir, deepspeed_templates, tmp_path_factory):
    """``run(zero_stage)`` -> (checkpoint, metrics, loss curve) of a real 2-process pretraining, cached per stage."""
    from lmforge.training.jobs import run_pretraining

    cache: dict[int, tuple[str, dict, list]] = {}

    def run(zero_stage: int) -> tuple[str, dict, list]:
        if zero_stage not in cache:
            run_dir = tmp_path_factory.mktemp(f"pretrain_zero{zero_stage}") / "run"
            params = training_params(run_dir, zero_stage=zero_stage, model={"preset": "debug", "overrides": {}})
            cache[zero_stage] = run_pretraining(chain_token_shards, chain_tokenizer_dir, deepspeed_templates,
                                                pretrain_config(params))
        return cache[zero_stage]

    return run


@pytest.fixture(scope="session")
def killed_pretrain_run(chain_token_shards, chain_tokenizer_dir, deepspeed_templates, tmp_path_factory) -> Path:
    """The chain's ZeRO-2 pretraining job (``chain_pretrain_runs(2)``'s: debug preset, 20 steps) with a checkpoint
    every 5 steps (the last 2 kept), SIGKILLed by the loop's fault injection right after its step-10 checkpoint,
    with the sample ids of every micro-batch logged. Returns a folder holding ``run`` (the killed run folder) and
    ``killed_samples``: the resume tests copy ``run`` and resume the copy, on 2 processes or on 1 (one killed run
    for both: a 2-process launch fewer)."""
    from lmforge.training.jobs import run_pretraining
    from lmforge.training.launch import TrainingError

    root = tmp_path_factory.mktemp("pretrain_killed")
    (root / "killed_samples").mkdir()
    params = training_params(root / "run", steps=20, model={"preset": "debug", "overrides": {}})
    params["train"].update({"checkpoint_every": 5, "keep_checkpoints": 2, "fault_injection": {
        "sample_log_dir": str(root / "killed_samples"), "kill_after_checkpoint_step": 10}})
    with pytest.raises(TrainingError):
        run_pretraining(chain_token_shards, chain_tokenizer_dir, deepspeed_templates, pretrain_config(params))
    return root


@pytest.fixture(scope="session")
def chain_pretrain(chain_pretrain_runs) -> tuple[str, dict, list]:
    """The ZeRO-2 pretraining run the downstream stages start from."""
    return chain_pretrain_runs(2)


@pytest.fixture(scope="session")
def chain_source_cache(tmp_path_factory) -> str:
    """``params:data_processing.source_cache`` of the chain: a tiny literal source cache (tests/chat_samples.py)."""
    from chat_samples import write_chat_cache

    return str(write_chat_cache(tmp_path_factory.mktemp("chat_cache"), pages=12))


@pytest.fixture(scope="session")
def chain_sft_params(tmp_path_factory) -> dict:
    """``params:sft`` minus ``train``/``launch`` (data extraction and rendering settings); the chat sources
    (read from ``chain_source_cache``) hold out a quarter of their pages."""
    return {
        "chat": {"validation_fraction": 0.25},
        "data": {"max_pairs": 200, "min_body_lines": 2, "max_prompt_chars": 600, "max_response_chars": 600,
                 "validation_fraction": 0.2, "seed": 0},
        "identity": {"name": "Forge", "developer": "the lmforge team", "repeat": 2},
        "max_length": 256,
        "train_on_prompt": False,
        "run_dir": str(tmp_path_factory.mktemp("chain_sft_params") / "run"),
    }


@pytest.fixture(scope="session")
def chain_conversations(chain_documents, chain_source_cache, chain_sft_params) -> dict[str, list[dict]]:
    """Instruction conversations from the corpus (+ identity in train), built by the sft pipeline's node."""
    from lmforge.pipelines.sft.nodes import build_conversations

    train, validation, _, _ = build_conversations(chain_documents, chain_source_cache, sft_config(chain_sft_params))
    assert validation, "the tiny corpus must give held-out conversations"
    return {"train": train, "validation": validation}


@pytest.fixture(scope="session")
def chain_sft_examples(chain_conversations, chain_tokenizer_dir, chain_sft_params) -> list[dict]:
    """Tokenized training conversations (labels only on assistant turns), at most ``max_length`` tokens."""
    from lmforge.pipelines.sft.nodes import tokenize_conversations

    examples, _, _ = tokenize_conversations(chain_conversations["train"], "no-pretrain-checkpoint", chain_tokenizer_dir,
                                            {}, sft_config(chain_sft_params))
    return examples


@pytest.fixture(scope="session")
def chain_sft_stage(chain_documents, chain_source_cache, chain_tokenizer_dir, chain_pretrain, deepspeed_templates,
                    chain_sft_params, tmp_path_factory) -> dict:
    """The sft pipeline run once on the chain (SequentialRunner, the catalog's dataset classes on a temporary
    folder): chat sources + corpus + identity -> conversations -> examples -> a real 2-process SFT run from the
    pretrain checkpoint. conf/base/parameters_sft.yml with the chain's data settings, 20 steps of 4 packed rows of
    512 tokens, lr 1e-3: the training settings ``chain_sft`` always had (``training_params``), now on the stage's
    own examples. Returns ``root``, ``params``, ``catalog`` and the pipeline's ``outputs``: test_sft_pipeline.py
    checks the stage; ``chain_sft`` is its checkpoint (one 2-process SFT launch for both: ~20 s clean saved)."""
    import copy

    import yaml
    from kedro.io import DataCatalog, MemoryDataset
    from kedro.runner import SequentialRunner

    from lmforge.pipelines.datasets import ArtifactDirectory, JSONLinesDataset
    from lmforge.pipelines.sft import create_pipeline

    root = tmp_path_factory.mktemp("sft_stage")
    params = copy.deepcopy(yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_sft.yml").read_text())["sft"])
    params.update(copy.deepcopy(chain_sft_params))
    params["train"].update(max_steps=CHAIN_STEPS, micro_batch_size=4, warmup_steps=2, lr=1e-3)
    params["max_length"] = 512  # the chain's held-out conversations (validation loss) need more than 256 tokens
    params["launch"].update(nproc_per_node=2, timeout_s=300)
    params["run_dir"] = str(root / "sft_run")
    catalog = DataCatalog({
        "clean_documents": MemoryDataset(chain_documents),
        "tokenizer": ArtifactDirectory(chain_tokenizer_dir),
        "pretrain_checkpoint": ArtifactDirectory(chain_pretrain[0]),
        "deepspeed_templates": MemoryDataset(deepspeed_templates),
        "params:sft": MemoryDataset(params),
        "params:data_processing.source_cache": MemoryDataset(chain_source_cache),
        "sft_train_conversations": JSONLinesDataset(str(root / "data/04_feature/sft_train.jsonl")),
        "sft_validation_conversations": JSONLinesDataset(str(root / "data/04_feature/sft_validation.jsonl")),
        "sft_train_examples": JSONLinesDataset(str(root / "data/05_model_input/sft_train_examples.jsonl")),
        "sft_checkpoint": ArtifactDirectory(str(root / "data/06_models/sft")),
    })
    outputs = SequentialRunner().run(create_pipeline(), catalog)
    return {"root": root, "params": params, "catalog": catalog, "outputs": outputs}


@pytest.fixture(scope="session")
def chain_sft(chain_sft_stage) -> tuple[str, dict, list]:
    """The chain's SFT model, a real 2-process run from the pretrain checkpoint (``chain_sft_stage``'s):
    (checkpoint, the stage's metrics, loss curve)."""
    outputs = chain_sft_stage["outputs"]
    return (str(chain_sft_stage["root"] / "data/06_models/sft"), outputs["sft_metrics"].load(),
            outputs["sft_loss_curve"].load())


@pytest.fixture
def project_root() -> Path:
    return PROJECT_ROOT


# --- a tiny random Llama and a tiny byte-level BPE tokenizer (evaluation and packaging tests) ---
TINY_VOCAB_SIZE = 300
TINY_SPECIAL_TOKENS = ["<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>"]
TINY_CORPUS = [
    "def add(a, b):\n    return a + b\n",
    "def greet(name):\n    print('hello ' + name)\n",
    "for i in range(10):\n    total += i\n",
    "class Point:\n    def __init__(self, x, y):\n        self.x = x\n",
] * 4


def build_tiny_tokenizer(out_dir):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE,
        special_tokens=TINY_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TINY_CORPUS, trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        chat_template=project_chat_template(),  # the one chat format, as the real tokenizer carries it
    )
    hf.save_pretrained(out_dir)
    return out_dir


def build_tiny_model(out_dir, seed=0, vocab_size=TINY_VOCAB_SIZE):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        vocab_size=vocab_size,
        max_position_embeddings=128,
        # the tiny tokenizer's <s>, </s>, <pad> (as lmforge.model.build sets them from the tokenizer), not
        # Llama's defaults: generation stops on the model's EOS ids too, and 2 is the tiny tokenizer's <pad>
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory):
    return build_tiny_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture
def build_model():
    """``build_model(out_dir, seed=0, vocab_size=300)`` saves a tiny random Llama into ``out_dir``."""
    return build_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture
def tiny_model(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)


@pytest.fixture
def tiny_tokenizer(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)


# --- the inference engine (llama.cpp): a tiny packaged model exported to every GGUF format ---
ENGINE_MODEL_CONTEXT = 128  # the tiny model's max_position_embeddings: llama.cpp's n_ctx_train


def build_engine_model(out_dir, tokenizer_dir, seed=0):
    """A random Llama sized for llama.cpp's K-quants (rows a multiple of 256, so q4_k_m really is Q4_K, not a
    fallback type) with the tokenizer's vocabulary and special ids: ~1.9 M parameters, 7.5 MB in f32."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    config = LlamaConfig(hidden_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=512, vocab_size=len(tok), max_position_embeddings=ENGINE_MODEL_CONTEXT,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def engine_package(chain_tokenizer_dir, tmp_path_factory):
    """``(hf_dir, gguf)``: a tiny random Llama with the chain tokenizer (vocab 1024) and the project's chat
    template, packaged by ``package_model`` (end of turn among its stop ids) and exported by ``export_gguf`` to
    every format of ``GGUF_FORMATS`` (``gguf``: format -> ``GgufFile``). Needs the built llama.cpp. Costs ~20 s
    beyond the tokenizer, most of it the converter's own start (it imports torch and transformers: ~8 s of CPU)."""
    from lmforge.engine.gguf import export_gguf
    from lmforge.packaging.export import ModelCardInfo, package_model
    from lmforge.tokenizer.chat_tokenizer import ChatTokenizer

    root = tmp_path_factory.mktemp("engine")
    model_dir = build_engine_model(root / "model", chain_tokenizer_dir)
    stop_ids = ChatTokenizer.for_model(model_dir, chain_tokenizer_dir).stop_ids
    hf_dir = package_model(model_dir, chain_tokenizer_dir, root / "package", stop_ids=stop_ids,
                           card=ModelCardInfo(model_name="engine-tiny", preset="engine-tiny"))
    gguf = export_gguf(hf_dir, root / "gguf", name="engine-tiny",
                       tokenizer_model=Path(chain_tokenizer_dir) / "tokenizer.model")
    return hf_dir, gguf
