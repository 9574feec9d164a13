"""A real headless Chromium on a served console, and the console's screen as the browser got it.

The page draws the terminal on a canvas (xterm.js with WebGL), so its text is not in the DOM:
the screen is rebuilt from the websocket frames Chrome's performance log records, the same
bytes xterm.js draws, with a small emulator that follows cursor moves and ignores styles.
"""

from __future__ import annotations

import base64
import codecs
import json
import re
import shutil
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# ESC [ params final | ESC ] ... BEL or ST | ESC P/_/^ ... ST | ESC and one character | one character
_TOKEN = re.compile(r"\x1b\[([0-9;?<=>]*)([ -/]*[@-~])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"
                    r"|\x1b[P_^][^\x1b]*\x1b\\|\x1b.|[\s\S]", re.S)


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not binary.exists() and shutil.which(binary.name) is None:
            return f"{binary} is missing: apt-get install chromium chromium-driver (.ci/run does)"
    try:
        import selenium  # noqa: F401
    except ModuleNotFoundError:
        return "selenium is missing: python3 -m pip install -e '.[test]'"
    return None


class Terminal:
    """Just enough of a VT to read text: cursor moves, erases, and printable characters."""

    def __init__(self) -> None:
        self.cells: dict[tuple[int, int], str] = {}
        self.row = self.col = 0

    def feed(self, text: str) -> None:
        for match in _TOKEN.finditer(text):
            token = match.group(0)
            if match.group(2):
                self._csi(match.group(1), match.group(2))
            elif token == "\r":
                self.col = 0
            elif token == "\n":
                self.row += 1
            elif token == "\x08":
                self.col = max(self.col - 1, 0)
            elif token.isprintable() and not token.startswith("\x1b"):
                self.cells[self.row, self.col] = token
                self.col += 2 if unicodedata.east_asian_width(token) in "WF" else 1

    def _csi(self, params: str, final: str) -> None:
        numbers = [int(p) if p.isdigit() else 0 for p in params.lstrip("?").split(";")] if params else []
        first = numbers[0] if numbers else 0
        if final in "Hf":
            self.row = max((numbers[0] if numbers else 1) - 1, 0)
            self.col = max((numbers[1] if len(numbers) > 1 else 1) - 1, 0)
        elif final == "J" and first == 2 and not params.startswith("?"):
            self.cells.clear()
        elif final == "K":
            for key in [k for k in self.cells if k[0] == self.row and (first == 2 or (k[1] >= self.col) == (first == 0))]:
                del self.cells[key]
        elif final in "ABCDG":
            step = max(first, 1)
            if final == "A":
                self.row = max(self.row - step, 0)
            elif final == "B":
                self.row += step
            elif final == "C":
                self.col += step
            elif final == "D":
                self.col = max(self.col - step, 0)
            else:
                self.col = step - 1

    def text(self) -> str:
        if not self.cells:
            return ""
        rows = max(r for r, _ in self.cells) + 1
        lines = []
        for r in range(rows):
            row = {c: ch for (rr, c), ch in self.cells.items() if rr == r}
            lines.append("".join(row.get(c, " ") for c in range(max(row, default=-1) + 1)).rstrip())
        return "\n".join(lines)


class Browser:
    """Headless Chromium through selenium, keeping every network event it logs."""

    def __init__(self, width: int = 1280, height: int = 900) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                         f"--window-size={width},{height}"):
            options.add_argument(argument)
        options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        self.terminal = Terminal()
        self.events: list[str] = []  # every performance log message, as logged
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")  # a character may span two frames

    def close(self) -> None:
        self.driver.quit()

    def open(self, url: str) -> None:
        self.driver.get(url)

    def pump(self) -> None:
        """Read what Chrome logged since last time; feed the console's bytes to the terminal."""
        for entry in self.driver.get_log("performance"):
            self.events.append(entry["message"])
            message = json.loads(entry["message"])["message"]
            if message["method"] != "Network.webSocketFrameReceived":
                continue
            frame = message["params"]["response"]
            if frame.get("opcode") == 2:  # binary: the console's terminal output
                self.terminal.feed(self._decoder.decode(base64.b64decode(frame["payloadData"])))

    def screen(self) -> str:
        self.pump()
        return self.terminal.text()

    def wait_for(self, found: Callable[[str], bool], timeout: float, what: str) -> float:
        """Seconds until the screen shows `found`; fails with the screen after `timeout`."""
        started = time.monotonic()
        while True:
            screen = self.screen()
            if found(screen):
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise AssertionError(f"no {what} within {timeout} s; the browser shows:\n{screen}")
            time.sleep(0.05)

    def press(self, key: str) -> None:
        """A key as a person types it: into the terminal that has the focus (xterm.js's hidden textarea)."""
        from selenium.webdriver.common.action_chains import ActionChains

        self.driver.execute_script("document.querySelector('.xterm-helper-textarea').focus()")
        ActionChains(self.driver).send_keys(key).perform()
