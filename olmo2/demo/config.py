"""The demo's knobs: one typed config with three presets.

`tiny` is the test preset (a couple of minutes), `cpu` is `make demo` (about a quarter of an
hour on 2 cores), `gpu` is `--device cuda` (a larger model that uses a GPU's minutes). Any
field can be changed from the command line: `olmo2 demo --set stage1_steps=500`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass
class DemoConfig:
    preset: str = "cpu"
    device: str = "cpu"
    hub: bool = False
    """Post-training and evaluation sets from Hugging Face datasets (online, `datasets`
    package) where no data directory provides them; see olmo2/demo/tasks.py."""
    # ---- corpus and tokenizer
    train_chars: int = 4_000_000
    """Characters of training text (books + code) cut from the corpus."""
    code_fraction: float = 0.2
    heldout_chars: int = 120_000
    vocab_size: int = 4096
    """BPE vocabulary, special tokens included (a small vocab keeps a small model fast)."""
    # ---- model (OLMo 2 architecture at toy width)
    d_model: int = 192
    n_layers: int = 4
    n_heads: int = 3
    ffn_hidden: int = 512
    seq_len: int = 256
    precision: str = "fp32"
    # ---- stage 1: warmup + cosine whose horizon runs past the end, as OLMo 2's did
    stage1_steps: int = 260
    stage1_batch: int = 16
    stage1_lr: float = 3e-3
    stage1_warmup: int = 26
    stage1_horizon: float = 1.25
    """Cosine t_max as a multiple of the steps actually run (OLMo 2: 5T planned, 4T run)."""
    # ---- stage 2: linear anneal to 0 from stage 1's last LR, one run per ingredient seed
    anneal_steps: int = 40
    anneal_seeds: list[int] = field(default_factory=lambda: [1, 2])
    # ---- post-training
    add_max: int = 4
    """Addition operands are 0..add_max (the verifiable task). Measured on the cpu preset:
    with 0..9 (100 sums) the SFT model rarely samples a right sum and 40 GRPO steps did not
    move its pass rate; with 0..4 (25 sums) GRPO lifts it clearly."""
    add_sft_correct: float = 0.35
    """Share of SFT addition replies that are right (the rest are one too high), so the
    verifier-driven GRPO stage has something to fix."""
    add_sft_rows: int = 800
    instruct_rows: int = 600
    sft_steps: int = 120
    sft_batch: int = 16
    sft_lr: float = 1e-3
    dpo_rows: int = 300
    dpo_batch: int = 8
    dpo_lr: float = 2e-5
    dpo_beta: float = 5.0
    grpo_steps: int = 60
    grpo_prompts: int = 25
    grpo_samples: int = 8
    grpo_lr: float = 5e-4
    rl: str = "grpo"
    """The RL stage (`olmo2 demo --rl`): grpo, or ppo (OLMo 2 7B/13B: a reward model trained
    on the DPO preference rows from the SFT model, then PPO from the DPO model with its value
    model initialised from that reward model)."""
    rm_lr: float = 1e-4
    ppo_steps: int = 48
    ppo_rollout: int = 100
    """Completions per PPO rollout (one per prompt row: the addition prompts repeated)."""
    ppo_epochs: int = 4
    ppo_lr: float = 5e-4
    # ---- evaluation
    olmes_tasks: list[str] = field(
        default_factory=lambda: ["arc_easy:rc::olmes", "hellaswag:rc::olmes", "piqa:rc::olmes"]
    )
    olmes_limit: int = 100
    heldout_docs: int = 16
    samples_tokens: int = 40


PRESETS: dict[str, dict] = {
    "cpu": {},
    "tiny": dict(
        train_chars=400_000,
        heldout_chars=20_000,
        vocab_size=1024,
        d_model=64,
        n_layers=2,
        n_heads=2,
        ffn_hidden=192,
        seq_len=128,
        stage1_steps=200,
        stage1_batch=16,
        stage1_lr=1e-2,
        stage1_warmup=6,
        anneal_steps=10,
        add_sft_rows=400,
        instruct_rows=100,
        sft_steps=150,
        sft_batch=32,
        sft_lr=3e-3,
        dpo_rows=48,
        olmes_tasks=["arc_easy:rc::olmes"],
        olmes_limit=20,
        heldout_docs=4,
        samples_tokens=16,
    ),
    "gpu": dict(
        device="cuda",
        train_chars=60_000_000,
        heldout_chars=400_000,
        vocab_size=16384,
        d_model=768,
        n_layers=12,
        n_heads=12,
        ffn_hidden=2048,
        seq_len=1024,
        precision="bf16",
        stage1_steps=3000,
        stage1_batch=64,
        stage1_lr=1.5e-3,
        stage1_warmup=300,
        anneal_steps=300,
        add_max=9,
        add_sft_rows=4000,
        instruct_rows=1100,
        sft_steps=1500,
        sft_batch=32,
        sft_lr=1e-4,
        dpo_rows=1100,
        dpo_batch=16,
        dpo_lr=1e-6,
        grpo_steps=100,
        grpo_prompts=32,
        grpo_samples=16,
        grpo_lr=1e-4,
        olmes_tasks=[
            "arc_easy:rc::olmes",
            "arc_challenge:rc::olmes",
            "hellaswag:rc::olmes",
            "piqa:rc::olmes",
            "sciq:rc::olmes",
        ],
        olmes_limit=1000,
        heldout_docs=64,
        samples_tokens=64,
    ),
}


def preset(name: str) -> DemoConfig:
    if name not in PRESETS:
        raise ValueError(f"--preset {name!r}: expected one of {', '.join(PRESETS)}")
    return dataclasses.replace(DemoConfig(preset=name), **PRESETS[name])
