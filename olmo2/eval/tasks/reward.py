"""Reward-model evaluation: pairwise accuracy on preference pairs.

Each pair's two conversations (prompt + chosen reply, prompt + rejected reply) are rendered
with the chat template exactly as `olmo2 rm` trains on them and scored by the reward model
at their last token (requests of kind "reward"). A pair is correct when the chosen side
scores strictly higher (a tie is wrong, as in RewardBench `scripts/run_rm.py`); also
reported: the mean margin r_chosen − r_rejected. These tasks need a reward-model checkpoint
(`Olmo2ForSequenceClassification`); `olmo2 eval` refuses them on a causal LM.

Data: the shared hh-rlhf harmless-base test split (anthropics/hh-rlhf, 2,312 rows; rows
`olmo2.post.data.preference_pair` cannot use are skipped and counted, and so are pairs with a
side longer than the model's context unless `--truncate`). `::heldout` scores the
pairs `is_heldout` selects, the side `olmo2 rm` leaves out with `data.exclude_heldout`;
`::all` scores every pair (an RM trained elsewhere).

The held-out rule: a pair is held out when the first 8 bytes of
SHA-256(`HELDOUT_SEED` + "\\n" + JSON of its prompt messages), as a fraction of 2^64, fall
below `HELDOUT_FRACTION`. It depends on the prompt only, so pairs sharing a prompt land on one
side, and on nothing about order or process, so training and evaluation agree.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from olmo2.eval.formats import Request
from olmo2.eval.tasks.base import Task, TaskConfig
from olmo2.tokenizer import render_chat

log = logging.getLogger(__name__)

HELDOUT_SEED = "olmo2-rm-heldout-v1"
HELDOUT_FRACTION = 0.1
HH_HARMLESS = Path("posttrain") / "hh_rlhf_harmless_base_test.jsonl.gz"


def is_heldout(prompt: list[dict], fraction: float = HELDOUT_FRACTION) -> bool:
    """Whether a pair with these prompt messages is on the held-out side (module docstring)."""
    key = json.dumps([[m["role"], m["content"]] for m in prompt], ensure_ascii=False)
    digest = hashlib.sha256(f"{HELDOUT_SEED}\n{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") < fraction * 2**64


@dataclass(frozen=True)
class PairDoc:
    prompt: list[dict]
    chosen: str
    rejected: str
    native_id: int
    """1-based row number in the file."""


class PairwiseAccuracy(Task):
    """Accuracy of a reward model on the preference pairs of one file."""

    needs_reward_model = True

    def __init__(self, key: str, config: TaskConfig, path: Path, side: str):
        assert side in ("heldout", "all"), side
        self.key, self.config, self.path, self.side = key, config, path, side
        self.skipped, self.too_long = 0, 0
        self.fits = None

    def prepare(self, harness=None, **context) -> None:
        """Pairs with a side longer than the model's context are skipped and counted (as
        `olmo2 rm` skips them), unless the harness truncates."""
        if harness is not None and not harness.truncate:
            tok, limit = harness.tokenizer, harness.max_length
            self.fits = lambda text: len(tok.encode(text)) <= limit

    def load_docs(self, data_dir: Path) -> list[PairDoc]:
        from olmo2.post.data import BadRow, preference_pair, read_rows

        path, docs, self.skipped = data_dir / self.path, [], 0
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: preference file missing; pass --data-dir pointing at a directory "
                "laid out like shared/data"
            )
        for n, row in read_rows(path):
            try:
                if row is None:
                    raise BadRow("not a JSON object")
                prompt, ch, rj = preference_pair(row)
            except BadRow as e:
                self.skipped += 1
                log.debug("%s: row %d skipped (%s)", path, n, e.reason)
                continue
            if self.side == "all" or is_heldout(prompt):
                doc = PairDoc(prompt, ch, rj, n)
                if self.fits and not all(self.fits(t) for t in self.texts(doc)):
                    self.too_long += 1
                    continue
                docs.append(doc)
        if self.skipped or self.too_long:
            log.info("%s: %d unusable rows and %d pairs longer than the context skipped",
                     path, self.skipped, self.too_long)  # fmt: skip
        return docs

    @staticmethod
    def texts(d: PairDoc) -> tuple[str, str]:
        """The chosen and the rejected conversation, rendered as `olmo2 rm` trains on them."""
        return tuple(
            render_chat(d.prompt + [{"role": "assistant", "content": reply}])[0]
            for reply in (d.chosen, d.rejected)
        )

    def requests(self, docs: list[PairDoc]) -> list[Request]:
        return [
            Request(text, doc_id=i, idx=j, kind="reward")
            for i, d in enumerate(docs)
            for j, text in enumerate(self.texts(d))
        ]

    def score(self, docs, requests, results) -> dict[str, float]:
        by = {(r.doc_id, r.idx): float(s) for r, s in zip(requests, results, strict=True)}
        margins = [by[(i, 0)] - by[(i, 1)] for i in range(len(docs))]
        n = max(len(margins), 1)
        return {
            "accuracy": sum(m > 0 for m in margins) / n,
            "margin": sum(margins) / n,
            "skipped": self.skipped,
            "too_long": self.too_long,
            "num_docs": len(docs),
        }


def _factory(key: str, side: str):
    def make(**overrides) -> Task:
        cfg = TaskConfig(**{**TaskConfig("test", 0, "accuracy").__dict__, **overrides})
        return PairwiseAccuracy(key, cfg, HH_HARMLESS, side)

    return make


TASKS = {
    f"hh_rlhf_harmless:rm::{side}": _factory(f"hh_rlhf_harmless:rm::{side}", side)
    for side in ("heldout", "all")
}
