"""DPO optimizer-step time on the ``tiny`` preset: lmforge's DPO step versus TRL's ``DPOTrainer``.

    .venv/bin/python bench/align_vs_trl.py [--quick] [--rounds 2] [--out bench/results/align_vs_trl.json]

The model: lmforge's ``tiny`` preset (Llama, d 256, 4 layers, 5.2M parameters, vocab 4096) with random
weights (``lmforge.model.build.build_model``, seed 0) and a byte-level BPE tokenizer trained here with
Hugging Face ``tokenizers`` on 1 MB of the standard library's ``.py`` files, saved as one HF directory
that both contenders load. Nothing is downloaded.

The pairs: prompt "Write the Python function ``name(args)``: <docstring>", chosen = that function's
source, rejected = the source of the next function in the list (a wrong answer of similar kind),
plain text (no chat template) as TRL's DPOTrainer takes it: it tokenizes prompt and prompt + answer +
EOS itself. The script tokenizes them the same way and checks, in the TRL worker, that TRL's token ids
equal ours (``same_tokens`` in the JSON). Only pairs whose prompt + answer fit ``--max-length`` tokens
are kept, so neither side truncates, and both pad every batch to exactly ``--max-length``
(TRL: ``pad_to_multiple_of=max_length``): every step has the same shape (2 x batch rows) whatever the
order. Both read the pairs in the same order (TRL: ``train_sampling_strategy="sequential"``), so their
losses must agree step by step (``max_loss_diff`` in the JSON: the proof that both did the same work).

Both sides: batch ``--batch`` pairs per step (2 x batch sequences through the policy), fp32, beta 0.1,
sigmoid DPO, ``torch.optim.AdamW`` (lr 1e-5, no weight decay, constant schedule), gradient clipping 1.0,
``sdpa`` attention, no gradient checkpointing, one process and ``--threads`` torch threads each, in a
fresh process per contender and round:
- lmforge: the align worker's own step (``run_lmforge_worker``): ``lmforge.training.align``'s
  ``PreferenceModel`` (the chosen and rejected rows of a batch through the policy in one forward,
  ``sequence_logps`` + ``preference_loss`` with the cached reference) in the shared DeepSpeed loop
  (``loop.train``: ZeRO-0 engine, gradient clipping, AdamW, the per-step all-reduce of the metrics, one gloo
  process), reference log-probs computed once before training (``reference_scores``, timed apart as
  ``ref_precompute_s``); TRL's constant learning rate and AdamW betas (0.9, 0.999).
- TRL 1.16 ``DPOTrainer``: (a) ``precompute_ref_log_probs=True``, the same caching as ours; (b) its
  default, a reference model forward every step. ``use_cpu``, ``optim="adamw_torch"``, bf16 and gradient
  checkpointing off (its defaults are on), ``report_to="none"`` (it logs nothing: favours it). TRL keeps
  its fused LM head (log-probs in tiles, never the full logits) and its extra metrics (entropy, mean logits,
  token accuracy): its own choices.

Timing: the period between consecutive optimizer steps (data, forward, backward, clipping, optimizer,
logging; ours from step start to step start, TRL's from step end to step end), the median over ``--steps`` steps after ``--warmup``; beside it the process CPU seconds over the
same periods (``time.process_time`` at each step end, all threads). TRL's step ends are a
``TrainerCallback.on_step_end``. Contenders alternate for ``--rounds`` rounds (order rotated each round),
each keeps its best round. The whole script runs in about 2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
logger = logging.getLogger("bench.align_vs_trl")

SPECIAL_TOKENS = ["<|endoftext|>", "<s>", "</s>", "<pad>"]  # ids 0-3: bos 1, eos 2, pad 3 as build_config sets
CONTENDERS = ("lmforge", "trl_precompute", "trl_default")


def stdlib_files(limit_mb: float) -> list[Path]:
    """The standard library's .py files in sorted order (tests left out), up to ``limit_mb`` MB."""
    files, total = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        if "site-packages" in path.parts or "test" in path.parts or "tests" in path.parts:
            continue
        files.append(path)
        total += path.stat().st_size
        if total > limit_mb * 2**20:
            break
    return files


def build_model_dir(out: Path, preset_name: str, files: list[Path]) -> int:
    """Train the byte-level BPE tokenizer, build the preset with random weights, save both as one HF dir."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from lmforge.model.build import build_model
    from lmforge.model.presets import Preset

    preset = Preset.from_name(preset_name)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=preset.vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train([str(f) for f in files], trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    tok.save_pretrained(out)
    model = build_model(preset, vocab_size=len(tok), seed=0)
    model.config.use_cache = False
    model.save_pretrained(out, safe_serialization=True)
    return sum(p.numel() for p in model.parameters())


def functions(files: list[Path]) -> Iterator[tuple[str, str]]:
    """(prompt, source) for every documented function of ``files``."""
    for path in files:
        source = path.read_text(encoding="utf-8", errors="replace")
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and (doc := ast.get_docstring(node)):
                code = ast.get_source_segment(source, node)
                if code:
                    yield f"Write the Python function `{node.name}({ast.unparse(node.args)})`: {doc}\n", code


def build_pairs(model_dir: Path, files: list[Path], max_length: int, n_pairs: int) -> list[dict]:
    """Text pairs and their token ids, tokenized as TRL's DPOTrainer does (prompt; prompt + answer + EOS)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    funcs = (f for f in functions(files) if len(f[0]) + len(f[1]) < 8 * max_length)  # lazy: stop at n_pairs
    pairs, previous = [], next(funcs)
    for current in funcs:
        (prompt, chosen), (_, rejected), previous = previous, current, current
        prompt_ids = tok(text=prompt)["input_ids"]
        answers = {}
        for name, text in (("chosen", chosen), ("rejected", rejected)):
            full = tok(text=prompt + text + tok.eos_token)["input_ids"]
            if full[:len(prompt_ids)] != prompt_ids:  # a token merges across the boundary: skip, TRL would cut
                break
            answers[name] = full[len(prompt_ids):]
        if len(answers) < 2 or len(prompt_ids) + max(len(a) for a in answers.values()) > max_length:
            continue
        pairs.append({"prompt": prompt, "chosen": chosen + tok.eos_token, "rejected": rejected + tok.eos_token,
                      "prompt_ids": prompt_ids, "chosen_ids": answers["chosen"], "rejected_ids": answers["rejected"]})
        if len(pairs) == n_pairs:
            return pairs
    raise RuntimeError(f"only {len(pairs)} pairs fit {max_length} tokens, {n_pairs} wanted")


def collate(pairs: list[dict], max_length: int, pad_id: int) -> dict:
    """Rows chosen (B) then rejected (B), right-padded to ``max_length``; labels -100 on prompt and padding."""
    import torch

    rows = [(p["prompt_ids"], p[key]) for key in ("chosen_ids", "rejected_ids") for p in pairs]
    ids = torch.full((len(rows), max_length), pad_id)
    labels = torch.full((len(rows), max_length), -100)
    attention = torch.zeros((len(rows), max_length), dtype=torch.long)
    for i, (prompt, answer) in enumerate(rows):
        n_p, n = len(prompt), len(prompt) + len(answer)
        ids[i, :n] = torch.tensor(prompt + answer)
        labels[i, n_p:n] = torch.tensor(answer)
        attention[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": attention}


def run_lmforge_worker(work: Path, args) -> dict:
    """The align worker's own step (``lmforge.training.align``): its ``PreferenceModel`` in the shared DeepSpeed
    loop (``loop.train``, ZeRO-0, one process over gloo), reference log-probs cached first (``reference_scores``).

    Step boundaries are the times the loop asks for each step's batch; the losses are the loop's.
    """
    import torch

    from lmforge.align.losses import LossArgs
    from lmforge.training.align import _preference_model_class, reference_scores
    from lmforge.training.config import DeepSpeedArgs, JobData, JobModel, JobSpec, TrainArgs
    from lmforge.training.deepspeed_config import build_deepspeed_config
    from lmforge.training.launch import free_port
    from lmforge.training.loop import init_distributed, train

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
    from transformers import AutoModelForCausalLM

    rank, world = init_distributed()
    pairs = [json.loads(line) for line in (work / "pairs.jsonl").read_text().splitlines()]
    n_steps = args.warmup + args.steps
    model = AutoModelForCausalLM.from_pretrained(work / "model", dtype=torch.float32, attn_implementation="sdpa")
    model.config.use_cache = False
    examples = [{"id": str(i), "chosen_input_ids": p["prompt_ids"] + p["chosen_ids"],
                 "chosen_labels": [-100] * len(p["prompt_ids"]) + p["chosen_ids"],
                 "rejected_input_ids": p["prompt_ids"] + p["rejected_ids"],
                 "rejected_labels": [-100] * len(p["prompt_ids"]) + p["rejected_ids"]}
                for i, p in enumerate(pairs[:args.batch * n_steps])]
    t0 = time.perf_counter()
    reference = reference_scores(model, examples, args.pad_id, rank=rank, world=world, cache=work / "ref.json",
                                 fingerprint=None)
    ref_s = time.perf_counter() - t0
    # TRL's schedule and optimizer: constant lr (no warmup, no decay), AdamW betas (0.9, 0.999), no weight decay
    train_args = TrainArgs(max_steps=n_steps, micro_batch_size=args.batch, lr=args.lr, min_lr_ratio=1.0,
                           warmup_steps=0, weight_decay=0.0, betas=(0.9, 0.999), grad_clip=1.0, checkpoint_every=0)
    templates = {f.stem: json.loads(f.read_text()) for f in (ROOT / "conf/base/deepspeed").glob("*.json")}
    spec = JobSpec(kind="align", model=JobModel(attn_implementation="sdpa"), init_from=str(work / "model"),
                   data=JobData(pad_id=args.pad_id), train=train_args,
                   deepspeed=build_deepspeed_config(templates, train_args, DeepSpeedArgs(zero_stage=0)),
                   output_dir=str(work / "lmforge-out"), run_dir=str(work / "lmforge-run"), metric_prefix="align",
                   preference=LossArgs("dpo", beta=args.beta))
    Path(spec.run_dir).mkdir(parents=True, exist_ok=True)
    starts, cpu = [], []

    def next_batch(step: int, micro: int) -> dict:
        starts.append(time.perf_counter())
        cpu.append(time.process_time())
        chunk = range(step * args.batch, (step + 1) * args.batch)  # pair order, as TRL's sequential sampler
        batch = collate([pairs[i] for i in chunk], args.max_length, args.pad_id)  # padded to max_length, as TRL
        batch["ref_logps"] = torch.tensor([reference[i][0] for i in chunk] + [reference[i][1] for i in chunk])
        return batch

    result = train(spec, _preference_model_class()(model, spec.preference), next_batch, rank=rank, world_size=world)
    return {"ends": starts, "cpu": cpu, "losses": [r["loss"] for r in result["history"]], "ref_precompute_s": ref_s}


def run_trl_worker(work: Path, args, precompute: bool) -> dict:
    """TRL's DPOTrainer on the same pairs and order; step-end times from a callback."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    pairs = [json.loads(line) for line in (work / "pairs.jsonl").read_text().splitlines()]
    n = args.batch * (args.warmup + args.steps)
    dataset = Dataset.from_list([{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in pairs[:n]])
    model = AutoModelForCausalLM.from_pretrained(work / "model", dtype=torch.float32, attn_implementation="sdpa")

    class StepTimes(TrainerCallback):
        def __init__(self):
            self.ends, self.cpu, self.losses = [], [], []

        def on_train_begin(self, *_, **__):
            self.ends.append(time.perf_counter())
            self.cpu.append(time.process_time())

        def on_step_end(self, *_, **__):
            self.ends.append(time.perf_counter())
            self.cpu.append(time.process_time())

        def on_log(self, _args, _state, _control, logs=None, **__):
            if logs and "loss" in logs:
                self.losses.append(logs["loss"])

    times = StepTimes()
    config = DPOConfig(
        output_dir=str(work / "trl-out"), use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False,
        max_steps=args.warmup + args.steps, per_device_train_batch_size=args.batch, gradient_accumulation_steps=1,
        learning_rate=args.lr, weight_decay=0.0, lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=1.0,
        optim="adamw_torch", beta=args.beta, loss_type=["sigmoid"], max_length=args.max_length,
        pad_to_multiple_of=args.max_length, precompute_ref_log_probs=precompute,
        precompute_ref_batch_size=args.batch, train_sampling_strategy="sequential", logging_steps=1,
        report_to="none", save_strategy="no", seed=0, dataloader_num_workers=0, disable_tqdm=True)
    t0 = time.perf_counter()
    trainer = DPOTrainer(model=model, args=config, train_dataset=dataset,
                         processing_class=AutoTokenizer.from_pretrained(work / "model"), callbacks=[times])
    init_s = time.perf_counter() - t0
    tokenized = trainer.train_dataset
    same = all(tokenized[i][k] == pairs[i][k] for i in range(n) for k in ("prompt_ids", "chosen_ids", "rejected_ids"))
    trainer.train()
    return {"ends": times.ends, "cpu": times.cpu, "losses": times.losses, "same_tokens": same,
            "init_s": init_s, "optimizer": type(trainer.optimizer.optimizer).__name__}


def run_worker(work: Path, args, name: str, tag: str) -> dict:
    """One contender in a fresh process; the median step period and CPU seconds after the warmup steps."""
    cmd = [sys.executable, __file__, "--worker", name, "--workdir", str(work)]
    cmd += [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
            if k in ("threads", "warmup", "steps", "batch", "lr", "beta", "max_length", "pad_id")]
    threads = str(args.threads)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": str(ROOT / "src"), "HF_DATASETS_CACHE": str(work / f"datasets-{name}-{tag}"),
           "TRL_EXPERIMENTAL_SILENCE": "1", "HF_HUB_OFFLINE": "1"}
    load = os.getloadavg()
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    (work / f"{name}-{tag}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} worker failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}")
    res = json.loads((work / f"{name}.json").read_text())
    ends, cpu = res.pop("ends"), res.pop("cpu")
    periods = [b - a for a, b in zip(ends, ends[1:], strict=False)]
    cpu_periods = [b - a for a, b in zip(cpu, cpu[1:], strict=False)]
    return {"median_step_s": statistics.median(periods[args.warmup:]),
            "median_step_cpu_s": statistics.median(cpu_periods[args.warmup:]),
            "step_periods_s": periods, "step_cpu_s": cpu_periods, "process_wall_s": time.perf_counter() - t,
            "load_average_before": load, **res}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round, few steps, nothing saved (smoke run)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3, help="optimizer steps left out of the timing")
    parser.add_argument("--steps", type=int, default=12, help="timed optimizer steps")
    parser.add_argument("--batch", type=int, default=4, help="pairs per step (2x sequences through the policy)")
    parser.add_argument("--max-length", type=int, default=128, help="tokens per sequence: every batch is padded to it")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of each contender (1: its CPU time per step does not depend on the load)")
    parser.add_argument("--workdir", default=None, help="keep the model, pairs and logs here (default: a temp dir)")
    parser.add_argument("--out", default=str(ROOT / "bench/results/align_vs_trl.json"))
    parser.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--pad-id", type=int, default=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        work = Path(args.workdir)
        result = (run_lmforge_worker(work, args) if args.worker == "lmforge"
                  else run_trl_worker(work, args, precompute=args.worker == "trl_precompute"))
        (work / f"{args.worker}.json").write_text(json.dumps(result))
        return
    if args.quick:
        args.rounds, args.warmup, args.steps = 1, 1, 3

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        n_params = build_model_dir(work / "model", args.preset, stdlib_files(1))
        pairs = build_pairs(work / "model", stdlib_files(20), args.max_length, args.batch * (args.warmup + args.steps))
        with open(work / "pairs.jsonl", "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(p) + "\n" for p in pairs)
        tokens = sum(len(p["prompt_ids"]) * 2 + len(p["chosen_ids"]) + len(p["rejected_ids"]) for p in pairs)
        logger.info("model %.1fM params, %d pairs (%.0f%% of the padded tokens real) in %.0f s", n_params / 1e6,
                    len(pairs), 100 * tokens / (2 * len(pairs) * args.max_length), time.perf_counter() - t0)
        rounds: dict[str, list[dict]] = {name: [] for name in CONTENDERS}
        for r in range(args.rounds):
            for name in CONTENDERS[r % 3:] + CONTENDERS[:r % 3]:
                res = run_worker(work, args, name, f"r{r}")
                rounds[name].append(res)
                logger.info("round %d %-14s median step %.3f s wall, %.3f s CPU; process %.0f s, load %s", r, name,
                            res["median_step_s"], res["median_step_cpu_s"], res["process_wall_s"],
                            res["load_average_before"])
    best = {name: min(rs, key=lambda x: x["median_step_s"]) for name, rs in rounds.items()}
    best_cpu = {name: min(x["median_step_cpu_s"] for x in rs) for name, rs in rounds.items()}
    n_steps = args.warmup + args.steps
    loss_diff = {name: max(abs(a - b) for a, b in zip(best["lmforge"]["losses"], best[name]["losses"], strict=True))
                 for name in CONTENDERS[1:] if len(best[name]["losses"]) == n_steps}
    import torch

    result = {
        "what": "median DPO optimizer-step time (period between step ends) on the tiny preset: lmforge's DPO step "
                "(the align worker's PreferenceModel in the DeepSpeed loop, cached reference) vs TRL DPOTrainer (cached reference, and its default "
                "reference forward per step), same model, pairs, order, batch, fp32, CPU",
        "model": {"preset": args.preset, "architecture": "LlamaForCausalLM", "params": n_params, "random_weights": True},
        "data": {"pairs": len(pairs), "max_length": args.max_length,
                 "real_token_fraction": tokens / (2 * len(pairs) * args.max_length),
                 "source": "stdlib 'write the function' prompts; chosen = its source, rejected = the next function's"},
        "settings": {"batch_pairs": args.batch, "sequences_per_step": 2 * args.batch, "lr": args.lr, "beta": args.beta,
                     "loss": "dpo sigmoid", "precision": "fp32", "optimizer": "torch.optim.AdamW", "weight_decay": 0.0,
                     "grad_clip": 1.0, "schedule": "constant", "attn_implementation": "sdpa", "threads": args.threads,
                     "warmup_steps_excluded": args.warmup, "timed_steps": args.steps, "rounds": args.rounds,
                     "trl_report_to": "none", "trl_sampling": "sequential"},
        "rounds": rounds,
        **{f"{name}_median_step_s": best[name]["median_step_s"] for name in CONTENDERS},
        **{f"{name}_median_step_cpu_s": best_cpu[name] for name in CONTENDERS},
        "ratio_lmforge_over_trl_precompute": best["lmforge"]["median_step_s"] / best["trl_precompute"]["median_step_s"],
        "ratio_lmforge_over_trl_default": best["lmforge"]["median_step_s"] / best["trl_default"]["median_step_s"],
        "ratio_cpu_lmforge_over_trl_precompute": best_cpu["lmforge"] / best_cpu["trl_precompute"],
        "ratio_cpu_lmforge_over_trl_default": best_cpu["lmforge"] / best_cpu["trl_default"],
        "max_loss_diff_vs_lmforge": loss_diff,
        "same_tokens": all(x["same_tokens"] for name in CONTENDERS[1:] for x in rounds[name]),
        "target_ratio_at_most": 1.0,
        "load_average_after": os.getloadavg(),
        "lmforge_commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                         text=True).stdout.strip(),
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
                    "versions": package_versions()},
    }
    text = json.dumps(result, indent=2) + "\n"
    if not args.quick:
        Path(args.out).write_text(text)
    sys.stdout.write(text)


def package_versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("trl", "transformers", "accelerate", "datasets")}


if __name__ == "__main__":
    main()
