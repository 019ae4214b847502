"""The harness: packed scoring equals independent references; batching does not change
results; caching, truncation, generation and bad input."""

from __future__ import annotations

import pytest
import torch

from olmo2.eval.formats import Request
from olmo2.eval.harness import Harness, encode_pair, evaluate, naive_loglikelihood
from olmo2.eval.tasks import get_task

PAIRS = [
    ("Question: Which is a mammal?\nAnswer:", " whale"),
    ("Question: Which is a mammal?\nAnswer:", " shark"),
    ("Question: Which is a mammal?\nAnswer:", " a very small trout"),
    ("Answer:", " whale"),
    ("Answer:", " shark"),
    ("The capital of France is ", "Paris."),  # trailing space moves to the continuation
    ("", "An empty context is conditioned on EOS."),
]


def test_encode_pair_moves_trailing_space(dolma2):
    ctx, cont = encode_pair(dolma2, "The capital is ", "Paris")
    assert dolma2.decode(ctx) == "The capital is" and dolma2.decode(cont) == " Paris"
    ctx, _ = encode_pair(dolma2, "", "Hello")
    assert ctx == [dolma2.eos_token_id]


def test_packed_scores_equal_separate_forwards(tiny_model, dolma2):
    packed = Harness(tiny_model, dolma2, progress=False).loglikelihood(PAIRS)
    naive = naive_loglikelihood(tiny_model, dolma2, PAIRS)
    for p, n in zip(packed, naive, strict=True):
        assert p.logprob == pytest.approx(n.logprob, abs=1e-4)
        assert (p.is_greedy, p.num_tokens) == (n.is_greedy, n.num_tokens)


def test_scores_match_transformers(tiny_model, dolma2, tmp_path):
    """Independent reference: the same weights in transformers' Olmo2ForCausalLM."""
    transformers = pytest.importorskip("transformers")
    from olmo2.model.hf import save_pretrained

    save_pretrained(tiny_model, tmp_path / "ckpt")
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "ckpt", dtype=torch.float32
    ).eval()
    ours = Harness(tiny_model, dolma2, progress=False).loglikelihood(PAIRS)
    with torch.no_grad():
        for (c, x), r in zip(PAIRS, ours, strict=True):
            ctx, cont = encode_pair(dolma2, c, x)
            logits = hf(torch.tensor([ctx + cont])).logits[0, len(ctx) - 1 : -1].float()
            ref = logits.log_softmax(-1).gather(1, torch.tensor(cont)[:, None]).sum().item()
            assert r.logprob == pytest.approx(ref, abs=1e-4)


def test_batch_size_one_equals_auto(tiny_model, dolma2, data_dir):
    task = get_task("arc_easy:rc::olmes", split="validation")
    reqs = task.requests(task.docs(data_dir, limit=4))
    pairs = [(r.context, r.continuation) for r in reqs] + PAIRS
    one = Harness(tiny_model, dolma2, batch_size=1, progress=False).loglikelihood(pairs)
    auto = Harness(tiny_model, dolma2, batch_size="auto", progress=False).loglikelihood(pairs)
    for a, b in zip(one, auto, strict=True):
        assert a.logprob == pytest.approx(b.logprob, rel=1e-6, abs=1e-6)
        assert a.is_greedy == b.is_greedy


def test_one_forward_per_unique_context(tiny_model, dolma2, monkeypatch):
    h = Harness(tiny_model, dolma2, batch_size=1, progress=False)
    rows = []
    orig = h._forward_packed
    monkeypatch.setattr(
        h, "_forward_packed", lambda groups: rows.append(len(groups)) or orig(groups)
    )
    h.loglikelihood(PAIRS + PAIRS[:2])  # duplicates are scored once
    assert len(rows) == 4  # 4 distinct contexts, batch size 1


def test_many_continuations_are_split_and_truncation_keeps_continuation(tiny_model, dolma2):
    pairs = [("Answer:", f" option number {i}") for i in range(300)]
    h = Harness(tiny_model, dolma2, progress=False)
    assert len(h._groups(pairs)) > 1
    packed = h.loglikelihood(pairs[:5])
    assert [r.logprob for r in packed] == pytest.approx(
        [r.logprob for r in naive_loglikelihood(tiny_model, dolma2, pairs[:5])], abs=1e-4
    )
    long_ctx = "word " * 100
    refuse = Harness(tiny_model, dolma2, max_length=16, progress=False)  # the default rule
    with pytest.raises(ValueError, match=r"is 102 tokens .* more than the model's context of 16"):
        refuse.loglikelihood([(long_ctx, " end")])
    with pytest.raises(ValueError, match="105 > the model's context of 16 tokens"):
        refuse.generate([Request(long_ctx, kind="generate", stop=("\n",), max_gen_toks=4)])
    short = Harness(tiny_model, dolma2, max_length=16, progress=False, truncate=True)
    r = short.loglikelihood([(long_ctx, " end")])[0]
    ctx, cont = encode_pair(dolma2, long_ctx, " end")
    ids = torch.tensor([(ctx + cont)[-16:]])
    ref = (
        tiny_model(ids)[0, -len(cont) - 1 : -1]
        .log_softmax(-1)
        .gather(1, torch.tensor(cont)[:, None])
        .sum()
    )
    assert r.logprob == pytest.approx(ref.item(), abs=1e-4)
    # only the context is ever cut: a continuation that cannot fit is refused, not shortened
    # (bits per byte would count bytes whose tokens were never scored)
    with pytest.raises(ValueError, match="continuation alone is .* only the context"):
        short.loglikelihood([("Answer:", " word" * 20)])


def test_cache_answers_a_second_run(tiny_model, dolma2, tmp_path, monkeypatch):
    h = Harness(tiny_model, dolma2, cache_path=tmp_path / "c.sqlite", progress=False)
    first = h.loglikelihood(PAIRS)
    h2 = Harness(tiny_model, dolma2, cache_path=tmp_path / "c.sqlite", progress=False)
    monkeypatch.setattr(h2, "_forward_packed", lambda g: pytest.fail("should be cached"))
    assert h2.loglikelihood(PAIRS) == first


def test_generate_matches_model_generate_and_cuts_at_stop(tiny_model, dolma2):
    from olmo2.infer.generate import generate

    prompt = "Question: 2+2?\nAnswer:"
    ids = dolma2.encode(prompt)
    ref = dolma2.decode(
        generate(tiny_model, [ids], max_new_tokens=12, eos_token_id=dolma2.eos_token_id)[0]
    )
    h = Harness(tiny_model, dolma2, progress=False)
    out = h.generate([Request(prompt, kind="generate", max_gen_toks=12)])[0]
    assert out == ref.replace("<|endoftext|>", "")
    if len(ref) > 3:
        stop = ref[2:4]
        cut = h.generate([Request(prompt, kind="generate", stop=(stop,), max_gen_toks=12)])[0]
        assert cut == ref[: ref.find(stop)]


def test_vocab_mismatch_is_a_clear_error(dolma2):
    from olmo2.model.config import ModelConfig
    from olmo2.model.transformer import Olmo2

    small = Olmo2.build(ModelConfig.debug())
    with pytest.raises(ValueError, match="do not belong together"):
        Harness(small, dolma2)


def test_evaluate_runs_tasks_and_suites(tiny_model, dolma2, data_dir, tmp_path):
    h = Harness(tiny_model, dolma2, progress=False)
    res = evaluate(
        h, ["arc_easy::olmes", "copa"], data_dir, limit=3, dump_requests=tmp_path / "r.jsonl"
    )
    assert set(res["tasks"]) == {"arc_easy:mc::olmes", "arc_easy:rc::olmes", "copa:rc::olmes"}
    rc = res["tasks"]["arc_easy:rc::olmes"]
    assert rc["primary_metric"] == "acc_per_char" and rc["metrics"]["num_docs"] == 3
    assert {"acc_raw", "acc_per_token", "acc_per_char", "acc_per_byte", "acc_uncond"} <= set(
        rc["metrics"]
    )
    best = res["suites"]["arc_easy::olmes"]
    scores = {
        k: res["tasks"][k]["primary_score"] for k in ("arc_easy:mc::olmes", "arc_easy:rc::olmes")
    }
    assert best["score"] == max(scores.values()) and scores[best["best"]] == best["score"]
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 3 * 4 + 3 * 8 + 3 * 4


def test_unknown_task_suggests_close_matches():
    with pytest.raises(ValueError, match="arc_challenge"):
        get_task("arc_chalenge:rc::olmes")


def test_missing_data_file_names_file_and_hub_id(tmp_path):
    with pytest.raises(FileNotFoundError, match="piqa.*ybisk/piqa"):
        get_task("piqa:rc::olmes").docs(tmp_path)


def test_training_mode_is_restored(tiny_model, dolma2):
    tiny_model.train()
    try:
        Harness(tiny_model, dolma2, progress=False).loglikelihood(PAIRS[:1])
        assert tiny_model.training
    finally:
        tiny_model.eval()


def test_sampled_generation_is_seeded_and_cached(tiny_model, dolma2, tmp_path, monkeypatch):
    reqs = [
        Request("def f(x):", kind="generate", max_gen_toks=6, temperature=1.0, top_p=0.95, idx=i)
        for i in range(3)
    ]
    h = Harness(tiny_model, dolma2, cache_path=tmp_path / "c.sqlite", progress=False)
    first = h.generate(reqs)
    assert len(set(first)) > 1  # samples of one prompt differ
    again = Harness(tiny_model, dolma2, progress=False).generate(reqs)
    assert again == first  # same seed, same batches: same samples
    h2 = Harness(tiny_model, dolma2, cache_path=tmp_path / "c.sqlite", progress=False)
    monkeypatch.setattr(h2, "_generate_batch", lambda *a: pytest.fail("should be cached"))
    assert h2.generate(reqs) == first
