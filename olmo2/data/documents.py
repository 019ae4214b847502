"""Documents in: stream pretraining text from JSONL shards and plain-text files.

Formats (chosen by file name): `.jsonl`, `.jsonl.gz`, `.jsonl.zst` (one JSON object per line,
the text under `text_field`), `.txt` (the whole file is one document, or it is split on
`separator`). Reading is streaming and constant-memory: one line (or one .txt file) at a time.

A document without an `id` gets the stable id `{file name}:{line}` so that a re-run, an
attribute file and a dedup decision all refer to the same document. `source` defaults to the
file's stem (`gutenberg_en_train` for `gutenberg_en_train.jsonl.gz`), so per-source filter
switches and the mixture can key on it.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json.gz", ".json.zst", ".ndjson")
TEXT_SUFFIXES = (".txt", ".txt.gz", ".txt.zst")


@dataclass
class Document:
    id: str
    text: str
    source: str = ""
    metadata: dict = field(default_factory=dict)


@dataclass
class ReadStats:
    """Counts kept while reading (pass one in as `stats=` to collect them)."""

    files: int = 0
    documents: int = 0
    bad_lines: int = 0
    bytes: int = 0
    """UTF-8 bytes of document text read."""


def file_stem(path: str | os.PathLike) -> str:
    """`a/b/gutenberg_en_train.jsonl.gz` -> `gutenberg_en_train`."""
    name = Path(path).name
    for suffix in sorted(JSONL_SUFFIXES + TEXT_SUFFIXES + (".json",), key=len, reverse=True):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def open_text(path: str | os.PathLike) -> io.TextIOBase:
    """Open a possibly gzip/zstd-compressed file as UTF-8 text."""
    path = str(path)
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    if path.endswith(".zst"):
        import zstandard

        raw = open(path, "rb")  # noqa: SIM115 - closed through the wrapper
        reader = zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)
        return io.TextIOWrapper(reader, encoding="utf-8")
    return open(path, encoding="utf-8")


def _kind(path: Path) -> str:
    name = path.name
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(TEXT_SUFFIXES):
        return "txt"
    if name.endswith(".json"):
        raise ValueError(
            f"{path}: a .json file (one JSON value) is not a pretraining shard; "
            "convert it to JSONL (one object per line, named .jsonl)"
        )
    raise ValueError(
        f"{path}: unknown input format; expected one of {', '.join(JSONL_SUFFIXES + TEXT_SUFFIXES)}"
    )


def check_inputs(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Resolve and validate input paths up front (so a typo fails before any work)."""
    out = []
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise FileNotFoundError(f"{p}: input file not found")
        _kind(p)
        out.append(p)
    if not out:
        raise ValueError("no input files given")
    return out


def _iter_jsonl(
    path: Path, text_field: str, skip_bad_lines: bool, stats: ReadStats
) -> Iterator[Document]:
    source = file_stem(path)
    with open_text(path) as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError(f"expected a JSON object, got {type(row).__name__}")
            except ValueError as e:
                if skip_bad_lines:
                    stats.bad_lines += 1
                    log.warning("%s:%d: skipping bad line (%s)", path, lineno, e)
                    continue
                raise ValueError(
                    f"{path}:{lineno}: invalid JSON line ({e}); pass --skip-bad-lines to skip it"
                ) from None
            text = row.get(text_field)
            if not isinstance(text, str):
                if skip_bad_lines:
                    stats.bad_lines += 1
                    continue
                what = "missing" if text is None else f"a {type(text).__name__}, not a string"
                raise ValueError(
                    f"{path}:{lineno}: field {text_field!r} is {what} "
                    f"(keys: {sorted(row)[:8]}); choose the field with --text-field"
                )
            doc_id = row.get("id")
            meta = {k: v for k, v in row.items() if k not in (text_field, "id", "source")}
            yield Document(
                id=str(doc_id) if doc_id is not None else f"{path.name}:{lineno}",
                text=text,
                source=str(row.get("source") or source),
                metadata=meta,
            )


def _iter_txt(path: Path, separator: str | None) -> Iterator[Document]:
    with open_text(path) as f:
        text = f.read()
    pieces = [text] if separator is None else text.split(separator)
    for i, piece in enumerate(pieces):
        if piece.strip():
            doc_id = path.name if separator is None else f"{path.name}:{i}"
            yield Document(id=doc_id, text=piece, source=file_stem(path))


def iter_documents(
    paths: Iterable[str | os.PathLike],
    *,
    text_field: str = "text",
    separator: str | None = None,
    skip_bad_lines: bool = False,
    stats: ReadStats | None = None,
) -> Iterator[Document]:
    """Stream `Document`s from the given files, in order.

    Errors name the file and line. With `skip_bad_lines`, invalid JSON lines and lines whose
    `text_field` is missing are counted in `stats.bad_lines` and skipped.
    """
    stats = stats if stats is not None else ReadStats()
    for path in check_inputs(paths):
        stats.files += 1
        if _kind(path) == "jsonl":
            docs = _iter_jsonl(path, text_field, skip_bad_lines, stats)
        else:
            docs = _iter_txt(path, separator)
        for doc in docs:
            stats.documents += 1
            stats.bytes += len(doc.text.encode("utf-8", errors="surrogatepass"))
            yield doc
