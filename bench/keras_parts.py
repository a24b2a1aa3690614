"""The benchmark's TensorFlow parts: the Keras parity LSTM's training step and the XOR study.

Kept apart so TensorFlow is imported only when these run (it costs seconds and ~0.5 GB),
and imported before stages.core.seeding.seed_everything, which configures only the frameworks
already loaded; the pipeline's stages do the same.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def keras_step(seqs: Any, cfg: dict[str, Any], threads: int, hidden_size: int) -> Callable[[], None]:
    """A fresh Keras LSTM and the pipeline's compiled step (models/keras_train.py) on ``seqs``.

    cfg: training settings (batch_size, optimizer, lr, clip_grad_norm) as params.yaml's.
    """
    _import_tensorflow()
    from models.keras_lstm import model as keras_lstm
    from models.keras_lstm.train import Sampler, _optimizer, _train_step
    from stages.core.params import ParityVariant
    from stages.core.seeding import seed_everything

    seed_everything(0, threads)
    model = keras_lstm.build(ParityVariant(family="keras_lstm", hidden_size=hidden_size))
    sampler, step = Sampler(seqs, 0), _train_step(model, _optimizer(cfg))

    def run() -> None:
        x, y = sampler.sample(cfg["batch_size"], None)
        float(step(x, y))  # the trainer reads each loss back, so the timing does too

    return run


def xor_study_seconds(variants: list[Any], threads: int, progress: Callable[[str], Any]) -> float:
    """Seconds for models.xor_mlp.run_study of every variant (XorVariant) in turn, seeds from 0."""
    _import_tensorflow()
    from models.xor_mlp import study as xor_mlp
    from stages.core.seeding import seed_everything

    seed_everything(0, threads)
    start = time.perf_counter()
    for cfg in variants:
        xor_mlp.run_study(cfg, xor_mlp.XOR_X, xor_mlp.XOR_Y, seed0=0, progress=progress)
    return time.perf_counter() - start


def _import_tensorflow() -> None:
    """As the stages import it: on the configured device, its start-up lines held back."""
    from stages.core.device import configure_tensorflow_device

    configure_tensorflow_device("auto")
