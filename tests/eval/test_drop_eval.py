"""DROP's official metric (allennlp-reading-comprehension drop_eval.py, as OLMES and lm-eval
run it) against hand-computed cases: numbers, spans, multi-span alignment, dates."""

from __future__ import annotations

import random

import pytest

from olmo2.eval.drop_eval import best_assignment_total, drop_score, gold_answers, normalize_span


def test_normalisation():
    assert normalize_span("The 45-yard Field-Goal!") == "45.0 yard field goal"
    assert normalize_span("1,000") == "1000.0"  # comma dropped, then a number
    assert normalize_span("2.50") == "2.5" and normalize_span("an apple") == "apple"


@pytest.mark.parametrize(
    ("prediction", "gold", "em", "f1"),
    [
        ("2", ("2",), 1.0, 1.0),
        (" 2.0", ("2",), 1.0, 1.0),  # numbers compare as floats
        ("2 field goals", ("2",), 0.0, 0.5),  # P 1/3, R 1 -> 2·(1/3)/(4/3)
        ("3 field goals", ("2",), 0.0, 0.0),  # the gold number is missing: zeroed
        ("two", ("2",), 0.0, 0.0),
        ("the Nate Kaeding.", ("Nate Kaeding",), 1.0, 1.0),
        ("Kaeding", ("Nate Kaeding",), 0.0, 0.67),  # P 1, R 1/2 -> 2/3, rounded
        ("June 1344", ("June 1344",), 1.0, 1.0),
        # one predicted span against two gold spans: (1 + 0) / max(2, 1) slots
        ("Jason Hanson", ("Jason Hanson", "Connor Barth"), 0.0, 0.5),
    ],
)
def test_single_prediction(prediction, gold, em, f1):
    assert drop_score(prediction, [gold]) == {"exact_match": em, "f1": f1}


def test_multi_span_alignment():
    gold = [("Jason Hanson", "Connor Barth")]
    assert drop_score(["Connor Barth", "Jason Hanson"], gold) == {"exact_match": 1.0, "f1": 1.0}
    # gold x pred bag F1: [[2/3, 0], [0, 2/3]] -> best matching 4/3 over 2 slots -> 0.67
    assert drop_score(["Jason", "Barth"], gold) == {"exact_match": 0.0, "f1": 0.67}
    # three predictions for two golds: the extra one costs a slot (2 / 3)
    three = drop_score(["Jason Hanson", "Connor Barth", "Calvin Johnson"], gold)
    assert three == {"exact_match": 0.0, "f1": 0.67}


def test_max_over_golds_skips_empty_answers():
    assert drop_score("two", [("2",), ("two",)])["f1"] == 1.0
    assert drop_score("anything", [("",)]) == {"exact_match": 0.0, "f1": 0.0}


def test_gold_answers_from_hub_rows():
    row = {
        "answer": {"number": "", "date": {"day": "", "month": "June", "year": "1344"}, "spans": []},
        "validated_answers": {
            "number": ["", "7"],
            "date": [
                {"day": "", "month": "June", "year": "1344"},
                {"day": "", "month": "", "year": ""},
            ],
            "spans": [[], []],
        },
    }
    assert gold_answers(row) == [("June 1344",), ("7",)]


def test_assignment_equals_scipy():
    scipy_opt = pytest.importorskip("scipy.optimize")
    import numpy as np

    rng = random.Random(0)
    for _ in range(50):
        r, c = rng.randint(1, 5), rng.randint(1, 5)
        m = [[rng.choice([0.0, rng.random()]) for _ in range(c)] for _ in range(r)]
        rows, cols = scipy_opt.linear_sum_assignment(-np.array(m))
        assert best_assignment_total(m) == pytest.approx(sum(m[i][j] for i, j in zip(rows, cols)))
