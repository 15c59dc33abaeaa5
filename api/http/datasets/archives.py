"""Reading an uploaded archive (zip, tar or gzipped tar) without trusting it: each member's name,
kind and declared size, then the bytes of the members asked for. A damaged archive, a gzip bomb
and too many members are refusals (``Refused``, with the HTTP status of each), never an error of
the reader's own."""

from __future__ import annotations

import gzip
import os
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from api.runtime.settings import Settings

MAX_READ = 8 << 20  # the largest one read of a tar stream (a pax or long-name header's data)


class Refused(ValueError):
    """An upload that is not stored; ``status`` is its HTTP status."""

    status = 400


class TooLarge(Refused):
    status = 413


class Exists(Refused):
    status = 409


class Stream(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...

    def seek(self, offset: int, whence: int = 0, /) -> int: ...

    def tell(self) -> int: ...

    def close(self) -> None: ...


class Archive(Protocol):
    def entries(self) -> Iterator[tuple[str, str, int]]:
        """Each member's name, what it is ("file", "folder", "symbolic link", ...) and its
        declared size."""
        ...

    def files(self, names: set[str]) -> Iterator[tuple[str, Stream]]:
        """The members named, each as a stream of its bytes."""
        ...

    def close(self) -> None: ...


class _Session:
    """An opened archive, closed on leaving ``with``; a damaged archive is a Refused."""

    def __init__(self, open_archive: Callable[[], Archive]) -> None:
        self.open_archive = open_archive
        self.archive: Archive | None = None

    def __enter__(self) -> Archive:
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


def too_many(most: int) -> TooLarge:
    return TooLarge(f"body: the archive has more than {most} members (files and folders)")


def _damaged(exc: BaseException) -> Refused:
    return Refused(f"body: a damaged or unreadable archive ({type(exc).__name__})")


def opener(body: Path, settings: Settings) -> Callable[[], _Session]:
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
        declared = zip_entry_count(body)
        if declared is not None and declared > most:  # before zipfile reads them all
            raise too_many(most)
        self.zip = zipfile.ZipFile(body)

    def entries(self) -> Iterator[tuple[str, str, int]]:
        for info in self.zip.infolist():
            yield info.filename, _zip_kind(info), info.file_size

    def files(self, names: set[str]) -> Iterator[tuple[str, Stream]]:
        for name in sorted(names):
            with self.zip.open(name) as f:
                yield name, f

    def close(self) -> None:
        self.zip.close()


def zip_entry_count(body: Path) -> int | None:
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

    def __init__(self, inner: Stream, limit: int) -> None:
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

    def write(self, _data: bytes) -> int:  # tarfile's file protocol has it; reading never calls it
        raise OSError("an archive is read only")

    def close(self) -> None:
        self.inner.close()


class _Tar:
    def __init__(self, body: Path, limit: int, *, gzipped: bool) -> None:
        raw = body.open("rb")
        stream: Stream = gzip.GzipFile(fileobj=raw, mode="rb") if gzipped else raw
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

    def files(self, names: set[str]) -> Iterator[tuple[str, Stream]]:
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
