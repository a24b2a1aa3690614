"""The torch parity models against PyTorch's own layers, value for value (micrograd-style).

Each hand-written piece (RNN cell, LSTM cell, BCE) is run beside the library
version with the same weights copied across; logits and gradients must agree.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from helpers import random_seqs
from models.common import ModelError
from models.torch_rnn import cells as manual
from models.torch_rnn import layers as torch_rnn
from models.torch_rnn import zoo as torch_zoo
from models.torch_rnn.cells import ManualLSTM, ManualRNN, stable_bce
from models.torch_rnn.layers import PackedRecurrent

pytestmark = pytest.mark.usefixtures("one_thread")

H = 5  # an odd hidden size catches gate-slicing mistakes that 8 could hide



def batch(n: int = 13, lo: int = 1, hi: int = 30, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> x (n, T) float bits zero-padded, lengths (n,), parity targets (n,) float."""
    seqs = random_seqs(n, lo, hi, seed)
    bits, lengths = seqs.padded(np.arange(n))
    return torch.tensor(bits, dtype=torch.float32), torch.tensor(lengths), torch.tensor(seqs.labels).float()


def outputs_and_grads(model: nn.Module, x, lengths, y) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    logits = model(x, lengths)
    nn.functional.binary_cross_entropy_with_logits(logits, y).backward()
    return logits.detach(), {k: p.grad.clone() for k, p in model.named_parameters()}


def rnn_to_manual(ref: PackedRecurrent) -> ManualRNN:
    """A hand-written RNN holding the same weights as a one-layer nn.RNN model."""
    rnn, out = ref.rnn, ManualRNN(ref.rnn.hidden_size)
    out.load_state_dict({
        "input.weight": rnn.weight_ih_l0, "input.bias": rnn.bias_ih_l0,
        "hidden.weight": rnn.weight_hh_l0, "hidden.bias": rnn.bias_hh_l0,
        "readout.weight": ref.readout.weight, "readout.bias": ref.readout.bias,
    })
    return out


def lstm_to_manual(ref: PackedRecurrent) -> ManualLSTM:
    """A hand-written LSTM with nn.LSTM's weights: [W_ih | W_hh] as one matrix, one bias."""
    lstm, out = ref.rnn, ManualLSTM(ref.rnn.hidden_size)
    out.load_state_dict({
        "gates.weight": torch.cat([lstm.weight_ih_l0, lstm.weight_hh_l0], dim=1),
        "gates.bias": lstm.bias_ih_l0 + lstm.bias_hh_l0,
        "readout.weight": ref.readout.weight, "readout.bias": ref.readout.bias,
    })
    return out


@pytest.mark.parametrize("cell, to_manual", [("rnn", rnn_to_manual), ("lstm", lstm_to_manual)])
def test_hand_written_cell_matches_torch(cell, to_manual):
    torch.manual_seed(1)
    ref = PackedRecurrent(cell, H)
    ours = to_manual(ref)
    x, lengths, y = batch()
    ref_logits, ref_grads = outputs_and_grads(ref, x, lengths, y)
    our_logits, our_grads = outputs_and_grads(ours, x, lengths, y)
    torch.testing.assert_close(our_logits, ref_logits, atol=1e-5, rtol=0)
    # Gradients too: the readout's directly, the cell's summed the way the weights were merged.
    torch.testing.assert_close(our_grads["readout.weight"], ref_grads["readout.weight"], atol=1e-5, rtol=0)
    if cell == "rnn":
        torch.testing.assert_close(our_grads["hidden.weight"], ref_grads["rnn.weight_hh_l0"], atol=1e-5, rtol=0)
        torch.testing.assert_close(our_grads["input.bias"], ref_grads["rnn.bias_ih_l0"], atol=1e-5, rtol=0)
    else:
        ref_w = torch.cat([ref_grads["rnn.weight_ih_l0"], ref_grads["rnn.weight_hh_l0"]], dim=1)
        torch.testing.assert_close(our_grads["gates.weight"], ref_w, atol=1e-5, rtol=0)
        torch.testing.assert_close(our_grads["gates.bias"], ref_grads["rnn.bias_hh_l0"], atol=1e-5, rtol=0)


def test_packed_and_per_sequence_rnn_agree():
    torch.manual_seed(2)
    packed = torch_zoo.build("rnn_packed", H, num_layers=2)
    single = torch_zoo.build("rnn_per_sequence", H, num_layers=2)
    single.load_state_dict(packed.state_dict())  # same parameters, same names
    x, lengths, y = batch(seed=3)
    a, grads_a = outputs_and_grads(packed, x, lengths, y)
    b, grads_b = outputs_and_grads(single, x, lengths, y)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    torch.testing.assert_close(grads_a, grads_b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["manual_rnn", "manual_lstm", "lstm", "gru"])
def test_long_sequences_in_chunks_equal_one_pass(family, monkeypatch):
    """Windows of the time axis (memory bound at 1M steps) change nothing."""
    torch.manual_seed(4)
    model = torch_zoo.build(family, H)
    x, lengths, _ = batch(n=6, lo=1, hi=120, seed=5)
    with torch.no_grad():
        whole = model(x, lengths)
        monkeypatch.setattr(manual, "CHUNK_POSITIONS", 7)
        monkeypatch.setattr(torch_rnn, "WINDOW_POSITIONS", 1)  # windows of 16 steps
        pieces = model(x, lengths)
    torch.testing.assert_close(pieces, whole, atol=1e-6, rtol=0)


def test_stable_bce_equals_torch_and_stays_finite():
    torch.manual_seed(5)
    z = torch.randn(1000, dtype=torch.float64) * 20
    y = (torch.rand(1000) > 0.5).double()
    torch.testing.assert_close(stable_bce(z, y), nn.BCEWithLogitsLoss()(z, y), atol=1e-6, rtol=0)
    extreme = torch.tensor([1e4, -1e4, 1e4, -1e4], requires_grad=True)
    targets = torch.tensor([1.0, 0.0, 0.0, 1.0])
    loss = stable_bce(extreme, targets)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(extreme.grad).all()
    torch.testing.assert_close(loss, torch.tensor(5e3))  # two right (0), two wrong by 1e4 each
    torch.testing.assert_close(extreme.grad, torch.tensor([0.0, 0.0, 0.25, -0.25]))


@pytest.mark.parametrize("family", ["rnn_packed", "rnn_per_sequence", "manual_rnn", "manual_rnn_bce",
                                    "manual_lstm", "lstm", "gru"])
@pytest.mark.parametrize("init", ["default", "orthogonal"])
def test_every_family_builds_and_gives_one_logit_per_sequence(family, init):
    torch.manual_seed(6)
    model = torch_zoo.build(family, H, init=init)
    x, lengths, y = batch(n=4)
    logits = model(x, lengths)
    assert logits.shape == (4,)
    torch_zoo.loss_fn(family)(logits, y).backward()
    assert all(p.grad is not None for p in model.parameters())
    if init != "default":
        assert all((p == 0).all() for p in model.parameters() if p.dim() == 1)


def test_bad_model_settings_are_user_errors():
    with pytest.raises(ModelError, match="num_layers=2"):
        torch_zoo.build("manual_lstm", num_layers=2)
    with pytest.raises(ModelError, match="init"):
        torch_zoo.build("lstm", init="zeros")


def test_predict_logits_batches_by_length_and_keeps_order():
    torch.manual_seed(7)
    model = torch_zoo.build("manual_lstm", H)
    seqs = random_seqs(40, 1, 60, seed=8)
    small_batches = torch_zoo.predict_logits(model, seqs, "cpu", max_batch_bits=100)
    one_batch = torch_zoo.predict_logits(model, seqs, "cpu", max_batch_bits=10**9)
    with torch.no_grad():
        first = model(torch.tensor(seqs.bits(0), dtype=torch.float32)[None], torch.tensor([seqs.lengths[0]]))
    assert small_batches.dtype == np.float64 and small_batches.shape == (40,)
    np.testing.assert_allclose(small_batches, one_batch, atol=1e-6)
    np.testing.assert_allclose(small_batches[0], first.item(), atol=1e-6)


def test_save_load_round_trip_and_stale_config(tmp_path):
    torch.manual_seed(9)
    config = {"family": "gru", "hidden_size": H, "num_layers": 2, "init": "default"}
    model = torch_zoo.build(**config)
    path = tmp_path / "model.pt"
    torch_zoo.save(model, config, path)
    loaded, stored = torch_zoo.load(path, expect=config)
    seqs = random_seqs(20, 1, 30)
    assert stored == config and not loaded.training
    np.testing.assert_array_equal(torch_zoo.predict_logits(loaded, seqs, "cpu"),
                                  torch_zoo.predict_logits(model, seqs, "cpu"))
    with pytest.raises(ModelError, match=r"hidden_size.*dvc repro train-gru_big"):
        torch_zoo.load(path, expect={**config, "hidden_size": 16}, name="gru_big")


def test_weights_that_do_not_fit_are_user_errors(tmp_path):
    path = tmp_path / "model.pt"
    torch_zoo.save(torch_zoo.build("lstm", 4), {"family": "lstm", "hidden_size": 4, "num_layers": 1,
                                                 "init": "default"}, path)
    blob = torch.load(path, weights_only=True)
    blob["config"]["hidden_size"] = 8  # a config that lies about the weights
    torch.save(blob, path)
    with pytest.raises(ModelError, match="do not fit"):
        torch_zoo.load(path)
    with pytest.raises(ModelError, match="no trained model"):
        torch_zoo.load(tmp_path / "missing.pt")
    path.write_bytes(path.read_bytes()[:100])  # truncated: one line, not a torch traceback
    with pytest.raises(ModelError, match="unreadable"):
        torch_zoo.load(path)


def test_parity_predictor_reads_minus_one_as_padding():
    torch.manual_seed(10)
    model = torch_zoo.build("lstm", H)
    wrapped = torch_zoo.ParityPredictor(model)
    x = torch.tensor([[1.0, 0.0, 1.0], [1.0, -1.0, -1.0]])
    with torch.no_grad():
        expected = torch.sigmoid(model(x.clamp(min=0), torch.tensor([3, 1])))
        torch.testing.assert_close(wrapped(x), expected)
