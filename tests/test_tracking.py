"""MLflow tracking and `rerun`, against a real MLflow SQLite store in a temporary folder.

No MLflow mocks: runs are written with stages.tracking and read back with MlflowClient.
The happy path of `rerun` needs the real pipeline and is the slow test at the end.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from stages import tracking
from stages.commands import rerun
from stages.core.errors import UserError
from stages.tracking import provenance, store

ROOT = Path(__file__).resolve().parents[1]
SHA = {"train": "a" * 64, "model": "b" * 64}


class TinyParity(nn.Module):
    """x: (batch, time) bits with -1 padding -> (batch,) probability of odd parity."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(1, 3, batch_first=True)
        self.head = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = (x >= 0).sum(1).clamp(min=1) - 1  # index of each sequence's last bit
        h, _ = self.rnn(x.clamp(min=0).unsqueeze(-1))  # (batch, time, hidden)
        return torch.sigmoid(self.head(h[torch.arange(len(x)), last])).squeeze(-1)


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite store for the module (its schema migration is the slow part)."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.delenv("PARITYLAB_REPRO_ID", raising=False)
        mp.delenv("PARITYLAB_RERUN_OF", raising=False)
        store.check_store()
        yield uri


def client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(uri)


def settings() -> dict:
    return {"seed": 0, "device": "cpu", "model": {"family": "lstm", "hidden_size": 3, "layers": [8, 8]},
            "training": {"lr": 0.01, "probe_bucket": None}, "long": "x" * 7000}


def test_run_round_trip_with_torch_model(mlflow_store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store)
    torch.manual_seed(0)
    model = TinyParity()
    doc = {"seed": 0, "variants": {"tiny": {"family": "lstm"}}}
    rng = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state().clone())
    with tracking.tracked_run("parity", "tiny", "train-tiny", settings(), data_hashes={"train": SHA["train"]},
                              params_doc=doc) as run_id:
        tracking.log_history([{"step": 50, "train_loss": 0.5, "val_accuracy": 0.5, "probe_accuracy": None},
                              {"step": 100, "train_loss": 0.2, "val_accuracy": 1.0}])
        tracking.log_metrics({"train/loss": 0.1}, 150)
        tracking.log_summary({"steps": 150, "accuracy": {"len_50": 1.0}, "stopped": "early"}, prefix="eval")
        tracking.set_model_hash(SHA["model"])
        example = np.array([[1, 0, 1, 1], [0, 1, -1, -1]], dtype=np.float32)
        model_uri = tracking.log_torch_model(model, example)
    # Tracking must not draw from the seeded generators the training uses.
    assert random.getstate() == rng[0] and (np.random.get_state()[1] == rng[1]).all()
    assert torch.equal(torch.get_rng_state(), rng[2])

    c = client(mlflow_store)
    run = c.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "tiny"
    p, tags = run.data.params, run.data.tags
    assert p["model.hidden_size"] == "3" and p["model.layers"] == "[8, 8]" and p["training.lr"] == "0.01"
    assert p["training.probe_bucket"] == "null" and len(p["long"]) == 6000
    assert [(m.step, m.value) for m in c.get_metric_history(run_id, "val/accuracy")] == [(50, 0.5), (100, 1.0)]
    assert [m.step for m in c.get_metric_history(run_id, "train/loss")] == [50, 100, 150]
    assert "probe/accuracy" not in run.data.metrics
    assert run.data.metrics["eval/accuracy.len_50"] == 1.0 and "eval/stopped" not in run.data.metrics
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert tags["paritylab.git.commit"] == head and tags["mlflow.source.git.commit"] == head
    assert tags["paritylab.git.dirty"] in ("true", "false")
    assert tags["paritylab.version.torch"] == metadata.version("torch")
    assert tags["paritylab.version.tensorflow"] == metadata.version("tensorflow")
    assert tags["paritylab.version.mlflow"] == metadata.version("mlflow")
    assert tags["paritylab.dvc_stage"] == "train-tiny" and tags["paritylab.family"] == "lstm"
    assert tags["data.sha256.train"] == SHA["train"]
    assert tags["paritylab.rerun"] == f"python -m stages rerun {run_id}"
    assert tags["paritylab.reproduce"] == f"git checkout {head} && dvc repro train-tiny"
    exp = c.get_experiment(run.info.experiment_id)
    assert exp.name == "parity" and exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert exp.artifact_location == (Path(mlflow_store.removeprefix("sqlite:///")).parent / "mlartifacts/parity").as_uri()

    import mlflow.artifacts
    import mlflow.pyfunc

    assert mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/params.json") == doc
    assert tracking.find_run("parity", "tiny", SHA["model"]) == run_id
    assert tracking.find_run("parity", "tiny", "c" * 64) is None
    longer = np.array([[1, 1, 0, 1, 0, 1, 1], [1, -1, -1, -1, -1, -1, -1]], dtype=np.float32)  # other length
    with torch.no_grad():
        expected = model(torch.from_numpy(longer)).numpy()
    np.testing.assert_allclose(mlflow.pyfunc.load_model(model_uri).predict(longer), expected, rtol=0, atol=1e-7)


def test_evaluate_resumes_the_training_run(mlflow_store: str, monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store)
    with tracking.tracked_run("parity", "res", "train", {"a": 1}, data_hashes={}) as run_id:
        tracking.set_model_hash(SHA["model"])
        tracking.log_seed_table([{"seed": 3, "epochs_to_100": 12, "margin": 0.5},
                                 {"seed": 4, "epochs_to_100": None, "margin": 0.25}])
    found = tracking.find_run("parity", "res", SHA["model"])
    (tmp_path / "res.json").write_text(json.dumps({"accuracy": {"len_50": 0.75}, "note": "x"}))
    with tracking.tracked_run("parity", "res", "evaluate-res", {"a": 2, "b": 3}, data_hashes={"len_50": "d" * 64},
                              resume_run_id=found):
        assert tracking.log_metrics_json(tmp_path / "res.json", prefix="eval") == {"accuracy.len_50": 0.75}
    c = client(mlflow_store)
    assert [(m.step, m.value) for m in c.get_metric_history(run_id, "seed/epochs_to_100")] == [(3, 12.0)]
    assert [(m.step, m.value) for m in c.get_metric_history(run_id, "seed/margin")] == [(3, 0.5), (4, 0.25)]
    assert {"metrics", "per_seed.json"} <= {f.path for f in c.list_artifacts(run_id)}
    run = c.get_run(run_id)
    assert found == run_id and run.info.status == "FINISHED"
    assert run.data.params == {"a": "1", "b": "3"}
    assert run.data.tags["paritylab.evaluate.param.a"] == "2"
    assert run.data.tags["paritylab.evaluate.dvc_stage"] == "evaluate-res"
    assert run.data.tags["paritylab.dvc_stage"] == "train-res"
    assert run.data.tags["data.sha256.len_50"] == "d" * 64
    assert run.data.metrics["eval/accuracy.len_50"] == 0.75


@pytest.mark.parametrize(("error", "status"), [(KeyboardInterrupt, "KILLED"), (RuntimeError, "FAILED"),
                                               ("SIGTERM", "KILLED")])
def test_interrupted_and_failed_runs(mlflow_store: str, monkeypatch: pytest.MonkeyPatch, error, status) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store)
    from stages.__main__ import _terminate  # what every command installs

    old_handler = signal.signal(signal.SIGTERM, _terminate)
    try:
        with (pytest.raises(KeyboardInterrupt if error == "SIGTERM" else error),
              tracking.tracked_run("parity", "stop", "train", {}, data_hashes={}) as run_id):
            if error != "SIGTERM":
                raise error()
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler interrupts this with KeyboardInterrupt
    finally:
        signal.signal(signal.SIGTERM, old_handler)
    assert client(mlflow_store).get_run(run_id).info.status == status


def test_a_run_whose_process_died_is_marked_failed(mlflow_store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL (or the OOM killer) leaves a run RUNNING; the next stage to open the store ends it."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store)
    script = ("from stages import tracking\n"
              "with tracking.tracked_run('parity', 'doomed', 'train', {}, data_hashes={}) as run_id:\n"
              "    print(run_id, flush=True)\n"
              "    import os, signal; os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "MLFLOW_TRACKING_URI": mlflow_store, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == -signal.SIGKILL
    run_id = proc.stdout.split()[0]
    assert client(mlflow_store).get_run(run_id).info.status == "RUNNING"
    assert store.reap_dead_runs(mlflow_store) == 1
    run = client(mlflow_store).get_run(run_id)
    assert run.info.status == "FAILED" and "ended without closing the run" in run.data.tags["paritylab.failure"]
    with tracking.tracked_run("parity", "alive", "train", {}, data_hashes={}):
        assert store.reap_dead_runs(mlflow_store) == 0  # this process is alive: its run stays


def test_a_moved_store_writes_its_artifacts_beside_it(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "new" / "mlflow.db"
    db.parent.mkdir()
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE experiments (artifact_location TEXT)")
    con.execute("CREATE TABLE runs (artifact_uri TEXT)")
    con.execute("INSERT INTO experiments VALUES ('file:///old/place/mlartifacts/parity')")
    con.execute("INSERT INTO runs VALUES ('file:///old/place/mlartifacts/parity/abc/artifacts')")
    con.execute("INSERT INTO runs VALUES ('s3://bucket/elsewhere')")
    con.commit()
    con.close()
    assert store.relocate_artifacts(db) == 2
    here = (tmp_path / "new" / "mlartifacts").as_uri()
    con = sqlite3.connect(db)
    assert con.execute("SELECT artifact_location FROM experiments").fetchall() == [(here + "/parity",)]
    assert sorted(con.execute("SELECT artifact_uri FROM runs").fetchall()) == [
        (here + "/parity/abc/artifacts",), ("s3://bucket/elsewhere",)]
    assert store.relocate_artifacts(db) == 0  # nothing left to move


def test_repo_root_inside_a_dvc_experiment_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / ".dvc").mkdir()
    copy = tmp_path / ".dvc" / "tmp" / "exps" / "standalone" / "tmpabc123"
    (copy / ".dvc").mkdir(parents=True)  # the copy is a DVC repo itself
    (copy / "stages").mkdir()
    assert provenance.repo_root(copy / "stages") == tmp_path
    assert provenance.repo_root(copy) == tmp_path
    (tmp_path / "a" / "b").mkdir(parents=True)
    assert provenance.repo_root(tmp_path / "a" / "b") == tmp_path
    monkeypatch.chdir(copy)
    assert store.tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert store.artifact_location("parity") == (tmp_path / "mlartifacts" / "parity").as_uri()
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "a"))  # DVC's own answer wins
    assert provenance.repo_root() == tmp_path / "a"


def test_check_store_fails_fast_when_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    start = time.monotonic()
    with pytest.raises(UserError, match=r"MLflow store http://127\.0\.0\.1:9 cannot be reached") as err:
        store.check_store()
    assert time.monotonic() - start < 10
    assert "\n" not in str(err.value)
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ  # restored


WORKER = """
import sys, time
from pathlib import Path
from stages import tracking
i, barrier = int(sys.argv[1]), Path(sys.argv[2])
tracking.check_store()
(barrier / f"ready-{i}").touch()
while len(list(barrier.glob("ready-*"))) < 3:  # start writing together
    time.sleep(0.01)
with tracking.tracked_run("parity", f"w{i}", "train", {"worker": i}, data_hashes={}):
    for step in range(30):
        tracking.log_metrics({"train/loss": 1.0 / (step + 1)}, step)
        tracking.set_model_hash(f"{i}-{step}")
"""


def test_concurrent_writers_share_one_sqlite_store(tmp_path: Path) -> None:
    """3 stages of parallel DVC experiments create one fresh store at once, then write together."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = os.environ | {"MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(i), str(tmp_path)], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(3)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(outputs)
    c = client(uri)
    runs = c.search_runs([c.get_experiment_by_name("parity").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["w0", "w1", "w2"]
    for r in runs:
        assert r.info.status == "FINISHED"
        assert len(c.get_metric_history(r.info.run_id, "train/loss")) == 30


def test_retry_waits_out_a_locked_database() -> None:
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("(sqlite3.OperationalError) database is locked")
        return "ok"

    assert store.retry(flaky) == "ok" and len(calls) == 3
    with pytest.raises(ValueError):  # anything else is raised at once
        store.retry(lambda: (calls.append(1), int("x")))
    assert len(calls) == 4


def test_keras_model_logs_and_predicts_any_length(mlflow_store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keras 3 through mlflow.tensorflow; the signature keeps the model's free time axis."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store)
    keras = pytest.importorskip("keras")
    import mlflow.pyfunc

    keras.utils.set_random_seed(0)
    bits = keras.Input((None, 1))  # (batch, time, 1), -1 padded
    h = keras.layers.LSTM(3)(keras.layers.Masking(-1.0)(bits))
    model = keras.Model(bits, keras.layers.Dense(1, activation="sigmoid")(h))
    with tracking.tracked_run("parity", "tiny_keras", "train", {}, data_hashes={}):
        uri = tracking.log_keras_model(model, np.array([[[1], [0], [1]]], dtype=np.float32))
    x = np.array([[1, 1, 0, 1, 1], [0, 1, -1, -1, -1]], dtype=np.float32)[..., None]
    got = np.asarray(mlflow.pyfunc.load_model(uri).predict(x))
    np.testing.assert_allclose(got, np.asarray(model(x)), rtol=0, atol=1e-6)


def test_repro_id_comes_from_the_dvc_ancestor() -> None:
    """A stage's nearest `dvc repro`/`dvc exp` ancestor names the group of runs."""
    parent = textwrap.dedent("""
        import os, subprocess, sys, psutil
        env = {k: v for k, v in os.environ.items() if k != "PARITYLAB_REPRO_ID"}
        code = "from stages.tracking.provenance import repro_id; print(repro_id())"
        child = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        print(child.stdout.strip(), f"{os.getpid()}-{int(psutil.Process().create_time())}")
    """)
    # The parent's command line holds "dvc" and "repro", as `python .../dvc repro` does.
    out = subprocess.run([sys.executable, "-c", parent, "dvc", "repro"], cwd=ROOT, capture_output=True,
                         text=True, env=os.environ | {"PYTHONPATH": str(ROOT)}, check=True).stdout.split()
    assert out[0] == out[1]
    assert provenance._is_dvc_run(["/x/.venv/bin/python", "/x/.venv/bin/dvc", "exp", "exec-run"])
    assert not provenance._is_dvc_run(["python", "-m", "stages", "train", "dvc_repro"])


def test_params_doc_defaults_to_the_stage_params_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "p.yaml").write_text("seed: 3\nvariants: {a: {family: lstm}}\n")
    monkeypatch.setattr(sys, "argv", ["stages", "train", "a", "--params", str(tmp_path / "p.yaml")])
    assert provenance.params_doc_from_argv() == {"seed": 3, "variants": {"a": {"family": "lstm"}}}


# --- rerun -------------------------------------------------------------------------


def test_rerun_refuses_an_unknown_run(mlflow_store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store)
    with pytest.raises(UserError, match="is not in the MLflow store"):
        rerun.main("0123456789abcdef0123456789abcdef")


def test_rerun_checks_data_hashes(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.npz").write_bytes(b"bits")
    from stages.core.files import sha256_file

    good = {"data.sha256.train": sha256_file(tmp_path / "data" / "train.npz")}
    rerun.check_data("r1", good, tmp_path)
    with pytest.raises(UserError, match=r"data bucket 'train': .* run r1 read aaaaaaaaaaaa; run `dvc repro`"):
        rerun.check_data("r1", {"data.sha256.train": SHA["train"]}, tmp_path)
    with pytest.raises(UserError, match=r"data bucket 'val': .*val\.npz is missing"):
        rerun.check_data("r1", good | {"data.sha256.val": SHA["train"]}, tmp_path)


def test_rerun_checks_the_commit(tmp_path: Path) -> None:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    dvc_yaml = {"stages": {"train": {"foreach": ["a"], "do": {
        "cmd": "true", "outs": ["models/${item}"], "metrics": [{"metrics/${item}.json": {"cache": False}}]}}}}
    (tmp_path / "dvc.yaml").write_text(json.dumps(dvc_yaml))  # JSON is YAML
    files = {"code.py": "x = 1\n", "params.yaml": "seed: 0\n", "metrics/a.json": "{}", "models/a/w.txt": "1"}
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    git("add", "-A")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "c")
    head = git("rev-parse", "HEAD").strip()
    tags = {"paritylab.git.commit": head, "paritylab.git.dirty": "false"}
    (tmp_path / "params.yaml").write_text("seed: 1\n")  # params come from the run, not this file
    (tmp_path / "metrics" / "a.json").write_text('{"acc": 1}')  # DVC outputs are not source
    (tmp_path / "models" / "a" / "w.txt").unlink()
    rerun.check_commit("r1", tags, tmp_path)
    with pytest.raises(UserError, match=f"trained at commit {'f' * 12} .* `git checkout {'f' * 40}`"):
        rerun.check_commit("r1", tags | {"paritylab.git.commit": "f" * 40}, tmp_path)
    with pytest.raises(UserError, match="with uncommitted changes"):
        rerun.check_commit("r1", tags | {"paritylab.git.dirty": "true"}, tmp_path)
    (tmp_path / "code.py").write_text("x = 2\n")
    with pytest.raises(UserError, match=r"uncommitted changes \(code\.py\)"):
        rerun.check_commit("r1", tags, tmp_path)
    git("checkout", "-q", "code.py")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qam", "results")  # params and outputs only
    rerun.check_commit("r1", tags, tmp_path)  # HEAD is not the run's commit, but its source is
    (tmp_path / "code.py").write_text("x = 3\n")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qam", "code")
    with pytest.raises(UserError, match=rf"trained at commit {head[:12]} .*, which differs in code\.py; "):
        rerun.check_commit("r1", tags, tmp_path)


MUTED = """
import sys
from stages import tracking
assert tracking.check_store() is None
with tracking.tracked_run("parity", "v", "train", {"a": 1}, data_hashes={"train": "a" * 64}) as run_id:
    assert run_id is None
    tracking.log_metrics({"train/loss": 0.5}, 3)
    tracking.log_summary({"accuracy": 1.0})
    tracking.log_seed_table([{"seed": 0, "x": 1}])
    tracking.log_artifact(sys.argv[1])
    tracking.set_model_hash("b" * 64)
    assert tracking.log_torch_model(object(), None) is None
    assert tracking.log_keras_model(object(), None) is None
assert tracking.find_run("parity", "v", "b" * 64) is None
print(sorted(m for m in ("mlflow", "sqlalchemy") if m in sys.modules))
"""


def test_stage_runs_off_open_no_store_and_log_nothing(tmp_path: Path) -> None:
    """PARITYLAB_STAGE_RUNS=0 (`make repro`): a stage's tracking calls neither import mlflow nor
    create the store; the same calls with stage runs on do both (the control)."""
    db = tmp_path / "mlflow.db"
    env = os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{db}", "PYTHONPATH": str(ROOT)}
    off = subprocess.run([sys.executable, "-c", MUTED, __file__], env=env | {tracking.STAGE_RUNS: "0"},
                         cwd=tmp_path, capture_output=True, text=True)
    assert off.returncode == 0, off.stderr[-2000:]
    assert off.stdout.strip() == "[]" and not db.exists()
    on = subprocess.run([sys.executable, "-c", MUTED, __file__], env=env | {tracking.STAGE_RUNS: "1"},
                        cwd=tmp_path, capture_output=True, text=True)
    assert on.returncode != 0 and 'line 4, in <module>' in on.stderr and db.exists()  # check_store opened it


def test_rerun_of_a_result_run_compares_what_both_hold_rounded() -> None:
    """A result run's metrics come from files (6 significant digits) and hold certify/seeds ones."""
    rows = rerun.compare_metrics({"acc": 1.0, "loss": 0.123457, "certify/k": 14.0},
                                 {"acc": 1.0, "loss": 0.12345678, "train_seconds": 2.0}, both_only=True)
    assert rows == [("acc", 1.0, 1.0, True), ("loss", 0.123457, 0.123457, True)]
    rows = rerun.compare_metrics({"loss": 0.123457}, {"loss": 0.12346}, both_only=True)
    assert rows == [("loss", 0.123457, 0.12346, False)]


def test_rerun_comparison_table() -> None:
    rows = rerun.compare_metrics({"acc": 1.0, "loss": 0.25, "train_seconds": 3.0, "old_only": 1.0},
                                 {"acc": 1.0, "loss": 0.2500001, "train_seconds": 2.0})
    assert rows == [("acc", 1.0, 1.0, True), ("loss", 0.25, 0.2500001, False), ("old_only", 1.0, None, False),
                    ("train_seconds", 3.0, 2.0, None)]
    table = rerun.format_table(rows).splitlines()
    assert table[0].split() == ["metric", "old", "new", "equal?"]
    assert table[2].split() == ["acc", "1.0", "1.0", "yes"]
    assert table[3].split() == ["loss", "0.25", "0.2500001", "NO"]
    assert table[4].split() == ["old_only", "1.0", "-", "NO"]
    assert table[5].split() == ["train_seconds", "3.0", "2.0", "(timing)"]


def _small_repo(tmp_path: Path):
    """A fresh git + DVC repository of the project with the small params; -> its shell."""
    import shutil

    env = os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", "TF_CPP_MIN_LOG_LEVEL": "2",
                        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop(tracking.STAGE_RUNS, None)

    def sh(*args: str) -> str:
        proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, f"{args}: {proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc.stdout

    for name in ("stages", "models"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".gitignore", tmp_path)
    shutil.copy(ROOT / "tests" / "params_small.yaml", tmp_path / "params.yaml")
    sh(sys.executable, "-m", "stages", "dag")
    sh("git", "init", "-q")
    sh("dvc", "init", "-q")
    sh("git", "add", "-A")
    sh("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init")
    return sh


def _files(tmp_path: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in (tmp_path / "artifacts").rglob("*") if p.is_file()}


@pytest.mark.slow
def test_rerun_reproduces_a_real_run(tmp_path: Path) -> None:
    """`dvc repro train-lstm evaluate-lstm` in a fresh repo, then `rerun` of its run: identical on CPU."""
    import yaml

    sh = _small_repo(tmp_path)
    sh("dvc", "repro", "train-lstm", "evaluate-lstm")
    c = client(f"sqlite:///{tmp_path}/mlflow.db")
    [run] = c.search_runs([c.get_experiment_by_name("parity").experiment_id])
    before = _files(tmp_path)
    out = sh(sys.executable, "-m", "stages", "rerun", run.info.run_id)
    assert "reproduced: all" in out and "model file sha256: identical" in out
    assert yaml.safe_load((tmp_path / "params.yaml").read_text())["seed"] == 0
    assert _files(tmp_path) == before  # run in a temporary worktree: not one file here was rewritten
    assert sh("git", "worktree", "list").count("\n") == 1  # and the worktree is gone


@pytest.mark.slow
def test_make_repro_records_result_runs_that_rerun(tmp_path: Path) -> None:
    """`python -m stages repro` logs no stage run; its result runs hold what `rerun` needs, and
    rerunning lstm's (trained, evaluated, certified, seeds-checked) reproduces its metrics."""
    sh = _small_repo(tmp_path)
    sh(sys.executable, "-m", "stages", "repro")
    sh("git", "add", "-A")
    sh("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "results")
    c = client(f"sqlite:///{tmp_path}/mlflow.db")
    exp = c.get_experiment_by_name("parity").experiment_id
    runs = {r.info.run_name: r for r in c.search_runs([exp])}
    assert set(runs) == {"lstm", "gru"} and all(r.data.tags["paritylab.kind"] == "result" for r in runs.values())
    before = _files(tmp_path)
    out = sh(sys.executable, "-m", "stages", "rerun", runs["lstm"].info.run_id)
    assert "reproduced: all" in out and "model file sha256: identical" in out, out
    assert "eval/accuracy.len_200" in out and "not compared" in out and "seeds/" in out
    assert _files(tmp_path) == before
    rerun_run = c.search_runs([exp], f"tags.paritylab.rerun_of = '{runs['lstm'].info.run_id}'")
    assert len(rerun_run) == 1 and "paritylab.kind" not in rerun_run[0].data.tags


def test_a_dataset_inserted_by_a_parallel_run_first_is_retried() -> None:
    """Two sweep trials starting together insert the same new dataset; the later insert fails
    on the unique key (seen through an MLflow server on PostgreSQL) and succeeds when retried."""
    from mlflow.exceptions import MlflowException

    calls = []

    def racing() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise MlflowException("(psycopg2.errors.UniqueViolation) duplicate key value violates unique "
                                  'constraint "uq_dataset"')
        return "logged"

    def raising(message: str):
        def call() -> None:
            calls.append(1)
            raise MlflowException(message)
        return call

    assert store.retry(racing, races=store.INSERT_RACE) == "logged" and len(calls) == 2
    calls.clear()
    with pytest.raises(MlflowException, match="RESOURCE_DOES_NOT_EXIST"):
        store.retry(raising("RESOURCE_DOES_NOT_EXIST"), races=store.INSERT_RACE)
    assert len(calls) == 1
    calls.clear()
    with pytest.raises(MlflowException, match="UNIQUE constraint failed"):
        store.retry(raising("UNIQUE constraint failed: datasets"), races=store.INSERT_RACE, attempts=3)
    assert len(calls) == 3
