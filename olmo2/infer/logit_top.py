"""What a decoding step needs of its logits: each row's k largest values and their ids, best
first (the first is the greedy token, the index `torch.argmax` gives), and for log-probs the
row's log-sum-exp. On the CPU for fp32 logits one C kernel (`logit_top.c`, built by
`olmo2.infer.native`) reads each row once for the top k and once more, from cache, for the
log-sum-exp; elsewhere `torch.argmax`/`torch.topk` and `torch.logsumexp`.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass

import torch

from olmo2.infer import native


@dataclass
class LogitTop:
    values: torch.Tensor
    """[B, k] fp32, best first."""
    indices: torch.Tensor
    """[B, k] int64; among equal values the lower id first."""
    lse: torch.Tensor | None
    """[B] fp64 log-sum-exp of each row, when asked for."""


@functools.cache
def kernel():
    lib = native.library("logit_top.c")
    if lib is None:
        return None
    fn = lib.olmo2_logit_top
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    fn.argtypes, fn.restype = [ptr, i64, i64, i64, ptr, ptr, ptr], None
    return fn


def logit_top(logits_BV: torch.Tensor, k: int, lse: bool = False) -> LogitTop:
    """The top `k` (1 <= k <= V) of each row of `logits_BV` [B, V], and its log-sum-exp if
    `lse`."""
    B, V = logits_BV.shape
    if not 1 <= k <= V:
        raise ValueError(f"k must be in [1, {V}], got {k}")
    fn = kernel() if logits_BV.device.type == "cpu" else None
    if fn is None or logits_BV.dtype != torch.float32 or not logits_BV.is_contiguous():
        return _torch_top(logits_BV, k, lse)
    val, idx = torch.empty(B, k), torch.empty(B, k, dtype=torch.long)
    out = torch.empty(B, dtype=torch.float64) if lse else None
    fn(logits_BV.data_ptr(), B, V, k, val.data_ptr(), idx.data_ptr(),
       None if out is None else out.data_ptr())  # fmt: skip
    return LogitTop(val, idx, out)


def _torch_top(logits_BV: torch.Tensor, k: int, lse: bool) -> LogitTop:
    if k == 1:
        idx = logits_BV.argmax(-1, keepdim=True)
        val = logits_BV.gather(1, idx)
    else:
        val, idx = logits_BV.topk(k, dim=-1)
    out = torch.logsumexp(logits_BV.float(), -1).double() if lse else None
    return LogitTop(val.float(), idx, out)
