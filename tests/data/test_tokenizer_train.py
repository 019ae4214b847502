"""BPE training: dolma2's pre-tokenizer, special tokens, readable by tokenizers and transformers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tokenizers import Tokenizer

from olmo2.cli import main
from olmo2.tokenizer_cli import SPECIAL_TOKENS, build_untrained, train_bpe

SAMPLE = (
    "Hello, world!  It's 2024-11-24; they'll pay $1234567.\n\n\tdef f(x):\n        return x\r\n"
    "Ünïcödé 東京 don'T  <|user|>\nhi\n<|assistant|>\n"
)


def test_pretokenizer_equals_dolma2(dolma2_path):
    ours = build_untrained().pre_tokenizer.pre_tokenize_str(SAMPLE)
    theirs = Tokenizer.from_file(str(dolma2_path)).pre_tokenizer.pre_tokenize_str(SAMPLE)
    assert ours == theirs and len(ours) > 20
    assert (
        json.loads(Tokenizer.from_file(str(dolma2_path)).to_str())["pre_tokenizer"][
            "pretokenizers"
        ][0]["pattern"]["Regex"]
        == json.loads(build_untrained().to_str())["pre_tokenizer"]["pretokenizers"][0]["pattern"][
            "Regex"
        ]
    )


def test_train_cli_jsonl_and_text(tmp_path, data_dir):
    text = (data_dir / "pretrain" / "tinyshakespeare.txt").read_text()[:150_000]
    (tmp_path / "a.txt").write_text(text[:75_000])
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": text[75_000:]}) + "\n")
    out = tmp_path / "tokenizer.json"
    assert main(["tokenizer", "train", "--input", str(tmp_path / "a.txt"), str(tmp_path / "b.jsonl"),
                 "--vocab-size", "600", "--output", str(out)]) == 0  # fmt: skip
    tok = Tokenizer.from_file(str(out))
    assert tok.get_vocab_size() == 600
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == [598, 599]
    ids = tok.encode("To be, or not<|endoftext|>").ids
    assert ids[-1] == 598 and tok.decode(ids[:-1]) == "To be, or not"
    assert tok.decode(tok.encode(SAMPLE).ids) == SAMPLE  # byte-level: lossless on any text
    assert len(tok.encode("<|user|>").ids) > 1  # a plain-text marker, as in dolma2
    assert len(tok.encode("the king").ids) < len("the king")  # merges were learned

    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(
        tokenizer_file=str(out), eos_token="<|endoftext|>", pad_token="<|pad|>"
    )
    assert hf.encode(SAMPLE, add_special_tokens=False) == tok.encode(SAMPLE).ids
    assert (hf.eos_token_id, hf.pad_token_id) == (598, 599)


def test_train_from_iterator_and_errors(tmp_path):
    tok = train_bpe(
        iter(["abc abd abe " * 50] * 20), 300, str(tmp_path / "t.json"), show_progress=False
    )
    assert tok.token_to_id("<|pad|>") == tok.get_vocab_size() - 1
    with pytest.raises(ValueError, match="at least 258"):
        train_bpe(iter(["x"]), 100, str(tmp_path / "u.json"))
    assert main(["tokenizer", "train", "--input", str(tmp_path / "missing.txt"), "--vocab-size", "300",
                 "--output", str(tmp_path / "v.json")]) == 2  # fmt: skip


def test_trained_tokenizer_feeds_olmo2_tokenizer_and_uint16_token_files(tmp_path, data_dir):
    """A small trained vocab: the lead's Tokenizer loads it, and token files fit uint16."""
    from olmo2.data.documents import Document
    from olmo2.data.tokenize import read_index, tokenize_documents
    from olmo2.tokenizer import Tokenizer as OlmoTokenizer

    text = (data_dir / "pretrain" / "tinyshakespeare.txt").read_text()[:60_000]
    path = tmp_path / "tokenizer.json"
    train_bpe(iter(text.split("\n\n")), 500, str(path), show_progress=False)
    tok = OlmoTokenizer.from_file(path)
    assert (tok.eos_token_id, tok.pad_token_id) == (498, 499)
    chat = tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    assert tok.decode(tok.encode(chat)) == chat and tok.encode(chat)[0] == 498

    docs = [Document(id=str(i), text=t) for i, t in enumerate(text.split("\n\n")[:50])]
    m = tokenize_documents(docs, str(path), str(tmp_path / "tok"), dtype="uint16", num_workers=1)
    toks = np.fromfile(tmp_path / "tok" / "part-00000.npy", dtype=np.uint16)
    assert m["dtype"] == "uint16" and len(toks) == m["tokens"] and toks.max() < 500
    for (start, end, doc_id, _), d in zip(read_index(tmp_path / "tok" / "part-00000.npy"), docs):
        assert doc_id == d.id and toks[end - 1] == 498
        assert tok.decode(toks[start : end - 1].tolist()) == d.text
