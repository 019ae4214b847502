"""Tests for olmo2/data/decontam.py: n-gram overlap with eval sets, which files/fields count."""

from __future__ import annotations

import json
import time

import pytest

from olmo2.data.decontam import EVAL_SOURCES, ContaminationIndex, DecontamConfig, eval_texts

QUESTION = (
    "Janet's ducks lay sixteen eggs per day and she eats three for breakfast every morning "
    "and bakes muffins for her friends with four more."
)


def _write(path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def eval_dir(tmp_path):
    d = tmp_path / "eval"
    _write(d / "gsm8k/test.jsonl", [{"question": QUESTION, "answer": "#### 9"}])
    train_q = (
        "a training question that is allowed to appear in pretraining data because it is train"
    )
    _write(d / "gsm8k/train.jsonl", [{"question": train_q, "answer": "x"}])
    mbpp = "write a python function to count the number of vowels in a given string of text now"
    _write(
        d / "mbpp/mbpp.jsonl",
        [{"task_id": 11, "text": mbpp, "code": ""}, {"task_id": 700, "text": train_q, "code": ""}],
    )
    _write(
        d / "arc_easy/test.jsonl",
        [{"question": "q", "choices": {"text": [" ".join(f"choice{i}" for i in range(13))]}}],
    )
    return d


def test_thirteen_word_overlap_is_contamination(eval_dir):
    idx = ContaminationIndex.build(DecontamConfig(eval_dir=str(eval_dir)))
    assert {t for t, _ in eval_texts(eval_dir)} == {"gsm8k", "mbpp", "arc"}
    words = QUESTION.split()
    span13 = " ".join(words[3:16])
    span12 = " ".join(words[3:15])
    assert idx.matches(f"Once upon a time. {span13} The end.") == ["gsm8k"]
    assert idx.matches(f"Once upon a time. {span12} The end.") == []
    # Case, punctuation and line breaks do not hide a match.
    noisy = span13.upper().replace(" ", ",\n ")
    assert idx.matches(noisy) == ["gsm8k"]
    # Nested list fields are read (ARC choices.text).
    assert idx.matches(" ".join(f"choice{i}" for i in range(13))) == ["arc"]


def test_training_splits_are_not_indexed(eval_dir):
    idx = ContaminationIndex.build(DecontamConfig(eval_dir=str(eval_dir)))
    allowed = (
        "a training question that is allowed to appear in pretraining data because it is train"
    )
    assert idx.matches(allowed) == []  # gsm8k/train and MBPP id 700 are not eval splits
    mbpp = "write a python function to count the number of vowels in a given string of text now"
    assert idx.matches(mbpp) == ["mbpp"]


def test_task_subset_and_errors(eval_dir, tmp_path):
    idx = ContaminationIndex.build(DecontamConfig(eval_dir=str(eval_dir), tasks=("mbpp",)))
    assert idx.matches(QUESTION) == []
    with pytest.raises(ValueError, match="known tasks"):
        ContaminationIndex.build(DecontamConfig(eval_dir=str(eval_dir), tasks=("nope",)))
    with pytest.raises(FileNotFoundError):
        ContaminationIndex.build(DecontamConfig(eval_dir=str(tmp_path / "missing")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no evaluation texts"):
        ContaminationIndex.build(DecontamConfig(eval_dir=str(tmp_path / "empty")))
    with pytest.raises(ValueError, match="mode"):
        ContaminationIndex.build(DecontamConfig(eval_dir=str(eval_dir), mode="delete"))


def test_real_eval_directory(data_dir):
    """Every task in EVAL_SOURCES finds its files in shared/data/eval; a real item matches."""
    eval_dir = data_dir / "eval"
    t0 = time.perf_counter()
    idx = ContaminationIndex.build(DecontamConfig(eval_dir=str(eval_dir)))
    assert set(idx.texts_read) == set(EVAL_SOURCES)
    assert time.perf_counter() - t0 < 30  # ~3 s on the 2-core dev box
    assert len(idx) > 1_000_000
    row = json.loads((eval_dir / "hellaswag/validation_olmes_sample1000.jsonl").open().readline())
    text = "Some web page.\n" + row["query"] + " " + row["choices"][row["gold"]]
    if len(text.split()) >= 16:
        assert "hellaswag" in idx.matches(text)
    gsm = json.loads((eval_dir / "gsm8k/test.jsonl").open().readline())
    assert "gsm8k" in idx.matches("Solve this: " + gsm["question"])
    train = json.loads((eval_dir / "gsm8k/train.jsonl").open().readline())
    assert "gsm8k" not in idx.matches(train["question"])
