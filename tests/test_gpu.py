"""The torch zoo on a CUDA GPU: `auto` finds it, every family gives the CPU's logits there,
and the trainer runs with its modules and tensors on the GPU. Skipped where no GPU is visible."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import random_seqs
from models.common import TrainConfig
from models.torch_rnn import zoo as torch_zoo
from models.torch_rnn.train import train
from stages.core.device import resolve_torch_device
from stages.core.params import Training

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
FAMILIES = ("rnn_packed", "rnn_per_sequence", "manual_rnn", "manual_rnn_bce", "manual_lstm", "lstm", "gru")


def test_auto_and_cuda_resolve_to_the_gpu() -> None:
    assert resolve_torch_device("auto") == "cuda"
    assert resolve_torch_device("cuda") == "cuda"


@pytest.mark.parametrize("family", FAMILIES)
def test_gpu_logits_equal_cpu_logits(family: str) -> None:
    torch.manual_seed(0)
    model = torch_zoo.build(family, hidden_size=8).eval()
    seqs = random_seqs(64, 1, 300, seed=3)
    cpu = torch_zoo.predict_logits(model, seqs, "cpu")
    gpu = torch_zoo.predict_logits(model.to("cuda"), seqs, "cuda")
    np.testing.assert_allclose(gpu, cpu, atol=1e-4)


def test_training_runs_on_the_gpu() -> None:
    torch.manual_seed(0)
    model = torch_zoo.build("lstm", hidden_size=8)
    data = {"train": random_seqs(2000, 1, 10, 0), "val": random_seqs(300, 1, 10, 1), "probe": None}
    cfg = TrainConfig(**{**Training().model_dump(), "max_steps": 600, "patience": 2})  # defaults: input noise too
    result = train(model, "lstm", cfg, data, "cuda", seed=0, progress=None)
    assert next(model.parameters()).device.type == "cuda"
    assert result.val_accuracy > 0.9, result.history[-1]
