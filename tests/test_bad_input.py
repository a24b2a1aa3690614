"""Bad input, table-driven: one clear line, exit status 2, and no output created or changed.

Each case runs the real CLI (in this process, through click's runner: a fresh interpreter per
case would cost 2 s each) in a scratch directory holding a valid small params file, a
`data/` and an `artifacts/` folder; every file's sha256 is compared before and after. One
case runs as a subprocess, to show the same holds for `python -m stages`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from helpers import tree_hashes
from stages.__main__ import cli

ROOT = Path(__file__).resolve().parents[1]
SMALL = yaml.safe_load((ROOT / "tests" / "params_small.yaml").read_text())


def _set(path: str, value):
    """A params mutation: set the dotted key `path` to `value` (None deletes the key)."""

    def mutate(p: dict) -> dict:
        *parents, last = path.split(".")
        node = p
        for key in parents:
            node = node[key]
        if value is None:
            del node[last]
        else:
            node[last] = value
        return p

    return mutate


# (id, params mutation or raw text, command args, stdin, words the error must contain)
CASES = [
    ("malformed_yaml", "seed: [1, 2\nvariants: {", ["train", "lstm"], None, ["malformed YAML", "line"]),
    ("missing_params", "MISSING", ["train", "lstm"], None, ["file not found"]),
    ("unknown_top_key", _set("epochs", 5), ["train", "lstm"], None, ["epochs", "unknown key", "allowed"]),
    ("variant_key_typo", _set("variants.lstm.hiden_size", 8), ["train", "lstm"], None, ["variants.lstm.hiden_size", "allowed", "hidden_size"]),
    ("wrong_type", _set("variants.lstm.hidden_size", "big"), ["train", "lstm"], None, ["variants.lstm.hidden_size", "'big'", "integer"]),
    ("zero_count", _set("data.buckets.train.count", 0), ["generate", "train"], None, ["data.buckets.train.count", "0", "greater than 0"]),
    ("negative_count", _set("data.buckets.val.count", -5), ["generate", "val"], None, ["data.buckets.val.count", "-5"]),
    ("min_gt_max", _set("data.buckets.train.min_len", 30), ["generate", "train"], None, ["min_len (30)", "max_len (8)"]),
    ("hidden_zero", _set("variants.gru.hidden_size", 0), ["train", "gru"], None, ["variants.gru.hidden_size", "0"]),
    ("lr_zero", _set("training.lr", 0), ["train", "lstm"], None, ["training.lr", "0", "greater than 0"]),
    ("lr_negative_override", _set("variants.lstm.training", {"lr": -0.1}), ["train", "lstm"], None, ["variants.lstm.training.lr", "-0.1"]),
    ("unknown_family", _set("variants.lstm.family", "transformer"), ["train", "lstm"], None, ["transformer", "allowed", "manual_lstm"]),
    ("unknown_loss", _set("variants.xor_mlp_16_relu.loss", "hinge"), ["train", "xor_mlp_16_relu"], None, ["loss", "'hinge'", "'mse'"]),
    ("unknown_optimizer", _set("training.optimizer", "rmsprop"), ["train", "lstm"], None, ["training.optimizer", "'rmsprop'", "'adam'"]),
    ("unknown_activation", _set("variants.xor_mlp_16_relu.activation", "elu"), ["train", "xor_mlp_16_relu"], None, ["activation", "'elu'", "'relu'"]),
    ("no_variants", _set("variants", {}), ["train", "lstm"], None, ["no variants"]),
    ("cuda_without_gpu", _set("device", "cuda"), ["train", "lstm"], None, ["cuda", "no CUDA GPU", "cpu"]),
    ("unknown_device", _set("device", "tpu"), ["train", "lstm"], None, ["device", "'tpu'", "'cuda'"]),
    ("over_length_limit", _set("data.buckets.len_200.max_len", 5_000_000), ["generate", "len_200"], None, ["len_200", "max_len_limit"]),
    ("zero_threads", _set("threads", 0), ["train", "lstm"], None, ["threads", "0"]),
    ("unknown_eval_bucket", _set("evaluate.buckets", ["len_50_100", "len_999"]), ["evaluate", "lstm"], None, ["len_999", "allowed"]),
    ("unknown_variant", None, ["train", "lstm_big"], None, ["lstm_big", "allowed", "lstm"]),
    ("seeds_of_a_keras_study", _set("seeds.variants", ["xor_mlp_16_relu"]), ["seeds", "lstm"], None,
     ["seeds.variants", "'xor_mlp_16_relu'", "torch parity variant", "allowed: gru, lstm"]),
    ("seeds_unlisted_variant", None, ["seeds", "gru"], None, ["'gru'", "seeds.variants", "allowed: lstm"]),
    ("noise_negative", _set("training.input_noise", -0.1), ["train", "lstm"], None, ["training.input_noise", "-0.1"]),
    ("eval_max_bits_zero", _set("variants.lstm.eval_max_bits", 0), ["evaluate", "lstm"], None,
     ["variants.lstm.eval_max_bits", "0", "greater than 0"]),
    ("predict_bad_chars", None, ["predict", "--variant", "lstm"], "0101\n01a1\n", ["line 2", "0 and 1"]),
    ("predict_empty_line", None, ["predict", "--variant", "lstm"], "0101\n\n11\n", ["line 2", "empty"]),
    ("predict_unknown_variant", None, ["predict", "--variant", "nope", "0101"], None, ["nope", "lstm"]),
    ("rerun_unknown_run", None, ["rerun", "0123456789abcdef0123456789abcdef"], None, ["0123456789abcdef0123456789abcdef"]),
    # Values that passed before and could not work (issue 23): refused before any work.
    ("lr_inf", _set("training.lr", float("inf")), ["train", "lstm"], None, ["training.lr", "inf", "finite"]),
    ("lr_nan_override", _set("variants.lstm.training", {"lr": float("nan")}), ["train", "lstm"], None,
     ["variants.lstm.training.lr", "nan", "finite"]),
    ("bias_init_nan", _set("variants.xor_mlp_16_relu.bias_init", float("nan")), ["xor"], None,
     ["variants.xor_mlp_16_relu.bias_init", "finite"]),
    ("noise_inf", _set("training.input_noise", float("inf")), ["train", "lstm"], None, ["training.input_noise", "finite"]),
    ("clip_nan", _set("training.clip_grad_norm", float("nan")), ["train", "lstm"], None, ["training.clip_grad_norm", "finite"]),
    ("weight_scale_inf", _set("variants.search", {"family": "rnn_search", "weight_scale": float("inf")}),
     ["train", "search"], None, ["variants.search.weight_scale", "finite"]),
    ("seed_true", _set("seed", True), ["train", "lstm"], None, ["seed", "True", "integer"]),
    ("hidden_yes", "YES", ["train", "lstm"], None, ["variants.lstm.hidden_size", "True", "integer"]),
    ("lr_on", _set("training.lr", True), ["train", "lstm"], None, ["training.lr", "True", "number"]),
    ("count_float", _set("data.buckets.train.count", 1.5), ["generate", "train"], None, ["data.buckets.train.count", "1.5"]),
    ("seed_too_big", _set("seed", 2**32), ["train", "lstm"], None, ["seed", "4294967296", "less than 4294967296"]),
    ("data_seed_too_big", _set("data.seed", 2**40), ["generate", "train"], None, ["data.seed", "less than"]),
    ("threads_huge", _set("threads", 100_000), ["predict", "--variant", "lstm", "01"], None, ["threads", "100000", "256"]),
    ("hidden_huge", _set("variants.lstm.hidden_size", 1_000_000), ["train", "lstm"], None,
     ["variants.lstm.hidden_size", "1000000", "4096"]),
    ("batch_huge", _set("training.batch_size", 10**9), ["train", "lstm"], None, ["training.batch_size", "65536"]),
    ("bucket_too_big", _set("data.buckets.len_200", {"count": 10**6, "min_len": 10**6, "max_len": 10**6}),
     ["generate", "len_200"], None, ["buckets.len_200", "GiB", "half"]),
    ("variant_name_long", _set("variants." + "x" * 300, {"family": "lstm"}), ["train", "lstm"], None,
     ["variants.", "64 characters"]),
    ("bucket_name_long", _set("data.buckets." + "b" * 100, {"count": 2, "min_len": 1, "max_len": 2}),
     ["generate", "train"], None, ["bucket name", "64 characters"]),
    ("evaluate_no_buckets", _set("evaluate.buckets", []), ["evaluate", "lstm"], None, ["evaluate.buckets", "at least 1"]),
    ("eval_buckets_empty", _set("variants.lstm.eval_buckets", []), ["evaluate", "lstm"], None,
     ["variants.lstm.eval_buckets", "at least 1"]),
    ("seeds_no_buckets", _set("seeds.buckets", []), ["seeds", "lstm"], None, ["seeds.buckets", "empty"]),
    ("null_lr_override", _set("variants.lstm.training", {"lr": None}), ["train", "lstm"], None,
     ["variants.lstm.training", "lr: null is not allowed"]),
    ("manual_two_layers", _set("variants.manual", {"family": "manual_lstm", "num_layers": 2}), ["train", "manual"], None,
     ["variants.manual", "num_layers=2", "allowed: 1"]),
    ("top_level_bucket_path", _set("training.train_bucket", "nope"), ["train", "lstm"], None,
     ["training.train_bucket: unknown bucket 'nope'"]),
    ("huge_value_is_cut", _set("device", "x" * 1_000_000), ["train", "lstm"], None, ["device", "characters"]),
    ("ten_mb_value", _set("device", "x" * 10_000_000), ["train", "lstm"], None, ["params.yaml is 9.5 MiB"]),
    ("many_unknown_keys", "MANY_KEYS", ["train", "lstm"], None, ["--params", "params.yaml is 10.4 MiB", "at most 1 MiB"]),
    ("hundred_unknown_keys", "HUNDRED_KEYS", ["train", "lstm"], None, ["k0: unknown key", "allowed: seed, device"]),
    ("duplicate_key", "DUPLICATE", ["train", "lstm"], None, ["key 'seed' appears twice", "line"]),
    ("duplicate_variant", "DUPLICATE_VARIANT", ["train", "lstm"], None, ["key 'lstm' appears twice"]),
    ("not_utf8", "LATIN1", ["train", "lstm"], None, ["not UTF-8", "0xe9", "line 1"]),
    ("cycle_disjoint", _set("data.buckets.train.disjoint_from", "val"), ["generate", "train"], None, ["cycle"]),
    ("lr_minus_inf", _set("training.lr", float("-inf")), ["train", "lstm"], None, ["training.lr", "-inf", "finite"]),
    ("max_steps_on", "ON", ["train", "lstm"], None, ["training.max_steps", "True", "integer"]),
    ("duplicate_key_in_a_variant", "DUPLICATE_IN_VARIANT", ["train", "lstm"], None,
     ["key 'hidden_size' appears twice", "line"]),
    # Bad command lines (issue 23: `data NAME --limit 1e20`): one line, not click's usage block or a traceback.
    ("limit_not_an_integer", None, ["data", "train", "--limit", "1e20"], None,
     ["python -m stages data: ", "--limit", "'1e20'", "`python -m stages data --help`"]),
    ("limit_negative", None, ["data", "train", "--limit", "-1"], None, ["--limit", "-1", "x>=0"]),
    ("jobs_zero", None, ["repro", "--jobs", "0"], None, ["python -m stages repro: ", "--jobs", "0 is not in the range"]),
    ("timeout_not_a_number", None, ["repro", "--timeout", "1h"], None, ["--timeout", "'1h'"]),
    ("unknown_command", None, ["trian", "lstm"], None, ["No such command 'trian'", "`python -m stages --help`"]),
    ("missing_argument", None, ["train"], None, ["python -m stages train: ", "Missing argument 'VARIANT'"]),
    ("unknown_option", None, ["train", "lstm", "--param", "p.yaml"], None, ["No such option", "--param"]),
    ("fixedlen_no_study", None, ["fixedlen", "cells"], None, ["fixed_length is null", "add the section"]),
    ("fixedlen_fraction_one", _set("fixed_length", {"mix_buckets": [], "mix_fractions": [0.5, 1.0]}),
     ["fixedlen", "mixing"], None, ["fixed_length.mix_fractions.1", "1.0", "less than 1"]),
]
RAW = {  # whole params files that YAML itself, not a key, must refuse or that must be built as text
    "YES": ("SMALL", "lstm: {family: lstm, hidden_size: 4}", "lstm: {family: lstm, hidden_size: yes}"),
    "DUPLICATE": ("SMALL", "seed: 0", "seed: 0\nseed: 5"),
    "DUPLICATE_VARIANT": ("SMALL", "  gru: {family: gru, hidden_size: 4}",
                          "  gru: {family: gru, hidden_size: 4}\n  lstm: {family: lstm, hidden_size: 8}"),
    "DUPLICATE_IN_VARIANT": ("SMALL", "lstm: {family: lstm, hidden_size: 4}",
                             "lstm: {family: lstm, hidden_size: 4, hidden_size: 8}"),
    "ON": ("SMALL", "max_steps: 60", "max_steps: on"),
}


@pytest.fixture()
def scratch(tmp_path: Path) -> Path:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(SMALL))
    for rel in ("data/train.json", "data/train.npz", "artifacts/metrics/lstm.json", "artifacts/models/lstm/model.pt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"existing output " + rel.encode())
    return tmp_path


@pytest.mark.parametrize(("mutation", "args", "stdin", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(scratch: Path, mutation, args, stdin, words, monkeypatch: pytest.MonkeyPatch) -> None:
    params = scratch / "params.yaml"
    if mutation == "MISSING":
        params.unlink()
    elif mutation == "MANY_KEYS":  # a million unknown keys: refused at once, not after a minute
        params.write_text("".join(f"k{i}: 1\n" for i in range(1_000_000)))
    elif mutation == "HUNDRED_KEYS":  # a file of a plausible size: read, and the first unknown key named
        params.write_text("".join(f"k{i}: 1\n" for i in range(100)))
    elif mutation == "LATIN1":
        params.write_bytes("# caf\u00e9\n".encode("latin-1") + params.read_bytes())
    elif mutation in RAW:
        _, old, new = RAW[mutation]
        text = (ROOT / "tests" / "params_small.yaml").read_text()
        assert old in text, old
        params.write_text(text.replace(old, new, 1))
    elif isinstance(mutation, str):
        params.write_text(mutation)
    elif mutation is not None:
        params.write_text(yaml.safe_dump(mutation(yaml.safe_load(params.read_text()))))
    before = tree_hashes(scratch)
    monkeypatch.chdir(scratch)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{scratch}/mlflow.db")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    result = CliRunner().invoke(cli, args, input=stdin or "", prog_name="python -m stages")
    assert result.exit_code == 2, (result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr  # one line, no traceback
    for word in words:
        assert word in lines[0], lines[0]
    assert len(lines[0]) < 1000, lines[0][:1000]  # a long value is shortened, not echoed
    assert tree_hashes(scratch) == before


def test_the_same_through_python_m_stages(scratch: Path) -> None:
    params = scratch / "params.yaml"
    params.write_text(params.read_text() + "seed: 5\n")  # a second seed: key
    before = tree_hashes(scratch)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "-1",
           "MLFLOW_TRACKING_URI": f"sqlite:///{scratch}/mlflow.db", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "stages", "train", "lstm"], cwd=scratch, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("error: params.yaml: ")
    assert tree_hashes(scratch) == before


def test_at_least_seventy_cases() -> None:
    assert len(CASES) >= 70  # and tests/test_bad_files.py: past 80 together (issue 23)
