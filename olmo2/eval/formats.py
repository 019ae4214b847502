"""OLMES prompt formats: ranked classification (RC, "cloze") and multiple choice (MC).

OLMES (Gu et al. 2024, "OLMES: A Standard for Language Model Evaluations"; allenai/olmes
`oe_eval/tasks/utils.py`) fixes two ways to put a multiple-choice question to a model:

* **RC**: `{stem}\\nAnswer:` and every choice is scored as the continuation `" {choice}"`.
  A second, *unconditional* request scores each choice after the bare prompt `"Answer:"`
  (doc id + 1,000,000) so that `acc_uncond` can rank choices by PMI.
* **MC**: the choices are listed as `"\\n A. {choice}"` lines, then `"\\nAnswer:"`, and the
  continuations are the letters `" A"`, `" B"`, ...

Few-shot examples are the same rendering with the gold answer appended, joined by a blank
line. Every string here is checked against the prompts oe-eval wrote
(`tests/eval/test_olmes_requests.py`).
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field

LETTERS = string.ascii_uppercase
UNCOND_CONTEXT = "Answer:"
"""The context of the unconditional requests behind `acc_uncond` (OLMES `uncond_docid_offset`)."""
UNCOND_DOC_OFFSET = 1_000_000
SHOT_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class MCDoc:
    """One multiple-choice item in processed form: the prompt text before the choices."""

    stem: str
    choices: list[str]
    gold: int
    native_id: object = None
    mc_stem: str | None = None
    """Stem for the MC formulation when it differs from the RC one (HellaSwag)."""
    extra: dict = field(default_factory=dict)
    """Task-specific fields kept for scoring or for the request dump (e.g. MMLU subject)."""

    def __post_init__(self) -> None:
        assert 0 <= self.gold < len(self.choices), (self.gold, self.choices)


@dataclass(frozen=True)
class PromptStyle:
    """The few task-specific pieces of the OLMES templates."""

    answer_prefix: str = "\nAnswer:"
    """Appended to the stem in RC prompts ("" for HellaSwag and COPA, which continue text)."""
    mc_infix: str = ""
    """Between the stem and the lettered choices (HellaSwag: "\\nChoose the best continuation:")."""
    mc_strip_choices: bool = False
    """Strip the choices listed in MC prompts (HellaSwag endings may start with a space)."""


@dataclass(frozen=True)
class Request:
    """One model call. `kind` is "loglikelihood" (score `continuation` after `context`),
    "generate" (continuation of `context` until a `stop` string; `idx` numbers the samples
    of one document when a task draws several) or "reward" (a reward model's score of the
    rendered conversation `context`)."""

    context: str
    continuation: str = ""
    doc_id: int = 0
    idx: int = 0
    kind: str = "loglikelihood"
    stop: tuple[str, ...] = ()
    max_gen_toks: int = 0
    chat_turns: tuple[tuple[str, str], ...] = ()
    """The few-shot examples as (user, assistant) turns, for chat rendering (`--chat`):
    OLMES `fewshot_as_multiturn`. Empty = the whole context becomes one user turn."""
    chat_query: str = ""
    """The final user turn that goes with `chat_turns`."""
    assistant_prefix: str = ""
    """Text that opens the assistant's turn in chat rendering (OLMES `assistant_prefix`, e.g.
    HumanEval's "Here is the completed function:...")."""
    temperature: float = 0.0
    """Generation: 0 = greedy; above 0 samples (with `top_p`), seeded by `seed`."""
    top_p: float | None = None
    seed: int = 0

    @property
    def is_uncond(self) -> bool:
        return self.doc_id >= UNCOND_DOC_OFFSET


@dataclass(frozen=True)
class LLResult:
    """The answer to a log-likelihood request."""

    logprob: float
    """Sum of log p(continuation token | everything before it), natural log."""
    is_greedy: bool
    """Whether every continuation token is the argmax (LAMBADA accuracy)."""
    num_tokens: int


def rc_prompt(doc: MCDoc, style: PromptStyle = PromptStyle()) -> str:
    return doc.stem + style.answer_prefix


def mc_prompt(doc: MCDoc, style: PromptStyle = PromptStyle()) -> str:
    stem = doc.mc_stem if doc.mc_stem is not None else doc.stem
    choices = [c.strip() for c in doc.choices] if style.mc_strip_choices else doc.choices
    lines = "".join(f"\n {LETTERS[i]}. {c}" for i, c in enumerate(choices))
    return f"{stem}{style.mc_infix}{lines}\nAnswer:"


def rc_shot(doc: MCDoc, style: PromptStyle = PromptStyle()) -> str:
    return f"{rc_prompt(doc, style)} {doc.choices[doc.gold]}"


def mc_shot(doc: MCDoc, style: PromptStyle = PromptStyle()) -> str:
    return f"{mc_prompt(doc, style)} {LETTERS[doc.gold]}"


def with_shots(shots: list[str], prompt: str, description: str = "") -> str:
    """`description` + each shot followed by a blank line + the prompt (oe-eval's layout)."""
    return description + "".join(s + SHOT_SEPARATOR for s in shots) + prompt


def chat_turns(
    shots: list[MCDoc], doc: MCDoc, prompt, answer, description: str = ""
) -> dict[str, object]:
    """`chat_turns`/`chat_query` fields: each shot as a user prompt and an assistant answer
    (without the leading space the plain-text rendering puts before it)."""
    turns = tuple((prompt(s), answer(s)) for s in shots)
    if turns:
        turns = ((description + turns[0][0], turns[0][1]), *turns[1:])
        return {"chat_turns": turns, "chat_query": prompt(doc)}
    return {"chat_turns": (), "chat_query": description + prompt(doc)}


def rc_requests(doc: MCDoc, doc_id: int, context: str, uncond: bool) -> list[Request]:
    """One request per choice (`" {choice}"`), plus the unconditional copies when asked."""
    reqs = [Request(context, f" {c}", doc_id, i) for i, c in enumerate(doc.choices)]
    if uncond:
        reqs += [
            Request(UNCOND_CONTEXT, f" {c}", doc_id + UNCOND_DOC_OFFSET, i)
            for i, c in enumerate(doc.choices)
        ]
    return reqs


def mc_requests(doc: MCDoc, doc_id: int, context: str) -> list[Request]:
    return [Request(context, f" {LETTERS[i]}", doc_id, i) for i in range(len(doc.choices))]
