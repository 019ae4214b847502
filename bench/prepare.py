"""Data-pipeline throughput: `olmo2 prepare` end to end, and MinHash numpy vs datasketch.

    .venv/bin/python bench/prepare.py [--data-dir DIR] [--docs 10000] [--workers N]
        [--minhash-only | --e2e-only]

* MinHash (CPU seconds of this process, `time.process_time`, because the shared machine's wall
  clock is noisy): `--docs` chunks (~2,000 characters, split at paragraphs) of the Gutenberg books;
  5-word shingles, 128 permutations. Times the vectorised numpy `MinHasher` (batched) against
  `datasketch.MinHash.update_batch` per document on the same shingles, checks both estimates
  against the exact Jaccard of near-duplicate pairs, and times the LSH band keys.
* End to end: `prepare` on `pretrain/gutenberg_en_train.jsonl.gz` (~92 MB) with the dolma2
  tokenizer, all filters, exact + MinHash dedup and decontamination against `eval/`; prints the
  funnel, MB/s and tokens/s.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from olmo2.data.corpus import chunk_text
from olmo2.data.decontam import DecontamConfig
from olmo2.data.dedup import (
    DedupConfig,
    MinHasher,
    band_keys,
    lsh_bands,
    normalized_words,
    shingle_hashes,
)
from olmo2.data.documents import iter_documents
from olmo2.data.filters import FilterConfig
from olmo2.data.prepare import PrepareConfig, prepare, summary
from olmo2.utils import data_dir


def _chunks(path: Path, n: int) -> list[str]:
    out: list[str] = []
    for doc in iter_documents([path]):
        out.extend(c for c in chunk_text(doc.text, 2000) if len(c) > 200)
        if len(out) >= n:
            break
    return out[:n]


def _perturb(text: str, rng: random.Random, k: int = 3) -> str:
    words = text.split(" ")
    for i in rng.sample(range(len(words)), min(k, len(words))):
        words[i] = "zzz"
    return " ".join(words)


def bench_minhash(books: Path, n_docs: int) -> None:
    from datasketch import MinHash

    texts = _chunks(books, n_docs)
    mb = sum(map(len, texts)) / 1e6
    print(f"## MinHash: {len(texts)} docs, {mb:.1f} MB, 5-word shingles, 128 permutations")
    t0 = time.process_time()
    words = [normalized_words(t) for t in texts]
    shingles = [shingle_hashes(w, 5) for w in words]
    t_shingle = time.process_time() - t0

    hasher = MinHasher(128)
    t0 = time.process_time()
    sigs = hasher.signatures(shingles)
    t_np = time.process_time() - t0

    # datasketch hashes byte strings itself (SHA-1 per shingle); give it the 5-gram strings.
    t0 = time.process_time()
    grams = [[b" ".join(w[i : i + 5]) for i in range(max(1, len(w) - 4))] for w in words]
    t_grams = time.process_time() - t0
    t0 = time.process_time()
    ds = []
    for g in grams:
        m = MinHash(num_perm=128)
        m.update_batch(g)
        ds.append(m)
    t_ds = time.process_time() - t0
    print(f"shingling (shared)           {t_shingle:6.2f} s  {len(texts) / t_shingle:8,.0f} docs/s")
    print(f"numpy MinHasher (batched)    {t_np:6.2f} s  {len(texts) / t_np:8,.0f} docs/s")
    print(
        f"datasketch update_batch      {t_ds:6.2f} s  {len(texts) / t_ds:8,.0f} docs/s"
        f"  (+{t_grams:.2f} s building n-gram strings)"
    )
    print(f"numpy / datasketch speed-up  {t_ds / t_np:6.1f}x (signatures only)")

    # Accuracy on near-duplicate pairs (3 words changed) against the exact Jaccard.
    rng = random.Random(0)
    err_np, err_ds = [], []
    for t in texts[:300]:
        u = _perturb(t, rng)
        a, b = shingle_hashes(normalized_words(t), 5), shingle_hashes(normalized_words(u), 5)
        exact = len(np.intersect1d(a, b)) / len(np.union1d(a, b))
        s = hasher.signatures([a, b])
        err_np.append(np.mean(s[0] == s[1]) - exact)
        wa, wb = normalized_words(t), normalized_words(u)
        ma, mb_ = MinHash(num_perm=128), MinHash(num_perm=128)
        ma.update_batch([b" ".join(wa[i : i + 5]) for i in range(max(1, len(wa) - 4))])
        mb_.update_batch([b" ".join(wb[i : i + 5]) for i in range(max(1, len(wb) - 4))])
        err_ds.append(ma.jaccard(mb_) - exact)
    for name, e in (("numpy", err_np), ("datasketch", err_ds)):
        e = np.array(e)
        print(f"{name:11s} Jaccard error: mean {e.mean():+.4f}, mean |err| {np.abs(e).mean():.4f}")

    bands, rows = lsh_bands(DedupConfig())
    t0 = time.process_time()
    keys = band_keys(sigs, bands, rows)
    t_lsh = time.process_time() - t0
    total = t_shingle + t_np + t_lsh
    print(
        f"LSH band keys ({bands}x{rows})        {t_lsh:6.2f} s  {len(texts) / t_lsh:8,.0f} docs/s, {keys.size:,} keys"
    )
    print(f"MinHash signatures end to end {total:6.2f} s  {len(texts) / total:8,.0f} docs/s")


def bench_e2e(root: Path, workers: int) -> None:
    books = root / "pretrain" / "gutenberg_en_train.jsonl.gz"
    tok = root / "tokenizers" / "allenai_dolma2.json"
    print(f"## prepare end to end: {books.name}, dolma2 tokenizer, {workers} workers")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = PrepareConfig(
            inputs=[str(books)],
            output=str(Path(tmp) / "out"),
            tokenizer=str(tok),
            filters=FilterConfig(),
            dedup=DedupConfig(),
            decontam=DecontamConfig(eval_dir=str(root / "eval")),
            workers=workers,
        )
        manifest = prepare(cfg)
    print(summary(manifest))
    wall = time.perf_counter() - t0
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    cpu = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
    mb = manifest["prepare"]["funnel"]["bytes_in"] / 1e6
    print(f"wall {wall:.1f} s including the eval index and tokenizer loading")
    print(
        f"CPU {cpu:.1f} s (this process + workers): {mb / cpu:.2f} MB per CPU-second, "
        f"{manifest['tokens'] / cpu:,.0f} tokens per CPU-second"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--docs", type=int, default=10_000)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--minhash-only", action="store_true")
    g.add_argument("--e2e-only", action="store_true")
    args = p.parse_args()
    root = data_dir(args.data_dir)
    print(f"# bench/prepare.py: {os.cpu_count()} CPUs")
    if not args.e2e_only:
        bench_minhash(root / "pretrain" / "gutenberg_en_train.jsonl.gz", args.docs)
    if not args.minhash_only:
        bench_e2e(root, args.workers)


if __name__ == "__main__":
    main()
