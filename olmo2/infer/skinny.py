"""The CPU matmul of decoding: y = x · wᵀ for up to 32 rows x, fp32 or bf16 (`skinny_mm.c`).

A decoding step is a few rows times every weight matrix, bound by how fast the weights stream
from memory; on the 2-core AVX-512 machine of `bench/RESULTS.md`, MKL's GEMV/GEMM read them
at 5-12 GB/s and this kernel at 13-21 GB/s. bf16 weights are read as bf16 (half the bytes)
and multiplied in fp32, as torch's bf16 matmul does; the result is rounded to bf16.

The C source is compiled on first use with the system C compiler (`$CC`, `cc` or `gcc`) and
cached under `$OLMO2_CACHE_DIR` (default `~/.cache/olmo2`) by a hash of source, flags and CPU;
without a compiler, or with `OLMO2_CPU_KERNELS=0`, `decode_linear` returns the plain transposed
weight for `torch.mm`.
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

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("skinny_mm.c")
FLAGS = ["-O3", "-march=native", "-fopenmp", "-fPIC"]
MAX_ROWS = 32
"""Beyond this many rows BLAS's GEMM is as fast (its packing pays off)."""
MIN_NUMEL = 1 << 16
"""Smaller weights stay cache-resident and op-bound: `torch.mm` is as fast."""


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


def _build(cc: str, out: Path) -> None:
    """Compile to an object with OpenMP, link a shared library without an OpenMP runtime
    (its GOMP_* symbols resolve to torch's), write `out` atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        obj, lib = Path(tmp) / "k.o", Path(tmp) / "k.so"
        subprocess.run([cc, *FLAGS, "-c", str(SOURCE), "-o", str(obj)], check=True,
                       capture_output=True, timeout=120)  # fmt: skip
        subprocess.run([cc, "-shared", str(obj), "-o", str(lib)], check=True,
                       capture_output=True, timeout=120)  # fmt: skip
        os.replace(lib, out)


@functools.cache
def kernel() -> dict[torch.dtype, ctypes._CFuncPtr] | None:
    """The compiled kernels by weight dtype, or None where they cannot be built or loaded."""
    if os.environ.get("OLMO2_CPU_KERNELS", "1") == "0":
        return None
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    cache = Path(os.environ.get("OLMO2_CACHE_DIR", Path.home() / ".cache" / "olmo2"))
    try:
        key = f"{SOURCE.read_text()}{FLAGS}{cc}{_cpu_id()}"
        path = cache / "kernels" / f"skinny_mm-{hashlib.sha256(key.encode()).hexdigest()[:16]}.so"
        if not path.exists():
            log.info("building the CPU decode kernel once: %s", path)
            _build(cc, path)
        lib = ctypes.CDLL(str(path))
        fns = {torch.float32: lib.olmo2_skinny_mm_float, torch.bfloat16: lib.olmo2_skinny_mm_bf16}
    except (OSError, subprocess.SubprocessError) as e:
        err = getattr(e, "stderr", b"") or b""
        log.info("CPU decode kernel unavailable, using torch.mm: %s %s", e, err.decode()[-500:])
        return None
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    for fn in fns.values():
        fn.argtypes, fn.restype = [ptr, i64, i64, ptr, i64, ptr], None
    return fns


class SkinnyLinear:
    """x [B, K] -> x · wᵀ [B, N] for a contiguous fp32 or bf16 CPU weight w [N, K]: the kernel
    for up to `MAX_ROWS` contiguous rows of w's dtype outside autocast, `torch.mm` otherwise.
    No autograd: decoding only."""

    def __init__(self, weight: torch.Tensor, fn):
        self.weight, self.fn = weight, fn

    def __call__(self, x_BK: torch.Tensor) -> torch.Tensor:
        B, (N, K) = x_BK.shape[0], self.weight.shape
        if (
            B > MAX_ROWS
            or x_BK.dtype != self.weight.dtype
            or not x_BK.is_contiguous()
            or torch.is_autocast_enabled("cpu")  # autocast's dtype rules, as a module would
        ):
            return torch.mm(x_BK, self.weight.t())
        x, y = x_BK.float(), torch.empty(B, N)  # fp32 x: no copy for fp32
        self.fn(x.data_ptr(), B, K, self.weight.data_ptr(), N, y.data_ptr())
        return y.to(x_BK.dtype)


def decode_linear(weight: torch.Tensor) -> torch.Tensor | SkinnyLinear:
    """How decoding multiplies by a linear layer's weight [N, K]: a `SkinnyLinear` for a large
    contiguous fp32/bf16 CPU weight when the kernel is available, else the transposed view for
    `torch.mm(x, w)`."""
    w = weight.detach()  # a DTensor (FSDP) stays one: no raw pointer to hand the kernel
    plain = type(w) is torch.Tensor and w.device.type == "cpu" and w.is_contiguous()
    fns = kernel() if plain and w.numel() >= MIN_NUMEL else None
    if fns is not None and w.dtype in fns:
        return SkinnyLinear(w, fns[w.dtype])
    return w.t()
