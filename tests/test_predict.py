"""``predict``: input validation (every line checked first), variant checks, and predictions
of a tiny untrained torch model saved into a temporary artifacts tree (nothing is trained)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stages.commands import predict
from stages.core.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
CONFIG = {"family": "lstm", "hidden_size": 4, "num_layers": 1, "init": "default"}  # = lstm in params_small


@pytest.fixture()
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A scratch working directory with params_small.yaml as params.yaml; cwd is set to it."""
    (tmp_path / "params.yaml").write_text((ROOT / "tests" / "params_small.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture()
def lstm_model(repo: Path):
    """A seeded, untrained 4-unit LSTM saved where train-lstm would put it."""
    torch = pytest.importorskip("torch")
    from models.torch_rnn import zoo as torch_zoo

    torch.manual_seed(0)
    model = torch_zoo.build(**CONFIG)
    (repo / "artifacts" / "models" / "lstm").mkdir(parents=True)
    torch_zoo.save(model, CONFIG, repo / "artifacts" / "models" / "lstm" / "model.pt")
    return model


def _cli(cwd: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "-1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "stages", "predict", *args], cwd=cwd, env=env,
                          input=stdin, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("stdin", "words"), [
    ("0101\n1\n01a1\n", ["line 3", "'01a1'", "other than 0 and 1", "position 3"]),
    ("0101\n\n11\n", ["line 2", "empty"]),
    ("0101\n 2 \n", ["line 2", "'2'"]),
    ("", ["no input"]),
])
def test_bad_stdin_exits_2_naming_the_line(repo: Path, lstm_model, stdin: str, words: list[str]) -> None:
    proc = _cli(repo, "--variant", "lstm", stdin=stdin)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""  # nothing predicted before every line was checked
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for word in words:
        assert word in lines[0]


def test_bad_argument_is_named(repo: Path) -> None:
    with pytest.raises(UserError, match=r"argument 2: '10b' contains characters other than 0 and 1"):
        predict.main("lstm", ("0110", "10b"))


def test_long_bad_line_is_shortened_in_the_message() -> None:
    with pytest.raises(UserError, match=r"line 1: '0{24}\.\.\.' .*position 1001") as err:
        predict.parse_bits([b"0" * 1000 + b"x" + b"1" * 5000])
    assert len(str(err.value)) < 200


def test_parse_accepts_crlf_and_packs_bits() -> None:
    seqs = predict.parse_bits([b"0110\r", b"1", b"  111 "])
    assert seqs.lengths.tolist() == [4, 1, 3]
    assert seqs.labels.tolist() == [0, 1, 1]
    assert seqs.bits(0).tolist() == [0, 1, 1, 0]


def test_unknown_variant_lists_parity_variants(repo: Path) -> None:
    with pytest.raises(UserError) as err:
        predict.main("lstm_big", ("0101",))
    msg = str(err.value)
    assert "lstm_big" in msg and "lstm, gru" in msg and "xor_mlp_16_relu" not in msg


def test_xor_variant_is_not_a_parity_model(repo: Path) -> None:
    with pytest.raises(UserError, match="xor_mlp_16_relu.*not a parity model.*lstm, gru"):
        predict.main("xor_mlp_16_relu", ("0101",))


def test_missing_model_says_how_to_train(repo: Path) -> None:
    with pytest.raises(UserError, match=r"dvc repro train-gru"):
        predict.main("gru", ("0101",))


def test_predictions_match_the_model(repo: Path, lstm_model, capsys: pytest.CaptureFixture[str]) -> None:
    from models.torch_rnn import zoo as torch_zoo
    from stages.core.data import SeqSet

    inputs = ("0", "1", "1011", "0" * 300, "110" * 40)
    predict.main("lstm", inputs)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(inputs)
    logits = torch_zoo.predict_logits(lstm_model, SeqSet.from_bits("x", list(inputs)), "cpu")
    for line, logit in zip(lines, logits, strict=True):
        parity, prob = line.split("\t")
        assert parity == str(int(logit > 0))
        assert float(prob) == pytest.approx(1 / (1 + np.exp(-logit)), abs=1e-6)
        assert len(prob.split(".")[1]) == 6


def test_format_predictions_is_stable_at_extreme_logits() -> None:
    out = predict.format_predictions(np.array([-800.0, 0.0, 1e-9, 800.0]))
    assert out == "0\t0.000000\n0\t0.500000\n1\t0.500000\n1\t1.000000\n"


def test_stdin_million_bits_through_the_cli(repo: Path, lstm_model) -> None:
    rng = np.random.default_rng(0)
    long = (rng.integers(0, 2, 1_000_000, dtype=np.uint8) + ord("0")).tobytes().decode()
    proc = _cli(repo, "--variant", "lstm", stdin=f"{long}\n1011\n0\n")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 3
    for line in lines:
        parity, prob = line.split("\t")
        assert parity in ("0", "1") and 0.0 <= float(prob) <= 1.0
        assert (parity == "1") == (float(prob) > 0.5) or float(prob) == 0.5
