"""Document filters: length, language id, Gopher quality, Gopher repetition, C4 rules.

Each filter family has one small config dataclass (`enabled` switches it off) and a
`check(doc) -> reason | None`; the reason is `"family:rule"`, so `prepare` can count drops per
filter and write them to dolma-style attribute files. `FilterPipeline` applies the families in
order and returns the first reason (a funnel: a document is counted under the first rule it
fails).

Thresholds are from Rae et al. 2021 ("Scaling Language Models: Methods, Analysis & Insights from
Training Gopher"), Appendix A.1.1 and Table A1, and from Raffel et al. 2020 (C4, §2.2).
Departures, chosen so that long public-domain books survive the defaults (measured on the 293
Gutenberg training books: 5 are dropped — an HTML file, Milton's Latin poems, a symbolic-logic
text of formulas, a taxonomic monograph of repeated descriptions, and a book of short verses):
- Gopher's upper word limit (100,000 words) is a web-page rule; the default has no upper limit
  (a Gutenberg novel is 50k-200k words).
- Gopher's duplicate line/paragraph rules apply only to documents up to 100k characters
  (`GopherRepetitionConfig.line_rules_max_chars`): in plays, letters and verse, speaker names
  and refrains repeat. The n-gram rules always apply.
- C4's line rules use blank-line-separated paragraphs as the unit when a text has them (books
  are hard-wrapped at ~70 characters, so a wrapped line rarely ends in punctuation), need only
  10% of units to end in terminal punctuation, and C4's "no curly brace anywhere" becomes "at
  most 2% of units", ignoring Gutenberg's `{50}`-style page and illustration markers.
- Language id runs before the English-specific Gopher rules, on 2,000 characters from the
  middle of the document (not its front matter).
- Code: Python has `{`, `#`, short lines and no stop words. Mark code sources with
  `prepare --code-sources 'code*'` (all text filters off for them; dedup and decontamination
  still apply) or switch single families off per source (`--no-filter c4@code*`).
"""

from __future__ import annotations

import fnmatch
import functools
import logging
import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from olmo2.data.documents import Document
from olmo2.data.hashing import ngram_hashes, stable_word_hashes

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- text units


def words_of(text: str) -> list[str]:
    """Whitespace-separated words (Gopher counts words this way, without a tokenizer)."""
    return text.split()


def paragraphs_of(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]


def lines_of(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def units_of(text: str) -> list[str]:
    """Paragraphs when the text has blank-line breaks (books), else lines (web pages)."""
    paras = paragraphs_of(text)
    return paras if len(paras) > 1 else lines_of(text)


# ---------------------------------------------------------------- length


@dataclass
class LengthConfig:
    enabled: bool = True
    min_words: int = 50
    """Gopher's lower word limit (Rae et al. 2021, A.1.1)."""
    max_words: int | None = None
    """Gopher uses 100,000; None keeps long books (see module docstring)."""
    min_chars: int = 1
    max_chars: int | None = None


class LengthFilter:
    name = "length"

    def __init__(self, cfg: LengthConfig):
        self.cfg = cfg

    def check(self, doc: Document) -> str | None:
        c, n_chars = self.cfg, len(doc.text)
        if n_chars < c.min_chars:
            return "length:min_chars"
        if c.max_chars is not None and n_chars > c.max_chars:
            return "length:max_chars"
        # Counting words is O(n); avoid a full split when the char count already decides it.
        n_words = len(words_of(doc.text))
        if n_words < c.min_words:
            return "length:min_words"
        if c.max_words is not None and n_words > c.max_words:
            return "length:max_words"
        return None


# ---------------------------------------------------------------- Gopher quality

BULLETS = ("•", "●", "‣", "◦", "▪", "■", "-", "*", "–", "—")
ELLIPSES = ("...", "…")
_NO_ALPHA_WORD = re.compile(r"(?<!\S)(?:[^\s\w]|[\d_])+(?!\S)")
"""A whitespace word made only of non-letters (punctuation, digits, '_')."""
GOPHER_STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
"""Rae et al. 2021, A.1.1: a document must contain at least two of these."""


@dataclass
class GopherQualityConfig:
    """Rae et al. 2021, Appendix A.1.1 (the word-count rule lives in `LengthConfig`)."""

    enabled: bool = True
    min_mean_word_length: float = 3.0
    max_mean_word_length: float = 10.0
    max_symbol_word_ratio: float = 0.1
    """('#' + ellipsis occurrences) / words."""
    max_bullet_lines_frac: float = 0.9
    max_ellipsis_lines_frac: float = 0.3
    min_alpha_words_frac: float = 0.8
    """Fraction of words with at least one alphabetic character."""
    min_stop_words: int = 2


class GopherQualityFilter:
    name = "gopher_quality"

    def __init__(self, cfg: GopherQualityConfig):
        self.cfg = cfg
        self.stop_words = frozenset(GOPHER_STOP_WORDS)

    def check(self, doc: Document) -> str | None:
        c, text = self.cfg, doc.text
        words = words_of(text)
        if not words:
            return "gopher_quality:no_words"
        mean_len = sum(map(len, words)) / len(words)
        if not c.min_mean_word_length <= mean_len <= c.max_mean_word_length:
            return "gopher_quality:mean_word_length"
        n_symbols = text.count("#") + text.count("...") + text.count("…")
        if n_symbols / len(words) > c.max_symbol_word_ratio:
            return "gopher_quality:symbol_word_ratio"
        lines = lines_of(text)
        if lines:
            if sum(ln.startswith(BULLETS) for ln in lines) / len(lines) > c.max_bullet_lines_frac:
                return "gopher_quality:bullet_lines"
            if sum(ln.endswith(ELLIPSES) for ln in lines) / len(lines) > c.max_ellipsis_lines_frac:
                return "gopher_quality:ellipsis_lines"
        no_alpha = len(_NO_ALPHA_WORD.findall(text))
        if 1 - no_alpha / len(words) < c.min_alpha_words_frac:
            return "gopher_quality:alpha_words"
        found = 0
        for w in words:
            if w.lower() in self.stop_words:
                found += 1
                if found >= c.min_stop_words:
                    break
        if found < c.min_stop_words:
            return "gopher_quality:stop_words"
        return None


# ---------------------------------------------------------------- Gopher repetition


@dataclass
class GopherRepetitionConfig:
    """Rae et al. 2021, Table A1: drop a document above any of these fractions."""

    enabled: bool = True
    line_rules_max_chars: int | None = 100_000
    """Apply the duplicate line/paragraph rules only up to this document length. They target
    web boilerplate; in a play or a verse collection short speaker names and refrains repeat
    (on the Gutenberg set they dropped 5 of 293 books, all plays, letters or verse). The
    n-gram rules always apply. None = always."""
    max_dup_line_frac: float = 0.30
    max_dup_para_frac: float = 0.30
    max_dup_line_char_frac: float = 0.20
    max_dup_para_char_frac: float = 0.20
    max_top_ngram_char_frac: dict[int, float] = field(
        default_factory=lambda: {2: 0.20, 3: 0.18, 4: 0.16}
    )
    max_dup_ngram_char_frac: dict[int, float] = field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}
    )


def duplicate_fractions(items: list[str]) -> tuple[float, float]:
    """(fraction of items that repeat an earlier item, fraction of their characters)."""
    if not items:
        return 0.0, 0.0
    seen: set[str] = set()
    dup, dup_chars, total_chars = 0, 0, 0
    for it in items:
        total_chars += len(it)
        if it in seen:
            dup += 1
            dup_chars += len(it)
        else:
            seen.add(it)
    return dup / len(items), dup_chars / max(total_chars, 1)


class WordNgrams:
    """Gopher's n-gram repetition statistics over the whitespace words of one text.

    Words are the UTF-8 byte strings between whitespace and lengths are in bytes (equal to
    characters for ASCII); hashing is vectorised (`hashing.ngram_hashes`).
    """

    def __init__(self, words: list[bytes]):
        self.n_words = len(words)
        self.lens = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
        self.total = float(self.lens.sum()) or 1.0
        self.csum = np.concatenate([[0], np.cumsum(self.lens)])
        self.hashes = stable_word_hashes(words)

    def _occurrences(self, n: int) -> np.ndarray:
        """For each start position, how often the n-gram starting there occurs."""
        _, inverse, counts = np.unique(
            ngram_hashes(self.hashes, n), return_inverse=True, return_counts=True
        )
        return counts[inverse]

    def top(self, n: int) -> float:
        """Characters in all occurrences of the most frequent n-gram / all word characters
        (ties on count: the n-gram with the most characters)."""
        if self.n_words < n:
            return 0.0
        occ = self._occurrences(n)
        best = occ.max()
        if best < 2:
            return 0.0
        starts = np.flatnonzero(occ == best)
        return float(best * (self.csum[starts + n] - self.csum[starts]).max()) / self.total

    def dup(self, n: int) -> float:
        """Characters of words covered by any n-gram occurring more than once (each counted
        once) / all word characters."""
        if self.n_words < n:
            return 0.0
        starts = np.flatnonzero(self._occurrences(n) > 1)
        cover = np.zeros(self.n_words + 1, dtype=np.int64)
        cover[starts] += 1  # start positions are distinct, so plain fancy-index updates work
        cover[starts + n] -= 1
        covered = np.cumsum(cover[:-1]) > 0
        return float(self.lens[covered].sum()) / self.total


def ngram_char_fractions(
    words: list[str], top_ns: tuple[int, ...], dup_ns: tuple[int, ...]
) -> tuple[dict[int, float], dict[int, float]]:
    """{n: top n-gram fraction}, {n: duplicate n-gram fraction} (see `WordNgrams`)."""
    stats = WordNgrams([w.encode("utf-8") for w in words])
    return {n: stats.top(n) for n in top_ns}, {n: stats.dup(n) for n in dup_ns}


class GopherRepetitionFilter:
    name = "gopher_repetition"

    def __init__(self, cfg: GopherRepetitionConfig):
        self.cfg = cfg

    def check(self, doc: Document) -> str | None:
        c, text = self.cfg, doc.text
        if c.line_rules_max_chars is None or len(text) <= c.line_rules_max_chars:
            if reason := self._check_lines(text):
                return reason
        stats = WordNgrams(text.encode("utf-8", errors="replace").split())
        for n, limit in c.max_top_ngram_char_frac.items():
            if stats.top(n) > limit:
                return f"gopher_repetition:top_{n}gram"
        # The words covered by repeated (n+1)-grams are a subset of those covered by repeated
        # n-grams, so the fraction only falls with n: stop once it is below every later limit
        # (usually right after n=5, which saves 5 of 6 passes on clean text).
        dup_limits = sorted(c.max_dup_ngram_char_frac.items())
        for i, (n, limit) in enumerate(dup_limits):
            frac = stats.dup(n)
            if frac > limit:
                return f"gopher_repetition:dup_{n}gram"
            if frac <= min(lim for _, lim in dup_limits[i:]):
                break
        return None

    def _check_lines(self, text: str) -> str | None:
        c = self.cfg
        line_frac, line_chars = duplicate_fractions(lines_of(text))
        if line_frac > c.max_dup_line_frac:
            return "gopher_repetition:dup_line_frac"
        if line_chars > c.max_dup_line_char_frac:
            return "gopher_repetition:dup_line_char_frac"
        para_frac, para_chars = duplicate_fractions(paragraphs_of(text))
        if para_frac > c.max_dup_para_frac:
            return "gopher_repetition:dup_para_frac"
        if para_chars > c.max_dup_para_char_frac:
            return "gopher_repetition:dup_para_char_frac"
        return None


# ---------------------------------------------------------------- C4


@dataclass
class C4Config:
    """Raffel et al. 2020, §2.2, applied at document level (C4 also drops single lines)."""

    enabled: bool = True
    min_punct_units_frac: float = 0.1
    """Drop a document when fewer of its paragraphs/lines end in terminal punctuation (C4 keeps
    only such lines, so a page of menus and headers keeps almost nothing). 0.1 keeps books
    whose many footnotes end in ']' (Gibbon: 18%) and drops HTML left in a text."""
    bad_phrases: tuple[str, ...] = ("lorem ipsum", "javascript")
    """Case-insensitive; C4 drops pages with "lorem ipsum" and lines with "javascript"."""
    max_curly_brace_units_frac: float = 0.02
    """C4 drops any page containing '{' (code, templates). Books use braces for editorial notes
    and page numbers (`{50}`: 32 of 293 Gutenberg books), so such short markers are ignored and
    the default drops a document only when more than 2% of its paragraphs/lines contain '{';
    0.0 is C4's rule."""


_EDITORIAL_MARK = re.compile(r"\{[\w .,:'-]{1,40}\}")
"""Gutenberg's page/footnote/illustration markers: `{50}`, `{Joan of Arc: p158.jpg}`."""
TERMINAL_PUNCT = (".", "!", "?", '"', "'", "”", "’", ":", ")")


class C4Filter:
    name = "c4"

    def __init__(self, cfg: C4Config):
        self.cfg = cfg
        phrases = [re.escape(p.lower()) for p in cfg.bad_phrases]
        self.bad = re.compile("|".join(phrases), re.IGNORECASE) if phrases else None

    def check(self, doc: Document) -> str | None:
        c, text = self.cfg, doc.text
        if self.bad is not None and self.bad.search(text):
            return "c4:bad_phrase"
        units = units_of(text)
        if units and "{" in text:
            braces = sum("{" in _EDITORIAL_MARK.sub("", u) for u in units)
            if braces / len(units) > c.max_curly_brace_units_frac:
                return "c4:curly_braces"
        if units:
            ok = sum(u.endswith(TERMINAL_PUNCT) for u in units)
            if ok / len(units) < c.min_punct_units_frac:
                return "c4:line_punctuation"
        return None


# ---------------------------------------------------------------- language id


@dataclass
class LangConfig:
    enabled: bool = True
    langs: tuple[str, ...] = ("en",)
    min_score: float = 0.5
    """Normalised probability of the top language (py3langid, norm_probs=True)."""
    sample_chars: int = 2000
    """Classify N characters from the middle of the document: py3langid is linear in length
    (~2.5 ms per 1000 characters on the shared 2-core dev box), and a book's front matter
    (title page, contents) confuses it — with the first 2,000 characters 13 of the 293
    Gutenberg books scored below 0.5, with the middle 2,000 only the Latin poems of Milton
    are dropped (as Latin)."""


@functools.cache
def _language_identifier():
    """py3langid's bundled model, loaded once per process (~1 s)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


class LangFilter:
    name = "lang"

    def __init__(self, cfg: LangConfig):
        self.cfg = cfg
        self.ident = _language_identifier()

    def check(self, doc: Document) -> str | None:
        text, n = doc.text, self.cfg.sample_chars
        if len(text) > n:
            mid = (len(text) - n) // 2
            text = text[mid : mid + n]
        lang, score = self.ident.classify(text)
        if lang not in self.cfg.langs:
            return "lang:other_language"
        if score < self.cfg.min_score:
            return "lang:low_score"
        return None


# ---------------------------------------------------------------- pipeline


@dataclass
class FilterConfig:
    length: LengthConfig = field(default_factory=LengthConfig)
    lang: LangConfig = field(default_factory=LangConfig)
    gopher_quality: GopherQualityConfig = field(default_factory=GopherQualityConfig)
    gopher_repetition: GopherRepetitionConfig = field(default_factory=GopherRepetitionConfig)
    c4: C4Config = field(default_factory=C4Config)
    disabled_for_source: dict[str, list[str]] = field(default_factory=dict)
    """Family name -> source glob patterns for which that family is skipped (e.g. code)."""


FILTER_NAMES = ("length", "lang", "gopher_quality", "gopher_repetition", "c4")
"""Application order: cheap checks first, and language before the English-specific rules
(Gopher's stop words would otherwise reject every non-English page as low quality)."""
_CLASSES = {
    "length": LengthFilter,
    "lang": LangFilter,
    "gopher_quality": GopherQualityFilter,
    "gopher_repetition": GopherRepetitionFilter,
    "c4": C4Filter,
}


class FilterPipeline:
    """Apply the enabled families in order (cheap first); return the first drop reason."""

    def __init__(self, cfg: FilterConfig):
        self.cfg = cfg
        self.filters = [
            _CLASSES[name](getattr(cfg, name))
            for name in FILTER_NAMES
            if getattr(cfg, name).enabled
        ]
        self._skip_cache: dict[str, frozenset[str]] = {}

    def _skipped(self, source: str) -> frozenset[str]:
        if source not in self._skip_cache:
            self._skip_cache[source] = frozenset(
                name
                for name, globs in self.cfg.disabled_for_source.items()
                if any(fnmatch.fnmatch(source, g) for g in globs)
            )
        return self._skip_cache[source]

    def __call__(self, doc: Document) -> str | None:
        skip = self._skipped(doc.source)
        for f in self.filters:
            if f.name not in skip and (reason := f.check(doc)) is not None:
                return reason
        return None


def count_reasons(reasons: Counter[str]) -> dict[str, int]:
    """Per-family totals from `family:rule` reasons."""
    out: Counter[str] = Counter()
    for reason, n in reasons.items():
        out[reason.split(":", 1)[0]] += n
    return dict(out)
