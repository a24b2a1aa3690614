"""Seconds to certify each trained default parity variant and to judge it on every sequence of
length 1-20 (2,097,150 sequences), one CPU thread each (issue 17's cost target: under 10 s).

    .venv/bin/python bench/certify.py        (after `make repro`: reads artifacts/models/)

Prints a table and writes bench/certify.json.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.chdir(ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from stages.certify.nets import weights_from_torch_state_dict  # noqa: E402
from stages.certify.search import certify  # noqa: E402
from stages.core import data, paths  # noqa: E402
from stages.core.params import load_params  # noqa: E402
from stages.pipeline.evaluate import logits_of  # noqa: E402
from stages.pipeline.evaluate_torch import load_predictor  # noqa: E402

TORCH = ("rnn_packed", "manual_rnn", "manual_rnn_bce", "manual_lstm", "lstm", "gru")


def main() -> None:
    torch.set_num_threads(1)
    params = load_params("params.yaml")
    exhaustive = data.load_bucket("exhaustive")
    rows = {}
    for name in TORCH:
        family = params.variants[name].family
        state = torch.load(paths.model_dir(name) / "model.pt", weights_only=True)["state_dict"]
        start = time.perf_counter()
        cert = certify(family, weights_from_torch_state_dict(family, state))
        certify_s = time.perf_counter() - start
        judge = load_predictor(params, name, "cpu")
        start = time.perf_counter()
        logits, _ = logits_of(judge, params.data.buckets["exhaustive"], exhaustive, params.evaluate.max_batch_bits)
        judge_s = time.perf_counter() - start
        start = time.perf_counter()
        one_by_one = judge.predict(exhaustive, params.evaluate.max_batch_bits)
        plain_s = time.perf_counter() - start
        right = float(((logits > 0) == (exhaustive.labels == 1)).mean())
        same = bool(np.array_equal(logits > 0, one_by_one > 0))
        rows[name] = {"certified": bool(cert["certified"]), "certify_s": round(certify_s, 2),
                      "exhaustive_s": round(judge_s, 2), "exhaustive_plain_s": round(plain_s, 2),
                      "exhaustive_accuracy": right, "same_answers": same,
                      "max_logit_diff": float(np.abs(logits - one_by_one).max())}
        print(f"{name:15} certified {str(cert['certified']):5}  certify {certify_s:5.1f} s  "
              f"exhaustive {judge_s:5.1f} s (sequence by sequence {plain_s:5.1f} s, {plain_s / judge_s:4.1f}x)  "
              f"accuracy {right:.6f}  same answers {same}", flush=True)
    (ROOT / "bench" / "certify.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
