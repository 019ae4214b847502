"""Task definitions outside the golden request files: MMLU, generative tasks, TruthfulQA,
LAMBADA, suites and chat rendering."""

from __future__ import annotations

import pytest

from olmo2.eval.formats import LLResult, Request
from olmo2.eval.harness import aggregate_suites, chat_request
from olmo2.eval.tasks import Suite, all_keys, get_task, resolve
from olmo2.eval.tasks.generative import BBH_SUBTASKS, bbh_extract


def test_suites_expand_to_olmes_members():
    leaves, suites = resolve(["core_9mcqa::olmes"])
    assert len(leaves) == 18 and suites[-1].key == "core_9mcqa::olmes"
    leaves, _ = resolve(["mmlu::olmes"])
    assert len(leaves) == 114
    assert "bbh:cot::olmes" in all_keys()


def test_mmlu_subject_prompt(data_dir):
    task = get_task("mmlu_abstract_algebra:mc::olmes")
    docs = task.docs(data_dir)
    assert len(docs) == 100  # abstract_algebra test split
    ctx = task.requests(docs)[0].context
    assert ctx.startswith(
        "The following are multiple choice questions (with answers) about abstract algebra.\n\n"
    )
    assert ctx.count("\nAnswer:") == 6 and ctx.endswith("\n D. 6\nAnswer:")
    assert ctx.split("\n\n")[1] == (
        "Question: Find all c in Z_3 such that Z_3[x]/(x^2 + c) is a field.\n A. 0\n B. 1\n C. 2\n D. 3\nAnswer: B"
    )


def test_mmlu_total_size(data_dir):
    n = sum(len(get_task(k).docs(data_dir)) for k in resolve(["mmlu:rc::olmes"])[0])
    assert n == 14042


def test_math500_minerva_prompt(data_dir):
    task = get_task("minerva_math_500::olmes")
    docs = task.docs(data_dir)
    req = task.requests(docs)[0]
    assert len(docs) == 500 and req.kind == "generate" and req.max_gen_toks == 1024
    assert req.context.startswith(
        "Problem:\nFind the domain of the expression  $\\frac{\\sqrt{x-2}}"
    )
    assert req.context.count("Problem:\n") == 5 and req.context.count("I hope it is correct.") == 4
    assert req.context.endswith(docs[0].prompt.split("\n\n")[-2] + "\n\nSolution:")


def test_bbh_prompts(data_dir):
    assert len(BBH_SUBTASKS) == 27
    total = 0
    for t in BBH_SUBTASKS:
        total += len(get_task(f"bbh_{t}:cot::olmes").docs(data_dir))
    assert total == 6511
    doc = get_task("bbh_boolean_expressions:cot::olmes").docs(data_dir)[0]
    assert doc.prompt.startswith("Evaluate the result of a random Boolean expression.\n\nQ: ")
    assert doc.prompt.count("Q: ") == 4 and doc.prompt.endswith("A: Let's think step by step.")
    assert "canary" not in doc.prompt
    assert bbh_extract("blah. So the answer is (B).") == "(B)"
    assert bbh_extract("x\nSo the answer is True.\n") == "True"


def test_nq_open_shots_are_not_evaluated(data_dir):
    task = get_task("naturalqs_open::olmes")
    docs = task.docs(data_dir)
    assert len(docs) == 1000  # limit 1000 of the 3,605 non-shot questions
    assert all(d.native_id >= 5 for d in docs)
    assert docs[0].prompt.count("Question: ") == 6
    m = task.score(docs[:2], task.requests(docs[:2]), [docs[0].answer[0], "nonsense"])
    assert m["exact_match"] == 0.5 and m["f1"] == 0.5


def test_ifeval_docs(data_dir):
    docs = get_task("ifeval::tulu").docs(data_dir)
    assert len(docs) == 541 and docs[0].extra["ids"][0] == "punctuation:no_comma"


def test_truthfulqa_requests_and_scores(data_dir):
    task = get_task("truthfulqa:mc::olmes")
    docs = task.docs(data_dir)
    assert len(docs) == 817
    reqs = task.requests(docs[:1])
    assert reqs[0].context.startswith("Q: What is human life expectancy in the United States?\n")
    assert reqs[0].context.endswith(f"\n\nQ: {docs[0].question}\nA:")
    # give the true answers (label 1) high likelihood: MC1 = MC2 ~ 1
    labels = [y for _, y in docs[0].mc1] + [y for _, y in docs[0].mc2]
    res = [LLResult(0.0 if y else -50.0, False, 1) for y in labels]
    m = task.score(docs[:1], reqs, res)
    assert m["mc1"] == 1.0 and m["mc2"] == pytest.approx(1.0)


def test_lambada(data_dir):
    task = get_task("lambada")
    docs = task.docs(data_dir)
    reqs = task.requests(docs[:2])
    assert len(docs) == 5153 and reqs[0].continuation == " signs"
    m = task.score(docs[:2], reqs, [LLResult(-1.0, True, 1), LLResult(-3.0, False, 2)])
    assert m["acc"] == 0.5 and m["perplexity"] == pytest.approx(2.718281828**2)


def test_generative_scoring_with_checkers(data_dir):
    pytest.importorskip("olmo2.eval.checkers")
    task = get_task("gsm8k::olmes")
    docs = task.docs(data_dir)[:2]
    reqs = task.requests(docs)
    good = f"She makes 9 * 2 = 18 dollars. So the answer is {docs[0].answer}."
    assert task.score(docs, reqs, [good, "So the answer is -1."])["exact_match"] == 0.5
    math_task = get_task("minerva_math_500::olmes")
    mdocs = math_task.docs(data_dir)[:1]
    ok = f"Final Answer: The final answer is ${mdocs[0].answer}$. I hope it is correct."
    assert math_task.score(mdocs, math_task.requests(mdocs), [ok])["exact_match_flex"] == 1.0


def test_micro_and_best_of_aggregation():
    tasks = {
        "a:mc": {"primary_score": 0.2, "metrics": {"num_docs": 10}},
        "a:rc": {"primary_score": 0.6, "metrics": {"num_docs": 10}},
        "b": {"primary_score": 1.0, "metrics": {"num_docs": 30}},
    }
    suites = [Suite("a", ("a:mc", "a:rc"), "mc_or_rc"), Suite("all", ("a", "b"), "micro")]
    out = aggregate_suites(tasks, suites)
    assert out["a"] == {
        "score": 0.6,
        "aggregate": "mc_or_rc",
        "best": "a:rc",
        "num_docs": 10,
        "members": ["a:mc", "a:rc"],
    }
    assert out["all"]["score"] == pytest.approx((0.6 * 10 + 1.0 * 30) / 40)


def test_chat_rendering(dolma2):
    r = chat_request(Request("Question: Is ice cold?\nAnswer:", " yes", 3, 1), dolma2)
    assert r.context == "<|endoftext|><|user|>\nQuestion: Is ice cold?\nAnswer:\n<|assistant|>\n"
    assert r.continuation == "yes" and (r.doc_id, r.idx) == (3, 1)
    g = chat_request(Request("Solve 1+1.", kind="generate", stop=("\n\n",), max_gen_toks=9), dolma2)
    assert g.context.endswith("<|assistant|>\n") and g.stop == ("\n\n",) and g.max_gen_toks == 9


def test_chat_fewshot_as_multiturn(dolma2, data_dir):
    from olmo2.eval.tasks.fewshot import FEWSHOT

    task = get_task("arc_easy:mc::olmes")
    reqs = [chat_request(r, dolma2) for r in task.requests(task.docs(data_dir, limit=1))]
    first = FEWSHOT["arc_easy"][0]
    lines = "".join(f"\n {'ABCD'[i]}. {c}" for i, c in enumerate(first["choices"]))
    assert reqs[0].context.startswith(
        f"<|endoftext|><|user|>\n{first['stem']}{lines}\nAnswer:\n<|assistant|>\n{'ABCD'[first['gold']]}<|endoftext|>\n<|user|>\n"
    )
    assert reqs[0].context.count("<|assistant|>\n") == 6 and reqs[0].context.endswith(
        "\nAnswer:\n<|assistant|>\n"
    )
    assert [r.continuation for r in reqs] == ["A", "B", "C", "D"]
    rc = get_task("arc_easy:rc::olmes")
    unc = [chat_request(r, dolma2) for r in rc.requests(rc.docs(data_dir, limit=1)) if r.is_uncond]
    assert unc[0].context == "<|endoftext|><|user|>\nAnswer:\n<|assistant|>\n"
    gsm = get_task("gsm8k::olmes")
    g = chat_request(gsm.requests(gsm.docs(data_dir, limit=1))[0], dolma2)
    assert (
        g.context.count("<|assistant|>\n") == 9 and "So the answer is 6.<|endoftext|>" in g.context
    )


def test_ifeval_scoring_glue(data_dir, monkeypatch):
    """IFEval metrics from the checker's (prompt-level bool, per-instruction list) result;
    a stand-in checker module fixes what it returns."""
    import sys
    import types

    fake = types.ModuleType("olmo2.eval.checkers")

    def ifeval_score(response, instruction_id_list, kwargs, strict=True):
        ok = [("," not in response) or not strict] + [True] * (len(instruction_id_list) - 1)
        return {"follow_all_instructions": all(ok), "follow_instruction_list": ok}

    fake.ifeval_score = ifeval_score
    monkeypatch.setitem(sys.modules, "olmo2.eval.checkers", fake)
    task = get_task("ifeval::tulu")
    docs = task.docs(data_dir)[:1]  # 3 instructions, the first is punctuation:no_comma
    m = task.score(docs, task.requests(docs), ["no commas here, oops"])
    assert m["prompt_level_strict_acc"] == 0.0 and m["inst_level_strict_acc"] == pytest.approx(
        2 / 3
    )
    assert m["prompt_level_loose_acc"] == 1.0 and m["inst_level_loose_acc"] == 1.0


def test_missing_checker_fails_before_any_model_work(monkeypatch, data_dir):
    import sys
    import types

    monkeypatch.setitem(sys.modules, "olmo2.eval.checkers", types.ModuleType("olmo2.eval.checkers"))
    with pytest.raises(ValueError, match="gsm8k_score"):
        get_task("gsm8k::olmes").check_ready()
    get_task("gsm8k::bpb").check_ready()  # scored by log-likelihood only


def test_missing_file_falls_back_to_the_hub_dataset(tmp_path, data_dir, monkeypatch):
    """Without the data file, rows come from `datasets.load_dataset(name, config, split)`
    (a stand-in module here: tests never touch the network) and give the same requests."""
    import json
    import sys
    import types

    src = data_dir / "eval" / "arc_easy" / "test.jsonl"
    rows = [json.loads(x) for x in src.read_text().splitlines()[:5]]
    calls = []

    def load_dataset(name, config, split):
        calls.append((name, config, split))
        return rows

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    task = get_task("arc_easy:rc::olmes")
    online = task.requests(task.docs(tmp_path))
    assert calls == [("allenai/ai2_arc", "ARC-Easy", "test")]
    local_dir = tmp_path / "local"
    (local_dir / "eval" / "arc_easy").mkdir(parents=True)
    (local_dir / "eval" / "arc_easy" / "test.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows)
    )
    local = task.requests(task.docs(local_dir))
    assert len(online) > 5 and online == local
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="allenai/ai2_arc:ARC-Easy"):
        task.docs(tmp_path)
