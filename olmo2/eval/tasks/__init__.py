"""Task registry: OLMES keys (`task:formulation::regime`) and suites.

`get_task("arc_challenge:rc::olmes")` builds one task; `resolve([...])` expands suites such
as `core_9mcqa::olmes` into their leaf tasks. A suite aggregates its members by
`mc_or_rc` (best of the MC and RC primary scores, OLMES `X::olmes`), `macro` (plain mean) or
`micro` (document-weighted mean), as in allenai/olmes oe_eval/configs/task_suites.py.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from olmo2.eval.tasks.base import Task, TaskConfig


@dataclass(frozen=True)
class Suite:
    key: str
    members: tuple[str, ...]
    aggregate: str  # "mc_or_rc" | "macro" | "micro"


def _leaf_factories() -> dict:
    from olmo2.eval.tasks import (
        agieval,
        arc,
        code,
        commonsense,
        generative,
        hellaswag,
        judged,
        likelihood,
        long_context,
        mmlu,
        mmlu_pro,
        qa,
        reward,
        winogrande,
    )

    out: dict = {}
    for mod in (arc, commonsense, hellaswag, winogrande, mmlu, likelihood, generative, qa,
                agieval, mmlu_pro, code, judged, long_context, reward):  # fmt: skip
        out.update(mod.TASKS)
    return out


CORE_9 = "arc_challenge arc_easy boolq csqa hellaswag openbookqa piqa socialiqa winogrande".split()


OLMO_2_HELDOUT = (
    "agi_eval_english:1shot::olmes",
    "bbh:cot::olmes",
    "gsm8k::olmes",
    "mmlu_pro:mc::none",
    "triviaqa::olmes",
)
"""The OLMo 2 held-out base-model suite (allenai/olmes oe_eval/configs/task_suites.py); OLMES
lists `bbh:cot-v1::olmes`, whose answer regex our `bbh:cot::olmes` extraction follows."""
OLMO_2_GENERATIVE = ("coqa::olmes", "squad::olmes", "jeopardy::olmes", "naturalqs::olmes",
                     "drop::olmes")  # fmt: skip
TULU_3_DEV = (
    "gsm8k::tulu",
    "drop::llama3",
    "minerva_math::tulu",
    "codex_humaneval::tulu",
    "codex_humanevalplus::tulu",
    "ifeval::tulu",
    "popqa::tulu",
    "mmlu:mc::tulu",
    "alpaca_eval_v2::tulu",
    "bbh:cot-v1::tulu",
    "truthfulqa::tulu",
)
"""Tülu 3's development suite (OLMES `tulu_3_dev`), run with `--chat`."""


def _suites() -> dict[str, Suite]:
    from olmo2.eval.tasks.agieval import SUBTASKS as AGIEVAL
    from olmo2.eval.tasks.generative import BBH_SUBTASKS, MATH_SUBJECTS
    from olmo2.eval.tasks.long_context import suites as long_context_suites
    from olmo2.eval.tasks.mmlu import SUBJECTS
    from olmo2.eval.tasks.mmlu_pro import CATEGORIES

    s = [Suite(f"{t}::olmes", (f"{t}:mc::olmes", f"{t}:rc::olmes"), "mc_or_rc") for t in CORE_9]
    s.append(Suite("core_9mcqa::olmes", tuple(f"{t}::olmes" for t in CORE_9), "macro"))
    for f in ("mc", "rc"):
        s.append(
            Suite(f"mmlu:{f}::olmes", tuple(f"mmlu_{x}:{f}::olmes" for x in SUBJECTS), "macro")
        )
    s.append(Suite("mmlu::olmes", ("mmlu:mc::olmes", "mmlu:rc::olmes"), "mc_or_rc"))
    s.append(Suite("bbh:cot::olmes", tuple(f"bbh_{t}:cot::olmes" for t in BBH_SUBTASKS), "micro"))
    for regime in (":1shot::olmes", "::olmes"):
        s.append(
            Suite(
                f"agi_eval_english{regime}",
                tuple(f"agi_eval_{t}{regime}" for t in AGIEVAL),
                "macro",
            )
        )
    s.append(
        Suite("mmlu_pro:mc::none", tuple(f"mmlu_pro_{c}:mc::none" for c in CATEGORIES), "micro")
    )
    s.append(
        Suite(
            "minerva_math::tulu", tuple(f"minerva_math_{m}::tulu" for m in MATH_SUBJECTS), "macro"
        )
    )
    s.append(Suite("mmlu:mc::tulu", ("mmlu:mc::olmes",), "macro"))  # the same 5-shot MC prompts
    s.append(Suite("bbh:cot-v1::tulu", ("bbh:cot::olmes",), "macro"))
    s.append(Suite("olmo_2_heldout::olmes", OLMO_2_HELDOUT, "macro"))
    s.append(Suite("olmo_2_generative::olmes", OLMO_2_GENERATIVE, "macro"))
    s.append(Suite("tulu_3_dev::olmes", TULU_3_DEV, "macro"))
    s += [Suite(key, members, "macro") for key, members in long_context_suites()]
    return {x.key: x for x in s}


def all_keys() -> list[str]:
    return sorted({**_leaf_factories(), **_suites()})


def _canonical(key: str, known: dict) -> str:
    if key in known:
        return key
    for guess in (
        f"{key}::olmes",
        f"{key}:rc::olmes",
        f"{key}::none",
        f"{key}::tulu",
    ):  # regime omitted
        if guess in known:
            return guess
    close = difflib.get_close_matches(key, list(known), n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see `olmo2 eval --list-tasks`"
    raise ValueError(f"unknown task {key!r}{hint}")


def get_task(key: str, **overrides) -> Task:
    """Build a leaf task; `overrides` replace TaskConfig fields (split, num_shots, limit...)."""
    leaves = _leaf_factories()
    key = _canonical(key, {**leaves, **_suites()})
    if key not in leaves:
        raise ValueError(f"{key!r} is a suite; use resolve() to expand it")
    bad = set(overrides) - set(TaskConfig.__dataclass_fields__)
    if bad:
        raise ValueError(f"unknown task config field(s) {sorted(bad)} for {key}")
    return leaves[key](**overrides)


def resolve(keys: list[str]) -> tuple[list[str], list[Suite]]:
    """Leaf task keys (first-seen order, no duplicates) and the suites to aggregate, members
    before the suites that contain them."""
    leaves, suites = _leaf_factories(), _suites()
    known = {**leaves, **suites}
    leaf_out: list[str] = []
    suite_out: list[Suite] = []

    def visit(k: str) -> None:
        k = _canonical(k, known)
        if k in suites:
            for m in suites[k].members:
                visit(m)
            if suites[k] not in suite_out:
                suite_out.append(suites[k])
        elif k not in leaf_out:
            leaf_out.append(k)

    for k in keys:
        visit(k)
    return leaf_out, suite_out


__all__ = ["Suite", "Task", "TaskConfig", "all_keys", "get_task", "resolve"]
