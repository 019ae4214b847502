"""Evaluate one checkpoint for the demo's report: held-out bits-per-byte, a few OLMES tasks,
the verifiable task's pass rate, and sample generations; and every stage-1 checkpoint through
the checkpoint explorer (`olmo2.eval.explorer`: bits per byte and the OLMES tasks against
tokens seen). The demo records each result in its state file, so a resumed demo does not
evaluate a stage twice."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from olmo2.demo.tasks import addition_prompts
from olmo2.infer.generate import SamplingConfig, generate_text
from olmo2.model.hf import load
from olmo2.post.rewards import add_score

BASE_PROMPTS = ["The king said", "def main():"]
CHAT_PROMPTS = ["What is 3+4?", "Give three tips for staying healthy."]


@torch.no_grad()
def addition_pass_rate(model, tok, add_max: int) -> float:
    """Greedy pass@1 over every `a+b=` prompt, rendered with the chat template."""
    rows = addition_prompts(add_max)
    prompts = [tok.apply_chat_template(r["messages"], add_generation_prompt=True) for r in rows]
    replies = generate_text(model, tok, prompts, SamplingConfig(max_new_tokens=4))
    return sum(add_score(c, r["ground_truth"]) for c, r in zip(replies, rows)) / len(rows)


@torch.no_grad()
def samples(model, tok, chat: bool, max_new_tokens: int) -> list[tuple[str, str]]:
    cfg = SamplingConfig(max_new_tokens=max_new_tokens)
    if chat:
        msgs = [[{"role": "user", "content": p}] for p in CHAT_PROMPTS]
        rendered = [tok.apply_chat_template(m, add_generation_prompt=True) for m in msgs]
        return list(zip(CHAT_PROMPTS, generate_text(model, tok, rendered, cfg)))
    return list(zip(BASE_PROMPTS, generate_text(model, tok, BASE_PROMPTS, cfg)))


def explore_run(run_dir: Path, out_dir: Path, cfg, heldout: list[str], data_dir) -> dict:
    """The explorer over `run_dir`'s checkpoints: held-out bits per byte (`heldout_bpb`) and,
    with a data directory, the demo's OLMES tasks; its outputs go to `out_dir`."""
    from olmo2.eval import explorer
    from olmo2.eval.harness import Harness, evaluate
    from olmo2.eval.perplexity import documents_bpb

    tasks = list(cfg.olmes_tasks) if data_dir is not None else []

    def evaluate_one(ckpt) -> dict:
        model, tok = load(Path(ckpt.source), device=cfg.device)
        model.eval()
        bpb = documents_bpb(model, tok, heldout, max_length=cfg.seq_len, progress=False)
        results = {"tasks": {}}
        if tasks:
            harness = Harness(model, tok, progress=False, truncate=True)
            results = evaluate(harness, tasks, data_dir, cfg.olmes_limit)
        results["tasks"]["heldout_bpb"] = {"primary_score": bpb.bits_per_byte}
        return results

    spec = {"tasks": ["heldout_bpb", *tasks], "limit": cfg.olmes_limit, "chat": False}
    sweep = explorer.explore(explorer.find_checkpoints(run_dir), evaluate_one, out_dir, spec)
    paths = explorer.write_outputs(sweep, out_dir, f"Checkpoints of {run_dir.name}")
    plots = {k.removeprefix("png:"): str(v) for k, v in paths.items() if k.startswith("png:")}
    return {"checkpoints": len(sweep["checkpoints"]), "html": str(paths["html"]), "plots": plots}


def evaluate_checkpoint(
    path: Path, cfg, heldout: list[str], data_dir: Path | None, chat: bool
) -> dict:
    """Metrics and samples of one checkpoint (see the module docstring)."""
    from olmo2.eval.harness import Harness, evaluate
    from olmo2.eval.perplexity import documents_bpb

    t0 = time.perf_counter()
    model, tok = load(path, device=cfg.device)
    model.eval()
    out: dict = {"checkpoint": str(path)}
    bpb = documents_bpb(model, tok, heldout, max_length=cfg.seq_len, progress=False)
    out["heldout_bpb"] = bpb.bits_per_byte
    if (data_dir is not None or cfg.hub) and cfg.olmes_tasks:
        # with --hub and no data directory, every task file is "missing" and read from the hub
        data_dir = data_dir or path / "no-data-dir"
        res = evaluate(
            Harness(model, tok, progress=False, truncate=True),  # few-shot prompts > seq_len
            cfg.olmes_tasks,
            data_dir,
            cfg.olmes_limit,
        )
        out["olmes"] = {k: v["primary_score"] for k, v in res["tasks"].items()}
    out["add_pass_rate"] = addition_pass_rate(model, tok, cfg.add_max)
    out["samples"] = samples(model, tok, chat, cfg.samples_tokens)
    out["seconds"] = time.perf_counter() - t0
    return out
