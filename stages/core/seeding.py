"""The one seeding helper: Python, NumPy, torch and TensorFlow, with determinism switches."""

from __future__ import annotations

import os
import random
import sys

import numpy as np


def seed_everything(seed: int, threads: int = 1) -> None:
    """Seed every RNG in use and make the frameworks deterministic on CPU.

    torch and TensorFlow are configured only if the calling stage already imported
    them, so a torch stage never pays for importing TensorFlow and vice versa.
    """
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    if "torch" in sys.modules:
        import torch

        torch.manual_seed(seed)
        if torch.cuda.is_available():
            # Only GPU kernels need the switch (CPU ops here are deterministic), and
            # it costs 1.5 s of start-up: it imports torch's compiler stack.
            torch.use_deterministic_algorithms(True, warn_only=True)
        torch.set_num_threads(threads)
    if "tensorflow" in sys.modules or "keras" in sys.modules:
        import keras
        import tensorflow as tf

        keras.utils.set_random_seed(seed)
        tf.config.experimental.enable_op_determinism()
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # already initialised in this process; keep its setting
            pass
