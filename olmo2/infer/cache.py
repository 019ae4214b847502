"""KV caches for decoding, both speaking the model's `Cache` protocol (`positions`, `mask`,
`update`, `advance`; `olmo2.model.transformer.Cache`).

- `KVCache`: one batch of left-padded prompts decoded together (`olmo2.infer.generate`);
  all rows advance together.
- `SlotCache`: independent sequences at their own positions (`olmo2.infer.engine`): a step
  decodes one token for each slot in `rows`, and only those advance.
"""

from __future__ import annotations

import torch

from olmo2.model.config import ModelConfig


def _empty(config: ModelConfig, batch: int, max_len: int, dtype, device) -> torch.Tensor:
    shape = (config.n_layers, batch, config.n_kv_heads, max_len, config.head_dim)
    return torch.zeros(shape, dtype=dtype, device=device)


class KVCache:
    """Preallocated keys/values for batched decoding of left-padded prompts.

    Slots `[pad_start, pad_start + left_pad[b])` of row b are padding, never attended to;
    every other slot s holds the token at position s, less the padding before it. With
    `pad_start` 0 this is plain left padding; with a shared prompt prefix of C tokens
    (`load_prefix`), slots [0, C) of every row hold that prefix, prefilled once, and each
    row's own tokens follow its padding. `length` slots of every row are filled.
    """

    def __init__(
        self,
        config: ModelConfig,
        batch: int,
        max_len: int,
        left_pad: torch.Tensor,
        dtype: torch.dtype,
        device: torch.device | str,
        pad_start: int = 0,
    ):
        self.k = _empty(config, batch, max_len, dtype, device)
        self.v = _empty(config, batch, max_len, dtype, device)
        self.left_pad, self.pad_start = left_pad.to(device), pad_start
        self.length, self.max_len = 0, max_len
        self._index_derived()

    def _index_derived(self) -> None:
        slots = torch.arange(self.max_len, device=self.left_pad.device)[None]
        prefix = slots < self.pad_start
        pad_end = self.pad_start + self.left_pad[:, None]
        self.valid = prefix | (slots >= pad_end)  # B S: not a padding slot
        self.padded = bool(self.left_pad.any())
        shifted = (slots - self.left_pad[:, None]).clamp(min=self.pad_start)
        self.slot_positions = torch.where(prefix, slots, shifted)  # B S

    def load_prefix(self, prefix: KVCache) -> None:
        """Copy the filled slots of a one-row cache (the shared prompt prefix, slots [0,
        pad_start)) into every row, and continue after them."""
        if prefix.length != self.pad_start or prefix.k.shape[1] != 1:
            raise ValueError(f"a prefix of {self.pad_start} slots of one row was expected")
        n = self.pad_start
        self.k.narrow(3, 0, n).copy_(prefix.k.narrow(3, 0, n))
        self.v.narrow(3, 0, n).copy_(prefix.v.narrow(3, 0, n))
        self.length = n

    def index_rows(self, rows: torch.Tensor) -> None:
        """Keep rows `rows` of the batch, in that order (repeats allowed): e.g. prefill each
        distinct prompt once, then repeat its row for every sample of it."""
        self.k, self.v = self.k.index_select(1, rows), self.v.index_select(1, rows)
        self.left_pad = self.left_pad[rows]
        self._index_derived()

    # ---- the Cache protocol -----------------------------------------------------------
    def positions(self, T: int) -> torch.Tensor:
        return self.slot_positions.narrow(1, self.length, T)

    def mask(self, T: int) -> torch.Tensor | None:
        """Causal over slots, padding slots hidden (a padding query sees itself only, which
        keeps softmax finite). None when a single new token may see every key."""
        S = self.length + T
        if T == 1:
            return self.valid[:, None, None, :S] if self.padded else None
        q = torch.arange(self.length, S, device=self.left_pad.device)[:, None]
        k = torch.arange(S, device=self.left_pad.device)[None]
        return ((k <= q)[None] & self.valid[:, None, :S] | (k == q)[None])[:, None]

    def update(self, layer: int, k_BKTE: torch.Tensor, v_BKTE: torch.Tensor):
        T = k_BKTE.shape[2]
        if self.length + T > self.max_len:
            raise ValueError(f"KV cache full: {self.length}+{T} > max_len {self.max_len}")
        k, v = self.k[layer], self.v[layer]
        k.narrow(2, self.length, T).copy_(k_BKTE)
        v.narrow(2, self.length, T).copy_(v_BKTE)
        return k.narrow(2, 0, self.length + T), v.narrow(2, 0, self.length + T)

    def advance(self, T: int) -> None:
        self.length += T


class SlotCache:
    """Keys/values for `n_slots` independent sequences, each at its own position `pos[s]`.
    Set `rows` (the slots in this step's batch) before each one-token forward."""

    def __init__(self, config: ModelConfig, n_slots: int, max_len: int, dtype, device):
        self.k = _empty(config, n_slots, max_len, dtype, device)
        self.v = _empty(config, n_slots, max_len, dtype, device)
        self.pos = torch.zeros(n_slots, dtype=torch.long, device=device)
        self.max_len = max_len
        self.rows = torch.arange(0, device=device)

    def load(self, slot: int, prefill: KVCache, n: int) -> None:
        """Copy a 1-row prefill cache of n positions (no padding) into `slot`."""
        self.k[:, slot, :, :n] = prefill.k[:, 0, :, :n]
        self.v[:, slot, :, :n] = prefill.v[:, 0, :, :n]
        self.pos[slot] = n

    # ---- the Cache protocol, for T = 1 over self.rows -----------------------------------
    def positions(self, T: int) -> torch.Tensor:
        if T != 1:
            raise ValueError(f"a SlotCache decodes one token per row and step, not {T}")
        return self.pos[self.rows][:, None]

    def mask(self, T: int) -> torch.Tensor:
        p = self.pos[self.rows]
        S = int(p.max()) + 1
        return (torch.arange(S, device=p.device)[None] <= p[:, None])[:, None, None]

    def update(self, layer: int, k_BKTE: torch.Tensor, v_BKTE: torch.Tensor):
        p = self.pos[self.rows]
        self.k[layer, self.rows, :, p] = k_BKTE[:, :, 0]
        self.v[layer, self.rows, :, p] = v_BKTE[:, :, 0]
        S = int(p.max()) + 1
        return self.k[layer, self.rows, :, :S], self.v[layer, self.rows, :, :S]

    def advance(self, T: int) -> None:
        self.pos[self.rows] += T
