"""Bring your own model: `kedro run` on foreign Hugging Face models (issue 14), through the real CLI.

``test_walkthrough_fine_tune_your_own_model`` runs the README's walkthrough as written (continued
pretraining, SFT, align, evaluation, packaging; five `kedro run`s) on a Gemma-style model, and checks its
continued pretraining step by step (``check_continued_pretraining``). Each other
foreign model (tests/foreign_models.py: random weights, a locally trained tokenizer whose special
tokens and chat template are not lmforge's) goes through ``kedro run --pipelines sft,align,evaluation,packaging
--params sft.base_model=<dir>,align.enabled=false`` in a copy of the project that holds cleaned documents and no tokenizer or
pretrain output: the model brings its own tokenizer and template. The run must train (held-out loss
down), write a checkpoint that carries the model's tokenizer, template and stop ids, pass the quality
gate, and package a model whose three template audits (sft, evaluation, packaging) agree. A
remote-code model is refused with one line unless opted in.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import copy_project, kedro_run
from foreign_models import END_OF_TURN, FAMILIES, build_foreign_model, build_remote_code_model

# Small enough for ~30 s per family on 2 cores; the identity data and a few corpus pairs.
TINY_SFT = ("sft.data.max_pairs=40,sft.identity.repeat=1,sft.max_length=512,sft.train.max_steps=4,"
            "sft.train.warmup_steps=1,sft.train.checkpoint_every=0,sft.train.lr=0.003,sft.train.micro_batch_size=2")
TINY_PRETRAIN = ("pretrain.train.max_steps=4,pretrain.train.micro_batch_size=2,pretrain.train.checkpoint_every=0,"
                 "pretrain.continued.lr=0.003,tokenizer.shards.seq_len=128")
TINY_EVALUATION = ("evaluation.max_heldout_blocks=4,evaluation.max_sft_examples=16,evaluation.generation.max_new_tokens=8,"
                   "evaluation.humaneval.enabled=false,evaluation.identity_probe.max_new_tokens=8,"
                   "evaluation.heldout_pairs.enabled=false,evaluation.speed.enabled=false,"
                   "evaluation.quantization.enabled=false")  # GGUF export + scoring: the chain tests cover it
# The family runs check the gate's ratio and the template audits, not the generated translations or the per-language
# scores: those two (2 models x 32 pairs x 48 generated tokens, and 4 groups of text, per run) go through the CLI on a
# foreign model in the walkthrough's evaluation (TINY_EVALUATION); unit tests: tests/evaluation.
FAMILY_EVALUATION = TINY_EVALUATION + ",evaluation.translation.enabled=false,evaluation.by_language.enabled=false"
# the GGUF packages and their llama.cpp parity check are tested on the chain's own tokenizer (tests/engine)
TINY_PACKAGING = "packaging.engine.enabled=false"
# one small on-policy round and 4 steps (the walkthrough aligns; the family tests switch align off)
TINY_ALIGN = ("align.on_policy.prompts_per_round=8,align.on_policy.k=2,align.on_policy.max_new_tokens=8,"
              "align.on_policy.heldout_prompts=8,align.train.max_steps=4,align.train.warmup_steps=1,"
              "align.train.checkpoint_every=0,align.train.micro_batch_size=2,align.max_length=256,"
              "align.max_prompt_length=192")
NAMED = {"bloom": "chatml"}  # BLOOM has no chat template of its own
# Full fine-tuning or LoRA on the same launcher: the default targets (q/k/v/o_proj), or every linear layer
# (BLOOM names its projections its own way). One-element lists: `--params` splits on commas.
LORA = {"qwen2": None, "bloom": "[all-linear]", "llama3": "[all-linear]"}


def check_package(root: Path, family: str) -> None:
    """The packaged model loads, carries the family's stop ids, and the three template audits agree."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    package = root / "data/07_model_output/lmforge-chat"
    model = AutoModelForCausalLM.from_pretrained(str(package), dtype=torch.float32, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(str(package), local_files_only=True)
    end_of_turn_id = tokenizer.convert_tokens_to_ids(END_OF_TURN[family])
    assert end_of_turn_id in GenerationConfig.from_pretrained(str(package)).eos_token_id
    assert model.config.vocab_size >= len(tokenizer)
    audits = {stage: json.loads((root / f"data/08_reporting/template_audit/{stage}.json").read_text())
              for stage in ("sft", "evaluation", "packaging")}
    prompt = audits["sft"]["prompt"]["input_ids"]
    assert audits["sft"]["training"]["input_ids"][: len(prompt)] == prompt
    for stage in ("evaluation", "packaging"):
        assert audits[stage]["prompt"]["input_ids"] == prompt, stage
        assert audits[stage]["template_sha256"] == audits["sft"]["template_sha256"]
    card = (package / "README.md").read_text()  # the model card names it (a Markdown table escapes "|")
    assert f"| end-of-turn token | {END_OF_TURN[family].replace('|', chr(92) + '|')} (id {end_of_turn_id}) |" in card
    evaluation = json.loads((root / "data/08_reporting/evaluation.json").read_text())
    assert evaluation["sft_pairs.perplexity_ratio"] <= 1.0  # the gate passed: SFT fits held-out instructions better


@pytest.mark.slow
def test_walkthrough_fine_tune_your_own_model(tmp_path, project_root, chain_documents):
    """README "Fine-tune your own model", as written, on a Gemma-style model (own template, BOS trap)."""
    import torch
    from transformers import AutoModelForCausalLM

    root = copy_project(project_root, tmp_path / "project", chain_documents, data_processing_metrics=True)
    model_dir = build_foreign_model("gemma", tmp_path / "my-gemma")
    # the walkthrough's step 1: the base model goes into the configuration, where every stage (and DVC) sees it
    (root / "conf/local/parameters_pretrain.yml").write_text(f"pretrain:\n  base_model: {model_dir}\n")

    for pipeline, params in (("pretrain", TINY_PRETRAIN), ("sft", TINY_SFT), ("align", TINY_ALIGN),
                             ("evaluation", TINY_EVALUATION), ("packaging", TINY_PACKAGING)):
        ran = kedro_run(root, tmp_path, "--pipelines", pipeline, *(["--params", params] if params else []))
        assert ran.returncode == 0, pipeline + ran.stdout[-2000:] + ran.stderr[-4000:]

    pretrain = json.loads((root / "data/08_reporting/pretrain.json").read_text())
    assert pretrain["continued"] is True and pretrain["base_model"] == str(model_dir)
    assert pretrain["final_loss"] < pretrain["initial_loss"]
    check_continued_pretraining(root, model_dir, "gemma", pretrain)
    sft = json.loads((root / "data/08_reporting/sft.json").read_text())
    assert sft["base_model"].endswith("data/06_models/pretrain")  # SFT of the continued checkpoint
    assert sft["validation_loss"] < sft["validation_loss_initial"]
    continued = AutoModelForCausalLM.from_pretrained(str(root / "data/06_models/pretrain"), dtype=torch.float32)
    assert type(continued).__name__ == "GemmaForCausalLM"
    assert not (root / "data/06_models/tokenizer").exists()  # the model's own tokenizer throughout
    # align on the model's own template (Gemma: no system role, <end_of_turn>): identity pairs + one round
    align = json.loads((root / "data/08_reporting/align.json").read_text())
    assert align["enabled"] and align["world_size"] == 2 and align["pairs_trained"] > 0
    from lmforge.tokenizer.chat_tokenizer import ChatTokenizer

    aligned = ChatTokenizer.load(root / "data/06_models/align")
    assert aligned.end_of_turn == END_OF_TURN["gemma"] and aligned.template == ChatTokenizer.load(model_dir).template
    assert json.loads((root / "data/08_reporting/packaging.json").read_text())["packaged_aligned"] == 1
    check_package(root, "gemma")


def check_continued_pretraining(root: Path, model_dir: Path, family: str, metrics: dict) -> None:
    """The pretrain stage on a foreign model (``TINY_PRETRAIN``): trained by 2 processes on the corpus in the
    model's own tokens, starting from the model's own loss on the continued schedule; the checkpoint carries
    its tokenizer, chat template and generation config. (Formerly its own `kedro run` on a Qwen2 model in
    test_pipeline_pretrain.py: the walkthrough runs the same stage anyway.)"""
    import torch
    from transformers import AutoModelForCausalLM

    from lmforge.tokenizer.chat_tokenizer import ChatTokenizer

    steps, micro, lr, seed = 4, 2, 0.003, 0  # TINY_PRETRAIN; the seed is the default's
    assert f"pretrain.train.max_steps={steps}," in TINY_PRETRAIN and f"micro_batch_size={micro}," in TINY_PRETRAIN
    assert f"pretrain.continued.lr={lr}," in TINY_PRETRAIN
    curve = json.loads((root / "data/08_reporting/pretrain_loss.json").read_text())
    shards = root / "data/05_model_input/pretrain_tokens"
    assert metrics["steps"] == steps and metrics["world_size"] == 2 and metrics["tokens.train_blocks"] > 0
    assert metrics["final_loss"] < metrics["initial_loss"] and metrics["loss_decreased"] is True
    # the first step is the base model's loss on that step's blocks, not a fresh initialisation's
    base_loss = _step0_loss(model_dir, shards, micro_batch_size=micro, world_size=2, seed=seed)
    assert curve[0]["loss"] == pytest.approx(base_loss, rel=1e-4)
    assert abs(_step0_loss(model_dir, shards, micro_batch_size=micro, world_size=2, seed=seed, fresh=True)
               - base_loss) > 1e-3
    assert curve[0]["lr"] == pytest.approx(lr / max(1, round(0.03 * steps)))  # the continued schedule

    checkpoint = root / "data/06_models/pretrain"
    model = AutoModelForCausalLM.from_pretrained(str(checkpoint), dtype=torch.float32, local_files_only=True)
    base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32, local_files_only=True)
    assert type(model) is type(base) and model.config.vocab_size == base.config.vocab_size
    assert not torch.equal(model.get_input_embeddings().weight, base.get_input_embeddings().weight)
    chat = ChatTokenizer.load(checkpoint)
    assert chat.template == ChatTokenizer.load(model_dir).template and chat.end_of_turn == END_OF_TURN[family]
    assert json.loads((checkpoint / "generation_config.json").read_text()) == json.loads(
        (model_dir / "generation_config.json").read_text())
    assert not (root / "data/05_model_input/tokens").exists()


def _step0_loss(model_dir: Path, shards_dir: Path, *, micro_batch_size: int, world_size: int, seed: int,
                fresh: bool = False) -> float:
    """The loss the job's first step reports (mean of every rank's first micro-batch), of the weights in
    ``model_dir`` (or, ``fresh``, of a new random init of the same architecture)."""
    import numpy as np
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from lmforge.tokenizer.shards import TokenShards
    from lmforge.training.data import sample_indices

    if fresh:
        torch.manual_seed(seed + 1)
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(model_dir)), dtype=torch.float32)
    else:
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32, local_files_only=True)
    shards = TokenShards.open(shards_dir)
    losses = []
    with torch.no_grad():
        for rank in range(world_size):
            idx = sample_indices(0, 0, rank, world_size=world_size, micro_batch_size=micro_batch_size, accumulation=1,
                                 n_items=shards.n_blocks("train"), seed=seed)
            ids = torch.from_numpy(np.stack([shards.block("train", int(i)) for i in idx]).astype(np.int64))
            losses.append(float(model(input_ids=ids, labels=ids).loss))
    return sum(losses) / len(losses)


# gemma: the walkthrough above; internlm2 (a Llama with InternLM2's tokenizer): the remote-code test below runs
# sft and evaluation on InternLM2's own code with that tokenizer and checks it as the family runs are checked
# (its packaging: tests/packaging/test_packaging_foreign.py), one 2-process `kedro run` fewer (~35 s)
KEDRO_FAMILIES = [f for f in FAMILIES if f not in ("gemma", "internlm2")]


def check_sft_checkpoint(root: Path, model_dir: Path, family: str, metrics: dict, *, trust_remote_code: bool = False):
    """The sft stage's checkpoint of a foreign model: the model's tokenizer and the one template, its stop ids,
    and the run's template audit (the rendered example, which tokens carry loss, the template's hash)."""
    from transformers import AutoTokenizer, GenerationConfig

    checkpoint = root / "data/06_models/sft"
    assert metrics["end_of_turn"] == END_OF_TURN[family]
    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint), local_files_only=True,
                                              trust_remote_code=trust_remote_code)
    source = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True, trust_remote_code=trust_remote_code)
    assert tokenizer.get_vocab() == source.get_vocab()
    if family not in NAMED:
        assert tokenizer.chat_template == source.chat_template
    end_of_turn_id = tokenizer.convert_tokens_to_ids(END_OF_TURN[family])
    stop_ids = GenerationConfig.from_pretrained(str(checkpoint)).eos_token_id
    assert stop_ids[0] == end_of_turn_id and tokenizer.eos_token_id in stop_ids
    audit = json.loads((root / "data/08_reporting/template_audit/sft.json").read_text())
    assert audit["end_of_turn"] == END_OF_TURN[family]
    trained = [audit["training"]["tokens"][i] for i in audit["training"]["trained_positions"]]
    assert trained.count(END_OF_TURN[family]) == 2 and len(audit["template_sha256"]) == 64


def check_evaluation_audit(root: Path) -> None:
    """Evaluation renders the prompt sft trained with (same ids, same template hash) and the gate's ratio passes."""
    audits = {stage: json.loads((root / f"data/08_reporting/template_audit/{stage}.json").read_text())
              for stage in ("sft", "evaluation")}
    prompt = audits["sft"]["prompt"]["input_ids"]
    assert audits["sft"]["training"]["input_ids"][: len(prompt)] == prompt
    assert audits["evaluation"]["prompt"]["input_ids"] == prompt
    assert audits["evaluation"]["template_sha256"] == audits["sft"]["template_sha256"]
    evaluation = json.loads((root / "data/08_reporting/evaluation.json").read_text())
    assert evaluation["sft_pairs.perplexity_ratio"] <= 1.0  # SFT fits held-out instructions better


@pytest.mark.slow
@pytest.mark.parametrize("family", KEDRO_FAMILIES)
def test_kedro_run_sft_on_a_foreign_model(family, tmp_path, project_root, chain_documents):
    """SFT straight from the model, then evaluation (against the model as it was) and packaging."""
    import torch
    from transformers import AutoModelForCausalLM

    root = copy_project(project_root, tmp_path / "project", chain_documents, data_processing_metrics=True)
    stage_tokenizer = root / "data/06_models/tokenizer"
    if family == "llama3":  # the tokenizer stage's output exists but is no tokenizer: the model's own is used
        stage_tokenizer.mkdir(parents=True)  # (formerly its own `kedro run` in test_pipeline_sft.py, ~35 s)
        (stage_tokenizer / "README.md").write_text("not a tokenizer\n")
    model_dir = build_foreign_model(family, tmp_path / family)
    params = f"sft.base_model={model_dir},{TINY_SFT},{FAMILY_EVALUATION},{TINY_PACKAGING},align.enabled=false"
    if family in NAMED:
        params += f",sft.chat_template={NAMED[family]}"
    if family in LORA:
        params += ",sft.finetuning=lora" + (f",sft.lora.target_modules={LORA[family]}" if LORA[family] else "")

    ran = kedro_run(root, tmp_path, "--pipelines", "sft,align,evaluation,packaging", "--params", params)

    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-4000:]
    assert not (root / "data/06_models/pretrain").exists()
    if family == "llama3":
        assert [p.name for p in stage_tokenizer.iterdir()] == ["README.md"]  # left as it was
    else:
        assert not stage_tokenizer.exists()
    metrics = json.loads((root / "data/08_reporting/sft.json").read_text())
    # the loss on the same held-out conversations before and after (4 training batches are too noisy to compare)
    assert metrics["steps"] == 4 and metrics["world_size"] == 2 and metrics["validation_examples"] > 0
    assert metrics["validation_loss"] < metrics["validation_loss_initial"], metrics
    # packing only where a packed row trains exactly like its examples alone (BLOOM's ALiBi crosses them)
    assert metrics["packing"] is (family != "bloom") and ("packing_refused" in metrics) is (family == "bloom")
    checkpoint = root / "data/06_models/sft"
    tuned = AutoModelForCausalLM.from_pretrained(str(checkpoint), dtype=torch.float32, local_files_only=True)
    base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32, local_files_only=True)
    assert type(tuned) is type(base)  # the family's own architecture, not a preset
    assert tuned.config.hidden_size == base.config.hidden_size == 64
    changed = [name for name, p in tuned.state_dict().items() if not torch.equal(p, base.state_dict()[name])]
    assert metrics["finetuning"] == ("lora" if family in LORA else "full")
    if family in LORA:  # adapters merged into the projections; embeddings frozen; the adapter kept beside
        assert changed and not any("embed" in name for name in changed)
        assert (checkpoint / "adapter" / "adapter_config.json").is_file()
    else:
        assert any("embed" in name for name in changed)
    # the checkpoint carries the model's tokenizer and the one template, and stops on its end-of-turn token
    check_sft_checkpoint(root, model_dir, family, metrics)
    check_package(root, family)


@pytest.mark.slow
def test_kedro_run_sft_refuses_a_remote_code_model_unless_opted_in(tmp_path, project_root, chain_documents):
    """Refused in one line; with sft.trust_remote_code the model's own (here Llama-based) code runs and trains, and
    evaluation loads it too. The model carries the internlm2 family's tokenizer (BOS added on encode and written by
    the template, pad = eos, turns end with <|im_end|>): this run is also that family's `kedro run`, checked as
    the others are (its packaging: tests/packaging/test_packaging_foreign.py; packaging takes no remote code)."""
    import torch
    from transformers import AutoModelForCausalLM

    root = copy_project(project_root, tmp_path / "project", chain_documents, data_processing_metrics=True)
    stub = build_remote_code_model(tmp_path / "internlm2-stub")  # its code raises if ever imported

    refused = kedro_run(root, tmp_path, "--pipelines", "sft", "--params", f"sft.base_model={stub},{TINY_SFT}",
                    timeout=120)

    assert refused.returncode != 0
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith("error: sft.base_model: ") and "sft.trust_remote_code: true" in last, last
    assert "convert it to Llama format" in last and "Traceback" not in refused.stderr
    assert not (root / "data/06_models/sft").exists()

    working = build_remote_code_model(tmp_path / "internlm2", working=True)
    ran = kedro_run(root, tmp_path, "--pipelines", "sft,align,evaluation", "--params",
                    f"sft.base_model={working},sft.trust_remote_code=true,{TINY_SFT},{FAMILY_EVALUATION},"
                    "align.enabled=false")

    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-4000:]
    metrics = json.loads((root / "data/08_reporting/sft.json").read_text())
    assert metrics["validation_loss"] < metrics["validation_loss_initial"]
    checkpoint = root / "data/06_models/sft"
    assert (checkpoint / "modeling_internlm2.py").is_file()  # the checkpoint keeps the code it needs
    tuned = AutoModelForCausalLM.from_pretrained(str(checkpoint), dtype=torch.float32, trust_remote_code=True)
    assert type(tuned).__name__ == "InternLM2ForCausalLM"
    # the internlm2 family's checks (full fine-tuning, packed: its RoPE masks by position ids)
    assert not (root / "data/06_models/tokenizer").exists() and not (root / "data/06_models/pretrain").exists()
    assert metrics["steps"] == 4 and metrics["validation_examples"] > 0
    assert metrics["packing"] is True and "packing_refused" not in metrics and metrics["finetuning"] == "full"
    base = AutoModelForCausalLM.from_pretrained(str(working), dtype=torch.float32, trust_remote_code=True)
    assert type(tuned).__name__ == type(base).__name__  # each directory's own copy of the remote code
    changed = [name for name, p in tuned.state_dict().items() if not torch.equal(p, base.state_dict()[name])]
    assert any("embed" in name for name in changed)
    check_sft_checkpoint(root, working, "internlm2", metrics, trust_remote_code=True)
    check_evaluation_audit(root)
