"""The torch trainer on tiny budgets: it learns, it is deterministic, and it resumes exactly."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from helpers import random_seqs
from models.common import TrainConfig
from models.torch_rnn import zoo as torch_zoo
from models.torch_rnn.train import train
from stages.core.files import FileCheckpoint

pytestmark = pytest.mark.usefixtures("one_thread")


DATA = {
    "train": random_seqs(2000, 1, 6, seed=0),
    "val": random_seqs(200, 1, 6, seed=1),
    "probe": random_seqs(50, 10, 20, seed=2),
}
CFG = TrainConfig(  # params.yaml's training settings, shrunk
    batch_size=32, optimizer="adam", lr=0.02, clip_grad_norm=1.0, input_noise=0.0, max_steps=40,
    eval_every=10, patience=0, curriculum_start=None, checkpoint_every=20, probe_count=50,
    contraction_weight=0.0,  # its own test below
)


def fresh(family: str = "lstm", seed: int = 0, hidden: int = 4) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch_zoo.build(family, hidden)


def run(model, family="lstm", cfg=None, seed=0, **kw):
    return train(model, family, replace(CFG, **(cfg or {})), DATA, "cpu", seed, progress=None, **kw)


class Stop(Exception):
    """Stands for a crash or a kill in the middle of training."""


def stop_at(step: int):
    """A log callback that interrupts training at ``step``."""

    def log(metrics: dict, at: int) -> None:
        if at == step:
            raise Stop

    return log


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name


def test_lstm_learns_short_parity():
    model = fresh(hidden=8)
    lines: list[str] = []
    result = train(model, "lstm", replace(CFG, max_steps=600, eval_every=25, patience=2),
                   DATA, "cpu", 0, progress=lines.append)
    assert result.val_accuracy == 1.0 and result.stopped == "early_stop"
    assert result.steps_to_val_100 is not None and result.seqs_to_val_100 == 32 * result.steps_to_val_100
    assert lines[0].startswith("step 25/600  loss ") and " val " in lines[0] and " probe " in lines[0]


@pytest.mark.parametrize("family", ["manual_lstm", "manual_rnn_bce", "rnn_per_sequence"])
def test_same_seed_gives_bit_identical_weights(family):
    a, b = fresh(family), fresh(family)
    ra, rb = run(a, family, {"max_steps": 15}), run(b, family, {"max_steps": 15})
    assert_same_weights(a, b)
    assert ra.metrics() == rb.metrics() and ra.history == rb.history


def test_history_log_and_result_fields():
    logged: list[tuple[dict, int]] = []
    result = run(fresh(), log=lambda m, s: logged.append((m, s)))
    assert [row["step"] for row in result.history] == [10, 20, 30, 40]
    assert [s for _, s in logged] == [10, 20, 30, 40]
    assert set(logged[0][0]) == {"train/loss", "val/loss", "val/accuracy", "probe/accuracy"}
    assert set(result.history[0]) == {"step", "sequences", "train_loss", "val_loss", "val_accuracy",
                                      "probe_accuracy"}
    assert result.steps == 40 and result.sequences == 40 * 32 and result.stopped == "max_steps"


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    ckpt = tmp_path / "run.ckpt"
    whole = fresh()
    expected = run(whole, checkpoint=FileCheckpoint(ckpt))
    assert not ckpt.exists()  # removed once training finished
    with pytest.raises(Stop):  # after the step-20 checkpoint, before the step-40 one
        run(fresh(), checkpoint=FileCheckpoint(ckpt), log=stop_at(30))
    assert ckpt.exists()
    resumed_model = fresh()
    resumed = run(resumed_model, checkpoint=FileCheckpoint(ckpt))
    assert_same_weights(resumed_model, whole)
    assert resumed.metrics() == expected.metrics() and resumed.history == expected.history


def test_checkpoint_of_another_run_is_ignored(tmp_path):
    ckpt = tmp_path / "run.ckpt"
    with pytest.raises(Stop):
        run(fresh(seed=1), checkpoint=FileCheckpoint(ckpt), log=stop_at(30))
    assert ckpt.exists()
    model = fresh(seed=0)  # other initial weights: must start afresh, not resume seed 1's run
    reference = fresh(seed=0)
    run(model, checkpoint=FileCheckpoint(ckpt))
    run(reference)
    assert_same_weights(model, reference)


def test_unreadable_checkpoint_is_set_aside(tmp_path, capsys):
    ckpt = tmp_path / "run.ckpt"
    ckpt.write_bytes(b"not a checkpoint")  # a crash mid-write, a full disk, an edit
    model, reference = fresh(), fresh()
    run(model, checkpoint=FileCheckpoint(ckpt))
    run(reference)
    assert_same_weights(model, reference)  # started afresh
    assert (tmp_path / "run.ckpt.unreadable").read_bytes() == b"not a checkpoint"
    assert "unreadable checkpoint" in capsys.readouterr().err


def test_curriculum_raises_the_length_cap():
    result = run(fresh(hidden=8), cfg={"curriculum_start": 2, "max_steps": 200, "eval_every": 10})
    caps = [row["curriculum_cap"] for row in result.history]
    assert caps[0] == 2 and caps == sorted(caps) and caps[-1] > 2


def test_contraction_phase_starts_at_the_first_full_validation_and_contracts():
    """From the first 100% validation on, the penalty pulls the one-step Jacobian's norm at
    reached states under contraction_rho; early stopping counts only that phase."""
    from models.torch_rnn import contraction

    model = fresh(hidden=8)
    result = run(model, cfg={"max_steps": 2000, "eval_every": 25, "patience": 4, "contraction_weight": 10.0,
                             "lr": 0.01})
    assert result.stopped == "early_stop" and result.steps_to_val_100 is not None
    assert result.steps >= result.steps_to_val_100 + 4 * 25  # four evaluations inside the phase
    x, lengths = (torch.as_tensor(a) for a in DATA["val"].padded())
    _, reached = contraction.forward_with_state(model, "lstm", x.float(), lengths)
    with torch.no_grad():
        penalty = contraction.jacobian_penalty(model, "lstm", reached, 0.5)
    assert float(penalty) < 0.05
