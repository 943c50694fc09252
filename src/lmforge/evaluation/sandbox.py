"""Run untrusted Python programs (model-generated code) one process each, under OS limits.

Every program runs in a fresh interpreter (``python -I -S -B``) started by :func:`run_program`:

- **its own session and process group** (``start_new_session``); on exit or timeout the whole group
  is killed with SIGKILL, and when privileges were dropped every process left under the sandbox uid
  is swept as well (a child that called ``setsid`` leaves the group, not the uid);
- **it dies with the evaluator**: the runner sets ``PR_SET_PDEATHSIG`` (SIGKILL) itself, before and again
  after the uid drop (a uid change clears it), and checks that its parent is still the evaluator, so a
  SIGKILLed evaluator leaves no program running (measured: gone < 0.1 s). Its own children (a fork the
  guard and ``max_processes`` allow) are not covered: they are swept by uid only when the evaluator
  lives to do it;
- **resource limits** set before the program starts: ``RLIMIT_CPU`` (CPU seconds), ``RLIMIT_AS``
  (address space), ``RLIMIT_FSIZE`` (largest file it may write, stdout/stderr included),
  ``RLIMIT_NOFILE``, ``RLIMIT_NPROC`` and ``RLIMIT_CORE = 0``; plus a wall-clock timeout;
- **a scratch working directory** (a fresh temp dir, removed afterwards) and a **scrubbed
  environment** (``PATH``, ``HOME``/``TMPDIR`` = scratch, ``LANG``; nothing of the caller's);
- **no network**: when ``unshare --net`` is permitted the interpreter starts in a new network
  namespace with no interface up; the in-process guard below also refuses sockets either way;
- **a different, unprivileged uid** when the harness runs as root (the usual container case): the
  program cannot signal the harness (EPERM), cannot write outside world-writable places, and
  ``RLIMIT_NPROC`` then counts only that uid's processes (each concurrent run gets its own uid), so
  a fork bomb stops at ``max_processes`` without touching anyone else's processes. Root ignores
  ``RLIMIT_NPROC``, which is why the drop matters. Not root: the limit is set to the caller's
  current process count plus ``max_processes`` (forks beyond it fail; nobody else is affected).
- **an in-process guard** (``guard=True``, on by default): a ``sys.addaudithook`` hook, which the
  program cannot remove, refuses sockets, signals (``os.kill``/``killpg``/``pthread_kill``),
  ``fork``/``exec``/``spawn``/``subprocess``, ``ctypes`` and any write, rename or delete outside
  the scratch directory. It is defence in depth over the OS limits, not a replacement: the hostile
  sample tests run with it off as well, where only the OS limits hold.

A program **passes** only when it ran to its end: the runner then writes a per-run nonce, which the
program is not given (it is read from stdin, replaced by /dev/null before the program starts), to
stdout. So ``sys.exit(0)`` or ``os._exit(0)`` before the asserts, a crash, a timeout or a killed
interpreter all fail; printing "passed" does not help. (The nonce still lives in the runner's memory,
the same interpreter: code written to attack this harness could dig it out and fake a pass. The
threat here is generated code that is wrong, hangs or does damage, and the damage is what the OS
limits contain; a score an adversary wants to forge needs a separate checker process.) When the sandbox itself cannot be set up (e.g. the uid drop is refused) ``SandboxError``
is raised: an evaluation must not silently score 0 because of the harness.

Known limits: the interpreter's standard library must be readable by the sandbox uid; when it is
not (a Python under ``/root``), :data:`PREIMPORT` modules are imported before the uid drop and
other imports fail. Without root and without ``unshare`` the network and signal protection is the
in-process guard only (a program using raw syscalls through an extension module could pass it).

Long because (~420 lines) a sandbox is read as a whole: the limits, the uid drop, the guard and the
sweep of leftover processes only make sense side by side, and a reviewer checking its safety should
not have to follow it across modules.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path

logger = logging.getLogger(__name__)

SETUP_FAILED_EXIT = 121
"""Exit status of the runner when it could not set the sandbox up (before the program ran)."""

PREIMPORT = (
    "typing", "math", "random", "copy", "string", "collections", "re", "hashlib", "itertools", "functools",
    "heapq", "bisect", "operator", "fractions", "statistics", "traceback", "linecache", "signal", "socket",
    "encodings.idna",
)
"""Standard-library modules imported by the runner before it drops privileges, when the sandbox uid could
not read the standard library itself (see the module docstring): those HumanEval uses, plus a few common
ones. Each costs start-up time in every sandboxed process, so the list is short."""

_UID_BASE = 1_000_000
_uid_counter = itertools.count()
_uid_lock = threading.Lock()


class SandboxError(RuntimeError):
    """The sandbox could not be set up (not a failure of the program)."""


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of one sandboxed run."""

    # Wall-clock seconds before the whole process group is killed.
    timeout_s: float = 10.0
    # CPU seconds (RLIMIT_CPU); None: ceil(timeout_s) + 1.
    cpu_s: int | None = None
    # Address space in MiB (RLIMIT_AS): a 10 GB allocation fails with MemoryError.
    memory_mb: int = 1024
    # Largest file the program may write, in MiB (RLIMIT_FSIZE; stdout/stderr included).
    file_size_mb: int = 16
    # Processes the program may have at once (RLIMIT_NPROC, see the module docstring).
    max_processes: int = 16
    # Open file descriptors (RLIMIT_NOFILE).
    max_open_files: int = 64
    # Install the in-process audit-hook guard (sockets, signals, fork/exec, writes outside scratch).
    guard: bool = True
    # Start in a new network namespace when `unshare --net` is permitted.
    isolate_network: bool = True
    # Run the program under its own unprivileged uid; None: when the harness runs as root.
    drop_privileges: bool | None = None

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        for key in ("memory_mb", "file_size_mb", "max_processes", "max_open_files"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one program."""

    # True only when the program ran to its end (the runner's nonce came back).
    passed: bool
    # "passed", "failed" (exception, exit, killed by a limit) or "timeout".
    status: str
    # Exit status of the interpreter (negative: killed by that signal); None if it never exited itself.
    returncode: int | None
    duration_s: float
    # Last lines of stderr (the traceback), for the report.
    stderr_tail: str
    # How the run was isolated, e.g. "netns+uid+guard".
    isolation: str


def run_program(source: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run ``source`` as ``__main__`` in a fresh sandboxed interpreter; pass = it ran to its end."""
    limits = limits or SandboxLimits()
    drop = _should_drop_privileges(limits)
    uid = _next_uid() if drop else None
    netns = limits.isolate_network and network_namespace_available()
    isolation = "+".join(n for n, on in (("netns", netns), ("uid", drop), ("guard", limits.guard)) if on) or "limits"

    private = Path(tempfile.mkdtemp(prefix="lmforge-sbx-io-"))  # 0700: the program cannot open it by path
    scratch = Path(tempfile.mkdtemp(prefix="lmforge-sbx-"))
    try:
        program = private / "program.py"
        program.write_text(source, encoding="utf-8")
        if uid is not None:
            os.chown(scratch, uid, uid)
        nonce = secrets.token_hex(16)
        config = {
            "nonce": nonce, "program": str(program), "scratch": str(scratch), "uid": uid, "guard": limits.guard,
            "preimport": list(PREIMPORT) if uid is not None and not _stdlib_world_readable() else [],
            "rlimits": _rlimits(limits, uid is not None), "parent": os.getpid(),
        }
        cmd = [sys._base_executable if hasattr(sys, "_base_executable") else sys.executable, "-I", "-S", "-B",
               "-c", _RUNNER]
        if netns:
            cmd = ["unshare", "--net", "--", *cmd]
        env = {"PATH": "/usr/bin:/bin", "HOME": str(scratch), "TMPDIR": str(scratch), "LANG": "C.UTF-8",
               "PYTHONHASHSEED": "0"}
        with open(private / "stdout", "wb") as out, open(private / "stderr", "wb") as err, \
                open(private / "stdin", "w+b") as stdin:
            stdin.write(json.dumps(config).encode() + b"\n")
            stdin.seek(0)
            start = time.monotonic()
            proc = subprocess.Popen(cmd, stdin=stdin, stdout=out, stderr=err, cwd=scratch, env=env,
                                    start_new_session=True, close_fds=True)
            os.unlink(private / "stdin")  # the runner reads the nonce through its open fd; no path leads to it
            timed_out = False
            try:
                returncode = proc.wait(timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                returncode = None
            finally:
                _kill_group(proc.pid)
                if uid is not None:
                    _sweep_uid(uid)
                proc.wait()
            duration = time.monotonic() - start
        stdout = _tail(private / "stdout", 4096)
        stderr = _tail(private / "stderr", 4096)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(private, ignore_errors=True)

    if returncode == SETUP_FAILED_EXIT and "lmforge-sandbox setup failed" in stderr:
        raise SandboxError(f"the sandbox could not be set up ({isolation}): {stderr.strip()[-500:]}. "
                           "Run as root (uid drop) or set drop_privileges=False / isolate_network=False.")
    passed = not timed_out and returncode == 0 and stdout.rstrip("\n").rsplit("\n", 1)[-1] == nonce
    status = "passed" if passed else ("timeout" if timed_out else "failed")
    return SandboxResult(passed=passed, status=status, returncode=returncode, duration_s=duration,
                         stderr_tail=stderr[-1000:], isolation=isolation)


def run_programs(sources: Sequence[str], limits: SandboxLimits | None = None, *,
                 workers: int | None = None) -> list[SandboxResult]:
    """Run many programs, ``workers`` sandboxes at a time (default: the CPU count); results in order.

    Threads only wait on the sandboxed processes, so a thread pool is enough (and avoids
    ``preexec_fn``, which is unsafe with threads: all set-up happens in the runner).
    """
    workers = workers or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(lambda s: run_program(s, limits), sources))


@cache
def network_namespace_available() -> bool:
    """Whether ``unshare --net`` works here (root or user namespaces); probed once per process."""
    if shutil.which("unshare") is None:
        return False
    try:
        done = subprocess.run(["unshare", "--net", "--", "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    if done.returncode != 0:
        logger.warning("no network namespace (unshare --net failed: %s); the sandbox blocks sockets in-process "
                       "only", done.stderr.decode(errors="replace").strip())
    return done.returncode == 0


@cache
def _stdlib_world_readable() -> bool:
    """Whether any uid can import from this interpreter's standard library (every parent dir o+x, itself o+rx)."""
    import stat

    path = Path(os.__file__).resolve().parent
    if not path.stat().st_mode & stat.S_IROTH:
        return False
    for directory in (path, *path.parents):
        if not directory.stat().st_mode & stat.S_IXOTH:
            logger.info("the sandbox uid cannot read %s (%s is not o+x): PREIMPORT modules are imported before "
                        "the uid drop, others are unavailable to sandboxed programs", path, directory)
            return False
    return True


def _should_drop_privileges(limits: SandboxLimits) -> bool:
    if limits.drop_privileges is None:
        return os.geteuid() == 0
    if limits.drop_privileges and os.geteuid() != 0:
        raise SandboxError("drop_privileges=True needs root; leave it None to drop only when running as root")
    return limits.drop_privileges


def _next_uid() -> int:
    """A uid no other run (of this or another harness process) uses at the same time."""
    with _uid_lock:
        n = next(_uid_counter) % 4096
    return _UID_BASE + (os.getpid() % 100_000) * 4096 + n


def _rlimits(limits: SandboxLimits, own_uid: bool) -> dict[str, list[int]]:
    """{RLIMIT name: [soft, hard]} the runner sets before the program starts."""
    cpu = limits.cpu_s if limits.cpu_s is not None else math.ceil(limits.timeout_s) + 1
    mib = 1024 * 1024
    nproc = limits.max_processes if own_uid else _count_processes(os.getuid()) + limits.max_processes
    return {
        "RLIMIT_CPU": [cpu, cpu + 1],
        "RLIMIT_AS": [limits.memory_mb * mib] * 2,
        "RLIMIT_FSIZE": [limits.file_size_mb * mib] * 2,
        "RLIMIT_NOFILE": [limits.max_open_files] * 2,
        "RLIMIT_NPROC": [nproc] * 2,
        "RLIMIT_CORE": [0, 0],
    }


def _process_uids() -> dict[int, int]:
    """{pid: real uid} of every live process visible in /proc (zombies are already dead: left out)."""
    uids = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status") as f:
                status = dict(line.split(":", 1) for line in f if line.startswith(("State:", "Uid:")))
        except (OSError, ValueError):  # exited meanwhile
            continue
        if "Uid" in status and not status.get("State", "").strip().startswith(("Z", "X")):
            uids[int(entry.name)] = int(status["Uid"].split()[0])
    return uids


def _count_processes(uid: int) -> int:
    return sum(1 for u in _process_uids().values() if u == uid)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _sweep_uid(uid: int, rounds: int = 200) -> None:
    """SIGKILL every process of the sandbox uid until none is left (a fork bomb may still be forking)."""
    for _ in range(rounds):
        pids = [pid for pid, u in _process_uids().items() if u == uid]
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.01)
    logger.warning("processes of sandbox uid %d survived %d kill rounds", uid, rounds)


def _tail(path: Path, n: int) -> str:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - n))
        return f.read().decode("utf-8", errors="replace")


# The runner: trusted code that sets the sandbox up in the fresh interpreter, then runs the program.
# It gets its config (with the nonce) on stdin, which is then replaced by /dev/null. Set-up errors exit
# with SETUP_FAILED_EXIT; the program's own outcome is the nonce on stdout (ran to the end) or not.
_GUARD = r'''
def _install_guard(scratch):
    import os, sys
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    allowed_files = {"/dev/null"}
    blocked = {
        "socket.__new__", "socket.connect", "socket.bind", "socket.sendto", "socket.getaddrinfo",
        "os.kill", "os.killpg", "signal.pthread_kill", "os.fork", "os.forkpty", "os.system", "os.exec",
        "os.posix_spawn", "os.spawn", "subprocess.Popen", "ctypes.dlopen", "ctypes.dlsym", "os.setsid",
    }
    path_events = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.link",
                   "os.symlink", "os.truncate", "os.utime", "shutil.rmtree", "shutil.move", "shutil.copyfile"}
    realpath, fspath, sep = os.path.realpath, os.fspath, os.sep

    def inside(path):
        if isinstance(path, int):
            return True
        try:
            p = realpath(path.decode(errors="replace") if isinstance(path, bytes) else fspath(path))
        except Exception:
            return False
        return p == scratch or p.startswith(scratch + sep) or p in allowed_files

    def hook(event, args):
        if event in blocked:
            raise PermissionError("sandbox: %s is not allowed" % event)
        if event == "import" and args and args[0] in ("ctypes", "_ctypes", "cffi"):
            raise PermissionError("sandbox: importing %s is not allowed" % args[0])
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None))[:3]
            writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or \
                (isinstance(flags, int) and flags & write_flags)
            if writes and not inside(path):
                raise PermissionError("sandbox: writing outside the scratch directory: %r" % (path,))
        elif event in path_events:
            for arg in args[:2]:
                if isinstance(arg, (str, bytes, os.PathLike)) and not inside(arg):
                    raise PermissionError("sandbox: %s outside the scratch directory: %r" % (event, arg))

    sys.addaudithook(hook)
'''

_RUNNER = _GUARD + r'''
import json, os, sys
cfg = json.loads(sys.stdin.readline())


def _die_with_evaluator(parent):
    # PR_SET_PDEATHSIG = 1, SIGKILL = 9: the kernel ends this process when the evaluator's thread is gone
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(1, 9, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # the evaluator died before the prctl took
        os._exit(1)


try:
    import ctypes
    _die_with_evaluator(cfg["parent"])  # the window before the uid drop
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    with open(cfg["program"], encoding="utf-8") as f:
        source = f.read()
    for name in cfg["preimport"]:
        try:
            __import__(name)
        except ImportError:
            pass
    import resource
    for name, (soft, hard) in cfg["rlimits"].items():
        resource.setrlimit(getattr(resource, name), (soft, hard))
    uid = cfg["uid"]
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        if os.getresuid() != (uid, uid, uid) or os.getresgid() != (uid, uid, uid):
            raise RuntimeError("uid drop did not take")
        _die_with_evaluator(cfg["parent"])  # a uid change clears PDEATHSIG: set it again
    del _die_with_evaluator
    for _name in [m for m in sys.modules if m == "ctypes" or m.startswith(("ctypes.", "_ctypes"))]:
        del sys.modules[_name]  # the program cannot reuse it: its own "import ctypes" meets the guard
    del ctypes
    scratch = os.path.realpath(cfg["scratch"])
    os.chdir(scratch)
    out_fd = os.dup(1)
    nonce = cfg["nonce"].encode() + b"\n"
    if cfg["guard"]:
        _install_guard(scratch)
    del cfg
except BaseException as e:
    sys.stderr.write("lmforge-sandbox setup failed: %r\n" % (e,))
    sys.stderr.flush()
    os._exit(121)

_ok = False
try:
    code = compile(source, "program.py", "exec")
    del source
    exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
    _ok = True
except SystemExit:
    sys.stderr.write("sandbox: the program called exit() before its end\n")
except BaseException:
    import traceback
    traceback.print_exc()
finally:
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass
if _ok:
    try:
        os.write(out_fd, nonce)
    except OSError:
        os._exit(1)
    os._exit(0)
os._exit(1)
'''
