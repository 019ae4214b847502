"""AGIEval English (Zhong et al. 2023) as OLMES runs it in `olmo_2_heldout::olmes`: the 8
English multiple-choice exams in the MC formulation, scored by `acc_raw`.

OLMES (allenai/olmes oe_eval/data/agi_eval_tasks.py `AGI_EVAL_ENGLISH_DATASETS`,
oe_eval/configs/tasks.py `agi_eval_{task}:1shot::olmes` and `agi_eval_{task}::olmes`) keeps
the 9 English sets minus `sat-en-without-passage`. The prompt is the passage (when there is
one) and a newline, `Question: {question}`, the options lettered ` A.`…` E.` with their
leading "(A)" stripped, then `Answer:`; each letter `" A"`… is scored. Shots are the exams'
own few-shot samples (`few_shot_prompts.csv` of ruixiangcui/AGIEval, "sample 1".."sample 5"):
1 for `:1shot`, else 3 (5 for sat-math and aqua-rat). Data: the AGIEval repository's
`data/v1/{task}.jsonl` files (there is no Hugging Face copy that OLMES reads).
"""

from __future__ import annotations

import ast
import csv
import re
from functools import cache
from pathlib import Path

from olmo2.eval.formats import LETTERS, MCDoc
from olmo2.eval.tasks.base import DataShotsTask, TaskConfig, read_jsonl

SUBTASKS = "lsat-ar lsat-lr lsat-rc logiqa-en sat-math sat-en aqua-rat gaokao-english".split()
_LABEL = re.compile(r"^\s*\(?[A-J][).]\s*")


def to_doc(row: dict, native_id) -> MCDoc:
    """An AGIEval row (`passage`, `question`, `options` ["(A)...", ...], `label` "C") as MCDoc;
    the few-shot CSV writes an absent passage as None or "None"."""
    passage = row.get("passage")
    passage = "" if passage in (None, "None") else passage
    stem = f"{passage}\nQuestion: {row['question']}" if passage else f"Question: {row['question']}"
    options = row["options"]
    if isinstance(options, str):
        options = ast.literal_eval(options)
    choices = [_LABEL.sub("", o, count=1) for o in options]
    return MCDoc(stem, choices, LETTERS.index(row["label"].strip()), native_id)


@cache
def _fewshot_samples(path: Path) -> dict[str, list[dict]]:
    """`few_shot_prompts.csv`: one column per exam; rows "sample k" hold a Python dict literal."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: AGIEval few-shot file missing (ruixiangcui/AGIEval)")
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    header, samples = rows[0], [r for r in rows[1:] if r[0].startswith("sample")]
    return {
        name: [ast.literal_eval(r[j]) for r in samples if r[j].strip()]
        for j, name in enumerate(header)
        if name
    }


class AGIEval(DataShotsTask):
    hub_id = ""
    uncond = False

    def __init__(self, key, formulation, config, subtask: str):
        super().__init__(key, formulation, config)
        self.subtask = subtask

    def load_docs(self, data_dir: Path) -> list[MCDoc]:
        root = data_dir / "eval" / "agieval"
        samples = _fewshot_samples(root / "few_shot_prompts.csv")[self.subtask]
        self.shots = [to_doc(s, f"shot{k}") for k, s in enumerate(samples[: self.config.num_shots])]
        rows = read_jsonl(root / f"{self.subtask}.jsonl", self.hub_id)
        return [to_doc(r, i) for i, r in enumerate(rows)]


def _factory(subtask: str, regime: str, shots: int):
    key = f"agi_eval_{subtask}{regime}"

    def make(**overrides):
        cfg = TaskConfig(**{**TaskConfig("test", shots, "acc_raw").__dict__, **overrides})
        return AGIEval(key, "mc", cfg, subtask)

    return make


TASKS = {
    **{f"agi_eval_{t}:1shot::olmes": _factory(t, ":1shot::olmes", 1) for t in SUBTASKS},
    **{
        f"agi_eval_{t}::olmes": _factory(t, "::olmes", 5 if t in ("sat-math", "aqua-rat") else 3)
        for t in SUBTASKS
    },
}
