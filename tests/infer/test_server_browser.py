"""The chat page at `/` in a real headless Chromium (Debian's `chromium` package), driven
over the Chrome DevTools Protocol (chromedevtools.github.io/devtools-protocol) on
`--remote-debugging-pipe`, the transport Playwright and Puppeteer use: NUL-terminated JSON
messages, commands on the browser's fd 3 and replies and events on its fd 4. The test types
into the page, clicks its buttons, reads the streamed replies and saves a screenshot
(`chat_page.png` in pytest's base temp dir, or in $OLMO2_SCREENSHOT_DIR)."""

from __future__ import annotations

import base64
import itertools
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.browser import FLAGS, chromium
from tests.infer.test_server import serve_in_thread

EXTRA_FLAGS = ["--disable-dev-shm-usage", "--window-size=1000,760", "--remote-debugging-pipe"]


class Browser:
    """Chromium with a DevTools pipe; `send(method, **params)` waits for the reply."""

    def __init__(self, user_data_dir: Path):
        to_browser, self._in = os.pipe()
        self._out, from_browser = os.pipe()

        def wire():  # the browser reads commands on fd 3 and writes on fd 4
            os.dup2(to_browser, 3)
            os.dup2(from_browser, 4)

        self.proc = subprocess.Popen(
            [chromium(), *FLAGS, *EXTRA_FLAGS, f"--user-data-dir={user_data_dir}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(3, 4), preexec_fn=wire,
        )  # fmt: skip
        os.close(to_browser)
        os.close(from_browser)
        self._ids = itertools.count(1)
        self._replies: dict[int, dict] = {}
        self._events: list[dict] = []
        self._cv = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        self.session = None

    def _read(self) -> None:
        buf = b""
        while chunk := os.read(self._out, 1 << 16):
            buf += chunk
            *messages, buf = buf.split(b"\0")
            with self._cv:
                for m in map(json.loads, messages):
                    (self._replies.__setitem__(m["id"], m) if "id" in m else self._events.append(m))
                self._cv.notify_all()

    def send(self, method: str, timeout: float = 30, **params):
        i = next(self._ids)
        msg = {"id": i, "method": method, "params": params}
        if self.session and not method.startswith(("Target.", "Browser.")):
            msg["sessionId"] = self.session
        os.write(self._in, json.dumps(msg).encode() + b"\0")
        with self._cv:
            assert self._cv.wait_for(lambda: i in self._replies, timeout), method
            reply = self._replies.pop(i)
        assert "error" not in reply, reply
        return reply["result"]

    def wait_event(self, method: str, timeout: float = 30) -> dict:
        with self._cv:
            found = self._cv.wait_for(
                lambda: any(e["method"] == method for e in self._events), timeout
            )
            assert found, method
            return next(e for e in self._events if e["method"] == method)

    def open(self, url: str) -> None:
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        self.send("Page.enable")
        self.send("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired")

    def js(self, expression: str):
        r = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in r, r
        return r["result"].get("value")

    def until(self, expression: str, timeout: float = 60):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if value := self.js(expression):
                return value
            time.sleep(0.05)
        pytest.fail(f"timed out waiting for {expression}")

    def type(self, text: str) -> None:
        self.send("Input.insertText", text=text)

    def click(self, selector: str) -> None:
        """A real mouse click at the middle of the element."""
        x, y = self.js(
            f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
            ".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def screenshot(self, path: Path) -> None:
        path.write_bytes(
            base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"])
        )

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
            self.proc.wait(10)
        except (AssertionError, subprocess.TimeoutExpired, OSError):
            self.proc.kill()
            self.proc.wait()


def _reply(browser, n: int, state: str = "done"):
    """Text and chunk count of the page's n-th reply (from 1), once it is in `state`."""
    el = f"document.querySelectorAll('.assistant')[{n - 1}]"
    browser.until(f"{el} !== undefined && {el}.dataset.state === {json.dumps(state)}")
    return browser.js(f"[{el}.textContent, Number({el}.dataset.chunks)]")


def test_chat_page_streams_multi_turn_replies_and_stops(dolma2_ckpt, tmp_path, tmp_path_factory):
    model, tok, path = dolma2_ckpt
    with serve_in_thread(model, tok, path.name, max_len=1024, max_tokens=1000) as base:
        _chat_in_the_browser(base, path.name, tmp_path, tmp_path_factory)


def _chat_in_the_browser(base: str, name: str, tmp_path, tmp_path_factory) -> None:
    browser = Browser(tmp_path / "profile")
    try:
        browser.open(base + "/")
        model = "document.getElementById('model').textContent"
        assert browser.until(f"{model} !== 'connecting…' && {model}") == name
        # settings: a system prompt, greedy decoding, short replies
        browser.click("#settings summary")
        browser.js("document.getElementById('temperature').value = '0'")
        browser.js("document.getElementById('max-tokens').value = '12'")
        browser.js("document.getElementById('system').focus()")
        browser.type("Answer briefly.")
        turns = []
        for n, text in enumerate(("Hello! Who are you?", "And what can you do?"), 1):
            browser.js("document.getElementById('input').focus()")
            browser.type(text)
            browser.click("#send")
            reply, chunks = _reply(browser, n)
            turns.append((text, reply))
            assert chunks >= 2  # streamed, in pieces
        # the page sent the whole conversation: its replies are the API's greedy answers to it
        messages = [{"role": "system", "content": "Answer briefly."}]
        for text, reply in turns:
            messages.append({"role": "user", "content": text})
            want = httpx.post(
                base + "/v1/chat/completions",
                json={"model": name, "messages": messages, "max_tokens": 12, "temperature": 0},
                timeout=60,
            ).json()["choices"][0]["message"]["content"]
            assert reply == want
            messages.append({"role": "assistant", "content": reply})
        # Stop: a long reply is cut off and its slot freed on the server
        browser.js("document.getElementById('max-tokens').value = '900'")
        browser.js("document.getElementById('input').focus()")
        browser.type("Tell me a long story.")
        browser.click("#send")
        third = "document.querySelectorAll('.assistant')[2]"
        browser.until(f"{third} !== undefined && Number({third}.dataset.chunks) >= 2")
        browser.click("#stop")
        _reply(browser, 3, "stopped")
        for _ in range(100):
            if httpx.get(base + "/stats").json()["active"] == 0:
                break
            time.sleep(0.1)
        assert httpx.get(base + "/stats").json()["active"] == 0
        assert browser.js("document.querySelectorAll('.msg.user').length") == 3
        out = Path(os.environ.get("OLMO2_SCREENSHOT_DIR") or tmp_path_factory.getbasetemp())
        out.mkdir(parents=True, exist_ok=True)
        browser.screenshot(out / "chat_page.png")
        assert (out / "chat_page.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        print(f"screenshot: {out / 'chat_page.png'}")
    finally:
        browser.close()
