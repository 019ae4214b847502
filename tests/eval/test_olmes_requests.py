"""Golden test: our prompts equal, string for string, the requests oe-eval wrote for OLMES.

For every request set in `eval/olmes_requests/` we build the task named by its config alias
with the config's split/shots/limit, and compare every (doc_id, idx) -> (context,
continuation), unconditional requests (doc_id >= 1,000,000) included.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from olmo2.eval.tasks import get_task

SETS = [
    f"{t}/{v}"
    for t in "arc_challenge arc_easy boolq csqa hellaswag openbookqa piqa socialiqa winogrande".split()
    for v in ("mc_5shot", "rc_5shot")
] + ["copa/rc_0shot", "sciq/rc_0shot", "gsm8k/gold_bpb_5shot"]


def load_set(data_dir: Path, name: str) -> tuple[dict, list[dict]]:
    d = data_dir / "eval" / "olmes_requests" / name
    config = json.loads((d / "config.json").read_text())
    with gzip.open(d / "requests.jsonl.gz", "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return config, rows


def build(config: dict):
    tc = config["task_config"]
    alias = tc.get("metadata", {}).get("alias")
    if alias is None:  # the 0-shot sets carry no alias
        alias = f"{tc['task_name']}:rc::olmes"
    return get_task(alias, split=tc["split"], num_shots=tc["num_shots"], limit=tc.get("limit"))


def strip_boolq_title(text: str) -> str:
    """The shared BoolQ copy has no article titles: drop "Title -- " from the last passage."""
    head, sep, last = text.rpartition("\n\n")
    title, dashes, rest = last.partition(" -- ")
    return head + sep + (rest if dashes else last)


def test_all_21_request_sets_are_covered(data_dir):
    found = sorted(
        str(p.parent.relative_to(data_dir / "eval" / "olmes_requests"))
        for p in (data_dir / "eval" / "olmes_requests").glob("*/*/config.json")
    )
    assert found == sorted(SETS) and len(found) == 21


@pytest.mark.parametrize("name", SETS)
def test_requests_match_oe_eval(data_dir, name):
    config, rows = load_set(data_dir, name)
    task = build(config)
    docs = task.docs(data_dir)
    assert len(docs) == config["num_instances"]
    ours = {(r.doc_id, r.idx): r for r in task.requests(docs)}
    theirs = {(r["doc_id"], r["idx"]): r for r in rows}
    assert ours.keys() == theirs.keys()
    n_uncond = 0
    for key, row in theirs.items():
        req = row["request"]
        ctx = req["context"]
        if name.startswith("boolq/"):
            ctx = strip_boolq_title(ctx)
        mine = ours[key]
        assert mine.context == ctx, f"{name} {key}: context differs"
        assert mine.continuation == req["continuation"], f"{name} {key}: continuation"
        n_uncond += key[0] >= 1_000_000
    uncond = "uncond_docid_offset" in (config["task_config"].get("metric_kwargs") or {})
    uncond = uncond and config["task_config"]["metric_kwargs"]["uncond_docid_offset"] is not None
    assert (n_uncond > 0) == uncond


def test_gsm8k_generation_requests_match(data_dir):
    """The same request file also fixes the generative task's prompt, stop sequences and
    gold answers."""
    config, rows = load_set(data_dir, "gsm8k/gold_bpb_5shot")
    task = get_task("gsm8k::olmes")
    docs = task.docs(data_dir)
    ours = task.requests(docs)
    assert len(ours) == len(rows) == 1319
    for mine, row in zip(ours, sorted(rows, key=lambda r: r["doc_id"]), strict=True):
        assert mine.kind == "generate" and mine.context == row["request"]["context"]
        assert list(mine.stop) == row["request"]["stop_sequences"]
        assert mine.max_gen_toks == row["request"]["generation_kwargs"]["max_gen_toks"]
        assert docs[row["doc_id"]].answer == row["label"]


def test_gold_labels_match(data_dir):
    """Labels (gold index) agree too, so metrics score the same answer as OLMES."""
    for name in (
        "arc_challenge/rc_5shot",
        "socialiqa/mc_5shot",
        "winogrande/rc_5shot",
        "sciq/rc_0shot",
    ):
        config, rows = load_set(data_dir, name)
        task = build(config)
        docs = task.docs(data_dir)
        for r in rows:
            assert docs[r["doc_id"] % 1_000_000].gold == r["label"], (name, r["doc_id"])
