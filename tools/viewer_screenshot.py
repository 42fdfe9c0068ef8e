#!/usr/bin/env python
"""Screenshot of the real viewer page (tools/viewer.py) in headless Chromium, for the docs.

    python tools/viewer_screenshot.py --config-file CFG --weights W --input FILE [--output docs/images/viewer.png]
        [--size 1400x1900] [--wait 40]

Starts ``streamlit run tools/viewer.py`` on a free local port with those presets and ``--run`` (the page predicts
the input as it loads), opens it in headless Chromium (Debian's ``chromium`` package; ``--browser`` for another
binary) driven over the DevTools protocol, waits (at most ``--wait`` seconds) until the page shows its triplet table
and has stopped running, and writes a screenshot of the whole page; then stops both. Needs
``pip install -e ".[app]"`` (streamlit brings the ``websockets`` client used here) and ``apt-get install chromium``.
Not a test: look at the picture.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sgg.engine.launch import find_free_port  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--input", required=True, help="image or video file the page predicts")
    parser.add_argument("--output", default=os.path.join("docs", "images", "viewer.png"))
    parser.add_argument("--size", default="1400x1900", help="browser window WIDTHxHEIGHT in pixels")
    parser.add_argument("--wait", type=float, default=120.0, help="at most this many seconds for the page to finish")
    parser.add_argument("--browser", default="", help="Chromium binary (default: chromium on PATH)")
    return parser.parse_args(argv)


def wait_for_server(url: str, timeout: float = 90.0) -> None:
    """Poll Streamlit's health endpoint until it answers 200."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"error: the viewer did not answer at {url} within {timeout:.0f} s")


class DevTools:
    """The few DevTools-protocol calls needed: navigate, evaluate, screenshot (one page target)."""

    def __init__(self, port: int, timeout: float = 30.0):
        from websockets.sync.client import connect  # noqa: WPS433 (streamlit's dependency; only this script needs it)

        deadline = time.time() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                    pages = [t for t in json.load(r) if t.get("type") == "page"]
                if pages:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise SystemExit("error: headless Chromium did not open its DevTools port")
            time.sleep(0.3)
        self._connection = connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=timeout)
        self.ws = self._connection.__enter__()
        self.ids = itertools.count(1)

    def close(self) -> None:
        self._connection.__exit__(None, None, None)

    def call(self, method: str, **params):
        i = next(self.ids)
        self.ws.send(json.dumps({"id": i, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == i:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")


# The page is done when the triplet (or steps) table is on it and Streamlit's "running" widget is gone.
DONE = ("!!document.querySelector('[data-testid=\"stDataFrame\"]') && "
        "!document.querySelector('[data-testid=\"stStatusWidget\"]')")


def main(argv=None) -> int:
    args = parse_args(argv)
    browser = args.browser or shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        print("error: no chromium binary on PATH (apt-get install chromium)", file=sys.stderr)
        return 2
    port, devtools_port = find_free_port(), find_free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", os.path.join(REPO, "tools", "viewer.py"),
         "--server.headless", "true", "--server.port", str(port), "--server.address", "127.0.0.1",
         "--browser.gatherUsageStats", "false", "--theme.base", "light", "--",
         "--config-file", args.config_file, "--weights", args.weights, "--input", args.input, "--run"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    width, height = (int(v) for v in args.size.lower().split("x"))
    chrome = None
    try:
        wait_for_server(url)
        chrome = subprocess.Popen([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                                   f"--remote-debugging-port={devtools_port}", "--remote-allow-origins=*",
                                   f"--window-size={width},{height}", "about:blank"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        tools = DevTools(devtools_port)
        tools.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                   mobile=False)
        tools.call("Page.enable")
        tools.call("Page.navigate", url=url)
        deadline = time.time() + args.wait
        while not tools.evaluate(DONE):
            if time.time() > deadline:
                print(f"error: the page did not finish within {args.wait:.0f} s", file=sys.stderr)
                return 2
            time.sleep(1.0)
        time.sleep(2.0)  # images and charts decode after the elements appear
        shot = tools.call("Page.captureScreenshot", format="png")
        out = os.path.abspath(args.output)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, "wb") as f:
            f.write(base64.b64decode(shot["data"]))
        tools.close()
    finally:
        for proc in (chrome, server):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=20)
    print(f"screenshot: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
