"""ARC-Easy and ARC-Challenge (Clark et al. 2018), HF `allenai/ai2_arc`; also OpenBookQA
(Mihaylov et al. 2018), HF `allenai/openbookqa`, which shares ARC's schema.

OLMES settings (allenai/olmes oe_eval/configs/tasks.py): 5 fixed shots; ARC-Challenge on the
test split scored by `acc_uncond`, ARC-Easy on test (≤1000 docs) by `acc_per_char`,
OpenBookQA on test by `acc_uncond`. MC choices are lettered A, B, ... even where the dataset
labels them "1".."4".
"""

from __future__ import annotations

from pathlib import Path

from olmo2.eval.formats import MCDoc
from olmo2.eval.tasks.base import MultipleChoiceTask, olmes_variants, read_jsonl


class ArcTask(MultipleChoiceTask):
    def __init__(self, key, formulation, config, family: str, folder: str, hub_id: str):
        super().__init__(key, formulation, config)
        self.family, self.folder, self.hub_id = family, folder, hub_id

    def load_docs(self, data_dir: Path) -> list[MCDoc]:
        rows = read_jsonl(
            data_dir / "eval" / self.folder / f"{self.config.split}.jsonl", self.hub_id
        )
        return [self.process(r) for r in rows]

    def process(self, r: dict) -> MCDoc:
        q = r.get("question_stem", r.get("question"))  # OpenBookQA names it question_stem
        labels = r["choices"]["label"]
        return MCDoc(f"Question: {q}", r["choices"]["text"], labels.index(r["answerKey"]), r["id"])


TASKS = {
    **olmes_variants(
        ArcTask,
        "arc_challenge",
        split="test",
        rc_metric="acc_uncond",
        family="arc_challenge",
        folder="arc_challenge",
        hub_id="allenai/ai2_arc:ARC-Challenge",
    ),
    **olmes_variants(
        ArcTask,
        "arc_easy",
        split="test",
        rc_metric="acc_per_char",
        limit=1000,
        family="arc_easy",
        folder="arc_easy",
        hub_id="allenai/ai2_arc:ARC-Easy",
    ),
    **olmes_variants(
        ArcTask,
        "openbookqa",
        split="test",
        rc_metric="acc_uncond",
        family="openbookqa",
        folder="openbookqa",
        hub_id="allenai/openbookqa:main",
    ),
}
