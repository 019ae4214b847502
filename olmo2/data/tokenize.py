"""Documents → token files (the OLMo/dolma convention; docs/architecture.md, "Token files").

Output directory layout::

    part-00000.npy      flat headerless token ids (dtype from the manifest, uint32 default);
                        every document is followed by EOS (`<|endoftext|>`)
    part-00000.csv.gz   one row per document, no header: start,end,id,source — token offsets
                        inside that part, `end` exclusive and *including* the EOS, so the
                        spans of a part tile it exactly
    manifest.json       tokenizer path + SHA-256, vocab size, dtype, EOS id, per-part and
                        total document/token counts, per-part SHA-256, plus `manifest_extra`
    .tokenize-state.json  written first; pins tokenizer hash, dtype and part size so a
                        resume with other settings is refused

A part is closed before a document would push it past `max_part_tokens` (a single document
longer than the cap gets a part of its own). The document stream is deterministic, so part k
always holds the same documents: a re-run skips every part whose `.npy` and `.csv.gz` both
exist (the index is written after the tokens, each via `atomic_path`), by skipping as many
documents as its index lists, and rewrites the rest byte-for-byte identically (the gzip
header carries no timestamp).

Parallelism: a process pool, each worker holding its own encoder (`encoder.py`: tiktoken
built from the same tokenizer.json where it provably gives the same ids, else `tokenizers`
with Rust threading off), encodes chunks of documents; results come back in order
(`pool.ordered_map`), so output does not depend on the worker count. `olmo2 prepare` writes
its parts through `write_part` / `write_manifest` from its own `parts` stage.

Note: like `tokenizers`' own `encode`, special-token strings that occur literally in a
document's text (e.g. "<|endoftext|>") are matched as those special tokens.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import itertools
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from olmo2.data import fs
from olmo2.data.encoder import choose_backend, encoder
from olmo2.data.fs import Location
from olmo2.data.pool import chunks_by_size, ordered_map
from olmo2.utils import atomic_path, sha256_file

log = logging.getLogger(__name__)

EOS_TOKEN = "<|endoftext|>"
STATE_FILE = ".tokenize-state.json"
MANIFEST = "manifest.json"
DTYPES = {"uint16": np.uint16, "uint32": np.uint32, "uint64": np.uint64}
CHUNK_CHARS = 1 << 20
"""Characters of text per work item sent to a worker (big enough to amortise pickling)."""


def part_name(k: int) -> str:
    return f"part-{k:05d}"


@dataclass
class _Part:
    """The part being filled: token arrays and index rows (start, end, id, source)."""

    index: int
    arrays: list
    rows: list
    tokens: int = 0


# ---- workers -------------------------------------------------------------------------------

_WORKER_ENC = None
_WORKER_EOS = 0


def _init_worker(tokenizer_path: str, backend: str) -> None:
    global _WORKER_ENC, _WORKER_EOS
    _WORKER_ENC = encoder(tokenizer_path, backend)
    _WORKER_EOS = _WORKER_ENC.hf.token_to_id(EOS_TOKEN)


def _encode_chunk(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of `texts`, each followed by EOS, concatenated; plus per-document lengths."""
    encs = _WORKER_ENC.encode(texts)
    lens = np.fromiter((len(e) + 1 for e in encs), dtype=np.int64, count=len(encs))
    flat = np.fromiter(
        itertools.chain.from_iterable(itertools.chain(e, (_WORKER_EOS,)) for e in encs),
        dtype=np.int64,
        count=int(lens.sum()),
    )
    return flat, lens


def _encoded(docs: Iterator, tokenizer_path: str, num_workers: int) -> Iterator[tuple]:
    """Yield (document, token array incl. EOS) in input order (`pool.ordered_map`)."""
    backend, _ = choose_backend(tokenizer_path)
    chunks = chunks_by_size(docs, CHUNK_CHARS, lambda d: len(d.text))
    yield from _split(
        ordered_map(
            _encode_chunk,
            chunks,
            num_workers,
            send=lambda chunk: [d.text for d in chunk],
            initializer=_init_worker,
            initargs=(tokenizer_path, backend),
        )
    )


def _split(results: Iterator[tuple]) -> Iterator[tuple]:
    for chunk, (flat, lens) in results:
        ends = np.cumsum(lens)
        for doc, e, n in zip(chunk, ends, lens):
            yield doc, flat[e - n : e]


# ---- state, resume -------------------------------------------------------------------------


def check_state(out: Location, state: dict) -> None:
    """Refuse to mix settings with what is already in `out` (a finished or partial run)."""
    for name in (STATE_FILE, MANIFEST):
        f = fs.join(out, name)
        if not fs.is_file(f):
            continue
        old = json.loads(fs.read_text(f))
        for key in ("tokenizer_sha256", "dtype", "max_part_tokens"):
            if key in old and old[key] != state[key]:
                raise ValueError(
                    f"{f}: existing output was made with {key}={old[key]!r}, this run has "
                    f"{state[key]!r}; use another --output directory or delete this one"
                )


def _read_index(path: Path) -> list[tuple[int, int, str, str]]:
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        return [(int(r[0]), int(r[1]), r[2], r[3]) for r in csv.reader(f)]


def _completed_parts(out: Path, itemsize: int) -> list[dict]:
    """Leading parts whose tokens and index both exist and agree in size."""
    done = []
    for k in itertools.count():
        npy, idx = out / f"{part_name(k)}.npy", out / f"{part_name(k)}.csv.gz"
        if not (npy.is_file() and idx.is_file()):
            break
        rows = _read_index(idx)
        tokens = rows[-1][1] if rows else 0
        if npy.stat().st_size != tokens * itemsize:
            break
        done.append({"documents": len(rows), "tokens": tokens, "ids": [r[2] for r in rows]})
    return done


def _skip_done(docs: Iterator, parts: list[dict], out: Path) -> int:
    """Advance the stream past the documents of complete parts, checking their ids."""
    skip = 0
    for k, part in enumerate(parts):
        for want in part.pop("ids"):
            doc = next(docs, None)
            if doc is None or doc.id != want:
                raise ValueError(
                    f"{out / part_name(k)}.csv.gz lists document {want!r} at position {skip}, "
                    f"but the input now has {doc.id if doc else 'no document'!r} there: the "
                    "input changed since the partial run; use a fresh output directory"
                )
            skip += 1
    if parts:
        log.info("resuming: %d complete parts (%d documents) kept", len(parts), skip)
    return skip


def _write_part(out: Path, part: _Part, dtype) -> dict:
    tokens = np.concatenate(part.arrays).astype(dtype) if part.arrays else np.zeros(0, dtype)
    return write_part(out, part.index, tokens, part.rows)


def publish(out: Location, name: str, write, staging: Path | None = None) -> None:
    """Create file `name` in `out` atomically: `write(tmp_path)` fills a temp file, renamed into
    place locally, or uploaded whole to a URL (from `staging`, a local directory)."""
    if isinstance(out, Path):
        with atomic_path(out / name) as tmp:
            write(tmp)
        return
    if staging is None:
        raise ValueError(f"{out}: writing to a URL needs a local staging directory")
    staging.mkdir(parents=True, exist_ok=True)
    tmp = staging / f".{name}.tmp-{os.getpid()}"
    write(tmp)
    fs.put(tmp, fs.join(out, name))


def write_part(
    out: Location, k: int, tokens: np.ndarray, rows: list, staging: Path | None = None
) -> dict:
    """Write part `k` (tokens, then its index, each atomically); return its counts + SHA-256."""
    name = part_name(k)
    publish(out, f"{name}.npy", tokens.tofile, staging)
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)

    def index(tmp: Path) -> None:
        with (
            open(tmp, "wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
        ):
            gz.write(buf.getvalue().encode("utf-8"))

    publish(out, f"{name}.csv.gz", index, staging)
    sha = hashlib.sha256(tokens.tobytes()).hexdigest()
    return {"documents": len(rows), "tokens": int(len(tokens)), "sha256": sha}


# ---- main entry ----------------------------------------------------------------------------


def tokenize_documents(
    documents: Iterable,
    tokenizer_path: str,
    output_dir: str,
    *,
    max_part_tokens: int = 2**28,
    num_workers: int | None = None,
    manifest_extra: dict | None = None,
    dtype: str = "uint32",
) -> dict:
    """Tokenize `documents` (objects with `.id`, `.text`, `.source`) into `output_dir`.

    Returns the manifest (also written to `output_dir/manifest.json`). Resumable: see the
    module docstring. Raises ValueError for a vocabulary that does not fit `dtype`, a
    tokenizer without `<|endoftext|>`, or an output directory made with other settings.
    """
    state = tokenizer_state(tokenizer_path, dtype, max_part_tokens)
    tok_path, np_dtype = Path(state["tokenizer"]), DTYPES[dtype]
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    check_state(out, state)
    with atomic_path(out / STATE_FILE) as tmp:
        tmp.write_text(json.dumps(state, indent=2))

    remove_leftovers(out)
    parts = _completed_parts(out, np.dtype(np_dtype).itemsize)
    docs = iter(documents)
    skip = _skip_done(docs, parts, out)
    workers = num_workers if num_workers is not None else (os.cpu_count() or 1)
    part = _Part(len(parts), [], [])
    bar = tqdm(desc="tokenize", unit=" docs", initial=skip, mininterval=1.0)
    for doc, ids in _encoded(docs, str(tok_path), workers):
        if part.tokens and part.tokens + len(ids) > max_part_tokens:
            parts.append(_write_part(out, part, np_dtype))
            part = _Part(part.index + 1, [], [])
        part.arrays.append(ids)
        part.rows.append((part.tokens, part.tokens + len(ids), doc.id, doc.source))
        part.tokens += len(ids)
        bar.update(1)
    bar.close()
    if part.rows or not parts:
        parts.append(_write_part(out, part, np_dtype))
    return write_manifest(out, state, parts, manifest_extra)


def tokenizer_file(tokenizer_path: str | os.PathLike) -> Path:
    tok_path = Path(tokenizer_path)
    if tok_path.is_dir():
        tok_path = tok_path / "tokenizer.json"
    if not tok_path.is_file():
        raise FileNotFoundError(f"{tok_path}: tokenizer file not found")
    return tok_path


def tokenizer_state(tokenizer_path: str | os.PathLike, dtype: str, max_part_tokens: int) -> dict:
    """The settings pinned in the output (tokenizer path + SHA-256, vocabulary, EOS, dtype, part
    size), after checking that they can work."""
    from tokenizers import Tokenizer

    tok_path = tokenizer_file(tokenizer_path)
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}: expected one of {sorted(DTYPES)}")
    if max_part_tokens < 1:
        raise ValueError(f"max_part_tokens={max_part_tokens}: expected a positive number")
    np_dtype = DTYPES[dtype]
    tok = Tokenizer.from_file(str(tok_path))
    vocab, eos = tok.get_vocab_size(with_added_tokens=True), tok.token_to_id(EOS_TOKEN)
    if eos is None:
        raise ValueError(f"{tok_path}: the tokenizer has no {EOS_TOKEN} token to end documents")
    if vocab - 1 > np.iinfo(np_dtype).max:
        raise ValueError(
            f"{tok_path}: vocabulary of {vocab} ids does not fit dtype {dtype} "
            f"(max id {np.iinfo(np_dtype).max}); use a wider dtype such as uint32"
        )
    return {
        "tokenizer": str(tok_path),
        "tokenizer_sha256": sha256_file(tok_path),
        "vocab_size": vocab,
        "eos_token_id": eos,
        "dtype": dtype,
        "max_part_tokens": max_part_tokens,
    }


def remove_leftovers(out: Path) -> None:
    """Temp files of a killed run (`atomic_path` names)."""
    for leftover in out.glob(".*.tmp-*"):
        if leftover.is_file():
            leftover.unlink()


def write_manifest(
    out: Location, state: dict, parts: list[dict], extra: dict | None, staging: Path | None = None
) -> dict:
    """Describe every part (counts, SHA-256) and the totals; remove stale later parts."""
    for k in itertools.count(len(parts)):  # leftovers of an earlier, longer run
        stale = [fs.join(out, f"{part_name(k)}{s}") for s in (".npy", ".csv.gz")]
        if not any(fs.exists(p) for p in stale):
            break
        for p in stale:
            fs.remove(p)
    entries = []
    for k, p in enumerate(parts):
        name = part_name(k)
        entries.append(
            {
                "path": f"{name}.npy",
                "index": f"{name}.csv.gz",
                "documents": p["documents"],
                "tokens": p["tokens"],
                "sha256": p.get("sha256") or fs.sha256(fs.join(out, f"{name}.npy")),
            }
        )
    manifest = {
        **state,
        "parts": entries,
        "documents": sum(p["documents"] for p in parts),
        "tokens": sum(p["tokens"] for p in parts),
        **(extra or {}),
    }
    text = json.dumps(manifest, indent=2) + "\n"
    publish(out, MANIFEST, lambda tmp: tmp.write_text(text), staging)
    log.info(
        "tokenized %d documents into %d tokens in %d parts under %s",
        manifest["documents"],
        manifest["tokens"],
        len(entries),
        out,
    )
    return manifest


def read_index(path: str | os.PathLike) -> list[tuple[int, int, str, str]]:
    """Rows (start, end, id, source) of a part's `.csv.gz` index (or of `part.npy`'s sibling)."""
    p = Path(path)
    if p.name.endswith(".npy"):
        p = p.with_name(p.name[: -len(".npy")] + ".csv.gz")
    if not p.is_file():
        raise FileNotFoundError(f"{p}: token-file index not found")
    return _read_index(p)
