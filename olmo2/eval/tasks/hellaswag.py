"""HellaSwag (Zellers et al. 2019), HF `Rowan/hellaswag`, in OLMES form.

The shared file is OLMES's own 1,000-document subsample of the validation split, already
preprocessed (`query` = "{activity}: {context}", cleaned endings), so `limit: 1000` keeps it
whole and in order. RC continues the text directly (no "Answer:"); MC inserts
"\\nChoose the best continuation:" before the lettered endings.
"""

from __future__ import annotations

from pathlib import Path

from olmo2.eval.formats import MCDoc, PromptStyle
from olmo2.eval.tasks.base import MultipleChoiceTask, olmes_variants, read_jsonl

FILES = {"validation": "validation_olmes_sample1000.jsonl"}


def mc_stem(query: str) -> str:
    """The MC prompt is built from the unstripped context `ctx_a + " " + ctx_b`, so a trailing
    space survives when `ctx_b` is empty, which in these documents is exactly when the
    preprocessed query ends with a period (checked on all 1,000 OLMES prompts)."""
    return query + " " if query.endswith(".") else query


class HellaSwag(MultipleChoiceTask):
    family, hub_id = "hellaswag", "Rowan/hellaswag"
    style = PromptStyle(
        answer_prefix="", mc_infix="\nChoose the best continuation:", mc_strip_choices=True
    )

    def load_docs(self, data_dir: Path) -> list[MCDoc]:
        if self.config.split not in FILES:
            raise ValueError(
                f"hellaswag: split {self.config.split!r} is not available; use validation"
            )
        rows = read_jsonl(data_dir / "eval" / "hellaswag" / FILES[self.config.split], self.hub_id)
        return [
            MCDoc(r["query"], r["choices"], int(r["gold"]), r["ind"], mc_stem(r["query"]))
            for r in rows
        ]

    def fewshot_docs(self) -> list[MCDoc]:
        return [
            MCDoc(d.stem, d.choices, d.gold, mc_stem=mc_stem(d.stem))
            for d in super().fewshot_docs()
        ]


TASKS = olmes_variants(
    HellaSwag, "hellaswag", split="validation", rc_metric="acc_per_char", limit=1000
)
