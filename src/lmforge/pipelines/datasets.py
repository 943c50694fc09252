"""Kedro datasets for lmforge's artifacts: the catalog does the I/O, nodes stay plain functions.

- ``JSONLinesDataset``: a list of dicts <-> one JSON object per line (documents, quarantine,
  instruction pairs). A malformed line is an error naming the file and line number.
- ``ArtifactDirectory``: a directory written by library code or a training job (tokenizer,
  token shards, checkpoints, packaged model). ``save(path)`` moves a finished staging directory
  into place atomically; ``load()`` returns the directory's path, or says which stage makes it
  (with ``missing_ok: true``, for an input a node can do without, the path even when absent).
- ``MetricsDataset``: a flat JSON metrics file for DVC (``data/08_reporting/<stage>.json``) whose
  numeric values are also logged to the active MLflow run under a stage prefix. No other metric of
  the run has such a name (per-step curves of the same quantities are ``<stage>.step.*``, see
  ``lmforge.tracking``), so what MLflow shows for ``<stage>.<key>`` is the file's value.
- ``AtomicPartitionedDataset``, ``AtomicJSONDataset``, ``AtomicTextDataset``: kedro-datasets'
  ``partitions.PartitionedDataset``, ``json.JSONDataset`` and ``text.TextDataset`` (also inside kedro-mlflow's
  ``MlflowArtifactDataset``), saving the way every dataset here does.

Every save is atomic against a kill (``lmforge.atomic``): a file is written beside it and renamed over it, a
directory is built in a staging directory and swapped in. A reader, DVC or the next run sees the old output or
the new one, never a half-written one. What a killed writer leaves is removed by ``lmforge.locks.remove_leftovers``
under the output's lock (``hooks.OutputLockHooks``).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from kedro.io import AbstractDataset, DatasetError
from kedro.io.core import get_filepath_str
from kedro_datasets.json import JSONDataset
from kedro_datasets.partitions import PartitionedDataset
from kedro_datasets.text import TextDataset

from lmforge import tracking
from lmforge.atomic import replace_directory, replace_file, staging_prefix, swap_in  # noqa: F401 (swap_in: re-exported)


class JSONLinesDataset(AbstractDataset[list, list]):
    def __init__(self, filepath: str, metadata: dict | None = None):
        self._filepath = Path(filepath)
        self.metadata = metadata

    def _load(self) -> list[dict]:
        records = []
        with open(self._filepath, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise DatasetError(f"{self._filepath}:{lineno}: malformed JSON line ({err.msg})") from None
        return records

    def _save(self, data: list[dict]) -> None:
        def write(fh: IO) -> None:
            for record in data:
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")

        replace_file(self._filepath, write, encoding="utf-8")

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}


class ArtifactDirectory(AbstractDataset[str, str]):
    """A directory artifact. ``load`` -> absolute path; ``save(staging_path)`` -> atomic move.

    ``missing_ok``: ``load`` returns the path of an absent directory too (``exists()`` stays False), for
    an input some runs do without (``pretrain_checkpoint`` when ``sft.base_model`` is set); the
    ``MissingInputHooks`` still stop a run that needs it.
    """

    def __init__(self, filepath: str, mlflow_artifact_path: str | None = None, missing_ok: bool = False,
                 metadata: dict | None = None):
        self._filepath = Path(filepath)
        self._mlflow_artifact_path = mlflow_artifact_path
        self._missing_ok = missing_ok
        self.metadata = metadata

    def _load(self) -> str:
        if not self._missing_ok and not self._exists():
            raise DatasetError(f"{self._filepath} does not exist or is empty: produce it first (see `dvc repro`).")
        return str(self._filepath.resolve())

    def _save(self, data: str) -> None:
        source = Path(data).resolve()
        target = self._filepath.resolve()
        if source == target:
            return
        if not source.is_dir():
            raise DatasetError(f"cannot save {self._filepath}: {source} is not a directory")
        target.parent.mkdir(parents=True, exist_ok=True)
        # Stage next to the target (same filesystem), then swap: readers never see a half copy.
        staging = Path(tempfile.mkdtemp(prefix=staging_prefix(target), dir=target.parent))
        staged = staging / target.name
        try:
            shutil.move(str(source), staged)
            swap_in(staged, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if self._mlflow_artifact_path:
            tracking.log_artifact_dir(target, self._mlflow_artifact_path)

    def _exists(self) -> bool:
        return self._filepath.is_dir() and any(self._filepath.iterdir())

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}


class LossCurveDataset(AbstractDataset[list, list]):
    """A stage's loss curve (a JSON list of ``{"step", "loss", "lr"}``; DVC plots read it).

    ``missing_ok``: ``load`` returns ``[]`` for an absent file, for the curve of a stage some runs skip
    (``pretrain_loss_curve`` when ``sft.base_model`` starts SFT from a Hugging Face model).
    """

    def __init__(self, filepath: str, missing_ok: bool = False, metadata: dict | None = None):
        self._filepath = Path(filepath)
        self._missing_ok = missing_ok
        self.metadata = metadata

    def _load(self) -> list:
        if self._missing_ok and not self._filepath.is_file():
            return []
        return json.loads(self._filepath.read_text(encoding="utf-8"))

    def _save(self, data: list) -> None:
        replace_file(self._filepath, lambda fh: fh.write(json.dumps(data)), encoding="utf-8")

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}


class MetricsDataset(AbstractDataset[dict, dict]):
    """Flat JSON metrics for DVC, mirrored into MLflow as ``<prefix>.<key>`` metrics.

    ``missing_ok``: ``load`` returns ``{}`` for an absent file (``exists()`` stays False), for the metrics of a
    stage some runs skip (``tokenizer_metrics`` when a base model brings its own tokenizer); the
    ``MissingInputHooks`` still stop a run that needs them.
    """

    def __init__(self, filepath: str, prefix: str, missing_ok: bool = False, metadata: dict | None = None):
        self._filepath = Path(filepath)
        self._prefix = prefix
        self._missing_ok = missing_ok
        self.metadata = metadata

    def _load(self) -> dict:
        if self._missing_ok and not self._filepath.is_file():
            return {}
        with open(self._filepath, encoding="utf-8") as fh:
            return json.load(fh)

    def _save(self, data: dict) -> None:
        text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        replace_file(self._filepath, lambda fh: fh.write(text), encoding="utf-8")
        tracking.log_metrics(data, prefix=self._prefix)

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "prefix": self._prefix}


class AtomicPartitionedDataset(PartitionedDataset):
    """kedro-datasets' ``PartitionedDataset`` whose save (with ``overwrite: true``, on the local filesystem)
    writes every partition into a staging directory beside the folder, then swaps it in."""

    def save(self, data: dict[str, Any]) -> None:
        if not self._overwrite or self._protocol not in ("file", None):
            super().save(data)
            return
        path = self._path

        def build(staged: Path) -> None:
            self._path = str(staged)  # _normalized_path and the partitions' paths follow it
            try:
                super(AtomicPartitionedDataset, self).save(data)
            finally:
                self._path = path

        replace_directory(path, build)
        self._invalidate_caches()


def _save_file(dataset: Any, write: Callable[[IO], None]) -> None:
    """Save through ``replace_file`` with the dataset's own open arguments (local files; others as before)."""
    save_path = get_filepath_str(dataset._get_save_path(), dataset._protocol)
    replace_file(save_path, write, **dataset._fs_open_args_save)
    dataset._invalidate_cache()


class AtomicJSONDataset(JSONDataset):
    """kedro-datasets' ``json.JSONDataset`` (same arguments), saved to a temporary file and renamed."""

    def save(self, data: Any) -> None:
        if self._protocol != "file":
            return super().save(data)
        _save_file(self, lambda fh: json.dump(data, fh, **self._save_args))


class AtomicTextDataset(TextDataset):
    """kedro-datasets' ``text.TextDataset`` (same arguments), saved to a temporary file and renamed."""

    def save(self, data: str) -> None:
        if self._protocol != "file":
            return super().save(data)
        _save_file(self, lambda fh: fh.write(data))
