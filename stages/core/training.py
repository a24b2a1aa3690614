"""The ``training`` section of params.yaml: the gradient trainers' settings, a variant's
overrides of them, and the notebook preset. How a variant's settings are resolved:
``resolved_training`` in params.py.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from stages.core.schema import MAX_BATCH, PosFloat, PosInt, Strict


class Training(Strict):
    """Settings of the gradient trainers; a variant's ``training:`` block overrides them."""

    train_bucket: str = "train"  # bucket the mini-batches are drawn from
    val_bucket: str = "val"  # bucket for early stopping (same length distribution)
    # Held-out bucket probed (a fixed subset of probe_count sequences) only to record
    # "steps until 100% on long sequences"; never used for stopping or selection.
    probe_bucket: str | None = "len_50_100"
    probe_count: PosInt = 500
    # 256 learns parity in a few hundred LSTM steps and trains ~3x as many sequences per
    # second as 64 (per-step overhead dominates tiny nets); 10 (the notebook) is too noisy.
    batch_size: Annotated[int, Field(gt=0, le=MAX_BATCH)] = 256
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: PosFloat = 0.01  # Adam at 1e-2 as in the notebook; clipping keeps it stable
    clip_grad_norm: PosFloat | None = 1.0  # gradient-norm clipping; null disables (notebook)
    # Std of Gaussian noise added to every input bit during training (never at evaluation).
    # A net that must stay right under perturbed inputs settles into two saturated,
    # attracting states (even/odd), and those carry a length-20 solution to length 10^6;
    # without it gru, keras_lstm and some lstm seeds drift off at lengths 1,000-10,000.
    input_noise: Annotated[float, Field(ge=0)] = 0.1
    max_steps: PosInt = 10_000  # optimizer steps at most (early stopping usually ends sooner)
    eval_every: PosInt = 50  # steps between validation passes
    # Stop once validation accuracy has been 1.0 at this many consecutive evaluations;
    # 0 disables early stopping (the notebook trains its fixed number of episodes).
    patience: Annotated[int, Field(ge=0)] = 4
    # Length curriculum: start with sequences up to this length and raise the cap by
    # one whenever validation accuracy on the current cap reaches 1.0; null disables.
    curriculum_start: PosInt | None = None
    checkpoint_every: PosInt = 500  # steps between resumable checkpoints
    # The contraction phase (models/torch_rnn/contraction.py, models/keras_lstm/contraction.py):
    # once validation first reaches 100%, add contraction_weight x mean relu(||d state'/d state||_F
    # - contraction_rho)^2 at the states training sequences reach, under inputs 0 and 1; early
    # stopping then counts only that phase. Without it gru, manual_lstm and keras_lstm answer
    # `1` + 200 zeros "even" (the odd state drifts under a long run); with it every default
    # variant is right on every structured bucket, and lstm / manual_lstm on 10 of 10 seeds
    # (5 and 4 of 10 without). 0 disables.
    contraction_weight: Annotated[float, Field(ge=0)] = 10.0
    # Contraction asked of every step: the fixed points under input 0 end with largest
    # singular values 0.29-0.48 (0.8-5.5 without the phase), so no slow direction is left.
    contraction_rho: PosFloat = 0.5


NULLABLE_TRAINING = ("probe_bucket", "clip_grad_norm", "curriculum_start")  # null disables them


class TrainingOverride(Strict):
    """Same keys as ``training``, all optional; an explicit null means null (no default)."""

    @model_validator(mode="after")
    def _null_only_where_allowed(self) -> TrainingOverride:
        for key in self.model_fields_set:
            if getattr(self, key) is None and key not in NULLABLE_TRAINING:
                default = Training.model_fields[key].default
                raise ValueError(f"{key}: null is not allowed here (give a value, e.g. {default!r}, "
                                 "or leave the key out for the default)")
        return self

    train_bucket: str | None = None
    val_bucket: str | None = None
    probe_bucket: str | None = None
    probe_count: PosInt | None = None
    batch_size: Annotated[int, Field(gt=0, le=MAX_BATCH)] | None = None
    optimizer: Literal["adam", "sgd"] | None = None
    lr: PosFloat | None = None
    clip_grad_norm: PosFloat | None = None
    input_noise: Annotated[float, Field(ge=0)] | None = None
    max_steps: PosInt | None = None
    eval_every: PosInt | None = None
    patience: Annotated[int, Field(ge=0)] | None = None
    curriculum_start: PosInt | None = None
    checkpoint_every: PosInt | None = None
    contraction_weight: Annotated[float, Field(ge=0)] | None = None
    contraction_rho: PosFloat | None = None


# The notebook's exact hyperparameters: hidden size 8, Adam 1e-2, batch 10,
# 1,000 episodes, no clipping, no input noise, no early stopping.
NOTEBOOK = {
    "batch_size": 10,
    "optimizer": "adam",
    "lr": 0.01,
    "clip_grad_norm": None,
    "input_noise": 0.0,
    "max_steps": 1000,
    "patience": 0,
    "curriculum_start": None,
    "contraction_weight": 0.0,
}
