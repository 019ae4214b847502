"""The lm-evaluation-harness backend: lm-eval runs a local YAML task through OLMo2LM, and
its answers equal our harness's (lm-eval is an optional extra; skipped when absent)."""

from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # no network at test time
os.environ.setdefault("HF_HUB_OFFLINE", "1")
lm_eval = pytest.importorskip("lm_eval")


def test_backend_methods_match_harness(tiny_model, dolma2):
    from lm_eval.api.instance import Instance

    from olmo2.eval.harness import Harness, naive_loglikelihood
    from olmo2.eval.lm_eval import OLMo2LM

    lm = OLMo2LM(model=tiny_model, tokenizer=dolma2, batch_size=1)
    pairs = [
        ("Question: Is ice cold?\nAnswer:", " yes"),
        ("Question: Is ice cold?\nAnswer:", " no"),
    ]
    inst = [Instance("loglikelihood", {}, p, i) for i, p in enumerate(pairs)]
    got = lm.loglikelihood(inst, disable_tqdm=True)
    ours = Harness(tiny_model, dolma2, batch_size=1, progress=False).loglikelihood(pairs)
    assert got == [(r.logprob, r.is_greedy) for r in ours]  # the same scores, bit for bit
    ref = naive_loglikelihood(tiny_model, dolma2, pairs)
    assert [g[0] for g in got] == pytest.approx([r.logprob for r in ref], abs=1e-4)
    rolling = lm.loglikelihood_rolling(
        [Instance("loglikelihood_rolling", {}, ("Hello world.",), 0)], True
    )
    assert rolling[0] == pytest.approx(
        naive_loglikelihood(tiny_model, dolma2, [("", "Hello world.")])[0].logprob, abs=1e-4
    )
    gen = lm.generate_until(
        [Instance("generate_until", {}, ("Q: hi\nA:", {"until": ["\n"], "max_gen_toks": 5}), 0)],
        True,
    )
    assert isinstance(gen[0], str) and "\n" not in gen[0]


def _tiny_task(tmp_path):
    rows = [
        {"q": "Is fire hot?", "choices": ["yes", "no"], "label": 0},
        {"q": "Is ice hot?", "choices": ["yes", "no"], "label": 1},
    ]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "tiny.yaml").write_text(
        "task: olmo2_tiny\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {tmp_path / 'd.jsonl'}\n"
        "test_split: test\noutput_type: multiple_choice\n"
        "doc_to_text: 'Question: {{q}}\\nAnswer:'\ndoc_to_choice: '{{choices}}'\ndoc_to_target: label\n"
        "metric_list:\n  - metric: acc\n"
    )


def test_simple_evaluate_on_local_yaml_task(tiny_model, dolma2, tmp_path):
    from lm_eval.tasks import TaskManager

    from olmo2.eval.lm_eval import OLMo2LM

    _tiny_task(tmp_path)
    out = lm_eval.simple_evaluate(
        model=OLMo2LM(model=tiny_model, tokenizer=dolma2),
        tasks=["olmo2_tiny"],
        task_manager=TaskManager(include_path=str(tmp_path)),
    )
    assert 0.0 <= out["results"]["olmo2_tiny"]["acc,none"] <= 1.0


def test_lm_eval_command_line_with_path_argument(tiny_model, dolma2, tmp_path):
    """`python -m olmo2.eval.lm_eval` is lm-eval's own CLI with `--model olmo2` registered."""
    import subprocess
    import sys

    from olmo2.model.hf import save_pretrained

    ckpt = save_pretrained(tiny_model, tmp_path / "ckpt", tokenizer=dolma2)
    _tiny_task(tmp_path)
    cmd = [
        sys.executable, "-m", "olmo2.eval.lm_eval", "--model", "olmo2",
        "--model_args", f"path={ckpt}", "--tasks", "olmo2_tiny",
        "--include_path", str(tmp_path), "--output_path", str(tmp_path / "out"),
    ]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    results = list((tmp_path / "out").rglob("results*.json"))
    assert results, run.stdout[-2000:]
    acc = json.loads(results[0].read_text())["results"]["olmo2_tiny"]["acc,none"]
    assert 0.0 <= acc <= 1.0
