"""Tests for olmo2/data/encoder.py: tiktoken only where it gives `tokenizers`' ids, checked on
real text; a tokenizer it cannot represent falls back, and prepare says so."""

from __future__ import annotations

import gzip
import json
import sysconfig
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from olmo2.cli import main
from olmo2.data import encoder as E
from tests.data.test_prepare import _ids, _write
from tests.data.test_tokenize import make_docs

pytest.importorskip("tiktoken")


def test_dolma2_is_exact_and_neox_falls_back(dolma2_path):
    assert E.choose_backend(str(dolma2_path)) == (
        "tiktoken",
        "merges match the ranks; probes identical",
    )
    neox = dolma2_path.parent / "allenai_eleuther-ai-gpt-neox-20b-pii-special.json"
    backend, why = E.choose_backend(str(neox))
    assert backend == "tokenizers" and "normalizer" in why


def test_reordered_merges_are_refused(tmp_path, dolma2_path):
    spec = json.loads(dolma2_path.read_text())
    m = spec["model"]["merges"]
    m[500], m[501] = m[501], m[500]  # tokenizers would now merge in another order
    bad = tmp_path / "tok.json"
    bad.write_text(json.dumps(spec))
    assert E.choose_backend(str(bad)) == (
        "tokenizers",
        "its merge list is not the one its ranks imply",
    )


def _gutenberg(data_dir: Path, limit: int | None = None) -> list[str]:
    texts = []
    with gzip.open(data_dir / "pretrain" / "gutenberg_en_train.jsonl.gz", "rt") as f:
        for line in f:
            texts.append(json.loads(line)["text"])
            if limit and len(texts) >= limit:
                break
    return texts


def _stdlib(limit: int | None = None) -> list[str]:
    out = []
    for p in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        try:
            out.append(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, OSError):
            continue
        if limit and len(out) >= limit:
            break
    return out


def _assert_identical(dolma2_path: Path, texts: list[str]) -> None:
    enc = E.Encoder(str(dolma2_path), "tiktoken")
    hf = Tokenizer.from_file(str(dolma2_path))
    for i in range(0, len(texts), 64):
        batch = texts[i : i + 64]
        want = [e.ids for e in hf.encode_batch(batch, add_special_tokens=False)]
        assert enc.encode(batch) == want, f"documents {i}..{i + len(batch)}"
    assert enc.fallback_docs == 0


def test_tiktoken_ids_equal_tokenizers_on_a_sample(data_dir, dolma2_path):
    texts = [d.text for d in make_docs()] + list(E.PROBES) + _stdlib(40)
    texts += [t[:200_000] for t in _gutenberg(data_dir, 3)]
    _assert_identical(dolma2_path, texts)


@pytest.mark.slow
@pytest.mark.timeout(3600)  # ~120 MB through single-threaded tokenizers on a shared 2-core box
def test_tiktoken_ids_equal_tokenizers_on_gutenberg_and_the_stdlib(data_dir, dolma2_path):
    """Every document of the shared Gutenberg train set and every stdlib source file."""
    _assert_identical(dolma2_path, _gutenberg(data_dir) + _stdlib())


def test_prepare_reports_the_encoder_and_shards_checked_both_ways(
    tmp_path, dolma2_path, monkeypatch, capsys
):
    src = tmp_path / "docs.jsonl"
    _write(src, [{"id": d.id, "text": d.text} for d in make_docs(12)])
    base = ["prepare", "--input", str(src), "--tokenizer", str(dolma2_path), "--no-decontam"]
    base += ["--no-filter", "all", "--dedup", "none", "--workers", "1"]
    assert main(base + ["--output", str(tmp_path / "a")]) == 0
    assert "encoder" in capsys.readouterr().out
    # A shard whose sample differed would be encoded by tokenizers: same files, and said.
    monkeypatch.setattr(E.Encoder, "verified", lambda self, texts: False)
    assert main(base + ["--output", str(tmp_path / "b")]) == 0
    assert "tiktoken (1 shards, 0 docs: tokenizers)" in capsys.readouterr().out
    for name in ("part-00000.npy", "part-00000.csv.gz"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["prepare"]["encoder"]["shards_on_tokenizers"] == 1
    neox = dolma2_path.parent / "allenai_eleuther-ai-gpt-neox-20b-pii-special.json"
    base[4] = str(neox)
    assert main(base + ["--output", str(tmp_path / "c")]) == 0
    assert "tokenizers" in capsys.readouterr().out
    assert _ids(tmp_path / "c") == _ids(tmp_path / "a")
