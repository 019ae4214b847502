"""WinoGrande (Sakaguchi et al. 2020), HF `allenai/winogrande` (winogrande_xl), in OLMES form.

RC uses *partial scoring* (Trinh & Le 2018; OLMES winogrande.py): each option is written into
the blank and the model scores the shared rest of the sentence, `" {text after the blank}"`,
after the filled-in prefix. The choice with the higher log-likelihood wins (`acc_raw`).
MC asks "Fill in the blank: ..." with the blank shown as "___" and the two options lettered.
"""

from __future__ import annotations

from pathlib import Path

from olmo2.eval.formats import MCDoc, Request, mc_prompt, mc_requests, mc_shot, with_shots
from olmo2.eval.tasks.base import MultipleChoiceTask, olmes_variants, read_jsonl


def to_doc(r: dict, native_id=None) -> MCDoc:
    stem = "Fill in the blank: " + r["sentence"].replace("_", "___")
    return MCDoc(
        stem,
        [r["option1"], r["option2"]],
        int(r["answer"]) - 1,
        native_id,
        extra={"sentence": r["sentence"]},
    )


def fill(sentence: str, option: str) -> tuple[str, str]:
    """(prefix with the option in the blank, " " + the rest) for partial scoring."""
    i = sentence.index("_")
    return sentence[:i] + option, " " + sentence[i + 1 :].strip()


class WinoGrande(MultipleChoiceTask):
    family, hub_id, uncond = "winogrande", "allenai/winogrande:winogrande_xl", False

    def load_docs(self, data_dir: Path) -> list[MCDoc]:
        rows = read_jsonl(
            data_dir / "eval" / "winogrande" / f"{self.config.split}.jsonl", self.hub_id
        )
        return [to_doc(r, i) for i, r in enumerate(rows)]

    def fewshot_docs(self) -> list[MCDoc]:
        from olmo2.eval.tasks.fewshot import FEWSHOT

        return [to_doc(r) for r in FEWSHOT["winogrande"][: self.config.num_shots]]

    def doc_requests(self, doc: MCDoc, doc_id: int) -> list[Request]:
        shots = self.shots_for(doc)
        if self.formulation == "mc":
            return mc_requests(doc, doc_id, with_shots([mc_shot(s) for s in shots], mc_prompt(doc)))
        prefix = with_shots(
            [s.extra["sentence"].replace("_", s.choices[s.gold]) for s in shots], ""
        )
        reqs = []
        for i, option in enumerate(doc.choices):
            ctx, cont = fill(doc.extra["sentence"], option)
            reqs.append(Request(prefix + ctx, cont, doc_id, i))
        return reqs


TASKS = olmes_variants(WinoGrande, "winogrande", split="validation", rc_metric="acc_raw")
