"""The code sandbox: HumanEval's canonical solutions pass and empty bodies fail; hostile
programs are contained, counted as failures, and leave the host as it was."""

from __future__ import annotations

import gzip
import json
import os
import socket
import uuid

import pytest

from olmo2.eval import sandbox
from olmo2.eval.sandbox import Limits, run_many, run_program
from olmo2.eval.tasks.code import humaneval_doc


@pytest.fixture(scope="module")
def humaneval(data_dir):
    with gzip.open(data_dir / "eval/humaneval/HumanEval.jsonl.gz", "rt") as f:
        return [json.loads(line) for line in f]


def test_canonical_solutions_pass_and_empty_bodies_fail(humaneval):
    docs = [humaneval_doc(r) for r in humaneval]
    canonical = [d.code + r["canonical_solution"] + "\n" + d.tests for d, r in zip(docs, humaneval)]
    empty = [d.code + "\n" + d.tests for d in docs]
    outcomes = run_many(canonical + empty, Limits(timeout_s=20))
    good, bad = outcomes[:164], outcomes[164:]
    assert sum(o.passed for o in good) == 164, [o.output for o in good if not o.passed][:2]
    assert sum(o.passed for o in bad) == 0


def _processes_mentioning(marker: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def test_hostile_programs_are_contained(tmp_path):
    outside = tmp_path / f"escape-{uuid.uuid4().hex}.txt"
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.5)
    port = server.getsockname()[1]
    marker = uuid.uuid4().hex
    hostile = {
        "infinite loop": "while True:\n    pass",
        "10 GB allocation": "x = bytearray(10 * 1024**3)\nx[-1] = 1",
        "fork bomb": f"import os  # {marker}\nwhile True:\n    os.fork()",
        "socket": f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).send(b'x')",
        "write outside cwd": f"open({str(outside)!r}, 'w').write('pwned')",
        "os.open outside cwd": f"import os\nos.open({str(outside)!r}, os.O_CREAT | os.O_WRONLY)",
        "subprocess": f"import subprocess\nsubprocess.run(['touch', {str(outside)!r}])",
    }
    outcomes = dict(zip(hostile, run_many(list(hostile.values()), Limits(timeout_s=2))))
    assert {k: o.passed for k, o in outcomes.items()} == dict.fromkeys(hostile, False)
    assert outcomes["infinite loop"].status == "timeout"
    assert "MemoryError" in outcomes["10 GB allocation"].output
    with pytest.raises(TimeoutError):  # nothing reached the host's loopback listener
        server.accept()
    server.close()
    assert not outside.exists()
    assert _processes_mentioning(marker) == []


def test_writes_inside_the_working_directory_are_allowed():
    out = run_program("open('a.txt', 'w').write('ok')\nprint(open('a.txt').read())")
    assert out.passed and out.output.strip() == "ok"


def test_only_the_standard_library():
    assert not run_program("import numpy").passed
    assert run_program("import json, math, hashlib, collections, itertools, re").passed


def test_outcomes_are_cached(tmp_path, monkeypatch):
    progs = ["print(1)", "raise SystemExit(3)"]
    first = run_many(progs, cache_path=tmp_path / "c.sqlite")
    assert [o.passed for o in first] == [True, False] and first[1].returncode == 3
    monkeypatch.setattr(sandbox, "run_program", lambda *a: pytest.fail("should be cached"))
    assert run_many(progs, cache_path=tmp_path / "c.sqlite") == first
