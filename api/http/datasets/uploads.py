"""What ``POST /v1/datasets`` keeps: an ImageFolder archive, checked member by member before
anything is written, unpacked beside its final place, then renamed into it."""

from __future__ import annotations

import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from api.http.datasets.archives import Archive, Exists, Refused, TooLarge, opener, too_many
from api.http.datasets.listing import upload_entry
from api.http.schemas import DatasetPublic
from api.runtime.settings import Settings
from distill.datasets.folders import IMAGE_SUFFIXES, SAMPLE, SPLITS, differ

CHUNK = 1 << 20  # bytes copied at a time while unpacking
_placing = threading.Lock()  # a name's check and its rename, one upload at a time


def exists_refusal(name: str) -> Exists:
    return Exists(f"name: a dataset {name!r} was uploaded already; choose another name")


def store(*, body: Path, name: str, settings: Settings) -> DatasetPublic:
    """Check the archive at ``body``, unpack it beside its place and rename it there as the
    upload ``name``. Blocking: run it in a thread."""
    final = settings.datasets_dir / name
    if final.exists():
        raise exists_refusal(name)
    settings.datasets_dir.mkdir(parents=True, exist_ok=True)
    opened = opener(body, settings)
    with opened() as archive:
        members = _layout(_checked(archive.entries(), settings, body.stat().st_size))
    work = Path(tempfile.mkdtemp(prefix=".unpack-", dir=settings.datasets_dir))
    try:
        with opened() as archive:
            _unpack(archive, members, work, settings.max_dataset_unpacked_bytes)
        _verify(work, members)
        with _placing:
            if final.exists():
                raise exists_refusal(name)
            work.rename(final)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # gone already once renamed
    return upload_entry(settings, name)


@dataclass(frozen=True)
class _Member:
    name: str  # as the archive spells it
    parts: tuple[str, ...]  # split, class, file (under the one top folder, if any)
    size: int  # as the archive declares it


def _shown(name: str) -> str:
    return repr(name[:200] + ("..." if len(name) > 200 else ""))


def _parts(name: str) -> tuple[str, ...]:
    shown = _shown(name)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise Refused(f"body: the member name {shown} is not UTF-8") from None
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        raise Refused(f"body: {shown} is an absolute path; members are train/<class>/<image>")
    if "\\" in name or "\x00" in name:
        raise Refused(f"body: {shown} holds a backslash or NUL; separate folders with /")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise Refused(f"body: {shown} climbs out of its folder with '..'")
    if not parts:
        raise Refused(f"body: a member has the empty name {shown}")
    return parts


def _skipped(parts: tuple[str, ...]) -> bool:
    """macOS's metadata that its archivers add beside the files: not stored."""
    return parts[0] == "__MACOSX" or parts[-1] == ".DS_Store" or parts[-1].startswith("._")


def _checked(
    entries: Iterator[tuple[str, str, int]], settings: Settings, archive_bytes: int
) -> list[_Member]:
    """Every member's name and type; the files' declared sizes against the limits (in all, and
    as a multiple of the archive's own size). Stops at the first refusal, before reading
    further."""
    limit, most = settings.max_dataset_unpacked_bytes, settings.max_dataset_members
    inflation = settings.max_dataset_inflation
    files: list[_Member] = []
    total = 0
    for count, (name, kind, size) in enumerate(entries, 1):
        if count > most:
            raise too_many(most)
        parts = _parts(name)
        if kind not in ("file", "folder"):
            raise Refused(f"body: {_shown(name)} is a {kind}; only image files and folders")
        if kind == "folder" or _skipped(parts):
            continue
        total += size
        if total > limit:
            raise TooLarge(
                f"body: the archive's files unpack to more than {limit} bytes "
                f"(passed at {_shown(name)})"
            )
        if total > inflation * archive_bytes:
            raise TooLarge(
                f"body: the archive's files declare more than {inflation:g} times the archive's "
                f"{archive_bytes} bytes (passed at {_shown(name)}; RESKD_MAX_DATASET_INFLATION)"
            )
        if not parts[-1].lower().endswith(IMAGE_SUFFIXES):
            raise Refused(
                f"body: {_shown(name)} is not an image file; allowed: {' '.join(IMAGE_SUFFIXES)}"
            )
        files.append(_Member(name, parts, size))
    return files


def _layout(files: list[_Member]) -> list[_Member]:
    """train/<class>/<image> and val/<class>/<image> or test/<class>/<image> (all under one top
    folder, or none), with the same classes in both splits."""
    tops = {m.parts[0] for m in files}
    strip = len(tops) == 1 and not tops & set(SPLITS) and all(len(m.parts) > 1 for m in files)
    members, seen = [], set()
    for m in files:
        parts = m.parts[1:] if strip else m.parts
        if len(parts) != 3 or parts[0] not in SPLITS:
            raise Refused(
                f"body: {_shown(m.name)} is not <split>/<class>/<image> with split train, val or "
                "test (all under one top folder, or none)"
            )
        if parts in seen:
            raise Refused(f"body: {_shown(m.name)} appears twice")
        seen.add(parts)
        members.append(_Member(m.name, parts, m.size))
    classes = {s: sorted({m.parts[1] for m in members if m.parts[0] == s}) for s in SPLITS}
    if not classes["train"]:
        raise Refused("body: no train/<class>/<image> in the archive")
    held = [s for s in SPLITS[1:] if classes[s]]
    if not held:
        raise Refused("body: no val/<class>/<image> (or test/<class>/<image>) in the archive")
    if len(held) > 1:
        raise Refused("body: both val/ and test/; the loader reads val/ only, so keep one")
    if classes[held[0]] != classes["train"]:
        raise Refused(f"body: {differ(classes['train'], classes[held[0]], held[0])}")
    return members


def _unpack(archive: Archive, members: list[_Member], work: Path, limit: int) -> None:
    """The members' bytes into ``work``, counted as they inflate (a member may not pass its
    declared size, nor all of them ``limit``)."""
    wanted = {m.name: m for m in members}
    total, written = 0, set()
    for name, source in archive.files(set(wanted)):
        member = wanted[name]
        dest = work.joinpath(*member.parts)
        dest.parent.mkdir(parents=True, exist_ok=True)
        size = 0
        with dest.open("xb") as out:
            while chunk := source.read(CHUNK):
                size += len(chunk)
                total += len(chunk)
                if size > member.size or total > limit:
                    raise TooLarge(f"body: {_shown(name)} inflates beyond its declared size")
                out.write(chunk)
        if size != member.size:
            raise Refused(f"body: {_shown(name)} is shorter than the archive declares")
        written.add(name)
    if len(written) != len(wanted):
        raise Refused("body: a damaged archive (members listed but not found)")


def _verify(work: Path, members: list[_Member]) -> None:
    """Pillow decodes a sample: the first image of each class of each split."""
    first: dict[tuple[str, ...], _Member] = {}
    for m in members:
        first.setdefault(m.parts[:2], m)
    most = Image.MAX_IMAGE_PIXELS
    for m in list(first.values())[: 2 * SAMPLE]:
        try:
            with Image.open(work.joinpath(*m.parts)) as image:
                pixels = image.width * image.height
                if most is None or pixels <= most:
                    image.load()
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise Refused(
                f"body: {_shown(m.name)} is not an image Pillow reads ({type(exc).__name__})"
            ) from None
        if most is not None and pixels > most:
            raise Refused(f"body: {_shown(m.name)} has more than {most} pixels")
