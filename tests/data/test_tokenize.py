"""Token files: round trip, index spans, identity with `tokenizers`, resume, bad input, SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from olmo2.data.documents import Document
from olmo2.data.tokenize import read_index, tokenize_documents

EOS = 100257


def make_docs(n: int = 40) -> list[Document]:
    """Varied texts: prose, code, unicode, whitespace runs, an id with a comma and quotes."""
    base = [
        "The quick brown fox jumps over the lazy dog. ",
        "def f(x):\n    return x ** 2  # square\n\n",
        "Ünïcödé — 東京 🙂 naïve café, 1234567 numbers.\n",
        "   leading spaces\tand\ttabs\r\nCRLF line\n\n\n",
    ]
    return [
        Document(id=f'doc,{i} "q"', text=base[i % 4] * (1 + i % 7), source=f"src{i % 3}")
        for i in range(n)
    ]


def read_parts(out: Path) -> list[np.ndarray]:
    manifest = json.loads((out / "manifest.json").read_text())
    return [np.fromfile(out / p["path"], dtype=np.uint32) for p in manifest["parts"]]


def test_round_trip_spans_and_identity(tmp_path, dolma2_path):
    docs = make_docs()
    m = tokenize_documents(
        docs, str(dolma2_path), str(tmp_path), max_part_tokens=300, num_workers=2
    )
    ref = Tokenizer.from_file(str(dolma2_path))
    assert m["eos_token_id"] == EOS and m["vocab_size"] == 100278 and m["dtype"] == "uint32"
    assert m["documents"] == len(docs) and len(m["parts"]) > 2
    seen = []
    for p, toks in zip(m["parts"], read_parts(tmp_path)):
        rows = read_index(tmp_path / p["index"])
        assert len(toks) == p["tokens"] <= 300 or len(rows) == 1
        assert rows[0][0] == 0 and rows[-1][1] == len(toks)
        for (start, end, doc_id, source), nxt in zip(rows, rows[1:] + [(len(toks),)]):
            assert end == nxt[0]  # spans tile the part
            seen.append((doc_id, source, toks[start:end]))
    assert [s[:2] for s in seen] == [(d.id, d.source) for d in docs]
    for d, (_, _, span) in zip(docs, seen):
        assert span[-1] == EOS
        assert span[:-1].tolist() == ref.encode(d.text, add_special_tokens=False).ids
        assert ref.decode(span[:-1].tolist()) == d.text
    assert m["tokens"] == sum(len(s[2]) for s in seen)


def test_worker_count_does_not_change_output(tmp_path, dolma2_path):
    docs = make_docs(25)
    a, b = tmp_path / "a", tmp_path / "b"
    tokenize_documents(docs, str(dolma2_path), str(a), max_part_tokens=500, num_workers=1)
    tokenize_documents(docs, str(dolma2_path), str(b), max_part_tokens=500, num_workers=2)
    names = sorted(f.name for f in a.iterdir())
    assert names == sorted(f.name for f in b.iterdir())
    for n in names:
        if n.endswith((".npy", ".csv.gz")):
            assert (a / n).read_bytes() == (b / n).read_bytes(), n


def test_rerun_skips_complete_parts(tmp_path, dolma2_path):
    docs = make_docs(30)
    tokenize_documents(docs, str(dolma2_path), str(tmp_path), max_part_tokens=400, num_workers=1)
    first = tmp_path / "part-00000.npy"
    inode = first.stat().st_ino
    (tmp_path / "part-00002.csv.gz").unlink()  # part 2 looks unfinished
    m = tokenize_documents(
        docs, str(dolma2_path), str(tmp_path), max_part_tokens=400, num_workers=1
    )
    assert first.stat().st_ino == inode  # kept, not rewritten
    assert (tmp_path / "part-00002.csv.gz").is_file() and m["documents"] == 30


def test_vocab_too_big_for_dtype(tmp_path, dolma2_path):
    with pytest.raises(ValueError, match="does not fit dtype uint16"):
        tokenize_documents(make_docs(3), str(dolma2_path), str(tmp_path), dtype="uint16")
    assert not list(tmp_path.glob("part-*"))


def test_resume_with_other_tokenizer_refused(tmp_path, dolma2_path):
    neox = dolma2_path.parent / "allenai_eleuther-ai-gpt-neox-20b-pii-special.json"
    docs = make_docs(10)
    tokenize_documents(docs, str(dolma2_path), str(tmp_path), max_part_tokens=200, num_workers=1)
    before = {f.name: f.read_bytes() for f in tmp_path.iterdir()}
    with pytest.raises(ValueError, match="tokenizer_sha256"):
        tokenize_documents(docs, str(neox), str(tmp_path), num_workers=1)
    assert {f.name: f.read_bytes() for f in tmp_path.iterdir()} == before


SCRIPT = textwrap.dedent(
    """
    import sys, time
    import olmo2.data.tokenize as T
    from tests.data.test_tokenize import make_docs

    def stream():
        for i, d in enumerate(make_docs(60)):
            if i == 45:
                print("STALL", flush=True)
                time.sleep(600)  # killed here, with some parts written and one open
            yield d

    T.CHUNK_CHARS = 300  # small work items, so parts get written before the stall
    T.tokenize_documents(stream(), sys.argv[1], sys.argv[2], max_part_tokens=400, num_workers=2)
    """
)


def test_sigkill_then_rerun_gives_identical_files(tmp_path, dolma2_path):
    ref, out = tmp_path / "ref", tmp_path / "out"
    tokenize_documents(
        make_docs(60), str(dolma2_path), str(ref), max_part_tokens=400, num_workers=1
    )
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(dolma2_path), str(out)],
        cwd=repo,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the kill takes the pool workers too
    )
    try:
        assert proc.stdout.readline().strip() == "STALL"
        deadline = time.time() + 30  # workers may still be finishing in-flight chunks
        while not (out / "part-00001.csv.gz").exists() and time.time() < deadline:
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    assert (out / "part-00001.csv.gz").exists() and not (out / "manifest.json").exists()
    m = tokenize_documents(make_docs(60), str(dolma2_path), str(out), max_part_tokens=400)
    ref_files = sorted(f.name for f in ref.iterdir() if not f.name.startswith(".tmp"))
    out_files = sorted(f.name for f in out.iterdir() if f.name in ref_files or f.suffix != "")
    assert [f for f in out_files if f.startswith("part-")] == [
        f for f in ref_files if f.startswith("part-")
    ]
    for name in ref_files:
        if name.startswith("part-"):
            assert (ref / name).read_bytes() == (out / name).read_bytes(), name
    assert m["parts"] == json.loads((ref / "manifest.json").read_text())["parts"]


def test_resume_with_changed_input_refused(tmp_path, dolma2_path):
    docs = make_docs(20)
    tokenize_documents(docs, str(dolma2_path), str(tmp_path), max_part_tokens=300, num_workers=1)
    (tmp_path / "part-00002.csv.gz").unlink()
    with pytest.raises(ValueError, match="input changed"):
        tokenize_documents(
            docs[1:], str(dolma2_path), str(tmp_path), max_part_tokens=300, num_workers=1
        )
