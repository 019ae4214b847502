"""IFEval checkers (olmo2/eval/ifeval.py): one pass and one fail case per instruction, with
kwargs taken from the first real row of IFEval's input_data.jsonl that uses it, plus the
strict/loose scoring rules of Zhou et al. 2023."""

from __future__ import annotations

import json

import pytest

from olmo2.eval.ifeval import (
    INSTRUCTIONS,
    check_instruction,
    ifeval_score,
    loose_variants,
    split_into_sentences,
)

LONG = " ".join(["word"] * 310)
KANNADA = "ನಮಸ್ಕಾರ, ನಾನು ಕನ್ನಡದಲ್ಲಿ ಬರೆಯುತ್ತಿದ್ದೇನೆ. ಇದು ಒಂದು ಸುಂದರ ದಿನ ಮತ್ತು ನಾವು ಉದ್ಯಾನಕ್ಕೆ ಹೋಗುತ್ತೇವೆ."
REPEAT = (
    "Write an email to my boss telling him that I am quitting. The email must contain a "
    "title wrapped in double angular brackets, i.e. <<title>>."
)

# instruction id -> (a response that follows it, one that does not), for the kwargs of the
# first input_data.jsonl row using the id (printed in the comment).
CASES = {
    "punctuation:no_comma": ("Fine and dandy.", "Fine, and dandy."),
    # num_highlights=3
    "detectable_format:number_highlighted_sections": (
        "*one* then **two** and *three*",
        "*one* and *two* and ** **",
    ),
    # at least 300 words
    "length_constraints:number_words": (LONG, " ".join(["word"] * 299)),
    # at least 12 placeholders
    "detectable_content:number_placeholders": (
        " ".join(f"[p{i}]" for i in range(12)),
        " ".join(f"[p{i}]" for i in range(11)),
    ),
    "combination:repeat_prompt": (REPEAT.upper() + "\n<<Goodbye>> Dear boss ...", "Dear boss"),
    "detectable_format:title": ("<<My Title>>\nbody", "<< >>\nMy Title\nbody"),
    "change_case:english_lowercase": (
        "this is an all lowercase english sentence about the weather today.",
        "This is an English sentence with one capital letter.",
    ),
    # exactly 3 bullets
    "detectable_format:number_bullet_lists": ("* a\n* b\n- c", "* a\n* b\n* c\n* d"),
    "change_case:english_capital": (
        "THIS IS AN ALL CAPITAL ENGLISH SENTENCE ABOUT THE WEATHER TODAY.",
        "THIS IS AN ENGLISH SENTENCE WITh ONE SMALL LETTER.",
    ),
    # PARAGRAPH x2
    "detectable_format:multiple_sections": (
        "PARAGRAPH 1\nhello\nPARAGRAPH 2\nworld",
        "PARAGRAPH 1\nhello world",
    ),
    # fewer than 10 all-caps words
    "change_case:capital_word_frequency": (
        "The NASA and FBI met.",
        " ".join(["LOUD"] * 10),
    ),
    "startend:quotation": ('"quoted answer"', '"unbalanced answer'),
    # correlated, experiencing
    "keywords:existence": (
        "Symptoms CORRELATED with what they are experiencing.",
        "Symptoms correlated with stress.",
    ),
    "detectable_format:json_format": ('```json\n{"a": [1, 2]}\n```', "{'a': 1}"),
    # exactly 2 paragraphs separated by ***
    "length_constraints:number_paragraphs": (
        "First part.\n***\nSecond part.",
        "First part.\n***\n\n***\nSecond part.",
    ),
    "combination:two_responses": ("Answer one.\n******\nAnswer two.", "Same.\n******\nSame."),
    # Kannada
    "language:response_language": (KANNADA, "This answer is written in plain English words."),
    # at least 4 '#'
    "keywords:letter_frequency": ("# a ## b #", "# a ## b"),
    "startend:end_checker": (
        "Dear sir,\n...\nCan I get my money back for the classes I missed?",
        "Can I get my money back for the classes I missed? Thanks.",
    ),
    # forbidden: rock
    "keywords:forbidden_words": ("Rocky mountains and rocks.", "I love Rock music."),
    # "story" at least twice
    "keywords:frequency": ("A story within a Story.", "One story only."),
    # fewer than 6 sentences
    "length_constraints:number_sentences": (
        "Dr. Smith paid $3.50 at 5 p.m. on Main St. today. It was fine! Was it? Yes. Done.",
        "One. Two. Three. Four. Five. Six.",
    ),
    # P.S.
    "detectable_content:postscript": ("Hello.\n\nP.S. see you", "Hello.\nPS see you"),
    # 4 paragraphs (blank-line separated), first starts with "weekend"
    "length_constraints:nth_paragraph_first_word": (
        '"Weekend, finally."\n\nb\n\nc\n\nd',
        "Week end.\n\nb\n\nc\n\nd",
    ),
    "detectable_format:constrained_response": ("My answer is maybe.", "My answer is probably."),
}


@pytest.fixture(scope="module")
def first_kwargs(data_dir):
    rows = [json.loads(x) for x in open(data_dir / "eval" / "ifeval" / "input_data.jsonl")]
    out: dict[str, dict] = {}
    for r in rows:
        for iid, kw in zip(r["instruction_id_list"], r["kwargs"], strict=True):
            out.setdefault(iid, kw)
    return out


def test_registry_covers_dataset(first_kwargs):
    assert len(INSTRUCTIONS) == 25
    assert set(first_kwargs) == set(INSTRUCTIONS) == set(CASES)


@pytest.mark.parametrize("iid", sorted(CASES))
def test_instruction_pass_and_fail(iid, first_kwargs):
    good, bad = CASES[iid]
    kw = first_kwargs[iid]
    assert check_instruction(iid, good, kw), (iid, kw, good)
    assert not check_instruction(iid, bad, kw), (iid, kw, bad)


def test_relations_are_strict_less_and_inclusive_at_least():
    kw = {"keyword": "a", "frequency": 2}
    assert check_instruction("keywords:frequency", "a a", kw | {"relation": "at least"})
    assert not check_instruction("keywords:frequency", "a a", kw | {"relation": "less than"})
    assert check_instruction("keywords:frequency", "a", kw | {"relation": "less than"})
    with pytest.raises(ValueError, match="relation"):
        check_instruction("keywords:frequency", "a", kw | {"relation": "more than"})


def test_sentence_splitter():
    assert split_into_sentences("Hello world. How are you? Fine!") == [
        "Hello world.",
        "How are you?",
        "Fine!",
    ]
    text = "Mr. J. R. Smith visited www.example.com, e.g. on Jan. 3. It cost 4.5 dollars"
    assert len(split_into_sentences(text)) == 2
    assert len(split_into_sentences("Wait... what?\nNew line no stop")) == 2
    assert split_into_sentences("   ") == []
    # a number's period before a lower-case word is an ordinal (as in NLTK punkt, IFEval's
    # reference splitter); before a capitalised word it ends a sentence
    assert len(split_into_sentences("Words:\n1. abet\n2. almost\nAll sorted. Done.")) == 2
    assert len(split_into_sentences("Steps:\n1. Mix it.\n2. Bake it.")) == 4


def test_none_kwargs_dropped_and_empty_response_fails():
    # the HF copy of IFEval pads every kwargs dict with nulls
    kw = {"num_words": 2, "relation": "at least", "keyword": None, "language": None}
    assert check_instruction("length_constraints:number_words", "two words", kw)
    assert not check_instruction("punctuation:no_comma", "   ", {})


def test_unknown_instruction_suggests_close_match():
    with pytest.raises(ValueError, match="punctuation:no_comma"):
        check_instruction("punctuation:no_commas", "x", {})


def test_loose_mode():
    # Zhou et al. 2023 §3: strip a leading "Sure, here it is" line / markdown asterisks
    resp = "Sure, here is my answer:\n*hello there friend*"
    strict = ifeval_score(resp, ["punctuation:no_comma"], [{}], strict=True)
    loose = ifeval_score(resp, ["punctuation:no_comma"], [{}], strict=False)
    assert strict == {"prompt_level": False, "instruction_level": [False]}
    assert loose == {"prompt_level": True, "instruction_level": [True]}
    quoted = '*"quoted"*'
    assert not ifeval_score(quoted, ["startend:quotation"], [{}])["prompt_level"]
    assert ifeval_score(quoted, ["startend:quotation"], [{}], strict=False)["prompt_level"]
    assert len(loose_variants("a\nb\nc")) == 8


def test_prompt_level_needs_all_instructions():
    res = ifeval_score(
        "hello, this is a lowercase sentence written in plain english words",
        ["punctuation:no_comma", "change_case:english_lowercase"],
        [{}, {}],
    )
    assert res == {"prompt_level": False, "instruction_level": [False, True]}
    with pytest.raises(ValueError, match="pair up"):
        ifeval_score("x", ["punctuation:no_comma"], [])


def test_every_dataset_row_scores(data_dir):
    """All 541 rows run without error; echoing the prompt back follows few of them."""
    rows = [json.loads(x) for x in open(data_dir / "eval" / "ifeval" / "input_data.jsonl")]
    assert len(rows) == 541
    passed = 0
    for r in rows:
        res = ifeval_score(r["prompt"], r["instruction_id_list"], r["kwargs"], strict=False)
        assert len(res["instruction_level"]) == len(r["instruction_id_list"])
        passed += res["prompt_level"]
    assert 0 < passed < len(rows) // 2
