"""MLflow as a tracking server backed by PostgreSQL, for real (slow: about 2 minutes).

Runs .ci/mlflow_postgres.sh: a throwaway PostgreSQL cluster and `mlflow server` on
127.0.0.1, the smoke sweep logged through the server, the runs checked through
MlflowClient and in PostgreSQL's own tables, the committed results synced through it and
searched over REST; everything it started is stopped on exit.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / ".ci" / "mlflow_postgres.sh"


def _can_get_postgres() -> bool:
    """PostgreSQL's binaries are here, or we may install them (root with apt-get)."""
    if glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        return True
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux") or not _can_get_postgres(),
                    reason="needs Debian's postgresql, or root and apt-get to install it")
def test_smoke_sweep_through_mlflow_server_on_postgres() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    env["PYTHON"] = sys.executable
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=480)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    assert re.search(r"server has 1 parent and [1-9][0-9]* child runs, all FINISHED", out), out[-3000:]
    assert re.search(r"REST search for len_50_100 = 1.0 gives the [1-9][0-9]* variants the metrics files say", out)
    assert "mlflow_postgres: OK" in out and "cleaned up (passed)" in out
