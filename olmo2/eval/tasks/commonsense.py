"""Commonsense multiple-choice sets in OLMES form: BoolQ (Clark et al. 2019), CommonsenseQA
(Talmor et al. 2019), PIQA (Bisk et al. 2020), Social IQa (Sap et al. 2019), SciQ (Welbl et
al. 2017) and COPA (Roemmele et al. 2011).

Stems, splits, limits and primary metrics follow OLMES (allenai/olmes oe_eval/tasks/
oe_eval_tasks/*.py, oe_eval/configs/tasks.py); the golden test checks the prompts.
"""

from __future__ import annotations

from pathlib import Path

from olmo2.eval.formats import MCDoc, PromptStyle
from olmo2.eval.tasks.base import MultipleChoiceTask, olmes_variants, read_jsonl


class _JsonlTask(MultipleChoiceTask):
    folder: str = ""

    def load_docs(self, data_dir: Path) -> list[MCDoc]:
        path = data_dir / "eval" / self.folder / f"{self.config.split}.jsonl"
        return [self.process(r, i) for i, r in enumerate(read_jsonl(path, self.hub_id))]

    def process(self, r: dict, i: int) -> MCDoc:
        raise NotImplementedError


class BoolQ(_JsonlTask):
    """`{passage}\\nQuestion: {question}?` with choices yes/no; no unconditional requests.

    Departure: SuperGLUE's passages start with the article title ("Turkey vulture -- The
    turkey vulture ..."); the shared copy of BoolQ has no titles, so our test prompts lack
    that prefix. The few-shot passages (fixed, from OLMES) keep it."""

    family, folder, hub_id, uncond = "boolq", "boolq", "super_glue:boolq", False

    def process(self, r, i):
        return MCDoc(
            f"{r['passage']}\nQuestion: {r['question']}?", ["yes", "no"], 0 if r["answer"] else 1, i
        )


class CommonsenseQA(_JsonlTask):
    family, folder, hub_id = "csqa", "commonsenseqa", "tau/commonsense_qa"

    def process(self, r, i):
        labels = r["choices"]["label"]
        return MCDoc(
            f"Question: {r['question']}",
            r["choices"]["text"],
            labels.index(r["answerKey"]),
            r["id"],
        )


class PIQA(_JsonlTask):
    family, folder, hub_id = "piqa", "piqa", "ybisk/piqa"

    def process(self, r, i):
        return MCDoc(f"Goal: {r['goal']}", [r["sol1"], r["sol2"]], int(r["label"]), i)


class SocialIQa(_JsonlTask):
    family, folder, hub_id = "socialiqa", "siqa", "allenai/social_i_qa"

    def process(self, r, i):
        choices = [r["answerA"], r["answerB"], r["answerC"]]
        return MCDoc(f"Question: {r['context']} {r['question']}", choices, int(r["label"]) - 1, i)


class SciQ(_JsonlTask):
    """0-shot; the support paragraph (when present) precedes the question."""

    family, folder, hub_id = "sciq", "sciq", "allenai/sciq"

    def process(self, r, i):
        choices = [r["distractor1"], r["distractor2"], r["distractor3"], r["correct_answer"]]
        stem = f"{r['support']}\nQuestion: {r['question']}".lstrip()
        return MCDoc(stem, choices, 3, i)


class COPA(_JsonlTask):
    """0-shot continuation: "{premise without its period} because|therefore" + " {choice}"
    with the choice's first letter lower-cased (OLMES copa.py, after Brown et al. 2020)."""

    family, folder, hub_id = "copa", "copa", "super_glue:copa"
    style = PromptStyle(answer_prefix="")

    def process(self, r, i):
        connector = {"cause": "because", "effect": "therefore"}[r["question"]]
        choices = [c[0].lower() + c[1:] for c in (r["choice1"], r["choice2"])]
        return MCDoc(
            f"{r['premise'].strip()[:-1]} {connector}", choices, int(r["label"]), r.get("idx", i)
        )


TASKS = {
    **olmes_variants(BoolQ, "boolq", split="validation", rc_metric="acc_raw", limit=1000),
    **olmes_variants(CommonsenseQA, "csqa", split="validation", rc_metric="acc_uncond"),
    **olmes_variants(PIQA, "piqa", split="validation", rc_metric="acc_per_char", limit=1000),
    **olmes_variants(
        SocialIQa, "socialiqa", split="validation", rc_metric="acc_per_char", limit=1000
    ),
    **olmes_variants(
        SciQ, "sciq", split="validation", rc_metric="acc_raw", num_shots=0, formulations=("rc",)
    ),
    **olmes_variants(
        COPA, "copa", split="validation", rc_metric="acc_raw", num_shots=0, formulations=("rc",)
    ),
}
