"""CPU against CUDA for the torch parity families: training and long-sequence evaluation.

Run on a machine with a GPU: `python bench/gpu.py` (writes bench/gpu_results.json). Each
figure is the median of three measurements, taken with bench/run.py's own helpers: the
pipeline's training step at the default settings of params.yaml's schema, and predict_logits
on 100 sequences of length 100,000 in one batch.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.run import random_seqs, throughput, torch_step  # noqa: E402
from models.torch_rnn import zoo as torch_zoo  # noqa: E402
from stages.core.params import Training  # noqa: E402

FAMILIES = ("rnn_packed", "manual_rnn", "manual_lstm", "lstm", "gru")


def eval_seconds(family: str, device: str, seqs) -> float:
    torch.manual_seed(0)
    model = torch_zoo.build(family, hidden_size=8).to(device)
    start = time.perf_counter()
    torch_zoo.predict_logits(model, seqs, device, max_batch_bits=int(seqs.lengths.sum()))  # .cpu(): synced
    return time.perf_counter() - start


def main() -> None:
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    torch.set_num_threads(1)
    cfg = Training().model_dump()
    train_seqs, long_seqs = random_seqs(10_000, 1, 20), random_seqs(100, 100_000, 100_000)
    out: dict[str, dict] = {"train_seqs_per_s": {}, "eval_100x100k_s": {}}
    for family in FAMILIES:
        for device in devices:
            step = partial(torch_step, family, train_seqs, cfg, device)
            out["train_seqs_per_s"].setdefault(family, {})[device] = statistics.median(
                throughput(step, cfg["batch_size"], 100) for _ in range(3))
            out["eval_100x100k_s"].setdefault(family, {})[device] = statistics.median(
                eval_seconds(family, device, long_seqs) for _ in range(3))
        row = "  ".join(f"{k} {d}: {v:,.1f}" for k in out for d, v in out[k][family].items())
        print(f"gpu bench: {family:<12} {row}", flush=True)
    out["device"] = {"torch": torch.__version__,
                     "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    (ROOT / "bench" / "gpu_results.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
