"""Metrics against hand-computed values."""

from __future__ import annotations

import math

import pytest

from olmo2.eval import metrics
from olmo2.eval.formats import LLResult, MCDoc, Request


def test_normalisations_pick_different_winners():
    # choice 0: lp -6 over 3 tokens / " abcdefgh" (9 chars); choice 1: lp -4, 1 token, " ab" (3)
    # raw: 1 wins (-4 > -6); per token: 0 wins (-2 > -4); per char: 0 (-0.667 > -1.333)
    # uncond: lp - uncond = -6-(-9)=3 vs -4-(-1)=-3 -> 0 wins
    m = metrics.mc_doc_metrics(
        [-6.0, -4.0], [3, 1], [" abcdefgh", " ab"], gold=0, uncond_logprobs=[-9.0, -1.0]
    )
    assert m["acc_raw"] == 0.0
    assert m["acc_per_token"] == 1.0
    assert m["acc_per_char"] == 1.0
    assert m["acc_per_byte"] == 1.0
    assert m["acc_uncond"] == 1.0
    assert m["bits_per_byte_corr"] == pytest.approx(6.0 / (9 * math.log(2)))


def test_per_byte_differs_from_per_char_on_multibyte_text():
    # " é" is 2 chars but 3 bytes; " ab" 3 chars 3 bytes. lp -2.5 vs -2.8
    # per char: -1.25 vs -0.933 -> choice 1; per byte: -0.833 vs -0.933 -> choice 0
    m = metrics.mc_doc_metrics([-2.5, -2.8], [1, 1], [" é", " ab"], gold=0)
    assert m["acc_per_char"] == 0.0 and m["acc_per_byte"] == 1.0
    assert "acc_uncond" not in m


def test_ties_go_to_the_first_choice():
    assert metrics.mc_doc_metrics([-1.0, -1.0], [1, 1], [" a", " b"], gold=0)["acc_raw"] == 1.0
    assert metrics.mc_doc_metrics([-1.0, -1.0], [1, 1], [" a", " b"], gold=1)["acc_raw"] == 0.0


def test_score_multiple_choice_groups_by_doc_and_uses_uncond():
    docs = [MCDoc("q1", ["x", "y"], 1), MCDoc("q2", ["x", "y"], 0)]
    reqs = [
        Request("c1", " x", 0, 0),
        Request("c1", " y", 0, 1),
        Request("Answer:", " x", 1_000_000, 0),
        Request("Answer:", " y", 1_000_000, 1),
        Request("c2", " x", 1, 0),
        Request("c2", " y", 1, 1),
        Request("Answer:", " x", 1_000_001, 0),
        Request("Answer:", " y", 1_000_001, 1),
    ]
    lps = [-1.0, -2.0, -5.0, -1.0, -3.0, -1.0, -0.5, -4.0]
    res = [LLResult(lp, False, 1) for lp in lps]
    m = metrics.score_multiple_choice(docs, reqs, res)
    # raw: doc0 picks 0 (wrong), doc1 picks 1 (wrong) -> 0.0
    # uncond: doc0: [-1+5, -2+1] = [4, -1] -> 0 wrong; doc1: [-3+0.5, -1+4] -> 1 wrong
    assert m["acc_raw"] == 0.0 and m["acc_uncond"] == 0.0 and m["num_docs"] == 2
    res[1] = LLResult(-0.1, False, 1)  # doc0 now picks y (gold)
    assert metrics.score_multiple_choice(docs, reqs, res)["acc_raw"] == 0.5


def test_best_of_macro_micro():
    assert metrics.best_of({"x:mc": 0.3, "x:rc": 0.5}) == ("x:rc", 0.5)
    assert metrics.macro_average([0.2, 0.4, 0.9]) == pytest.approx(0.5)
    assert metrics.micro_average([1.0, 0.0], [3, 1]) == pytest.approx(0.75)


def test_squad_f1_and_em():
    assert metrics.normalize_answer("The  Cat, sat!") == "cat sat"
    assert metrics.exact_match("the Eiffel tower", ["Eiffel Tower", "Paris"]) == 1.0
    # pred tokens {eiffel, tower, paris}, gold {eiffel, tower}: p=2/3, r=1 -> f1 = 0.8
    assert metrics.f1("Eiffel Tower Paris", ["Eiffel Tower"]) == pytest.approx(0.8)
    assert metrics.f1("London", ["Eiffel Tower"]) == 0.0
    assert metrics.f1("", [""]) == 1.0


def test_truthfulqa_mc1_mc2():
    assert metrics.truthfulqa_mc1([-1.0, -0.5, -3.0], [1, 0, 0]) == 0.0
    assert metrics.truthfulqa_mc1([-0.2, -0.5, -3.0], [1, 0, 0]) == 1.0
    # probabilities 0.5, 0.25, 0.25 (log) with the first two true -> 0.75
    lp = [math.log(0.5), math.log(0.25), math.log(0.25)]
    assert metrics.truthfulqa_mc2(lp, [1, 1, 0]) == pytest.approx(0.75)


def test_bits_per_byte_closed_form():
    assert metrics.bits_per_byte(math.log(2) * 10, 5) == pytest.approx(2.0)


def test_qa_scores_and_recall():
    s = metrics.qa_scores(" Paris, France\n", ["paris"])
    assert s == {"f1": pytest.approx(2 / 3), "exact_match": 0.0, "recall": 1.0}
    assert metrics.recall("It was Lyon", ["Paris", "lyon"]) == 1.0


def test_popqa_containment():
    # as is, lower-cased or .capitalize()d alias inside the generation
    assert metrics.contains_answer(" the city of paris", ["Paris"]) == 1.0
    assert metrics.contains_answer(" He was a Politician.", ["politician"]) == 1.0
    assert metrics.contains_answer(" New York City", ["new york"]) == 0.0  # "New york" only
    assert metrics.contains_answer(" London", ["Paris", "Lyon"]) == 0.0


@pytest.mark.parametrize(
    ("n", "c", "k"),
    [(10, 3, 1), (10, 3, 5), (20, 5, 10), (5, 0, 1), (7, 7, 3), (20, 19, 2), (1, 1, 1)],
)
def test_pass_at_k_closed_form(n, c, k):
    expected = 1 - math.comb(n - c, k) / math.comb(n, k)  # Chen et al. 2021, eq. 1
    assert metrics.pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_hand_values():
    assert metrics.pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert metrics.pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)
    with pytest.raises(ValueError, match="at least 10 samples"):
        metrics.pass_at_k(5, 2, 10)
