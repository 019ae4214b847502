"""Prompts of the new OLMES tasks for fixed documents, written out from the OLMES formats
(allenai/olmes oe_eval/tasks/oe_eval_tasks/{drop,popqa,agi_eval,triviaqa,squad,jeopardy}.py and
oe_eval/configs/tasks.py), and their scoring; suites expand to their OLMES members."""

from __future__ import annotations

import json
import random

import pytest

from olmo2.eval.tasks import get_task, resolve


def write_rows(root, folder: str, split: str, rows: list[dict]):
    d = root / "eval" / folder
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def drop_row(passage, question, number="", spans=(), qid="q"):
    date = {"day": "", "month": "", "year": ""}
    return {
        "passage": passage, "question": question, "query_id": qid,
        "answer": {"number": number, "date": date, "spans": list(spans)},
        "validated_answers": {"number": [""], "date": [date], "spans": [[]]},
    }  # fmt: skip


def test_drop_llama3_prompt_and_score(tmp_path):
    train = [
        drop_row("P1.", "How many?", number="3"),
        drop_row("P2.", "Who?", spans=["Ann", "Bob"]),
        drop_row("P3.", "What?", spans=["a cat"]),
    ]
    write_rows(tmp_path, "drop", "train", train)
    write_rows(
        tmp_path, "drop", "validation", [drop_row("The Lions won 2 games.", "How many?", "2")]
    )
    task = get_task("drop::llama3")
    [doc] = task.docs(tmp_path)
    order = random.Random(1234).sample(range(3), 3)  # OLMES: 3 shots sampled from train
    shot = {0: "Passage: P1.\nQuestion: How many?\nAnswer: 3",
            1: "Passage: P2.\nQuestion: Who?\nAnswer: Ann, Bob",
            2: "Passage: P3.\nQuestion: What?\nAnswer: a cat"}  # fmt: skip
    expected = "".join(shot[i] + "\n\n" for i in order)
    expected += "Passage: The Lions won 2 games.\nQuestion: How many?\nAnswer:"
    [req] = task.requests([doc])
    assert req.context == expected and req.kind == "generate" and req.max_gen_toks == 50
    assert req.stop == ("Passage:", "Question:", "\n\n")
    m = task.score([doc, doc], task.requests([doc, doc]), [" 2", " two games"])
    assert m["f1"] == 0.5 and m["exact_match"] == 0.5


def test_drop_olmes_uses_fixed_shots_and_description(tmp_path):
    write_rows(tmp_path, "drop", "validation", [drop_row("P.", "Q?", "1")])
    task = get_task("drop::olmes")
    ctx = task.requests(task.docs(tmp_path))[0].context
    assert ctx.startswith(
        "The following are reading comprehension questions, where the answer to each question "
        "is either a segment of text from the corresponding passage, a number, or a date"
    )
    assert ctx.count("Passage: ") == 6 and ctx.endswith("\n\nPassage: P.\nQuestion: Q?\nAnswer:")
    for answer in ("Answer: 2\n\n", "Answer: Nate Kaeding\n\n", "Answer: June 1344\n\n"):
        assert answer in ctx
    assert task.config.limit == 1000 and task.max_gen_toks == 100


def popqa_row(question, obj, prop_id, aliases):
    return {"question": question, "obj": obj, "prop_id": prop_id,
            "possible_answers": json.dumps(aliases)}  # fmt: skip


def test_popqa_prompt_and_containment(tmp_path):
    rows = [
        popqa_row("What is Ann's occupation?", "painter", 22, ["painter", "artist"]),
        popqa_row("In what city was Bob born?", "Paris", 218, ["Paris"]),
        popqa_row("What genre is Cats?", "musical", 91, ["musical"]),
        popqa_row("What is Cy's occupation?", "poet", 22, ["poet"]),
    ]
    write_rows(tmp_path, "popqa", "test", rows)
    task = get_task("popqa")
    docs = task.docs(tmp_path)
    reqs = task.requests(docs)
    # one shot from each *other* relation template, "Q: {question} A: {obj}", blank-line joined
    assert reqs[3].context == (
        "Q: In what city was Bob born? A: Paris\n\nQ: What genre is Cats? A: musical\n\n"
        "Q: What is Cy's occupation? A:"
    )
    assert reqs[1].context.startswith("Q: What is Ann's occupation? A: painter\n\n")
    assert reqs[0].max_gen_toks == 15 and task.config.num_shots == 15
    m = task.score(docs, reqs, [" An Artist.", " Lyon", " a musical", " Poet"])
    assert m["exact_match"] == 0.75  # "Poet" is "poet".capitalize()


def test_agieval_one_shot_prompt(data_dir):
    task = get_task("agi_eval_sat-math:1shot::olmes")
    docs = task.docs(data_dir)
    reqs = [r for r in task.requests(docs[:1])]
    assert len(docs) == 220 and [r.continuation for r in reqs] == [" A", " B", " C", " D"]
    assert reqs[0].context == (
        # the exam's "sample 1" (few_shot_prompts.csv), "(A)" prefixes stripped, gold appended
        "Question: $$(x-6)^{2}+(y+5)^{2}=16$$In the $x y$-plane, the graph of the equation above "
        "is a circle. Point $P$ is on the circle and has coordinates $(10,-5)$. If "
        "$\\overline{P Q}$ is a diameter of the circle, what are the coordinates of point $Q$ ?"
        "\n A. $(2,-5)$\n B. $(6,-1)$\n C. $(6,-5)$\n D. $(6,-9)$\nAnswer: A\n\n"
        "Question: If $\\frac{x-1}{3}=k$ and $k=3$, what is the value of $x ?$"
        "\n A. 2\n B. 4\n C. 9\n D. 10\nAnswer:"
    )
    assert docs[0].gold == 3  # label "D"


def test_agieval_passage_goes_first(data_dir):
    task = get_task("agi_eval_lsat-ar:1shot::olmes")
    ctx = task.requests(task.docs(data_dir)[:1])[0].context
    shot, query = ctx.split("\n\n")
    assert shot.startswith("A soloist will play six different guitar concertos")
    assert "\nQuestion: If J, O, and Y are the first three" in shot and shot.endswith("\nAnswer: E")
    assert query.startswith("Of the eight students—George, Helen, Irving, Kyle")
    assert "\nQuestion: Which one of the following could be the schedule" in query
    assert "\n A. Mon. morning: Helen;" in query and query.endswith("\nAnswer:")
    assert get_task("agi_eval_aqua-rat::olmes").config.num_shots == 5


def test_generative_qa_prompts(tmp_path):
    write_rows(tmp_path, "triviaqa", "validation", [{"question": "Q?", "question_id": "t1",
               "answer": {"aliases": ["Ab", "AB"], "normalized_aliases": ["ab"]}}])  # fmt: skip
    tq = get_task("triviaqa::olmes")
    [doc] = tq.docs(tmp_path)
    ctx = tq.requests([doc])[0].context
    assert ctx.startswith(
        "Question: From which country did Angola achieve independence in 1975?\nAnswer: Portugal\n\n"
    )
    assert ctx.endswith("\nAnswer: Terror\n\nQuestion: Q?\nAnswer:") and doc.answer == [
        "Ab",
        "AB",
        "ab",
    ]
    assert tq.score([doc], tq.requests([doc]), [" ab\n"])["f1"] == 1.0

    write_rows(
        tmp_path,
        "jeopardy",
        "test",
        [{"context": "SCIENCE: This gas is H2", "continuation": "hydrogen"}],
    )
    jp = get_task("jeopardy::olmes")
    ctx = jp.requests(jp.docs(tmp_path))[0].context
    assert ctx.startswith("Category: HISTORY\nQuestion: For the last 8 years of his life, Galileo")
    assert ctx.endswith(
        "Answer: John Adams\n\nCategory: SCIENCE\nQuestion: This gas is H2\nAnswer:"
    )


def test_squad_and_coqa_prompts(tmp_path):
    row = {"id": "s", "title": "T", "context": "C.", "question": "Q?", "answers": {"text": ["x"]}}
    write_rows(tmp_path, "squad", "validation", [row])
    write_rows(tmp_path, "squad", "train", [dict(row, title=f"T{i}") for i in range(5)])
    sq = get_task("squad::olmes")
    ctx = sq.requests(sq.docs(tmp_path))[0].context
    assert ctx.startswith("The following are reading comprehension questions, where the answer")
    assert ctx.endswith("Answer: x\n\nTitle: T\nBackground: C.\nQuestion: Q?\nAnswer:")
    assert ctx.count("Title: ") == 6

    coqa = {"id": "c", "story": "S.", "questions": {"input_text": ["Q1?", "Q2?"]},
            "answers": {"input_text": ["A1", "A2"]},
            "additional_answers": {"0": {"input_text": ["a1", "B2"]}}}  # fmt: skip
    write_rows(tmp_path, "coqa", "validation", [coqa])
    cq = get_task("coqa::olmes")
    docs = cq.docs(tmp_path)
    assert len(docs) == 2 and docs[1].answer == ["A2", "B2"]
    ctx = cq.requests(docs)[1].context
    assert ctx.endswith(
        "Passage: S.\n\nPreceding questions:\n\nQuestion: Q1?\nAnswer: A1\n\nFinal question:\n"
        "Question: Q2?\nAnswer:"
    )


def test_new_suites():
    leaves, suites = resolve(["olmo_2_heldout::olmes"])
    assert {"gsm8k::olmes", "triviaqa::olmes", "agi_eval_lsat-ar:1shot::olmes"} <= set(leaves)
    assert sum(k.startswith("agi_eval_") for k in leaves) == 8
    assert sum(k.startswith("mmlu_pro_") for k in leaves) == 14
    leaves, _ = resolve(["olmo_2_generative::olmes"])
    assert leaves == [
        "coqa::olmes",
        "squad::olmes",
        "jeopardy::olmes",
        "naturalqs::olmes",
        "drop::olmes",
    ]
    leaves, _ = resolve(["tulu_3_dev::olmes"])
    assert {"drop::llama3", "popqa::tulu", "truthfulqa::tulu", "ifeval::tulu"} <= set(leaves)
    assert sum(k.startswith("minerva_math_") for k in leaves) == 7


def test_missing_qa_data_names_file_and_hub_id(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="drop/validation.jsonl.*EleutherAI/drop"):
        get_task("drop::olmes").docs(tmp_path)


def test_truthfulqa_tulu_chat_turns(data_dir):
    task = get_task("truthfulqa::tulu")
    req = task.requests(task.docs(data_dir, 1))[0]
    assert len(req.chat_turns) == 6 and req.chat_turns[3] == (
        "Q: What is the square root of banana?\nA:",
        "I have no comment.",
    )
    assert req.context.endswith(f"\n\n{req.chat_query}") and task.config.primary_metric == "mc2"


def test_mmlu_pro_prompt(tmp_path):
    rows = [{"question_id": i, "question": f"V{i}?", "options": ["a", "b", "N/A"], "answer_index": 1,
             "category": "computer science"} for i in range(6)]  # fmt: skip
    write_rows(tmp_path, "mmlu_pro", "validation", rows)
    write_rows(
        tmp_path,
        "mmlu_pro",
        "test",
        [dict(rows[0], question="T?", options=list("abcdefghij"), answer_index=9)],
    )
    task = get_task("mmlu_pro_computer_science:mc::none")
    docs = task.docs(tmp_path)
    ctx = task.requests(docs)[0].context
    assert ctx.startswith(
        "The following are multiple choice questions (with answers) about computer science.\n\nQuestion: V0?\n A. a\n B. b\nAnswer: B\n\n"
    )
    assert (
        ctx.count("Answer: B") == 5
        and ctx.endswith("\n I. i\n J. j\nAnswer:")
        and docs[0].gold == 9
    )
