"""Shards: the units of work of the per-document stages.

A shard is one input file, or, for a JSONL file larger than `shard_bytes` of decompressed text,
the lines that start in one byte range of it (a compressed file is decompressed up to its
range; only plain files can seek). The cut points depend only on the file and `shard_bytes`,
never on the executor or the number of tasks, so every run makes the same shards, and the
shard index order is (input file, line) order.

The `scan` stage finds the cut points (one task per input file, reading it once) together with
the file's size and SHA-256 for the manifest, so the driver never reads input data itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from olmo2.data import fs
from olmo2.data.documents import Document, ReadStats, file_stem, iter_span, line_starts


@dataclass(frozen=True)
class Shard:
    index: int
    path: str
    start: int = 0
    end: int | None = None
    """Decompressed byte range of the lines it holds (None: to the end of the file)."""
    first_line: int = 1
    part: int | None = None
    """Its number within a file cut into several shards (None when the file is one shard)."""

    @property
    def name(self) -> str:
        stem = file_stem(self.path)
        return stem if self.part is None else f"{stem}.{self.part:05d}"


def scan_file(path: str, shard_bytes: int, skip_bad_lines: bool) -> dict:
    """Cut points, size and SHA-256 of one input file (the `scan` stage's task)."""
    loc = fs.location(path)
    return {
        "path": path,
        "bytes": fs.size(loc),
        "sha256": fs.sha256(loc),
        "starts": line_starts(path, shard_bytes, skip_bad_lines),
    }


def make_shards(scans: list[dict]) -> list[Shard]:
    """The shards of all inputs, in (file, line) order, from their scans."""
    shards: list[Shard] = []
    for scan in scans:
        starts = scan["starts"]
        for k, (start, line) in enumerate(starts):
            end = starts[k + 1][0] if k + 1 < len(starts) else None
            part = k if len(starts) > 1 else None
            shards.append(Shard(len(shards), scan["path"], start, end, line, part))
    return shards


def read_shard(
    shard: Shard,
    *,
    text_field: str,
    separator: str | None,
    skip_bad_lines: bool,
    stats: ReadStats | None = None,
) -> Iterator[Document]:
    """Stream the shard's documents (see `documents.iter_span`)."""
    return iter_span(
        shard.path,
        shard.start,
        shard.end,
        shard.first_line,
        text_field=text_field,
        separator=separator,
        skip_bad_lines=skip_bad_lines,
        stats=stats,
    )


def scan_task(job, path: str) -> dict:
    """The `scan` stage's task (`job` is a `stages.job.Job`)."""
    shard_bytes = max(1, int(job.cfg.shard_mb * 1e6))
    return scan_file(path, shard_bytes, job.cfg.skip_bad_lines)
