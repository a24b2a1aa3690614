"""Train the Keras parity LSTM: seeded mini-batches, periodic evaluation, early stopping,
an optional length curriculum, and checkpoints that resume bit-identically.

The semantics follow models/torch_train.py, so runs of the two frameworks compare directly.
Determinism: mini-batches come from numpy's PCG64 seeded with ``seed``; the caller seeds
Keras (stages.core.seeding.seed_everything, which also turns on TF op determinism) before
building the model. Every training batch is padded to the training set's longest length,
so the compiled train step is traced once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from models.common import (
    Checkpoint,
    Log,
    Progress,
    TrainConfig,
    TrainResult,
    contraction_on,
    evaluation_row,
    record,
    to_result,
)
from models.keras_lstm import contraction
from models.keras_lstm.model import PAD, predict_logits, to_input, weights_digest


class Sampler:
    """The training set as one padded model input, and seeded mini-batches drawn from it."""

    def __init__(self, seqs: Any, seed: int) -> None:
        bits, lengths = seqs.padded(np.arange(len(seqs)))
        self.x = to_input(bits, lengths)  # (n, T, 1) float32, PAD past each end
        self.lengths = np.asarray(lengths)  # (n,)
        self.labels = np.asarray(seqs.labels, dtype=np.float32)  # (n,)
        self.max_len = int(self.lengths.max())
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self._eligible: dict[int, np.ndarray] = {}

    def sample(self, batch_size: int, cap: int | None, noise: float = 0.0) -> tuple[tf.Tensor, tf.Tensor]:
        """-> x (B, T, 1) float32, targets (B,) float32; only sequences no longer than ``cap``.

        noise: std of Gaussian noise added to every bit (never to the padding, which the
        mask must still recognise), drawn from the sampler's own generator.
        """
        cap = self.max_len if cap is None else min(cap, self.max_len)
        if cap not in self._eligible:
            self._eligible[cap] = np.flatnonzero(self.lengths <= cap)
        eligible = self._eligible[cap]
        pick = eligible[self.rng.integers(len(eligible), size=batch_size)]
        x = self.x[pick]
        if noise:
            bits = x != PAD
            x[bits] += noise * self.rng.standard_normal(int(bits.sum()), dtype=np.float32)
        return tf.constant(x), tf.constant(self.labels[pick])


def _optimizer(cfg: TrainConfig) -> keras.optimizers.Optimizer:
    """Adam or SGD; clip_grad_norm clips the global norm of all gradients (as torch's clip_grad_norm_)."""
    cls = keras.optimizers.Adam if cfg.optimizer == "adam" else keras.optimizers.SGD
    return cls(learning_rate=cfg.lr, global_clipnorm=cfg.clip_grad_norm)


def _train_step(model: keras.Model, optimizer: keras.optimizers.Optimizer, weight: float = 0.0,
                rho: float = 0.5) -> Callable:
    """A compiled step: x (B, T, 1), y (B,) -> mean binary cross-entropy before the update.

    With ``weight`` > 0 the loss adds the contraction penalty (models/keras_lstm/contraction.py).
    On CPU, XLA fuses the LSTM's per-step ops: ~3x faster than the plain graph and as
    deterministic. On a GPU the plain graph is kept, as Keras then runs cuDNN's LSTM
    kernel, which XLA cannot compile.
    """
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    cell = contraction.last_cell(model)

    @tf.function(jit_compile=not tf.config.list_logical_devices("GPU"))
    def step(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            logits = model(x, training=True)[:, 0]
            loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=logits))
            total = loss
            if weight:
                total += weight * contraction.jacobian_penalty(cell, *contraction.final_states(model, x), rho)
        grads = tape.gradient(total, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    return step


def train(
    model: keras.Model,
    cfg: TrainConfig,
    data: dict[str, Any],
    seed: int,
    *,
    log: Log | None = None,
    checkpoint: Checkpoint | None = None,
    progress: Callable[[str], None] | None = print,
) -> TrainResult:
    """Train ``model`` in place on data["train"]; judge on data["val"] (and data["probe"]).

    checkpoint: where to keep resumable state every ``cfg.checkpoint_every`` steps (None: nowhere).
    data: SeqSets "train", "val" and optionally "probe" (None = no probe).
    """
    sampler = Sampler(data["train"], seed)
    optimizer = _optimizer(cfg)
    plain = _train_step(model, optimizer)
    penalised = _train_step(model, optimizer, cfg.contraction_weight, cfg.contraction_rho) if cfg.contraction_weight else None
    state = Progress(cap=cfg.curriculum_start)
    fingerprint = {"cfg": asdict(cfg), "seed": seed, "weights": weights_digest(model)}
    if checkpoint is not None and checkpoint.path.exists():
        state = _resume(checkpoint, fingerprint, model, optimizer, sampler, state, progress)
    started = time.perf_counter()
    stopped = "max_steps"
    while state.step < cfg.max_steps:
        x, y = sampler.sample(cfg.batch_size, state.cap, cfg.input_noise)
        state.loss_sum += float((penalised if contraction_on(state, cfg) else plain)(x, y))
        state.loss_count += 1
        state.step += 1
        if state.step % cfg.eval_every == 0 or state.step == cfg.max_steps:
            row = _evaluate(model, data, cfg, state, sampler.max_len)
            record(row, state, cfg, log, progress)
            if cfg.patience and state.streak >= cfg.patience:
                stopped = "early_stop"
                break
        if checkpoint is not None and state.step % cfg.checkpoint_every == 0:
            state.seconds += time.perf_counter() - started
            started = time.perf_counter()
            _save_checkpoint(checkpoint, fingerprint, model, optimizer, sampler, state)
    state.seconds += time.perf_counter() - started
    if checkpoint is not None:
        checkpoint.path.unlink(missing_ok=True)  # finished: nothing to resume
    return to_result(state, cfg, stopped)


def scores(model: keras.Model, seqs: Any) -> tuple[float, float, np.ndarray]:
    """-> (accuracy, mean binary cross-entropy, per-sequence correctness (n,) bool)."""
    z = predict_logits(model, seqs)
    y = np.asarray(seqs.labels, dtype=np.float64)
    loss = float(np.mean(np.logaddexp(0.0, z) - z * y))  # BCE with logits, stable for large |z|
    correct = (z > 0) == (y > 0.5)
    return float(correct.mean()), loss, correct


def _evaluate(model, data, cfg, state: Progress, max_len: int) -> dict[str, Any]:
    """Validation and probe scores at the current step, as one history row."""
    val_acc, val_loss, correct = scores(model, data["val"])
    probe_acc = scores(model, data["probe"])[0] if data.get("probe") is not None else None
    return evaluation_row(state, cfg, (val_acc, val_loss, correct), probe_acc, data["val"].lengths, max_len)


def _save_checkpoint(checkpoint: Checkpoint, fingerprint, model, optimizer, sampler: Sampler, state: Progress) -> None:
    """Weights, optimizer slots, the batch RNG and the progress, in one .npz (no pickle)."""
    meta = {"fingerprint": fingerprint, "progress": asdict(state), "rng": sampler.rng.bit_generator.state}
    arrays = {f"w{i}": w for i, w in enumerate(model.get_weights())}
    arrays.update({f"o{i}": np.asarray(v) for i, v in enumerate(optimizer.variables)})
    arrays["meta"] = np.array(json.dumps(meta, default=int))
    def fill(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    checkpoint.write(fill)


def _resume(
    checkpoint: Checkpoint, fingerprint, model, optimizer, sampler: Sampler, fresh: Progress, progress
) -> Progress:
    """Restore a matching checkpoint; ignore (and later overwrite) one from another run.

    One that cannot be read (truncated by a crash, edited) is set aside and training starts fresh.
    """
    path = checkpoint.path
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(z["meta"].item())
            if meta["fingerprint"] != json.loads(json.dumps(fingerprint)):
                if progress is not None:
                    progress(f"{path}: checkpoint is from another config or seed; starting afresh")
                return fresh
            weights = [z[f"w{i}"] for i in range(len(model.get_weights()))]
            slots = [z[f"o{i}"] for i in range(len(optimizer.variables))]
    except Exception as e:  # noqa: BLE001  (a damaged zip raises many kinds)
        checkpoint.set_aside(f"{type(e).__name__}: {e}")
        return fresh
    model.set_weights(weights)
    for v, value in zip(optimizer.variables, slots, strict=True):
        v.assign(value)
    sampler.rng.bit_generator.state = meta["rng"]
    state = Progress(**meta["progress"])
    if progress is not None:
        progress(f"resuming from {path} at step {state.step}")
    return state
