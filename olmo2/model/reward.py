"""The reward / value network: the OLMo 2 transformer with a scalar `score` head in place of
the LM head (the RM of `olmo2 rm` and the value model of `olmo2 ppo`).

Layout and pooling are transformers' `Olmo2ForSequenceClassification`
(models/olmo2/modeling_olmo2.py -> modeling_layers.GenericForSequenceClassification): the
backbone under `model.`, `score = Linear(hidden, num_labels, bias=False)` with num_labels 1,
applied to the final-norm hidden state of every position; a sequence's score is the one at
its rightmost non-pad token (`argmax(arange(T) * (ids != pad))`), which serves left and right
padding alike, so `pad_token_id` must be in the config. A checkpoint is an HF directory
whose config.json names that architecture with one label; `olmo2.load` of such a directory
returns an `Olmo2Reward`.

Left-padded rows are scored as their unpadded selves: positions count real tokens only and
pads are masked out of attention (open-instruct `get_reward` passes the same
`position_ids = cumsum(mask) − mask`); transformers' own left-padded forward, with its
`attention_mask`, agrees to float rounding (RoPE depends on relative positions only).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from olmo2.model.config import ModelConfig
from olmo2.model.hf import (
    CONFIG_NAME,
    _weight_files,
    check_state_dict,
    read_config,
    read_state_dict,
)
from olmo2.model.transformer import Olmo2

ARCHITECTURE = "Olmo2ForSequenceClassification"
HEAD = "score.weight"


class Olmo2Reward(Olmo2):
    """`forward(input_ids, ...) -> scores [B, T]` (or [N] with a boolean `logits_to_keep`):
    `Olmo2.forward` with an identity LM head gives the final-norm hidden states, which the
    `score` head maps to one number per position."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.lm_head = nn.Identity()
        self.score = nn.Linear(config.d_model, 1, bias=False)

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """The backbone as `Olmo2.init_weights`; the head ~ N(0, 1/√(d+1)) (open-instruct
        reward_modeling.py `layer_init(model.score, std=1 / np.sqrt(hidden_size + 1))`)."""
        super().init_weights(generator)
        nn.init.normal_(self.score.weight, 0.0, 1 / math.sqrt(self.config.d_model + 1), generator)

    def forward(self, input_ids: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.score(super().forward(input_ids, **kwargs)).squeeze(-1)


# ---- scoring padded batches ----------------------------------------------------------------------


def last_token(input_ids: torch.Tensor, pad_token_id: int | None) -> torch.Tensor:
    """[B] index of each row's rightmost non-pad token (transformers' rule); −1 → T−1 when
    there is no pad id, which only a batch of one allows."""
    B, T = input_ids.shape
    if pad_token_id is None:
        if B != 1:
            raise ValueError("scoring a batch of several rows needs pad_token_id in the config")
        return torch.full((1,), T - 1, dtype=torch.long, device=input_ids.device)
    idx = torch.arange(T, device=input_ids.device)
    return (idx * (input_ids != pad_token_id)).argmax(-1)


def padded_inputs(input_ids: torch.Tensor, pad_token_id: int | None) -> dict:
    """`positions` and `attn_mask` for `Olmo2.forward` that score a row with pads before its
    tokens (left padding) as the unpadded row; {} when no pad precedes a real token (right
    padding needs neither). A pad query attends to itself only, so no row of the mask is
    empty (an all-masked softmax row would give NaN)."""
    if pad_token_id is None:
        return {}
    real = input_ids != pad_token_id
    T = input_ids.shape[1]
    after_pad = real[:, 1:] & ~real[:, :-1]  # a real token right after a pad
    if not bool(after_pad.any()):
        return {}
    positions = (real.cumsum(1) - 1).clamp(min=0)
    causal = torch.ones(T, T, dtype=torch.bool, device=input_ids.device).tril()
    eye = torch.eye(T, dtype=torch.bool, device=input_ids.device)
    mask = (causal & real[:, None, :]) | eye  # [B, T(query), T(key)]
    return {"positions": positions, "attn_mask": mask[:, None]}


def sequence_scores(model: nn.Module, input_ids: torch.Tensor, pad_token_id: int | None):
    """[B] score of each (left- or right-padded) row at its last non-pad token; the head runs
    at those B positions only. `model` is an `Olmo2Reward` (or its data-parallel wrapper)."""
    last = last_token(input_ids, pad_token_id)
    keep = torch.zeros(input_ids.shape, dtype=torch.bool, device=input_ids.device)
    keep[torch.arange(len(last), device=keep.device), last] = True
    return model(input_ids, logits_to_keep=keep, **padded_inputs(input_ids, pad_token_id))


# ---- checkpoints ------------------------------------------------------------------------------------


def seq_cls_config(hf_config: dict) -> dict:
    """An `Olmo2ForCausalLM` config.json dict as the `Olmo2ForSequenceClassification` one
    transformers writes for num_labels 1 (PretrainedConfig derives num_labels from id2label)."""
    return {
        **hf_config,
        "architectures": [ARCHITECTURE],
        "id2label": {"0": "LABEL_0"},
        "label2id": {"LABEL_0": 0},
    }


def is_reward_checkpoint(path: str | os.PathLike) -> bool:
    """Whether config.json names the sequence-classification architecture."""
    f = Path(path) / CONFIG_NAME
    try:
        return ARCHITECTURE in (json.loads(f.read_text()).get("architectures") or [])
    except (OSError, json.JSONDecodeError):
        return False


def head_shape(path: str | os.PathLike) -> tuple[int, ...] | None:
    """Shape of the checkpoint's `score.weight` from the safetensors headers (no tensor is
    read), or None when it has no head (a causal LM)."""
    for f in _weight_files(Path(path)):
        with safe_open(str(f), framework="pt") as sf:
            if HEAD in sf.keys():
                return tuple(sf.get_slice(HEAD).get_shape())
    return None


def check_reward_checkpoint(path: str | os.PathLike, config: ModelConfig) -> None:
    """Refuse, before anything is loaded or written, a reward checkpoint whose head is not
    [1, d_model] (num_labels 1) or that cannot score padded batches."""
    shape = head_shape(path)
    if shape is not None and shape != (1, config.d_model):
        raise ValueError(
            f"{path}: {HEAD} has shape {list(shape)}; a reward/value model needs "
            f"[1, {config.d_model}] (num_labels 1, hidden size {config.d_model})"
        )
    if config.pad_token_id is None:
        raise ValueError(
            f"{path}: config.json has no pad_token_id; a reward model pools at the last "
            "non-pad token (set model.pad_token_id)"
        )


def load_weights(model: Olmo2Reward, path: str | os.PathLike) -> None:
    """Weights from a reward checkpoint (all of them) or from a causal LM (the backbone; the
    head keeps its initialisation, and the LM head is dropped)."""
    check_reward_checkpoint(path, model.config)
    sd = read_state_dict(path, dtype=torch.float32)
    if HEAD not in sd:
        sd.pop("lm_head.weight", None)
        sd[HEAD] = model.score.weight.detach().clone()
    check_state_dict(sd, model, str(path))
    model.load_state_dict(sd)


def load_reward_model(
    path: str | os.PathLike, dtype: torch.dtype | None = None, device=None
) -> Olmo2Reward:
    """An `Olmo2Reward` from an HF `Olmo2ForSequenceClassification` directory (fp32 on CPU
    unless told otherwise), in eval mode."""
    path = Path(path)
    cfg = read_config(path)
    if head_shape(path) is None:
        raise ValueError(
            f"{path}: has no {HEAD} (a causal LM, not a reward model); train one with `olmo2 rm`"
        )
    check_reward_checkpoint(path, cfg)
    sd = read_state_dict(path, dtype or torch.float32)
    with torch.device("meta"):
        model = Olmo2Reward(cfg)
    check_state_dict(sd, model, str(path))
    model.load_state_dict(sd, assign=True)
    return model.to(device or "cpu").eval()


__all__ = [
    "ARCHITECTURE",
    "Olmo2Reward",
    "check_reward_checkpoint",
    "is_reward_checkpoint",
    "last_token",
    "load_reward_model",
    "load_weights",
    "padded_inputs",
    "seq_cls_config",
    "sequence_scores",
]
