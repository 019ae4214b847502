"""Generative question answering in OLMES form: DROP, TriviaQA, SQuAD, Jeopardy, CoQA, PopQA.

Each document is one greedy generation after the task's few-shot prompt ("{prompt} {answer}"
shots joined by blank lines, an optional description first). Settings follow OLMES
(allenai/olmes oe_eval/configs/tasks.py: `drop::llama3`, `drop::olmes`, `triviaqa::olmes`,
`squad::olmes`, `jeopardy::olmes`, `coqa::olmes`, `popqa`, `popqa::tulu`):

| task      | prompt                                                   | shots            | metric |
|-----------|----------------------------------------------------------|------------------|--------|
| DROP      | `Passage: p\\nQuestion: q\\nAnswer:`                     | 3 train / 5 OLMES | DROP F1 |
| TriviaQA  | `Question: q\\nAnswer:`                                  | 5 OLMES          | F1     |
| SQuAD     | `Title: t\\nBackground: c\\nQuestion: q\\nAnswer:`         | 5 train          | F1     |
| Jeopardy  | `Category: c\\nQuestion: q\\nAnswer:`                    | 5 OLMES          | F1     |
| CoQA      | passage, the earlier turns, `Question: q\\nAnswer:`       | 0                | F1     |
| PopQA     | `Q: q A:`                                                | 15               | contains |

None of these sets is in the shared data: documents come from `--data-dir` files laid out as
`eval/<task>/<split>.jsonl` (the Hugging Face rows) or, online, from the hub. Departures,
where OLMES's fixed shots were not available here: SQuAD and `drop::llama3` draw their shots
from the train split with `random.Random(1234)` (OLMES's rule when a task names no source);
PopQA takes one question of each other relation template, in data order (OLMES popqa.py's
own fallback); the CoQA description is our wording.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from olmo2.eval import metrics
from olmo2.eval.drop_eval import drop_score, gold_answers
from olmo2.eval.tasks.base import TaskConfig, read_jsonl
from olmo2.eval.tasks.fewshot_qa import DROP_SHOTS, JEOPARDY_SHOTS, TRIVIAQA_SHOTS
from olmo2.eval.tasks.generative import GenDoc, GenerativeTask, _make, shots_and_query

FEWSHOT_SEED = 1234
"""OLMES `fewshot_seed`: shots sampled from the train split with `random.Random(1234)`."""


def qa_doc(shots: list[tuple[str, str]], query: str, golds, native_id, description: str = ""):
    """A GenDoc: `description` + shots + query as text, and the same as chat turns (the
    description opens the first user turn)."""
    fields = shots_and_query(shots, query)
    fields["prompt"] = description + fields["prompt"]
    if shots:
        (u, a), *rest = fields["chat_turns"]
        fields["chat_turns"] = ((description + u, a), *rest)
    else:
        fields["chat_query"] = description + query
    return GenDoc(answer=golds, native_id=native_id, **fields)


def sampled_shots(rows: list[dict], k: int) -> list[dict]:
    return random.Random(FEWSHOT_SEED).sample(rows, k) if k else []


class QATask(GenerativeTask):
    """Shared loading and SQuAD-style scoring; subclasses give the prompt and the golds."""

    folder: str = ""
    description: str = ""
    max_gen_toks = 50
    stop = ("\n\n",)

    def rows(self, data_dir: Path, split: str | None = None) -> list[dict]:
        split = split or self.config.split
        return read_jsonl(data_dir / "eval" / self.folder / f"{split}.jsonl", self.hub_id)

    def shots(self, data_dir: Path) -> list[tuple[str, str]]:
        raise NotImplementedError

    def load_docs(self, data_dir: Path) -> list[GenDoc]:
        shots = self.shots(data_dir)
        return [
            qa_doc(shots, self.query(r), self.golds(r), r.get("id", i), self.description)
            for i, r in enumerate(self.rows(data_dir))
        ]

    def query(self, row: dict) -> str:
        raise NotImplementedError

    def golds(self, row: dict) -> list[str]:
        raise NotImplementedError

    def score_one(self, doc: GenDoc, completion: str) -> dict[str, float]:
        return metrics.qa_scores(completion, doc.answer)


# ---- DROP (Dua et al. 2019), HF EleutherAI/drop -------------------------------------------
DROP_DESCRIPTION = (
    "The following are reading comprehension questions, where the answer to each question is "
    "either a segment of text from the corresponding passage, a number, or a date (containing "
    "any of the date, month, and/or year components). Some questions may require you to pull "
    "together information pieces from the passage and reason over them.\n\n"
)


def drop_query(row: dict) -> str:
    return f"Passage: {row['passage']}\nQuestion: {row['question']}\nAnswer:"


class DROP(QATask):
    hub_id, folder = "EleutherAI/drop", "drop"
    stop = ("Passage:", "Question:", "\n\n")

    def __init__(self, key: str, config: TaskConfig, fixed_shots: bool):
        super().__init__(key, config)
        self.fixed_shots = fixed_shots
        if fixed_shots:  # drop::olmes
            self.description, self.max_gen_toks = DROP_DESCRIPTION, 100

    def shots(self, data_dir: Path) -> list[tuple[str, str]]:
        k = self.config.num_shots
        if self.fixed_shots:
            return [(drop_query(s), ", ".join(s["answer"])) for s in DROP_SHOTS[:k]]
        train = sampled_shots(self.rows(data_dir, "train"), k)
        return [(drop_query(r), ", ".join(gold_answers(r)[0])) for r in train]

    def load_docs(self, data_dir: Path) -> list[GenDoc]:
        shots = self.shots(data_dir)
        return [
            qa_doc(shots, drop_query(r), gold_answers(r), r.get("query_id", i), self.description)
            for i, r in enumerate(self.rows(data_dir))
        ]

    def score_one(self, doc: GenDoc, completion: str) -> dict[str, float]:
        return drop_score(completion, doc.answer)


# ---- TriviaQA (Joshi et al. 2017), rc.wikipedia.nocontext ---------------------------------
class TriviaQA(QATask):
    hub_id, folder = "mandarjoshi/trivia_qa:rc.wikipedia.nocontext", "triviaqa"

    def shots(self, data_dir):
        return [(f"Question: {q}\nAnswer:", a) for q, a in TRIVIAQA_SHOTS[: self.config.num_shots]]

    def query(self, row):
        return f"Question: {row['question']}\nAnswer:"

    def golds(self, row):
        a = row["answer"]
        return list(dict.fromkeys([*a["aliases"], *a["normalized_aliases"]]))


# ---- SQuAD v1.1 (Rajpurkar et al. 2016) -----------------------------------------------------
class SQuAD(QATask):
    hub_id, folder = "allenai/squad", "squad"
    stop = ("Title:", "\n\n")
    description = (
        "The following are reading comprehension questions, where the answer to each question "
        "is a segment of text from the corresponding background text.\n\n"
    )

    def shots(self, data_dir):
        train = sampled_shots(self.rows(data_dir, "train"), self.config.num_shots)
        return [(self.query(r), r["answers"]["text"][0]) for r in train]

    def query(self, row):
        return (
            f"Title: {row['title']}\nBackground: {row['context']}\n"
            f"Question: {row['question']}\nAnswer:"
        )

    def golds(self, row):
        return list(row["answers"]["text"])


# ---- Jeopardy (MosaicML gauntlet copy, HF soldni/jeopardy) --------------------------------
class Jeopardy(QATask):
    hub_id, folder = "soldni/jeopardy:mosaicml_gauntlet", "jeopardy"
    stop = ("\n\n", "Question:", "Category:")

    def shots(self, data_dir):
        return [
            (f"Category: {c}\nQuestion: {q}\nAnswer:", a)
            for c, q, a in JEOPARDY_SHOTS[: self.config.num_shots]
        ]

    @staticmethod
    def fields(row: dict) -> tuple[str, str, str]:
        """(category, question, answer) from either the gauntlet's `context` ("CATEGORY:
        question") / `continuation` rows or category/question/answer rows."""
        if "context" in row:
            category, _, question = row["context"].partition(": ")
            return category, question, row["continuation"]
        return row["category"], row["question"], row["answer"]

    def query(self, row):
        c, q, _ = self.fields(row)
        return f"Category: {c}\nQuestion: {q}\nAnswer:"

    def golds(self, row):
        return [self.fields(row)[2]]


# ---- CoQA (Reddy et al. 2019): one document per conversation turn -------------------------
COQA_DESCRIPTION = (
    "Below is a passage followed by a conversation so far, where each turn in the conversation "
    "contains a question and an answer. Please answer the final question by referring to the "
    "passage and the previous questions.\n\n"
)


class CoQA(QATask):
    hub_id, folder, description = "EleutherAI/coqa", "coqa", COQA_DESCRIPTION

    def shots(self, data_dir):
        return []

    def load_docs(self, data_dir: Path) -> list[GenDoc]:
        docs = []
        for i, row in enumerate(self.rows(data_dir)):
            qs, ans = row["questions"]["input_text"], row["answers"]["input_text"]
            extra = [a["input_text"] for a in (row.get("additional_answers") or {}).values()]
            for t, q in enumerate(qs):
                earlier = "".join(f"\nQuestion: {qs[j]}\nAnswer: {ans[j]}\n" for j in range(t))
                history = f"\n\nPreceding questions:\n{earlier}" if t else "\n"
                query = f"Passage: {row['story']}{history}\nFinal question:\nQuestion: {q}\nAnswer:"
                golds = list(dict.fromkeys([ans[t], *(e[t] for e in extra if t < len(e))]))
                docs.append(qa_doc([], query, golds, f"{row.get('id', i)}_{t}", self.description))
        return docs


# ---- PopQA (Mallen et al. 2023) --------------------------------------------------------------
class PopQA(QATask):
    hub_id, folder = "akariasai/PopQA", "popqa"
    max_gen_toks = 15

    def load_docs(self, data_dir: Path) -> list[GenDoc]:
        rows = self.rows(data_dir)
        first_of: dict = {}
        for r in rows:  # one example of every relation template, in data order
            first_of.setdefault(r["prop_id"], r)
        docs = []
        for i, r in enumerate(rows):
            pool = [s for p, s in first_of.items() if p != r["prop_id"]]
            shots = [(f"Q: {s['question']} A:", s["obj"]) for s in pool[: self.config.num_shots]]
            aliases = r["possible_answers"]
            golds = json.loads(aliases) if isinstance(aliases, str) else list(aliases)
            docs.append(qa_doc(shots, f"Q: {r['question']} A:", golds, r.get("id", i)))
        return docs

    def score_one(self, doc: GenDoc, completion: str) -> dict[str, float]:
        return {"exact_match": metrics.contains_answer(completion, doc.answer)}


TASKS = {
    "drop::llama3": _make(
        DROP, "drop::llama3", TaskConfig("validation", 3, "f1"), fixed_shots=False
    ),
    "drop::olmes": _make(
        DROP, "drop::olmes", TaskConfig("validation", 5, "f1", limit=1000), fixed_shots=True
    ),
    "triviaqa::olmes": _make(TriviaQA, "triviaqa::olmes", TaskConfig("validation", 5, "f1")),
    "squad::olmes": _make(SQuAD, "squad::olmes", TaskConfig("validation", 5, "f1", limit=1000)),
    "jeopardy::olmes": _make(Jeopardy, "jeopardy::olmes", TaskConfig("test", 5, "f1")),
    "coqa::olmes": _make(CoQA, "coqa::olmes", TaskConfig("validation", 0, "f1")),
    **{
        key: _make(PopQA, key, TaskConfig("test", 15, "exact_match", limit=1000))
        for key in ("popqa::olmes", "popqa::tulu")
    },
}
