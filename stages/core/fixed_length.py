"""The schema of params.yaml's ``fixed_length`` section: the fixed-length study (stages ``fixedlen-*``).

Why does an LSTM learn parity from strings of lengths 1-50 but stay at chance on strings all
of length 50? The study trains the same net on strings all of one length L, measures the
gradient's parity signal against its batch-to-batch noise, and mixes a few short strings into
length-50 data. Kept out of params.py (which imports it) so that file stays small; its own
``Strict`` base repeats params.py's settings, since importing them would be a circle.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_STUDY_LEN = 1000  # a cell's strings are padded in memory: train_count x L bytes
MAX_STUDY_SEEDS = 1000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


Length = Annotated[int, Field(ge=1, le=MAX_STUDY_LEN)]
Fraction = Annotated[float, Field(gt=0, lt=1)]
Seeds = Annotated[int, Field(ge=1, le=MAX_STUDY_SEEDS)]


class FixedLength(_Strict):
    """One cell per (length, seed): the variant trained on strings all of that length."""

    # The torch parity variant studied: its family, size and `training` settings (lr, batch,
    # clipping, input noise); the study sets its own budget, evaluation and stopping below.
    variant: str = "lstm"
    lengths: Annotated[list[Length], Field(min_length=1)] = [2, 4, 6, 8, 10, 12, 14, 16, 20, 30, 50]
    seeds: Seeds = 2  # training seeds 0..seeds-1 per cell; 2 keeps `make repro` under 3 CPU minutes
    # The same step budget for every cell and mixing run: "never" means "not within this many".
    max_steps: Annotated[int, Field(ge=1, le=1_000_000)] = 600
    eval_every: Annotated[int, Field(ge=1)] = 50  # steps between validation passes
    # A cell has learned at its first 100% validation; it stops after this many in a row
    # (no contraction phase: the question is whether it learns at all).
    patience: Annotated[int, Field(ge=1)] = 2
    # Training strings per cell, drawn once per length (seeded by data.seed), the request's
    # 100,000: below length 17 they repeat every string of that length.
    train_count: Annotated[int, Field(ge=2, le=1_000_000)] = 100_000
    # Held-out strings per set: validation and test at length L (not in the training set where
    # 2^L allows), and test at lengths long_min-long_max; 500 perfect answers rule out error
    # rates above 0.6% (95%).
    eval_count: Annotated[int, Field(ge=1, le=100_000)] = 500
    long_min: Length = 50
    long_max: Length = 100
    # The gradient signal: batches (of training.batch_size) per estimate at initialisation,
    # and the steps of each cell's training at which it is measured again (fewer batches).
    signal_batches: Annotated[int, Field(ge=2, le=100_000)] = 64
    signal_train_batches: Annotated[int, Field(ge=2, le=100_000)] = 8
    signal_steps: list[Annotated[int, Field(ge=1)]] = [300, 600]
    # Up to this length the signal is exact, a mean over every string (2^L of them, in float64):
    # sampled, even length 2 sits under the noise floor. 12 costs ~0.5 s a measurement; 2^20 is
    # the most memory and time allow.
    signal_exact_max: Annotated[int, Field(ge=0, le=20)] = 12
    # Mixing: length-mix_length strings with a fraction f of lengths 1-mix_short_max.
    mix_length: Length = 50
    mix_short_max: Length = 20
    mix_fractions: Annotated[list[Fraction], Field(min_length=1)] = [0.001, 0.01, 0.1, 0.2, 0.5]
    mix_seeds: Seeds = 1  # a mixed batch (lengths 1-50) costs ~3x a fixed-length one
    # data/ buckets every mixing run is also judged on (structured ones are cheap and telling).
    mix_buckets: list[str] = ["needles_0_short", "needles_1_short"]

    @field_validator("lengths", "mix_fractions", "signal_steps")
    @classmethod
    def _distinct(cls, values: list) -> list:
        if len(set(values)) != len(values):
            raise ValueError(f"{values} repeats a value (allowed: distinct values)")
        return values

    @model_validator(mode="after")
    def _check(self) -> FixedLength:
        if self.long_min > self.long_max:
            raise ValueError(f"long_min={self.long_min} exceeds long_max={self.long_max} "
                             "(allowed: long_min <= long_max)")
        late = [s for s in self.signal_steps if s % self.eval_every or s > self.max_steps]
        if late:
            raise ValueError(f"signal_steps: {late} are not evaluation steps (allowed: multiples of "
                             f"eval_every={self.eval_every} up to max_steps={self.max_steps})")
        return self
