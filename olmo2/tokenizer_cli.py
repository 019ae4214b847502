"""`olmo2 tokenizer train`: a byte-level BPE tokenizer laid out like OLMo 2's `dolma2`.

    olmo2 tokenizer train --input FILES --vocab-size N --output tokenizer.json

What matches dolma2 (`allenai_dolma2.json` in the shared data, the cl100k_base port):
- pre-tokenizer: a regex split, then byte-level mapping without a prefix space. The split
  regex is cl100k's (`PRETOKENIZE_REGEX` below): case-insensitive English contractions,
  letter runs with one optional leading non-letter/non-digit, digit groups of 1–3, punctuation
  runs with trailing newlines, newline runs, and whitespace not followed by a non-space;
- byte-level decoder, no normalizer, no BOS/EOS added by a post-processor;
- special tokens `<|endoftext|>` (EOS, and BOS for the tulu template) and `<|pad|>`, appended
  after the learned vocabulary as single ids, as dolma2 places them after its merges.
The tulu chat markers `<|user|>`, `<|assistant|>`, `<|system|>` are plain text in dolma2, so
they are not special tokens here either.

Input: JSONL (`.jsonl`, `.jsonl.gz`, `.jsonl.zst`; text under `--text-field`) and plain-text
files, read with `olmo2.data.documents.iter_documents`.
"""

from __future__ import annotations

import argparse
import itertools
import logging
from collections.abc import Iterator
from pathlib import Path

from olmo2.utils import atomic_path

log = logging.getLogger(__name__)

PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPECIAL_TOKENS = ("<|endoftext|>", "<|pad|>")


def build_untrained():
    """An empty BPE tokenizer with the dolma2 pre-tokenizer and decoder."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    return tok


def _texts(files_or_iterator, text_field: str, max_chars: int | None) -> Iterator[str]:
    """A list/tuple is file paths; any other iterable yields the texts themselves."""
    if isinstance(files_or_iterator, (list, tuple, str, Path)):
        from olmo2.data.documents import iter_documents

        files = (
            [files_or_iterator] if isinstance(files_or_iterator, (str, Path)) else files_or_iterator
        )
        texts: Iterator[str] = (d.text for d in iter_documents(files, text_field=text_field))
    else:
        texts = iter(files_or_iterator)
    seen = 0
    for t in texts:
        if max_chars is not None and seen >= max_chars:
            return
        yield t
        seen += len(t)


def train_bpe(
    files_or_iterator,
    vocab_size: int,
    output_path: str,
    *,
    text_field: str = "text",
    min_frequency: int = 2,
    max_chars: int | None = None,
    show_progress: bool = True,
):
    """Train byte-level BPE to `vocab_size` ids in total (specials included); save tokenizer.json.

    `files_or_iterator`: a list of file paths (JSONL or text), or an iterator of strings.

    Returns the `tokenizers.Tokenizer`. `<|endoftext|>` and `<|pad|>` are the last two ids.
    """
    from tokenizers import pre_tokenizers, trainers

    n_base = 256 + len(SPECIAL_TOKENS)
    if vocab_size < n_base:
        raise ValueError(
            f"--vocab-size {vocab_size}: must be at least {n_base} (256 bytes + specials)"
        )
    out = Path(output_path)
    if out.is_dir():
        out = out / "tokenizer.json"
    tok = build_untrained()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(SPECIAL_TOKENS),
        min_frequency=min_frequency,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    tok.train_from_iterator(
        _batched(_texts(files_or_iterator, text_field, max_chars)), trainer=trainer
    )
    learned = tok.get_vocab_size()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    if learned < vocab_size - len(SPECIAL_TOKENS):
        log.warning(
            "corpus too small: learned %d ids, asked for %d",
            learned,
            vocab_size - len(SPECIAL_TOKENS),
        )
    with atomic_path(out) as tmp:
        tok.save(str(tmp))
    return tok


def _batched(texts: Iterator[str], n: int = 1000) -> Iterator[list[str]]:
    while batch := list(itertools.islice(texts, n)):
        yield batch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="tokenizer_command", metavar="SUBCOMMAND", required=True)
    p = sub.add_parser("train", help="Train byte-level BPE with the dolma2 pre-tokenizer")
    p.add_argument(
        "--input", nargs="+", required=True, metavar="FILE", help="JSONL(.gz/.zst) or text files"
    )
    p.add_argument(
        "--vocab-size", type=int, required=True, help="total ids, special tokens included"
    )
    p.add_argument("--output", required=True, help="tokenizer.json to write (or a directory)")
    p.add_argument("--text-field", default="text", help="JSONL field holding the text")
    p.add_argument("--min-frequency", type=int, default=2, help="minimum pair count for a merge")
    p.add_argument(
        "--max-chars", type=int, default=None, help="stop reading input after this many characters"
    )


def run(args: argparse.Namespace) -> int:
    from olmo2.data.documents import check_inputs

    check_inputs(args.input)  # fail on a typo before any work
    out = Path(args.output)
    if not (out if out.suffix != ".json" else out.parent).exists():
        raise FileNotFoundError(f"{out.parent}: output directory does not exist")
    tok = train_bpe(
        args.input,
        args.vocab_size,
        args.output,
        text_field=args.text_field,
        min_frequency=args.min_frequency,
        max_chars=args.max_chars,
    )
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    print(f"trained {tok.get_vocab_size()} ids -> {args.output} (specials: {ids})")
    return 0
