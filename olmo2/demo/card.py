"""The demo's report card: `DIR/report.md` + `DIR/report.html` from the recorded stages."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from olmo2.report import Report, plot_series
from olmo2.train.metrics import read_jsonl

EVAL_ORDER = [
    ("stage1", "stage 1 (pretrain)"),
    ("stage2-ingredient1", "stage 2 ingredient 1"),
    ("stage2-ingredient2", "stage 2 ingredient 2"),
    ("merged", "merged soup"),
    ("sft", "SFT"),
    ("dpo", "DPO"),
    ("grpo", "GRPO (RLVR)"),
    ("ppo", "PPO (RLVR)"),
]


def environment(cfg) -> list[list[str]]:
    import torch

    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").is_file():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    device = torch.cuda.get_device_name() if cfg.device == "cuda" else cpu
    return [
        ["preset", cfg.preset],
        ["device", f"{cfg.device}: {device}"],
        ["CPU cores / torch threads", f"{os.cpu_count()} / {torch.get_num_threads()}"],
        ["python / torch", f"{platform.python_version()} / {torch.__version__}"],
        ["model", f"d_model {cfg.d_model}, {cfg.n_layers} layers, {cfg.n_heads} heads, "
                  f"vocab {cfg.vocab_size}, seq {cfg.seq_len}"],
    ]  # fmt: skip


def eval_table(evals: dict[str, dict]) -> tuple[list[str], list[list]]:
    tasks = sorted({k for e in evals.values() for k in e.get("olmes", {})})
    headers = ["stage", "held-out bits/byte", *tasks, "addition pass@1"]
    rows = []
    for key, label in EVAL_ORDER:
        if key in evals:
            e = evals[key]
            olmes = [e.get("olmes", {}).get(t, "") for t in tasks]
            rows.append([label, e["heldout_bpb"], *olmes, e["add_pass_rate"]])
    return headers, rows


def _rl(stages: dict) -> str:
    """The run's RL stage: ppo (`olmo2 demo --rl ppo`) or grpo."""
    return "ppo" if "ppo" in stages else "grpo"


def claims(state: dict, evals: dict[str, dict], hf_check: dict | None) -> list[list[str]]:
    """The recipe's stage-to-stage claims, each checked on this run's numbers."""
    out = []

    def claim(text: str, ok: bool, detail: str) -> None:
        out.append([text, "yes" if ok else "NO", detail])

    m1 = read_jsonl(Path(state["stages"]["stage1"]["run_dir"]) / "metrics.jsonl")
    first, last = m1[0]["loss"], min(m["loss"] for m in m1[-5:])
    claim(
        "stage-1 loss falls well below its start", last < 0.7 * first, f"{first:.3f} → {last:.3f}"
    )
    for i in (1, 2):
        m = read_jsonl(Path(state["stages"][f"stage2-ingredient{i}"]["run_dir"]) / "metrics.jsonl")
        lr0, lr1 = m[0]["lr"], m[-1]["lr"]
        claim(f"anneal {i} ends at LR 0", lr1 == 0.0, f"lr {lr0:.2e} → {lr1:g}")
    ingr = [evals[f"stage2-ingredient{i}"]["heldout_bpb"] for i in (1, 2)]
    merged = evals["merged"]["heldout_bpb"]
    claim(
        "merged bits/byte ≤ mean of its ingredients",
        merged <= sum(ingr) / 2 + 1e-9,
        f"{merged:.4f} vs {sum(ingr) / 2:.4f}",
    )
    rl = _rl(evals)
    sft, after = evals["sft"]["add_pass_rate"], evals[rl]["add_pass_rate"]
    claim(f"{rl.upper()} raises the addition pass rate over SFT", after > sft,
          f"{sft:.2f} → {after:.2f}")  # fmt: skip
    if hf_check is not None:
        ok = all(v["ok"] for v in hf_check.values())
        worst = max((v.get("max_abs_diff", 0.0) for v in hf_check.values()), default=0.0)
        claim(
            "transformers loads every checkpoint (same logits)",
            ok,
            f"{len(hf_check)} checkpoints, max |Δlogit| {worst:.1e}",
        )
    return out


def training_table(state: dict) -> list[list]:
    """Per training stage: steps, tokens, first/last loss and the objective's own signal."""
    rows = []
    for key in ("stage1", "stage2-ingredient1", "stage2-ingredient2", "sft", "dpo", "rm", "grpo",
                "ppo"):  # fmt: skip
        if key not in state["stages"]:
            continue
        m = read_jsonl(Path(state["stages"][key]["run_dir"]) / "metrics.jsonl")
        if not m:
            continue
        signal = ""
        if "rewards/margin" in m[-1]:
            signal = f"margin {m[0]['rewards/margin']:.3f} → {m[-1]['rewards/margin']:.3f}"
        elif "reward" in m[-1]:
            k = max(1, len(m) // 5)
            first, last = (sum(x["reward"] for x in part) / k for part in (m[:k], m[-k:]))
            signal = f"mean reward (first/last {k} steps) {first:.2f} → {last:.2f}"
        rows.append(
            [key, m[-1]["step"], m[-1].get("tokens", ""), m[0]["loss"], m[-1]["loss"], signal]
        )
    return rows


def _plots(out: Path, state: dict, n1: int) -> list[tuple[Path, str]]:
    plots_dir = out / "plots"
    plots_dir.mkdir(exist_ok=True)
    s = state["stages"]

    def series(run: str, key: str, offset: int = 0):
        m = read_jsonl(Path(s[run]["run_dir"]) / "metrics.jsonl")
        pts = [(r["step"] + offset, r[key]) for r in m if key in r]
        return [p[0] for p in pts], [p[1] for p in pts]

    rl = _rl(s)
    pre = {"stage 1": series("stage1", "loss")}
    for i in (1, 2):
        pre[f"anneal {i}"] = series(f"stage2-ingredient{i}", "loss", n1)
    lr = {"stage 1": series("stage1", "lr")}
    for i in (1, 2):
        lr[f"anneal {i}"] = series(f"stage2-ingredient{i}", "lr", n1)
    plots = [
        (plot_series(plots_dir / "pretrain_loss.png", pre, "loss"), "pretraining loss: stage 1, then the two anneals"),
        (plot_series(plots_dir / "pretrain_lr.png", lr, "learning rate"), "learning rate: warmup + cosine, then linear to 0"),
        (plot_series(plots_dir / "sft_loss.png", {"SFT": series("sft", "loss")}, "loss"), "SFT loss (assistant tokens)"),
        (plot_series(plots_dir / "dpo.png", {"margin": series("dpo", "rewards/margin"), "accuracy": series("dpo", "rewards/accuracy")}, "reward"), "DPO reward margin and accuracy"),
        (plot_series(plots_dir / f"{rl}.png", {"reward": series(rl, "reward")}, "mean reward (10 × pass)"), f"{rl.upper()} mean reward per rollout"),
    ]  # fmt: skip
    if "explorer" in s:  # every stage-1 checkpoint, through olmo2's checkpoint explorer
        n = s["explorer"]["checkpoints"]
        for metric, png in s["explorer"]["plots"].items():
            plots.insert(2, (Path(png), f"checkpoint explorer: {metric} of the {n} stage-1 checkpoints against tokens seen"))  # fmt: skip
    return plots


def write_report(out: Path, cfg, state: dict, evals: dict, hf_check: dict | None) -> Path:
    r = Report("olmo2 demo: the OLMo 2 recipe at toy scale")
    total = sum(v["seconds"] for v in state["stages"].values())
    r.add_text(
        "Raw text → tokenizer → filtered, deduplicated, decontaminated tokens → stage-1 "
        "pretraining → two stage-2 anneals → merged soup → SFT → DPO → "
        + ("a reward model → PPO (value model from it)" if _rl(evals) == "ppo" else "GRPO")
        + " with a verifier. "
        f"Stage time in total: {total / 60:.1f} min."
    )
    headers, rows = eval_table(evals)
    r.add_table(headers, rows, title="Evaluation, stage by stage")
    r.add_table(
        ["claim", "holds", "numbers"],
        claims(state, evals, hf_check),
        title="What the recipe should show",
    )
    r.add_table(
        ["stage", "steps", "tokens", "first loss", "last loss", "objective"],
        training_table(state),
        title="Training",
    )
    r.add_table(["setting", "value"], environment(cfg), title="Environment")
    r.add_table(
        ["stage", "seconds"],
        [[k, f"{v['seconds']:.1f}"] for k, v in state["stages"].items()],
        title="Time per stage",
    )
    f = state["stages"]["prepare"]["funnel"]
    funnel = [["documents in", f["documents_in"]]]
    funnel += [[f"dropped by {k}", v] for k, v in f["filtered"].items()]
    funnel += [[f"contaminated ({k})", v] for k, v in f["contaminated"].items()]
    funnel += [[f"duplicates ({k})", v] for k, v in f["duplicates"].items()]
    funnel += [
        ["documents out", f["documents_out"]],
        ["tokens out", state["stages"]["prepare"]["tokens"]],
    ]
    r.add_table(["data funnel", "count"], funnel, title="Data")
    for name, desc in state["stages"]["posttrain-data"]["files"].items():
        r.add_text(f"`{name}`: {desc}")
    r.add_heading("Curves")
    for png, caption in _plots(out, state, cfg.stage1_steps):
        r.add_plot(png, caption)
    r.add_heading("Samples (greedy)")
    for key, label in EVAL_ORDER:
        if key in evals:
            text = "\n".join(f"> {p}\n{c!r}" for p, c in evals[key]["samples"])
            r.add_text(f"**{label}**").add_code(text)
    commands = [c for v in state["stages"].values() for c in v.get("commands", [])]
    if commands:
        r.add_heading("Commands the stages ran (recipes are in recipes/)").add_code(
            "\n".join(commands)
        )
    md, _ = r.write(out)
    return md
