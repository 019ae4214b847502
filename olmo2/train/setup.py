"""The one start-up path of every training command: `olmo2 train`, `sft`, `dpo`, `grpo`.

Start-up order matters: everything that can fail on user input is checked before anything is
written, so a bad invocation leaves the run directory untouched. Hence three steps, with the
command's own checks (data files, evaluators) between the first two:

1. `find_start(cfg)` — device, process group, model config, and where training starts from;
   checks the checkpoint's model size and SHA-256s; writes nothing.
2. `build_model(cfg, start)` — saves the resolved `config.yaml`, builds the model from
   `trainer.seed`, loads the starting weights, applies activation checkpointing,
   `trainer.compile` and the data-parallel wrapper.
3. `restore(trainer, start)` — once the `Trainer` exists: exact resume or stage-2 optimizer
   state.

Where training starts from, in priority order (OLMo-core semantics):
1. the newest complete checkpoint in `trainer.run_dir` (automatic exact resume);
2. `model.load_path` with `train_state/` (stage 2 from stage 1): weights and AdamW moments,
   fresh step counter and data position; with `schedule.lr_from_checkpoint` the LR starts
   at the checkpoint's last LR;
3. `model.load_path` + `model.reset_trainer_state` (any HF OLMo 2 dir), and always for
   post-training: weights only;
4. a fresh model of `model.size` initialised with `trainer.seed`.

`run(cfg, trainer, resumed, t0)` is the end every command shares: train to
`trainer.max_steps`, write the run report, print one closing line.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from olmo2.model.config import ModelConfig
from olmo2.model.hf import read_config, read_state_dict
from olmo2.model.transformer import Olmo2
from olmo2.train import checkpoint as ckpt
from olmo2.train import distributed
from olmo2.train.config import dump_yaml
from olmo2.train.trainer import Trainer
from olmo2.utils import write_text_atomic

log = logging.getLogger(__name__)


@dataclass
class Start:
    """Where a run starts from, found and checked before anything is written."""

    device: torch.device
    model_config: ModelConfig
    resume: Path | None
    """The newest complete checkpoint of this run: exact resume."""
    load_path: Path | None
    """`model.load_path`: the starting weights when the run does not resume."""
    stage_meta: dict | None
    """`load_path`'s metadata when its AdamW moments carry over (stage 2), else None."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device(name)


def resolve_model_config(cfg) -> ModelConfig:
    m = cfg.model
    if m.load_path is not None:
        if not Path(m.load_path).is_dir():
            raise FileNotFoundError(f"model.load_path: {m.load_path} is not a directory")
        loaded = read_config(m.load_path)
        if m.size is not None:
            ckpt.check_model_config(Path(m.load_path), ModelConfig.named(m.size, **m.overrides()))
        loaded = dataclasses.replace(loaded, **m.overrides()) if m.overrides() else loaded
        return m.extend(loaded)
    if m.size is None:
        raise ValueError("model.size or model.load_path must be set")
    return m.extend(ModelConfig.named(m.size, **m.overrides()))


def find_start(cfg, weights_only: bool = False) -> Start:
    """Step 1: resolve and check everything about the model and its starting point.
    `weights_only` (post-training; `model.reset_trainer_state` for pretraining): never carry
    `model.load_path`'s optimizer state over."""
    device = resolve_device(cfg.trainer.device)
    distributed.init(cfg.distributed.backend, device)
    mcfg = resolve_model_config(cfg)
    resume = ckpt.latest(Path(cfg.trainer.run_dir))
    load_path = Path(cfg.model.load_path) if cfg.model.load_path else None
    origin, meta = resume or load_path, None
    if origin is not None:
        ckpt.check_model_config(origin, mcfg)
        if (origin / ckpt.META).is_file():
            meta = ckpt.verify(origin)
    weights_only = weights_only or cfg.model.reset_trainer_state
    carry = resume is None and meta is not None and not weights_only
    return Start(device, mcfg, resume, load_path, meta if carry else None)


def initial_model(cfg, mcfg: ModelConfig, device: torch.device, weights: bool = True) -> Olmo2:
    """The model `trainer.seed` initialises, with `model.load_path`'s weights if `weights`."""
    torch.manual_seed(cfg.trainer.seed)
    model = Olmo2.build(mcfg, device=device)
    if weights and cfg.model.load_path:
        model.load_state_dict(read_state_dict(cfg.model.load_path, dtype=torch.float32))
        log.info("loaded weights from %s", cfg.model.load_path)
    return model


def build_model(
    cfg, start: Start, initial: Callable[..., Olmo2] = initial_model
) -> torch.nn.Module:
    """Step 2, once every input is validated: save the resolved config in the run directory
    (main rank, atomically), then build the model on every rank, ready to train. `initial`
    makes the network with its starting weights, `initial_model`'s signature (`olmo2 rm`
    passes one that makes an `Olmo2Reward`)."""
    run_dir = Path(cfg.trainer.run_dir)
    if distributed.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / "config.yaml", dump_yaml(cfg))
    distributed.barrier()
    fresh = start.resume is None and start.stage_meta is None  # else restore() loads the state
    model = initial(cfg, start.model_config, start.device, weights=fresh)
    model.activation_checkpointing = cfg.trainer.activation_checkpointing
    if cfg.trainer.compile:
        for block in model.blocks:
            block.compile()
    strategy = cfg.distributed.strategy
    if strategy == "auto":
        strategy = "ddp" if distributed.world_size() > 1 else "none"
    return distributed.wrap(model, strategy, cfg.distributed.param_dtype)


def restore(trainer: Trainer, start: Start) -> None:
    """Step 3: exact resume from the run's newest checkpoint, or stage 2's optimizer state."""
    if start.resume is not None:
        trainer.resume(start.resume)
    elif start.stage_meta is not None:
        ckpt.load(start.load_path, trainer.model, trainer.optimizer)
        if trainer.cfg.schedule.lr_from_checkpoint:
            trainer.peak_lr = float(start.stage_meta["lr"])
        log.info(
            "stage start from %s (optimizer state restored, start lr %.4e)",
            start.load_path,
            trainer.peak_lr,
        )


def run(
    cfg,
    trainer: Trainer,
    resumed: Path | None,
    t0: float,
    summary: Callable[[dict], str] = lambda last: "",
) -> int:
    """Train to `trainer.max_steps` (a complete run is left as it is), write the run report,
    print the closing line (`summary(last metrics)` appended); the process group is always
    torn down."""
    main = distributed.is_main()
    try:
        if trainer.step >= cfg.trainer.max_steps:
            print(f"run {cfg.trainer.run_dir} is already complete at step {trainer.step}")
            return 0
        last = trainer.fit()
        if main and cfg.logging.report:
            from olmo2.report import training_report

            training_report(cfg.trainer.run_dir)
    finally:
        distributed.shutdown()
    if main:
        since = f" (resumed from {resumed.name})" if resumed else ""
        print(
            f"trained {trainer.step} steps ({trainer.tokens:,} tokens) in "
            f"{time.perf_counter() - t0:.1f}s{since}; final loss "
            f"{last.get('loss', float('nan')):.4f}{summary(last)}; run dir {cfg.trainer.run_dir}"
        )
    return 0
