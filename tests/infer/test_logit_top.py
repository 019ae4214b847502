"""`olmo2.infer.logit_top` (the C kernel and its torch fallback) against float64 torch: the
top k with their ids (ties: the lower id first, the first being torch.argmax's), and the
log-sum-exp within the bound of its fp32 inputs."""

from __future__ import annotations

import shutil

import pytest
import torch

from olmo2.infer import logit_top as lt
from olmo2.infer import native

needs_cc = pytest.mark.skipif(
    not (shutil.which("cc") or shutil.which("gcc")), reason="no C compiler"
)


@pytest.fixture(params=["kernel", "torch"])
def path(request, monkeypatch, tmp_path):
    """Each test runs on the freshly built kernel and on the torch fallback."""
    if request.param == "kernel" and not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler")
    monkeypatch.setenv("OLMO2_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("OLMO2_CPU_KERNELS", "1" if request.param == "kernel" else "0")
    lt.kernel.cache_clear(), native.library.cache_clear()
    assert (lt.kernel() is not None) == (request.param == "kernel")
    yield request.param
    lt.kernel.cache_clear(), native.library.cache_clear()


# The log-sum-exp bound: the kernel sums exp in fp64 of a polynomial exp accurate to ~2 fp32
# ulps (relative 2.4e-7), so |error| <= 2.4e-7 + fp64 rounding; torch's fp32 logsumexp rounds
# a sum of V terms (relative ~sqrt(V) * 6e-8 here) and its result (|lse| < 32 here: ulp 1.9e-6).
LSE_ATOL = {"kernel": 1e-6, "torch": 1e-5}


@pytest.mark.parametrize("threads", [1, 2])
def test_top_k_and_lse_match_float64(path, threads):
    g = torch.Generator().manual_seed(0)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for B, V in [(1, 100_352), (3, 100_352), (32, 50_304), (5, 77), (2, 16)]:
            x = torch.randn(B, V, generator=g) * 4
            for k in (1, 5, 16):
                if k > V:
                    continue
                r = lt.logit_top(x, k, lse=True)
                want = x.double().topk(k, dim=-1)
                assert torch.equal(r.indices, want.indices), (B, V, k)
                assert torch.equal(r.values, want.values.float())
                assert torch.equal(r.indices[:, 0], x.argmax(-1))
                err = (r.lse - torch.logsumexp(x.double(), -1)).abs().max().item()
                assert err < LSE_ATOL[path], (B, V, k, err)
            assert lt.logit_top(x, 1).lse is None
    finally:
        torch.set_num_threads(before)


def test_ties_infinities_and_bad_k(path):
    x = torch.zeros(2, 1000)
    x[0, 7] = x[0, 500] = 1.0  # two maxima: the first is the argmax, as in torch
    r = lt.logit_top(x, 3, lse=True)
    assert r.indices[0, :2].tolist() == [7, 500] and r.indices[0, 0] == x[0].argmax()
    assert r.indices[1, 0] == 0 and r.lse[1].item() == pytest.approx(6.907755278982137, abs=1e-6)
    m = torch.full((1, 300), float("-inf"))
    m[0, 200] = 0.5  # a masked row: one finite logit
    r = lt.logit_top(m, 2, lse=True)
    assert r.indices[0, 0] == 200 and r.values[0].tolist() == [0.5, float("-inf")]
    assert r.lse.item() == pytest.approx(0.5, abs=1e-6)
    for k in (0, 301):
        with pytest.raises(ValueError, match=r"k must be in \[1, 300\]"):
            lt.logit_top(m, k)


@needs_cc
def test_non_float32_or_strided_logits_take_the_torch_path(monkeypatch, tmp_path):
    monkeypatch.setenv("OLMO2_CACHE_DIR", str(tmp_path))
    lt.kernel.cache_clear(), native.library.cache_clear()
    x = torch.randn(4, 600, generator=torch.Generator().manual_seed(1))
    for y in (x.bfloat16(), x.t().contiguous().t()):
        r = lt.logit_top(y, 4, lse=True)
        assert torch.equal(r.indices, y.float().topk(4, dim=-1).indices)
        assert r.lse.dtype == torch.float64
    lt.kernel.cache_clear(), native.library.cache_clear()
