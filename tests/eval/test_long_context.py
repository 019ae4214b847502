"""Long-context tasks (`olmo2.eval.tasks.long_context`): prompt formats and lengths, scoring,
position-bucket bits per byte against a plain forward, registry and plot."""

from __future__ import annotations

import math

import pytest
import torch

from olmo2.eval.harness import Harness, evaluate
from olmo2.eval.tasks import get_task, resolve
from olmo2.eval.tasks.long_context import (
    NIAH_NEEDLE,
    PASSKEY_FILLER,
    PASSKEY_QUESTION,
    buckets,
    plot_bpb_by_position,
)
from olmo2.model.loss import token_logps


def test_passkey_prompts_follow_landmark_attention_and_fill_the_length(data_dir, dolma2):
    task = get_task("passkey__2048")
    docs = task.docs(data_dir)
    assert len(docs) == 50 and docs == get_task("passkey__2048").docs(data_dir)  # seeded
    for d in docs[:5]:
        lines = d.prompt.split("\n")
        assert len(lines) == 5 and lines[-1] == PASSKEY_QUESTION
        assert lines[2] == f"The pass key is {d.answer}. Remember it. {d.answer} is the pass key."
        assert PASSKEY_FILLER in lines[1] + lines[3]
        # at most L - max_gen_toks dolma2 tokens, short of it by less than one filler unit
        assert 2048 - 10 - 25 < len(dolma2.encode(d.prompt)) <= 2048 - 10
    assert len({d.extra["depth"] for d in docs}) == 50  # the needle moves
    assert task.score_one(docs[0], f" {docs[0].answer}. Remember") == {"acc": 1.0}
    assert task.score_one(docs[0], " 1") == {"acc": 0.0}


@pytest.mark.parametrize("name,n_keys", [("single", 1), ("multikey", 4)])
def test_needle_prompts_follow_ruler(data_dir, dolma2, name, n_keys):
    docs = get_task(f"ruler_niah_{name}__1024").docs(data_dir)
    for d in docs[:5]:
        assert d.prompt.startswith("A special magic number is hidden within the following text.")
        query = d.prompt.rsplit("The special magic number for ", 1)[1].split(" ")[0]
        assert d.prompt.endswith(f"for {query} mentioned in the provided text is")
        needle = NIAH_NEEDLE.format(type_needle_v="numbers", key=query, value=d.answer)
        assert needle in d.prompt and d.prompt.count("One of the special magic numbers") == n_keys
        assert 1024 - 50 - 120 < len(dolma2.encode(d.prompt)) <= 1024 - 50
    task = get_task(f"ruler_niah_{name}__1024")
    assert task.score_one(docs[0], f" {docs[0].answer}.") == {"recall": 1.0}
    assert task.score_one(docs[0], " 123") == {"recall": 0.0}


def test_buckets():
    assert buckets(1024) == [(1, 256), (256, 512), (512, 1024)]
    assert buckets(8192)[-1] == (8192 - 2048, 8192)  # wide buckets keep their last 2048


def test_position_bpb_equals_a_plain_forward(tiny_model, dolma2, data_dir):
    """Each bucket's bits per byte from the harness equals the same positions' log-probs of
    one plain forward over the whole window (the buckets' contexts are the window's start,
    so the same tokens sit at the same positions): 1e-4 relative, the harness's packed
    forwards summing in another order."""
    task = get_task("long_bpb__1024", limit=1)
    docs = task.docs(data_dir)
    reqs = task.requests(docs)
    assert "".join(r.continuation for r in reqs) == docs[0]["text"][docs[0]["cut"][1] :]
    got = task.score(docs, reqs, Harness(tiny_model, dolma2, progress=False).loglikelihood(
        [(r.context, r.continuation) for r in reqs]))  # fmt: skip
    ids = dolma2.encode(docs[0]["text"])
    assert len(ids) == 1024  # the window re-encodes to its own tokens
    with torch.no_grad():
        logits = tiny_model(torch.tensor([ids]))[0, :-1]
    lp = token_logps(logits, torch.tensor(ids[1:]))
    cut, text = docs[0]["cut"], docs[0]["text"]
    for a, b in buckets(1024):
        nbytes = len(text[cut[a] : cut[b]].encode("utf-8"))
        want = -float(lp[a - 1 : b - 1].sum()) / (nbytes * math.log(2))
        assert got[f"bits_per_byte@{a}-{b}"] == pytest.approx(want, rel=1e-4)
    assert got["num_docs"] == 1


def test_tasks_run_through_evaluate_and_plot(tiny_model, dolma2, data_dir, tmp_path):
    leaves, suites = resolve(["long_context__1024", "long_bpb__1024"])
    assert leaves[:3] == ["passkey__1024", "ruler_niah_single__1024", "ruler_niah_multikey__1024"]
    assert [s.key for s in suites] == ["long_context__1024"]
    keys = ["long_context__1024", "long_bpb__1024"]
    res = evaluate(Harness(tiny_model, dolma2, progress=False), keys, data_dir, limit=1)
    assert 0 <= res["suites"]["long_context__1024"]["score"] <= 1
    bpb = res["tasks"]["long_bpb__1024"]["metrics"]
    # a random model: ~log2(100352) = 16.6 bits per token, ~4 bytes per dolma2 token
    assert 3 < bpb["bits_per_byte"] < 6
    png = plot_bpb_by_position({"tiny": res}, tmp_path / "bpb.png", context=512)
    assert png.stat().st_size > 1000
