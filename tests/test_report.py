"""The report stage on a fake but consistent ``artifacts/`` tree (no training): every file is
written, bytes are identical across runs, the reading follows the numbers, and a missing
input names the file and the stage that writes it."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.xor_mlp.study import quartiles
from stages.core.errors import UserError
from stages.core.params import (
    Params,
    ParityVariant,
    SearchVariant,
    XorVariant,
    eval_buckets,
    load_params,
    resolved_training,
)
from stages.core.stats import wilson
from stages.pipeline import report
from stages.report.inputs import settings_diff

PARAMS = Path(__file__).with_name("params_report.yaml")  # frozen: not the live params.yaml
ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = ("summary.csv", "summary.md", "xor_study.csv", "xor_study.md", "accuracy_vs_length.png",
           "training_curves.png", "xor_epochs.png", "index.md")


def _write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _accuracy(params: Params, name: str, bucket: str) -> float:
    """The pattern of the real results: fixed-length training and the notebook stay at chance,
    the GRU slips on the longest sequences, everything else is perfect."""
    cfg = resolved_training(params, name)
    if params.variants[name].model_dump().get("preset") == "notebook" or cfg["train_bucket"] == "rfr_fixed50" \
            and isinstance(params.variants[name], ParityVariant):
        return 0.5
    if params.variants[name].family == "gru" and params.data.buckets[bucket].min_len >= 100_000:
        return 0.92
    return 1.0


def _parity(root: Path, params: Params, name: str, rng: np.random.Generator) -> None:
    metrics: dict[str, dict] = {k: {} for k in ("accuracy", "loss", "n", "ci95_low", "ci95_high", "confusion")}
    by_length = []
    for bucket in eval_buckets(params, name):
        spec = params.data.buckets[bucket]
        target = _accuracy(params, name, bucket)
        n = spec.count
        k = n if target == 1.0 else int(round(n * (target + rng.normal(0, 0.01))))
        lo, hi = wilson(k, n)
        pos = n // 2
        tp = min(pos, k // 2)
        metrics["accuracy"][bucket], metrics["n"][bucket] = k / n, n
        metrics["loss"][bucket] = 0.002 if k == n else 0.7
        metrics["ci95_low"][bucket], metrics["ci95_high"][bucket] = lo, hi
        metrics["confusion"][bucket] = {"tp": tp, "fn": pos - tp, "tn": k - tp, "fp": n - pos - (k - tp)}
        lengths = range(spec.min_len, spec.max_len + 1)
        for length in lengths:
            acc = 1.0 if target == 1.0 else float(np.clip(target + rng.normal(0, 0.03), 0, 1))
            by_length.append({"length": length, "accuracy": acc, "count": max(1, n // len(lengths))})
    _write_json(root / "metrics" / f"{name}.json", {k: metrics[k] for k in ("accuracy", "loss")})
    _write_json(root / "detail" / f"{name}.json", {k: metrics[k] for k in ("n", "ci95_low", "ci95_high", "confusion")})
    _write_csv(root / "plots" / f"{name}.csv", by_length)
    certified = name in ("lstm", "manual_rnn")  # two certified, the rest with a reason
    _write_json(root / "certify" / f"{name}.json", {
        "certified": certified, "k": 14, "reason": "" if certified else f"{name}: 1 then 200 zeros answered even"})
    _write_json(root / "metrics" / f"certify_{name}.json", {"certified": int(certified), "k": 14})
    v = params.variants[name]
    if isinstance(v, SearchVariant):
        train = {"trials": 1234, "found": True, "screened": 3, "train_accuracy": 1.0, "val_accuracy": 1.0}
        _write_json(root / "train" / f"{name}.json", train)
        _write_csv(root / "train" / f"{name}.csv", [train])
        return
    cfg = resolved_training(params, name)
    good = _accuracy(params, name, "len_50_100") == 1.0
    solve = 400 + 100 * (len(name) % 5) if good else None
    steps = min(cfg["max_steps"], solve + cfg["patience"] * cfg["eval_every"]) if good else cfg["max_steps"]
    history = []
    for step in range(cfg["eval_every"], steps + 1, cfg["eval_every"]):
        frac = min(1.0, step / solve) if good else 0.0
        val = 1.0 if good and step >= solve else 0.5 + 0.45 * frac**3 + rng.normal(0, 0.01)
        history.append({"step": step, "sequences": step * cfg["batch_size"], "train_loss": 0.7 * (1 - frac) + 0.001,
                        "val_loss": 0.7 * (1 - frac) + 0.002, "val_accuracy": round(min(val, 1.0), 4),
                        "probe_accuracy": round(min(1.0, val - 0.05 * (1 - frac)), 4)})
    batch = cfg["batch_size"]
    _write_json(root / "train" / f"{name}.json", {
        "steps": steps, "sequences": steps * batch, "steps_to_val_100": solve,
        "seqs_to_val_100": solve * batch if good else None, "steps_to_probe_100": solve,
        "seqs_to_probe_100": solve * batch if good else None, "val_accuracy": history[-1]["val_accuracy"],
        "stopped": "early_stop" if good else "max_steps"})
    _write_csv(root / "train" / f"{name}.csv", history)


def _xor(root: Path, name: str, v: XorVariant, rng: np.random.Generator) -> None:
    linear = v.activation == "linear"
    center = 1000 if linear else (5 if v.lr > 0.01 else 3000 / sum(v.hidden_layers))
    epochs = [int(min(v.max_epochs, max(1, rng.lognormal(np.log(center), 0.6)))) for _ in range(v.seeds)]
    if not linear and v.lr <= 0.01 and v.hidden_layers == [16]:
        epochs[3] = None  # one dead-ReLU seed
    margins = [float(rng.uniform(1e-8, 1e-7)) if linear else float(rng.uniform(0.2, 0.45)) for _ in epochs]
    losses = [0.25 if linear else float(rng.uniform(0.005, 0.05)) for _ in epochs]
    seeds = [{"seed": i, "epochs_to_100": e, "margin_at_100": m, "final_loss": lo,
              "final_accuracy": 1.0 if e else 0.75, "margin": m}
             for i, (e, m, lo) in enumerate(zip(epochs, margins, losses, strict=True))]
    never = sum(e is None for e in epochs) / len(epochs)
    summary = {"epochs_to_100": quartiles(epochs), "never_solved": never,
               "margin": {"min": min(margins), "median": float(np.median(margins))},
               "final_loss": {"median": float(np.median(losses))}}
    _write_json(root / "train" / f"{name}.json", {**summary, "seeds": v.seeds, "max_epochs": v.max_epochs})
    _write_csv(root / "train" / f"{name}.csv", seeds)
    acc = float(np.mean([r["final_accuracy"] for r in seeds]))
    _write_json(root / "metrics" / f"{name}.json", {**summary, "accuracy": {"xor_gate": acc}, "seeds": v.seeds})


def write_fake_artifacts(root: Path, params: Params, seed: int = 0) -> Path:
    """A consistent ``artifacts/`` tree for every variant of ``params``, in the pipeline's formats."""
    rng = np.random.default_rng(seed)
    for name, v in params.variants.items():
        if isinstance(v, XorVariant):
            _xor(root, name, v, rng)
        else:
            _parity(root, params, name, rng)
    cfg = params.seeds  # the seeds stages: the first variant solves from every seed, the rest miss one
    for i, name in enumerate(cfg.variants):
        _write_json(root / "metrics" / f"seeds_{name}.json", {
            "seeds": cfg.seeds, "solved": {b: cfg.seeds - (i > 0) for b in cfg.buckets},
            "min_accuracy": {b: 1.0 if i == 0 else 0.9731 for b in cfg.buckets}, "median_steps_to_val_100": 250.0})
    return root


@pytest.fixture(scope="module")
def params() -> Params:
    return load_params(PARAMS)


@pytest.fixture()
def artifacts(tmp_path: Path, params: Params) -> Path:
    return write_fake_artifacts(tmp_path / "artifacts", params)


@pytest.fixture(scope="module")
def built(params: Params, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One report on the fake tree of params.yaml, shared by the read-only tests below."""
    artifacts = write_fake_artifacts(tmp_path_factory.mktemp("built") / "artifacts", params)
    report.main(str(PARAMS), str(artifacts))
    return artifacts


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_report_writes_every_file_deterministically(built: Path, params: Params, tmp_path: Path) -> None:
    first = _hashes(built / "report")
    assert sorted(first) == sorted(OUTPUTS)
    again = write_fake_artifacts(tmp_path / "artifacts", params)  # same inputs, another folder
    report.main(str(PARAMS), str(again))
    assert _hashes(again / "report") == first
    assert not [p for p in again.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_summary_tables(built: Path, params: Params) -> None:
    import pandas as pd

    artifacts = built
    summary = pd.read_csv(artifacts / "report" / "summary.csv")
    parity = [n for n, v in params.variants.items() if not isinstance(v, XorVariant)]
    assert summary["variant"].tolist() == parity
    row = summary.set_index("variant").loc["lstm"]
    assert row["accuracy.len_50_100"] == 1.0 and row["n.len_50_100"] == 10000
    assert row["ci95_low.len_50_100"] == pytest.approx(wilson(10000, 10000)[0])
    md = (artifacts / "report" / "summary.md").read_text()
    assert "1.0000 [0.9996, 1.0000] n=10,000" in md
    xor = pd.read_csv(artifacts / "report" / "xor_study.csv").set_index("variant")
    assert xor.loc["xor_mlp_16_relu", "original_epochs"] == 284
    assert xor.loc["xor_mlp_16_relu", "never_solved"] == pytest.approx(1 / 20)
    assert "| 16 relu | 20 | 5% (1) |" in (artifacts / "report" / "xor_study.md").read_text()


def test_settings_that_differ_from_the_defaults(params: Params) -> None:
    assert settings_diff(params, "lstm") == ""
    assert settings_diff(params, "notebook_manual_lstm") == (
        "preset=notebook, batch_size=10, clip_grad_norm=None, input_noise=0.0, max_steps=1000, patience=0, "
        "contraction_weight=0.0")
    assert settings_diff(params, "rfr_1_50_lstm") == "train_bucket=rfr_1_50, val_bucket=rfr_1_50_val"
    assert settings_diff(params, "rfr_fixed50_search") == "train_bucket=rfr_fixed50, val_bucket=rfr_fixed50_val"


def test_reading_of_the_fake_results(built: Path) -> None:
    page = (built / "report" / "index.md").read_text()
    assert "### Robustness over seeds" in page
    assert "| lstm | 0 of 10 | 10 of 10 | 10 of 10 | 1.0000 | 1.0000 | 250 |" in page
    assert "| manual_lstm | 0 of 10 | 9 of 10 | 9 of 10 | 0.9731 | 0.9731 | 250 |" in page
    assert "7 of 7 are 100% right on lengths 50–100" in page  # rnn_per_sequence: other settings
    assert "0 of 5 are 100% right on lengths 50–100" in page
    assert "gru: 100% on random sequences up to length 10,000, then 0.9" in page
    assert "near chance on every random bucket (accuracy 0.4" in page
    assert "lstm: **certified for every length** (100% on random sequences up to length 1,000,000)" in page
    assert "### Correct on every input?" in page
    assert "| gru | — | — | no: gru: 1 then 200 zeros answered even |" in page
    assert "A linear map cannot represent XOR" in page
    assert "16 relu**: 19 of 20 seeds reach 100%" in page
    for png in ("accuracy_vs_length.png", "training_curves.png", "xor_epochs.png"):
        assert f"]({png})" in page


def test_reading_follows_the_numbers(artifacts: Path) -> None:
    """Break one variant: the counts and the phrase follow the file."""
    path, detail = artifacts / "metrics" / "lstm.json", artifacts / "detail" / "lstm.json"
    m, d = json.loads(path.read_text()), json.loads(detail.read_text())
    m["accuracy"]["len_50_100"], d["ci95_low"]["len_50_100"], d["ci95_high"]["len_50_100"] = 0.5, 0.49, 0.51
    path.write_text(json.dumps(m))
    detail.write_text(json.dumps(d))
    report.main(str(PARAMS), str(artifacts))
    page = (artifacts / "report" / "index.md").read_text()
    assert "6 of 7 are 100% right on lengths 50–100" in page
    assert "lstm: **certified for every length** (0.5000 [0.4900, 0.5100] on lengths 50–100" in page


@pytest.mark.parametrize(("rel", "words"), [
    ("metrics/gru.json", ["artifacts/metrics/gru.json", "missing", "dvc repro evaluate-gru"]),
    ("train/lstm.json", ["artifacts/train/lstm.json", "dvc repro train-lstm"]),
    ("train/lstm.csv", ["artifacts/train/lstm.csv", "dvc repro train-lstm"]),
    ("plots/manual_rnn.csv", ["artifacts/plots/manual_rnn.csv", "evaluate-manual_rnn"]),
    ("train/xor_mlp_64_relu.csv", ["artifacts/train/xor_mlp_64_relu.csv", "train-xor_mlp_64_relu"]),
])
def test_missing_input_names_file_and_stage(tmp_path: Path, params: Params, rel: str, words: list[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_fake_artifacts(Path("artifacts"), params)
    (Path("artifacts") / rel).unlink()
    with pytest.raises(UserError) as err:
        report.main(str(PARAMS))
    for word in words:
        assert word in str(err.value)
    assert not Path("artifacts/report").exists()


def test_unreadable_metrics_file(artifacts: Path) -> None:
    (artifacts / "metrics" / "gru.json").write_text("{")
    with pytest.raises(UserError, match=r"gru\.json: not valid JSON.*evaluate-gru"):
        report.main(str(PARAMS), str(artifacts))


def test_cli_is_light_and_fast(artifacts: Path) -> None:
    """Through the CLI, in a fresh process: neither torch nor TensorFlow is imported."""
    code = ("import sys; from stages.__main__ import cli; sys.argv = ['stages', 'report', '--params', "
            f"{str(PARAMS)!r}]\ntry:\n    cli()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "assert 'torch' not in sys.modules and 'tensorflow' not in sys.modules, 'heavy import'")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=artifacts.parent, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "index.md" in proc.stdout
