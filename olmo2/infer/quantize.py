"""int8 weight quantization for CPU inference.

`quantize_model(model, "int8")` swaps every `nn.Linear` (attention, SwiGLU and the LM head)
for torch's dynamic int8 linear (`torch.ao.quantization.quantize_dynamic`, fbgemm/x86
kernels): weights int8 with one scale per output channel, activations quantized per call;
embeddings and RMSNorm weights stay fp32. Measured cost: held-out perplexity within 0.5% of
fp32 for a briefly trained debug model (tests/model/test_quantize.py); decode 1.2x faster than
fp32 (with its CPU kernel) at batch 1 on a 53M model (bench/serve.py).

torch marks the `torch.ao` eager-mode API as deprecated in favour of torchao; it still works
on torch 2.13 CPU and needs no extra dependency. Its deprecation warnings are silenced here.
"""

from __future__ import annotations

import logging
import warnings

import torch
from torch import nn

log = logging.getLogger(__name__)

METHODS = ("int8",)


def quantize_model(model: nn.Module, method: str = "int8") -> nn.Module:
    """Return `model` (fp32, CPU, eval) with int8 dynamic linear layers, in place."""
    if method not in METHODS:
        raise ValueError(f"unsupported quantization {method!r}; choose one of {METHODS}")
    p = next(model.parameters())
    if p.device.type != "cpu" or p.dtype != torch.float32:
        raise ValueError(f"int8 quantization needs an fp32 CPU model, got {p.dtype} on {p.device}")
    engines = torch.backends.quantized.supported_engines
    engine = "x86" if "x86" in engines else "fbgemm" if "fbgemm" in engines else None
    if engine is None:
        raise ValueError(f"no int8 CPU kernels in this torch build (engines: {engines})")
    torch.backends.quantized.engine = engine
    qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.ao.quantization.quantize_dynamic(
            model.eval(), {nn.Linear: qconfig}, dtype=torch.qint8, inplace=True
        )
    n = sum(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in model.modules())
    log.info("int8: %d linear layers quantized (%s kernels)", n, engine)
    return model
