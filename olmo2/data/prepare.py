"""`olmo2 prepare`: documents -> filters -> decontamination -> dedup -> token files.

    olmo2 prepare --input A.jsonl.gz B.jsonl --output DIR --tokenizer dolma2.json \\
        [--no-filter c4 | --no-filter c4@code*] [--code-sources 'code*'] [--min-words 50] \\
        [--lang en] [--dedup exact,minhash,paragraph|none] [--minhash-threshold 0.8] \\
        [--decontam-dir EVAL_DIR | --no-decontam] [--decontam-mode drop|report] \\
        [--attributes-dir DIR] [--workers N] [--max-part-tokens N] [--dry-run]

Two passes over the inputs, so memory holds only hashes and signatures, never text:

1. read, filter (`filters.py`), check contamination (`decontam.py`) and compute dedup features
   (`dedup.py`) in worker processes; the main process makes the first-occurrence-wins dedup
   decisions in input order and records one keep bit per document (plus, with paragraph
   dedup, which paragraphs to cut). Optional attribute files (one JSONL per input shard, in the
   spirit of dolma's attributes) say why each document was dropped.
2. re-read the inputs and stream the survivors into `olmo2.data.tokenize.tokenize_documents`,
   which writes the parts atomically and resumes after a crash; the funnel counts go into its
   manifest under `prepare`.

Pass 1 is deterministic, so a re-run after an interruption makes the same decisions and the
tokenizer's resume skips the parts already written. Before either pass, the output (and
attributes) directory is checked, so an unusable path fails at once with nothing written; a
damaged input fails naming the file and line, or with --skip-bad-lines is read up to the damage
and counted (`damaged_files`).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from tqdm import tqdm

from olmo2.data.decontam import ContaminationIndex, DecontamConfig
from olmo2.data.dedup import DedupConfig, Deduplicator, DocFeatures, remove_paragraphs
from olmo2.data.documents import Document, ReadStats, check_inputs, iter_documents
from olmo2.data.filters import FILTER_NAMES, FilterConfig, FilterPipeline
from olmo2.data.pool import chunks_by_size, ordered_map
from olmo2.utils import atomic_path, data_dir, sha256_file, write_text_atomic

log = logging.getLogger(__name__)

DEDUP_MODES = ("exact", "minhash", "paragraph")
CHUNK_CHARS = 1 << 20
"""Characters of text per work item sent to a pass-1 worker."""


@dataclass
class PrepareConfig:
    inputs: list[str]
    output: str
    tokenizer: str
    text_field: str = "text"
    separator: str | None = None
    skip_bad_lines: bool = False
    filters: FilterConfig = field(default_factory=FilterConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    decontam: DecontamConfig = field(default_factory=DecontamConfig)
    attributes_dir: str | None = None
    """Write `<shard>.attributes.jsonl` here: per document id, source and why it was dropped."""
    workers: int = 1
    """Processes for pass 1 and for tokenizing (1 = in-process)."""
    max_part_tokens: int = 2**28


# ---------------------------------------------------------------- pass 1: analysis


@dataclass
class Analysis:
    """A worker's verdict on one document (no text)."""

    reason: str | None = None
    contaminated: list[str] = field(default_factory=list)
    features: DocFeatures | None = None
    nbytes: int = 0


class Analyzer:
    """Everything pass 1 computes per document; runs in worker processes."""

    def __init__(self, cfg: PrepareConfig, index: ContaminationIndex | None):
        self.filters = FilterPipeline(cfg.filters)
        self.index = index
        self.dedup = Deduplicator(cfg.dedup)
        self.dedup_on = cfg.dedup.exact or cfg.dedup.by_url or cfg.dedup.minhash
        self.dedup_on = self.dedup_on or cfg.dedup.paragraph

    def __call__(self, doc: Document, key: str | None) -> Analysis:
        a = Analysis(nbytes=len(doc.text.encode("utf-8", errors="replace")))
        a.reason = self.filters(doc)
        if a.reason is not None:
            return a
        if self.index is not None:
            a.contaminated = self.index.matches(doc.text)
        if self.dedup_on:
            a.features = self.dedup.features(doc.text, key)
        return a


_ANALYZER: Analyzer | None = None


def _analyze_chunk(items: list[tuple[int, Document, str | None]]) -> list[Analysis]:
    # Workers are forked after `_ANALYZER` is set, so they inherit the filters and the
    # contamination index instead of unpickling them.
    assert _ANALYZER is not None
    return [_ANALYZER(doc, key) for _, doc, key in items]


@dataclass
class Funnel:
    """Counts for the summary table and the manifest."""

    documents_in: int = 0
    bad_lines: int = 0
    damaged_files: int = 0
    """Inputs cut short by damage (truncated or corrupt), read up to it (--skip-bad-lines)."""
    bytes_in: int = 0
    filtered: collections.Counter = field(default_factory=collections.Counter)
    contaminated: collections.Counter = field(default_factory=collections.Counter)
    contaminated_docs: int = 0
    duplicates: collections.Counter = field(default_factory=collections.Counter)
    paragraphs_removed: int = 0
    documents_out: int = 0
    bytes_out: int = 0

    def to_dict(self) -> dict:
        by_family: collections.Counter = collections.Counter()
        for reason, n in self.filtered.items():
            by_family[reason.split(":", 1)[0]] += n
        # (not dataclasses.asdict: it would rebuild the Counters from item pairs)
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["filtered"] = dict(sorted(self.filtered.items()))
        d["filtered_by_family"] = dict(sorted(by_family.items()))
        d["contaminated"] = dict(sorted(self.contaminated.items()))
        d["duplicates"] = dict(sorted(self.duplicates.items()))
        return d


@dataclass
class Decisions:
    keep: bytearray = field(default_factory=bytearray)
    """One byte per document read, in input order (1 = emit in pass 2)."""
    paragraph_drops: dict[int, list[int]] = field(default_factory=dict)


def _id_key(doc: Document, path: Path, cfg: DedupConfig) -> str | None:
    """The URL, or an explicit id, for URL/id dedup (ids made up from file:line never repeat)."""
    if not cfg.by_url:
        return None
    url = doc.metadata.get("url")
    if isinstance(url, str) and url:
        return "url:" + url
    if re.fullmatch(re.escape(path.name) + r"(:\d+)?", doc.id):
        return None
    return "id:" + doc.id


def analyze(cfg: PrepareConfig, index: ContaminationIndex | None) -> tuple[Decisions, Funnel]:
    """Pass 1: decide which documents survive; write attribute files if asked."""
    global _ANALYZER
    _ANALYZER = Analyzer(cfg, index)
    paths = check_inputs(cfg.inputs)
    stats = [ReadStats() for _ in paths]

    def items() -> Iterator[tuple[int, Document, str | None]]:
        for i, path in enumerate(paths):
            docs = iter_documents(
                [path],
                text_field=cfg.text_field,
                separator=cfg.separator,
                skip_bad_lines=cfg.skip_bad_lines,
                stats=stats[i],
            )
            yield from ((i, d, _id_key(d, path, cfg.dedup)) for d in docs)

    dedup = Deduplicator(cfg.dedup)
    decisions, funnel = Decisions(), Funnel()
    attrs: dict[int, list[dict]] = collections.defaultdict(list)
    bar = tqdm(desc="filter+dedup", unit=" docs", mininterval=1.0)
    try:
        chunks = chunks_by_size(items(), CHUNK_CHARS, lambda it: len(it[1].text))
        for chunk, results in ordered_map(_analyze_chunk, chunks, cfg.workers):
            for (i, doc, _), a in zip(chunk, results):
                row = _decide(doc, a, cfg, dedup, decisions, funnel)
                if cfg.attributes_dir is not None:
                    attrs[i].append(row)
            bar.update(len(chunk))
    finally:
        bar.close()
        _ANALYZER = None
    funnel.bad_lines = sum(s.bad_lines for s in stats)
    funnel.damaged_files = sum(s.damaged_files for s in stats)
    if cfg.attributes_dir is not None:
        for i, path in enumerate(paths):
            _write_attributes(Path(cfg.attributes_dir), path, attrs.get(i, []))
    return decisions, funnel


def _decide(
    doc: Document,
    a: Analysis,
    cfg: PrepareConfig,
    dedup: Deduplicator,
    decisions: Decisions,
    funnel: Funnel,
) -> dict:
    ordinal = funnel.documents_in
    funnel.documents_in += 1
    funnel.bytes_in += a.nbytes
    drop, duplicate = a.reason, None
    if a.reason is not None:
        funnel.filtered[a.reason] += 1
    if a.contaminated:
        funnel.contaminated_docs += 1
        funnel.contaminated.update(a.contaminated)
        if cfg.decontam.mode == "drop":
            drop = "contaminated"
    if drop is None and a.features is not None:
        duplicate = dedup.check(ordinal, a.features)
        if duplicate is not None:
            funnel.duplicates[duplicate] += 1
            drop = f"duplicate:{duplicate}"
    para = []
    if drop is None and a.features is not None and cfg.dedup.paragraph:
        para = dedup.duplicate_paragraphs(a.features)
        if para:
            decisions.paragraph_drops[ordinal] = para
            funnel.paragraphs_removed += len(para)
    decisions.keep.append(drop is None)
    if drop is None:
        funnel.documents_out += 1
    return {
        "id": doc.id,
        "source": doc.source,
        "attributes": {
            "olmo2_drop": drop,
            "olmo2_filter": a.reason,
            "olmo2_contaminated": a.contaminated,
            "olmo2_duplicate": duplicate,
            "olmo2_dup_paragraphs": para,
        },
    }


def _write_attributes(out_dir: Path, path: Path, rows: list[dict]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    name = path.name
    for suffix in (".gz", ".zst"):
        name = name.removesuffix(suffix)
    target = out_dir / (Path(name).stem + ".attributes.jsonl")
    with atomic_path(target) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------- pass 2: emit


def survivors(cfg: PrepareConfig, decisions: Decisions) -> Iterator[Document]:
    """Re-read the inputs and yield the kept documents (paragraph-deduplicated)."""
    docs = iter_documents(
        cfg.inputs,
        text_field=cfg.text_field,
        separator=cfg.separator,
        skip_bad_lines=cfg.skip_bad_lines,
    )
    for ordinal, doc in enumerate(docs):
        if ordinal >= len(decisions.keep):
            raise ValueError(f"inputs changed between passes (document {ordinal} is new)")
        if decisions.keep[ordinal]:
            if ordinal in decisions.paragraph_drops:
                doc.text = remove_paragraphs(doc.text, decisions.paragraph_drops[ordinal])
            yield doc


# ---------------------------------------------------------------- CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--input", nargs="+", required=True, metavar="FILE", help=".jsonl[.gz|.zst] or .txt"
    )
    p.add_argument("--output", required=True, help="directory for token parts + manifest.json")
    p.add_argument("--tokenizer", required=True, help="tokenizer.json (or a directory holding one)")
    p.add_argument("--text-field", default="text", help="JSONL field with the text")
    p.add_argument("--separator", default=None, help="split .txt files into documents on this")
    p.add_argument("--skip-bad-lines", action="store_true", help="count and skip invalid lines")
    p.add_argument(
        "--no-filter",
        action="append",
        default=[],
        metavar="NAME[@SOURCE]",
        help=f"switch a filter family off ({', '.join(FILTER_NAMES)}, or 'all'); "
        "NAME@GLOB only for sources (file stems) matching GLOB",
    )
    p.add_argument(
        "--code-sources",
        action="append",
        default=[],
        metavar="GLOB",
        help="sources that are code: every text filter is skipped for them (dedup and "
        "decontamination still apply)",
    )
    p.add_argument("--min-words", type=int, default=50, help="length filter lower bound")
    p.add_argument("--max-words", type=int, default=None, help="length filter upper bound")
    p.add_argument("--lang", default="en", help="comma-separated languages to keep (py3langid)")
    p.add_argument("--lang-threshold", type=float, default=0.5, help="min language probability")
    p.add_argument(
        "--dedup",
        default="exact,minhash",
        help="comma-separated subset of exact,minhash,paragraph, or 'none'",
    )
    p.add_argument("--minhash-threshold", type=float, default=0.8)
    p.add_argument("--minhash-ngram", type=int, default=5)
    p.add_argument("--minhash-perms", type=int, default=128)
    p.add_argument("--minhash-bands", type=int, default=None, help="default: from the threshold")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--decontam-dir", default=None, help="eval directory (default: DATA_DIR/eval)")
    g.add_argument("--no-decontam", action="store_true", help="skip decontamination")
    p.add_argument("--decontam-mode", choices=("drop", "report"), default="drop")
    p.add_argument("--decontam-ngram", type=int, default=13)
    p.add_argument("--data-dir", default=None, help="shared data directory (for the eval sets)")
    p.add_argument("--attributes-dir", default=None, help="write per-document drop reasons here")
    p.add_argument("--workers", type=int, default=None, help="processes (default: CPU count)")
    p.add_argument("--max-part-tokens", type=int, default=2**28)
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")


def config_from_args(args: argparse.Namespace) -> PrepareConfig:
    fc = FilterConfig()
    fc.length.min_words, fc.length.max_words = args.min_words, args.max_words
    fc.lang.langs = tuple(x.strip() for x in args.lang.split(",") if x.strip())
    fc.lang.min_score = args.lang_threshold
    for item in args.no_filter:
        name, _, glob = item.partition("@")
        names = list(FILTER_NAMES) if name == "all" else [name]
        for n in names:
            if n not in FILTER_NAMES:
                raise ValueError(
                    f"--no-filter {item}: unknown filter {n!r}; expected one of {FILTER_NAMES} or 'all'"
                )
            if glob:
                fc.disabled_for_source.setdefault(n, []).append(glob)
            else:
                getattr(fc, n).enabled = False
    for glob in args.code_sources:
        for n in FILTER_NAMES:
            fc.disabled_for_source.setdefault(n, []).append(glob)
    modes = [m.strip() for m in args.dedup.split(",") if m.strip()]
    if modes != ["none"] and (not modes or set(modes) - set(DEDUP_MODES)):
        raise ValueError(
            f"--dedup {args.dedup}: expected a comma-separated subset of {DEDUP_MODES} or 'none'"
        )
    dc = DedupConfig(
        exact="exact" in modes,
        by_url="exact" in modes,
        minhash="minhash" in modes,
        paragraph="paragraph" in modes,
        minhash_ngram=args.minhash_ngram,
        num_perm=args.minhash_perms,
        bands=args.minhash_bands,
        threshold=args.minhash_threshold,
    )
    if not 0 < dc.threshold <= 1:
        raise ValueError(f"--minhash-threshold {dc.threshold}: expected a value in (0, 1]")
    eval_dir = None
    if not args.no_decontam:
        eval_dir = args.decontam_dir
        if eval_dir is None and (d := data_dir(args.data_dir, required=False)) is not None:
            eval_dir = str(d / "eval") if (d / "eval").is_dir() else None
        if eval_dir is None:
            log.warning("no eval directory found: decontamination is off (pass --decontam-dir)")
    workers = args.workers if args.workers is not None else (os.cpu_count() or 1)
    if workers < 1:
        raise ValueError(f"--workers {workers}: expected at least 1")
    return PrepareConfig(
        inputs=list(args.input),
        output=args.output,
        tokenizer=args.tokenizer,
        text_field=args.text_field,
        separator=args.separator,
        skip_bad_lines=args.skip_bad_lines,
        filters=fc,
        dedup=dc,
        decontam=DecontamConfig(
            eval_dir=eval_dir, ngram=args.decontam_ngram, mode=args.decontam_mode
        ),
        attributes_dir=args.attributes_dir,
        workers=workers,
        max_part_tokens=args.max_part_tokens,
    )


def prepare(cfg: PrepareConfig) -> dict:
    """Run both passes; return the manifest (with the funnel under `prepare`)."""
    from olmo2.data.tokenize import tokenize_documents

    check_inputs(cfg.inputs)
    tok = Path(cfg.tokenizer)
    if not (tok.is_file() or (tok / "tokenizer.json").is_file()):
        raise FileNotFoundError(f"{tok}: tokenizer file not found")
    settings = _check_output(cfg)  # before reading anything: fail fast, write nothing
    t0 = time.perf_counter()
    index = ContaminationIndex.build(cfg.decontam) if cfg.decontam.eval_dir else None
    decisions, funnel = analyze(cfg, index)
    if funnel.documents_in == 0:
        raise ValueError(f"no documents in {', '.join(cfg.inputs)} (empty input)")
    t1 = time.perf_counter()
    Path(cfg.output).mkdir(parents=True, exist_ok=True)
    write_text_atomic(Path(cfg.output) / STATE_FILE, json.dumps(settings, indent=2))
    inputs = [
        {"path": str(p), "bytes": Path(p).stat().st_size, "sha256": sha256_file(p)}
        for p in cfg.inputs
    ]
    extra = {"prepare": {"config": _jsonable(cfg), "funnel": funnel.to_dict(), "inputs": inputs}}
    manifest = tokenize_documents(
        survivors(cfg, decisions),
        cfg.tokenizer,
        cfg.output,
        max_part_tokens=cfg.max_part_tokens,
        num_workers=cfg.workers,
        manifest_extra=extra,
    )
    t2 = time.perf_counter()
    timing = {"analyze_s": t1 - t0, "tokenize_s": t2 - t1, "total_s": t2 - t0}
    manifest["prepare"]["timing"] = timing  # printed only: the manifest file stays reproducible
    return manifest


STATE_FILE = ".prepare-state.json"


def _check_output(cfg: PrepareConfig) -> dict:
    """Refuse an output that cannot be written, or that holds another run's output; return
    the state to pin in it.

    The tokenizer's resume keeps every complete part it finds, so without the settings check a
    re-run with, say, another filter setting would silently mix the two runs' documents.
    """
    _check_writable_dir(Path(cfg.output), "--output")
    if cfg.attributes_dir is not None:
        _check_writable_dir(Path(cfg.attributes_dir), "--attributes-dir")
    settings = _jsonable(cfg)
    for k in ("output", "workers", "attributes_dir"):  # do not change the documents
        settings.pop(k)
    settings["input_files"] = [
        {"path": str(p), "bytes": p.stat().st_size} for p in map(Path, cfg.inputs)
    ]
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    out = Path(cfg.output)
    state = out / STATE_FILE
    if state.is_file():
        if json.loads(state.read_text()).get("settings_sha256") != digest:
            raise ValueError(
                f"{out}: holds output of `prepare` with other inputs or settings "
                f"({state.name} differs); use another --output directory or delete this one"
            )
    elif out.exists() and any(out.glob("part-*")):
        raise ValueError(f"{out}: already holds token parts not made by this `prepare` run")
    return {"settings_sha256": digest, **settings}


def _check_writable_dir(path: Path, flag: str) -> None:
    """Fail unless `path` is, or can be created as, a directory this process can write."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        what = "a file, not a directory" if existing.is_file() else "not a directory"
        under = "" if existing == path else f" (so {path} cannot be created under it)"
        raise ValueError(f"{flag} {path}: {existing} is {what}{under}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path}: {existing} is not writable by this user")


def _jsonable(cfg: PrepareConfig) -> dict:
    d = dataclasses.asdict(cfg)
    rep = d["filters"]["gopher_repetition"]
    for k in ("max_top_ngram_char_frac", "max_dup_ngram_char_frac"):
        rep[k] = {str(n): v for n, v in rep[k].items()}
    return json.loads(json.dumps(d))


def summary(manifest: dict) -> str:
    f, t = manifest["prepare"]["funnel"], manifest["prepare"].get("timing", {})
    rows = [("documents in", f["documents_in"])]
    if f["bad_lines"]:
        rows.append(("bad lines skipped", f["bad_lines"]))
    if f["damaged_files"]:
        rows.append(("damaged files (read up to the damage)", f["damaged_files"]))
    rows += [(f"  dropped: {k}", v) for k, v in f["filtered"].items()]
    rows += [(f"  contaminated: {k}", v) for k, v in f["contaminated"].items()]
    rows += [(f"  duplicates: {k}", v) for k, v in f["duplicates"].items()]
    if f["paragraphs_removed"]:
        rows.append(("  duplicate paragraphs removed", f["paragraphs_removed"]))
    rows += [("documents out", f["documents_out"]), ("tokens out", manifest["tokens"])]
    if t:
        secs = t["total_s"]
        rows += [
            ("MB in", f"{f['bytes_in'] / 1e6:.1f}"),
            ("seconds (filter+dedup / tokenize)", f"{t['analyze_s']:.1f} / {t['tokenize_s']:.1f}"),
            ("MB/s end to end", f"{f['bytes_in'] / 1e6 / secs:.2f}"),
            ("tokens/s end to end", f"{manifest['tokens'] / secs:,.0f}"),
        ]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{k:<{width}}  {v:>12}" for k, v in rows)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if args.dry_run:
        print(yaml.safe_dump(_jsonable(cfg), sort_keys=False), end="")
        return 0
    manifest = prepare(cfg)
    print(summary(manifest))
    print(f"wrote {len(manifest['parts'])} part(s) to {cfg.output}")
    return 0
