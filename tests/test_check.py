"""The regression gate against a real temporary git repository: commit baseline metrics,
change the working tree, and check the verdicts and exit statuses (0 / 1 / 2)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stages.commands import check
from stages.core.errors import UserError
from stages.core.params import Tolerance

ROOT = Path(__file__).resolve().parents[1]
PARITY = {
    "accuracy": {"len_50_100": 1.0, "len_200": 0.98},
    "loss": {"len_50_100": 0.01, "len_200": 0.08},
    "n": {"len_50_100": 50, "len_200": 20},
    "ci95_low": {"len_50_100": 0.93, "len_200": 0.85},
    "ci95_high": {"len_50_100": 1.0, "len_200": 1.0},
    "confusion": {"len_50_100": {"tp": 25, "fp": 0, "tn": 25, "fn": 0}},
}
XOR = {
    "epochs_to_100": {"median": 90.0, "q1": 54.0, "q3": 120.0, "min": 20.0, "max": None},
    "never_solved": 0.05,
    "margin": {"min": 0.2, "median": 0.4},
    "final_loss": {"median": 0.01},
    "accuracy": {"xor_gate": 0.95},
    "seeds": 20,
}
TOLERANCES = {
    "accuracy": {"direction": "higher", "abs": 0.001},
    "loss": {"direction": "lower", "abs": 0.05},
    "epochs_to_100.median": {"direction": "lower", "rel": 0.25},
    "margin.min": {"direction": "higher", "abs": 0.05},
}


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false",
                    *args], cwd=cwd, check=True, capture_output=True)


def _write_metrics(repo: Path, metrics: dict[str, dict]) -> None:
    folder = repo / "artifacts" / "metrics"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.json"):
        old.unlink()
    for variant, m in metrics.items():
        (folder / f"{variant}.json").write_text(json.dumps(m, indent=2, sort_keys=True) + "\n")


def _write_params(repo: Path, tolerances: dict) -> None:
    params = yaml.safe_load((ROOT / "tests" / "params_small.yaml").read_text())
    params["check"] = {"tolerances": tolerances}
    (repo / "params.yaml").write_text(yaml.safe_dump(params))


@pytest.fixture()
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git repo whose HEAD holds baseline metrics for lstm and xor_mlp_16_relu; cwd is set to it."""
    _git(tmp_path, "init", "-q")
    _write_params(tmp_path, TOLERANCES)
    _write_metrics(tmp_path, {"lstm": PARITY, "xor_mlp_16_relu": XOR})
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-q", "-m", "baseline")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _changed(**edits) -> dict[str, dict]:
    """Baseline metrics with dotted edits, e.g. {"lstm__accuracy.len_200": 0.9} (None deletes)."""
    out = {"lstm": copy.deepcopy(PARITY), "xor_mlp_16_relu": copy.deepcopy(XOR)}
    for key, value in edits.items():
        variant, path = key.split("__")
        *parents, last = path.split(".")
        node = out[variant]
        for p in parents:
            node = node[p]
        if value is Ellipsis:
            del node[last]
        else:
            node[last] = value
    return out


def _run(capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        check.main(show_all=True)
    except SystemExit as e:
        return int(e.code), capsys.readouterr().out
    return 0, capsys.readouterr().out


def _verdict(out: str, variant: str, metric: str) -> str:
    for line in out.splitlines():
        cells = line.split()
        if cells[:2] == [variant, metric]:
            return cells[-1]
    raise AssertionError(f"{variant} {metric} not in the table:\n{out}")


def test_equal_metrics_pass(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(capsys)
    assert code == 0
    assert _verdict(out, "lstm", "accuracy.len_200") == "ok"
    assert _verdict(out, "lstm", "n.len_200") == "info"
    assert _verdict(out, "xor_mlp_16_relu", "epochs_to_100.max") == "info"
    assert "0 REGRESSED" in out.splitlines()[-1]


def test_degraded_accuracy_fails(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_metrics(repo, _changed(**{"lstm__accuracy.len_200": 0.97}))
    code, out = _run(capsys)
    assert code == 1
    assert _verdict(out, "lstm", "accuracy.len_200") == "REGRESSED"
    assert "REGRESSED: lstm accuracy.len_200 (0.98 -> 0.97)" in out


def test_within_tolerance_passes(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # epochs 90 -> 110 is within 25% of 90; loss +0.04 within 0.05; accuracy -0.0005 within 0.001.
    _write_metrics(repo, _changed(**{"xor_mlp_16_relu__epochs_to_100.median": 110.0,
                                     "lstm__loss.len_200": 0.12, "lstm__accuracy.len_200": 0.9795}))
    code, out = _run(capsys)
    assert code == 0
    assert _verdict(out, "xor_mlp_16_relu", "epochs_to_100.median") == "ok"
    assert _verdict(out, "lstm", "loss.len_200") == "ok"


def test_relative_tolerance_exceeded_fails(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_metrics(repo, _changed(**{"xor_mlp_16_relu__epochs_to_100.median": 113.0}))  # +25.6%
    code, out = _run(capsys)
    assert code == 1 and _verdict(out, "xor_mlp_16_relu", "epochs_to_100.median") == "REGRESSED"


def test_improved_passes_and_null_is_the_worst_value(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_metrics(repo, _changed(**{"lstm__accuracy.len_200": 1.0, "xor_mlp_16_relu__margin.min": 0.3,
                                     "lstm__n.len_200": 40}))
    code, out = _run(capsys)
    assert code == 0
    assert _verdict(out, "lstm", "accuracy.len_200") == "improved"
    assert _verdict(out, "xor_mlp_16_relu", "margin.min") == "improved"
    assert _verdict(out, "lstm", "n.len_200") == "info"  # no tolerance: shown, never fails
    # A median that becomes unknown (most seeds never solve) is a regression.
    _write_metrics(repo, _changed(**{"xor_mlp_16_relu__epochs_to_100.median": None}))
    code, out = _run(capsys)
    assert code == 1 and _verdict(out, "xor_mlp_16_relu", "epochs_to_100.median") == "REGRESSED"


def test_new_metric_and_new_variant_do_not_fail(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    metrics = _changed(**{"lstm__accuracy.len_1000": 0.5})
    metrics["gru"] = copy.deepcopy(PARITY)
    _write_metrics(repo, metrics)
    code, out = _run(capsys)
    assert code == 0
    assert _verdict(out, "lstm", "accuracy.len_1000") == "new"
    assert _verdict(out, "gru", "accuracy.len_200") == "new"


def test_missing_metric_is_bad_input(repo: Path) -> None:
    _write_metrics(repo, _changed(**{"lstm__accuracy.len_200": ...}))
    with pytest.raises(UserError, match=r"missing from the current run: lstm\.accuracy\.len_200"):
        check.main()


def test_missing_variant_is_bad_input(repo: Path) -> None:
    _write_metrics(repo, {"lstm": PARITY})
    with pytest.raises(UserError, match=r"without a metrics file now: xor_mlp_16_relu"):
        check.main()


def test_a_variant_removed_from_params_is_left_out(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    del params["variants"]["xor_mlp_16_relu"]
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    _write_metrics(repo, {"lstm": PARITY})
    code, out = _run(capsys)
    assert code == 0 and "left out (not in params.yaml): xor_mlp_16_relu" in out
    assert "xor_mlp_16_relu  " not in out  # no row of it


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "1.0", False, [1.0]])
def test_a_metric_that_is_not_a_finite_number_regresses(repo: Path, capsys: pytest.CaptureFixture[str], bad) -> None:
    _write_metrics(repo, _changed(**{"lstm__accuracy.len_200": bad, "lstm__n.len_200": bad}))
    code, out = _run(capsys)
    assert code == 1
    assert _verdict(out, "lstm", "accuracy.len_200") == "REGRESSED"
    assert _verdict(out, "lstm", "n.len_200") == "REGRESSED"  # no tolerance covers n: still wrong


def test_default_output_is_the_changes_and_one_summary(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_metrics(repo, _changed(**{"lstm__accuracy.len_200": 0.5}))
    with pytest.raises(SystemExit):
        check.main()
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4 and out[1].startswith("lstm") and "REGRESSED" in out[1]  # header, row, summary x2
    assert out[2].startswith("check against HEAD")


def test_unknown_tolerance_key_is_bad_input(repo: Path) -> None:
    _write_params(repo, {**TOLERANCES, "acuracy": {"direction": "higher"}})
    with pytest.raises(UserError, match=r"unknown metric in the tolerances: acuracy \(metrics here: accuracy"):
        check.main()


def test_unparsable_metrics_file_is_bad_input(repo: Path) -> None:
    (repo / "artifacts" / "metrics" / "lstm.json").write_text('{"accuracy": {')
    with pytest.raises(UserError, match=r"lstm\.json: not valid JSON"):
        check.main()


def test_unknown_revision_is_bad_input(repo: Path) -> None:
    with pytest.raises(UserError, match=r"baseline revision 'v9\.9' is unknown"):
        check.main(baseline="v9.9")


def test_baseline_from_an_older_commit(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_metrics(repo, _changed(**{"lstm__accuracy.len_200": 0.5}))
    _git(repo, "commit", "-q", "-am", "worse")
    assert _run(capsys)[0] == 0  # HEAD now holds the worse numbers
    with pytest.raises(SystemExit) as e:
        check.main(baseline="HEAD~1")
    assert e.value.code == 1


def test_most_specific_tolerance_wins() -> None:
    tols = {"accuracy": Tolerance(direction="higher", abs=0.1),
            "accuracy.len_200": Tolerance(direction="higher", abs=0.0)}
    assert check.tolerance_for("accuracy.len_200", tols).abs == 0.0
    assert check.tolerance_for("accuracy.len_1000", tols).abs == 0.1
    assert check.tolerance_for("accuracy_extra", tols) is None


def test_cli_exit_statuses(repo: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "stages", "check", "--params", "params.yaml", *args],
                              cwd=repo, env=env, capture_output=True, text=True, timeout=60)

    assert cli().returncode == 0
    _write_metrics(repo, _changed(**{"lstm__loss.len_50_100": 0.2}))
    proc = cli()
    assert proc.returncode == 1 and "REGRESSED" in proc.stdout
    proc = cli("--baseline", "nope")
    assert proc.returncode == 2 and proc.stderr.startswith("error: baseline revision 'nope'")


def test_markdown_for_a_job_summary(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_metrics(repo, _changed(**{"lstm__accuracy.len_200": 0.5}))
    with pytest.raises(SystemExit):
        check.main(markdown=True)
    out = capsys.readouterr().out
    assert out.startswith("**Regression gate: 1 metric(s) REGRESSED**")
    assert "| variant | metric | committed | new | change | verdict |" in out
    assert "| lstm | accuracy.len_200 | 0.98 | 0.5 | -0.48 | REGRESSED |" in out
