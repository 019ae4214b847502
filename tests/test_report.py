from __future__ import annotations

import json

import pytest

from olmo2.report import Report, training_report


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
    assert (
        "Demo &lt;run&gt;" in h
        and "hello &amp; bye" in h
        and '<img src="x.png"' in h
        and "<td>0.6123</td>" in h
    )


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
