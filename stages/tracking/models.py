"""Log trained models to the active MLflow run as MLflow Models (loadable with mlflow.pyfunc).

torch and TensorFlow are imported only by the function that needs them. Requirements
are given explicitly: MLflow's own inference imports the model and scans packages,
which costs seconds per model.
"""

from __future__ import annotations

import logging
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from stages.tracking.provenance import repo_root
from stages.tracking.store import retry


def _pins(*names: str) -> list[str]:
    """``name==version`` of installed packages, without local labels (``2.13.0+cpu`` -> ``2.13.0``)."""
    return [f"{n}=={metadata.version(n).split('+')[0]}" for n in names]


def _signature(x: np.ndarray, y: np.ndarray, in_shape: tuple[int, ...]) -> Any:
    """Tensor signature: inputs of ``in_shape`` (-1 = free) with x's dtype, outputs like y
    with a free batch dimension. Parity: x (batch, time) float32 bits, -1 padded -> y (batch,)."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(x.dtype, in_shape)]),
        outputs=Schema([TensorSpec(y.dtype, (-1, *y.shape[1:]))]),
    )


def _own_code(obj: object) -> list[str] | None:
    """The repository package defining ``obj``'s class (e.g. ``models/``), so the logged
    model loads without this checkout; None for classes defined elsewhere."""
    top = type(obj).__module__.split(".")[0]
    paths = getattr(sys.modules.get(top), "__path__", None)
    if not paths:
        return None
    pkg = Path(list(paths)[0]).resolve()
    workspaces = (Path.cwd().resolve(), repo_root().resolve())  # cwd: a DVC experiment's copy
    return [str(pkg)] if pkg.parent in workspaces and top != "stages" else None


def log_torch_model(module: Any, input_example: np.ndarray, *, name: str = "model",
                    variable_length: bool = True) -> str:
    """Log a torch module as an MLflow PyTorch model (pickled); return its model URI.

    input_example: (batch, time) float32 with -1 padding; the module maps it to
    (batch,) probabilities. The signature leaves batch and time free when
    ``variable_length``. A module on a GPU is logged as a CPU copy. Its class must be
    importable when loading: a class from this repository's ``models/`` package is
    logged with that package's code.
    """
    import copy

    import mlflow.pytorch
    import torch

    # MLflow warns about pickle on every call; the choice is deliberate (see below).
    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
    x = np.asarray(input_example, dtype=np.float32)
    cpu = module if all(p.device.type == "cpu" for p in module.parameters()) else copy.deepcopy(module).cpu()
    was_training = cpu.training
    cpu.eval()  # logged in eval mode: that is how it predicts
    try:
        with torch.no_grad():
            y = cpu(torch.from_numpy(x)).numpy()
        in_shape = (-1, -1, *x.shape[2:]) if variable_length else (-1, *x.shape[1:])
        info = retry(
            mlflow.pytorch.log_model, cpu, name=name, signature=_signature(x, y, in_shape),
            input_example=x, pip_requirements=_pins("torch", "numpy", "mlflow"), code_paths=_own_code(cpu),
            # MLflow 3 defaults to torch.export ("pt2"), which traces forward() for the example's
            # shapes: a loop over time steps would be fixed to the example's length.
            serialization_format="pickle",
        )
    finally:
        cpu.train(was_training)
    return info.model_uri


def log_keras_model(model: Any, input_example: np.ndarray, *, name: str = "model") -> str:
    """Log a Keras 3 model with MLflow's TensorFlow flavour (saved as ``.keras``); return its URI.

    The signature's input shape is the model's own (None -> free), so a recurrent model
    built on ``Input((None, 1))`` accepts any length: (batch, time, 1) -> (batch, 1).
    """
    import keras
    import mlflow.tensorflow

    # MLflow checks the input example with model.predict: no progress bar in the stage's log.
    keras.utils.disable_interactive_logging()
    x = np.asarray(input_example, dtype=np.float32)
    y = np.asarray(model(x, training=False))
    in_shape = tuple(-1 if d is None else int(d) for d in model.input_shape)
    info = retry(
        mlflow.tensorflow.log_model, model, name=name, signature=_signature(x, y, in_shape),
        input_example=x, pip_requirements=_pins("tensorflow", "keras", "numpy", "mlflow"),
    )
    return info.model_uri
