"""report.html in a real browser: headless Chromium loads it from disk and reports what happened.

Chromium is driven through the Chrome DevTools Protocol over its websocket (a small client below, standard library
only). The test checks: every image decoded (naturalWidth > 0), no console error, no exception, no log error (a
blocked resource or a Content-Security-Policy violation is logged as one), no network request other than the file
itself, no dialog (a crafted task name must not run `alert`), no script element at all, and a phone-width viewport
without horizontal scrolling of the page. Skipped, with the reason, where Chromium is not installed.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from report_sweep import make_sweep  # noqa: E402

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium")
                 if p and os.path.exists(p)), None)
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install "
                                                          "chromium); .ci/run installs it")]
EVIL_TASK = "<script>alert(1)</script>"
EVIL_ERROR = '<img src=x onerror="alert(2)"> <b>boom</b>'


class Websocket:
    """The client side of RFC 6455, enough for DevTools: masked text frames out, text frames in, pings answered."""

    def __init__(self, url: str, timeout: float = 30.0):
        assert url.startswith("ws://"), url
        host_port, _, path = url[len("ws://"):].partition("/")
        host, _, port = host_port.partition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
        self.sock.sendall(request.encode())
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("websocket handshake: connection closed")
            response += chunk
        head, _, self.buffer = response.partition(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"websocket handshake refused: {head[:200]!r}")

    def _exact(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("websocket closed")
            self.buffer += chunk
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 1 << 16:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def send(self, text: str) -> None:
        self._send_frame(0x1, text.encode())

    def recv(self) -> str:
        message = b""
        while True:
            b0, b1 = self._exact(2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._exact(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._exact(8))[0]
            mask = self._exact(4) if b1 & 0x80 else None
            payload = self._exact(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 0x9:  # ping
                self._send_frame(0xA, payload)
                continue
            if opcode == 0x8:
                raise ConnectionError("websocket closed by the browser")
            message += payload
            if b0 & 0x80:  # final fragment
                return message.decode()

    def close(self) -> None:
        try:
            self._send_frame(0x8, b"")
        finally:
            self.sock.close()


class DevTools:
    """Commands and events of one page target."""

    def __init__(self, ws_url: str):
        self.ws = Websocket(ws_url)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, timeout: float = 30.0, **params) -> dict:
        self.next_id += 1
        my_id = self.next_id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        deadline = time.time() + timeout
        while time.time() < deadline:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)
        raise TimeoutError(method)

    def wait_for(self, event: str, timeout: float = 60.0) -> dict:
        for e in self.events:
            if e["method"] == event:
                return e
        deadline = time.time() + timeout
        while time.time() < deadline:
            msg = json.loads(self.ws.recv())
            if "method" in msg:
                self.events.append(msg)
                if msg["method"] == event:
                    return msg
        raise TimeoutError(event)

    def evaluate(self, expression: str, *, await_promise: bool = False):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=await_promise)
        if "exceptionDetails" in r:
            raise RuntimeError(f"evaluation failed: {r['exceptionDetails']}")
        return r["result"].get("value")


def new_page(port: int) -> DevTools:
    """A fresh tab (its own events), with the domains the checks listen to enabled."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}/json/new?about:blank", method="PUT")
    with urllib.request.urlopen(req, timeout=10) as r:
        target = json.load(r)
    dt = DevTools(target["webSocketDebuggerUrl"])
    for domain in ("Page", "Runtime", "Log", "Network"):
        dt.call(f"{domain}.enable")
    return dt


def open_file(port: int, path: Path, *, width: int = 1280) -> DevTools:
    """Open a local file at a desktop width and wait until it has loaded and its images are decoded."""
    dt = new_page(port)
    dt.call("Emulation.setDeviceMetricsOverride", width=width, height=900, deviceScaleFactor=1, mobile=False)
    dt.call("Page.navigate", url=Path(path).resolve().as_uri())
    dt.wait_for("Page.loadEventFired")
    # decoding of large data-URI images can finish after the load event on a slow machine: wait for it
    dt.evaluate("Promise.all(Array.from(document.images).map(i => i.decode().catch(() => null))).then(() => 1)",
                await_promise=True)
    dt.call("Runtime.evaluate", expression="1")  # let pending events arrive
    return dt


def problems(dt: DevTools) -> list:
    """Console errors, exceptions, error log entries (CSP violations, blocked loads), dialogs, failed loads."""
    out = []
    for e in dt.events:
        m, p = e["method"], e.get("params", {})
        if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append(("console", str(p.get("args"))))
        elif m == "Runtime.exceptionThrown":
            out.append(("exception", p.get("exceptionDetails", {}).get("text")))
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            out.append(("log", p["entry"].get("text")))
        elif m == "Page.javascriptDialogOpening":
            out.append(("dialog", p.get("message")))
        elif m == "Network.loadingFailed":
            out.append(("network failure", p.get("errorText")))
    return out


def image_states(dt: DevTools) -> list:
    return dt.evaluate("Array.from(document.images).map(i => ({w: i.naturalWidth, h: i.naturalHeight, "
                       "complete: i.complete, src: i.src.slice(0, 22), alt: i.alt}))")


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    """A headless Chromium with remote debugging on a free port; yields the port."""
    profile = tmp_path_factory.mktemp("chromium-profile")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--no-default-browser-check",
           "--disable-dev-shm-usage", "--disable-extensions", f"--user-data-dir={profile}",
           "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1", "about:blank"]
    # TMPDIR inside the profile: Chromium's lock and shared-memory files stay in pytest's temporary folder
    env = {**os.environ, "TMPDIR": str(profile)}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.time() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if proc.poll() is not None:
                pytest.fail(f"chromium exited with {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
            if time.time() > deadline:
                pytest.fail("chromium did not open its DevTools port within 60 s")
            time.sleep(0.1)
        yield int(port_file.read_text().split()[0])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from analysis.report import write_report

    sweep = make_sweep(tmp_path_factory.mktemp("sweep") / "browser_sweep", jump_task=EVIL_TASK, error_text=EVIL_ERROR)
    return write_report(sweep)["html"]


@pytest.fixture(scope="module")
def loaded(chromium, report):
    """The report opened at desktop width: the DevTools session, after the load event."""
    dt = open_file(chromium, report)
    yield dt
    dt.ws.close()


def test_every_image_loads(loaded, report):
    images = image_states(loaded)
    n_embedded = Path(report).read_text().count('src="data:image/png;base64,')
    assert len(images) == n_embedded >= 8, (len(images), n_embedded)
    broken = [i for i in images if not (i["complete"] and i["w"] > 0 and i["h"] > 0)]
    assert not broken, broken
    assert all(i["src"] == "data:image/png;base64," for i in images)


def test_no_console_errors_no_exceptions_no_network(loaded, report):
    assert problems(loaded) == []
    urls = [e["params"]["request"]["url"] for e in loaded.events if e["method"] == "Network.requestWillBeSent"]
    own = Path(report).resolve().as_uri()
    assert urls and all(u == own or u.startswith("data:") for u in urls), urls


def test_the_checks_catch_a_broken_page(chromium, tmp_path):
    """The same checks on a page with a broken image, a console error and an external load must complain."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><img src="data:image/png;base64,AAAA" alt="broken">'
                   '<img src="http://127.0.0.1:9/x.png" alt="remote">'
                   "<script>console.error('deliberate')</script></body></html>")
    dt = open_file(chromium, bad)
    try:
        images = image_states(dt)
        assert [i["w"] for i in images] == [0, 0]
        found = problems(dt)
        assert ("console", str([{"type": "string", "value": "deliberate"}])) in found, found
        assert any(kind == "network failure" for kind, _ in found), found
    finally:
        dt.ws.close()


def test_crafted_names_are_text_not_markup(loaded):
    assert loaded.evaluate("document.scripts.length") == 0
    assert loaded.evaluate("document.querySelectorAll('[onerror], img:not([src^=\"data:\"])').length") == 0
    text = loaded.evaluate("document.body.innerText")
    assert EVIL_TASK in text  # shown literally
    assert EVIL_ERROR in text


def test_phone_width_has_no_horizontal_page_scroll(loaded):
    loaded.call("Emulation.setDeviceMetricsOverride", width=390, height=844, deviceScaleFactor=3, mobile=True)
    try:
        sizes = loaded.evaluate("({page: document.documentElement.scrollWidth, view: window.innerWidth, "
                                "widest: Math.max(...Array.from(document.images).map(i => "
                                "i.getBoundingClientRect().width))})")
        assert sizes["view"] == 390, sizes
        assert sizes["page"] <= sizes["view"], sizes  # wide tables scroll inside their own box
        assert 0 < sizes["widest"] <= sizes["view"], sizes  # figures shrink to the screen
    finally:
        loaded.call("Emulation.clearDeviceMetricsOverride")


ROW_HEIGHTS = ("Array.from(document.querySelectorAll('tr')).map(r => ({h: r.getBoundingClientRect().height, "
               "text: r.innerText.slice(0, 60)}))")


def tall_rows(dt: DevTools, width: int, limit: float = 200.0) -> list:
    dt.call("Emulation.setDeviceMetricsOverride", width=width, height=900, deviceScaleFactor=1, mobile=width < 600)
    try:
        return [r for r in dt.evaluate(ROW_HEIGHTS) if r["h"] > limit]
    finally:
        dt.call("Emulation.clearDeviceMetricsOverride")


@pytest.mark.parametrize("width", [1400, 390])
def test_no_table_row_is_taller_than_200_px(loaded, width):
    """Long evidence sentences sit in a <details> under their row, so the row keeps the height of its numbers."""
    assert loaded.evaluate("document.querySelectorAll('tr').length") > 20
    assert tall_rows(loaded, width) == []
    assert loaded.evaluate("document.querySelectorAll('tr.detail details').length") > 0


def test_the_first_screen_holds_the_verdicts_and_the_figure(loaded):
    loaded.call("Emulation.setDeviceMetricsOverride", width=1400, height=900, deviceScaleFactor=1, mobile=False)
    try:
        first = loaded.evaluate("(() => { const s = document.querySelector('section.first'); return s && {"
                                "bottom: s.getBoundingClientRect().bottom, text: s.innerText, "
                                "img: s.querySelector('img') && s.querySelector('img').getBoundingClientRect().bottom,"
                                "rows: s.querySelectorAll('tbody tr').length}; })()")
    finally:
        loaded.call("Emulation.clearDeviceMetricsOverride")
    assert first is not None and first["bottom"] <= 900 and 0 < first["img"] <= 900, first
    assert "Verdicts." in first["text"] and "emergent" in first["text"] and first["rows"] >= 2, first


def test_the_row_check_catches_a_squeezed_evidence_column(chromium, tmp_path):
    """The layout the report had: a 400-character sentence in a squeezed last column makes an 800 px row."""
    words = " ".join(["evidence"] * 50)
    cells = "".join(f"<td>{c}</td>" for c in ("add2", "answer_nll", "smooth", "0.66 [0.61, 0.95]") * 3)
    bad = tmp_path / "tall.html"
    bad.write_text('<!DOCTYPE html><html><body><div style="overflow-x:auto"><table style="width:900px"><tr>'
                   f'{cells}<td>{words}</td></tr></table></div></body></html>')
    dt = open_file(chromium, bad)
    try:
        assert len(tall_rows(dt, 1400)) == 1
    finally:
        dt.ws.close()
