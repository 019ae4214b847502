"""Tests for olmo2/data/prepare.py (`olmo2 prepare`): a planted corpus goes through filters,
decontamination and dedup, and exactly the planted documents are removed."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from olmo2.cli import main
from olmo2.data.tokenize import read_index
from tests.data.test_decontam import QUESTION
from tests.data.test_filters import _planted, english
from tests.data.test_pool import _children, _cpu_s, kill_and_check_workers_die

REPO = Path(__file__).resolve().parents[2]


def _write(path: Path, rows: list[dict]) -> None:
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)


def _corpus(tmp_path: Path) -> tuple[list[Path], dict]:
    """Two shards with known junk, duplicates and one contaminated document.

    Returns the paths and what prepare must report: expected survivor ids (in order) and the
    funnel counts.
    """
    import random

    rng = random.Random(7)
    clean = [
        {"id": f"clean{i}", "text": english(rng), "url": f"https://e.org/{i}"} for i in range(30)
    ]
    planted = _planted(random.Random(1))
    junk = [{"id": f"junk-{k}", "text": t} for k, t in planted.items()]
    shard_a = clean[:20] + junk
    words = clean[3]["text"].split(" ")
    words[10] = "lighthouse"
    shard_b = [
        *clean[20:],
        {"id": "exact1", "text": clean[0]["text"].upper()},
        {"id": "exact2", "text": "  " + clean[21]["text"].replace(" ", " \t ") + "\n"},
        {"id": "near1", "text": " ".join(words)},
        {"id": "url1", "text": english(rng), "url": "https://e.org/5"},
        {"id": "contam", "text": english(rng) + "\n" + QUESTION},
    ]
    a, b = tmp_path / "web_a.jsonl", tmp_path / "web_b.jsonl.gz"
    _write(a, shard_a)
    _write(b, shard_b)
    expected = {
        "ids": [r["id"] for r in clean],
        "documents_in": len(shard_a) + len(shard_b),
        "filtered": {k: 1 for k in planted},
        "duplicates": {"exact": 2, "minhash": 1, "url": 1},
        "contaminated": {"gsm8k": 1},
    }
    return [a, b], expected


@pytest.fixture
def eval_dir(tmp_path):
    d = tmp_path / "eval" / "gsm8k"
    d.mkdir(parents=True)
    (d / "test.jsonl").write_text(json.dumps({"question": QUESTION, "answer": "#### 9"}) + "\n")
    return d.parent


def _ids(out: Path) -> list[str]:
    return [row[2] for p in sorted(out.glob("part-*.npy")) for row in read_index(p)]


def test_planted_corpus_funnel_and_manifest(tmp_path, dolma2_path, eval_dir):
    inputs, exp = _corpus(tmp_path)
    out, attrs = tmp_path / "out", tmp_path / "attrs"
    rc = main(
        ["prepare", "--input", *map(str, inputs), "--output", str(out)]
        + ["--tokenizer", str(dolma2_path), "--decontam-dir", str(eval_dir)]
        + ["--attributes-dir", str(attrs), "--workers", "2"]  # the process-pool path
    )
    assert rc == 0
    assert _ids(out) == exp["ids"]
    manifest = json.loads((out / "manifest.json").read_text())
    funnel = manifest["prepare"]["funnel"]
    assert funnel["documents_in"] == exp["documents_in"]
    assert funnel["filtered"] == exp["filtered"]
    assert funnel["duplicates"] == exp["duplicates"]
    assert funnel["contaminated"] == exp["contaminated"]
    assert funnel["documents_out"] == manifest["documents"] == len(exp["ids"])
    assert manifest["prepare"]["config"]["dedup"]["threshold"] == 0.8
    import hashlib

    assert manifest["prepare"]["inputs"] == [
        {
            "path": str(p),
            "bytes": p.stat().st_size,
            "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
        }
        for p in inputs
    ]
    # Attribute files: one row per input document, saying why it was dropped.
    rows = [json.loads(x) for x in (attrs / "web_b.attributes.jsonl").read_text().splitlines()]
    why = {r["id"]: r["attributes"]["olmo2_drop"] for r in rows}
    assert why["exact1"] == "duplicate:exact" and why["near1"] == "duplicate:minhash"
    assert why["contam"] == "contaminated" and why["clean25"] is None
    rows_a = (attrs / "web_a.attributes.jsonl").read_text().splitlines()
    assert len(rows) + len(rows_a) == exp["documents_in"]


def test_report_mode_and_dedup_none(tmp_path, dolma2_path, eval_dir):
    inputs, exp = _corpus(tmp_path)
    out = tmp_path / "out"
    rc = main(
        ["prepare", "--input", *map(str, inputs), "--output", str(out), "--workers", "1"]
        + ["--tokenizer", str(dolma2_path), "--decontam-dir", str(eval_dir)]
        + ["--decontam-mode", "report", "--dedup", "none", "--no-filter", "all"]
    )
    assert rc == 0
    funnel = json.loads((out / "manifest.json").read_text())["prepare"]["funnel"]
    assert funnel["contaminated"] == {"gsm8k": 1}
    assert funnel["documents_out"] == funnel["documents_in"] == exp["documents_in"]
    # Re-running into the same directory with other settings is refused, not mixed.
    rc = main(
        ["prepare", "--input", *map(str, inputs), "--output", str(out), "--workers", "1"]
        + ["--tokenizer", str(dolma2_path), "--no-decontam"]
    )
    assert rc == 2


def test_paragraph_dedup_and_code_sources(tmp_path, dolma2_path):
    import random

    rng = random.Random(3)
    shared = english(rng, 6).replace("\n", " ")
    code = "".join(f"def f{i}(x):\n    return {{'k{i}': x}}\n\n" for i in range(40))
    p = tmp_path / "books.jsonl"
    _write(
        p,
        [
            {"id": "a", "text": english(rng) + "\n\n" + shared},
            {"id": "b", "text": shared + "\n\n" + english(rng)},
        ],
    )
    c = tmp_path / "code_py.jsonl"
    _write(c, [{"id": "c", "text": code}])
    out = tmp_path / "out"
    args = ["prepare", "--input", str(p), str(c), "--output", str(out), "--workers", "1"]
    args += ["--tokenizer", str(dolma2_path), "--no-decontam", "--dedup", "exact,paragraph"]
    assert main(args + ["--code-sources", "code*"]) == 0
    funnel = json.loads((out / "manifest.json").read_text())["prepare"]["funnel"]
    assert funnel["paragraphs_removed"] == 1
    assert _ids(out) == ["a", "b", "c"]
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(dolma2_path))
    tokens = np.fromfile(out / "part-00000.npy", dtype=np.uint32)
    (s0, e0, *_), (s1, e1, *_), _ = read_index(out / "part-00000.npy")
    assert shared in tok.decode(tokens[s0:e0].tolist())
    assert shared not in tok.decode(tokens[s1:e1].tolist())
    # Without --code-sources the code document is dropped by the text filters.
    out2 = tmp_path / "out2"
    assert main(args[:5] + [str(out2)] + args[6:]) == 0
    assert _ids(out2) == ["a", "b"]


def test_bad_inputs_fail_cleanly(tmp_path, dolma2_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": english(__import__("random").Random(0))}) + "\n{oops\n")
    out = tmp_path / "out"
    base = ["prepare", "--output", str(out), "--tokenizer", str(dolma2_path), "--no-decontam"]
    base += ["--workers", "1", "--no-filter", "all"]
    assert main(base + ["--input", str(bad)]) == 2
    assert "bad.jsonl:2: invalid JSON" in capsys.readouterr().err
    assert not out.exists()  # nothing half-written
    assert main(base + ["--input", str(bad), "--skip-bad-lines"]) == 0
    funnel = json.loads((out / "manifest.json").read_text())["prepare"]["funnel"]
    assert funnel["bad_lines"] == 1 and funnel["documents_out"] == 1

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    out_e = tmp_path / "out_e"
    assert main(base[:2] + [str(out_e)] + base[3:] + ["--input", str(empty)]) == 2
    assert "empty input" in capsys.readouterr().err
    assert not out_e.exists()

    no_text = tmp_path / "no_text.jsonl"
    no_text.write_text(json.dumps({"body": "x"}) + "\n")
    assert main(base[:2] + [str(out_e)] + base[3:] + ["--input", str(no_text)]) == 2
    assert "no_text.jsonl:1: field 'text' is missing" in capsys.readouterr().err
    assert main(base[:2] + [str(out_e)] + base[3:] + ["--input", str(tmp_path / "nope.jsonl")]) == 2
    assert main(base + ["--input", str(bad), "--no-filter", "bogus"]) == 2
    assert main(base + ["--input", str(bad), "--dedup", "fuzzy"]) == 2
    assert not out_e.exists()


def test_dry_run_prints_config_and_writes_nothing(tmp_path, dolma2_path, capsys):
    p = tmp_path / "a.jsonl"
    p.write_text('{"text": "x"}\n')
    out = tmp_path / "out"
    args = ["prepare", "--input", str(p), "--output", str(out), "--tokenizer", str(dolma2_path)]
    extra = ["--dry-run", "--no-decontam", "--min-words", "7", "--lang", "en,fr"]
    assert main(args + extra + ["--no-filter", "c4@code*", "--no-filter", "lang"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["filters"]["length"]["min_words"] == 7
    assert cfg["filters"]["lang"]["langs"] == ["en", "fr"]
    assert cfg["filters"]["lang"]["enabled"] is False
    assert cfg["filters"]["disabled_for_source"] == {"c4": ["code*"]}
    assert cfg["dedup"]["threshold"] == 0.8 and cfg["decontam"]["eval_dir"] is None
    assert not out.exists()


def _big_corpus(path: Path, n: int = 200) -> None:
    import random

    rng = random.Random(11)
    _write(path, [{"id": f"d{i}", "text": english(rng, 20)} for i in range(n)])


def test_sigkill_then_rerun_gives_the_same_output(tmp_path, dolma2_path):
    src = tmp_path / "corpus.jsonl"
    _big_corpus(src)
    common = ["-m", "olmo2", "prepare", "--input", str(src), "--tokenizer", str(dolma2_path)]
    common += ["--no-decontam", "--no-filter", "all", "--max-part-tokens", "1000"]
    common += ["--workers", "1"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ref, out = tmp_path / "ref", tmp_path / "out"
    subprocess.run(
        [sys.executable, *common, "--output", str(ref)], check=True, env=env, capture_output=True
    )
    n_parts = len(list(ref.glob("part-*.npy")))
    assert n_parts > 8
    proc = subprocess.Popen(
        [sys.executable, *common, "--output", str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while (
        not (out / "part-00002.csv.gz").exists() and proc.poll() is None and time.time() < deadline
    ):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "prepare finished before it could be killed"
    assert not (out / "manifest.json").exists()
    subprocess.run(
        [sys.executable, *common, "--output", str(out)], check=True, env=env, capture_output=True
    )
    for p in sorted(ref.iterdir()):
        assert (out / p.name).read_bytes() == p.read_bytes(), p.name
    assert sorted(x.name for x in out.iterdir()) == sorted(x.name for x in ref.iterdir())


def _damaged_shards(tmp_path: Path) -> dict[Path, int]:
    """Truncated .gz and .zst shards and a plain file named .gz, each with the number of its
    documents that can be read before the damage (what a streaming decompressor recovers)."""
    import random
    import zlib

    import zstandard

    rng = random.Random(5)
    rows = [{"text": " ".join(f"w{rng.randrange(10**6)}" for _ in range(20))} for _ in range(3000)]
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    gz, zst = gzip.compress(data), zstandard.ZstdCompressor().compress(data)
    gz, zst = gz[: len(gz) // 2], zst[: len(zst) // 2]
    shards = {
        tmp_path / "cut.jsonl.gz": (gz, zlib.decompressobj(31).decompress(gz).count(b"\n")),
        tmp_path / "cut.jsonl.zst": (
            zst,
            zstandard.ZstdDecompressor().decompressobj().decompress(zst).count(b"\n"),
        ),
        tmp_path / "raw.jsonl.gz": (data, 0),
    }
    for path, (blob, _) in shards.items():
        path.write_bytes(blob)
    return {path: n for path, (_, n) in shards.items()}


def test_damaged_compressed_input_names_file_and_position(tmp_path, dolma2_path, capsys):
    shards = _damaged_shards(tmp_path)
    assert all(0 < n < 3000 for p, n in shards.items() if p.name.startswith("cut"))
    out = tmp_path / "out"
    base = ["prepare", "--output", str(out), "--tokenizer", str(dolma2_path), "--no-decontam"]
    base += ["--workers", "1", "--no-filter", "all", "--dedup", "none"]
    for path, n in shards.items():
        assert main(base + ["--input", str(path)]) == 2
        err = capsys.readouterr().err
        assert f"olmo2 prepare: error: {path}: cannot read" in err and "Traceback" not in err
        assert f"at line {n + 1:,}, reading stopped at byte" in err
        assert "expected a complete gzip stream" in err or "expected complete zstd frames" in err
        assert ("truncated?" in err) == path.name.startswith("cut")
        assert not out.exists()  # nothing half-written
    good = tmp_path / "good.jsonl"
    _write(good, [{"text": "one fine document"}])
    assert main(base + ["--input", *map(str, shards), str(good), "--skip-bad-lines"]) == 0
    assert "damaged files (read up to the damage)" in capsys.readouterr().out
    funnel = json.loads((out / "manifest.json").read_text())["prepare"]["funnel"]
    assert funnel["damaged_files"] == 3
    assert funnel["documents_in"] == funnel["documents_out"] == sum(shards.values()) + 1
    assert _ids(out)[-1] == "good.jsonl:1"


def test_unusable_output_fails_before_reading(tmp_path, dolma2_path, capsys):
    src = next(iter(_damaged_shards(tmp_path)))  # reading it would fail: it must not be read
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    before = sorted(tmp_path.rglob("*"))
    base = ["prepare", "--input", str(src), "--tokenizer", str(dolma2_path), "--no-decontam"]
    assert main(base + ["--output", str(blocker / "out")]) == 2
    err = capsys.readouterr().err
    assert f"--output {blocker / 'out'}: {blocker} is a file, not a directory" in err
    assert main(base + ["--output", str(blocker)]) == 2
    assert f"--output {blocker}: {blocker} is a file" in capsys.readouterr().err
    ok_out = tmp_path / "new" / "out"
    assert main(base + ["--output", str(ok_out), "--attributes-dir", str(blocker / "a")]) == 2
    assert f"--attributes-dir {blocker / 'a'}: {blocker} is a file" in capsys.readouterr().err
    assert sorted(tmp_path.rglob("*")) == before  # nothing written


def _huge_documents(path: Path, n: int = 3, words: int = 2_000_000) -> None:
    """`n` documents of ~12 MB each that pass every filter: several seconds of work each."""
    import random

    vocab = np.array(" ".join(english(random.Random(i), 14) for i in range(200)).split())
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        w = vocab[rng.integers(0, len(vocab), words)]
        text = "\n\n".join(" ".join(w[j : j + 300]) + "." for j in range(0, words, 300))
        rows.append({"id": f"huge{i}", "text": text})
    _write(path, rows)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_die_with_a_sigkilled_prepare(tmp_path, dolma2_path):
    src = tmp_path / "huge.jsonl"
    _huge_documents(src)
    cmd = [sys.executable, "-m", "olmo2", "prepare", "--input", str(src), "--output"]
    cmd += [str(tmp_path / "out"), "--tokenizer", str(dolma2_path), "--no-decontam"]
    cmd += ["--workers", "3", "--shard-mb", "1"]  # one shard per document
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        # Wait until every worker is busy with its document (orphans finish theirs: seconds).
        workers: set[int] = set()
        deadline = time.time() + 60
        while proc.poll() is None and time.time() < deadline:
            workers = _children(proc.pid)
            if len(workers) == 3 and min(map(_cpu_s, workers)) > 0.3:
                break
            time.sleep(0.02)
        assert len(workers) == 3, f"prepare ended or started no pool (rc={proc.poll()})"
        kill_and_check_workers_die(proc, workers)
    finally:
        with contextlib.suppress(ProcessLookupError):  # clean up whatever is left
            os.killpg(proc.pid, signal.SIGKILL)


def test_ray_executor_without_ray_says_how_to_install(tmp_path, dolma2_path, monkeypatch, capsys):
    p = tmp_path / "a.jsonl"
    _write(p, [{"text": "one fine document"}])
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    args = ["prepare", "--input", str(p), "--output", str(tmp_path / "out"), "--no-decontam"]
    assert main(args + ["--tokenizer", str(dolma2_path), "--executor", "ray"]) == 2
    assert "pip install 'olmo2[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert main(args + ["--tokenizer", str(dolma2_path), "--ray-address", "auto"]) == 2
    assert "--ray-address needs --executor ray" in capsys.readouterr().err


def test_inputs_and_outputs_through_fsspec_urls(tmp_path, dolma2_path):
    """memory:// (in this process: --workers 1) and file:// (any workers) give the same parts."""
    import fsspec

    inputs, exp = _corpus(tmp_path)
    base = ["prepare", "--tokenizer", str(dolma2_path), "--no-decontam", "--max-part-tokens", "500"]
    ref = tmp_path / "ref"
    assert main(base + ["--input", *map(str, inputs), "--output", str(ref), "--workers", "1"]) == 0
    mem = fsspec.filesystem("memory")
    for p in inputs:
        mem.pipe(f"/olmo2-test/in/{p.name}", p.read_bytes())
    urls = [f"memory://olmo2-test/in/{p.name}" for p in inputs]
    out = "memory://olmo2-test/out"
    try:
        assert main(base + ["--input", *urls, "--output", out, "--workers", "1"]) == 0
        names = sorted(p.name for p in ref.glob("part-*"))
        assert len(names) > 2 and sorted(fs_names(mem, "/olmo2-test/out")) == sorted(
            x.name for x in ref.iterdir()
        )
        for name in names:
            assert mem.cat(f"/olmo2-test/out/{name}") == (ref / name).read_bytes(), name
        manifest = json.loads(mem.cat("/olmo2-test/out/manifest.json"))
        assert manifest["prepare"]["inputs"][0]["path"] == urls[0]
        assert manifest["prepare"]["funnel"]["duplicates"] == exp["duplicates"]
    finally:
        mem.rm("/olmo2-test", recursive=True)
    local = tmp_path / "via_file_url"
    file_urls = [f"file://{p}" for p in inputs]
    assert (
        main(base + ["--input", *file_urls, "--output", f"file://{local}", "--workers", "2"]) == 0
    )
    for name in names:
        assert (local / name).read_bytes() == (ref / name).read_bytes(), name


def fs_names(fs, path: str) -> list[str]:
    return [p.rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)]
