"""Where the per-task work of the data and tokenizer stages runs: in this process, a process pool or Ray.

Kept apart from the steps (as datatrove keeps ``executor/`` apart from its pipeline steps): a step
is a picklable function of one task, and `map_in_order` runs it over tasks on the configured
executor and yields the results in task order, so the stage's result never depends on the
executor or on the number of workers. Both stages read the same `ExecutorConfig` (the ``executor:``
block of ``conf/base/globals.yml``).

Executors (`ExecutorConfig.kind`): "local" (a process pool of `workers`, default every core),
"sequential" (in this process, for debugging) and "ray" (plain Ray tasks on a running cluster,
``ray_address``; files the workers write must then be on a folder every node shares).

Ray, on a cluster: each task is a Ray task (not a ``ray.util.multiprocessing.Pool`` actor: an actor
that dies with its node takes its in-flight tasks with it, while Ray re-runs a *task* whose worker or
node died on another node, up to ``ray_max_retries`` times; application errors are not retried). The
workers run the driver's own ``lmforge`` package, sent with the job (``runtime_env`` ``py_modules``,
~1.8 MB zipped once per job), so a node only needs the same third-party environment (the same venv or
image), not a checkout of this project. A shared ``context`` (the tokenizer) is put in Ray's object
store once and loaded once per worker process. When a task still fails (retries spent, node lost, the
cluster gone) the stage stops with one line (``UserError``) naming the address and the shard; the
stage's outputs are written only when it succeeds (``AtomicPartitionedDataset``), so a failed run
leaves nothing that `dvc repro` could take for complete. Measured on one 2-core machine (a 2-node
loopback cluster, tests/data/test_ray_cluster.py): a worker node whose raylet was SIGKILLed mid-run had
its task re-run on the head once the GCS marked the node dead (a few seconds with the test's
health-check settings; ~15 s with Ray's defaults, 3 s x 5 missed checks), and the stage's output was
byte-identical. Ray turns token authentication on by itself for ``address: auto`` when
``~/.ray/auth_token`` exists; a driver whose auth mode differs from the cluster's waits for minutes in
``ray.init`` (set ``RAY_AUTH_MODE`` the same on both sides).

Nothing outlives the stage: each "local" pool worker guards itself (``lmforge.processes.guard_process`` as
the pool initializer, the owner being the process that made the pool): a worker whose owner is SIGKILLed
ends within ~1 s (a plain pool worker would block on its task queue forever). "ray": ``ray.init()``
without an address starts a local cluster whose processes share the driver's fate (Ray's
``set_kill_on_parent_death_linux``: PR_SET_PDEATHSIG SIGKILL on GCS and raylet), and a raylet's workers
exit when their raylet goes; on a running cluster the workers are the cluster's: a driver that ends
(even SIGKILLed) ends its job, and Ray kills the job's workers; `map_in_order` cancels its in-flight
tasks and disconnects when it stops early.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from lmforge.data.documents import ShardSource, load_shard

logger = logging.getLogger(__name__)

EXECUTORS = ("local", "sequential", "ray")


@dataclass
class ExecutorConfig:
    """Where the per-task work of data_processing and tokenizer runs (``executor:`` in conf/base/globals.yml);
    results do not depend on it."""

    kind: str = "local"
    """"local" (process pool on this machine), "sequential" (this process) or "ray" (Ray cluster)."""
    workers: int | None = None
    """Parallel workers; None = every core of this machine (os.cpu_count()), or "ray": every CPU of the cluster."""
    spool_dir: str | None = None
    """Parent folder of the temporary spool (per-shard kept/quarantine/shingle files); None = system temp.
    With "ray" on several machines it must be a folder every node can read and write."""
    ray_address: str | None = None
    """"ray": cluster address ("host:port" of the head, "auto" = the running cluster; the RAY_ADDRESS variable
    wins over both, as in ``ray.init``); None = start a local Ray that ends with the stage."""
    ray_max_retries: int = 3
    """"ray": times Ray re-runs a task whose worker or node died (on another node); then the stage stops."""
    ray_ship_code: bool = True
    """"ray": send this lmforge package to the workers with the job (runtime_env py_modules); False = the nodes'
    installed lmforge (it must then be the same version)."""
    ray_spread: bool = True
    """"ray": spread the tasks over the nodes (Ray's "SPREAD" strategy); False = Ray's default, which fills the
    driver's node first and sends a task elsewhere only when that node is busy: the stage's tasks are short, so a
    node whose worker starts a few seconds later may then get none (seen on the 2-node test cluster under load)."""
    ray_connect_timeout_s: float = 10.0
    """"ray": seconds to wait for the head's port before giving up with one line (ray.init itself waits for minutes)."""
    start_method: str | None = None
    """"local": multiprocessing start method ("fork", "spawn", "forkserver"); None = the platform's default."""

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise ValueError(f"executor.kind must be one of {EXECUTORS}, got {self.kind!r}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"executor.workers must be >= 1 or null (all cores), got {self.workers}")
        if self.ray_max_retries < 0:
            raise ValueError(f"executor.ray_max_retries must be >= 0, got {self.ray_max_retries}")

    def resolved_workers(self) -> int:
        """Number of workers to start (1 for "sequential"; "ray" without `workers`: this machine's cores, as a
        figure for the logs: the look-ahead then follows the cluster's CPUs)."""
        if self.kind == "sequential":
            return 1
        return self.workers or os.cpu_count() or 1


def is_picklable(obj: Any) -> bool:
    """Whether obj can be sent to another process."""
    try:
        pickle.dumps(obj)
    except Exception:  # noqa: BLE001 - any pickling failure means "load it here instead"
        return False
    return True


def sendable_shard(source: ShardSource, executor: ExecutorConfig) -> ShardSource:
    """The shard as a worker can receive it: a loader that pickles is sent (the worker reads the
    data), anything else is loaded here, one shard at a time (Ray's cloudpickle sends closures too)."""
    if executor.kind == "local" and executor.resolved_workers() > 1 and callable(source) and not is_picklable(source):
        return load_shard(source)
    return source


def map_in_order(fn: Callable[..., Any], tasks: Iterable[Any], executor: ExecutorConfig, *,
                 context: Any = None) -> Iterator[Any]:
    """Yield fn(task) for every task, in task order, on the configured executor (1 local worker: in this process).

    At most 2 x workers tasks are in flight, so a lazy `tasks` iterable is consumed (and its
    shards loaded) only as fast as workers finish: memory stays bounded by a few shards.
    ``context``: an object every task needs (a tokenizer), sent once per worker, not once per task;
    ``fn`` is then called as ``fn(task, context)``.
    """
    if executor.kind == "ray":
        yield from _map_on_ray(fn, tasks, executor, context)
        return
    workers = executor.resolved_workers()
    if workers == 1:
        for task in tasks:
            yield fn(task) if context is None else fn(task, context)
        return
    import multiprocessing

    from lmforge.processes import owner_token

    pool = multiprocessing.get_context(executor.start_method).Pool(workers, initializer=_init_local_worker,
                                                                   initargs=(owner_token(), context))
    call = fn if context is None else _WithContext(fn)
    try:
        pending: deque = deque()
        for task in tasks:
            pending.append(pool.apply_async(call, (task,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
    finally:
        pool.terminate()
        pool.join()


_WORKER_CONTEXT: Any = None
"""A "local" pool worker's copy of `map_in_order`'s context (set once by its initializer)."""
_RAY_USERS: dict[str, Any] = {"n": 0, "owned": False}
"""The driver's running Ray maps, and whether `map_in_order` made the connection (then the last one to end closes it)."""
_RAY_CONTEXTS: dict[str, Any] = {}
"""A Ray worker's contexts, by object id: fetched and unpickled once per worker process, not per task."""


def _init_local_worker(owner: str, context: Any) -> None:
    global _WORKER_CONTEXT
    from lmforge.processes import guard_process

    guard_process(owner)  # a pool worker blocks on its task queue forever once the parent is SIGKILLed
    _WORKER_CONTEXT = context


@dataclass
class _WithContext:
    fn: Callable[..., Any]

    def __call__(self, task: Any) -> Any:
        return self.fn(task, _WORKER_CONTEXT)


def _run_ray_task(fn: Callable[..., Any], task: Any, context_ref: tuple) -> tuple[str, Any]:
    """A Ray task: ``fn(task[, context])`` and the id of the node it ran on. The context's ObjectRef comes
    wrapped in a tuple, so Ray does not resolve it for every task: the worker fetches it once."""
    import ray

    if not context_ref:
        result = fn(task)
    else:
        [ref] = context_ref
        key = ref.hex()
        if key not in _RAY_CONTEXTS:
            _RAY_CONTEXTS.clear()  # one stage's context at a time
            _RAY_CONTEXTS[key] = ray.get(ref)
        result = fn(task, _RAY_CONTEXTS[key])
    return ray.get_runtime_context().get_node_id(), result


def describe_task(task: Any, index: int) -> str:
    """``task 3 (shard 'code-shard-00003')``: what a one-line error names."""
    name = getattr(task, "name", None)
    return f"task {index}" + (f" (shard {name!r})" if isinstance(name, str) else "")


def ray_address_of(executor: ExecutorConfig) -> str | None:
    """The address ``ray.init`` will use: RAY_ADDRESS if set (Ray's own rule), else ``executor.ray_address``."""
    return os.environ.get("RAY_ADDRESS") or executor.ray_address


def connect_ray(executor: ExecutorConfig) -> bool:
    """Connect this process to the executor's Ray cluster (or start a local one); True if it connected now
    (and so should disconnect when done). An unreachable head stops at once with one line."""
    import ray

    from lmforge.errors import UserError

    if ray.is_initialized():
        return False
    address = ray_address_of(executor)
    where = address or "a local Ray"
    next_step = ("start the cluster (`ray start --head` on the head, `ray start --address=<head:port>` on each node) "
                 "or point executor.ray_address / RAY_ADDRESS at it, or set executor.kind: local")
    if address and address != "auto" and "://" not in address:
        _probe_head(address, executor.ray_connect_timeout_s, next_step)
    runtime_env = None
    if executor.ray_ship_code:
        import lmforge

        runtime_env = {"py_modules": [os.path.dirname(os.path.abspath(lmforge.__file__))]}
    try:
        ray.init(address=executor.ray_address, runtime_env=runtime_env, log_to_driver=False,
                 logging_level=logging.WARNING, configure_logging=False)
    except (ConnectionError, RuntimeError, TimeoutError, ValueError) as exc:
        raise UserError(f"cannot join the Ray cluster at {where}: {_first_line(exc)}", next_step) from exc
    logger.info("Ray: joined %s (%d node(s), %g CPU(s))", where, len([n for n in ray.nodes() if n["Alive"]]),
                ray.cluster_resources().get("CPU", 0))
    return True


def _probe_head(address: str, timeout_s: float, next_step: str) -> None:
    import socket

    from lmforge.errors import UserError

    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s).close()
    except (OSError, ValueError) as exc:
        raise UserError(f"no Ray cluster answers at {address} ({_first_line(exc)})", next_step) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def _map_on_ray(fn: Callable[..., Any], tasks: Iterable[Any], executor: ExecutorConfig, context: Any) -> Iterator[Any]:
    import ray
    from ray.exceptions import RayError, RayTaskError

    from lmforge.errors import UserError

    if _RAY_USERS["n"] == 0:
        _RAY_USERS["owned"] = connect_ray(executor)
    _RAY_USERS["n"] += 1  # nested maps (a lazy ingest feeding the cleaning) share the connection
    address = ray_address_of(executor) or "a local Ray"
    nodes: Counter = Counter()
    pending: deque = deque()

    def result_of(index: int, task: Any, ref: Any) -> Any:
        try:
            node, result = ray.get(ref)
        except RayTaskError as exc:  # the step itself raised: its own error, as the local executor gives it
            cause = exc.cause if isinstance(exc.cause, Exception) else exc
            raise cause from exc
        except RayError as exc:  # a worker or node lost more often than the retries allow, or the cluster gone
            raise UserError(f"Ray lost {describe_task(task, index)} on the cluster at {address} after "
                            f"{executor.ray_max_retries} retries: {_first_line(exc)}",
                            "check the nodes (`ray status`) and rerun the stage (it saved nothing); raise "
                            "executor.ray_max_retries if nodes come and go") from None
        nodes[node] += 1
        return result

    try:
        window = 2 * (executor.workers or max(1, int(ray.cluster_resources().get("CPU", 1))))
        remote = ray.remote(_run_ray_task).options(num_cpus=1, max_retries=executor.ray_max_retries,
                                                   retry_exceptions=False,
                                                   scheduling_strategy="SPREAD" if executor.ray_spread else "DEFAULT")
        context_ref = (ray.put(context),) if context is not None else ()
        for index, task in enumerate(tasks):
            pending.append((index, task, remote.remote(fn, task, context_ref)))
            if len(pending) >= window:
                yield result_of(*pending.popleft())
        while pending:
            yield result_of(*pending.popleft())
        logger.info("Ray: %d task(s) on %d node(s): %s", sum(nodes.values()), len(nodes),
                    ", ".join(f"{node[:8]} {n}" for node, n in sorted(nodes.items())))
    finally:
        for _, _, ref in pending:
            ray.cancel(ref, force=True)
        _RAY_USERS["n"] -= 1
        if _RAY_USERS["n"] == 0 and _RAY_USERS["owned"]:
            _RAY_USERS["owned"] = False
            ray.shutdown()
