"""Check a rendered page in a real browser: headless Chromium over the DevTools protocol.

:func:`browser_check` starts Chromium with a throw-away profile, opens the page from
``file://``, and reports what a reader's browser would see: console errors and
uncaught exceptions, images that did not load (``naturalWidth == 0``), and requests
that left the machine (anything but ``file:``, ``data:``, ``about:``, ``blob:``);
what a reader sees that a report must not show: error-styled boxes
(:data:`ERROR_SELECTORS`), raw ``$…$`` maths, and code names of the tables
(:data:`ser.report.names.CODE_NAMES`, outside the analysts' glossary) in the visible text;
optionally it saves a full-page PNG screenshot. ``ser run`` uses it on
``results/site/index.html`` when Chromium is installed (:func:`find_chromium`), and
the browser test of the report skips without it. Talking to the browser needs
``websocket-client`` (a test extra), imported only when a check runs.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from ser.report.names import code_names_in

#: Elements styled as an error or a failure: notebook stderr/error output (nbconvert and
#: Quarto) and "important" callouts (a failed stage). None belongs on a successful run.
ERROR_SELECTORS: tuple[str, ...] = (
    '[data-mime-type="application/vnd.jupyter.stderr"]', ".cell-output-stderr",
    ".cell-output-error", ".callout-important", ".ser-banner",
)
#: Inline TeX left as raw text (``$T$``): maths that did not render.
RAW_MATH = re.compile(r"(?<![\\$\w])\$[^$\s][^$\n]{0,80}?(?<!\s)\$(?![\w$])")


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary on PATH, or ``None``."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if found := shutil.which(name):
            return found
    return None


def browser_check(index_html: str | os.PathLike[str], *,
                  screenshot: str | os.PathLike[str] | None,
                  chromium: str | None = None, width: int = 1280,
                  timeout_s: float = 60.0) -> dict[str, Any]:
    """Open a page in headless Chromium and report what a reader's browser would see.

    Uses the DevTools protocol over a websocket (``websocket-client``): the page is
    loaded from ``file://``, console messages, uncaught exceptions, log entries and
    network requests are recorded, and every ``<img>`` is checked for
    ``naturalWidth > 0``.

    Args:
        index_html: the page to open.
        screenshot: PNG path for a full-page screenshot (``None``: no screenshot).
        chromium: browser binary (default: ``find_chromium()``).
        width: viewport width in CSS pixels.
        timeout_s: limit for start-up and page load, in seconds.

    Returns:
        ``{"url", "title", "console_errors": [str], "images": [{"src", "alt",
        "natural_width"}], "broken_images": [str], "external_requests": [str],
        "error_boxes": [str], "raw_math": [str], "code_names": [str],
        "screenshot": str | None}`` (``code_names``: in the visible text outside
        ``.ser-for-analysts``; the folded code of notebook pages is not visible text).

    Raises:
        FileNotFoundError: the page or the browser is missing.
        TimeoutError: the browser did not start or the page did not load in time.
    """
    import websocket  # websocket-client

    page = Path(index_html).resolve()
    if not page.is_file():
        raise FileNotFoundError(f"{page} does not exist: render the report first")
    binary = chromium or find_chromium()
    if binary is None:
        raise FileNotFoundError("no Chromium on PATH: install it (`apt-get install chromium`)")
    profile = tempfile.mkdtemp(prefix="ser-chromium-")
    cmd = [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--disable-extensions",
           "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
           f"--user-data-dir={profile}", "--remote-debugging-port=0",
           f"--window-size={width},900", "about:blank"]
    # Own process group, so that the renderer, GPU and crash-handler children are stopped
    # with the browser: one of them still writing to the profile made its removal fail.
    # Its temp files (with --disable-dev-shm-usage, shared memory as
    # /tmp/org.chromium.Chromium.*) go inside the profile, so they are removed with it.
    tmp = Path(profile) / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp)}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=os.name == "posix")
    try:
        port = _devtools_port(Path(profile), proc, timeout_s)
        ws_url = _page_websocket(port, timeout_s)
        conn = websocket.create_connection(ws_url, timeout=timeout_s, suppress_origin=True)
        try:
            return _inspect_page(conn, page, screenshot=screenshot, width=width,
                                 timeout_s=timeout_s)
        finally:
            conn.close()
    finally:
        _stop_browser(proc)
        _remove_profile(Path(profile))


def _stop_browser(proc: subprocess.Popen[bytes], *, grace_s: float = 10.0) -> None:
    """Stop Chromium and, on POSIX, every process of its group (it was started as a
    session leader): SIGTERM, then SIGKILL for whatever is left after ``grace_s``."""
    if os.name == "posix":
        def signal_group(sig: int) -> None:
            try:
                os.killpg(proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

        terminate, kill = (lambda: signal_group(signal.SIGTERM)), (lambda: signal_group(signal.SIGKILL))
    else:
        terminate, kill = proc.terminate, proc.kill
    terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        kill()
        proc.wait(timeout=grace_s)
    if os.name == "posix":
        kill()  # children that outlived the browser process


def _remove_profile(profile: Path, *, attempts: int = 20, pause_s: float = 0.1) -> None:
    """Remove the throw-away profile, retrying while exiting children still write to it.

    A profile that cannot be removed is left in the temp folder: it is not a finding
    about the page, so it never fails the check."""
    for _ in range(attempts):
        try:
            shutil.rmtree(profile)
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(pause_s)
    shutil.rmtree(profile, ignore_errors=True)


def _devtools_port(profile: Path, proc: subprocess.Popen[bytes], timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    marker = profile / "DevToolsActivePort"
    while time.monotonic() < deadline:
        if marker.is_file():
            first = marker.read_text().splitlines()[:1]
            if first and first[0].strip().isdigit():
                return int(first[0])
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with code {proc.returncode} before it opened "
                               "its DevTools port")
        time.sleep(0.05)
    raise TimeoutError(f"chromium did not open its DevTools port within {timeout_s:.0f} s")


def _page_websocket(port: int, timeout_s: float) -> str:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                targets = json.loads(r.read().decode())
            for t in targets:
                if t.get("type") == "page" and t.get("webSocketDebuggerUrl"):
                    return str(t["webSocketDebuggerUrl"])
        except (OSError, ValueError):  # TimeoutError (socket.timeout) is an OSError
            pass
        time.sleep(0.1)
    raise TimeoutError(f"no page target on DevTools port {port} within {timeout_s:.0f} s")


def _inspect_page(conn: Any, page: Path, *, screenshot: str | os.PathLike[str] | None,
                  width: int, timeout_s: float) -> dict[str, Any]:
    import websocket

    counter = iter(range(1, 1_000_000))
    events: list[dict[str, Any]] = []

    def recv() -> dict[str, Any]:
        try:
            return json.loads(conn.recv())
        except websocket.WebSocketTimeoutException as exc:
            raise TimeoutError(f"Chromium sent nothing for {timeout_s:.0f} s") from exc

    def call(method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(counter)
        conn.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = recv()
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"DevTools {method} failed: {msg['error']}")
                return msg.get("result", {})
            events.append(msg)
        raise TimeoutError(f"DevTools {method} got no answer within {timeout_s:.0f} s")

    for domain in ("Page", "Runtime", "Log", "Network"):
        call(f"{domain}.enable")
    call("Emulation.setDeviceMetricsOverride", width=width, height=900, deviceScaleFactor=1,
         mobile=False)
    url = page.as_uri()
    call("Page.navigate", url=url)
    deadline = time.monotonic() + timeout_s
    while not any(e.get("method") == "Page.loadEventFired" for e in events):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not finish loading within {timeout_s:.0f} s")
        events.append(recv())
    state = call("Runtime.evaluate", returnByValue=True, awaitPromise=True, expression=
                 f"const ERROR_SELECTORS = {json.dumps(', '.join(ERROR_SELECTORS))};" + """
        (async () => {
          const imgs = Array.from(document.images);
          await Promise.all(imgs.map(i => i.complete ? null :
              new Promise(r => { i.onload = r; i.onerror = r; })));
          const analysts = Array.from(document.querySelectorAll('.ser-for-analysts'));
          analysts.forEach(e => { e.dataset.serDisplay = e.style.display; e.style.display = 'none'; });
          const text = document.body ? document.body.innerText : '';
          analysts.forEach(e => { e.style.display = e.dataset.serDisplay; });
          const boxes = Array.from(document.querySelectorAll(ERROR_SELECTORS)).map(
              e => (e.className || e.tagName) + ': ' + (e.innerText || '').trim().slice(0, 80));
          return {title: document.title, text: text, error_boxes: boxes,
                  height: Math.ceil(document.documentElement.scrollHeight),
                  images: imgs.map(i => ({src: i.currentSrc.startsWith('data:') ? i.currentSrc.slice(0, 40) + '…' : i.currentSrc, alt: i.alt,
                                          natural_width: i.naturalWidth}))};
        })()""")["result"]["value"]
    console_errors = []
    external = []
    for e in events:
        method, params = e.get("method"), e.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            console_errors.append(" ".join(str(a.get("value", a.get("description", "")))
                                           for a in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            console_errors.append(str(details.get("exception", {}).get("description")
                                      or details.get("text")))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            console_errors.append(f"{entry.get('text')} {entry.get('url', '')}".strip())
        elif method == "Network.requestWillBeSent":
            req_url = params.get("request", {}).get("url", "")
            if not req_url.startswith(("file:", "data:", "about:", "blob:")):
                external.append(req_url)
    shot = None
    if screenshot is not None:
        height = max(900, min(int(state["height"]), 16000))
        call("Emulation.setDeviceMetricsOverride", width=width, height=height,
             deviceScaleFactor=1, mobile=False)
        data = call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        shot_path = Path(screenshot)
        shot_path.parent.mkdir(parents=True, exist_ok=True)
        shot_path.write_bytes(base64.b64decode(data))
        shot = str(shot_path)
    images = state["images"]
    text = str(state.get("text") or "")
    return {"url": url, "title": state["title"], "console_errors": console_errors,
            "images": images, "error_boxes": list(state.get("error_boxes") or []),
            "raw_math": sorted(set(RAW_MATH.findall(text))),
            "code_names": code_names_in(text),
            "broken_images": [i["src"] for i in images if not i["natural_width"]],
            "external_requests": sorted(set(external)), "screenshot": shot}
