"""Code generation scored by running the tests: Codex HumanEval (Chen et al. 2021), HumanEval+
(Liu et al. 2023, EvalPlus) and MBPP (Austin et al. 2021), with unbiased pass@k.

Formats follow OLMES (allenai/olmes oe_eval/tasks/oe_eval_tasks/codex_humaneval.py,
codex_humanevalplus.py, codex_mbpp.py; configs `codex_humaneval::tulu`, ...):

* HumanEval: the prompt is the problem's `prompt` (signature + docstring); the program is
  prompt + completion + the problem's `test` + `check(entry_point)`. With `--chat` the user
  turn is the prompt and the assistant's turn opens with "Here is the completed function:
  \\n\\n```python\\n" + prompt, so the completion continues the body either way. Stops:
  "\\nclass", "\\nif", "\\nprint", "\\n#", "\\n```", "<|eot_id|>".
* MBPP: the problem text, a newline and the reference code's first line up to its ":";
  the program appends `test_setup_code` and the `test_list` asserts; test ids 11–510.
* `::none` decodes greedily (pass@1 over one sample); `::tulu` draws 20 samples at T 0.8,
  top-p 0.95, and reports pass@1 and pass@10 (primary pass@10), as Tülu 3 does.

Programs run in `olmo2.eval.sandbox` (one process each, parallel over the cores).
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

from olmo2.eval import metrics
from olmo2.eval.formats import Request
from olmo2.eval.sandbox import Limits, run_many
from olmo2.eval.tasks.base import Task, TaskConfig, read_jsonl

ASSISTANT_PREFIX = "Here is the completed function:\n\n```python\n"
HUMANEVAL_STOP = ("\nclass", "\nif", "\nprint", "\n#", "\n```", "\n```\n\n", "<|eot_id|>")
MBPP_STOP = (
    "\nclass",
    "\nassert",
    '\n"""',
    "\nprint",
    "\nif",
    "\n```",
    "\n#",
    "\n<|/",
    "<|eot_id|>",
)
SAMPLING_SEED = 1234


@dataclass(frozen=True)
class Sampling:
    n: int = 1
    temperature: float = 0.0
    top_p: float | None = None
    ks: tuple[int, ...] = (1,)


GREEDY = Sampling()
TULU = Sampling(n=20, temperature=0.8, top_p=0.95, ks=(1, 10))


@dataclass
class CodeDoc:
    prompt: str
    """What the model continues."""
    code: str
    """The start of the program the completion continues (HumanEval: the prompt itself)."""
    tests: str
    """Appended after the completion to make the program."""
    native_id: object = None


def read_jsonl_gz(path: Path, hub_id: str) -> list[dict]:
    if path.is_file() and path.suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    return read_jsonl(path, hub_id)


class CodeTask(Task):
    stop: tuple[str, ...] = HUMANEVAL_STOP
    max_gen_toks = 512
    timeout_s = 10.0

    def __init__(self, key: str, config: TaskConfig, sampling: Sampling):
        self.key, self.config, self.sampling = key, config, sampling
        self.sandbox_cache: str | None = None
        if max(sampling.ks) > sampling.n:
            raise ValueError(f"{key}: pass@{max(sampling.ks)} needs n >= {max(sampling.ks)}")

    def prepare(self, harness=None, **_) -> None:
        """Outcomes are cached beside the harness's answers (`--cache`)."""
        if harness is not None and harness.cache_path:
            self.sandbox_cache = str(harness.cache_path)

    def requests(self, docs: list[CodeDoc]) -> list[Request]:
        s = self.sampling
        return [
            Request(
                d.prompt,
                doc_id=i,
                idx=j,
                kind="generate",
                stop=self.stop,
                max_gen_toks=self.max_gen_toks,
                chat_query=d.prompt,
                assistant_prefix=ASSISTANT_PREFIX + d.code,
                temperature=s.temperature,
                top_p=s.top_p,
                seed=SAMPLING_SEED,
            )  # fmt: skip
            for i, d in enumerate(docs)
            for j in range(s.n)
        ]

    def programs(self, docs: list[CodeDoc], requests, results) -> list[str]:
        out = []
        for r, completion in zip(requests, results, strict=True):
            d = docs[r.doc_id]
            out.append(f"{d.code}{completion}\n{d.tests}")
        return out

    def score(self, docs, requests, results) -> dict[str, float]:
        outcomes = run_many(
            self.programs(docs, requests, results), Limits(timeout_s=self.timeout_s),
            cache_path=self.sandbox_cache,
        )  # fmt: skip
        passed = [0] * len(docs)
        for r, o in zip(requests, outcomes, strict=True):
            passed[r.doc_id] += o.passed
        n = self.sampling.n
        out = {
            f"pass_at_{k}": sum(metrics.pass_at_k(n, c, k) for c in passed) / len(docs)
            for k in self.sampling.ks
        }
        out["num_docs"] = len(docs)
        return out


class HumanEval(CodeTask):
    hub_id = "openai/openai_humaneval"

    def load_docs(self, data_dir: Path) -> list[CodeDoc]:
        rows = read_jsonl_gz(data_dir / "eval" / "humaneval" / "HumanEval.jsonl.gz", self.hub_id)
        return [humaneval_doc(r) for r in rows]


def humaneval_doc(row: dict) -> CodeDoc:
    tests = f"{row['test']}\ncheck({row['entry_point']})\n"
    return CodeDoc(row["prompt"], row["prompt"], tests, row["task_id"])


class HumanEvalPlus(HumanEval):
    """EvalPlus's 80× more tests per problem; not in the shared data (`eval/humanevalplus/
    test.jsonl` under --data-dir, or the hub)."""

    hub_id = "evalplus/humanevalplus"
    timeout_s = 20.0

    def load_docs(self, data_dir: Path) -> list[CodeDoc]:
        rows = read_jsonl(data_dir / "eval" / "humanevalplus" / "test.jsonl", self.hub_id)
        return [humaneval_doc(r) for r in rows]


class MBPP(CodeTask):
    hub_id = "google-research-datasets/mbpp:full"
    stop = MBPP_STOP

    def load_docs(self, data_dir: Path) -> list[CodeDoc]:
        rows = read_jsonl(data_dir / "eval" / "mbpp" / "mbpp.jsonl", self.hub_id)
        return [mbpp_doc(r) for r in rows if 11 <= r["task_id"] <= 510]


def mbpp_doc(row: dict) -> CodeDoc:
    code = row["code"].replace("\r\n", "\n")
    head = code[: code.index(":") + 1]
    tests = "\n".join([row.get("test_setup_code") or "", *row["test_list"]]) + "\n"
    return CodeDoc(f"{row['text']}\n{head}", head, tests, row["task_id"])


def _make(cls, key: str, sampling: Sampling):
    primary = f"pass_at_{max(sampling.ks)}"

    def make(**overrides):
        cfg = TaskConfig(**{**TaskConfig("test", 0, primary).__dict__, **overrides})
        return cls(key, cfg, sampling)

    return make


TASKS = {
    f"{name}::{regime}": _make(cls, f"{name}::{regime}", sampling)
    for name, cls in (
        ("codex_humaneval", HumanEval),
        ("codex_humanevalplus", HumanEvalPlus),
        ("mbpp", MBPP),
    )
    for regime, sampling in (("none", GREEDY), ("tulu", TULU))
}
