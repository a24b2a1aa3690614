"""How much a parity model's gradient says about parity: its signal against its noise.

For the logistic loss on logit f(x) and label y = parity(x), the loss gradient splits as

    (sigmoid(f) - y) grad f  =  (sigmoid(f) - 1/2) grad f   +   chi(x)/2 grad f,   chi = (-1)^parity(x).

The first term never looks at the labels; only the second can tell parity from any other
function. Its mean over inputs, E[chi(x) grad f(x)] / 2, is the degree-L Fourier coefficient
of grad f: it shrinks fast as the answer depends on more bits (Shalev-Shwartz et al. 2017;
Barak et al. 2022). The signal-to-noise ratio here is the norm of that mean against the
batch-to-batch spread of the whole mini-batch gradient, the noise an optimizer step sees.

Sampled, the mean has a noise floor of about 1/sqrt(batches) of the noise, which even length 2
does not clear at initialisation; so for short lengths the mean is taken exactly, over every
string of the length, in float64 (``exact_signal``), and its own floor is rounding.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

Batch = tuple[Tensor, Tensor, Tensor]  # x (B, T) float bits, lengths (B,) int64 on CPU, y (B,) 0/1 float


def _flat(grads: tuple[Tensor | None, ...], params: list[Tensor]) -> Tensor:
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                      for g, p in zip(grads, params, strict=True)]).double()


def batch_gradients(model: nn.Module, x: Tensor, lengths: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """-> (gradient of the mean logistic loss, gradient of mean(chi f) / 2), each (P,) float64.

    Uses torch.autograd.grad, so the model's .grad fields (and an optimizer mid-training) are
    left as they were."""
    params = [p for p in model.parameters() if p.requires_grad]
    logits = model(x, lengths)
    loss = nn.functional.binary_cross_entropy_with_logits(logits, y)
    chi = 1.0 - 2.0 * y
    label_part = (chi * logits).mean() / 2
    g_loss = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    g_label = torch.autograd.grad(label_part, params, allow_unused=True)
    return _flat(g_loss, params), _flat(g_label, params)


def all_strings(length: int) -> Batch:
    """Every string of ``length`` bits: x (2^length, length) float64, lengths, parity labels."""
    x = ((torch.arange(2**length)[:, None] >> torch.arange(length)) & 1).double()
    return x, torch.full((2**length,), length, dtype=torch.int64), x.sum(1) % 2


# Rounding floor of the exact mean of n terms of size s: errors of about eps x s each add up
# like a random walk, to eps x s / sqrt(n) in the mean; ten times that is the floor. (Seen: a
# float64 mean that keeps falling with L flattens at ~1e-19, under this floor.)
ROUNDING = 10 * torch.finfo(torch.float64).eps


def exact_signal(model: nn.Module, strings: Batch, chunk: int = 8192) -> tuple[float, float]:
    """||E[chi grad f] / 2|| over ``strings`` (all_strings(L): the exact mean), on a float64 copy
    of ``model``; -> (signal, rounding floor: ROUNDING x a term's size / sqrt(n), the size taken
    as ||mean grad f / 2||, the same terms without the signs that cancel)."""
    model = copy.deepcopy(model).double()
    params = [p for p in model.parameters() if p.requires_grad]
    x, lengths, y = strings
    where = next(model.parameters()).device
    x, y = x.to(where), y.to(where)
    total, size = None, 0.0
    for i in range(0, len(x), chunk):
        part = slice(i, i + chunk)
        logits = model(x[part], lengths[part])
        signed = _flat(torch.autograd.grad(((1 - 2 * y[part]) * logits).sum() / 2, params,
                                           retain_graph=True, allow_unused=True), params)
        size += float(_flat(torch.autograd.grad(logits.sum() / 2, params, allow_unused=True), params).norm())
        total = signed if total is None else total + signed
    return float(total.norm()) / len(x), ROUNDING * size / len(x) / math.sqrt(len(x))


def gradient_signal(model: nn.Module, batches: Iterable[Batch], strings: Batch | None = None) -> dict[str, float]:
    """Signal and noise of the gradient over K >= 2 batches (all of one size); with ``strings``
    (all_strings(L)) the signal is exact and ``floor`` its rounding floor.

    Returns:
      signal: ||E[chi grad f] / 2||, debiased: sqrt(max(||mean||^2 - tr Var / K, 0)) (the batch
              means' own noise would otherwise put a floor of about 1/sqrt(K) under it)
      floor:  that noise, sqrt(tr Var / K): a signal under about twice it is not measured
      noise:  sqrt(mean_k ||g_k - mean g||^2), the spread of the mini-batch loss gradient
      snr:    signal / noise; snr_floor: floor / noise
      measured: 1.0 when the raw ||mean||^2 exceeds 4 x floor^2 (two standard errors), else 0.0;
                exact: signal above its rounding floor
      exact: 1.0 when the signal is the exact mean
    """
    losses, labels = [], []
    for x, lengths, y in batches:
        g, s = batch_gradients(model, x, lengths, y)
        losses.append(g)
        labels.append(s)
    if len(losses) < 2:
        raise ValueError(f"gradient_signal needs at least 2 batches, got {len(losses)}")
    k = len(losses)
    g, s = torch.stack(losses), torch.stack(labels)  # (K, P)
    s_mean = s.mean(0)
    raw = float(s_mean.square().sum())
    var_of_mean = float((s - s_mean).square().sum(1).sum() / (k - 1)) / k  # tr Var(mean of K)
    noise = float((g - g.mean(0)).square().sum(1).mean().sqrt())
    signal = math.sqrt(max(raw - var_of_mean, 0.0))
    floor = math.sqrt(var_of_mean)
    measured = raw > 4 * var_of_mean
    if strings is not None:
        signal, floor = exact_signal(model, strings)
        measured = signal > floor
    def ratio(v: float) -> float:
        return v / noise if noise > 0 else math.inf if v > 0 else 0.0

    return {"signal": signal, "floor": floor, "noise": noise, "snr": ratio(signal), "snr_floor": ratio(floor),
            "measured": float(measured), "exact": float(strings is not None)}
