"""`olmo2 train RECIPE.yaml [key=value ...]`: pretraining (stage 1) and annealing (stage 2).

Start-up order matters: everything that can fail on user input (config keys and types, data
files, model size vs checkpoints, checkpoint integrity) is checked before anything is
written, so a bad invocation leaves the run directory untouched.

Where training starts from, in priority order (OLMo-core semantics):
1. the newest complete checkpoint in `trainer.run_dir` (automatic exact resume);
2. `model.load_path` with `train_state/` (stage 2 from stage 1): weights and AdamW moments,
   fresh step counter and data position; with `schedule.lr_from_checkpoint` the LR starts
   at the checkpoint's last LR;
3. `model.load_path` + `model.reset_trainer_state` (any HF OLMo 2 dir): weights only;
4. a fresh model of `model.size` initialised with `trainer.seed`.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from pathlib import Path

import torch

from olmo2.model.config import ModelConfig
from olmo2.model.hf import read_config, read_state_dict
from olmo2.model.transformer import Olmo2
from olmo2.train import checkpoint as ckpt
from olmo2.train import distributed as D
from olmo2.train.config import TrainConfig, dump_yaml, load_config
from olmo2.train.data import build_loader
from olmo2.train.trainer import TaskEval, TokenFileEval, Trainer
from olmo2.utils import write_text_atomic

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="YAML recipe (see recipes/)")
    p.add_argument(
        "overrides", nargs="*", help="dotted overrides, e.g. optim.lr=3e-4 trainer.max_steps=10"
    )
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")


def resolve_model_config(cfg: TrainConfig) -> ModelConfig:
    m = cfg.model
    if m.load_path is not None:
        if not Path(m.load_path).is_dir():
            raise FileNotFoundError(f"model.load_path: {m.load_path} is not a directory")
        loaded = read_config(m.load_path)
        if m.size is not None:
            ckpt.check_model_config(Path(m.load_path), ModelConfig.named(m.size, **m.overrides()))
        return dataclasses.replace(loaded, **m.overrides()) if m.overrides() else loaded
    if m.size is None:
        raise ValueError("model.size or model.load_path must be set")
    return ModelConfig.named(m.size, **m.overrides())


def start_run(cfg, run_dir: Path, mcfg: ModelConfig, device) -> Olmo2:
    """Once the inputs are validated: save the resolved config in the run directory (main
    rank, atomically), then build the model from the run's seed on every rank."""
    if D.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / "config.yaml", dump_yaml(cfg))
    D.barrier()
    torch.manual_seed(cfg.trainer.seed)
    return Olmo2.build(mcfg, device=device)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        import os

        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device(name)


def _load_tokenizer(path: str | None):
    if path is None:
        return None
    from olmo2.tokenizer import Tokenizer

    return Tokenizer.load(path)


def build(cfg: TrainConfig) -> tuple[Trainer, Path | None]:
    """Validate inputs, then build model, data and trainer; returns (trainer, resumed-from)."""
    device = resolve_device(cfg.trainer.device)
    D.init(cfg.distributed.backend, device)
    strategy = cfg.distributed.strategy
    if strategy == "auto":
        strategy = "ddp" if D.world_size() > 1 else "none"
    mcfg = resolve_model_config(cfg)
    data = build_loader(cfg.data, D.rank(), D.world_size(), mcfg.eos_token_id, mcfg.vocab_size)
    if cfg.data.global_batch_size // D.world_size() % cfg.data.micro_batch_size:
        log.info(
            "rank batch is not a multiple of micro_batch_size; the last micro-batch is smaller"
        )
    run_dir = Path(cfg.trainer.run_dir)
    resume = ckpt.latest(run_dir)
    start = resume or (Path(cfg.model.load_path) if cfg.model.load_path else None)
    meta = None
    if start is not None:
        ckpt.check_model_config(start, mcfg)
        if (start / ckpt.META).is_file():
            meta = ckpt.verify(start)
    tokenizer = _load_tokenizer(cfg.data.tokenizer)
    d = cfg.data
    evaluators = []
    if d.eval_paths:
        evaluators.append(TokenFileEval(d.eval_paths, d.seq_len, d.eval_max_chunks, tokenizer))
    if d.eval_tasks:
        if tokenizer is None:
            raise ValueError("data.eval_tasks needs data.tokenizer (the prompts are text)")
        evaluators.append(TaskEval(d.eval_tasks, d.eval_data_dir, d.eval_tasks_limit, tokenizer))
    # ---- inputs are valid: from here on we write ---------------------------------------
    model = start_run(cfg, run_dir, mcfg, device)
    if start is not None and (resume is None and cfg.model.reset_trainer_state or meta is None):
        model.load_state_dict(read_state_dict(start, dtype=torch.float32))
        log.info("loaded weights from %s", start)
    model.activation_checkpointing = cfg.trainer.activation_checkpointing
    if cfg.trainer.compile:
        for block in model.blocks:
            block.compile()
    model = D.wrap(model, strategy, cfg.distributed.param_dtype)
    trainer = Trainer(cfg, model, data, evaluators=evaluators, tokenizer=tokenizer)
    if resume is not None:
        trainer.resume(resume)
    elif start is not None and meta is not None and not cfg.model.reset_trainer_state:
        ckpt.load(start, model, trainer.optimizer)  # stage 2: weights + AdamW moments
        if cfg.schedule.lr_from_checkpoint:
            trainer.peak_lr = float(meta["lr"])
        log.info(
            "stage start from %s (optimizer state restored, start lr %.4e)", start, trainer.peak_lr
        )
    return trainer, resume


def run(args) -> int:
    cfg = load_config(TrainConfig, args.recipe, args.overrides)
    if args.dry_run:
        print(dump_yaml(cfg), end="")
        return 0
    t0 = time.perf_counter()
    trainer, resumed = build(cfg)
    main = D.is_main()
    try:
        if trainer.step >= cfg.trainer.max_steps:
            print(f"run {cfg.trainer.run_dir} is already complete at step {trainer.step}")
            return 0
        last = trainer.fit()
        if D.is_main() and cfg.logging.report:
            from olmo2.report import training_report

            training_report(cfg.trainer.run_dir)
    finally:
        D.shutdown()
    if main:
        print(
            f"trained {trainer.step} steps ({trainer.tokens:,} tokens) in {time.perf_counter() - t0:.1f}s"
            f"{' (resumed from ' + resumed.name + ')' if resumed else ''}; final loss {last.get('loss', float('nan')):.4f}; "
            f"run dir {cfg.trainer.run_dir}"
        )
    return 0
