"""Causal attention within the documents of a packed batch, without a T×T mask.

`Olmo2.forward(ids, doc_ids=...)` turns `doc_ids` [B, T] into `Documents` once; every layer's
attention then runs `document_attention`: documents are grouped by their length rounded up
(to a quarter of its power of two, at least 16 tokens: at most 25% padding for long ones),
each group is one tensor of right-padded documents, and SDPA runs over it with
`is_causal=True` (flash kernels, memory linear in T). That is exact for the real tokens,
which all come before their document's padding; the padded rows are dropped. OLMo-core
reaches the same with flash-attn's varlen kernel and `cu_doc_lens`
(src/olmo_core/nn/attention). Equal to the dense mask `causal & same document` (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Documents:
    """Where the documents of a packed batch lie, as slots of right-padded groups.

    Slot space: the groups' slots one after the other, group g holding n_g documents of L_g
    slots. `groups` [(L, first slot, slot count)]; `take` [S]: the token (flat index b·T + t)
    each slot holds, a padding slot repeating its document's last token; `slot_of` [B·T]: the
    slot of each token; `token_of` [S]: the token of each real slot, B·T for padding."""

    groups: list[tuple[int, int, int]]
    take: torch.Tensor
    slot_of: torch.Tensor
    token_of: torch.Tensor


def documents(doc_ids_BT: torch.Tensor, min_len: int = 16) -> Documents:
    """The `Documents` of `doc_ids` [B, T]: a document is a run of equal ids within a row
    (every producer numbers documents in order, so equal ids are one run)."""
    B, T = doc_ids_BT.shape
    ids = doc_ids_BT.reshape(-1)
    first = torch.ones_like(ids, dtype=torch.bool)
    first[1:] = ids[1:] != ids[:-1]
    first[::T] = True  # every row starts a document
    starts = first.nonzero().squeeze(1)
    lengths = torch.diff(starts, append=starts.new_tensor([B * T]))
    step = (2 ** (lengths.float().log2().floor() - 2)).long().clamp(min=min_len)
    padded = (lengths + step - 1) // step * step
    groups, take, real, offset = [], [], [], 0
    for L in padded.unique().tolist():
        s, n = starts[padded == L], lengths[padded == L]
        slot = torch.arange(L, device=ids.device)[None]
        take.append((s[:, None] + torch.minimum(slot, n[:, None] - 1)).flatten())
        real.append((slot < n[:, None]).flatten())
        groups.append((L, offset, take[-1].numel()))
        offset += take[-1].numel()
    take_S, real_S = torch.cat(take), torch.cat(real)
    slot_of = torch.empty_like(ids)
    slot_of[take_S[real_S]] = real_S.nonzero().squeeze(1)
    token_of = torch.where(real_S, take_S, B * T)
    return Documents(groups, take_S, slot_of, token_of)


class _Gather(torch.autograd.Function):
    """`x.index_select(0, index)` whose backward is a gather too (an index_add is a slow
    scatter on CPU): `back[i]` = the output row that holds row i's gradient, len(output) for
    none. Exact when each row of x feeds at most one output row that receives a gradient —
    true here: a token sits in one real slot, and padding slots get exactly zero gradient
    (their outputs are dropped, and no real query sees a padding key)."""

    @staticmethod
    def forward(ctx, x, index, back):
        ctx.save_for_backward(back)
        return x.index_select(0, index)

    @staticmethod
    def backward(ctx, grad):
        (back,) = ctx.saved_tensors
        grad = torch.cat((grad, grad.new_zeros(1, *grad.shape[1:])))
        return grad.index_select(0, back), None, None


def document_attention(q_BHTE, k_BKTE, v_BKTE, docs: Documents) -> torch.Tensor:
    """SDPA within documents: [B, H, T, E] queries, [B, K, T, E] keys/values -> [B, H, T, E]."""
    B, H, T, E = q_BHTE.shape
    out = []
    slots = [  # [S, heads·E] each
        _Gather.apply(x.transpose(1, 2).reshape(B * T, -1), docs.take, docs.slot_of)
        for x in (q_BHTE, k_BKTE, v_BKTE)
    ]
    for L, first, count in docs.groups:  # [n·L, heads·E] -> [n, heads, L, E]
        q, k, v = (x[first : first + count].unflatten(0, (-1, L)) for x in slots)
        q, k, v = (x.unflatten(2, (-1, E)).transpose(1, 2) for x in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=H != k.shape[1])
        out.append(y.transpose(1, 2).reshape(count, H * E))
    y = _Gather.apply(torch.cat(out), docs.slot_of, docs.token_of)  # [B·T, H·E]
    return y.view(B, T, H, E).transpose(1, 2)
