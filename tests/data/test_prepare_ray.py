"""`olmo2 prepare --executor ray` on a real local Ray (2 CPUs, started once for this module):
byte-identical to `--executor local` whatever the number of tasks, planted duplicates across
and within shards removed, a killed worker retried, a killed driver resumed from the markers,
a corrupt line named."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from olmo2.cli import main
from tests.data.test_filters import english
from tests.data.test_pool import _children
from tests.data.test_prepare import REPO, _ids, _write

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray owned by this test process (its processes go with `ray.shutdown`)."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _planted_shards(root: Path, n_shards: int = 8, per_shard: int = 6) -> tuple[list[Path], dict]:
    """Shards of clean English with duplicates planted across and within shards.

    Returns the paths and the expected surviving ids in order."""
    rng = random.Random(17)
    rows = [
        [{"id": f"s{k}d{i}", "text": english(rng)} for i in range(per_shard)]
        for k in range(n_shards)
    ]

    def near(text: str) -> str:
        words = text.split(" ")
        words[7] = "lighthouse"
        return " ".join(words)

    dup = {
        ("s0d1", 3): lambda t: t.upper(),  # exact copy in a later shard
        ("s0d1", 7): lambda t: "  " + t + "\n",  # ... and another one
        ("s2d4", 5): near,  # near copy in a later shard
        ("s2d4", 2): near,  # ... and within the same shard
        ("s4d0", 4): lambda t: t,  # exact copy within the shard
    }
    removed = []
    for (src, k), change in dup.items():
        text = next(r["text"] for s in rows for r in s if r["id"] == src)
        rows[k].append({"id": f"dup-{src}-{k}", "text": change(text)})
        removed.append(f"dup-{src}-{k}")
    # The first copy in (file, line) order is kept: here the copy, in shard 1, not s6d2.
    original = rows[6][2]
    rows[1].insert(0, {"id": "first-copy", "text": near(original["text"])})
    removed.append(original["id"])
    paths = []
    for k, shard in enumerate(rows):
        paths.append(root / f"shard{k}.jsonl")
        _write(paths[-1], shard)
    kept = [r["id"] for s in rows for r in s if r["id"] not in removed]
    return paths, {"ids": kept, "removed": len(removed)}


def _prepare(inputs, out: Path, tok: Path, *extra: str) -> int:
    args = ["prepare", "--input", *map(str, inputs), "--output", str(out), "--tokenizer", str(tok)]
    return main(args + ["--no-decontam", "--max-part-tokens", "900", *extra])


def _files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_ray_equals_local_for_any_number_of_tasks(tmp_path, dolma2_path, ray_cluster):
    inputs, exp = _planted_shards(tmp_path)
    ref = tmp_path / "local"
    assert _prepare(inputs, ref, dolma2_path, "--workers", "1") == 0  # (no fork beside Ray)
    assert _ids(ref) == exp["ids"]
    funnel = json.loads((ref / "manifest.json").read_text())["prepare"]["funnel"]
    assert sum(funnel["duplicates"].values()) == exp["removed"]
    assert len(list(ref.glob("part-*.npy"))) > 2
    want = _files(ref)
    for tasks in ("4", "1", "3", "8"):
        out = tmp_path / f"ray{tasks}"
        assert _prepare(inputs, out, dolma2_path, "--executor", "ray", "--tasks", tasks) == 0
        assert _files(out) == want, f"--tasks {tasks}"
    # Byte ranges of one big file instead of eight files: the same documents and parts.
    one = tmp_path / "all.jsonl"
    one.write_bytes(b"".join(p.read_bytes() for p in inputs))
    a, b = tmp_path / "one_local", tmp_path / "one_ray"
    assert _prepare([one], a, dolma2_path, "--shard-mb", "0.005") == 0
    assert _prepare([one], b, dolma2_path, "--executor", "ray", "--shard-mb", "0.005") == 0
    assert _ids(a) == exp["ids"] and _files(a) == _files(b)


def test_corrupt_line_names_shard_and_line(tmp_path, dolma2_path, ray_cluster, capsys):
    inputs, exp = _planted_shards(tmp_path)
    bad = inputs[5]
    lines = bad.read_text().splitlines(keepends=True)
    bad.write_text("".join(lines[:2]) + '{"id": "broken", "text": \n' + "".join(lines[2:]))
    out = tmp_path / "out"
    assert _prepare(inputs, out, dolma2_path, "--executor", "ray") == 2
    err = capsys.readouterr().err
    assert f"{bad}:3: invalid JSON line" in err and "Traceback" not in err
    assert not out.exists()  # no manifest, nothing left behind
    assert _prepare(inputs, out, dolma2_path, "--executor", "ray", "--skip-bad-lines") == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["prepare"]["funnel"]["bad_lines"] == 1 and _ids(out) == exp["ids"]


# ---- faults: big shards, so tasks run long enough to be killed mid-way


def _slow_shards(root: Path, n: int = 5) -> list[Path]:
    rng = random.Random(3)
    vocab = " ".join(english(rng, 40) for _ in range(30)).split()
    paths = []
    for k in range(n):
        rows = []
        for i in range(2):
            words = [vocab[rng.randrange(len(vocab))] for _ in range(80_000)]
            text = "\n\n".join(
                " ".join(words[j : j + 200]) + "." for j in range(0, len(words), 200)
            )
            rows.append({"id": f"big{k}-{i}", "text": text})
        paths.append(root / f"big{k}.jsonl")
        _write(paths[-1], rows)
    return paths


@pytest.fixture(scope="module")
def slow_corpus(tmp_path_factory, dolma2_path):
    root = tmp_path_factory.mktemp("slow")
    inputs = _slow_shards(root)
    ref = root / "ref"  # (requested before `ray_cluster`: the pool forks before Ray starts)
    assert _prepare(inputs, ref, dolma2_path, "--workers", "2") == 0
    return inputs, _files(ref)


def _driver(inputs, out: Path, tok: Path, address: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "olmo2", "prepare", "--input", *map(str, inputs)]
    cmd += ["--output", str(out), "--tokenizer", str(tok), "--no-decontam"]
    cmd += ["--max-part-tokens", "900", "--executor", "ray", "--ray-address", address]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _ray_tasks(prefix: str) -> list[tuple[int, str]]:
    """(PID, task number) of this test process's Ray workers running a task named
    `prefix` + number (the executor names tasks `olmo2.STAGE.NNNNN`)."""
    found, frontier = [], [os.getpid()]
    while frontier:
        pid = frontier.pop()
        for child in _children(pid):
            frontier.append(child)
            try:
                title = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            title = title.decode(errors="replace").strip()
            if title.startswith(f"ray::{prefix}"):
                found.append((child, title.removeprefix(f"ray::{prefix}")))
    return found


def _wait_for(cond, what: str, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killed_worker_then_killed_driver(tmp_path, dolma2_path, slow_corpus, ray_cluster, caplog):
    """SIGKILL a worker running an analyze task: Ray retries it (its marker appears). Then
    SIGKILL the driver; the re-run skips the marked tasks and ends identical."""
    inputs, want = slow_corpus
    out = tmp_path / "out"
    done = out / ".prepare-work" / "analyze" / "done"
    proc = _driver(inputs, out, dolma2_path, ray_cluster)
    try:
        _wait_for(lambda: _ray_tasks("olmo2.analyze.") or proc.poll() is not None, "a task")
        pid, task = _ray_tasks("olmo2.analyze.")[0]
        assert not (done / f"{task}.json").exists()
        os.kill(pid, signal.SIGKILL)
        _wait_for(lambda: (done / f"{task}.json").exists() or proc.poll() is not None, "a retry")
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate()
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL, f"prepare ended first: {err.decode()[-2000:]}"
    assert not (out / "manifest.json").exists()
    markers = sorted(p.name for p in done.glob("*.json"))
    assert f"{task}.json" in markers
    caplog.set_level("INFO", logger="olmo2.data.executors")
    assert _prepare(inputs, out, dolma2_path, "--executor", "ray") == 0
    skipped = [r.getMessage() for r in caplog.records if "already complete" in r.getMessage()]
    assert any(m.startswith(f"analyze: {len(markers)} of {len(inputs)} tasks") for m in skipped), (
        skipped
    )
    assert _files(out) == want
