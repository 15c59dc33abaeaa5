"""The checks of an uploaded checkpoint before it is kept (``POST /v1/checkpoints``): first its
zip structure, read from the zip's directory without inflating anything, then what torch (or
safetensors) reads of it."""

from __future__ import annotations

import zipfile
from pathlib import Path

from starlette.exceptions import HTTPException

from api.http.datasets.archives import zip_entry_count
from api.http.errors import Refused

MAX_MEMBERS = 100_000  # a state dict's tensors and a few records more
MAX_CODE_BYTES = 16 << 20  # TorchScript's source and debug records, inflated, in all
METHODS = {zipfile.ZIP_DEFLATED: "deflate", zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma"}


def _too_large(detail: str) -> HTTPException:
    return HTTPException(413, f"body: {detail}")


def check_zip(path: Path, *, limit: int) -> None:
    """Refused unless the zip at ``path`` (``torch.save``'s, ``torch.jit.save``'s or
    ``torch.export.save``'s) reads back in about its own size: every member stored as it is, as
    torch writes tensors, but TorchScript's code (deflated, at most ``MAX_CODE_BYTES`` inflated),
    its members declaring at most ``limit`` bytes in all, its stored members no more than the
    file holds. A file that is no zip passes (torch's legacy format, ``.safetensors``)."""
    with path.open("rb") as f:
        if f.read(4) != b"PK\x03\x04":
            return
    count = zip_entry_count(path)
    if count is not None and count > MAX_MEMBERS:
        raise _too_large(f"the zip has more than {MAX_MEMBERS} members")
    try:
        with zipfile.ZipFile(path) as z:
            members = z.infolist()
    except (zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise Refused(f"body: a damaged zip ({type(exc).__name__})") from None
    declared = sum(m.file_size for m in members)
    if declared > limit:
        raise _too_large(
            f"the zip's members declare {declared} bytes in all, more than the upload limit "
            f"of {limit} bytes (RESKD_MAX_CHECKPOINT_BYTES)"
        )
    stored = [m for m in members if m.compress_type == zipfile.ZIP_STORED]
    size = path.stat().st_size
    if sum(m.file_size for m in stored) > size:
        raise _too_large(f"the zip's members overlap: they declare more than its {size} bytes")
    for m in stored:
        if m.file_size != m.compress_size:
            raise Refused(
                f"body: the zip member {m.filename[:200]!r} declares {m.file_size} bytes but "
                f"stores {m.compress_size}"
            )
    packed = [m for m in members if m.compress_type != zipfile.ZIP_STORED]
    for m in packed:
        if "/code/" not in f"/{m.filename}":  # torch.jit.save deflates its code/ only
            method = METHODS.get(m.compress_type, f"method {m.compress_type}")
            raise Refused(
                f"body: the zip member {m.filename[:200]!r} is compressed ({method}); torch.save "
                "stores every member as it is, so upload the file torch.save wrote"
            )
    if sum(m.file_size for m in packed) > MAX_CODE_BYTES:
        raise _too_large(f"the zip's compressed code inflates to more than {MAX_CODE_BYTES} bytes")


def check_upload(path: Path, *, teacher: str | None, dataset: str | None, limit: int) -> None:
    """Refused (one line) unless ``path`` passes ``check_zip`` and is a state dict torch loads
    with ``weights_only=True`` (or a ``.safetensors`` file) or, with ``teacher`` naming a program
    kind, such a program; with ``teacher`` and ``dataset``, it must fit that architecture and
    the dataset's classes. Blocking: run it in a thread."""
    from distill.catalog import DatasetEntry, DatasetError, dataset_entry
    from distill.teachers import CheckpointError, check_teacher_file, read_state_dict

    check_zip(path, limit=limit)
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
