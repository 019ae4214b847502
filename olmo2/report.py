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
        """A paragraph of Markdown (code spans, emphasis, links, lists), rendered in HTML."""
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
        """A self-contained page (no external assets): Markdown rendered by markdown-it-py
        (CommonMark + tables, raw HTML off), styled tables with right-aligned numbers,
        consecutive plots in a grid, and a contents list when there are several sections."""
        md = _markdown()
        inline = md.renderInline
        heads = [item for kind, item in self.sections if kind == "heading"]
        body = [f"<h1>{inline(self.title)}</h1>"]
        if len(heads) >= 3:
            links = "".join(
                f'<li><a href="#s{i}">{inline(h)}</a></li>' for i, h in enumerate(heads)
            )
            body.append(f'<nav class="toc"><ul>{links}</ul></nav>')
        figures: list[str] = []
        n_head = 0
        for kind, item in self.sections:
            if kind != "plot" and figures:
                body.append(f'<div class="plots">{"".join(figures)}</div>')
                figures = []
            if kind == "heading":
                body.append(f'<h2 id="s{n_head}">{inline(item)}</h2>')
                n_head += 1
            elif kind == "text":
                body.append(md.render(item))
            elif kind == "code":
                body.append(f"<pre><code>{html.escape(item)}</code></pre>")
            elif kind == "table":
                body.append(_html_table(*item, inline))
            elif kind == "plot":
                png, caption = item
                src, alt = html.escape(_rel(png, base)), html.escape(caption)
                figures.append(
                    f'<figure><img src="{src}" alt="{alt}"><figcaption>{inline(caption)}'
                    "</figcaption></figure>"
                )
        if figures:
            body.append(f'<div class="plots">{"".join(figures)}</div>')
        return (
            '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(self.title)}</title><style>{CSS}</style></head>"
            f"<body><main>{''.join(body)}</main></body></html>\n"
        )

    def write(self, directory: str | os.PathLike, stem: str = "report") -> tuple[Path, Path]:
        d = Path(directory)
        md, ht = d / f"{stem}.md", d / f"{stem}.html"
        write_text_atomic(md, self.markdown(d))
        write_text_atomic(ht, self.html(d))
        return md, ht


CSS = (
    "body{font:15px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;"
    "color:#1f2328;background:#fff;margin:0}"
    "main{max-width:74rem;margin:0 auto;padding:1.5rem 1.5rem 4rem}"
    "h1{font-size:1.75rem;margin:.5rem 0 1rem;padding-bottom:.4rem;border-bottom:1px solid #d0d7de}"
    "h2{font-size:1.3rem;margin:2.2rem 0 .8rem;padding-bottom:.25rem;border-bottom:1px solid #eaeef2}"
    "p,ul,ol{max-width:52rem}a{color:#0969da}"
    "code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.88em;"
    "background:#f6f8fa;padding:.1em .35em;border-radius:4px}"
    "pre{background:#f6f8fa;padding:.9rem 1rem;border-radius:6px;overflow:auto;line-height:1.4}"
    "pre code{background:none;padding:0;font-size:.85em}"
    ".table{overflow-x:auto;margin:1rem 0 1.5rem}"
    "table{border-collapse:collapse;font-variant-numeric:tabular-nums;font-size:.92rem}"
    "caption{text-align:left;font-weight:600;padding:.2rem 0 .4rem}"
    "th,td{border:1px solid #d0d7de;padding:.3rem .65rem;text-align:left;vertical-align:top}"
    "th{background:#f6f8fa;font-weight:600}tbody tr:nth-child(even){background:#f9fafb}"
    "td.num,th.num{text-align:right;white-space:nowrap}"
    ".plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(24rem,1fr));gap:1rem 1.5rem}"
    "figure{margin:.5rem 0}img{max-width:100%;height:auto;border:1px solid #eaeef2;border-radius:4px}"
    "figcaption{color:#57606a;font-size:.88rem;margin-top:.25rem}"
    "nav.toc{background:#f6f8fa;border-radius:6px;padding:.4rem 1rem;display:inline-block}"
    "nav.toc ul{margin:.3rem 0;padding-left:1.1rem}"
)
"""The pages' only style sheet, inline: a page must read well opened from disk."""


def _markdown():
    from markdown_it import MarkdownIt  # a dependency of rich, so always installed

    return MarkdownIt("commonmark", {"html": False}).enable("table")


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", "").removesuffix("%"))
    except ValueError:
        return False
    return True


def _html_table(title: str | None, headers: list[str], rows: list[list[str]], inline) -> str:
    """Columns whose cells are all numbers are right-aligned; cells take inline Markdown."""
    numeric = [
        bool(rows) and all(_is_number(r[j]) or r[j] == "" for r in rows if j < len(r))
        for j in range(len(headers))
    ]

    def cell(tag: str, text: str, j: int) -> str:
        cls = ' class="num"' if j < len(numeric) and numeric[j] else ""
        return f"<{tag}{cls}>{inline(text)}</{tag}>"

    cap = f"<caption>{inline(title)}</caption>" if title else ""
    head = "".join(cell("th", h, j) for j, h in enumerate(headers))
    trs = "".join(
        "<tr>" + "".join(cell("td", c, j) for j, c in enumerate(r)) + "</tr>" for r in rows
    )
    return f'<div class="table"><table>{cap}<thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table></div>'


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
        dots = markers or len(x) <= 3  # a line of one point is invisible
        ax.plot(x, y, label=label, linewidth=1.2, marker="o" if dots else None, markersize=3)
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
