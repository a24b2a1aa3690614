"""``python -m stages dag``: write dvc.yaml from params.yaml and the code's own imports.

Every stage lists exactly what can change its outputs, and nothing else:
- code: its stage module and every project module that module imports, lazily or not
  (the import closure, read from the source with ``ast``), except tracking code
  (``stages/tracking/``), which records results but never decides them;
- data: the dataset files it reads (``data/NAME.npz`` and its manifest entry ``NAME.json``),
  and the artifacts of the stages before it;
- params: the keys it reads (``variants.lstm``, ``training.lr``, ``data.buckets.val``), not
  whole sections: a setting a variant overrides is not a dependency of that variant.
So an edit to a Keras file reruns only Keras stages, and a tracking, report or CLI edit
reruns at most ``report``. A stage that DVC runs checks its own entry against this (see
``check_stage``), so a dvc.yaml left stale by a params edit is refused, not trusted.
"""

from __future__ import annotations

import ast
import sys
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from stages.core import paths
from stages.core.errors import UserError
from stages.core.params import (
    ENGINES,
    NOTEBOOK,
    Params,
    ParityVariant,
    SearchVariant,
    Training,
    XorVariant,
    eval_buckets,
    load_params,
    resolved_training,
)

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ("stages", "models")  # top-level packages whose modules are dependencies
NOT_DEPS = ("stages.tracking",)  # imported by stages, but they only record results
HEADER = """\
# Written by `python -m stages dag` from params.yaml and the code's imports; do not edit its
# stages (a stage of your own, named otherwise, is kept at the end). `make repro` rewrites it first. Each stage lists exactly what can change its outputs:
# its own module and every project module that imports (tracking code excepted), the data
# files it reads, and the params keys it reads. (Stages are written out one by one, not as
# DVC foreach, since each has its own deps; DVC keeps '@' for foreach, so names use '-'.)
# The pipeline: generate -> train-VARIANT -> evaluate-VARIANT -> report, train-* -> certify -> report,
#               seeds-VARIANT -> report, fixedlen-PART -> report, xor -> report.
"""
# Training keys that cannot change a trained model (a resumed run is bit-identical).
NOT_RESULT_KEYS = ("checkpoint_every",)


def module_file(name: str, root: Path = ROOT) -> Path | None:
    """The source file of project module ``name`` (a package's __init__.py), or None."""
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@cache
def _imports(name: str, root: Path = ROOT) -> frozenset[str]:
    """Project modules that module ``name`` imports anywhere in its source (lazy imports too)."""
    file = module_file(name, root)
    found: set[str] = set()
    for node in ast.walk(ast.parse(file.read_text(), str(file))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # `from pkg import sub` imports the submodule when there is one
            found.update(f"{node.module}.{a.name}" for a in node.names
                         if module_file(f"{node.module}.{a.name}", root))
    project = {m for m in found if m.split(".")[0] in PROJECT and module_file(m, root)}
    parents = {".".join(m.split(".")[:i]) for m in project for i in range(1, m.count(".") + 1)}
    return frozenset(project | {p for p in parents if module_file(p, root)})


def closure(name: str, root: Path = ROOT) -> list[str]:
    """Files of ``name`` and every project module it imports, transitively, tracking excluded."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        mod = todo.pop()
        if mod in seen or mod.startswith(NOT_DEPS):
            continue
        seen.add(mod)
        todo.extend(_imports(mod, root))
    return sorted(module_file(m, root).relative_to(root).as_posix() for m in seen)


def _data(names: list[str]) -> list[str]:
    out: list[str] = []
    for n in dict.fromkeys(b for b in names if b):
        out += [str(paths.bucket_file(n)), str(paths.bucket_meta(n))]
    return out


def training_keys(params: Params, name: str) -> list[str]:
    """The ``training.*`` keys a variant reads: those its preset and own block do not set."""
    v = params.variants[name]
    own = set(v.training.model_fields_set) | (set(NOTEBOOK) if v.preset == "notebook" else set())
    return [f"training.{k}" for k in Training.model_fields if k not in own and k not in NOT_RESULT_KEYS]


def _trained_on(params: Params, name: str) -> list[str]:
    t = resolved_training(params, name)
    return [t["train_bucket"], t["val_bucket"], t.get("probe_bucket") or ""]


_WRITTEN: dict[str, Any] = {}  # the raw params document being rendered (see pipeline())


def _written(key: str) -> bool:
    """Whether params.yaml spells out ``key`` (DVC refuses a params dep that is not in the file;
    a key left to its default is covered by the schema's code, stages/core/params.py)."""
    node: Any = _WRITTEN
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _stage(cmd: str, module: str, deps: list[str], params: list[str], outs: list,
           metrics: list | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"cmd": cmd, "deps": closure(f"stages.pipeline.{module}") + deps}
    if params := [k for k in params if _written(k)]:
        entry["params"] = params
    entry["outs"] = outs
    if metrics:
        entry["metrics"] = metrics
    return entry


def _kept(path: Path, cache_it: bool = True) -> dict[str, Any]:
    """An output DVC does not delete before the stage runs (the stage replaces it atomically)."""
    return {str(path): {"persist": True} if cache_it else {"cache": False, "persist": True}}


def generate_stage(params: Params) -> dict[str, Any]:
    """One stage writes every dataset (about 2 s of work in all). An edit to one bucket reruns
    it, but only that bucket's files change, so DVC reruns only the stages that read them."""
    names = [paths.XOR_GATE, *params.data.buckets]
    outs = [_kept(f(n)) for n in names for f in (paths.bucket_file, paths.bucket_meta)]
    return {"generate": _stage("python -m stages generate", "generate", [], ["data.seed", "data.buckets"], outs)}


def certify_stage(params: Params) -> dict[str, Any]:
    """One stage certifies every parity net (0.1-2 s each), from their weights alone."""
    names = [n for n, v in params.variants.items() if not isinstance(v, XorVariant)]
    if not names:
        return {}
    return {"certify": _stage(
        "python -m stages certify", "certify", [str(paths.model_dir(n)) for n in names],
        [f"variants.{n}.family" for n in names], [_kept(paths.certificate(n), cache_it=False) for n in names],
        [_kept(paths.certify_metrics(n), cache_it=False) for n in names])}


def train_stages(params: Params, name: str, v: Any) -> dict[str, Any]:
    engine = ENGINES[v.family]
    common = ["seed", "device", "threads", f"variants.{name}"]
    if isinstance(v, SearchVariant):
        data, keys = _data([v.train_bucket, v.val_bucket]), common
    else:
        data, keys = _data(_trained_on(params, name)), common + training_keys(params, name)
    train = _stage(f"python -m stages train {name}", f"train_{engine}", data, keys,
                   [_kept(paths.model_dir(name)), _kept(paths.train_curve(name), cache_it=False)],
                   [_kept(paths.train_metrics(name), cache_it=False)])
    judge = "evaluate_torch" if engine == "search" else f"evaluate_{engine}"
    eval_keys = ["seed", "device", "threads", "evaluate.max_batch_bits", f"variants.{name}"]
    if not v.eval_buckets:
        eval_keys.insert(3, "evaluate.buckets")
    evaluate = _stage(f"python -m stages evaluate {name}", judge,
                      [str(paths.model_dir(name)), *_data(eval_buckets(params, name))], eval_keys,
                      [_kept(paths.eval_plot(name), cache_it=False), _kept(paths.eval_detail(name), cache_it=False)],
                      [_kept(paths.eval_metrics(name), cache_it=False)])
    return {f"train-{name}": train, f"evaluate-{name}": evaluate}


def seeds_stage(params: Params, name: str) -> dict[str, Any]:
    keys = ["device", "threads", "evaluate.max_batch_bits", "seeds.seeds", "seeds.buckets",
            f"variants.{name}", *training_keys(params, name)]
    data = _data([*_trained_on(params, name), *params.seeds.buckets])
    return {f"seeds-{name}": _stage(f"python -m stages seeds {name}", "seeds", data, keys,
                                    [_kept(paths.seeds_table(name), cache_it=False)],
                                    [_kept(paths.seeds_metrics(name), cache_it=False)])}


def xor_stage(params: Params) -> dict[str, Any]:
    names = [n for n, v in params.variants.items() if isinstance(v, XorVariant)]
    if not names:
        return {}
    outs, metrics = [], []
    for n in names:
        outs += [_kept(paths.model_dir(n)), _kept(paths.train_curve(n), cache_it=False),
                 _kept(paths.eval_plot(n), cache_it=False)]
        metrics += [_kept(paths.train_metrics(n), cache_it=False), _kept(paths.eval_metrics(n), cache_it=False)]
    keys = ["seed", "device", "threads", *(f"variants.{n}" for n in names)]
    return {"xor": _stage("python -m stages xor", "xor", _data([paths.XOR_GATE]), keys, outs, metrics)}


# The training keys the fixed-length study sets itself (stages/pipeline/fixed_length.py train_one).
STUDY_SETS = ("train_bucket", "val_bucket", "probe_bucket", "probe_count", "max_steps", "eval_every",
              "patience", "contraction_weight", "contraction_rho")
STUDY_KEYS = {  # fixed_length.* keys each part reads
    "cells": ("variant", "lengths", "seeds", "max_steps", "eval_every", "patience", "train_count", "eval_count",
              "long_min", "long_max", "signal_train_batches", "signal_steps", "signal_exact_max"),
    "signal": ("variant", "lengths", "seeds", "signal_batches", "signal_exact_max"),
    "mixing": ("variant", "mix_seeds", "max_steps", "eval_every", "patience", "train_count", "eval_count",
               "long_min", "long_max", "mix_length", "mix_short_max", "mix_fractions", "mix_buckets"),
}


def fixed_length_stages(params: Params) -> dict[str, Any]:
    """``fixedlen-cells``, ``fixedlen-signal``, ``fixedlen-mixing``: one process each (a cell takes
    seconds; a process per cell would spend more on starting torch than on the cell)."""
    study = params.fixed_length
    if study is None:
        return {}
    trains = [k for k in training_keys(params, study.variant) if k.split(".")[1] not in STUDY_SETS]
    stages = {}
    for part, keys in STUDY_KEYS.items():
        reads = (["training.batch_size"] if "training.batch_size" in trains else []) if part == "signal" else trains
        names = ["device", "threads", "data.seed", f"variants.{study.variant}", *reads,
                 *(["evaluate.max_batch_bits"] if part != "signal" else []), *(f"fixed_length.{k}" for k in keys)]
        outs = [_kept(paths.fixedlen_table(part), cache_it=False)]
        if part == "cells":
            outs.append(_kept(paths.fixedlen_signal_training(), cache_it=False))
        stages[f"fixedlen-{part}"] = _stage(
            f"python -m stages fixedlen {part}", "fixed_length", _data(study.mix_buckets if part == "mixing" else []),
            names, outs, [_kept(paths.fixedlen_metrics(part), cache_it=False)])
    return stages


def fixed_length_files(params: Params) -> list[Path]:
    """What the study's stages write (the report reads them all)."""
    if params.fixed_length is None:
        return []
    return [*(f(p) for p in STUDY_KEYS for f in (paths.fixedlen_table, paths.fixedlen_metrics)),
            paths.fixedlen_signal_training()]


def report_stage(params: Params) -> dict[str, Any]:
    files: list[Path] = []
    for n, v in params.variants.items():
        files += [paths.train_metrics(n), paths.eval_metrics(n)]
        files += [paths.train_curve(n)] if not isinstance(v, SearchVariant) else []
        files += ([paths.eval_plot(n), paths.eval_detail(n), paths.certificate(n)]
                  if not isinstance(v, XorVariant) else [])
    files += [paths.seeds_metrics(n) for n in params.seeds.variants]
    files += fixed_length_files(params)
    lengths = [f"data.buckets.{b}.{k}" for b in params.data.buckets for k in ("min_len", "max_len")]
    return {"report": _stage("python -m stages report", "report", [str(f) for f in files],
                             [*lengths, "training", "variants", "seeds",
                              *(["fixed_length"] if params.fixed_length is not None else [])],
                             [{str(paths.REPORT): {"cache": False, "persist": True}}])}


def plots(params: Params) -> list[dict[str, Any]]:
    """Accuracy against length for the default parity variants, their training curves, and the
    fixed-length study's gradient signal against length (a straight line on log10)."""
    study = [{"fixedlen_signal": {"template": "scatter", "x": "length",
                                  "y": {str(paths.fixedlen_table("signal")): "log10_snr"},
                                  "x_label": "string length L (every string of the training set)",
                                  "y_label": "log10 gradient signal-to-noise at initialisation"}}
             ] if params.fixed_length is not None else []
    parity = [n for n, v in params.variants.items()
              if isinstance(v, ParityVariant) and v.preset == "default" and not v.training.model_fields_set]
    if not parity:
        return study
    return study + [
        {"accuracy_vs_length": {"template": "log_x_by_variant", "x": "length",  # .dvc/plots/
                                "y": {str(paths.eval_plot(n)): "accuracy" for n in parity},
                                "x_label": "sequence length (log scale)", "y_label": "accuracy"}},
        {"training_val_accuracy": {"template": "lines_by_variant", "x": "step",
                                   "y": {str(paths.train_curve(n)): "val_accuracy" for n in parity},
                                   "x_label": "optimizer step", "y_label": "validation accuracy"}},
    ]


def pipeline(params: Params, raw: dict[str, Any]) -> dict[str, Any]:
    """dvc.yaml as a dict: every stage of params, in the order they run. raw: the params file
    as YAML read it (its keys are the params deps DVC can track)."""
    _WRITTEN.clear()
    _WRITTEN.update(raw)
    stages = generate_stage(params)
    for name, v in params.variants.items():
        if not isinstance(v, XorVariant):
            stages |= train_stages(params, name, v)
    stages |= certify_stage(params)
    for name in params.seeds.variants:
        stages |= seeds_stage(params, name)
    stages |= fixed_length_stages(params) | xor_stage(params) | report_stage(params)
    out: dict[str, Any] = {"stages": stages}
    if p := plots(params):
        out["plots"] = p
    return out


def read(params_path: str | Path = "params.yaml") -> tuple[Params, dict[str, Any]]:
    """The validated params and the raw document they came from."""
    params = load_params(params_path)
    return params, yaml.safe_load(Path(params_path).read_text(encoding="utf-8"))


OURS = ("generate", "train", "evaluate", "certify", "seeds", "fixedlen", "xor", "report")  # stage names this module writes


def ours(stage: str) -> bool:
    return stage.split("-")[0] in OURS


def render(params_path: str | Path = "params.yaml", current: str = "") -> str:
    """dvc.yaml's text. Stages of the user's own in ``current`` (a sweep, say) are kept, after ours."""
    doc = pipeline(*read(params_path))
    try:
        theirs = {k: v for k, v in (yaml.safe_load(current) or {}).get("stages", {}).items() if not ours(k)}
    except (yaml.YAMLError, AttributeError):
        theirs = {}
    doc["stages"] |= theirs
    return HEADER + yaml.safe_dump(doc, sort_keys=False, width=110)


def _normal(entry: Any) -> Any:
    """A stage entry with its lists as sets: the order of variants in params.yaml is not a change."""
    if isinstance(entry, dict):
        return {k: _normal(v) for k, v in entry.items()}
    if isinstance(entry, list):
        return sorted(map(repr, (_normal(v) for v in entry)))
    return entry


def check_stage(stage: str, params_path: str = "params.yaml", dvc_yaml: str = "dvc.yaml") -> None:
    """UserError unless ``stage``'s entry in dvc.yaml is what params.yaml and the code give now."""
    if not ours(stage):
        return  # a stage of the user's own (a sweep, say): not ours to judge
    try:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~40x faster on this ~50 kB file
        written = yaml.load(Path(dvc_yaml).read_text(), Loader=loader)["stages"].get(stage)
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError):
        return  # not our dvc.yaml: nothing to compare
    if _normal(pipeline(*read(params_path))["stages"].get(stage)) != _normal(written):
        raise UserError(f"{dvc_yaml} is out of date with {params_path} or the code (stage {stage}); "
                        "run `.venv/bin/python -m stages dag` (make repro does), then run again")


def main(check: bool = False, params_path: str = "params.yaml", out: str = "dvc.yaml") -> None:
    target = Path(out)
    current = target.read_text() if target.exists() else ""
    text = render(params_path, current)
    if current == text:
        return
    if check:
        print(f"{out} is out of date; run `.venv/bin/python -m stages dag`", file=sys.stderr)
        sys.exit(1)
    from stages.core.files import write_text

    write_text(target, text)
    print(f"dag: wrote {out} ({len(yaml.safe_load(text)['stages'])} stages)")
