"""The evaluate stage's pure parts: the metrics of one bucket and the bit cap on a bucket."""

from __future__ import annotations

import numpy as np

from helpers import random_seqs
from stages.pipeline.evaluate import bucket_metrics, first_bits


def test_first_bits_keeps_the_first_sequences_that_fit_and_at_least_one() -> None:
    seqs = random_seqs(100, 10, 10, seed=0)
    assert first_bits(seqs, None) is seqs
    assert len(first_bits(seqs, 55)) == 5 and len(first_bits(seqs, 60)) == 6
    assert len(first_bits(seqs, 3)) == 1  # a bucket is never judged on nothing
    assert len(first_bits(seqs, 10**6)) == 100
    kept = first_bits(seqs, 55)
    assert np.array_equal(kept.labels, seqs.labels[:5]) and np.array_equal(kept.lengths, seqs.lengths[:5])


def test_bucket_metrics_counts_and_interval() -> None:
    seqs = random_seqs(200, 1, 30, seed=1)
    right = np.where(seqs.labels == 1, 5.0, -5.0)
    m = bucket_metrics(right, seqs)
    assert m["accuracy"] == 1.0 and m["n"] == 200 and m["ci95_high"] == 1.0
    assert 0.97 < m["ci95_low"] < 0.985  # a perfect 200 rules out error rates above ~1.9%
    wrong = bucket_metrics(-right, seqs)
    assert wrong["accuracy"] == 0.0 and wrong["confusion"]["tp"] == wrong["confusion"]["tn"] == 0
    assert wrong["confusion"]["fp"] + wrong["confusion"]["fn"] == 200
