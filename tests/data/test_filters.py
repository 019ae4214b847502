"""Tests for olmo2/data/filters.py: each rule against hand-computed values and planted text."""

from __future__ import annotations

import random

import pytest

from olmo2.data.documents import Document, iter_documents
from olmo2.data.filters import (
    FilterConfig,
    FilterPipeline,
    duplicate_fractions,
    ngram_char_fractions,
)

ADJ = (
    "quiet bright old small green heavy early rapid gentle distant narrow silver warm broad".split()
)
NOUN = (
    "river garden window teacher village bridge lantern harbor meadow engine letter forest "
    "station kitchen mountain painter island market orchard library"
).split()
VERB = "crossed watched carried followed painted found opened visited repaired described".split()
LONG = (
    "extraordinarily responsibilities characteristically internationally misunderstanding "
    "environmental unquestionably communications acknowledgement representatives"
).split()
ADV = "slowly again twice yesterday quietly carefully today eagerly".split()
# No template has more than two fixed words in a row, so sentences never share a 5-gram.
TEMPLATES = (
    "The {a} {n} {v} the {a2} {n2} {adv}.",
    "With a {a} {n}, she {v} every {a2} {n2}.",
    "They {v} a {a} {n} near the {n2}.",
    "It was {a} when the {n} {v} our {n2}.",
    "Nobody {v} the {n} by the {a} {n2}.",
)


def english(rng: random.Random, sentences: int = 14) -> str:
    """Varied, grammatical English that passes every default filter."""
    out = []
    for _ in range(sentences):
        t = rng.choice(TEMPLATES)
        out.append(
            t.format(
                a=rng.choice(ADJ),
                a2=rng.choice(ADJ),
                n=rng.choice(NOUN),
                n2=rng.choice(NOUN),
                v=rng.choice(VERB),
                adv=rng.choice(ADV),
            )
        )
    lines = [" ".join(out[i : i + 3]) for i in range(0, len(out), 3)]
    return "\n".join(lines)


def doc(text: str, source: str = "web") -> Document:
    return Document(id="x", text=text, source=source)


def test_duplicate_fractions_closed_form():
    assert duplicate_fractions(["ab", "c", "ab", "ab"]) == (2 / 4, 4 / 7)
    assert duplicate_fractions([]) == (0.0, 0.0)


def test_ngram_char_fractions_closed_form():
    words = "aa b ccc aa b ccc dddd".split()  # 16 characters
    top, dup = ngram_char_fractions(words, (2,), (3, 4))
    # "aa b" and "b ccc" both occur twice; the longer one counts: 2 * 4 chars.
    assert top[2] == pytest.approx(8 / 16)
    # "aa b ccc" occurs at 0 and 3 -> words 0..5 covered (12 chars); no 4-gram repeats.
    assert dup[3] == pytest.approx(12 / 16)
    assert dup[4] == 0.0
    top, dup = ngram_char_fractions("x y z".split(), (2,), (5,))
    assert top[2] == 0.0 and dup[5] == 0.0


def test_clean_english_passes():
    rng = random.Random(0)
    pipe = FilterPipeline(FilterConfig())
    for _ in range(20):
        assert pipe(doc(english(rng))) is None


def _planted(rng: random.Random) -> dict[str, str]:
    base = english(rng)
    paras = [english(rng, 18) for _ in range(4)]  # 6 lines each
    one_line = english(rng, 3)
    return {
        "length:min_words": "The cat sat on the mat with the dog.",
        "gopher_quality:mean_word_length": " ".join(rng.choice(LONG) for _ in range(60))
        + " the and of",
        "gopher_quality:symbol_word_ratio": base + "\n" + " ".join(["#tag"] * 40),
        "gopher_quality:bullet_lines": "\n".join(
            f"- the {w} item and more of that kind." for w in NOUN + ADJ
        ),
        "gopher_quality:ellipsis_lines": "\n".join(
            line + (" and so on..." if i % 2 else "") for i, line in enumerate(base.split(". "))
        ),
        "gopher_quality:alpha_words": base + "\n" + " ".join(str(i) for i in range(200)),
        "gopher_quality:stop_words": " ".join(rng.choice(NOUN + ADJ + VERB) for _ in range(80)),
        "gopher_repetition:dup_line_frac": "\n".join(
            [base.splitlines()[0]] * 3 + base.splitlines()
        ),
        # 3 of 8 paragraphs repeat, but only 3 of 28 lines: the paragraph rule fires.
        "gopher_repetition:dup_para_frac": "\n\n".join(paras + [one_line] * 4),
        "gopher_repetition:top_2gram": base
        + "\n"
        + " ".join(f"the river {w}." for w in ["a", "b", "c", "d", "e", "f"] * 12),
        "gopher_repetition:dup_5gram": base + " " + base.replace("\n", " "),
        "c4:bad_phrase": base + "\nLorem ipsum dolor sit amet, consectetur adipiscing elit.",
        "c4:curly_braces": "\n".join(
            line + f" {{'k{i}': [{i}, {i + 1}]}}" for i, line in enumerate(base.splitlines())
        ),
        "c4:line_punctuation": "\n".join(
            line.rstrip(".") for line in base.replace(". ", "\n").splitlines()
        ),
        "lang:other_language": (
            "Le petit village se trouvait au bord de la rivière, et chaque matin les enfants "
            "descendaient vers le marché pour acheter du pain frais. Leur mère leur disait "
            "toujours de revenir avant midi, car la route était longue et le soleil devenait "
            "très chaud en été. Les vieux pêcheurs racontaient des histoires de tempêtes et de "
            "bateaux perdus, tandis que les femmes préparaient le repas dans les cuisines. "
            "Dans la soirée, tout le monde se réunissait sur la place pour écouter la musique "
            "et parler des nouvelles de la semaine avec les voisins et les amis du village."
        ),
    }


@pytest.mark.parametrize("expected", list(_planted(random.Random(1))))
def test_each_rule_drops_its_planted_document(expected):
    text = _planted(random.Random(1))[expected]
    assert FilterPipeline(FilterConfig())(doc(text)) == expected


def test_families_switch_off_globally_and_per_source():
    code = "".join(f"def add{i}(a, b):\n    return {{'sum{i}': a + b + {i}}}\n" for i in range(3))
    code += english(random.Random(2))
    cfg = FilterConfig()
    assert FilterPipeline(cfg)(doc(code)) == "c4:curly_braces"
    cfg.c4.enabled = False
    assert FilterPipeline(cfg)(doc(code)) is None
    cfg = FilterConfig(disabled_for_source={"c4": ["code*"]})
    pipe = FilterPipeline(cfg)
    assert pipe(doc(code, source="code_python")) is None
    assert pipe(doc(code, source="web")) == "c4:curly_braces"


def test_length_limits_configurable():
    cfg = FilterConfig()
    cfg.length.min_words, cfg.length.max_words = 5, 8
    pipe = FilterPipeline(cfg)
    assert pipe(doc("one two three")) == "length:min_words"
    assert pipe(doc("one two three four five six seven eight nine")) == "length:max_words"


def test_books_survive_default_filters(data_dir):
    """The validation books (5 long Gutenberg books) must not be dropped by web-page rules."""
    path = data_dir / "pretrain" / "gutenberg_en_validation.jsonl.gz"
    pipe = FilterPipeline(FilterConfig())
    reasons = [pipe(d) for d in iter_documents([path])]
    assert len(reasons) == 5
    assert reasons == [None] * 5
