"""Resolve ``device: auto | cpu | cuda | mps`` to what is actually there."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator

from stages.core.errors import UserError

# TensorFlow's native start-up lines (TF 2.21 prints each twice): they come before its logging
# is set up, so TF_CPP_MIN_LOG_LEVEL cannot stop them. Held back; every other line passes.
TF_CHATTER = re.compile(
    rb"WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|I0000 \S+ +\d+ (port|cudart_stub)\.cc:"  # "oneDNN custom operations are on", "no CUDA drivers"
    rb"|E0000 \S+ +\d+ cuda_platform\.cc:\d+\] failed call to cuInit"  # no GPU: `device: cuda` says so itself
)


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
    """Import TensorFlow (call this first). Returns 'cpu' or 'gpu' (the device TF will use)."""
    if requested == "mps":
        raise DeviceError("device: 'mps' is not supported by TensorFlow variants (allowed: auto, cpu, cuda)")
    if requested == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = "-1"  # TF sees no GPU at all
    with _held_back(TF_CHATTER):
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
    if requested == "cpu":
        return "cpu"
    if requested == "cuda" and not gpus:
        raise DeviceError("device: 'cuda' was asked for but TensorFlow sees no GPU (allowed here: auto, cpu)")
    return "gpu" if gpus else "cpu"


@contextlib.contextmanager
def _held_back(pattern: re.Pattern[bytes]) -> Iterator[None]:
    """Hold what is written to file descriptor 2 (native code included) while inside; then
    write it out, less the lines that match ``pattern``."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            for line in held:
                if not pattern.match(line):
                    os.write(2, line)
