"""Long-context evaluation: passkey retrieval, RULER-style needle-in-a-haystack (one key, or
one of four), and bits per byte by token position over long held-out books.

Every task exists at the lengths 1k..64k (`passkey__4096`, `ruler_niah_single__4096`,
`ruler_niah_multikey__4096`, `long_bpb__4096`); `long_context__{L}` is the macro average of
the retrieval tasks at every length up to L: run the one that matches the model's context.

* **Passkey** (Mohtashami & Jaggi 2023, arXiv 2305.16300, epfml/landmark-attention
  `run_test.py`; reused by LongLoRA and YaRN): five lines — the task description, filler
  ("The grass is green. ..." repeated), "The pass key is K. Remember it. K is the pass
  key.", more filler, "What is the pass key? The pass key is" — with K uniform in
  [1, 50000] and the filler split uniformly at random. Greedy, 10 new tokens; correct when
  the first integer of the output is K. 50 trials per length, as the original.
* **Needle in a haystack** (RULER, Hsieh et al. 2024, arXiv 2404.06654, NVIDIA/RULER
  `scripts/data/synthetic/niah.py` and `constants.py`; OLMES `ruler_niah_*`): the RULER
  template and needle "One of the special magic numbers for {key} is: {value}." (key an
  adjective-noun pair, value 7 digits), inserted between sentences at one of RULER's 40
  evenly spaced depths into prose. RULER's essays are replaced by the held-out Gutenberg
  books. `single` = niah_single_2 (one needle, RULER's singular wording); `multikey` =
  niah_multikey_1 (four needles with different keys, one asked for). Base-model form (as
  OLMES without a chat template): the answer prefix ends the prompt; 50 new tokens;
  `recall` = the value appears in the output (RULER `string_match_all`).
* **Bits per byte by position**: windows of L tokens from the held-out Gutenberg books, each
  scored as one log-likelihood request per position bucket [1, 256), [256, 512), ...,
  [L/2, L) with all the window's text before the bucket as context (so a bucket's tokens
  sit at those positions, and every bucket sees the same window start, no EOS); a bucket
  wider than 2048 tokens scores its last 2048 (the harness's per-forward limit).
  `bits_per_byte@{a}-{b}` per bucket; `plot_bpb_by_position` draws them.

Lengths are counted in tokens of the dolma2 tokenizer (OLMo 2's) from the data directory,
as OLMES' RULER files are pregenerated for one tokenizer: a prompt of a `__L` task is at most
L − max_gen_toks dolma2 tokens. A model with another tokenizer gets the same texts; the
harness left-truncates a prompt longer than the model's window (`Harness.max_length`), which
loses the task description first.
"""

from __future__ import annotations

import functools
import gzip
import json
import random
import re
from collections.abc import Callable
from pathlib import Path

from olmo2.eval.formats import Request
from olmo2.eval.tasks.base import Task, TaskConfig
from olmo2.eval.tasks.generative import GenDoc, GenerativeTask

LENGTHS = (1024, 2048, 4096, 8192, 16384, 32768, 65536)
TOKENIZER = Path("tokenizers") / "allenai_dolma2.json"
BOOKS = Path("pretrain") / "gutenberg_en_validation.jsonl.gz"
SEED = 42  # RULER's and OLMES' random seed

# ---- passkey (landmark-attention run_test.py, verbatim strings) ------------------------------
PASSKEY_DESCRIPTION = (
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize "
    "them. I will quiz you about the important information there."
)
PASSKEY_FILLER = (
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
)
PASSKEY_QUESTION = "What is the pass key? The pass key is"

# ---- RULER niah (constants.py / niah.py, verbatim strings) -----------------------------------
NIAH_TEMPLATE = (
    "Some special magic {type_needle_v} are hidden within the following text. Make sure to "
    "memorize it. I will quiz you about the {type_needle_v} afterwards.\n{context}\nWhat are all "
    "the special magic {type_needle_v} for {query} mentioned in the provided text?"
)
NIAH_ANSWER_PREFIX = (
    " The special magic {type_needle_v} for {query} mentioned in the provided text are"
)
NIAH_NEEDLE = "One of the special magic {type_needle_v} for {key} is: {value}."
NIAH_DEPTHS = [round(i * 100 / 39) for i in range(40)]  # np.linspace(0, 100, 40), rounded
# RULER draws keys from wonderwords' adjective and noun lists; a fixed sample of common ones
ADJECTIVES = (
    "abundant adorable ancient bitter brave bright calm clever curious damp eager elegant "
    "fancy fierce gentle glossy grumpy hollow humble icy jolly lively lucky mellow nimble "
    "odd plain proud quiet rapid rustic shy silent sleepy smooth tender tidy vivid wary witty"
).split()
NOUNS = (
    "anchor badger basket beacon bicycle blanket canoe castle cherry compass cricket dolphin "
    "falcon fountain garden harbor helmet jacket kettle lantern meadow mirror needle orchard "
    "otter pebble pepper pillow puzzle quarry raven ribbon saddle spoon teapot thimble tulip "
    "violin walnut window"
).split()


def singular(template: str) -> str:
    """RULER niah.py for one needle and one query: "Some ... are" becomes "A ... is"."""
    return template.replace("Some", "A").replace("are all", "is").replace("are", "is")


# ---- shared data: the tokenizer that measures lengths, the held-out books --------------------
@functools.lru_cache(maxsize=2)
def _tokenizer(data_dir: Path):
    from olmo2.tokenizer import Tokenizer

    path = data_dir / TOKENIZER
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: missing; long-context tasks measure lengths in dolma2 tokens "
            "(pass --data-dir pointing at a directory laid out like shared/data)"
        )
    return Tokenizer.from_file(path)


@functools.lru_cache(maxsize=2)
def _books(data_dir: Path) -> tuple[str, ...]:
    path = data_dir / BOOKS
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: missing; the long-context tasks use the held-out Gutenberg books "
            "(pass --data-dir pointing at a directory laid out like shared/data)"
        )
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return tuple(json.loads(line)["text"] for line in f if line.strip())


@functools.lru_cache(maxsize=2)
def _sentences(data_dir: Path) -> tuple[str, ...]:
    """The books as one stream of sentences, white space folded (RULER folds its essays so)."""
    out: list[str] = []
    for book in _books(data_dir):
        text = re.sub(r"\s+", " ", book).strip()
        out += [s for s in re.split(r"(?<=[.!?])\s+", text) if s]
    return tuple(out)


@functools.lru_cache(maxsize=2)
def _sentence_tokens(data_dir: Path) -> tuple[int, ...]:
    tok = _tokenizer(data_dir)
    return tuple(map(len, tok.encode_batch([" " + s for s in _sentences(data_dir)])))


def fit(build: Callable[[int], str], unit_tokens: Callable[[int], int], budget: int, tok) -> str:
    """`build(n)` for the largest n whose text is at most `budget` tokens; `unit_tokens(j)`
    estimates the tokens unit j adds (exact but at the joins), then a full encode checks."""
    fixed = len(tok.encode(build(0)))
    if fixed > budget:
        raise ValueError(f"the task's fixed text is {fixed} tokens, over the budget {budget}")
    n, total = 0, fixed
    while total + unit_tokens(n) <= budget:
        total, n = total + unit_tokens(n), n + 1
    while n > 0:
        text = build(n)
        if len(tok.encode(text)) <= budget:
            return text
        n -= 1
    return build(0)


# ---- retrieval tasks --------------------------------------------------------------------------
class Passkey(GenerativeTask):
    max_gen_toks = 10
    n_docs = 50

    def __init__(self, key: str, config: TaskConfig, length: int):
        super().__init__(key, config)
        self.length = length

    def load_docs(self, data_dir: Path) -> list[GenDoc]:
        rng = random.Random(f"{SEED}-{self.key}")
        return [self.make_doc(i, rng, _tokenizer(Path(data_dir))) for i in range(self.n_docs)]

    def make_doc(self, i: int, rng: random.Random, tok) -> GenDoc:
        key, frac = rng.randint(1, 50000), rng.random()

        def build(n: int) -> str:  # n filler units, a fraction `frac` of them first
            before = round(n * frac)
            lines = [
                PASSKEY_DESCRIPTION,
                " ".join([PASSKEY_FILLER] * before),
                f"The pass key is {key}. Remember it. {key} is the pass key.",
                " ".join([PASSKEY_FILLER] * (n - before)),
                PASSKEY_QUESTION,
            ]
            return "\n".join(lines)

        unit = len(tok.encode(" " + PASSKEY_FILLER))
        prompt = fit(build, lambda j: unit, self.length - self.max_gen_toks, tok)
        return GenDoc(prompt, str(key), i, {"depth": frac})

    def score_one(self, doc: GenDoc, completion: str) -> dict[str, float]:
        m = re.search(r"\d+", completion)
        return {"acc": float(m is not None and m.group() == doc.answer)}


class Needle(GenerativeTask):
    """RULER niah over prose with `n_keys` needles (distinct keys), one of them asked for."""

    max_gen_toks = 50
    n_docs = 50

    def __init__(self, key: str, config: TaskConfig, length: int, n_keys: int):
        super().__init__(key, config)
        self.length, self.n_keys = length, n_keys

    def load_docs(self, data_dir: Path) -> list[GenDoc]:
        rng = random.Random(f"{SEED}-{self.key}")
        return [self.make_doc(i, rng, Path(data_dir)) for i in range(self.n_docs)]

    def make_doc(self, i: int, rng: random.Random, data_dir: Path) -> GenDoc:
        tok, sentences, counts = (
            _tokenizer(data_dir),
            _sentences(data_dir),
            _sentence_tokens(data_dir),
        )
        keys = rng.sample([f"{a}-{n}" for a in ADJECTIVES for n in NOUNS], self.n_keys)
        values = [str(rng.randint(1_000_000, 9_999_999)) for _ in keys]
        depths = sorted(rng.sample(NIAH_DEPTHS, self.n_keys))  # needle k at depths[k]
        start, q = rng.randrange(len(sentences)), rng.randrange(self.n_keys)
        # one query, one value: RULER's singular wording ("number"); needles say "numbers"
        template, prefix = singular(NIAH_TEMPLATE), singular(NIAH_ANSWER_PREFIX)

        def build(n: int) -> str:  # n haystack sentences from `start`, needles among them
            hay = [sentences[(start + j) % len(sentences)] for j in range(n)]
            for k in reversed(range(self.n_keys)):
                needle = NIAH_NEEDLE.format(type_needle_v="numbers", key=keys[k], value=values[k])
                hay.insert(round(n * depths[k] / 100), needle)
            text = template.format(type_needle_v="number", context=" ".join(hay), query=keys[q])
            return text + prefix.format(type_needle_v="number", query=keys[q])

        sentence_tokens = lambda j: counts[(start + j) % len(counts)]  # noqa: E731
        prompt = fit(build, sentence_tokens, self.length - self.max_gen_toks, tok)
        return GenDoc(prompt, values[q], i, {"depth": depths[q] / 100})

    def score_one(self, doc: GenDoc, completion: str) -> dict[str, float]:
        return {"recall": float(doc.answer.lower() in completion.lower())}


# ---- bits per byte by position ----------------------------------------------------------------
BPB_WINDOWS = 20
"""Windows a `long_bpb__L` task scores by default (a seeded sample; `--limit` changes it)."""
MAX_SCORED = 2048
"""Tokens a bucket scores at most (the harness's `MAX_SCORED` per forward)."""


def buckets(length: int, first: int = 256) -> list[tuple[int, int]]:
    """[(a, b)] scored positions: [1, first) (position 0 has no context), then doubling up
    to `length`; a range wider than MAX_SCORED keeps its last MAX_SCORED positions."""
    edges = [1, first]
    while edges[-1] < length:
        edges.append(min(2 * edges[-1], length))
    return [(max(a, b - MAX_SCORED), b) for a, b in zip(edges, edges[1:])]


class PositionBPB(Task):
    """Bits per byte of each position bucket of L-token windows of the held-out books."""

    def __init__(self, key: str, config: TaskConfig, length: int):
        self.key, self.config, self.length = key, config, length

    def load_docs(self, data_dir: Path) -> list[dict]:
        tok = _tokenizer(Path(data_dir))
        L, docs = self.length, []
        for b, book in enumerate(_books(Path(data_dir))):
            starts = [o[0] for o in tok.backend.encode(book, add_special_tokens=False).offsets]
            for w in range(len(starts) // L - (len(starts) % L == 0)):  # a token must follow
                cut = [starts[w * L + p] for p in range(L)] + [starts[(w + 1) * L]]
                docs.append({"text": book[cut[0] : cut[-1]], "cut": [c - cut[0] for c in cut]})
                docs[-1]["native_id"] = f"book{b}-window{w}"
        if not docs:
            raise ValueError(f"{self.key}: no held-out book has more than {L} dolma2 tokens")
        return docs

    def requests(self, docs: list[dict]) -> list[Request]:
        out = []
        for i, d in enumerate(docs):
            for j, (a, b) in enumerate(buckets(self.length)):
                text, cut = d["text"], d["cut"]
                out.append(Request(text[: cut[a]], text[cut[a] : cut[b]], i, j))
        return out

    def score(self, docs, requests, results) -> dict[str, float]:
        import math

        ranges = buckets(self.length)
        nats, nbytes = [0.0] * len(ranges), [0] * len(ranges)
        for r, res in zip(requests, results, strict=True):
            nats[r.idx] -= res.logprob
            nbytes[r.idx] += len(r.continuation.encode("utf-8"))
        out = {
            f"bits_per_byte@{a}-{b}": n / (m * math.log(2))
            for (a, b), n, m in zip(ranges, nats, nbytes, strict=True)
        }
        out["bits_per_byte"] = sum(nats) / (sum(nbytes) * math.log(2))
        out["num_docs"] = len(docs)
        return out


def bpb_curve(metrics: dict) -> tuple[list[float], list[float]]:
    """(bucket mid-points, bits per byte) of a `long_bpb__L` task's metrics."""
    points = []
    for k, v in metrics.items():
        m = re.fullmatch(r"bits_per_byte@(\d+)-(\d+)", k)
        if m:
            points.append(((int(m[1]) + int(m[2])) / 2, v))
    points.sort()
    return [x for x, _ in points], [y for _, y in points]


def plot_bpb_by_position(results: dict[str, dict], path: Path, context: int | None = None) -> Path:
    """One line per results file (label -> `olmo2 eval` results JSON): bits per byte of each
    position bucket of its `long_bpb__*` tasks; a dashed line at the pretraining context."""
    from olmo2.report import plot_series

    series = {}
    for label, res in results.items():
        for key, task in res["tasks"].items():
            if key.startswith("long_bpb__"):
                name = label if len(res["tasks"]) == 1 else f"{label} {key}"
                series[name] = bpb_curve(task["metrics"])
    if not series:
        raise ValueError("no long_bpb__* task in the results")
    vlines = [(context, "pretraining context")] if context else []
    return plot_series(
        Path(path), series, "bits per byte", xlabel="token position", vlines=vlines, markers=True
    )


# ---- registry ---------------------------------------------------------------------------------
def _factory(cls, key: str, primary: str, split: str, *args, limit=None) -> Callable[..., Task]:
    def make(**overrides) -> Task:
        base = {"split": split, "num_shots": 0, "primary_metric": primary, "limit": limit}
        return cls(key, TaskConfig(**{**base, **overrides}), *args)

    return make


def _registry() -> dict:
    out = {}
    for L in LENGTHS:
        out[f"passkey__{L}"] = _factory(Passkey, f"passkey__{L}", "acc", "synthetic", L)
        for name, n_keys in (("single", 1), ("multikey", 4)):
            key = f"ruler_niah_{name}__{L}"
            out[key] = _factory(Needle, key, "recall", "synthetic", L, n_keys)
        key = f"long_bpb__{L}"
        out[key] = _factory(PositionBPB, key, "bits_per_byte", "validation", L, limit=BPB_WINDOWS)
    return out


TASKS = _registry()


def suites() -> list[tuple[str, tuple[str, ...]]]:
    """(`long_context__{L}`, the retrieval tasks at every length up to L), macro-averaged."""
    names = ("passkey", "ruler_niah_single", "ruler_niah_multikey")
    return [
        (f"long_context__{L}", tuple(f"{n}__{x}" for x in LENGTHS if x <= L for n in names))
        for L in LENGTHS
    ]


def main(argv: list[str] | None = None) -> int:
    """`python -m olmo2.eval.tasks.long_context RESULTS.json [...] --output bpb.png`: the
    bits-per-byte-by-position plot of `olmo2 eval` results with `long_bpb__*` tasks."""
    import argparse

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("results", nargs="+", help="results JSON of `olmo2 eval --output`")
    p.add_argument("--output", required=True, help="PNG to write")
    p.add_argument("--context", type=int, help="mark this position (the pretraining context)")
    args = p.parse_args(argv)
    loaded = {Path(r).stem: json.loads(Path(r).read_text()) for r in args.results}
    print(plot_bpb_by_position(loaded, Path(args.output), args.context))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
