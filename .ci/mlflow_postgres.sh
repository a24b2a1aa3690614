#!/usr/bin/env bash
# MLflow on PostgreSQL, for real: a throwaway PostgreSQL cluster and `mlflow server` on
# 127.0.0.1, the smoke sweep logged through the server, and the runs checked through it;
# then `stages sync` of the committed results through the server, and a REST runs/search on
# held-out accuracy that must give exactly the variants the committed metrics files say.
#
#   .ci/mlflow_postgres.sh [SWEEP.yaml]        # default sweeps/smoke.yaml; about 2 minutes
#
# Installs Debian's postgresql if its binaries are missing (needs root and the package
# registry). PostgreSQL refuses to run as root, so as root the cluster runs as the
# `postgres` user. Everything listens on 127.0.0.1 at free ports, lives in one temporary
# folder, and is stopped and removed on exit, also on failure or Ctrl-C. Env: PYTHON (the
# interpreter with the project's requirements; default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-$ROOT/.venv/bin/python}
SWEEP=${1:-sweeps/smoke.yaml}
HOST=127.0.0.1
export TF_CPP_MIN_LOG_LEVEL=2 RAY_USAGE_STATS_ENABLED=0 PYTHONUNBUFFERED=1 MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false
unset RAY_ADDRESS MLFLOW_TRACKING_URI

TMP=$(mktemp -d /tmp/paritylab-pg.XXXXXX)
chmod 755 "$TMP"
PGDATA=$TMP/pg
MLFLOW_PID=
PG_STARTED=

say() { echo "mlflow_postgres: $*"; }

cleanup() {
  local rc=$?
  set +e
  if [ -n "$MLFLOW_PID" ]; then
    kill -TERM -- "-$MLFLOW_PID" 2>/dev/null  # the server and its workers: one process group
    for _ in $(seq 20); do  # until the server has exited (a zombie counts as exited)
      case "$(ps -o stat= -p "$MLFLOW_PID" 2>/dev/null)" in "" | Z*) break ;; esac
      sleep 0.5
    done
    wait "$MLFLOW_PID" 2>/dev/null
    kill -KILL -- "-$MLFLOW_PID" 2>/dev/null  # any worker left behind
  fi
  [ -n "$PG_STARTED" ] && as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate -w -t 20 stop >/dev/null 2>&1
  if [ "$rc" != 0 ]; then
    for log in "$TMP"/run/pg.log "$TMP"/mlflow.log; do
      [ -f "$log" ] && { echo "--- tail of $(basename "$log")"; tail -n 25 "$log"; }
    done
  fi
  rm -rf "$TMP"
  say "cleaned up ($( [ "$rc" = 0 ] && echo passed || echo "FAILED, exit $rc"))"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {  # a port nothing listens on now, on 127.0.0.1
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- PostgreSQL binaries (Debian keeps them outside PATH) ---
find_pgbin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
PGBIN=$(find_pgbin)
if [ -z "$PGBIN" ] || [ ! -x "$PGBIN/initdb" ]; then
  say "installing Debian's postgresql"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  PGBIN=$(find_pgbin)
fi

# --- a throwaway cluster on 127.0.0.1 (as `postgres` when we are root) ---
if [ "$(id -u)" = 0 ]; then
  as_pg() { runuser -u postgres -- "$@"; }
  install -d -o postgres "$PGDATA" "$TMP/run"
else
  as_pg() { "$@"; }
  mkdir -p "$PGDATA" "$TMP/run"
fi
PGPORT=$(free_port)
as_pg "$PGBIN/initdb" -D "$PGDATA" -U mlflow --auth=trust -E UTF8 --no-locale >"$TMP/initdb.log"
# fsync off: a throwaway cluster need not survive a power cut, and it is much faster.
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$TMP/run/pg.log" -w -t 30 \
  -o "-c listen_addresses=$HOST -p $PGPORT -k $TMP/run -c fsync=off" start >/dev/null
PG_STARTED=1
as_pg "$PGBIN/createdb" -h "$HOST" -p "$PGPORT" -U mlflow mlflow
# SQLAlchemy 2.1 reads plain postgresql:// as psycopg 3; the lock has psycopg2-binary.
BACKEND="postgresql+psycopg2://mlflow@$HOST:$PGPORT/mlflow"
say "PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') on $HOST:$PGPORT"

# --- the tracking server: runs in PostgreSQL, artifacts proxied into a folder ---
PORT=$(free_port)
setsid "$(dirname "$PY")/mlflow" server --backend-store-uri "$BACKEND" \
  --artifacts-destination "$TMP/artifacts" --host "$HOST" --port "$PORT" --workers 1 \
  >"$TMP/mlflow.log" 2>&1 &
MLFLOW_PID=$!
URI="http://$HOST:$PORT"
for i in $(seq 120); do  # schema creation on a new database takes a while
  "$PY" -c "import urllib.request as u; u.urlopen('$URI/health', timeout=2)" 2>/dev/null && break
  kill -0 "$MLFLOW_PID" 2>/dev/null || { say "mlflow server exited"; exit 1; }
  [ "$i" = 120 ] && { say "mlflow server not up after 120 s"; exit 1; }
  sleep 1
done
say "mlflow server at $URI"

# --- the sweep, in a scratch copy of the inputs, logged to the server ---
WORK=$TMP/work
mkdir -p "$WORK/sweeps"
cp params.yaml "$WORK/"
cp "$SWEEP" "$WORK/sweeps/"
NAME=$(basename "$SWEEP")
(cd "$WORK" && PYTHONPATH=$ROOT "$PY" -c '
from pathlib import Path
from stages.core.params import load_params
from stages.pipeline.generate import dataset_names, generate
data = load_params("params.yaml").data
for name in dataset_names(data):  # what the generate stage writes
    generate(name, data, Path("data"))' 2>/dev/null)
(cd "$WORK" && MLFLOW_TRACKING_URI=$URI PYTHONPATH=$ROOT timeout -s INT -k 30 900 "$PY" -m stages sweep "sweeps/$NAME")

# --- check the runs through the server, and that they live in PostgreSQL ---
(cd "$WORK" && PYTHONPATH=$ROOT "$PY" - "$URI" "sweeps/$NAME" <<'EOF'
import sys, tempfile
from pathlib import Path

import pandas as pd
from mlflow import MlflowClient
from mlflow.artifacts import download_artifacts

from stages.sweep.schema import load_sweep

uri, sweep_file = sys.argv[1:]
sweep = load_sweep(sweep_file)
table = pd.read_csv(sweep.output_dir / "results.csv")
client = MlflowClient(uri)
exps = [e.experiment_id for e in client.search_experiments()]
parents = client.search_runs(exps, f"tags.`paritylab.sweep` = '{sweep.name}' and tags.`paritylab.sweep.role` = 'parent'")
assert parents, "no parent sweep run on the server"
children = [r for p in parents for r in client.search_runs(exps, f"tags.`mlflow.parentRunId` = '{p.info.run_id}'")]
trials = sorted(r.data.tags.get("paritylab.sweep.trial") for r in children)
assert trials == sorted(table["trial"]), f"child runs {trials} != trials {sorted(table['trial'])}"
assert all(r.info.status == "FINISHED" for r in children + parents), "a run did not finish"
assert (table["status"] == "ok").all(), table[["trial", "status", "error"]]
for p in parents:
    assert p.data.metrics["sweep/ok"] == len(table)
    with tempfile.TemporaryDirectory() as tmp:  # artifacts come back through the server's proxy
        got = Path(download_artifacts(run_id=p.info.run_id, artifact_path="results/results.csv",
                                      dst_path=tmp, tracking_uri=uri)).read_text()
    assert got == (sweep.output_dir / "results.csv").read_text(), "results.csv differs on the server"
print(f"mlflow_postgres: server has {len(parents)} parent and {len(children)} child runs, all FINISHED")
EOF
)
# --- the committed results synced through the server, and the REST search a user makes ---
cp dvc.lock "$WORK/"
mkdir -p "$WORK/artifacts"
for d in certify metrics plots report train; do cp -r "artifacts/$d" "$WORK/artifacts/"; done
SYNCED=$(cd "$WORK" && MLFLOW_TRACKING_URI=$URI PYTHONPATH=$ROOT "$PY" -m stages sync)
echo "$SYNCED" | tail -n 1
if echo "$SYNCED" | grep -q skipped; then say "sync skipped variants:"; echo "$SYNCED"; exit 1; fi
(cd "$WORK" && PYTHONPATH=$ROOT "$PY" - "$URI" <<'EOF'
import json, sys, urllib.request
from pathlib import Path

from stages.core.params import XorVariant, load_params

uri = sys.argv[1]
params = load_params("params.yaml")
parity = [n for n, v in params.variants.items() if not isinstance(v, XorVariant)]
scores = {n: json.loads(Path(f"artifacts/metrics/{n}.json").read_text())["accuracy"] for n in parity}
expected = sorted(n for n, acc in scores.items() if acc.get("len_50_100") == 1.0)
with urllib.request.urlopen(f"{uri}/api/2.0/mlflow/experiments/get-by-name?experiment_name=parity") as resp:
    exp_id = json.load(resp)["experiment"]["experiment_id"]
body = {"experiment_ids": [exp_id], "max_results": 1000,
        "filter": "metrics.`eval/accuracy.len_50_100` = 1.0 and tags.`paritylab.kind` = 'result'"}
req = urllib.request.Request(f"{uri}/api/2.0/mlflow/runs/search", json.dumps(body).encode(),
                             {"Content-Type": "application/json"})
with urllib.request.urlopen(req) as resp:
    runs = json.load(resp).get("runs", [])
got = sorted({t["key"]: t["value"] for t in r["data"]["tags"]}["paritylab.variant"] for r in runs)
assert expected and got == expected, f"REST search for len_50_100 = 1.0 gave {got}; the metrics files say {expected}"
print(f"mlflow_postgres: REST search for len_50_100 = 1.0 gives the {len(got)} variants the metrics files say")
EOF
)
RUNS=$("$PGBIN/psql" -h "$HOST" -p "$PGPORT" -U mlflow -d mlflow -tAc "select count(*) from runs")
say "PostgreSQL table runs holds $RUNS runs"
[ "$RUNS" -ge 2 ]
say OK
