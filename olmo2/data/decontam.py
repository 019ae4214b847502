"""Decontamination: find training documents that share a long n-gram with an evaluation set.

Text is normalised to lowercase words with punctuation removed (`dedup.normalized_words`); a
training document is contaminated when any of its `ngram`-word windows (default 13, the GPT-3
rule, Brown et al. 2020 App. C) also occurs in an evaluation text. The index is a sorted numpy
array of 64-bit n-gram hashes (`hashing.ngram_hashes`), so building it over all eval sets takes
about a second and a lookup is one `np.searchsorted`.

Which files and fields are read (`EVAL_SOURCES`, for a directory laid out like shared/data/eval):
only evaluation splits are indexed — never splits that are meant for training or few-shot
prompts (gsm8k/train, mmlu/dev, mbpp ids outside 11-510). Eval texts shorter than `ngram` words
(short answers such as "2017") are not indexed: they match too much by chance.
"""

from __future__ import annotations

import collections
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from olmo2.data.dedup import normalized_words
from olmo2.data.documents import open_text
from olmo2.data.hashing import ngram_hashes, stable_word_hashes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalSource:
    glob: str
    """Files under the eval directory."""
    fields: tuple[str, ...]
    """Dotted paths into each row; lists are walked (`choices.text` reads every choice)."""
    keep: Callable[[dict], bool] | None = None
    """Row filter (e.g. MBPP test ids only)."""


def _mbpp_test(row: dict) -> bool:
    return 11 <= int(row.get("task_id", 0)) <= 510  # the MBPP paper's test ids


EVAL_SOURCES: dict[str, tuple[EvalSource, ...]] = {
    "gsm8k": (EvalSource("gsm8k/test.jsonl", ("question", "answer")),),
    "math": (EvalSource("math/math*_test.jsonl", ("problem", "solution")),),
    "mmlu": (EvalSource("mmlu/[tv][ea]*.jsonl", ("question", "choices")),),  # test, validation
    "arc": (EvalSource("arc_*/*.jsonl", ("question", "choices.text")),),
    "openbookqa": (EvalSource("openbookqa/*.jsonl", ("question_stem", "choices.text")),),
    "boolq": (EvalSource("boolq/*.jsonl", ("question", "passage")),),
    "piqa": (EvalSource("piqa/*.jsonl", ("goal", "sol1", "sol2")),),
    "siqa": (EvalSource("siqa/*.jsonl", ("context", "question", "answerA", "answerB", "answerC")),),
    "commonsenseqa": (EvalSource("commonsenseqa/*.jsonl", ("question", "choices.text")),),
    "winogrande": (EvalSource("winogrande/*.jsonl", ("sentence", "option1", "option2")),),
    "sciq": (EvalSource("sciq/*.jsonl", ("question", "correct_answer", "support")),),
    "copa": (EvalSource("copa/*.jsonl", ("premise", "choice1", "choice2")),),
    "nq_open": (EvalSource("nq_open/*.jsonl", ("question", "answer")),),
    "hellaswag": (EvalSource("hellaswag/*.jsonl", ("query", "choices")),),
    "basic_arithmetic": (EvalSource("basic_arithmetic/*.jsonl", ("question", "choices.text")),),
    "ifeval": (EvalSource("ifeval/input_data.jsonl", ("prompt",)),),
    "truthfulqa": (EvalSource("truthfulqa/mc_task_v0.json", ("question", "mc2_targets")),),
    "bbh": (EvalSource("bbh/bbh/*.json", ("examples.input",)),),
    "agieval": (EvalSource("agieval/*.jsonl", ("passage", "question", "options")),),
    # Code benchmarks: only the natural-language problem (and HumanEval's signature+docstring).
    # Normalised to words, 13-grams of reference solutions are common idioms ("for i in range
    # len arr ..."): indexing them flagged 65 of the 464 MBPP train/validation solutions.
    "humaneval": (EvalSource("humaneval/HumanEval.jsonl.gz", ("prompt",)),),
    "mbpp": (EvalSource("mbpp/mbpp.jsonl", ("text",), keep=_mbpp_test),),
    "alpaca_eval": (EvalSource("alpaca_eval/*.json", ("instruction",)),),
    "mt_bench": (EvalSource("mt_bench/question.jsonl", ("turns",)),),
    "self_instruct": (
        EvalSource("self_instruct_user_oriented/*.jsonl", ("instruction", "instances.input")),
    ),
    "lambada": (EvalSource("lambada/*.jsonl", ("context", "continuation")),),
    "wikitext2": (
        EvalSource("wikitext2/wiki.test.tokens", ()),
    ),  # plain text, one paragraph a line
}


def _values(obj, path: list[str]) -> Iterator[str]:
    """Every string at `path` inside `obj`, walking lists and dict keys at the leaves."""
    if isinstance(obj, list):
        for x in obj:
            yield from _values(x, path)
    elif not path:
        if isinstance(obj, str):
            yield obj
        elif isinstance(obj, dict):  # e.g. TruthfulQA targets {answer: 0/1}
            yield from (k for k in obj if isinstance(k, str))
    elif isinstance(obj, dict) and path[0] in obj:
        yield from _values(obj[path[0]], path[1:])


def _rows(path: Path) -> Iterator[dict]:
    if path.name.endswith(".json"):
        with open_text(path) as f:
            data = json.load(f)
        yield from data if isinstance(data, list) else [data]
    else:
        with open_text(path) as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)


def eval_texts(eval_dir: str | Path, tasks: list[str] | None = None) -> Iterator[tuple[str, str]]:
    """(task, text) for every indexed field of every eval row."""
    eval_dir = Path(eval_dir)
    for task, sources in EVAL_SOURCES.items():
        if tasks is not None and task not in tasks:
            continue
        for src in sources:
            for path in sorted(eval_dir.glob(src.glob)):
                if not src.fields:  # plain text
                    with open_text(path) as f:
                        yield from ((task, line) for line in f if line.strip())
                    continue
                for row in _rows(path):
                    if src.keep is not None and not src.keep(row):
                        continue
                    for fld in src.fields:
                        for text in _values(row, fld.split(".")):
                            yield task, text


@dataclass
class DecontamConfig:
    eval_dir: str | None = None
    """A directory laid out like shared/data/eval; None disables decontamination."""
    ngram: int = 13
    mode: str = "drop"
    """'drop' removes contaminated documents; 'report' only counts them."""
    tasks: tuple[str, ...] | None = None
    """Subset of `EVAL_SOURCES` to index; None = all found."""


class ContaminationIndex:
    def __init__(self, hashes: np.ndarray, owners: np.ndarray, tasks: list[str], ngram: int):
        self.hashes, self.owners, self.tasks, self.ngram = hashes, owners, tasks, ngram
        self.texts_read: dict[str, int] = {}
        """Eval texts read per task (including those too short to index)."""

    @classmethod
    def build(cls, cfg: DecontamConfig) -> ContaminationIndex:
        if cfg.mode not in ("drop", "report"):
            raise ValueError(f"decontam mode {cfg.mode!r}: expected 'drop' or 'report'")
        if cfg.eval_dir is None or not Path(cfg.eval_dir).is_dir():
            raise FileNotFoundError(f"{cfg.eval_dir}: eval directory for decontamination not found")
        tasks = sorted(EVAL_SOURCES) if cfg.tasks is None else list(cfg.tasks)
        unknown = set(tasks) - set(EVAL_SOURCES)
        if unknown:
            raise ValueError(
                f"decontam tasks {sorted(unknown)}: known tasks are {sorted(EVAL_SOURCES)}"
            )
        # All eval texts' words in one array; a window is kept only if it lies inside one text
        # (one vectorised pass instead of ~250k small numpy calls).
        words: list[bytes] = []
        text_lengths: list[int] = []
        task_of_text: list[int] = []
        texts_read: collections.Counter = collections.Counter()
        for task, text in eval_texts(cfg.eval_dir, tasks):
            texts_read[task] += 1
            w = normalized_words(text)
            if len(w) >= cfg.ngram:
                words.extend(w)
                text_lengths.append(len(w))
                task_of_text.append(tasks.index(task))
        if not words:
            raise ValueError(
                f"{cfg.eval_dir}: no evaluation texts found (expected e.g. gsm8k/test.jsonl)"
            )
        seg = np.repeat(np.arange(len(text_lengths)), text_lengths)  # text number of each word
        h = ngram_hashes(stable_word_hashes(words), cfg.ngram)
        inside = seg[: len(h)] == seg[cfg.ngram - 1 :]
        hashes, owner = h[inside], np.asarray(task_of_text, dtype=np.int16)[seg[: len(h)][inside]]
        order = np.argsort(hashes)
        index = cls(hashes[order], owner[order], tasks, cfg.ngram)
        index.texts_read = dict(texts_read)
        log.info(
            "decontam index: %d %d-grams from %d tasks",
            len(index.hashes),
            cfg.ngram,
            len(set(index.owners.tolist())),
        )
        return index

    def __len__(self) -> int:
        return len(self.hashes)

    def matches(self, text: str) -> list[str]:
        """Eval tasks sharing at least one n-gram with `text` (empty list = clean)."""
        h = ngram_hashes(stable_word_hashes(normalized_words(text)), self.ngram)
        if not len(h) or not len(self.hashes):
            return []
        h = np.unique(h)  # sorted queries make the binary searches cache-friendly
        pos = np.searchsorted(self.hashes, h).clip(max=len(self.hashes) - 1)
        hit = self.hashes[pos] == h
        if not hit.any():
            return []
        return sorted({self.tasks[i] for i in self.owners[pos[hit]].tolist()})
