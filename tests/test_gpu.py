"""CUDA paths (marked `gpu`: `make test-gpu` on a machine with a GPU; skipped without one):
fp32 and bf16 logits against the CPU, greedy decoding, and the trainer in bf16 with and
without torch.compile."""

from __future__ import annotations

import copy

import pytest
import torch

from olmo2.infer.generate import generate

from .model.helpers import CONFIGS, random_model
from .train.helpers import losses, train, write_tokens

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


@pytest.mark.parametrize("key", ["mha", "gqa"])
def test_cuda_logits_match_cpu(key):
    cpu = random_model(CONFIGS[key])
    gpu = copy.deepcopy(cpu).cuda()
    ids = torch.randint(0, CONFIGS[key].vocab_size, (3, 40))
    with torch.no_grad():
        ref = cpu(ids)
        torch.backends.cuda.matmul.allow_tf32 = False
        got = gpu(ids.cuda()).cpu()
        assert (got - ref).abs().max() < 1e-4
        with torch.autocast("cuda", dtype=torch.bfloat16):
            half = gpu(ids.cuda()).float().cpu()
    assert (half - ref).abs().max() < 0.1 * ref.abs().max()


def test_cuda_greedy_decoding_matches_cpu():
    cpu = random_model(CONFIGS["gqa"])
    gpu = copy.deepcopy(cpu).cuda()
    torch.backends.cuda.matmul.allow_tf32 = False
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12], [13]]
    assert generate(gpu, prompts, max_new_tokens=16) == generate(cpu, prompts, max_new_tokens=16)


@pytest.mark.parametrize("compile_", [False, True])
def test_cuda_bf16_training_learns(tmp_path, compile_):
    data = write_tokens(tmp_path / "train.npy", n=40_000)
    run = tmp_path / "run"
    extra = ["trainer.device=cuda", "trainer.precision=bf16", f"trainer.compile={compile_}"]
    assert train(run, data, *extra, "optim.lr=1e-2", steps=30) == 0
    loss = losses(run)
    assert loss[-1] < 0.8 * loss[0]
