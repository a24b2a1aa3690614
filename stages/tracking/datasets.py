"""The pipeline's datasets as MLflow datasets: a DVC-tracked file at a git revision.

``data/NAME.npz`` is a DVC output, not a file in git, so its MLflow source is the DVC path
with the git revision it was recorded at and its DVC cache key (md5); the dataset's name
is the bucket and its digest the file's sha256 from ``data/NAME.json``, cut to the 32 hex
digits MLflow's ``digest`` column holds (36 at most); the whole sha256 is in the source.
Logged with a context (``training``, ``validation``, ``evaluation``), they fill the runs
table's Dataset column and answer ``dataset.name`` / ``dataset.digest`` filters.

Importing this module imports mlflow (the tracking package imports it on first use).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from mlflow import MlflowClient
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.dataset_source_registry import register_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import DatasetInput, InputTag
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from stages.tracking.inputs import DataRef
from stages.tracking.store import INSERT_RACE, retry

DIGEST_CHARS = 32  # of the sha256's 64 hex digits; MLflow stores at most 36


class DvcDatasetSource(DatasetSource):
    """A file DVC tracks: ``path`` in ``repo`` at git commit ``rev``, with DVC cache key ``md5``."""

    def __init__(self, path: str, rev: str | None, md5: str | None, sha256: str, repo: str | None = None):
        self.path, self.rev, self.md5, self.sha256, self.repo = path, rev, md5, sha256, repo

    @staticmethod
    def _get_source_type() -> str:
        return "dvc"

    def load(self, dst_path: str | None = None) -> str:
        """Fetch the file through DVC (its cache or remote) into ``dst_path``; -> the local path."""
        import tempfile
        from pathlib import Path

        from dvc.api import DVCFileSystem

        dst = Path(dst_path or tempfile.mkdtemp()) / Path(self.path).name
        DVCFileSystem(self.repo, rev=self.rev).get_file(self.path, str(dst))
        return str(dst)

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return False  # built from dvc.lock, never guessed from a string

    @classmethod
    def _resolve(cls, raw_source: Any) -> DvcDatasetSource:
        raise NotImplementedError("a DVC dataset source is built from dvc.lock")

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "rev": self.rev, "md5": self.md5, "sha256": self.sha256, "repo": self.repo}

    @classmethod
    def from_dict(cls, source_dict: dict[str, Any]) -> DvcDatasetSource:
        return cls(**{k: source_dict.get(k) for k in ("path", "rev", "md5", "sha256", "repo")})


register_dataset_source(DvcDatasetSource)  # so mlflow.data.get_source() can read it back


class _Dataset(MetaDataset):
    """A MetaDataset with a profile (the manifest's counts), shown in the UI's dataset drawer."""

    def __init__(self, source: DatasetSource, name: str, digest: str, profile: dict[str, Any]):
        self._profile = profile
        super().__init__(source, name=name, digest=digest)

    @property
    def profile(self) -> dict[str, Any]:
        return self._profile

    def to_dict(self) -> dict[str, str]:
        return super().to_dict() | {"profile": json.dumps(self._profile)}


def dataset_input(ref: DataRef, rev: str | None, repo: str | None) -> DatasetInput:
    """The MLflow dataset input for ``ref`` recorded at git commit ``rev`` of ``repo``."""
    source = DvcDatasetSource(ref.path, rev, ref.md5, ref.sha256, repo)
    ds = _Dataset(source, ref.name, ref.sha256[:DIGEST_CHARS], ref.profile)
    return DatasetInput(dataset=ds._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, ref.context)])


def log_inputs(run_id: str, refs: Iterable[DataRef], rev: str | None, repo: str | None) -> None:
    """Log ``refs`` as the run's dataset inputs, their sources at git commit ``rev`` of ``repo``."""
    inputs = [dataset_input(ref, rev, repo) for ref in refs]
    if inputs:
        # Parallel sweep trials starting together insert the same new dataset: retried, it is found.
        retry(MlflowClient().log_inputs, run_id, datasets=inputs, races=INSERT_RACE)
