"""The Keras LSTM: masking, saving, and the trainer on tiny budgets (learns, deterministic, resumes)."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from models.common import ModelError, TrainConfig
from stages.core.device import configure_tensorflow_device  # noqa: E402
from stages.core.files import FileCheckpoint

configure_tensorflow_device("cpu")  # as the stages do, before TensorFlow is imported

from helpers import random_seqs  # noqa: E402
from models.keras_lstm import model as keras_lstm  # noqa: E402
from models.keras_lstm.train import train as keras_train  # noqa: E402
from models.torch_rnn.zoo import RNNConfig  # noqa: E402
from stages.core.seeding import seed_everything  # noqa: E402

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


def fresh(seed: int = 0, hidden: int = 4, **kw):
    seed_everything(seed)  # Keras' initialisers draw from the seeded Python RNG
    return keras_lstm.build(RNNConfig("keras_lstm", hidden_size=hidden, **kw))


def run(model, cfg=None, seed=0, **kw):
    return keras_train(model, replace(CFG, **(cfg or {})), DATA, seed, progress=None, **kw)


class Stop(Exception):
    """Stands for a crash or a kill in the middle of training."""


def stop_at(step: int):
    def log(metrics: dict, at: int) -> None:
        if at == step:
            raise Stop

    return log


def assert_same_weights(a, b) -> None:
    for x, y in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(x, y)


def test_padding_does_not_change_a_logit():
    model = fresh(num_layers=2)
    bits = np.array([[1, 0, 1, 1, 0]], dtype=np.uint8)
    lengths = np.array([5])
    narrow = model(keras_lstm.to_input(bits, lengths)).numpy()
    wide_bits = np.concatenate([bits, np.ones((1, 25), np.uint8)], axis=1)  # junk past the end
    wide = model(keras_lstm.to_input(wide_bits, lengths)).numpy()
    np.testing.assert_array_equal(narrow, wide)


def test_predict_logits_keeps_order_across_length_batches():
    model = fresh()
    seqs = random_seqs(60, 1, 40, seed=3)
    together = keras_lstm.predict_logits(model, seqs, max_batch_bits=200)  # many small batches
    alone = [keras_lstm.predict_logits(model, seqs.subset([i]))[0] for i in range(0, 60, 7)]
    np.testing.assert_allclose(together[::7], alone, rtol=1e-6, atol=1e-6)
    assert together.dtype == np.float64 and together.shape == (60,)


@pytest.mark.parametrize("layers", [1, 2])
def test_prefix_tree_gives_the_models_own_logits(layers):
    from helpers import exhaustive_seqs
    from models.prefix_tree import all_sequences_logits

    model = fresh(seed=1, hidden=5, num_layers=layers)
    seqs = exhaustive_seqs(7)
    tree = all_sequences_logits(keras_lstm.stepper(model), 7)
    np.testing.assert_allclose(tree, keras_lstm.predict_logits(model, seqs), atol=1e-5)


def test_save_load_round_trip_and_config_check(tmp_path):
    model = fresh(hidden=5)
    config = {"family": "keras_lstm", "hidden_size": 5, "num_layers": 1, "init": "default"}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    keras_lstm.save(model, config, tmp_path / "a")
    keras_lstm.save(fresh(hidden=5), config, tmp_path / "b")  # same weights, other Python objects
    # Stable bytes: Keras' time stamps and object ids are fixed, so DVC sees no change on a rerun.
    assert (tmp_path / "a" / "model.keras").read_bytes() == (tmp_path / "b" / "model.keras").read_bytes()
    loaded, saved = keras_lstm.load(tmp_path / "a", expect=config)
    assert saved == config
    seqs = random_seqs(30, 1, 30, seed=4)
    np.testing.assert_array_equal(
        keras_lstm.predict_logits(model, seqs), keras_lstm.predict_logits(loaded, seqs)
    )
    with pytest.raises(ModelError, match="hidden_size: saved 5, expected 8"):
        keras_lstm.load(tmp_path / "a", expect={**config, "hidden_size": 8})


def test_learns_short_parity():
    lines: list[str] = []
    result = keras_train(fresh(hidden=8), replace(CFG, max_steps=600, eval_every=25, patience=2),
                              DATA, 0, progress=lines.append)
    assert result.val_accuracy == 1.0 and result.stopped == "early_stop"
    assert result.steps_to_val_100 is not None and result.seqs_to_val_100 == 32 * result.steps_to_val_100
    assert lines[0].startswith("step 25/600  loss ") and " probe " in lines[0]
    assert set(result.history[0]) == {"step", "sequences", "train_loss", "val_loss", "val_accuracy",
                                      "probe_accuracy"}


def test_same_seed_gives_bit_identical_weights():
    a, b = fresh(), fresh()
    logged: list[tuple[dict, int]] = []
    ra = run(a, log=lambda m, s: logged.append((m, s)))
    rb = run(b)
    assert_same_weights(a, b)
    assert ra.metrics() == rb.metrics() and ra.history == rb.history
    assert [s for _, s in logged] == [10, 20, 30, 40]
    assert set(logged[0][0]) == {"train/loss", "val/loss", "val/accuracy", "probe/accuracy"}


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


def test_input_noise_never_touches_the_padding():
    from models.keras_lstm.train import Sampler

    clean, _ = Sampler(DATA["train"], seed=3).sample(64, None)
    noisy, _ = Sampler(DATA["train"], seed=3).sample(64, None, noise=0.1)
    clean, noisy = clean.numpy(), noisy.numpy()
    pad = clean == keras_lstm.PAD
    assert pad.any() and np.array_equal(noisy[pad], clean[pad])  # the mask still finds the end
    assert 0.05 < float(np.abs(noisy[~pad] - clean[~pad]).mean()) < 0.12


def test_tensorflow_start_up_lines_are_held_back_and_nothing_else(capfd) -> None:
    """TensorFlow's native start-up lines (before TF_CPP_MIN_LOG_LEVEL applies) are dropped;
    other lines on file descriptor 2 still come out, in order."""
    from stages.core.device import TF_CHATTER, _held_back

    capfd.readouterr()
    with _held_back(TF_CHATTER):
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
        os.write(2, b"I0000 00:00:1795999113.324972   19470 port.cc:153] oneDNN custom operations are on.\n")
        os.write(2, b"E0000 00:00:1795998620.495211   17966 util.cc:131] a real native error\n")
        os.write(2, b"W0000 00:00:1795998620.495211   17966 other.cc:1] and a warning\n")
    assert capfd.readouterr().err == ("E0000 00:00:1795998620.495211   17966 util.cc:131] a real native error\n"
                                      "W0000 00:00:1795998620.495211   17966 other.cc:1] and a warning\n")


def test_a_stage_importing_tensorflow_prints_no_start_up_lines() -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "from stages.core.device import configure_tensorflow_device as c; "
                           "print(c('auto'))"], capture_output=True, text=True, cwd=Path(__file__).parents[1],
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 0 and proc.stdout in ("cpu\n", "gpu\n"), proc.stderr
    noise = ("absl::InitializeLog", "oneDNN custom operations", "cudart_stub", "failed call to cuInit")
    assert not [line for line in proc.stderr.splitlines() if any(n in line for n in noise)], proc.stderr
    if proc.stdout == "cpu\n":  # a GPU machine may say more (devices found, and so on)
        assert proc.stderr == ""
