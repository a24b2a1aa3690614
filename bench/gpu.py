"""CPU against CUDA for the torch parity families: training and long-sequence evaluation.

Run on a machine with a GPU: `python bench/gpu.py` (writes bench/gpu_results.json). Each
figure is the median of three measurements; training uses the pipeline's own step
(models/torch_train.py) with the default settings of params.yaml's schema.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.run import random_seqs  # noqa: E402
from models import torch_zoo  # noqa: E402
from models.results import Progress  # noqa: E402
from models.torch_train import Sampler, _optimizer, _step  # noqa: E402
from stages.schema import Training  # noqa: E402

FAMILIES = ("rnn_packed", "manual_rnn", "manual_lstm", "lstm", "gru")


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def train_seqs_per_s(family: str, device: str, steps: int = 100) -> float:
    cfg = Training().model_dump()
    torch.manual_seed(0)
    model = torch_zoo.build(family, hidden_size=8).to(device).train()
    sampler = Sampler(random_seqs(10_000, 1, 20), device, 0)
    optimizer, state = _optimizer(model, cfg), Progress()
    criterion = torch_zoo.loss_fn(family)
    for _ in range(10):
        _step(model, criterion, optimizer, sampler, cfg, state)
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        _step(model, criterion, optimizer, sampler, cfg, state)
    sync(device)
    return steps * cfg["batch_size"] / (time.perf_counter() - start)


def eval_seconds(family: str, device: str, count: int = 100, length: int = 100_000) -> float:
    torch.manual_seed(0)
    model = torch_zoo.build(family, hidden_size=8).to(device)
    seqs = random_seqs(count, length, length)
    start = time.perf_counter()
    torch_zoo.predict_logits(model, seqs, device, max_batch_bits=count * length)
    sync(device)
    return time.perf_counter() - start


def main() -> None:
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    torch.set_num_threads(1)
    out: dict[str, dict[str, dict[str, float]]] = {"train_seqs_per_s": {}, "eval_100x100k_s": {}}
    for family in FAMILIES:
        for key, measure in (("train_seqs_per_s", train_seqs_per_s), ("eval_100x100k_s", eval_seconds)):
            out[key].setdefault(family, {})
            for device in devices:
                out[key][family][device] = statistics.median(measure(family, device) for _ in range(3))
        row = "  ".join(f"{k} {d}: {v:,.1f}" for k in out for d, v in out[k][family].items())
        print(f"gpu bench: {family:<12} {row}", flush=True)
    out["device"] = {"torch": torch.__version__,
                     "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    (ROOT / "bench" / "gpu_results.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
