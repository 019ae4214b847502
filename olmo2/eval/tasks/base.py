"""What every task provides: documents, the requests they turn into, and their metrics.

A task is built from a key such as `arc_challenge:rc::olmes` (task `:` formulation `::`
regime, as in OLMES). `requests()` flattens the documents into model calls; the harness
answers them in any order it likes; `score()` turns the answers back into metrics.
"""

from __future__ import annotations

import json
import logging
import os
import random
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

from olmo2.eval import metrics
from olmo2.eval.formats import (
    LETTERS,
    MCDoc,
    PromptStyle,
    Request,
    chat_turns,
    mc_prompt,
    mc_requests,
    mc_shot,
    rc_prompt,
    rc_requests,
    rc_shot,
    with_shots,
)

log = logging.getLogger(__name__)

SUBSAMPLE_SEED = 1234
"""OLMES `random_subsample_seed`: `limit` picks `random.Random(1234).sample(docs, limit)`."""


@dataclass
class TaskConfig:
    """The knobs OLMES records in each task's config (and our results JSON)."""

    split: str
    num_shots: int
    primary_metric: str
    limit: int | None = None
    """Evaluate a seeded random subsample of at most this many documents."""
    seed: int = SUBSAMPLE_SEED


# file stems of the shared data directory that are not the HF split's name
SPLIT_OF_STEM = {
    "math500_test": "test",
    "input_data": "train",
    "lambada_openai_test": "test",
    "validation_olmes_sample1000": "validation",
    "math_test": "test",
    "mbpp": "test",
    "HumanEval.jsonl": "test",
}


def read_jsonl(path: Path, hub_id: str) -> list[dict]:
    """Rows of a data-directory file; when it is missing and the machine is online, the same
    rows from the Hugging Face dataset `hub_id` ("name" or "name:config", split = the file's
    stem) through the `datasets` package."""
    if path.is_file():
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    missing = (
        f"{path}: evaluation data file is missing; pass --data-dir pointing at a directory "
        f"laid out like shared/data (this file holds the HF dataset {hub_id!r})"
    )
    offline = any(os.environ.get(v) == "1" for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    if not hub_id or offline:
        raise FileNotFoundError(missing)
    try:
        import datasets
    except ImportError:
        raise FileNotFoundError(f"{missing}, or `pip install datasets` to read it online") from None
    name, _, config = hub_id.partition(":")
    split = SPLIT_OF_STEM.get(path.stem, path.stem)
    log.info("%s missing: reading %s (%s) split %s from the hub", path, name, config, split)
    try:
        rows = datasets.load_dataset(name, config or None, split=split)
    except Exception as e:  # offline, unknown split...: name what was tried
        raise FileNotFoundError(f"{missing}; the hub fallback failed: {e}") from None
    return [dict(r) for r in rows]


def effective_limit(config: TaskConfig, limit: int | str | None) -> int | None:
    """The caller's `limit` in place of the task's: None = the task's, 0 / "all" = no limit."""
    if limit is None:
        return config.limit
    if limit == "all" or limit == 0:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit: expected a whole number >= 0 or 'all', got {limit!r}")
    return limit


@cache
def cached_jsonl(path: Path, hub_id: str) -> tuple[dict, ...]:
    """`read_jsonl` read once per process: tasks that split one file by subject (MMLU,
    MMLU-Pro) share it."""
    return tuple(read_jsonl(path, hub_id))


def subsample(docs: list, limit: int | None, seed: int = SUBSAMPLE_SEED) -> list:
    """OLMES subsampling: keep every doc (in order) unless there are more than `limit`."""
    if limit is None or len(docs) <= limit:
        return docs
    return random.Random(seed).sample(docs, limit)


class Task:
    """Base class. Subclasses set `key`, `config`, and implement the three methods."""

    key: str
    config: TaskConfig
    hub_id: str = ""
    always_chat: bool = False
    """Render with the chat template even without --chat (judged tasks talk to a chat model)."""
    needs_reward_model: bool = False
    """Scored by a reward model ("reward" requests), not a causal LM (`tasks/reward.py`)."""

    def load_docs(self, data_dir: Path) -> list:
        raise NotImplementedError

    def docs(self, data_dir: Path, limit: int | str | None = None) -> list:
        """The evaluated documents. `limit` None keeps the task's own limit; a number replaces
        it (OLMES `--limit`, allenai/olmes oe_eval/launch.py overrides the task config's
        `limit`); 0 or "all" evaluates every document. Subsampling is seeded."""
        return subsample(
            self.load_docs(data_dir), effective_limit(self.config, limit), self.config.seed
        )

    def requests(self, docs: list) -> list[Request]:
        raise NotImplementedError

    def check_ready(self) -> None:
        """Raise a clear error before any model time is spent if scoring cannot work."""

    def prepare(self, **context) -> None:
        """Take what scoring needs beyond the answers before requests are built (`harness`:
        the code sandbox's cache; `judge`: the judged tasks' endpoint)."""

    def score(self, docs: list, requests: list[Request], results: list) -> dict[str, float]:
        raise NotImplementedError


class MultipleChoiceTask(Task):
    """An OLMES multiple-choice task in its RC or MC formulation."""

    family: str = ""
    style = PromptStyle()
    uncond: bool = True
    """RC adds the unconditional "Answer:" requests (all OLMES RC tasks but BoolQ, WinoGrande)."""

    def __init__(self, key: str, formulation: str, config: TaskConfig):
        assert formulation in ("rc", "mc"), formulation
        self.key, self.formulation, self.config = key, formulation, config

    def fewshot_docs(self) -> list[MCDoc]:
        from olmo2.eval.tasks.fewshot import FEWSHOT

        return [MCDoc(**d) for d in FEWSHOT[self.family][: self.config.num_shots]]

    def description(self, doc: MCDoc) -> str:
        return ""

    def shots_for(self, doc: MCDoc) -> list[MCDoc]:
        return self.fewshot_docs() if self.config.num_shots else []

    def doc_requests(self, doc: MCDoc, doc_id: int) -> list[Request]:
        shots, st, desc = self.shots_for(doc), self.style, self.description(doc)
        if self.formulation == "rc":
            ctx = with_shots([rc_shot(s, st) for s in shots], rc_prompt(doc, st), desc)
            reqs = rc_requests(doc, doc_id, ctx, self.uncond)
            chat = chat_turns(
                shots, doc, lambda d: rc_prompt(d, st), lambda d: d.choices[d.gold], desc
            )
        else:
            ctx = with_shots([mc_shot(s, st) for s in shots], mc_prompt(doc, st), desc)
            reqs = mc_requests(doc, doc_id, ctx)
            chat = chat_turns(
                shots, doc, lambda d: mc_prompt(d, st), lambda d: LETTERS[d.gold], desc
            )
        # the unconditional "Answer:" requests stay a bare prompt
        return [r if r.is_uncond else replace(r, **chat) for r in reqs]

    def requests(self, docs: list[MCDoc]) -> list[Request]:
        return [r for i, d in enumerate(docs) for r in self.doc_requests(d, i)]

    def score(self, docs, requests, results) -> dict[str, float]:
        return metrics.score_multiple_choice(docs, requests, results)


class DataShotsTask(MultipleChoiceTask):
    """A multiple-choice task whose shots come from its own data files (MMLU's dev split,
    MMLU-Pro's validation split, AGIEval's few-shot file): `load_docs` stores them."""

    def __init__(self, key: str, formulation: str, config: TaskConfig):
        super().__init__(key, formulation, config)
        self.shots: list[MCDoc] = []

    def fewshot_docs(self) -> list[MCDoc]:
        assert len(self.shots) == self.config.num_shots, "load_docs() reads the shots first"
        return self.shots


def olmes_variants(
    cls,
    name: str,
    *,
    split: str,
    rc_metric: str,
    limit: int | None = None,
    num_shots: int = 5,
    formulations: tuple[str, ...] = ("rc", "mc"),
    **kwargs,
) -> dict:
    """Registry entries `{name}:rc::olmes` / `{name}:mc::olmes` (MC always uses `acc_raw`).

    Each entry is a factory taking TaskConfig overrides (e.g. `split="validation"`)."""

    def factory(key: str, formulation: str, config: TaskConfig):
        def make(**overrides) -> Task:
            cfg = TaskConfig(**{**config.__dict__, **overrides})
            return cls(key, formulation, cfg, **kwargs)

        return make

    out = {}
    for f in formulations:
        key = f"{name}:{f}::olmes"
        metric = rc_metric if f == "rc" else "acc_raw"
        out[key] = factory(key, f, TaskConfig(split, num_shots, metric, limit))
    return out
