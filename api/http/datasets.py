"""The service's image data: what ``GET /v1/datasets`` lists (the shipped datasets, the uploads,
and the image folders and CIFAR roots found at or directly under each data root) and what
``POST /v1/datasets`` keeps (an ImageFolder archive, checked member by member before anything is
written, unpacked beside its final place, then renamed into it).

Listing decodes no image: counts come from folder listings, sizes from the headers of a sample
(the first image of each class, up to ``SAMPLE`` per split), and a dataset's facts are kept while
the modification times of its folders stay the same.
"""

from __future__ import annotations

import gzip
import os
import pickle
import re
import shutil
import stat
import tarfile
import tempfile
import threading
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal, Protocol

from PIL import Image
from torchvision import datasets as tvd

from api.http.schemas import DatasetPublic
from api.runtime.settings import Settings
from distill.data import DATASETS, load_dataset, num_samples

# The suffixes torchvision's ImageFolder reads (its IMG_EXTENSIONS); it skips every other file.
IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")
SPLITS = ("train", "val", "test")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
NAME = re.compile(NAME_PATTERN)
SAMPLE = 32  # images whose size is read per split: the first of each of this many classes
CHUNK = 1 << 20
MAX_READ = 8 << 20  # the largest one read of a tar stream (a pax or long-name header's data)
KEPT = 512  # datasets whose facts are kept
CIFAR: dict[str, type[tvd.CIFAR10]] = {"cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100}
Kind = Literal["imagefolder", "cifar10", "cifar100"]
CIFAR_KINDS: tuple[Kind, ...] = ("cifar10", "cifar100")


class Refused(ValueError):
    """An upload that is not stored; ``status`` is its HTTP status."""

    status = 400


class TooLarge(Refused):
    status = 413


class Exists(Refused):
    status = 409


@dataclass(frozen=True)
class Facts:
    """What a dataset holds, read without decoding its images."""

    classes: tuple[str, ...] = ()
    train: int = 0
    test: int = 0
    width: int | None = None
    height: int | None = None
    mixed: bool = False
    mode: str | None = None
    problem: str | None = None


# --------------------------------------------------------------------------------------------
# The listing
# --------------------------------------------------------------------------------------------


def listing(settings: Settings) -> list[DatasetPublic]:
    """Every dataset a job over the API can use: shipped, uploaded, then under each data root."""
    rows = [_shipped_entry(name) for name, info in DATASETS.items() if not info.needs_root]
    rows += [upload_entry(settings, name) for name in uploaded_names(settings)]
    for data_root in settings.data_roots:
        for path in _candidates(data_root):
            for kind in _kinds(path):
                rows.append(_root_entry(path, kind))
    return rows


def uploaded_names(settings: Settings) -> list[str]:
    try:
        entries = list(os.scandir(settings.datasets_dir))
    except OSError:  # none uploaded yet
        return []
    return sorted(e.name for e in entries if NAME.match(e.name) and e.is_dir(follow_symlinks=False))


def upload_root(settings: Settings, name: str) -> Path | None:
    """The folder of the upload ``name``, if there is one."""
    if not NAME.match(name):
        return None
    path = settings.datasets_dir / name
    return path.resolve() if path.is_dir() else None


def upload_entry(settings: Settings, name: str) -> DatasetPublic:
    path = settings.datasets_dir / name
    facts = _folder(path)
    return _entry(name, "imagefolder", "upload", "imagefolder", name, facts, channels=3)


@cache
def _shipped_facts(name: str) -> Facts:
    bundle = load_dataset(name, augment=False)
    size = bundle.info.image_size
    return Facts(
        bundle.info.classes,
        num_samples(bundle.train),
        num_samples(bundle.test),
        size,
        size,
    )


def _shipped_entry(name: str) -> DatasetPublic:
    info = DATASETS[name]
    facts = _shipped_facts(name)
    return _entry(name, "shipped", "package", name, None, facts, channels=info.in_chans)


def _root_entry(path: Path, kind: Kind) -> DatasetPublic:
    facts = _folder(path) if kind == "imagefolder" else _cifar(path, kind)
    channels = 3  # CIFAR is RGB; folders are read as RGB whatever their files hold
    return _entry(_text(path.name), kind, "data_root", kind, str(path), facts, channels=channels)


def _entry(
    name: str,
    kind: Literal["shipped", "imagefolder", "cifar10", "cifar100"],
    source: Literal["package", "upload", "data_root"],
    dataset: str,
    root: str | None,
    facts: Facts,
    *,
    channels: int,
) -> DatasetPublic:
    return DatasetPublic(
        name=name,
        kind=kind,
        source=source,
        dataset=dataset,
        root=root,
        num_classes=len(facts.classes),
        classes=list(facts.classes),
        train_images=facts.train,
        test_images=facts.test,
        width=facts.width,
        height=facts.height,
        mixed_sizes=facts.mixed,
        channels=channels,
        mode=facts.mode,
        problem=facts.problem,
    )


def _candidates(data_root: Path) -> list[Path]:
    """The data root and the folders directly in it that a job's ``root`` may name (a link
    that leaves the data root may not: it is not listed)."""
    try:
        base = data_root.resolve()
        children = sorted(e.path for e in os.scandir(base) if e.is_dir() and e.name[:1] != ".")
    except OSError:  # missing or unreadable: nothing to list
        return []
    found = [base]
    for child in children:
        resolved = Path(child).resolve()
        if resolved.is_relative_to(base) and _text(resolved.name) == resolved.name:
            found.append(resolved)
    return found


def _kinds(path: Path) -> list[Kind]:
    kinds = [k for k in CIFAR_KINDS if (path / CIFAR[k].base_folder).is_dir()]
    if (path / "train").is_dir() and any((path / s).is_dir() for s in SPLITS[1:]):
        kinds.append("imagefolder")
    return kinds


_kept: OrderedDict[tuple[Any, ...], Facts] = OrderedDict()
_kept_lock = threading.Lock()


def _kept_facts(key: tuple[Any, ...], compute: Callable[[], Facts]) -> Facts:
    with _kept_lock:
        if key in _kept:
            _kept.move_to_end(key)
            return _kept[key]
    facts = compute()  # outside the lock: two first listings may both compute, the same facts
    with _kept_lock:
        _kept[key] = facts
        while len(_kept) > KEPT:
            _kept.popitem(last=False)
    return facts


def _unreadable(exc: OSError) -> Facts:
    return Facts(problem=f"cannot be read ({type(exc).__name__})")


def _folder(path: Path) -> Facts:
    try:
        key = ("folder", str(path), _signature(path))
    except OSError as exc:
        return _unreadable(exc)
    return _kept_facts(key, lambda: _folder_facts(path))


def _signature(path: Path) -> tuple[Any, ...]:
    """Modification times of the folder, its splits and their entries: adding or removing an
    image changes its class folder's."""
    parts: list[Any] = [path.stat().st_mtime_ns]
    for split in SPLITS:
        d = path / split
        if d.is_dir():
            entries = sorted((e.name, e.stat().st_mtime_ns) for e in os.scandir(d))
            parts.append((split, d.stat().st_mtime_ns, tuple(entries)))
    return tuple(parts)


def _folder_facts(path: Path) -> Facts:
    """An image folder as torchvision's ImageFolder reads it: classes are the sorted folder
    names under train/, images the files with an image suffix under each (at any depth)."""
    try:
        return _read_folder(path)
    except OSError as exc:
        return _unreadable(exc)


def _read_folder(path: Path) -> Facts:
    problems: list[str] = []
    train = _split(path, "train", problems)
    test_split = next((s for s in SPLITS[1:] if (path / s).is_dir()), "val")
    annotations = path / test_split / "val_annotations.txt"
    if annotations.is_file():  # Tiny-ImageNet's val/images + val_annotations.txt
        lines = annotations.read_text(errors="replace").splitlines()
        test_count = sum(1 for line in lines if line.strip())
    else:
        test = _split(path, test_split, problems)
        test_count = sum(test.values())
        if list(test) != list(train):
            problems.append(_differ(list(train), list(test), test_split))
    classes = tuple(train)
    width = height = mode = None
    mixed = False
    sizes: list[tuple[int, int]] = []
    for relative in _samples(path, classes):
        try:
            with Image.open(path / relative) as image:
                sizes.append(image.size)
                mode = mode or image.mode
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            problems.append(
                f"{_text(str(relative))}: not an image Pillow reads ({type(exc).__name__})"
            )
    if sizes:
        (width, height), mixed = sizes[0], len(set(sizes)) > 1
    return Facts(
        tuple(_text(c) for c in classes),
        sum(train.values()),
        test_count,
        width,
        height,
        mixed,
        mode,
        problems[0] if problems else None,
    )


def _split(path: Path, split: str, problems: list[str]) -> dict[str, int]:
    """Images per class folder of one split, in torchvision's class order."""
    folder = path / split
    counts: dict[str, int] = {}
    if not folder.is_dir():
        problems.append(f"no {split}/ folder")
        return counts
    for name in sorted(e.name for e in os.scandir(folder) if e.is_dir()):
        counts[name] = _count(folder / name)
        if counts[name] == 0:
            problems.append(f"{split}/{_text(name)}/ holds no image ({' '.join(IMAGE_SUFFIXES)})")
    if not counts:
        problems.append(f"{split}/ holds no class folder")
    return counts


def _count(folder: Path) -> int:
    return sum(
        1
        for _, _, files in os.walk(folder)  # links not followed: a cycle cannot hang a listing
        for f in files
        if f.lower().endswith(IMAGE_SUFFIXES)
    )


def _first(folder: Path) -> Path | None:
    """The first image torchvision lists under a class folder."""
    for root, _, files in sorted(os.walk(folder)):
        for f in sorted(files):
            if f.lower().endswith(IMAGE_SUFFIXES):
                return Path(root) / f
    return None


def _samples(path: Path, classes: tuple[str, ...]) -> list[Path]:
    found = (_first(path / "train" / c) for c in classes[:SAMPLE])
    return [p.relative_to(path) for p in found if p is not None]


def _differ(train: list[str], other: list[str], split: str) -> str:
    only_train = sorted(set(train) - set(other))
    only_other = sorted(set(other) - set(train))
    return (
        f"the classes of train/ and {split}/ differ: only in train/: "
        f"{_few(only_train)}; only in {split}/: {_few(only_other)}"
    )


def _few(names: list[str]) -> str:
    shown = ", ".join(_text(n) for n in names[:5]) or "none"
    return shown + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _text(name: str) -> str:
    """A file name as JSON can carry it (bytes that are not UTF-8 as escapes)."""
    return name.encode("utf-8", "backslashreplace").decode("utf-8")


def _cifar(path: Path, kind: Kind) -> Facts:
    cls = CIFAR[kind]
    folder = path / cls.base_folder
    files = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    try:
        key = ("cifar", str(folder), tuple((f, (folder / f).stat().st_mtime_ns) for f in files))
    except OSError:
        missing = [f for f in files if not (folder / f).is_file()]
        return Facts(problem=f"{cls.base_folder}/ is missing {', '.join(missing)}")
    return _kept_facts(key, lambda: _cifar_facts(folder, cls))


def _cifar_facts(folder: Path, cls: type[tvd.CIFAR10]) -> Facts:
    """Counts and class names from the files, as torchvision's CIFAR loader reads them."""

    def labels(name: str) -> int:
        entry = _unpickle(folder / name)
        return len(entry["labels"] if "labels" in entry else entry["fine_labels"])

    try:
        train = sum(labels(f) for f, _ in cls.train_list)
        test = sum(labels(f) for f, _ in cls.test_list)
        classes = tuple(str(c) for c in _unpickle(folder / cls.meta["filename"])[cls.meta["key"]])
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as exc:
        return Facts(problem=f"{folder.name}/ holds malformed files ({type(exc).__name__})")
    return Facts(classes, train, test, 32, 32, False, "RGB")


def _unpickle(path: Path) -> Any:
    with path.open("rb") as f:
        return pickle.load(f, encoding="latin1")  # the files of the operator's data root


# --------------------------------------------------------------------------------------------
# An upload
# --------------------------------------------------------------------------------------------

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
    opened = _opener(body, settings)
    with opened() as archive:
        members = _layout(_checked(archive.entries(), settings))
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


class _Stream(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...

    def seek(self, offset: int, whence: int = 0, /) -> int: ...

    def tell(self) -> int: ...

    def close(self) -> None: ...


class _Archive(Protocol):
    def entries(self) -> Iterator[tuple[str, str, int]]:
        """Each member's name, what it is ("file", "folder", "symbolic link", ...) and its
        declared size."""
        ...

    def files(self, names: set[str]) -> Iterator[tuple[str, _Stream]]:
        """The members named, each as a stream of its bytes."""
        ...

    def close(self) -> None: ...


class _Session:
    """An opened archive, closed on leaving ``with``; a damaged archive is a Refused."""

    def __init__(self, open_archive: Callable[[], _Archive]) -> None:
        self.open_archive = open_archive
        self.archive: _Archive | None = None

    def __enter__(self) -> _Archive:
        try:
            self.archive = self.open_archive()
        except DAMAGED as exc:
            raise _damaged(exc) from None
        return self.archive

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _: Any) -> None:
        if self.archive is not None:
            self.archive.close()
        if exc is not None and isinstance(exc, DAMAGED):
            raise _damaged(exc) from None


DAMAGED = (
    tarfile.TarError,
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    gzip.BadGzipFile,
    NotImplementedError,  # a zip member's compression method Python lacks
    UnicodeError,
)


def _too_many(most: int) -> TooLarge:
    return TooLarge(f"body: the archive has more than {most} members (files and folders)")


def _damaged(exc: BaseException) -> Refused:
    return Refused(f"body: a damaged or unreadable archive ({type(exc).__name__})")


def _opener(body: Path, settings: Settings) -> Callable[[], _Session]:
    with body.open("rb") as f:
        head = f.read(512)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return lambda: _Session(lambda: _Zip(body, settings.max_dataset_members))
    # a tar stream holds the files' bytes plus at most about 1 KiB of headers per member
    limit = settings.max_dataset_unpacked_bytes + 1024 * settings.max_dataset_members + 20480
    if head.startswith(b"\x1f\x8b"):
        return lambda: _Session(lambda: _Tar(body, limit, gzipped=True))
    if head[257:262] == b"ustar":
        return lambda: _Session(lambda: _Tar(body, limit, gzipped=False))
    raise Refused("body: not a zip, a tar or a gzipped tar archive (of train/<class>/<image>)")


class _Zip:
    def __init__(self, body: Path, most: int) -> None:
        declared = _zip_entries(body)
        if declared is not None and declared > most:  # before zipfile reads them all
            raise _too_many(most)
        self.zip = zipfile.ZipFile(body)

    def entries(self) -> Iterator[tuple[str, str, int]]:
        for info in self.zip.infolist():
            yield info.filename, _zip_kind(info), info.file_size

    def files(self, names: set[str]) -> Iterator[tuple[str, _Stream]]:
        for name in sorted(names):
            with self.zip.open(name) as f:
                yield name, f

    def close(self) -> None:
        self.zip.close()


def _zip_entries(body: Path) -> int | None:
    """The entry count a zip's end record declares (zip64's too); None where there is none
    (zipfile then refuses the archive)."""
    with body.open("rb") as f:
        size = f.seek(0, os.SEEK_END)
        start = max(0, size - (1 << 16) - 22)  # the end record and its comment, at most
        f.seek(start)
        tail = f.read()
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or len(tail) < at + 22:
            return None
        count = int.from_bytes(tail[at + 10 : at + 12], "little")
        locator = tail[at - 20 : at] if at >= 20 else b""
        if count != 0xFFFF or not locator.startswith(b"PK\x06\x07"):
            return count
        f.seek(int.from_bytes(locator[8:16], "little"))
        record = f.read(56)  # zip64's end record: its entry count at bytes 32-40
        if not record.startswith(b"PK\x06\x06") or len(record) < 40:
            return None
        return int.from_bytes(record[32:40], "little")


def _zip_kind(info: zipfile.ZipInfo) -> str:
    mode = info.external_attr >> 16  # the Unix mode, where the archiver stored one
    if stat.S_ISLNK(mode):
        return "symbolic link"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "special file"
    if info.flag_bits & 0x1:
        return "encrypted file"
    return "folder" if info.is_dir() else "file"


class _Bounded:
    """A tar's (decompressed) stream that refuses to pass ``limit`` bytes, and any one read over
    ``MAX_READ`` (tarfile reads a pax or long-name header's data in one call): a gzip bomb is
    stopped as it inflates, never held in memory."""

    def __init__(self, inner: _Stream, limit: int) -> None:
        self.inner, self.limit = inner, limit

    def _refuse_past(self, end: int) -> None:
        if end > self.limit:
            raise TooLarge(f"body: the archive inflates beyond {self.limit} bytes")

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > MAX_READ:
            raise Refused(f"body: a tar header holds more than {MAX_READ} bytes")
        self._refuse_past(self.inner.tell() + size)
        return self.inner.read(size)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        target = offset if whence == os.SEEK_SET else self.inner.tell() + offset
        if whence not in (os.SEEK_SET, os.SEEK_CUR):
            raise OSError("seek from the end of an archive stream")
        self._refuse_past(target)
        return self.inner.seek(target)

    def tell(self) -> int:
        return self.inner.tell()

    def write(self, data: bytes) -> int:
        raise OSError("an archive is read only")

    def close(self) -> None:
        self.inner.close()


class _Tar:
    def __init__(self, body: Path, limit: int, *, gzipped: bool) -> None:
        raw = body.open("rb")
        stream: _Stream = gzip.GzipFile(fileobj=raw, mode="rb") if gzipped else raw
        self.raw, self.bounded = raw, _Bounded(stream, limit)
        try:
            self.tar = tarfile.TarFile(fileobj=self.bounded, mode="r")  # reads the first header
        except BaseException:
            self.bounded.close()
            raw.close()
            raise

    def entries(self) -> Iterator[tuple[str, str, int]]:
        for member in self.tar:
            yield member.name, _tar_kind(member), member.size

    def files(self, names: set[str]) -> Iterator[tuple[str, _Stream]]:
        for member in self.tar:
            if member.name in names and member.isreg():
                f = self.tar.extractfile(member)
                if f is not None:
                    yield member.name, f

    def close(self) -> None:
        self.tar.close()
        self.bounded.close()
        self.raw.close()


def _tar_kind(member: tarfile.TarInfo) -> str:
    if member.isdir():
        return "folder"
    if member.issym():
        return "symbolic link"
    if member.islnk():
        return "hard link"
    if member.ischr() or member.isblk():
        return "device"
    if member.isreg() and not member.issparse():
        return "file"
    return "special file"


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


def _checked(entries: Iterator[tuple[str, str, int]], settings: Settings) -> list[_Member]:
    """Every member's name and type; the files' declared sizes against the limit. Stops at the
    first refusal, before reading further."""
    limit, most = settings.max_dataset_unpacked_bytes, settings.max_dataset_members
    files: list[_Member] = []
    total = 0
    for count, (name, kind, size) in enumerate(entries, 1):
        if count > most:
            raise _too_many(most)
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
        raise Refused(f"body: {_differ(classes['train'], classes[held[0]], held[0])}")
    return members


def _unpack(archive: _Archive, members: list[_Member], work: Path, limit: int) -> None:
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
