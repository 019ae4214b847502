"""MMLU-Pro (Wang et al. 2024), HF `TIGER-Lab/MMLU-Pro`, in the OLMES MC formulation
(`mmlu_pro_{category}:mc::none`, allenai/olmes oe_eval/tasks/oe_eval_tasks/mmlu_pro.py): 14
categories, up to 10 options lettered A–J, 5 shots = the first 5 validation questions of the
same category in order, scored by `acc_raw`; the suite `mmlu_pro:mc::none` is the micro
average. The prompt opens with MMLU's description line for the category (as our MMLU does).

The set is not in the shared data: `eval/mmlu_pro/{test,validation}.jsonl` under
`--data-dir` (the hub rows), or the hub when online.
"""

from __future__ import annotations

from pathlib import Path

from olmo2.eval.formats import MCDoc
from olmo2.eval.tasks.base import DataShotsTask, TaskConfig, cached_jsonl

HUB_ID = "TIGER-Lab/MMLU-Pro"
CATEGORIES = (
    "math health physics business biology chemistry computer_science economics engineering "
    "philosophy other history psychology law"
).split()


def to_doc(r: dict, i) -> MCDoc:
    options = [o for o in r["options"] if o != "N/A"]  # early releases padded with "N/A"
    return MCDoc(f"Question: {r['question'].strip()}", options, int(r["answer_index"]), i)


class MMLUProCategory(DataShotsTask):
    hub_id, uncond = HUB_ID, False

    def __init__(self, key, formulation, config, category: str):
        super().__init__(key, formulation, config)
        self.category = category

    def _of_category(self, path: Path) -> list[dict]:
        name = self.category.replace("_", " ")
        return [r for r in cached_jsonl(path, HUB_ID) if r["category"] == name]

    def load_docs(self, data_dir: Path) -> list[MCDoc]:
        root = data_dir / "eval" / "mmlu_pro"
        dev = self._of_category(root / "validation.jsonl")[: self.config.num_shots]
        self.shots = [to_doc(r, r.get("question_id", i)) for i, r in enumerate(dev)]
        rows = self._of_category(root / f"{self.config.split}.jsonl")
        return [to_doc(r, r.get("question_id", i)) for i, r in enumerate(rows)]

    def description(self, doc: MCDoc) -> str:
        name = self.category.replace("_", " ")
        return f"The following are multiple choice questions (with answers) about {name}.\n\n"


def _factory(category: str):
    key = f"mmlu_pro_{category}:mc::none"

    def make(**overrides):
        cfg = TaskConfig(**{**TaskConfig("test", 5, "acc_raw").__dict__, **overrides})
        return MMLUProCategory(key, "mc", cfg, category)

    return make


TASKS = {f"mmlu_pro_{c}:mc::none": _factory(c) for c in CATEGORIES}
