"""`--limit`: a number replaces the task's own limit (OLMES), 'all' / 0 means every document,
and the seeded subsample is the same on every run."""

from __future__ import annotations

import json

import pytest

from olmo2.cli import main
from olmo2.eval.harness import Harness, evaluate
from olmo2.eval.tasks import get_task


def test_limit_replaces_the_task_limit(data_dir):
    task = get_task("arc_easy:rc::olmes")  # OLMES limit 1000 of the 2,376 test questions
    assert task.config.limit == 1000 and len(task.docs(data_dir)) == 1000
    assert len(task.docs(data_dir, "all")) == len(task.docs(data_dir, 0)) == 2376
    assert len(task.docs(data_dir, 1500)) == 1500  # larger than the task's own limit
    fifty = [d.native_id for d in task.docs(data_dir, 50)]
    assert len(set(fifty)) == 50 and fifty == [d.native_id for d in task.docs(data_dir, 50)]
    with pytest.raises(ValueError, match="limit"):
        task.docs(data_dir, -3)


def test_cli_limit_all(data_dir, tmp_path):
    dump = tmp_path / "r.jsonl"
    argv = ["eval", "--tasks", "arc_easy:mc::olmes", "--data-dir", str(data_dir)]
    assert main([*argv, "--limit", "all", "--dump-requests", str(dump)]) == 0
    docs = {json.loads(x)["doc_id"] for x in dump.read_text().splitlines()}
    assert len(docs) == 2376
    with pytest.raises(SystemExit):  # argparse rejects it with a usage message
        main([*argv, "--limit", "some", "--dump-requests", str(dump)])


def test_seeded_limit_is_deterministic(tiny_model, dolma2, data_dir):
    h = Harness(tiny_model, dolma2, progress=False)
    a = evaluate(h, ["copa"], data_dir, limit=12)["tasks"]["copa:rc::olmes"]
    b = evaluate(h, ["copa"], data_dir, limit=12)["tasks"]["copa:rc::olmes"]
    assert a["metrics"]["num_docs"] == 12 and a["metrics"] == b["metrics"]
