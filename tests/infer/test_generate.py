"""Batched KV-cache generation against transformers' generate and against full recomputation."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from olmo2.cli import main
from olmo2.infer.generate import (
    SHARED_PREFIX_MIN,
    Drain,
    SamplingConfig,
    generate,
    sample,
    shared_prefix_len,
    stream,
)
from tests.model.helpers import save_random, tiny_bpe

PROMPTS = [[5, 17, 99, 3, 250, 7, 8], [42], [11, 12, 13, 14]]


def _cut(seq, eos):
    return seq[: seq.index(eos) + 1] if eos in seq else seq


@pytest.mark.parametrize("key", ["gqa", "wide"])
def test_greedy_batch_matches_transformers(tmp_path, key):
    model, path = save_random(tmp_path, key, seed=3)
    eos = model.config.eos_token_id
    ours = generate(model, PROMPTS, max_new_tokens=32)
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    P = max(map(len, PROMPTS))
    pad = model.config.pad_token_id
    ids = torch.tensor([[pad] * (P - len(p)) + p for p in PROMPTS])
    mask = torch.tensor([[0] * (P - len(p)) + [1] * len(p) for p in PROMPTS])
    with torch.no_grad():
        out = hf.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=32,
            do_sample=False,
            pad_token_id=pad,
            eos_token_id=eos,
        )
    theirs = [_cut(row[P:].tolist(), eos) for row in out]
    assert [_cut(o, eos) for o in ours] == theirs
    assert sum(len(o) for o in ours) > 40  # really generated something


def test_cached_decoding_equals_full_recomputation(tmp_path):
    model, _ = save_random(tmp_path, "odd", seed=1)
    cfg = SamplingConfig(max_new_tokens=12)
    got = [[] for _ in PROMPTS]
    for step in stream(model, PROMPTS, cfg):  # no stop ids: always 12 tokens
        for i, t in enumerate(step):
            got[i].append(t)
    for prompt, new in zip(PROMPTS, got):
        seq = list(prompt)
        for _ in range(12):  # full recomputation, one prompt at a time
            with torch.no_grad():
                seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
        assert seq[len(prompt) :] == new


def test_shared_prefix_len_rule():
    long = tuple(range(2, 2 + SHARED_PREFIX_MIN + 4))
    assert shared_prefix_len([long + (7,), long + (8, 9)]) == len(long)
    assert shared_prefix_len([long, long + (8, 9)]) == len(long) - 1  # each keeps a token
    assert shared_prefix_len([long + (7,)]) == 0  # one prompt: nothing to share
    short = long[: SHARED_PREFIX_MIN - 1]
    assert shared_prefix_len([short + (7,), short + (8,)]) == 0


@pytest.mark.parametrize("key", ["gqa", "odd"])
def test_shared_prefix_prefill_matches_transformers(tmp_path, key):
    """Few-shot prompts: a 24-token prefix common to every row is prefilled once, then each
    row's own tokens after its padding; greedy output equals transformers' batched generate
    with plain left padding."""
    model, path = save_random(tmp_path, key, seed=4)
    prefix = [(7 * i) % 300 + 2 for i in range(24)]
    prompts = [prefix + [5, 17, 99, 3], prefix + [42], prefix + [11, 12, 13, 14, 15, 16]]
    assert shared_prefix_len([tuple(p) for p in prompts]) == 24
    ours = generate(model, prompts, max_new_tokens=16, eos_token_id=-1)
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    P, pad = max(map(len, prompts)), model.config.pad_token_id
    ids = torch.tensor([[pad] * (P - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (P - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        out = hf.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=16, min_new_tokens=16,
            do_sample=False, pad_token_id=pad,
        )  # fmt: skip
    assert ours == [row[P:].tolist() for row in out]


def test_repeated_prompts_are_prefilled_once_with_the_same_result(tmp_path):
    """Identical prompts (a GRPO group) share one prefill; their cache rows are repeated."""
    model, _ = save_random(tmp_path, "gqa", seed=3)
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[0], PROMPTS[2], PROMPTS[1]]
    got = generate(model, prompts, max_new_tokens=12, eos_token_id=-1)
    assert got == [generate(model, [p], max_new_tokens=12, eos_token_id=-1)[0] for p in prompts]
    sampled = generate(model, [PROMPTS[0]] * 64, max_new_tokens=4, temperature=1.0, seed=0)
    assert len({tuple(x) for x in sampled}) > 1  # repeated rows still sample independently


def test_sampling_is_seeded_and_filters():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]]).repeat(4000, 1)
    cfg = SamplingConfig(temperature=1.0, top_k=2, seed=0)
    a = sample(logits, cfg, torch.Generator().manual_seed(0))
    b = sample(logits, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and set(a.tolist()) == {2, 3}
    # top-p 0.6: p(3)=0.644 alone reaches 0.6 -> only token 3
    top_p = sample(
        logits, SamplingConfig(temperature=1.0, top_p=0.6), torch.Generator().manual_seed(0)
    )
    assert set(top_p.tolist()) == {3}
    # plain temperature sampling follows softmax: token 3 frequency ~ 0.644
    freq = (
        (sample(logits, SamplingConfig(temperature=1.0), torch.Generator().manual_seed(1)) == 3)
        .float()
        .mean()
    )
    assert abs(freq.item() - 0.6439) < 0.03


def test_stop_ids_end_rows(tmp_path):
    model, _ = save_random(tmp_path, "mha", seed=2)
    first = generate(model, [PROMPTS[0]], max_new_tokens=8, eos_token_id=-1)[0]
    stopped = generate(
        model, [PROMPTS[0]], max_new_tokens=8, eos_token_id=-1, stop_token_ids=[first[2]]
    )[0]
    assert stopped == first[: first.index(first[2]) + 1]


def test_cli_generate_int8(tmp_path, capsys):
    _, path = save_random(tmp_path, "mha", seed=2)
    (path / "tokenizer.json").write_text(json.dumps(tiny_bpe()))
    args = ["generate", "--model", str(path), "--device", "cpu", "--quantize", "int8"]
    rc = main([*args, "--prompt", "the quick", "--prompt", "lazy dog", "--max-new-tokens", "4"])
    out = capsys.readouterr().out
    assert rc == 0 and "--- 'the quick'\n" in out and "--- 'lazy dog'\n" in out


def test_drain_holds_back_partial_stops_and_characters(dolma2_tok):
    """Streaming release never sends a partial UTF-8 character or what may start a stop
    string; the released pieces add up to the text before the stop string."""
    text = "Hello wörld, naïve 猫 END here"
    ids = dolma2_tok.encode(text)
    drain, sent = Drain(dolma2_tok, ["END"]), ""
    for t in ids:
        stopped = drain.push(t)
        delta = drain.release()
        assert "\ufffd" not in delta
        sent += delta
        if stopped:
            break
    assert drain.finish_reason == "stop" and sent == drain.text == "Hello wörld, naïve 猫 "
    assert drain.tokens == ids[: len(drain.tokens)] and len(drain.tokens) < len(ids)
    drain = Drain(dolma2_tok, [], [dolma2_tok.eos_token_id])
    pieces = [drain.release() for t in [*ids, dolma2_tok.eos_token_id] if not drain.push(t)]
    assert drain.finish_reason == "stop" and "".join(pieces) + drain.release() == text


def test_drain_stop_string_across_tokens_and_eos(dolma2_tok):
    """A stop string split over several tokens ends the row at the token completing it; the
    EOS that ends a row stays in `tokens` but not in `text`; a row out of tokens is "length"."""
    ids = dolma2_tok.encode("a\n\nQuestion: b")
    drain = Drain(dolma2_tok, ["\n\nQuestion:"], [dolma2_tok.eos_token_id])
    n = next(i for i, t in enumerate(ids) if drain.push(t)) + 1
    assert drain.text == "a" and dolma2_tok.decode(ids[:n]).endswith("Question:")
    drain = Drain(dolma2_tok, [], [dolma2_tok.eos_token_id])
    assert not drain.push(ids[0]) and drain.push(dolma2_tok.eos_token_id)
    assert drain.tokens == [ids[0], dolma2_tok.eos_token_id] and drain.text == "a"
    drain = Drain(dolma2_tok)
    drain.push(ids[0])
    drain.end()
    assert drain.finish_reason == "length" and drain.text == "a"


def test_cli_generate_refuses_a_prompt_longer_than_the_context(tmp_path, capsys):
    """Issue: a 3,000-token prompt at a context of 256 used to exit 0. Now the lengths are
    named and the exit is 2; `--truncate` keeps the prompt's last tokens."""
    _, path = save_random(tmp_path, "mha", seed=2)  # max_seq_len 256
    (path / "tokenizer.json").write_text(json.dumps(tiny_bpe()))
    long = "the quick brown fox " * 300
    args = ["generate", "--model", str(path), "--device", "cpu", "--max-new-tokens", "4"]
    assert main([*args, "--prompt", long]) == 2
    err = capsys.readouterr().err
    assert "the model's context of 256 tokens" in err and "Traceback" not in err
    assert main([*args, "--prompt", long, "--truncate"]) == 0
    assert main([*args, "--prompt", "x", "--max-new-tokens", "300"]) == 2
    assert "no room for a prompt" in capsys.readouterr().err


def test_fit_prompt_rule():
    from olmo2.infer.generate import fit_prompt

    assert fit_prompt([1, 2, 3], 5, 8) == [1, 2, 3]
    assert fit_prompt([1, 2, 3, 4], 5, 8, truncate=True) == [2, 3, 4]
    with pytest.raises(ValueError, match="4 tokens and max_new_tokens 5: 9 > the model's context"):
        fit_prompt([1, 2, 3, 4], 5, 8)
