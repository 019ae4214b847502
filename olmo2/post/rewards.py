"""Verifiable rewards for RLVR (GRPO), one place for all verifiers.

Reward = 10 × verifier score (open-instruct `verification_reward` 10.0; the score is 1/0,
or the satisfied fraction for IFEval), and responses that never emit EOS/stop get
`non_stop_penalty` instead when it is set (−10 in the OLMo 2 7B/13B PPO runs, off for the
1B GRPO run; allenai/open-instruct ground_truth_utils.py, docs/olmo2.md).

Datasets:
- `gsm8k`, `math`, `ifeval`: the evaluation checkers (`olmo2.eval.checkers.score_by_dataset`),
  so training and evaluation grade answers identically.
- `add`, `reverse`: small synthetic tasks generated here (seeded) with their own verifiers,
  for demos and tests that must show reward going up in minutes on a CPU.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

VERIFICATION_REWARD = 10.0
CHECKER_DATASETS = ("gsm8k", "math", "ifeval")
_INT = re.compile(r"-?\d+")


def add_score(completion: str, ground_truth: str) -> float:
    """1.0 when the last integer in the completion equals the ground truth."""
    found = _INT.findall(completion)
    return float(bool(found) and found[-1] == ground_truth.strip())


def reverse_score(completion: str, ground_truth: str) -> float:
    """1.0 when the completion (stripped) is exactly the reversed word."""
    return float(completion.strip() == ground_truth.strip())


SYNTHETIC: dict[str, Callable[[str, str], float]] = {"add": add_score, "reverse": reverse_score}
DATASETS = CHECKER_DATASETS + tuple(SYNTHETIC)


def check_dataset(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(
            f"unknown verifier dataset {name!r}; expected one of {', '.join(DATASETS)}"
        )


def score(dataset: str, completion: str, ground_truth: str) -> float:
    """Verifier score in [0, 1]."""
    check_dataset(dataset)
    if dataset in SYNTHETIC:
        return SYNTHETIC[dataset](completion, ground_truth)
    from olmo2.eval.checkers import score_by_dataset  # imported only when used

    return float(score_by_dataset(dataset, completion, ground_truth))


def reward(
    dataset: str,
    completion: str,
    ground_truth: str,
    finished: bool = True,
    non_stop_penalty: float | None = None,
    scale: float = VERIFICATION_REWARD,
) -> tuple[float, float]:
    """(reward, score): `scale`·score, or the penalty for an unfinished response."""
    s = score(dataset, completion, ground_truth)
    if not finished and non_stop_penalty is not None:
        return float(non_stop_penalty), s
    return scale * s, s


# ---- synthetic tasks ------------------------------------------------------------------------


def addition_rows(n: int, seed: int = 0, digits: int = 1) -> list[dict]:
    """`n` GRPO/SFT rows "a+b=" with a, b uniform `digits`-digit numbers (0-9 for one digit)."""
    rng = random.Random(seed)
    hi = 10**digits - 1
    rows = []
    for _ in range(n):
        a, b = rng.randint(0, hi), rng.randint(0, hi)
        rows.append(
            {
                "messages": [{"role": "user", "content": f"{a}+{b}="}],
                "ground_truth": str(a + b),
                "dataset": "add",
            }
        )
    return rows


def reverse_rows(
    n: int, seed: int = 0, min_len: int = 3, max_len: int = 5, alphabet: str = "abcde"
) -> list[dict]:
    """`n` rows asking to reverse a random word over `alphabet`."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        w = "".join(rng.choice(alphabet) for _ in range(rng.randint(min_len, max_len)))
        rows.append(
            {
                "messages": [{"role": "user", "content": f"reverse {w}"}],
                "ground_truth": w[::-1],
                "dataset": "reverse",
            }
        )
    return rows


def with_answers(rows: list[dict]) -> list[dict]:
    """SFT rows from synthetic prompt rows: the ground truth as the assistant reply."""
    return [
        {"messages": r["messages"] + [{"role": "assistant", "content": r["ground_truth"]}]}
        for r in rows
    ]
