"""Judging every sequence of length 1..N through the prefix tree gives the model's own answers.

The tree (models/prefix_tree.py) steps each model through its own modules; here its logits are
compared, sequence by sequence, with the ordinary batched forward pass of the same model.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from helpers import exhaustive_seqs, random_seqs
from models.prefix_tree import all_sequences_logits
from models.torch_rnn import zoo
from stages.pipeline.evaluate import Judge, logits_of, whole_tree

pytestmark = pytest.mark.usefixtures("one_thread")
SEQS = exhaustive_seqs(9)  # 1,022 sequences


@pytest.mark.parametrize(("family", "layers"), [
    ("rnn_packed", 1), ("manual_rnn", 1), ("manual_rnn_bce", 1), ("manual_lstm", 1),
    ("lstm", 1), ("gru", 1), ("lstm", 2), ("gru", 2), ("rnn_packed", 3), ("diag_linear", 1), ("diag_linear_neg", 1),
])
def test_tree_matches_the_forward_pass(family: str, layers: int) -> None:
    torch.manual_seed(3)
    model = zoo.build(family, hidden_size=5, num_layers=layers)
    tree = all_sequences_logits(zoo.stepper(model), 9)
    np.testing.assert_allclose(tree, zoo.predict_logits(model, SEQS, "cpu"), atol=1e-5)
    assert tree.dtype == np.float64 and tree.shape == (len(SEQS),)


def test_per_sequence_rnn_keeps_its_own_path() -> None:
    assert zoo.stepper(zoo.build("rnn_per_sequence")) is None


def test_only_the_whole_exhaustive_bucket_in_its_order_goes_by_tree() -> None:
    bucket = SimpleNamespace(kind="exhaustive", max_len=9)
    assert whole_tree(bucket, SEQS) == 9
    assert whole_tree(bucket, SEQS.subset(np.arange(100))) is None  # cut by eval_max_bits
    assert whole_tree(SimpleNamespace(kind="uniform", max_len=9), SEQS) is None
    shuffled = SEQS.subset(np.random.default_rng(0).permutation(len(SEQS)))
    assert whole_tree(bucket, shuffled) is None


def test_logits_of_uses_the_tree_only_where_it_applies() -> None:
    torch.manual_seed(0)
    model = zoo.build("lstm", hidden_size=4)
    calls = []

    def predict(seqs, cap):
        calls.append(len(seqs))
        return zoo.predict_logits(model, seqs, "cpu", cap)

    judge = Judge(predict, model_file=None, stepper=zoo.stepper(model))
    logits, how = logits_of(judge, SimpleNamespace(kind="exhaustive", max_len=9), SEQS, 10_000)
    assert how == ", by prefix tree" and calls == []
    other = random_seqs(50, 1, 30)
    logits2, how2 = logits_of(judge, SimpleNamespace(kind="uniform"), other, 10_000)
    assert how2 == "" and calls == [50]
    np.testing.assert_allclose(logits, zoo.predict_logits(model, SEQS, "cpu"), atol=1e-5)
