"""MMLU (Hendrycks et al. 2021), HF `cais/mmlu`, in OLMES form: 57 subjects, 5 shots from each
subject's dev split (the first five, in order), test split, macro average over subjects.

Every prompt starts with the classic description line "The following are multiple choice
questions (with answers) about {subject}.\\n\\n". RC is scored by `acc_per_char`, MC by
`acc_raw`.
"""

from __future__ import annotations

from pathlib import Path

from olmo2.eval.formats import MCDoc
from olmo2.eval.tasks.base import DataShotsTask, TaskConfig, cached_jsonl

HUB_ID = "cais/mmlu:all"
SUBJECTS = (
    "abstract_algebra anatomy astronomy business_ethics clinical_knowledge college_biology "
    "college_chemistry college_computer_science college_mathematics college_medicine "
    "college_physics computer_security conceptual_physics econometrics electrical_engineering "
    "elementary_mathematics formal_logic global_facts high_school_biology high_school_chemistry "
    "high_school_computer_science high_school_european_history high_school_geography "
    "high_school_government_and_politics high_school_macroeconomics high_school_mathematics "
    "high_school_microeconomics high_school_physics high_school_psychology high_school_statistics "
    "high_school_us_history high_school_world_history human_aging human_sexuality "
    "international_law jurisprudence logical_fallacies machine_learning management marketing "
    "medical_genetics miscellaneous moral_disputes moral_scenarios nutrition philosophy "
    "prehistory professional_accounting professional_law professional_medicine "
    "professional_psychology public_relations security_studies sociology us_foreign_policy "
    "virology world_religions"
).split()


def to_doc(r: dict, i: int) -> MCDoc:
    return MCDoc(f"Question: {r['question'].strip()}", list(r["choices"]), int(r["answer"]), i)


class MMLUSubject(DataShotsTask):
    family, hub_id, uncond = "mmlu", HUB_ID, False

    def __init__(self, key, formulation, config, subject: str):
        super().__init__(key, formulation, config)
        self.subject = subject

    def load_docs(self, data_dir: Path) -> list[MCDoc]:
        eval_dir = data_dir / "eval" / "mmlu"
        dev = [
            r for r in cached_jsonl(eval_dir / "dev.jsonl", HUB_ID) if r["subject"] == self.subject
        ]
        self.shots = [to_doc(r, i) for i, r in enumerate(dev[: self.config.num_shots])]
        rows = [
            r
            for r in cached_jsonl(eval_dir / f"{self.config.split}.jsonl", HUB_ID)
            if r["subject"] == self.subject
        ]
        return [to_doc(r, i) for i, r in enumerate(rows)]

    def description(self, doc: MCDoc) -> str:
        name = self.subject.replace("_", " ")
        return f"The following are multiple choice questions (with answers) about {name}.\n\n"


def _factory(subject: str, formulation: str):
    key = f"mmlu_{subject}:{formulation}::olmes"
    metric = "acc_per_char" if formulation == "rc" else "acc_raw"

    def make(**overrides):
        cfg = TaskConfig(**{**TaskConfig("test", 5, metric).__dict__, **overrides})
        return MMLUSubject(key, formulation, cfg, subject)

    return make


TASKS = {f"mmlu_{s}:{f}::olmes": _factory(s, f) for s in SUBJECTS for f in ("rc", "mc")}
