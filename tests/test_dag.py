"""dvc.yaml is the truth: every stage depends on exactly the code, data and params keys that
can change its outputs. Static checks on the committed dvc.yaml and the import scanner;
tests/test_pipeline.py shows DVC acting on it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from stages.commands import dag
from stages.core.params import ENGINES, MODEL_FOLDERS, load_params

ROOT = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
PARAMS = load_params(ROOT / "params.yaml")


def test_committed_dvc_yaml_is_what_params_and_code_give() -> None:
    text = (ROOT / "dvc.yaml").read_text()
    assert text == dag.render(ROOT / "params.yaml", text), "run `python -m stages dag`"


def test_a_stage_of_the_users_own_is_kept(tmp_path: Path) -> None:
    own = {"stages": {"sweep_smoke": {"cmd": "python -m stages sweep sweeps/smoke.yaml", "deps": ["sweeps/smoke.yaml"]}}}
    text = dag.render(ROOT / "params.yaml", yaml.safe_dump(own))
    stages = yaml.safe_load(text)["stages"]
    assert list(stages)[-1] == "sweep_smoke" and "train-lstm" in stages


def test_no_stage_depends_on_tracking_cli_or_commands() -> None:
    for name, stage in STAGES.items():
        code = [d for d in stage["deps"] if d.endswith(".py")]
        bad = [d for d in code if d.startswith(("stages/tracking/", "stages/commands/", "stages/sweep/"))
               or d == "stages/__main__.py"]
        assert not bad, (name, bad)
        report_code = [d for d in code if d.startswith("stages/report/")]
        assert not report_code or name == "report", (name, report_code)


@pytest.mark.parametrize("name", [n for n in STAGES if n.split("-")[0] in ("train", "evaluate", "seeds", "xor")])
def test_each_stage_lists_only_its_own_engine(name: str) -> None:
    kind, _, variant = name.partition("-")
    engine = "xor" if kind == "xor" else ENGINES[PARAMS.variants[variant].family]
    used = {"/".join(d.split("/")[:2]) for d in STAGES[name]["deps"] if d.startswith("models/") and d.count("/") > 1}
    # evaluating the search's result needs only the manual_rnn it is saved as
    expected = {"models/torch_rnn"} if (kind, engine) == ("evaluate", "search") else set(MODEL_FOLDERS[engine])
    assert used == expected, name


def test_stages_read_only_their_own_params_and_buckets() -> None:
    lstm = STAGES["train-lstm"]
    assert "variants.lstm" in lstm["params"] and not any(p.startswith("variants.") and p != "variants.lstm"
                                                        for p in lstm["params"])
    assert "data/len_1000.npz" not in lstm["deps"] and "data/train.npz" in lstm["deps"]
    assert "training.lr" not in STAGES["train-notebook_lstm" if "notebook_lstm" in PARAMS.variants
                                       else "train-notebook_manual_lstm"]["params"]  # its preset sets lr
    assert not any(p.startswith("training") for p in STAGES["xor"]["params"])
    keras = STAGES["evaluate-keras_lstm"]["deps"]
    assert "data/len_1000000.npz" not in keras  # keras_lstm narrows its eval_buckets
    assert STAGES["generate"]["params"] == ["data.seed", "data.buckets"]
    assert STAGES["certify"]["params"] == [f"variants.{n}.family" for n, v in PARAMS.variants.items()
                                           if v.family != "xor_mlp"]  # the family only: the weights say the rest
    assert not any(d.startswith(("models/", "stages/pipeline/evaluate")) for d in STAGES["certify"]["deps"])


def test_closure_follows_lazy_imports_and_skips_tracking(tmp_path: Path) -> None:
    pkg = tmp_path / "stages"
    (pkg / "tracking").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "tracking" / "__init__.py").write_text("import stages.hidden\n")
    (pkg / "hidden.py").write_text("")
    (pkg / "lazy.py").write_text("")
    (pkg / "other.py").write_text("")
    (pkg / "stage.py").write_text("from stages import tracking\n\ndef f():\n    from stages import lazy\n")
    assert dag.closure("stages.stage", tmp_path) == ["stages/__init__.py", "stages/lazy.py", "stages/stage.py"]


def test_a_stale_dvc_yaml_is_refused(tmp_path: Path) -> None:
    stages = dag.pipeline(*dag.read(ROOT / "params.yaml"))["stages"]
    stale = {**stages, "train-lstm": {**stages["train-lstm"], "deps": stages["train-lstm"]["deps"][:-2]}}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stale}))
    with pytest.raises(Exception, match=r"dvc.yaml is out of date .*train-lstm.*stages dag"):
        dag.check_stage("train-lstm", str(ROOT / "params.yaml"), str(tmp_path / "dvc.yaml"))
    dag.check_stage("train-gru", str(ROOT / "params.yaml"), str(tmp_path / "dvc.yaml"))  # unchanged: fine
    dag.check_stage("my_sweep", str(ROOT / "params.yaml"), str(tmp_path / "dvc.yaml"))  # not ours: fine


def test_prune_forgets_removed_stages_and_outputs_a_shared_stage_dropped(tmp_path: Path, monkeypatch) -> None:
    """Removing xor_b from params: the xor stage stays but xor_b's files, .gitignore line,
    params key and outputs in dvc.lock go; a removed stage loses its dvc.lock entry and
    outputs; what current stages write stays."""
    from stages.commands.repro import prune

    monkeypatch.chdir(tmp_path)
    for path in ("m/xor_a", "m/xor_b", "m/lstm2", "t/xor_b.json", "t/keep.json"):
        Path(path).parent.mkdir(exist_ok=True)
        Path(path).write_text("x")
    Path("m/.gitignore").write_text("/xor_a\n/xor_b\n/lstm2\n")
    outs = lambda *paths: [{"path": p, "md5": "0"} for p in paths]  # noqa: E731
    Path("dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {
        "xor": {"cmd": "x", "params": {"params.yaml": {"variants.xor_a": 1, "variants.xor_b": 2}},
                "outs": outs("m/xor_a", "m/xor_b", "t/xor_b.json")},
        "train-lstm2": {"cmd": "x", "outs": outs("m/lstm2", "t/keep.json")},
    }}))
    current = {"xor": {"params": ["variants.xor_a"], "outs": ["m/xor_a"]},
               "report": {"metrics": [{"t/keep.json": {"cache": False}}]}}
    assert prune(current) == (["train-lstm2"], ["m/xor_b", "t/xor_b.json"])
    assert sorted(str(p) for p in tmp_path.rglob("*") if p.is_file()) == sorted(
        str(tmp_path / p) for p in ("m/xor_a", "m/.gitignore", "t/keep.json", "dvc.lock"))
    assert Path("m/.gitignore").read_text() == "/xor_a\n"
    assert yaml.safe_load(Path("dvc.lock").read_text())["stages"] == {
        "xor": {"cmd": "x", "params": {"params.yaml": {"variants.xor_a": 1}}, "outs": outs("m/xor_a")}}


def test_make_repro_spares_its_stages_the_dvc_yaml_check_while_nothing_changed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`make repro` writes dvc.yaml and sets PARITYLAB_DAG_CHECKED to the fingerprint of it and
    params.yaml; a stage skips check_stage only while both files still hash to it."""
    from stages.commands import DAG_CHECKED, dag_checked, dag_fingerprint

    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "params.yaml").write_text("seed: 0\n")
    monkeypatch.delenv(DAG_CHECKED, raising=False)
    assert not dag_checked()
    monkeypatch.setenv(DAG_CHECKED, dag_fingerprint())
    assert dag_checked()
    (tmp_path / "params.yaml").write_text("seed: 1\n")  # edited while make repro runs
    assert not dag_checked()
    monkeypatch.setenv(DAG_CHECKED, dag_fingerprint())
    (tmp_path / "dvc.yaml").unlink()
    assert dag_fingerprint() == "" and not dag_checked()
