"""Typed training configuration: dataclass sections, YAML in/out, dotted `key=value` overrides.

The machinery (`load_config`, `apply_overrides`, `to_dict`, `save_yaml`) is generic over any
dataclass tree, so post-training commands define their own top-level config (reusing the
sections below) and get the same YAML/override/dry-run behaviour:

    cfg = load_config(TrainConfig, "recipes/debug.yaml", ["optim.lr=1e-3", "model.size=debug"])

Unknown keys raise `ValueError` naming the key and suggesting the closest one (difflib); a
value of the wrong type raises `ValueError` naming the key, the expected and the given type.
Each section checks its own values (`validate()`), and `load_config` runs the check of every
section before the config's own, so every command that reuses a section (`olmo2 train`,
`sft`, `dpo`, `grpo`) rejects the same bad values with the same message. `add_arguments` /
`from_args` are the recipe / overrides / `--dry-run` command line every training command
takes. Recipe defaults are OLMo 2's (allenai/OLMo configs/official-0425/OLMo2-1B-stage1.yaml).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


@dataclass
class ModelSection:
    size: str | None = None
    """Named size (`debug`, `1b`, `7b`, ...); None with `load_path` = the checkpoint's config."""
    load_path: str | None = None
    """HF checkpoint dir to start from. With train_state/ (a stage-1 checkpoint) the optimizer
    moments come too; with `reset_trainer_state` only the weights are used."""
    reset_trainer_state: bool = False
    """Weights only: fresh optimizer, step counter and data position (continued pretraining).
    Post-training always starts so."""
    d_model: int | None = None
    n_layers: int | None = None
    n_heads: int | None = None
    n_kv_heads: int | None = None
    ffn_hidden: int | None = None
    vocab_size: int | None = None
    max_seq_len: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None
    extend_context: int | None = None
    """Long-context stage: extend the model to this many tokens with `rope_scaling`, factor =
    new / original length (OLMo-core `YaRNRoPEScalingConfig(factor, old_context_len)`)."""
    rope_scaling: str = "yarn"
    """With `extend_context`: linear | dynamic | yarn | llama3 | none (plain RoPE, e.g. a new
    `rope_theta`: ABF)."""
    rope_theta: float | None = None
    """A new RoPE base (ABF) for the extended model; None keeps the checkpoint's."""
    rope_beta_fast: float | None = None
    """yarn: dimensions rotating more than this many times over the original context keep
    their frequency (`RopeScaling.beta_fast`; None = 32, YaRN's and transformers' default)."""

    EXTENSION = ("extend_context", "rope_scaling", "rope_theta", "rope_beta_fast")

    def overrides(self) -> dict:
        skip = {"size", "load_path", "reset_trainer_state", *self.EXTENSION}
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in skip and getattr(self, f.name) is not None
        }

    def extend(self, cfg):
        """`cfg` (a ModelConfig) with the long-context extension applied, if one is asked."""
        if self.extend_context is None:
            for name in ("rope_theta", "rope_beta_fast"):
                if getattr(self, name) is not None:
                    raise ValueError(f"model.{name} needs model.extend_context")
            return cfg
        options = {} if self.rope_theta is None else {"rope_theta": self.rope_theta}
        if self.rope_beta_fast is not None:
            options["beta_fast"] = self.rope_beta_fast
        return cfg.with_context(self.extend_context, self.rope_scaling, **options)


@dataclass
class DataSection:
    paths: list[str] = field(default_factory=list)
    """Token files (flat uint32, `.npy` name) concatenated in order."""
    label_mask_paths: list[str] = field(default_factory=list)
    """Optional parallel bool files: False positions are excluded from the loss."""
    seq_len: int = 256
    global_batch_size: int = 8
    """Instances per optimizer step, over all ranks."""
    micro_batch_size: int = 8
    """Instances per forward/backward on one rank (gradient accumulation fills the rest)."""
    seed: int = 0
    """Shuffle seed: epoch e uses PCG64(seed + e)."""
    doc_masking: bool = False
    """Restrict attention to each token's own document (split on EOS)."""
    packing: str = "concat"
    """concat: consecutive `seq_len` windows of the token files | bfd: whole documents packed
    longest first into padded instances (`olmo2.data.packing`; the long-context stage)."""
    eval_paths: list[str] = field(default_factory=list)
    """Held-out token files for in-loop bits-per-byte."""
    eval_max_chunks: int = 32
    eval_tasks: list[str] = field(default_factory=list)
    """Downstream tasks scored in-loop, OLMES keys (e.g. `arc_easy:rc::olmes`); needs
    `tokenizer` and the eval sets (`eval_data_dir`, else $OLMO2_DATA_DIR)."""
    eval_tasks_limit: int | None = 200
    """Documents per task (the OLMES seeded subsample), so in-loop evaluation stays cheap."""
    eval_data_dir: str | None = None
    tokenizer: str | None = None
    """tokenizer.json, needed to turn eval nats into bits per byte."""

    def validate(self) -> None:
        check_batch(self.global_batch_size, self.micro_batch_size, self.seq_len)
        if self.packing not in ("concat", "bfd"):
            raise ValueError(f"data.packing={self.packing!r}: expected concat or bfd")
        if self.label_mask_paths and len(self.label_mask_paths) != len(self.paths):
            raise ValueError("data.label_mask_paths must give one mask file per data.paths entry")


@dataclass
class OptimSection:
    lr: float = 4e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    weight_decay: float = 0.1
    """Applied to every parameter but the embedding (OLMo 2 `decay_embeddings: false`)."""
    clip_grad_norm: float | None = 1.0
    spike_sigma: float | None = 6.0
    """Skip the update when loss or grad-norm > mean + sigma·std of the window (None = off)."""
    spike_window: int = 128
    spike_min_steps: int = 64
    """Steps in the window before the σ test starts (OLMo-core SkipStepAdamW)."""
    spike_early_factor: float | None = 2.0
    """Before spike_min_steps: skip when the loss exceeds this multiple of the largest loss
    accepted so far (the window is too short for a σ; None = no early bound)."""
    max_skipped_steps: int | None = 8
    """Stop the run (exit 2) after this many skipped updates in a row, naming the last good
    checkpoint: the model has diverged (None = never stop)."""
    fused: bool = True
    """torch's fused AdamW kernel (CPU and CUDA)."""

    def validate(self) -> None:
        if len(self.betas) != 2:
            raise ValueError(f"optim.betas must have 2 values, got {self.betas}")
        if self.max_skipped_steps is not None and self.max_skipped_steps < 1:
            raise ValueError(
                f"optim.max_skipped_steps must be >= 1 or null, got {self.max_skipped_steps}"
            )
        if self.spike_early_factor is not None and self.spike_early_factor <= 1:
            raise ValueError(
                f"optim.spike_early_factor must be > 1 or null, got {self.spike_early_factor}"
            )


@dataclass
class ScheduleSection:
    name: str = "cosine"
    """cosine | linear | constant | wsd"""
    warmup_steps: int = 0
    t_max: int | None = None
    """Steps over which the decay runs (None = trainer.max_steps); may exceed the run."""
    alpha_f: float = 0.1
    """Final LR as a fraction of the start LR."""
    decay_steps: int = 0
    """WSD: length of the final linear decay."""
    lr_from_checkpoint: bool = False
    """Stage 2: the start LR is the LR of the loaded checkpoint's last step."""

    def validate(self) -> None:
        choice("schedule.name", self.name, ("cosine", "linear", "constant", "wsd"))


@dataclass
class TrainerSection:
    run_dir: str = "runs/debug"
    max_steps: int = 100
    stage: int = 1
    ingredient: int | None = None
    device: str = "auto"
    """auto | cpu | cuda"""
    precision: str = "fp32"
    """fp32 | bf16 (autocast; master weights stay fp32)"""
    z_loss_multiplier: float = 1e-5
    seed: int = 0
    """Model init and torch RNG seed."""
    compile: bool = False
    """torch.compile every transformer block."""
    activation_checkpointing: bool = False
    eval_interval: int = 0
    """Steps between in-loop evaluations (0 = only at the end if eval_paths are given)."""

    def validate(self) -> None:
        choice("trainer.precision", self.precision, ("fp32", "bf16"))
        choice("trainer.device", self.device, ("auto", "cpu", "cuda"))


@dataclass
class CheckpointSection:
    save_interval: int = 0
    """Steps between checkpoints (0 = only the final one)."""
    keep_last: int | None = None
    """Delete all but the newest N checkpoints of this run (None = keep all)."""
    save_final: bool = True


@dataclass
class LoggingSection:
    log_interval: int = 1
    """Steps between console lines (metrics.jsonl gets every step)."""
    progress_bar: bool = True
    peak_flops: float | None = None
    """Device peak FLOP/s for MFU (None = table for GPUs, a measured matmul rate on CPU)."""
    wandb_project: str | None = None
    tensorboard: bool = False
    report: bool = True


@dataclass
class DistributedSection:
    strategy: str = "auto"
    """auto (ddp when launched by torchrun with >1 process) | none | ddp | fsdp"""
    backend: str = "auto"
    """auto (nccl on CUDA, gloo on CPU) | gloo | nccl"""
    param_dtype: str = "bf16"
    """FSDP2 parameter dtype in forward/backward (gradients are reduced in fp32)."""

    def validate(self) -> None:
        choice("distributed.strategy", self.strategy, ("auto", "none", "ddp", "fsdp"))
        choice("distributed.backend", self.backend, ("auto", "gloo", "nccl"))
        choice("distributed.param_dtype", self.param_dtype, ("bf16", "fp32"))


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    trainer: TrainerSection = field(default_factory=TrainerSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    logging: LoggingSection = field(default_factory=LoggingSection)
    distributed: DistributedSection = field(default_factory=DistributedSection)

    def validate(self) -> None:
        if self.trainer.max_steps <= 0:
            raise ValueError(f"trainer.max_steps must be > 0, got {self.trainer.max_steps}")


def check_batch(global_batch_size: int, micro_batch_size: int, seq_len: int) -> None:
    if global_batch_size <= 0 or micro_batch_size <= 0 or seq_len < 2:
        raise ValueError(
            "data.global_batch_size and data.micro_batch_size must be > 0, data.seq_len >= 2"
        )


def choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{key}={value!r}: expected one of {', '.join(allowed)}")


# ---- generic machinery ------------------------------------------------------------------


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(cls: type[T], d: dict | None, prefix: str = "", base: T | None = None) -> T:
    """Build dataclass `cls` from a nested dict, checking keys and value types. Keys not given
    keep their defaults: `base`'s, or `cls()`'s, so a section given in a recipe starts from the
    config's own default for it (a post-training `optim:` keeps weight decay 0, not
    `OptimSection`'s 0.1)."""
    d = d or {}
    if not isinstance(d, dict):
        raise ValueError(f"{prefix or 'config'}: expected a mapping, got {type(d).__name__}")
    base = cls() if base is None else base
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in d.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise ValueError(_unknown(full, [f"{prefix}{n}" for n in names]))
        if dataclasses.is_dataclass(hints[key]) and isinstance(value, dict):
            kwargs[key] = from_dict(hints[key], value, f"{full}.", getattr(base, key))
        else:
            kwargs[key] = _coerce(hints[key], value, full)
    return dataclasses.replace(base, **kwargs)


def _unknown(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown config key {key!r}{hint}"


def _coerce(tp: Any, value: Any, key: str) -> Any:
    """Check `value` against type hint `tp` (dataclass, list[X], X | None, int, float...)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, prefix=f"{key}.")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, key)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError(errors[0] if errors else f"{key}: bad value {value!r}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads "4e-4" as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp in (int, str, bool) and type(value) is tp:
        return value
    if tp is Any:
        return value
    raise ValueError(f"{key}: expected {getattr(tp, '__name__', tp)}, got {value!r}")


def apply_overrides(cfg: T, overrides: list[str]) -> T:
    """Apply `a.b=value` strings (value parsed as YAML) and re-validate the types."""
    d = to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        node, parts = d, key.strip().split(".")
        for i, p in enumerate(parts[:-1]):
            if not isinstance(node.get(p), dict):
                known = [f"{'.'.join(parts[:i])}.{k}".lstrip(".") for k in node]
                raise ValueError(_unknown(".".join(parts[: i + 1]), known))
            node = node[p]
        if parts[-1] not in node:
            prefix = ".".join(parts[:-1])
            known = [f"{prefix}.{k}".lstrip(".") for k in node]
            raise ValueError(_unknown(key, known))
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    return from_dict(type(cfg), d)


def load_config(cls: type[T], yaml_path: str | Path | None, overrides: list[str] = ()) -> T:
    """Read a recipe (or start from defaults), apply overrides, validate if supported."""
    d = {}
    if yaml_path is not None:
        p = Path(yaml_path)
        if not p.is_file():
            raise FileNotFoundError(f"{p}: recipe not found")
        try:
            d = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"{p}: not valid YAML: {e}") from None
    cfg = apply_overrides(from_dict(cls, d), list(overrides))
    validate(cfg)
    return cfg


def validate(cfg: Any) -> None:
    """Every section's own check, then the config's (cross-section rules)."""
    for f in dataclasses.fields(cfg):
        section = getattr(cfg, f.name)
        if dataclasses.is_dataclass(section) and hasattr(section, "validate"):
            section.validate()
    if hasattr(cfg, "validate"):
        cfg.validate()


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


# ---- the command line of every training command ----------------------------------------


def add_arguments(p: argparse.ArgumentParser, example: str, recipe_optional: bool = False) -> None:
    """`RECIPE.yaml [key=value ...] [--dry-run]`; `example` shows two overrides."""
    p.add_argument(
        "recipe", nargs="?" if recipe_optional else None, help="YAML recipe (see recipes/)"
    )
    p.add_argument("overrides", nargs="*", help=f"dotted overrides, e.g. {example}")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")


def from_args(cls: type[T], args: argparse.Namespace, extra: list[str] = ()) -> T | None:
    """The config of `args.recipe` with `args.overrides`, then `extra` overrides; None after
    printing it with --dry-run."""
    cfg = load_config(cls, args.recipe, [*args.overrides, *extra])
    if args.dry_run:
        print(dump_yaml(cfg), end="")
        return None
    return cfg
