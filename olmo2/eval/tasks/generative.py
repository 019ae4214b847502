"""Generative tasks: GSM8K 8-shot CoT, MATH-500 4-shot Minerva (flex), IFEval, Natural
Questions (open) 5-shot, BIG-Bench Hard 3-shot CoT.

Each document becomes one greedy `generate` request that stops at the task's stop strings;
scoring uses the answer checkers in `olmo2.eval.checkers` (GSM8K last number, MATH answer
equivalence, IFEval instructions) or SQuAD F1/EM. Settings follow OLMES (allenai/olmes
oe_eval/configs/tasks.py: `gsm8k::olmes`, `minerva_math_500::olmes`, `ifeval::tulu`,
`naturalqs_open::olmes`, `bbh:cot-v1::olmes`).
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from olmo2.eval import metrics
from olmo2.eval.formats import Request
from olmo2.eval.tasks.base import Task, TaskConfig, read_jsonl


@dataclass
class GenDoc:
    prompt: str
    answer: object
    native_id: object = None
    extra: dict = field(default_factory=dict)
    chat_turns: tuple[tuple[str, str], ...] = ()
    """Few-shot (user, assistant) turns for --chat; see `Request.chat_turns`."""
    chat_query: str = ""


def shots_and_query(shots: list[tuple[str, str]], query: str, sep: str = " ") -> dict:
    """`prompt` (plain text: "{user}{sep}{assistant}" shots, blank-line separated, then the
    query) and the matching chat fields, from the shots as (user, assistant) pairs."""
    text = "".join(f"{u}{sep}{a}\n\n" for u, a in shots) + query
    return {"prompt": text, "chat_turns": tuple(shots), "chat_query": query}


class GenerativeTask(Task):
    stop: tuple[str, ...] = ()
    max_gen_toks: int = 512
    checker: str | None = None
    """Name of the scoring function this task needs from `olmo2.eval.checkers`."""

    def check_ready(self) -> None:
        if self.checker is None:
            return
        try:  # import_module reads sys.modules, so a replaced module is seen as it is
            checkers = importlib.import_module("olmo2.eval.checkers")
        except ImportError as e:
            raise ValueError(
                f"{self.key} needs olmo2.eval.checkers, which failed to import ({e})"
            ) from None
        if not hasattr(checkers, self.checker):
            raise ValueError(
                f"{self.key} needs olmo2.eval.checkers.{self.checker}, which is missing"
            )

    def __init__(self, key: str, config: TaskConfig):
        self.key, self.config = key, config

    def requests(self, docs: list[GenDoc]) -> list[Request]:
        return [
            Request(
                d.prompt,
                doc_id=i,
                kind="generate",
                stop=self.stop,
                max_gen_toks=self.max_gen_toks,
                chat_turns=d.chat_turns,
                chat_query=d.chat_query,
            )
            for i, d in enumerate(docs)
        ]

    def score_one(self, doc: GenDoc, completion: str) -> dict[str, float]:
        raise NotImplementedError

    def score(self, docs, requests, results) -> dict[str, float]:
        by_doc = {r.doc_id: out for r, out in zip(requests, results, strict=True)}
        out = metrics.mean_metrics([self.score_one(d, by_doc[i]) for i, d in enumerate(docs)])
        out["num_docs"] = len(docs)
        return out


# ---- GSM8K (Cobbe et al. 2021), 8-shot CoT exemplars of Wei et al. 2022 ("STD:GSM8k") ----
class GSM8K(GenerativeTask):
    hub_id = "openai/gsm8k:main"
    stop = ("Question:", "</s>", "<|im_end|>", "\n\n")
    checker = "gsm8k_score"

    def load_docs(self, data_dir: Path) -> list[GenDoc]:
        from olmo2.eval.tasks.fewshot import FEWSHOT

        shots = [
            (f"Question: {s['question']}\nAnswer:", s["answer"])
            for s in FEWSHOT["gsm8k"][: self.config.num_shots]
        ]
        rows = read_jsonl(data_dir / "eval" / "gsm8k" / f"{self.config.split}.jsonl", self.hub_id)
        return [
            GenDoc(
                answer=gsm8k_answer(r["answer"]),
                native_id=i,
                **shots_and_query(shots, f"Question: {r['question']}\nAnswer:"),
            )
            for i, r in enumerate(rows)
        ]

    def score_one(self, doc, completion):
        from olmo2.eval.checkers import gsm8k_score

        return {"exact_match": float(gsm8k_score(completion, doc.answer))}


class GSM8KGoldBPB(GSM8K):
    """Bits per byte of the gold chain of thought after the 8-shot prompt (OLMES
    `gsm8k::bpb`, "compute_gold_bpb"): a smooth signal for models too small to solve
    GSM8K. The gold answer is rewritten in the exemplars' style by `gsm8k_gold_cot`."""

    checker = None

    def load_docs(self, data_dir: Path) -> list[GenDoc]:
        rows = read_jsonl(data_dir / "eval" / "gsm8k" / f"{self.config.split}.jsonl", self.hub_id)
        docs = super().load_docs(data_dir)
        for d, r in zip(docs, rows, strict=True):
            d.extra["gold_cot"] = gsm8k_gold_cot(r["answer"])
        return docs

    def requests(self, docs: list[GenDoc]) -> list[Request]:
        return [
            Request(
                d.prompt,
                " " + d.extra["gold_cot"],
                i,
                0,
                chat_turns=d.chat_turns,
                chat_query=d.chat_query,
            )
            for i, d in enumerate(docs)
        ]

    def score(self, docs, requests, results) -> dict[str, float]:
        nats = -sum(r.logprob for r in results)
        nbytes = sum(len(q.continuation.encode("utf-8")) for q in requests)
        return {
            "bits_per_byte": metrics.bits_per_byte(nats, nbytes),
            "nats_per_byte": nats / nbytes,
            "num_docs": len(docs),
        }


def gsm8k_gold_cot(solution: str) -> str:
    """A GSM8K reference solution in the CoT exemplars' style: calculator annotations
    `<<...>>` dropped, spaces around + - * / =, lines joined, first letter capitalised, and
    "#### N" turned into "So the answer is N." (matches all 1,319 OLMES gold requests)."""
    text = re.sub(r"<<.*?>>", "", solution)
    text = re.sub(r"([+\-*/=])", r" \1 ", text)
    body, short = text.split("####")
    body = " ".join(body.split())
    body = body[:1].upper() + body[1:]
    if not body.endswith("."):
        body += "."
    return f"{body} So the answer is {' '.join(short.split())}."


def gsm8k_answer(solution: str) -> str:
    """The gold label as OLMES stores it: the last number of the "####" part, commas
    removed, matched with OLMES's regex `[-+]?\\d*\\.\\d+|\\d+` in which the sign attaches
    to decimals only, so "-10" is stored as "10" (allenai/olmes gsm8k.py; the checker
    extracts model answers the same way, so the two agree)."""
    found = re.findall(r"[-+]?\d*\.\d+|\d+", solution.split("####")[-1].replace(",", ""))
    return found[-1] if found else solution.split("####")[-1].strip()


# ---- MATH-500 (Lightman et al. 2023 split of Hendrycks et al. 2021), Minerva 4-shot ------
class MinervaMath500(GenerativeTask):
    """Prompt "Problem:\\n{problem}\\n\\nSolution:" after the 4 Minerva exemplars
    (Lewkowycz et al. 2022, App. D); `exact_match_flex` accepts any extracted candidate
    that is equivalent to the reference answer."""

    hub_id = "HuggingFaceH4/MATH-500"
    stop = ("Problem:",)
    checker = "math_score"
    max_gen_toks = 1024

    def rows(self, data_dir: Path) -> list[dict]:
        return read_jsonl(data_dir / "eval" / "math" / "math500_test.jsonl", self.hub_id)

    def gold(self, row: dict) -> str:
        return row["answer"]

    def load_docs(self, data_dir: Path) -> list[GenDoc]:
        from olmo2.eval.tasks.minerva_prompt import MINERVA_SHOTS

        shots = [
            (f"Problem:\n{p}\n\nSolution:", s) for p, s in MINERVA_SHOTS[: self.config.num_shots]
        ]
        return [
            GenDoc(
                answer=self.gold(r),
                native_id=r.get("unique_id", r.get("idx", i)),
                **shots_and_query(shots, f"Problem:\n{r['problem']}\n\nSolution:", sep="\n"),
            )
            for i, r in enumerate(self.rows(data_dir))
        ]

    def score_one(self, doc, completion):
        from olmo2.eval.checkers import math_score

        return {"exact_match_flex": float(math_score(completion, doc.answer))}


MATH_SUBJECTS = {  # OLMES task suffix -> the `type` field of Hendrycks MATH
    "algebra": "Algebra",
    "counting_and_probability": "Counting & Probability",
    "geometry": "Geometry",
    "intermediate_algebra": "Intermediate Algebra",
    "number_theory": "Number Theory",
    "prealgebra": "Prealgebra",
    "precalculus": "Precalculus",
}


class MinervaMath(MinervaMath500):
    """One subject of the full MATH test set (5,000 problems), as `minerva_math::tulu` runs it
    (OLMES `minerva_math_{subject}::tulu`: 4 Minerva shots, chat with the shots as turns when
    `--chat`, max 1024 tokens); the gold answer is the reference solution's last \\boxed{}."""

    hub_id = "EleutherAI/hendrycks_math"

    def __init__(self, key: str, config: TaskConfig, subject: str):
        super().__init__(key, config)
        self.subject = subject

    def rows(self, data_dir: Path) -> list[dict]:
        rows = read_jsonl(data_dir / "eval" / "math" / "math_test.jsonl", self.hub_id)
        return [r for r in rows if r["type"] == MATH_SUBJECTS[self.subject]]

    def gold(self, row: dict) -> str:
        from olmo2.eval.checkers import last_boxed

        return last_boxed(row["solution"]) or ""


# ---- IFEval (Zhou et al. 2023) ------------------------------------------------------------
class IFEval(GenerativeTask):
    """0-shot; the prompt is the instruction itself (render with --chat for instruct models).
    Reports prompt- and instruction-level accuracy, strict and loose."""

    hub_id = "google/IFEval"
    checker = "ifeval_score"
    max_gen_toks = 2048

    def load_docs(self, data_dir: Path) -> list[GenDoc]:
        rows = read_jsonl(data_dir / "eval" / "ifeval" / "input_data.jsonl", self.hub_id)
        return [
            GenDoc(
                r["prompt"],
                None,
                r["key"],
                {"ids": r["instruction_id_list"], "kwargs": r["kwargs"]},
            )
            for r in rows
        ]

    def score_one(self, doc, completion):
        from olmo2.eval.checkers import ifeval_score

        out = {}
        for mode, strict in (("strict", True), ("loose", False)):
            prompt_ok, per_inst = _ifeval_parts(
                ifeval_score(completion, doc.extra["ids"], doc.extra["kwargs"], strict=strict)
            )
            out[f"prompt_level_{mode}_acc"] = float(prompt_ok)
            out[f"inst_level_{mode}_acc"] = sum(map(float, per_inst)) / max(len(per_inst), 1)
        return out


def _ifeval_parts(res) -> tuple[bool, list[bool]]:
    """(prompt-level pass, per-instruction passes) from the checker's result: a dict holding
    the per-instruction list of bools (or a `(bool, list)` pair). The prompt passes when
    every instruction does (Zhou et al. 2023, §3), whatever the checker names its keys."""
    if isinstance(res, tuple):
        return bool(res[0]), list(res[1])
    per_inst = next(v for v in res.values() if isinstance(v, list))
    return all(per_inst), per_inst


# ---- Natural Questions, open-domain (Kwiatkowski et al. 2019; Lee et al. 2019) -------------
class NQOpen(GenerativeTask):
    """5-shot "Question: {q}\\nAnswer:", F1 and exact match against any gold answer.

    Departure: OLMES samples the shots from the train split (seed 1234), which the shared
    data lacks; we use the first 5 validation questions as shots and evaluate the rest."""

    hub_id = "google-research-datasets/nq_open"
    stop = ("\n", "Question:")
    max_gen_toks = 50

    def load_docs(self, data_dir: Path) -> list[GenDoc]:
        rows = read_jsonl(data_dir / "eval" / "nq_open" / "validation.jsonl", self.hub_id)
        k = self.config.num_shots
        shots = [(f"Question: {r['question']}\nAnswer:", r["answer"][0]) for r in rows[:k]]
        return [
            GenDoc(
                answer=r["answer"],
                native_id=i,
                **shots_and_query(shots, f"Question: {r['question']}\nAnswer:"),
            )
            for i, r in enumerate(rows[k:], k)
        ]

    def score_one(self, doc, completion):
        return metrics.qa_scores(completion, doc.answer)


# ---- BIG-Bench Hard (Suzgun et al. 2022), 3-shot CoT prompts from the BBH repository -----
BBH_SUBTASKS = (
    "boolean_expressions causal_judgement date_understanding disambiguation_qa dyck_languages "
    "formal_fallacies geometric_shapes hyperbaton logical_deduction_five_objects "
    "logical_deduction_seven_objects logical_deduction_three_objects movie_recommendation "
    "multistep_arithmetic_two navigate object_counting penguins_in_a_table "
    "reasoning_about_colored_objects ruin_names salient_translation_error_detection snarks "
    "sports_understanding temporal_sequences tracking_shuffled_objects_five_objects "
    "tracking_shuffled_objects_seven_objects tracking_shuffled_objects_three_objects "
    "web_of_lies word_sorting"
).split()


class BBH(GenerativeTask):
    hub_id = "lukaemon/bbh"
    stop = ("\n\n",)

    def __init__(self, key: str, config: TaskConfig, subtask: str):
        super().__init__(key, config)
        self.subtask = subtask

    def load_docs(self, data_dir: Path) -> list[GenDoc]:
        import json

        root = data_dir / "eval" / "bbh"
        prompt_path = root / "cot-prompts" / f"{self.subtask}.txt"
        if not prompt_path.is_file():
            raise FileNotFoundError(
                f"{prompt_path}: BBH CoT prompt missing (suzgunmirac/BIG-Bench-Hard)"
            )
        # The files start with a canary line and "-----"; the rest is description + 3 shots.
        prompt = prompt_path.read_text(encoding="utf-8").split("-----\n", 1)[-1].strip()
        data = json.loads((root / "bbh" / f"{self.subtask}.json").read_text(encoding="utf-8"))
        return [
            GenDoc(f"{prompt}\n\nQ: {ex['input']}\nA: Let's think step by step.", ex["target"], i)
            for i, ex in enumerate(data["examples"])
        ]

    def score_one(self, doc, completion):
        return {"exact_match": float(bbh_extract(completion) == doc.answer)}


def bbh_extract(completion: str) -> str:
    """The text after the last "the answer is", without a final period (BBH CoT format)."""
    found = re.findall(r"the answer is (.*?)\.?\s*$", completion.strip(), flags=re.I | re.M)
    return found[-1].strip() if found else completion.strip()


def _make(cls, key: str, config: TaskConfig, **kw):
    def make(**overrides):
        return cls(key, TaskConfig(**{**config.__dict__, **overrides}), **kw)

    return make


TASKS = {
    "gsm8k::olmes": _make(GSM8K, "gsm8k::olmes", TaskConfig("test", 8, "exact_match")),
    "gsm8k::bpb": _make(GSM8KGoldBPB, "gsm8k::bpb", TaskConfig("test", 8, "bits_per_byte")),
    "minerva_math_500::olmes": _make(
        MinervaMath500, "minerva_math_500::olmes", TaskConfig("test", 4, "exact_match_flex")
    ),
    # Tülu 3's GSM8K (OLMES `gsm8k::tulu`): the same 8 CoT shots, as chat turns with --chat
    "gsm8k::tulu": _make(GSM8K, "gsm8k::tulu", TaskConfig("test", 8, "exact_match")),
    **{
        f"minerva_math_{s}::tulu": _make(
            MinervaMath,
            f"minerva_math_{s}::tulu",
            TaskConfig("test", 4, "exact_match_flex"),
            subject=s,
        )
        for s in MATH_SUBJECTS
    },
    "ifeval::tulu": _make(IFEval, "ifeval::tulu", TaskConfig("train", 0, "prompt_level_loose_acc")),
    **{  # OLMES names it naturalqs::olmes in its suites
        key: _make(NQOpen, key, TaskConfig("validation", 5, "f1", limit=1000))
        for key in ("naturalqs_open::olmes", "naturalqs::olmes")
    },
    **{
        f"bbh_{t}:cot::olmes": _make(
            BBH, f"bbh_{t}:cot::olmes", TaskConfig("test", 3, "exact_match"), subtask=t
        )
        for t in BBH_SUBTASKS
    },
}
