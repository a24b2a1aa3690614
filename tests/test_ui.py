"""The store as a user gets it, through a real MLflow server: `stages sync` of the committed
results on a copy of the repository, then MLflow's REST API and its UI (slow: a server start
and a sync of every variant take a minute or two on a busy machine).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from helpers import generate_data
from stages.core.params import XorVariant, eval_buckets, load_params

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ("artifacts/certify", "artifacts/metrics", "artifacts/plots", "artifacts/report", "artifacts/train")
PERFECT_50_100 = "metrics.`eval/accuracy.len_50_100` = 1.0 and tags.`paritylab.kind` = 'result'"


@pytest.fixture(scope="module")
def synced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the committed results (data generated as `make repro` would), synced into its
    own SQLite store; every variant must be recorded, none skipped."""
    ws = tmp_path_factory.mktemp("ws")
    for name in ("params.yaml", "dvc.lock"):
        shutil.copy(ROOT / name, ws / name)
    for folder in COMMITTED:
        shutil.copytree(ROOT / folder, ws / folder)
    generate_data(load_params(ws / "params.yaml").data, ws / "data")
    proc = subprocess.run([sys.executable, "-m", "stages", "sync"], cwd=ws, env=env(ws), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0 and "skipped" not in proc.stdout, proc.stdout + proc.stderr
    return ws


def env(ws: Path) -> dict[str, str]:
    return {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{ws / 'mlflow.db'}", "PYTHONPATH": str(ROOT)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.load(resp)


@pytest.mark.slow
def test_rest_search_finds_the_variants_right_at_lengths_50_to_100(synced: Path) -> None:
    """POST runs/search with a filter on eval/accuracy.len_50_100 = 1.0 answers exactly the
    parity variants whose committed metrics file says 1.0."""
    params = load_params(synced / "params.yaml")
    parity = [n for n, v in params.variants.items() if not isinstance(v, XorVariant)]
    scores = {n: json.loads((synced / f"artifacts/metrics/{n}.json").read_text())["accuracy"] for n in parity}
    expected = {n for n, acc in scores.items() if acc.get("len_50_100") == 1.0}
    assert expected and expected != set(parity)  # the filter must keep some and drop some

    port = free_port()
    server = subprocess.Popen([Path(sys.executable).with_name("mlflow"), "server", "--backend-store-uri",
                               f"sqlite:///{synced / 'mlflow.db'}", "--host", "127.0.0.1", "--port", str(port),
                               "--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    base = f"http://127.0.0.1:{port}/api/2.0/mlflow"
    try:
        for _ in range(180):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                assert server.poll() is None, "mlflow server exited"
                time.sleep(1)
        with urllib.request.urlopen(f"{base}/experiments/get-by-name?experiment_name=parity", timeout=30) as resp:
            exp_id = json.load(resp)["experiment"]["experiment_id"]
        runs = post(f"{base}/runs/search", {"experiment_ids": [exp_id], "filter": PERFECT_50_100,
                                            "max_results": 1000}).get("runs", [])
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    variants = [{t["key"]: t["value"] for t in r["data"]["tags"]}["paritylab.variant"] for r in runs]
    assert sorted(variants) == sorted(expected)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_ui_screenshot_shows_the_held_out_columns(synced: Path, tmp_path: Path) -> None:
    """scripts/ui_screenshot.py: `stages ui` on the store, the page in headless Chromium, a PNG,
    and the held-out columns in the page (the script exits 1 without them)."""
    out = tmp_path / "ui.png"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts/ui_screenshot.py"), "--out", str(out)], cwd=synced,
                          env=env(synced), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "viewStateShareKey=held-out" in proc.stdout
    assert out.read_bytes().startswith(b"\x89PNG") and out.stat().st_size > 50_000


def test_shared_view_has_a_column_per_held_out_bucket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`stages ui` writes the view the URL names: result runs, one accuracy column per bucket a
    parity variant is judged on (none for an XOR variant), in params order."""
    from mlflow import MlflowClient

    from stages.commands import ui
    from stages.tracking import store

    params = load_params(ROOT / "tests/params_report.yaml")
    buckets = ui.held_out_buckets(params)
    judged = {b for n, v in params.variants.items() if not isinstance(v, XorVariant) for b in eval_buckets(params, n)}
    assert set(buckets) == judged and len(buckets) == len(judged)
    assert buckets[: len(params.evaluate.buckets)] == [b for b in params.evaluate.buckets if b in judged]

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert ui.share_view(params) is None  # nothing synced yet: no parity experiment
    exp_id = store.experiment_id("parity")
    assert ui.share_view(params) == f"/#/experiments/{exp_id}/runs?viewStateShareKey=held-out"
    view = json.loads(MlflowClient(uri).get_experiment(exp_id).tags["mlflow.sharedViewState.held-out"])
    assert view["selectedColumns"] == [f"metrics.`eval/accuracy.{b}`" for b in buckets] == view["columnOrder"]
    assert view["searchFilter"] == "tags.`paritylab.kind` = 'result'"
