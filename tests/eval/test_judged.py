"""Judged tasks: the length-controlled win rate against a hand computation, the judges'
answer parsing, MT-Bench's two turns, and AlpacaEval end to end with `olmo2 serve` as the
judge (a tiny model built to always answer "M": the test checks plumbing and formula)."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
import torch

from olmo2.eval.harness import evaluate
from olmo2.eval.judge import Judge, chat_url
from olmo2.eval.lc_winrate import features, length_controlled
from olmo2.eval.tasks.judged import model_is_second, preference, rating


def test_lc_equals_raw_win_rate_when_lengths_do_not_differ():
    # Δ = 0 everywhere: the length feature is 0, θ_base = logit(mean y), LC = 100·mean(y)
    y = [1.0, 0.0, 1.0, 0.5]
    out = length_controlled(y, [10, 20, 30, 40], [10, 20, 30, 40])
    assert out["win_rate"] == pytest.approx(62.5)
    assert out["length_controlled_winrate"] == pytest.approx(62.5, abs=1e-4)
    assert out["theta_base"] == pytest.approx(math.log(0.625 / 0.375), abs=1e-4)
    assert out["discrete_win_rate"] == pytest.approx(62.5)  # 1, 0, 1, tie 0.5


def test_lc_against_an_independent_fit():
    scipy_opt = pytest.importorskip("scipy.optimize")
    y = np.array([1.0, 0.8, 0.0, 1.0, 0.3, 0.9, 0.0, 0.6])
    model_len = [900, 1200, 200, 1500, 300, 800, 100, 700]
    base_len = [600, 600, 600, 600, 600, 600, 600, 600]
    diff = np.array([0.5, -0.2, 1.0, 0.1, 0.7, -0.5, 1.2, 0.0])
    X = features(model_len, base_len, diff)  # [tanh(Δ/std Δ), difficulty, 1]
    delta = np.array(base_len) - np.array(model_len)
    assert np.allclose(X[:, 0], np.tanh(delta / delta.std(ddof=1)))

    def nll(theta):  # soft labels: a win with weight y and a loss with weight 1 - y
        z = X @ theta
        return float(np.sum(y * np.logaddexp(0, -z) + (1 - y) * np.logaddexp(0, z)))

    theta = scipy_opt.minimize(nll, np.zeros(3), method="BFGS", options={"gtol": 1e-10}).x
    expected = 100 * np.mean(1 / (1 + np.exp(-(theta[1] * diff + theta[2]))))
    out = length_controlled(y, model_len, base_len, diff)
    assert out["length_controlled_winrate"] == pytest.approx(expected, abs=1e-4)
    assert out["win_rate"] == pytest.approx(100 * y.mean())
    assert out["length_controlled_winrate"] < out["win_rate"]  # the long answers won


def test_preference_from_logprobs_and_text():
    lp = {"content": [{"token": "M", "top_logprobs": [
        {"token": "M", "logprob": math.log(0.6)}, {"token": "m", "logprob": math.log(0.2)},
        {"token": "x", "logprob": math.log(0.1)}]}]}  # fmt: skip
    choice = {"message": {"content": "M"}, "logprobs": lp}
    assert preference(choice, "M") == pytest.approx(0.75) and preference(
        choice, "m"
    ) == pytest.approx(0.25)
    assert preference({"message": {"content": "m"}, "logprobs": None}, "m") == 1.0
    assert preference({"message": {"content": "M"}}, "m") == 0.0
    assert preference({"message": {"content": "neither"}}, "m") is None


def test_rating_and_urls():
    assert rating("Good answer. Rating: [[7]]") == 7.0 and rating("score [8.5]") == 8.5
    assert rating("no rating") is None
    assert chat_url("http://h:1/v1") == chat_url("http://h:1") == "http://h:1/v1/chat/completions"


class FakeJudge:
    """In-process judge for MT-Bench's plumbing: rates by answer length."""

    def __init__(self):
        self.prompts = []

    def chat(self, messages, max_tokens, top_logprobs=0):
        self.prompts.append(messages)
        return {"message": {"content": f"Fine. Rating: [[{3 + len(self.prompts) % 2}]]"}}

    def map(self, fn, items):
        return [fn(x) for x in items]


class CannedHarness:
    cache_path = None

    def __init__(self, tokenizer):
        self.tokenizer, self.seen = tokenizer, []

    def generate(self, requests):
        self.seen += requests
        return [f"answer {len(self.seen)}" for _ in requests]


def test_mt_bench_two_turns(dolma2, data_dir):
    h, judge = CannedHarness(dolma2), FakeJudge()
    res = evaluate(h, ["mt_bench"], data_dir, limit=2, judge=judge)["tasks"]["mt_bench::none"]
    assert len(h.seen) == 4 and "<|assistant|>" in h.seen[2].context  # turn 2 after turn 1
    assert len(judge.prompts) == 4 and res["metrics"]["num_rated"] == 4
    assert res["primary_score"] == pytest.approx(3.5)
    assert "### Assistant A:\nanswer" in judge.prompts[1][1]["content"]


def test_judged_task_without_judge_is_a_clear_error(dolma2, data_dir):
    with pytest.raises(ValueError, match="--judge-url"):
        evaluate(CannedHarness(dolma2), ["mt_bench"], data_dir, limit=1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def always_m_server(dolma2, tmp_path_factory):
    """`olmo2 serve` over a tiny model whose every next token is "M": its embeddings are one
    vector, so every hidden state is the same, and the LM head favours "M" from it."""
    from olmo2.model.config import ModelConfig
    from olmo2.model.hf import save_pretrained
    from olmo2.model.transformer import Olmo2

    torch.manual_seed(0)
    cfg = ModelConfig.debug(
        vocab_size=100352, max_seq_len=4096, eos_token_id=100257, pad_token_id=100277
    )
    model = Olmo2.build(cfg).eval()
    [m_id] = dolma2.encode("M")
    with torch.no_grad():
        model.embeddings.weight.copy_(
            model.embeddings.weight[:1].expand_as(model.embeddings.weight)
        )
        captured = {}
        hook = model.lm_head.register_forward_hook(lambda m, i, o: captured.setdefault("h", i[0]))
        model(torch.tensor([[5, 6, 7]]))
        hook.remove()
        h = captured["h"][0, -1]
        model.lm_head.weight.zero_()
        model.lm_head.weight[m_id] = 40 * h / h.norm() ** 2  # logit 40 for "M", 0 elsewhere
    path = save_pretrained(model, tmp_path_factory.mktemp("judge") / "always-m", tokenizer=dolma2)
    port = _free_port()
    cmd = [sys.executable, "-m", "olmo2", "serve", "--model", str(path), "--port", str(port),
           "--max-prompt-tokens", "4000", "--device", "cpu"]  # fmt: skip
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "OLMO2_API_KEY": ""},
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            urllib.request.urlopen(url + "/health", timeout=1)
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"olmo2 serve exited: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.25)
    yield url
    proc.terminate()
    proc.wait(timeout=60)


def test_alpaca_eval_end_to_end_with_olmo2_serve(always_m_server, dolma2, data_dir):
    h = CannedHarness(dolma2)
    judge = Judge(always_m_server + "/v1", "always-m")
    res = evaluate(h, ["alpaca_eval_v2::tulu"], data_dir, limit=6, judge=judge)
    m = res["tasks"]["alpaca_eval_v2::tulu"]["metrics"]
    assert m["num_annotated"] == 6 and all(
        r.context.startswith("<|endoftext|><|user|>\n") for r in h.seen
    )
    # the judge always names "M": the model wins exactly where its output was shown second
    from olmo2.eval.tasks import get_task

    docs = get_task("alpaca_eval_v2::tulu").docs(data_dir, 6)
    wins = [float(model_is_second(d.turns[0])) for d in docs]
    assert m["win_rate"] == pytest.approx(100 * sum(wins) / 6, abs=1e-3)
    outputs = [f"answer {i + 1}" for i in range(6)]
    ref = length_controlled(
        wins, [len(o) for o in outputs], [len(d.extra["baseline"]) for d in docs]
    )
    assert m["length_controlled_winrate"] == pytest.approx(
        ref["length_controlled_winrate"], abs=1e-3
    )
