"""Bits per byte: −Σ log p(token) / (bytes · ln 2), a perplexity that does not depend on the
tokenizer (Paloma, Magnusson et al. 2023; OLMES oe_eval/metrics/perplexity.py; nanochat
`evaluate_bpb`).

Two entry points:

* `chunks_bpb(model, tokens_NT, token_bytes)` for fixed-length token chunks, as the trainer's
  in-loop evaluation holds them: every position but the first is predicted, and each target
  token counts its own UTF-8 byte length (special tokens count 0 bytes and are not scored).
* `documents_bpb(model, tokenizer, texts)` for raw documents: each is tokenised, conditioned
  on a leading EOS (OLMo 2 has no BOS), scored through sliding windows of at most `max_length` tokens (stride max_length/2, so a
  later token keeps at least half a window of context), and
  its log-likelihood divided by the document's UTF-8 byte count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm import tqdm

from olmo2.model.loss import token_logps

LN2 = math.log(2)


@dataclass
class BPBResult:
    bits_per_byte: float
    nats_per_token: float
    tokens: int
    bytes: int

    def as_dict(self) -> dict:
        return self.__dict__.copy()


def token_byte_lengths(tokenizer) -> torch.Tensor:
    """UTF-8 byte length of every token id (0 for special/added tokens).

    Byte-level BPE (GPT-2 style, used by dolma2) writes each byte as one printable character
    of a fixed 256-character alphabet, so a token's byte length is its string length."""
    backend = tokenizer.backend
    n = tokenizer.vocab_size
    special = {t.content for t in backend.get_added_tokens_decoder().values()}
    out = torch.zeros(n, dtype=torch.long)
    for i in range(n):
        s = backend.id_to_token(i)
        if s is not None and s not in special:
            out[i] = len(s)
    return out


@torch.no_grad()
def _sum_logprobs(model, ids_BT: torch.Tensor, first_scored: int = 1) -> torch.Tensor:
    """[B, T-first] log p(ids[:, t] | ids[:, :t]) for t >= first_scored."""
    T = ids_BT.shape[1]
    logits = model(ids_BT, logits_to_keep=T - first_scored + 1)[:, :-1]
    return token_logps(logits, ids_BT[:, first_scored:])


@torch.no_grad()
def chunks_bpb(
    model: torch.nn.Module,
    tokens_NT: torch.Tensor | Sequence[Sequence[int]],
    token_bytes: torch.Tensor,
    batch_size: int = 8,
    progress: bool = False,
) -> BPBResult:
    """Bits per byte over fixed-length chunks [N, T] (targets = positions 1..T-1)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    tokens = torch.as_tensor(tokens_NT, dtype=torch.long)
    nats, nbytes, ntok = 0.0, 0, 0
    for i in tqdm(range(0, len(tokens), batch_size), desc="bpb", disable=not progress):
        batch = tokens[i : i + batch_size].to(device)
        lp = _sum_logprobs(model, batch)
        b = token_bytes.to(device)[batch[:, 1:]]
        scored = b > 0
        nats -= float(lp[scored].double().sum())
        nbytes += int(b.sum())
        ntok += int(scored.sum())
    model.train(was_training)
    if nbytes == 0:
        raise ValueError("no scored bytes: the chunks hold only special tokens")
    return BPBResult(nats / (nbytes * LN2), nats / max(ntok, 1), ntok, nbytes)


def rolling_windows(n: int, max_length: int) -> list[tuple[int, int, int]]:
    """Windows (start, stop, first_predicted) over a sequence of n+1 tokens (EOS at 0): the
    forward over ids[start:stop] (at most max_length tokens) scores positions
    first_predicted..stop-1. The first window scores max_length-1 tokens; each later one
    scores max_length//2 new tokens with the preceding tokens as context (a sliding window
    with stride max_length//2). Together they score every position 1..n exactly once."""
    if max_length < 2:
        raise ValueError("max_length must be at least 2")
    stride = max(1, max_length // 2)
    out, pred = [], 1
    while pred <= n:
        end = min(pred + (max_length - 2 if pred == 1 else stride - 1), n)
        start = max(0, end + 1 - max_length)
        out.append((start, end + 1, pred))
        pred = end + 1
    return out


@torch.no_grad()
def document_logprob(
    model, tokenizer, text: str, max_length: int | None = None
) -> tuple[float, int]:
    """(Σ log p of every token of `text` after a leading EOS, number of tokens)."""
    device = next(model.parameters()).device
    max_length = max_length or model.config.max_seq_len
    ids = [tokenizer.eos_token_id] + tokenizer.encode(text)
    total = 0.0
    for start, stop, first in rolling_windows(len(ids) - 1, max_length):
        window = torch.tensor([ids[start:stop]], device=device)
        total += float(_sum_logprobs(model, window, first - start).double().sum())
    return total, len(ids) - 1


@torch.no_grad()
def documents_bpb(
    model: torch.nn.Module,
    tokenizer,
    texts: Sequence[str],
    max_length: int | None = None,
    progress: bool = True,
) -> BPBResult:
    """Bits per byte of whole documents (every token of every document is scored once)."""
    model.eval()
    nats, nbytes, ntok = 0.0, 0, 0
    for text in tqdm(texts, desc="documents", unit="doc", disable=not progress):
        if not text:
            continue
        lp, n = document_logprob(model, tokenizer, text, max_length)
        nats -= lp
        nbytes += len(text.encode("utf-8"))
        ntok += n
    if nbytes == 0:
        raise ValueError("no text to score")
    return BPBResult(nats / (nbytes * LN2), nats / ntok, ntok, nbytes)


def token_file_chunks(path, seq_len: int, max_chunks: int | None = None) -> torch.Tensor:
    """[N, seq_len] chunks of a flat headerless uint32 token file (the `olmo2 prepare` /
    OLMo layout, `.npy` name), the tail dropped, as the training data loader cuts them."""
    from pathlib import Path

    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: token file not found")
    if path.stat().st_size % 4:
        raise ValueError(f"{path}: size is not a multiple of 4 bytes; expected flat uint32 tokens")
    tokens = np.memmap(path, dtype=np.uint32, mode="r")
    n = len(tokens) // seq_len
    if max_chunks is not None:
        n = min(n, max_chunks)
    if n == 0:
        raise ValueError(f"{path}: fewer than {seq_len} tokens")
    return torch.from_numpy(np.asarray(tokens[: n * seq_len], dtype=np.int64).reshape(n, seq_len))


def read_documents(path) -> list[str]:
    """Documents of a plain text file (one document) or of JSONL(.gz) with a "text" field."""
    import gzip
    import json
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: perplexity input not found")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        if ".jsonl" in path.suffixes:
            docs = [json.loads(line)["text"] for line in f if line.strip()]
        else:
            docs = [f.read()]
    return [d for d in docs if d]
