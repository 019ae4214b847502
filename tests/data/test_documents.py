"""Tests for olmo2/data/documents.py: formats, ids, errors with file and line."""

from __future__ import annotations

import gzip
import json

import pytest
import zstandard

from olmo2.data.documents import ReadStats, file_stem, iter_documents


def _rows(n: int) -> list[dict]:
    return [{"id": f"d{i}", "text": f"document {i}", "url": f"u{i}"} for i in range(n)]


def _write_jsonl(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_jsonl_gz_zst_read_the_same(tmp_path):
    rows = _rows(5)
    plain = tmp_path / "a.jsonl"
    _write_jsonl(plain, rows)
    gz = tmp_path / "b.jsonl.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    zst = tmp_path / "c.jsonl.zst"
    zst.write_bytes(zstandard.ZstdCompressor().compress(plain.read_bytes()))
    for p, stem in ((plain, "a"), (gz, "b"), (zst, "c")):
        docs = list(iter_documents([p]))
        assert [d.text for d in docs] == [r["text"] for r in rows]
        assert [d.id for d in docs] == [r["id"] for r in rows]
        assert {d.source for d in docs} == {stem}
        assert docs[0].metadata == {"url": "u0"}


def test_missing_id_gets_stable_file_line_id_and_custom_field(tmp_path):
    p = tmp_path / "shard.jsonl"
    p.write_text('{"body": "x"}\n\n{"body": "y", "source": "web"}\n')
    docs = list(iter_documents([p], text_field="body"))
    assert [(d.id, d.source) for d in docs] == [
        ("shard.jsonl:1", "shard"),
        ("shard.jsonl:3", "web"),
    ]


def test_txt_whole_file_and_separator(tmp_path):
    p = tmp_path / "book.txt"
    p.write_text("one\n===\ntwo\n===\n\n")
    assert [d.text for d in iter_documents([p])] == ["one\n===\ntwo\n===\n\n"]
    docs = list(iter_documents([p], separator="===\n"))
    assert [d.text for d in docs] == ["one\n", "two\n"]
    assert [d.id for d in docs] == ["book.txt:0", "book.txt:1"]


def test_invalid_json_names_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"text": "ok"}\n{"text": broken\n{"text": "ok2"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: invalid JSON"):
        list(iter_documents([p]))
    stats = ReadStats()
    docs = list(iter_documents([p], skip_bad_lines=True, stats=stats))
    assert [d.text for d in docs] == ["ok", "ok2"]
    assert (stats.bad_lines, stats.documents, stats.files) == (1, 2, 1)
    assert stats.bytes == len(b"okok2")


def test_missing_text_field_and_non_object(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"text": "fine"}\n{"content": "no text"}\n')
    with pytest.raises(ValueError, match=r"x\.jsonl:2: field 'text' is missing"):
        list(iter_documents([p]))
    q = tmp_path / "y.jsonl"
    q.write_text('["a list"]\n')
    with pytest.raises(ValueError, match=r"y\.jsonl:1: .*JSON object"):
        list(iter_documents([q]))


def test_unknown_format_and_missing_file(tmp_path):
    p = tmp_path / "data.parquet"
    p.write_bytes(b"")
    with pytest.raises(ValueError, match="unknown input format"):
        list(iter_documents([p]))
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        list(iter_documents([tmp_path / "nope.jsonl"]))
    assert file_stem("a/b/gutenberg_en_train.jsonl.gz") == "gutenberg_en_train"


def test_streams_lazily(tmp_path):
    """The reader yields before reaching a bad line further down (constant memory)."""
    p = tmp_path / "big.jsonl"
    _write_jsonl(p, _rows(3))
    with open(p, "a") as f:
        f.write("not json\n")
    it = iter_documents([p])
    assert next(it).id == "d0"


def test_concatenated_zstd_frames_are_all_read(tmp_path):
    p = tmp_path / "two.jsonl.zst"
    z = zstandard.ZstdCompressor()
    p.write_bytes(b"".join(z.compress(json.dumps(r).encode() + b"\n") for r in _rows(3)))
    assert [d.id for d in iter_documents([p])] == ["d0", "d1", "d2"]


def test_damaged_files_name_the_position_and_keep_what_precedes(tmp_path):
    data = "".join(json.dumps(r) + "\n" for r in _rows(20_000)).encode()
    z = zstandard.ZstdCompressor().compress(data)
    p = tmp_path / "cut.jsonl.zst"
    p.write_bytes(z[: len(z) // 2])
    readable = zstandard.ZstdDecompressor().decompressobj().decompress(z[: len(z) // 2])
    n = readable.count(b"\n")
    with pytest.raises(
        ValueError, match=rf"cut\.jsonl\.zst: cannot read zstd data at line {n + 1:,}"
    ):
        list(iter_documents([p]))
    stats = ReadStats()
    docs = list(iter_documents([p], skip_bad_lines=True, stats=stats))
    assert [d.id for d in docs] == [f"d{i}" for i in range(n)] and stats.damaged_files == 1

    book = tmp_path / "book.txt.gz"
    text = "".join(f"chapter {i} " * 50 + "\n===\n" for i in range(400))
    gz = gzip.compress(text.encode())
    book.write_bytes(gz[:-20])  # the tail is lost: the last piece read is cut short
    with pytest.raises(ValueError, match=r"book\.txt\.gz: cannot read gzip data after [\d,]+ char"):
        list(iter_documents([book], separator="===\n"))
    docs = list(iter_documents([book], separator="===\n", skip_bad_lines=True))
    assert 0 < len(docs) < 400 and [d.text for d in docs] == text.split("===\n")[: len(docs)]
