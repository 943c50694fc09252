"""SFT optimizer-step time of a foreign ~100M-parameter model: lmforge's SFT job versus TRL's ``SFTTrainer``.

    .venv/bin/python bench/sft_vs_trl.py [--quick] [--rounds 2] [--out bench/results/sft_vs_trl.json]

The model is foreign to lmforge: a ``Qwen2ForCausalLM`` with random weights (hidden 768, 12 layers,
12 heads, MLP 2048, tied embedding: ~98M parameters) and a byte-level BPE tokenizer trained here with
Hugging Face ``tokenizers`` on the standard library's ``.py`` files (16k vocabulary, ChatML special
tokens and chat template), saved as an HF directory. Nothing is downloaded.

The data: conversations "write the function ``name(args)``: <docstring>" -> the function's source,
from the standard library, rendered with the model's ChatML template and tokenized ONCE
(``apply_chat_template(..., return_assistant_tokens_mask=True)``: labels on the assistant turns and
their ``<|im_end|>``, -100 elsewhere). Every example is cut to exactly ``--seq-len`` tokens (only
conversations at least that long, with an answer inside the window, are kept), so every micro-batch
of either contender has the same shape and no padding whatever order its sampler draws: same work.

Both contenders get those token ids and labels, no packing, the same micro batch, gradient
accumulation, fp32, AdamW (``torch.optim.AdamW``; lr, betas, eps, no weight decay, clipping 1.0, warmup
+ cosine), the model's ``sdpa`` attention, one process each, ``--threads`` torch threads each:
- lmforge: the real SFT worker (``python -m lmforge.training.sft``) started by
  ``lmforge.training.launch.launch_job`` with torchrun, one process, ZeRO stage 0 (DeepSpeed engine),
  per-step MLflow logging into a run of this benchmark.
- TRL 1.16 ``SFTTrainer`` (``use_cpu``, a pre-tokenized ``input_ids``/``labels`` dataset, no gradient
  checkpointing, no bf16, ``optim="adamw_torch"``: its SFT defaults switched off to match; ``--trl-optim
  adamw_torch_fused`` runs its default optimizer), in a fresh process of this script. ``report_to="none"``:
  it logs nothing anywhere, which favours it. Its loss uses TRL's fused LM head (the head and softmax only
  on labelled positions) and also computes entropy and token accuracy: TRL's own choices, kept.

Timing: the period between consecutive optimizer-step ends (everything one step costs: data, forward,
backward, clipping, optimizer, logging), the median over ``--steps`` steps after ``--warmup``. lmforge's
step ends are its per-step MLflow metric timestamps (ms), TRL's a ``TrainerCallback.on_step_end``.
Beside the wall time, the CPU seconds of each contender's processes between the same step ends
(``ChildCpuClock``, from ``/proc``): with one thread per contender (the default) that figure hardly
depends on the other jobs sharing the machine, the wall time does. Also recorded: the in-step times
(lmforge's own ``step_time_s`` metric; TRL ``on_step_begin`` -> ``on_step_end``). The contenders
alternate for ``--rounds`` rounds (the order flips each round) and each keeps its best round's median.
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
from collections.abc import Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
logger = logging.getLogger("bench.sft_vs_trl")

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{ '\\n' }}"
    "{% else %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
FULL = {"hidden": 768, "layers": 12, "heads": 12, "intermediate": 2048, "vocab": 16384, "seq_len": 256}
QUICK = {"hidden": 128, "layers": 2, "heads": 4, "intermediate": 512, "vocab": 2048, "seq_len": 64}


def stdlib_files(limit_mb: float) -> list[Path]:
    """The standard library's .py files in sorted order, up to ``limit_mb`` MB."""
    files, total = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        if "site-packages" in path.parts or "test" in path.parts:
            continue
        files.append(path)
        total += path.stat().st_size
        if total > limit_mb * 2**20:
            break
    return files


def build_model_dir(out: Path, sizes: dict[str, int], files: list[Path]) -> int:
    """Train the byte-level BPE tokenizer, build the random Qwen2 model, save both as one HF directory."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=sizes["vocab"], special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train([str(f) for f in files], trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  unk_token=None)
    tok.chat_template = CHATML_TEMPLATE
    tok.save_pretrained(out)
    config = Qwen2Config(vocab_size=len(tok), hidden_size=sizes["hidden"], num_hidden_layers=sizes["layers"],
                         num_attention_heads=sizes["heads"], num_key_value_heads=sizes["heads"],
                         intermediate_size=sizes["intermediate"], max_position_embeddings=4096,
                         tie_word_embeddings=True, bos_token_id=None, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, use_cache=False)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(out, safe_serialization=True)
    return sum(p.numel() for p in model.parameters())


def conversations(files: list[Path]) -> Iterator[list[dict[str, str]]]:
    """'Write the function' conversations: signature and docstring -> the function's source."""
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
                    prompt = f"Write the Python function `{node.name}({ast.unparse(node.args)})`: {doc}"
                    yield [{"role": "user", "content": prompt}, {"role": "assistant", "content": code}]


def tokenize_examples(model_dir: Path, convs: Iterable[list[dict[str, str]]], seq_len: int, n_max: int) -> tuple[list[dict], dict]:
    """Render and mask once; keep conversations of >= ``seq_len`` tokens whose answer starts in the window."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    examples, trained = [], 0
    for conv in convs:
        enc = tok.apply_chat_template(conv, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
        ids, mask = enc["input_ids"], enc["assistant_masks"]
        if len(ids) < seq_len or 1 not in mask or mask.index(1) > seq_len // 2:
            continue
        ids, mask = ids[:seq_len], mask[:seq_len]
        labels = [t if m else -100 for t, m in zip(ids, mask, strict=True)]
        examples.append({"id": f"ex{len(examples)}", "input_ids": ids, "labels": labels})
        trained += sum(1 for x in labels[1:] if x != -100)
        if len(examples) == n_max:
            break
    if not examples:
        raise RuntimeError(f"no conversation reaches {seq_len} tokens")
    return examples, {"examples": len(examples), "trained_token_fraction": trained / (len(examples) * seq_len),
                      "pad_id": tok.pad_token_id}


def median_periods(ends: list[float], warmup: int) -> float:
    """Median time between consecutive step ends, for the steps after the first ``warmup``."""
    return statistics.median(b - a for a, b in zip(ends[warmup - 1:], ends[warmup:], strict=False))


class ChildCpuClock:
    """CPU seconds (user + system, every thread) of this process's descendants, sampled with wall timestamps.

    A background thread reads ``/proc/<pid>/stat`` of the children (the set refreshed every second) every
    ``interval`` s. ``cpu_at(t)`` interpolates the clock at a wall time (``time.time()``), so the CPU a
    contender spent between two step ends is known without touching its code: on a shared machine the CPU
    time of a one-thread contender hardly depends on what else runs, its wall time does.
    """

    def __init__(self, interval: float = 0.02):
        import threading

        self.interval, self.samples = interval, []
        self.tick = os.sysconf("SC_CLK_TCK")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ChildCpuClock:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @staticmethod
    def _stat(pid: int) -> list[str] | None:
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        return text[text.rindex(")") + 2:].split()  # state, ppid, ... utime (11), stime (12)

    def _descendants(self) -> set[int]:
        parent = {}
        for name in os.listdir("/proc"):
            if name.isdigit() and (fields := self._stat(int(name))):
                parent[int(name)] = int(fields[1])
        found, frontier = set(), {os.getpid()}
        while frontier:
            frontier = {pid for pid, ppid in parent.items() if ppid in frontier} - found
            found |= frontier
        return found

    def _run(self) -> None:
        pids, refreshed, spent = set(), 0.0, {}
        while not self._stop.is_set():
            now = time.time()
            if now - refreshed > 1.0:
                pids, refreshed = self._descendants(), now
            for pid in pids:
                if fields := self._stat(pid):
                    spent[pid] = (int(fields[11]) + int(fields[12])) / self.tick
            self.samples.append((now, sum(spent.values())))
            self._stop.wait(self.interval)

    def cpu_at(self, t: float) -> float:
        import numpy as np

        times, cpu = zip(*self.samples, strict=True)
        return float(np.interp(t, times, cpu))

    def step_cpu(self, ends: list[float]) -> list[float]:
        """CPU seconds between consecutive wall times ``ends``."""
        marks = [self.cpu_at(t) for t in ends]
        return [b - a for a, b in zip(marks, marks[1:], strict=False)]


def run_lmforge(work: Path, args, pad_id: int, tag: str) -> dict:
    """One lmforge SFT job (the real worker, torchrun, one process, ZeRO-0); per-step times from MLflow."""
    import mlflow

    from lmforge import tracking
    from lmforge.training.config import DeepSpeedArgs, JobData, JobModel, JobSpec, LaunchArgs, TrainArgs
    from lmforge.training.deepspeed_config import build_deepspeed_config
    from lmforge.training.launch import launch_job

    templates = {p.stem: json.loads(p.read_text()) for p in (ROOT / "conf/base/deepspeed").glob("*.json")}
    train = train_args(args, TrainArgs)
    run_dir = work / f"lmforge-{tag}"
    spec = JobSpec(kind="sft", model=JobModel(attn_implementation="sdpa"), init_from=str(work / "model"),
                   data=JobData(examples=str(work / "examples.jsonl"), pad_id=pad_id, packing=False,
                                packing_length=args.seq_len),
                   train=train, deepspeed=build_deepspeed_config(templates, train, DeepSpeedArgs(zero_stage=0)),
                   output_dir=str(run_dir / "export"), run_dir=str(run_dir), metric_prefix="sft")
    with mlflow.start_run(run_name=f"sft_vs_trl lmforge {tag}") as run, ChildCpuClock() as clock:
        env = {**tracking.child_env(), **thread_env(args.threads)}
        load = os.getloadavg()
        launch_job(spec, LaunchArgs(launcher="torchrun", nproc_per_node=1, timeout_s=1800), env=env)
    client = mlflow.tracking.MlflowClient()
    by_step = {m.step: m for m in client.get_metric_history(run.info.run_id, "sft.step.step_time_s")}
    steps = sorted(by_step)
    ends = [by_step[s].timestamp / 1000 for s in steps]
    losses = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "sft.loss")}
    return {**timings(ends, clock, args.warmup),
            "median_in_step_s": statistics.median(by_step[s].value for s in steps[args.warmup:]),
            "in_step_s": [by_step[s].value for s in steps], "losses": [losses[s] for s in steps],
            "load_average_before": load, "mlflow_run_id": run.info.run_id}


def timings(ends: list[float], clock: ChildCpuClock, warmup: int) -> dict:
    """Median wall and CPU seconds per optimizer step after ``warmup`` steps, from the step-end wall times."""
    cpu = clock.step_cpu(ends)
    return {"median_step_period_s": median_periods(ends, warmup), "median_step_cpu_s": statistics.median(cpu[warmup - 1:]),
            "step_periods_s": [b - a for a, b in zip(ends, ends[1:], strict=False)], "step_cpu_s": cpu}


def train_args(args, cls):
    return cls(max_steps=args.warmup + args.steps, micro_batch_size=args.micro_batch,
               gradient_accumulation_steps=args.grad_accum, lr=args.lr, warmup_steps=args.lr_warmup,
               weight_decay=0.0, betas=(0.9, 0.95), grad_clip=1.0, min_lr_ratio=0.1, checkpoint_every=0, log_every=1)


def thread_env(threads: int) -> dict[str, str]:
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}


def run_trl_worker(work: Path, args, tag: str) -> None:
    """The TRL contender (in a fresh process): SFTTrainer on the same examples; writes its step timestamps."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    torch.set_num_threads(args.threads)
    rows = [json.loads(line) for line in (work / "examples.jsonl").read_text().splitlines()]
    dataset = Dataset.from_list([{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows])
    model = AutoModelForCausalLM.from_pretrained(work / "model", dtype=torch.float32, attn_implementation="sdpa")
    model.config.use_cache = False

    class StepTimes(TrainerCallback):
        def __init__(self):
            self.begins, self.ends, self.losses = [], [], []

        def on_step_begin(self, *_, **__):
            self.begins.append(time.time())

        def on_step_end(self, *_, **__):
            self.ends.append(time.time())

        def on_log(self, _args, _state, _control, logs=None, **__):
            if logs and "loss" in logs:
                self.losses.append(logs["loss"])

    times = StepTimes()
    config = SFTConfig(
        output_dir=str(work / f"trl-{tag}"), use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False,
        max_steps=args.warmup + args.steps, per_device_train_batch_size=args.micro_batch,
        gradient_accumulation_steps=args.grad_accum, learning_rate=args.lr, weight_decay=0.0, adam_beta1=0.9,
        adam_beta2=0.95, adam_epsilon=1e-8, max_grad_norm=1.0, optim=args.trl_optim,
        lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr_rate": 0.1},
        warmup_steps=args.lr_warmup, max_length=args.seq_len, packing=False, padding_free=False,
        logging_steps=1, report_to="none", save_strategy="no", seed=0, dataloader_num_workers=0,
        disable_tqdm=True)
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset,
                         processing_class=AutoTokenizer.from_pretrained(work / "model"), callbacks=[times])
    load = os.getloadavg()
    trainer.train()
    result = {"ends": times.ends, "threads": torch.get_num_threads(),
              "median_in_step_s": statistics.median(e - b for b, e in zip(times.begins[args.warmup:],
                                                                          times.ends[args.warmup:], strict=True)),
              "in_step_s": [e - b for b, e in zip(times.begins, times.ends, strict=True)], "losses": times.losses,
              "load_average_before": load, "optimizer": type(trainer.optimizer.optimizer).__name__,
              "optimizer_defaults": {k: v for k, v in trainer.optimizer.optimizer.defaults.items()
                                     if k in ("foreach", "fused", "lr", "betas", "eps")}}
    (work / f"trl-{tag}.json").write_text(json.dumps(result))


def run_trl(work: Path, args, tag: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", "trl", "--workdir", str(work), "--tag", tag]
    cmd += [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
            if k in ("threads", "warmup", "steps", "micro_batch", "grad_accum", "lr", "lr_warmup", "seq_len",
                     "trl_optim")]
    env = {**os.environ, **thread_env(args.threads), "PYTHONPATH": str(ROOT / "src")}
    with ChildCpuClock() as clock:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    (work / f"trl-{tag}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"TRL worker failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}")
    result = json.loads((work / f"trl-{tag}.json").read_text())
    return {**timings(result.pop("ends"), clock, args.warmup), **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, 1 round, nothing saved (smoke run)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3, help="optimizer steps left out of the timing")
    parser.add_argument("--steps", type=int, default=8, help="timed optimizer steps")
    parser.add_argument("--micro-batch", type=int, default=1)
    parser.add_argument("--grad-accum", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=None, help="tokens per example (default 256; quick 64)")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--lr-warmup", type=int, default=2, help="learning-rate warmup steps (both)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of each contender (1: its CPU time per step does not depend on the load)")
    parser.add_argument("--trl-optim", default="adamw_torch",
                        help="TRL's optim: adamw_torch = torch.optim.AdamW as lmforge uses (TrainingArguments' "
                             "default on torch >= 2.8 is adamw_torch_fused)")
    parser.add_argument("--workdir", default=None, help="keep the model, data and logs here (default: a temp dir)")
    parser.add_argument("--out", default=str(ROOT / "bench/results/sft_vs_trl.json"))
    parser.add_argument("--worker", choices=["trl"], help=argparse.SUPPRESS)
    parser.add_argument("--tag", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    sizes = dict(QUICK if args.quick else FULL)
    args.seq_len = args.seq_len or sizes["seq_len"]
    sizes["seq_len"] = args.seq_len
    if args.worker == "trl":
        run_trl_worker(Path(args.workdir), args, args.tag)
        return
    if args.quick:
        args.rounds, args.warmup, args.steps = 1, 1, 3

    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{work.resolve()}/mlflow.db")
        mlflow.set_experiment("bench_sft_vs_trl")
        t0 = time.perf_counter()
        n_params = build_model_dir(work / "model", sizes, stdlib_files(2 if args.quick else 8))
        examples, data_stats = tokenize_examples(work / "model", conversations(stdlib_files(40)), args.seq_len, 256)
        with open(work / "examples.jsonl", "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(ex) + "\n" for ex in examples)
        logger.info("model %.1fM params, %d examples of %d tokens (%.0f%% trained) in %.0f s", n_params / 1e6,
                    len(examples), args.seq_len, 100 * data_stats["trained_token_fraction"], time.perf_counter() - t0)
        rounds: dict[str, list[dict]] = {"lmforge": [], "trl": []}
        for r in range(args.rounds):
            order = ["lmforge", "trl"] if r % 2 == 0 else ["trl", "lmforge"]
            for name in order:
                t = time.perf_counter()
                res = (run_lmforge(work, args, data_stats["pad_id"], f"r{r}") if name == "lmforge"
                       else run_trl(work, args, f"r{r}"))
                res["wall_s"] = time.perf_counter() - t
                rounds[name].append(res)
                logger.info("round %d %s: median step %.3f s wall, %.3f s CPU (in-step %.3f s), run %.0f s, load %s",
                            r, name, res["median_step_period_s"], res["median_step_cpu_s"], res["median_in_step_s"],
                            res["wall_s"], res["load_average_before"])
    best = {name: min(rs, key=lambda x: x["median_step_period_s"]) for name, rs in rounds.items()}
    best_cpu = {name: min(r["median_step_cpu_s"] for r in rs) for name, rs in rounds.items()}
    import torch

    result = {
        "what": "median optimizer-step time (period between step ends) of SFT on a foreign ~100M Qwen2 model: "
                "lmforge's SFT job (torchrun, 1 process, ZeRO-0) vs TRL SFTTrainer, same data and batch",
        "model": {"architecture": "Qwen2ForCausalLM", "params": n_params, **sizes, "tie_word_embeddings": True},
        "data": {**data_stats, "seq_len": args.seq_len, "source": "stdlib docstring -> function conversations, "
                 "ChatML, assistant-only labels, every example exactly seq_len tokens (no padding)"},
        "settings": {"micro_batch": args.micro_batch, "grad_accum": args.grad_accum,
                     "tokens_per_step": args.micro_batch * args.grad_accum * args.seq_len, "lr": args.lr,
                     "lr_warmup_steps": args.lr_warmup, "betas": [0.9, 0.95], "weight_decay": 0.0, "grad_clip": 1.0,
                     "precision": "fp32", "optimizer": "torch.optim.AdamW", "packing": False, "attn_implementation": "sdpa", "threads": args.threads,
                     "warmup_steps_excluded": args.warmup, "timed_steps": args.steps, "rounds": args.rounds,
                     "trl_optim": args.trl_optim, "lmforge_zero_stage": 0, "trl_report_to": "none"},
        "rounds": rounds,
        "lmforge_median_step_s": best["lmforge"]["median_step_period_s"],
        "trl_median_step_s": best["trl"]["median_step_period_s"],
        "ratio_lmforge_over_trl": best["lmforge"]["median_step_period_s"] / best["trl"]["median_step_period_s"],
        "ratio_in_step": best["lmforge"]["median_in_step_s"] / best["trl"]["median_in_step_s"],
        "lmforge_median_step_cpu_s": best_cpu["lmforge"],
        "trl_median_step_cpu_s": best_cpu["trl"],
        "ratio_cpu_lmforge_over_trl": best_cpu["lmforge"] / best_cpu["trl"],
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

    return {name: version(name) for name in ("trl", "transformers", "deepspeed", "accelerate", "datasets")}


if __name__ == "__main__":
    main()
