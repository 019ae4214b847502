"""Documents in: stream pretraining text from JSONL shards and plain-text files.

Formats (chosen by file name): `.jsonl`, `.jsonl.gz`, `.jsonl.zst` (one JSON object per line,
the text under `text_field`), `.txt` (the whole file is one document, or it is split on
`separator`). Reading is streaming and constant-memory: one line (or one .txt file) at a time.

A document without an `id` gets the stable id `{file name}:{line}` so that a re-run, an
attribute file and a dedup decision all refer to the same document. `source` defaults to the
file's stem (`gutenberg_en_train` for `gutenberg_en_train.jsonl.gz`), so per-source filter
switches and the mixture can key on it.

A compressed file that is damaged (truncated, corrupt, or not compressed at all) raises
`DamagedInput`, a ValueError that names the file, the last line read and how far into the file
reading got; with `skip_bad_lines` the documents before the damage are kept and the file is
counted in `ReadStats.damaged_files`.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import zstandard

from olmo2.data import fs
from olmo2.data.fs import Location

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
    damaged_files: int = 0
    """Files cut short by damage (read up to it, with `skip_bad_lines`)."""


_STEM_SUFFIXES = sorted(JSONL_SUFFIXES + TEXT_SUFFIXES + (".json",), key=len, reverse=True)


def file_stem(path: str | os.PathLike) -> str:
    """`a/b/gutenberg_en_train.jsonl.gz` -> `gutenberg_en_train`."""
    name = fs.name(fs.location(path))
    for suffix in _STEM_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


class _ZstdFrames(io.RawIOBase):
    """The decompressed bytes of the zstd frames in `raw`, one frame after another.

    Unlike python-zstandard's `stream_reader`, which stops silently, this raises EOFError when
    the file ends inside a frame (a truncated file)."""

    def __init__(self, raw: BinaryIO):
        self.raw, self.dctx = raw, zstandard.ZstdDecompressor()
        self.frame = None  # the decompressobj of the current frame
        self.out = memoryview(b"")

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.raw.close()
        super().close()

    def readinto(self, b) -> int:
        while not self.out:
            data = self.raw.read(1 << 16)
            if not data:
                if self.frame is not None and not self.frame.eof:
                    raise EOFError("compressed file ended before the end of a zstd frame")
                return 0
            self.out = memoryview(self._decompress(data))
        n = min(len(b), len(self.out))
        b[:n], self.out = self.out[:n], self.out[n:]
        return n

    def _decompress(self, data: bytes) -> bytes:
        out = []
        while data:
            if self.frame is None or self.frame.eof:
                self.frame = self.dctx.decompressobj()
            out.append(self.frame.decompress(data))
            data = self.frame.unused_data if self.frame.eof else b""
        return b"".join(out)


def _compression(path: Location) -> str:
    return {".gz": "gzip", ".zst": "zstd"}.get(Path(fs.name(path)).suffix, "plain")


class _GzipFrom(gzip.GzipFile):
    """A GzipFile over a file object that it also closes."""

    def close(self) -> None:
        raw = self.fileobj
        super().close()
        if raw is not None:
            raw.close()


def _open_binary(path: Location) -> tuple[BinaryIO, BinaryIO]:
    """The decompressed bytes of a file (local or an fsspec URL), and the raw file under them
    (its position says how far reading got); closing the first closes both."""
    kind, raw = _compression(path), fs.open_binary(path)
    if kind == "gzip":
        return _GzipFrom(fileobj=raw, mode="rb"), raw
    return (io.BufferedReader(_ZstdFrames(raw)) if kind == "zstd" else raw), raw


def open_text(path: str | os.PathLike) -> io.TextIOBase:
    """Open a possibly gzip/zstd-compressed file as UTF-8 text."""
    return io.TextIOWrapper(_open_binary(fs.location(path))[0], encoding="utf-8")


_DAMAGE_ERRORS = (OSError, EOFError, zlib.error, zstandard.ZstdError)
_EXPECTED = {
    "gzip": "a complete gzip stream (magic bytes 1f 8b, deflate data, CRC trailer)",
    "zstd": "complete zstd frames (magic bytes 28 b5 2f fd ... end of frame)",
    "plain": "a readable file",
}


class DamagedInput(ValueError):
    """An input file that cannot be read to its end (truncated, corrupt, not compressed)."""

    def __init__(self, path: Location, where: str, offset: int, err: Exception):
        kind, size = _compression(path), fs.size(path)
        hint = " (the file ends there: truncated?)" if isinstance(err, EOFError) else ""
        super().__init__(
            f"{path}: cannot read {kind} data {where}, reading stopped at byte {offset:,} of "
            f"{size:,}{hint}: {err}; expected {_EXPECTED[kind]}"
        )


def _lines(
    path: Location, start: int = 0, end: int | None = None, first_line: int = 1
) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of a possibly compressed file, streaming; damage raises
    `DamagedInput` after the lines before it.

    `start`/`end` restrict it to the lines that begin in that range of the decompressed bytes
    (`start` must be a line start, numbered `first_line`): a shard of a large file."""
    lineno, pos = first_line - 1, start
    f, raw = _open_binary(path)
    with f:
        try:
            _skip(f, raw, start)
            for lineno, line in enumerate(f, start=first_line):
                if end is not None and pos >= end:
                    return
                pos += len(line)
                yield lineno, line
        except _DAMAGE_ERRORS as e:
            raise DamagedInput(path, f"at line {lineno + 1:,}", raw.tell(), e) from None


def _skip(f: BinaryIO, raw: BinaryIO, n: int) -> None:
    """Advance the decompressed stream `f` by `n` bytes (a seek where the file allows it)."""
    if f is raw:
        f.seek(n)
        return
    while n > 0:
        got = len(f.read(min(n, 1 << 20)))
        if not got:
            raise EOFError(f"the file ends before byte {n:,} of a planned shard")
        n -= got


def _read_text(path: Location) -> tuple[str, DamagedInput | None]:
    """The whole text of a possibly compressed file, or what could be read and the damage."""
    parts: list[str] = []
    f, raw = _open_binary(path)
    with io.TextIOWrapper(f, encoding="utf-8") as text:
        try:
            while chunk := text.read(1 << 13):  # small reads: lose little to damage
                parts.append(chunk)
        except _DAMAGE_ERRORS as e:
            where = f"after {sum(map(len, parts)):,} characters"
            return "".join(parts), DamagedInput(path, where, raw.tell(), e)
    return "".join(parts), None


def _damaged(e: DamagedInput, skip_bad_lines: bool, stats: ReadStats) -> None:
    """Count and log the damage with `skip_bad_lines`, else raise it."""
    if not skip_bad_lines:
        raise ValueError(f"{e}; pass --skip-bad-lines to keep the documents before it") from None
    stats.damaged_files += 1
    log.warning("%s; keeping the documents before it", e)


def _kind(path: Location) -> str:
    name = fs.name(path)
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


def check_inputs(paths: Iterable[str | os.PathLike]) -> list[Location]:
    """Resolve and validate input paths up front (so a typo fails before any work)."""
    out = []
    for p in paths:
        p = fs.location(p)
        if not fs.is_file(p):
            raise FileNotFoundError(f"{p}: input file not found")
        _kind(p)
        out.append(p)
    if not out:
        raise ValueError("no input files given")
    return out


def _iter_jsonl(
    path: Location,
    text_field: str,
    skip_bad_lines: bool,
    stats: ReadStats,
    span: tuple[int, int | None, int] = (0, None, 1),
) -> Iterator[Document]:
    source = file_stem(path)
    try:
        for lineno, line in _lines(path, *span):
            if line.strip():
                doc = _parse_line(path, lineno, line, text_field, source, skip_bad_lines, stats)
                if doc is not None:
                    yield doc
    except DamagedInput as e:
        _damaged(e, skip_bad_lines, stats)


def _parse_line(
    path: Location,
    lineno: int,
    line: bytes,
    text_field: str,
    source: str,
    skip_bad_lines: bool,
    stats: ReadStats,
) -> Document | None:
    """The document on one JSONL line; None for a bad line that is skipped."""
    try:
        row = json.loads(line.decode("utf-8"))
        if not isinstance(row, dict):
            raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    except ValueError as e:  # UnicodeDecodeError is a ValueError too
        if skip_bad_lines:
            stats.bad_lines += 1
            log.warning("%s:%d: skipping bad line (%s)", path, lineno, e)
            return None
        raise ValueError(
            f"{path}:{lineno}: invalid JSON line ({e}); pass --skip-bad-lines to skip it"
        ) from None
    text = row.get(text_field)
    if not isinstance(text, str):
        if skip_bad_lines:
            stats.bad_lines += 1
            return None
        what = "missing" if text is None else f"a {type(text).__name__}, not a string"
        raise ValueError(
            f"{path}:{lineno}: field {text_field!r} is {what} "
            f"(keys: {sorted(row)[:8]}); choose the field with --text-field"
        )
    doc_id = row.get("id")
    return Document(
        id=str(doc_id) if doc_id is not None else f"{fs.name(path)}:{lineno}",
        text=text,
        source=str(row.get("source") or source),
        metadata={k: v for k, v in row.items() if k not in (text_field, "id", "source")},
    )


def _iter_txt(
    path: Location, separator: str | None, skip_bad_lines: bool, stats: ReadStats
) -> Iterator[Document]:
    text, damage = _read_text(path)
    pieces = [text] if separator is None else text.split(separator)
    if damage is not None:
        _damaged(damage, skip_bad_lines, stats)
        pieces = pieces[:-1]  # the last piece was cut short by the damage
    for i, piece in enumerate(pieces):
        if piece.strip():
            doc_id = fs.name(path) if separator is None else f"{fs.name(path)}:{i}"
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
    `text_field` is missing are counted in `stats.bad_lines` and skipped, and a damaged file
    is read up to the damage and counted in `stats.damaged_files`.
    """
    stats = stats if stats is not None else ReadStats()
    for path in check_inputs(paths):
        yield from iter_span(
            path,
            text_field=text_field,
            separator=separator,
            skip_bad_lines=skip_bad_lines,
            stats=stats,
        )


def iter_span(
    path: str | os.PathLike,
    start: int = 0,
    end: int | None = None,
    first_line: int = 1,
    *,
    text_field: str = "text",
    separator: str | None = None,
    skip_bad_lines: bool = False,
    stats: ReadStats | None = None,
) -> Iterator[Document]:
    """The documents of one shard: the JSONL lines that start in decompressed bytes
    [`start`, `end`) (`start` is the start of line `first_line`), or a whole .txt file.

    Ids, errors and counts are exactly those `iter_documents` gives for the same lines."""
    path = fs.location(path)
    stats = stats if stats is not None else ReadStats()
    stats.files += start == 0
    if _kind(path) == "jsonl":
        docs = _iter_jsonl(path, text_field, skip_bad_lines, stats, (start, end, first_line))
    else:
        docs = _iter_txt(path, separator, skip_bad_lines, stats)
    for doc in docs:
        stats.documents += 1
        stats.bytes += len(doc.text.encode("utf-8", errors="surrogatepass"))
        yield doc


def line_starts(path: str | os.PathLike, every: int, skip_bad_lines: bool) -> list[list[int]]:
    """[byte offset, line number] of the first line starting at or after each multiple of
    `every` decompressed bytes (always [0, 1] first): where a large JSONL file is cut into
    shards. A damaged file raises (naming file, line and byte) unless `skip_bad_lines`, which
    stops at the damage (the last shard then meets it, and counts it)."""
    path = fs.location(path)
    starts, pos, nxt = [[0, 1]], 0, every
    if _kind(path) != "jsonl":
        return starts
    try:
        for lineno, line in _lines(path):
            if pos >= nxt:
                starts.append([pos, lineno])
                nxt = pos + every
            pos += len(line)
    except DamagedInput as e:
        if not skip_bad_lines:
            raise ValueError(
                f"{e}; pass --skip-bad-lines to keep the documents before it"
            ) from None
    return starts
