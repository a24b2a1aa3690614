"""Sweeps: the sweep file's schema, trial planning, and a tiny real sweep on a local Ray.

The end-to-end test runs ``python -m stages sweep`` (real Ray with 2 CPUs, real training,
an MLflow SQLite store in tmp_path): 2 variants x 2 seeds give 4 child runs under one
parent and a 4-row results table; a rerun skips them all (without starting Ray), and
(slow) a rerun after one trial "did not finish" runs only that trial under the same parent.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stages.sweep.plan import plan, set_dotted, trial_key
from stages.sweep.schema import SweepError, load_sweep
from stages.sweep.trial import execute

ROOT = Path(__file__).resolve().parents[1]
SMALL = ROOT / "tests" / "params_small.yaml"
TINY = {
    "name": "tiny",
    "overrides": {"training.max_steps": 30, "training.eval_every": 15, "training.probe_count": 10,
                  "evaluate.buckets": ["len_50_100"]},
    "groups": {"parity": {"variants": ["lstm", "gru"], "space": {"seed": [0, 1]}}},
    "resources": {"cpu": 1},
    "local_ray": {"cpus": 2},
    "report": {"metrics": ["eval.accuracy.len_50_100"],
               "plots": {"acc": {"x": "seed", "y": "eval.accuracy.len_50_100", "group": "variant"}}},
}


def write_sweep(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.mark.parametrize("change, message", [
    ({"groups": {"a": {"variants": ["lstm"], "space": {"training.lr": {"normal": [1, 2]}}}}},
     "groups.a.space.training.lr.normal: unknown key (allowed: grid, choice, uniform, loguniform)"),
    ({"groups": {"a": {"variants": ["lstm"], "space": {"training.lr": {"uniform": [2, 1]}}}}},
     "groups.a.space.training.lr: uniform: [lo, hi] needs lo < hi"),
    ({"groups": {"a": {"variants": ["lstm"], "spaces": {}}}}, "groups.a.spaces: unknown key (allowed: variants,"),
    ({"resources": {"cpu": 0}}, "resources.cpu: 0 is invalid"),
    ({"groups": {"a": {"variants": ["lstm"], "space": {"data.seed": [1]}}}}, "data.* cannot be swept"),
    ({"num_samples": 3}, "num_samples=3 repeats groups.parity's trials unchanged"),
])
def test_bad_sweep_file_names_the_key(tmp_path: Path, change: dict, message: str) -> None:
    path = write_sweep(tmp_path / "bad.yaml", {**TINY, **change})
    with pytest.raises(SweepError, match="^" + re.escape(str(path)) + ": ") as err:
        load_sweep(path)
    assert message in str(err.value)


@pytest.mark.parametrize("space, message", [
    ({"variant.hiden_size": [4]}, "trial lstm-hiden_size=4: variants.lstm.hiden_size: unknown key for family lstm"),
    ({"variant.hidden_size": [0]}, "trial lstm-hidden_size=0: variants.lstm.hidden_size: 0 is invalid"),
])
def test_bad_trial_params_name_the_trial_and_key(tmp_path: Path, space: dict, message: str) -> None:
    doc = {**TINY, "groups": {"p": {"variants": ["lstm"], "space": space}}}
    path = write_sweep(tmp_path / "s.yaml", doc)
    with pytest.raises(SweepError, match=message):
        plan(load_sweep(path), path, SMALL)


def test_plan_crosses_grid_with_samples_and_draws_repeatably(tmp_path: Path) -> None:
    doc = {**TINY, "num_samples": 3, "random_seed": 5, "groups": {
        "p": {"variants": ["lstm", "gru"], "space": {"seed": [0, 1], "variant.training.lr": {"loguniform": [1e-3, 1e-1]}}},
        "x": {"variants": ["xor_mlp_16_relu"], "overrides": {"variant.seeds": 2}, "space": {"variant.lr": {"choice": [0.1]}}},
    }}
    path = write_sweep(tmp_path / "s.yaml", doc)
    trials = plan(load_sweep(path), path, SMALL)
    parity = [t for t in trials if t.group == "p"]
    assert len(parity) == 3 * 2 * 2 and len({t.name for t in parity}) == 12
    assert all(1e-3 <= t.values["variant.training.lr"] <= 1e-1 for t in parity)
    assert [t.name for t in trials] == [t.name for t in plan(load_sweep(path), path, SMALL)]
    assert [t.name for t in trials if t.group == "x"] == ["x-xor_mlp_16_relu-lr=0.1"]  # 3 equal draws: one trial
    first = yaml.safe_load(parity[0].params_text)
    assert list(first["variants"]) == ["lstm"] and first["training"]["max_steps"] == 30
    assert first["variants"]["lstm"]["training"]["lr"] == parity[0].values["variant.training.lr"]
    assert {t.problem for t in trials} == {"parity", "xor-gate"}


def test_cache_key_follows_params_code_and_data(tmp_path: Path) -> None:
    path = write_sweep(tmp_path / "s.yaml", TINY)
    a = plan(load_sweep(path), path, SMALL)[0]
    path = write_sweep(tmp_path / "s.yaml", {**TINY, "overrides": {**TINY["overrides"], "training.max_steps": 31}})
    b = plan(load_sweep(path), path, SMALL)[0]
    assert a.name == b.name
    assert len({trial_key(a, "c", "d"), trial_key(b, "c", "d"), trial_key(a, "c2", "d"), trial_key(a, "c", "d2")}) == 4


def test_set_dotted_resolves_variant_and_creates_mappings() -> None:
    doc = {"variants": {"lstm": {"family": "lstm"}}, "training": {"lr": 0.01}}
    set_dotted(doc, "variant.training.lr", 0.1, "lstm")
    set_dotted(doc, "evaluate.buckets", ["a"], "lstm")
    assert doc["variants"]["lstm"]["training"] == {"lr": 0.1} and doc["evaluate"] == {"buckets": ["a"]}
    with pytest.raises(SweepError, match="training.lr is 0.01, not a mapping"):
        set_dotted(doc, "training.lr.x", 1, "lstm")


def test_failed_trial_is_recorded_not_raised(tmp_path: Path) -> None:
    """A stage that exits with an error gives failed.json with the stage and the log's end."""
    trial = tmp_path / "trials" / "t"
    trial.mkdir(parents=True)
    trial.joinpath("params.yaml").write_text(SMALL.read_text())
    (tmp_path / "empty").mkdir()  # a data folder without datasets: the train stage refuses
    spec = {"name": "t", "dir": str(trial), "variant": "lstm", "key": "k", "data": str(tmp_path / "empty"),
            "code_root": str(ROOT), "timeout_s": 120, "env": {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/m.db"}}
    outcome = execute(spec)
    assert outcome["status"] == "failed" and outcome["stage"] == "train" and outcome["returncode"] == 2
    assert "train.json not found" in outcome["error"]
    assert json.loads((trial / "failed.json").read_text())["stage"] == "train"
    assert not (trial / "data").exists() and not (trial / "result.json").exists()


def run_sweep(workdir: Path, sweep: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2", "RAY_USAGE_STATS_ENABLED": "0",
           "MLFLOW_TRACKING_URI": f"sqlite:///{workdir}/mlflow.db"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-m", "stages", "sweep", str(sweep), "--params", "params.yaml"],
                          cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"sweep failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_unreachable_cluster_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    """--address auto with no Ray running: one line, exit 2, no results, no trials, no MLflow runs."""
    from helpers import generate_data
    from stages.core.params import load_params

    (tmp_path / "params.yaml").write_text(SMALL.read_text())
    generate_data(load_params(SMALL).data, tmp_path / "data")
    (tmp_path / "raytmp").mkdir()  # Ray's "auto" looks for a running cluster's address here: none
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_TMPDIR": str(tmp_path / "raytmp"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-m", "stages", "sweep", str(write_sweep(tmp_path / "tiny.yaml", TINY)),
                           "--address", "auto"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Ray cluster at auto: Could not find any running Ray instance" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "artifacts").exists() and not (tmp_path / "mlflow.db").exists()


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A work dir with tiny params and data, after one full run of the tiny sweep."""
    from helpers import generate_data
    from stages.core.params import load_params

    work = tmp_path_factory.mktemp("sweep")
    (work / "params.yaml").write_text(SMALL.read_text())
    generate_data(load_params(SMALL).data, work / "data")
    out = run_sweep(work, write_sweep(work / "tiny.yaml", TINY)).stdout
    assert "4 trials: 0 cached, 4 to run" in out and "4 ok, 0 failed, 0 not run" in out
    return work


def children(work: Path) -> tuple[str, list]:
    from mlflow import MlflowClient

    uri = f"sqlite:///{work}/mlflow.db"
    parent = json.loads((work / "artifacts/sweeps/tiny/trials/mlflow_parents.json").read_text())[uri]["parity"]
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("parity")
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'")
    return parent, runs


def test_sweep_logs_one_child_run_per_trial(swept: Path) -> None:
    parent, runs = children(swept)
    got = sorted((r.data.tags["paritylab.sweep.trial"], r.data.tags["paritylab.variant"], r.data.params["seed"])
                 for r in runs)
    assert got == [("gru-seed=0", "gru", "0"), ("gru-seed=1", "gru", "1"),
                   ("lstm-seed=0", "lstm", "0"), ("lstm-seed=1", "lstm", "1")]
    assert all(r.info.status == "FINISHED" and r.data.tags["paritylab.sweep"] == "tiny" for r in runs)
    from mlflow import MlflowClient

    run = MlflowClient(f"sqlite:///{swept}/mlflow.db").get_run(parent)
    assert run.info.status == "FINISHED" and run.data.metrics["sweep/ok"] == 4


def test_sweep_writes_results_table_and_plot(swept: Path) -> None:
    import pandas as pd

    out = swept / "artifacts/sweeps/tiny"
    df = pd.read_csv(out / "results.csv")
    assert len(df) == 4 and set(df["status"]) == {"ok"}
    assert sorted(zip(df["variant"], df["seed"], strict=True)) == [("gru", 0), ("gru", 1), ("lstm", 0), ("lstm", 1)]
    assert df["eval.accuracy.len_50_100"].between(0, 1).all()
    assert "| lstm-seed=0" in (out / "results.md").read_text()
    assert (out / "plots" / "acc.png").stat().st_size > 0
    assert not any(p.name == "data" for p in (out / "trials").glob("*/*"))  # no data/ links left behind


def test_rerun_skips_finished_trials(swept: Path) -> None:
    """Every trial finished: a rerun starts no Ray, logs no run, rewrites the same table."""
    _, before = children(swept)
    table = (swept / "artifacts/sweeps/tiny/results.csv").read_text()
    out = run_sweep(swept, swept / "tiny.yaml").stdout
    assert "4 trials: 4 cached, 0 to run" in out and "trials to run" not in out
    assert len(children(swept)[1]) == len(before)
    assert (swept / "artifacts/sweeps/tiny/results.csv").read_text() == table


@pytest.mark.slow
def test_interrupted_sweep_resumes(swept: Path) -> None:
    """As after an interrupted sweep: the trial without result.json runs, the others are cached."""
    parent, before = children(swept)
    (swept / "artifacts/sweeps/tiny/trials/gru-seed=1/result.json").unlink()
    out = run_sweep(swept, swept / "tiny.yaml").stdout
    assert "4 trials: 3 cached, 1 to run" in out and "4 ok, 0 failed, 0 not run" in out
    parent_again, after = children(swept)
    assert parent_again == parent
    assert len(after) == len(before) + 1
    assert [r.data.tags["paritylab.sweep.trial"] for r in after].count("gru-seed=1") == 2
