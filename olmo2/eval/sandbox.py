"""Run model-written programs (HumanEval, MBPP) in a sandbox: a program passes when it exits 0.

Each program runs in its own process, in layers, so that no single mechanism has to hold:

* **Kernel limits** (`resource.setrlimit`, set by the runner before the program starts, soft
  = hard): address space (`RLIMIT_AS`: a 10 GB allocation is a MemoryError), CPU seconds,
  file size, process count, no core dumps. A wall-clock timeout kills the whole process
  group (SIGKILL), as openai/human-eval's `execution.py` does with its time limit.
* **Namespaces** when the machine allows them (`unshare --net --pid --fork --kill-child`, with
  `--user --map-root-user` when not root): no network at all (a fresh, empty network
  namespace), and every process the program made dies with it (PID namespace).
* **A temporary working directory**, removed afterwards; as root the program runs as the
  unprivileged user `nobody`, which owns only that directory (when `nobody` can read the
  interpreter's standard library).
* **The standard library only**: `python -I -S` (isolated mode, no `site`, so no installed
  packages and no environment variables), bytecode writing off.
* **An audit hook** (PEP 578; it cannot be removed from Python code) that refuses process
  creation and signals, sockets, ctypes, raising resource limits, and any write, delete or
  rename outside the working directory, the measures of human-eval's `reliability_guard`
  made unbypassable from pure Python. Audit hooks are not a sandbox on their own (CPython's
  docs say so); here they back the kernel limits, and the kernel limits back them.

`run_many` runs programs in parallel over the cores (threads, each waiting on its own
process) and caches outcomes by program text and limits when given a cache file.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

NOBODY = 65534


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 10.0
    """Wall-clock seconds before the process group is killed."""
    memory_mb: int = 2048
    """Address space (RLIMIT_AS)."""
    file_mb: int = 16
    """Largest file the program may write (RLIMIT_FSIZE), its output included."""
    processes: int = 32
    """RLIMIT_NPROC (counts the sandbox user's processes; root is exempt, hence `nobody`)."""


@dataclass(frozen=True)
class Outcome:
    passed: bool
    status: str
    """"passed", "failed" (non-zero exit), "timeout" or "killed" (by a signal)."""
    returncode: int | None
    output: str
    """The first 2,000 characters of stdout + stderr."""
    seconds: float


RUNNER = r"""
import json, os, resource, sys
cfg = json.loads(open("sandbox.json").read())
for name, value in cfg["rlimits"].items():
    resource.setrlimit(getattr(resource, name), (value, value))
if cfg["drop_to"] is not None:
    os.setgroups([])
    os.setgid(cfg["drop_to"])
    os.setuid(cfg["drop_to"])
sys.dont_write_bytecode = True
CWD = os.path.realpath(os.getcwd())
SAFE = {os.devnull}
BLOCKED = {
    "os.fork", "os.forkpty", "os.system", "os.exec", "os.spawn", "os.posix_spawn",
    "subprocess.Popen", "os.kill", "os.killpg", "pty.spawn", "resource.setrlimit",
    "resource.prlimit", "os.setuid", "os.setgid", "socket.__new__", "socket.connect",
    "socket.bind", "socket.getaddrinfo", "socket.sendto", "ctypes.dlopen", "ctypes.dlsym",
    "ctypes.cdata", "ctypes.call_function", "sys._debugmallocstats",
}
NO_IMPORT = {"ctypes", "_ctypes", "_posixsubprocess", "multiprocessing", "_multiprocessing"}
PATH_ARGS = {  # event -> how many leading arguments are paths
    "os.remove": 1, "os.rmdir": 1, "os.mkdir": 1, "os.chmod": 1, "os.chown": 1,
    "os.truncate": 1, "os.utime": 1, "os.chdir": 1, "os.rename": 2, "os.link": 2,
    "os.symlink": 2, "shutil.rmtree": 1, "shutil.move": 2, "shutil.copyfile": 2,
    "shutil.copytree": 2, "os.mkfifo": 1, "os.mknod": 1,
}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


def inside(path):
    if isinstance(path, int):
        return True
    p = os.path.realpath(os.fsdecode(path))
    return p in SAFE or p == CWD or p.startswith(CWD + os.sep)


def hook(event, args):
    if event in BLOCKED:
        raise PermissionError(f"sandbox: {event} is not allowed")
    if event == "import" and args[0].partition(".")[0] in NO_IMPORT:
        raise PermissionError(f"sandbox: importing {args[0]} is not allowed")
    if event == "open":
        path, mode, flags = args
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & WRITE_FLAGS
        )
        if writes and not inside(path):
            raise PermissionError(f"sandbox: writing {path!r} outside the working directory")
    n = PATH_ARGS.get(event, 0)
    if n and not all(inside(a) for a in args[:n] if a is not None):
        raise PermissionError(f"sandbox: {event}{args[:n]!r} outside the working directory")


source = open("program.py", encoding="utf-8").read()
code = compile(source, "program.py", "exec")
sys.argv = ["program.py"]
del json, cfg
sys.addaudithook(hook)
exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
"""


@functools.cache
def isolation_prefix() -> tuple[str, ...]:
    """The `unshare` command line that gives a program no network and its own PID namespace
    on this machine, or () where namespaces are not allowed (containers without the
    capability, disabled user namespaces): then the other layers hold alone."""
    base = ("unshare", "--net", "--pid", "--fork", "--kill-child")
    if shutil.which("unshare") is None:
        return ()
    tries = [base] if os.geteuid() == 0 else []
    tries.append(("unshare", "--user", "--map-root-user", *base[1:]))
    for cmd in tries:
        try:
            ok = subprocess.run([*cmd, "true"], capture_output=True, timeout=10).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        if ok:
            return cmd
    log.warning("no network/PID namespaces here: the sandbox relies on rlimits and audit hooks")
    return ()


def _config(limits: Limits) -> dict:
    mb = 1 << 20
    return {
        "rlimits": {
            "RLIMIT_AS": limits.memory_mb * mb,
            "RLIMIT_CPU": int(limits.timeout_s) + 1,
            "RLIMIT_FSIZE": limits.file_mb * mb,
            "RLIMIT_NPROC": limits.processes,
            "RLIMIT_CORE": 0,
        },
        "drop_to": NOBODY if os.geteuid() == 0 and _stdlib_world_readable() else None,
    }


@functools.cache
def _stdlib_world_readable() -> bool:
    """Whether `nobody` could import the standard library (an interpreter under /root, as
    pyenv installs it, cannot be read by other users; then the program keeps root's uid, in
    its namespaces, and the audit hook alone guards the file system)."""
    import stat
    import sysconfig

    for key in ("stdlib", "platstdlib"):
        path = Path(sysconfig.get_paths()[key]).resolve()
        for d in (path, *path.parents):
            if not d.stat().st_mode & stat.S_IXOTH:
                return False
        if not path.stat().st_mode & stat.S_IROTH:
            return False
    return True


def run_program(source: str, limits: Limits = Limits()) -> Outcome:
    """Run one program in a fresh temporary directory; passed = exit status 0 in time."""
    work = Path(tempfile.mkdtemp(prefix="olmo2-sandbox-"))
    try:
        (work / "program.py").write_text(source, encoding="utf-8")
        (work / "runner.py").write_text(RUNNER, encoding="utf-8")
        cfg = _config(limits)
        (work / "sandbox.json").write_text(json.dumps(cfg))
        if cfg["drop_to"] is not None:
            os.chown(work, NOBODY, NOBODY)
            work.chmod(0o700)
        return _execute(work, limits)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _execute(work: Path, limits: Limits) -> Outcome:
    cmd = [*isolation_prefix(), sys.executable, "-I", "-S", "runner.py"]
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(work)}
    t0 = time.perf_counter()
    with open(work / "output.txt", "wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            rc = proc.wait(timeout=limits.timeout_s)
            status = "passed" if rc == 0 else "killed" if rc < 0 else "failed"
        except subprocess.TimeoutExpired:
            status, rc = "timeout", None
        finally:
            _kill_group(proc)
    seconds = time.perf_counter() - t0
    text = (work / "output.txt").read_bytes()[:2000].decode("utf-8", "replace")
    return Outcome(status == "passed", status, rc, text, round(seconds, 3))


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the program's whole process group (its session), then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def run_many(
    sources: Sequence[str],
    limits: Limits = Limits(),
    workers: int | None = None,
    cache_path: str | os.PathLike | None = None,
) -> list[Outcome]:
    """Outcomes in input order; `workers` programs at a time (default: one per core)."""
    cache = keys = None
    found: dict[int, Outcome] = {}
    if cache_path:
        from olmo2.eval.harness import ResultCache

        cache = ResultCache(cache_path, f"sandbox:{json.dumps(asdict(limits))}")
        keys = [cache.key("program", s) for s in sources]
        hit = cache.get_many(list(dict.fromkeys(keys)))
        found = {i: Outcome(**hit[k]) for i, k in enumerate(keys) if k in hit}
    todo = [i for i in range(len(sources)) if i not in found]
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        for i, outcome in zip(todo, pool.map(lambda i: run_program(sources[i], limits), todo)):
            found[i] = outcome
    if cache is not None and todo:
        cache.put_many({keys[i]: asdict(found[i]) for i in todo})
    return [found[i] for i in range(len(sources))]
