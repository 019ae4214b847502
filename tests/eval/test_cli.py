"""`olmo2 eval` end to end on a tiny saved checkpoint."""

from __future__ import annotations

import json

import pytest

from olmo2.cli import main


@pytest.fixture(scope="module")
def ckpt(tiny_model, dolma2, tmp_path_factory):
    from olmo2.model.hf import save_pretrained

    return save_pretrained(tiny_model, tmp_path_factory.mktemp("m") / "ckpt", tokenizer=dolma2)


def test_eval_writes_results_json(ckpt, data_dir, tmp_path, capsys):
    out = tmp_path / "results.json"
    text = tmp_path / "doc.txt"
    text.write_text("Some held-out text to score. " * 5)
    rc = main(
        [
            "eval",
            "--model",
            str(ckpt),
            "--tasks",
            "arc_challenge::olmes,lambada",
            "--limit",
            "2",
            "--data-dir",
            str(data_dir),
            "--output",
            str(out),
            "--batch-size",
            "2",
            "--perplexity",
            str(text),
        ]
    )
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["suites"]["arc_challenge::olmes"]["best"] in (
        "arc_challenge:mc::olmes",
        "arc_challenge:rc::olmes",
    )
    assert res["tasks"]["arc_challenge:rc::olmes"]["primary_metric"] == "acc_uncond"
    assert res["tasks"]["lambada::olmes"]["metrics"]["num_docs"] == 2
    assert res["model"]["num_params"] > 0 and len(res["model"]["fingerprint"]) == 16
    assert res["perplexity"][str(text)]["bits_per_byte"] > 0
    assert "arc_challenge::olmes" in capsys.readouterr().out


def test_eval_int8_records_quantize(ckpt, data_dir, tmp_path):
    out = tmp_path / "results.json"
    args = ["eval", "--model", str(ckpt), "--tasks", "copa", "--limit", "2", "--device", "cpu"]
    args += ["--data-dir", str(data_dir), "--output", str(out), "--cache", str(tmp_path / "c.db")]
    assert main([*args, "--quantize", "int8"]) == 0
    int8 = json.loads(out.read_text())["model"]
    assert int8["quantize"] == "int8" and int8["device"] == "cpu"
    assert len(int8["fingerprint"]) == 16 and int8["num_params"] > 6_000_000
    # the fp32 run gets its own fingerprint, so a shared --cache never mixes their answers
    assert main(args) == 0
    fp32 = json.loads(out.read_text())["model"]
    assert fp32["quantize"] is None and fp32["fingerprint"] != int8["fingerprint"]
    assert main([*args, "--quantize", "int8", "--dtype", "bfloat16"]) == 2  # needs fp32 weights


def test_dump_requests_without_model(data_dir, tmp_path):
    dump = tmp_path / "req.jsonl"
    assert (
        main(
            [
                "eval",
                "--tasks",
                "gsm8k",
                "--limit",
                "3",
                "--data-dir",
                str(data_dir),
                "--dump-requests",
                str(dump),
            ]
        )
        == 0
    )
    rows = [json.loads(x) for x in dump.read_text().splitlines()]
    assert len(rows) == 3 and rows[0]["stop"] == ["Question:", "</s>", "<|im_end|>", "\n\n"]


def test_user_errors_exit_2(ckpt, data_dir, capsys):
    assert (
        main(["eval", "--model", str(ckpt), "--tasks", "hellaswagg", "--data-dir", str(data_dir)])
        == 2
    )
    assert "did you mean hellaswag" in capsys.readouterr().err
    assert (
        main(
            [
                "eval",
                "--model",
                str(ckpt),
                "--tasks",
                "copa",
                "--batch-size",
                "zero",
                "--data-dir",
                str(data_dir),
            ]
        )
        == 2
    )
    assert (
        main(["eval", "--model", str(ckpt), "--tasks", "copa", "--data-dir", "/nonexistent"]) == 2
    )


def test_list_tasks(capsys):
    assert main(["eval", "--list-tasks"]) == 0
    keys = capsys.readouterr().out.split()
    assert "core_9mcqa::olmes" in keys and "mmlu::olmes" in keys and len(keys) > 150


def test_dump_requests_carry_native_ids(data_dir, tmp_path):
    dump = tmp_path / "req.jsonl"
    argv = ["eval", "--tasks", "arc_easy:rc::olmes", "--limit", "2", "--data-dir", str(data_dir)]
    assert main([*argv, "--dump-requests", str(dump)]) == 0
    rows = [json.loads(x) for x in dump.read_text().splitlines()]
    ids = {json.loads(x)["id"] for x in (data_dir / "eval/arc_easy/test.jsonl").open()}
    assert rows and all(r["native_id"] in ids for r in rows)  # unconditional rows too
    assert len({r["native_id"] for r in rows}) == 2
