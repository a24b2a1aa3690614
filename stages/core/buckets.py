"""The kinds of dataset a params.yaml bucket can be (``data.buckets.NAME.kind``) and the ``data``
section that holds them. How each kind is drawn: stages/pipeline/generate.py and structured.py.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Discriminator, Field, Tag, model_validator

from stages.core.schema import MAX_NAME, NAME, PosInt, Seed, Strict, memory_bytes, short

# A bucket is unpacked to one byte per bit while it is drawn and loaded, twice over at the peak:
# refuse one that cannot fit in half this machine's memory (len_1000000.count: 100000 asked
# for 11.6 GiB).
BYTES_PER_BIT = 2


class Bucket(Strict):
    """A set of random bit sequences with lengths uniform in [min_len, max_len] (kind: uniform)."""

    kind: Literal["uniform"] = "uniform"
    count: PosInt  # number of sequences
    min_len: PosInt  # shortest sequence
    max_len: PosInt  # longest sequence
    # Draw sequences not present in this other bucket where the length allows it
    # (the validation set is kept disjoint from the training set).
    disjoint_from: str | None = None

    @model_validator(mode="after")
    def _lengths_ordered(self) -> Bucket:
        if self.min_len > self.max_len:
            raise ValueError(
                f"min_len ({self.min_len}) must be <= max_len ({self.max_len})"
            )
        return self

    def max_bits(self) -> int:
        return self.count * self.max_len


# Structured held-out buckets: the inputs random bits never show a net trained on lengths
# 1-20 (a run of 200 zeros, a single 1 in a million). Never trained on; drawn by
# stages/pipeline/structured.py from the bucket's own seeded stream.
class _Structured(Strict):
    disjoint_from: ClassVar[None] = None  # only uniform buckets are drawn apart from another

    @model_validator(mode="after")
    def _lengths_ordered(self) -> _Structured:
        if self.min_len > self.max_len:
            raise ValueError(f"min_len ({self.min_len}) must be <= max_len ({self.max_len})")
        return self


class NeedleBucket(_Structured):
    """One ``1 - background`` bit among ``background`` bits, at the first, second, middle,
    last-but-one, last and two random positions, at lengths L - 1 and L for each L; plus the
    plain all-``background`` sequence of each length (so both parities of every length)."""

    kind: Literal["needles"]
    background: Literal[0, 1]
    lengths: Annotated[list[Annotated[int, Field(ge=2)]], Field(min_length=1)]

    @property
    def min_len(self) -> int:
        return min(self.lengths) - 1

    @property
    def max_len(self) -> int:
        return max(self.lengths)

    def max_bits(self) -> int:
        return 8 * sum(2 * n + 1 for n in self.lengths)


class DensityBucket(_Structured):
    """Bits drawn with P(1) = p_one (sparse or dense), lengths log-uniform in [min_len, max_len]."""

    kind: Literal["density"]
    p_one: Annotated[float, Field(gt=0, lt=1)]
    count: PosInt
    min_len: PosInt
    max_len: PosInt

    def max_bits(self) -> int:
        return self.count * self.max_len


class RunsBucket(_Structured):
    """Alternating runs of 0s and 1s with geometric lengths of mean ``mean_run``."""

    kind: Literal["runs"]
    mean_run: PosInt
    count: PosInt
    min_len: PosInt
    max_len: PosInt

    def max_bits(self) -> int:
        return self.count * self.max_len


class PeriodicBucket(_Structured):
    """Each pattern repeated, cut at a random phase to lengths log-uniform in [min_len, max_len]."""

    kind: Literal["periodic"]
    patterns: Annotated[list[Annotated[str, Field(pattern=r"^[01]{1,64}$")]], Field(min_length=1)]
    per_pattern: PosInt  # sequences per pattern
    min_len: PosInt
    max_len: PosInt

    def max_bits(self) -> int:
        return len(self.patterns) * self.per_pattern * self.max_len


class ExhaustiveBucket(_Structured):
    """Every bit sequence of length 1 to max_len: 2^(max_len + 1) - 2 of them. At 20 it is the
    whole training distribution; a net not 100% here has not learned parity even there."""

    kind: Literal["exhaustive"]
    max_len: Annotated[int, Field(gt=0, le=24)]  # 24: 33 million sequences, 0.8 GB of bits

    @property
    def min_len(self) -> int:
        return 1

    def max_bits(self) -> int:
        return self.max_len * 2 ** (self.max_len + 1)


BUCKET_KINDS = ("uniform", "needles", "density", "runs", "periodic", "exhaustive")
AnyBucket = Annotated[
    Annotated[Bucket, Tag("uniform")] | Annotated[NeedleBucket, Tag("needles")]
    | Annotated[DensityBucket, Tag("density")] | Annotated[RunsBucket, Tag("runs")]
    | Annotated[PeriodicBucket, Tag("periodic")] | Annotated[ExhaustiveBucket, Tag("exhaustive")],
    Discriminator(lambda v: v.get("kind", "uniform") if isinstance(v, dict) else getattr(v, "kind", "uniform")),
]


class Data(Strict):
    seed: Seed = 20261122  # the data seed; changing it regenerates every dataset
    # Safety limit on any sequence length: a typo like 10000000 would need gigabytes.
    max_len_limit: PosInt = 1_000_000
    buckets: dict[str, AnyBucket]  # name -> bucket; names are file names under data/

    @model_validator(mode="after")
    def _check_buckets(self) -> Data:
        memory = memory_bytes()
        for name, b in self.buckets.items():
            if not NAME.match(name) or name == "xor_gate" or len(name) > MAX_NAME:
                raise ValueError(f"bucket name {short(name)} must match [a-z][a-z0-9_]*, have at most "
                                 f"{MAX_NAME} characters and not be 'xor_gate'")
            need = b.max_bits() * BYTES_PER_BIT
            if memory and need > memory // 2:
                raise ValueError(f"buckets.{name}: {b.max_bits():,} bits at most need about "
                                 f"{need / 2**30:.1f} GiB while drawn and loaded; this machine has "
                                 f"{memory / 2**30:.0f} GiB (allowed: at most half of it)")
            if b.max_len > self.max_len_limit:
                raise ValueError(
                    f"buckets.{name}.max_len={b.max_len} exceeds max_len_limit={self.max_len_limit}"
                )
            if b.disjoint_from is not None and b.disjoint_from not in self.buckets:
                raise ValueError(
                    f"buckets.{name}.disjoint_from={b.disjoint_from!r} is not a bucket "
                    f"(allowed: {', '.join(self.buckets)})"
                )
        for name in self.buckets:
            chain = [name]
            while (nxt := self.buckets[chain[-1]].disjoint_from) is not None:
                if nxt in chain:
                    raise ValueError(f"buckets: disjoint_from forms a cycle: {' -> '.join([*chain, nxt])}")
                chain.append(nxt)
        return self
