"""Decoding's CPU matmul kernel (`olmo2.infer.skinny`) against float64 matmul."""

from __future__ import annotations

import itertools
import shutil

import pytest
import torch

from olmo2.infer import native, skinny

needs_cc = pytest.mark.skipif(
    not (shutil.which("cc") or shutil.which("gcc")), reason="no C compiler"
)


@pytest.fixture
def fresh_kernel(monkeypatch, tmp_path):
    """`skinny.kernel()` built anew into an empty cache directory."""
    monkeypatch.setenv("OLMO2_CACHE_DIR", str(tmp_path))
    skinny.kernel.cache_clear(), native.library.cache_clear()
    yield tmp_path
    skinny.kernel.cache_clear(), native.library.cache_clear()


@needs_cc
@pytest.mark.parametrize("threads", [1, 2])
def test_kernel_matches_float64_matmul(fresh_kernel, threads):
    """Every row count (the 8 register-blocked variants, chunks of 8, the torch.mm fallback
    above MAX_ROWS) and K, N that are not multiples of the vector width or row block."""
    assert skinny.kernel() is not None
    assert list(fresh_kernel.glob("kernels/skinny_mm-*.so"))  # cached, no temp files left
    assert not [p for p in (fresh_kernel / "kernels").iterdir() if not p.name.endswith(".so")]
    g = torch.Generator().manual_seed(0)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for (N, K), dtype in itertools.product(
            [(300, 264), (1000, 7), (129, 1040)], [torch.float32, torch.bfloat16]
        ):
            w = torch.randn(N, K, generator=g).to(dtype)
            lin = skinny.SkinnyLinear(w, skinny.kernel()[dtype])
            for B in range(1, skinny.MAX_ROWS + 3):
                x = torch.randn(B, K, generator=g).to(dtype)
                want = (x.double() @ w.double().t()).to(dtype)  # exact, rounded once
                got = lin(x)
                assert got.shape == (B, N) and got.dtype == dtype
                if dtype == torch.float32:
                    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * K**0.5)
                else:  # fp32 sums, then one bf16 rounding: at most one bf16 ulp apart
                    torch.testing.assert_close(got.float(), want.float(), rtol=8e-3, atol=1e-5)
    finally:
        torch.set_num_threads(before)


@needs_cc
def test_decode_linear_picks_the_kernel_only_where_it_helps(fresh_kernel):
    big = torch.randn(512, 256)
    assert isinstance(skinny.decode_linear(big), skinny.SkinnyLinear)
    assert isinstance(skinny.decode_linear(big.bfloat16()), skinny.SkinnyLinear)
    for w in (torch.randn(64, 64), big.half(), big.t()):  # small, fp16, non-contiguous
        got = skinny.decode_linear(w)
        assert isinstance(got, torch.Tensor) and torch.equal(got, w.t())
    x = torch.randn(2, 256)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast's rules hold: torch.mm
        got, want = skinny.decode_linear(big)(x), x @ big.t()
    assert got.dtype == want.dtype == torch.bfloat16 and torch.equal(got, want)
    p = torch.nn.Parameter(big.clone())
    lin = skinny.decode_linear(p)
    with torch.no_grad():
        p.mul_(2)  # follows in-place updates, like the transposed views
    x = torch.randn(1, 256)
    torch.testing.assert_close(lin(x), x @ (2 * big).t(), rtol=1e-5, atol=1e-4)


def test_kernel_off_or_unbuildable_falls_back(fresh_kernel, monkeypatch):
    monkeypatch.setenv("OLMO2_CPU_KERNELS", "0")
    assert skinny.kernel() is None
    assert isinstance(skinny.decode_linear(torch.randn(512, 256)), torch.Tensor)
    skinny.kernel.cache_clear(), native.library.cache_clear()
    monkeypatch.setenv("OLMO2_CPU_KERNELS", "1")
    monkeypatch.setenv("CC", "false")  # a compiler that fails: logged, no exception
    assert skinny.kernel() is None
    assert not list(fresh_kernel.glob("kernels/*"))  # nothing half-written
