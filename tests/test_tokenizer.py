"""Tokenizer loading, the OLMo 2 chat template and its trained spans."""

from __future__ import annotations

from tokenizers import Tokenizer as HFTokenizer
from transformers import AutoTokenizer

from olmo2.tokenizer import Tokenizer, render_chat

CHAT = [
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4."},
    {"role": "user", "content": "And 3+3?"},
    {"role": "assistant", "content": " It is 6."},
]


def test_dolma2_ids(dolma2_path):
    tok = Tokenizer.from_file(dolma2_path)
    assert (tok.eos_token_id, tok.pad_token_id, tok.vocab_size) == (100257, 100277, 100278)
    text = "Hello world! OLMo 2 is fully open.\n\tdef f(x): return x**2  # 12345"
    assert tok.encode(text) == HFTokenizer.from_file(str(dolma2_path)).encode(text).ids
    assert tok.decode(tok.encode(text)) == text
    assert tok.encode("<|endoftext|>") == [100257]


def test_chat_template_exact_string():
    text, spans = render_chat(CHAT[:2])
    assert text == "<|endoftext|><|user|>\nWhat is 2+2?\n<|assistant|>\n4.<|endoftext|>"
    assert [text[s:e] for s, e in spans] == ["4.<|endoftext|>"]
    sys_text, _ = render_chat([{"role": "system", "content": "Be brief."}, CHAT[0]], True)
    assert sys_text == (
        "<|endoftext|><|system|>\nBe brief.\n<|user|>\nWhat is 2+2?\n<|assistant|>\n"
    )
    multi, spans = render_chat(CHAT)
    assert "4.<|endoftext|>\n<|user|>" in multi  # newline after a non-final EOS
    assert [multi[s:e] for s, e in spans] == ["4.<|endoftext|>", " It is 6.<|endoftext|>"]


def test_chat_token_mask_covers_reply_and_eos(dolma2_path):
    tok = Tokenizer.from_file(dolma2_path)
    ids, mask = tok.encode_chat(CHAT)
    trained = [i for i, m in zip(ids, mask) if m]
    assert tok.decode(trained) == "4.<|endoftext|> It is 6.<|endoftext|>"
    assert ids == tok.encode(render_chat(CHAT)[0])


def test_saved_tokenizer_loads_in_transformers_with_same_template(tmp_path, dolma2_path):
    tok = Tokenizer.from_file(dolma2_path)
    tok.save(tmp_path)
    hf = AutoTokenizer.from_pretrained(tmp_path)
    assert hf.eos_token_id == 100257 and hf.pad_token_id == 100277
    for gen_prompt in (False, True):
        hf_text = hf.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=gen_prompt)
        assert hf_text == tok.apply_chat_template(CHAT, add_generation_prompt=gen_prompt)
    assert hf("a b c")["input_ids"] == tok.encode("a b c")
