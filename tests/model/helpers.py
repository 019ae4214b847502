"""Tiny random checkpoints shared by the model tests."""

from __future__ import annotations

import json

import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from olmo2.model.config import ModelConfig
from olmo2.model.hf import save_pretrained
from olmo2.model.transformer import Olmo2

# tiny shapes: plain MHA, GQA, odd sizes (vocab not a multiple of 8, odd ffn), and "wide":
# linears large enough for decoding's CPU kernel (`olmo2.infer.skinny`), odd K and N
CONFIGS = {
    "mha": ModelConfig.debug(),
    "gqa": ModelConfig.debug(n_heads=8, n_kv_heads=2, n_layers=3),
    "odd": ModelConfig.debug(d_model=48, n_heads=3, ffn_hidden=101, vocab_size=509, n_layers=2),
    "wide": ModelConfig.debug(d_model=264, n_heads=4, n_kv_heads=2, ffn_hidden=301, vocab_size=509),
}


def random_model(cfg: ModelConfig, seed: int = 0) -> Olmo2:
    torch.manual_seed(seed)
    model = Olmo2.build(cfg)
    # random norm weights too, so a swapped norm cannot hide behind all-ones
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model.eval()


def save_random(tmp_path, key: str = "mha", seed: int = 0):
    model = random_model(CONFIGS[key], seed)
    path = save_pretrained(model, tmp_path / key)
    return model, path


def tiny_bpe() -> dict:
    """tokenizer.json of a 300-token byte-level BPE trained on one sentence."""
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(["the quick brown fox jumps over the lazy dog"] * 50, trainer)
    return json.loads(tok.to_str())


def hf_twin(model: Olmo2):
    """transformers' `Olmo2ForCausalLM` built from `config_to_hf(model.config)` (in memory,
    so the config transformers reads is the one we would write) with the same weights."""
    from transformers import Olmo2Config, Olmo2ForCausalLM

    from olmo2.model.hf import config_to_hf, to_hf_key

    hf = Olmo2ForCausalLM(Olmo2Config(**config_to_hf(model.config)))
    sd = {to_hf_key(k): v for k, v in model.state_dict().items()}
    hf.load_state_dict(sd, strict=True)
    return hf.eval()


def random_documents(B: int, T: int, max_len: int, seed: int = 0) -> torch.Tensor:
    """doc_ids [B, T]: documents of random lengths 1..max_len, numbered in order per row
    (as the data loader numbers them)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, max_len + 1, (B * T,), generator=g)  # more than enough
    ids = torch.repeat_interleave(torch.arange(B * T), lengths)[: B * T].view(B, T)
    return ids - ids[:, :1]


def peak_heap_bytes(fn) -> int:
    """Peak bytes in use by the C heap (glibc `mallinfo2`: arena + mmapped chunks, where
    torch's CPU tensors live) above the start, read after every aten op `fn` runs (forward
    and backward; a `TorchDispatchMode` sees each one). Allocations freed inside one op are
    not seen, only what ops leave behind: a T×T score or mask tensor would be. None where
    the C library has no mallinfo2 (not glibc ≥ 2.33)."""
    import ctypes

    from torch.utils._python_dispatch import TorchDispatchMode

    class Info(ctypes.Structure):
        _fields_ = [
            (n, ctypes.c_size_t)
            for n in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()
        ]

    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except AttributeError:
        return None
    mallinfo2.restype = Info

    def in_use() -> int:
        m = mallinfo2()
        return m.uordblks + m.hblkhd

    class Peak(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            self.peak = max(self.peak, in_use())
            return out

    mode = Peak()
    start = mode.peak = in_use()
    with mode:
        fn()
    return mode.peak - start
