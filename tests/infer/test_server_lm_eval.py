"""lm-evaluation-harness against `olmo2 serve`: its `local-completions` backend scores a local
multiple-choice task through `/v1/completions` (`echo` + `logprobs`, `max_tokens: 1`, batched
token-id prompts) and gets the log-likelihoods of olmo2's own harness; `local-chat-completions`
runs a small generation task through `/v1/chat/completions`. The app on uvicorn on 127.0.0.1,
offline."""

from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # no network at test time
os.environ.setdefault("HF_HUB_OFFLINE", "1")
lm_eval = pytest.importorskip("lm_eval")
pytest.importorskip("tenacity", reason="lm-eval's API backends need lm-eval[api]")

from olmo2.eval.harness import Harness  # noqa: E402
from tests.infer.test_server import serve_in_thread  # noqa: E402

ROWS = [
    {"q": "Is fire hot?", "choices": ["yes", "no"], "label": 0, "a": "yes"},
    {"q": "Is ice hot?", "choices": ["yes", "no", "sometimes"], "label": 1, "a": "no"},
    {"q": "What colour is the sky?", "choices": ["blue", "green", "red", "a shade of grey"], "label": 0, "a": "blue"},
]  # fmt: skip


def _tasks(tmp_path):
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS))
    data = f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {tmp_path / 'd.jsonl'}\n"
    data += "test_split: test\n"
    (tmp_path / "mc.yaml").write_text(
        f"task: olmo2_serve_mc\n{data}output_type: multiple_choice\n"
        "doc_to_text: 'Question: {{q}}\\nAnswer:'\ndoc_to_choice: '{{choices}}'\n"
        "doc_to_target: label\nmetric_list:\n  - metric: acc\n"
    )
    (tmp_path / "gen.yaml").write_text(
        f"task: olmo2_serve_gen\n{data}output_type: generate_until\n"
        "doc_to_text: 'Q: {{q}}\\nA:'\ndoc_to_target: '{{a}}'\n"
        'generation_kwargs:\n  until: ["\\n"]\n  max_gen_toks: 8\n'  # YAML: "\n" is a newline
        "metric_list:\n  - metric: exact_match\n"
    )


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    """The two tasks, and lm-eval's task index of them alone (its built-in index takes ~20 s)."""
    from lm_eval.tasks import TaskManager

    path = tmp_path_factory.mktemp("lm_eval_tasks")
    _tasks(path)
    return TaskManager(include_path=str(path), include_defaults=False)


@pytest.fixture(scope="module")
def served(dolma2_ckpt):
    model, tok, path = dolma2_ckpt
    with serve_in_thread(model, tok, path.name) as base:
        yield base, model, tok, path


def test_local_completions_loglikelihoods_equal_the_harness(served, tasks):
    base, model, tok, path = served
    args = {
        "base_url": base + "/v1/completions", "model": path.name, "tokenizer_backend": "huggingface",
        "tokenizer": str(path), "max_length": 256, "batch_size": 4, "max_retries": 1,
    }  # fmt: skip
    out = lm_eval.simple_evaluate(
        model="local-completions", model_args=args, tasks=["olmo2_serve_mc"],
        task_manager=tasks, log_samples=True,
    )  # fmt: skip
    samples = out["samples"]["olmo2_serve_mc"]
    pairs = [tuple(a) for s in samples for a in s["arguments"]]
    served_ll = [r[0] for s in samples for r in s["resps"]]
    assert len(pairs) == sum(len(r["choices"]) for r in ROWS)
    ours = Harness(model, tok, batch_size=1, progress=False).loglikelihood(pairs)
    assert [float(x[0]) for x in served_ll] == pytest.approx([r.logprob for r in ours], abs=1e-4)
    assert [bool(x[1]) for x in served_ll] == [r.is_greedy for r in ours]


def test_local_chat_completions_runs_a_generation_task(served, tasks):
    base, _, _, path = served
    args = {
        "base_url": base + "/v1/chat/completions", "model": path.name, "max_retries": 1,
        "max_length": 256,
    }  # fmt: skip
    out = lm_eval.simple_evaluate(
        model="local-chat-completions", model_args=args, tasks=["olmo2_serve_gen"],
        task_manager=tasks, log_samples=True,
        apply_chat_template=True,
    )  # fmt: skip
    samples = out["samples"]["olmo2_serve_gen"]
    assert len(samples) == len(ROWS)
    for s in samples:
        (reply,) = s["resps"][0]
        assert isinstance(reply, str) and "\n" not in reply
    assert 0.0 <= out["results"]["olmo2_serve_gen"]["exact_match,none"] <= 1.0
