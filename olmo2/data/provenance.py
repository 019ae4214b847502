"""`olmo2 data provenance`: which documents a training batch was cut from.

    olmo2 data provenance RUN_DIR --step N [--rank R --world-size W]
    olmo2 data provenance TOKEN_DIR --batch B --seq-len T --global-batch-size B [--seed S]
    olmo2 data mixture MIX.yaml [--output data.yaml]     (see olmo2.data.mixture)

A run directory is recognised by its `config.yaml`; its `data:` section gives the loader
settings under the `olmo2.data.loader.DataConfig` names (`paths`, `seq_len`,
`global_batch_size`, `seed`, `label_mask_paths`, `doc_masking`, ...). Options given on the
command line override it. `--step N` is the trainer's 1-based step (metrics.jsonl), which
trained on global batch N − 1; `--batch` takes the 0-based global batch directly.

For every instance of the batch it prints the token file, the instance's token span in it and
each document overlapping that span (id, source, the document's span in the file and the part
of it inside the instance), using the `.csv.gz` index beside each token file
(`olmo2.data.tokenize`).
"""

from __future__ import annotations

import argparse
import bisect
import logging
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from olmo2.data.loader import DataConfig, InstanceLoader
from olmo2.data.tokenize import read_index

log = logging.getLogger(__name__)


@dataclass
class Piece:
    id: str
    source: str
    doc_start: int
    doc_end: int
    """The whole document's token span in its file (end exclusive, EOS included)."""
    start: int
    end: int
    """The part of the document inside the instance (file offsets)."""


@dataclass
class InstanceProvenance:
    index: int
    file: str
    start: int
    end: int
    documents: list[Piece] = field(default_factory=list)


class _Indexes:
    """Per-file index rows, loaded once; `overlapping` finds the documents in a token span."""

    def __init__(self):
        self._cache: dict[Path, tuple[list[int], list[tuple]]] = {}

    def rows(self, path: Path) -> tuple[list[int], list[tuple]]:
        if path not in self._cache:
            rows = read_index(path)
            self._cache[path] = ([r[1] for r in rows], rows)
        return self._cache[path]

    def overlapping(self, path: Path, start: int, end: int) -> list[Piece]:
        ends, rows = self.rows(path)
        out = []
        for k in range(bisect.bisect_right(ends, start), len(rows)):
            s, e, doc_id, source = rows[k]
            if s >= end:
                break
            out.append(Piece(doc_id, source, s, e, max(s, start), min(e, end)))
        return out


def batch_provenance(
    loader: InstanceLoader, g: int, rank: int | None = None
) -> list[InstanceProvenance]:
    """Provenance of every instance of global batch `g` (on `rank`, or all ranks' rows)."""
    idx = _Indexes()
    out = []
    for i in loader.batch_rows(g, rank).tolist():
        f, spans = loader.segments(int(i))
        path = loader.files[f]
        pieces = [p for s, n in spans.tolist() for p in idx.overlapping(path, s, s + n)]
        start, end = int(spans[:, 0].min()), int((spans[:, 0] + spans[:, 1]).max())
        out.append(InstanceProvenance(int(i), str(path), start, end, pieces))
    return out


# ---- CLI -----------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    p = sub.add_parser("provenance", help="Documents behind the instances of a training batch")
    p.add_argument(
        "target",
        metavar="RUN_OR_DATA_DIR",
        help="run directory (with config.yaml) or token files directory",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--step", type=int, help="trainer step (1-based, as logged); uses batch step-1"
    )
    which.add_argument("--batch", type=int, help="0-based global batch index")
    p.add_argument("--rank", type=int, default=None, help="only this data-parallel rank's rows")
    p.add_argument("--world-size", type=int, default=1, help="data-parallel world size of the run")
    p.add_argument("--seq-len", type=int, help="instance length (overrides the run config)")
    p.add_argument("--global-batch-size", type=int, help="instances per batch (overrides)")
    p.add_argument("--seed", type=int, help="shuffle seed (overrides)")
    p.add_argument("--max-docs", type=int, default=20, help="documents printed per instance")
    from olmo2.data.mixture import add_mixture_parser

    add_mixture_parser(sub)


def resolve_config(args: argparse.Namespace) -> DataConfig:
    target = Path(args.target)
    if not target.exists():
        raise FileNotFoundError(f"{target}: no such run or data directory")
    run_cfg = target / "config.yaml" if target.is_dir() else None
    if run_cfg is not None and run_cfg.is_file():
        data = (yaml.safe_load(run_cfg.read_text()) or {}).get("data")
        if not isinstance(data, dict):
            raise ValueError(f"{run_cfg}: no `data:` section with the loader settings")
    else:
        data = {"paths": [str(target)]}
        missing = [o for o in ("seq_len", "global_batch_size") if getattr(args, o) is None]
        if missing:
            raise ValueError(
                f"{target} is not a run directory (no config.yaml): give "
                + ", ".join("--" + m.replace("_", "-") for m in missing)
            )
    for key in ("seq_len", "global_batch_size", "seed"):
        if getattr(args, key) is not None:
            data[key] = getattr(args, key)
    return DataConfig.from_dict(data)


def run(args: argparse.Namespace) -> int:
    if args.data_command == "mixture":
        from olmo2.data.mixture import run_mixture

        return run_mixture(args)
    cfg = resolve_config(args)
    g = args.batch if args.batch is not None else args.step - 1
    if g < 0:
        raise ValueError(f"--step {args.step}: steps start at 1 (step N trained on batch N-1)")
    if args.rank is not None and not 0 <= args.rank < args.world_size:
        raise ValueError(f"--rank {args.rank} is outside the world size {args.world_size}")
    loader = InstanceLoader(cfg, rank=args.rank or 0, world_size=args.world_size, prefetch=0)
    epoch, b = divmod(g, loader.batches_per_epoch)
    rows = batch_provenance(loader, g, args.rank)
    print(
        f"global batch {g} (epoch {epoch}, batch {b} of {loader.batches_per_epoch}), seq_len {cfg.seq_len}"
    )
    n_docs = 0
    for inst in rows:
        print(f"instance {inst.index}: {inst.file} tokens [{inst.start}, {inst.end})")
        for p in inst.documents[: args.max_docs]:
            print(
                f"  {p.id!r} source={p.source!r} doc tokens [{p.doc_start}, {p.doc_end}) "
                f"used [{p.start}, {p.end})"
            )
        if len(inst.documents) > args.max_docs:
            print(f"  ... {len(inst.documents) - args.max_docs} more documents")
        n_docs += len(inst.documents)
    print(f"{len(rows)} instances from {n_docs} document pieces")
    return 0
