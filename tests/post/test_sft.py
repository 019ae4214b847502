"""SFT: trained tokens are exactly the assistant replies + EOS; reductions; a CLI run."""

from __future__ import annotations

import io
import json

import pytest
import torch

from olmo2.cli import main as olmo2_main
from olmo2.model.hf import load_model
from olmo2.post.data import PostDataSection, RowErrors, encode_labelled
from olmo2.post.losses import IGNORE
from olmo2.post.sft import SFTExample, SFTObjective, collate_sft, sft_sampler, tokenize_sft
from olmo2.tokenizer import EOS_TOKEN
from tests.post.helpers import tiny_checkpoint, tiny_tokenizer, write_jsonl

CHAT = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "hello there"},
    {"role": "assistant", "content": "hi, how are you?"},
    {"role": "user", "content": "fine"},
    {"role": "assistant", "content": "good"},
]


def test_sft_labels_are_assistant_replies_plus_eos():
    tok = tiny_tokenizer()
    ids, labels, _ = encode_labelled(tok, CHAT, max_len=512)
    trained = "".join(tok.decode([lab]) for lab in labels if lab != IGNORE)
    # the ids are the rendered template text, and each trained run of tokens is exactly the
    # text between an "<|assistant|>\n" and the next "<|user|>"/end (reply + EOS)
    text = tok.apply_chat_template(CHAT)
    assert tok.decode(ids) == text
    runs, cur = [], []
    for lab in labels:
        if lab != IGNORE:
            cur.append(lab)
        elif cur:
            runs.append(tok.decode(cur))
            cur = []
    pieces = [p.split("\n<|user|>")[0].rstrip("\n") for p in text.split("<|assistant|>\n")[1:]]
    assert runs == pieces
    # independent of the span logic: the template string's assistant pieces
    assert trained == "hi, how are you?" + EOS_TOKEN + "good" + EOS_TOKEN
    # label t is token t+1 wherever it is trained
    for t, lab in enumerate(labels):
        if lab != IGNORE:
            assert lab == ids[t + 1]
    # truncation keeps only what fits
    short_ids, short_labels, _ = encode_labelled(tok, CHAT, max_len=len(ids) - 3)
    assert short_ids == ids[: len(ids) - 3] and short_labels[-1] == IGNORE


def test_sft_bad_rows_counted_and_strict(tmp_path):
    tok = tiny_tokenizer()
    rows = [
        {"messages": CHAT},
        {"messages": [{"role": "user", "content": "no reply"}]},
        {"instruction": "say hi", "input": "", "output": "hi"},
        {"foo": 1},
        {
            "messages": [
                {"role": "user", "content": "hello " * 200},
                {"role": "assistant", "content": "x"},
            ]
        },
    ]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    errors = RowErrors()
    ex = tokenize_sft(tok, PostDataSection(paths=[str(path)], seq_len=64), errors)
    assert len(ex) == 2 and errors.total == 3
    assert errors.counts == {
        "no assistant turn": 1,
        "unknown row format": 1,
        "prompt longer than the limit": 1,
    }
    assert "row 2" in errors.summary()
    with pytest.raises(ValueError, match=r"d.jsonl: row 2: no assistant turn"):
        tokenize_sft(tok, PostDataSection(paths=[str(path)], seq_len=64), RowErrors(strict=True))


def test_sft_objective_sum_and_mean_reduction():
    """sum: Σ token CE per micro-batch averaged over micro-batches; mean: per label token."""
    tok = tiny_tokenizer()
    ids1, lab1, _ = encode_labelled(tok, CHAT, 512)
    ids2, lab2, _ = encode_labelled(tok, CHAT[1:3], 512)
    ex = [SFTExample(ids1, lab1), SFTExample(ids2, lab2)]
    batch = collate_sft(ex, [[0], [1]], tok.pad_token_id)
    torch.manual_seed(0)
    logits = torch.randn(*batch["input_ids"].shape, 300)
    model = lambda ids, doc_ids=None: logits  # noqa: E731
    lp = logits.log_softmax(-1)
    per_tok = [
        -lp[b, t, batch["labels"][b, t]].item()
        for b in range(2)
        for t in range(batch["labels"].shape[1])
        if batch["labels"][b, t] != IGNORE
    ]
    for red, units in [("sum", 1), ("mean", len(per_tok))]:
        obj = SFTObjective(red)
        loss, _ = obj.loss(model, batch)
        assert obj.units(batch) == units
        assert (loss / units).item() == pytest.approx(sum(per_tok) / units, rel=1e-5)


def test_packing_keeps_examples_apart():
    tok = tiny_tokenizer()
    exs = [SFTExample(*encode_labelled(tok, CHAT[1:3], 512)[:2]) for _ in range(5)]
    n = len(exs[0].ids)
    data = PostDataSection(seq_len=2 * n + 1, global_batch_size=1)
    rows = sft_sampler(exs, data, packing=True).rows(0)
    assert sorted(i for r in rows for i in r) == list(range(5)) and len(rows) == 3
    b = collate_sft(exs, rows[:1], tok.pad_token_id, packed_len=2 * n + 1)
    assert (
        b["doc_ids"][0, :n].eq(0).all()
        and b["doc_ids"][0, n : 2 * n].eq(1).all()
        and b["doc_ids"][0, -1] == -1
    )


def sft_args(tmp_path, init, data, *extra, steps=4):
    return [
        "sft", "recipes/demo-sft.yaml", f"model.load_path={init}", f"data.paths=[{data}]",
        f"trainer.run_dir={tmp_path / 'run'}", f"trainer.max_steps={steps}", "data.epochs=null",
        "data.seq_len=64", "data.global_batch_size=4", "data.micro_batch_size=2",
        "logging.progress_bar=false", "logging.report=false", "logging.peak_flops=1e11", *extra,
    ]  # fmt: skip


def test_sft_cli_runs_and_saves_hf_checkpoint(tmp_path):
    init = tiny_checkpoint(tmp_path)
    rows = [
        {"instruction": f"say {w}", "output": w} for w in ["hi", "hello", "fox", "dog", "yes", "no"]
    ]
    data = write_jsonl(tmp_path / "sft.jsonl", rows)
    assert olmo2_main(sft_args(tmp_path, init, data, "optim.lr=1e-2")) == 0
    ckpts = sorted((tmp_path / "run").glob("sft-step*"))
    assert ckpts and (ckpts[-1] / "tokenizer.json").is_file()
    model = load_model(ckpts[-1])
    assert model.config.vocab_size == 320
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 4 and lines[-1]["loss"] < lines[0]["loss"]


def test_sft_output_loads_in_transformers_and_runs_eval_chat_and_chat(
    tmp_path, data_dir, monkeypatch, capsys
):
    """A post-trained checkpoint is a plain HF checkpoint: transformers loads model and chat
    template as-is, and `olmo2 eval --chat` and `olmo2 chat` accept it."""
    transformers = pytest.importorskip("transformers")
    init = tiny_checkpoint(tmp_path)
    rows = [{"instruction": f"say {w}", "output": w} for w in ["hi", "hello", "fox", "dog"]]
    data = write_jsonl(tmp_path / "sft.jsonl", rows)
    assert olmo2_main(sft_args(tmp_path, init, data, steps=2)) == 0
    ckpt = max((tmp_path / "run").glob("sft-step*"))
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    hf = transformers.AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, load_model(ckpt).eval()(ids))
    hf_tok = transformers.AutoTokenizer.from_pretrained(ckpt)
    msgs = CHAT[:4]
    assert hf_tok.apply_chat_template(
        msgs, tokenize=False, add_generation_prompt=True
    ) == tiny_tokenizer().apply_chat_template(msgs, add_generation_prompt=True)

    out, dump = tmp_path / "eval.json", tmp_path / "requests.jsonl"
    assert olmo2_main([
        "eval", "--model", str(ckpt), "--tasks", "arc_easy:rc::olmes", "--limit", "2", "--chat", "--truncate",
        "--data-dir", str(data_dir), "--output", str(out), "--dump-requests", str(dump),
        "--batch-size", "2", "--device", "cpu",
    ]) == 0  # fmt: skip
    res = json.loads(out.read_text())
    assert res["run"]["chat"] and res["tasks"]["arc_easy:rc::olmes"]["metrics"]["num_docs"] == 2
    first = json.loads(dump.read_text().splitlines()[0])
    assert "<|user|>\n" in first["context"] and first["context"].endswith("<|assistant|>\n")

    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.StringIO("say hi\n/quit\n"))
    assert (
        olmo2_main(["chat", "--model", str(ckpt), "--max-new-tokens", "3", "--device", "cpu"]) == 0
    )
    assert "1 replies" in capsys.readouterr().out
