"""Tasks scored by a judge model: AlpacaEval 2 (length-controlled win rate against GPT-4
1106's outputs) and MT-Bench (single-answer grading, 1–10). They need `--judge-url` and
`--judge-model` (`olmo2.eval.judge`), and always render the prompt with the chat template.

* **AlpacaEval 2** (`alpaca_eval_v2::tulu`; OLMES alpaca_eval.py, tatsu-lab/alpaca_eval): the
  805 instructions, greedy, up to 2,048 new tokens (OLMES: 8,192, which needs an 8k context).
  The annotator is AlpacaEval's `weighted_alpaca_eval_gpt4_turbo` (evaluators_configs/…/
  alpaca_eval_clf_gpt4_turbo.txt): the two outputs as "m" and "M" in an order drawn per
  instruction, one token, and the preference = the probability mass on the model's letter
  over {m, M} from the top-5 log-probs; a judge without log-probs is read by its letter.
  Metrics: `length_controlled_winrate` (primary; `olmo2.eval.lc_winrate`), `win_rate`,
  `discrete_win_rate`, in percent.
* **MT-Bench** (`mt_bench::none`; lm-sys/FastChat fastchat/llm_judge): 80 two-turn questions;
  the second turn is generated after the first answer; each turn is rated with FastChat's
  `single-v1` / `single-v1-multi-turn` judge prompts, the rating read from "[[x]]". Departure:
  the math, reasoning and coding questions are graded with the general prompt too, since the
  GPT-4 reference answers FastChat adds for them are not in the shared data. Greedy decoding
  for every category (FastChat samples writing and roleplay at T 0.7).

Safety (the model card's "Safety" column) is left out: Tülu 3 scores it with classifiers such
as WildGuard (allenai/wildguard, a 7B Mistral fine-tune) over HarmBench, XSTest, WildJailbreak
and similar prompt sets; running it would need those prompt sets and a 7B classifier (or a
judge endpoint prompted as one), and no small public classifier reproduces its numbers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from olmo2.eval.formats import Request
from olmo2.eval.judge import first_token_probs, text_of
from olmo2.eval.lc_winrate import length_controlled
from olmo2.eval.tasks.base import Task, TaskConfig, read_jsonl

log = logging.getLogger(__name__)

AE_SYSTEM = (
    "You are a highly efficient assistant, who evaluates and selects the best large language "
    "model (LLMs) based on the quality of their responses to a given instruction. This process "
    "will be used to create a leaderboard reflecting the most accurate and human-preferred "
    "answers."
)
AE_TEMPLATE = """I require a leaderboard for various large language models. I'll provide you with prompts given to these models and their corresponding outputs. Your task is to assess these responses, and select the model that produces the best output from a human perspective.

## Instruction

{{
    "instruction": "{instruction}"
}}

## Model Outputs

Here are the unordered outputs from the models. Each output is associated with a specific model, identified by a unique model identifier.

{{
    {{
        "model_identifier": "m",
        "output": "{output_1}"
    }},
    {{
        "model_identifier": "M",
        "output": "{output_2}"
    }}
}}

## Task

Evaluate the models based on the quality and relevance of their outputs, and select the model that generated the best output. Answer by providing the model identifier of the best model. We will use your output as the name of the best model, so make sure your output only contains one of the following model identifiers and nothing else (no quotes, no spaces, no new lines, ...): m or M.

## Best Model Identifier"""

MT_SYSTEM_1 = "You are a helpful assistant."
MT_TEMPLATE_1 = (
    "[Instruction]\nPlease act as an impartial judge and evaluate the quality of the response "
    "provided by an AI assistant to the user question displayed below. Your evaluation should "
    "consider factors such as the helpfulness, relevance, accuracy, depth, creativity, and level "
    "of detail of the response. Begin your evaluation by providing a short explanation. Be as "
    "objective as possible. After providing your explanation, you must rate the response on a "
    'scale of 1 to 10 by strictly following this format: "[[rating]]", for example: "Rating: '
    "[[5]]\".\n\n[Question]\n{question}\n\n[The Start of Assistant's Answer]\n{answer}\n"
    "[The End of Assistant's Answer]"
)
MT_SYSTEM_2 = (
    "Please act as an impartial judge and evaluate the quality of the response provided by an "
    "AI assistant to the user question displayed below. Your evaluation should consider factors "
    "such as the helpfulness, relevance, accuracy, depth, creativity, and level of detail of the "
    "response. You evaluation should focus on the assistant's answer to the second user "
    "question. Begin your evaluation by providing a short explanation. Be as objective as "
    "possible. After providing your explanation, you must rate the response on a scale of 1 to "
    '10 by strictly following this format: "[[rating]]", for example: "Rating: [[5]]".\n\n'
)
MT_TEMPLATE_2 = (
    "<|The Start of Assistant A's Conversation with User|>\n\n### User:\n{question_1}\n\n"
    "### Assistant A:\n{answer_1}\n\n### User:\n{question_2}\n\n### Assistant A:\n{answer_2}\n\n"
    "<|The End of Assistant A's Conversation with User|>"
)
RATING = (re.compile(r"\[\[(\d+\.?\d*)\]\]"), re.compile(r"\[(\d+\.?\d*)\]"))


@dataclass
class ChatDoc:
    turns: list[str]
    native_id: object = None
    extra: dict = field(default_factory=dict)


class JudgedTask(Task):
    always_chat = True
    max_gen_toks = 2048

    def __init__(self, key: str, config: TaskConfig):
        self.key, self.config = key, config
        self.judge = self.harness = None

    def prepare(self, harness=None, judge=None, **_) -> None:
        self.harness, self.judge = harness, judge

    def check_ready(self) -> None:
        pass  # the judge arrives with prepare(); score() says so if it is missing

    def need_judge(self):
        if self.judge is None:
            raise ValueError(f"{self.key} needs a judge: pass --judge-url and --judge-model")
        return self.judge

    def requests(self, docs: list[ChatDoc]) -> list[Request]:
        return [
            Request(
                d.turns[0],
                doc_id=i,
                kind="generate",
                max_gen_toks=self.max_gen_toks,
                chat_query=d.turns[0],
            )  # fmt: skip
            for i, d in enumerate(docs)
        ]


# ---- AlpacaEval 2 ------------------------------------------------------------------------
def model_is_second(instruction: str) -> bool:
    """The order of the two outputs, fixed per instruction (AlpacaEval randomises it with a
    seed per example; this uses a hash of the instruction)."""
    return hashlib.sha256(instruction.encode()).digest()[0] % 2 == 0


def preference(choice: dict, model_letter: str) -> float | None:
    """P(the model's output is best) from the judge's first token; None if unreadable."""
    probs = first_token_probs(choice, ("m", "M"))
    if probs and sum(probs.values()) > 0:
        return probs[model_letter] / sum(probs.values())
    letter = text_of(choice).strip()[:1]
    if letter not in ("m", "M"):
        return None
    return 1.0 if letter == model_letter else 0.0


class AlpacaEval(JudgedTask):
    hub_id = "tatsu-lab/alpaca_eval:alpaca_eval_gpt4_baseline"

    def load_docs(self, data_dir: Path) -> list[ChatDoc]:
        path = data_dir / "eval" / "alpaca_eval" / "gpt4_1106_preview_model_outputs.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: AlpacaEval baseline outputs missing (HF {self.hub_id})"
            )
        rows = json.loads(path.read_text(encoding="utf-8"))
        difficulty = _difficulty(data_dir / "eval" / "alpaca_eval" / "instruction_difficulty.csv")
        return [
            ChatDoc(
                [r["instruction"]],
                i,
                {
                    "baseline": r["output"],
                    "dataset": r["dataset"],
                    "difficulty": difficulty.get(r["instruction"]),
                },
            )  # fmt: skip
            for i, r in enumerate(rows)
        ]

    def annotate(self, doc: ChatDoc, output: str) -> float | None:
        second = model_is_second(doc.turns[0])
        pair = (doc.extra["baseline"], output) if second else (output, doc.extra["baseline"])
        prompt = AE_TEMPLATE.format(instruction=doc.turns[0], output_1=pair[0], output_2=pair[1])
        messages = [{"role": "system", "content": AE_SYSTEM}, {"role": "user", "content": prompt}]
        choice = self.need_judge().chat(messages, max_tokens=1, top_logprobs=5)
        return preference(choice, "M" if second else "m")

    def score(self, docs, requests, results) -> dict[str, float]:
        outputs = {r.doc_id: out for r, out in zip(requests, results, strict=True)}
        prefs = self.need_judge().map(
            lambda i: self.annotate(docs[i], outputs[i]), range(len(docs))
        )
        keep = [i for i, p in enumerate(prefs) if p is not None]
        diff = [docs[i].extra["difficulty"] for i in keep]
        use_diff = bool(keep) and all(d is not None for d in diff)
        out = length_controlled(
            [prefs[i] for i in keep], [len(outputs[i]) for i in keep],
            [len(docs[i].extra["baseline"]) for i in keep], diff if use_diff else None,
        )  # fmt: skip
        out["num_annotated"] = len(keep)
        out["avg_length"] = sum(map(len, outputs.values())) / max(len(outputs), 1)
        out["num_docs"] = len(docs)
        return out


def _difficulty(path: Path) -> dict[str, float]:
    """instruction -> AlpacaEval's `instruction_difficulty` (from its df_gamed.csv), if given."""
    if not path.is_file():
        return {}
    import csv

    with open(path, encoding="utf-8", newline="") as f:
        return {r["instruction"]: float(r["instruction_difficulty"]) for r in csv.DictReader(f)}


# ---- MT-Bench ---------------------------------------------------------------------------------
def rating(text: str) -> float | None:
    for pattern in RATING:
        found = pattern.search(text)
        if found:
            return float(found.group(1))
    return None


class MTBench(JudgedTask):
    hub_id = "lmsys/mt_bench_human_judgments"
    max_gen_toks = 1024

    def load_docs(self, data_dir: Path) -> list[ChatDoc]:
        rows = read_jsonl(data_dir / "eval" / "mt_bench" / "question.jsonl", "")
        return [
            ChatDoc(list(r["turns"]), r["question_id"], {"category": r["category"]}) for r in rows
        ]

    def second_turns(self, docs: list[ChatDoc], first: list[str]) -> list[str]:
        from olmo2.eval.harness import chat_request

        if self.harness is None:
            raise ValueError(
                f"{self.key}: the second turn needs the harness (evaluate() passes it)"
            )
        reqs = [
            chat_request(
                Request(
                    d.turns[1],
                    doc_id=i,
                    kind="generate",
                    max_gen_toks=self.max_gen_toks,
                    chat_turns=((d.turns[0], a),),
                    chat_query=d.turns[1],
                ),
                self.harness.tokenizer,
            )  # fmt: skip
            for i, (d, a) in enumerate(zip(docs, first, strict=True))
        ]
        return self.harness.generate(reqs)

    def judge_turn(self, doc: ChatDoc, answers: tuple[str, str], turn: int) -> float | None:
        q1, q2 = doc.turns[:2]
        if turn == 1:
            system, user = MT_SYSTEM_1, MT_TEMPLATE_1.format(question=q1, answer=answers[0])
        else:
            system = MT_SYSTEM_2
            user = MT_TEMPLATE_2.format(question_1=q1, answer_1=answers[0], question_2=q2,
                                        answer_2=answers[1])  # fmt: skip
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        return rating(text_of(self.need_judge().chat(messages, max_tokens=2048)))

    def score(self, docs, requests, results) -> dict[str, float]:
        judge = self.need_judge()
        first = [out for _, out in sorted(zip((r.doc_id for r in requests), results, strict=True))]
        answers = list(zip(first, self.second_turns(docs, first), strict=True))
        jobs = [(i, t) for i in range(len(docs)) for t in (1, 2)]
        got = judge.map(lambda job: self.judge_turn(docs[job[0]], answers[job[0]], job[1]), jobs)
        out: dict[str, float] = {}
        for t in (1, 2):
            vals = [g for (_, tt), g in zip(jobs, got, strict=True) if tt == t and g is not None]
            out[f"score_turn{t}"] = sum(vals) / len(vals) if vals else float("nan")
        rated = [g for g in got if g is not None]
        out["score"] = sum(rated) / len(rated) if rated else float("nan")
        out["num_rated"] = len(rated)
        out["num_docs"] = len(docs)
        return out


TASKS = {
    "alpaca_eval_v2::tulu": lambda **o: AlpacaEval(
        "alpaca_eval_v2::tulu",
        TaskConfig(**{**TaskConfig("eval", 0, "length_controlled_winrate").__dict__, **o}),
    ),
    "mt_bench::none": lambda **o: MTBench(
        "mt_bench::none", TaskConfig(**{**TaskConfig("test", 0, "score").__dict__, **o})
    ),
}
