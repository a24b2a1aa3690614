"""Screenshot the MLflow UI where `make ui` sends a user: the parity result runs with their
held-out accuracy columns, in headless Chromium (`make ui-shot`).

    python scripts/ui_screenshot.py [--out ui_runs.png] [--params params.yaml]

Starts `python -m stages ui` (what `make ui` runs) on a free port of 127.0.0.1 against the
local store (or ``MLFLOW_TRACKING_URI``'s SQLite file), waits for it, opens the URL it prints
in Chromium with a fresh profile, saves the screenshot, and checks the page's DOM for the
held-out columns; stops the server on exit. Needs Debian's ``chromium`` (apt-get install
chromium); without it, one line saying so and exit 2. Exit 1 when the page lacks the columns.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
# No sandbox (root in a container), no GPU, and nothing that reaches out to the network.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=2200,1000", "--virtual-time-budget=30000")
WANTED = ("eval/accuracy.len_50_100", "matching runs")  # a held-out column; the runs table's footer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ui(params: str, port: int, log: Path) -> tuple[subprocess.Popen, str]:
    """`python -m stages ui` in its own process group; -> the process and the URL it prints."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "PYTHONUNBUFFERED": "1"}
    out = open(log, "w")  # noqa: SIM115  (the server writes to it until it is stopped)
    proc = subprocess.Popen([sys.executable, "-m", "stages", "ui", "--params", params, "--port", str(port)],
                            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + 180  # MLflow's first start on a store migrates it: slow
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"ui_screenshot: `stages ui` exited ({proc.returncode}):\n{log.read_text()[-2000:]}")
        text = log.read_text()
        if "no parity runs yet" in text:
            raise SystemExit("ui_screenshot: the store has no parity runs: run `make repro` first")
        url = re.search(r"held-out accuracy: (\S+)", text)
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
        except OSError:
            time.sleep(1)
            continue
        if url:
            return proc, url.group(1)
    raise SystemExit(f"ui_screenshot: the UI did not answer within 180 s:\n{log.read_text()[-2000:]}")


def chromium(browser: str, url: str, *args: str) -> str:
    """Run headless Chromium on ``url`` with a fresh profile; -> its stdout."""
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", *args, url],
                              capture_output=True, text=True, timeout=180)
    if proc.returncode:
        raise SystemExit(f"ui_screenshot: {browser} failed ({proc.returncode}): {proc.stderr[-1000:]}")
    return proc.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="ui_runs.png", help="the PNG to write")
    ap.add_argument("--params", default="params.yaml", help="the params file (its held-out buckets)")
    args = ap.parse_args()
    browser = next((b for b in BROWSERS if shutil.which(b)), None)
    if browser is None:
        print("ui_screenshot: no chromium on PATH; install it (apt-get install -y chromium) and rerun", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_ui(args.params, free_port(), Path(tmp) / "ui.log")
        try:
            out = Path(args.out).resolve()
            chromium(browser, url, f"--screenshot={out}")
            dom = chromium(browser, url, "--dump-dom")
        finally:
            os.killpg(proc.pid, signal.SIGTERM)  # mlflow ui and its workers
            proc.wait(timeout=30)
    missing = [w for w in WANTED if w not in dom]
    print(f"ui_screenshot: {url} -> {out}" + (f"; page lacks {missing}" if missing else ""))
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
