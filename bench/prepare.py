"""Data-pipeline throughput: `olmo2 prepare` end to end, against datatrove, per-task memory,
and MinHash numpy vs datasketch.

    .venv/bin/python bench/prepare.py [--data-dir DIR] [--docs 10000] [--workers N]
        [--minhash-only | --e2e-only | --compare [--mb 20] [--datatrove-python PY] | --memory]

* MinHash (CPU seconds of this process, `time.process_time`, because the shared machine's wall
  clock is noisy): `--docs` chunks (~2,000 characters, split at paragraphs) of the Gutenberg books;
  5-word shingles, 128 permutations. Times the vectorised numpy `MinHasher` (batched) against
  `datasketch.MinHash.update_batch` per document on the same shingles, checks both estimates
  against the exact Jaccard of near-duplicate pairs, and times the LSH band keys.
* End to end: `prepare` on `pretrain/gutenberg_en_train.jsonl.gz` (~92 MB) with the dolma2
  tokenizer, all filters, exact + MinHash dedup and decontamination against `eval/`; prints the
  funnel, MB/s and tokens/s.
* `--compare`: a `--mb` slice of the Gutenberg books cut into ~5,000-character documents, with
  planted exact and near duplicates, in 8 JSONL shards. olmo2 `--executor local` (2 workers),
  `--executor ray` on 1 and 2 CPUs (Ray started once per setting, outside the timing), olmo2
  with the encoder forced to `tokenizers` (the emit stage's MB/s, tiktoken vs not), and
  datatrove (`LocalPipelineExecutor`, tasks=2: Gopher repetition + quality, C4, MinHash in its 4
  stages, its tokenizer step with the same tokenizer file) run by `--datatrove-python` (a
  separate venv with datatrove, spacy, tokenizers, xxhash). Prints MB/s per side, the ratios
  and the Jaccard agreement of the kept document ids. olmo2 runs without the language filter
  and decontamination, which datatrove's pipeline here does not have.
* `--memory`: peak RSS of every task (each forked fresh, `os.wait4`) for 4 vs 16 shards of the
  same size: per-shard and per-partition tasks must not grow with the shard count.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import resource
import subprocess
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
from olmo2.data.tokenize import read_index
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


DATATROVE = r"""
import json, sys, time
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup import (
    MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature,
)
from datatrove.pipeline.dedup.minhash import MinhashConfig
from datatrove.pipeline.filters import C4QualityFilter, GopherQualityFilter, GopherRepetitionFilter
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.tokens import DocumentTokenizer
from datatrove.pipeline.writers import JsonlWriter

def run(pipeline, tasks, work, workers=2):
    logs = f"{work}/logs/{time.time()}"
    LocalPipelineExecutor(pipeline, tasks=tasks, workers=workers, logging_dir=logs).run()


def main(src, work, tok):
    cfg = MinhashConfig()  # 5-grams, 14 buckets x 8 hashes
    t0 = time.perf_counter()
    filters = [GopherRepetitionFilter(), GopherQualityFilter(), C4QualityFilter()]
    run([JsonlReader(src), *filters, JsonlWriter(f"{work}/filtered")], 2, work)
    run([JsonlReader(f"{work}/filtered"), MinhashDedupSignature(f"{work}/sigs", config=cfg)], 2, work)
    run([MinhashDedupBuckets(f"{work}/sigs", f"{work}/buckets", config=cfg)], cfg.num_buckets, work)
    run([MinhashDedupCluster(f"{work}/buckets", f"{work}/remove", config=cfg)], 1, work, 1)
    tokens = DocumentTokenizer(f"{work}/tokens", tokenizer_name_or_path=tok, eos_token="<|endoftext|>")
    dedup = MinhashDedupFilter(f"{work}/remove")
    run([JsonlReader(f"{work}/filtered"), dedup, JsonlWriter(f"{work}/kept"), tokens], 2, work)
    print(json.dumps({"seconds": time.perf_counter() - t0}))


if __name__ == "__main__":  # (datatrove's pool re-imports this file: forkserver)
    main(*sys.argv[1:4])
"""


def planted_slice(root: Path, out: Path, mb: float, shards: int = 8) -> tuple[list[Path], int]:
    """~`mb` MB of ~5,000-character book chunks, with exact (every 25th) and near (every 25th,
    offset 12) copies placed in other shards; returns the shard paths and the bytes."""
    rng = random.Random(0)
    docs, size = [], 0
    for doc in iter_documents([root / "pretrain" / "gutenberg_en_train.jsonl.gz"]):
        for k, chunk in enumerate(chunk_text(doc.text, 5000)):
            docs.append({"id": f"{doc.id}#{k}", "text": chunk})
            size += len(chunk.encode())
        if size >= mb * 1e6:
            break
    planted = []
    for i, d in enumerate(docs):
        if i % 25 == 0:
            planted.append({"id": f"exact-{i}", "text": d["text"]})
        elif i % 25 == 12:
            planted.append({"id": f"near-{i}", "text": _perturb(d["text"], rng)})
    rows = docs + planted
    rng.shuffle(planted)  # the copies land in later shards than most originals, some earlier
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"shard{k}.jsonl" for k in range(shards)]
    for k, path in enumerate(paths):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows[k::shards]))
    return paths, sum(len(r["text"].encode()) for r in rows)


def _olmo2(inputs, out: Path, tok: Path, executor: str, workers: int) -> tuple[float, dict]:
    cfg = PrepareConfig(
        inputs=list(map(str, inputs)),
        output=str(out),
        tokenizer=str(tok),
        filters=FilterConfig(),
        dedup=DedupConfig(),
        decontam=DecontamConfig(),
        workers=workers,
        executor=executor,
        tasks=2,
    )
    cfg.filters.lang.enabled = False  # datatrove's pipeline here has no language filter
    from olmo2.data import encoder as E

    E.choose_backend.cache_clear()  # every run pays its own start-up
    E.encoder.cache_clear()
    t0 = time.perf_counter()
    manifest = prepare(cfg)
    return time.perf_counter() - t0, manifest


def _kept_olmo2(out: Path) -> set[str]:
    return {r[2] for p in sorted(out.glob("part-*.npy")) for r in read_index(p)}


def _kept_datatrove(work: Path) -> set[str]:
    ids = set()
    for p in (work / "kept").glob("*.jsonl.gz"):
        with gzip.open(p, "rt") as f:
            ids.update(json.loads(line)["id"] for line in f)
    return ids


def bench_compare(root: Path, mb: float, dt_python: str | None) -> None:
    import ray

    from olmo2.data import prepare as P

    tok = root / "tokenizers" / "allenai_dolma2.json"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        inputs, nbytes = planted_slice(root, tmp / "in", mb)
        print(f"## vs datatrove: {nbytes / 1e6:.1f} MB in {len(inputs)} shards, dolma2 tokenizer")
        dirs = {"local 2": "local", "ray 1": "ray1", "ray 2": "ray2", "local 2, tokenizers": "hf"}
        runs = {"local 2": _olmo2(inputs, tmp / "local", tok, "local", 2)}
        for cpus in (1, 2):
            t0 = time.perf_counter()
            ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False)
            print(f"(Ray start, {cpus} CPUs: {time.perf_counter() - t0:.1f} s, not timed)")
            runs[f"ray {cpus}"] = _olmo2(inputs, tmp / f"ray{cpus}", tok, "ray", cpus)
            ray.shutdown()
        real = P.choose_backend
        P.choose_backend = lambda path: ("tokenizers", "forced by the bench")
        try:
            runs["local 2, tokenizers"] = _olmo2(inputs, tmp / "hf", tok, "local", 2)
        finally:
            P.choose_backend = real
        for name, (secs, m) in runs.items():
            stages = m["prepare"]["timing"]["stages_s"]
            emit_mbs = nbytes / 1e6 / stages["emit"]
            print(
                f"olmo2 {name:<20} {secs:6.1f} s  {nbytes / 1e6 / secs:5.2f} MB/s"
                f"  (emit stage {emit_mbs:5.2f} MB/s; stages "
                + " ".join(f"{k} {v:.1f}" for k, v in stages.items())
                + ")"
            )
        parts = {
            n: [p.read_bytes() for p in sorted((tmp / d).glob("part-*"))] for n, d in dirs.items()
        }
        print(
            f"token files byte-identical across the olmo2 runs: {len({str(hash(tuple(v))) for v in parts.values()}) == 1}"
        )
        ours = _kept_olmo2(tmp / "local")
        hf, tk = runs["local 2, tokenizers"][1], runs["local 2"][1]
        ratio = (
            hf["prepare"]["timing"]["stages_s"]["emit"]
            / tk["prepare"]["timing"]["stages_s"]["emit"]
        )
        print(f"emit stage (filter pass + tokenize), tiktoken vs tokenizers: {ratio:.2f}x")
        if dt_python:
            work = tmp / "dt"
            script = tmp / "datatrove_pipeline.py"
            script.write_text(DATATROVE)
            res = subprocess.run(
                [dt_python, str(script), str(tmp / "in"), str(work), str(tok)],
                capture_output=True,
                text=True,
            )
            if res.returncode:
                print(res.stderr[-3000:])
                return
            secs = json.loads(res.stdout.strip().splitlines()[-1])["seconds"]
            theirs = _kept_datatrove(work)
            print(f"datatrove local 2          {secs:6.1f} s  {nbytes / 1e6 / secs:5.2f} MB/s")
            for name, (s, _) in runs.items():
                print(f"ratio olmo2 {name} / datatrove: {secs / s:.2f}x")
            print(f"ratio ray 2 / ray 1: {runs['ray 1'][0] / runs['ray 2'][0]:.2f}x")
            jac = len(ours & theirs) / len(ours | theirs)
            print(f"kept documents: olmo2 {len(ours)}, datatrove {len(theirs)}, Jaccard {jac:.3f}")


def _measured_task(job, item):
    """Run one stage task in a fresh fork and record its peak RSS (`os.wait4`)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            start_kb = (
                int(Path("/proc/self/statm").read_text().split()[1])
                * os.sysconf("SC_PAGE_SIZE")
                // 1024
            )
            result = _ORIGINAL_TASK(job, item)
            result["_start_kb"] = start_kb
            os.write(w, json.dumps(result).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, _, usage = os.wait4(pid, 0)
    result = json.loads(data)
    result["_rss_mb"] = (usage.ru_maxrss - result.pop("_start_kb")) / 1024  # growth in the task
    return result


_ORIGINAL_TASK = None
_PEAKS: dict[str, list[float]] = {}


def bench_memory(root: Path, shard_mb: float = 2.0, budget: int = 256 << 10) -> None:
    """Peak RSS growth of each task over the process it was forked from, at 4 and 16 shards.
    The merge budget is cut to `budget` bytes so that the 16-shard partitions exceed it (at
    its 8 MB default, a few MB of records fit in it whole)."""
    global _ORIGINAL_TASK
    import functools

    from olmo2.data import executors, records
    from olmo2.data import prepare as P

    real_merge = records.merged_groups
    records.merged_groups = functools.partial(real_merge, budget_bytes=budget)

    tok = root / "tokenizers" / "allenai_dolma2.json"
    real_stage = P.run_stage

    def stage(ex, work, name, fn, job, specs):
        results = real_stage(ex, work, name, fn, job, specs)
        _PEAKS.setdefault(name, []).extend(r.get("_rss_mb", 0) for r in results)
        return results

    _ORIGINAL_TASK, executors._with_marker = executors._with_marker, _measured_task
    P.run_stage = stage
    print(
        f"## peak RSS growth per task (MB), shards of {shard_mb} MB, 4 partitions, merge budget {budget >> 10} KB"
    )
    try:
        for n in (4, 16):
            with tempfile.TemporaryDirectory() as tmp:
                inputs, _ = planted_slice(root, Path(tmp) / "in", n * shard_mb, shards=n)
                _PEAKS.clear()
                cfg = PrepareConfig(list(map(str, inputs)), str(Path(tmp) / "out"), str(tok))
                cfg.decontam, cfg.workers, cfg.tasks = DecontamConfig(), 1, 4
                cfg.dedup.paragraph = True
                prepare(cfg)
                row = "  ".join(f"{k} {max(v):.1f}" for k, v in _PEAKS.items())
                print(f"{n:2d} shards: {row}")
    finally:
        executors._with_marker, P.run_stage = _ORIGINAL_TASK, real_stage
        records.merged_groups = real_merge


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--docs", type=int, default=10_000)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--mb", type=float, default=20.0, help="--compare: MB of text")
    p.add_argument("--datatrove-python", default=None, help="python of a venv with datatrove")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--minhash-only", action="store_true")
    g.add_argument("--e2e-only", action="store_true")
    g.add_argument("--compare", action="store_true")
    g.add_argument("--memory", action="store_true")
    args = p.parse_args()
    root = data_dir(args.data_dir)
    print(f"# bench/prepare.py: {os.cpu_count()} CPUs")
    if args.compare:
        return bench_compare(root, args.mb, args.datatrove_python)
    if args.memory:
        return bench_memory(root)
    if not args.e2e_only:
        bench_minhash(root / "pretrain" / "gutenberg_en_train.jsonl.gz", args.docs)
    if not args.minhash_only:
        bench_e2e(root, args.workers)


if __name__ == "__main__":
    main()
