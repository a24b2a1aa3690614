"""The one schema for params.yaml (the bucket kinds and ``data``: buckets.py; ``training``:
training.py; the base model, limits and YAML loader: schema.py).

Every field has a type, a default and a comment saying why the default is what it is.
Unknown keys are errors, so a typo such as ``hiden_size`` never passes silently.
``load_params`` validates the whole file and raises ``ParamsError`` with a one-line
message naming the key path, the bad value and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from stages.core.buckets import BUCKET_KINDS, Bucket, Data
from stages.core.errors import UserError
from stages.core.fixed_length import FixedLength
from stages.core.schema import (
    MAX_HIDDEN,
    MAX_NAME,
    MAX_THREADS,
    NAME,
    DuplicateKeyError,
    ParamsError,
    PosFloat,
    PosInt,
    Seed,
    Strict,
    UniqueKeyLoader,
    cut,
    short,
)
from stages.core.training import NOTEBOOK, Training, TrainingOverride

PARITY_FAMILIES = (
    "rnn_packed",  # nn.RNN over a PackedSequence batch
    "rnn_per_sequence",  # nn.RNN called on one sequence at a time (the notebook's slow form)
    "manual_rnn",  # hand-written RNN cell on a masked batch
    "manual_rnn_bce",  # the same cell trained with the hand-written stable BCE
    "manual_lstm",  # hand-written LSTM cell on a masked batch
    "lstm",  # nn.LSTM
    "gru",  # nn.GRU
    "diag_linear",  # diagonal linear RNN, input-dependent transition in [0, 1] (models/torch_rnn/linear_rnn.py)
    "diag_linear_neg",  # the same with the transition in [-1, 1] (Grazzi et al. 2025)
    "keras_lstm",  # keras.layers.LSTM with masking (TensorFlow)
)
KERAS_PARITY = ("keras_lstm",)  # parity families built with Keras (the rest are torch)
# Family -> engine: the models/ folder that holds its code and the stage modules that run it
# (stages/pipeline/train_ENGINE.py, evaluate_ENGINE.py; xor: stages/pipeline/xor.py).
ENGINES = {
    **{f: "torch" for f in PARITY_FAMILIES if f not in KERAS_PARITY},
    "keras_lstm": "keras",
    "rnn_search": "search",
    "xor_mlp": "xor",
}
MODEL_FOLDERS = {  # engine -> the models/ folders its stages run
    "torch": ("models/torch_rnn",),
    "keras": ("models/keras_lstm",),
    "search": ("models/rnn_search", "models/torch_rnn"),  # found weights are saved as a manual_rnn
    "xor": ("models/xor_mlp",),
}
Device = Literal["auto", "cpu", "cuda", "mps"]


class ParityVariant(Strict):
    """A recurrent model trained by gradient descent to output the parity of a bit sequence."""

    family: Literal[PARITY_FAMILIES]  # type: ignore[valid-type]
    hidden_size: Annotated[int, Field(gt=0, le=MAX_HIDDEN)] = 8  # 8 units are plenty for a 2-state automaton
    num_layers: PosInt = 1  # stacked layers (nn.RNN/LSTM/GRU and keras_lstm only)
    # Weight initialisation: the framework's own default, or one applied to every matrix.
    init: Literal["default", "xavier_uniform", "orthogonal"] = "default"
    preset: Literal["default", "notebook"] = "default"  # notebook = the original hyperparameters
    training: TrainingOverride = TrainingOverride()
    # Held-out buckets to evaluate; null = evaluate.buckets ([] is refused: it would judge nothing).
    eval_buckets: Annotated[list[str], Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _one_layer_cells(self) -> ParityVariant:
        if self.family.startswith(("manual_", "diag_linear")) and self.num_layers != 1:
            raise ValueError(f"num_layers={self.num_layers}: the hand-written cells ({self.family}) have "
                             "one layer (allowed: 1; use lstm, gru or rnn_packed for stacked layers)")
        return self

    # Judge each bucket on its first sequences up to this many bits (at least one sequence);
    # null = whole buckets. For the one-sequence-at-a-time form, whose every bit costs a
    # library call's step (~4 us): a whole 10-million-bit bucket would take 40 s.
    eval_max_bits: PosInt | None = None


class SearchVariant(Strict):
    """Random search over the weights of a small saturating tanh RNN (no gradients)."""

    family: Literal["rnn_search"]
    hidden_size: Annotated[int, Field(gt=0, le=MAX_HIDDEN)] = 2  # a 2-unit tanh RNN can hold the parity bit
    weight_scale: PosFloat = 6.0  # std of sampled weights; large -> saturated, length-robust units
    trials: PosInt = 200_000  # candidate weight sets at most
    chunk: PosInt = 4096  # candidates evaluated together
    screen_count: PosInt = 64  # training sequences a candidate must get right to be kept
    train_bucket: str = "train"
    val_bucket: str = "val"
    eval_buckets: Annotated[list[str], Field(min_length=1)] | None = None


class XorVariant(Strict):
    """A Keras MLP on the 4-row XOR truth table, trained from ``seeds`` seeds."""

    family: Literal["xor_mlp"]
    hidden_layers: Annotated[list[Annotated[int, Field(gt=0, le=MAX_HIDDEN)]], Field(min_length=1)] = [16]  # [32, 32]: two layers
    activation: Literal["relu", "linear", "tanh", "sigmoid"] = "relu"
    output_activation: Literal["sigmoid", "linear"] = "sigmoid"  # linear for the 128-linear net
    loss: Literal["mse", "bce"] = "mse"  # mean-squared error as in the original study
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: PosFloat = 0.001  # Keras' Adam default, as in the original
    kernel_init: Literal["glorot_uniform", "he_uniform", "he_normal"] = "glorot_uniform"
    bias_init: float = 0.0  # a small positive bias keeps ReLUs alive at start
    seeds: PosInt = 20  # independent initialisations; single runs say little
    max_epochs: PosInt = 5000  # full-batch epochs per seed
    original_epochs: int | None = None  # the original study's single-run figure, for the report


Variant = Annotated[
    ParityVariant | SearchVariant | XorVariant, Field(discriminator="family")
]


class Evaluate(Strict):
    # Held-out buckets every parity variant is judged on (a variant may narrow this); at least one.
    buckets: Annotated[list[str], Field(min_length=1)] = [
        "len_50_100",
        "len_200",
        "len_1000",
        "len_10000",
        "len_100000",
        "len_1000000",
    ]
    # Sequences x length per evaluation batch (a memory cap: ~5 bytes a bit). 16M holds
    # each default bucket in one batch, so 10 sequences of 10^6 bits take 10^6 sequential
    # steps, not 5 x 10^6 as batches of 2 would.
    max_batch_bits: PosInt = 16_000_000


class Seeds(Strict):
    """The robustness check (stages ``seeds-VARIANT``): each variant trained from seeds 0..seeds-1."""

    # Torch parity variants, each trained exactly as train-VARIANT trains it (at least one:
    # dvc.yaml makes a stage per entry).
    variants: list[str] = []
    seeds: PosInt = 10  # a result that 9 of 10 seeds reproduce is a property of the method
    buckets: list[str] = []  # whole held-out buckets every seed is judged on


class Tolerance(Strict):
    direction: Literal["higher", "lower"]  # which way is better
    abs: Annotated[float, Field(ge=0)] = 0.0  # allowed worsening, absolute
    rel: Annotated[float, Field(ge=0)] = 0.0  # allowed worsening, relative to the baseline


class Check(Strict):
    # Metric name (dotted, without the variant) -> tolerance; "accuracy" covers accuracy.*.
    tolerances: dict[str, Tolerance] = {}


class Params(Strict):
    seed: Seed = 0  # training seed for every variant
    device: Device = "auto"  # auto picks a GPU when one is visible
    # CPU threads for torch/TF. Fixed so results are bit-identical across machines
    # with the same CPU features; one thread is also fastest for these tiny models.
    threads: Annotated[int, Field(gt=0, le=MAX_THREADS)] = 1
    data: Data
    training: Training = Training()
    variants: dict[str, Variant]
    evaluate: Evaluate = Evaluate()
    seeds: Seeds = Seeds()
    check: Check = Check()
    fixed_length: FixedLength | None = None  # the fixed-length study (stages fixedlen-*); null: none

    @model_validator(mode="after")
    def _cross_check(self) -> Params:
        if not self.variants:
            raise ValueError("no variants defined (add at least one under 'variants')")
        buckets = set(self.data.buckets)
        allowed = ", ".join(sorted(buckets)) or "none: data.buckets is empty"
        for b in self.evaluate.buckets:
            if b not in buckets:
                raise ValueError(f"evaluate.buckets: unknown bucket {short(b)} (allowed: {allowed})")
        for b in self.seeds.buckets:
            if b not in buckets:
                raise ValueError(f"seeds.buckets: unknown bucket {short(b)} (allowed: {allowed})")
        if self.seeds.variants and not self.seeds.buckets:
            raise ValueError("seeds.buckets: empty, so the seeds would be judged on nothing "
                             f"(allowed: one or more of {allowed})")
        torch_parity = [n for n, v in self.variants.items()
                        if isinstance(v, ParityVariant) and v.family not in KERAS_PARITY]
        for name in self.seeds.variants:
            if name not in torch_parity:
                raise ValueError(f"seeds.variants: {name!r} is not a torch parity variant "
                                 f"(allowed: {', '.join(torch_parity) or 'none: no torch parity variant'})")
        fixed = self.fixed_length
        if fixed is not None and fixed.variant not in torch_parity:
            raise ValueError(f"fixed_length.variant: {fixed.variant!r} is not a torch parity variant "
                             f"(allowed: {', '.join(torch_parity) or 'none: no torch parity variant'})")
        for b in fixed.mix_buckets if fixed is not None else []:
            if b not in buckets:
                raise ValueError(f"fixed_length.mix_buckets: unknown bucket {short(b)} (allowed: {allowed})")
        for name, v in self.variants.items():
            if getattr(v, "family", "").startswith("diag_linear") and resolved_training(self, name)["contraction_weight"]:
                raise ValueError(f"variants.{name}: the contraction phase has no {v.family} form (set "
                                 f"variants.{name}.training.contraction_weight: 0)")
            if not NAME.match(name) or len(name) > MAX_NAME:
                raise ValueError(f"variants.{short(name)}: a name must match [a-z][a-z0-9_]* "
                                 f"and have at most {MAX_NAME} characters")
            for key in ("train_bucket", "val_bucket", "probe_bucket"):
                b = resolved_training(self, name).get(key) if not isinstance(v, XorVariant) else None
                if b is not None and b not in buckets:
                    where = (f"variants.{name}." if isinstance(v, SearchVariant) else
                             f"variants.{name}.training." if key in v.training.model_fields_set else "training.")
                    raise ValueError(f"{where}{key}: unknown bucket {short(b)} (allowed: {allowed})")
            for b in getattr(v, "eval_buckets", None) or []:
                if b not in buckets:
                    raise ValueError(
                        f"variants.{name}.eval_buckets: unknown bucket {short(b)} (allowed: {allowed})"
                    )
        return self


def resolved_training(params: Params, variant: str) -> dict[str, Any]:
    """The training settings of one variant: defaults, then its preset, then its overrides."""
    v = params.variants[variant]
    if isinstance(v, SearchVariant):
        return {"train_bucket": v.train_bucket, "val_bucket": v.val_bucket}
    if isinstance(v, XorVariant):
        return {}
    out = params.training.model_dump()
    if v.preset == "notebook":
        out.update(NOTEBOOK)
    out.update(v.training.model_dump(exclude_unset=True))  # an explicit null stays null
    return out


def variant_of(params: Params, name: str, engine: str | None = None) -> Any:
    """The variant called ``name`` (of ``engine``, if given); UserError naming the allowed ones."""
    allowed = [n for n, v in params.variants.items() if engine is None or ENGINES[v.family] == engine]
    if name not in allowed:
        what = f"{engine} variant" if engine else "variant"
        raise UserError(f"unknown {what} {name!r} (allowed: {', '.join(allowed) or 'none'})")
    return params.variants[name]


def eval_buckets(params: Params, variant: str) -> list[str]:
    v = params.variants[variant]
    return list(getattr(v, "eval_buckets", None) or params.evaluate.buckets)


def _format_error(err: dict[str, Any], raw: Any) -> str:
    loc = [str(p) for p in err["loc"]]
    # Drop the discriminator tag pydantic inserts (variants.lstm.lstm.hidden -> variants.lstm.hidden).
    if len(loc) >= 3 and loc[0] == "variants" and loc[2] in (*PARITY_FAMILIES, "rnn_search", "xor_mlp"):
        del loc[2]
    if len(loc) >= 4 and loc[:2] == ["data", "buckets"] and loc[3] in BUCKET_KINDS:
        del loc[3]
    path = ".".join(loc) or "(top level)"
    kind = err["type"]
    value = err.get("input")
    if kind == "extra_forbidden":
        parent = _model_at(loc[:-1])
        allowed = ", ".join(parent.model_fields) if parent and parent.model_fields else "see params.yaml comments"
        return f"{cut(path)}: unknown key (allowed: {allowed})"
    if kind == "union_tag_invalid" and loc[:2] == ["data", "buckets"]:
        got = value.get("kind") if isinstance(value, dict) else value
        return f"{path}.kind: {short(got)} is not a kind of bucket (allowed: {', '.join(BUCKET_KINDS)})"
    if kind == "union_tag_invalid" or kind == "union_tag_not_found":
        families = ", ".join((*PARITY_FAMILIES, "rnn_search", "xor_mlp"))
        got = value.get("family") if isinstance(value, dict) else value
        return f"{path}.family: {short(got)} is not a family (allowed: {families})"
    msg = err["msg"]
    if kind == "value_error":
        msg = msg.removeprefix("Value error, ")
        return f"{path}: {msg}" if path != "(top level)" else msg
    if kind == "finite_number":
        return f"{path}: {short(value)} is invalid: NaN and infinity are not allowed (give a finite number)"
    return f"{path}: {short(value)} is invalid: {msg}"


def _model_at(loc: list[str]) -> type[BaseModel] | None:
    """The schema model at a key path, for listing allowed keys."""
    model: Any = Params
    i = 0
    while i < len(loc):
        key = loc[i]
        if model is Params and key == "variants" and i + 1 < len(loc):
            return None if i + 2 < len(loc) and loc[i + 2] != "training" else _variant_model(loc, i)
        field = getattr(model, "model_fields", {}).get(key)
        if field is None:
            if model is Data and key == "buckets":
                return Bucket
            return None
        ann = field.annotation
        model = next((a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if model is None:
            if key == "buckets":
                return Bucket if i + 1 < len(loc) else None
            if key == "tolerances":
                return Tolerance
            return None
        i += 1
    return model


def _variant_model(loc: list[str], i: int) -> type[BaseModel] | None:
    if i + 2 < len(loc) and loc[i + 2] == "training":
        return TrainingOverride
    return None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate a params file; raise ParamsError with a one-line message."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found (run from the repository root)") from None
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise ParamsError(f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x} at line {line}); "
                          "save it as UTF-8") from None
    try:
        raw = yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506  (a SafeLoader)
    except DuplicateKeyError as e:
        raise ParamsError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ParamsError(f"{path}: malformed YAML{where}: {problem}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of keys at the top level, got {type(raw).__name__}")
    if unknown := [k for k in raw if k not in Params.model_fields]:  # fast, before pydantic sees 10^6 keys
        raise ParamsError(f"{path}: {cut(str(unknown[0]))}: unknown key "
                          f"(allowed: {', '.join(Params.model_fields)})")
    try:
        return Params.model_validate(raw)
    except ValidationError as e:
        first = e.errors(include_url=False)[0]
        # Variant-level errors: say which keys a variant of that family allows.
        raise ParamsError(f"{path}: {_format_variant_error(first, raw)}") from None


def _format_variant_error(err: dict[str, Any], raw: Any) -> str:
    loc = [str(p) for p in err["loc"]]
    if err["type"] == "extra_forbidden" and len(loc) == 4 and loc[0] == "variants":
        family_model = {"rnn_search": SearchVariant, "xor_mlp": XorVariant}.get(loc[2], ParityVariant)
        allowed = ", ".join(family_model.model_fields)
        return f"variants.{loc[1]}.{loc[3]}: unknown key for family {loc[2]} (allowed: {allowed})"
    return _format_error(err, raw)
