"""`olmo2 chat`: multi-turn terminal chat with the OLMo 2 template, streamed token by token.

Commands: `/reset` clears the conversation, `/system TEXT` sets the system prompt (and
resets), `/quit` (or Ctrl-D) leaves. Ctrl-C while the model is answering stops that reply —
the partial answer stays in the history — and the session goes on.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from olmo2.infer.generate import (
    Drain,
    SamplingConfig,
    add_sampling_arguments,
    drained,
    fit_prompt,
    sampling_from_args,
)

log = logging.getLogger(__name__)

HELP = "commands: /reset, /system TEXT, /quit (Ctrl-C stops a reply)"


@dataclass
class ChatSession:
    """A conversation with a model; `reply` streams the assistant's answer to `write`."""

    model: object
    tokenizer: object
    sampling: SamplingConfig
    system: str | None = None
    messages: list[dict] = field(default_factory=list)

    def reset(self) -> None:
        self.messages = []

    def prompt_ids(self) -> list[int]:
        msgs = ([{"role": "system", "content": self.system}] if self.system else []) + self.messages
        return self.tokenizer.encode(self.tokenizer.apply_chat_template(msgs, True))

    def reply(self, user: str, write: Callable[[str], None]) -> tuple[str, bool]:
        """Add a user turn, stream the answer. Returns (answer, interrupted)."""
        self.messages.append({"role": "user", "content": user})
        ids = self.prompt_ids()
        context = self.model.config.max_seq_len
        max_new = min(self.sampling.max_new_tokens, context - len(ids))  # a long chat gets less
        try:
            fit_prompt(ids, max(max_new, 1), context)
        except ValueError as e:
            self.messages.pop()
            raise ValueError(f"{e}; /reset to start over") from None
        cfg = SamplingConfig(**{**self.sampling.__dict__, "max_new_tokens": max_new})
        drain = Drain(self.tokenizer, (), [self.tokenizer.eos_token_id])
        interrupted = False
        try:
            for _ in drained(self.model, [ids], cfg, [drain]):
                write(drain.release())
        except KeyboardInterrupt:
            interrupted = True
        answer = drain.text
        write(drain.release())
        self.messages.append({"role": "assistant", "content": answer})
        return answer, interrupted


def repl(session: ChatSession, read: Callable[[str], str], write: Callable[[str], None]) -> int:
    """The read-eval-print loop; returns the number of replies."""
    n = 0
    write(f"olmo2 chat — {HELP}\n")
    while True:
        try:
            line = read("> ")
        except EOFError:
            write("\n")
            return n
        except KeyboardInterrupt:  # Ctrl-C at the prompt: a fresh line, not an exit
            write("\n")
            continue
        line = line.strip()
        if not line:
            continue
        if line in ("/quit", "/exit"):
            return n
        if line == "/reset":
            session.reset()
            write("(conversation cleared)\n")
        elif line.startswith("/system"):
            session.system = line.removeprefix("/system").strip() or None
            session.reset()
            write(
                f"(system prompt {'set' if session.system else 'cleared'}; conversation cleared)\n"
            )
        elif line.startswith("/"):
            write(f"unknown command {line.split()[0]!r}; {HELP}\n")
        else:
            try:
                _, interrupted = session.reply(line, write)
            except ValueError as e:
                write(f"error: {e}\n")
                continue
            write(" [stopped]\n" if interrupted else "\n")
            n += 1


def add_arguments(p) -> None:
    p.add_argument("--model", required=True, help="checkpoint directory or hub id")
    p.add_argument("--revision", default=None)
    p.add_argument("--system", default=None, help="system prompt")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quantize", choices=["int8"], default=None, help="int8 linear layers (CPU)")
    add_sampling_arguments(p)
    p.set_defaults(max_new_tokens=512, temperature=0.7, top_p=0.9)


def run(args) -> int:
    from olmo2.infer.load import load_for_inference

    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    model, tok = load_for_inference(
        args.model, args.revision, args.dtype, args.device, args.quantize
    )
    session = ChatSession(model, tok, sampling_from_args(args), system=args.system)

    def write(s: str) -> None:
        sys.stdout.write(s)
        sys.stdout.flush()

    n = repl(session, input, write)
    print(f"{n} replies")
    return 0
