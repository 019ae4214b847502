"""Row readers for post-training: chat / instruction rows (SFT), preference pairs (DPO) and
verifiable prompts (GRPO), with the OLMo 2 chat template and bad-row accounting.

Files: `.jsonl`, `.jsonl.gz` or `.json` (a list of rows). Accepted row forms:

- SFT: `{"messages": [{"role", "content"}, ...]}` or Alpaca-style
  `{"instruction", "input"?, "output"}` (user = instruction + "\\n\\n" + input).
- DPO: `{"prompt": str, "chosen": str, "rejected": str}`; `{"messages": [...], "chosen": str,
  "rejected": str}`; `{"chosen": [messages], "rejected": [messages]}` (Tülu preference mixes:
  the prompt is the shared prefix); hh-rlhf strings `"\\n\\nHuman: …\\n\\nAssistant: …"`;
  `{"instruction", "input"?, "chosen", "rejected"}` (rasbt preference data).
- GRPO: `{"messages": [...], "ground_truth": str, "dataset": str}` (open-instruct RLVR form).

A bad row (no assistant turn, empty chosen/rejected, unknown verifier, prompt longer than
the limit, ...) is counted by reason and reported, or, with `strict`, raises `ValueError`
naming the file and the 1-based row number.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from olmo2.post.losses import IGNORE
from olmo2.post.rewards import check_dataset
from olmo2.tokenizer import Tokenizer, render_chat
from olmo2.train.config import check_batch

log = logging.getLogger(__name__)


@dataclass
class PostDataSection:
    """The `data:` section shared by `olmo2 sft|dpo|grpo` recipes."""

    paths: list[str] = field(default_factory=list)
    """Row files (.jsonl, .jsonl.gz, .json), read in order."""
    tokenizer: str | None = None
    """tokenizer.json or a directory holding one (default: `model.load_path`)."""
    seq_len: int = 2048
    """max_seq_length: sequences are truncated to it (OLMo 2: SFT 4096, DPO 2048)."""
    global_batch_size: int = 8
    """Rows per optimizer step (SFT sequences or packed rows, DPO pairs, GRPO prompts)."""
    micro_batch_size: int = 8
    """Rows per forward/backward (GRPO: completions)."""
    seed: int = 0
    epochs: float | None = None
    """When set, trainer.max_steps = ceil(epochs × rows / global_batch_size)."""
    max_rows: int | None = None
    """Use only the first N rows (after reading all files)."""
    strict: bool = False
    """Stop at the first bad row with its row number instead of counting and skipping."""

    def validate(self) -> None:
        check_batch(self.global_batch_size, self.micro_batch_size, self.seq_len)


class RowErrors:
    """Counts bad rows by reason (or raises at the first one when strict)."""

    def __init__(self, strict: bool = False):
        self.strict, self.counts, self.first = strict, Counter(), {}

    def bad(self, where: str, reason: str, detail: str = "") -> None:
        msg = f"{where}: {reason}{': ' + detail if detail else ''}"
        if self.strict:
            raise ValueError(msg + " (drop --strict / data.strict to skip bad rows)")
        self.counts[reason] += 1
        self.first.setdefault(reason, where)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        if not self.counts:
            return "no bad rows"
        parts = [f"{n} {r} (first at {self.first[r]})" for r, n in self.counts.most_common()]
        return f"{self.total} bad rows skipped: " + "; ".join(parts)


class BadRow(ValueError):
    """A row that cannot be used; `reason` is the category counted in the report."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason, self.detail = reason, detail


# ---- files ----------------------------------------------------------------------------------


def read_rows(path: str | Path) -> Iterator[tuple[int, dict | None]]:
    """(1-based row number, row) for every row; None for a line that is not a JSON object."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: data file not found")
    if p.suffix == ".json":
        try:
            rows = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{p}: not valid JSON ({e})") from None
        if not isinstance(rows, list):
            raise ValueError(f"{p}: expected a JSON list of rows")
        for i, r in enumerate(rows, 1):
            yield i, r if isinstance(r, dict) else None
        return
    opener = gzip.open if p.suffix == ".gz" else open
    with opener(p, "rt", encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                r = None
            yield i, r if isinstance(r, dict) else None


def load_examples(paths: list[str], parse, errors: RowErrors, max_rows: int | None = None) -> list:
    """Parse rows with `parse(row) -> example` (raising `BadRow`); bad rows go to `errors`."""
    if not paths:
        raise ValueError("data.paths is empty: give at least one row file")
    out = []
    for path in paths:
        for n, row in read_rows(path):
            if max_rows is not None and len(out) >= max_rows:
                return out
            try:
                if row is None:
                    raise BadRow("not a JSON object")
                out.append(parse(row))
            except BadRow as e:
                errors.bad(f"{path}: row {n}", e.reason, e.detail)
    return out


# ---- message forms --------------------------------------------------------------------------


def _check_messages(msgs) -> list[dict]:
    if not isinstance(msgs, list) or not msgs:
        raise BadRow("messages is not a non-empty list")
    for m in msgs:
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
            raise BadRow("bad message", "each message needs role system|user|assistant")
        if not isinstance(m.get("content"), str):
            raise BadRow("bad message", "content must be a string")
    return [{"role": m["role"], "content": m["content"]} for m in msgs]


def _instruction_prompt(row: dict) -> str:
    inp = row.get("input") or ""
    return row["instruction"] + (f"\n\n{inp}" if inp else "")


def sft_messages(row: dict) -> list[dict]:
    """The conversation of an SFT row (messages or instruction/input/output)."""
    if "messages" in row:
        msgs = _check_messages(row["messages"])
    elif isinstance(row.get("instruction"), str) and isinstance(row.get("output"), str):
        msgs = [
            {"role": "user", "content": _instruction_prompt(row)},
            {"role": "assistant", "content": row["output"]},
        ]
    else:
        raise BadRow("unknown row format", "expected messages or instruction/output")
    if not any(m["role"] == "assistant" and m["content"] for m in msgs):
        raise BadRow("no assistant turn")
    return msgs


_HH = re.compile(r"\n\n(Human|Assistant): ")


def parse_hh(text: str) -> list[dict]:
    """hh-rlhf dialogue text → messages (Human → user, Assistant → assistant)."""
    parts = _HH.split(text)
    if len(parts) < 3 or parts[0].strip():
        raise BadRow("unknown row format", "hh-rlhf text must start with '\\n\\nHuman: '")
    roles = {"Human": "user", "Assistant": "assistant"}
    return [{"role": roles[r], "content": c} for r, c in zip(parts[1::2], parts[2::2])]


def preference_pair(row: dict) -> tuple[list[dict], str, str]:
    """(prompt messages, chosen reply, rejected reply) of a DPO row in any accepted form."""
    ch, rj = row.get("chosen"), row.get("rejected")
    if isinstance(ch, list) and isinstance(rj, list):
        ch, rj = _check_messages(ch), _check_messages(rj)
        if ch[-1]["role"] != "assistant" or rj[-1]["role"] != "assistant":
            raise BadRow("no assistant turn", "chosen/rejected must end with an assistant message")
        prompt, ch, rj = ch[:-1], ch[-1]["content"], rj[-1]["content"]
    elif isinstance(ch, str) and isinstance(rj, str):
        if isinstance(row.get("prompt"), str):
            prompt = [{"role": "user", "content": row["prompt"]}]
        elif "messages" in row:
            prompt = _check_messages(row["messages"])
        elif isinstance(row.get("instruction"), str):
            prompt = [{"role": "user", "content": _instruction_prompt(row)}]
        elif ch.startswith("\n\nHuman: "):
            c, r = parse_hh(ch), parse_hh(rj)
            if c[-1]["role"] != "assistant" or r[-1]["role"] != "assistant":
                raise BadRow("no assistant turn")
            if c[:-1] != r[:-1]:
                raise BadRow("chosen and rejected differ before the last reply")
            prompt, ch, rj = c[:-1], c[-1]["content"], r[-1]["content"]
        else:
            raise BadRow(
                "unknown row format", "expected prompt|messages|instruction with chosen/rejected"
            )
    else:
        raise BadRow("missing chosen/rejected")
    if not ch.strip() or not rj.strip():
        raise BadRow("empty chosen/rejected")
    if not prompt or prompt[-1]["role"] == "assistant":
        raise BadRow("no prompt", "the prompt must end with a user/system turn")
    return prompt, ch, rj


@dataclass
class PromptRow:
    messages: list[dict]
    ground_truth: str
    dataset: str


def prompt_row(row: dict) -> PromptRow:
    """A GRPO prompt row; a trailing assistant message (a reference answer) is dropped."""
    msgs = _check_messages(row.get("messages"))
    if msgs[-1]["role"] == "assistant":
        msgs = msgs[:-1]
    if not msgs:
        raise BadRow("no prompt")
    gt, ds = row.get("ground_truth"), row.get("dataset")
    if isinstance(gt, list) and len(gt) == 1:  # some RLVR sets wrap the answer in a list
        gt = gt[0]
    if isinstance(ds, list) and len(ds) == 1:
        ds = ds[0]
    if not isinstance(gt, str) or not isinstance(ds, str):
        raise BadRow("missing ground_truth/dataset")
    try:
        check_dataset(ds)
    except ValueError as e:
        raise BadRow("unknown verifier dataset", str(e)) from None
    return PromptRow(msgs, gt, ds)


# ---- tokenization ---------------------------------------------------------------------------


def encode_labelled(
    tok: Tokenizer, messages: list[dict], max_len: int, last_only: bool = False
) -> tuple[list[int], list[int], int]:
    """Token ids of the rendered chat, aligned next-token labels (−100 except where the
    *next* token lies in an assistant content+EOS span; only the last span with
    `last_only`), and the number of prompt tokens before the first trained token.
    Truncated to `max_len`; raises `BadRow` when nothing trainable is left."""
    text, spans = render_chat(messages)
    if last_only:
        spans = spans[-1:]
    enc = tok.backend.encode(text, add_special_tokens=False)
    train = [
        any(s < span_end and span_start < e for span_start, span_end in spans)
        for s, e in enc.offsets
    ]
    ids = enc.ids[:max_len]
    labels = [ids[t + 1] if train[t + 1] else IGNORE for t in range(len(ids) - 1)] + [IGNORE]
    first = next((t for t, m in enumerate(train) if m), len(train))
    if first >= max_len:
        raise BadRow("prompt longer than the limit", f"{first} prompt tokens > seq_len {max_len}")
    if all(lab == IGNORE for lab in labels):
        raise BadRow("no trainable tokens")
    return ids, labels, first


# ---- GSM8K → RLVR prompts -------------------------------------------------------------------


def gsm8k_answer(answer: str) -> str:
    """The final number of a GSM8K solution ("... #### 1,234" → "1234")."""
    if "####" not in answer:
        raise BadRow("no '####' answer")
    return answer.split("####")[-1].strip().replace(",", "")


def gsm8k_prompt_rows(src: str | Path, errors: RowErrors | None = None) -> list[dict]:
    """GSM8K `{question, answer}` rows → RLVR rows `{messages, ground_truth, dataset:"gsm8k"}`.

    The user turn is the question followed by the instruction to end with the answer, the
    zero-shot form of the Tülu 3 GSM8K ground-truth set (which prepends 8 CoT exemplars);
    the verifier takes the last number, so either form is graded the same way.
    """
    errors = errors or RowErrors()
    out = []
    for n, row in read_rows(src):
        try:
            if (
                row is None
                or not isinstance(row.get("question"), str)
                or not isinstance(row.get("answer"), str)
            ):
                raise BadRow("unknown row format", "expected question/answer")
            q = row["question"].strip() + '\nSolve step by step and end with "So the answer is N."'
            out.append(
                {
                    "messages": [{"role": "user", "content": q}],
                    "ground_truth": gsm8k_answer(row["answer"]),
                    "dataset": "gsm8k",
                }
            )
        except BadRow as e:
            errors.bad(f"{src}: row {n}", e.reason, e.detail)
    return out


def write_jsonl(rows: list[dict], path: str | Path) -> None:
    from olmo2.utils import write_text_atomic

    write_text_atomic(Path(path), "".join(json.dumps(r) + "\n" for r in rows))
