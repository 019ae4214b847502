"""Evaluation speed against lm-evaluation-harness's `hf` backend (HFLM over transformers), on
the same weights and the same OLMES requests, and the code sandbox's throughput.

    .venv/bin/python bench/eval.py [--bench ll gen sandbox] [--sizes debug 100m]
        [--tasks arc_easy:rc::olmes ...] [--limit 20] [--gen-limit 100] [--max-gen-toks 128]
        [--repeats 2] [--device cpu|cuda]

* `ll`: log-likelihood requests/s of olmo2's harness and of HFLM.loglikelihood, the ratio
  (best of N, measured in the same run) and the largest log-prob difference (they must agree).
* `gen`: greedy GSM8K generation (8-shot prompts, `--gen-limit` documents, at most
  `--max-gen-toks` new tokens, the task's stop strings): generated tokens/s of
  Harness.generate and of HFLM.generate_until, the ratio, and how many completions agree.
* `sandbox`: programs/s running the 164 HumanEval canonical solutions with their tests.

Needs lm-eval (`pip install lm-eval==0.4.13`) for `ll` and `gen`, and the shared data.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SIZES, best_of, best_of_interleaved, header  # noqa: E402

from olmo2.eval.harness import Harness  # noqa: E402
from olmo2.eval.tasks import get_task  # noqa: E402
from olmo2.model.hf import save_pretrained  # noqa: E402
from olmo2.model.transformer import Olmo2  # noqa: E402
from olmo2.tokenizer import Tokenizer  # noqa: E402
from olmo2.utils import data_dir  # noqa: E402


def requests(tasks: list[str], ddir: Path, limit: int) -> list[tuple[str, str]]:
    out = []
    for key in tasks:
        task = get_task(key)
        out += [(r.context, r.continuation) for r in task.requests(task.docs(ddir, limit))]
    return out


def checkpoint(size: str, tok, tmp: str, device: str):
    cfg = replace(
        SIZES[size],
        vocab_size=100352,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        max_seq_len=2048,
    )
    torch.manual_seed(0)
    model = Olmo2.build(cfg).eval()
    path = save_pretrained(model, Path(tmp) / "ckpt", tokenizer=tok)
    return model.to(device), path


def race(size: str, tok, args, ours, theirs):
    """(olmo2 seconds, lm-eval seconds, olmo2 outputs, lm-eval outputs): best of N of
    `ours(model)` and `theirs(hflm)` on one random checkpoint, measured in the same run."""
    from lm_eval.models.huggingface import HFLM

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        model, path = checkpoint(size, tok, tmp, args.device)
        hflm = HFLM(pretrained=str(path), batch_size=args.batch_size, device=args.device,
                    dtype="float32", max_length=2048)  # fmt: skip
        t_ours, t_theirs = best_of_interleaved(
            [
                lambda: out.__setitem__("ours", ours(model)),
                lambda: out.__setitem__("theirs", theirs(hflm)),
            ],
            args.repeats,
        )
    return t_ours, t_theirs, out["ours"], out["theirs"]


def bench_loglikelihood(args, ddir, tok) -> None:
    from lm_eval.api.instance import Instance

    pairs = requests(args.tasks, ddir, args.limit)
    inst = [Instance("loglikelihood", {}, p, i) for i, p in enumerate(pairs)]
    header(
        f"log-likelihood requests/s, fp32 {args.device}, {len(pairs)} requests of {', '.join(args.tasks)}"
    )
    print(
        f"{'size':<6} {'olmo2 req/s':>12} {'lm-eval hf req/s':>17} {'ratio':>6} {'max |dlogp|':>12}"
    )
    for size in args.sizes:
        t_ours, t_theirs, ours, theirs = race(
            size, tok, args,
            lambda m: Harness(m, tok, progress=False).loglikelihood(pairs),
            lambda hf: hf.loglikelihood(inst, disable_tqdm=True),
        )  # fmt: skip
        diff = max(abs(a.logprob - b[0]) for a, b in zip(ours, theirs, strict=True))
        n = len(pairs)
        print(
            f"{size:<6} {n / t_ours:>12.1f} {n / t_theirs:>17.1f} {t_theirs / t_ours:>5.2f}x {diff:>12.2e}"
        )


def _without_special(text: str, tok) -> str:
    """`text` less the added special tokens' strings (a random model emits e.g. <|fim_prefix|>,
    which lm-eval's HFLM drops when it decodes and olmo2's harness keeps)."""
    for t in tok.backend.get_added_tokens_decoder().values():
        text = text.replace(t.content, "")
    return text


def bench_generate(args, ddir, tok) -> None:
    from lm_eval.api.instance import Instance

    task = get_task("gsm8k::olmes")
    docs = task.docs(ddir, args.gen_limit)
    reqs = [replace(r, max_gen_toks=args.max_gen_toks) for r in task.requests(docs)]
    kw = {"until": list(reqs[0].stop), "max_gen_toks": args.max_gen_toks, "do_sample": False}
    inst = [Instance("generate_until", {}, (r.context, kw), i) for i, r in enumerate(reqs)]
    header(f"greedy generation, fp32 {args.device}: {len(reqs)} GSM8K 8-shot prompts, "
           f"<= {args.max_gen_toks} new tokens")  # fmt: skip
    print(
        f"{'size':<6} {'olmo2 tok/s':>12} {'lm-eval hf tok/s':>17} {'ratio':>6} {'same text':>10}"
    )
    for size in args.sizes:
        t_ours, t_theirs, ours, theirs = race(
            size, tok, args,
            lambda m: Harness(m, tok, batch_size=args.batch_size, progress=False).generate(reqs),
            lambda hf: hf.generate_until(inst, disable_tqdm=True),
        )  # fmt: skip
        ours = [_without_special(t, tok) for t in ours]  # HFLM decodes skipping them
        rate = sum(len(tok.encode(t)) for t in ours) / t_ours
        rate_theirs = sum(len(tok.encode(t)) for t in theirs) / t_theirs
        same = sum(a == b for a, b in zip(ours, theirs, strict=True))
        print(
            f"{size:<6} {rate:>12.1f} {rate_theirs:>17.1f} {rate / rate_theirs:>5.2f}x {same:>4}/{len(reqs)}"
        )


def bench_sandbox(args, ddir) -> None:
    from olmo2.eval.sandbox import Limits, isolation_prefix, run_many
    from olmo2.eval.tasks.code import humaneval_doc, read_jsonl_gz

    rows = read_jsonl_gz(ddir / "eval" / "humaneval" / "HumanEval.jsonl.gz", "")
    progs = [(d := humaneval_doc(r)).code + r["canonical_solution"] + "\n" + d.tests for r in rows]
    header(f"sandbox: {len(progs)} HumanEval canonical solutions, {os.cpu_count()} workers, "
           f"namespaces {'on' if isolation_prefix() else 'off'}")  # fmt: skip
    out: list = []

    def run():
        out[:] = run_many(progs, Limits(timeout_s=20))

    t = best_of(run, args.repeats)
    print(f"{len(progs) / t:.1f} programs/s ({sum(o.passed for o in out)}/{len(progs)} passed)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--bench", nargs="+", default=["ll", "gen", "sandbox"], choices=["ll", "gen", "sandbox"]
    )
    ap.add_argument("--sizes", nargs="+", default=list(SIZES))
    ap.add_argument(
        "--tasks",
        nargs="+",
        default=["arc_easy:rc::olmes", "hellaswag:rc::olmes", "piqa:mc::olmes"],
    )
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--gen-limit", type=int, default=100, help="GSM8K documents for `gen`")
    ap.add_argument("--max-gen-toks", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8, help="batch size of both sides")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data-dir")
    args = ap.parse_args()
    ddir = data_dir(args.data_dir)
    tok = Tokenizer.from_file(ddir / "tokenizers" / "allenai_dolma2.json")
    if "ll" in args.bench:
        bench_loglikelihood(args, ddir, tok)
    if "gen" in args.bench:
        bench_generate(args, ddir, tok)
    if "sandbox" in args.bench:
        bench_sandbox(args, ddir)


if __name__ == "__main__":
    main()
