"""HumanEval / MBPP tasks: requests (greedy and Tülu-style sampling), chat rendering, and
pass@k through the sandbox, with a stand-in harness that answers with known programs."""

from __future__ import annotations

import gzip
import json
import math

import pytest

from olmo2.eval.harness import chat_request, evaluate
from olmo2.eval.tasks import get_task


class CannedHarness:
    """Answers each generation request from a table (context, sample index) -> completion."""

    cache_path = None

    def __init__(self, answer):
        self.answer = answer

    def generate(self, requests):
        return [self.answer(r) for r in requests]


@pytest.fixture(scope="module")
def canonical(data_dir):
    with gzip.open(data_dir / "eval/humaneval/HumanEval.jsonl.gz", "rt") as f:
        return {r["prompt"]: r["canonical_solution"] for r in map(json.loads, f)}


def test_humaneval_greedy_end_to_end(canonical, data_dir):
    h = CannedHarness(lambda r: canonical[r.context] if r.doc_id % 2 == 0 else "    return None\n")
    res = evaluate(h, ["codex_humaneval::none"], data_dir, limit=6)
    m = res["tasks"]["codex_humaneval::none"]
    assert m["primary_metric"] == "pass_at_1" and m["metrics"]["num_docs"] == 6
    assert m["primary_score"] == pytest.approx(0.5)


def test_tulu_sampling_requests_and_pass_at_k(canonical, data_dir):
    task = get_task("codex_humaneval::tulu")
    docs = task.docs(data_dir, 2)
    reqs = task.requests(docs)
    assert len(reqs) == 40 and {r.idx for r in reqs} == set(range(20))
    assert {(r.temperature, r.top_p) for r in reqs} == {(0.8, 0.95)}
    assert task.config.primary_metric == "pass_at_10"
    # doc 0: 5 of 20 samples right; doc 1: none
    answers = [canonical[r.context] if r.doc_id == 0 and r.idx < 5 else "    pass\n" for r in reqs]
    m = task.score(docs, reqs, answers)
    assert m["pass_at_1"] == pytest.approx((5 / 20) / 2)
    assert m["pass_at_10"] == pytest.approx((1 - math.comb(15, 10) / math.comb(20, 10)) / 2)


def test_chat_rendering_opens_the_assistant_turn_with_the_code(dolma2, data_dir):
    task = get_task("codex_humaneval::none")
    req = task.requests(task.docs(data_dir, 1))[0]
    chat = chat_request(req, dolma2)
    assert chat.context.startswith("<|endoftext|><|user|>\n" + req.context)
    assert chat.context.endswith(
        "<|assistant|>\nHere is the completed function:\n\n```python\n" + req.context
    )
    assert "\n```" in req.stop and "\nif" in req.stop


def test_mbpp_prompt_program_and_score(data_dir):
    task = get_task("mbpp::none")
    docs = task.docs(data_dir, "all")
    assert len(docs) == 500 and min(d.native_id for d in docs) == 11
    doc = next(d for d in docs if d.native_id == 11)
    assert doc.prompt == (
        "Write a python function to remove first and last occurrence of a given character "
        "from the string.\ndef remove_Occ(s,ch):"
    )
    body = "\n    i = s.find(ch)\n    s = s[:i] + s[i+1:]\n    j = s.rfind(ch)\n    return s[:j] + s[j+1:] if j >= 0 else s\n"
    reqs = task.requests([doc, doc])
    m = task.score([doc, doc], reqs, [body, "\n    return s\n"])
    assert m["pass_at_1"] == 0.5 and "\nassert" in reqs[0].stop
