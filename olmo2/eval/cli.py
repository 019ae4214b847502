"""`olmo2 eval`: OLMES-style evaluation of a checkpoint.

olmo2 eval --model CKPT --tasks core_9mcqa::olmes,mmlu::olmes --limit 100 --output r.json
olmo2 eval --model CKPT --perplexity held_out.jsonl
olmo2 eval --model RUN_DIR_OR_HUB_ID --all-checkpoints --tasks arc_easy::olmes --limit 200
olmo2 eval --list-tasks
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)


def add_arguments(p) -> None:
    p.add_argument("--model", help="checkpoint directory or hub id")
    p.add_argument("--tasks", default="", help="comma-separated task or suite keys")
    p.add_argument(
        "--limit",
        type=parse_limit,
        help="documents per task: N (a seeded sample, in place of the task's own limit), "
        "or 'all' / 0 for every document (default: the task's limit)",
    )
    p.add_argument("--batch-size", default="auto", help="rows per forward, or 'auto' (default)")
    p.add_argument(
        "--truncate",
        action="store_true",
        help="keep the last tokens of a prompt longer than the model's context (default: refuse)",
    )
    p.add_argument("--output", help="write results JSON here")
    p.add_argument("--data-dir", help="shared data directory (default $OLMO2_DATA_DIR)")
    p.add_argument("--dump-requests", help="write every request (context, continuation) as JSONL")
    p.add_argument("--chat", action="store_true", help="render prompts with the chat template")
    p.add_argument("--tokenizer", help="tokenizer.json, if the checkpoint has none")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--dtype", default=None, help="float32 (CPU default), bfloat16, ...")
    p.add_argument(
        "--backend",
        choices=["olmo2", "vllm"],
        default="olmo2",
        help="the engine behind the model calls: olmo2's (default) or vLLM (olmo2[vllm] extra)",
    )
    p.add_argument(
        "--quantize",
        choices=["int8"],
        default=None,
        help="int8 dynamic linear layers (CPU; --device defaults to cpu)",
    )
    p.add_argument("--cache", help="sqlite file caching model answers across runs")
    p.add_argument(
        "--perplexity",
        action="append",
        default=[],
        metavar="FILE",
        help="also report bits per byte over a text/JSONL(.gz) file or a uint32 token file (.npy);"
        " repeatable",
    )
    p.add_argument("--list-tasks", action="store_true", help="print every task and suite key")
    p.add_argument("--judge-url", help="OpenAI-compatible endpoint of the judge (judged tasks)")
    p.add_argument("--judge-model", help="the judge's model name at --judge-url")
    p.add_argument(
        "--judge-key-env",
        default="OPENAI_API_KEY",
        help="environment variable holding the judge's API key (default OPENAI_API_KEY)",
    )
    p.add_argument(
        "--all-checkpoints",
        action="store_true",
        help="evaluate every checkpoint of the run directory / hub repo given as --model and "
        "plot each metric against tokens; --output is then a directory (default: "
        "RUN_DIR/explorer); an interrupted sweep resumes",
    )


def run(args) -> int:
    from olmo2.eval.tasks import all_keys

    if args.list_tasks:
        print("\n".join(all_keys()))
        return 0
    keys = [k.strip() for k in args.tasks.split(",") if k.strip()]
    if not keys and not args.perplexity:
        raise ValueError("--tasks: give at least one task (see --list-tasks) or --perplexity")
    batch_size = _batch_size(args.batch_size)
    from olmo2.utils import data_dir

    if args.data_dir and not Path(args.data_dir).is_dir():
        raise FileNotFoundError(f"--data-dir: {args.data_dir} is not a directory")
    ddir = data_dir(args.data_dir) if keys else None
    if args.dump_requests and not args.model:
        return _dump_only(args, keys, ddir)
    if not args.model:
        raise ValueError("--model: required (a checkpoint directory or hub id)")
    if args.backend == "vllm":
        return _run_vllm(args, keys, ddir, batch_size)
    if args.all_checkpoints:
        return _explore(args, keys, ddir, batch_size)
    model, tok, identity = _load(args)
    from olmo2.eval.harness import Harness
    from olmo2.model.reward import Olmo2Reward

    if args.perplexity and isinstance(model, Olmo2Reward):
        raise ValueError("--perplexity needs a causal LM; the model given is a reward model")

    harness = Harness(
        model, tok, batch_size=batch_size, cache_path=args.cache, truncate=args.truncate
    )
    return _evaluate_and_report(args, keys, ddir, harness, identity, model)


def _run_vllm(args, keys, ddir, batch_size) -> int:
    """`--backend vllm`: the checkpoint's config and tokenizer here, its weights in vLLM."""
    from olmo2.eval.backend_harness import BackendHarness, files_fingerprint
    from olmo2.infer.backends import BackendUnavailable, load_backend
    from olmo2.model.hf import read_config, resolve
    from olmo2.model.reward import is_reward_checkpoint
    from olmo2.tokenizer import Tokenizer

    if args.perplexity or args.all_checkpoints or args.quantize:
        raise ValueError("--backend vllm runs --tasks on one checkpoint (no --perplexity, "
                         "--all-checkpoints or --quantize)")  # fmt: skip
    path = resolve(args.model)
    if is_reward_checkpoint(path):
        raise ValueError(
            f"--backend vllm: {path} is a reward model; score it with the olmo2 backend"
        )
    cfg = read_config(path)
    tok_file = Path(args.tokenizer) if args.tokenizer else path / "tokenizer.json"
    if not tok_file.is_file():
        raise ValueError(f"--tokenizer: {path} has no tokenizer.json; pass one")
    tok = Tokenizer.from_file(tok_file)
    # one position more than the context: vLLM scores a prompt by asking for one new token,
    # whose position (max_seq_len, never read) is past config.json's limit; RoPE has none
    os.environ.setdefault("VLLM_ALLOW_LONG_MAX_MODEL_LEN", "1")
    options = {"dtype": args.dtype or "float32", "max_model_len": cfg.max_seq_len + 1}
    try:
        backend = load_backend("vllm", path, **options)
    except BackendUnavailable as e:
        raise ValueError(str(e)) from None
    with backend:
        harness = BackendHarness(
            backend, tok, cfg, files_fingerprint(path), batch_size, args.cache,
            truncate=args.truncate,
        )  # fmt: skip
        identity = {"path": str(args.model), "backend": "vllm", "config": cfg.to_dict(),
                    "dtype": options["dtype"], "tokenizer": str(tok_file)}  # fmt: skip
        return _evaluate_and_report(args, keys, ddir, harness, identity, None)


def _evaluate_and_report(args, keys, ddir, harness, identity: dict, model) -> int:
    from olmo2.eval.harness import evaluate

    identity["fingerprint"] = harness.fingerprint
    t0 = time.time()
    results = {"tasks": {}, "suites": {}}
    if keys:
        results = evaluate(
            harness, keys, ddir, args.limit, args.chat, args.dump_requests, _judge(args)
        )
    results["perplexity"] = _perplexity(
        model, harness.tokenizer, args.perplexity, args.limit or None
    )
    results["model"] = identity
    results["run"] = {
        "tasks": keys,
        "limit": "all" if args.limit == 0 else args.limit,
        "batch_size": args.batch_size,
        "chat": args.chat,
        "judge": {"url": args.judge_url, "model": args.judge_model} if args.judge_url else None,
        "seconds": round(time.time() - t0, 2),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    print_table(results)
    if args.output:
        from olmo2.utils import write_text_atomic

        write_text_atomic(args.output, json.dumps(results, indent=2) + "\n")
        print(f"results written to {args.output}")
    print(f"evaluated {len(results['tasks'])} tasks in {results['run']['seconds']:.1f}s")
    return 0


def parse_limit(value: str) -> int:
    """`--limit N|all|0` -> N, with 0 meaning every document (as in OLMES)."""
    if value.strip().lower() == "all":
        return 0
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0 or 'all', got {value!r}")
    return n


def _judge(args):
    if not (args.judge_url or args.judge_model):
        return None
    if not (args.judge_url and args.judge_model):
        raise ValueError("--judge-url and --judge-model go together")
    from olmo2.eval.judge import Judge

    return Judge.from_env(args.judge_url, args.judge_model, args.judge_key_env)


def _batch_size(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        n = int(value)
    except ValueError:
        raise ValueError(
            f"--batch-size: expected a positive integer or 'auto', got {value!r}"
        ) from None
    if n < 1:
        raise ValueError(f"--batch-size: expected a positive integer, got {n}")
    return n


def _explore(args, keys: list[str], ddir, batch_size) -> int:
    """--all-checkpoints: the checkpoint explorer over args.model's checkpoints."""
    from olmo2.eval import explorer
    from olmo2.eval.harness import Harness, evaluate

    if not keys:
        raise ValueError("--all-checkpoints: give --tasks")
    ckpts = explorer.find_checkpoints(args.model)
    if args.output:
        out = Path(args.output)
    elif Path(args.model).is_dir():
        out = Path(args.model) / "explorer"
    else:
        out = Path("explorer-" + str(args.model).replace("/", "--"))
    spec = {"tasks": keys, "limit": args.limit, "chat": args.chat, "dtype": args.dtype,
            "quantize": args.quantize}  # fmt: skip
    print(f"{len(ckpts)} checkpoints in {args.model}; results under {out}")

    def evaluate_one(ckpt) -> dict:
        model, tok, identity = _load(args, ckpt.source, ckpt.revision)
        harness = Harness(
            model, tok, batch_size=batch_size, cache_path=args.cache, truncate=args.truncate
        )
        results = evaluate(harness, keys, ddir, args.limit, args.chat, judge=_judge(args))
        results["model"] = {**identity, "fingerprint": harness.fingerprint}
        return results

    sweep = explorer.explore(ckpts, evaluate_one, out, spec)
    paths = explorer.write_outputs(sweep, out, f"Checkpoints of {args.model}")
    headers, rows = explorer.sweep_table(sweep)
    _print_rows(headers, rows, "olmo2 eval --all-checkpoints")
    print(f"sweep written to {paths['json']} and {paths['html']}")
    return 0


def _print_rows(headers: list[str], rows: list[list], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for h in headers:
        table.add_column(h, justify="left" if h in ("checkpoint", "stage") else "right")
    for r in rows:
        table.add_row(*(f"{c:.4f}" if isinstance(c, float) else str(c) for c in r))
    Console().print(table)


def _load(args, source: str | None = None, revision: str | None = None):
    """(model, tokenizer, identity) of `source` (default --model) at hub `revision`."""
    import torch

    import olmo2
    from olmo2.tokenizer import Tokenizer

    source = source or args.model

    default = "cpu" if args.quantize or not torch.cuda.is_available() else "cuda"
    device = args.device or default
    if args.quantize and device != "cpu":
        raise ValueError(f"--quantize {args.quantize} runs on CPU only (use --device cpu)")
    if args.quantize and args.dtype not in (None, "float32"):
        raise ValueError(f"--quantize {args.quantize} needs --dtype float32, got {args.dtype}")
    model, tok = olmo2.load(source, revision=revision, dtype=args.dtype, device=device)
    if args.tokenizer:
        tok = Tokenizer.from_file(args.tokenizer)
    if tok is None:
        raise ValueError(f"--tokenizer: {source} has no tokenizer.json; pass one")
    cfg = model.config
    identity = {
        "path": str(source),
        "revision": revision,
        "config": cfg.to_dict(),
        "num_params": sum(p.numel() for p in model.parameters()),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "device": device,
        "quantize": args.quantize,
        "tokenizer": getattr(tok, "source", ""),
    }
    if args.quantize:  # after counting parameters: packed int8 weights are not parameters
        from olmo2.infer.quantize import quantize_model

        quantize_model(model, args.quantize)
    return model, tok, identity


def _dump_only(args, keys, ddir) -> int:
    """Write the requests without a model (prompts do not depend on it unless --chat)."""
    from olmo2.eval.harness import _dump, chat_request
    from olmo2.eval.tasks import get_task, resolve

    if args.chat and not args.tokenizer:
        raise ValueError("--chat with --dump-requests and no --model needs --tokenizer")
    tok = None
    if args.chat:
        from olmo2.tokenizer import Tokenizer

        tok = Tokenizer.from_file(args.tokenizer)
    plan = []
    for key in resolve(keys)[0]:
        task = get_task(key)
        docs = task.docs(ddir, args.limit)
        reqs = task.requests(docs)
        plan.append((task, docs, [chat_request(r, tok) for r in reqs] if tok else reqs))
    _dump(plan, args.dump_requests)
    print(
        f"wrote {sum(len(r) for _, _, r in plan)} requests of {len(plan)} tasks to {args.dump_requests}"
    )
    return 0


def _perplexity(model, tok, paths: list[str], limit: int | None) -> dict:
    """Bits per byte of each file: token files (.npy, flat uint32) in max_seq_len chunks,
    text/JSONL files document by document; --limit caps chunks/documents."""
    from olmo2.eval import perplexity as ppl

    out = {}
    for p in paths:
        if p.endswith(".npy"):
            chunks = ppl.token_file_chunks(p, model.config.max_seq_len, limit)
            res = ppl.chunks_bpb(model, chunks, ppl.token_byte_lengths(tok), progress=True)
        else:
            res = ppl.documents_bpb(model, tok, ppl.read_documents(p)[:limit])
        out[p] = res.as_dict()
    return out


SHORT = {
    "acc_raw": "raw",
    "acc_per_token": "tok",
    "acc_per_char": "char",
    "acc_per_byte": "byte",
    "acc_uncond": "uncond",
}


def print_table(results: dict, max_members: int = 10) -> None:
    """One row per task and suite. Members of large suites (MMLU's 57 subjects, BBH's 27
    subtasks) are folded into their suite's row; the JSON keeps every task."""
    from rich.console import Console
    from rich.table import Table

    folded = {
        m
        for s in results["suites"].values()
        if len(s.get("members", ())) > max_members
        for m in s["members"]
    }
    table = Table(title="olmo2 eval")
    for col in ("task", "formulation", "metric", "score", "docs", "other metrics / note"):
        table.add_column(
            col, justify="right" if col in ("score", "docs") else "left", no_wrap=col == "task"
        )
    for key, r in results["tasks"].items():
        if key in folded:
            continue
        m = r["metrics"]
        skip = {r["primary_metric"], "num_docs", "bits_per_byte_corr"}
        others = " ".join(f"{SHORT.get(k, k)} {v:.3f}" for k, v in m.items() if k not in skip)
        form = key.split("::")[0].split(":")[1] if ":" in key.split("::")[0] else ""
        table.add_row(
            key, form, r["primary_metric"], f"{r['primary_score']:.4f}", str(m["num_docs"]), others
        )
    for key, s in results["suites"].items():
        n = len(s.get("members", ()))
        note = f"best: {s['best'].split('::')[0]}" if "best" in s else f"{s['aggregate']} over {n}"
        table.add_row(
            f"[bold]{key}", "", s["aggregate"], f"[bold]{s['score']:.4f}", str(s["num_docs"]), note
        )
    for path, p in results.get("perplexity", {}).items():
        table.add_row(
            Path(path).name,
            "",
            "bits_per_byte",
            f"{p['bits_per_byte']:.4f}",
            "",
            f"{p['tokens']} tokens",
        )
    Console().print(table)
