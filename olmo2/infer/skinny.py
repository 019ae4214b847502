"""The CPU matmul of decoding: y = x · wᵀ for up to 32 rows x, fp32 or bf16 (`skinny_mm.c`).

A decoding step is a few rows times every weight matrix, bound by how fast the weights stream
from memory; on the 2-core AVX-512 machine of `bench/RESULTS.md`, MKL's GEMV/GEMM read them
at 5-12 GB/s and this kernel at 13-21 GB/s. bf16 weights are read as bf16 (half the bytes)
and multiplied in fp32, as torch's bf16 matmul does; the result is rounded to bf16.

The C source is built by `olmo2.infer.native` (without a compiler, or with
`OLMO2_CPU_KERNELS=0`, `decode_linear` returns the plain transposed weight for `torch.mm`).
"""

from __future__ import annotations

import ctypes
import functools

import torch

from olmo2.infer import native

MAX_ROWS = 32
"""Beyond this many rows BLAS's GEMM is as fast (its packing pays off)."""
MIN_NUMEL = 1 << 16
"""Smaller weights stay cache-resident and op-bound: `torch.mm` is as fast."""


@functools.cache
def kernel() -> dict[torch.dtype, ctypes._CFuncPtr] | None:
    """The compiled kernels by weight dtype, or None where they cannot be built or loaded."""
    lib = native.library("skinny_mm.c")
    if lib is None:
        return None
    fns = {torch.float32: lib.olmo2_skinny_mm_float, torch.bfloat16: lib.olmo2_skinny_mm_bf16}
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
