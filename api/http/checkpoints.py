"""The check of an uploaded checkpoint before it is kept (``POST /v1/checkpoints``)."""

from __future__ import annotations

from pathlib import Path

from api.http.errors import Refused


def check_upload(path: Path, *, teacher: str | None, dataset: str | None) -> None:
    """Refused (one line) unless ``path`` is a state dict torch loads with ``weights_only=True``
    (or a ``.safetensors`` file) or, with ``teacher`` naming a program kind, such a program; with
    ``teacher`` and ``dataset``, it must fit that architecture and the dataset's classes."""
    from distill.catalog import DatasetEntry, DatasetError, dataset_entry
    from distill.teachers import CheckpointError, check_teacher_file, read_state_dict

    entry: DatasetEntry | None = None
    if dataset is not None:
        try:
            entry = dataset_entry(dataset)
        except DatasetError as exc:
            raise Refused(str(exc)) from None
    info = entry.info if entry else None
    try:
        if teacher is None:
            read_state_dict(path)
            return
        known = entry is not None and not entry.from_data  # classes from the data: at submit
        check_teacher_file(
            path, teacher, num_classes=info.num_classes if known and info else None,
            input_shape=info.input_shape if info else (3, 224, 224),
        )  # fmt: skip
    except CheckpointError as exc:
        raise Refused(f"body: {exc}") from None
