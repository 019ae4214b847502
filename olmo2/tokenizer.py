"""Tokenizer: a thin layer over HF `tokenizers`, plus the OLMo 2 "tulu" chat template.

The OLMo 2 tokenizer is `dolma2` (cl100k_base ported to HF `tokenizers`): EOS
`<|endoftext|>` = 100257, PAD `<|pad|>` = 100277, no BOS.

Chat template (open-instruct `CHAT_TEMPLATES["tulu"]` with `--add_bos`, where OLMo sets
bos = eos; allenai/open-instruct open_instruct/dataset_transformation.py):

    <|endoftext|><|system|>\\n{system}\\n<|user|>\\n{user}\\n<|assistant|>\\n{reply}<|endoftext|>

A non-final assistant turn is followed by `\\n`; the generation prompt is `<|assistant|>\\n`.
Trained spans (SFT) are each assistant's content plus its EOS.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from tokenizers import Tokenizer as _HFTokenizer

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"

# Jinja form of the same template, saved in tokenizer_config.json for transformers users.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '<|system|>\\n' + message['content'] + '\\n' }}"
    "{% elif message['role'] == 'user' %}{{ '<|user|>\\n' + message['content'] + '\\n' }}"
    "{% elif message['role'] == 'assistant' %}{% if not loop.last %}"
    "{{ '<|assistant|>\\n' + message['content'] + eos_token + '\\n' }}"
    "{% else %}{{ '<|assistant|>\\n' + message['content'] + eos_token }}{% endif %}{% endif %}"
    "{% if loop.last and add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
    "{% endfor %}"
)
ROLES = ("system", "user", "assistant")


class Tokenizer:
    """Encode/decode text and render chats. Load with `Tokenizer.from_file(tokenizer.json)`."""

    def __init__(self, tok: _HFTokenizer, source: str = ""):
        self._tok = tok
        self.source = source
        self.eos_token_id = tok.token_to_id(EOS_TOKEN)
        if self.eos_token_id is None:
            raise ValueError(f"{source or 'tokenizer'}: no {EOS_TOKEN} token")
        pad = tok.token_to_id(PAD_TOKEN)
        self.pad_token_id = self.eos_token_id if pad is None else pad
        self.bos_token_id = None

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> Tokenizer:
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: tokenizer file not found")
        try:
            tok = _HFTokenizer.from_file(str(path))
        except Exception as e:
            raise ValueError(f"{path}: not a valid tokenizer.json ({e})") from None
        return cls(tok, str(path))

    @classmethod
    def load(cls, path_or_hub_id: str) -> Tokenizer:
        """A local tokenizer.json / directory, or a hub id (e.g. allenai/dolma2-tokenizer)."""
        if Path(path_or_hub_id).exists():
            return cls.from_file(path_or_hub_id)
        return cls(_HFTokenizer.from_pretrained(path_or_hub_id), path_or_hub_id)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def backend(self) -> _HFTokenizer:
        return self._tok

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def decode_batch(self, batch: Sequence[Sequence[int]], skip_special_tokens=False) -> list[str]:
        return self._tok.decode_batch(
            [list(x) for x in batch], skip_special_tokens=skip_special_tokens
        )

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    # ---- chat ------------------------------------------------------------------------------
    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        return render_chat(messages, add_generation_prompt)[0]

    def encode_chat(
        self, messages: list[dict], add_generation_prompt: bool = False
    ) -> tuple[list[int], list[bool]]:
        """Token ids of the rendered chat and a per-token mask: True for tokens that overlap an
        assistant span (content + EOS), the tokens SFT trains on."""
        text, spans = render_chat(messages, add_generation_prompt)
        enc = self._tok.encode(text, add_special_tokens=False)
        mask = [any(start < e and b < end for b, e in spans) for start, end in enc.offsets]
        return enc.ids, mask

    # ---- files ------------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> None:
        """Write tokenizer.json + tokenizer_config.json (readable by transformers' AutoTokenizer)."""
        directory = Path(directory)
        self._tok.save(str(directory / "tokenizer.json"))
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "eos_token": EOS_TOKEN,
            "pad_token": PAD_TOKEN if self._tok.token_to_id(PAD_TOKEN) is not None else EOS_TOKEN,
            "bos_token": EOS_TOKEN,  # OLMo 2 chat: bos = eos (open-instruct add_bos)
            "add_bos_token": False,
            "add_eos_token": False,
            "clean_up_tokenization_spaces": False,
            "model_max_length": 4096,
            "chat_template": CHAT_TEMPLATE,
        }
        (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


def render_chat(
    messages: list[dict], add_generation_prompt: bool = False
) -> tuple[str, list[tuple[int, int]]]:
    """Render with the tulu template. Returns the text and the (start, end) character spans of
    each assistant turn's content + EOS."""
    if not messages:
        raise ValueError("a chat needs at least one message")
    parts, spans, pos = [EOS_TOKEN], [], len(EOS_TOKEN)
    for i, m in enumerate(messages):
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise ValueError(f"message {i}: role must be one of {ROLES}, got {role!r}")
        if not isinstance(content, str):
            raise ValueError(f"message {i}: content must be a string")
        last = i == len(messages) - 1
        if role == "assistant":
            head = "<|assistant|>\n"
            body = content + EOS_TOKEN
            spans.append((pos + len(head), pos + len(head) + len(body)))
            piece = head + body + ("" if last else "\n")
        else:
            piece = f"<|{role}|>\n{content}\n"
        parts.append(piece)
        pos += len(piece)
    if add_generation_prompt:
        parts.append("<|assistant|>\n")
    return "".join(parts), spans
