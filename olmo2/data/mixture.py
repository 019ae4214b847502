"""Data mixtures: sources with target ratios or repeat counts → the loader's path list.

A mixture YAML::

    seq_len: 4096
    total_tokens: 50_000_000_000   # the budget; needed when a source gives `ratio`
    sources:
      - name: dclm
        paths: [tokens/dclm/*.npy]   # token files, directories or globs
        ratio: 0.8                   # share of total_tokens
      - name: math
        paths: [tokens/math]
        repeat: 2.5                  # epochs over this source (instead of a ratio)

Each source's target is `ratio · total_tokens` or `repeat · available tokens` (available =
whole `seq_len` instances, each file's tail dropped). As in OLMo's configs, upsampling
repeats the source's files in the path list (`floor(target / available)` full copies); the
fractional remainder — and any downsampling — keeps a deterministic, evenly spaced subset of
the source's instances (`path_instances` in `olmo2.data.loader.DataConfig`). Without
`total_tokens`, the budget is the sum of the targets (then every source needs `repeat`).

`olmo2 data mixture MIX.yaml [--output data.yaml]` prints the achieved proportions and writes
the `data:` fields (`paths`, `path_instances`, `seq_len`) for a training recipe.
"""

from __future__ import annotations

import argparse
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from olmo2.data.loader import DTYPES, expand_paths
from olmo2.utils import write_text_atomic

log = logging.getLogger(__name__)


@dataclass
class Source:
    name: str
    paths: list[str]
    ratio: float | None = None
    repeat: float | None = None


@dataclass
class MixtureConfig:
    sources: list[Source]
    seq_len: int
    total_tokens: int | None = None
    dtype: str = "uint32"

    @classmethod
    def from_yaml(cls, path: str | Path) -> MixtureConfig:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: mixture file not found")
        raw = yaml.safe_load(path.read_text()) or {}
        if not isinstance(raw.get("sources"), list) or not raw["sources"]:
            raise ValueError(f"{path}: expected a non-empty `sources:` list")
        if not isinstance(raw.get("seq_len"), int):
            raise ValueError(f"{path}: expected an integer `seq_len:`")
        sources = []
        for k, s in enumerate(raw["sources"]):
            if not isinstance(s, dict) or not s.get("paths"):
                raise ValueError(f"{path}: sources[{k}] needs `paths:` (a list of files/globs)")
            paths = [s["paths"]] if isinstance(s["paths"], str) else list(s["paths"])
            sources.append(
                Source(str(s.get("name", f"source{k}")), paths, s.get("ratio"), s.get("repeat"))
            )
        return cls(sources, raw["seq_len"], raw.get("total_tokens"), raw.get("dtype", "uint32"))


@dataclass
class SourceResult:
    name: str
    available_tokens: int
    target_tokens: int
    tokens: int
    """Tokens the resolved path list actually gives (whole instances)."""


@dataclass
class Mixture:
    paths: list[str] = field(default_factory=list)
    path_instances: list[int | None] = field(default_factory=list)
    seq_len: int = 0
    sources: list[SourceResult] = field(default_factory=list)

    def data_fields(self) -> dict:
        return {"paths": self.paths, "path_instances": self.path_instances, "seq_len": self.seq_len}

    def summary(self) -> str:
        total = sum(s.tokens for s in self.sources) or 1
        lines = [
            f"{'source':<16}{'available':>14}{'target':>14}{'achieved':>14}{'share':>8}{'epochs':>8}"
        ]
        for s in self.sources:
            epochs = s.tokens / s.available_tokens if s.available_tokens else 0.0
            lines.append(
                f"{s.name:<16}{s.available_tokens:>14,}{s.target_tokens:>14,}{s.tokens:>14,}"
                f"{s.tokens / total:>8.1%}{epochs:>8.2f}"
            )
        lines.append(f"{'total':<16}{'':>14}{'':>14}{total:>14,}")
        return "\n".join(lines)


def _instances(files: list[Path], seq_len: int, itemsize: int) -> list[int]:
    return [f.stat().st_size // itemsize // seq_len for f in files]


def _targets(cfg: MixtureConfig, available: list[int]) -> list[int]:
    for s in cfg.sources:
        if (s.ratio is None) == (s.repeat is None):
            raise ValueError(f"mixture source {s.name!r}: give exactly one of `ratio` or `repeat`")
        if (s.ratio is not None and s.ratio < 0) or (s.repeat is not None and s.repeat < 0):
            raise ValueError(f"mixture source {s.name!r}: ratio/repeat must be >= 0")
    if any(s.ratio is not None for s in cfg.sources) and cfg.total_tokens is None:
        raise ValueError("mixture: sources with `ratio` need `total_tokens` (the token budget)")
    targets = [
        int(s.repeat * a) if s.repeat is not None else int(s.ratio * cfg.total_tokens)
        for s, a in zip(cfg.sources, available)
    ]
    if cfg.total_tokens is not None and sum(targets) > cfg.total_tokens * 1.001:
        log.warning(
            "mixture targets add up to %d tokens, above total_tokens %d",
            sum(targets),
            cfg.total_tokens,
        )
    return targets


def resolve(cfg: MixtureConfig) -> Mixture:
    """Turn a mixture into loader paths (+ per-path instance counts) and report what it gives."""
    if cfg.dtype not in DTYPES:
        raise ValueError(f"mixture dtype={cfg.dtype!r}: expected one of {sorted(DTYPES)}")
    itemsize = np.dtype(DTYPES[cfg.dtype]).itemsize
    files = [
        [f for g in expand_paths(s.paths, f"mixture source {s.name!r}") for f in g]
        for s in cfg.sources
    ]
    counts = [_instances(fs, cfg.seq_len, itemsize) for fs in files]
    available = [sum(c) * cfg.seq_len for c in counts]
    mix = Mixture(seq_len=cfg.seq_len)
    for s, fs, cs, avail, target in zip(
        cfg.sources, files, counts, available, _targets(cfg, available)
    ):
        n_avail = sum(cs)
        if n_avail == 0 and target > 0:
            raise ValueError(
                f"mixture source {s.name!r}: no whole {cfg.seq_len}-token instance in its files"
            )
        want = math.ceil(target / cfg.seq_len) if n_avail else 0
        full, rest = divmod(want, n_avail) if n_avail else (0, 0)
        for _ in range(full):
            mix.paths += [str(f) for f in fs]
            mix.path_instances += [None] * len(fs)
        if rest:
            # evenly spaced over the source's instances, then counted per file
            keep = np.arange(rest) * n_avail // rest
            bounds = np.concatenate([[0], np.cumsum(cs)])
            for f, lo, hi in zip(fs, bounds[:-1], bounds[1:]):
                k = int(((keep >= lo) & (keep < hi)).sum())
                if k:
                    mix.paths.append(str(f))
                    mix.path_instances.append(k)
        mix.sources.append(SourceResult(s.name, avail, target, want * cfg.seq_len))
    if not mix.paths:
        raise ValueError("mixture resolves to no data (all targets are 0)")
    return mix


# ---- CLI (`olmo2 data mixture`, registered by olmo2.data.provenance) -------------------------


def add_mixture_parser(sub) -> None:
    p = sub.add_parser(
        "mixture", help="Resolve a mixture YAML into loader paths; print proportions"
    )
    p.add_argument(
        "mixture", help="mixture YAML (sources with ratio or repeat, total_tokens, seq_len)"
    )
    p.add_argument("--output", help="write the resolved `data:` fields here (YAML)")


def run_mixture(args: argparse.Namespace) -> int:
    mix = resolve(MixtureConfig.from_yaml(args.mixture))
    print(mix.summary())
    if args.output:
        write_text_atomic(args.output, yaml.safe_dump({"data": mix.data_fields()}, sort_keys=False))
        print(f"wrote {len(mix.paths)} path entries to {args.output}")
    return 0
