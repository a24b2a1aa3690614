"""`python -m stages sync`: MLflow mirrors dvc.lock, one result run per variant and result.

Fast tests run sync on a small workspace written here (the files a parity variant's stages
write, and a dvc.lock holding their hashes) against a real SQLite store; the slow one runs
the real pipeline on the small params, then changes one variant and reproduces.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import sys
from pathlib import Path

import pytest
import yaml

from stages.commands import sync
from stages.core.params import load_params
from stages.tracking import store

ROOT = Path(__file__).resolve().parents[1]
VARIANT = "lstm"
BUCKETS = ("train", "val", "len_50_100", "len_200")
OUTS = {  # stage -> {output file: content}, as the stages write them (numbers made up)
    "train": {"artifacts/train/lstm.json": {"steps": 60, "val_accuracy": 1.0},
              "artifacts/models/lstm/model.pt": "weights", "artifacts/models/lstm/config.json": {"hidden_size": 4},
              "artifacts/train/lstm.csv": "step,train_loss,val_accuracy,probe_accuracy\n30,0.6,0.9,\n60,0.1,1.0,1.0\n"},
    "evaluate": {"artifacts/metrics/lstm.json": {"accuracy": {"len_50_100": 1.0, "len_200": 0.95}},
                 "artifacts/plots/lstm.csv": "length,accuracy,count\n50,1.0,30\n100,1.0,20\n200,0.95,20\n"},
    "certify": {"artifacts/metrics/certify_lstm.json": {"certified": 1, "k": 14},
                "artifacts/certify/lstm.json": {"certified": True}},
    "seeds": {"artifacts/metrics/seeds_lstm.json": {"seeds": 2, "solved": {"len_50_100": 2}},
              "artifacts/plots/seeds_lstm.csv": "seed,steps,accuracy.len_50_100,reason\n0,60,1.0,\n1,60,1.0,\n"},
}


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write(path: Path, content: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content))


def relock(ws: Path) -> None:
    """Write dvc.lock for the workspace as DVC would: each stage's data, params and output hashes."""
    raw = yaml.safe_load((ws / "params.yaml").read_text())
    data = [{"path": f"data/{b}.{ext}", "md5": md5(ws / f"data/{b}.json") if ext == "json" else "0" * 32}
            for b in BUCKETS for ext in ("npz", "json")]
    stages = {stage if stage == "certify" else f"{stage}-{VARIANT}": {  # certify: one stage for all variants
        "cmd": f"python -m stages {stage} {VARIANT}", "deps": data,
        "params": {"params.yaml": {"seed": raw["seed"], f"variants.{VARIANT}": raw["variants"][VARIANT]}},
        "outs": [{"path": p, "md5": md5(ws / p)} for p in outs],
    } for stage, outs in OUTS.items()}
    (ws / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": stages}))


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, empty SQLite store, made once (MLflow's migrations take seconds)."""
    db = tmp_path_factory.mktemp("store") / "mlflow.db"
    store.ensure_store(f"sqlite:///{db}")
    return db


@pytest.fixture
def ws(tmp_path: Path, empty_store: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A workspace after `make repro` of one parity variant (with seeds), and its own store."""
    params = yaml.safe_load((ROOT / "tests/params_small.yaml").read_text())
    params["variants"] = {VARIANT: params["variants"][VARIANT]}
    write(tmp_path / "params.yaml", yaml.safe_dump(params))
    for b in BUCKETS:
        write(tmp_path / f"data/{b}.json", {"sha256": hashlib.sha256(b.encode()).hexdigest(), "count": 20})
    for outs in OUTS.values():
        for path, content in outs.items():
            write(tmp_path / path, content)
    relock(tmp_path)
    with sqlite3.connect(empty_store) as src, sqlite3.connect(tmp_path / "mlflow.db") as dst:
        src.backup(dst)  # a copy of the file alone would miss what is still in its WAL
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("PARITYLAB_REPRO_ID", raising=False)
    return tmp_path


def result_runs(uri: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids, "tags.paritylab.kind = 'result'") if ids else []


def test_sync_records_a_variant_once(ws: Path) -> None:
    from mlflow import MlflowClient

    (run_id,) = sync.main()
    uri = f"sqlite:///{ws / 'mlflow.db'}"
    run = MlflowClient(uri).get_run(run_id)
    m = run.data.metrics
    assert m["eval/accuracy.len_200"] == 0.95 and m["steps"] == 60 and m["certify/certified"] == 1
    assert m["seeds/solved.len_50_100"] == 2 and run.data.params["model.hidden_size"] == "4"
    history = MlflowClient(uri).get_metric_history(run_id, "eval/by_length/accuracy")
    assert sorted((h.step, h.value) for h in history) == [(50, 1.0), (100, 1.0), (200, 0.95)]
    inputs = {i.dataset.name: (i.dataset.digest, i.tags[0].value) for i in run.inputs.dataset_inputs}
    assert inputs == {
        "train": (hashlib.sha256(b"train").hexdigest()[:32], "training"),
        "val": (hashlib.sha256(b"val").hexdigest()[:32], "validation"),
        "len_50_100": (hashlib.sha256(b"len_50_100").hexdigest()[:32], "evaluation"),
        "len_200": (hashlib.sha256(b"len_200").hexdigest()[:32], "evaluation"),
    }
    assert sync.main() == [] and len(result_runs(uri)) == 1


def test_result_run_holds_what_rerun_needs(ws: Path) -> None:
    """params.json (the params document), the data and model sha256 tags, the model files."""
    import mlflow
    from mlflow import MlflowClient

    (run_id,) = sync.main()
    client = MlflowClient(f"sqlite:///{ws / 'mlflow.db'}")
    run = client.get_run(run_id)
    tags = run.data.tags
    assert tags["paritylab.model_sha256"] == hashlib.sha256(b"weights").hexdigest()
    assert {k: v for k, v in tags.items() if k.startswith("data.sha256.")} == {
        f"data.sha256.{b}": hashlib.sha256(b.encode()).hexdigest() for b in BUCKETS}
    doc = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/params.json")
    assert doc == yaml.safe_load((ws / "params.yaml").read_text())
    models = {f.path for f in client.list_artifacts(run_id, "artifacts/models/lstm")}
    assert models == {"artifacts/models/lstm/model.pt", "artifacts/models/lstm/config.json"}


def test_store_other_than_sqlite_is_asked_through_mlflow(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The quick sqlite3 read aside (a tracking server, say), MLflow's search finds the result."""
    from stages.tracking import results

    monkeypatch.setattr(results, "finished_tag_values", lambda tag: None)
    assert len(sync.main()) == 1 and sync.main() == []


def test_dataset_source_names_the_dvc_file(ws: Path) -> None:
    import mlflow

    from stages.tracking.datasets import DvcDatasetSource

    (run_id,) = sync.main()
    run = mlflow.MlflowClient(f"sqlite:///{ws / 'mlflow.db'}").get_run(run_id)
    train = next(i for i in run.inputs.dataset_inputs if i.dataset.name == "train")
    source = mlflow.data.get_source(train)
    assert isinstance(source, DvcDatasetSource) and source.path == "data/train.npz"
    assert source.sha256 == hashlib.sha256(b"train").hexdigest() and source.md5 == "0" * 32


def test_changed_result_gets_a_new_run_and_the_old_one_stays(ws: Path) -> None:
    (first,) = sync.main()
    write(ws / "artifacts/metrics/lstm.json", {"accuracy": {"len_50_100": 1.0, "len_200": 1.0}})
    relock(ws)
    (second,) = sync.main()
    runs = {r.info.run_id: r for r in result_runs(f"sqlite:///{ws / 'mlflow.db'}")}
    assert set(runs) == {first, second}
    assert runs[first].data.metrics["eval/accuracy.len_200"] == 0.95
    assert runs[second].data.metrics["eval/accuracy.len_200"] == 1.0


def contexts(uri: str, run_id: str) -> dict[str, str]:
    """A run's datasets: name -> context."""
    from mlflow import MlflowClient

    inputs = MlflowClient(uri).get_run(run_id).inputs.dataset_inputs
    return {i.dataset.name: {t.key: t.value for t in i.tags}["mlflow.data.context"] for i in inputs}


def test_stage_runs_log_their_buckets_in_the_result_runs_roles(ws: Path) -> None:
    """train logs what it trains and validates on, evaluate (which names no buckets) adds the
    held-out ones to the same run, seeds logs its own: each bucket in the result run's role."""
    import mlflow

    from stages import tracking

    for b in BUCKETS:
        write(ws / f"data/{b}.npz", f"bytes of {b}")
    doc, uri = yaml.safe_load((ws / "params.yaml").read_text()), f"sqlite:///{ws / 'mlflow.db'}"
    read = {b: "0" * 64 for b in ("train", "val", "len_50_100")}  # the probe is a part of len_50_100
    with tracking.tracked_run("parity", VARIANT, f"train-{VARIANT}", {}, data_hashes=read, params_doc=doc) as run_id:
        pass
    assert contexts(uri, run_id) == {"train": "training", "val": "validation", "len_50_100": "evaluation"}
    with tracking.tracked_run("parity", VARIANT, f"evaluate-{VARIANT}", {}, data_hashes={}, params_doc=doc,
                              resume_run_id=run_id):
        pass
    with tracking.tracked_run("parity", f"seeds-{VARIANT}", f"seeds-{VARIANT}", {}, data_hashes=read,
                              params_doc=doc) as seeds_id:
        pass
    (result_id,) = sync.main()
    roles = contexts(uri, result_id)
    assert roles == {"train": "training", "val": "validation", "len_50_100": "evaluation", "len_200": "evaluation"}
    assert contexts(uri, run_id) == roles and contexts(uri, seeds_id) == {b: roles[b] for b in read}
    run = mlflow.MlflowClient(uri).get_run(run_id)
    source = mlflow.data.get_source(next(i for i in run.inputs.dataset_inputs if i.dataset.name == "len_200"))
    assert source.path == "data/len_200.npz" and source.sha256 == hashlib.sha256(b"len_200").hexdigest()
    assert source.md5 == hashlib.md5(b"bytes of len_200").hexdigest()


@pytest.mark.parametrize("edit", ["params", "output", "stage"])
def test_variant_not_reproduced_is_skipped(ws: Path, edit: str, capsys: pytest.CaptureFixture) -> None:
    """dvc.lock behind params.yaml, an output edited by hand, a stage never run: nothing recorded."""
    if edit == "params":
        (ws / "params.yaml").write_text((ws / "params.yaml").read_text().replace("hidden_size: 4", "hidden_size: 5"))
    elif edit == "output":
        write(ws / "artifacts/plots/lstm.csv", "length,accuracy,count\n50,0.5,30\n")
    else:
        lock = yaml.safe_load((ws / "dvc.lock").read_text())
        del lock["stages"]["certify"]
        (ws / "dvc.lock").write_text(yaml.safe_dump(lock))
    assert sync.main() == []
    assert f"{VARIANT} skipped" in capsys.readouterr().out
    assert result_runs(f"sqlite:///{ws / 'mlflow.db'}") == []


def test_xor_key_is_the_variants_part_of_the_shared_stage() -> None:
    """Another XOR variant's params or outputs do not change this one's key; its own do."""
    params = load_params(ROOT / "tests/params_small.yaml")
    name = "xor_mlp_16_relu"

    def key(other_param: int, other_md5: str, own_md5: str) -> str:
        lock = {"xor": {"cmd": "python -m stages xor", "deps": [{"path": "data/xor_gate.npz", "md5": "a"}],
                        "params": {"params.yaml": {"seed": 0, f"variants.{name}": {"seeds": 3},
                                                   "variants.xor_other": {"seeds": other_param}}},
                        "outs": [{"path": f"artifacts/metrics/{name}.json", "md5": own_md5},
                                 {"path": "artifacts/metrics/xor_other.json", "md5": other_md5}]}}
        return sync.result_key(sync.variant_entries(lock, params, name))

    assert key(3, "b", "c") == key(4, "d", "c") != key(3, "b", "e")


def test_certify_key_is_the_variants_part_of_the_shared_stage() -> None:
    """Another net's model, family or certificate does not change this one's key; its own model does."""
    params = load_params(ROOT / "tests/params_small.yaml")

    def key(other_model: str, other_family: str, own_model: str) -> str:
        lock = {"certify": {
            "cmd": "python -m stages certify",
            "deps": [{"path": "stages/pipeline/certify.py", "md5": "a"},
                     {"path": "artifacts/models/lstm", "md5": own_model},
                     {"path": "artifacts/models/gru", "md5": other_model}],
            "params": {"params.yaml": {"variants.lstm.family": "lstm", "variants.gru.family": other_family}},
            "outs": [{"path": "artifacts/certify/lstm.json", "md5": "c"},
                     {"path": "artifacts/certify/gru.json", "md5": other_model}]}}
        return sync.result_key(sync.variant_entries(lock, params, "lstm"))

    assert key("b", "gru", "m") == key("d", "lstm", "m") != key("b", "gru", "n")


def test_each_variant_kind_logs_its_curves_against_their_own_step() -> None:
    """Parity: training curve by optimizer step, accuracy by length; XOR: by seed; the random
    search's one-row tally is only a file."""
    params = load_params(ROOT / "tests/params_report.yaml")
    search = next(n for n, v in params.variants.items() if v.family == "rnn_search")
    steps = {n: {(str(p), s) for p, _, s in sync.parts(params, n)[1]}
             for n in ("lstm", "xor_mlp_16_relu", search)}
    assert steps["lstm"] >= {("artifacts/train/lstm.csv", "step"), ("artifacts/plots/lstm.csv", "length")}
    assert steps["xor_mlp_16_relu"] == {("artifacts/train/xor_mlp_16_relu.csv", "seed"),
                                        ("artifacts/plots/xor_mlp_16_relu.csv", "seed")}
    assert steps[search] == {(f"artifacts/plots/{search}.csv", "length")}
    assert Path(f"artifacts/train/{search}.csv") in sync.parts(params, search)[2]


@pytest.mark.slow
def test_real_pipeline_every_variant_once_then_one_new_run(tmp_path: Path) -> None:
    """After `dvc repro` on the small params: one run per variant; a second sync adds none;
    changing gru and reproducing adds one run for gru and leaves the others; DVC stays up to date."""
    from test_pipeline import DVC, ran_stages, sh

    for name in ("stages", "models"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".gitignore", tmp_path / ".gitignore")
    shutil.copy(ROOT / "tests/params_small.yaml", tmp_path / "params.yaml")
    sh(sys.executable, "-m", "stages", "dag", cwd=tmp_path)
    for args in (["git", "init", "-q"], ["git", "config", "user.email", "ci@example.com"],
                 ["git", "config", "user.name", "ci"], [DVC, "init", "-q"], [DVC, "repro"]):
        sh(*args, cwd=tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sync_ = [sys.executable, "-m", "stages", "sync"]
    sh(*sync_, cwd=tmp_path)
    first = {r.info.run_name: r for r in result_runs(uri)}
    assert set(first) == {"lstm", "gru", "xor_mlp_16_relu"}
    assert {"eval/accuracy.len_200", "seeds/seeds"} <= set(first["lstm"].data.metrics)
    assert {i.dataset.name for i in first["gru"].inputs.dataset_inputs} == set(BUCKETS)
    assert "0 new result(s) recorded in MLflow; 3 already there" in sh(*sync_, cwd=tmp_path).stdout
    assert len(result_runs(uri)) == 3

    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["variants"]["gru"]["hidden_size"] = 5
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    sh(DVC, "repro", cwd=tmp_path)
    assert "1 new result(s) recorded in MLflow: gru; 2 already there" in sh(*sync_, cwd=tmp_path).stdout
    after = result_runs(uri)
    assert sorted(r.info.run_name for r in after) == ["gru", "gru", "lstm", "xor_mlp_16_relu"]
    assert {r.info.run_id for r in first.values()} < {r.info.run_id for r in after}
    assert ran_stages(sh(DVC, "repro", cwd=tmp_path).stdout) == set()
