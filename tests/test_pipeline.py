"""End to end: the real DVC pipeline on a tiny params file in a temporary repository.

A second `dvc repro` does nothing; changing one variant's setting reruns only that variant
and the report; an edit to one engine's code, to tracking or to the report reruns only what
it can change; changing the data seed reruns everything; `dvc exp run -S` runs and
`dvc exp show` lists its metrics; signals stop stages without losing outputs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DVC = str(Path(sys.executable).with_name("dvc"))


def stage_env(repo: Path) -> dict[str, str]:
    """The environment every command here runs in: the venv first on PATH (dvc.yaml says
    `python`) and the repository's own MLflow store, like a fresh clone would have."""
    return {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{repo}/mlflow.db",
    }


def sh(*args: str, cwd: Path, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, env=stage_env(cwd) | (env or {}), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh copy of the project with the small params, after one full `dvc repro`."""
    repo = tmp_path_factory.mktemp("pipeline")
    for name in ("stages", "models"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".gitignore", repo / ".gitignore")
    shutil.copy(ROOT / "tests" / "params_small.yaml", repo / "params.yaml")
    sh(sys.executable, "-m", "stages", "dag", cwd=repo)  # dvc.yaml for the small params
    sh("git", "init", "-q", cwd=repo)
    sh("git", "config", "user.email", "ci@example.com", cwd=repo)
    sh("git", "config", "user.name", "ci", cwd=repo)
    sh(DVC, "init", "-q", cwd=repo)
    sh(DVC, "config", "core.autostage", "true", cwd=repo)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", "init", cwd=repo)
    first = sh(DVC, "repro", cwd=repo)
    assert "train-lstm" in ran_stages(first.stdout)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", "results", cwd=repo)
    return repo


def test_full_repro_writes_metrics(repo: Path) -> None:
    metrics = json.loads((repo / "artifacts/metrics/lstm.json").read_text())
    assert set(metrics["accuracy"]) == {"len_50_100", "len_200"}
    xor = json.loads((repo / "artifacts/metrics/xor_mlp_16_relu.json").read_text())
    assert {"median", "q1", "q3"} <= set(xor["epochs_to_100"])
    assert (repo / "artifacts/report/index.md").exists()


def test_second_repro_is_noop(repo: Path) -> None:
    for command in ([DVC, "repro"], [sys.executable, "-m", "stages", "repro"]):
        out = sh(*command, cwd=repo).stdout
        assert ran_stages(out) == set(), command
        assert "up to date" in out.lower(), command


def _restore(repo: Path) -> None:
    sh("git", "reset", "-q", "--hard", cwd=repo)  # autostage put the changes in the index
    sh(DVC, "checkout", "-q", "--force", cwd=repo, check=False)


def test_variant_change_reruns_only_that_variant(repo: Path) -> None:
    """... with `dvc repro` and with `python -m stages repro -j 2`, to the same dvc.lock."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["variants"]["gru"]["hidden_size"] = 5
    locks = []
    for command in ([DVC, "repro"], [sys.executable, "-m", "stages", "repro", "-j", "2"]):
        (repo / "params.yaml").write_text(yaml.safe_dump(params))
        try:
            out = sh(*command, cwd=repo).stdout
            assert ran_stages(out) == {"train-gru", "evaluate-gru", "certify", "report"}, command
            assert ran_stages(sh(DVC, "repro", cwd=repo).stdout) == set(), command
            locks.append(yaml.safe_load((repo / "dvc.lock").read_text()))
        finally:
            _restore(repo)
    assert locks[0] == locks[1]


def test_plain_dvc_repro_with_bad_params_removes_nothing(repo: Path) -> None:
    """Outputs are `persist`: DVC does not delete them before the stage refuses the params."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["variants"]["lstm"]["hiden_size"] = 4
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    before = _output_hashes(repo)
    try:
        proc = sh(DVC, "repro", "train-lstm", cwd=repo, check=False)
        assert proc.returncode != 0 and "variants.lstm.hiden_size: unknown key" in proc.stderr + proc.stdout
        assert _output_hashes(repo) == before
    finally:
        _restore(repo)


@pytest.mark.slow
def test_removing_a_variant_leaves_nothing_behind(repo: Path) -> None:
    text = (repo / "params.yaml").read_text()
    params = yaml.safe_load(text)
    params["variants"]["lstm2"] = {"family": "lstm", "hidden_size": 3}
    try:
        (repo / "params.yaml").write_text(yaml.safe_dump(params))
        sh(sys.executable, "-m", "stages", "repro", cwd=repo)
        assert (repo / "artifacts/metrics/lstm2.json").exists() and "train-lstm2" in (repo / "dvc.lock").read_text()
        (repo / "params.yaml").write_text(text)
        out = sh(sys.executable, "-m", "stages", "repro", cwd=repo).stdout
        assert "removed 2 stage(s) no longer in params.yaml" in out  # train-, evaluate-lstm2
        assert "removed 2 output(s) of variants no longer in params.yaml" in out  # its certificate and metrics
        lock = (repo / "dvc.lock").read_text()
        assert "lstm2" not in lock and "lstm2" not in (repo / "dvc.yaml").read_text()
        assert not [p for p in (repo / "artifacts").rglob("*lstm2*")]
        check = sh(sys.executable, "-m", "stages", "check", "--all", cwd=repo).stdout
        assert "lstm2" not in check
    finally:
        _restore(repo)


def test_parallel_repro_refuses_bad_params_before_any_stage(repo: Path) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["variants"]["gru"]["hidden_size"] = 0
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    before = _output_hashes(repo)
    try:
        proc = sh(sys.executable, "-m", "stages", "repro", cwd=repo, check=False)
        assert proc.returncode == 2
        assert "variants.gru.hidden_size" in proc.stderr and ran_stages(proc.stdout) == set()
        assert _output_hashes(repo) == before  # DVC did not even remove an output
    finally:
        _restore(repo)


@pytest.mark.slow
def test_parallel_repro_stops_at_a_failing_stage(repo: Path) -> None:
    """A stage that fails (here: `device: cuda` without a GPU): exit 1, its name said, nothing
    after it started."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["device"] = "cuda"
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    try:
        proc = sh(sys.executable, "-m", "stages", "repro", "-j", "2", cwd=repo, check=False)
        assert proc.returncode == 1
        assert "FAILED train-" in proc.stderr and "no CUDA GPU" in proc.stdout
        ran = ran_stages(proc.stdout)
        assert ran and all(s.startswith("train-") for s in ran) and len(ran) <= 2
    finally:
        _restore(repo)


@pytest.mark.slow
def test_data_seed_change_reruns_everything(repo: Path) -> None:
    """A new data seed regenerates the data, and then every train and evaluate stage is stale.

    (`dvc repro --dry` alone would list only `generate`: DVC cannot know before running it
    that its outputs will change.)
    """
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["seed"] = 8
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    try:
        assert ran_stages(sh(DVC, "repro", "generate", cwd=repo).stdout) == {"generate"}
        stages = ran_stages(sh(DVC, "repro", "--dry", cwd=repo).stdout)
        parity = [v for v, spec in params["variants"].items() if spec["family"] != "xor_mlp"]
        assert stages >= {f"{s}-{v}" for s in ("train", "evaluate") for v in parity}
        assert "xor" not in stages
    finally:
        _restore(repo)


def test_the_readmes_exp_run_line(repo: Path) -> None:
    """The README's own `dvc exp run -S ...` line, as written, on the small params."""
    line = re.search(r"^dvc exp run -S '([^']+)'", (ROOT / "README.md").read_text(), re.M)
    assert line, "README has no `dvc exp run -S '...'` line"
    sh(DVC, "exp", "run", "-S", line.group(1), "-n", "readme", cwd=repo)
    shown = json.loads(sh(DVC, "exp", "show", "--json", cwd=repo).stdout)
    text = json.dumps(shown)
    assert "readme" in text and "len_50_100" in text
    sh("git", "reset", "-q", "--hard", cwd=repo)  # `exp run` left its results in the workspace
    sh(DVC, "checkout", "-q", "--force", cwd=repo)


def _output_hashes(repo: Path) -> dict[str, str]:
    """sha256 of every file under artifacts/ (hidden temporaries included)."""
    import hashlib

    return {str(p.relative_to(repo)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((repo / "artifacts").rglob("*")) if p.is_file() and "checkpoints" not in p.parts}


@pytest.mark.slow
def test_sigterm_mid_training_kills_the_run_and_loses_nothing(repo: Path) -> None:
    """SIGTERM to a real training process: run KILLED, outputs untouched, next repro fine."""
    import signal

    from mlflow import MlflowClient

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["training"].update(max_steps=1_000_000, patience=0, eval_every=10)
    (repo / "long.yaml").write_text(yaml.safe_dump(params))
    before = _output_hashes(repo)
    proc = subprocess.Popen([sys.executable, "-m", "stages", "train", "lstm", "--params", "long.yaml"],
                            cwd=repo, env=stage_env(repo), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        for line in proc.stdout:  # wait until it is really training
            if line.startswith("step 30/"):
                break
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        proc.kill()
        (repo / "long.yaml").unlink()
    assert proc.returncode != 0
    client = MlflowClient(f"sqlite:///{repo}/mlflow.db")
    exp = client.get_experiment_by_name("parity")
    last = client.search_runs([exp.experiment_id], "tags.`paritylab.variant` = 'lstm'",
                              order_by=["attributes.start_time DESC"], max_results=1)[0]
    assert last.info.status == "KILLED"
    assert _output_hashes(repo) == before  # no half-written model or metrics, no temporaries
    out = sh(DVC, "repro", cwd=repo).stdout
    assert ran_stages(out) == set()


@pytest.mark.slow
def test_sigterm_to_parallel_repro_stops_its_stages(repo: Path) -> None:
    """SIGTERM to `python -m stages repro` mid-training: the stages it started stop too (their
    MLflow runs KILLED, none left RUNNING) and the exit status is non-zero; every output DVC
    had is still there (outputs are `persist`: DVC never deletes them before a stage runs)."""
    import signal

    from mlflow import MlflowClient

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["training"].update(max_steps=1_000_000, patience=0, eval_every=10)
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    before = _output_hashes(repo)
    proc = subprocess.Popen([sys.executable, "-m", "stages", "repro", "-j", "2"],  # with the stages' own runs
                            cwd=repo, env=stage_env(repo) | {"PARITYLAB_STAGE_RUNS": "1"}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        for line in proc.stdout:  # wait until a stage is really training
            if "] step 30/" in line:
                break
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=90)
    finally:
        proc.kill()
        after = _output_hashes(repo)
        _restore(repo)  # the params back
    assert proc.returncode != 0
    client = MlflowClient(f"sqlite:///{repo}/mlflow.db")
    exp = client.get_experiment_by_name("parity")
    assert client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'") == []
    assert client.search_runs([exp.experiment_id], "attributes.status = 'KILLED'")
    assert after == before


@pytest.mark.slow
def test_forced_rebuild_is_bit_identical(repo: Path) -> None:
    """`dvc repro --force` (torch, Keras and the XOR study) rewrites every output with the same bytes."""
    sh(DVC, "repro", "--force", cwd=repo)
    changed = sh("git", "status", "--porcelain", "--", "dvc.lock", "artifacts", cwd=repo).stdout
    assert changed == "", changed


@pytest.mark.slow
def test_queued_experiments_share_the_default_store(repo: Path) -> None:
    """Four queued experiments on two workers all land in <repo>/mlflow.db, none lost."""
    import time

    from mlflow import MlflowClient

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # the default store
    env.update(TF_CPP_MIN_LOG_LEVEL="2", PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")

    def dvc(*args: str) -> str:
        proc = subprocess.run([DVC, *args], cwd=repo, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc.stdout

    sizes = (2, 3, 5, 6)
    for size in sizes:
        dvc("exp", "run", "--queue", "-S", f"variants.gru.hidden_size={size}", "-n", f"gru{size}")
    dvc("queue", "start", "-j", "2")
    deadline = time.time() + 600
    while time.time() < deadline:
        status = dvc("queue", "status")
        if not re.search(r"\b(Queued|Running)\b", status):
            break
        time.sleep(3)
    assert status.count("Success") == len(sizes), status
    client = MlflowClient(f"sqlite:///{repo}/mlflow.db")
    exp = client.get_experiment_by_name("parity")
    runs = client.search_runs([exp.experiment_id], "tags.`paritylab.variant` = 'gru'")
    by_exp = {r.data.tags.get("paritylab.dvc_exp_name"): r for r in runs}
    assert {f"gru{s}" for s in sizes} <= set(by_exp)
    for size in sizes:
        run = by_exp[f"gru{size}"]
        assert run.info.status == "FINISHED"
        assert run.data.params["model.hidden_size"] == str(size)
        assert "eval/accuracy.len_200" in run.data.metrics  # the evaluate stage logged into it too


@pytest.mark.parametrize(("edited", "expected"), [
    ("models/xor_mlp/study.py", {"xor"}),
    ("models/torch_rnn/zoo.py", {"train-lstm", "train-gru", "evaluate-lstm", "evaluate-gru", "seeds-lstm"}),
    ("stages/pipeline/evaluate.py", {"evaluate-lstm", "evaluate-gru", "seeds-lstm"}),
    ("stages/certify/search.py", {"certify", "seeds-lstm"}),
    ("stages/tracking/__init__.py", set()),
    ("stages/commands/check.py", set()),
    ("stages/__main__.py", set()),
    ("stages/report/text.py", {"report"}),
])
def test_a_code_edit_reruns_only_what_it_can_change(repo: Path, edited: str, expected: set[str]) -> None:
    path = repo / edited
    text = path.read_text()
    path.write_text(text + "\n# an edit\n")
    try:
        assert set(json.loads(sh(DVC, "status", "--json", cwd=repo).stdout)) == expected
    finally:
        path.write_text(text)


@pytest.mark.slow
def test_a_bucket_edit_reruns_only_its_readers(repo: Path) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["buckets"]["len_200"]["count"] = 21
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    try:
        assert set(json.loads(sh(DVC, "status", "--json", cwd=repo).stdout)) == {"generate"}
        sh(DVC, "repro", "generate", cwd=repo)  # every dataset rewritten, only len_200's files differ
        # len_200 is read by the evaluate stages only: no training, no seeds, no XOR
        assert set(json.loads(sh(DVC, "status", "--json", cwd=repo).stdout)) == {"evaluate-lstm", "evaluate-gru"}
    finally:
        _restore(repo)
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    try:  # `stages repro` does not even start the stages whose inputs came out unchanged
        out = sh(sys.executable, "-m", "stages", "repro", "-j", "2", cwd=repo).stdout
        assert ran_stages(out) == {"generate", "evaluate-lstm", "evaluate-gru", "report"}
        assert "train-lstm: up to date, its inputs came out unchanged" in out
        assert ran_stages(sh(DVC, "repro", cwd=repo).stdout) == set()
    finally:
        _restore(repo)


@pytest.mark.slow
def test_one_repro_shares_one_repro_id(repo: Path) -> None:
    """Every MLflow run that one `python -m stages repro` makes carries the same repro id: its
    result runs, and with PARITYLAB_STAGE_RUNS=1 its stages' runs too (by default they log none)."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{repo}/mlflow.db")
    exp = client.get_experiment_by_name("parity")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    try:
        for lr, stage_runs in ((0.02, "0"), (0.03, "1")):  # reruns every parity train stage
            params["training"]["lr"] = lr
            (repo / "params.yaml").write_text(yaml.safe_dump(params))
            sh(sys.executable, "-m", "stages", "repro", "-j", "2", cwd=repo, env={"PARITYLAB_STAGE_RUNS": stage_runs})
            [latest] = client.search_runs([exp.experiment_id], "tags.paritylab.kind = 'result'",
                                          order_by=["attributes.start_time DESC"], max_results=1)
            repro_id = latest.data.tags["paritylab.repro_id"]
            assert repro_id.startswith("repro-")
            runs = client.search_runs([exp.experiment_id], f"tags.paritylab.repro_id = '{repro_id}'")
            assert all(r.info.status == "FINISHED" for r in runs)
            kinds = {(r.data.tags.get("paritylab.kind", "stage"), r.data.tags["paritylab.variant"]) for r in runs}
            results = {("result", "lstm"), ("result", "gru")}
            stages = {("stage", "lstm"), ("stage", "gru"), ("stage", "seeds-lstm")}
            assert kinds == (results | stages if stage_runs == "1" else results), kinds
    finally:
        _restore(repo)
