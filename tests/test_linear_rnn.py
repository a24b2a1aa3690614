"""The diagonal linear RNN (models/torch_rnn/linear_rnn.py): the batched, masked forward equals
one sequence at a time; a transition in [-1, 1] represents parity with hand-set weights; a
transition in [0, 1] cannot flip a sign; and it goes through zoo and certify like the others."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import random_seqs
from models.torch_rnn import zoo
from models.torch_rnn.linear_rnn import DiagonalLinearRNN
from stages.certify.nets import weights_from_torch_state_dict
from stages.certify.search import certify

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("family", ["diag_linear", "diag_linear_neg"])
def test_batched_forward_equals_one_sequence_at_a_time(family: str) -> None:
    torch.manual_seed(3)
    model = zoo.build(family, hidden_size=5)
    seqs = random_seqs(40, 1, 30, seed=4)
    bits, lengths = seqs.padded()
    batched = model(torch.as_tensor(bits, dtype=torch.float32), torch.as_tensor(lengths))
    alone = [model(torch.as_tensor(bits[i : i + 1, : lengths[i]], dtype=torch.float32),
                   torch.as_tensor(lengths[i : i + 1])) for i in range(len(lengths))]
    assert torch.allclose(batched, torch.cat(alone), atol=1e-6)
    # by hand: h_t = a(x_t) h_{t-1} + b(x_t), for the first sequence
    h = model.start.detach()
    for x in bits[0, : lengths[0]].tolist():
        gate = torch.sigmoid(model.transition.weight[:, 0] * x + model.transition.bias).detach()
        h = (2 * gate - 1 if family == "diag_linear_neg" else gate) * h + (model.input.weight[:, 0] * x
                                                                          + model.input.bias).detach()
    assert torch.allclose(batched[0], model.readout(h).squeeze(-1), atol=1e-6)


def _parity_weights(model: DiagonalLinearRNN) -> None:
    """a(0) = 2 sigmoid(10) - 1 ~ +0.9999, a(1) = 2 sigmoid(-10) - 1 ~ -0.9999, b = 0, h_0 = 1,
    logit = -h: the state's sign is (-1)^parity."""
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.transition.weight.fill_(-20.0)
        model.transition.bias.fill_(10.0)
        model.start.fill_(1.0)
        model.readout.weight.fill_(-1.0)


def test_a_transition_in_minus_one_one_represents_parity_at_every_length_tried() -> None:
    model = DiagonalLinearRNN(hidden_size=1, negative=True)
    _parity_weights(model)
    for seqs in (random_seqs(500, 1, 100, seed=1), random_seqs(20, 2000, 2000, seed=2)):
        logits = zoo.predict_logits(model, seqs, "cpu")
        assert np.array_equal(logits > 0, seqs.labels == 1)


def test_a_transition_in_zero_one_cannot_flip_a_sign() -> None:
    # the same weights in [0, 1]: a(x) >= 0 and b = 0 keep h = h_0 * prod a >= 0 (0 once it
    # underflows), so no answer is ever "odd"
    model = DiagonalLinearRNN(hidden_size=1, negative=False)
    _parity_weights(model)
    seqs = random_seqs(200, 1, 50, seed=5)
    assert (zoo.predict_logits(model, seqs, "cpu") <= 0).all() and (seqs.labels == 1).any()


def test_zoo_saves_and_loads_it_and_certify_says_it_has_no_prover(tmp_path) -> None:
    torch.manual_seed(0)
    model = zoo.build("diag_linear_neg", hidden_size=4)
    config = {"family": "diag_linear_neg", "hidden_size": 4, "num_layers": 1, "init": "default"}
    zoo.save(model, config, tmp_path / "model.pt")
    again, _ = zoo.load(tmp_path / "model.pt", expect=config)
    seqs = random_seqs(20, 1, 20, seed=6)
    assert np.array_equal(zoo.predict_logits(model, seqs, "cpu"), zoo.predict_logits(again, seqs, "cpu"))
    cert = certify("diag_linear_neg", weights_from_torch_state_dict("diag_linear_neg", model.state_dict()))
    assert not cert["certified"] and "no prover for family diag_linear_neg" in cert["reason"]
