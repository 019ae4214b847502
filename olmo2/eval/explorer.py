"""The checkpoint explorer: evaluate every checkpoint of a run and plot each metric against
the tokens seen (`olmo2 eval --model RUN_DIR_OR_HUB_ID --all-checkpoints --tasks ...`).

OLMo publishes its intermediate checkpoints (`stage1-step{N}-tokens{B}B`, `stage2-…`) so that
one can watch capabilities emerge during training; this walks them in token order:

* **Checkpoints**: a run directory's checkpoint folders (those holding `config.json`, one
  level down or two, so a demo folder with `stage1/` and `stage2-…/` runs works), or every
  `stage1-`/`stage2-` branch of a hub repository. Tokens seen come from the checkpoint's
  `olmo2.json`, else from the name's `tokens{B}B`.
* **Resumable**: each checkpoint's results are written to `checkpoints/{name}.json` beside the
  output as soon as it is done; a rerun with the same tasks and settings loads them and
  evaluates only the missing ones.
* **Outputs**: the sweep JSON (a row per checkpoint: stage, step, tokens, every task's primary
  score and every suite's), one PNG per metric against tokens with the stage boundaries
  marked, and an HTML/Markdown page with the table and the plots.

The caller supplies `evaluate_one(checkpoint) -> results` (the CLI loads the weights and runs
`olmo2.eval.harness.evaluate`), so this module never loads a model itself.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from olmo2.export.checkpoints import list_hub, parse_name
from olmo2.utils import write_text_atomic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Checkpoint:
    name: str
    source: str
    """A local checkpoint directory, or the hub repository id."""
    revision: str | None = None
    """The hub branch; None for a local directory."""
    stage: str | None = None
    step: int | None = None
    tokens: float | None = None


def _local_tokens(path: Path, tokens_b: int | None) -> float | None:
    meta = path / "olmo2.json"
    if meta.is_file():
        try:
            tokens = json.loads(meta.read_text()).get("tokens")
        except (OSError, json.JSONDecodeError):
            tokens = None
        if tokens is not None:
            return float(tokens)
    return None if tokens_b is None else tokens_b * 1e9


def find_checkpoints(target: str | Path) -> list[Checkpoint]:
    """The checkpoints of a run directory or hub repository, in training order."""
    path = Path(target)
    if path.is_dir():
        dirs = [p for p in [*path.glob("*/config.json"), *path.glob("*/*/config.json")]]
        found = []
        for cfg in sorted(dirs):
            d = cfg.parent
            if any(part.startswith(".") for part in d.relative_to(path).parts):
                continue  # a checkpoint being written (.name.tmp)
            ref = parse_name(d.name)
            found.append(
                Checkpoint(
                    d.name, str(d), None, ref.stage, ref.step, _local_tokens(d, ref.tokens_b)
                )
            )
    elif re.fullmatch(r"[\w.-]+/[\w.-]+", str(target)):
        found = [
            Checkpoint(
                r.name,
                str(target),
                r.name,
                r.stage,
                r.step,
                None if r.tokens_b is None else r.tokens_b * 1e9,
            )  # fmt: skip
            for r in list_hub(str(target))
            if r.stage in ("stage1", "stage2")
        ]
    else:
        raise FileNotFoundError(
            f"--model {target}: neither a run directory nor a hub id (org/name)"
        )
    if not found:
        raise FileNotFoundError(f"--all-checkpoints: no checkpoints found in {target}")
    names = [c.name for c in found]
    if len(set(names)) < len(names):
        raise ValueError(f"{target}: two checkpoints share a name ({sorted(names)})")
    return sorted(found, key=_order)


def _order(c: Checkpoint):
    return (c.tokens is None, c.tokens or 0.0, c.stage or "", c.step or 0, c.name)


def scores(results: dict) -> dict[str, float]:
    """Every task's primary score and every suite's score, by key."""
    out = {k: r["primary_score"] for k, r in results.get("tasks", {}).items()}
    out.update({k: s["score"] for k, s in results.get("suites", {}).items()})
    return out


def explore(
    checkpoints: list[Checkpoint],
    evaluate_one: Callable[[Checkpoint], dict],
    out_dir: str | Path,
    spec: dict,
) -> dict:
    """Evaluate the checkpoints not already cached under `out_dir/checkpoints/` for this
    `spec` (tasks, limit, chat...), and return the sweep (rows in token order)."""
    cache = Path(out_dir) / "checkpoints"
    cache.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, ckpt in enumerate(checkpoints):
        f = cache / f"{ckpt.name}.json"
        entry = json.loads(f.read_text()) if f.is_file() else None
        if entry is None or entry.get("spec") != spec or entry.get("checkpoint") != asdict(ckpt):
            log.info("[%d/%d] evaluating %s", i + 1, len(checkpoints), ckpt.name)
            entry = {"spec": spec, "checkpoint": asdict(ckpt), "results": evaluate_one(ckpt)}
            write_text_atomic(f, json.dumps(entry, indent=1) + "\n")
        else:
            log.info("[%d/%d] %s: cached", i + 1, len(checkpoints), ckpt.name)
        rows.append({**asdict(ckpt), "scores": scores(entry["results"])})
    metrics = list(dict.fromkeys(k for r in rows for k in r["scores"]))
    return {"spec": spec, "metrics": metrics, "checkpoints": rows}


def stage_boundaries(rows: list[dict]) -> list[tuple[float, str]]:
    """(tokens, label) where the stage changes from one checkpoint to the next."""
    out = []
    for prev, cur in zip(rows, rows[1:]):
        if cur["stage"] != prev["stage"] and cur["tokens"] is not None:
            out.append((cur["tokens"], cur["stage"] or "?"))
    return out


def write_outputs(sweep: dict, out_dir: str | Path, title: str) -> dict[str, Path]:
    """`explorer.json`, one PNG per metric under `plots/`, `explorer.html` and `.md`."""
    from olmo2.report import Report, plot_series

    out = Path(out_dir)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    rows = [r for r in sweep["checkpoints"]]
    by_tokens = all(r["tokens"] is not None for r in rows)
    xs = [r["tokens"] if by_tokens else r["step"] for r in rows]
    xlabel = "tokens seen" if by_tokens else "step"
    plots = {}
    for m in sweep["metrics"]:
        pts = [(x, r["scores"][m]) for x, r in zip(xs, rows) if m in r["scores"] and x is not None]
        png = out / "plots" / f"{_slug(m)}.png"
        vlines = stage_boundaries(rows) if by_tokens else []
        plot_series(png, {m: tuple(map(list, zip(*pts)))} if pts else {}, m, xlabel=xlabel,
                    vlines=vlines, markers=True)  # fmt: skip
        plots[m] = png
    sweep = {**sweep, "plots": {m: str(p.relative_to(out)) for m, p in plots.items()}}
    json_path = out / "explorer.json"
    write_text_atomic(json_path, json.dumps(sweep, indent=1) + "\n")
    report = Report(title).add_text(
        f"{len(rows)} checkpoints, tasks `{', '.join(sweep['spec']['tasks'])}`, "
        f"limit `{sweep['spec'].get('limit')}`; each score is the task's primary metric."
    )
    headers, table = sweep_table(sweep)
    report.add_table(headers, table, title="Scores by checkpoint")
    for m, png in plots.items():
        report.add_plot(png, f"{m} against {xlabel} (dashed: stage boundaries)")
    md, html = report.write(out, stem="explorer")
    return {
        "json": json_path,
        "html": html,
        "markdown": md,
        **{f"png:{m}": p for m, p in plots.items()},
    }


def sweep_table(sweep: dict) -> tuple[list[str], list[list]]:
    headers = ["checkpoint", "stage", "step", "tokens", *sweep["metrics"]]
    table = [
        [r["name"], r["stage"] or "", r["step"] if r["step"] is not None else "",
         _tokens(r["tokens"]), *(r["scores"].get(m, "") for m in sweep["metrics"])]
        for r in sweep["checkpoints"]
    ]  # fmt: skip
    return headers, table


def _tokens(t: float | None) -> str:
    if t is None:
        return ""
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if t >= scale:
            return f"{t / scale:.3g}{unit}"
    return f"{t:.0f}"


def _slug(key: str) -> str:
    return re.sub(r"[^\w.-]+", "_", key).strip("_")
