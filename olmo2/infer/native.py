"""The C kernels of `olmo2.infer` (`skinny_mm.c`, `logit_top.c`): compiled on first use with
the system C compiler (`$CC`, `cc` or `gcc`) and cached under `$OLMO2_CACHE_DIR` (default
`~/.cache/olmo2`) by a hash of source, flags, compiler and CPU. Without a compiler, or with
`OLMO2_CPU_KERNELS=0`, `library` returns None and each caller takes its torch path.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

FLAGS = ["-O3", "-march=native", "-fopenmp", "-fPIC"]


def _cpu_id() -> str:
    """What -march=native depends on: the machine and its CPU feature flags."""
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = line
                break
    except OSError:
        pass
    return f"{platform.machine()} {flags}"


def _build(cc: str, source: Path, out: Path) -> None:
    """Compile to an object with OpenMP, link a shared library without an OpenMP runtime
    (its GOMP_* symbols resolve to torch's), write `out` atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        obj, lib = Path(tmp) / "k.o", Path(tmp) / "k.so"
        subprocess.run([cc, *FLAGS, "-c", str(source), "-o", str(obj)], check=True,
                       capture_output=True, timeout=120)  # fmt: skip
        subprocess.run([cc, "-shared", str(obj), "-o", str(lib)], check=True,
                       capture_output=True, timeout=120)  # fmt: skip
        os.replace(lib, out)


@functools.cache
def library(name: str) -> ctypes.CDLL | None:
    """The compiled `olmo2/infer/<name>` (e.g. "skinny_mm.c"), or None where it cannot be
    built or loaded."""
    if os.environ.get("OLMO2_CPU_KERNELS", "1") == "0":
        return None
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    source = Path(__file__).with_name(name)
    cache = Path(os.environ.get("OLMO2_CACHE_DIR", Path.home() / ".cache" / "olmo2"))
    try:
        key = f"{source.read_text()}{FLAGS}{cc}{_cpu_id()}"
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        path = cache / "kernels" / f"{source.stem}-{digest}.so"
        if not path.exists():
            log.info("building the CPU kernel %s once: %s", name, path)
            _build(cc, source, path)
        return ctypes.CDLL(str(path))
    except (OSError, subprocess.SubprocessError) as e:
        err = getattr(e, "stderr", b"") or b""
        log.info("CPU kernel %s unavailable, using torch: %s %s", name, e, err.decode()[-500:])
        return None
