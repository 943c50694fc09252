"""Chaos: `dvc repro` of the tiny chain, SIGKILLed as a whole process group at random moments, rerun each time.

A second copy of the `chain` fixture's project (the same ``TINY`` configuration, its own MLflow store) is built by
`dvc repro` runs that are killed: at least once inside each stage (data_processing, tokenizer, pretrain, sft,
align, evaluation, packaging), at a moment drawn from a seeded generator, then `dvc repro` again. Training stages
are killed after a random logged step past their first checkpoint (so the rerun resumes from it), the others
after a random share of the time the stage took in the uninterrupted run. During the sft attempt a second
`kedro run --pipelines sft` is started beside it: it must stop at once, naming the live owner of sft's outputs.

Then, checked against the uninterrupted run (``conftest.reference_of``):
- after every kill, no process of the killed run (the process tree of `dvc repro` just before the kill, and any
  process carrying the attempt's environment marker, which catches launchers and ranks in their own sessions)
  is alive 5 s later (the issue asks 10);
- the chain completes; every output is byte-identical (its `dvc.lock` hash) but the few that differ between any
  two uninterrupted runs (``VARIES``: run times, absolute paths); the per-step losses of pretrain, sft and align
  are equal;
- MLflow: every run a kill left open is closed as KILLED, none is left RUNNING; the evaluation's reliability
  metrics count them (``ops.chain.crashed_runs``, ``crash_rate``), and each training stage's ``restart_count``
  is the number of times it resumed from a checkpoint.

The seed (``LMFORGE_CHAOS_SEED``, else drawn and printed) and every kill (stage, moment, what was running) are
logged and written to ``chaos.json`` beside the project: a failure replays with the same seed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import reference_of
from proc_helpers import alive, cmdline, marked, tree
from tiny_chain import BIN, LOSS_CURVES, STAGES, TINY, lock_outs, make_project, stage_of_outs

pytestmark = pytest.mark.slow
logger = logging.getLogger(__name__)

SEED_ENV = "LMFORGE_CHAOS_SEED"
MARKER_ENV = "LMFORGE_CHAOS_ATTEMPT"
GONE_WITHIN_S = 5.0  # the issue asks 10 s; the guards take ~0.02 s (measured), 1 s at worst (their poll)
# outputs that differ between two uninterrupted runs too (measured: two `dvc repro` of TINY in two folders); every
# other output of every stage must be byte-identical. The metrics files (durations, throughput) are compared by the
# loss curves instead.
VARIES = {"data/08_reporting/data_docs": "Great Expectations stores each validation's run time",
          "data/08_reporting/template_audit": "each audit names the project's absolute path",
          "data/06_models/gguf": "quantization.json holds conversion and scoring times",
          "data/08_reporting/evaluation_report.html": "the report shows durations and the reliability metrics",
          "data/08_reporting/seed_metrics.json": "durations, throughput and the reliability metrics",
          "data/07_model_output/lmforge-chat": "the model card quotes durations and throughput"}
TRAINING = {"pretrain": "pretrain", "sft": "sft", "align": "align"}  # stage -> the prefix of its step lines
RUNNING_STAGE = re.compile(r"Running stage '([a-z_]+)'")
STEP_LINE = re.compile(r"\b(pretrain|sft|align) step (\d+)/(\d+)")  # Kedro's rich console drops "[lmforge]"
NODE_LINE = re.compile(r"Running node|Loading data from")


# ---------------------------------------------------------------------------------------------------- one attempt
class Repro:
    """`dvc repro` in its own process group, its output read line by line (what runs, which step it reached)."""

    def __init__(self, root: Path, env: dict, marker: str, log_path: Path):
        self.proc = subprocess.Popen([str(BIN / "dvc"), "repro"], cwd=root, env={**env, MARKER_ENV: marker},
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.stage: str | None = None
        self.stage_started = 0.0
        self.work_started: float | None = None
        self.step = 0
        self.lines: list[str] = []
        self._left: dict[str, bool] = {}  # stages this repro ran and left
        self.changed = threading.Condition()
        self._log = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 - closed by the reader thread
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._log.write(line)
            with self.changed:
                self.lines.append(line)
                if m := RUNNING_STAGE.search(line):
                    if self.stage:
                        self._left[self.stage] = True
                    self.stage, self.stage_started, self.work_started, self.step = m[1], time.monotonic(), None, 0
                elif self.work_started is None and NODE_LINE.search(line):
                    self.work_started = time.monotonic()
                if (m := STEP_LINE.search(line)) and m[1] == TRAINING.get(self.stage or ""):
                    self.step = int(m[2])
                self.changed.notify_all()
        self._log.close()
        with self.changed:
            self.changed.notify_all()

    def wait_for(self, predicate, timeout: float) -> bool:
        """Wait until ``predicate()`` holds or the repro ends; whether it holds."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while not predicate():
                if self.proc.poll() is not None and not self._reader.is_alive():
                    return predicate()
                if not self.changed.wait(timeout=min(0.2, max(0.0, deadline - time.monotonic()))) \
                        and time.monotonic() > deadline:
                    return predicate()
            return True

    def reached(self, stage: str, step: int = 0, working: bool = False, timeout: float = 600) -> None:
        """Wait until ``stage`` runs (and logged ``step``, or started its nodes), or it is over."""
        def done() -> bool:
            if self.stage != stage:
                return self._left.get(stage, False)
            return self.step >= step and (not working or self.work_started is not None)
        self.wait_for(done, timeout)

    def leaves(self, stage: str, timeout: float) -> None:
        """Wait ``timeout`` seconds, less if ``stage`` ends first."""
        self.wait_for(lambda: self.stage != stage, timeout)

    def kill(self) -> dict[int, int]:
        """SIGKILL the whole process group, as an OOM kill or a CI timeout would; returns who was running."""
        running = tree(self.proc.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._reader.join(timeout=10)
        return running

    def __enter__(self) -> Repro:
        return self

    def __exit__(self, *exc) -> None:  # a failed assertion leaves no repro running behind the suite
        if self.proc.poll() is None:
            self.kill()


def open_runs(tracking_uri: str) -> set[str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("lmforge")
    if experiment is None:
        return set()
    return {r.info.run_id for r in client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'")}


def concurrent_run(root: Path, env: dict, stage: str) -> subprocess.CompletedProcess:
    """A second `kedro run` of ``stage`` while the repro runs it: it must be refused by the lock on its outputs."""
    return subprocess.run([str(BIN / "kedro"), "run", "--pipelines", stage], cwd=root, env=env, capture_output=True,
                          text=True, timeout=300)


# ---------------------------------------------------------------------------------------------------- the test
def test_killed_anywhere_the_chain_reruns_to_the_same_result_with_nothing_orphaned(chain, tmp_path_factory):
    reference = reference_of(chain[0])
    seed = int(os.environ.get(SEED_ENV) or random.SystemRandom().randrange(2**31))
    rng = random.Random(seed)
    logger.warning("chaos seed %d (replay: %s=%d)", seed, SEED_ENV, seed)
    root, env = make_project(tmp_path_factory.mktemp("chaos") / "project")
    uri = env["MLFLOW_TRACKING_URI"]
    out_log = root.parent / "repro.log"
    kills: list[dict] = []
    killed_runs: dict[str, list[str]] = {}  # MLflow runs each kill left open, by the stage that was running
    resumes = dict.fromkeys(TRAINING, 0)
    refused = None
    started = time.monotonic()

    for attempt, target in enumerate(STAGES):
        marker = f"{seed}-{attempt}"
        with Repro(root, env, marker, out_log) as repro:
            repro.reached(target)
            assert repro.stage == target, \
                f"attempt {attempt}: stage {target} never started; last output:\n{''.join(repro.lines[-30:])}"
            if target == "sft":  # one writer per output: a second run of sft, started now, is refused at once
                repro.reached(target, working=True)
                owner = {pid for pid in tree(repro.proc.pid) if "kedro" in cmdline(pid) and "sft" in cmdline(pid)}
                refused = concurrent_run(root, env, "sft")
                last = (refused.stderr.strip().splitlines() or [""])[-1]
                assert refused.returncode != 0 and "Traceback" not in refused.stderr \
                    and any(re.search(rf"\b{pid}\b", last) for pid in owner), \
                    f"a second sft run beside the running one was not refused naming {owner}: {last}"
                logger.warning("chaos: the second sft run was refused: %s", last)
            if target in TRAINING:  # after a random step past the first checkpoint: the rerun resumes from it
                every = TINY[target]["train"]["checkpoint_every"]
                at_step = rng.randrange(every + 1, TINY[target]["train"]["max_steps"])
                moment = {"after_step": at_step}
                repro.reached(target, step=at_step)
            else:  # after a random share of the stage's work in the uninterrupted run
                share = rng.uniform(0.1, 0.7)
                delay = share * reference["durations_s"][target]
                moment = {"share_of_stage": round(share, 3), "after_s": round(delay, 2)}
                repro.reached(target, working=True)
                repro.leaves(target, timeout=delay)
            landed = repro.stage
            step = repro.step
            running = {**repro.kill(), **marked(MARKER_ENV, marker)}
            kill_at = time.monotonic()
            while (left := alive({**running, **marked(MARKER_ENV, marker)})) \
                    and time.monotonic() - kill_at < GONE_WITHIN_S:
                time.sleep(0.2)
            gone_s = time.monotonic() - kill_at
            for pid in left:  # leave nothing behind for the rest of the suite, then fail
                os.kill(pid, signal.SIGKILL)
            assert not left, (f"attempt {attempt} (seed {seed}): {len(left)} process(es) of the killed run still alive "
                              f"{GONE_WITHIN_S:.0f} s after the kill:\n" + "\n".join(cmdline(p) for p in left))
            left_open = open_runs(uri)
            killed_runs.setdefault(landed, []).extend(left_open - {r for rs in killed_runs.values() for r in rs})
            if landed in TRAINING and step > TINY[landed]["train"]["checkpoint_every"]:
                resumes[landed] += 1
            kills.append({"attempt": attempt, "target": target, **moment, "landed_in": landed, "step": step,
                          "processes": len(running), "all_gone_after_s": round(gone_s, 2),
                          "mlflow_runs_left_open": sorted(left_open)})
            logger.warning("chaos kill %s", kills[-1])

    final = subprocess.run([str(BIN / "dvc"), "repro"], cwd=root, env=env, capture_output=True, text=True,
                           timeout=1500)
    (root.parent / "chaos.json").write_text(json.dumps({"seed": seed, "kills": kills,
                                                        "seconds": round(time.monotonic() - started)}, indent=1))
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]

    # a kill inside every stage
    assert {k["landed_in"] for k in kills} >= set(STAGES), kills

    assert refused is not None, "no second sft run was tried"

    # byte-identical outputs (all but the ones that vary between any two runs), equal losses step by step
    outs, stage_of = lock_outs(root), stage_of_outs(root)
    compared = [p for p in reference["outs"] if p in stage_of and not any(p == v or p.startswith(f"{v}/") for v in VARIES)]
    assert {stage_of[p] for p in compared} == set(STAGES)
    differing = [p for p in compared if outs.get(p) != reference["outs"][p]]
    assert differing == [], f"seed {seed}: outputs differ from the uninterrupted run's: {differing}"
    for name, rel in LOSS_CURVES.items():
        assert json.loads((root / rel).read_text()) == reference["losses"][name], f"seed {seed}: {name} losses differ"

    # MLflow: the killed runs are closed as KILLED; the evaluation's reliability metrics count them
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    assert open_runs(uri) == set(), "runs left RUNNING after the chain completed"
    for stage, run_ids in killed_runs.items():
        for run_id in run_ids:
            assert client.get_run(run_id).info.status == "KILLED", (stage, run_id)
    evaluation = json.loads((root / "data/08_reporting/evaluation.json").read_text())
    before_evaluation = STAGES[:STAGES.index("evaluation")]
    crashed = sum(len(killed_runs.get(s, [])) for s in before_evaluation)
    assert evaluation["ops.chain.crashed_runs"] == crashed, (evaluation["ops.chain.crashed_runs"], killed_runs)
    runs = evaluation["ops.chain.runs"]
    assert evaluation["ops.chain.crash_rate"] == pytest.approx(crashed / runs)
    for stage in TRAINING:
        metrics = json.loads((root / f"data/08_reporting/{stage}.json").read_text())
        assert metrics["restart_count"] == resumes[stage], (stage, metrics["restart_count"], resumes)
    # the report's reliability rows are these real events
    seed_rows = {row["seed"]: row for row in json.loads((root / "data/08_reporting/seed_metrics.json").read_text())}
    assert seed_rows["crash rate"]["values"]["ops.chain.crash_rate"] == pytest.approx(crashed / runs)
    assert seed_rows["restart count"]["values"]["ops.chain.restart_count"] == sum(resumes.values())
    logger.warning("chaos (seed %d): %d kills, %d MLflow runs closed as KILLED, %d resumes; done in %.0f s", seed,
                   len(kills), sum(map(len, killed_runs.values())), sum(resumes.values()), time.monotonic() - started)
