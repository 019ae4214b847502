"""Per-step metrics: `metrics.jsonl` (one flushed line per step), a console line, a progress
bar, MFU, and optional wandb / tensorboard (used only when installed and asked for).

MFU = tokens/s · `ModelConfig.flops_per_token(seq_len)` / (peak FLOP/s · ranks). Peak bf16
dense FLOP/s per device follow OLMo-core's SpeedMonitorCallback (H100 SXM 989.5 TF =
1979 TF sparse × 0.5, ...); on CPU the peak is `logging.peak_flops` or a measured fp32
matmul rate (so CPU "MFU" means "fraction of what this machine's GEMM reaches").
"""

from __future__ import annotations

import json
import logging
import math
import resource
import time
from pathlib import Path

import torch

from olmo2.train.config import LoggingSection

log = logging.getLogger(__name__)

# bf16 dense peak FLOP/s per device (name substring -> FLOP/s), most specific first
PEAK_FLOPS = [
    ("H100 PCIe", 756.5e12),
    ("H100 NVL", 835.5e12),
    ("H100", 989.5e12),
    ("H200", 989.5e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("A10G", 125e12),
]

_CPU_PEAK: float | None = None


def measure_cpu_flops(n: int = 512, seconds: float = 0.2) -> float:
    """fp32 GEMM FLOP/s of this CPU (best of a short loop); cached per process."""
    global _CPU_PEAK
    if _CPU_PEAK is None:
        a, b = torch.randn(n, n), torch.randn(n, n)
        best, t_end = 0.0, time.perf_counter() + seconds
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            a @ b
            best = max(best, 2 * n**3 / (time.perf_counter() - t0))
        _CPU_PEAK = best
    return _CPU_PEAK


def peak_flops(device: torch.device, override: float | None = None) -> float:
    if override:
        return override
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, value in PEAK_FLOPS:
            if key in name:
                return value
        log.warning("unknown GPU %r: MFU assumes A100 peak (312 TF)", name)
        return 312e12
    return measure_cpu_flops()


def memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB on Linux


def truncate_jsonl(path: Path, max_step: int) -> None:
    """Keep only lines with step <= max_step (a resume replays the steps after it)."""
    if not path.is_file():
        return
    keep = [
        ln
        for ln in path.read_text().splitlines()
        if ln and json.loads(ln).get("step", 0) <= max_step
    ]
    path.write_text("".join(ln + "\n" for ln in keep))


# objective-specific metrics shown on the console line when present: (key, label, format)
CONSOLE_EXTRAS = [
    ("ce", "ce", ".4f"),
    ("z_loss", "z", ".2e"),
    ("rewards/margin", "margin", ".3f"),
    ("rewards/accuracy", "acc", ".2f"),
    ("reward", "reward", ".2f"),
    ("pass_rate", "pass", ".2f"),
    ("kl", "kl", ".4f"),
]


def read_jsonl(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def _fmt_eta(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    h, rem = divmod(int(s), 3600)
    return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"


class MetricsLogger:
    """Writes metrics.jsonl / eval.jsonl in the run dir (main rank only) and the console."""

    def __init__(
        self,
        run_dir: Path,
        cfg: LoggingSection,
        max_steps: int,
        flops_per_token: float,
        peak: float,
        n_devices: int,
        start_step: int = 0,
        enabled: bool = True,
        config: dict | None = None,
    ):
        self.cfg, self.max_steps, self.enabled = cfg, max_steps, enabled
        self.flops_per_token, self.peak = flops_per_token, peak * n_devices
        self.start_step, self.t_start = start_step, time.perf_counter()
        self.bar = self.file = self.eval_file = self.wandb = self.tb = None
        if not enabled:
            return
        for name in ("metrics.jsonl", "eval.jsonl"):
            truncate_jsonl(run_dir / name, start_step)
        self.file = open(run_dir / "metrics.jsonl", "a")
        self.eval_file = open(run_dir / "eval.jsonl", "a")
        if cfg.progress_bar:
            from tqdm import tqdm

            self.bar = tqdm(
                total=max_steps, initial=start_step, desc="train", unit="step", leave=False
            )
        self._optional_backends(run_dir, config)

    def _optional_backends(self, run_dir: Path, config: dict | None) -> None:
        if self.cfg.wandb_project:
            try:
                import wandb

                self.wandb = wandb.init(
                    project=self.cfg.wandb_project, config=config, dir=str(run_dir)
                )
            except ImportError:
                log.warning("logging.wandb_project is set but wandb is not installed; skipping")
        if self.cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tb"))
            except ImportError:
                log.warning("logging.tensorboard=true but tensorboard is not installed; skipping")

    def throughput(self, m: dict, step_time: float, device: torch.device) -> None:
        """Add tokens/s, MFU, memory and ETA to a step's metrics."""
        m["step_time"] = step_time
        m["tokens_per_s"] = m["batch_tokens"] / step_time
        m["mfu"] = m["tokens_per_s"] * self.flops_per_token / self.peak
        m["memory_gb"] = memory_gb(device)
        done = m["step"] - self.start_step
        avg = (time.perf_counter() - self.t_start) / max(done, 1)
        m["eta_s"] = avg * (self.max_steps - m["step"])

    def log_step(self, m: dict) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(m) + "\n")
        self.file.flush()
        if self.wandb is not None:
            self.wandb.log(m, step=m["step"])
        if self.tb is not None:
            for k, v in m.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(f"train/{k}", v, m["step"])
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{m['loss']:.4f}", lr=f"{m['lr']:.2e}")
        if m["step"] % self.cfg.log_interval == 0 or m["step"] == self.max_steps:
            extra = "".join(
                f" {label} {m[k]:{fmt}}" for k, label, fmt in CONSOLE_EXTRAS if m.get(k) is not None
            )
            line = (
                f"step {m['step']:>6}/{self.max_steps} loss {m['loss']:.4f}{extra} "
                f"lr {m['lr']:.3e} gnorm {m['grad_norm']:.3f} "
                f"tok/s {m['tokens_per_s']:,.0f} mfu {100 * m['mfu']:.1f}% mem {m['memory_gb']:.2f}GB "
                f"eta {_fmt_eta(m['eta_s'])}"
                + (f" SKIPPED ({m['skipped']})" if m.get("skipped") else "")
            )
            (self.bar.write if self.bar is not None else print)(line)

    def log_eval(self, step: int, results: dict) -> None:
        if not self.enabled or not results:
            return
        self.eval_file.write(json.dumps({"step": step, **results}) + "\n")
        self.eval_file.flush()
        if self.wandb is not None:
            self.wandb.log(results, step=step)
        msg = " ".join(f"{k} {v:.4f}" for k, v in results.items() if isinstance(v, float))
        (self.bar.write if self.bar is not None else print)(f"eval step {step}: {msg}")

    def close(self) -> None:
        for f in (self.bar, self.file, self.eval_file, self.tb):
            if f is not None:
                f.close()
        if self.wandb is not None:
            self.wandb.finish()
