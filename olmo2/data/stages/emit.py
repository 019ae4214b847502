"""Stage `emit` (one task per shard): the filter pass, and tokenization of what is kept.

The task re-reads its shard and drops the documents that analyze filtered or found
contaminated (drop mode) and those in the shard's removal list (datatrove's
`MinhashDedupFilter`, stage 4), cuts duplicate paragraphs, and encodes the rest (each followed
by EOS; `encoder.py`: tiktoken where exact, checked on the shard's first ~16k characters) into the
shard's token file, with one (id, source) row and one length per document for the `parts`
stage. With `--attributes-dir` it writes, per shard, one JSON row per input document saying why
it was dropped (in the spirit of dolma's attribute files).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from olmo2.data import records as R
from olmo2.data.dedup import remove_paragraphs
from olmo2.data.encoder import encoder
from olmo2.data.shards import Shard, read_shard
from olmo2.data.stages.cluster import removals
from olmo2.data.stages.job import Job
from olmo2.data.stages.paragraphs import DROP
from olmo2.utils import atomic_path

CHUNK_CHARS = 1 << 20
"""Characters of text encoded per call."""


def _paragraph_drops(job: Job, shard: int) -> dict[int, list[int]]:
    if not job.cfg.dedup.paragraph:
        return {}
    out: dict[int, list[int]] = {}
    for p in range(job.partitions):
        for pos, para in R.read_records(job.paragraph_drops(shard, p), DROP).tolist():
            out.setdefault(pos, []).append(para)
    return {pos: sorted(v) for pos, v in out.items()}


class _Tokens:
    """The shard's token stream, encoded a chunk of documents at a time."""

    def __init__(self, job: Job, dtype):
        self.enc = encoder(job.tokenizer, job.backend)
        self.eos, self.dtype = self.enc.hf.token_to_id("<|endoftext|>"), dtype
        self.use_tiktoken: bool | None = None  # decided on the first chunk
        self.texts: list[str] = []
        self.arrays: list[np.ndarray] = []
        self.lens: list[int] = []
        self.chars = 0

    def add(self, text: str) -> None:
        self.texts.append(text)
        self.chars += len(text)
        if self.chars >= CHUNK_CHARS:
            self.flush()

    def flush(self) -> None:
        if not self.texts:
            return
        if self.use_tiktoken is None:
            self.use_tiktoken = self.enc.verified(self.texts)
        for ids in self.enc.encode(self.texts, self.use_tiktoken):
            ids.append(self.eos)
            self.arrays.append(np.asarray(ids, dtype=self.dtype))
            self.lens.append(len(ids))
        self.texts, self.chars = [], 0


def emit_shard(job: Job, shard: Shard) -> dict:
    cfg, s = job.cfg, shard.index
    verdicts = json.loads(job.verdicts(s).read_text())
    filtered, contaminated = verdicts["filtered"], verdicts["contaminated"]
    removed = {int(p): R.KINDS[k] for p, k in removals(job, s).tolist()}
    para = _paragraph_drops(job, s)
    tokens = _Tokens(job, np.dtype(job.extra["dtype"]))
    fallback_before = tokens.enc.fallback_docs  # (the encoder is shared by a process's tasks)
    rows, attrs = [], []
    bytes_out = cut = 0
    docs = read_shard(
        shard, text_field=cfg.text_field, separator=cfg.separator, skip_bad_lines=cfg.skip_bad_lines
    )
    for pos, doc in enumerate(docs):
        key = str(pos)
        drop = filtered.get(key)
        if drop is None and key in contaminated and cfg.decontam.mode == "drop":
            drop = "contaminated"
        if drop is None and pos in removed:
            drop = f"duplicate:{removed[pos]}"
        paras = para.get(pos, []) if drop is None else []
        if cfg.attributes_dir is not None:
            row = (filtered.get(key), contaminated.get(key, []), removed.get(pos))
            attrs.append(_attribute_row(doc, drop, *row, paras))
        if drop is not None:
            continue
        text = remove_paragraphs(doc.text, paras)
        cut += len(paras)
        bytes_out += len(text.encode("utf-8", errors="surrogatepass"))
        tokens.add(text)
        rows.append([doc.id, doc.source])
    tokens.flush()
    _write_tokens(job, s, tokens, rows)
    if cfg.attributes_dir is not None:
        _write_attributes(Path(cfg.attributes_dir) / f"{shard.name}.attributes.jsonl", attrs)
    return {
        "documents_out": len(rows),
        "tokens": int(sum(tokens.lens)),
        "bytes_out": bytes_out,
        "paragraphs_cut": cut,
        "tiktoken_shard": bool(tokens.use_tiktoken),
        "fallback_docs": tokens.enc.fallback_docs - fallback_before,
    }


def _attribute_row(doc, drop, reason, tasks, duplicate, paras) -> dict:
    return {
        "id": doc.id,
        "source": doc.source,
        "attributes": {
            "olmo2_drop": drop,
            "olmo2_filter": reason,
            "olmo2_contaminated": tasks,
            "olmo2_duplicate": duplicate,
            "olmo2_dup_paragraphs": paras,
        },
    }


def _write_tokens(job: Job, s: int, tokens: _Tokens, rows: list) -> None:
    flat = np.concatenate(tokens.arrays) if tokens.arrays else np.zeros(0, tokens.dtype)
    with atomic_path(job.shard_tokens(s, "tok")) as tmp:
        flat.tofile(tmp)
    with atomic_path(job.shard_tokens(s, "rows.jsonl")) as tmp:
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    with atomic_path(job.shard_tokens(s, "lens")) as tmp:
        np.asarray(tokens.lens, dtype=np.int64).tofile(tmp)


def _write_attributes(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
