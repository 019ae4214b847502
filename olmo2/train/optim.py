"""AdamW with OLMo 2's parameter groups, LR schedules, and the loss-spike guard.

* AdamW β (0.9, 0.95), eps 1e-8, weight decay 0.1 on every parameter except the embedding
  (OLMo 2 configs: `decay_norm_and_bias: true`, `decay_embeddings: false`).
* Schedules are pure functions of the step (so resuming needs only the step counter):
  `lr_at(cfg, peak, step, max_steps)` is the LR used by optimizer step `step` (1-based);
  `lr_at(..., 0)` is the start value. Cosine follows allenai/OLMo `CosWithWarmup`:
  `eta_min + (lr - eta_min)·(1 + cos(π·(t - w)/(T - w)))/2`, eta_min = alpha_f·lr.
* `SpikeGuard` is OLMo-core's SkipStepAdamW rule (src/olmo_core/optim/skip_step_optimizer.py):
  skip the update when the loss or the grad-norm is more than `sigma` standard deviations
  above the mean of the last `window` steps, once `min_steps` are in the window; non-finite
  values are always skipped. Two departures: before `min_steps`, a loss above
  `early_factor` × the largest accepted loss is a spike too (an exploding run otherwise has
  64 unchecked steps), and a skipped step's values are not added to the window (a diverged
  run cannot make its own losses normal). The trainer stops a run after
  `optim.max_skipped_steps` skips in a row.
"""

from __future__ import annotations

import math
from collections import deque

import torch

from olmo2.train.config import OptimSection, ScheduleSection


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: the embedding without weight decay, everything else with it."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if name.split(".")[-2:] == ["embeddings", "weight"] else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: torch.nn.Module, cfg: OptimSection) -> torch.optim.Optimizer:
    device = next(model.parameters()).device
    # the fused kernel needs plain tensors on a supported device (not FSDP's DTensors)
    fused = cfg.fused and device.type in ("cpu", "cuda") and not _has_dtensor(model)
    return torch.optim.AdamW(
        param_groups(model, cfg.weight_decay),
        lr=cfg.lr,
        betas=tuple(cfg.betas),
        eps=cfg.eps,
        fused=fused or None,
        foreach=None if fused else True,
    )


def _has_dtensor(model: torch.nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def lr_at(cfg: ScheduleSection, peak: float, step: int, max_steps: int) -> float:
    """LR for 1-based optimizer step `step` (step 0 = the schedule's start value)."""
    w = cfg.warmup_steps
    if step < w:
        return peak * step / w
    t_max = cfg.t_max or max_steps
    floor = cfg.alpha_f * peak
    if cfg.name == "constant":
        return peak
    if cfg.name == "cosine":
        frac = min(1.0, (step - w) / max(1, t_max - w))
        return floor + (peak - floor) * (1 + math.cos(math.pi * frac)) / 2
    if cfg.name == "linear":
        frac = min(1.0, (step - w) / max(1, t_max - w))
        return peak - (peak - floor) * frac
    if cfg.name == "wsd":  # warmup, stable, then linear decay over the last decay_steps
        start = t_max - cfg.decay_steps
        if step <= start:
            return peak
        return peak - (peak - floor) * min(1.0, (step - start) / max(1, cfg.decay_steps))
    raise ValueError(f"schedule.name={cfg.name!r}: expected cosine, linear, constant or wsd")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr


class SpikeGuard:
    """Rolling mean + sigma·std test on loss and grad-norm (OLMo-core SkipStepOptimizer)."""

    def __init__(
        self,
        sigma: float | None,
        window: int = 128,
        min_steps: int = 64,
        early_factor: float | None = 2.0,
    ):
        self.sigma, self.min_steps, self.early_factor = sigma, min_steps, early_factor
        self.losses: deque[float] = deque(maxlen=window)
        self.norms: deque[float] = deque(maxlen=window)

    def _spike(self, hist: deque, x: float) -> bool:
        if self.sigma is None or len(hist) < self.min_steps:
            return False
        n = len(hist)
        mean = sum(hist) / n
        std = math.sqrt(sum((h - mean) ** 2 for h in hist) / max(1, n - 1))
        return x > mean + self.sigma * std

    def _early_spike(self, loss: float) -> bool:
        if self.sigma is None or self.early_factor is None or not self.losses:
            return False
        return len(self.losses) < self.min_steps and loss > self.early_factor * max(self.losses)

    def check(self, loss: float, grad_norm: float) -> str | None:
        """Why the step must be skipped (None = apply it); an applied step's values are
        recorded."""
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            return "non-finite"
        if self._early_spike(loss):
            return f"loss spike: {loss:.4g} > {self.early_factor:g} x {max(self.losses):.4g}"
        if self._spike(self.losses, loss):
            return "loss spike"
        if self._spike(self.norms, grad_norm):
            return "grad-norm spike"
        self.losses.append(loss)
        self.norms.append(grad_norm)
        return None

    def state_dict(self) -> dict:
        return {"losses": list(self.losses), "norms": list(self.norms)}

    def load_state_dict(self, sd: dict) -> None:
        self.losses.clear(), self.norms.clear()
        self.losses.extend(sd["losses"]), self.norms.extend(sd["norms"])
