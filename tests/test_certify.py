"""Tests of the parity certificate (stages/certify/): hand-built nets certified, drifting and
random ones refused with the reason, real trained nets certified in seconds, a certificate
edited by one number refused by the independent checker."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import certify_nets as hb
import numpy as np
import pytest

from stages.certify.check import check
from stages.certify.nets import net_from_weights, run_bits, weights_from_keras
from stages.certify.search import certify

HAND = [("rnn_packed", hb.parity_rnn), ("lstm", hb.parity_lstm), ("gru", hb.parity_gru)]


@pytest.fixture(scope="module")
def certs() -> dict[str, dict]:
    return {fam: certify(fam, make(), k=10) for fam, make in HAND}


@pytest.mark.parametrize(("family", "make"), HAND)
def test_handbuilt_nets_compute_parity(family: str, make) -> None:
    bits = np.random.default_rng(1).integers(0, 2, (64, 300))
    logits = run_bits(net_from_weights(family, make()), bits)
    assert ((logits > 0) == (np.cumsum(bits, axis=1) % 2 == 1)).all()


@pytest.mark.parametrize(("family", "make"), HAND)
def test_handbuilt_nets_are_certified_and_checked(certs: dict, family: str, make) -> None:
    cert = certs[family]
    assert cert["certified"], cert["reason"]
    assert cert["margin"]["region_min"] > 0 and cert["margin"]["prefix_min"] > 0
    cert = json.loads(json.dumps(cert))  # survives JSON
    ok, msg = check(cert, family, make())
    assert ok, msg


@pytest.mark.parametrize("family", ["manual_rnn", "rnn_per_sequence"])
def test_other_tanh_families_take_their_own_keys(family: str) -> None:
    w = hb.parity_rnn()
    if family == "manual_rnn":
        w = {"input.weight": w["rnn.weight_ih_l0"], "input.bias": w["rnn.bias_ih_l0"],
             "hidden.weight": w["rnn.weight_hh_l0"], "hidden.bias": w["rnn.bias_hh_l0"],
             "readout.weight": w["readout.weight"], "readout.bias": w["readout.bias"]}
    cert = certify(family, w, k=8)
    assert cert["certified"] and check(cert, family, w)[0]


def test_keras_and_manual_lstm_keys_match_torch_lstm() -> None:
    w = hb.parity_lstm()
    keras = {"kernel": w["rnn.weight_ih_l0"].T, "recurrent_kernel": w["rnn.weight_hh_l0"].T,
             "bias": w["rnn.bias_ih_l0"], "dense_kernel": w["readout.weight"].T, "dense_bias": w["readout.bias"]}
    manual = {"gates.weight": np.c_[w["rnn.weight_ih_l0"], w["rnn.weight_hh_l0"]], "gates.bias": w["rnn.bias_ih_l0"],
              "readout.weight": w["readout.weight"], "readout.bias": w["readout.bias"]}
    for family, weights in (("keras_lstm", keras), ("manual_lstm", manual)):
        cert = certify(family, weights, k=8)
        assert cert["certified"] and check(cert, family, weights)[0]


def test_slow_drift_is_refused_and_named() -> None:
    w = hb.drifting_rnn()
    cert = certify("rnn_packed", w, k=12)
    assert not cert["certified"]
    assert "counterexample: 1 then 0s" in cert["reason"]
    assert "drift: after 1 then 200 x 0, h2" in cert["reason"]  # the drifting unit is h2


def test_random_weights_are_refused() -> None:
    for seed in range(3):
        cert = certify("rnn_packed", hb.random_rnn(seed=seed), k=10)
        assert not cert["certified"] and cert["reason"]


@pytest.mark.parametrize(("family", "make"), HAND)
def test_one_edited_number_fails_the_checker(certs: dict, family: str, make) -> None:
    for what, c in _one_number_edits(certs[family]):
        ok, msg = check(c, family, make())
        assert not ok, f"{what} edit accepted: {msg}"


def test_checker_refuses_other_weights(certs: dict) -> None:
    w = hb.parity_rnn()
    w["readout.bias"] = w["readout.bias"] + np.float32(2.5)  # now answers odd far too often
    assert not check(certs["rnn_packed"], "rnn_packed", w)[0]



@pytest.mark.parametrize("family", ["rnn_packed", "rnn_per_sequence", "manual_rnn", "manual_lstm", "lstm", "gru"])
def test_step_equations_match_the_torch_models(family: str) -> None:
    torch = pytest.importorskip("torch")
    from models.torch_rnn import zoo as torch_zoo
    from stages.certify.nets import weights_from_torch_state_dict

    torch.manual_seed(0)
    model = torch_zoo.build(family, hidden_size=8).eval()
    bits = np.random.default_rng(2).integers(0, 2, (16, 30))
    lengths = torch.full((16,), 30, dtype=torch.int64)
    with torch.no_grad():
        want = model(torch.as_tensor(bits, dtype=torch.float32), lengths).double().numpy()
    got = run_bits(net_from_weights(family, weights_from_torch_state_dict(family, model.state_dict())), bits)[:, -1]
    assert np.abs(got - want).max() < 1e-4


def test_step_equations_match_keras() -> None:
    keras = pytest.importorskip("keras")
    from stages.certify.nets import weights_from_keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input(shape=(None, 1)), keras.layers.LSTM(8), keras.layers.Dense(1)])
    bits = np.random.default_rng(3).integers(0, 2, (16, 30))
    want = np.asarray(model(bits[..., None].astype(np.float32)))[:, 0]
    got = run_bits(net_from_weights("keras_lstm", weights_from_keras(model.get_weights())), bits)[:, -1]
    assert np.abs(got - want).max() < 1e-4


def test_weights_read_from_the_keras_file_are_get_weights(tmp_path: Path) -> None:
    """The certify stage reads a .keras file's arrays without TensorFlow; they must be, in order,
    what the loaded model's get_weights() gives (the models' own save, the models' own layer names)."""
    pytest.importorskip("keras")
    from types import SimpleNamespace

    from models.keras_lstm import model as keras_lstm
    from stages.pipeline.certify import keras_arrays

    model = keras_lstm.build(SimpleNamespace(hidden_size=3, num_layers=1, init="default"))
    keras_lstm.save(model, {}, tmp_path)
    got, want = keras_arrays(tmp_path / keras_lstm.MODEL_FILE), model.get_weights()
    assert [a.shape for a in got] == [a.shape for a in want]
    assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))


# ----------------------------------------------------------------------------- real contraction-trained nets

# Weights of nets trained by the pipeline's own trainer with the contraction phase (seed 0, and
# lstm seed 4), as NumPy arrays with a JSON note of family and seed (tests/nets/).
NETS = Path(__file__).parent / "nets"
REAL = sorted(p.stem for p in NETS.glob("*.npz"))


def load_net(path: Path) -> tuple[str, dict[str, np.ndarray]]:
    """(family, weights) of a saved test net."""
    meta = json.loads(path.with_suffix(".json").read_text())
    z = np.load(path)
    if meta["family"] == "keras_lstm":
        return meta["family"], weights_from_keras([z[f"w{i}"] for i in range(len(z.files))])
    return meta["family"], {k: z[k] for k in z.files}


def _edited(cert: dict, what: str, edit) -> tuple[str, dict]:
    c = copy.deepcopy(cert)
    edit(c)
    return what, c


def _one_number_edits(cert: dict) -> list[tuple[str, dict]]:
    """Certificates that differ from ``cert`` in one number each, every one of which must be refused."""
    last = len(cert["regions"]) - 1

    def flat_first(c: dict) -> None:
        c["regions"][0]["hi"][0] = c["regions"][0]["lo"][0]

    def flat_last(c: dict) -> None:
        c["regions"][last]["lo"][-1] = c["regions"][last]["hi"][-1]

    def parity(c: dict) -> None:
        c["regions"][0]["parity"] ^= 1

    def transition(c: dict) -> None:
        c["transitions"][0][1] = c["transitions"][0][0]

    def sha(c: dict) -> None:
        c["weights_sha256"] = ("1" if c["weights_sha256"][0] == "0" else "0") + c["weights_sha256"][1:]

    return [_edited(cert, what, fn) for what, fn in (("flat region 0", flat_first), ("flat last region", flat_last),
                                                      ("parity", parity), ("transition", transition), ("sha", sha))]


@pytest.mark.skipif(not REAL, reason="no exported nets (run export_nets.py)")
@pytest.mark.parametrize("name", REAL)
def test_real_net_certificate_checks_and_edits_fail(name: str) -> None:
    import time

    family, weights = load_net(NETS / f"{name}.npz")
    t = time.perf_counter()
    cert = certify(family, weights, k=14)
    assert time.perf_counter() - t < 10.0
    assert cert["certified"], cert["reason"]
    cert = json.loads(json.dumps(cert))
    ok, msg = check(cert, family, weights)
    assert ok, msg
    for what, c in _one_number_edits(cert):
        ok, msg = check(c, family, weights)
        assert not ok, f"{what} edit accepted: {msg}"


def test_suffix_regions_have_fixed_suffix_transitions() -> None:
    from stages.certify.regions import enumerate_prefixes, suffix_regions

    net = net_from_weights("rnn_packed", hb.parity_rnn())
    layer, _, bad = enumerate_prefixes(net, 8)
    assert bad is None
    reg = suffix_regions(net, layer, 8, 3, 1e-7, seeds=False)
    assert reg.fixed and len(reg.lo) == 16
    for j in range(16):
        w, p = j >> 1, j & 1
        for b in (0, 1):
            t = reg.target[j, b]
            assert t & 1 == p ^ b and (t >> 1) >> 2 == b and (t >> 1) & 3 == w >> 1


WRONG = Path(__file__).parent / "nets_wrong"  # nets trained without the contraction phase


@pytest.mark.parametrize(("name", "family", "length"), [("gru__default", "gru", 17), ("lstm__s10000", "lstm", 109)])
def test_wrong_trained_nets_are_refused_with_their_counterexample(name: str, family: str, length: int) -> None:
    z = np.load(WRONG / f"{name}.npz")
    cert = certify(family, {k: z[k] for k in z.files}, k=14)
    assert not cert["certified"]
    assert f"counterexample: 1 then 0s, length {length}," in cert["reason"]


@pytest.mark.parametrize(("family", "make"), HAND)
def test_clustered_regions_still_certify_without_suffixes(family: str, make) -> None:
    cert = certify(family, make(), k=10, suffixes=())
    assert cert["certified"] and "cluster width" in cert["reason"]
    assert check(cert, family, make())[0]


def _hard_sequences(rng: np.random.Generator, count: int, longest: int) -> list[np.ndarray]:
    """Random, needle and long-run sequences, lengths log-uniform up to ``longest``."""
    out = []
    for i, n in enumerate(np.exp(rng.uniform(0, np.log(longest), count)).astype(int) + 1):
        kind = i % 3
        if kind == 0:
            s = rng.integers(0, 2, n)
        elif kind == 1:
            s = np.full(n, i % 2)
            s[rng.integers(0, n)] ^= 1
        else:
            runs = rng.geometric(1 / max(2, n // 4), 64)
            s = np.repeat(np.arange(64) % 2, runs)[:n]
            s = np.concatenate([s, np.zeros(n - len(s), int)])
        out.append(s.astype(np.uint8))
    return out


@pytest.mark.parametrize("name", ["lstm_s0", "gru_s0"])
def test_a_certified_net_is_never_wrong(name: str) -> None:
    """The torch model itself, on 3,000 random, needle and run sequences up to length 100,000."""
    torch = pytest.importorskip("torch")
    from helpers import seqset
    from models.torch_rnn import zoo

    family, weights = load_net(NETS / f"{name}.npz")
    assert certify(family, weights)["certified"]
    model = zoo.build(family, hidden_size=8)
    model.load_state_dict({k: torch.as_tensor(v) for k, v in weights.items()})
    seqs = seqset(_hard_sequences(np.random.default_rng(7), 3000, 100_000))
    logits = zoo.predict_logits(model, seqs, "cpu", max_batch_bits=4_000_000)
    assert ((logits > 0) == (seqs.labels == 1)).all()
