from __future__ import annotations

import json

import pytest

from olmo2.report import Report, training_report
from tests.browser import FLAGS, chromium


def test_report_builder(tmp_path):
    png = tmp_path / "x.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n")
    r = (
        Report("Demo <run>")
        .add_text("hello & bye")
        .add_table(["task", "acc"], [["arc", 0.61234567]], title="Eval")
    )
    r.add_plot(png, "a plot").add_code("a: 1")
    md, html = r.write(tmp_path)
    text = md.read_text()
    assert "# Demo <run>" in text and "| task | acc |" in text and "| arc | 0.6123 |" in text
    assert "![a plot](x.png)" in text
    h = html.read_text()
    assert "Demo &lt;run&gt;" in h and "hello &amp; bye" in h and '<img src="x.png"' in h
    assert '<td class="num">0.6123</td>' in h and "<td>arc</td>" in h


def test_html_renders_markdown_and_has_no_external_assets(tmp_path):
    r = Report("Run `x`").add_heading("Setup").add_text("Uses `loss` and **bold**:\n\n- one\n- two")
    r.add_heading("Eval").add_table(["task `key`", "score"], [["`copa`", 0.5], ["x", ""]])
    r.add_heading("Config").add_code("a: `1` <b>")
    h = r.html(tmp_path)
    assert "<code>loss</code>" in h and "<strong>bold</strong>" in h and "<li>one</li>" in h
    assert "<th>task <code>key</code></th>" in h and "<td><code>copa</code></td>" in h
    assert "<pre><code>a: `1` &lt;b&gt;</code></pre>" in h  # code blocks stay verbatim
    assert '<nav class="toc">' in h and 'href="#s2"' in h
    assert "http://" not in h and "https://" not in h and "<script" not in h


def test_training_report(tmp_path):
    with open(tmp_path / "metrics.jsonl", "w") as f:
        for s in range(1, 11):
            m = dict(step=s, tokens=100 * s, loss=5 - 0.1 * s, ce=5 - 0.1 * s, z_loss=1e-4, lr=1e-3, grad_norm=1.0,
                     tokens_per_s=1000.0 + s, mfu=0.1, skipped="loss spike" if s == 3 else None)  # fmt: skip
            f.write(json.dumps(m) + "\n")
    (tmp_path / "eval.jsonl").write_text(json.dumps({"step": 10, "eval/val/bpb": 1.5}) + "\n")
    (tmp_path / "config.yaml").write_text("optim:\n  lr: 0.001\n")
    r = training_report(tmp_path)
    for f in (
        "loss.png",
        "lr.png",
        "grad_norm.png",
        "throughput.png",
        "eval.png",
        "report.md",
        "report.html",
    ):
        assert (tmp_path / f).is_file() and (tmp_path / f).stat().st_size > 0, f
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"
    md = (tmp_path / "report.md").read_text()
    assert (
        "| 10 | 1000 | 4 | 4 | 1006 | 0.1 | 1 |" in md
    )  # summary row: median tok/s of steps 2..10
    assert "eval/val/bpb" in md and "lr: 0.001" in md
    assert len(r.sections) > 5


def test_training_report_needs_metrics(tmp_path):
    with pytest.raises(ValueError, match="metrics.jsonl is missing"):
        training_report(tmp_path)


# ---- the pages in a real browser --------------------------------------------------------------
def _browse(page, tmp_path, name: str):
    """(rendered DOM, screenshot pixels) of `page` in headless Chromium."""
    import subprocess

    from matplotlib.image import imread

    exe, png = chromium(), tmp_path / f"{name}.png"
    base = [exe, *FLAGS, "--hide-scrollbars", f"--user-data-dir={tmp_path / f'profile-{name}'}"]
    url = page.resolve().as_uri()
    subprocess.run([*base, f"--screenshot={png}", "--window-size=1280,1600", url],
                   check=True, capture_output=True, timeout=120)  # fmt: skip
    dom = subprocess.run([*base, "--dump-dom", url], check=True, capture_output=True,
                         text=True, timeout=120).stdout  # fmt: skip
    return dom, imread(png)


def _looks_rendered(dom: str, pixels) -> None:
    import re

    visible = re.sub(r"<pre>.*?</pre>|<[^>]+>", " ", dom, flags=re.S)
    assert "`" not in visible, "Markdown code spans shown with their backticks"
    assert "<table>" in dom and "<thead>" in dom and "<img" in dom
    assert pixels.shape[0] >= 1000 and pixels.shape[1] >= 1200
    assert pixels[..., :3].std() > 0.05  # not a blank page
    assert (pixels[..., :3].mean(axis=2) < 0.5).mean() > 0.002  # some dark text


def test_report_card_in_a_browser(tmp_path):
    test_training_report(tmp_path)  # writes report.html with plots and tables
    r = training_report(tmp_path, write=False)
    r.add_heading("Evaluation").add_text("Scores use `acc_per_char`; see **OLMES**.")
    r.add_table(["task", "`metric`", "score"], [["`arc_easy:rc::olmes`", "acc", 0.61]])
    _, html = r.write(tmp_path)
    dom, pixels = _browse(html, tmp_path, "report")
    _looks_rendered(dom, pixels)
    assert "<code>acc_per_char</code>" in dom


def test_explorer_page_in_a_browser(tmp_path):
    from olmo2.eval.explorer import write_outputs

    rows = [
        {"name": f"stage{1 + (s > 20)}-step{s}-tokens{s}B", "stage": f"stage{1 + (s > 20)}",
         "step": s, "tokens": s * 1e9, "scores": {"arc_easy:rc::olmes": 0.3 + s / 100,
                                                  "core_9mcqa::olmes": 0.25 + s / 200}}
        for s in (10, 20, 30)
    ]  # fmt: skip
    sweep = {"spec": {"tasks": ["arc_easy:rc::olmes"], "limit": 100}, "checkpoints": rows,
             "metrics": ["arc_easy:rc::olmes", "core_9mcqa::olmes"]}  # fmt: skip
    paths = write_outputs(sweep, tmp_path, "Checkpoints of a run")
    dom, pixels = _browse(paths["html"], tmp_path, "explorer")
    _looks_rendered(dom, pixels)
    assert dom.count("<img") == 2 and "stage2-step30-tokens30B" in dom
