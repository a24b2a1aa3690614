"""The Keras parity model: ``keras.layers.LSTM`` reading the bits one at a time.

Input (B, T, 1) float32: the bits as 0.0/1.0, then the padding value -1.0 up to T.
``Masking(-1)`` makes the LSTM skip padded steps (it carries its state through them),
so a sequence's logit does not depend on how much padding its batch needed. The final
state goes through ``Dense(1)``: one logit per sequence, positive = odd parity.

Training lives in ``models/keras_lstm/train.py``; this file builds, runs, saves and loads.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import weakref
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from models.common import ModelError, length_batches
from models.prefix_tree import Stepper

PAD = -1.0  # padding value; bits are 0/1 so it can never be a real input
MODEL_FILE = "model.keras"
CONFIG_FILE = "config.json"
_FIXED_DATE = (1980, 1, 1, 0, 0, 0)  # zip timestamp of saved entries (stable file hashes)


def build(cfg: Any) -> keras.Model:
    """A freshly initialised model (uses Keras' global seed: call seed_everything first).

    cfg: anything with hidden_size, num_layers and init (models.torch_rnn.zoo.RNNConfig).
    """
    init = _initializers(cfg.init)
    layers: list[Any] = [keras.Input(shape=(None, 1), name="bits"), keras.layers.Masking(PAD, name="mask")]
    for i in range(cfg.num_layers):
        last = i == cfg.num_layers - 1
        layers.append(keras.layers.LSTM(cfg.hidden_size, return_sequences=not last, name=f"lstm_{i}", **init))
    dense_init = {k: v for k, v in init.items() if k == "kernel_initializer"}
    layers.append(keras.layers.Dense(1, name="logit", **dense_init))
    # Sequential, not functional: every name in the saved config is fixed (the functional
    # graph also records the mask's ops under auto-numbered names, which changes file bytes).
    return keras.Sequential(layers, name="keras_lstm")


def _initializers(init: str) -> dict[str, str]:
    """Keras' defaults (glorot kernel, orthogonal recurrent, unit forget bias), or one for every matrix."""
    if init == "default":
        return {}
    name = {"xavier_uniform": "glorot_uniform", "orthogonal": "orthogonal"}[init]
    return {"kernel_initializer": name, "recurrent_initializer": name}


def to_input(bits: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """bits (k, T) 0/1 zero padded, lengths (k,) -> model input (k, T, 1) float32, PAD past each end."""
    x = bits.astype(np.float32)
    x[np.arange(x.shape[1]) >= np.asarray(lengths)[:, None]] = PAD
    return x[..., None]


_INFER: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _infer_fn(model: keras.Model):
    """One traced inference graph per model, for any batch size and length (no retracing)."""
    if model not in _INFER:
        spec = tf.TensorSpec((None, None, 1), tf.float32)
        _INFER[model] = tf.function(lambda x: model(x, training=False)[:, 0], input_signature=[spec])
    return _INFER[model]


def predict_logits(model: keras.Model, seqs: Any, max_batch_bits: int = 2_000_000) -> np.ndarray:
    """Logits (n,) float64 for every sequence of ``seqs`` (a SeqSet), in its own order."""
    lengths = np.asarray(seqs.lengths)
    out = np.empty(len(lengths), dtype=np.float64)
    infer = _infer_fn(model)
    for idx in _chunked(length_batches(lengths, max_batch_bits)):
        bits, lens = seqs.padded(idx)
        out[idx] = infer(tf.constant(to_input(bits, lens))).numpy()
    return out


def _chunked(batches: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """Split the growth loop's output so a batch never exceeds 65,536 sequences (memory of states)."""
    for idx in batches:
        for i in range(0, len(idx), 65_536):
            yield idx[i : i + 65_536]


def save(model: keras.Model, config: dict[str, Any], path: str | Path) -> None:
    """Write ``path/model.keras`` and ``path/config.json`` with stable bytes.

    ``path`` is a fresh folder the caller renames into place (that makes the pair atomic).

    Keras stamps the save time into the archive (zip entry dates, metadata.json's
    ``date_saved``) and object addresses into config.json (``shared_object_id``); all are
    made fixed here, so the same weights give the same file hash in any process.
    """
    path = Path(path)
    with tempfile.TemporaryDirectory() as scratch:
        raw = Path(scratch) / MODEL_FILE
        model.save(raw)
        _restamp(raw, path / MODEL_FILE)
    (path / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _restamp(src: Path, dst: Path) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == "metadata.json":
                meta = json.loads(data)
                meta["date_saved"] = "1980-01-01@00:00:00"
                data = json.dumps(meta).encode()
            elif info.filename == "config.json":
                data = json.dumps(_renumber_shared(json.loads(data), {})).encode()
            out = zipfile.ZipInfo(info.filename, date_time=_FIXED_DATE)
            out.compress_type = info.compress_type
            out.create_system, out.external_attr = 3, 0o644 << 16  # as stages.core.data.write_npz
            zout.writestr(out, data)


def _renumber_shared(node: Any, ids: dict[int, int]) -> Any:
    """Replace Keras' ``shared_object_id`` values (Python ``id()``s, new every process) by 1, 2, ...

    in order of first appearance; equal ids stay equal, so shared objects stay shared on load.
    """
    if isinstance(node, dict):
        out = {k: _renumber_shared(v, ids) for k, v in node.items()}
        if isinstance(node.get("shared_object_id"), int):
            out["shared_object_id"] = ids.setdefault(node["shared_object_id"], len(ids) + 1)
        return out
    if isinstance(node, list):
        return [_renumber_shared(v, ids) for v in node]
    return node


def load(path: str | Path, expect: dict[str, Any] | None = None) -> tuple[keras.Model, dict[str, Any]]:
    """Read a model directory written by ``save``; with ``expect``, refuse a config that differs.

    Raises ModelError naming the differing keys (e.g. params changed since training).
    """
    path = Path(path)
    if not (path / MODEL_FILE).exists() or not (path / CONFIG_FILE).exists():
        raise ModelError(f"{path}: no {MODEL_FILE} and {CONFIG_FILE} here (run `dvc repro` to train)")
    config = json.loads((path / CONFIG_FILE).read_text())
    if expect is not None:
        diff = [k for k in sorted(set(expect) | set(config)) if expect.get(k) != config.get(k)]
        if diff:
            detail = ", ".join(f"{k}: saved {config.get(k)!r}, expected {expect.get(k)!r}" for k in diff)
            raise ModelError(f"{path}: model config differs from params ({detail}); retrain it")
    model = keras.models.load_model(path / MODEL_FILE, compile=False)
    return model, config


def weights_digest(model: keras.Model) -> str:
    """sha256 of all weights (a checkpoint resumes only the run it was cut from)."""
    h = hashlib.sha256()
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()


def stepper(model: keras.Model) -> Stepper:
    """The model as start/step/readout for models/prefix_tree.py: each LSTM layer's own cell, one
    bit at a time, then the Dense readout. State: (h, c) of every layer, each (B, H), batch first."""
    cells = [layer.cell for layer in model.layers if isinstance(layer, keras.layers.LSTM)]
    dense = model.get_layer("logit")

    def step(state: tuple[np.ndarray, ...], bit: float) -> tuple[np.ndarray, ...]:
        x, new = tf.fill((state[0].shape[0], 1), bit), []
        for i, cell in enumerate(cells):
            x, (h, c) = cell(x, [tf.constant(state[2 * i]), tf.constant(state[2 * i + 1])], training=False)
            new += [h.numpy(), c.numpy()]
        return tuple(new)

    def start() -> tuple[np.ndarray, ...]:
        return tuple(np.zeros((1, cell.units), np.float32) for cell in cells for _ in "hc")

    return Stepper(start, step, lambda state: dense(tf.constant(state[-2])).numpy()[:, 0])
