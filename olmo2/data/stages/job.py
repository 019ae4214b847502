"""What every task of a `prepare` run is given (`Job`), and where the stages keep their files.

The work directory (default `OUTPUT/.prepare-work`) holds each stage's outputs and completion
markers; it must be visible to every worker (on a cluster: a shared filesystem). It is removed
when the manifest has been written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from olmo2.data.shards import Shard

if TYPE_CHECKING:
    from olmo2.data.decontam import ContaminationIndex
    from olmo2.data.prepare import PrepareConfig

CATEGORIES = ("url", "exact", "band", "paragraph")
"""Record kinds written by `analyze`, each hash-partitioned (`records.py`)."""


@dataclass
class Job:
    cfg: PrepareConfig
    work: str
    partitions: int
    """Hash partitions of the dedup stages (`--tasks`)."""
    tokenizer: str
    """The tokenizer.json file."""
    backend: str = "tokenizers"
    """Encoder backend chosen by the driver (`encoder.choose_backend`)."""
    index: ContaminationIndex | None = None
    shards: list[Shard] = field(default_factory=list)
    bands: int = 0
    rows: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def path(self, *parts: str) -> Path:
        """A file of the work directory (its folder is created on first use)."""
        path = Path(self.work, *parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def staging(self) -> Path:
        """Where files bound for a URL output are finished before their upload."""
        path = Path(self.work, "staging")
        path.mkdir(parents=True, exist_ok=True)
        return path

    def records(self, category: str, shard: int, partition: int) -> Path:
        return self.path("analyze", category, f"{shard:05d}-{partition:03d}.rec")

    def signatures(self, shard: int) -> Path:
        return self.path("analyze", "sigs", f"{shard:05d}.u32")

    def verdicts(self, shard: int) -> Path:
        return self.path("analyze", "verdicts", f"{shard:05d}.json")

    def edges(self, partition: int) -> Path:
        return self.path("buckets", "edges", f"{partition:03d}.rec")

    def removals(self, shard: int) -> Path:
        return self.path("cluster", "remove", f"{shard:05d}.rec")

    def kept_paragraphs(self, shard: int, partition: int) -> Path:
        return self.path("prune", "kept", f"{shard:05d}-{partition:03d}.rec")

    def paragraph_drops(self, shard: int, partition: int) -> Path:
        return self.path("paragraphs", "drop", f"{shard:05d}-{partition:03d}.rec")

    def shard_tokens(self, shard: int, ext: str) -> Path:
        return self.path("emit", "tokens", f"{shard:05d}.{ext}")

    @property
    def doc_dedup_on(self) -> bool:
        d = self.cfg.dedup
        return d.exact or d.by_url or d.minhash

    @property
    def dedup_on(self) -> bool:
        d = self.cfg.dedup
        return d.exact or d.by_url or d.minhash or d.paragraph
