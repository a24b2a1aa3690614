"""Build, save, load and run the torch parity models by family name.

Every model maps (x: (B, T) float bits, zero-padded; lengths: (B,) int64 on CPU)
to one logit per sequence, (B,), read after that sequence's own last bit.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from models.common import ModelError, length_batches
from models.prefix_tree import Stepper
from models.torch_rnn.cells import ManualLSTM, ManualRNN, stable_bce
from models.torch_rnn.layers import PackedRecurrent, PerSequenceRNN
from models.torch_rnn.linear_rnn import DiagonalLinearRNN

MODEL_KEYS = ("family", "hidden_size", "num_layers", "init")  # what build() needs


@dataclass(frozen=True)
class RNNConfig:
    """A parity model's shape: what build() needs, and what model.pt stores beside the weights."""

    family: str  # rnn_packed, rnn_per_sequence, manual_rnn, manual_rnn_bce, manual_lstm, lstm, gru,
    # diag_linear, diag_linear_neg
    hidden_size: int = 8  # 8 units are plenty for a 2-state automaton
    num_layers: int = 1  # stacked layers (library layers only; the hand-written cells have one)
    init: str = "default"  # the library's own init, or xavier_uniform / orthogonal for every matrix
SINGLE_LAYER = ("manual_rnn", "manual_rnn_bce", "manual_lstm", "diag_linear", "diag_linear_neg")


class SeqSetLike(Protocol):
    """What the models read of a set of sequences (stages.core.data.SeqSet has it)."""

    lengths: np.ndarray  # (n,) int64
    labels: np.ndarray  # (n,) uint8, the parity of each sequence

    def padded(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...  # (k, T) uint8, (k,) int64

    def __len__(self) -> int: ...


def build(family: str, hidden_size: int = 8, num_layers: int = 1, init: str = "default") -> nn.Module:
    """A freshly initialised parity model of one family (uses the global torch RNG)."""
    if family in SINGLE_LAYER and num_layers != 1:
        raise ModelError(
            f"{family}: num_layers={num_layers} but hand-written cells have one layer "
            "(use lstm, gru or rnn_packed for stacked layers)"
        )
    makers: dict[str, Callable[[], nn.Module]] = {
        "rnn_packed": lambda: PackedRecurrent("rnn", hidden_size, num_layers),
        "rnn_per_sequence": lambda: PerSequenceRNN(hidden_size, num_layers),
        "manual_rnn": lambda: ManualRNN(hidden_size),
        "manual_rnn_bce": lambda: ManualRNN(hidden_size),
        "manual_lstm": lambda: ManualLSTM(hidden_size),
        "lstm": lambda: PackedRecurrent("lstm", hidden_size, num_layers),
        "gru": lambda: PackedRecurrent("gru", hidden_size, num_layers),
        "diag_linear": lambda: DiagonalLinearRNN(hidden_size, negative=False),
        "diag_linear_neg": lambda: DiagonalLinearRNN(hidden_size, negative=True),
    }
    if family not in makers:
        raise ModelError(f"unknown torch family {family!r} (allowed: {', '.join(makers)})")
    model = makers[family]()
    _initialise(model, init)
    return model


def _initialise(model: nn.Module, init: str) -> None:
    """'default' keeps the library's init; otherwise every matrix gets ``init`` and biases 0."""
    if init == "default":
        return
    fill = {"xavier_uniform": nn.init.xavier_uniform_, "orthogonal": nn.init.orthogonal_}.get(init)
    if fill is None:
        raise ModelError(f"unknown init {init!r} (allowed: default, xavier_uniform, orthogonal)")
    for p in model.parameters():
        if p.dim() >= 2:
            fill(p)
        else:
            nn.init.zeros_(p)


def loss_fn(family: str) -> Callable[[Tensor, Tensor], Tensor]:
    """(logits (B,), targets (B,)) -> mean loss; the hand-written BCE for manual_rnn_bce."""
    return stable_bce if family == "manual_rnn_bce" else nn.BCEWithLogitsLoss()


def save(model: nn.Module, config: dict[str, Any], path: Path) -> None:
    """Write {"config", "state_dict"} to ``path`` (a temporary name: the caller renames it into place).

    config must hold the build() keys."""
    missing = [k for k in MODEL_KEYS if k not in config]
    if missing:
        raise ValueError(f"config lacks {missing}; it must hold {MODEL_KEYS}")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    # Through a buffer: saved to a path, torch names the archive after the (random)
    # temporary file and derives its serialization id from it, so equal weights would
    # give different bytes and `dvc repro --force` a different dvc.lock.
    buffer = io.BytesIO()
    torch.save({"config": dict(config), "state_dict": state}, buffer)
    Path(path).write_bytes(buffer.getvalue())


def load(path: Path, device: str = "cpu", expect: dict[str, Any] | None = None,
         name: str = "<variant>") -> tuple[nn.Module, dict]:
    """Rebuild a saved model on ``device`` in eval mode; -> (model, stored config).

    ``expect`` is the variant's config now: if it differs from the stored one the
    model is stale, and the message says which keys differ and how to retrain ``name``.
    """
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no trained model (run `dvc repro train-{name}`)")
    try:
        blob = torch.load(path, map_location=device, weights_only=True)
        config = blob["config"]
    except Exception as e:  # noqa: BLE001  (a damaged file raises many kinds)
        raise ModelError(f"{path}: unreadable ({type(e).__name__}); rerun "
                         f"`dvc repro --force train-{name}`") from None
    if expect is not None:
        diff = [k for k in sorted(set(config) | set(expect)) if config.get(k) != expect.get(k)]
        if diff:
            shown = ", ".join(f"{k}: trained {config.get(k)!r}, params {expect.get(k)!r}" for k in diff)
            raise ModelError(
                f"{path} was trained with another config ({shown}); "
                f"rerun `dvc repro train-{name}`"
            )
    model = build(**{k: config[k] for k in MODEL_KEYS})
    try:
        model.load_state_dict(blob["state_dict"], strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1].strip()
        raise ModelError(
            f"{path}: weights do not fit a {config['family']} model ({first}); "
            f"rerun `dvc repro train-{name}`"
        ) from None
    return model.to(device).eval(), config


def predict_logits(model: nn.Module, seqs: SeqSetLike, device: str, max_batch_bits: int = 2_000_000) -> np.ndarray:
    """Logits (n,) float64 for every sequence of ``seqs``, in its own order.

    Sequences are batched by similar length (little padding), under inference mode.
    """
    lengths = np.asarray(seqs.lengths)
    out = np.empty(len(lengths), dtype=np.float64)
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for idx in length_batches(lengths, max_batch_bits):
            bits, lens = seqs.padded(idx)
            lens_t = torch.as_tensor(lens, dtype=torch.int64)
            x = torch.as_tensor(bits[:, : int(lens_t.max())]).to(device=device, dtype=torch.float32)
            out[idx] = model(x, lens_t).double().cpu().numpy()
    model.train(was_training)
    return out


class ParityPredictor(nn.Module):
    """A parity model for MLflow's pytorch flavour: padded bits in, P(parity = 1) out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, T) floats, bits 0/1 then padding -1 -> probability of odd parity, (B,)."""
        lengths = (x >= 0).sum(dim=1).cpu()
        return torch.sigmoid(self.model(x.clamp(min=0), lengths))


def stepper(model: nn.Module, device: str = "cpu") -> Stepper | None:
    """The model as start/step/readout for models/prefix_tree.py, through its own modules (the
    library layer, or the hand-written cell's ``step``); None for ``rnn_per_sequence``, whose
    point is the one-sequence-at-a-time call. States are NumPy arrays, batch first."""
    if isinstance(model, PerSequenceRNN):
        return None
    model.eval()
    if isinstance(model, PackedRecurrent):
        layers, size = model.rnn.num_layers, model.rnn.hidden_size
        pair = isinstance(model.rnn, nn.LSTM)

        def step(state: tuple[np.ndarray, ...], bit: float) -> tuple[np.ndarray, ...]:
            # ours: (B, layers, H) per tensor; the library's: (layers, B, H)
            s = tuple(torch.as_tensor(a, device=device).transpose(0, 1).contiguous() for a in state)
            x = torch.full((s[0].shape[1], 1, 1), bit, device=device)
            with torch.inference_mode():
                _, new = model.rnn(x, s if pair else s[0])
            return tuple(t.transpose(0, 1).cpu().numpy() for t in (new if pair else (new,)))

        def readout(state: tuple[np.ndarray, ...]) -> np.ndarray:
            with torch.inference_mode():
                return model.readout(torch.as_tensor(state[0][:, -1], device=device)).squeeze(-1).cpu().numpy()

        zero = np.zeros((1, layers, size), np.float32)
        return Stepper(lambda: (zero,) * (2 if pair else 1), step, readout)
    if isinstance(model, DiagonalLinearRNN):
        def linear_step(state: tuple[np.ndarray, ...], bit: float) -> tuple[np.ndarray, ...]:
            with torch.inference_mode():
                h = torch.as_tensor(state[0], device=device)
                return (model.step(h, h.new_full((len(h), 1), bit)).cpu().numpy(),)

        with torch.inference_mode():
            first = model.start.detach().cpu().numpy()[None]
        return Stepper(lambda: (first,), linear_step, _readout(model, device))
    if not isinstance(model, (ManualRNN, ManualLSTM)):
        return None
    cell = model  # state (h,) or (h, c), each (B, H)

    def cell_step(state: tuple[np.ndarray, ...], bit: float) -> tuple[np.ndarray, ...]:
        with torch.inference_mode():
            s = tuple(torch.as_tensor(a, device=device) for a in state)
            new = cell.step(cell.project(bit), s if len(s) == 2 else s[0])
        return tuple(t.cpu().numpy() for t in (new if isinstance(new, tuple) else (new,)))

    zero = np.zeros((1, cell.hidden_size), np.float32)
    return Stepper(lambda: (zero,) * (2 if isinstance(cell, ManualLSTM) else 1), cell_step, _readout(cell, device))


def _readout(model: nn.Module, device: str) -> Callable[[tuple[np.ndarray, ...]], np.ndarray]:
    """Logits of a batch of states (h first) through the model's readout Linear."""
    def readout(state: tuple[np.ndarray, ...]) -> np.ndarray:
        with torch.inference_mode():
            return model.readout(torch.as_tensor(state[0], device=device)).squeeze(-1).cpu().numpy()
    return readout
