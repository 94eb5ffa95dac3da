"""`cockpit --web` in a real browser: headless Chromium (Debian's chromium and chromium-driver, through Selenium)
opens the served page on the embedded default, sees the dashboard, and a key press reaches the app."""

from __future__ import annotations

import base64
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.infra.services import infra_unavailable

if TYPE_CHECKING:
    from selenium.webdriver.chrome.webdriver import WebDriver

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")

# textual-serve keeps its xterm.js terminal in a closure and draws it on a canvas, so the page's text is not in the
# DOM. This runs before the page's scripts and hands the terminal to the test as window.cockpitTerminal the moment
# textual-serve's session object (the one with a websocket_url) stores it as `this.terminal`.
CAPTURE_TERMINAL = """
Object.defineProperty(Object.prototype, "terminal", {configurable: true, set(value) {
  Object.defineProperty(this, "terminal", {value, writable: true, configurable: true, enumerable: true});
  if ("websocket_url" in this) window.cockpitTerminal = value;
}});
"""
# The terminal's screen as text, one line per row (null until the terminal exists).
SCREEN_TEXT = """
const terminal = window.cockpitTerminal;
if (!terminal) return null;
const buffer = terminal.buffer.active, lines = [];
for (let y = 0; y < terminal.rows; y++) lines.push(buffer.getLine(buffer.viewportY + y)?.translateToString(true) ?? "");
return lines.join("\\n");
"""


def process_group(pgid: int) -> list[int]:
    """The live (not zombie) processes in process group `pgid`."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _ppid, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except OSError:  # gone while we looked
            continue
        if int(pgrp) == pgid and state != "Z":
            pids.append(int(stat.parent.name))
    return pids


def wait_for(check: Callable[[], bool], timeout_s: float, what: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what()}")
        time.sleep(0.2)


@dataclass
class WebServer:
    """`cockpit --web` in its own session, so that it and the app processes it starts form one process group."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def processes(self) -> list[int]:
        return process_group(self.process.pid)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@pytest.fixture
def web_server(isolated_home: Path, tmp_path: Path) -> Iterator[WebServer]:
    """`cockpit --web` on a free loopback port, on the embedded default; ready when the port answers."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [Path(sys.executable).with_name("cockpit"), "--web", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = WebServer(process, port, log)

    def listening() -> bool:
        assert process.poll() is None, f"cockpit --web exited {process.returncode}:\n{server.output()}"
        with socket.socket() as client:
            return client.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_for(listening, 30, lambda: f"port {port}:\n{server.output()}")
        yield server
    finally:  # after a failure: Ctrl-C, then kill, then whatever it left behind
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for pid in process_group(process.pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[WebDriver]:
    """Headless Chromium; missing here, the test skips (fails in CI). Selenium Manager never goes online."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.is_file()]
    if missing:
        infra_unavailable(f"no {' or '.join(missing)}: apt-get install chromium chromium-driver (scripts/setup test)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        infra_unavailable("selenium is not installed (the dev extra: scripts/setup test)")
    monkeypatch.setenv("SE_OFFLINE", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,800"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": CAPTURE_TERMINAL})
        yield driver
    finally:
        driver.quit()


def test_web_mode_shows_the_dashboard_and_takes_a_key(browser: WebDriver, web_server: WebServer) -> None:
    from selenium.webdriver.common.by import By

    def screen() -> str:
        return browser.execute_script(SCREEN_TEXT) or ""

    def shows(*texts: str) -> Callable[[], bool]:
        return lambda: all(text in screen() for text in texts)

    def stuck() -> str:
        return f"the screen to change; it shows:\n{screen()}\nserver:\n{web_server.output()}"

    browser.get(web_server.url)  # the page connects at once (no Start button unless ?delay is given)
    wait_for(shows("Nodes", "localhost", "Queue"), 60, stuck)
    assert len(web_server.processes()) > 1  # the server, and the app it started for this browser session

    browser.find_element(By.CSS_SELECTOR, "textarea.xterm-helper-textarea").send_keys("i")
    wait_for(shows("Cluster", "embedded default", "wake-on-lan"), 20, stuck)

    started = time.monotonic()
    web_server.process.send_signal(signal.SIGINT)  # Ctrl-C with the session open: it ends, its app quits
    assert web_server.process.wait(timeout=20) == 0, web_server.output()
    assert time.monotonic() - started < 10  # not aiohttp's minute of grace for open connections
    assert web_server.processes() == []
    closed = "return document.body.classList.contains('-closed')"
    wait_for(lambda: browser.execute_script(closed), 10, lambda: "the page to say the session ended")


def test_web_mode_refuses_a_websocket_from_another_site(web_server: WebServer) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", web_server.port, timeout=10)
    upgrade = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()}  # fmt: skip
    try:
        connection.request("GET", "/ws", headers={**upgrade, "Origin": "http://elsewhere.example"})
        assert connection.getresponse().status == 403
    finally:
        connection.close()
