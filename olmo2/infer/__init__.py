"""Inference: sampling and batched generation (`generate`), the KV caches (`cache`), the fast
single-token decode step (`decode`) and its CPU matmul kernel (`skinny`), int8 (`quantize`),
the continuous-batching engine (`engine`), terminal chat (`chat`) and the OpenAI-compatible
server (`server`)."""
