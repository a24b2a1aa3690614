"""The generate stage and the dataset API: determinism, content, disjointness, checked loads, CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers import generate_data
from stages.core.data import DataError, SeqSet, hashes_of, load_bucket, load_meta, load_xor_gate
from stages.core.files import sha256_file
from stages.core.params import Data, ParamsError
from stages.pipeline.generate import dataset_names, main, sequence_keys

ROOT = Path(__file__).resolve().parents[1]


def file_hashes(folder: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir())}


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", "stages", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def strings(s: SeqSet) -> list[str]:
    return ["".join(map(str, s.bits(i))) for i in range(len(s))]


def test_same_seed_same_bytes_across_runs_and_processes(small_data: Data, data_dir: Path, tmp_path: Path) -> None:
    generate_data(small_data, tmp_path / "again")
    params = {"data": small_data.model_dump(), "variants": {"x": {"family": "xor_mlp"}},
              "evaluate": {"buckets": ["len_50_100"]}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    for name in dataset_names(small_data):
        proc = cli("generate", name, "--params", "params.yaml", cwd=tmp_path)  # writes tmp_path/data
        assert proc.returncode == 0, proc.stderr
    expected = file_hashes(data_dir)
    assert len(expected) == 2 * (len(small_data.buckets) + 1)  # NAME.npz and NAME.json, xor_gate too
    assert file_hashes(tmp_path / "again") == expected
    assert file_hashes(tmp_path / "data") == expected


def test_other_seed_other_data_and_buckets_independent(small_data: Data, data_dir: Path, tmp_path: Path) -> None:
    reseeded = Data(seed=small_data.seed + 1, buckets=small_data.buckets)
    generate_data(reseeded, tmp_path / "a")
    same, new = file_hashes(data_dir), file_hashes(tmp_path / "a")
    assert new["xor_gate.npz"] == same["xor_gate.npz"]
    assert all(new[f"{b}.npz"] != same[f"{b}.npz"] for b in small_data.buckets)
    # Adding a bucket leaves every other bucket's bytes unchanged.
    more = Data(seed=small_data.seed, buckets={"extra": {"count": 5, "min_len": 3, "max_len": 9},
                                               **small_data.buckets})
    generate_data(more, tmp_path / "b")
    grown = file_hashes(tmp_path / "b")
    assert all(grown[f"{b}.npz"] == same[f"{b}.npz"] for b in small_data.buckets)


def test_content_lengths_labels_balance(small_data: Data, data_dir: Path) -> None:
    for name, b in small_data.buckets.items():
        s = load_bucket(name, data_dir)
        entry = load_meta(name, data_dir)
        assert entry["seed"] == small_data.seed and entry["bucket"] == b.model_dump(mode="json")
        assert len(s) == b.count == entry["count"]
        assert s.lengths.min() >= b.min_len and s.lengths.max() <= b.max_len
        padded, lens = s.padded()
        assert np.array_equal(padded.sum(axis=1) % 2, s.labels)  # labels are the parity
        assert set(np.unique(padded)) <= {0, 1}
        assert entry["positive_ratio"] == pytest.approx(s.labels.mean(), abs=1e-6)
        if len(s) >= 1000:
            assert abs(s.labels.mean() - 0.5) <= 0.03
        assert sum(entry["lengths"].values()) == b.count
    x, y = load_xor_gate(data_dir)
    assert x.dtype == y.dtype == np.float32
    assert x.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]] and y.tolist() == [0, 1, 1, 0]


def test_val_disjoint_from_train_where_space_allows(data_dir: Path) -> None:
    train, val = load_bucket("train", data_dir), load_bucket("val", data_dir)
    seen = set(strings(train))
    distinct = Counter(len(t) for t in seen)
    shared = [v for v in strings(val) if v in seen]
    assert all(2 ** len(v) < 4 * distinct[len(v)] for v in shared)  # only where train is dense
    overlap = load_meta("val", data_dir)["overlap"]
    assert overlap["with"] == "train" and overlap["count"] == len(shared) > 0
    assert overlap["by_length"] == {str(n): c for n, c in sorted(Counter(map(len, shared)).items())}
    assert overlap["redrawn"] > 0  # collisions at roomy lengths did happen and were redrawn


def test_sequence_keys_int_and_bytes_agree() -> None:
    s = SeqSet.from_bits("t", ["1", "01", "1", "001", "01", "0", "00"])
    narrow = sequence_keys(s.stream, s.offsets, s.lengths, wide=False)
    wide = sequence_keys(s.stream, s.offsets, s.lengths, wide=True)
    pattern = [[a == b for b in narrow] for a in narrow]
    assert pattern == [[a == b for b in wide] for a in wide]
    assert len(set(narrow)) == 5


def test_cycle_in_disjoint_from_is_refused() -> None:
    buckets = {"a": {"count": 2, "min_len": 1, "max_len": 2, "disjoint_from": "b"},
               "b": {"count": 2, "min_len": 1, "max_len": 2, "disjoint_from": "a"}}
    with pytest.raises(ValueError, match="cycle"):
        Data(buckets=buckets)
    ok = Data(buckets={**buckets, "b": {"count": 2, "min_len": 1, "max_len": 2}})
    assert dataset_names(ok) == ["xor_gate", "b", "a"]


def test_storage_is_compact(data_dir: Path) -> None:
    assert (data_dir / "len_100000.npz").stat().st_size <= 130_000  # 10 x 100,000 bits


def test_seqset_bits_padded_subset() -> None:
    s = SeqSet.from_bits("t", ["1", "0110", "", "10101"])
    assert s.labels.tolist() == [1, 0, 0, 1]
    assert s.bits(1).tolist() == [0, 1, 1, 0] and s.bits(2).tolist() == []
    padded, lens = s.padded(np.array([3, 0]))
    assert padded.tolist() == [[1, 0, 1, 0, 1], [1, 0, 0, 0, 0]] and lens.tolist() == [5, 1]
    sub = s.subset(np.array([3, 1]))
    assert strings(sub) == ["10101", "0110"] and sub.labels.tolist() == [1, 0]


def test_padded_long_rows(data_dir: Path) -> None:
    s = load_bucket("len_100000", data_dir)
    padded, lens = s.padded(np.array([4, 1]))
    assert padded.shape == (2, 100_000)
    assert np.array_equal(padded[0], s.bits(4)) and np.array_equal(padded[1], s.bits(1))
    assert np.array_equal(s.subset(np.array([4])).bits(0), s.bits(4))


@pytest.mark.parametrize("damage", ["truncate", "edit", "delete"])
def test_load_detects_damaged_files(data_dir: Path, tmp_path: Path, damage: str) -> None:
    folder = shutil.copytree(data_dir, tmp_path / "data")
    path = folder / "len_50_100.npz"
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "edit":
        path.write_bytes(raw[:-100] + bytes([raw[-100] ^ 1]) + raw[-99:])
    else:
        path.unlink()
    with pytest.raises(DataError, match=r"run `dvc repro generate` \(it writes len_50_100\)") as err:
        load_bucket("len_50_100", folder)
    assert "len_50_100.npz" in str(err.value) and "\n" not in str(err.value)
    assert len(load_bucket("train", folder)) == 3000  # the others still load


def test_missing_manifest_entry_and_unknown_bucket(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"train.json not found \(datasets in .*: none\); run `dvc repro generate` \(it writes train\)"):
        load_bucket("train", tmp_path)
    with pytest.raises(DataError, match=r"unknown dataset 'nope'.*datasets in .*: len_100000, len_50_100, train"):
        load_bucket("nope", data_dir)
    assert set(hashes_of(["xor_gate", "train", "nope"], data_dir)) == {"xor_gate", "train"}


def test_failed_generate_leaves_old_data(small_data: Data, data_dir: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    out = shutil.copytree(data_dir, tmp_path / "data")
    before = file_hashes(out)
    import stages.pipeline.generate as generate

    def fail(*args: object) -> None:
        raise KeyboardInterrupt  # as if interrupted while writing

    monkeypatch.setattr(generate, "write_npz", fail)
    with pytest.raises(KeyboardInterrupt):
        generate_data(small_data, out)
    assert file_hashes(out) == before  # no temporary left behind either


def test_bad_params_write_nothing(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("data: {buckets: {train: {count: 0, min_len: 1, max_len: 2}}}\n")
    with pytest.raises(ParamsError):
        main("train", str(tmp_path / "params.yaml"), str(tmp_path / "data"))
    assert not (tmp_path / "data").exists()


def test_cli_prints_csv(data_dir: Path) -> None:
    proc = cli("data", "xor_gate", "--data-dir", str(data_dir))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "length,bits,parity\n2,00,0\n2,01,1\n2,10,1\n2,11,0\n"
    proc = cli("data", "train", "--limit", "3", "--data-dir", str(data_dir))
    train = load_bucket("train", data_dir)
    rows = [f"{n},{b},{p}" for n, b, p in zip(train.lengths[:3], strings(train)[:3], train.labels[:3], strict=True)]
    assert proc.stdout.splitlines() == ["length,bits,parity", *rows]


def test_cli_unknown_bucket_and_broken_pipe(data_dir: Path) -> None:
    proc = cli("data", "nope", "--data-dir", str(data_dir))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: unknown dataset 'nope'") and proc.stderr.count("\n") == 1
    cmd = f"{sys.executable} -m stages data len_100000 --data-dir {data_dir} | head -c 50 >/dev/null"
    piped = subprocess.run(["bash", "-c", cmd], env={**os.environ, "PYTHONPATH": str(ROOT)},
                           capture_output=True, text=True, timeout=120)
    assert piped.stderr == ""  # no BrokenPipeError traceback


STRUCTURED = {
    "needles_0": {"kind": "needles", "background": 0, "lengths": [10, 50]},
    "needles_1": {"kind": "needles", "background": 1, "lengths": [10]},
    "sparse": {"kind": "density", "p_one": 0.01, "count": 20, "min_len": 1000, "max_len": 5000},
    "runs_30": {"kind": "runs", "mean_run": 30, "count": 20, "min_len": 500, "max_len": 3000},
    "periodic": {"kind": "periodic", "patterns": ["10", "110"], "per_pattern": 5, "min_len": 100, "max_len": 400},
    "exhaustive": {"kind": "exhaustive", "max_len": 4},
}


def test_structured_buckets_hold_what_their_kind_says(tmp_path: Path) -> None:
    data = Data(seed=3, buckets=STRUCTURED)
    generate_data(data, tmp_path / "a")
    generate_data(data, tmp_path / "b")
    assert file_hashes(tmp_path / "a") == file_hashes(tmp_path / "b")  # seeded: same bytes
    got = {name: load_bucket(name, tmp_path / "a") for name in STRUCTURED}
    for name, s in got.items():  # labels are the parity, whatever the kind
        padded, _ = s.padded()
        assert np.array_equal(padded.sum(axis=1) % 2, s.labels), name
    needles = strings(got["needles_0"])
    assert {len(x) for x in needles} == {9, 10, 49, 50}  # L - 1 and L: both parities of the plain run
    assert all(x.count("1") <= 1 for x in needles) and "0" * 50 in needles and "1" + "0" * 49 in needles
    assert "0" * 49 + "1" in needles and all(x.count("0") <= 1 for x in strings(got["needles_1"]))
    assert 0.003 < got["sparse"].stream.mean() < 0.03
    run_lengths = [len(r) for x in strings(got["runs_30"]) for r in x.replace("01", "0 1").replace("10", "1 0").split()]
    assert 15 < np.mean(run_lengths) < 45  # geometric with mean 30 (runs cut at the ends are shorter)
    assert all(x in ("10" * 300)[: len(x) + 1] or x in ("01" * 300) or x in ("110" * 200) or x in ("101" * 200)
               or x in ("011" * 200) for x in strings(got["periodic"]))
    assert sorted(strings(got["exhaustive"])) == sorted(format(i, f"0{n}b") for n in range(1, 5) for i in range(2**n))


def test_a_structured_bucket_prints_as_csv(tmp_path: Path) -> None:
    generate_data(Data(seed=3, buckets=STRUCTURED), tmp_path / "data")
    proc = cli("data", "needles_1", "--limit", "2", "--data-dir", str(tmp_path / "data"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["length,bits,parity", "9,111111111,1", "9,011111111,0"]
