"""DPO: row forms, cached vs live reference, margins go up, bad rows."""

from __future__ import annotations

import gzip
import json
import math

import pytest
import torch

from olmo2.cli import main as olmo2_main
from olmo2.model.hf import load_model
from olmo2.post.data import BadRow, PostDataSection, RowErrors, preference_pair
from olmo2.post.dpo import (
    DPOObjective,
    PairExample,
    collate_pairs,
    pair_sampler,
    reference_logps,
    tokenize_pairs,
    with_reference,
)
from tests.post.helpers import tiny_checkpoint, tiny_tokenizer, write_jsonl

PAIRS = [
    {"prompt": f"what is {w}?", "chosen": f"{w} is good", "rejected": f"{w} is bad bad bad"}
    for w in ["fox", "dog", "hello", "the", "you", "fine", "quick", "lazy"]
]


def test_preference_row_forms(data_dir):
    hh = json.loads(
        gzip.open(data_dir / "posttrain" / "hh_rlhf_harmless_base_test.jsonl.gz", "rt").readline()
    )
    prompt, ch, rj = preference_pair(hh)
    assert prompt[0]["role"] == "user" and prompt[-1]["role"] == "user"
    assert hh["chosen"].endswith(ch) and hh["rejected"].endswith(rj)
    assert hh["chosen"].startswith("\n\nHuman: " + prompt[0]["content"])
    rasbt = json.loads(
        (data_dir / "posttrain" / "rasbt_instruction_data_with_preference.json").read_text()
    )[1]
    prompt, ch, rj = preference_pair(rasbt)
    assert prompt == [{"role": "user", "content": rasbt["instruction"] + "\n\n" + rasbt["input"]}]
    assert (ch, rj) == (rasbt["chosen"], rasbt["rejected"])
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    prompt, ch, rj = preference_pair(
        {"chosen": msgs, "rejected": msgs[:1] + [{"role": "assistant", "content": "b"}]}
    )
    assert prompt == msgs[:1] and (ch, rj) == ("a", "b")
    with pytest.raises(BadRow, match="empty"):
        preference_pair({"prompt": "q", "chosen": " ", "rejected": "x"})


def _model(seed):
    from olmo2.model.transformer import Olmo2
    from tests.post.helpers import tiny_config

    torch.manual_seed(seed)
    return Olmo2.build(tiny_config())


@pytest.mark.parametrize("loss", ["dpo", "dpo_norm"])
def test_cached_reference_equals_live_reference(tmp_path, loss):
    tok = tiny_tokenizer()
    path = write_jsonl(tmp_path / "p.jsonl", PAIRS)
    ex = tokenize_pairs(tok, PostDataSection(paths=[str(path)], seq_len=64), RowErrors())
    policy, ref = _model(0), _model(1)
    cache = reference_logps(ref, ex, tok.pad_token_id, batch_size=3, device="cpu")
    idx = pair_sampler(ex, PostDataSection(global_batch_size=8)).next_rows()
    batch = with_reference(collate_pairs(ex, idx, tok.pad_token_id), cache)
    cached, m1 = DPOObjective(loss, 0.5).loss(policy, batch)
    live, m2 = DPOObjective(loss, 0.5, reference=ref).loss(policy, batch)
    assert cached.item() == pytest.approx(live.item(), rel=1e-5)
    assert m1["rewards/margin"].item() == pytest.approx(
        m2["rewards/margin"].item(), rel=1e-4, abs=1e-6
    )
    # the cache holds per-response token counts: dpo_norm divides by them
    assert (cache[:, :, 1] > 0).all() and (cache[:, 0, 1] < cache[:, 1, 1]).all()


@pytest.mark.parametrize("loss", ["dpo", "dpo_norm"])
def test_dpo_objective_loss_rewards_margins_by_hand(loss):
    """DPOObjective on fixed logits and cached reference values vs a hand computation:
    `dpo` on summed response log-probs, `dpo_norm` on per-token means."""
    ex = [
        PairExample([2, 5, 6, 7], [-100, 6, 7, -100], [2, 5, 8, 9, 4], [-100, 8, 9, 4, -100]),
        PairExample([3, 4, 5], [-100, 5, -100], [3, 4, 9], [-100, 9, -100]),
    ]
    batch = collate_pairs(ex, [0, 1], pad=1)
    ref = torch.tensor([[[-4.0, 2], [-9.0, 3]], [[-1.5, 1], [-2.0, 1]]], dtype=torch.float64)
    batch["ref_chosen"], batch["ref_rejected"] = ref[:, 0], ref[:, 1]
    torch.manual_seed(0)
    logits = torch.randn(4, batch["chosen_ids"].shape[1], 12)
    beta = 0.7
    loss_sum, metrics = DPOObjective(loss, beta).loss(lambda ids: logits, batch)
    labels = torch.cat([batch["chosen_labels"], batch["rejected_labels"]])
    lp = logits.log_softmax(-1)

    def seq(row, r_sum, r_n):
        toks = [float(lp[row, t, y]) for t, y in enumerate(labels[row].tolist()) if y != -100]
        if loss == "dpo_norm":
            return sum(toks) / len(toks), r_sum / r_n
        return sum(toks), r_sum

    want = {"loss": 0.0, "chosen": 0.0, "rejected": 0.0, "acc": 0.0}
    for i in range(2):
        pc, rc = seq(i, *ref[i, 0].tolist())
        pr, rr = seq(2 + i, *ref[i, 1].tolist())
        z = beta * ((pc - pr) - (rc - rr))
        want["loss"] += math.log1p(math.exp(-z))
        want["chosen"] += beta * (pc - rc)
        want["rejected"] += beta * (pr - rr)
        want["acc"] += float(beta * (pc - rc) > beta * (pr - rr))
    assert loss_sum.item() == pytest.approx(want["loss"], rel=1e-5)
    assert metrics["rewards/chosen"].item() == pytest.approx(want["chosen"], rel=1e-5)
    assert metrics["rewards/rejected"].item() == pytest.approx(want["rejected"], rel=1e-5)
    assert metrics["rewards/margin"].item() == pytest.approx(
        want["chosen"] - want["rejected"], rel=1e-5, abs=1e-6
    )
    assert metrics["rewards/accuracy"].item() == want["acc"]


def dpo_args(tmp_path, init, data, *extra, steps=6):
    return [
        "dpo", "recipes/demo-dpo.yaml", f"model.load_path={init}", f"data.paths=[{data}]",
        f"trainer.run_dir={tmp_path / 'run'}", f"trainer.max_steps={steps}", "data.epochs=null",
        "data.seq_len=64", "data.global_batch_size=4", "data.micro_batch_size=2", "optim.lr=3e-3",
        "logging.progress_bar=false", "logging.report=false", "logging.peak_flops=1e11", *extra,
    ]  # fmt: skip


def test_dpo_cli_raises_margin_and_counts_bad_rows(tmp_path, capsys):
    init = tiny_checkpoint(tmp_path)
    rows = PAIRS + [{"prompt": "q", "chosen": "", "rejected": "x"}, {"prompt": "q", "chosen": "a"}]
    data = write_jsonl(tmp_path / "p.jsonl", rows)
    assert olmo2_main(dpo_args(tmp_path, init, data)) == 0
    out = capsys.readouterr().out
    assert "2 bad rows skipped" in out and "empty chosen/rejected" in out and "row 9" in out
    m = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert m[0]["rewards/margin"] == pytest.approx(0.0, abs=1e-5)  # policy == reference at step 1
    assert m[-1]["rewards/margin"] > 0.05 and m[-1]["loss"] < m[0]["loss"]
    assert len(list((tmp_path / "run").glob("ref_logps-*.pt"))) == 1
    ckpt = max((tmp_path / "run").glob("dpo-step*"))
    assert load_model(ckpt).config.d_model == 32
    assert olmo2_main(dpo_args(tmp_path / "strict", init, data, "--strict")) == 2
    assert "row 9: empty chosen/rejected" in capsys.readouterr().err
