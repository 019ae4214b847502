"""Tokenization throughput: olmo2's parallel path vs a plain `tokenizers.encode_batch` loop.

    .venv/bin/python bench/tokenize_bench.py [--mb 100] [--repeats 2] [--workers 2]

Text: the Gutenberg books (`pretrain/gutenberg_en_train.jsonl.gz` in the data directory,
~92 MB) topped up with the Python standard library's source files to `--mb` MB of UTF-8.
All text is in memory first, so only tokenization is timed (the output files are not
written). Same dolma2 tokenizer in every mode; each mode's best of `--repeats` is reported:

- `single`:   one process, `Tokenizer.encode_batch` in chunks, Rust threading off
  (TOKENIZERS_PARALLELISM=false) — the baseline;
- `rayon`:    the same loop with `tokenizers`' own thread pool on (its default);
- `tiktoken`: one process, `olmo2.data.encoder.Encoder` with tiktoken built from the same
  tokenizer.json (`encoder.choose_backend` proves it exact for dolma2);
- `olmo2`:    `olmo2.data.tokenize`'s worker pool (the path `tokenize_documents` uses; tiktoken
  in every worker).

The machine's cores are shared with other work, so ratios are best-of-N from the same run.
"""

from __future__ import annotations

import os
import sys

# This file's name shadows the stdlib `tokenize` (imported by `inspect`, numpy, torch...) when
# run as a script, because Python puts bench/ first on sys.path: take it off before imports.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

import argparse  # noqa: E402
import gzip  # noqa: E402
import json  # noqa: E402
import sysconfig  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

from olmo2.data import tokenize as T  # noqa: E402
from olmo2.data.documents import Document  # noqa: E402
from olmo2.data.encoder import Encoder, choose_backend  # noqa: E402
from olmo2.utils import data_dir  # noqa: E402


def load_texts(root: Path, mb: float) -> list[str]:
    target, texts, size = int(mb * 1e6), [], 0
    with gzip.open(root / "pretrain" / "gutenberg_en_train.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            texts.append(json.loads(line)["text"])
            size += len(texts[-1].encode())
            if size >= target:
                return texts
    for p in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        try:
            texts.append(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, OSError):
            continue
        size += len(texts[-1].encode())
        if size >= target:
            break
    return texts


def plain_loop(tok: Tokenizer, texts: list[str], parallel: bool) -> int:
    os.environ["TOKENIZERS_PARALLELISM"] = "true" if parallel else "false"
    n = 0
    for i in range(0, len(texts), 64):
        for enc in tok.encode_batch(texts[i : i + 64], add_special_tokens=False):
            n += len(enc.ids) + 1  # + EOS, as in the token files
    return n


def olmo2_path(tok_path: str, docs: list[Document], workers: int) -> int:
    return sum(len(ids) for _, ids in T._encoded(iter(docs), tok_path, workers))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir")
    ap.add_argument("--mb", type=float, default=100)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    args = ap.parse_args()
    root = data_dir(args.data_dir)
    tok_path = str(root / "tokenizers" / "allenai_dolma2.json")
    texts = load_texts(root, args.mb)
    mbytes = sum(len(t.encode()) for t in texts) / 1e6
    docs = [Document(id=str(i), text=t) for i, t in enumerate(texts)]
    tok = Tokenizer.from_file(tok_path)
    print(
        f"# {mbytes:.1f} MB in {len(texts)} documents, {os.cpu_count()} cores (shared), best of {args.repeats}"
    )

    # identity on a sample: our token stream == tokenizers' own encoding
    sample = docs[:: max(1, len(docs) // 50)]
    ours = [ids[:-1].tolist() for _, ids in T._encoded(iter(sample), tok_path, args.workers)]
    assert ours == [
        e.ids for e in tok.encode_batch([d.text for d in sample], add_special_tokens=False)
    ]

    enc = Encoder(tok_path, choose_backend(tok_path)[0])
    modes = {
        "single": lambda: plain_loop(tok, texts, parallel=False),
        "rayon": lambda: plain_loop(tok, texts, parallel=True),
        "tiktoken": lambda: sum(len(ids) + 1 for ids in enc.encode(texts)),
        "olmo2": lambda: olmo2_path(tok_path, docs, args.workers),
    }
    best: dict[str, float] = {m: float("inf") for m in modes}
    counts = {}
    for _ in range(args.repeats):  # interleaved, so drift in machine load hits every mode
        for name, fn in modes.items():
            t0 = time.perf_counter()
            counts[name] = fn()
            dt = time.perf_counter() - t0
            best[name] = min(best[name], dt)
            print(f"  {name:<8} {dt:8.2f} s  (load average {os.getloadavg()[0]:.1f})", flush=True)
    assert len(set(counts.values())) == 1, counts
    for name, t in best.items():
        print(
            f"{name:<8} {t:8.2f} s  {mbytes / t:6.2f} MB/s  {counts[name] / t / 1e6:6.2f} M tok/s"
        )
    print(f"ratio tiktoken/single (one process each): {best['single'] / best['tiktoken']:.2f}x")
    print(f"ratio olmo2/single: {best['single'] / best['olmo2']:.2f}x")
    print(f"ratio olmo2/rayon:  {best['rayon'] / best['olmo2']:.2f}x")
    print(
        f"tokens: {counts['olmo2']:,}  ({np.float64(counts['olmo2']) / (mbytes * 1e6):.3f} per byte)"
    )


if __name__ == "__main__":
    main()
