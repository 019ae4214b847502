"""The `olmo2` command. Each subcommand lives in the module that owns its stage.

A command module exposes `add_arguments(parser)` and `run(args) -> int | None`. Only the
chosen command's module is imported, so `olmo2 --help` stays fast and one stage's optional
dependencies never break another's command.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "tokenizer": ("olmo2.tokenizer_cli", "Train a byte-level BPE tokenizer"),
    "prepare": ("olmo2.data.prepare", "Filter, dedup, decontaminate and tokenize documents"),
    "data": ("olmo2.data.provenance", "Inspect training data (provenance of a batch)"),
    "train": ("olmo2.train.cli", "Pretrain (stage 1) or anneal (stage 2) from a YAML recipe"),
    "merge": ("olmo2.train.merge", "Average checkpoints (model soup)"),
    "sft": ("olmo2.post.sft", "Supervised fine-tuning with the OLMo 2 chat template"),
    "dpo": ("olmo2.post.dpo", "Direct preference optimisation (length-normalised)"),
    "grpo": ("olmo2.post.grpo", "RLVR with GRPO and verifiable rewards"),
    "ppo": ("olmo2.post.ppo", "RLVR with PPO, a value model and verifiable rewards"),
    "rm": ("olmo2.post.rm", "Reward-model training (Bradley-Terry on preference pairs)"),
    "eval": ("olmo2.eval.cli", "OLMES-style evaluation"),
    "generate": ("olmo2.infer.generate", "Generate text from a checkpoint"),
    "chat": ("olmo2.infer.chat", "Terminal chat with a checkpoint"),
    "serve": ("olmo2.infer.server", "OpenAI-compatible HTTP server"),
    "export": ("olmo2.export.cli", "Export a checkpoint as HF or GGUF"),
    "checkpoints": ("olmo2.export.checkpoints", "List checkpoints/revisions with step and tokens"),
    "demo": ("olmo2.demo", "The whole recipe at small scale, with a report card"),
}

log = logging.getLogger("olmo2")


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    from olmo2 import __version__

    parser = argparse.ArgumentParser(prog="olmo2", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"olmo2 {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if name == chosen:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname).1s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError) as e:
        print(f"olmo2 {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"olmo2 {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
