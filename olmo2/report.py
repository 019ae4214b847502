"""Run reports: `report.md` + `report.html` with PNG plots, written into a run directory.

`Report` is a small builder that other stages (the demo, post-training) extend with their
own sections::

    r = Report("OLMo 2 demo")
    r.add_text("Pretraining on ...")
    r.add_table(["task", "acc"], [["arc_easy", 0.61]], title="Evaluation")
    r.add_plot(run_dir / "loss.png", caption="training loss")
    r.write(run_dir)

`training_report(run_dir)` builds the standard training section from `config.yaml`,
`metrics.jsonl` and `eval.jsonl` (plots of loss, LR, grad-norm, throughput, eval curves).
"""

from __future__ import annotations

import html
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from olmo2.utils import write_text_atomic

log = logging.getLogger(__name__)


@dataclass
class Report:
    title: str
    sections: list[tuple[str, object]] = field(default_factory=list)

    def add_heading(self, text: str) -> Report:
        self.sections.append(("heading", text))
        return self

    def add_text(self, markdown: str) -> Report:
        """A paragraph (plain text or simple Markdown; shown preformatted-free in HTML)."""
        self.sections.append(("text", markdown))
        return self

    def add_table(self, headers: list[str], rows: list[list], title: str | None = None) -> Report:
        self.sections.append(
            ("table", (title, [str(h) for h in headers], [[_cell(c) for c in r] for r in rows]))
        )
        return self

    def add_plot(self, png: str | os.PathLike, caption: str = "") -> Report:
        self.sections.append(("plot", (Path(png), caption)))
        return self

    def add_code(self, text: str) -> Report:
        self.sections.append(("code", text))
        return self

    def markdown(self, base: Path) -> str:
        out = [f"# {self.title}", ""]
        for kind, item in self.sections:
            if kind == "heading":
                out += [f"## {item}", ""]
            elif kind == "text":
                out += [item, ""]
            elif kind == "code":
                out += ["```", item, "```", ""]
            elif kind == "table":
                title, headers, rows = item
                out += [f"**{title}**", ""] if title else []
                out += ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
                out += ["| " + " | ".join(r) + " |" for r in rows] + [""]
            elif kind == "plot":
                png, caption = item
                out += [f"![{caption}]({_rel(png, base)})", ""]
        return "\n".join(out)

    def html(self, base: Path) -> str:
        e = html.escape
        body = [f"<h1>{e(self.title)}</h1>"]
        for kind, item in self.sections:
            if kind == "heading":
                body.append(f"<h2>{e(item)}</h2>")
            elif kind == "text":
                body.append(f"<p>{e(item)}</p>")
            elif kind == "code":
                body.append(f"<pre>{e(item)}</pre>")
            elif kind == "table":
                title, headers, rows = item
                cap = f"<caption>{e(title)}</caption>" if title else ""
                head = "".join(f"<th>{e(h)}</th>" for h in headers)
                trs = "".join(
                    "<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows
                )
                body.append(f"<table>{cap}<tr>{head}</tr>{trs}</table>")
            elif kind == "plot":
                png, caption = item
                body.append(
                    f'<figure><img src="{e(_rel(png, base))}" alt="{e(caption)}"><figcaption>{e(caption)}</figcaption></figure>'
                )
        style = (
            "body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}img{max-width:100%}"
        )
        return f"<!doctype html><html><head><meta charset='utf-8'><title>{e(self.title)}</title><style>{style}</style></head><body>{''.join(body)}</body></html>\n"

    def write(self, directory: str | os.PathLike, stem: str = "report") -> tuple[Path, Path]:
        d = Path(directory)
        md, ht = d / f"{stem}.md", d / f"{stem}.html"
        write_text_atomic(md, self.markdown(d))
        write_text_atomic(ht, self.html(d))
        return md, ht


def _cell(c) -> str:
    if isinstance(c, float):
        return f"{c:.4g}" if math.isfinite(c) else str(c)
    return str(c)


def _rel(p: Path, base: Path) -> str:
    try:
        return str(p.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(p)


def plot_series(
    path: Path,
    series: dict[str, tuple[list, list]],
    ylabel: str,
    logy: bool = False,
    xlabel: str = "step",
    vlines: list[tuple[float, str]] = (),
    markers: bool = False,
) -> Path:
    """One PNG line plot; `series` maps a label to (x, y); `vlines` are (x, label) dashed
    markers (stage boundaries)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    for label, (x, y) in series.items():
        ax.plot(x, y, label=label, linewidth=1.2, marker="o" if markers else None, markersize=3)
    for x, label in vlines:
        ax.axvline(x, color="grey", linestyle="--", linewidth=0.8)
        ax.annotate(label, (x, 1), xycoords=("data", "axes fraction"), xytext=(3, -10),
                    textcoords="offset points", fontsize=7, color="grey")  # fmt: skip
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if len(series) > 1:
        ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with_tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(with_tmp)
    plt.close(fig)
    os.replace(with_tmp, path)
    return path


def training_plots(run_dir: Path, metrics: list[dict], evals: list[dict]) -> list[tuple[Path, str]]:
    steps = [m["step"] for m in metrics]

    def col(k):
        return [m.get(k, float("nan")) for m in metrics]

    plots = [
        (plot_series(run_dir / "loss.png", {"loss": (steps, col("loss")), "ce": (steps, col("ce"))}, "loss"), "training loss"),
        (plot_series(run_dir / "lr.png", {"lr": (steps, col("lr"))}, "learning rate"), "learning rate"),
        (plot_series(run_dir / "grad_norm.png", {"grad norm": (steps, col("grad_norm"))}, "grad norm", logy=True), "gradient norm (before clipping)"),
        (plot_series(run_dir / "throughput.png", {"tokens/s": (steps, col("tokens_per_s"))}, "tokens/s"), "throughput"),
    ]  # fmt: skip
    keys = sorted({k for e in evals for k in e if k != "step"})
    if keys:
        series = {
            k: ([e["step"] for e in evals if k in e], [e[k] for e in evals if k in e]) for k in keys
        }
        plots.append((plot_series(run_dir / "eval.png", series, "eval"), "held-out evaluation"))
    return plots


def training_report(
    run_dir: str | os.PathLike, title: str | None = None, write: bool = True
) -> Report:
    """The standard report of a training run (returned so callers can add sections)."""
    from olmo2.train.metrics import read_jsonl

    run_dir = Path(run_dir)
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    if not metrics:
        raise ValueError(f"{run_dir}/metrics.jsonl is missing or empty: nothing to report")
    evals = read_jsonl(run_dir / "eval.jsonl")
    r = Report(title or f"Training run {run_dir.name}")
    last = metrics[-1]
    tps = sorted(m["tokens_per_s"] for m in metrics[1:] or metrics)
    r.add_table(
        ["steps", "tokens", "final loss", "min loss", "median tokens/s", "median MFU", "skipped steps"],
        [[
            last["step"], last.get("tokens", ""), last["loss"], min(m["loss"] for m in metrics),
            tps[len(tps) // 2], sorted(m.get("mfu", 0.0) for m in metrics)[len(metrics) // 2],
            sum(1 for m in metrics if m.get("skipped")),
        ]],
        title="Summary",
    )  # fmt: skip
    if evals:
        keys = [k for k in evals[-1] if k != "step"]
        r.add_table(
            ["step", *keys],
            [[e["step"], *(e.get(k, "") for k in keys)] for e in evals],
            title="Evaluation",
        )
    for png, caption in training_plots(run_dir, metrics, evals):
        r.add_plot(png, caption)
    if (run_dir / "config.yaml").is_file():
        r.add_heading("Resolved config").add_code((run_dir / "config.yaml").read_text())
    if write:
        md, _ = r.write(run_dir)
        log.info("wrote %s", md)
    return r
