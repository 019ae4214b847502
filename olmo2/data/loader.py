"""Fixed-length training instances from token files: shuffle, data-parallel split, resume.

The rules (the OLMo convention; docs/architecture.md, "Token files") — `olmo2.train.data`
and `olmo2 data provenance` follow the same ones, so a batch can be traced back to documents:

- `paths` entries are token files, directories (their sorted `*.npy` files, label masks
  `*.mask.npy` excluded) or globs (sorted matches), expanded in the order given. A path may
  appear several times (upsampling, see `olmo2.data.mixture`).
- Each file is cut into `seq_len`-token instances, its tail dropped (`packing: concat`), or
  its whole documents are packed into padded `seq_len` instances by best-fit decreasing
  (`packing: bfd`, `olmo2.data.packing`); the instances of all files are numbered
  consecutively in path order (global instance index).
  `path_instances[k]`, when given, keeps only that many instances of path k, evenly spaced
  over the file (a deterministic downsample).
- Epoch e's order is `numpy.random.Generator(PCG64(seed + e)).permutation(n_instances)`;
  global batch b of the epoch is rows `[b·B, (b+1)·B)` (B = `global_batch_size`; the last
  incomplete batch of an epoch is dropped), and rank r of world W takes `rows[r::W]`.
  Global batch g (counting over epochs) is batch `g % batches_per_epoch` of epoch
  `g // batches_per_epoch`; trainer step s (1-based, as in metrics.jsonl) used batch s − 1.
- Each batch is a dict of tensors: `input_ids` [B/W, T] int64; `labels` = input shifted left,
  last position −100, and −100 wherever the label-mask file is False at the target token;
  `index` [B/W] global instance indices; with `doc_masking`, `doc_ids` [B/W, T] numbering the
  documents inside each row (an EOS belongs to the document it ends; the token after it
  starts the next; with `bfd` each packed segment is one document and padding is one more,
  never trained on).
- Resume: `state_dict()` holds `tokens_seen` and a dataset fingerprint (SHA-256 of dtype,
  EOS id, seq_len and each file's name and size); `load_state_dict` refuses another
  fingerprint and continues at global batch `tokens_seen // (B · seq_len)`, on any world size.

Config field names (`DataConfig`, also the `data:` section of a run's `config.yaml`):
`paths`, `seq_len`, `global_batch_size`, `seed`, `label_mask_paths`, `doc_masking`
(alias `document_boundaries`), `eos_token_id`, `dtype`, `path_instances`, `packing`.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import logging
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from olmo2.data import packing as packing_

log = logging.getLogger(__name__)

DTYPES = {"uint16": np.uint16, "uint32": np.uint32, "uint64": np.uint64}


@dataclass
class DataConfig:
    paths: list[str]
    seq_len: int = 4096
    global_batch_size: int = 512
    """Instances per optimizer step over all ranks."""
    seed: int = 0
    label_mask_paths: list[str] | None = None
    """Parallel bool files (one per token file after expansion); False = not trained on."""
    doc_masking: bool = False
    """Emit `doc_ids` for intra-document attention masking."""
    eos_token_id: int = 100257
    dtype: str = "uint32"
    path_instances: list[int | None] | None = None
    """Per `paths` entry: how many instances to keep (None = all)."""
    packing: str = "concat"
    """concat (consecutive windows) | bfd (whole documents, best-fit decreasing, padded)."""

    @classmethod
    def from_dict(cls, d: dict) -> DataConfig:
        """Build from a run's `data:` section; unknown keys (micro_batch_size, ...) are ignored."""
        d = dict(d)
        if "document_boundaries" in d:
            d.setdefault("doc_masking", d.pop("document_boundaries"))
        names = {f.name for f in dataclasses.fields(cls)}
        if "paths" not in d or not d["paths"]:
            raise ValueError("data.paths: expected a list of token files or directories")
        return cls(**{k: v for k, v in d.items() if k in names and v is not None})


def expand_paths(paths: list[str], what: str = "data.paths") -> list[list[Path]]:
    """Each entry → its files (a file, a directory's sorted *.npy, or a glob's sorted matches)."""
    out = []
    for entry in paths:
        p = Path(entry)
        if p.is_dir():
            files = sorted(f for f in p.glob("*.npy") if not f.name.endswith(".mask.npy"))
        elif p.is_file():
            files = [p]
        elif glob.has_magic(str(entry)):
            files = sorted(Path(f) for f in glob.glob(str(entry)) if Path(f).is_file())
        else:
            raise FileNotFoundError(f"{what}: {entry} does not exist")
        if not files:
            raise ValueError(f"{what}: {entry} matches no .npy token files")
        out.append(files)
    if not out:
        raise ValueError(f"{what} is empty: give token files, directories or globs")
    return out


def _memmap(path: Path, dtype) -> np.ndarray:
    size, item = path.stat().st_size, np.dtype(dtype).itemsize
    if size % item:
        raise ValueError(
            f"{path}: {size} bytes is not a multiple of {item} (flat {np.dtype(dtype)})"
        )
    return np.memmap(path, dtype=dtype, mode="r") if size else np.zeros(0, dtype)


class InstanceLoader:
    """Rank-local batches of a global shuffled instance order; iterate it for batches."""

    def __init__(self, cfg: DataConfig, rank: int = 0, world_size: int = 1, prefetch: int = 2):
        if cfg.dtype not in DTYPES:
            raise ValueError(f"data.dtype={cfg.dtype!r}: expected one of {sorted(DTYPES)}")
        if cfg.seq_len < 2 or cfg.global_batch_size < 1:
            raise ValueError("data.seq_len must be >= 2 and data.global_batch_size >= 1")
        if cfg.packing not in ("concat", "bfd"):
            raise ValueError(f"data.packing={cfg.packing!r}: expected concat or bfd")
        if cfg.global_batch_size % world_size:
            raise ValueError(
                f"data.global_batch_size={cfg.global_batch_size} is not divisible by the "
                f"world size {world_size}"
            )
        self.cfg, self.rank, self.world, self.prefetch = cfg, rank, world_size, prefetch
        groups = expand_paths(cfg.paths)
        self.files = [f for g in groups for f in g]
        self.tokens = [_memmap(f, DTYPES[cfg.dtype]) for f in self.files]
        self.masks = self._load_masks()
        self.packed = (
            [packing_.pack(t, cfg.seq_len, cfg.eos_token_id) for t in self.tokens]
            if cfg.packing == "bfd"
            else None
        )
        if self.packed is not None:
            used = sum(int(inst[:, 1].sum()) for file in self.packed for inst in file)
            n = sum(len(file) for file in self.packed)
            log.info(
                "packed %s tokens into %s instances of %d (%.1f%% padding)",
                f"{used:,}", f"{n:,}", cfg.seq_len, 100 * (1 - used / max(n * cfg.seq_len, 1)),
            )  # fmt: skip
        self._select = self._selections(groups)
        counts = np.array([len(s) for s in self._select], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(counts)])
        self.n_instances = int(self.offsets[-1])
        self.batches_per_epoch = self.n_instances // cfg.global_batch_size
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"data.paths hold {self.n_instances} instances of {cfg.seq_len} tokens, fewer "
                f"than one global batch ({cfg.global_batch_size})"
            )
        self.batch_tokens = cfg.global_batch_size * cfg.seq_len
        self.next_batch = 0
        """Global batch index (over epochs) that iteration yields next."""
        self._perm_cache: tuple[int, np.ndarray] = (-1, np.zeros(0, np.int64))

    def _load_masks(self) -> list[np.ndarray] | None:
        if not self.cfg.label_mask_paths:
            return None
        files = [
            f for g in expand_paths(self.cfg.label_mask_paths, "data.label_mask_paths") for f in g
        ]
        if len(files) != len(self.files):
            raise ValueError(
                f"data.label_mask_paths expand to {len(files)} files, data.paths to "
                f"{len(self.files)}; give one mask file per token file"
            )
        masks = [_memmap(f, np.bool_) for f in files]
        for f, t, m in zip(files, self.tokens, masks):
            if len(m) != len(t):
                raise ValueError(f"{f}: label mask has {len(m)} entries, its token file {len(t)}")
        return masks

    def _selections(self, groups: list[list[Path]]) -> list[np.ndarray]:
        """Instance numbers kept in each file (all, or an evenly spaced subset per entry)."""
        limits = self.cfg.path_instances or [None] * len(groups)
        if len(limits) != len(groups):
            raise ValueError(
                f"data.path_instances has {len(limits)} entries, data.paths {len(groups)}"
            )
        out, i = [], 0
        for group, limit in zip(groups, limits):
            counts = [self._file_instances(i + j) for j in range(len(group))]
            total = sum(counts)
            keep = (
                np.arange(total)
                if limit is None or limit >= total
                else (np.arange(limit) * total // max(limit, 1))
            )
            starts = np.concatenate([[0], np.cumsum(counts)])
            for j in range(len(group)):
                sel = keep[(keep >= starts[j]) & (keep < starts[j + 1])] - starts[j]
                out.append(sel.astype(np.int64))
            i += len(group)
        return out

    def _file_instances(self, f: int) -> int:
        if self.packed is not None:
            return len(self.packed[f])
        return len(self.tokens[f]) // self.cfg.seq_len

    # ---- identity and positions -----------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        c = self.cfg
        key = f"{c.dtype}|{c.eos_token_id}|{c.seq_len}" + ("|bfd" if c.packing == "bfd" else "")
        h = hashlib.sha256(key.encode())
        for f, sel in zip(self.files, self._select):
            h.update(f"|{f.name}:{f.stat().st_size}:{len(sel)}".encode())
        return h.hexdigest()

    def segments(self, i: int) -> tuple[int, np.ndarray]:
        """Global instance index → (file number, its `[k, 2]` (start, length) token segments
        in that file: one `seq_len` window with `concat`)."""
        if not 0 <= i < self.n_instances:
            raise IndexError(f"instance {i} is outside [0, {self.n_instances})")
        f = int(np.searchsorted(self.offsets, i, side="right") - 1)
        k = int(self._select[f][i - int(self.offsets[f])])
        if self.packed is not None:
            return f, self.packed[f][k]
        return f, np.array([[k * self.cfg.seq_len, self.cfg.seq_len]], dtype=np.int64)

    def order(self, epoch: int) -> np.ndarray:
        cached_epoch, perm = self._perm_cache  # one attribute: safe with the prefetch thread
        if cached_epoch != epoch:
            rng = np.random.Generator(np.random.PCG64(self.cfg.seed + epoch))
            perm = rng.permutation(self.n_instances)
            self._perm_cache = (epoch, perm)
        return perm

    def batch_rows(self, g: int, rank: int | None = None) -> np.ndarray:
        """Global instance indices of global batch `g` on `rank` (None = all ranks' rows)."""
        epoch, b = divmod(g, self.batches_per_epoch)
        B = self.cfg.global_batch_size
        rows = self.order(epoch)[b * B : (b + 1) * B]
        return rows if rank is None else rows[rank :: self.world]

    # ---- batches -------------------------------------------------------------------------

    def get_batch(self, g: int) -> dict[str, torch.Tensor]:
        rows = self.batch_rows(g, self.rank)
        T, eos = self.cfg.seq_len, self.cfg.eos_token_id
        ids = np.full((len(rows), T), max(eos, 0), dtype=np.int64)  # padding: EOS, untrained
        train = np.zeros((len(rows), T), dtype=bool)
        seg = np.zeros((len(rows), T), dtype=np.int64)
        for k, i in enumerate(rows):
            f, spans = self.segments(int(i))
            at = 0
            for n, (start, length) in enumerate(spans.tolist()):
                ids[k, at : at + length] = self.tokens[f][start : start + length]
                keep = True if self.masks is None else self.masks[f][start : start + length]
                train[k, at : at + length] = keep
                seg[k, at : at + length] = n
                at += length
            seg[k, at:] = len(spans)
        input_ids = torch.from_numpy(ids)
        labels = torch.full_like(input_ids, -100)
        labels[:, :-1] = input_ids[:, 1:]
        labels[:, :-1][~torch.from_numpy(train[:, 1:])] = -100
        out = {
            "input_ids": input_ids,
            "labels": labels,
            "index": torch.from_numpy(rows.astype(np.int64)),
        }
        if self.cfg.doc_masking:
            if self.packed is not None:
                out["doc_ids"] = torch.from_numpy(seg)
            else:
                is_eos = (input_ids == eos).long()
                out["doc_ids"] = is_eos.cumsum(1) - is_eos
        return out

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        """Batches from `next_batch` on, forever (epochs roll over); a thread prefetches."""
        if self.prefetch <= 0:
            while True:
                batch = self.get_batch(self.next_batch)
                self.next_batch += 1
                yield batch
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        first = self.next_batch

        def put(item) -> None:
            while not stop.is_set():  # never block forever once the consumer has gone
                try:
                    q.put(item, timeout=0.1)
                    return
                except queue.Full:
                    continue

        def work():
            g = first
            try:
                while not stop.is_set():
                    put((g, self.get_batch(g)))
                    g += 1
            except BaseException as e:  # surface errors in the consumer
                put((None, e))

        thread = threading.Thread(target=work, name="olmo2-data-prefetch", daemon=True)
        thread.start()
        try:
            while True:
                g, batch = q.get()
                if g is None:
                    raise batch
                assert g == self.next_batch, (g, self.next_batch)
                self.next_batch += 1
                yield batch
        finally:
            stop.set()
            thread.join(timeout=5)

    @property
    def epoch(self) -> int:
        return self.next_batch // self.batches_per_epoch

    # ---- resume --------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {
            "tokens_seen": self.next_batch * self.batch_tokens,
            "epoch": self.epoch,
            "fingerprint": self.fingerprint,
            "seed": self.cfg.seed,
        }

    def load_state_dict(self, sd: dict) -> None:
        if sd.get("fingerprint") != self.fingerprint:
            raise ValueError(
                f"the dataset changed since this state was saved (fingerprint "
                f"{str(sd.get('fingerprint'))[:16]} != {self.fingerprint[:16]}: files, sizes, "
                "dtype, EOS or seq_len differ); refusing to resume on other data"
            )
        if sd.get("seed", self.cfg.seed) != self.cfg.seed:
            raise ValueError(f"data.seed is {self.cfg.seed}, the saved state used {sd['seed']}")
        self.next_batch = int(sd["tokens_seen"]) // self.batch_tokens
