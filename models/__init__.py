"""The model zoo: torch and Keras variants of both experiments.

Submodules are imported on demand (``models.torch_zoo`` imports torch,
``models.keras_lstm`` and ``models.xor_mlp`` import TensorFlow); this package
itself imports neither.
"""

TORCH_FAMILIES = (
    "rnn_packed", "rnn_per_sequence", "manual_rnn", "manual_rnn_bce", "manual_lstm", "lstm", "gru",
)
KERAS_FAMILIES = ("keras_lstm", "xor_mlp")
