"""A diverging run stops: the spike guard skips its explosive steps, and after
`optim.max_skipped_steps` skips in a row the run exits 2 naming the last good checkpoint,
which no save of the broken model has replaced or pruned."""

from __future__ import annotations

import json

import pytest
import torch

from olmo2.model.hf import read_state_dict
from olmo2.train import checkpoint as ckpt

from .helpers import train, write_tokens


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_tokens(tmp_path_factory.mktemp("tok") / "train.npy", n=20_000)


def _metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_diverging_run_stops_with_the_last_good_checkpoint_intact(tmp_path, data, capsys):
    run, keep = tmp_path / "run", ["checkpoint.save_interval=4", "checkpoint.keep_last=1"]
    constant = ["schedule.name=constant", "schedule.warmup_steps=0"]
    assert train(run, data, *keep, *constant, steps=8) == 0
    good = ckpt.latest(run)
    assert good.name.startswith("stage1-step8-")
    weights = read_state_dict(good)
    capsys.readouterr()
    # resumed with an LR that destroys the model in one AdamW step (the lr=1e3 run)
    rc = train(run, data, *keep, *constant, "optim.lr=1e3", steps=40)
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    m = _metrics(run)
    skipped = [x["step"] for x in m if x.get("skipped")]
    assert skipped and skipped == list(range(skipped[0], m[-1]["step"] + 1))  # one streak
    assert skipped[0] <= 10 and len(skipped) == 8  # within a few steps of the blow-up
    assert "training diverged" in err and f"the last good checkpoint is {good}" in err
    assert [p.name for p in ckpt.list_complete(run)] == [good.name]  # nothing newer saved
    ckpt.verify(good)
    for k, v in read_state_dict(good).items():
        assert torch.equal(v, weights[k]), k
    # the recipe's LR wins on resume: lowered again, the run continues from the good checkpoint
    assert train(run, data, *keep, *constant, steps=12) == 0
    assert ckpt.latest(run).name.startswith("stage1-step12-")


def test_checkpoints_carry_the_tokenizer_the_manifest_names(tmp_path, caplog):
    """Issue: training checkpoints had no tokenizer, so `olmo2 generate --model RUN/stage1-…`
    failed. The token files' manifest names the tokenizer and its SHA-256; every checkpoint
    now carries tokenizer.json + tokenizer_config.json (with the chat template), which
    olmo2's commands and transformers' AutoTokenizer read as they are."""
    from transformers import AutoTokenizer

    from olmo2.cli import main
    from olmo2.utils import sha256_file
    from tests.model.helpers import tiny_bpe

    tok_file = tmp_path / "tok.json"
    tok_file.write_text(json.dumps(tiny_bpe()))
    data_dir = tmp_path / "tokens"
    data_dir.mkdir()
    write_tokens(data_dir / "part-00000.npy", n=5_000)
    manifest = {"tokenizer": str(tok_file), "tokenizer_sha256": sha256_file(tok_file)}
    (data_dir / "manifest.json").write_text(json.dumps(manifest))
    assert train(tmp_path / "run", data_dir, "model.vocab_size=384", steps=2) == 0
    ck = ckpt.latest(tmp_path / "run")
    assert (ck / "tokenizer.json").is_file()
    hf_tok = AutoTokenizer.from_pretrained(ck)
    assert hf_tok.chat_template and hf_tok("the quick")["input_ids"]
    gen = ["generate", "--model", str(ck), "--device", "cpu", "--max-new-tokens", "3"]
    assert main([*gen, "--prompt", "the quick"]) == 0
    tok_file.write_text(json.dumps(tiny_bpe()).replace("quick", "quack"))  # hash no longer matches
    assert train(tmp_path / "run2", data_dir, "model.vocab_size=384", steps=2) == 0
    assert not (ckpt.latest(tmp_path / "run2") / "tokenizer.json").exists()
    assert "missing or changed; set data.tokenizer" in caplog.text
