"""The reward / value network against transformers' `Olmo2ForSequenceClassification`: scores
equal to 1e-5 (fp32) on left- and right-padded batches, in both load directions, and bad
heads refused by name."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForSequenceClassification

import olmo2
from olmo2.model.config import ModelConfig
from olmo2.model.hf import save_pretrained
from olmo2.model.reward import (
    Olmo2Reward,
    check_reward_checkpoint,
    load_reward_model,
    load_weights,
    padded_inputs,
    sequence_scores,
)
from tests.model.helpers import random_model

PAD = 1
CFG = ModelConfig.debug(n_heads=4, n_kv_heads=2, n_layers=2, vocab_size=301, pad_token_id=PAD)
LENGTHS = [9, 4, 1, 7]


def random_reward(seed: int = 0) -> Olmo2Reward:
    torch.manual_seed(seed)
    model = Olmo2Reward.build(CFG)
    with torch.no_grad():  # random norms, as tests/model/helpers.random_model does
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model.eval()


def rows(seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(2, CFG.vocab_size, (n,), generator=g).tolist() for n in LENGTHS]


def padded(seqs: list[list[int]], left: bool) -> torch.Tensor:
    T = max(map(len, seqs))
    return torch.tensor(
        [[PAD] * (T - len(s)) + s if left else s + [PAD] * (T - len(s)) for s in seqs]
    )


def unpadded_scores(model, seqs) -> torch.Tensor:
    with torch.no_grad():
        return torch.stack([model(torch.tensor([s]))[0, -1] for s in seqs])


@pytest.mark.parametrize("left", [False, True], ids=["right-padded", "left-padded"])
def test_olmo2_saves_transformers_scores_the_same(tmp_path, left):
    model = random_reward()
    path = save_pretrained(model, tmp_path / "rm")
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["architectures"] == ["Olmo2ForSequenceClassification"] and cfg["pad_token_id"] == PAD
    assert load_file(path / "model.safetensors")["score.weight"].shape == (1, CFG.d_model)
    assert "lm_head.weight" not in load_file(path / "model.safetensors")
    hf = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32).eval()
    assert hf.config.num_labels == 1
    seqs = rows()
    ids = padded(seqs, left)
    with torch.no_grad():
        ours = sequence_scores(model, ids, PAD)
        theirs = hf(input_ids=ids, attention_mask=(ids != PAD).long()).logits.squeeze(-1)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours, unpadded_scores(model, seqs), atol=1e-5, rtol=0)


def test_transformers_saves_olmo2_loads(tmp_path):
    from transformers import Olmo2Config, Olmo2ForSequenceClassification

    torch.manual_seed(3)
    hf_cfg = Olmo2Config(
        vocab_size=CFG.vocab_size, hidden_size=CFG.d_model, intermediate_size=CFG.ffn_hidden,
        num_hidden_layers=CFG.n_layers, num_attention_heads=CFG.n_heads,
        num_key_value_heads=CFG.n_kv_heads, max_position_embeddings=CFG.max_seq_len,
        rms_norm_eps=CFG.norm_eps, pad_token_id=PAD, eos_token_id=0, bos_token_id=None, num_labels=1,
    )  # fmt: skip
    hf = Olmo2ForSequenceClassification(hf_cfg).eval()
    hf.save_pretrained(tmp_path / "hf_rm")
    model, _ = olmo2.load(tmp_path / "hf_rm")
    assert isinstance(model, Olmo2Reward)
    for left in (False, True):
        ids = padded(rows(1), left)
        with torch.no_grad():
            theirs = hf(input_ids=ids, attention_mask=(ids != PAD).long()).logits.squeeze(-1)
            torch.testing.assert_close(sequence_scores(model, ids, PAD), theirs, atol=1e-5, rtol=0)


def test_right_padding_needs_no_mask_and_left_padding_gets_one():
    right, left = padded(rows(), False), padded(rows(), True)
    assert padded_inputs(right, PAD) == {}
    got = padded_inputs(left, PAD)
    assert got["positions"][1].tolist() == [0] * 5 + [0, 1, 2, 3]  # 5 pads, then 4 tokens
    mask = got["attn_mask"][1, 0]
    assert not mask[8, :5].any() and mask[8, 5:].all() and mask[2, 2] and mask[2].sum() == 1


def test_backbone_from_a_causal_lm_keeps_a_fresh_head(tmp_path):
    lm = random_model(CFG)
    path = save_pretrained(lm, tmp_path / "lm")
    torch.manual_seed(0)
    rm = Olmo2Reward.build(CFG)
    head = rm.score.weight.detach().clone()
    load_weights(rm, path)
    assert torch.equal(rm.score.weight, head)
    assert torch.equal(rm.blocks[1].attention.w_q.weight, lm.blocks[1].attention.w_q.weight)
    with pytest.raises(ValueError, match="causal LM, not a reward model"):
        load_reward_model(path)


def test_wrong_head_shape_is_refused(tmp_path):
    path = save_pretrained(random_reward(), tmp_path / "rm")
    sd = load_file(path / "model.safetensors")
    sd["score.weight"] = torch.zeros(2, CFG.d_model)
    save_file(sd, str(path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"score.weight has shape \[2, 64\].*num_labels 1"):
        check_reward_checkpoint(path, CFG)
    with pytest.raises(ValueError, match="score.weight has shape"):
        olmo2.load(path)
    no_pad = ModelConfig.debug(**{**CFG.to_dict(), "pad_token_id": None})
    with pytest.raises(ValueError, match="no pad_token_id"):
        check_reward_checkpoint(save_pretrained(random_reward(), tmp_path / "ok"), no_pad)
