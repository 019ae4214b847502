"""Post-training data for the demo: instruction and preference rows, and the verifiable task.

With a data directory the instruction (SFT) and preference (DPO) rows are the public
`posttrain/rasbt_instruction_data*.json` sets; without one the demo generates its own
string tasks (reverse a word: the preferred reply is the reversed word, the rejected one the
word unchanged). With `--hub` and no data directory they are the first rows of the OLMo 2
post-training sets on the Hugging Face hub (`HUB_SFT`, `HUB_DPO`, streamed: nothing else is
downloaded).
The verifiable task is single-step addition `a+b=` with operands 0..N,
scored by `olmo2.post.rewards.add_score`.

The SFT addition replies carry a systematic error, as imperfect SFT data does: most of them
are one too high, the rest right. The SFT model then usually answers one too high; the GRPO
stage, which only sees the verifier's reward on its own samples, has something measurable
to fix.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from olmo2.post import rewards as R
from olmo2.post.data import BadRow, preference_pair, sft_messages, write_jsonl

HUB_SFT = "allenai/tulu-3-sft-olmo-2-mixture"
"""OLMo 2 Instruct SFT mixture: rows {id, messages, source}."""
HUB_DPO = "allenai/olmo-2-1124-7b-preference-mix"
"""OLMo 2 7B preference mixture: rows {chosen, rejected} as message lists."""


def hub_rows(name: str, n: int) -> list[dict]:
    """The first `n` rows of a hub dataset's train split, streamed."""
    try:
        import datasets
    except ImportError:
        raise ValueError("--hub needs the `datasets` package: pip install datasets") from None
    return [dict(r) for r in datasets.load_dataset(name, split="train", streaming=True).take(n)]


def addition_prompts(add_max: int) -> list[dict]:
    """Every `a+b=` prompt with 0 <= a, b <= add_max, as GRPO prompt rows."""
    return [
        {
            "messages": [{"role": "user", "content": f"{a}+{b}="}],
            "ground_truth": str(a + b),
            "dataset": "add",
        }
        for a in range(add_max + 1)
        for b in range(add_max + 1)
    ]


def noisy_addition_sft(add_max: int, n: int, correct: float, seed: int) -> list[dict]:
    """`n` SFT rows cycling over all prompts; a reply is right with probability `correct`,
    otherwise the sum + 1."""
    rng = random.Random(seed)
    prompts = addition_prompts(add_max)
    rows = []
    for i in range(n):
        p = prompts[i % len(prompts)]
        answer = int(p["ground_truth"])
        if rng.random() >= correct:
            answer += 1
        rows.append({"messages": p["messages"] + [{"role": "assistant", "content": str(answer)}]})
    rng.shuffle(rows)
    return rows


def _rasbt(data_dir: Path | None, name: str) -> list[dict] | None:
    path = data_dir / "posttrain" / name if data_dir else None
    if path is None or not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def instruction_rows(
    data_dir: Path | None, n: int, seed: int, hub: bool = False
) -> tuple[list[dict], str]:
    """(SFT rows as messages, description of the source)."""
    rows = _rasbt(data_dir, "rasbt_instruction_data.json")
    if rows is None and hub:
        return [{"messages": sft_messages(r)} for r in hub_rows(HUB_SFT, n)], HUB_SFT
    if rows is not None:
        return [{"messages": sft_messages(r)} for r in rows[:n]], "rasbt_instruction_data.json"
    return R.with_answers(R.reverse_rows(n, seed)), "generated: reverse a word"


def preference_rows(
    data_dir: Path | None, n: int, seed: int, hub: bool = False
) -> tuple[list[dict], str]:
    """(DPO rows {messages, chosen, rejected}, description of the source)."""
    rows = _rasbt(data_dir, "rasbt_instruction_data_with_preference.json")
    source = "rasbt_instruction_data_with_preference.json"
    if rows is None and hub:
        rows, source = hub_rows(HUB_DPO, n), HUB_DPO
    if rows is not None:
        out = []
        for r in rows[:n]:
            try:
                messages, chosen, rejected = preference_pair(r)
            except BadRow:  # e.g. an empty reply: `olmo2 dpo` would count and skip it too
                continue
            out.append({"messages": messages, "chosen": chosen, "rejected": rejected})
        return out, source
    out = []
    for r in R.reverse_rows(n, seed + 1):
        word = r["ground_truth"][::-1]
        out.append({"messages": r["messages"], "chosen": r["ground_truth"], "rejected": word})
    return out, "generated: reverse a word (rejected = unreversed)"


def write_posttrain_data(out: Path, data_dir: Path | None, cfg) -> dict:
    """Write sft.jsonl, dpo.jsonl, grpo.jsonl into `out`; return a description per file."""
    out.mkdir(parents=True, exist_ok=True)
    instruct, isrc = instruction_rows(data_dir, cfg.instruct_rows, seed=0, hub=cfg.hub)
    adds = noisy_addition_sft(cfg.add_max, cfg.add_sft_rows, cfg.add_sft_correct, seed=0)
    sft = instruct + adds
    random.Random(1).shuffle(sft)
    prefs, psrc = preference_rows(data_dir, cfg.dpo_rows, seed=0, hub=cfg.hub)
    prompts = addition_prompts(cfg.add_max)
    write_jsonl(sft, out / "sft.jsonl")
    write_jsonl(prefs, out / "dpo.jsonl")
    write_jsonl(prompts, out / "grpo.jsonl")
    return {
        "sft.jsonl": f"{len(instruct)} instruction rows ({isrc}) + {len(adds)} addition rows "
        f"(operands 0-{cfg.add_max}, {cfg.add_sft_correct:.0%} right, the rest one too high)",
        "dpo.jsonl": f"{len(prefs)} preference pairs ({psrc})",
        "grpo.jsonl": f"{len(prompts)} addition prompts with ground truth (verifier `add`)",
    }
