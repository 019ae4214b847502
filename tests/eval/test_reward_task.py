"""The reward-model eval task: pairwise accuracy and margin equal a hand computation with
transformers' `Olmo2ForSequenceClassification`; the held-out rule is the documented hash; an
RM task on a causal LM (and an LM task or perplexity on an RM) is refused by name."""

from __future__ import annotations

import gzip
import hashlib
import json

import pytest
import torch

from olmo2.cli import main as olmo2_main
from olmo2.eval.tasks.reward import HELDOUT_FRACTION, HELDOUT_SEED, HH_HARMLESS, is_heldout
from olmo2.model.hf import save_pretrained
from olmo2.model.reward import Olmo2Reward
from olmo2.tokenizer import render_chat
from tests.post.helpers import tiny_checkpoint, tiny_config, tiny_tokenizer

PAIRS = [
    {"prompt": "what is a fox?", "chosen": "a quick brown fox", "rejected": "the dog"},
    {"prompt": "say hello", "chosen": "hello there", "rejected": "hello there, how are you?"},
    {
        "chosen": "\n\nHuman: hi\n\nAssistant: fine, thank you.",
        "rejected": "\n\nHuman: hi\n\nAssistant: bad",
    },  # fmt: skip
    {"prompt": "is 3+4 7?", "chosen": "it is 7.", "rejected": "abc is cba."},
    {"prompt": "empty", "chosen": "", "rejected": "x"},  # unusable: skipped, counted
    {"prompt": "lazy?", "chosen": "the lazy dog", "rejected": "I am fine"},
]


@pytest.fixture
def setup(tmp_path):
    torch.manual_seed(4)
    rm = Olmo2Reward.build(tiny_config())
    ckpt = save_pretrained(rm, tmp_path / "rm", tokenizer=tiny_tokenizer())
    data = tmp_path / "data"
    (data / HH_HARMLESS).parent.mkdir(parents=True)
    with gzip.open(data / HH_HARMLESS, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in PAIRS)
    return ckpt, data


def hand_scores(ckpt) -> list[tuple[float, float]]:
    """(r_chosen, r_rejected) of each usable pair: every conversation alone through
    transformers, rendered with the chat template."""
    from transformers import AutoModelForSequenceClassification

    hf = AutoModelForSequenceClassification.from_pretrained(ckpt, dtype=torch.float32).eval()
    tok = tiny_tokenizer()
    prompts = [[{"role": "user", "content": r["prompt"]}] if "prompt" in r else None for r in PAIRS]
    prompts[2] = [{"role": "user", "content": "hi"}]
    replies = [(r["chosen"], r["rejected"]) for r in PAIRS]
    replies[2] = ("fine, thank you.", "bad")
    out = []
    for i, (p, (c, r)) in enumerate(zip(prompts, replies)):
        if i == 4:
            continue
        pair = []
        for reply in (c, r):
            ids = tok.encode(render_chat(p + [{"role": "assistant", "content": reply}])[0])
            with torch.no_grad():
                pair.append(hf(input_ids=torch.tensor([ids])).logits[0, 0].item())
        out.append(tuple(pair))
    return out


def test_accuracy_and_margin_equal_a_hand_computation(setup, tmp_path):
    ckpt, data = setup
    out = tmp_path / "r.json"
    args = ["eval", "--model", str(ckpt), "--tasks", "hh_rlhf_harmless:rm::all",
            "--data-dir", str(data), "--output", str(out), "--batch-size", "3"]  # fmt: skip
    assert olmo2_main(args) == 0
    m = json.loads(out.read_text())["tasks"]["hh_rlhf_harmless:rm::all"]["metrics"]
    scores = hand_scores(ckpt)
    margins = [c - r for c, r in scores]
    assert m["num_docs"] == 5 and m["skipped"] == 1
    assert m["accuracy"] == sum(x > 0 for x in margins) / 5
    assert m["margin"] == pytest.approx(sum(margins) / 5, abs=1e-5)
    assert 0 < m["accuracy"] < 1  # the random head orders some pairs each way


def test_heldout_rule_is_the_documented_hash():
    prompt = [{"role": "user", "content": "what is a fox?"}]
    key = json.dumps([["user", "what is a fox?"]])
    h = int.from_bytes(hashlib.sha256(f"{HELDOUT_SEED}\n{key}".encode()).digest()[:8], "big")
    assert is_heldout(prompt) == (h / 2**64 < HELDOUT_FRACTION)
    assert is_heldout(prompt, 1.0) and not is_heldout(prompt, 0.0)
    sides = [is_heldout([{"role": "user", "content": f"q{i}"}]) for i in range(2000)]
    assert 0.08 < sum(sides) / len(sides) < 0.12


def test_heldout_task_scores_only_heldout_pairs(setup, tmp_path):
    from olmo2.eval.tasks import get_task

    _, data = setup
    docs = get_task("hh_rlhf_harmless:rm::heldout").docs(data, limit=0)
    assert all(is_heldout(d.prompt) for d in docs)
    assert len(get_task("hh_rlhf_harmless:rm::all").docs(data, limit=0)) == 5


def test_model_kind_mismatch_is_refused(setup, tmp_path, capsys):
    ckpt, data = setup
    lm = tiny_checkpoint(tmp_path)
    base = ["eval", "--data-dir", str(data)]
    assert olmo2_main([*base, "--model", str(lm), "--tasks", "hh_rlhf_harmless:rm::all"]) == 2
    assert "scores preference pairs with a reward model" in capsys.readouterr().err
    assert olmo2_main([*base, "--model", str(ckpt), "--tasks", "lambada::olmes"]) == 2
    assert "lambada::olmes needs a causal LM" in capsys.readouterr().err
    text = tmp_path / "t.txt"
    text.write_text("hello there\n")
    args = [*base, "--model", str(ckpt), "--tasks", "hh_rlhf_harmless:rm::all"]
    assert olmo2_main([*args, "--perplexity", str(text)]) == 2
    assert "--perplexity needs a causal LM" in capsys.readouterr().err


def test_pairs_longer_than_the_context_are_skipped_unless_truncate(setup, tmp_path):
    ckpt, data = setup
    rows = PAIRS + [{"prompt": "long", "chosen": "fox dog " * 200, "rejected": "x"}]
    with gzip.open(data / HH_HARMLESS, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    base = ["eval", "--model", str(ckpt), "--tasks", "hh_rlhf_harmless:rm::all",
            "--data-dir", str(data), "--output", str(tmp_path / "r.json")]  # fmt: skip
    for extra, docs, too_long in (([], 5, 1), (["--truncate"], 6, 0)):
        assert olmo2_main(base + extra) == 0
        m = json.loads((tmp_path / "r.json").read_text())["tasks"]["hh_rlhf_harmless:rm::all"]
        assert (m["metrics"]["num_docs"], m["metrics"]["too_long"]) == (docs, too_long)
