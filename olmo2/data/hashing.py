"""Stable 64-bit hashes of words and of word n-grams: the one hash behind MinHash dedup
(`dedup.py`), n-gram decontamination (`decontam.py`) and the Gopher repetition rules
(`filters.py`).

Stable means identical in every process and run (Python's `hash` is salted): pool workers agree
with each other, and a re-run makes the same decisions. Both functions are vectorised with
numpy; arithmetic is mod 2^64 with the 64-bit golden-ratio constant as multiplier (Knuth's
multiplicative hashing, TAOCP vol. 3, §6.4).
"""

from __future__ import annotations

import hashlib

import numpy as np

MIX = np.uint64(0x9E3779B97F4A7C15)
_MAX_WORD_BYTES = 64


def stable_word_hashes(words: list[bytes]) -> np.ndarray:
    """64-bit hashes of words, identical in every process.

    The words become one fixed-width byte matrix, read as little-endian uint64 columns and
    folded with multiply-xorshift. Words over 64 bytes are first replaced by a 16-byte digest
    so one long token cannot blow up the matrix width.
    (A word that is a prefix of another plus NUL bytes would collide; text has no NULs.)
    """
    if not words:
        return np.empty(0, dtype=np.uint64)
    if max(map(len, words)) > _MAX_WORD_BYTES:
        words = [
            w if len(w) <= _MAX_WORD_BYTES else hashlib.blake2b(w, digest_size=16).digest()
            for w in words
        ]
    width = max(8, -(-max(map(len, words)) // 8) * 8)
    cols = np.array(words, dtype=f"S{width}").view("<u8").reshape(len(words), width // 8)
    h = np.full(len(words), 0x2545F4914F6CDD1D, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(cols.shape[1]):
            mixed = (h ^ cols[:, j]) * MIX
            mixed ^= mixed >> np.uint64(29)
            # All-zero columns are padding (UTF-8 words hold no NUL), so skipping them makes
            # the hash independent of the matrix width.
            h = np.where(cols[:, j] != 0, mixed, h)
    return h


def ngram_hashes(word_hashes: np.ndarray, n: int) -> np.ndarray:
    """Hash of every window of `n` consecutive word hashes, in order (len - n + 1 of them;
    empty when there are fewer than `n` words).

    h <- (h ^ w[i+k]) * MIX for k = 0..n-1: xor and multiplication by an odd constant are both
    invertible and do not commute, so the hash depends on each word's position in the window
    ("a b" and "b a" differ). (Scaling every word by MIX^(k+1) before the xor, as an earlier
    version of `dedup.shingle_hashes` did, made the first two words of a window interchangeable.)
    """
    m = len(word_hashes) - n + 1
    if m <= 0:
        return np.empty(0, dtype=np.uint64)
    h = np.zeros(m, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):
            h = (h ^ word_hashes[k : k + m]) * MIX
    return h
