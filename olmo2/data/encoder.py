"""Document encoding for the token files: `tiktoken` where it provably gives the ids of the
`tokenizers` file, else `tokenizers` itself.

`choose_backend(tokenizer.json)` decides once per job, in the driver:

1. Structure: a byte-level BPE (no normalizer, no dropout, no unk/byte fallback, no subword
   prefix or suffix) whose pre-tokenizer is one regex `Split` keeping the matches
   (behaviour Removed + invert, i.e. `findall`, what tiktoken does) followed by a `ByteLevel`
   that does not split again or add a prefix space; added tokens without strip/single-word
   rules. Anything else keeps `tokenizers`.
2. Merges: tiktoken merges the adjacent pair whose concatenation has the lowest rank (its
   `_byte_pair_merge`), `tokenizers` the pair listed first in `merges`. With ranks = the
   vocabulary's ids, the two agree when the merge list is exactly the one the ranks imply:
   for each token, in id order, the two parts that rank-BPE restricted to lower ranks ends
   with (the derivation of tiktoken's own converter, openai/tiktoken `load.py` /
   transformers `convert_slow_tokenizer.TikTokenConverter`). Then, inductively, both pick the
   same pair at every step (a merge across a token's boundary would have needed a lower rank),
   so the encodings are equal. This is checked by deriving the list (~2 s for 100k tokens; the
   answer is cached per tokenizer file).
3. Probes: a fixed set of texts (unicode, digits, whitespace runs, contractions, code, special
   tokens) is encoded both ways; any difference keeps `tokenizers` (the two regex engines,
   Oniguruma and fancy-regex, could differ on some class).

`prepare` also checks the first ~16k characters of every shard both ways (`Encoder.verified`), and a
shard whose sample differs is encoded with `tokenizers` and counted in the summary; a text that
tiktoken cannot encode falls back the same way. dolma2 (cl100k-style) passes all checks.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
from pathlib import Path

from olmo2.utils import write_text_atomic

log = logging.getLogger(__name__)

PROBES = (
    "The quick brown fox jumps over the lazy dog. It's 12,345.678 — isn't it?",
    "def f(x):\n    return {'k': x ** 2}  # square\n\n\n\tif x:\r\n        pass",
    "Ünïcödé naïve café 東京 🙂 Ελληνικά русский العربية हिन्दी 0٣४",
    "   leading spaces\t\ttabs  \n \n  trailing   ",
    "I'M YOU'RE we'll THEY'D he'S 'quoted' ''double'' ’curly’",
    "<|endoftext|>special<|endoftext|> <|pad|>  x<|endoftext|>\n",
    "1234567890 12 123 1 ½ ² ⅓ 1e10 0x1F 3.14159",
    "\u00a0nbsp\u2009thin\u3000ideographic\u200bzero-width \u2028sep",
)
SAMPLE_CHARS = 1 << 14
"""Characters per shard checked both ways."""


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte <-> printable-character table (openai/gpt-2 `encoder.py`), which byte-level
    BPE vocabularies are written in."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    bs += range(ord("®"), ord("ÿ") + 1)
    cs, n = list(bs), 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def _structure_problem(spec: dict) -> str | None:
    """Why this tokenizer.json is not tiktoken-shaped (None when it is)."""
    model, pre = spec.get("model") or {}, spec.get("pre_tokenizer") or {}
    if model.get("type") != "BPE":
        return f"model type {model.get('type')!r} is not BPE"
    bad = [
        k
        for k in ("dropout", "unk_token", "continuing_subword_prefix", "end_of_word_suffix")
        if model.get(k)
    ]
    if bad or model.get("byte_fallback") or spec.get("normalizer"):
        return f"BPE options tiktoken lacks: {bad or 'byte_fallback/normalizer'}"
    steps = pre.get("pretokenizers") if pre.get("type") == "Sequence" else None
    if not steps or len(steps) != 2:
        return "pre-tokenizer is not Split(regex) + ByteLevel"
    split, byte_level = steps
    regex = (split.get("pattern") or {}).get("Regex")
    if split.get("type") != "Split" or not regex:
        return "pre-tokenizer has no regex Split"
    if (split.get("behavior"), split.get("invert")) != ("Removed", True):
        return (
            f"Split behaviour {split.get('behavior')}/invert={split.get('invert')} is not findall"
        )
    if byte_level.get("type") != "ByteLevel" or byte_level.get("use_regex"):
        return "second pre-tokenizer is not a plain ByteLevel"
    if byte_level.get("add_prefix_space"):
        return "ByteLevel adds a prefix space"
    for t in spec.get("added_tokens", []):
        if t.get("lstrip") or t.get("rstrip") or t.get("single_word"):
            return f"added token {t['content']!r} has strip/single-word rules"
    return None


def _ranks(spec: dict) -> tuple[dict[bytes, int], dict[str, int]]:
    """Mergeable ranks (byte string -> id) and special tokens (every added token)."""
    decode = {c: b for b, c in _bytes_to_unicode().items()}
    added = {t["content"]: t["id"] for t in spec.get("added_tokens", [])}
    ranks = {}
    for piece, i in spec["model"]["vocab"].items():
        if piece not in added:
            ranks[bytes(decode[c] for c in piece)] = i
    return ranks, added


def _derived_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """The merge list the ranks imply (see the module docstring, point 2)."""
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) < 2:
            continue
        parts = [token[i : i + 1] for i in range(len(token))]
        while len(parts) > 2:
            best = None
            for i in range(len(parts) - 1):
                r = ranks.get(parts[i] + parts[i + 1])
                if r is not None and r < rank and (best is None or r < best[1]):
                    best = (i, r)
            if best is None:
                break
            i = best[0]
            parts[i : i + 2] = [parts[i] + parts[i + 1]]
        merges.append((parts[0], parts[1]) if len(parts) == 2 else (token, b""))
    return merges


def _file_merges(spec: dict) -> list[tuple[bytes, bytes]]:
    decode = {c: b for b, c in _bytes_to_unicode().items()}
    out = []
    for m in spec["model"]["merges"]:
        a, b = m.split(" ") if isinstance(m, str) else m
        out.append((bytes(decode[c] for c in a), bytes(decode[c] for c in b)))
    return out


def _tiktoken_encoding(spec: dict):
    import tiktoken

    ranks, special = _ranks(spec)
    regex = spec["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"]
    return tiktoken.Encoding("olmo2", pat_str=regex, mergeable_ranks=ranks, special_tokens=special)


@functools.lru_cache(maxsize=4)
def choose_backend(tokenizer_path: str) -> tuple[str, str]:
    """("tiktoken" | "tokenizers", why) for this tokenizer file."""
    try:
        import tiktoken  # noqa: F401
    except ImportError:
        return "tokenizers", "tiktoken is not installed"
    spec = json.loads(Path(tokenizer_path).read_text(encoding="utf-8"))
    problem = _structure_problem(spec)
    if problem is None and not _merges_match(tokenizer_path, spec):
        problem = "its merge list is not the one its ranks imply"
    if problem is None:
        enc = encoder(tokenizer_path, "tiktoken")
        bad = [p for p in PROBES if enc._tiktoken(p) != enc._hf([p])[0]]
        if bad:
            problem = f"tiktoken differs on a probe text: {bad[0]!r}"
    if problem is not None:
        log.info("encoding with tokenizers, not tiktoken: %s", problem)
        return "tokenizers", problem
    return "tiktoken", "merges match the ranks; probes identical"


def _merges_match(tokenizer_path: str, spec: dict) -> bool:
    """Whether the file's merges are the ones its ranks imply; the answer is cached per file
    content under `$OLMO2_CACHE_DIR` (default ~/.cache/olmo2), as the derivation takes ~2 s."""
    digest = hashlib.sha256(Path(tokenizer_path).read_bytes()).hexdigest()
    cache = Path(os.environ.get("OLMO2_CACHE_DIR", Path.home() / ".cache" / "olmo2"))
    path = cache / "encoder" / f"merges-{digest[:32]}.json"
    if path.is_file():
        return bool(json.loads(path.read_text())["match"])
    ranks, _ = _ranks(spec)
    match = _derived_merges(ranks) == _file_merges(spec)
    with contextlib.suppress(OSError):  # a read-only home only costs the 2 s next time
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps({"match": match}))
    return match


class Encoder:
    """`encode(texts) -> list of id lists` (no special tokens added; literal special-token
    strings in the text are matched, as `tokenizers` does)."""

    def __init__(self, tokenizer_path: str, backend: str):
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # one worker = one core
        from tokenizers import Tokenizer

        self.backend = backend
        self.hf = Tokenizer.from_file(tokenizer_path)
        self.tt = None
        if backend == "tiktoken":
            spec = json.loads(Path(tokenizer_path).read_text(encoding="utf-8"))
            self.tt = _tiktoken_encoding(spec)
        self.fallback_docs = 0

    def _hf(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.hf.encode_batch_fast(texts, add_special_tokens=False)]

    def _tiktoken(self, text: str) -> list[int]:
        return self.tt.encode(text, allowed_special="all", disallowed_special=())

    def verified(self, texts: list[str]) -> bool:
        """Whether tiktoken gives `tokenizers`' ids on a sample (~SAMPLE_CHARS of `texts`)."""
        if self.tt is None:
            return False
        sample, size = [], 0
        for t in texts:
            sample.append(t[: SAMPLE_CHARS - size])
            size += len(sample[-1])
            if size >= SAMPLE_CHARS:
                break
        return [self._tiktoken(t) for t in sample] == self._hf(sample)

    def encode(self, texts: list[str], use_tiktoken: bool = True) -> list[list[int]]:
        if self.tt is None or not use_tiktoken:
            return self._hf(texts)
        out = []
        for t in texts:
            try:
                out.append(self._tiktoken(t))
            except Exception:  # e.g. a lone surrogate; tokenizers then decides
                self.fallback_docs += 1
                out.extend(self._hf([t]))
        return out


@functools.lru_cache(maxsize=2)
def encoder(tokenizer_path: str, backend: str) -> Encoder:
    """One Encoder per worker process."""
    return Encoder(tokenizer_path, backend)
