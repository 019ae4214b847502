"""`olmo2 chat`: template, commands, streaming, and Ctrl-C stopping a reply but not the session."""

from __future__ import annotations

from olmo2.infer.chat import ChatSession, repl
from olmo2.infer.generate import SamplingConfig, generate


def _greedy(model, tok, messages, n):
    ids = tok.encode(tok.apply_chat_template(messages, add_generation_prompt=True))
    out = generate(model, [ids], max_new_tokens=n, eos_token_id=tok.eos_token_id)[0]
    return tok.decode([t for t in out if t != tok.eos_token_id])


def test_chat_session_commands_and_interrupt(dolma2_ckpt):
    model, tok, _ = dolma2_ckpt
    session = ChatSession(model, tok, SamplingConfig(max_new_tokens=6))
    lines = iter(
        [
            "/system Be brief.",
            "Hello",
            "And then?",
            "/reset",
            "Hi",
            "stop me",
            "/bogus",
            "/quit",
            "never read",
        ]
    )
    out: list[str] = []
    state = {"interrupt": False, "writes": 0}

    def write(s):
        if state["interrupt"]:
            state["writes"] += 1
            if state["writes"] == 2:  # Ctrl-C in the middle of a streamed reply
                raise KeyboardInterrupt
        out.append(s)

    def read(prompt):
        line = next(lines)
        state["interrupt"] = line == "stop me"
        return line

    transcript_at = {}

    def read_and_snapshot(prompt):
        transcript_at[len(transcript_at)] = [dict(m) for m in session.messages]
        return read(prompt)

    assert repl(session, read_and_snapshot, write) == 4
    text = "".join(out)
    sys = {"role": "system", "content": "Be brief."}
    # turn 1 and 2 of the first conversation, with the system prompt in front
    first = _greedy(model, tok, [sys, {"role": "user", "content": "Hello"}], 6)
    msgs2 = [
        sys,
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": first},
        {"role": "user", "content": "And then?"},
    ]
    second = _greedy(model, tok, msgs2, 6)
    assert transcript_at[3] == msgs2[1:] + [{"role": "assistant", "content": second}]
    # after /reset: a fresh conversation (system prompt kept)
    assert transcript_at[5] == [
        {"role": "user", "content": "Hi"},
        {
            "role": "assistant",
            "content": _greedy(model, tok, [sys, {"role": "user", "content": "Hi"}], 6),
        },
    ]
    # the interrupted reply is shorter than a full one and is kept in the history
    full = _greedy(model, tok, [sys, *transcript_at[5], {"role": "user", "content": "stop me"}], 6)
    partial = session.messages[-1]["content"]
    assert (
        session.messages[-2]["content"] == "stop me"
        and full.startswith(partial)
        and len(partial) < len(full)
    )
    assert (
        "[stopped]" in text
        and "unknown command '/bogus'" in text
        and "conversation cleared" in text
    )
    assert next(lines) == "never read"  # /quit ended the loop
