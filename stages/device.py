"""Resolve ``device: auto | cpu | cuda | mps`` to what is actually there."""

from __future__ import annotations

import os

from stages.errors import UserError


class DeviceError(UserError):
    """The requested device does not exist on this machine."""


def resolve_torch_device(requested: str) -> str:
    """Return the torch device string to use; raise DeviceError for a missing GPU."""
    import torch

    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise DeviceError("device: 'cuda' was asked for but no CUDA GPU is visible (allowed here: auto, cpu)")
    if requested == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError("device: 'mps' was asked for but MPS is not available (allowed here: auto, cpu)")
    return requested


def configure_tensorflow_device(requested: str) -> str:
    """Call before importing TensorFlow. Returns 'cpu' or 'gpu' (the device TF will use)."""
    if requested == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = "-1"  # TF sees no GPU at all
        return "cpu"
    if requested == "mps":
        raise DeviceError("device: 'mps' is not supported by TensorFlow variants (allowed: auto, cpu, cuda)")
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if requested == "cuda" and not gpus:
        raise DeviceError("device: 'cuda' was asked for but TensorFlow sees no GPU (allowed here: auto, cpu)")
    return "gpu" if gpus else "cpu"
