"""Headless Chromium (Debian's /usr/bin/chromium) driven over the DevTools protocol on a pipe, for page tests.

    with Chromium(tmp_path / "profile") as browser:
        page = browser.open("http://127.0.0.1:8000/")
        page.wait("document.querySelector('#reply') !== null")

No Selenium or Playwright: Chromium reads DevTools commands on fd 3 and writes answers on fd 4, each a JSON
message ended by a NUL byte. Used by the chat page's test (tests/infer/test_server.py), the board's
end-to-end test and its screenshot script (scripts/board_screenshots.py).
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import time
from pathlib import Path
from typing import Any

AVAILABLE = shutil.which("chromium") is not None


class Chromium:
    """A headless Chromium; `send` runs one DevTools command and returns its result."""

    def __init__(self, profile: Path, width: int = 1280, height: int = 900) -> None:
        to_chrome_read, self.to_chrome = os.pipe()
        self.from_chrome, from_chrome_write = os.pipe()
        devnull = os.open(os.devnull, os.O_WRONLY)
        actions = [(os.POSIX_SPAWN_DUP2, to_chrome_read, 3), (os.POSIX_SPAWN_DUP2, from_chrome_write, 4),
                   (os.POSIX_SPAWN_DUP2, devnull, 1), (os.POSIX_SPAWN_DUP2, devnull, 2)]  # fmt: skip
        args = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--remote-debugging-pipe", f"--user-data-dir={profile}", f"--window-size={width},{height}",
                "about:blank"]  # fmt: skip
        self.pid = os.posix_spawnp("chromium", args, os.environ, file_actions=actions)
        for fd in (to_chrome_read, from_chrome_write, devnull):
            os.close(fd)
        self.buffer, self.last_id = b"", 0
        self.size = (width, height)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def send(self, method: str, session: str | None = None, timeout: float = 20, **params: Any) -> dict:
        self.last_id += 1
        message = {"id": self.last_id, "method": method, "params": params,
                   **({"sessionId": session} if session else {})}  # fmt: skip
        os.write(self.to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self.buffer:
                raw, self.buffer = self.buffer.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self.last_id:
                    assert "error" not in reply, reply
                    return reply["result"]
            ready, _, _ = select.select([self.from_chrome], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, f"no answer from chromium to {method}"
            data = os.read(self.from_chrome, 1 << 16)
            assert data, "chromium exited"
            self.buffer += data

    def open(self, url: str) -> Page:
        target = self.send("Target.createTarget", url=url)["targetId"]
        session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        width, height = self.size
        self.send("Emulation.setDeviceMetricsOverride", session, width=width, height=height,
                  deviceScaleFactor=1, mobile=False)  # fmt: skip
        return Page(self, session)

    def close(self) -> None:
        try:
            self.send("Browser.close")
        finally:
            os.waitpid(self.pid, 0)
            os.close(self.to_chrome)
            os.close(self.from_chrome)


class Page:
    """One tab: evaluate JavaScript, wait for a condition, take a screenshot."""

    def __init__(self, browser: Chromium, session: str) -> None:
        self.browser, self.session = browser, session

    def eval(self, expression: str, timeout: float = 20) -> Any:
        """The value of a JavaScript expression (awaited when it is a promise)."""
        result = self.browser.send("Runtime.evaluate", self.session, timeout=timeout, expression=expression,
                                   returnByValue=True, awaitPromise=True)  # fmt: skip
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def wait(self, condition: str, timeout: float = 30, poll: float = 0.1) -> Any:
        """Poll a JavaScript expression until it is truthy; its value, or an AssertionError on time-out. (A DOM
        element comes back as {}, which Python reads as false: test `!!element`.)"""
        deadline = time.monotonic() + timeout
        error = None
        while True:
            try:
                value = self.eval(condition)
            except AssertionError as err:  # e.g. mid-navigation, no page to run in yet: try again
                value, error = None, err
            if value:
                return value
            assert time.monotonic() < deadline, f"timed out waiting for: {condition} (last error: {error})"
            time.sleep(poll)

    def screenshot(self, path: Path, full_page: bool = False) -> Path:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            height = int(self.eval("document.documentElement.scrollHeight"))
            params.update(clip={"x": 0, "y": 0, "width": self.browser.size[0], "height": height, "scale": 1},
                          captureBeyondViewport=True)  # fmt: skip
        data = self.browser.send("Page.captureScreenshot", self.session, **params)["data"]
        path.write_bytes(base64.b64decode(data))
        return path
