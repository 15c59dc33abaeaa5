"""The artifact root's files as the service measures and removes them: the bytes under a path,
the stage folders (``stages/<kind>-<key>``, reference-counted by the ``stages`` rows), the
uploads' places and which of them a job's config names."""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from api.runtime.settings import Settings
from search.config import CHECKPOINTS

log = logging.getLogger("reskd.retention")

UPLOAD_KINDS = ("checkpoint", "dataset")
# what an upload or a delete leaves while it works (``.removing-``: renamed aside to be removed)
TEMP_PREFIXES = (".upload-", ".unpack-", ".removing-")
STAGE_FOLDER = re.compile(r"^(?P<kind>.+)-(?P<key>[0-9a-f]{12})(?P<partial>\.partial)?$")
StageId = tuple[str, str]  # (kind, key): a stage folder's name is ``<kind>-<key>``


def tree_bytes(path: Path) -> int:
    """Bytes of the regular files at or under ``path`` (their sizes, links not followed, as
    ``du --apparent-size --bytes`` counts files); 0 when nothing is there."""
    try:
        mode = path.lstat().st_mode
    except OSError:
        return 0
    if stat.S_ISREG(mode):
        return path.lstat().st_size
    total, folders = 0, [path] if stat.S_ISDIR(mode) else []
    while folders:
        try:
            with os.scandir(folders.pop()) as entries:
                for e in entries:
                    if e.is_dir(follow_symlinks=False):
                        folders.append(Path(e.path))
                    elif e.is_file(follow_symlinks=False):
                        total += _size(e)
        except OSError:  # removed while it was walked
            continue
    return total


def _size(entry: os.DirEntry[str]) -> int:
    try:
        return entry.stat(follow_symlinks=False).st_size
    except OSError:
        return 0


def stage_of(folder: str) -> StageId | None:
    """The (kind, key) of a folder of ``stages/`` (None: no stage's)."""
    found = None if folder.startswith(".") else STAGE_FOLDER.match(folder)
    return (found["kind"], found["key"]) if found else None


def named_uploads(settings: Settings, config: Mapping[str, Any]) -> set[tuple[str, str]]:
    """The uploads, (kind, name), that a job's config names: its checkpoints and its ``root``
    (stored resolved at submit; a sweep's base may give bare names)."""
    named = {
        ("checkpoint", _entry_of(settings.checkpoints_dir, config.get(f))) for f in CHECKPOINTS
    }
    named.add(("dataset", _entry_of(settings.datasets_dir, config.get("root"))))
    return {(kind, name) for kind, name in named if name is not None}


def _entry_of(directory: Path, given: Any) -> str | None:
    """The entry of ``directory`` that the path ``given`` is or lies in (a bare name: the entry
    of that name)."""
    if not isinstance(given, str) or not given:
        return None
    path = Path(given) if "/" in given else directory / given
    try:
        parts = path.resolve().relative_to(directory.resolve()).parts
    except (ValueError, OSError, RuntimeError):
        return None
    return parts[0] if parts else None


def upload_folder(settings: Settings, kind: str) -> Path:
    """Where uploads of ``kind`` (checkpoint or dataset) are kept."""
    if kind not in UPLOAD_KINDS:
        raise ValueError(f"kind: {kind!r} is not one of {', '.join(UPLOAD_KINDS)}")
    return settings.checkpoints_dir if kind == "checkpoint" else settings.datasets_dir


def upload_path(settings: Settings, kind: str, name: str) -> Path | None:
    """Where the upload ``name`` of ``kind`` is kept (None: ``name`` is no plain entry name)."""
    folder = upload_folder(settings, kind)
    if not name or name.startswith(".") or any(c in name for c in "/\\\0"):
        return None
    return folder / name


def stage_folders(settings: Settings, stage: StageId) -> list[Path]:
    """A stage's folder and the one it is computed in."""
    name = f"{stage[0]}-{stage[1]}"
    return [settings.stages_dir / name, settings.stages_dir / f"{name}.partial"]


def remove_path(root: Path, path: Path, removed: list[str]) -> int:
    """Remove the file or folder ``path``, renamed aside first (no half of it is ever seen under
    its name): its bytes, 0 when it was not there. What cannot be removed is logged and left
    to ``gc``."""
    if not os.path.lexists(path):
        return 0
    size = tree_bytes(path)
    aside = path.with_name(f".removing-{uuid.uuid4().hex[:12]}-{path.name}"[:250])
    try:
        os.replace(path, aside)
    except FileNotFoundError:  # removed meanwhile
        return 0
    except OSError as exc:
        log.warning("cannot remove %s (left for gc): %s", path, exc)
        return 0
    if aside.is_dir() and not aside.is_symlink():
        shutil.rmtree(aside, ignore_errors=True)
    else:
        aside.unlink(missing_ok=True)
    left = tree_bytes(aside)
    if left:
        log.warning("%s: %d bytes could not be removed (left for gc)", aside, left)
    removed.append(path.relative_to(root).as_posix())
    return size - left


def touched(path: Path) -> float:
    """When anything at or under ``path`` last changed (modified, or its metadata: an unpacked
    file may carry its archive's old time)."""
    paths = [path]
    if path.is_dir() and not path.is_symlink():
        for folder, dirs, files in os.walk(path):
            paths += [Path(folder, n) for n in (*dirs, *files)]
    return max(changed(p) for p in paths)


def changed(path: Path) -> float:
    try:
        st = path.lstat()
    except OSError:
        return 0.0
    return max(st.st_mtime, st.st_ctime)
