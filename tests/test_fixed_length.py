"""The fixed-length study: the gradient-signal measure on cases with a known answer, its schema,
its dvc.yaml stages, and the three stages end to end on a tiny config (seconds)."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from models.torch_rnn import zoo
from models.torch_rnn.signal import all_strings, batch_gradients, exact_signal, gradient_signal
from stages.commands import dag
from stages.core import files, paths
from stages.core.params import ParamsError, load_params
from stages.pipeline.fixed_length_summary import fit_rate, summarise_signal

ROOT = Path(__file__).resolve().parents[1]
SMALL = yaml.safe_load((ROOT / "tests" / "params_small.yaml").read_text())
pytestmark = pytest.mark.usefixtures("one_thread")


class Character(nn.Module):
    """f(x) = w * prod_{i in bits} (1 - 2 x_i): a parity (character) of some of the bits."""

    def __init__(self, bits: list[int], w: float = 0.0) -> None:
        super().__init__()
        self.bits = bits
        self.w = nn.Parameter(torch.tensor(float(w)))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.w * torch.prod(1 - 2 * x[:, self.bits], dim=1)


def _batches(length: int, count: int, size: int, seed: int = 0) -> list[tuple]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        x = torch.randint(0, 2, (size, length), generator=g).float()
        out.append((x, torch.full((size,), length), x.sum(1) % 2))
    return out


def test_the_parity_character_gets_signal_one_half_and_a_smaller_one_none() -> None:
    # grad_w f = chi_S(x), so E[chi grad f] / 2 = E[chi chi_S] / 2: 1/2 when S is every bit, else 0
    whole = gradient_signal(Character([0, 1, 2]), _batches(3, 8, 32), all_strings(3))
    part = gradient_signal(Character([0, 1]), _batches(3, 8, 32), all_strings(3))
    assert whole["signal"] == pytest.approx(0.5) and whole["measured"] == 1.0 and whole["exact"] == 1.0
    assert part["signal"] < 1e-15 and part["measured"] == 0.0
    # sampled: chi * chi = 1 in every batch, so the mean is exact and has no floor
    sampled = gradient_signal(Character([0, 1, 2, 3, 4]), _batches(5, 8, 32))
    assert sampled["signal"] == pytest.approx(0.5) and sampled["floor"] == pytest.approx(0.0, abs=1e-12)
    assert sampled["exact"] == 0.0 and sampled["measured"] == 1.0


def test_noise_is_the_spread_of_the_batch_loss_gradients() -> None:
    # f = w x_0 at w = 0: d loss / dw = mean((1/2 - y) x_0) per batch, computed here by hand
    batches = _batches(4, 5, 16, seed=3)
    got = gradient_signal(Character([0]), batches)
    by_hand = np.array([float(((0.5 - y) * (1 - 2 * x[:, 0])).mean()) for x, _, y in batches])
    assert got["noise"] == pytest.approx(np.sqrt(np.mean((by_hand - by_hand.mean()) ** 2)))
    assert got["snr"] == pytest.approx(got["signal"] / got["noise"])


def test_the_lstms_exact_signal_falls_with_length_and_agrees_with_its_batches() -> None:
    torch.manual_seed(0)
    model = zoo.build("lstm", 8)
    strings = all_strings(6)
    signal, floor = exact_signal(model, strings, chunk=7)  # summed over chunks of 7 strings
    whole = float(batch_gradients(copy.deepcopy(model).double(), *strings)[1].norm())  # one batch of all
    assert floor < signal < 1e-3
    assert math.isclose(whole, signal, rel_tol=1e-9)
    assert exact_signal(model, all_strings(2))[0] > 100 * signal


def test_the_fit_reads_the_factor_per_bit() -> None:
    lengths = [2, 2, 4, 4, 6]
    assert fit_rate(lengths, [2.0 ** -(3 * n) for n in lengths])["factor_per_bit"] == pytest.approx(8.0)
    assert fit_rate([4, 4], [0.1, 0.2]) is None
    rows = [{"length": n, "seed": s, "snr": 2.0 ** -n, "snr_floor": 0.0, "measured": float(n < 8)}
            for n in (2, 4, 8) for s in range(2)]
    summary = summarise_signal(rows)
    assert summary["fit"]["lengths"] == [2, 4] and summary["lengths"]["L8"]["measured"] == 0


def _params(tmp: Path, study: dict | None, **top: dict) -> Path:
    doc = dict(SMALL) | top
    if study is not None:
        doc["fixed_length"] = study
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize(("study", "words"), [
    ({"lengths": [4, 4]}, ["fixed_length.lengths", "[4, 4]", "repeats"]),
    ({"mix_fractions": [0.1, 1.0]}, ["fixed_length.mix_fractions.1", "1.0", "less than 1"]),
    ({"variant": "xor_mlp_16_relu"}, ["fixed_length.variant", "'xor_mlp_16_relu'", "torch parity variant"]),
    ({"signal_steps": [45]}, ["fixed_length", "signal_steps", "[45]", "eval_every=50"]),
    ({"lenghts": [2]}, ["fixed_length.lenghts", "unknown key", "lengths"]),
    ({"mix_buckets": ["nope"]}, ["fixed_length.mix_buckets", "'nope'", "allowed"]),
    ({"lengths": [2, 5000]}, ["fixed_length.lengths.1", "5000", "1000"]),
])
def test_bad_values_are_refused_with_the_key_named(tmp_path: Path, study: dict, words: list[str]) -> None:
    with pytest.raises(ParamsError) as err:
        load_params(_params(tmp_path, {"mix_buckets": [], **study}))
    assert all(w in str(err.value) for w in words), str(err.value)


def test_stages_list_exactly_the_keys_and_files_they_read(tmp_path: Path) -> None:
    training = {**SMALL["training"], "lr": 0.01, "batch_size": 64}  # written keys are DVC params
    text = dag.render(_params(tmp_path, {"mix_buckets": ["len_200"], "lengths": [2, 3], "mix_fractions": [0.1]},
                                training=training))
    stages = yaml.safe_load(text)["stages"]
    cells, signal, mixing = (stages[f"fixedlen-{p}"] for p in ("cells", "signal", "mixing"))
    assert "training.lr" in cells["params"] and "training.max_steps" not in cells["params"]
    assert "training.lr" not in signal["params"] and "training.batch_size" in signal["params"]
    assert "fixed_length.mix_fractions" in mixing["params"] and "fixed_length.lengths" not in mixing["params"]
    assert "data/len_200.npz" in mixing["deps"] and not any(d.startswith("data/") for d in cells["deps"])
    assert "models/torch_rnn/signal.py" in signal["deps"]
    assert str(paths.fixedlen_metrics("mixing")) in stages["report"]["deps"]
    plain = yaml.safe_load(dag.render(_params(tmp_path, None)))["stages"]
    assert not any(n.startswith("fixedlen") for n in plain)
    assert str(paths.fixedlen_metrics("cells")) not in plain["report"]["deps"]


TINY = {"lengths": [1, 6], "seeds": 2, "max_steps": 100, "eval_every": 25, "patience": 1, "train_count": 300,
        "eval_count": 64, "long_min": 20, "long_max": 30, "signal_batches": 4, "signal_train_batches": 2,
        "signal_steps": [50], "signal_exact_max": 6, "mix_length": 12, "mix_fractions": [0.5],
        "mix_seeds": 1, "mix_buckets": ["len_50_100"]}


def test_the_study_end_to_end_on_a_tiny_config(tmp_path: Path, data_dir: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from stages.pipeline import fixed_length

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    (tmp_path / "data").symlink_to(data_dir)
    params = _params(tmp_path, TINY)
    for part in ("cells", "signal", "mixing"):
        fixed_length.main(part, str(params))
    cells = files.read_json(paths.fixedlen_metrics("cells"))
    assert cells["cells"]["L1"]["learned"] == 2 and cells["cells"]["L1"]["accuracy_len"] == 1.0
    assert cells["budget_steps"] == 100 and cells["longest_all_learned"] >= 1
    along = paths.fixedlen_signal_training().read_text().splitlines()
    assert along[0].startswith("length,seed,step,signal") and all(",50," in r for r in along[1:])
    signal = files.read_json(paths.fixedlen_metrics("signal"))
    assert signal["lengths"]["L1"]["snr"] > signal["lengths"]["L6"]["snr"] > 0
    assert signal["fit"]["factor_per_bit"] > 1
    mixing = files.read_json(paths.fixedlen_metrics("mixing"))
    assert set(mixing["fractions"]) == {"f0.5"} and "accuracy_len_50_100" in mixing["fractions"]["f0.5"]
    rows = paths.fixedlen_table("cells").read_text().splitlines()
    assert len(rows) == 1 + 4 and rows[0].startswith("length,seed,learned")
    again = paths.fixedlen_metrics("signal").read_bytes()
    fixed_length.main("signal", str(params))
    assert paths.fixedlen_metrics("signal").read_bytes() == again  # seeded: the same bytes
    _the_report_answers_from_these_files(params, tmp_path)


def _the_report_answers_from_these_files(params_path: Path, tmp: Path) -> None:
    from stages.report import fixed_length as report

    study = report.load_study(load_params(params_path), Path("artifacts"))
    sentences = report.answer(study)
    assert 3 <= len(sentences) <= 5 and sentences[-1].startswith("Limits: 2 seeds per length")
    assert "L = 1 (L = 1: 2 of 2 seeds" in sentences[0]  # learned at L = 1, numbers from cells.json
    fit = study.signal["fit"]["factor_per_bit"]
    assert f"about {fit:.0f} per added bit" in sentences[1]
    assert report.section(study).startswith(f"## {report.QUESTION}")
    report.figure(study, tmp / "fixed_length.png")
    assert (tmp / "fixed_length.png").read_bytes()[:4] == b"\x89PNG"


def test_a_sweep_runs_the_study_for_its_variant_and_other_trials_do_without(tmp_path: Path) -> None:
    from stages.sweep.plan import plan
    from stages.sweep.schema import SweepError, load_sweep

    params = _params(tmp_path, {"variant": "gru", "mix_buckets": []})
    sweep = tmp_path / "s.yaml"
    sweep.write_text(yaml.safe_dump({"name": "s", "groups": {
        "cells": {"variants": ["lstm"], "study": ["cells"], "space": {"fixed_length.lengths": [[2], [4]]}},
        "plain": {"variants": ["lstm"]}}}))
    trials = plan(load_sweep(sweep), sweep, params)
    study = [t for t in trials if t.study]
    assert [t.name for t in study] == ["cells-lstm-fixed_length.lengths=2", "cells-lstm-fixed_length.lengths=4"]
    doc = yaml.safe_load(study[1].params_text)
    assert doc["fixed_length"]["variant"] == "lstm" and doc["fixed_length"]["lengths"] == [4]
    plain = next(t for t in trials if not t.study)
    assert "fixed_length" not in yaml.safe_load(plain.params_text)
    bare = tmp_path / "bare.yaml"
    bare.write_text(yaml.safe_dump({"name": "b", "groups": {"signal": {"variants": ["lstm"], "study": ["signal"]}}}))
    with pytest.raises(SweepError, match="trial lstm: its group runs the fixed-length study, but the "
                                         "params file has no fixed_length section"):
        plan(load_sweep(bare), bare, _params(tmp_path, None))


def test_a_study_trial_runs_its_part_and_collects_its_metrics(tmp_path: Path, data_dir: Path) -> None:
    from stages.sweep.trial import execute

    trial = tmp_path / "trials" / "t"
    trial.mkdir(parents=True)
    _params(trial, TINY | {"lengths": [1, 2], "seeds": 1})
    spec = {"name": "t", "dir": str(trial), "variant": "lstm", "key": "k", "data": str(data_dir),
            "study": ["signal"], "code_root": str(ROOT), "timeout_s": 300,
            "env": {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/m.db"}}
    outcome = execute(spec)
    assert outcome["status"] == "ok", outcome
    assert outcome["metrics"]["fixedlen"]["signal"]["lengths"]["L1"]["measured"] == 1


def test_the_committed_full_size_sweep_plans_against_params_yaml() -> None:
    """sweeps/fixed_length.yaml (hours on a Ray cluster, never run by the tests) must at least
    plan: every trial's params file validates against the live params.yaml."""
    from stages.sweep.plan import plan
    from stages.sweep.schema import load_sweep

    sweep = ROOT / "sweeps" / "fixed_length.yaml"
    trials = plan(load_sweep(sweep), sweep, ROOT / "params.yaml")
    assert len(trials) > 10
